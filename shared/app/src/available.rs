//! `GET /availableaccounts?externalId=` (spec §4.6): every account under the same consent, read
//! live from the bank, the last known list as fallback. Secured like `/notification`.
//!
//! Banking Service waits at most 10 s for the answer, and so does the function (`Timeout` in
//! `template.yaml`): the live read gets whatever is left of that time minus `ANSWER_RESERVE`,
//! and a bank that has not answered by then is answered for from the cached list.

use std::sync::Arc;
use std::time::Duration;

use connector_domain::account::{BankConsent, ConsentRecord, GrantedAccount};
use connector_domain::ports::{
    AuthRejection, AvailableStore, BankReader, BankingServiceAuth, Clock,
};
use connector_domain::transaction::truncate_chars;
use http::HeaderMap;
use serde::Serialize;
use tokio::time::Instant;

/// One account of the answer, in the spec's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AvailableAccount {
    pub account_type: String,
    pub account_name: String,
    pub external_id: String,
    pub bank_identifier: String,
    pub account_identifier: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_identifier: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AvailableError {
    /// Refused (401, the check logged) or not checkable now (503).
    #[error("unauthorised: {0}")]
    Unauthorised(AuthRejection),
    #[error("externalId is required")]
    MissingExternalId,
    #[error("unknown externalId")]
    UnknownExternalId,
    #[error("unavailable: {0}")]
    Unavailable(String),
}

const ACCOUNT_TYPES: &[&str] = &[
    "business",
    "savings",
    "loan",
    "creditCard",
    "corporate",
    "personal",
];

fn shape(g: &GrantedAccount) -> AvailableAccount {
    AvailableAccount {
        account_type: if ACCOUNT_TYPES.contains(&g.kind.as_str()) {
            g.kind.clone()
        } else {
            "personal".into()
        },
        account_name: truncate_chars(
            if g.name.is_empty() {
                "Account"
            } else {
                &g.name
            },
            128,
        ),
        external_id: g.external_id.clone(),
        bank_identifier: truncate_chars(
            g.bank_code
                .as_deref()
                .filter(|c| !c.is_empty())
                .unwrap_or(&g.customer_id),
            64,
        ),
        account_identifier: truncate_chars(
            if g.identifier.is_empty() {
                &g.external_id
            } else {
                &g.identifier
            },
            64,
        ),
        branch_identifier: g
            .branch
            .as_deref()
            .filter(|b| !b.is_empty())
            .map(|b| truncate_chars(b, 128)),
    }
}

/// How long Banking Service waits for the answer (spec §4.6), from when the request reached
/// API Gateway.
pub const CALLER_WAIT: Duration = Duration::from_secs(10);

/// Kept back from the live read: caching its result or answering from the cache, and the way
/// back to Banking Service.
pub const ANSWER_RESERVE: Duration = Duration::from_secs(2);

/// What is left of the time to answer: `CALLER_WAIT` from when API Gateway received the request
/// (`received_ms`, its `requestContext.timeEpoch`), and never past the invocation's deadline
/// (`deadline_ms`); both in milliseconds since the epoch, like `now_ms`.
pub fn time_to_answer(received_ms: Option<i64>, deadline_ms: Option<i64>, now_ms: i64) -> Duration {
    let wait = CALLER_WAIT.as_millis() as i64;
    // A clock ahead of ours counts as just received, never as more time.
    let elapsed = received_ms.map_or(0, |r| (now_ms - r).clamp(0, wait));
    let mut left = wait - elapsed;
    if let Some(d) = deadline_ms {
        left = left.min(d - now_ms);
    }
    Duration::from_millis(left.max(0) as u64)
}

pub struct AvailableAccounts {
    pub auth: Arc<dyn BankingServiceAuth>,
    /// The grants and each consent's last known list (the table).
    pub store: Arc<dyn AvailableStore>,
    /// The Bank Data API's live consent.
    pub bank: Arc<dyn BankReader>,
    pub clock: Arc<dyn Clock>,
}

