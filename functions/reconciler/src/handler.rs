use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use connector_app::reconciler::{ReconcileReport, Reconciler};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    reconciler: &Reconciler,
    _event: LambdaEvent<EventBridgeEvent<serde_json::Value>>,
) -> Result<ReconcileReport, Error> {
    reconciler.run().await.map_err(Error::from)
}
