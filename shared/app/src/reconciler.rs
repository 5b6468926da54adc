//! The reconciler, on a schedule: catches what slipped through (invariant 4) — stale claims,
//! accounts with pending work and no wake-up, overdue statements, expired consents, missed
//! notifications. Each account is looked at on its own (several at once): one that fails is
//! reported and the others are still done.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta};
use connector_domain::account::{Account, AccountStatus, BackfillState, Claim, ClaimPhase};
use connector_domain::messages::{KickReason, WorkMessage};
use connector_domain::ports::BankReader;
use futures::StreamExt;
use serde::Serialize;

use crate::batch::MessageError;
use crate::pipeline::Pipeline;

/// Accounts looked at at once.
const CONCURRENCY: usize = 8;

/// What one run found and did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    pub accounts: usize,
    pub kicked: usize,
    pub polls_resent: usize,
    pub retries_resent: usize,
    pub backfills_resumed: usize,
    pub overdue: usize,
    /// Accounts found with an expired or revoked consent, now owing an `authRequired` statement.
    pub consents_expired: usize,
    /// Accounts Banking Service has but whose notification never arrived.
    pub recovered: usize,
    /// Transactions not yet held by Banking Service, over all accounts, and the deepest account.
    pub pending_total: u64,
    pub pending_max: u64,
    /// Age of the oldest in-flight claim, in seconds (0 when none).
    pub oldest_in_flight_s: i64,
    /// Accounts that could not be looked at this run (logged; the next run tries again).
    pub failed: usize,
}

/// What was done for one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Nothing,
    Kicked,
    PollResent,
    RetryResent,
    BackfillResumed,
    ConsentExpired,
}

/// What looking at one account found.
struct Findings {
    action: Action,
    pending: u64,
    overdue: bool,
    claim_age_s: Option<i64>,
}

impl ReconcileReport {
    fn add(&mut self, f: &Findings) {
        match f.action {
            Action::Nothing => {}
            Action::Kicked => self.kicked += 1,
            Action::PollResent => self.polls_resent += 1,
            Action::RetryResent => self.retries_resent += 1,
            Action::BackfillResumed => self.backfills_resumed += 1,
            Action::ConsentExpired => self.consents_expired += 1,
        }
        self.pending_total += f.pending;
        self.pending_max = self.pending_max.max(f.pending);
        self.overdue += usize::from(f.overdue);
        if let Some(age) = f.claim_age_s {
            self.oldest_in_flight_s = self.oldest_in_flight_s.max(age);
        }
    }
}

pub struct Reconciler {
    pub pipeline: Pipeline,
    pub bank: Arc<dyn BankReader>,
    /// A claim without progress for this long is considered stuck.
    pub stale_after: Duration,
}

