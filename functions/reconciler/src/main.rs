//! Runs on a schedule: stale claims, lost wake-ups, stuck backfills, expired consents.

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let reconciler = match connector_wiring::banking::reconciler(&Env::from_process()).await {
        Ok(r) => r,
        Err(e) => telemetry::fail_start("reconciler", &e),
    };
    let reconciler = &reconciler;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler::handle(reconciler, event)
    }))
    .await
}
