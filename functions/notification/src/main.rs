//! `POST /notification`: Banking Service's notifications, verified and queued (spec §4.5).

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let intake = match connector_wiring::banking::notification_intake(&Env::from_process()).await {
        Ok(i) => i,
        Err(e) => telemetry::fail_start("notification", &e),
    };
    let intake = &intake;
    lambda_http::run(lambda_http::service_fn(move |req| {
        handler::handle(intake, req)
    }))
    .await
}