impl Reconciler {
    /// Granted accounts (PATCHed in the last day) without a live account here: ask Banking
    /// Service whether a product created them; a missed `bankAccount` notification is then
    /// replayed to the worker (spec §5: recovery through `POST /v1/accountqueries`).
    async fn recover_missed(
        &self,
        known: &HashSet<uuid::Uuid>,
        live_external: &HashSet<String>,
        now: DateTime<chrono::Utc>,
    ) -> Result<usize, String> {
        let p = &self.pipeline;
        let recent = now - TimeDelta::hours(24);
        let candidates: Vec<_> = p
            .store
            .granted_since(recent, now)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|g| !live_external.contains(&g.external_id))
            .take(50)
            .collect();
        let mut recovered = 0;
        for g in candidates {
            let Some(bank_id) = g.bank_id.or(p.single_bank) else {
                continue;
            };
            let found = match p
                .providers
                .for_bank(Some(bank_id))
                .query_account(bank_id, &g.external_id)
                .await
            {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "account query failed");
                    continue;
                }
            };
            if found.status == "cancelled" || known.contains(&found.bank_account_id) {
                continue;
            }
            tracing::warn!(
                bankAccountId = %found.bank_account_id,
                externalId = %g.external_id,
                "bankAccount notification missed: recovering"
            );
            let action = connector_domain::notification::NotificationAction::BankAccountCreated {
                bank_account_id: found.bank_account_id,
                external_id: Some(g.external_id.clone()),
                requested_start_date: found
                    .requested_start_date
                    .as_deref()
                    .and_then(connector_domain::notification::parse_start_date),
                bank_id: Some(bank_id),
            };
            p.timers
                .send_work(&WorkMessage::Notification {
                    key: format!("recovered#bankAccount#{}", found.bank_account_id),
                    action,
                    received_at: now,
                    verified_bank_id: None,
                })
                .await
                .map_err(|e| e.to_string())?;
            recovered += 1;
        }
        Ok(recovered)
    }

    /// Whether the bank says a consent is over (`None` when the bank cannot tell now).
    async fn consent_over(&self, consent_id: &str, now: DateTime<chrono::Utc>) -> Option<bool> {
        match self.bank.consent_active(consent_id, now).await {
            Ok(active) => Some(!active),
            Err(e) => {
                tracing::warn!(error = %e, "could not check a consent");
                None
            }
        }
    }

    pub async fn run(&self) -> Result<ReconcileReport, String> {
        let p = &self.pipeline;
        let now = p.now();
        let accounts = p.store.accounts().await.map_err(|e| e.to_string())?;
        let mut report = ReconcileReport {
            accounts: accounts.len(),
            ..Default::default()
        };
        let known: HashSet<uuid::Uuid> = accounts.iter().map(|a| a.bank_account_id).collect();
        let live: Vec<Account> = accounts
            .into_iter()
            .filter(|a| a.status != AccountStatus::Cancelled)
            .collect();
        let live_external: HashSet<String> = live.iter().map(|a| a.external_id.clone()).collect();
        report.recovered = match self.recover_missed(&known, &live_external, now).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "recovering missed notifications failed");
                report.failed += 1;
                0
            }
        };
        // One consent is checked once per run, whichever of its accounts asks first.
        let consents = Mutex::new(HashMap::new());
        let consents = &consents;
        let mut results = futures::stream::iter(live)
            .map(|account| async move {
                let id = account.bank_account_id;
                (id, self.reconcile(&account, now, consents).await)
            })
            .buffer_unordered(CONCURRENCY);
        while let Some((id, result)) = results.next().await {
            match result {
                Ok(findings) => report.add(&findings),
                Err(e) => {
                    tracing::error!(bankAccountId = %id, error = %e, "account not reconciled");
                    report.failed += 1;
                }
            }
        }
        emit_report(&report);
        tracing::info!(?report, "reconciliation done");
        Ok(report)
    }

    /// Looks at one live account: measures it, then acts on the first thing it needs.
    async fn reconcile(
        &self,
        account: &Account,
        now: DateTime<chrono::Utc>,
        consents: &Mutex<HashMap<String, Option<bool>>>,
    ) -> Result<Findings, MessageError> {
        let p = &self.pipeline;
        let pending = p
            .store
            .count_pending(
                account.bank_account_id,
                account.delivered_through.as_deref(),
            )
            .await?;
        if pending > 0 {
            let id = account.bank_account_id.to_string();
            crate::metrics::emit_with(
                "PendingDepth",
                pending as f64,
                crate::metrics::Unit::Count,
                &[],
                &[("bankAccountId", &id)],
            );
        }
        let claim = account.in_flight.as_ref();
        let action = if self.consent_expired(account, now, consents).await? {
            Action::ConsentExpired
        } else {
            match claim {
                Some(claim) => self.unstick(account.bank_account_id, claim, now).await?,
                None => self.wake_if_idle(account, pending, now).await?,
            }
        };
        Ok(Findings {
            action,
            pending,
            overdue: claim.and_then(Claim::posted).is_some_and(|p| p.overdue),
            claim_age_s: claim.map(|c| (now - c.since).num_seconds()),
        })
    }

    /// Consent expiry at the bank (spec §8.2 step 1): the account owes Banking Service an
    /// `authRequired` statement and pauses until re-authorisation.
    async fn consent_expired(
        &self,
        account: &Account,
        now: DateTime<chrono::Utc>,
        consents: &Mutex<HashMap<String, Option<bool>>>,
    ) -> Result<bool, MessageError> {
        let p = &self.pipeline;
        if account.status != AccountStatus::Active {
            return Ok(false);
        }
        let Some(granted) = p.store.granted_account(&account.external_id).await? else {
            return Ok(false);
        };
        let known = consents
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&granted.consent_id)
            .copied();
        let over = match known {
            Some(v) => v,
            None => {
                let v = self.consent_over(&granted.consent_id, now).await;
                consents
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(granted.consent_id.clone(), v);
                v
            }
        };
        if over != Some(true) {
            return Ok(false);
        }
        let id = account.bank_account_id;
        tracing::warn!(bankAccountId = %id, "consent over: re-authorisation required");
        p.store
            .set_account_status(id, AccountStatus::AuthRequired)
            .await?;
        p.kick(id, KickReason::Reconciler).await?;
        Ok(true)
    }

    /// A claim without progress for `stale_after`: its poll chain or its retry was lost.
    async fn unstick(
        &self,
        id: uuid::Uuid,
        claim: &Claim,
        now: DateTime<chrono::Utc>,
    ) -> Result<Action, MessageError> {
        let p = &self.pipeline;
        let stale = TimeDelta::from_std(self.stale_after).unwrap_or(TimeDelta::minutes(15));
        if now - claim.last_progress() < stale {
            return Ok(Action::Nothing);
        }
        match &claim.phase {
            ClaimPhase::Posted(posted) => {
                // Moving the counter on makes any message of the old chain stale, so that only
                // the poll sent here continues; a second later, so as not to follow a poll the
                // old chain has just made.
                let resent = p
                    .poll_next(
                        id,
                        &posted.statement_id,
                        &claim.token,
                        posted.poll_attempt,
                        posted.overdue,
                        posted.posted_at,
                        claim.transaction_count(),
                        Duration::from_secs(1),
                    )
                    .await?;
                if !resent {
                    return Ok(Action::Nothing);
                }
                tracing::warn!(bankAccountId = %id, "re-sent a poll for a quiet statement");
                Ok(Action::PollResent)
            }
            ClaimPhase::Posting | ClaimPhase::RetryWait { .. } => {
                // Posting crashed midway, or a retry timer was lost: resubmit the same
                // statement (duplicates are recognised by Banking Service).
                tracing::warn!(bankAccountId = %id, phase = claim.phase.name(), "resubmitting a stuck claim");
                let mut c = claim.clone();
                c.since = now;
                p.retry_later(id, c, Duration::ZERO, "reconciler").await?;
                Ok(Action::RetryResent)
            }
        }
    }

    /// An account without a claim: resume a stuck backfill, or wake an account with work owed
    /// and no wake-up on its way.
    async fn wake_if_idle(
        &self,
        account: &Account,
        pending: u64,
        now: DateTime<chrono::Utc>,
    ) -> Result<Action, MessageError> {
        let p = &self.pipeline;
        let id = account.bank_account_id;
        let stale = TimeDelta::from_std(self.stale_after).unwrap_or(TimeDelta::minutes(15));
        if account.backfill == BackfillState::Pending {
            if now - account.created_at <= stale {
                return Ok(Action::Nothing);
            }
            p.timers
                .send_work(&WorkMessage::BackfillPage {
                    bank_account_id: id,
                    cursor: account.backfill_cursor.clone(),
                })
                .await?;
            return Ok(Action::BackfillResumed);
        }
        let owed = account.auth_required_owed
            || (account.status == AccountStatus::Active && (pending > 0 || account.balance_owed()));
        if !owed {
            return Ok(Action::Nothing);
        }
        p.kick(id, KickReason::Reconciler).await?;
        Ok(Action::Kicked)
    }
}

/// The run's figures as metrics.
fn emit_report(report: &ReconcileReport) {
    use crate::metrics::{Unit, emit};
    emit(
        "PendingTotal",
        report.pending_total as f64,
        Unit::Count,
        &[],
    );
    emit("PendingMax", report.pending_max as f64, Unit::Count, &[]);
    emit(
        "OldestInFlightAge",
        report.oldest_in_flight_s as f64,
        Unit::Seconds,
        &[],
    );
    emit("StatementsOverdue", report.overdue as f64, Unit::Count, &[]);
}
