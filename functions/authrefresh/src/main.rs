//! `GET /authrefresh`: re-authorisation in the customer's browser (spec §4.4).

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let flows = match connector_wiring::banking::browser_flows(&Env::from_process()).await {
        Ok(f) => f,
        Err(e) => telemetry::fail_start("authrefresh", &e),
    };
    let flows = &flows;
    lambda_http::run(lambda_http::service_fn(move |req| {
        handler::handle(flows, req)
    }))
    .await
}
