//! Batches from `Received` to their outcome (docs/payments-out.md §9). A batch notification
//! reads the batch, checks it and each payment, records the decisions (once: a redelivery
//! resumes from them), PATCHes them in one call (`Processing`, or `Rejected` with the check),
//! submits each valid payment to the bank (idempotent by `paymentId`, the same body every
//! time), and PATCHes what the bank refused. The bank's events then move payments to their
//! outcome; every PATCH carries all the changes Sage lacks (so outcomes coalesce) and, once
//! every payment is terminal, the batch's final status.

use std::collections::HashMap;
use std::sync::Arc;

use connector_domain::payouts::batches::{
    BankEvent, BatchContext, BatchRecord, PaymentRecord, apply_event, cancel_unsent, decide,
    may_change, refused_by_bank, return_notice,
};
use connector_domain::payouts::checks::RuleSet;
use connector_domain::payouts::notification::PayoutsWork;
use connector_domain::payouts::status::{
    BatchStatus, PaymentStatus, SubscriptionStatus, final_batch_status,
};
use connector_domain::ports::{
    BankLogin, BankPayments, BatchApi, BatchChange, BatchStore, BindingStore, CallError,
    Cancelled as BankCancel, Clock, LoginError, Once, OnceClaims, OpenItem, OpenKind, OpenWork,
    PartyStore, PaymentChange, PayoutsApiPort, PayoutsQueue, StoreError, SubmitError, Submitted,
};
use futures::StreamExt;
use uuid::Uuid;

use crate::batch::MessageError;
use crate::payouts_onboarding::failed;

pub struct Batches {
    /// The provider configuration (rules, `maximumPaymentCount`).
    pub api: Arc<dyn PayoutsApiPort>,
    pub batches: Arc<dyn BatchApi>,
    pub store: Arc<dyn BatchStore>,
    /// A batch's first check claimed by one delivery at a time.
    pub checks: Arc<dyn OnceClaims>,
    pub parties: Arc<dyn PartyStore>,
    pub bindings: Arc<dyn BindingStore>,
    pub consents: Arc<dyn BankLogin>,
    pub bank: Arc<dyn BankPayments>,
    pub clock: Arc<dyn Clock>,
    pub supported_currencies: Vec<String>,
    /// Submissions in flight per batch (`BANK_CONCURRENCY`, 8).
    pub bank_concurrency: usize,
    /// Where the reconciler finds batches that stopped moving.
    pub open: Arc<dyn OpenWork>,
    /// How long a batch may go without an outcome before the reconciler looks (`STUCK_AFTER_S`).
    pub stuck_after: chrono::TimeDelta,
    /// How long the holder of a batch's outcome lease gathers changes before its PATCH
    /// (`OUTCOME_WINDOW_S`, 1): outcomes arriving together go in one call.
    pub outcome_window: std::time::Duration,
    /// How long one invocation submits before it hands the rest of the batch on
    /// (`SUBMIT_BUDGET_S`, 30; well inside the worker's timeout).
    pub submit_budget: std::time::Duration,
    /// Where the rest of a batch goes when the budget runs out (the worker's own queue; `None`:
    /// left to the next delivery or the reconciler).
    pub requeue: Option<Arc<dyn PayoutsQueue>>,
}

/// What taking a batch notification did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Checked now, or earlier (a redelivery): its status, and payments sent to the bank.
    Worked {
        status: BatchStatus,
        submitted: usize,
    },
    /// Payments Out has it past `Received` and the connector has no record: not ours to move.
    NotOurs(BatchStatus),
    /// Another delivery is checking it right now: this one is queued again for after that
    /// check's lease (a retry instead would use up the message's receives while it waits).
    Deferred,
}

/// What a bank event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// The payment moved (and Payments Out was told).
    Applied(PaymentStatus),
    /// Old, repeated, or no change at Sage.
    Ignored,
    /// No such payment at the connector.
    UnknownPayment,
}

/// What a cancellation request did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cancellation {
    /// Cancelled at the bank (now `Cancelled` at Sage).
    pub cancelled: usize,
    /// The bank has executed them, or is executing them: they run on to their outcome.
    pub too_late: usize,
    /// Named by the request but not payments of the batch, or already final.
    pub ignored: usize,
}

/// What a batch's first check by one delivery at a time came to.
enum Checked {
    Recorded(BatchRecord),
    /// Payments Out has it past `Received`.
    NotOurs(BatchStatus),
    /// Another delivery holds the check.
    Busy,
}

/// The batch's notification for `po-worker` to take again (the rest of a batch, or a delivery
/// deferred while another one checks it).
fn continuation(
    batch_id: Uuid,
    subscription_id: Option<Uuid>,
    application: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
) -> PayoutsWork {
    PayoutsWork::Notification {
        key: format!("batchpayments#{batch_id}"),
        kind: "batchpayments".into(),
        id: format!("continue-{batch_id}"),
        subscription_id,
        organisation_id: None,
        application: application.map(str::to_string),
        correlation_id: None,
        data: serde_json::json!({ "batchId": batch_id }),
        received_at: now,
    }
}

/// How many times a record is read again when another writer changed it meanwhile.
const CAS_ATTEMPTS: usize = 5;

/// How long a delivery may hold a batch's first check: longer than `po-worker`'s timeout (60 s),
/// so a live holder always finishes or dies within it; shorter than the queue's visibility
/// timeout (6 minutes), so a dead holder's redelivery finds it expired. A delivery that finds
/// it held comes back this much later.
const CHECK_LEASE: std::time::Duration = std::time::Duration::from_secs(90);
/// How long the claim is kept (the batch's record says the rest).
const CHECK_KEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The payments a PATCH is made from: all of the batch's (its status derived from them), or
/// only those Sage lacks (the batch still `Processing`, since others are moving).
enum Read {
    Whole(Vec<PaymentRecord>),
    Owing(Vec<PaymentRecord>),
}

impl Batches {
    /// A `batchpayments` notification.
    pub async fn take(
        &self,
        batch_id: Uuid,
        application: Option<&str>,
    ) -> Result<Taken, MessageError> {
        self.watch(batch_id).await?;
        let mut record = match self.store.batch(batch_id).await? {
            Some(r) => r,
            None => match self.check_once(batch_id, application).await? {
                Checked::Recorded(r) => r,
                Checked::NotOurs(status) => return Ok(Taken::NotOurs(status)),
                Checked::Busy => return self.defer(batch_id, application).await,
            },
        };
        self.sync(&mut record).await?;
        let (submitted, done) = self.submit_all(&record).await?;
        self.sync(&mut record).await?;
        if !done {
            self.hand_on(&record).await?;
        }
        Ok(Taken::Worked {
            status: record.status,
            submitted,
        })
    }

    /// [`Self::check`] by one delivery at a time. SQS may hand one notification to two workers
    /// at once, and two checks would each write the batch's records over the other's (an
    /// outcome already noted set back to `Processing`, then PATCHed so: a move Sage refuses).
    /// A delivery that finds the check held is `Busy` (`take` defers it); one that finds the
    /// check done reads its record.
    async fn check_once(
        &self,
        batch_id: Uuid,
        application: Option<&str>,
    ) -> Result<Checked, MessageError> {
        let key = format!("po-check#{batch_id}");
        let claim = self
            .checks
            .claim_once(&key, "check", CHECK_LEASE, CHECK_KEEP, self.clock.now())
            .await?;
        match claim {
            Once::InProgress => return Ok(Checked::Busy),
            // Completed: the check that completed it wrote the record. (One hash only: no
            // conflict is possible.)
            Once::Completed | Once::Conflict => {
                if let Some(record) = self.store.batch(batch_id).await? {
                    return Ok(Checked::Recorded(record));
                }
            }
            Once::New => {}
        }
        let checked = self.check(batch_id, application).await;
        self.release_check(batch_id, &key, &checked).await;
        Ok(match checked? {
            Ok(record) => Checked::Recorded(record),
            Err(status) => Checked::NotOurs(status),
        })
    }

