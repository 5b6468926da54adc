//! The reconciler, on a schedule: catches what slipped through (invariant 4) — stale claims,
//! accounts with pending work and no wake-up, overdue statements.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use connector_aws::accounts::{AccountStatus, BackfillState, Phase};
use connector_domain::messages::{KickReason, TimerMessage, WorkMessage};
use serde::Serialize;

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
}

pub struct Reconciler {
    pub pipeline: Pipeline,
    /// A claim without progress for this long is considered stuck.
    pub stale_after: Duration,
}

impl Reconciler {
    pub fn new(pipeline: Pipeline, stale_after: Duration) -> Self {
        Self {
            pipeline,
            stale_after,
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
        for account in accounts {
            let id = account.bank_account_id;
            if account.status == AccountStatus::Cancelled {
                continue;
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
                            // The poll chain may have been lost: a duplicate is harmless, the
                            // poll counter lets only one of them continue.
                            tracing::warn!(bankAccountId = %id, "re-sending a poll for a quiet statement");
                            p.queues
                                .send_timer(
                                    &TimerMessage::Poll {
                                        bank_account_id: id,
                                        statement_id: statement_id.clone(),
                                        claim: claim.token.clone(),
                                        attempt: claim.poll_attempt,
                                        posted_at,
                                        transaction_count: claim.transaction_count,
                                    },
                                    Duration::ZERO,
                                )
                                .await
                                .map_err(|e| e.to_string())?;
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
                        .pending_transactions(id, 1)
                        .await
                        .map_err(|e| e.to_string())?
                        .is_empty();
                    if account.auth_required_owed
                        || (has_pending && account.status == AccountStatus::Active)
                    {
                        p.kick(id, KickReason::Reconciler)
                            .await
                            .map_err(|e| e.to_string())?;
                        report.kicked += 1;
                    }
                }
            }
        }
        tracing::info!(?report, "reconciliation done");
        Ok(report)
    }
}
