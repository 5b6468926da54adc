//! Consumes the FIFO push queue (one group per bank account): posts statements.

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let pusher = match connector_wiring::banking::statement_pusher(&Env::from_process()).await {
        Ok(p) => p,
        Err(e) => telemetry::fail_start("statement-pusher", &e),
    };
    let pusher = &pusher;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler::handle(pusher, event)
    }))
    .await
}
