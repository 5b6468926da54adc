//! A bank account as the statement pipeline sees it, and the claim that makes its statement the
//! only one in flight (invariant 1). The rules of a claim's life (its phases, when its watchdog is
//! due, what a success records) live here; the adapters only store it.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::statement::Balance;

/// Where an account stands, for the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccountStatus {
    /// Statements flow.
    Active,
    /// The customer's consent ran out: pushes pause until re-authorisation.
    AuthRequired,
    /// Offboarded (tombstone): nothing is ever pushed again.
    Cancelled,
}

/// Progress of the initial history pull from `requestedStartDate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BackfillState {
    Pending,
    Done,
}

/// What an in-flight statement carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatementKind {
    Transactions,
    /// A 0-transaction statement reporting `authRequired` (spec §8.2).
    AuthRequired,
    /// A 0-transaction statement carrying newer balances (spec §8.4 step 3).
    Balances,
}

impl StatementKind {
    /// The `Kind` dimension of statement metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Transactions => "transactions",
            Self::AuthRequired => "authRequired",
            Self::Balances => "balances",
        }
    }
}

/// The claim that makes an account's statement the only one in flight. Stored as one flat
/// record (`ClaimRecord`), so that the store can condition its writes on single fields (the
/// token, the poll counter); reading a record whose fields contradict its phase fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ClaimRecord", into = "ClaimRecord")]
pub struct Claim {
    /// Random per claim: every later step is conditional on it.
    pub token: String,
    /// When the current attempt began (the claim was taken, or a resubmission started).
    pub since: DateTime<Utc>,
    pub kind: StatementKind,
    /// Failed submissions of this same statement so far.
    pub attempt: u32,
    /// 409s answered to this statement with the account not confirmed cancelled.
    pub conflicts: u32,
    pub batch: Batch,
    pub phase: ClaimPhase,
}

/// What the statement holds, recorded before it is posted so that a resubmission is identical.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batch {
    /// The uniqueIds of the statement, in order.
    pub unique_ids: Vec<String>,
    /// As-of of the ledger balance the statement carries.
    pub balance_as_of: Option<DateTime<Utc>>,
    /// Where the batch sits in the account's position order (transactions statements only).
    pub span: Option<BatchSpan>,
}

/// The positions and dates a transactions batch covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSpan {
    /// Highest statement position in the batch: the watermark after its success.
    pub hi_key: String,
    /// Newest `datePosted` in the batch.
    pub newest_date: DateTime<Utc>,
    /// When the connector received the batch's oldest transaction (ingest-to-succeeded latency).
    pub oldest_received_at: DateTime<Utc>,
}

/// What a claim is doing, with what only that phase has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPhase {
    /// Claimed; the statement is being built or posted.
    Posting,
    /// `POST` answered 201; the poller drives it to a terminal status.
    Posted(Posted),
    /// The last `POST` failed in a retryable way; a timer message will resubmit it at
    /// `retry_at` (the watchdog resubmits if it never comes).
    RetryWait { retry_at: DateTime<Utc> },
}

/// A statement Banking Service accepted, being polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub statement_id: String,
    pub posted_at: DateTime<Utc>,
    /// Polls that found the statement unfinished; guards against a duplicated poll message
    /// forking the poll chain.
    pub poll_attempt: u32,
    /// When the next poll is due (the watchdog restarts a poll chain that went quiet).
    pub next_poll_at: DateTime<Utc>,
    /// Set when the statement exceeded its maximum age (alarmed, still polled).
    pub overdue: bool,
}

impl ClaimPhase {
    /// The phase's name as stored and shown.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Posting => "posting",
            Self::Posted(_) => "posted",
            Self::RetryWait { .. } => "retryWait",
        }
    }
}

impl Claim {
    /// A fresh claim: posting a transactions statement not yet built.
    pub fn new(token: String, now: DateTime<Utc>) -> Self {
        Self {
            token,
            since: now,
            kind: StatementKind::Transactions,
            attempt: 0,
            conflicts: 0,
            batch: Batch::default(),
            phase: ClaimPhase::Posting,
        }
    }

    pub fn transaction_count(&self) -> u32 {
        self.batch.unique_ids.len() as u32
    }

    pub fn posted(&self) -> Option<&Posted> {
        match &self.phase {
            ClaimPhase::Posted(p) => Some(p),
            _ => None,
        }
    }

    pub fn statement_id(&self) -> Option<&str> {
        self.posted().map(|p| p.statement_id.as_str())
    }

