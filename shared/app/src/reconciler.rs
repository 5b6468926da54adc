//! The reconciler, on a schedule: catches what slipped through (invariant 4) — stale claims,
//! accounts with pending work and no wake-up, overdue statements.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use connector_aws::accounts::{AccountStatus, BackfillState, Phase};
use connector_domain::messages::{KickReason, WorkMessage};
use serde::Serialize;

use std::collections::HashMap;
use std::sync::Arc;

use connector_bank::{BankClient, BankError};

use crate::config::{ConfigError, Env};
use crate::context::{Platform, QueueNeeds, bank_from_env, http_client};
use crate::pipeline::Pipeline;

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
}

pub struct Reconciler {
    pub pipeline: Pipeline,
    pub bank: Arc<BankClient>,
    /// For recovered notifications (the worker acts on them as on Banking Service's).
    work: connector_aws::queues::Queues,
    /// A claim without progress for this long is considered stuck.
    pub stale_after: Duration,
}

impl Reconciler {
    pub async fn from_env(env: &Env) -> Result<Self, ConfigError> {
        // One set of AWS clients for the pipeline and the reconciler's own work (building the
        // SDK's clients is a measurable part of a cold start).
        let platform = Platform::from_env(
            env,
            QueueNeeds {
                notifications: true,
                push: true,
                poll: true,
            },
        )
        .await?;
        let pipeline = Pipeline::with_platform(env, &platform, false).await?;
        let bank = bank_from_env(env, &platform, &http_client(env)?).await?;
        Ok(Self {
            pipeline,
            bank,
            work: platform.queues,
            stale_after: env.duration_secs("RECONCILE_STALE_AFTER_S", Duration::from_secs(900))?,
        })
    }

