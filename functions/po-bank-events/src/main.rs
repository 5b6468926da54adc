//! `POST /bank/payment-events` and `POST /bank/consent-events`: the bank's pushes for Payments
//! Out, payments to their outcome and consents out of review (docs/bank-data-api.md §4.4–4.5).

mod handler;

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let events = match connector_wiring::payouts::bank_events(&Env::from_process()).await {
        Ok(e) => e,
        Err(e) => telemetry::fail_start("po-bank-events", &e),
    };
    let events = &events;
    lambda_http::run(lambda_http::service_fn(move |req| {
        handler::handle(events, req)
    }))
    .await
}