    /// Polls made of the posted statement (0 in the other phases).
    pub fn poll_attempt(&self) -> u32 {
        self.posted().map_or(0, |p| p.poll_attempt)
    }

    /// Whether a poll message (`token`, `statement_id`, `attempt`) is the step this claim waits
    /// for; any other is stale (a redelivery, or a chain the watchdog replaced).
    pub fn awaits_poll(&self, token: &str, statement_id: &str, attempt: u32) -> bool {
        self.token == token
            && self
                .posted()
                .is_some_and(|p| p.statement_id == statement_id && p.poll_attempt == attempt)
    }

    /// Whether a retry timer (`token`, `attempt` if it says one) is the one this claim waits for.
    pub fn awaits_retry(&self, token: &str, attempt: Option<u32>) -> bool {
        self.token == token
            && matches!(self.phase, ClaimPhase::RetryWait { .. })
            && attempt.is_none_or(|a| a == self.attempt)
    }

    /// The statement failed in a retryable way: wait until `retry_at`, counting the attempt.
    pub fn wait_for_retry(&mut self, retry_at: DateTime<Utc>) {
        self.attempt += 1;
        self.phase = ClaimPhase::RetryWait { retry_at };
    }

    /// A resubmission begins now.
    pub fn resubmit(&mut self, now: DateTime<Utc>) {
        self.since = now;
        self.phase = ClaimPhase::Posting;
    }

    /// Banking Service accepted the statement as `statement_id`; its first poll is due at
    /// `first_poll_at`.
    pub fn accept(
        &mut self,
        statement_id: String,
        now: DateTime<Utc>,
        first_poll_at: DateTime<Utc>,
    ) {
        self.phase = ClaimPhase::Posted(Posted {
            statement_id,
            posted_at: now,
            poll_attempt: 0,
            next_poll_at: first_poll_at,
            overdue: false,
        });
    }

    /// When the step this claim waits for is overdue by `grace`: whoever owed it died.
    pub fn watchdog_due(&self, grace: TimeDelta) -> DateTime<Utc> {
        let waiting_since = match &self.phase {
            ClaimPhase::Posting => self.since,
            ClaimPhase::RetryWait { retry_at } => *retry_at,
            ClaimPhase::Posted(p) => p.next_poll_at,
        };
        waiting_since + grace
    }

    /// When the claim last moved (as the reconciler and operators measure it).
    pub fn last_progress(&self) -> DateTime<Utc> {
        self.posted().map_or(self.since, |p| p.posted_at)
    }