    /// Completes the check's claim once the batch's record exists (even when the check failed
    /// after writing it: a timeout on a write that took effect), else gives it up so that a
    /// retry checks at once. A claim left held runs out before the queue redelivers.
    async fn release_check(
        &self,
        batch_id: Uuid,
        key: &str,
        checked: &Result<Result<BatchRecord, BatchStatus>, MessageError>,
    ) {
        let recorded = match checked {
            Ok(Ok(_)) => true,
            _ => !matches!(self.store.batch(batch_id).await, Ok(None)),
        };
        let released = if recorded {
            self.checks.complete_claim(key).await
        } else {
            self.checks.abandon_claim(key).await
        };
        if let Err(e) = released {
            tracing::warn!(%batch_id, error = %e, "the batch's check claim was left to run out");
        }
    }

    /// The batch's notification again, after the check another delivery holds has run out:
    /// without a queue (a test's world), a retry.
    async fn defer(
        &self,
        batch_id: Uuid,
        application: Option<&str>,
    ) -> Result<Taken, MessageError> {
        let Some(queue) = &self.requeue else {
            return Err(MessageError::Retry(
                "another delivery is checking this batch".into(),
            ));
        };
        let work = continuation(batch_id, None, application, self.clock.now());
        queue.send_after(&work, CHECK_LEASE).await?;
        tracing::info!(%batch_id, "another delivery is checking this batch: queued for after its lease");
        Ok(Taken::Deferred)
    }

    /// Lets the reconciler look at the batch after `stuck_after` (again after each look).
    pub async fn watch(&self, batch_id: Uuid) -> Result<(), MessageError> {
        Ok(self.open.open(&self.watched(batch_id)).await?)
    }

    /// The reconciler's item for the batch, due `stuck_after` from now.
    fn watched(&self, batch_id: Uuid) -> OpenItem {
        OpenItem {
            kind: OpenKind::Batch,
            id: batch_id.to_string(),
            due_at: self.clock.now() + self.stuck_after,
        }
    }

    /// Reads and checks the batch, and records the decisions; `Err(status)` when Payments Out
    /// has it past `Received`.
    async fn check(
        &self,
        batch_id: Uuid,
        application: Option<&str>,
    ) -> Result<Result<BatchRecord, BatchStatus>, MessageError> {
        let view = self
            .batches
            .get_batch(batch_id, application)
            .await
            .map_err(|e| match e {
                // Sage may answer the notification before the batch is readable.
                CallError::NotFound { .. } => {
                    MessageError::Retry("the batch is not readable yet".into())
                }
                e => failed("GET batch", e),
            })?;
        if !matches!(
            view.status,
            BatchStatus::Received | BatchStatus::AwaitingAuthorisation
        ) {
            tracing::warn!(%batch_id, status = ?view.status, "a batch past Received that the connector never checked");
            return Ok(Err(view.status));
        }
        let (subscription, consent_id) = match view.subscription_id {
            Some(s) => self.subscription_state(s).await?,
            None => (None, None),
        };
        let debtors = match view.subscription_id {
            Some(s) => self
                .parties
                .debtors(s)
                .await?
                .into_iter()
                .map(|d| (d.debtor_account_id.clone(), d))
                .collect(),
            None => HashMap::new(),
        };
        let creditors = match view.subscription_id {
            Some(s) => self
                .parties
                .creditors(s)
                .await?
                .into_iter()
                .map(|c| (c.creditor_id.clone(), c))
                .collect(),
            None => HashMap::new(),
        };
        let configuration = self
            .api
            .provider_configuration()
            .await
            .map_err(|e| failed("GET provider", e))?;
        let rules = RuleSet::from_provider_config(&configuration).map_err(|e| {
            tracing::error!(error = %e, "configuration error: the provider configuration has an unusable rule");
            MessageError::Retry(e.to_string())
        })?;
        let now = self.clock.now();
        let mut decided = decide(
            &view,
            &BatchContext {
                subscription,
                consent_id: consent_id.as_deref(),
                maximum_payment_count: configuration["maximumPaymentCount"]
                    .as_u64()
                    .map(|m| m as usize),
                supported_currencies: &self.supported_currencies,
                debtors: &debtors,
                creditors: &creditors,
                today: now.date_naive(),
                rules: &rules,
                now,
            },
        );
        decided.batch.application = application.map(str::to_string);
        self.store
            .record_batch(&decided.batch, &decided.payments)
            .await?;
        tracing::info!(%batch_id, status = ?decided.batch.status, payments = decided.payments.len(), "batch checked");
        Ok(Ok(decided.batch))
    }

    /// `Authorised` with the consent when one is bound and active at the bank now; otherwise
    /// `Received` (not authorised for batches).
    async fn subscription_state(
        &self,
        subscription_id: Uuid,
    ) -> Result<(Option<SubscriptionStatus>, Option<String>), MessageError> {
        let Some(binding) = self.bindings.binding(subscription_id).await? else {
            return Ok((Some(SubscriptionStatus::Received), None));
        };
        match self.consents.consent(&binding.consent_id).await {
            Ok(c) if c.status == "active" && c.expires_at > self.clock.now() => Ok((
                Some(SubscriptionStatus::Authorised),
                Some(binding.consent_id),
            )),
            Ok(_) | Err(LoginError::Consent(_)) => Ok((Some(SubscriptionStatus::Received), None)),
            Err(e) => Err(MessageError::Retry(e.to_string())),
        }
    }

    /// One PATCH with every payment whose status Payments Out lacks, and the batch's status
    /// (its final one once every payment is terminal); those payments are then noted as sent.
    pub async fn sync(&self, record: &mut BatchRecord) -> Result<(), MessageError> {
        let payments = self.store.payments(record.batch_id).await?;
        self.patch_unsent(record, Read::Whole(payments)).await?;
        Ok(())
    }

    /// What a window PATCHes, read as cheaply as it can be: the payments Sage lacks, unless
    /// the batch's status may be final (it needs every payment's), its decision PATCH is
    /// unsent (it carries every payment), or its payments predate their watch. Owing only
    /// returns to tell, nothing is PATCHed, and the batch's status is not needed.
    async fn read_owed(&self, record: &BatchRecord) -> Result<Read, MessageError> {
        let batch_id = record.batch_id;
        if record.decision_patched && record.watched_payments {
            let owing = self.store.payments_owing(batch_id).await?;
            if owing.iter().all(|p| p.patched)
                || owing.iter().any(|p| !p.status.is_terminal())
                || self.store.any_moving(batch_id).await?
            {
                return Ok(Read::Owing(owing));
            }
        }
        Ok(Read::Whole(self.store.payments(batch_id).await?))
    }

    /// Whether Sage still lacks something of the batch, after a window.
    async fn still_owed(&self, record: &BatchRecord) -> Result<bool, MessageError> {
        let read = match record.watched_payments {
            true => self.store.payments_owing(record.batch_id).await?,
            false => self.store.payments(record.batch_id).await?,
        };
        Ok(read.iter().any(PaymentRecord::owes_sage))
    }

