//! The statement pusher: claims an account, builds its next statement from the oldest pending
//! transactions, posts it, and hands it to the poller (spec §8.4, invariants 1–3, 5).

use chrono::{DateTime, TimeDelta, Utc};
use connector_domain::account::{
    Account, AccountStatus, BackfillState, BatchSpan, Claim, ClaimOutcome, ClaimPhase, Release,
    StatementKind,
};
use connector_domain::messages::{Kick, KickReason};
use connector_domain::ports::{BankCallError, BankReader, CallError};
use connector_domain::statement::{
    AccountDetailStatus, Balance, MAX_TRANSACTIONS_PER_STATEMENT, StatementInput, StatementRequest,
    build_statement, ledger_after_batch,
};
use connector_domain::stored::{StoredTransaction, TransactionState};
use connector_domain::transaction::{MAX_AHEAD_OF_CLOCK, Transaction, before_start};
use tracing::Instrument;
use uuid::Uuid;

use crate::batch::MessageError;
use crate::pipeline::Pipeline;

pub struct StatementPusher {
    pub pipeline: Pipeline,
    /// The Bank Data API, for an account's balance when no other source has it.
    pub bank: std::sync::Arc<dyn BankReader>,
}

fn delta(d: std::time::Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::days(365))
}

/// What a claimed account should send now.
enum Work {
    Nothing(&'static str),
    AuthRequired,
    Balances,
    /// The batch, and whether pending transactions remain after it.
    Transactions(Vec<StoredTransaction>, bool),
}

enum BuildFailure {
    /// The table was unavailable: try again later.
    Retry(MessageError),
    /// The statement can never be built: park its transactions with this reason.
    Park(String),
}

impl StatementPusher {
    pub fn new(pipeline: Pipeline, bank: std::sync::Arc<dyn BankReader>) -> Self {
        Self { pipeline, bank }
    }

    pub async fn handle(&self, kick: Kick) -> Result<(), MessageError> {
        let id = kick.bank_account_id;
        let span = tracing::info_span!("push", bankAccountId = %id, reason = ?kick.reason);
        match (kick.claim, kick.reason) {
            (Some(token), KickReason::Watchdog) => self.watchdog(id, &token).instrument(span).await,
            (Some(token), _) => {
                self.resubmit(id, &token, kick.attempt)
                    .instrument(span)
                    .await
            }
            (None, _) => self.start(id).instrument(span).await,
        }
    }

    async fn start(&self, id: Uuid) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let claim = Claim::new(Uuid::new_v4().to_string(), p.now());
        let account = match p.store.claim_account(id, &claim).await? {
            ClaimOutcome::Claimed(a) => {
                // The watchdog follows the claim until it is released: if this invocation, or
                // any later step's, dies, it takes the step over (the FIFO redelivery of this
                // kick would find the claim taken).
                p.arm_watchdog(id, &claim.token, p.posting_stale_after)
                    .await?;
                *a
            }
            // The holder of the claim kicks again when it finishes (invariant 4).
            ClaimOutcome::Busy => return self.busy(id).await,
            ClaimOutcome::Gone => {
                tracing::info!("account unknown or cancelled: nothing to push");
                return Ok(());
            }
        };
        match self.work_for(&account, &claim).await? {
            Work::Nothing(why) => {
                tracing::debug!(why, "nothing to push");
                p.store
                    .release_account(id, &claim.token, &Release::default())
                    .await?;
                Ok(())
            }
            Work::AuthRequired => {
                let mut claim = claim;
                claim.kind = StatementKind::AuthRequired;
                self.save_and_post(&account, claim, &[], None).await
            }
            Work::Balances => {
                let mut claim = claim;
                claim.kind = StatementKind::Balances;
                self.save_and_post(&account, claim, &[], None).await
            }
            Work::Transactions(mut batch, more) => {
                let mut claim = claim;
                let hi = batch.iter().filter_map(|t| t.position.clone()).max();
                let Some(hi) = hi else {
                    return Err(MessageError::Retry(
                        "pending transactions without a position".into(),
                    ));
                };
                // Commit to this batch before anything is posted (see `commit_horizon`).
                if !p
                    .store
                    .commit_horizon(id, &claim.token, &hi, account.next_seq)
                    .await?
                {
                    tracing::debug!("an ingest began meanwhile; its completion kicks again");
                    p.store
                        .release_account(id, &claim.token, &Release::default())
                        .await?;
                    return Ok(());
                }
                // Position order is date order except for stragglers placed after the horizon:
                // a statement lists its transactions by date (bank order for ties).
                batch.sort_by(|a, b| {
                    (a.transaction.date_posted, &a.position)
                        .cmp(&(b.transaction.date_posted, &b.position))
                });
                claim.batch.span = Some(BatchSpan {
                    hi_key: hi,
                    newest_date: batch
                        .iter()
                        .map(|t| t.transaction.date_posted)
                        .max()
                        .unwrap_or(claim.since),
                    oldest_received_at: batch
                        .iter()
                        .map(|t| t.received_at)
                        .min()
                        .unwrap_or(claim.since),
                });
                claim.batch.unique_ids = batch
                    .iter()
                    .map(|t| t.transaction.unique_id.clone())
                    .collect();
                let transactions: Vec<Transaction> =
                    batch.into_iter().map(|t| t.transaction).collect();
                self.save_and_post(&account, claim, &transactions, Some(!more))
                    .await
            }
        }
    }

