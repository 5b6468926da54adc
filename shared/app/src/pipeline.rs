//! The statement pipeline's shared pieces: its configuration and the steps both the pusher and
//! the poller take (schedule a retry, release an account and look for more work).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use connector_domain::account::{Account, Claim, Release};
use connector_domain::messages::{Kick, KickReason, TimerMessage};
use connector_domain::ports::{
    CallError, Clock, PipelineStore, QueueError, StatementApi, StatementApis, StoreError, Timers,
};
use connector_domain::schedule::{Backoff, PollSchedule};
use connector_domain::statement::BalanceShape;
use uuid::Uuid;

use crate::batch::MessageError;

/// The clock of a running function.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Everything the pusher, the poller and the reconciler share: their ports and settings.
pub struct Pipeline {
    /// Accounts, their claims and transactions, and the grants (the table).
    pub store: Arc<dyn PipelineStore>,
    /// The push, timer and work queues.
    pub timers: Arc<dyn Timers>,
    /// The Provider API client of each bank.
    pub providers: Arc<dyn StatementApis>,
    pub clock: Arc<dyn Clock>,
    pub schedule: PollSchedule,
    pub backoff: Backoff,
    pub shape: BalanceShape,
    /// Failed attempts of one statement (other than duplicates/too old) before it is parked.
    pub max_attempts: u32,
    /// The 2-week rule (spec §7.1 rule 10).
    pub too_old: Duration,
    /// A claim still being posted after this long lost its pusher (longer than any timeout).
    pub posting_stale_after: Duration,
    /// The bank this deployment serves, when it serves one (`BANKING_SERVICE_BANK_ID`).
    pub single_bank: Option<uuid::Uuid>,
    /// The wait before retrying after a configuration error (credentials or API key refused):
    /// minutes, not the transient back-off, since only an operator can fix it.
    pub config_retry: Duration,
    /// 409s on one statement, with the account not confirmed cancelled, before it is parked.
    pub max_conflicts: u32,
}

impl From<StoreError> for MessageError {
    /// A malformed item or a request the table refuses cannot succeed on a retry: the message
    /// goes to the DLQ with the reason at once. The rest is retried (a configuration error too:
    /// it is alarmed through the function's errors, and the message waits for the fix).
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(_) | StoreError::Refused(_) => Self::Poison(e.to_string()),
            _ => Self::Retry(e.to_string()),
        }
    }
}

impl From<QueueError> for MessageError {
    fn from(e: QueueError) -> Self {
        Self::Retry(e.to_string())
    }
}

impl Pipeline {
    /// The account's bank at Banking Service: as notified, else learnt (`bank_id::resolve`).
    pub async fn bank_id_of(&self, account: &Account) -> Result<Option<Uuid>, MessageError> {
        crate::bank_id::resolve(
            &*self.store,
            &account.external_id,
            account.bank_id,
            None,
            self.single_bank,
        )
        .await
        .map_err(MessageError::from)
    }

    /// The Provider API client of the account's bank. Learning the bank costs a read only when
    /// some bank has a client of its own and the account does not record its bank.
    pub async fn provider_for(
        &self,
        account: &Account,
    ) -> Result<Arc<dyn StatementApi>, MessageError> {
        let bank = match account.bank_id {
            Some(b) => Some(b),
            None if self.providers.per_bank() => self.bank_id_of(account).await?,
            None => None,
        };
        Ok(self.providers.for_bank(bank))
    }

    /// Keeps the claim and asks the timer to resubmit the same statement after `delay`.
    pub async fn retry_later(
        &self,
        account: Uuid,
        mut claim: Claim,
        delay: Duration,
        why: &str,
    ) -> Result<(), MessageError> {
        claim.wait_for_retry(self.now() + chrono::TimeDelta::from_std(delay).unwrap_or_default());
        let token = claim.token.clone();
        if !self.store.update_claim(account, &token, &claim).await? {
            tracing::warn!(bankAccountId = %account, "claim lost before scheduling a retry");
            return Ok(());
        }
        tracing::warn!(
            bankAccountId = %account,
            attempt = claim.attempt,
            delay_ms = delay.as_millis() as u64,
            why,
            "statement will be resubmitted"
        );
        self.timers
            .send_timer(
                &TimerMessage::RetryPush {
                    bank_account_id: account,
                    claim: token,
                    attempt: Some(claim.attempt),
                },
                delay,
            )
            .await
            .map_err(MessageError::from)
    }

    /// The next step of a statement's poll chain: moves the claim's poll counter on from `seen`
    /// (a conditional write), then schedules poll `seen + 1` after `delay`. Every step goes
    /// through here, so a message of an earlier step is stale wherever it comes back from (a
    /// redelivery, a reconciler's re-sent poll): one chain per statement. `false`: the counter
    /// had moved already, another chain went on, and nothing is scheduled.
    #[allow(clippy::too_many_arguments)]
    pub async fn poll_next(
        &self,
        id: Uuid,
        statement_id: &str,
        token: &str,
        seen: u32,
        overdue: bool,
        posted_at: chrono::DateTime<Utc>,
        count: u32,
        delay: Duration,
    ) -> Result<bool, MessageError> {
        if !self.take_poll_step(id, token, seen, overdue, delay).await? {
            return Ok(false);
        }
        self.send_poll(id, statement_id, token, seen + 1, posted_at, count, delay)
            .await?;
        Ok(true)
    }

