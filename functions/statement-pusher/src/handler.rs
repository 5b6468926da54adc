use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use connector_app::batch::{self, parse_body};
use connector_app::pusher::StatementPusher;
use connector_domain::messages::Kick;
use lambda_runtime::{Error, LambdaEvent};

pub async fn handle(
    pusher: &StatementPusher,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, Error> {
    Ok(batch::process(
        event.payload,
        &pusher.pipeline.dead_letters,
        10,
        |m| async move {
            let kick: Kick = parse_body(&m)?;
            pusher.handle(kick).await
        },
    )
    .await)
}