    /// What releasing the claim records once its statement succeeded: the watermark moves to
    /// the batch's highest position and every transaction in it counts as delivered.
    pub fn success(&self, newest_delivered: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Release {
        let span = self.batch.span.as_ref();
        Release {
            delivered_through: span.map(|s| s.hi_key.clone()),
            newest_delivered: span
                .map(|s| s.newest_date)
                .into_iter()
                .chain(newest_delivered)
                .max(),
            success_at: Some(now),
            delivered: self.batch.unique_ids.len() as u64,
            auth_required_sent: self.kind == StatementKind::AuthRequired,
            balance_sent_as_of: self.batch.balance_as_of,
        }
    }
}

/// The claim as stored: one flat record, the field names the store's conditions use.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimRecord {
    token: String,
    phase: PhaseName,
    kind: StatementKind,
    since: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    statement_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    posted_at: Option<DateTime<Utc>>,
    #[serde(default)]
    attempt: u32,
    #[serde(default)]
    conflicts: u32,
    #[serde(default)]
    poll_attempt: u32,
    #[serde(default)]
    transaction_count: u32,
    #[serde(default)]
    unique_ids: Vec<String>,
    #[serde(default)]
    overdue: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    balance_as_of: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hi_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    newest_date: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    oldest_received_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_poll_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
enum PhaseName {
    Posting,
    Posted,
    RetryWait,
}

/// A stored claim whose fields contradict its phase.
#[derive(Debug, thiserror::Error)]
#[error("malformed claim: {0}")]
pub struct MalformedClaim(&'static str);

impl TryFrom<ClaimRecord> for Claim {
    type Error = MalformedClaim;

    fn try_from(r: ClaimRecord) -> Result<Self, Self::Error> {
        let phase = match r.phase {
            PhaseName::Posting => ClaimPhase::Posting,
            PhaseName::RetryWait => ClaimPhase::RetryWait {
                retry_at: r
                    .retry_at
                    .ok_or(MalformedClaim("retryWait without retryAt"))?,
            },
            PhaseName::Posted => {
                let posted_at = r
                    .posted_at
                    .ok_or(MalformedClaim("posted without postedAt"))?;
                ClaimPhase::Posted(Posted {
                    statement_id: r
                        .statement_id
                        .ok_or(MalformedClaim("posted without statementId"))?,
                    posted_at,
                    poll_attempt: r.poll_attempt,
                    next_poll_at: r.next_poll_at.unwrap_or(posted_at),
                    overdue: r.overdue,
                })
            }
        };
        let span = match (r.hi_key, r.newest_date, r.oldest_received_at) {
            (Some(hi_key), Some(newest_date), Some(oldest_received_at)) => Some(BatchSpan {
                hi_key,
                newest_date,
                oldest_received_at,
            }),
            (None, None, None) => None,
            _ => return Err(MalformedClaim("a batch span with missing fields")),
        };
        Ok(Self {
            token: r.token,
            since: r.since,
            kind: r.kind,
            attempt: r.attempt,
            conflicts: r.conflicts,
            batch: Batch {
                unique_ids: r.unique_ids,
                balance_as_of: r.balance_as_of,
                span,
            },
            phase,
        })
    }
}

impl From<Claim> for ClaimRecord {
    fn from(c: Claim) -> Self {
        let transaction_count = c.transaction_count();
        let (phase, posted, retry_at) = match c.phase {
            ClaimPhase::Posting => (PhaseName::Posting, None, None),
            ClaimPhase::Posted(p) => (PhaseName::Posted, Some(p), None),
            ClaimPhase::RetryWait { retry_at } => (PhaseName::RetryWait, None, Some(retry_at)),
        };
        let span = c.batch.span;
        Self {
            token: c.token,
            phase,
            kind: c.kind,
            since: c.since,
            statement_id: posted.as_ref().map(|p| p.statement_id.clone()),
            posted_at: posted.as_ref().map(|p| p.posted_at),
            attempt: c.attempt,
            conflicts: c.conflicts,
            poll_attempt: posted.as_ref().map_or(0, |p| p.poll_attempt),
            transaction_count,
            unique_ids: c.batch.unique_ids,
            overdue: posted.as_ref().is_some_and(|p| p.overdue),
            balance_as_of: c.batch.balance_as_of,
            hi_key: span.as_ref().map(|s| s.hi_key.clone()),
            newest_date: span.as_ref().map(|s| s.newest_date),
            oldest_received_at: span.as_ref().map(|s| s.oldest_received_at),
            retry_at,
            next_poll_at: posted.map(|p| p.next_poll_at),
        }
    }
}

/// The account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Account {
    pub bank_account_id: Uuid,
    pub external_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bank_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_start_date: Option<DateTime<Utc>>,
    pub status: AccountStatus,
    pub backfill: BackfillState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill_cursor: Option<String>,
    /// Arrival sequence numbers handed out so far (statement order breaks date ties with it).
    #[serde(default)]
    pub next_seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<Balance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<Balance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<Claim>,
    /// Newest `datePosted` Banking Service holds for this account (the 2-week rule's reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_delivered: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub delivered_count: u64,
    /// A 0-transaction `authRequired` statement is owed to Banking Service.
    #[serde(default)]
    pub auth_required_owed: bool,
    /// As-of (epoch ms) of the newest ledger balance the bank gave, and of the newest one
    /// Banking Service holds: when the first is newer, a balance statement is owed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_as_of_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_sent_as_of_ms: Option<i64>,
    /// Banking Service holds every transaction up to this statement position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_through: Option<String>,
    /// The highest position ever put in a statement. Transactions arriving with an older
    /// position are placed after it (see `stored::position_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<String>,
    /// Ingests being written right now, by token. The pusher starts no batch while one is,
    /// and commits a batch (the store's `commit_horizon`) only if none began since it looked:
    /// so a statement never skips a transaction still being written, and every ingest knows
    /// the horizon its stragglers must go after.
    #[serde(default)]
    pub ingesting: BTreeMap<String, IngestFence>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// An unfinished ingest: when its lease ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestFence {
    pub expires_at_ms: i64,
}

impl Account {
    /// A newly notified account: active, its backfill still to do, nothing delivered yet.
    pub fn new(
        bank_account_id: Uuid,
        external_id: String,
        bank_id: Option<Uuid>,
        requested_start_date: Option<DateTime<Utc>>,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            bank_account_id,
            external_id,
            bank_id,
            requested_start_date,
            status: AccountStatus::Active,
            backfill: BackfillState::Pending,
            backfill_cursor: None,
            next_seq: 0,
            ledger: None,
            available: None,
            in_flight: None,
            newest_delivered: None,
            last_success_at: None,
            delivered_count: 0,
            auth_required_owed: false,
            ledger_as_of_ms: None,
            balance_sent_as_of_ms: None,
            delivered_through: None,
            horizon: None,
            ingesting: BTreeMap::new(),
            created_at,
            cancelled_at: None,
        }
    }