    async fn work_for(&self, account: &Account, claim: &Claim) -> Result<Work, MessageError> {
        let p = &self.pipeline;
        if account.auth_required_owed {
            return Ok(Work::AuthRequired);
        }
        if account.status != AccountStatus::Active {
            return Ok(Work::Nothing("paused until re-authorisation"));
        }
        if account.backfill != BackfillState::Done {
            return Ok(Work::Nothing("backfill still running"));
        }
        // A batch must not skip a transaction still being written: wait for ingests under way
        // (each kicks when done); the fences of ingests that died are cleared.
        if !account.ingesting.is_empty() {
            p.store.clear_expired_ingests(account, claim.since).await?;
            if account.live_ingests(claim.since) > 0 {
                return Ok(Work::Nothing("waiting for an ingest to finish"));
            }
        }
        loop {
            // One more than a statement holds: tells whether this batch drains the account.
            let mut pending = p
                .store
                .pending_transactions(
                    account.bank_account_id,
                    account.delivered_through.as_deref(),
                    MAX_TRANSACTIONS_PER_STATEMENT + 1,
                )
                .await?;
            let more = pending.len() > MAX_TRANSACTIONS_PER_STATEMENT;
            pending.truncate(MAX_TRANSACTIONS_PER_STATEMENT);
            if pending.is_empty() {
                if account.balance_owed() && account.ledger.is_some() {
                    return Ok(Work::Balances);
                }
                return Ok(Work::Nothing("no pending transactions"));
            }
            // Every statement starts at `requestedStartDate` (Banking Service records an older
            // transaction as a violation): hold back what the bank sent from before it.
            let (early, pending): (Vec<_>, Vec<_>) = pending
                .into_iter()
                .partition(|t| before_start(&t.transaction, account.requested_start_date));
            self.park(account, &early, "BeforeRequestedStartDate", claim.since)
                .await?;
            // The 2-week rule: hold back (park and report) stragglers Banking Service would
            // refuse. A newest date ahead of the clock (stored before such dates were refused)
            // must not hold back everything after it.
            let (too_old, fresh): (Vec<_>, Vec<_>) = match account.newest_delivered {
                Some(newest) => {
                    let newest = newest.min(claim.since + MAX_AHEAD_OF_CLOCK);
                    let limit =
                        newest - TimeDelta::from_std(p.too_old).unwrap_or(TimeDelta::days(14));
                    pending
                        .into_iter()
                        .partition(|t| t.transaction.date_posted < limit)
                }
                None => (Vec::new(), pending),
            };
            self.park(account, &too_old, "TransactionTooOld", claim.since)
                .await?;
            if !fresh.is_empty() {
                return Ok(Work::Transactions(fresh, more));
            }
        }
    }

