//! Taking transactions in: `POST /ingest` from the bank (near real time) and the backfill's pages
//! both end in [`store_for_account`], which is idempotent on `uniqueId`.

use chrono::{DateTime, Utc};
use std::sync::Arc;

use connector_domain::ingest::{IngestBodyError, IngestRequest, parse_ingest_body};
use connector_domain::messages::{Kick, KickReason};
use connector_domain::ports::{
    Clock, ExpectedKey, IngestStore, PutOutcome, RegistryStore, StoreError, Timers,
};
use connector_domain::statement::Balance;
use connector_domain::transaction::{RecordProblem, Transaction, dated_in_future, validate_record};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

pub use connector_domain::ingest::{MAX_BODY, MAX_RECORDS};

/// How long an ingest may fence batch commits off if it dies midway, when the invocation's
/// deadline is not known (longer than any function's timeout).
const INGEST_LEASE: std::time::Duration = std::time::Duration::from_secs(120);
/// Added to the invocation's deadline: covers clock skew between the Lambdas that read the fence.
const LEASE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// Until when an ingest's fence holds: just past the invocation's deadline, after which Lambda
/// has certainly stopped it, so that a killed ingest stalls its account for seconds, not minutes.
pub fn fence_until(deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    let fallback = now + chrono::TimeDelta::from_std(INGEST_LEASE).unwrap_or(LEASE_MARGIN);
    match deadline {
        Some(d) if d > now => (d + LEASE_MARGIN).min(fallback),
        _ => fallback,
    }
}

/// Stores transactions for one account and returns, per transaction, whether it is new;
/// `None` when the account is gone. Writes run in parallel under a fence: no batch is committed
/// while they land, so none can skip one of them (see `Account::ingesting`).
///
/// The bank's balances, when given, are recorded inside the same fence: a statement never
/// carries a balance that already counts transactions it does not.
pub async fn store_for_account(
    table: &dyn IngestStore,
    account: Uuid,
    transactions: &[Transaction],
    balances: Option<(&Balance, Option<&Balance>)>,
    now: DateTime<Utc>,
    fence_until: DateTime<Utc>,
) -> Result<Option<Vec<PutOutcome>>, StoreError> {
    if transactions.is_empty() {
        if let Some((ledger, available)) = balances {
            table
                .update_balances(account, Some(ledger), available)
                .await?;
        }
        return Ok(Some(Vec::new()));
    }
    let Some(start) = table
        .begin_ingest(
            account,
            transactions.len() as u64,
            (fence_until - now).to_std().unwrap_or(INGEST_LEASE),
            now,
        )
        .await?
    else {
        return Ok(None);
    };
    let stored = table
        .put_transactions(
            account,
            transactions,
            start.first_seq,
            start.horizon.as_deref(),
            now,
        )
        .await;
    let balanced = match (&stored, balances) {
        (Ok(_), Some((ledger, available))) => {
            table
                .update_balances(account, Some(ledger), available)
                .await
        }
        _ => Ok(()),
    };
    // Lifted whatever happened: a failed write is retried by the caller with a new fence.
    let ended = table.end_ingest(account, &start.token).await;
    balanced?;
    let stored = stored?;
    ended?;
    Ok(Some(stored))
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("not authorised")]
    Unauthorised,
    #[error("the body is not valid: {0}")]
    BadBody(String),
    #[error("too many records: at most {MAX_RECORDS} per request")]
    TooMany,
    #[error("the body is too large")]
    TooLarge,
    #[error("no connected account has this externalId")]
    UnknownAccount,
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

/// What happened to one record.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RecordResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    pub status: RecordStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<RecordProblem>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum RecordStatus {
    Accepted,
    Duplicate,
    Rejected,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IngestReport {
    pub accepted: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub results: Vec<RecordResult>,
}

pub struct Ingest {
    /// The accounts linked to each `externalId` and their transactions (the table).
    pub store: Arc<dyn RegistryStore>,
    /// The push queue, kicked for each account that got something new.
    pub queues: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
    /// On AWS the route is IAM-authorised; locally (and behind other gateways) an API key.
    pub api_key: Option<Arc<dyn ExpectedKey>>,
}

impl Ingest {
    /// Whether the caller presented the ingest key, when one is configured.
    pub async fn authorise(&self, presented: Option<&str>) -> Result<(), IngestError> {
        if crate::browser::key_accepted(self.api_key.as_ref(), presented).await {
            Ok(())
        } else {
            Err(IngestError::Unauthorised)
        }
    }

