//! Runs on a schedule: Payments Out batches that stopped moving, authorisation links past their
//! expiry, consents under the bank's review (docs/payments-out.md §11).

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use connector_wiring::config::Env;
use connector_wiring::telemetry;
use lambda_runtime::{Error, LambdaEvent};

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let reconciler = match connector_wiring::payouts::reconciler(&Env::from_process()).await {
        Ok(r) => r,
        Err(e) => telemetry::fail_start("po-reconciler", &e),
    };
    let reconciler = &reconciler;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |_event: LambdaEvent<EventBridgeEvent<serde_json::Value>>| async move {
            reconciler.run().await.map_err(Error::from)
        },
    ))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/po-reconciler.json` stays a valid scheduled event.
    #[test]
    fn sample_event_parses_into_the_handler_event() {
        let event: EventBridgeEvent<serde_json::Value> =
            serde_json::from_str(include_str!("../../../events/po-reconciler.json"))
                .expect("a scheduled event");
        assert_eq!(event.detail_type, "Scheduled Event");
    }
}
