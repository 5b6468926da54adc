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
        /// The bank whose settings alone verified the notification (several banks in one
        /// deployment), when the notification did not name it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        verified_bank_id: Option<Uuid>,
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
    /// With `claim` from a retry timer: the failed submissions when it was set, so that a timer
    /// overtaken by a resubmission (the watchdog's) is recognised as stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
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
        /// The claim's failed submissions when the retry was scheduled (absent: any).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
    },
    /// Follows a claim from the moment it is taken until it is released, re-armed each time it
    /// fires: whenever the step the claim waits for (its posting, its retry timer, its next
    /// poll) is overdue by the grace, the process that owed it died and the watchdog takes that
    /// step over (design §3, invariant 3: a crash at any point leads to a safe resubmission).
    #[serde(rename_all = "camelCase")]
    Watchdog {
        bank_account_id: Uuid,
        claim: String,
    },
}