impl AvailableAccounts {
    /// Answers within `time_left` (see `time_to_answer`).
    pub async fn handle(
        &self,
        headers: &HeaderMap,
        external_id: Option<&str>,
        time_left: Duration,
    ) -> Result<Vec<AvailableAccount>, AvailableError> {
        let answer_by = Instant::now() + time_left;
        self.auth
            .verify(headers, None)
            .await
            .map_err(AvailableError::Unauthorised)?;
        let external_id = external_id
            .map(str::trim)
            .filter(|e| !e.is_empty() && e.chars().count() <= 255)
            .ok_or(AvailableError::MissingExternalId)?;
        let granted = self
            .store
            .granted_account(external_id)
            .await
            .map_err(unavailable)?
            .ok_or(AvailableError::UnknownExternalId)?;
        let cached = self
            .store
            .cached_consent(&granted.consent_id)
            .await
            .map_err(unavailable)?;
        let read_by = answer_by
            .checked_sub(ANSWER_RESERVE)
            .unwrap_or_else(Instant::now);
        let live =
            match tokio::time::timeout_at(read_by, self.bank.consent(&granted.consent_id)).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::warn!("the bank did not answer in time: answering from the cache");
                    return Ok(Self::cached(cached, &granted));
                }
            };
        match live {
            Ok(live) if live.is_active(self.clock.now()) => {
                Ok(self.answer_live(&live, &granted, answer_by).await)
            }
            other => {
                if let Err(e) = &other {
                    tracing::warn!(error = %e, "bank unavailable: answering from the cache");
                }
                Ok(Self::cached(cached, &granted))
            }
        }
    }

    /// The live list, remembered (best effort, within the time to answer: the answer does not
    /// depend on it).
    async fn answer_live(
        &self,
        live: &BankConsent,
        granted: &GrantedAccount,
        answer_by: Instant,
    ) -> Vec<AvailableAccount> {
        let record = live.record(granted.bank_id, self.clock.now());
        let accounts = record.accounts.clone();
        let write_by = answer_by
            .checked_sub(ANSWER_RESERVE / 4)
            .unwrap_or_else(Instant::now);
        if tokio::time::timeout_at(write_by, self.remember(&accounts, &record))
            .await
            .is_err()
        {
            tracing::warn!("caching the live account list took too long");
        }
        accounts.iter().map(shape).collect()
    }

    /// The last known list of the consent (at least the account asked about).
    fn cached(cached: Option<ConsentRecord>, granted: &GrantedAccount) -> Vec<AvailableAccount> {
        let accounts = cached
            .map(|c| c.accounts)
            .unwrap_or_else(|| vec![granted.clone()]);
        accounts.iter().map(shape).collect()
    }

    /// New accounts become known here, so that linking them works like onboarding.
    async fn remember(&self, accounts: &[GrantedAccount], record: &ConsentRecord) {
        for a in accounts {
            if let Err(e) = self.store.put_granted_account(a).await {
                tracing::warn!(error = %e, "could not record a granted account");
            }
        }
        if let Err(e) = self.store.cache_consent(record).await {
            tracing::warn!(error = %e, "could not cache the consent");
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> AvailableError {
    AvailableError::Unavailable(e.to_string())
}

#[cfg(test)]
#[path = "available_tests.rs"]
mod use_case_tests;

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn the_time_to_answer_counts_from_api_gateway_and_stops_at_the_invocation_deadline() {
        // Just received, plenty of invocation time: Banking Service's 10 s.
        assert_eq!(
            time_to_answer(Some(NOW), Some(NOW + 10_000), NOW),
            Duration::from_secs(10)
        );
        // A cold start took 3 s since API Gateway received it: 7 s left.
        assert_eq!(
            time_to_answer(Some(NOW - 3_000), Some(NOW + 10_000), NOW),
            Duration::from_secs(7)
        );
        // The invocation ends first.
        assert_eq!(
            time_to_answer(Some(NOW), Some(NOW + 4_000), NOW),
            Duration::from_secs(4)
        );
        // Too late already, and a receipt time ahead of our clock.
        assert_eq!(
            time_to_answer(Some(NOW - 12_000), None, NOW),
            Duration::ZERO
        );
        assert_eq!(
            time_to_answer(Some(NOW + 5_000), None, NOW),
            Duration::from_secs(10)
        );
        // Nothing known: Banking Service's wait from now.
        assert_eq!(time_to_answer(None, None, NOW), CALLER_WAIT);
        // The live read always leaves time to answer from the cache, inside the function's
        // timeout.
        assert!(ANSWER_RESERVE >= Duration::from_secs(1) && ANSWER_RESERVE < CALLER_WAIT);
    }
}
