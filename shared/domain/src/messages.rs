//! Messages on the connector's own queues. Each is JSON; unknown or malformed ones are poison
//! (they go to the DLQ with a logged reason, never blocking their queue).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::notification::NotificationAction;

/// Notifications queue (standard): work for the notification worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum WorkMessage {
    /// A validated notification, as accepted by `/notification`.
    #[serde(rename_all = "camelCase")]
    Notification {
        key: String,
        action: NotificationAction,
        received_at: DateTime<Utc>,
    },
    /// One page of an account's history pull; carries on from `cursor`.
    #[serde(rename_all = "camelCase")]
    BackfillPage {
        bank_account_id: Uuid,
        cursor: Option<String>,
    },
}

/// Push queue (FIFO, `MessageGroupId` = bankAccountId): "this account may have work".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kick {
    pub bank_account_id: Uuid,
    /// Set by a retry timer: resubmit the statement of this claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Who kicked, for logs.
    pub reason: KickReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KickReason {
    Ingest,
    Backfill,
    Poller,
    Retry,
    Reconciler,
    Reauthorised,
    Operator,
    /// The claim's watchdog: take the claim over if its pusher died while posting.
    Watchdog,
}

/// Poll queue (standard, per-message delay): the timer wheel of the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TimerMessage {
    /// Poll a statement once; the poller performs one state transition per message.
    #[serde(rename_all = "camelCase")]
    Poll {
        bank_account_id: Uuid,
        statement_id: String,
        claim: String,
        /// Polls that found it unfinished so far.
        attempt: u32,
        posted_at: DateTime<Utc>,
        transaction_count: u32,
    },
    /// Resubmit a claim's statement after a back-off (FIFO queues have no per-message delay).
    #[serde(rename_all = "camelCase")]
    RetryPush {
        bank_account_id: Uuid,
        claim: String,
    },
    /// Fires a while after a claim was taken: if it is still being posted by then, the pusher
    /// that took it died (a Lambda never runs that long) and the statement is resubmitted.
    #[serde(rename_all = "camelCase")]
    Watchdog {
        bank_account_id: Uuid,
        claim: String,
    },
}
