use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use connector_app::reconciler::{ReconcileReport, Reconciler};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    reconciler: &Reconciler,
    _event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
) -> Result<ReconcileReport, Error> {
    reconciler.run().await.map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/reconciler.json` stays a valid scheduled event.
    #[test]
    fn sample_event_parses_into_the_handler_event() {
        let event: EventBridgeEvent<serde_json::Value> =
            serde_json::from_str(include_str!("../../../events/reconciler.json"))
                .expect("a scheduled event");
        assert_eq!(event.detail_type, "Scheduled Event");
    }
}
