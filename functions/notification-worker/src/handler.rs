use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use connector_app::batch::{self, parse_body};
use connector_app::worker::NotificationWorker;
use connector_domain::messages::WorkMessage;
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    worker: &NotificationWorker,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(
        batch::process(event.payload, &worker.dead_letters, 8, |m| async move {
            let message: WorkMessage = parse_body(&m)?;
            worker.handle(message).await
        })
        .await,
    )
}