    /// Granted accounts (PATCHed in the last day) without a live account here: ask Banking
    /// Service whether a product created them; a missed `bankAccount` notification is then
    /// replayed to the worker (spec §5: recovery through `POST /v1/accountqueries`).
    async fn recover_missed(
        &self,
        known: &std::collections::HashSet<uuid::Uuid>,
        live_external: &std::collections::HashSet<String>,
        now: chrono::DateTime<Utc>,
    ) -> Result<usize, String> {
        let p = &self.pipeline;
        let recent = now - TimeDelta::hours(24);
        let candidates: Vec<_> = p
            .table
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
            self.work
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
    async fn consent_over(&self, consent_id: &str, now: chrono::DateTime<Utc>) -> Option<bool> {
        match self.bank.consent(consent_id).await {
            Ok(c) => Some(!c.is_active(now)),
            Err(BankError::ConsentExpired | BankError::NotFound) => Some(true),
            Err(e) => {
                tracing::warn!(error = %e, "could not check a consent");
                None
            }
        }
    }

    pub async fn run(&self) -> Result<ReconcileReport, String> {
        let p = &self.pipeline;
        let now = Utc::now();
        let stale = TimeDelta::from_std(self.stale_after).unwrap_or(TimeDelta::minutes(15));
        let accounts = p.table.accounts().await.map_err(|e| e.to_string())?;
        let mut report = ReconcileReport {
            accounts: accounts.len(),
            ..Default::default()
        };
        let known: std::collections::HashSet<uuid::Uuid> =
            accounts.iter().map(|a| a.bank_account_id).collect();
        let live_external: std::collections::HashSet<String> = accounts
            .iter()
            .filter(|a| a.status != AccountStatus::Cancelled)
            .map(|a| a.external_id.clone())
            .collect();
        report.recovered = self.recover_missed(&known, &live_external, now).await?;
        let mut consents: HashMap<String, Option<bool>> = HashMap::new();
        for account in accounts {
            let id = account.bank_account_id;
            if account.status == AccountStatus::Cancelled {
                continue;
            }
            self.measure(&account, now, &mut report).await?;
            // Consent expiry at the bank (spec §8.2 step 1): the account owes Banking Service an
            // authRequired statement and pauses until re-authorisation.
            if account.status == AccountStatus::Active
                && let Some(granted) = p
                    .table
                    .granted_account(&account.external_id)
                    .await
                    .map_err(|e| e.to_string())?
            {
                let over = match consents.get(&granted.consent_id) {
                    Some(v) => *v,
                    None => {
                        let v = self.consent_over(&granted.consent_id, now).await;
                        consents.insert(granted.consent_id.clone(), v);
                        v
                    }
                };
                if over == Some(true) {
                    tracing::warn!(bankAccountId = %id, "consent over: re-authorisation required");
                    p.table
                        .set_account_status(id, AccountStatus::AuthRequired)
                        .await
                        .map_err(|e| e.to_string())?;
                    p.kick(id, KickReason::Reconciler)
                        .await
                        .map_err(|e| e.to_string())?;
                    report.consents_expired += 1;
                    continue;
                }
            }
            match &account.in_flight {
                Some(claim) => {
                    if claim.overdue {
                        report.overdue += 1;
                    }
                    let last_progress = claim.posted_at.unwrap_or(claim.since);
                    if now - last_progress < stale {
                        continue;
                    }
                    match (claim.phase, &claim.statement_id, claim.posted_at) {
                        (Phase::Posted, Some(statement_id), Some(posted_at)) => {
                            // The poll chain may have been lost. Moving the counter on makes
                            // any message of the old chain stale, so that only the poll sent
                            // here continues; a second later, so as not to follow a poll the
                            // old chain has just made.
                            if !p
                                .poll_next(
                                    id,
                                    statement_id,
                                    &claim.token,
                                    claim.poll_attempt,
                                    claim.overdue,
                                    posted_at,
                                    claim.transaction_count,
                                    Duration::from_secs(1),
                                )
                                .await
                                .map_err(|e| e.to_string())?
                            {
                                continue;
                            }
                            tracing::warn!(bankAccountId = %id, "re-sent a poll for a quiet statement");
                            report.polls_resent += 1;
                        }
                        _ => {
                            // Posting crashed midway, or a retry timer was lost: resubmit the
                            // same statement (duplicates are recognised by Banking Service).
                            tracing::warn!(bankAccountId = %id, phase = ?claim.phase, "resubmitting a stuck claim");
                            let mut c = claim.clone();
                            c.since = now;
                            p.retry_later(id, c, Duration::ZERO, "reconciler")
                                .await
                                .map_err(|e| e.to_string())?;
                            report.retries_resent += 1;
                        }
                    }
                }
                None => {
                    if account.backfill == BackfillState::Pending {
                        if now - account.created_at > stale {
                            p.queues
                                .send_work(&WorkMessage::BackfillPage {
                                    bank_account_id: id,
                                    cursor: account.backfill_cursor.clone(),
                                })
                                .await
                                .map_err(|e| e.to_string())?;
                            report.backfills_resumed += 1;
                        }
                        continue;
                    }
                    let has_pending = !p
                        .table
                        .pending_transactions(id, account.delivered_through.as_deref(), 1)
                        .await
                        .map_err(|e| e.to_string())?
                        .is_empty();
                    if account.auth_required_owed
                        || (account.status == AccountStatus::Active
                            && (has_pending || account.balance_owed()))
                    {
                        p.kick(id, KickReason::Reconciler)
                            .await
                            .map_err(|e| e.to_string())?;
                        report.kicked += 1;
                    }
                }
            }
        }
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
        tracing::info!(?report, "reconciliation done");
        Ok(report)
    }

    /// Pending depth of one account (a metric point with the account as a property, so that
    /// Logs Insights finds the deepest ones without a metric per account) and its claim's age.
    async fn measure(
        &self,
        account: &connector_aws::accounts::Account,
        now: chrono::DateTime<Utc>,
        report: &mut ReconcileReport,
    ) -> Result<(), String> {
        let pending = self
            .pipeline
            .table
            .count_pending(
                account.bank_account_id,
                account.delivered_through.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?;
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
        report.pending_total += pending;
        report.pending_max = report.pending_max.max(pending);
        if let Some(claim) = &account.in_flight {
            report.oldest_in_flight_s = report
                .oldest_in_flight_s
                .max((now - claim.since).num_seconds());
        }
        Ok(())
    }
}
