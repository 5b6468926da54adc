//! SQS batches the way every consumer handles them: partial batch failures, FIFO group rules,
//! and poison messages sent straight to the queue's DLQ with a reason (so they never block it).

use std::collections::BTreeMap;
use std::future::Future;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageAttributeValue;
use connector_app::batch::MessageError;
use futures::StreamExt;

/// A consumer of a queue, and where its poison messages go.
pub struct Consumer<T> {
    pub handler: T,
    pub dead_letters: DeadLetters,
}

/// Where poison goes.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    pub client: aws_sdk_sqs::Client,
    pub dlq_url: String,
    pub fifo: bool,
}

impl DeadLetters {
    async fn send(&self, message: &SqsMessage, reason: &str) -> Result<(), String> {
        let mut req = self
            .client
            .send_message()
            .queue_url(&self.dlq_url)
            .message_body(message.body.clone().unwrap_or_default())
            .message_attributes(
                "poisonReason",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(reason.chars().take(1000).collect::<String>())
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        if self.fifo {
            let group = message
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_else(|| "poison".into());
            req = req.message_group_id(group).message_deduplication_id(
                message
                    .message_id
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            );
        }
        req.send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(&e).to_string())?;
        Ok(())
    }
}

/// Processes a batch. Standard queues: messages run concurrently. FIFO queues: groups run
/// concurrently, messages of a group in order, and after a failure the rest of that group is
/// reported failed too so that its order holds.
pub async fn process<F, Fut>(
    event: SqsEvent,
    dead_letters: &DeadLetters,
    concurrency: usize,
    handle: F,
) -> SqsBatchResponse
where
    F: Fn(SqsMessage) -> Fut,
    Fut: Future<Output = Result<(), MessageError>>,
{
    let mut groups: BTreeMap<String, Vec<SqsMessage>> = BTreeMap::new();
    for (i, m) in event.records.into_iter().enumerate() {
        let group = if dead_letters.fifo {
            m.attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_default()
        } else {
            format!("#{i}")
        };
        groups.entry(group).or_default().push(m);
    }
    let handle = &handle;
    let failures: Vec<Vec<String>> = futures::stream::iter(groups.into_values())
        .map(|messages| async move {
            let mut failed = Vec::new();
            let mut blocked = false;
            for m in messages {
                let id = m.message_id.clone().unwrap_or_default();
                if blocked {
                    failed.push(id);
                    continue;
                }
                let outcome = handle(m.clone()).await;
                match outcome {
                    Ok(()) => {}
                    Err(MessageError::Retry(reason)) => {
                        tracing::warn!(message_id = %id, %reason, "message will be retried");
                        failed.push(id);
                        blocked = true;
                    }
                    Err(MessageError::Poison(reason)) => {
                        tracing::error!(message_id = %id, %reason, "poison message moved to the DLQ");
                        if let Err(e) = dead_letters.send(&m, &reason).await {
                            // Could not move it: let SQS's own redrive take it there.
                            tracing::error!(message_id = %id, error = %e, "could not move poison to the DLQ");
                            failed.push(id);
                            blocked = true;
                        }
                    }
                }
            }
            failed
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .flatten()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

/// Parses a message body as JSON; a body that does not parse is poison.
pub fn parse_body<T: serde::de::DeserializeOwned>(m: &SqsMessage) -> Result<T, MessageError> {
    let body = m.body.as_deref().unwrap_or("");
    serde_json::from_str(body).map_err(|e| MessageError::Poison(format!("malformed body: {e}")))
}
