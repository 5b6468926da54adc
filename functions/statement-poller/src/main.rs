//! Consumes the poll queue (the pipeline's timer): polls statements to a terminal status.

mod handler;

use connector_app::config::Env;
use connector_app::pipeline::Pipeline;
use connector_app::poller::StatementPoller;
use connector_app::telemetry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let poller = match Pipeline::from_env(&Env::from_process(), false).await {
        Ok(p) => StatementPoller::new(p),
        Err(e) => telemetry::fail_start("statement-poller", &e),
    };
    let poller = &poller;
    lambda_runtime::run(lambda_runtime::service_fn(move |event| {
        handler::handle(poller, event)
    }))
    .await
}