    /// [`Self::sync`] on the batch's payments as read: returns them as they now stand (those
    /// PATCHed and noted marked so; one changed meanwhile keeps its unsent mark, since the
    /// next PATCH carries its newer change). Until the batch's decision PATCH is sent, every
    /// payment goes (a decided status is written as sent, and this PATCH is what sends it);
    /// then one write notes it on the batch, where the payments changed since are noted each.
    async fn patch_unsent(
        &self,
        record: &mut BatchRecord,
        read: Read,
    ) -> Result<Vec<PaymentRecord>, MessageError> {
        let decision = !record.decision_patched;
        let (payments, whole) = match read {
            Read::Whole(p) => (p, true),
            Read::Owing(p) => (p, false),
        };
        if !decision && payments.iter().all(|p| p.patched) {
            return Ok(payments);
        }
        let statuses: Vec<PaymentStatus> = payments.iter().map(|p| p.status).collect();
        let status = match record.status {
            BatchStatus::Rejected => BatchStatus::Rejected,
            _ if !whole => BatchStatus::Processing,
            _ => final_batch_status(&statuses).unwrap_or(BatchStatus::Processing),
        };
        let change = BatchChange {
            status,
            reason: record.reason.clone(),
            payments: payments
                .iter()
                .filter(|p| decision || !p.patched)
                .map(|p| PaymentChange {
                    payment_id: p.payment_id,
                    status: p.status,
                    reason: p.reason.clone(),
                    completed_at: p.completed_at,
                })
                .collect(),
        };
        self.batches
            .patch_batch(record.batch_id, record.application.as_deref(), &change)
            .await
            .map_err(|e| failed("PATCH batch", e))?;
        tracing::info!(batch_id = %record.batch_id, ?status, payments = change.payments.len(), "batch PATCHed");
        if decision {
            self.store.note_decision_patched(record.batch_id).await?;
            record.decision_patched = true;
        }
        // Noted concurrently: a 2,000-payment PATCH is followed by 2,000 writes.
        let noted: Vec<Result<PaymentRecord, StoreError>> = futures::stream::iter(payments)
            .map(|p| async move {
                if p.patched {
                    return Ok(p);
                }
                let sent = PaymentRecord {
                    patched: true,
                    version: p.version + 1,
                    ..p.clone()
                };
                match self.store.save_payment(&sent).await {
                    Ok(()) => Ok(sent),
                    Err(StoreError::ConditionFailed) => Ok(p),
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        Ok(noted.into_iter().collect::<Result<_, _>>()?)
    }

    /// Outcomes coalesced, after a change was recorded: whoever takes the batch's outcome lease
    /// queues the batch's window for po-worker, `outcome_window` later, and returns; a change
    /// recorded while the lease is held is left to its holder, whose window looks again after
    /// releasing (the change was written before its lease was tried). So the bank's event is
    /// answered at once, whatever the PATCH costs. Without a queue (a test's world), the window
    /// is worked here.
    async fn schedule_sync(&self, batch_id: Uuid) -> Result<(), MessageError> {
        loop {
            let now = self.clock.now();
            // Longer than the queue's visibility timeout: a window redelivered after a crash
            // still holds it.
            let until = now + chrono::TimeDelta::minutes(10);
            if !self.store.lease_sync(batch_id, until, now).await? {
                return Ok(());
            }
            let Some(queue) = &self.requeue else {
                tokio::time::sleep(self.outcome_window).await;
                if self.window(batch_id).await? {
                    return Ok(());
                }
                continue;
            };
            let work = PayoutsWork::SyncBatch { batch_id };
            if let Err(e) = queue.send_after(&work, self.outcome_window).await {
                self.store.release_sync(batch_id).await?;
                return Err(MessageError::Retry(format!(
                    "queueing the batch's window: {e}"
                )));
            }
            return Ok(());
        }
    }

    /// A queued window (po-worker): the PATCH of what Sage lacks, then another window if changes
    /// came meanwhile.
    pub async fn sync_window(&self, batch_id: Uuid) -> Result<(), MessageError> {
        if self.window(batch_id).await? {
            return Ok(());
        }
        self.schedule_sync(batch_id).await
    }

    /// The lease holder's work: PATCH and tell, release, look again. Whether nothing is left.
    async fn window(&self, batch_id: Uuid) -> Result<bool, MessageError> {
        let sent = self.patch_batch_window(batch_id).await;
        self.store.release_sync(batch_id).await?;
        Ok(!self.still_owed(&sent?).await?)
    }

    /// A window's PATCH, on the batch's record (a batch without one has nothing to send).
    async fn patch_batch_window(&self, batch_id: Uuid) -> Result<BatchRecord, MessageError> {
        match self.store.batch(batch_id).await? {
            Some(mut record) => {
                self.patch_and_tell(&mut record).await?;
                Ok(record)
            }
            None => Err(MessageError::Poison(format!(
                "batch {batch_id} has payments but no record"
            ))),
        }
    }

    /// One window's work: the PATCH of what Sage lacks, then any return to tell.
    async fn patch_and_tell(&self, record: &mut BatchRecord) -> Result<(), MessageError> {
        let read = self.read_owed(record).await?;
        self.patch_and_tell_from(record, read).await
    }

    /// [`Self::patch_and_tell`] from every payment: the reconciler's look, which so also finds
    /// a change that another release recorded without its watch (and, noting it, writes it
    /// with one).
    pub(crate) async fn patch_and_tell_all(
        &self,
        record: &mut BatchRecord,
    ) -> Result<(), MessageError> {
        let all = self.store.payments(record.batch_id).await?;
        self.patch_and_tell_from(record, Read::Whole(all)).await
    }

    async fn patch_and_tell_from(
        &self,
        record: &mut BatchRecord,
        read: Read,
    ) -> Result<(), MessageError> {
        let now = self.patch_unsent(record, read).await?;
        self.tell_returns(record, &now).await
    }

    /// Submits every valid payment the bank has not taken yet, a few at a time.
    /// Submits within the budget: how many, and whether none is left.
    async fn submit_all(&self, record: &BatchRecord) -> Result<(usize, bool), MessageError> {
        let payments = self.store.payments(record.batch_id).await?;
        let todo: Vec<PaymentRecord> = payments
            .into_iter()
            .filter(|p| p.status == PaymentStatus::Processing && !p.submitted)
            .collect();
        if !todo.is_empty() && !self.may_pay(record).await? {
            for p in &todo {
                self.update(p.payment_id, |current| {
                    cancel_unsent(current, "ConsentNotActive")
                })
                .await?;
            }
            tracing::warn!(batch_id = %record.batch_id, payments = todo.len(), "the subscription's consent is no longer active: unsent payments cancelled");
            return Ok((0, true));
        }
        let started = std::time::Instant::now();
        let total = todo.len();
        // Submissions start only within the budget; those started finish.
        let within = |_: &PaymentRecord| {
            let go = started.elapsed() < self.submit_budget;
            async move { go }
        };
        let results: Vec<Result<(), MessageError>> = futures::stream::iter(todo)
            .take_while(within)
            .map(|p| self.submit_one(p))
            .buffer_unordered(self.bank_concurrency.max(1))
            .collect()
            .await;
        let count = results.len();
        // A conflict is the worst outcome (an operator must look); otherwise any retry.
        let mut worst = None;
        for r in results {
            match r {
                Err(e @ MessageError::Poison(_)) => worst = Some(e),
                Err(e) if worst.is_none() => worst = Some(e),
                _ => {}
            }
        }
        worst.map_or(Ok((count, count == total)), Err)
    }

    /// Whether the batch's subscription may still pay: its consent is bound and active at the
    /// bank now (checked before anything is sent, so that a revoked consent sends nothing more).
    async fn may_pay(&self, record: &BatchRecord) -> Result<bool, MessageError> {
        let Some(subscription_id) = record.subscription_id else {
            return Ok(false);
        };
        let (status, _) = self.subscription_state(subscription_id).await?;
        Ok(status == Some(SubscriptionStatus::Authorised))
    }

    /// The budget ran out: the batch's notification goes back on the worker's queue, so the
    /// next invocation submits the rest at once (not after the message's visibility timeout).
    async fn hand_on(&self, record: &BatchRecord) -> Result<(), MessageError> {
        let Some(queue) = &self.requeue else {
            return Ok(());
        };
        let work = continuation(
            record.batch_id,
            record.subscription_id,
            record.application.as_deref(),
            self.clock.now(),
        );
        queue.send(&work).await?;
        tracing::info!(batch_id = %record.batch_id, "submission budget spent: the rest of the batch is queued");
        Ok(())
    }

    async fn submit_one(&self, p: PaymentRecord) -> Result<(), MessageError> {
        let Some(body) = &p.submission else {
            return Err(MessageError::Poison(format!(
                "payment {} is Processing without a bank body",
                p.payment_id
            )));
        };
        let answer = self.bank.submit(p.payment_id, body).await;
        let payment_id = p.payment_id;
        let outcome = match answer {
            Ok(o) => o,
            Err(SubmitError::Conflict) => {
                tracing::error!(%payment_id, "the bank holds this payment id with another body: not submitted again");
                return Err(MessageError::Poison(format!(
                    "IdempotencyConflict: payment {payment_id}"
                )));
            }
            Err(e) => return Err(MessageError::Retry(format!("bank: {e}"))),
        };
        // Noted on the record read for the submission: a bank event that moved it meanwhile
        // fails the versioned write, which reads it again.
        self.update_from(p, |current| {
            if current.submitted || current.status != PaymentStatus::Processing {
                return None;
            }
            Some(match &outcome {
                Submitted::Accepted => {
                    let mut next = current.clone();
                    next.submitted = true;
                    next
                }
                Submitted::Refused(reasons) => refused_by_bank(current, reasons),
            })
        })
        .await?;
        Ok(())
    }

    /// Reads the payment, and writes what `change` makes of it (nothing for `None`), again if
    /// another writer changed it meanwhile. The record written, if any.
    async fn update(
        &self,
        payment_id: Uuid,
        change: impl Fn(&PaymentRecord) -> Option<PaymentRecord>,
    ) -> Result<Option<PaymentRecord>, MessageError> {
        match self.store.payment(payment_id).await? {
            Some(current) => self.update_from(current, change).await,
            None => Ok(None),
        }
    }

    /// [`Self::update`] from a record just read.
    async fn update_from(
        &self,
        mut current: PaymentRecord,
        change: impl Fn(&PaymentRecord) -> Option<PaymentRecord>,
    ) -> Result<Option<PaymentRecord>, MessageError> {
        let payment_id = current.payment_id;
        for _ in 0..CAS_ATTEMPTS {
            let Some(mut next) = change(&current) else {
                return Ok(None);
            };
            next.version = current.version + 1;
            match self.store.save_payment(&next).await {
                Ok(()) => return Ok(Some(next)),
                Err(StoreError::ConditionFailed) => {}
                Err(e) => return Err(e.into()),
            }
            match self.store.payment(payment_id).await? {
                Some(now) => current = now,
                None => return Ok(None),
            }
        }
        Err(MessageError::Retry(format!(
            "payment {payment_id} kept changing while being written"
        )))
    }

    /// Tells the product of each payment of the batch the bank returned after settling it, once
    /// Sage has it `Paid` (a `notifications` message; again only if the note that it was sent
    /// is lost).
    async fn tell_returns(
        &self,
        batch: &BatchRecord,
        payments: &[PaymentRecord],
    ) -> Result<(), MessageError> {
        for record in payments {
            let Some(notice) = return_notice(record) else {
                continue;
            };
            match batch.subscription_id {
                Some(subscription_id) => {
                    self.api
                        .post_message(
                            "notifications",
                            subscription_id,
                            None,
                            &notice,
                            batch.application.as_deref(),
                        )
                        .await
                        .map_err(|e| failed("POST notifications", e))?;
                    tracing::info!(payment_id = %record.payment_id, "the product was told of a returned payment");
                }
                None => {
                    tracing::warn!(payment_id = %record.payment_id, "a returned payment of a batch without a subscription: no one to tell")
                }
            }
            self.update(record.payment_id, |r| {
                (!r.return_told).then(|| PaymentRecord {
                    return_told: true,
                    ..r.clone()
                })
            })
            .await?;
        }
        Ok(())
    }

    /// A `batchpaymentcancellations` request: each named payment (all when `only` is `None`)
    /// that is not final is cancelled at the bank, and takes the bank's word: `Cancelled` when
    /// the bank cancelled it, unchanged when it is too late. The batch is first worked as its
    /// own notification would (checked, every valid payment submitted): a payment is cancelled
    /// only once the bank holds it, so a submission still under way elsewhere can never put a
    /// payment at the bank after its cancellation was decided.
    pub async fn cancel(
        &self,
        batch_id: Uuid,
        only: Option<&[Uuid]>,
        application: Option<&str>,
    ) -> Result<Cancellation, MessageError> {
        match self.take(batch_id, application).await? {
            Taken::NotOurs(status) => {
                tracing::warn!(%batch_id, ?status, "a cancellation for a batch the connector never checked");
                return Ok(Cancellation::default());
            }
            Taken::Deferred => {
                return Err(MessageError::Retry(
                    "the batch is being checked: cancelled once it is recorded".into(),
                ));
            }
            Taken::Worked { .. } => {}
        }
        let payments = self.store.payments(batch_id).await?;
        let named = |p: &PaymentRecord| only.is_none_or(|ids| ids.contains(&p.payment_id));
        let targets: Vec<PaymentRecord> = payments
            .iter()
            .filter(|p| named(p) && !p.status.is_terminal())
            .cloned()
            .collect();
        if targets.iter().any(|p| !p.submitted) {
            return Err(MessageError::Retry(
                "the batch is still being submitted: cancelled once the bank holds it".into(),
            ));
        }
        let mut report = Cancellation {
            ignored: only.map_or(0, |ids| ids.len().saturating_sub(targets.len())),
            ..Cancellation::default()
        };
        let answers: Vec<Result<bool, MessageError>> = futures::stream::iter(targets)
            .map(|p| self.cancel_one(p.payment_id))
            .buffer_unordered(self.bank_concurrency.max(1))
            .collect()
            .await;
        for answer in answers {
            if answer? {
                report.cancelled += 1;
            } else {
                report.too_late += 1;
            }
        }
        // `take` left the batch's record: its window can run.
        self.schedule_sync(batch_id).await?;
        tracing::info!(%batch_id, ?report, "cancellation requested");
        Ok(report)
    }

    /// Cancels one submitted payment at the bank and applies the bank's state: whether the
    /// bank cancelled it.
    async fn cancel_one(&self, payment_id: Uuid) -> Result<bool, MessageError> {
        let bank = |e: SubmitError| MessageError::Retry(format!("bank: {e}"));
        match self.bank.cancel(payment_id).await.map_err(bank)? {
            BankCancel::Cancelled => {}
            BankCancel::NotCancellable => return Ok(false),
            BankCancel::Unknown => {
                tracing::error!(%payment_id, "the bank does not know a payment it accepted");
                return Ok(false);
            }
        }
        // The bank's own record (with its event sequence), as its event would tell it.
        let Some(state) = self.bank.state(payment_id).await.map_err(bank)? else {
            return Err(MessageError::Retry(format!(
                "payment {payment_id}: cancelled, then not found at the bank"
            )));
        };
        self.update(payment_id, |record| {
            apply_event(record, &state, self.clock.now())
        })
        .await?;
        Ok(state.status == "cancelled")
    }

    /// Records what a bank event changes of its payment, without telling Payments Out yet (the
    /// reconciler notes a batch's outcomes one by one, then sends them in one PATCH).
    pub async fn note_event(
        &self,
        event: &BankEvent,
    ) -> Result<Option<PaymentRecord>, MessageError> {
        self.update(event.payment_id, |record| {
            apply_event(record, event, self.clock.now())
        })
        .await
    }

    /// A change read from the bank's feed: worked as its push would have been when the
    /// connector knows the payment and the change is news to it (its push was lost, or is still
    /// on its way), or when it is a return the product was not told of yet; `true` when it was.
    pub async fn from_feed(&self, event: &BankEvent) -> Result<bool, MessageError> {
        let Some(known) = self.store.payment(event.payment_id).await? else {
            return Ok(false);
        };
        let news = apply_event(&known, event, self.clock.now()).is_some();
        if !(news || known.return_untold()) {
            return Ok(false);
        }
        self.apply_event_to(known, event).await?;
        Ok(true)
    }

    /// A bank event: the payment's record moves, and Payments Out is told (with anything else
    /// of the batch it lacks).
    pub async fn on_event(&self, event: &BankEvent) -> Result<EventOutcome, MessageError> {
        // Most of a burst's pushes (`accepted`, `submitted`) are answered without a table call.
        // What their read could repair (an outcome whose window was never queued) is repaired by
        // that outcome's own push, retried while it fails, and by the reconciler.
        if !may_change(event) {
            return Ok(EventOutcome::Ignored);
        }
        let Some(current) = self.store.payment(event.payment_id).await? else {
            tracing::warn!(payment_id = %event.payment_id, "a bank event for a payment the connector does not know");
            return Ok(EventOutcome::UnknownPayment);
        };
        self.apply_event_to(current, event).await
    }

    /// [`Self::on_event`] on the payment's record just read (a stale one is read again when its
    /// write finds it changed).
    async fn apply_event_to(
        &self,
        current: PaymentRecord,
        event: &BankEvent,
    ) -> Result<EventOutcome, MessageError> {
        let batch_id = current.batch_id;
        let owed_before = current.owes_sage();
        let untold_before = current.return_untold();
        let written = self
            .update_from(current, |record| {
                apply_event(record, event, self.clock.now())
            })
            .await?;
        // A return often comes after its batch was closed: the reconciler watches it again, so
        // that the product is told even if the lease below is kept by a holder that died before
        // queueing its window (nothing else would look at a closed batch).
        if written
            .as_ref()
            .map_or(untold_before, PaymentRecord::return_untold)
        {
            // Added if closed; an open batch's look keeps its time, never put off by returns.
            self.open.touch(&self.watched(batch_id)).await?;
        }
        // Also when this event changed nothing but Sage still lacks the payment's status (an
        // earlier PATCH failed, or its window was never queued); not when Sage has it all, as
        // for most `accepted` and `submitted` events: the claim would be a table call for nothing.
        let owed = written
            .as_ref()
            .map_or(owed_before, PaymentRecord::owes_sage);
        if owed {
            self.schedule_sync(batch_id).await?;
        }
        Ok(match written {
            Some(r) => EventOutcome::Applied(r.status),
            None => EventOutcome::Ignored,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use connector_domain::ports::BoxFuture;
    use serde_json::{Value, json};

    use super::*;
    use crate::fakes::FakeConsents;
    use crate::fakes::payouts_world::{at_sage, event, now, world};

    #[tokio::test]
    async fn a_batch_goes_processing_in_one_patch_to_the_bank_once_and_to_its_outcome() {
        let w = world(&["10.00", "0", "20"]).await;
        let taken = w
            .batches
            .take(w.batch_id, Some("sage.intacct"))
            .await
            .unwrap();
        assert_eq!(
            taken,
            Taken::Worked {
                status: BatchStatus::Processing,
                submitted: 2
            }
        );
        use PaymentStatus::*;
        assert_eq!(
            at_sage(&w),
            (
                BatchStatus::Processing,
                vec![Processing, Rejected, Processing]
            )
        );
        assert_eq!(
            w.payouts.batch_patches.lock().unwrap().len(),
            1,
            "one PATCH"
        );
        // Redelivered: nothing sent again.
        w.batches.take(w.batch_id, None).await.unwrap();
        assert_eq!(w.payouts.batch_patches.lock().unwrap().len(), 1);
        assert!(w.bank.submissions.lock().unwrap().values().all(|n| *n == 1));

        let (a, c) = (w.payment_ids[0], w.payment_ids[2]);
        assert_eq!(
            w.batches.on_event(&event(a, 2, "settled")).await.unwrap(),
            EventOutcome::Applied(Paid)
        );
        assert_eq!(
            at_sage(&w),
            (BatchStatus::Processing, vec![Paid, Rejected, Processing])
        );
        // Repeated and older events change nothing.
        assert_eq!(
            w.batches.on_event(&event(a, 2, "settled")).await.unwrap(),
            EventOutcome::Ignored
        );
        assert_eq!(
            w.batches.on_event(&event(a, 1, "submitted")).await.unwrap(),
            EventOutcome::Ignored
        );
        w.batches.on_event(&event(c, 3, "settled")).await.unwrap();
        assert_eq!(
            at_sage(&w),
            (BatchStatus::PartiallyPaid, vec![Paid, Rejected, Paid])
        );
        let last = w
            .payouts
            .batch_patches
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        assert_eq!(last.payments.len(), 1);
        assert_eq!(last.payments[0].completed_at, Some(now()));
        assert_eq!(
            w.batches
                .on_event(&event(Uuid::new_v4(), 1, "settled"))
                .await
                .unwrap(),
            EventOutcome::UnknownPayment
        );
    }

    #[tokio::test]
    async fn an_event_claims_the_batchs_window_only_when_sage_lacks_something() {
        let w = world(&["10"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let id = w.payment_ids[0];
        // Planned to fail: whichever event claims the window next meets it.
        let down = || StoreError::Unavailable("planned".into());
        w.store.fail_next("lease_sync", down());
        // Sage already has `Processing`: nothing to claim.
        for (seq, status) in [(1, "accepted"), (2, "submitted")] {
            assert_eq!(
                w.batches.on_event(&event(id, seq, status)).await.unwrap(),
                EventOutcome::Ignored
            );
        }
        // The outcome claims it, and meets the failure: the record is written, Sage lacks it.
        let settled = event(id, 3, "settled");
        assert!(w.batches.on_event(&settled).await.is_err());
        assert_eq!(at_sage(&w).1, vec![PaymentStatus::Processing]);
        // Redelivered, it changes nothing, yet claims the window again for what Sage lacks.
        assert_eq!(
            w.batches.on_event(&settled).await.unwrap(),
            EventOutcome::Ignored
        );
        assert_eq!(at_sage(&w).1, vec![PaymentStatus::Paid]);
        // Now Sage has it all: a late event claims nothing.
        w.store.fail_next("lease_sync", down());
        w.batches.on_event(&settled).await.unwrap();
    }

    #[tokio::test]
    async fn an_in_progress_event_is_answered_without_reading_the_payment() {
        let w = world(&["10"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let id = w.payment_ids[0];
        // Planned to fail: whichever event reads the payment next meets it.
        w.store
            .fail_next("payment", StoreError::Unavailable("planned".into()));
        for (seq, status) in [(1, "accepted"), (2, "submitted")] {
            assert_eq!(
                w.batches.on_event(&event(id, seq, status)).await.unwrap(),
                EventOutcome::Ignored
            );
        }
        let settled = event(id, 3, "settled");
        assert!(matches!(
            w.batches.on_event(&settled).await,
            Err(MessageError::Retry(_))
        ));
        // The bank pushes it again.
        assert_eq!(
            w.batches.on_event(&settled).await.unwrap(),
            EventOutcome::Applied(PaymentStatus::Paid)
        );
        assert_eq!(at_sage(&w).1, vec![PaymentStatus::Paid]);
    }

    #[tokio::test]
    async fn the_decision_patch_is_noted_once_on_the_batch_not_on_each_payment() {
        let w = world(&["10", "0", "20"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let record = w.store.batch(w.batch_id).await.unwrap().unwrap();
        assert!(record.decision_patched);
        // Written once when checked, then once for the bank's answer to a submission: the
        // decision PATCH itself wrote no payment.
        let mut versions = Vec::new();
        for id in &w.payment_ids {
            versions.push(w.store.payment(*id).await.unwrap().unwrap().version);
        }
        assert_eq!(versions, vec![1, 0, 1]);
        assert_eq!(w.payouts.batch_patches.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_decision_patch_whose_note_is_lost_is_sent_whole_again_before_anything_is_paid() {
        let w = world(&["10", "0", "20"]).await;
        w.store.fail_next(
            "note_decision_patched",
            StoreError::Unavailable("planned".into()),
        );
        assert!(matches!(
            w.batches.take(w.batch_id, None).await,
            Err(MessageError::Retry(_))
        ));
        assert!(w.bank.submissions.lock().unwrap().is_empty());
        // Redelivered: the whole decision again (Sage takes a status it has), then the bank.
        w.batches.take(w.batch_id, None).await.unwrap();
        let patches = w.payouts.batch_patches.lock().unwrap().clone();
        assert_eq!(
            patches.iter().map(|p| p.payments.len()).collect::<Vec<_>>(),
            vec![3, 3]
        );
        use PaymentStatus::*;
        assert_eq!(at_sage(&w).1, vec![Processing, Rejected, Processing]);
        let submissions = w.bank.submissions.lock().unwrap().clone();
        assert!(submissions.len() == 2 && submissions.values().all(|n| *n == 1));
        // Noted now: the outcome's window sends the outcome alone.
        w.batches
            .on_event(&event(w.payment_ids[0], 3, "settled"))
            .await
            .unwrap();
        let last = w.payouts.batch_patches.lock().unwrap().last().cloned();
        assert_eq!(last.unwrap().payments.len(), 1);
    }

    #[tokio::test]
    async fn a_batch_another_delivery_is_checking_is_retried_and_checked_once() {
        let w = world(&["10", "0", "20"]).await;
        // Another delivery of the same notification holds the check.
        let key = format!("po-check#{}", w.batch_id);
        let other = w
            .store
            .claim_once(&key, "check", CHECK_LEASE, CHECK_KEEP, now())
            .await
            .unwrap();
        assert_eq!(other, Once::New);
        assert!(matches!(
            w.batches.take(w.batch_id, None).await,
            Err(MessageError::Retry(ref r)) if r.contains("another delivery")
        ));
        assert!(w.store.batch(w.batch_id).await.unwrap().is_none());
        assert!(w.payouts.batch_patches.lock().unwrap().is_empty());
        // That one died: its claim runs out before the queue delivers again.
        w.clock.set(now() + chrono::TimeDelta::minutes(6));
        w.batches.take(w.batch_id, None).await.unwrap();
        assert_eq!(w.payouts.batch_patches.lock().unwrap().len(), 1);
        assert_eq!(w.bank.submissions.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_delivery_that_finds_the_check_held_comes_back_after_its_lease_without_a_retry() {
        let mut w = world(&["10"]).await;
        let queue = Arc::new(Requeue::default());
        w.batches.requeue = Some(queue.clone());
        let key = format!("po-check#{}", w.batch_id);
        w.store
            .claim_once(&key, "check", CHECK_LEASE, CHECK_KEEP, now())
            .await
            .unwrap();
        let taken = w.batches.take(w.batch_id, Some("sage.ap")).await.unwrap();
        assert_eq!(taken, Taken::Deferred);
        assert_eq!(queue.1.lock().unwrap().clone(), vec![CHECK_LEASE]);
        assert!(matches!(
            queue.0.lock().unwrap().as_slice(),
            [PayoutsWork::Notification { kind, application, data, .. }]
                if kind == "batchpayments" && application.as_deref() == Some("sage.ap")
                    && data["batchId"] == w.batch_id.to_string()
        ));
        assert!(w.store.batch(w.batch_id).await.unwrap().is_none());
        // A cancellation meanwhile waits for the check.
        assert!(matches!(
            w.batches.cancel(w.batch_id, None, None).await,
            Err(MessageError::Retry(_))
        ));
    }

    #[tokio::test]
    async fn a_check_that_failed_after_its_record_was_written_keeps_its_claim() {
        let w = world(&["10"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        // A second claim held for this batch, and a check reported failed although the record
        // exists (a write that timed out after taking effect).
        let key = "po-check#again";
        w.store
            .claim_once(key, "check", CHECK_LEASE, CHECK_KEEP, now())
            .await
            .unwrap();
        let failed = Err(MessageError::Retry("timed out".into()));
        w.batches.release_check(w.batch_id, key, &failed).await;
        let later = now() + chrono::TimeDelta::minutes(10);
        let again = w
            .store
            .claim_once(key, "check", CHECK_LEASE, CHECK_KEEP, later)
            .await
            .unwrap();
        assert_eq!(again, Once::Completed, "not given up: nobody checks again");
    }

    #[tokio::test]
    async fn a_delivery_that_finds_the_check_done_works_on_its_record_without_checking_again() {
        let w = world(&["10", "20"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let recorded = w.store.payments(w.batch_id).await.unwrap();
        // Sage no longer answers for the batch: a second check would fail.
        w.payouts.batches.lock().unwrap().clear();
        // A delivery that read no record just before the first one wrote it.
        let checked = w.batches.check_once(w.batch_id, None).await.unwrap();
        assert!(matches!(checked, Checked::Recorded(r) if r.status == BatchStatus::Processing));
        let mut after = w.store.payments(w.batch_id).await.unwrap();
        let mut before = recorded;
        after.sort_by_key(|p| p.payment_id);
        before.sort_by_key(|p| p.payment_id);
        assert_eq!(after, before, "nothing written over");
    }

    #[tokio::test]
    async fn a_submission_is_noted_on_the_record_read_for_it() {
        let w = world(&["10", "20"]).await;
        // Planned to fail: a read of a payment after the submissions' own read meets it.
        w.store
            .fail_next("payment", StoreError::Unavailable("planned".into()));
        w.batches.take(w.batch_id, None).await.unwrap();
        let submissions = w.bank.submissions.lock().unwrap().clone();
        assert_eq!(submissions.len(), 2);
        let settled = event(w.payment_ids[0], 3, "settled");
        assert!(w.batches.on_event(&settled).await.is_err(), "still planned");
    }

    #[tokio::test]
    async fn a_submission_noted_after_the_banks_outcome_leaves_the_outcome() {
        let w = world(&["10"]).await;
        *w.bank.down.lock().unwrap() = true;
        assert!(w.batches.take(w.batch_id, None).await.is_err());
        *w.bank.down.lock().unwrap() = false;
        let id = w.payment_ids[0];
        let read = w.store.payment(id).await.unwrap().unwrap();
        assert!(!read.submitted);
        // The bank's outcome overtakes the submitter's note.
        let settled = event(id, 3, "settled");
        w.batches.on_event(&settled).await.unwrap();
        w.batches.submit_one(read).await.unwrap();
        let now = w.store.payment(id).await.unwrap().unwrap();
        assert_eq!((now.status, now.submitted), (PaymentStatus::Paid, true));
    }

    #[tokio::test]
    async fn a_refusal_by_the_bank_is_patched_rejected_and_a_conflict_is_never_resubmitted() {
        let w = world(&["10", "20"]).await;
        w.bank.refuse.lock().unwrap().insert(w.payment_ids[0]);
        w.bank.conflict.lock().unwrap().insert(w.payment_ids[1]);
        let err = w.batches.take(w.batch_id, None).await.unwrap_err();
        assert!(
            matches!(err, MessageError::Poison(ref r) if r.contains("IdempotencyConflict")),
            "{err:?}"
        );
        use PaymentStatus::*;
        assert_eq!(at_sage(&w).1, vec![Processing, Processing]);
        // The refusal was recorded; the next attempt PATCHes it (the conflict stays unsent).
        w.bank.conflict.lock().unwrap().clear();
        w.batches.take(w.batch_id, None).await.unwrap();
        assert_eq!(at_sage(&w).1, vec![Rejected, Processing]);
        let patches = w.payouts.batch_patches.lock().unwrap().clone();
        assert_eq!(
            patches.last().unwrap().payments[0].reason.as_deref(),
            Some("BankRejected: unknown_account")
        );
    }

    #[tokio::test]
    async fn failures_are_retried_without_paying_twice() {
        let w = world(&["10", "20"]).await;
        *w.bank.down.lock().unwrap() = true;
        assert!(matches!(
            w.batches.take(w.batch_id, None).await,
            Err(MessageError::Retry(_))
        ));
        assert!(w.bank.submissions.lock().unwrap().is_empty());
        *w.bank.down.lock().unwrap() = false;
        w.batches.take(w.batch_id, None).await.unwrap();
        w.batches.take(w.batch_id, None).await.unwrap();
        let submissions = w.bank.submissions.lock().unwrap().clone();
        assert_eq!(submissions.len(), 2);
        assert!(submissions.values().all(|n| *n == 1), "{submissions:?}");
    }

    /// What was queued, and the delays asked for (`send_after`).
    #[derive(Default)]
    struct Requeue(Mutex<Vec<PayoutsWork>>, Mutex<Vec<std::time::Duration>>);

    impl PayoutsQueue for Requeue {
        fn send<'a>(
            &'a self,
            work: &'a PayoutsWork,
        ) -> BoxFuture<'a, Result<(), connector_domain::ports::QueueError>> {
            self.0.lock().unwrap().push(work.clone());
            Box::pin(async { Ok(()) })
        }

        fn send_after<'a>(
            &'a self,
            work: &'a PayoutsWork,
            delay: std::time::Duration,
        ) -> BoxFuture<'a, Result<(), connector_domain::ports::QueueError>> {
            self.1.lock().unwrap().push(delay);
            self.send(work)
        }
    }

    #[tokio::test]
    async fn a_batch_larger_than_one_invocation_s_budget_is_handed_on_and_finished_by_the_next() {
        let mut w = world(&["10", "20", "30"]).await;
        let queue = Arc::new(Requeue::default());
        w.batches.requeue = Some(queue.clone());
        w.batches.submit_budget = std::time::Duration::ZERO;
        let first = w
            .batches
            .take(w.batch_id, Some("sage.intacct"))
            .await
            .unwrap();
        assert_eq!(
            first,
            Taken::Worked {
                status: BatchStatus::Processing,
                submitted: 0
            }
        );
        let handed = queue.0.lock().unwrap().clone();
        assert!(matches!(
            handed.as_slice(),
            [PayoutsWork::Notification { kind, application, data, .. }]
                if kind == "batchpayments" && application.as_deref() == Some("sage.intacct")
                    && data["batchId"] == w.batch_id.to_string()
        ));
        w.batches.submit_budget = std::time::Duration::from_secs(30);
        let next = w.batches.take(w.batch_id, None).await.unwrap();
        assert_eq!(
            next,
            Taken::Worked {
                status: BatchStatus::Processing,
                submitted: 3
            }
        );
        assert_eq!(
            queue.0.lock().unwrap().len(),
            1,
            "done: nothing more handed on"
        );
        assert!(w.bank.submissions.lock().unwrap().values().all(|n| *n == 1));
    }

    #[tokio::test]
    async fn a_bank_event_is_recorded_at_once_and_its_window_queued_once_for_the_worker() {
        let mut w = world(&["10", "20"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let queue = Arc::new(Requeue::default());
        w.batches.requeue = Some(queue.clone());
        let (a, b) = (w.payment_ids[0], w.payment_ids[1]);
        use PaymentStatus::*;

        // Recorded, not yet sent; one window queued.
        w.batches.on_event(&event(a, 2, "settled")).await.unwrap();
        assert_eq!(at_sage(&w).1, vec![Processing, Processing]);
        // The lease is held: this change is left to that window, and nothing more is queued.
        w.batches.on_event(&event(b, 2, "settled")).await.unwrap();
        let queued = queue.0.lock().unwrap().clone();
        assert_eq!(
            queued,
            vec![PayoutsWork::SyncBatch {
                batch_id: w.batch_id
            }]
        );

        // The window (po-worker) sends both in one PATCH, and finds nothing left.
        let patches = w.payouts.batch_patches.lock().unwrap().len();
        w.batches.sync_window(w.batch_id).await.unwrap();
        assert_eq!(at_sage(&w), (BatchStatus::Paid, vec![Paid, Paid]));
        assert_eq!(w.payouts.batch_patches.lock().unwrap().len(), patches + 1);
        assert_eq!(queue.0.lock().unwrap().len(), 1, "nothing left to queue");

        // The lease was released: the next change queues a window again.
        w.batches.on_event(&event(a, 3, "returned")).await.unwrap();
        assert_eq!(queue.0.lock().unwrap().len(), 2);
    }

    fn planned() -> StoreError {
        StoreError::Unavailable("planned".into())
    }

    #[tokio::test]
    async fn windows_read_only_what_sage_lacks_until_the_batch_may_be_final() {
        let mut w = world(&["10", "20", "30"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        w.batches.requeue = Some(Arc::new(Requeue::default()));
        let &[a, b, c] = &w.payment_ids[..] else {
            panic!("three payments")
        };
        use PaymentStatus::*;

        w.batches.on_event(&event(a, 2, "failed")).await.unwrap();
        // Planned to fail: a window that reads the whole batch meets it.
        w.store.fail_next("payments", planned());
        w.batches.sync_window(w.batch_id).await.unwrap();
        assert_eq!(
            at_sage(&w),
            (
                BatchStatus::Processing,
                vec![Failed, Processing, Processing]
            )
        );
        assert!(
            w.store.payments(w.batch_id).await.is_err(),
            "the window never read the whole batch"
        );

        // The last outcomes: the final status needs every payment (these two alone would
        // make it `Paid`), so the window reads them.
        w.batches.on_event(&event(b, 2, "settled")).await.unwrap();
        w.batches.on_event(&event(c, 2, "settled")).await.unwrap();
        w.batches.sync_window(w.batch_id).await.unwrap();
        assert_eq!(
            at_sage(&w),
            (BatchStatus::PartiallyPaid, vec![Failed, Paid, Paid])
        );
    }

    #[tokio::test]
    async fn a_batch_recorded_before_the_payments_watch_is_windowed_from_all_its_payments() {
        let mut w = world(&["10", "20"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let mut record = w.store.batch(w.batch_id).await.unwrap().unwrap();
        record.watched_payments = false;
        let payments = w.store.payments(w.batch_id).await.unwrap();
        w.store.record_batch(&record, &payments).await.unwrap();
        w.batches.requeue = Some(Arc::new(Requeue::default()));

        w.batches
            .on_event(&event(w.payment_ids[0], 2, "settled"))
            .await
            .unwrap();
        // Planned to fail: a window that reads by the watch meets it.
        w.store.fail_next("payments_owing", planned());
        w.batches.sync_window(w.batch_id).await.unwrap();
        use PaymentStatus::*;
        assert_eq!(
            at_sage(&w),
            (BatchStatus::Processing, vec![Paid, Processing])
        );
        assert!(
            w.store.payments_owing(w.batch_id).await.is_err(),
            "the window never read by the watch"
        );
    }

    #[tokio::test]
    async fn a_cancellation_cancels_at_the_bank_what_it_names_and_sage_follows_the_bank() {
        let w = world(&["10", "20", "30"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let (a, _, c) = (w.payment_ids[0], w.payment_ids[1], w.payment_ids[2]);
        w.bank.executing.lock().unwrap().insert(c);
        let stranger = Uuid::new_v4();
        let report = w
            .batches
            .cancel(w.batch_id, Some(&[a, stranger]), None)
            .await
            .unwrap();
        assert_eq!(
            report,
            Cancellation {
                cancelled: 1,
                too_late: 0,
                ignored: 1
            }
        );
        use PaymentStatus::*;
        assert_eq!(
            at_sage(&w),
            (
                BatchStatus::Processing,
                vec![Cancelled, Processing, Processing]
            )
        );
        let patch = w
            .payouts
            .batch_patches
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        assert_eq!(patch.payments[0].reason.as_deref(), Some("CANC"));
        // All the rest: one is cancelled, the other is too far along and runs on to its outcome.
        let report = w.batches.cancel(w.batch_id, None, None).await.unwrap();
        assert_eq!((report.cancelled, report.too_late), (1, 1));
        assert_eq!(
            at_sage(&w),
            (
                BatchStatus::Processing,
                vec![Cancelled, Cancelled, Processing]
            )
        );
        w.batches.on_event(&event(c, 5, "settled")).await.unwrap();
        assert_eq!(
            at_sage(&w),
            (BatchStatus::PartiallyPaid, vec![Cancelled, Cancelled, Paid])
        );
        // Once final, a cancellation asks the bank nothing.
        let report = w.batches.cancel(w.batch_id, None, None).await.unwrap();
        assert_eq!(report, Cancellation::default());
        assert!(w.bank.submissions.lock().unwrap().values().all(|n| *n == 1));
        // The bank's own cancellation event, arriving late, changes nothing.
        assert_eq!(
            w.batches.on_event(&event(a, 2, "cancelled")).await.unwrap(),
            EventOutcome::Ignored
        );
    }

    #[tokio::test]
    async fn a_cancellation_before_the_batch_notification_checks_and_submits_first() {
        let w = world(&["10", "0"]).await;
        let report = w.batches.cancel(w.batch_id, None, None).await.unwrap();
        assert_eq!(
            report.cancelled, 1,
            "the valid payment, once the bank held it"
        );
        use PaymentStatus::*;
        assert_eq!(
            at_sage(&w),
            (BatchStatus::Failed, vec![Cancelled, Rejected])
        );
        assert_eq!(w.bank.submissions.lock().unwrap().len(), 1);
        // Its notification, arriving now, changes nothing.
        w.batches.take(w.batch_id, None).await.unwrap();
        assert_eq!(
            w.bank.submissions.lock().unwrap().values().sum::<usize>(),
            1
        );
    }

    #[tokio::test]
    async fn a_cancellation_waits_while_the_batch_is_still_being_submitted() {
        let mut w = world(&["10", "20"]).await;
        w.batches.submit_budget = std::time::Duration::ZERO;
        let err = w.batches.cancel(w.batch_id, None, None).await.unwrap_err();
        assert!(matches!(err, MessageError::Retry(_)), "{err:?}");
        assert!(w.bank.submissions.lock().unwrap().is_empty());
        w.batches.submit_budget = std::time::Duration::from_secs(30);
        let report = w.batches.cancel(w.batch_id, None, None).await.unwrap();
        assert_eq!(report.cancelled, 2);
        assert_eq!(at_sage(&w).0, BatchStatus::Cancelled);
    }

    #[tokio::test]
    async fn a_payment_returned_after_settling_stays_paid_and_the_product_is_told_once() {
        let w = world(&["10", "20"]).await;
        w.batches.take(w.batch_id, None).await.unwrap();
        let (a, b) = (w.payment_ids[0], w.payment_ids[1]);
        w.batches.on_event(&event(a, 2, "settled")).await.unwrap();
        let mut returned = event(a, 3, "returned");
        returned.reason_code = Some("AC04".into());
        returned.reason_message = Some("Account closed".into());
        w.batches.on_event(&returned).await.unwrap();
        w.batches.on_event(&returned).await.unwrap();
        // Reordered: the return arrives before the settlement it follows.
        w.batches.on_event(&event(b, 3, "returned")).await.unwrap();
        w.batches.on_event(&event(b, 2, "settled")).await.unwrap();
        use PaymentStatus::*;
        assert_eq!(at_sage(&w), (BatchStatus::Paid, vec![Paid, Paid]));
        let messages = w.payouts.messages.lock().unwrap().clone();
        let told: Vec<&Value> = messages
            .iter()
            .filter(|m| m.0 == "notifications")
            .map(|m| &m.3)
            .collect();
        assert_eq!(told.len(), 2, "{messages:?}");
        assert_eq!(
            *told[0],
            json!({"resourceType": "payment", "resourceId": a, "event": "Returned",
                   "status": "Paid", "message": "AC04: Account closed"})
        );
        assert_eq!(told[1]["resourceId"], json!(b));
        assert_eq!(told[1]["message"], Value::Null);
    }

    #[tokio::test]
    async fn payments_not_yet_sent_when_the_consent_ends_are_cancelled_and_never_sent() {
        let mut w = world(&["10", "20"]).await;
        w.batches.submit_budget = std::time::Duration::ZERO;
        w.batches.take(w.batch_id, None).await.unwrap();
        use PaymentStatus::*;
        assert_eq!(at_sage(&w).1, vec![Processing, Processing]);
        // The customer revokes the consent before the rest of the batch is sent.
        w.batches.consents = Arc::new(FakeConsents::new("revoked"));
        w.batches.submit_budget = std::time::Duration::from_secs(30);
        w.batches.take(w.batch_id, None).await.unwrap();
        assert!(w.bank.submissions.lock().unwrap().is_empty());
        assert_eq!(
            at_sage(&w),
            (BatchStatus::Cancelled, vec![Cancelled, Cancelled])
        );
        let last = w
            .payouts
            .batch_patches
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap();
        assert_eq!(last.payments[0].reason.as_deref(), Some("ConsentNotActive"));
    }
}