    /// Moves the claim's poll counter on from `seen` and records that the next poll is due
    /// `delay` from now. `false`: the counter had moved already (another delivery took it).
    pub async fn take_poll_step(
        &self,
        id: Uuid,
        token: &str,
        seen: u32,
        overdue: bool,
        delay: Duration,
    ) -> Result<bool, MessageError> {
        self.store
            .advance_poll(
                id,
                token,
                seen,
                overdue,
                self.now() + chrono::TimeDelta::from_std(delay).unwrap_or_default(),
            )
            .await
            .map_err(MessageError::from)
    }

    /// Schedules poll `attempt` of a statement (the counter must already say `attempt`).
    #[allow(clippy::too_many_arguments)]
    pub async fn send_poll(
        &self,
        id: Uuid,
        statement_id: &str,
        token: &str,
        attempt: u32,
        posted_at: chrono::DateTime<Utc>,
        count: u32,
        delay: Duration,
    ) -> Result<(), MessageError> {
        self.timers
            .send_timer(
                &TimerMessage::Poll {
                    bank_account_id: id,
                    statement_id: statement_id.to_string(),
                    claim: token.to_string(),
                    attempt,
                    posted_at,
                    transaction_count: count,
                },
                delay,
            )
            .await
            .map_err(MessageError::from)
    }

    /// Arms (or re-arms) a claim's watchdog to fire after `delay`, within SQS's 15-minute limit.
    pub async fn arm_watchdog(
        &self,
        id: Uuid,
        token: &str,
        delay: Duration,
    ) -> Result<(), MessageError> {
        self.timers
            .send_timer(
                &TimerMessage::Watchdog {
                    bank_account_id: id,
                    claim: token.to_string(),
                },
                delay.clamp(Duration::from_secs(1), Duration::from_secs(900)),
            )
            .await
            .map_err(MessageError::from)
    }

    /// Reports a configuration error (alarmed: `ConfigurationErrors`) and returns the slow retry
    /// delay to use for it.
    pub fn configuration_error(&self, step: &str, e: &CallError) -> Duration {
        tracing::error!(error = %e, step, "configuration error: check the Sage ID client, audience and API key");
        crate::metrics::count("ConfigurationErrors", &[("Step", step)]);
        self.config_retry
    }

    /// A back-off delay for attempt `attempt` with fresh jitter.
    pub fn backoff_delay(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt, rand::random::<f64>())
    }

    /// Releases the claim, then looks for more work (invariant 4: release first, then look).
    pub async fn release_and_continue(
        &self,
        account: Uuid,
        token: &str,
        release: &Release,
    ) -> Result<(), MessageError> {
        let released = self.store.release_account(account, token, release).await?;
        if !released {
            // A duplicate message got here first; it looked for work already.
            return Ok(());
        }
        // Released: a failure from here on must not lose the wake-up, since a redelivery of
        // this message finds the claim gone and looks no further. When unsure, kick: a kick
        // with nothing to do claims and releases at once.
        let more = self.more_work(account).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not look for more work after a release: kicking");
            true
        });
        if more {
            self.kick_after_release(account).await?;
        }
        Ok(())
    }

    /// Whether the account owes Banking Service anything (and is still there).
    async fn more_work(&self, account: Uuid) -> Result<bool, StoreError> {
        let Some(state) = self.store.get_account(account).await? else {
            return Ok(false);
        };
        Ok(state.auth_required_owed
            || state.balance_owed()
            || !self
                .store
                .pending_transactions(account, state.delivered_through.as_deref(), 1)
                .await?
                .is_empty())
    }

    /// The wake-up after a release, tried a few times in place: once the claim is released,
    /// nothing else would send it (the reconciler's sweep is the last resort).
    async fn kick_after_release(&self, account: Uuid) -> Result<(), MessageError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.kick(account, KickReason::Poller).await {
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, attempt, "wake-up after a release failed: again");
                }
                result => return result,
            }
        }
    }

    /// Banking Service reports the account cancelled: offboard it here too, park what it still
    /// had pending, and release the claim (nothing is ever sent for it again). Shared by the
    /// pusher (a 409 that proved to be a cancellation) and the poller (`accountCancelled`).
    pub async fn shut_down_cancelled(
        &self,
        account: &Account,
        token: &str,
    ) -> Result<(), MessageError> {
        let id = account.bank_account_id;
        let now = self.now();
        self.store
            .cancel_account(id, Some(&account.external_id), now)
            .await?;
        let parked = self
            .store
            .park_all_pending(
                id,
                account.delivered_through.as_deref(),
                "AccountCancelled",
                now,
            )
            .await?;
        crate::metrics::parked("AccountCancelled", parked);
        self.store
            .release_account(id, token, &Release::default())
            .await?;
        Ok(())
    }

    pub async fn kick(&self, account: Uuid, reason: KickReason) -> Result<(), MessageError> {
        self.timers
            .kick(&Kick {
                bank_account_id: account,
                claim: None,
                attempt: None,
                reason,
            })
            .await
            .map_err(MessageError::from)
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}
