//! SQS event sources the way Lambda's event source mapping runs them: long-poll batches, invoke,
//! delete what succeeded, leave failures to the visibility timeout (and to the DLQ redrive after
//! `maxReceiveCount`, which the queue itself performs). Also the scheduled invocations.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use serde_json::{Value, json};

use crate::runtime::{Function, Outcome};

/// Counters of one event source, for tests and the demo.
#[derive(Default, Debug)]
pub struct SourceStats {
    pub batches: AtomicU64,
    pub messages: AtomicU64,
    pub failed_messages: AtomicU64,
    pub failed_invocations: AtomicU64,
}

pub struct SqsSource {
    pub client: Client,
    pub queue_url: String,
    pub queue_arn: String,
    pub batch_size: u32,
    pub partial_failures: bool,
    pub function: Arc<Function>,
    /// Locally, a failed message may come back sooner than the queue's visibility timeout.
    pub retry_visibility: Option<Duration>,
    pub stats: Arc<SourceStats>,
    /// Disabled event source mappings stop polling (the queue keeps its messages).
    pub paused: Arc<AtomicBool>,
}

fn record(m: &aws_sdk_sqs::types::Message, arn: &str) -> Value {
    let attributes: HashMap<String, String> = m
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "messageId": m.message_id().unwrap_or_default(),
        "receiptHandle": m.receipt_handle().unwrap_or_default(),
        "body": m.body().unwrap_or_default(),
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": m.md5_of_body().unwrap_or_default(),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": "eu-west-1",
    })
}

impl SqsSource {
    /// One poller: one invocation at a time (run `MaximumConcurrency` of them).
    pub async fn run(self: Arc<Self>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            if self.paused.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if let Err(e) = self.poll_once().await {
                tracing::warn!(queue = %self.queue_url, error = %e, "event source poll failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }

    /// A FIFO queue's mapping: one receiver, whose next long poll starts only once the batch it
    /// just received is in flight (so that batch's message groups are locked: moto decides which
    /// groups are busy when a long poll starts, and concurrent long polls could be handed a
    /// group still being processed, which SQS never does), and up to `concurrency` batches
    /// invoked at once — as Lambda scales a FIFO mapping's pollers up to its
    /// `MaximumConcurrency` while honouring the group lock.
    pub async fn run_dispatching(self: Arc<Self>, stop: Arc<AtomicBool>, concurrency: usize) {
        let slots = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        while !stop.load(Ordering::SeqCst) {
            if self.paused.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            match self.receive().await {
                Ok(messages) if !messages.is_empty() && self.paused.load(Ordering::SeqCst) => {
                    self.put_back(&messages).await;
                }
                Ok(messages) if !messages.is_empty() => {
                    let source = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = source.handle(messages).await {
                            tracing::warn!(queue = %source.queue_url, error = %e, "event source batch failed");
                        }
                        drop(slot);
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(queue = %self.queue_url, error = %e, "event source poll failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    async fn receive(&self) -> anyhow::Result<Vec<aws_sdk_sqs::types::Message>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.batch_size.clamp(1, 10) as i32)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await?;
        Ok(out.messages.unwrap_or_default())
    }

    async fn poll_once(&self) -> anyhow::Result<()> {
        let messages = self.receive().await?;
        if messages.is_empty() {
            return Ok(());
        }
        if self.paused.load(Ordering::SeqCst) {
            self.put_back(&messages).await;
            return Ok(());
        }
        self.handle(messages).await
    }

    /// Messages a long poll received after the mapping was paused go back, visible at once, as
    /// a disabled mapping leaves them on the queue.
    async fn put_back(&self, messages: &[aws_sdk_sqs::types::Message]) {
        for handle in messages.iter().filter_map(|m| m.receipt_handle()) {
            let _ = self
                .client
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await;
        }
    }

    /// Invokes the function with a batch, deletes what succeeded, lets failures come back.
    async fn handle(&self, messages: Vec<aws_sdk_sqs::types::Message>) -> anyhow::Result<()> {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        let event = json!({ "Records": messages.iter().map(|m| record(m, &self.queue_arn)).collect::<Vec<_>>() });
        let outcome = self.function.invoke(serde_json::to_vec(&event)?).await?;
        let failed: Vec<String> = match &outcome {
            Outcome::Response(body) if self.partial_failures => {
                match serde_json::from_slice::<Value>(body) {
                    Ok(v) => v
                        .get("batchItemFailures")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|f| f.get("itemIdentifier").and_then(Value::as_str))
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                    // An unreadable answer fails the whole batch, as on Lambda.
                    Err(_) => messages
                        .iter()
                        .filter_map(|m| m.message_id().map(str::to_string))
                        .collect(),
                }
            }
            Outcome::Response(_) => Vec::new(),
            _ => {
                self.stats
                    .failed_invocations
                    .fetch_add(1, Ordering::Relaxed);
                messages
                    .iter()
                    .filter_map(|m| m.message_id().map(str::to_string))
                    .collect()
            }
        };
        self.stats
            .failed_messages
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .filter(|m| {
                !m.message_id()
                    .is_some_and(|id| failed.iter().any(|f| f == id))
            })
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if !done.is_empty() {
            self.client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(done))
                .send()
                .await?;
        }
        if let Some(v) = self.retry_visibility {
            for m in messages.iter().filter(|m| {
                m.message_id()
                    .is_some_and(|id| failed.iter().any(|f| f == id))
            }) {
                if let Some(handle) = m.receipt_handle() {
                    let _ = self
                        .client
                        .change_message_visibility()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .visibility_timeout(v.as_secs() as i32)
                        .send()
                        .await;
                }
            }
        }
        Ok(())
    }
}

/// The scheduled event EventBridge sends for a `Schedule` rule.
pub fn scheduled_event() -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "000000000000",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "eu-west-1",
        "resources": ["arn:aws:events:eu-west-1:000000000000:rule/local-schedule"],
        "detail": {}
    })
}

/// Invokes `function` every `every` until stopped.
pub async fn run_schedule(function: Arc<Function>, every: Duration, stop: Arc<AtomicBool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    while !stop.load(Ordering::SeqCst) {
        ticker.tick().await;
        if let Ok(payload) = serde_json::to_vec(&scheduled_event())
            && let Err(e) = function.invoke(payload).await
        {
            tracing::warn!(error = %e, "scheduled invocation failed");
        }
    }
}
