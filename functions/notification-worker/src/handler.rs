use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use connector_app::worker::NotificationWorker;
use connector_domain::messages::WorkMessage;
use connector_wiring::lambda::deadline_of;
use connector_wiring::sqs::Consumer;
use connector_wiring::sqs::{self as batch, parse_body};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    worker: &Consumer<NotificationWorker>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    let deadline = deadline_of(&event.context);
    Ok(
        batch::process(event.payload, &worker.dead_letters, 8, |m| async move {
            let message: WorkMessage = parse_body(&m)?;
            worker.handler.handle(message, deadline).await
        })
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/notification-worker.json` stays a valid SQS event whose messages this consumer understands.
    #[test]
    fn sample_event_parses_into_the_handler_event() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/notification-worker.json"))
                .expect("an SQS event");
        assert!(!event.records.is_empty());
        for m in &event.records {
            let _: connector_domain::messages::WorkMessage =
                parse_body(m).expect("a message this consumer handles");
        }
    }
}
