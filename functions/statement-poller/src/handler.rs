use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use connector_app::batch::{self, parse_body};
use connector_app::poller::StatementPoller;
use connector_domain::messages::TimerMessage;
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    poller: &StatementPoller,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(batch::process(
        event.payload,
        &poller.pipeline.dead_letters,
        10,
        |m| async move {
            let message: TimerMessage = parse_body(&m)?;
            poller.handle(message).await
        },
    )
    .await)
}
