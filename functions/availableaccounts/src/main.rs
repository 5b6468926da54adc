//! `GET /availableaccounts`: every account under a consent, for multi-account linking (§4.6).

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let available = match connector_wiring::banking::available_accounts(&Env::from_process()).await
    {
        Ok(a) => a,
        Err(e) => telemetry::fail_start("availableaccounts", &e),
    };
    let available = &available;
    lambda_http::run(lambda_http::service_fn(move |req| {
        handler::handle(available, req)
    }))
    .await
}
