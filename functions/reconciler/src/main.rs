//! Runs on a schedule: stale claims, lost wake-ups, stuck backfills.

mod handler;

use std::time::Duration;

use connector_app::config::Env;
use connector_app::pipeline::Pipeline;
use connector_app::reconciler::Reconciler;
use connector_app::telemetry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let env = Env::from_process();
    let reconciler = match Pipeline::from_env(&env, false).await.and_then(|p| {
        let stale = env.duration_secs("RECONCILE_STALE_AFTER_S", Duration::from_secs(900))?;
        Ok(Reconciler::new(p, stale))
    }) {
        Ok(r) => r,
        Err(e) => telemetry::fail_start("reconciler", &e),
    };
    let reconciler = &reconciler;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler::handle(reconciler, event)
    }))
    .await
}
