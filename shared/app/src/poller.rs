//! The statement poller: one state transition per timer message (design §2). Polls a statement
//! until it is terminal, then commits its outcome and releases the account (spec §7.3).

use std::time::Duration;

use chrono::{DateTime, Utc};
use connector_domain::account::{Account, AccountStatus, Claim, Release, StatementKind};
use connector_domain::messages::{Kick, KickReason, TimerMessage};
use connector_domain::ports::CallError;
use connector_domain::statement::{FailureDetail, Outcome, classify};
use connector_domain::stored::TransactionState;
use tracing::Instrument;
use uuid::Uuid;

use crate::batch::MessageError;
use crate::pipeline::Pipeline;

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
            .timers
            .kick(&Kick {
                bank_account_id: id,
                claim: Some(claim),
                attempt,
                reason,
            })
            .await
            .map_err(MessageError::from)
    }

    async fn poll(
        &self,
        id: Uuid,
        statement_id: &str,
        token: &str,
        attempt: u32,
        posted_at: DateTime<Utc>,
        count: u32,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let Some(account) = p.store.get_account(id).await? else {
            return Ok(());
        };
        let Some(claim) = account.in_flight.clone() else {
            return Ok(());
        };
        if !claim.awaits_poll(token, statement_id, attempt) {
            tracing::debug!("stale poll ignored");
            return Ok(());
        }
        // Take this poll step before calling Banking Service: of two deliveries of one poll
        // message at the same moment (SQS is at-least-once) only one moves the counter on, so a
        // statement is never polled twice at once (the sandbox records polling one statement more
        // than once a second as a contract violation: sandbox spec §5), and a delivery that comes
        // back later (its consumer killed) is stale. If this invocation dies before it schedules
        // the next poll, the claim's watchdog restarts the chain.
        let age = (p.now() - posted_at).to_std().unwrap_or_default();
        let step = Step {
            id,
            statement_id,
            token,
            next: attempt + 1,
            posted_at,
            count,
            planned: p.schedule.delay_after(count as usize, attempt + 1, age),
        };
        let overdue = p.schedule.is_overdue(age);
        if !p
            .take_poll_step(id, token, attempt, overdue, step.planned)
            .await?
        {
            tracing::debug!("poll taken by another delivery");
            return Ok(());
        }
        let provider = p.provider_for(&account).await?;
        match provider.get_statement(statement_id).await {
            Ok(resource) => match classify(&resource) {
                Some(outcome) => self.finish(&account, claim, statement_id, outcome).await,
                None => {
                    if overdue && !claim.posted().is_some_and(|p| p.overdue) {
                        tracing::error!(
                            age_s = age.as_secs(),
                            "statement overdue: parked (polled every PARKED_POLL_S until it finishes)"
                        );
                        crate::metrics::count("StatementsParked", &[("Reason", "Overdue")]);
                    }
                    self.poll_again(&step, step.planned).await
                }
            },
            Err(CallError::NotFound { .. }) => {
                // Unknown to Banking Service (never stored, or deleted and forgotten): send
                // the batch again, counting what an earlier attempt found already held.
                tracing::warn!("statement unknown to Banking Service; resubmitting");
                self.resubmit_gone(id, &claim, statement_id).await
            }
            Err(e) => {
                let delay = match &e {
                    CallError::RateLimited {
                        retry_after: Some(d),
                    } => *d,
                    // Slowly, yet before the watchdog would take the quiet chain over.
                    e @ CallError::Configuration(_) => p
                        .configuration_error("GetStatement", e)
                        .min(step.planned + p.posting_stale_after / 2),
                    _ => p.backoff_delay(attempt.min(6)),
                };
                tracing::warn!(error = %e, "poll failed; polling again later");
                self.poll_again(&step, delay).await
            }
        }
    }

    async fn poll_again(&self, step: &Step<'_>, delay: Duration) -> Result<(), MessageError> {
        self.pipeline
            .send_poll(
                step.id,
                step.statement_id,
                step.token,
                step.next,
                step.posted_at,
                step.count,
                delay,
            )
            .await
    }

    /// The statement reached a terminal status: record it, then act on it.
    async fn finish(
        &self,
        account: &Account,
        claim: Claim,
        statement_id: &str,
        outcome: Outcome,
    ) -> Result<(), MessageError> {
        let now = self.pipeline.now();
        record_outcome(&claim, &outcome, now);
        match outcome {
            Outcome::Succeeded => {
                // One write commits it all: the watermark moves to the statement's highest
                // position together with the release (invariant 4: release, then look).
                tracing::info!(
                    transactions = claim.batch.unique_ids.len(),
                    kind = ?claim.kind,
                    "statement succeeded"
                );
                if account.status == AccountStatus::Cancelled {
                    // Offboarding parks what is pending, this batch included while it is in
                    // flight; it was delivered, so no parked record may say otherwise. Before
                    // the release, so that a crash in between comes back here.
                    self.pipeline
                        .store
                        .mark_held(
                            account.bank_account_id,
                            &claim.batch.unique_ids,
                            statement_id,
                        )
                        .await?;
                }
                let release = claim.success(account.newest_delivered, now);
                self.pipeline
                    .release_and_continue(account.bank_account_id, &claim.token, &release)
                    .await
            }
            Outcome::FailedOnItems {
                duplicates,
                too_old,
            } => {
                self.failed_on_items(account, &claim, statement_id, &duplicates, &too_old)
                    .await
            }
            Outcome::AccountCancelled => {
                tracing::warn!("account cancelled at Banking Service: stopping");
                self.delete_failed(account, statement_id).await;
                self.pipeline
                    .shut_down_cancelled(account, &claim.token)
                    .await
            }
            Outcome::Deleted => {
                tracing::warn!("statement deleted at Banking Service; resubmitting");
                self.resubmit_gone(account.bank_account_id, &claim, statement_id)
                    .await
            }
            Outcome::FailedOther(details) => {
                self.failed(account, claim, statement_id, &details).await
            }
        }
    }

    /// Some transactions were duplicates (Banking Service holds them: delivered) or too old
    /// (parked); the rest go again in a new statement.
    async fn failed_on_items(
        &self,
        account: &Account,
        claim: &Claim,
        statement_id: &str,
        duplicates: &[String],
        too_old: &[String],
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let id = account.bank_account_id;
        tracing::warn!(
            duplicates = duplicates.len(),
            too_old = too_old.len(),
            "statement failed on items; resubmitting the rest"
        );
        p.store.mark_held(id, duplicates, statement_id).await?;
        p.store
            .park_transactions(id, too_old, "TransactionTooOld", p.now())
            .await?;
        crate::metrics::parked("TransactionTooOld", too_old.len());
        self.delete_failed(account, statement_id).await;
        // Counted with the release: it is conditional on the claim, so exactly once even when
        // this poll is retried after a crash.
        let held = Release {
            delivered: duplicates.len() as u64,
            ..Release::default()
        };
        p.release_and_continue(id, &claim.token, &held).await
    }

    /// The statement failed for another reason: resubmitted after a back-off, until it has
    /// failed `max_attempts` times (or the account is gone); then its transactions are parked.
    async fn failed(
        &self,
        account: &Account,
        claim: Claim,
        statement_id: &str,
        details: &[FailureDetail],
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let id = account.bank_account_id;
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
        if account.status != AccountStatus::Cancelled && claim.attempt + 1 < p.max_attempts {
            tracing::warn!(details = ?summary, attempt = claim.attempt, "statement failed; resubmitting after a back-off");
            let delay = p.backoff_delay(claim.attempt);
            return p.retry_later(id, claim, delay, "statement failed").await;
        }
        let reason = format!("Failed: {}", summary.join("; "));
        tracing::error!(%reason, attempts = claim.attempt + 1, "statement keeps failing; transactions parked");
        p.store
            .park_transactions(id, &claim.batch.unique_ids, &reason, p.now())
            .await?;
        crate::metrics::parked(&reason, claim.batch.unique_ids.len());
        let release = Release {
            auth_required_sent: claim.kind == StatementKind::AuthRequired,
            ..Default::default()
        };
        p.release_and_continue(id, &claim.token, &release).await
    }

    /// The statement is gone (deleted, or unknown to Banking Service): release the claim so that
    /// the batch is sent again. If it is gone because an earlier attempt of this poll recorded
    /// its duplicates, deleted it and died before releasing, those duplicates are still owed to
    /// the account's delivered count: they are the claim's transactions marked held by this
    /// statement. Otherwise there are none.
    async fn resubmit_gone(
        &self,
        id: Uuid,
        claim: &Claim,
        statement_id: &str,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let held = p
            .store
            .transactions_by_ids(id, &claim.batch.unique_ids)
            .await?
            .iter()
            .filter(|t| {
                t.state == TransactionState::Delivered
                    && t.statement_id.as_deref() == Some(statement_id)
            })
            .count();
        let release = Release {
            delivered: held as u64,
            ..Release::default()
        };
        p.release_and_continue(id, &claim.token, &release).await
    }

    /// Every failed statement is deleted once its details are recorded (spec §7.3); a failure
    /// to delete does not block the account (a failed statement no longer holds the lock).
    async fn delete_failed(&self, account: &Account, statement_id: &str) {
        let result = match self.pipeline.provider_for(account).await {
            Ok(provider) => provider
                .delete_statement(statement_id)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not delete the failed statement");
        }
    }
}

