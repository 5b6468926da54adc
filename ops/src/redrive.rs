//! `redrive`: moves messages from a queue's DLQ back to the queue (receive, send, then delete —
//! moto has no `StartMessageMoveTask`, and this way works the same on AWS).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName,
};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use crate::config::{Config, require_url};
use crate::terminal::{confirm, progress};
use crate::{OpsError, Result, aws_error, count, print_json};

/// The attribute consumers put on messages they moved to the DLQ as poison.
pub const POISON_REASON: &str = "poisonReason";
/// Characters of a body a listing shows.
const PREVIEW: usize = 200;
/// How long a received message stays hidden while this command works on it.
const HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueName {
    /// Notifications queue (standard) ← NOTIFICATIONS_DLQ_URL.
    Notifications,
    /// Push queue (FIFO, group = bankAccountId) ← PUSH_DLQ_URL.
    Push,
    /// Poll queue (standard) ← POLL_DLQ_URL.
    Poll,
    /// Payments Out's work queue (standard) ← PAYOUTS_DLQ_URL.
    Payouts,
}

const ABOUT: &str = "Move messages from a queue's DLQ back to the queue";
const LONG: &str = "\
Move messages from a queue's dead-letter queue back to the queue, so that its consumer handles
them again (after the cause was fixed: a deployment, a configuration change, Banking Service
back up). A Payments Out message whose poisonReason is `IdempotencyConflict: payment …` comes
straight back: the bank holds that payment id with another body, and the connector only ever
sends the one it recorded; ask the bank which body it holds first (docs/operations.md).

  notifications  NOTIFICATIONS_DLQ_URL → NOTIFICATIONS_QUEUE_URL (notification worker)
  push           PUSH_DLQ_URL → PUSH_QUEUE_URL (statement pusher; FIFO)
  poll           POLL_DLQ_URL → POLL_QUEUE_URL (statement poller)
  payouts        PAYOUTS_DLQ_URL → PAYOUTS_QUEUE_URL (po-worker: Payments Out's subscriptions,
                 batches and the product's messages)

--dry-run lists what would move — the DLQ's approximate depth, then per message its id, FIFO
group, poison reason (the `poisonReason` attribute a consumer sets when it moves a malformed
message at once) and the first 200 characters of its body — and moves nothing: the messages it
looked at are made visible again at once. On a FIFO DLQ a listing shows at most the first
messages of each group (SQS hides a group's later messages while earlier ones are received).

The real run asks for confirmation unless --yes, then receives, sends each message to the queue
and deletes it from the DLQ only after the send succeeded (a failure leaves it in the DLQ). FIFO
messages keep their group id (the account) and order, and get a fresh deduplication id, so the
queue does not drop them as duplicates of the originals. Message attributes are kept, except
`poisonReason`. --max caps how many move.

Example: connector-ops redrive push --dry-run
         connector-ops redrive notifications --yes --max 100
         connector-ops redrive payouts --dry-run --json";

#[derive(Debug, Args)]
#[command(about = ABOUT, long_about = LONG)]
pub struct RedriveArgs {
    /// Which queue's DLQ.
    #[arg(value_enum)]
    pub queue: QueueName,
    /// List what would move; move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Move (or list) at most this many messages.
    #[arg(long, value_name = "N")]
    pub max: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

impl QueueName {
    fn label(self) -> &'static str {
        match self {
            QueueName::Notifications => "notifications",
            QueueName::Push => "push",
            QueueName::Poll => "poll",
            QueueName::Payouts => "payouts",
        }
    }

    /// (source queue URL, DLQ URL).
    fn urls(self, config: &Config) -> Result<(String, String)> {
        let (source, source_var, dlq, dlq_var) = match self {
            QueueName::Notifications => (
                &config.notifications_queue_url,
                "NOTIFICATIONS_QUEUE_URL",
                &config.notifications_dlq_url,
                "NOTIFICATIONS_DLQ_URL",
            ),
            QueueName::Push => (
                &config.push_queue_url,
                "PUSH_QUEUE_URL",
                &config.push_dlq_url,
                "PUSH_DLQ_URL",
            ),
            QueueName::Poll => (
                &config.poll_queue_url,
                "POLL_QUEUE_URL",
                &config.poll_dlq_url,
                "POLL_DLQ_URL",
            ),
            QueueName::Payouts => (
                &config.payouts_queue_url,
                "PAYOUTS_QUEUE_URL",
                &config.payouts_dlq_url,
                "PAYOUTS_DLQ_URL",
            ),
        };
        Ok((
            require_url(source, source_var)?.to_string(),
            require_url(dlq, dlq_var)?.to_string(),
        ))
    }
}

fn group_of(m: &Message) -> Option<String> {
    m.attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
        .cloned()
}

fn poison_reason(m: &Message) -> Option<String> {
    m.message_attributes()
        .and_then(|a| a.get(POISON_REASON))
        .and_then(|v| v.string_value())
        .map(str::to_string)
}

fn preview(body: &str) -> String {
    match body.char_indices().nth(PREVIEW) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_string(),
    }
}

fn message_json(m: &Message) -> Value {
    json!({
        "messageId": m.message_id(),
        "group": group_of(m),
        "poisonReason": poison_reason(m),
        "receiveCount": m.attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .and_then(|c| c.parse::<u64>().ok()),
        "body": preview(m.body().unwrap_or_default()),
    })
}

async fn depth(sqs: &Client, url: &str) -> Result<u64> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("reading the depth of {url}"))?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

