use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use connector_app::payouts_worker::PayoutsWorker;
use connector_domain::payouts::notification::PayoutsWork;
use connector_wiring::sqs::Consumer;
use connector_wiring::sqs::{self as batch, parse_body};
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    worker: &Consumer<PayoutsWorker>,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(
        batch::process(event.payload, &worker.dead_letters, 4, |m| async move {
            let work: PayoutsWork = parse_body(&m)?;
            worker.handler.handle(work).await
        })
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events/po-worker.json` stays a valid SQS event whose messages this consumer understands.
    #[test]
    fn sample_event_parses_into_the_handler_event() {
        let event: SqsEvent = serde_json::from_str(include_str!("../../../events/po-worker.json"))
            .expect("an SQS event");
        assert!(!event.records.is_empty());
        for m in &event.records {
            let _: PayoutsWork = parse_body(m).expect("a message this consumer handles");
        }
    }
}