/// A poll step taken: what the next poll message carries.
struct Step<'a> {
    id: Uuid,
    statement_id: &'a str,
    token: &'a str,
    next: u32,
    posted_at: DateTime<Utc>,
    count: u32,
    /// When the schedule wants the next poll.
    planned: Duration,
}

/// The metrics of a statement that reached a terminal status.
fn record_outcome(claim: &Claim, outcome: &Outcome, now: DateTime<Utc>) {
    use crate::metrics::{Unit, count, emit};
    let reason = match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::FailedOnItems { .. } => "duplicateOrTooOld",
        Outcome::AccountCancelled => "accountCancelled",
        Outcome::Deleted => "deleted",
        Outcome::FailedOther(_) => "other",
    };
    if matches!(outcome, Outcome::Succeeded) {
        count("StatementsSucceeded", &[("Kind", claim.kind.name())]);
        if let Some(span) = &claim.batch.span {
            let latency = (now - span.oldest_received_at).num_milliseconds() as f64;
            emit("IngestToSucceeded", latency, Unit::Milliseconds, &[]);
        }
    } else {
        count("StatementsFailed", &[("Reason", reason)]);
    }
    emit(
        "PollsPerStatement",
        f64::from(claim.poll_attempt() + 1),
        Unit::Count,
        &[],
    );
    if let Some(posted) = claim.posted() {
        let processing = (now - posted.posted_at).num_milliseconds() as f64;
        emit(
            "StatementProcessingTime",
            processing,
            Unit::Milliseconds,
            &[],
        );
    }
}
