//! The statement poller: one state transition per timer message (design §2). Polls a statement
//! until it is terminal, then commits its outcome and releases the account (spec §7.3).

use chrono::Utc;
use connector_aws::accounts::{AccountStatus, InFlight, Release, StatementKind};
use connector_aws::transactions::TransactionState;
use connector_domain::messages::{Kick, KickReason, TimerMessage};
use connector_domain::statement::{Outcome, classify};
use connector_sage::ProviderError;
use tracing::Instrument;
use uuid::Uuid;

use crate::batch::MessageError;
use crate::pipeline::{Pipeline, retry};

pub struct StatementPoller {
    pub pipeline: Pipeline,
}

impl StatementPoller {
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }

    pub async fn handle(&self, message: TimerMessage) -> Result<(), MessageError> {
        match message {
            TimerMessage::RetryPush {
                bank_account_id,
                claim,
                attempt,
            } => {
                self.forward(bank_account_id, claim, attempt, KickReason::Retry)
                    .await
            }
            TimerMessage::Watchdog {
                bank_account_id,
                claim,
            } => {
                self.forward(bank_account_id, claim, None, KickReason::Watchdog)
                    .await
            }
            TimerMessage::Poll {
                bank_account_id,
                statement_id,
                claim,
                attempt,
                posted_at,
                transaction_count,
            } => {
                let span = tracing::info_span!(
                    "poll",
                    bankAccountId = %bank_account_id,
                    statementId = %statement_id,
                    attempt
                );
                self.poll(
                    bank_account_id,
                    &statement_id,
                    &claim,
                    attempt,
                    posted_at,
                    transaction_count,
                )
                .instrument(span)
                .await
            }
        }
    }

    /// A timer fired: hand it to the account's FIFO group, where statements are posted.
    async fn forward(
        &self,
        id: Uuid,
        claim: String,
        attempt: Option<u32>,
        reason: KickReason,
    ) -> Result<(), MessageError> {
        self.pipeline
            .queues
            .kick(&Kick {
                bank_account_id: id,
                claim: Some(claim),
                attempt,
                reason,
            })
            .await
            .map_err(retry)
    }

    async fn poll(
        &self,
        id: Uuid,
        statement_id: &str,
        token: &str,
        attempt: u32,
        posted_at: chrono::DateTime<Utc>,
        count: u32,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let Some(account) = p.table.get_account(id).await.map_err(retry)? else {
            return Ok(());
        };
        let Some(claim) = account.in_flight.clone() else {
            return Ok(());
        };
        if claim.token != token
            || claim.statement_id.as_deref() != Some(statement_id)
            || claim.poll_attempt != attempt
        {
            tracing::debug!("stale poll ignored");
            return Ok(());
        }
        // Take this poll step before calling Banking Service: of two deliveries of one poll
        // message at the same moment (SQS is at-least-once) only one moves the counter on, so a
        // statement is never polled twice at once (at most once a second, sandbox.md), and a
        // delivery that comes back later (its consumer killed) is stale. If this invocation dies
        // before it schedules the next poll, the claim's watchdog restarts the chain.
        let age = (Utc::now() - posted_at).to_std().unwrap_or_default();
        let overdue = p.schedule.is_overdue(age);
        let planned = p.schedule.delay_after(count as usize, attempt + 1, age);
        if !p
            .take_poll_step(id, token, attempt, overdue, planned)
            .await?
        {
            tracing::debug!("poll taken by another delivery");
            return Ok(());
        }
        let next = attempt + 1;
        let provider = p.provider_for(&account).await?;
        let resource = match provider.get_statement(statement_id).await {
            Ok(r) => r,
            Err(ProviderError::NotFound(_)) => {
                // Unknown to Banking Service (never stored, or deleted and forgotten): send
                // the batch again, counting what an earlier attempt found already held.
                tracing::warn!("statement unknown to Banking Service; resubmitting");
                let held = self.held_by(id, &claim, statement_id).await?;
                return p.release_and_continue(id, token, &held).await;
            }
            Err(e) => {
                let delay = match &e {
                    ProviderError::RateLimited {
                        retry_after: Some(d),
                    } => *d,
                    // Slowly, yet before the watchdog would take the quiet chain over.
                    e if e.is_configuration() => p
                        .configuration_error("GetStatement", e)
                        .min(planned + p.posting_stale_after / 2),
                    _ => p.backoff_delay(attempt.min(6)),
                };
                tracing::warn!(error = %e, "poll failed; polling again later");
                return p
                    .send_poll(id, statement_id, token, next, posted_at, count, delay)
                    .await;
            }
        };
        let Some(outcome) = classify(&resource) else {
            if overdue && !claim.overdue {
                tracing::error!(
                    age_s = age.as_secs(),
                    "statement overdue: parked (polled every PARKED_POLL_S until it finishes)"
                );
                crate::metrics::count("StatementsParked", &[("Reason", "Overdue")]);
            }
            return p
                .send_poll(id, statement_id, token, next, posted_at, count, planned)
                .await;
        };
        self.finish(id, &account, claim, statement_id, outcome)
            .await
    }

    async fn finish(
        &self,
        id: Uuid,
        account: &connector_aws::accounts::Account,
        claim: InFlight,
        statement_id: &str,
        outcome: Outcome,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let now = Utc::now();
        let token = claim.token.clone();
        let reason = match &outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::FailedOnItems { .. } => "duplicateOrTooOld",
            Outcome::AccountCancelled => "accountCancelled",
            Outcome::Deleted => "deleted",
            Outcome::FailedOther(_) => "other",
        };
        let kind = crate::pusher::kind_name(claim.kind);
        if reason == "succeeded" {
            crate::metrics::count("StatementsSucceeded", &[("Kind", kind)]);
        } else {
            crate::metrics::count("StatementsFailed", &[("Reason", reason)]);
        }
        crate::metrics::emit(
            "PollsPerStatement",
            f64::from(claim.poll_attempt + 1),
            crate::metrics::Unit::Count,
            &[],
        );
        if let Some(posted) = claim.posted_at {
            crate::metrics::emit(
                "StatementProcessingTime",
                (now - posted).num_milliseconds() as f64,
                crate::metrics::Unit::Milliseconds,
                &[],
            );
        }
        if let (true, Some(received)) = (reason == "succeeded", claim.oldest_received_at) {
            crate::metrics::emit(
                "IngestToSucceeded",
                (now - received).num_milliseconds() as f64,
                crate::metrics::Unit::Milliseconds,
                &[],
            );
        }
        match outcome {
            Outcome::Succeeded => {
                // One write commits it all: the watermark moves to the statement's highest
                // position together with the release (invariant 4: release, then look).
                let newest = claim
                    .newest_date
                    .into_iter()
                    .chain(account.newest_delivered)
                    .max();
                tracing::info!(
                    transactions = claim.unique_ids.len(),
                    kind = ?claim.kind,
                    "statement succeeded"
                );
                p.release_and_continue(
                    id,
                    &token,
                    &Release {
                        delivered_through: claim.hi_key.clone(),
                        newest_delivered: newest,
                        success_at: Some(now),
                        delivered: claim.unique_ids.len() as u64,
                        auth_required_sent: claim.kind == StatementKind::AuthRequired,
                        balance_sent_as_of: claim.balance_as_of,
                    },
                )
                .await
            }
            Outcome::FailedOnItems {
                duplicates,
                too_old,
            } => {
                tracing::warn!(
                    duplicates = duplicates.len(),
                    too_old = too_old.len(),
                    "statement failed on items; resubmitting the rest"
                );
                // Duplicates are already held by Banking Service: they count as delivered.
                p.table
                    .mark_held(id, &duplicates, statement_id)
                    .await
                    .map_err(retry)?;
                p.table
                    .park_transactions(id, &too_old, "TransactionTooOld", now)
                    .await
                    .map_err(retry)?;
                crate::metrics::parked("TransactionTooOld", too_old.len());
                self.delete_failed(account, statement_id).await;
                // Counted with the release: it is conditional on the claim, so exactly once
                // even when this poll is retried after a crash.
                let held = Release {
                    delivered: duplicates.len() as u64,
                    ..Release::default()
                };
                p.release_and_continue(id, &token, &held).await
            }
            Outcome::AccountCancelled => {
                tracing::warn!("account cancelled at Banking Service: stopping");
                self.delete_failed(account, statement_id).await;
                p.table
                    .cancel_account(id, Some(&account.external_id), now)
                    .await
                    .map_err(retry)?;
                let parked = p
                    .table
                    .park_all_pending(
                        id,
                        account.delivered_through.as_deref(),
                        "AccountCancelled",
                        now,
                    )
                    .await
                    .map_err(retry)?;
                crate::metrics::parked("AccountCancelled", parked);
                p.table
                    .release_account(id, &token, &Release::default())
                    .await
                    .map_err(retry)?;
                Ok(())
            }
            Outcome::Deleted => {
                tracing::warn!("statement deleted at Banking Service; resubmitting");
                let held = self.held_by(id, &claim, statement_id).await?;
                p.release_and_continue(id, &token, &held).await
            }
            Outcome::FailedOther(details) => {
                let summary: Vec<String> = details
                    .iter()
                    .map(|d| {
                        format!("{} {}", d.code, d.target.as_deref().unwrap_or(""))
                            .trim()
                            .to_string()
                    })
                    .collect();
                self.delete_failed(account, statement_id).await;
                // The claim's attempt counter spans resubmissions of this same statement.
                if account.status == AccountStatus::Cancelled || claim.attempt + 1 >= p.max_attempts
                {
                    let reason = format!("Failed: {}", summary.join("; "));
                    tracing::error!(%reason, attempts = claim.attempt + 1, "statement keeps failing; transactions parked");
                    p.table
                        .park_transactions(id, &claim.unique_ids, &reason, now)
                        .await
                        .map_err(retry)?;
                    crate::metrics::parked(&reason, claim.unique_ids.len());
                    return p
                        .release_and_continue(
                            id,
                            &token,
                            &Release {
                                auth_required_sent: claim.kind == StatementKind::AuthRequired,
                                ..Default::default()
                            },
                        )
                        .await;
                }
                tracing::warn!(details = ?summary, attempt = claim.attempt, "statement failed; resubmitting after a back-off");
                let delay = p.backoff_delay(claim.attempt);
                p.retry_later(id, claim, delay, "statement failed").await
            }
        }
    }

    /// The release of a statement that is gone. If it is gone because an earlier attempt of
    /// this poll recorded its duplicates, deleted it and died before releasing, those
    /// duplicates are still owed to the account's delivered count: they are the claim's
    /// transactions marked held by this statement. Otherwise there are none.
    async fn held_by(
        &self,
        id: Uuid,
        claim: &InFlight,
        statement_id: &str,
    ) -> Result<Release, MessageError> {
        let held = self
            .pipeline
            .table
            .transactions_by_ids(id, &claim.unique_ids)
            .await
            .map_err(retry)?
            .iter()
            .filter(|t| {
                t.state == TransactionState::Delivered
                    && t.statement_id.as_deref() == Some(statement_id)
            })
            .count();
        Ok(Release {
            delivered: held as u64,
            ..Release::default()
        })
    }

    /// Every failed statement is deleted once its details are recorded (spec §7.3); a failure
    /// to delete does not block the account (a failed statement no longer holds the lock).
    async fn delete_failed(&self, account: &connector_aws::accounts::Account, statement_id: &str) {
        let provider = match self.pipeline.provider_for(account).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not delete the failed statement");
                return;
            }
        };
        if let Err(e) = provider.delete_statement(statement_id).await {
            tracing::warn!(error = %e, "could not delete the failed statement");
        }
    }
}
