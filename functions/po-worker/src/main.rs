//! Consumes the Payments Out queue: onboards subscriptions (docs/payments-out.md §6).

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let worker = match connector_wiring::payouts::worker(&Env::from_process()).await {
        Ok(w) => w,
        Err(e) => telemetry::fail_start("po-worker", &e),
    };
    let worker = &worker;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler::handle(worker, event)
    }))
    .await
}