    /// Ingests still being written (an expired lease means one died midway).
    pub fn live_ingests(&self, now: DateTime<Utc>) -> usize {
        self.ingesting
            .values()
            .filter(|f| f.expires_at_ms > now.timestamp_millis())
            .count()
    }

    /// The bank gave a ledger balance newer than any Banking Service holds.
    pub fn balance_owed(&self) -> bool {
        match (self.ledger_as_of_ms, self.balance_sent_as_of_ms) {
            (Some(given), Some(sent)) => given > sent,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// What releasing a claim records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    /// The new watermark (a transactions statement succeeded).
    pub delivered_through: Option<String>,
    pub newest_delivered: Option<DateTime<Utc>>,
    pub success_at: Option<DateTime<Utc>>,
    pub delivered: u64,
    pub auth_required_sent: bool,
    pub balance_sent_as_of: Option<DateTime<Utc>>,
}

/// An account a customer granted, as the connector announced it in `PATCH /v1/authorisations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantedAccount {
    /// Our `bankAccountExternalId`: the bank's stable, opaque account id.
    pub external_id: String,
    pub consent_id: String,
    pub customer_id: String,
    pub name: String,
    pub kind: String,
    pub identifier: String,
    #[serde(default)]
    pub branch: Option<String>,
    #[serde(default)]
    pub bank_code: Option<String>,
    /// Banking Service's bank the account was granted through (for account queries).
    #[serde(default)]
    pub bank_id: Option<Uuid>,
    #[serde(default)]
    pub granted_at: Option<DateTime<Utc>>,
}

/// The last account list known of a consent: the fallback when the bank is unreachable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentRecord {
    pub consent_id: String,
    pub customer_id: String,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub accounts: Vec<GrantedAccount>,
    pub updated_at: DateTime<Utc>,
}

/// A consent as the bank reports it now, with every account it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankConsent {
    pub consent_id: String,
    pub customer_id: String,
    /// The bank's status: `active`, `revoked`, `expired`, ...
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub accounts: Vec<ConsentedAccount>,
}

impl BankConsent {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.status == "active" && self.expires_at > now
    }

    /// What the connector keeps of it: each account granted at `now`, through `bank_id`.
    pub fn record(&self, bank_id: Option<Uuid>, now: DateTime<Utc>) -> ConsentRecord {
        ConsentRecord {
            consent_id: self.consent_id.clone(),
            customer_id: self.customer_id.clone(),
            status: self.status.clone(),
            expires_at: self.expires_at,
            accounts: self
                .accounts
                .iter()
                .map(|a| GrantedAccount {
                    external_id: a.account_id.clone(),
                    consent_id: self.consent_id.clone(),
                    customer_id: self.customer_id.clone(),
                    name: a.name.clone(),
                    kind: a.kind.clone(),
                    identifier: a.identifier.clone(),
                    branch: a.branch.clone(),
                    bank_code: a.bank_code.clone(),
                    bank_id,
                    granted_at: Some(now),
                })
                .collect(),
            updated_at: now,
        }
    }
}

/// An account a consent covers, as the bank describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentedAccount {
    pub account_id: String,
    pub name: String,
    pub kind: String,
    pub identifier: String,
    pub branch: Option<String>,
    pub bank_code: Option<String>,
}

/// An account linked to an `externalId` (one real account may be linked by several companies).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExternalLink {
    pub bank_account_id: Uuid,
    pub cancelled: bool,
}

/// Result of recording a `bankAccount` created notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A redelivery: the account exists already.
    AlreadyExists,
    /// Deleted before it was created (reordered delivery): stays cancelled.
    Tombstoned,
}

/// Result of claiming an account for a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimOutcome {
    Claimed(Box<Account>),
    /// Another statement is in flight (or waiting to be resubmitted).
    Busy,
    /// Unknown or cancelled account.
    Gone,
}

