//! The statement pipeline's state machines (push, poll, release, watchdog) driven through their
//! ports against the in-memory fakes: a discrete-event run where every queued message is
//! delivered at its due time on a manual clock, faults are injected at any port, and messages
//! can be delivered twice, concurrently. Seconds, not minutes: the local-stack suite shows the
//! same rules against the real emulators.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use connector_domain::account::{Account, AccountStatus, BackfillState, ClaimPhase};
use connector_domain::messages::{Kick, KickReason, TimerMessage};
use connector_domain::ports::{CallError, Clock, StoreError};
use connector_domain::schedule::{Backoff, PollSchedule};
use connector_domain::statement::{BalanceShape, FailureDetail, StatementStatus};
use connector_domain::stored::{StoredTransaction, TransactionState, pending_key};
use connector_domain::transaction::Transaction;
use proptest::prelude::*;
use uuid::Uuid;

use crate::batch::MessageError;
use crate::fakes::{
    FakeBankingService, ManualClock, MemoryQueues, MemoryStore, NoBank, OneService, Sent,
};
use crate::pipeline::Pipeline;
use crate::poller::StatementPoller;
use crate::pusher::StatementPusher;
use crate::reconciler::Reconciler;

const BANK: Uuid = Uuid::from_u128(0xb4c);
const ACCOUNT: Uuid = Uuid::from_u128(0xacc);

fn start() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

struct Harness {
    clock: Arc<ManualClock>,
    store: Arc<MemoryStore>,
    queues: Arc<MemoryQueues>,
    service: Arc<FakeBankingService>,
    pusher: StatementPusher,
    poller: StatementPoller,
    reconciler: Reconciler,
    /// Messages sent to the DLQ, with the reason.
    poisoned: Vec<String>,
    /// Deliveries made.
    steps: usize,
}

impl Harness {
    fn new(polls_to_finish: u32) -> Self {
        let clock = Arc::new(ManualClock::new(start()));
        let store = Arc::new(MemoryStore::default());
        let queues = Arc::new(MemoryQueues::new(clock.clone()));
        let service = Arc::new(FakeBankingService::new(clock.clone(), polls_to_finish));
        let pipeline = || Pipeline {
            store: store.clone(),
            timers: queues.clone(),
            providers: Arc::new(OneService(service.clone())),
            clock: clock.clone(),
            schedule: PollSchedule::default(),
            backoff: Backoff::default(),
            shape: BalanceShape::Nested,
            max_attempts: 5,
            too_old: Duration::from_secs(14 * 24 * 3600),
            posting_stale_after: Duration::from_secs(180),
            single_bank: None,
            config_retry: Duration::from_secs(300),
            max_conflicts: 20,
        };
        Self {
            pusher: StatementPusher::new(pipeline(), Arc::new(NoBank)),
            poller: StatementPoller::new(pipeline()),
            reconciler: Reconciler {
                pipeline: pipeline(),
                bank: Arc::new(NoBank),
                stale_after: Duration::from_secs(900),
            },
            clock,
            store,
            queues,
            service,
            poisoned: Vec::new(),
            steps: 0,
        }
    }

    /// An active account with `n` pending transactions, a day apart from `n` days ago, each with
    /// its running balance; `uid-00000` first.
    fn with_backlog(self, n: usize) -> Self {
        self.add_account(ACCOUNT, n);
        self
    }

    /// An active account `id` with `n` pending transactions (see `with_backlog`).
    fn add_account(&self, id: Uuid, n: usize) {
        let now = start();
        let mut account = Account::new(
            id,
            format!("ext-{id}"),
            Some(BANK),
            None,
            now - TimeDelta::days(30),
        );
        account.backfill = BackfillState::Done;
        account.next_seq = n as u64;
        self.store.put_account(account);
        let first = now - TimeDelta::minutes(n as i64 + 1);
        let stored = (0..n)
            .map(|i| {
                let t = transaction(i, first + TimeDelta::minutes(i as i64));
                StoredTransaction {
                    seq: i as u64 + 1,
                    state: TransactionState::Pending,
                    position: Some(pending_key(&t, i as u64 + 1)),
                    transaction: t,
                    statement_id: None,
                    reason: None,
                    received_at: now - TimeDelta::minutes(1),
                }
            })
            .collect();
        self.store.put_pending(id, stored);
    }