    /// Parks pending transactions that can never be sent, with their reason.
    async fn park(
        &self,
        account: &Account,
        held_back: &[StoredTransaction],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), MessageError> {
        if held_back.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = held_back
            .iter()
            .map(|t| t.transaction.unique_id.clone())
            .collect();
        tracing::warn!(count = ids.len(), reason, "transactions parked");
        self.pipeline
            .store
            .park_transactions(account.bank_account_id, &ids, reason, now)
            .await?;
        crate::metrics::parked(reason, ids.len());
        Ok(())
    }

    /// A kick found the account claimed. Pushes of one account run one at a time (its FIFO
    /// group), so a claim still being posted has lost its pusher, perhaps before the pusher
    /// armed the watchdog (this kick is then its redelivery): arm one. A statement posted or
    /// waiting for its retry is the holder's, which kicks again when it finishes (invariant 4).
    async fn busy(&self, id: Uuid) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let Some(claim) = p.store.get_account(id).await?.and_then(|a| a.in_flight) else {
            return Ok(());
        };
        if claim.phase == ClaimPhase::Posting {
            let due = claim.since + delta(p.posting_stale_after);
            p.arm_watchdog(
                id,
                &claim.token,
                (due - p.now()).to_std().unwrap_or_default(),
            )
            .await?;
        }
        Ok(())
    }

    /// The claim's watchdog fired. If the step the claim waits for is overdue by the grace
    /// (`posting_stale_after`, longer than any invocation), whoever owed it died: take it over.
    /// Then watch on, until the claim is released.
    async fn watchdog(&self, id: Uuid, token: &str) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let Some(account) = p.store.get_account(id).await? else {
            return Ok(());
        };
        let Some(claim) = account.in_flight.clone() else {
            return Ok(());
        };
        if claim.token != token {
            return Ok(());
        }
        let grace = delta(p.posting_stale_after);
        let now = p.now();
        let due = claim.watchdog_due(grace);
        if now < due {
            return p
                .arm_watchdog(id, token, (due - now).to_std().unwrap_or_default())
                .await;
        }
        let late_s = (now - due + grace).num_seconds();
        match claim.phase.clone() {
            ClaimPhase::Posting => {
                tracing::warn!(
                    late_s,
                    "taking over a claim whose pusher died while posting"
                );
                crate::metrics::count("WatchdogTakeovers", &[("Step", "posting")]);
                p.retry_later(
                    id,
                    claim,
                    std::time::Duration::ZERO,
                    "pusher died while posting",
                )
                .await?;
            }
            ClaimPhase::RetryWait { .. } => {
                tracing::warn!(late_s, "retry timer lost: resubmitting now");
                crate::metrics::count("WatchdogTakeovers", &[("Step", "retry")]);
                self.resubmit(id, token, Some(claim.attempt)).await?;
            }
            ClaimPhase::Posted(posted) => {
                // Moving the counter on makes the old chain's messages stale; 5 s later, so as
                // not to follow a poll that chain may be making right now (1 poll/s per statement).
                if p.poll_next(
                    id,
                    &posted.statement_id,
                    token,
                    posted.poll_attempt,
                    posted.overdue,
                    posted.posted_at,
                    claim.transaction_count(),
                    std::time::Duration::from_secs(5),
                )
                .await?
                {
                    tracing::warn!(late_s, "poll chain went quiet: restarted");
                    crate::metrics::count("WatchdogTakeovers", &[("Step", "poll")]);
                }
            }
        }
        p.arm_watchdog(id, token, p.posting_stale_after).await
    }

    /// A retry timer fired: resubmit the claim's statement, identical (same `uniqueId`s).
    async fn resubmit(
        &self,
        id: Uuid,
        token: &str,
        attempt: Option<u32>,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let Some(account) = p.store.get_account(id).await? else {
            return Ok(());
        };
        let Some(mut claim) = account.in_flight.clone() else {
            return Ok(());
        };
        if !claim.awaits_retry(token, attempt) {
            tracing::debug!("stale retry ignored");
            return Ok(());
        }
        if account.status == AccountStatus::Cancelled {
            return p.release_and_continue(id, token, &Release::default()).await;
        }
        // The claim's watchdog (armed when it was taken) watches this attempt too.
        claim.resubmit(p.now());
        let stored = p
            .store
            .transactions_by_ids(id, &claim.batch.unique_ids)
            .await?;
        // Offboarding or parking may have taken some away meanwhile; send what is still pending.
        // Same order as first posted (the claim's order); offboarding or parking may have taken
        // some away meanwhile: send what is still pending.
        let transactions: Vec<Transaction> = stored
            .into_iter()
            .filter(|t| t.state == TransactionState::Pending)
            .map(|t| t.transaction)
            .collect();
        if claim.kind == StatementKind::Transactions && transactions.is_empty() {
            return p.release_and_continue(id, token, &Release::default()).await;
        }
        claim.batch.unique_ids = transactions.iter().map(|t| t.unique_id.clone()).collect();
        self.save_and_post(&account, claim, &transactions, None)
            .await
    }

    async fn save_and_post(
        &self,
        account: &Account,
        mut claim: Claim,
        transactions: &[Transaction],
        drains_all: Option<bool>,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let id = account.bank_account_id;
        let request = match self.build(account, &claim, transactions, drains_all).await {
            Ok((request, balance_as_of)) => {
                claim.batch.balance_as_of = balance_as_of;
                request
            }
            Err(BuildFailure::Retry(e)) => return Err(e),
            Err(BuildFailure::Park(reason)) => {
                // A statement that cannot be built never will be: park it, carry on.
                tracing::error!(%reason, "statement cannot be built; transactions parked");
                self.park_batch(id, &claim, &reason).await?;
                return p
                    .release_and_continue(id, &claim.token, &Release::default())
                    .await;
            }
        };
        // The claim records exactly what is posted, so that a resubmission is identical.
        if !p.store.update_claim(id, &claim.token, &claim).await? {
            tracing::warn!("claim lost while building the statement");
            return Ok(());
        }
        self.post(account, claim, &request).await
    }

    /// The request, and the as-of of the ledger balance it carries.
    async fn build(
        &self,
        account: &Account,
        claim: &Claim,
        transactions: &[Transaction],
        drains_all: Option<bool>,
    ) -> Result<(StatementRequest, Option<DateTime<Utc>>), BuildFailure> {
        let p = &self.pipeline;
        let bank_id = p
            .bank_id_of(account)
            .await
            .map_err(BuildFailure::Retry)?
            .ok_or_else(|| {
                BuildFailure::Park(
                    "MissingBankId: no bankId notified, granted or configured".into(),
                )
            })?;
        let (status, ledger, available) = match claim.kind {
            StatementKind::AuthRequired => (AccountDetailStatus::AuthRequired, None, None),
            StatementKind::Balances => (
                AccountDetailStatus::Active,
                account.ledger.clone(),
                account.available.clone(),
            ),
            StatementKind::Transactions => {
                // Pending transactions after this batch, if any (the first one tells).
                let included: std::collections::HashSet<&str> =
                    claim.batch.unique_ids.iter().map(String::as_str).collect();
                let not_in_batch =
                    |t: &StoredTransaction| !included.contains(t.transaction.unique_id.as_str());
                let drains_all = match drains_all {
                    Some(known) => known,
                    None => {
                        let peek = p
                            .store
                            .pending_transactions(
                                account.bank_account_id,
                                account.delivered_through.as_deref(),
                                included.len() + 1,
                            )
                            .await
                            .map_err(|e| BuildFailure::Retry(e.into()))?;
                        !peek.iter().any(not_in_batch)
                    }
                };
                let needs_later = transactions
                    .last()
                    .is_some_and(|t| t.running_balance.is_none());
                let later: Vec<Transaction> = if needs_later && !drains_all {
                    p.store
                        .pending_transactions(
                            account.bank_account_id,
                            account.delivered_through.as_deref(),
                            usize::MAX,
                        )
                        .await
                        .map_err(|e| BuildFailure::Retry(e.into()))?
                        .into_iter()
                        .filter(not_in_batch)
                        .map(|t| t.transaction)
                        .collect()
                } else {
                    Vec::new()
                };
                let (ledger, available) = self
                    .balances_after(account, transactions, &later, drains_all)
                    .await?;
                (AccountDetailStatus::Active, Some(ledger), available)
            }
        };
        let as_of = ledger.as_ref().map(|b| b.as_of);
        let request = build_statement(&StatementInput {
            bank_account_id: account.bank_account_id,
            bank_id,
            status,
            transactions,
            ledger,
            available,
            shape: p.shape,
        })
        .map_err(|e| BuildFailure::Park(format!("Unbuildable: {e}")))?;
        Ok((request, as_of))
    }

    /// The ledger (and, when the batch empties the account, available) balance after a batch,
    /// from the first source that has it (spec §7.1 rule 6): the running balance on its last
    /// record; a balance the bank pushed that already counts every pending transaction; the
    /// bank's balance read now. Neither: the batch is parked (`NoBalance`, alarmed).
    async fn balances_after(
        &self,
        account: &Account,
        batch: &[Transaction],
        later: &[Transaction],
        drains_all: bool,
    ) -> Result<(Balance, Option<Balance>), BuildFailure> {
        // The available balance is only true after the last pending transaction, and only one
        // that is not older than it.
        let last_date = batch.last().map(|t| t.date_posted);
        let available_of = |b: Option<&Balance>| {
            b.filter(|b| drains_all && last_date.is_some_and(|d| b.as_of >= d))
                .cloned()
        };
        if let Some(ledger) = ledger_after_batch(batch, later, account.ledger.as_ref()) {
            return Ok((ledger, available_of(account.available.as_ref())));
        }
        let (ledger, available) = self.bank_balances(account).await?;
        let after = ledger_after_batch(batch, later, Some(&ledger)).ok_or_else(|| {
            BuildFailure::Park(
                "NoBalance: the bank's balance is older than the transactions to send".into(),
            )
        })?;
        Ok((after, available_of(available.as_ref())))
    }

    /// The account's balances read from the Bank Data API now.
    async fn bank_balances(
        &self,
        account: &Account,
    ) -> Result<(Balance, Option<Balance>), BuildFailure> {
        let no_balance = |why: &str| BuildFailure::Park(format!("NoBalance: {why}"));
        let Some(granted) = self
            .pipeline
            .store
            .granted_account(&account.external_id)
            .await
            .map_err(|e| BuildFailure::Retry(e.into()))?
        else {
            return Err(no_balance("none sent, and no consent to read the bank's"));
        };
        match self
            .bank
            .balances(&granted.consent_id, &granted.external_id)
            .await
        {
            Ok(b) => Ok((
                Balance {
                    amount: b.ledger,
                    as_of: b.as_of,
                },
                b.available.map(|amount| Balance {
                    amount,
                    as_of: b.as_of,
                }),
            )),
            Err(BankCallError::Unavailable(e)) => Err(BuildFailure::Retry(MessageError::Retry(
                format!("bank balance read: {e}"),
            ))),
            Err(e) => Err(no_balance(&format!("the bank's balance read failed: {e}"))),
        }
    }

    async fn post(
        &self,
        account: &Account,
        claim: Claim,
        request: &StatementRequest,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let id = account.bank_account_id;
        let answer = p
            .providers
            .for_bank(Some(request.data.bank_id))
            .post_statement(request)
            .await;
        match answer {
            Ok(statement_id) => self.posted(id, claim, statement_id).await,
            Err(CallError::RateLimited { retry_after }) => {
                let delay = retry_after.unwrap_or_else(|| p.backoff_delay(claim.attempt));
                p.retry_later(id, claim, delay, "429").await
            }
            Err(CallError::Conflict { message }) => self.conflicted(account, claim, &message).await,
            Err(CallError::Invalid { summary } | CallError::NotFound { summary }) => {
                self.refused(id, claim, &summary).await
            }
            Err(e @ CallError::Configuration(_)) => {
                // Alarmed; retried slowly until an operator puts the right credentials in.
                let delay = p.configuration_error("PostStatement", &e);
                p.retry_later(id, claim, delay, "credentials refused").await
            }
            Err(CallError::Transient(e)) => {
                let delay = p.backoff_delay(claim.attempt);
                p.retry_later(id, claim, delay, &e).await
            }
        }
    }

    /// Banking Service accepted the statement: record it and start its poll chain.
    async fn posted(
        &self,
        id: Uuid,
        mut claim: Claim,
        statement_id: String,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let now: DateTime<Utc> = p.now();
        let delay = p.schedule.first_delay(claim.transaction_count() as usize);
        claim.accept(statement_id.clone(), now, now + delta(delay));
        let token = claim.token.clone();
        if !p.store.update_claim(id, &token, &claim).await? {
            tracing::error!(statementId = %statement_id, "claim lost after posting");
            return Ok(());
        }
        tracing::info!(
            statementId = %statement_id,
            transactions = claim.transaction_count(),
            kind = ?claim.kind,
            "statement posted"
        );
        crate::metrics::count("StatementsPosted", &[("Kind", claim.kind.name())]);
        p.send_poll(
            id,
            &statement_id,
            &token,
            0,
            now,
            claim.transaction_count(),
            delay,
        )
        .await
    }

    /// A 409: either a statement is in flight (perhaps ours, whose 201 was lost) or the account
    /// was cancelled: ask Banking Service which (spec §7.3).
    async fn conflicted(
        &self,
        account: &Account,
        mut claim: Claim,
        message: &str,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let id = account.bank_account_id;
        if self.cancelled_at_banking_service(account).await {
            tracing::warn!("Banking Service reports the account cancelled: stopping");
            return p.shut_down_cancelled(account, &claim.token).await;
        }
        claim.conflicts += 1;
        if claim.conflicts >= p.max_conflicts {
            return self.park_conflicted(id, claim, message).await;
        }
        let delay = p.backoff_delay(claim.attempt);
        tracing::info!(message, "409 on POST");
        p.retry_later(id, claim, delay, "409 statement in flight")
            .await
    }

    /// Banking Service refused the statement (400, 404): it never will accept it; park it.
    async fn refused(&self, id: Uuid, claim: Claim, summary: &str) -> Result<(), MessageError> {
        let reason = format!("Rejected: {summary}");
        tracing::error!(%reason, "Banking Service refused the statement; parked");
        self.park_batch(id, &claim, &reason).await?;
        let release = Release {
            auth_required_sent: claim.kind == StatementKind::AuthRequired,
            ..Default::default()
        };
        self.pipeline
            .release_and_continue(id, &claim.token, &release)
            .await
    }

    /// Parks the claim's transactions with `reason` (alarmed through `RecordsParked`).
    async fn park_batch(&self, id: Uuid, claim: &Claim, reason: &str) -> Result<(), MessageError> {
        let p = &self.pipeline;
        p.store
            .park_transactions(id, &claim.batch.unique_ids, reason, p.now())
            .await?;
        crate::metrics::parked(reason, claim.batch.unique_ids.len());
        Ok(())
    }

    /// A 409 that keeps coming while Banking Service does not report the account cancelled
    /// (no statement of ours can be in flight that long): park the batch with the reason.
    async fn park_conflicted(
        &self,
        id: Uuid,
        claim: Claim,
        message: &str,
    ) -> Result<(), MessageError> {
        let p = &self.pipeline;
        let reason = format!("Conflict: 409 {} times ({message})", claim.conflicts);
        tracing::error!(%reason, "Banking Service keeps refusing the statement; parked");
        self.park_batch(id, &claim, &reason).await?;
        p.release_and_continue(id, &claim.token, &Release::default())
            .await
    }

    async fn cancelled_at_banking_service(&self, account: &Account) -> bool {
        let Ok(Some(bank_id)) = self.pipeline.bank_id_of(account).await else {
            return false;
        };
        match self
            .pipeline
            .providers
            .for_bank(Some(bank_id))
            .query_account(bank_id, &account.external_id)
            .await
        {
            Ok(Some(found)) => {
                found.bank_account_id == account.bank_account_id && found.status == "cancelled"
            }
            // No match, or the newest match is another account (a second company linking the
            // same real account): not proof of cancellation; the offboarding notification or a
            // later attempt settles it.
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "account query failed");
                false
            }
        }
    }
}
