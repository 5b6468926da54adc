//! The connector's SQS queues: notifications (standard), push (FIFO per account), poll (standard
//! with per-message delay, used as the pipeline's timer).

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use connector_domain::messages::{Kick, TimerMessage, WorkMessage};

pub use connector_domain::ports::QueueError;

/// An SDK error as the sender must treat it: access or queue missing is configuration, the rest
/// transient.
fn from_sdk<E, R>(err: aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let text = format!("{}", DisplayErrorContext(&err));
    match err.code() {
        Some(
            "AccessDenied"
            | "AccessDeniedException"
            | "AWS.SimpleQueueService.NonExistentQueue"
            | "QueueDoesNotExist"
            | "InvalidClientTokenId",
        ) => QueueError::Configuration(text),
        _ => QueueError::Unavailable(text),
    }
}

#[derive(Clone, Debug)]
pub struct Queues {
    client: Client,
    notifications_url: String,
    push_url: String,
    poll_url: String,
}

/// SQS's longest per-message delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

impl Queues {
    pub fn new(
        client: Client,
        notifications_url: String,
        push_url: String,
        poll_url: String,
    ) -> Self {
        Self {
            client,
            notifications_url,
            push_url,
            poll_url,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn send(
        &self,
        url: &str,
        body: String,
        delay: Option<Duration>,
        group: Option<String>,
    ) -> Result<(), QueueError> {
        let mut req = self.client.send_message().queue_url(url).message_body(body);
        if let Some(d) = delay {
            // Whole seconds only; round up so that a delay is never shorter than asked.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            req = req.delay_seconds(secs.min(MAX_DELAY.as_secs()) as i32);
        }
        if let Some(g) = group {
            // Every kick is a distinct wake-up: a deduplicated kick could be a lost wake-up, so
            // each gets its own deduplication id. Pushing is idempotent at the account's claim.
            req = req
                .message_group_id(g)
                .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string());
        }
        req.send().await.map_err(from_sdk)?;
        Ok(())
    }

    pub async fn send_work(&self, msg: &WorkMessage) -> Result<(), QueueError> {
        let body =
            serde_json::to_string(msg).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.send(&self.notifications_url, body, None, None).await
    }

    pub async fn kick(&self, kick: &Kick) -> Result<(), QueueError> {
        let body =
            serde_json::to_string(kick).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.send(
            &self.push_url,
            body,
            None,
            Some(kick.bank_account_id.to_string()),
        )
        .await
    }

    pub async fn send_timer(&self, msg: &TimerMessage, delay: Duration) -> Result<(), QueueError> {
        let body =
            serde_json::to_string(msg).map_err(|e| QueueError::Unavailable(e.to_string()))?;
        self.send(&self.poll_url, body, Some(delay), None).await
    }
}

/// A standard queue carrying one kind of JSON work message (Payments Out's work queue).
#[derive(Clone, Debug)]
pub struct WorkQueue {
    client: Client,
    url: String,
}

impl WorkQueue {
    pub fn new(client: Client, url: String) -> Self {
        Self { client, url }
    }

    pub async fn send_body(&self, body: String) -> Result<(), QueueError> {
        self.send_body_after(body, Duration::ZERO).await
    }

    /// Delivered after `delay`, rounded up to SQS's whole seconds (at most 900).
    pub async fn send_body_after(&self, body: String, delay: Duration) -> Result<(), QueueError> {
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(seconds.min(900) as i32)
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }
}