    fn kick(&self) {
        self.queues.redeliver(
            Sent::Kick(Kick {
                bank_account_id: ACCOUNT,
                claim: None,
                attempt: None,
                reason: KickReason::Ingest,
            }),
            Duration::ZERO,
        );
    }

    async fn dispatch(&self, message: &Sent) -> Result<(), MessageError> {
        match message {
            Sent::Kick(k) => self.pusher.handle(k.clone()).await,
            Sent::Timer(t) => self.poller.handle(t.clone()).await,
            Sent::Work(_) => Ok(()),
        }
    }

    /// A failed message comes back after SQS's visibility timeout; poison goes to the DLQ.
    fn settle(&mut self, message: Sent, result: Result<(), MessageError>) {
        match result {
            Ok(()) => {}
            Err(MessageError::Retry(_)) => self.queues.redeliver(message, Duration::from_secs(30)),
            Err(MessageError::Poison(why)) => self.poisoned.push(why),
        }
    }

    /// Delivers the next message at its due time; `twice`: two deliveries of it at once.
    async fn step(&mut self, twice: bool) -> bool {
        let Some((due, message)) = self.queues.pop() else {
            return false;
        };
        self.clock.set(due);
        self.steps += 1;
        if twice && matches!(message, Sent::Timer(_)) {
            // The timer queue is a standard queue: a message may be delivered twice at once.
            let (a, b) = tokio::join!(self.dispatch(&message), self.dispatch(&message));
            self.settle(message.clone(), a);
            self.settle(message, b);
        } else if twice {
            // The push queue is FIFO: a group's messages are handed out one at a time, so a
            // duplicated kick comes after the first is done.
            let a = self.dispatch(&message).await;
            self.settle(message.clone(), a);
            let b = self.dispatch(&message).await;
            self.settle(message, b);
        } else {
            let result = self.dispatch(&message).await;
            self.settle(message, result);
        }
        true
    }

    /// Delivers until the account's statement is posted (its first poll then waits).
    async fn step_until_posted(&mut self) {
        while self
            .account()
            .in_flight
            .as_ref()
            .and_then(|c| c.posted())
            .is_none()
        {
            assert!(self.step(false).await, "the statement was never posted");
        }
    }

    /// Delivers until nothing is left; `duplicate(n)` says whether delivery `n` is doubled.
    async fn run_with(&mut self, mut duplicate: impl FnMut(usize) -> bool) {
        while self.step(duplicate(self.steps)).await {
            assert!(self.steps < 20_000, "the pipeline does not settle");
        }
    }

    async fn run(&mut self) {
        self.run_with(|_| false).await;
    }

    /// Runs the reconciler every 5 minutes of the manual clock (past its staleness limit) until
    /// it finds nothing to do.
    async fn settle_with_reconciler(&mut self, mut duplicate: impl FnMut(usize) -> bool) {
        for _ in 0..10 {
            self.clock.set(self.clock.now() + TimeDelta::minutes(20));
            let report = self.reconciler.run().await.expect("the reconciler runs");
            if report.kicked + report.polls_resent + report.retries_resent == 0 {
                return;
            }
            self.run_with(&mut duplicate).await;
        }
        panic!("the reconciler keeps finding work");
    }

    fn account(&self) -> Account {
        self.store.account(ACCOUNT)
    }

    fn state_of(&self, unique_id: &str) -> (TransactionState, Option<String>) {
        let t = self
            .store
            .transactions(ACCOUNT)
            .into_iter()
            .find(|t| t.transaction.unique_id == unique_id)
            .expect("stored");
        (t.state, t.reason)
    }

    /// Every transaction held by Banking Service once, in order; the account idle.
    fn assert_all_delivered(&self, n: usize) {
        let held = self.service.held(ACCOUNT);
        assert!(
            held == ids(0..n),
            "{} of {n} held; first out of place: {:?}; claim {:?}; waiting {:?}",
            held.len(),
            held.iter().zip(ids(0..n)).position(|(a, b)| *a != b),
            self.account().in_flight,
            self.queues.waiting(),
        );
        assert_eq!(self.service.violations(), Vec::<String>::new());
        let account = self.account();
        assert_eq!(account.in_flight, None);
        assert_eq!(account.delivered_count, n as u64);
        assert!(self.poisoned.is_empty(), "{:?}", self.poisoned);
        assert!(
            self.store
                .transactions(ACCOUNT)
                .iter()
                .all(
                    |t| t.position.as_deref() <= account.delivered_through.as_deref()
                        || t.state != TransactionState::Pending
                ),
            "a pending transaction is left above the watermark"
        );
    }
}