async fn receive(sqs: &Client, url: &str, max: usize) -> Result<Vec<Message>> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max.clamp(1, 10) as i32)
        .wait_time_seconds(1)
        .visibility_timeout(HOLD.as_secs() as i32)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("receiving from {url}"))?;
    Ok(out.messages.unwrap_or_default())
}

/// Makes messages visible again at once.
async fn release(sqs: &Client, url: &str, messages: &[Message]) -> Result<()> {
    for chunk in messages.chunks(10) {
        let mut req = sqs.change_message_visibility_batch().queue_url(url);
        for (i, m) in chunk.iter().enumerate() {
            req = req.entries(
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .visibility_timeout(0)
                    .build()
                    .map_err(anyhow::Error::from)?,
            );
        }
        req.send()
            .await
            .map_err(aws_error)
            .context("making listed messages visible again")?;
    }
    Ok(())
}

/// Lists up to `max` messages without moving them.
async fn peek(sqs: &Client, dlq: &str, max: usize) -> Result<Vec<Message>> {
    let mut seen = HashSet::new();
    let mut held = Vec::new();
    let outcome = async {
        while held.len() < max {
            let batch = receive(sqs, dlq, max - held.len()).await?;
            let fresh: Vec<Message> = batch
                .into_iter()
                .filter(|m| seen.insert(m.message_id().unwrap_or_default().to_string()))
                .collect();
            if fresh.is_empty() {
                break;
            }
            held.extend(fresh);
        }
        Ok::<_, OpsError>(())
    }
    .await;
    // Whatever happened, what was looked at goes back.
    let released = release(sqs, dlq, &held).await;
    outcome?;
    released?;
    Ok(held)
}