/// An ingest under way: its first sequence number, its fence token, and the horizon its
/// stragglers go after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStart {
    pub first_seq: u64,
    pub token: String,
    pub horizon: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn posted_claim() -> Claim {
        let mut c = Claim::new("t".into(), at("2026-01-01T00:00:00Z"));
        c.batch = Batch {
            unique_ids: vec!["a".into(), "b".into()],
            balance_as_of: Some(at("2026-01-01T00:00:00Z")),
            span: Some(BatchSpan {
                hi_key: "k2".into(),
                newest_date: at("2025-12-31T00:00:00Z"),
                oldest_received_at: at("2025-12-31T01:00:00Z"),
            }),
        };
        c.accept(
            "s1".into(),
            at("2026-01-01T00:00:01Z"),
            at("2026-01-01T00:00:03Z"),
        );
        c
    }

    #[test]
    fn a_claim_is_stored_flat_under_the_field_names_the_store_conditions_on() {
        let c = posted_claim();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["token"], "t");
        assert_eq!(v["phase"], "posted");
        assert_eq!(v["statementId"], "s1");
        assert_eq!(v["pollAttempt"], 0);
        assert_eq!(v["transactionCount"], 2);
        assert_eq!(v["hiKey"], "k2");
        assert_eq!(v["nextPollAt"], "2026-01-01T00:00:03Z");
        assert!(v.get("retryAt").is_none());
        let back: Claim = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn a_stored_claim_that_contradicts_its_phase_does_not_read() {
        let mut v = serde_json::to_value(posted_claim()).unwrap();
        v.as_object_mut().unwrap().remove("statementId");
        assert!(serde_json::from_value::<Claim>(v).is_err());
        let mut v = serde_json::to_value(posted_claim()).unwrap();
        v["phase"] = "retryWait".into();
        assert!(serde_json::from_value::<Claim>(v).is_err());
        let mut v = serde_json::to_value(posted_claim()).unwrap();
        v.as_object_mut().unwrap().remove("newestDate");
        assert!(serde_json::from_value::<Claim>(v).is_err());
    }

    #[test]
    fn only_the_awaited_poll_and_retry_are_current() {
        let c = posted_claim();
        assert!(c.awaits_poll("t", "s1", 0));
        assert!(!c.awaits_poll("t", "s1", 1));
        assert!(!c.awaits_poll("t", "s2", 0));
        assert!(!c.awaits_poll("u", "s1", 0));
        assert!(!c.awaits_retry("t", None));
        let mut r = c.clone();
        r.wait_for_retry(at("2026-01-01T00:01:00Z"));
        assert_eq!(r.attempt, 1);
        assert!(r.awaits_retry("t", None));
        assert!(r.awaits_retry("t", Some(1)));
        assert!(!r.awaits_retry("t", Some(0)));
        assert!(!r.awaits_poll("t", "s1", 0));
        assert_eq!(r.statement_id(), None);
    }

    #[test]
    fn the_watchdog_is_due_a_grace_after_the_step_the_claim_waits_for() {
        let grace = TimeDelta::seconds(180);
        let mut c = Claim::new("t".into(), at("2026-01-01T00:00:00Z"));
        assert_eq!(c.watchdog_due(grace), at("2026-01-01T00:03:00Z"));
        c.wait_for_retry(at("2026-01-01T00:10:00Z"));
        assert_eq!(c.watchdog_due(grace), at("2026-01-01T00:13:00Z"));
        assert_eq!(
            posted_claim().watchdog_due(grace),
            at("2026-01-01T00:03:03Z")
        );
    }

    #[test]
    fn a_success_moves_the_watermark_and_keeps_the_newest_date() {
        let c = posted_claim();
        let now = at("2026-01-01T00:00:05Z");
        let r = c.success(Some(at("2025-12-01T00:00:00Z")), now);
        assert_eq!(r.delivered_through.as_deref(), Some("k2"));
        assert_eq!(r.newest_delivered, Some(at("2025-12-31T00:00:00Z")));
        assert_eq!(r.delivered, 2);
        assert_eq!(r.success_at, Some(now));
        assert!(!r.auth_required_sent);
        let later = c.success(Some(at("2026-02-01T00:00:00Z")), now);
        assert_eq!(later.newest_delivered, Some(at("2026-02-01T00:00:00Z")));
        let mut auth = Claim::new("t".into(), now);
        auth.kind = StatementKind::AuthRequired;
        let r = auth.success(None, now);
        assert!(r.auth_required_sent);
        assert_eq!(r.delivered_through, None);
        assert_eq!(r.delivered, 0);
    }
}