fn transaction(i: usize, date: DateTime<Utc>) -> Transaction {
    Transaction {
        unique_id: format!("uid-{i:05}"),
        transaction_amount: "10.00".parse().unwrap(),
        transaction_type: "DEBIT".into(),
        date_posted: date,
        date_user_initiated: None,
        exchange_currency: None,
        exchange_amount: None,
        check_number: None,
        reference_number: None,
        description: None,
        narrative1: None,
        narrative2: None,
        payee: None,
        coordinates: None,
        category: None,
        provider_additional_fields: Vec::new(),
        running_balance: Some(rust_decimal::Decimal::from(i as i64 * 10)),
    }
}

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("uid-{i:05}")).collect()
}

fn detail(code: &str, target: &str) -> FailureDetail {
    FailureDetail {
        code: code.into(),
        target: Some(target.into()),
        message: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_backlog_goes_in_order_one_full_statement_at_a_time() {
    let mut h = Harness::new(2).with_backlog(2_500);
    h.kick();
    h.run().await;
    h.assert_all_delivered(2_500);
    let sizes: Vec<usize> = h
        .service
        .statements()
        .iter()
        .map(|s| s.unique_ids.len())
        .collect();
    assert_eq!(sizes, [1000, 1000, 500]);
    assert!(h.service.statements().iter().all(|s| s.gets == 2));
    let last = h
        .store
        .transactions(ACCOUNT)
        .last()
        .unwrap()
        .position
        .clone();
    assert_eq!(h.account().delivered_through, last);
}

#[tokio::test]
async fn a_stale_poll_is_ignored_without_calling_banking_service() {
    let mut h = Harness::new(3).with_backlog(5);
    h.kick();
    // Claim, post: the first poll is queued.
    h.step_until_posted().await;
    let claim = h.account().in_flight.unwrap();
    let posted = claim.posted().unwrap().clone();
    let stale = TimerMessage::Poll {
        bank_account_id: ACCOUNT,
        statement_id: posted.statement_id.clone(),
        claim: claim.token.clone(),
        attempt: 7,
        posted_at: posted.posted_at,
        transaction_count: 5,
    };
    h.poller.handle(stale).await.unwrap();
    assert_eq!(h.service.statements()[0].gets, 0);
    assert_eq!(h.account().in_flight.unwrap().poll_attempt(), 0);
    h.run().await;
    h.assert_all_delivered(5);
    assert_eq!(h.service.statements()[0].gets, 3);
}

#[tokio::test]
async fn a_429_waits_the_time_asked_and_resubmits_the_same_statement() {
    let mut h = Harness::new(1).with_backlog(5);
    h.service.fail_next_post(CallError::RateLimited {
        retry_after: Some(Duration::from_secs(7)),
    });
    h.kick();
    assert!(h.step(false).await);
    let claim = h.account().in_flight.unwrap();
    assert_eq!(
        claim.phase,
        ClaimPhase::RetryWait {
            retry_at: start() + TimeDelta::seconds(7)
        }
    );
    assert_eq!(claim.attempt, 1);
    assert_eq!(claim.batch.unique_ids, ids(0..5));
    let retry = h.queues.waiting();
    assert!(retry.contains(&Sent::Timer(TimerMessage::RetryPush {
        bank_account_id: ACCOUNT,
        claim: claim.token.clone(),
        attempt: Some(1),
    })));
    h.run().await;
    h.assert_all_delivered(5);
    assert_eq!(h.service.statements().len(), 1);
}

#[tokio::test]
async fn a_stale_retry_timer_resubmits_nothing() {
    let mut h = Harness::new(1).with_backlog(5);
    h.service
        .fail_next_post(CallError::Transient("HTTP 503".into()));
    h.kick();
    assert!(h.step(false).await);
    let token = h.account().in_flight.unwrap().token;
    // An older attempt's timer, and one of another claim.
    for (claim, attempt) in [(token.clone(), 0), ("another".to_string(), 1)] {
        h.pusher
            .handle(Kick {
                bank_account_id: ACCOUNT,
                claim: Some(claim),
                attempt: Some(attempt),
                reason: KickReason::Retry,
            })
            .await
            .unwrap();
    }
    assert!(h.service.statements().is_empty());
    h.run().await;
    h.assert_all_delivered(5);
}

#[tokio::test]
async fn a_refused_statement_is_parked_with_its_reason_and_the_account_goes_on() {
    let mut h = Harness::new(1).with_backlog(3);
    h.service.fail_next_post(CallError::Invalid {
        summary: "InvalidValue transactionAmount".into(),
    });
    h.kick();
    h.run().await;
    for id in ids(0..3) {
        assert_eq!(
            h.state_of(&id),
            (
                TransactionState::Parked,
                Some("Rejected: InvalidValue transactionAmount".into())
            )
        );
    }
    assert_eq!(h.account().in_flight, None);
    assert!(h.service.statements().is_empty());
}

#[tokio::test]
async fn a_409_that_keeps_coming_is_parked_after_the_limit() {
    let mut h = Harness::new(1).with_backlog(2);
    for _ in 0..20 {
        h.service.fail_next_post(CallError::Conflict {
            message: "a statement is in flight".into(),
        });
    }
    h.kick();
    h.run().await;
    assert_eq!(
        h.state_of("uid-00000"),
        (
            TransactionState::Parked,
            Some("Conflict: 409 20 times (a statement is in flight)".into())
        )
    );
    assert_eq!(h.account().in_flight, None);
    assert_eq!(h.account().status, AccountStatus::Active);
}

#[tokio::test]
async fn a_409_from_a_cancelled_account_offboards_it_and_parks_what_is_pending() {
    let mut h = Harness::new(1).with_backlog(4);
    h.service.cancel(ACCOUNT);
    h.kick();
    h.run().await;
    let account = h.account();
    assert_eq!(account.status, AccountStatus::Cancelled);
    assert_eq!(account.in_flight, None);
    for id in ids(0..4) {
        assert_eq!(
            h.state_of(&id),
            (TransactionState::Parked, Some("AccountCancelled".into()))
        );
    }
}

#[tokio::test]
async fn a_batch_parked_by_offboarding_while_in_flight_ends_delivered_when_it_succeeds() {
    use connector_domain::ports::{AccountStore, TransactionStore};
    let mut h = Harness::new(1).with_backlog(3);
    h.kick();
    // The statement is posted; before its poll, the account is deleted and offboarding parks
    // everything above the watermark, the batch in flight included (as the worker does).
    assert!(h.step(false).await);
    assert!(h.account().in_flight.is_some());
    h.store
        .cancel_account(ACCOUNT, None, start())
        .await
        .unwrap();
    let parked = h
        .store
        .park_all_pending(ACCOUNT, None, "AccountCancelled", start())
        .await
        .unwrap();
    assert_eq!(parked, 3);
    h.run().await;
    // The statement had succeeded: delivered, not parked.
    assert_eq!(h.service.held(ACCOUNT), ids(0..3));
    for id in ids(0..3) {
        assert_eq!(h.state_of(&id).0, TransactionState::Delivered, "{id}");
    }
    let account = h.account();
    assert_eq!(account.in_flight, None);
    assert_eq!(account.delivered_count, 3);
}

#[tokio::test]
async fn refused_credentials_wait_the_configuration_delay_then_deliver() {
    let mut h = Harness::new(1).with_backlog(2);
    h.service
        .fail_next_post(CallError::Configuration("403 API key".into()));
    h.kick();
    assert!(h.step(false).await);
    assert_eq!(
        h.account().in_flight.unwrap().phase,
        ClaimPhase::RetryWait {
            retry_at: start() + TimeDelta::seconds(300)
        }
    );
    h.run().await;
    h.assert_all_delivered(2);
}

#[tokio::test]
async fn duplicates_count_as_delivered_and_too_old_ones_are_parked() {
    let mut h = Harness::new(1).with_backlog(4);
    h.service.hold(ACCOUNT, "uid-00001");
    h.service.next_outcome(
        StatementStatus::Failed,
        vec![
            detail("DuplicateTransaction", "uid-00001"),
            detail("TransactionTooOld", "uid-00000"),
        ],
    );
    h.kick();
    h.run().await;
    assert_eq!(
        h.state_of("uid-00000"),
        (TransactionState::Parked, Some("TransactionTooOld".into()))
    );
    assert_eq!(h.state_of("uid-00001").0, TransactionState::Delivered);
    let held = h.service.held(ACCOUNT);
    assert_eq!(held, ["uid-00001", "uid-00002", "uid-00003"]);
    let account = h.account();
    assert_eq!(account.delivered_count, 3);
    assert_eq!(account.in_flight, None);
    let statements = h.service.statements();
    assert_eq!(statements.len(), 2);
    assert!(statements[0].deleted, "the failed statement is deleted");
    assert_eq!(statements[1].unique_ids, ["uid-00002", "uid-00003"]);
}

#[tokio::test]
async fn a_statement_that_keeps_failing_is_parked_after_the_attempts_allowed() {
    let mut h = Harness::new(1).with_backlog(2);
    for _ in 0..5 {
        h.service
            .next_outcome(StatementStatus::Failed, vec![detail("InternalError", "x")]);
    }
    h.kick();
    h.run().await;
    assert_eq!(
        h.state_of("uid-00001"),
        (
            TransactionState::Parked,
            Some("Failed: InternalError x".into())
        )
    );
    assert_eq!(h.service.statements().len(), 5);
    assert_eq!(h.account().in_flight, None);
}

#[tokio::test]
async fn a_deleted_or_unknown_statement_is_sent_again() {
    let mut h = Harness::new(1).with_backlog(3);
    h.service.next_outcome(StatementStatus::Deleted, Vec::new());
    h.kick();
    h.run().await;
    h.assert_all_delivered(3);
    assert_eq!(h.service.statements().len(), 2);

    let mut h = Harness::new(1).with_backlog(3);
    h.service.fail_next_get(CallError::NotFound {
        summary: "NotFound".into(),
    });
    h.kick();
    h.run().await;
    h.assert_all_delivered(3);
}

#[tokio::test]
async fn a_consumer_dying_between_its_write_and_its_timer_is_covered_by_the_watchdog() {
    // Posted and recorded, then the first poll's timer is lost (the consumer died): the
    // redelivered kick finds the account busy; the watchdog restarts the poll chain.
    let mut h = Harness::new(1).with_backlog(3);
    // The watchdog's timer goes out with the claim; the first poll's is lost.
    h.queues.script("timer", &[true, false]);
    h.kick();
    h.run().await;
    h.assert_all_delivered(3);
    assert_eq!(h.service.statements().len(), 1);

    // A pusher that dies right after claiming (its claim write is the last thing it does).
    let mut h = Harness::new(1).with_backlog(3);
    h.store.fail_next(
        "update_claim",
        StoreError::Unavailable("connection reset".into()),
    );
    h.kick();
    h.run().await;
    h.assert_all_delivered(3);
}

#[tokio::test]
async fn a_corrupt_item_is_poison_not_retried_forever() {
    let mut h = Harness::new(1).with_backlog(1);
    h.store
        .fail_next("claim_account", StoreError::Corrupt("bad claim".into()));
    h.kick();
    h.run().await;
    assert_eq!(h.poisoned.len(), 1);
    assert!(h.poisoned[0].contains("bad claim"), "{:?}", h.poisoned);
}

#[tokio::test]
async fn an_auth_required_statement_is_sent_once_and_clears_what_is_owed() {
    let mut h = Harness::new(1).with_backlog(0);
    let mut account = h.account();
    account.status = AccountStatus::AuthRequired;
    account.auth_required_owed = true;
    h.store.put_account(account);
    h.kick();
    h.run().await;
    let account = h.account();
    assert!(!account.auth_required_owed);
    assert_eq!(account.in_flight, None);
    let statements = h.service.statements();
    assert_eq!(statements.len(), 1);
    assert!(statements[0].unique_ids.is_empty());
    assert_eq!(h.service.violations(), Vec::<String>::new());
}

/// A fault to inject before a run.
#[derive(Debug, Clone)]
enum Fault {
    PostRateLimited(u64),
    PostTransient,
    PostConflict,
    GetTransient,
    GetRateLimited(u64),
    TimerLost,
    KickLost,
    StoreUnavailable(&'static str),
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        (1u64..20).prop_map(Fault::PostRateLimited),
        Just(Fault::PostTransient),
        Just(Fault::PostConflict),
        Just(Fault::GetTransient),
        (1u64..20).prop_map(Fault::GetRateLimited),
        Just(Fault::TimerLost),
        Just(Fault::KickLost),
        prop::sample::select(vec![
            "get_account",
            "claim_account",
            "update_claim",
            "advance_poll",
            "release_account",
            "commit_horizon",
            "pending_transactions",
            "transactions_by_ids",
        ])
        .prop_map(Fault::StoreUnavailable),
    ]
}

fn inject(h: &Harness, f: &Fault) {
    match f {
        Fault::PostRateLimited(s) => h.service.fail_next_post(CallError::RateLimited {
            retry_after: Some(Duration::from_secs(*s)),
        }),
        Fault::PostTransient => h.service.fail_next_post(CallError::Transient("502".into())),
        Fault::PostConflict => h.service.fail_next_post(CallError::Conflict {
            message: "in flight".into(),
        }),
        Fault::GetTransient => h.service.fail_next_get(CallError::Transient("500".into())),
        Fault::GetRateLimited(s) => h.service.fail_next_get(CallError::RateLimited {
            retry_after: Some(Duration::from_secs(*s)),
        }),
        Fault::TimerLost => h.queues.fail_next("timer", 1),
        Fault::KickLost => h.queues.fail_next("kick", 1),
        Fault::StoreUnavailable(method) => h
            .store
            .fail_next(method, StoreError::Unavailable("throttled".into())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any interleaving of two deliveries of the same message polls a statement once per step
    /// and posts nothing twice.
    #[test]
    fn two_deliveries_at_once_poll_once_and_post_once(
        doubled in prop::collection::vec(any::<bool>(), 64),
        polls in 1u32..4,
    ) {
        rt().block_on(async {
            let mut h = Harness::new(polls).with_backlog(1_200);
            h.kick();
            h.run_with(|n| doubled[n % doubled.len()]).await;
            h.assert_all_delivered(1_200);
            let statements = h.service.statements();
            prop_assert_eq!(statements.len(), 2);
            prop_assert!(statements.iter().all(|s| s.gets == polls), "{:?}", statements);
            Ok::<(), TestCaseError>(())
        })?;
    }

    /// Whatever fails, and whichever messages come twice, every transaction is delivered once,
    /// in order, and the account ends idle.
    #[test]
    fn faults_and_duplicates_lose_nothing_and_send_nothing_twice(
        faults in prop::collection::vec(fault(), 0..12),
        doubled in prop::collection::vec(any::<bool>(), 32),
    ) {
        rt().block_on(async {
            let mut h = Harness::new(2).with_backlog(1_100);
            for f in &faults {
                inject(&h, f);
            }
            h.kick();
            h.run_with(|n| doubled[n % doubled.len()]).await;
            // What the faults left behind (a wake-up lost after every in-place retry) the
            // reconciler picks up on its schedule, as on AWS.
            h.settle_with_reconciler(|n| doubled[n % doubled.len()]).await;
            h.assert_all_delivered(1_100);
            Ok::<(), TestCaseError>(())
        })?;
    }
}

#[tokio::test]
async fn the_reconciler_wakes_an_account_whose_wake_up_was_lost() {
    // Transactions stored, and the kick that should have followed them lost.
    let mut h = Harness::new(1).with_backlog(5);
    let report = h.reconciler.run().await.unwrap();
    assert_eq!(report.kicked, 1);
    assert_eq!(report.pending_total, 5);
    h.run().await;
    h.assert_all_delivered(5);
    let report = h.reconciler.run().await.unwrap();
    assert_eq!((report.kicked, report.pending_total), (0, 0));
}

#[tokio::test]
async fn a_quiet_statement_gets_its_poll_resent_by_the_reconciler() {
    let mut h = Harness::new(1).with_backlog(3);
    h.kick();
    h.step_until_posted().await;
    // The poll chain and the watchdog are lost with their queue messages.
    h.queues.lose_all();
    h.clock.set(start() + TimeDelta::minutes(20));
    let report = h.reconciler.run().await.unwrap();
    assert_eq!(report.polls_resent, 1);
    h.run().await;
    h.assert_all_delivered(3);
}

#[tokio::test]
async fn one_account_failing_does_not_stop_the_reconciler() {
    let h = Harness::new(1).with_backlog(2);
    h.add_account(Uuid::from_u128(0xacc2), 2);
    h.store
        .fail_next("count_pending", StoreError::Unavailable("throttled".into()));
    let report = h.reconciler.run().await.unwrap();
    assert_eq!(report.accounts, 2);
    assert_eq!(report.failed, 1, "{report:?}");
    assert_eq!(
        report.kicked, 1,
        "the other account was still woken: {report:?}"
    );
}
