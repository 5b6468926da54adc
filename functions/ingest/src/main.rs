//! `POST /ingest`: the bank pushes an account's new transactions (IAM-authorised on AWS).

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let ingest = match connector_wiring::banking::ingest(&Env::from_process()).await {
        Ok(i) => i,
        Err(e) => telemetry::fail_start("ingest", &e),
    };
    let ingest = &ingest;
    lambda_http::run(lambda_http::service_fn(move |req| {
        handler::handle(ingest, req)
    }))
    .await
}
