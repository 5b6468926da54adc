//! Consumes the FIFO push queue (one group per bank account): posts statements.

mod handler;

use connector_app::config::Env;
use connector_app::pipeline::Pipeline;
use connector_app::pusher::StatementPusher;
use connector_app::telemetry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let pusher = match Pipeline::from_env(&Env::from_process(), true).await {
        Ok(p) => StatementPusher::new(p),
        Err(e) => telemetry::fail_start("statement-pusher", &e),
    };
    let pusher = &pusher;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler::handle(pusher, event)
    }))
    .await
}