    /// `deadline`: the invocation's, which bounds how long a crash here can fence the account.
    pub async fn handle(
        &self,
        body: &[u8],
        deadline: Option<DateTime<Utc>>,
    ) -> Result<IngestReport, IngestError> {
        let IngestRequest {
            external_id,
            records,
            balance,
        } = parse_ingest_body(body).map_err(|e| match e {
            IngestBodyError::TooLarge => IngestError::TooLarge,
            IngestBodyError::TooMany => IngestError::TooMany,
            IngestBodyError::Invalid(reason) => IngestError::BadBody(reason),
        })?;
        let live = self.live_accounts(&external_id).await?;
        let now = self.clock.now();
        let (mut results, valid, valid_index) = check_records(&records, now);
        // One real account may be linked by several companies: each linked account gets it.
        let mut new_anywhere = vec![false; valid.len()];
        for &account in &live {
            let balances = balance.as_ref().map(|(l, a)| (l, a.as_ref()));
            let until = fence_until(deadline, now);
            let outcomes =
                store_for_account(self.store.as_ref(), account, &valid, balances, now, until)
                    .await
                    .map_err(unavailable)?;
            let Some(outcomes) = outcomes else { continue };
            for (i, o) in outcomes.iter().enumerate() {
                new_anywhere[i] |= *o == PutOutcome::Stored;
            }
            if outcomes.contains(&PutOutcome::Stored) || balance.is_some() {
                self.kick(account).await?;
            }
        }
        for (i, is_new) in new_anywhere.iter().enumerate() {
            if !is_new {
                results[valid_index[i]].status = RecordStatus::Duplicate;
            }
        }
        let count = |s: RecordStatus| results.iter().filter(|r| r.status == s).count();
        Ok(IngestReport {
            accepted: count(RecordStatus::Accepted),
            duplicates: count(RecordStatus::Duplicate),
            rejected: count(RecordStatus::Rejected),
            results,
        })
    }

    /// The accounts not cancelled that `external_id` is linked to (at least one).
    async fn live_accounts(&self, external_id: &str) -> Result<Vec<Uuid>, IngestError> {
        let links = self
            .store
            .accounts_for_external_id(external_id)
            .await
            .map_err(unavailable)?;
        let live: Vec<Uuid> = links
            .iter()
            .filter(|l| !l.cancelled)
            .map(|l| l.bank_account_id)
            .collect();
        if live.is_empty() {
            return Err(IngestError::UnknownAccount);
        }
        Ok(live)
    }

    async fn kick(&self, account: Uuid) -> Result<(), IngestError> {
        let kick = Kick {
            bank_account_id: account,
            claim: None,
            attempt: None,
            reason: KickReason::Ingest,
        };
        self.queues.kick(&kick).await.map_err(unavailable)
    }
}

fn unavailable(e: impl std::fmt::Display) -> IngestError {
    IngestError::Unavailable(e.to_string())
}

/// Each record's verdict; the valid ones, and where each sits among the records.
fn check_records(
    records: &[Box<RawValue>],
    now: DateTime<Utc>,
) -> (Vec<RecordResult>, Vec<Transaction>, Vec<usize>) {
    let mut results = Vec::with_capacity(records.len());
    let mut valid = Vec::new();
    let mut valid_index = Vec::new();
    for (index, raw) in records.iter().enumerate() {
        let checked = validate_record(raw).and_then(|t| match dated_in_future(&t, now) {
            Some(problem) => Err(vec![problem]),
            None => Ok(t),
        });
        match checked {
            Ok(t) => {
                results.push(RecordResult {
                    index,
                    unique_id: Some(t.unique_id.clone()),
                    status: RecordStatus::Accepted,
                    problems: Vec::new(),
                });
                valid_index.push(index);
                valid.push(t);
            }
            Err(problems) => results.push(RecordResult {
                index,
                unique_id: unique_id_of(raw),
                status: RecordStatus::Rejected,
                problems,
            }),
        }
    }
    (results, valid, valid_index)
}

fn unique_id_of(raw: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Id {
        unique_id: Option<serde_json::Value>,
    }
    serde_json::from_str::<Id>(raw.get())
        .ok()
        .and_then(|i| i.unique_id)
        .and_then(|v| v.as_str().map(|s| s.chars().take(255).collect()))
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod use_case_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn the_fence_ends_just_after_the_invocation_deadline() {
        let now = Utc::now();
        let deadline = now + TimeDelta::seconds(30);
        assert_eq!(fence_until(Some(deadline), now), deadline + LEASE_MARGIN);
    }

    #[test]
    fn without_a_usable_deadline_the_fence_takes_the_long_lease() {
        let now = Utc::now();
        let long = now + TimeDelta::seconds(120);
        assert_eq!(fence_until(None, now), long);
        // A deadline already past (clock skew) or absurdly far away never shortens or lengthens
        // the fence beyond the fallback.
        assert_eq!(fence_until(Some(now - TimeDelta::seconds(1)), now), long);
        assert_eq!(fence_until(Some(now + TimeDelta::hours(5)), now), long);
    }
}
