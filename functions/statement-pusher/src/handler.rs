use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use connector_app::pusher::StatementPusher;
use connector_domain::messages::Kick;
use connector_wiring::sqs::Consumer;
use connector_wiring::sqs::{self as batch, parse_body};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    pusher: &Consumer<StatementPusher>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(
        batch::process(event.payload, &pusher.dead_letters, 10, |m| async move {
            let kick: Kick = parse_body(&m)?;
            pusher.handler.handle(kick).await
        })
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/statement-pusher.json` stays a valid SQS event whose messages this consumer understands.
    #[test]
    fn sample_event_parses_into_the_handler_event() {
        let event: SqsEvent =
            serde_json::from_str(include_str!("../../../events/statement-pusher.json"))
                .expect("an SQS event");
        assert!(!event.records.is_empty());
        for m in &event.records {
            let _: connector_domain::messages::Kick =
                parse_body(m).expect("a message this consumer handles");
        }
    }
}