/// Sends one DLQ message back to its queue.
async fn send_back(sqs: &Client, source: &str, fifo: bool, m: &Message) -> Result<()> {
    let attributes: HashMap<String, MessageAttributeValue> = m
        .message_attributes()
        .map(|a| {
            a.iter()
                .filter(|(k, _)| k.as_str() != POISON_REASON)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut req = sqs
        .send_message()
        .queue_url(source)
        .message_body(m.body().unwrap_or_default())
        .set_message_attributes((!attributes.is_empty()).then_some(attributes));
    if fifo {
        let group = group_of(m).ok_or_else(|| {
            anyhow::anyhow!(
                "message {} has no MessageGroupId: left in the DLQ",
                m.message_id().unwrap_or_default()
            )
        })?;
        req = req
            .message_group_id(group)
            .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string());
    }
    req.send()
        .await
        .map_err(aws_error)
        .with_context(|| format!("sending to {source}"))?;
    Ok(())
}

pub async fn redrive(config: &Config, args: RedriveArgs) -> Result<()> {
    let (source, dlq) = args.queue.urls(config)?;
    let fifo = source.ends_with(".fifo");
    if fifo != dlq.ends_with(".fifo") {
        return Err(OpsError::Usage(format!(
            "the {} queue and its DLQ must both be FIFO or both standard: {source} / {dlq}",
            args.queue.label()
        )));
    }
    let max = args.max.unwrap_or(usize::MAX);
    if max == 0 {
        return Err(OpsError::Usage("--max must be at least 1".into()));
    }
    let sdk = config.sdk().await?;
    let sqs = Client::new(&sdk);
    let approximate = depth(&sqs, &dlq).await?;

    if args.dry_run {
        let listed = peek(&sqs, &dlq, max).await?;
        if args.json {
            return print_json(&json!({
                "queue": args.queue.label(),
                "dlq": dlq,
                "source": source,
                "dryRun": true,
                "approximateDepth": approximate,
                "wouldMove": listed.len(),
                "messages": listed.iter().map(message_json).collect::<Vec<_>>(),
            }));
        }
        println!(
            "Dry run: the {} DLQ holds about {}; {} listed, would move to {source}; nothing moved.",
            args.queue.label(),
            count(approximate, "message", "messages"),
            listed.len()
        );
        for m in &listed {
            let v = message_json(m);
            println!(
                "- {}  group {}  poisonReason {}",
                v["messageId"].as_str().unwrap_or("?"),
                v["group"].as_str().unwrap_or("-"),
                v["poisonReason"].as_str().unwrap_or("-"),
            );
            println!("  {}", v["body"].as_str().unwrap_or_default());
        }
        return Ok(());
    }

    let planned = approximate.min(max as u64);
    confirm(
        &format!(
            "move {} (about {approximate} in the DLQ) from the {} DLQ back to {source}",
            if max == usize::MAX {
                "all messages".to_string()
            } else {
                format!("up to {}", count(max as u64, "message", "messages"))
            },
            args.queue.label()
        ),
        args.yes,
    )?;
    let bar = progress(planned, &format!("redrive {}", args.queue.label()));
    let mut moved = 0usize;
    let mut moved_ids = Vec::new();
    let result: Result<()> = async {
        while moved < max {
            let batch = receive(&sqs, &dlq, max - moved).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut iter = batch.into_iter();
            while let Some(m) = iter.next() {
                if let Err(e) = send_back(&sqs, &source, fifo, &m).await {
                    // Leave it (and what follows it in the batch) in the DLQ, visible again.
                    let rest: Vec<Message> = std::iter::once(m).chain(iter).collect();
                    let _ = release(&sqs, &dlq, &rest).await;
                    return Err(e);
                }
                sqs.delete_message()
                    .queue_url(&dlq)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(aws_error)
                    .context(
                        "deleting a message from the DLQ after it was sent back (it is now in both)",
                    )?;
                moved += 1;
                moved_ids.push(m.message_id().unwrap_or_default().to_string());
                if moved as u64 > bar.length().unwrap_or(0) {
                    bar.set_length(moved as u64);
                }
                bar.inc(1);
            }
        }
        Ok(())
    }
    .await;
    bar.finish_and_clear();
    if let Err(e) = result {
        return Err(OpsError::Failed(anyhow::anyhow!(
            "moved {moved} messages, then: {e}"
        )));
    }
    if args.json {
        return print_json(&json!({
            "queue": args.queue.label(),
            "dlq": dlq,
            "source": source,
            "dryRun": false,
            "moved": moved,
            "messageIds": moved_ids,
        }));
    }
    println!(
        "Moved {} from the {} DLQ back to {source}.",
        count(moved as u64, "message", "messages"),
        args.queue.label()
    );
    Ok(())
}
