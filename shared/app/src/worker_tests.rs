//! The notification worker through its ports, against the in-memory fakes: notifications acted
//! on once whatever is redelivered, backfills pulled page by page and resumed after a failure.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use connector_domain::account::{Account, AccountStatus, BackfillState, GrantedAccount};
use connector_domain::messages::{KickReason, WorkMessage};
use connector_domain::notification::NotificationAction;
use connector_domain::ports::{BankBalances, HistoryError, HistoryPage, StoreError};
use connector_domain::stored::{StoredTransaction, TransactionState, pending_key};
use connector_domain::transaction::Transaction;
use uuid::Uuid;

use super::{NotificationWorker, WorkerSettings};
use crate::batch::MessageError;
use crate::fakes::{
    FakeBankingService, FakeHistory, ManualClock, MemoryQueues, MemoryStore, OneService, Sent,
};

const BANK: Uuid = Uuid::from_u128(0xb4c);
const ACCOUNT: Uuid = Uuid::from_u128(0xacc);
const EXTERNAL: &str = "ext-1";

fn now() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

struct World {
    store: Arc<MemoryStore>,
    queues: Arc<MemoryQueues>,
    bank: Arc<FakeHistory>,
    worker: NotificationWorker,
}

fn world() -> World {
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(MemoryStore::default());
    let queues = Arc::new(MemoryQueues::new(clock.clone()));
    let bank = Arc::new(FakeHistory::default());
    let service = Arc::new(FakeBankingService::new(clock.clone(), 1));
    let worker = NotificationWorker {
        store: store.clone(),
        queues: queues.clone(),
        bank: bank.clone(),
        providers: Arc::new(OneService(service)),
        clock,
        settings: WorkerSettings {
            default_window: Duration::from_secs(90 * 24 * 3600),
            single_bank: None,
            handshake_ttl: Duration::from_secs(20 * 60),
        },
    };
    store.put_grant(grant());
    World {
        store,
        queues,
        bank,
        worker,
    }
}

fn grant() -> GrantedAccount {
    serde_json::from_value(serde_json::json!({
        "externalId": EXTERNAL, "consentId": "consent-1", "customerId": "c", "name": "n",
        "kind": "checking", "identifier": "1234", "bankId": BANK,
    }))
    .unwrap()
}

fn transaction(id: &str, date: &str) -> Transaction {
    Transaction {
        unique_id: id.into(),
        transaction_amount: "10.00".parse().unwrap(),
        transaction_type: "DEBIT".into(),
        date_posted: at(date),
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
        running_balance: None,
    }
}

fn page(transactions: Vec<Transaction>, next: Option<&str>) -> Result<HistoryPage, HistoryError> {
    Ok(HistoryPage {
        transactions,
        balances: Some(BankBalances {
            ledger: "100.00".parse().unwrap(),
            available: None,
            as_of: at("2026-06-01T11:00:00Z"),
        }),
        next_cursor: next.map(str::to_string),
    })
}

fn created(start: Option<&str>) -> WorkMessage {
    WorkMessage::Notification {
        key: "n-1".into(),
        action: NotificationAction::BankAccountCreated {
            bank_account_id: ACCOUNT,
            external_id: Some(EXTERNAL.into()),
            requested_start_date: start.map(at),
            bank_id: Some(BANK),
        },
        received_at: now(),
        verified_bank_id: None,
    }
}

fn deleted() -> WorkMessage {
    WorkMessage::Notification {
        key: "n-2".into(),
        action: NotificationAction::BankAccountDeleted {
            bank_account_id: ACCOUNT,
            external_id: Some(EXTERNAL.into()),
            bank_id: Some(BANK),
        },
        received_at: now(),
        verified_bank_id: None,
    }
}

fn backfill(cursor: Option<&str>) -> WorkMessage {
    WorkMessage::BackfillPage {
        bank_account_id: ACCOUNT,
        cursor: cursor.map(str::to_string),
    }
}

impl World {
    async fn handle(&self, m: WorkMessage) -> Result<(), MessageError> {
        self.worker.handle(m, None).await
    }

    /// Takes every queued message.
    fn drain(&self) -> Vec<Sent> {
        std::iter::from_fn(|| self.queues.pop().map(|(_, m)| m)).collect()
    }

    fn stored(&self) -> Vec<(String, TransactionState)> {
        let mut v: Vec<_> = self
            .store
            .transactions(ACCOUNT)
            .into_iter()
            .map(|t| (t.transaction.unique_id, t.state))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[tokio::test]
async fn a_created_account_is_recorded_and_its_history_pulled_page_by_page_until_done() {
    let w = world();
    w.bank.page(
        EXTERNAL,
        None,
        page(
            vec![
                transaction("t1", "2026-05-02T00:00:00Z"),
                transaction("t2", "2026-05-03T00:00:00Z"),
            ],
            Some("p2"),
        ),
    );
    w.bank.page(
        EXTERNAL,
        Some("p2"),
        page(vec![transaction("t3", "2026-05-04T00:00:00Z")], None),
    );
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    let a = w.store.account(ACCOUNT);
    assert_eq!(
        (a.bank_id, a.requested_start_date, a.backfill),
        (
            Some(BANK),
            Some(at("2026-05-01T00:00:00Z")),
            BackfillState::Pending
        )
    );
    assert_eq!(w.drain(), vec![Sent::Work(backfill(None))]);

    w.handle(backfill(None)).await.unwrap();
    assert_eq!(
        w.store.account(ACCOUNT).backfill_cursor.as_deref(),
        Some("p2")
    );
    assert_eq!(w.drain(), vec![Sent::Work(backfill(Some("p2")))]);

    w.handle(backfill(Some("p2"))).await.unwrap();
    let a = w.store.account(ACCOUNT);
    assert_eq!(a.backfill, BackfillState::Done);
    assert_eq!(
        a.ledger.map(|l| l.amount.to_string()),
        Some("100.00".into())
    );
    assert!(a.ingesting.is_empty(), "every fence lifted");
    assert_eq!(
        w.stored(),
        ["t1", "t2", "t3"].map(|t| (t.to_string(), TransactionState::Pending))
    );
    match w.drain().as_slice() {
        [Sent::Kick(k)] => assert_eq!(
            (k.bank_account_id, k.reason, k.claim.as_deref()),
            (ACCOUNT, KickReason::Backfill, None)
        ),
        other => panic!("one kick expected, got {other:?}"),
    }
    let asked = w.bank.asked.lock().unwrap().clone();
    assert!(
        asked
            .iter()
            .all(|(_, from, _)| from.to_string() == "2026-05-01"),
        "pulled from the requested start: {asked:?}"
    );
}

#[tokio::test]
async fn without_a_start_date_anywhere_the_history_starts_the_default_window_back() {
    let w = world();
    w.handle(created(None)).await.unwrap();
    let start = w.store.account(ACCOUNT).requested_start_date;
    assert_eq!(start, Some(now() - chrono::TimeDelta::days(90)));
}

#[tokio::test]
async fn a_page_that_failed_midway_is_pulled_again_without_storing_twice() {
    let w = world();
    w.bank.page(
        EXTERNAL,
        None,
        page(vec![transaction("t1", "2026-05-02T00:00:00Z")], Some("p2")),
    );
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    w.drain();
    // The transactions are written, then the cursor's write fails: the message is retried.
    w.store
        .fail_next("set_backfill", StoreError::Unavailable("throttled".into()));
    let first = w.handle(backfill(None)).await;
    assert!(matches!(first, Err(MessageError::Retry(_))), "{first:?}");
    assert!(
        w.drain().is_empty(),
        "no next page asked before the cursor is saved"
    );

    w.handle(backfill(None)).await.unwrap();
    let t = w.store.transactions(ACCOUNT);
    assert_eq!(t.len(), 1);
    assert_eq!(
        t[0].seq, 1,
        "the redelivery's copy was a duplicate, not a second item"
    );
    assert_eq!(w.drain(), vec![Sent::Work(backfill(Some("p2")))]);
}

#[tokio::test]
async fn a_redelivered_creation_resumes_the_backfill_from_its_saved_cursor() {
    let w = world();
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    w.drain();
    w.bank.page(
        EXTERNAL,
        None,
        page(vec![transaction("t1", "2026-05-02T00:00:00Z")], Some("p7")),
    );
    w.handle(backfill(None)).await.unwrap();
    // The page message after it was lost; Banking Service redelivers the notification.
    w.drain();
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    assert_eq!(w.drain(), vec![Sent::Work(backfill(Some("p7")))]);
}

#[tokio::test]
async fn a_deletion_that_overtook_its_creation_leaves_a_tombstone_the_creation_respects() {
    let w = world();
    w.handle(deleted()).await.unwrap();
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    assert_eq!(w.store.account(ACCOUNT).status, AccountStatus::Cancelled);
    assert!(w.drain().is_empty(), "no backfill for a deleted account");
    // A backfill page still queued from before is dropped.
    w.handle(backfill(None)).await.unwrap();
    assert!(w.bank.asked.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_creation_without_its_external_id_is_poison() {
    let w = world();
    let m = WorkMessage::Notification {
        key: "n-3".into(),
        action: NotificationAction::BankAccountCreated {
            bank_account_id: ACCOUNT,
            external_id: None,
            requested_start_date: None,
            bank_id: None,
        },
        received_at: now(),
        verified_bank_id: None,
    };
    assert!(matches!(w.handle(m).await, Err(MessageError::Poison(_))));
    assert!(w.store.find_account(ACCOUNT).is_none());
}

#[tokio::test]
async fn an_expired_consent_pauses_the_backfill_and_owes_an_auth_required_statement() {
    let w = world();
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    w.drain();
    w.bank
        .page(EXTERNAL, None, Err(HistoryError::ConsentExpired));
    w.handle(backfill(None)).await.unwrap();
    let a = w.store.account(ACCOUNT);
    assert_eq!(
        (a.status, a.auth_required_owed, a.backfill),
        (AccountStatus::AuthRequired, true, BackfillState::Pending)
    );
    assert!(matches!(w.drain().as_slice(), [Sent::Kick(k)] if k.reason == KickReason::Backfill));
}

#[tokio::test]
async fn an_account_the_bank_does_not_know_ends_its_backfill_and_an_outage_is_retried() {
    let w = world();
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    w.drain();
    w.bank
        .page(EXTERNAL, None, Err(HistoryError::Unavailable("503".into())));
    assert!(matches!(
        w.handle(backfill(None)).await,
        Err(MessageError::Retry(_))
    ));
    w.bank.page(EXTERNAL, None, Err(HistoryError::NotFound));
    w.handle(backfill(None)).await.unwrap();
    assert_eq!(w.store.account(ACCOUNT).backfill, BackfillState::Done);
}

#[tokio::test]
async fn records_dated_in_the_future_are_parked_and_the_others_stored() {
    let w = world();
    w.handle(created(Some("2026-05-01T00:00:00Z")))
        .await
        .unwrap();
    w.drain();
    w.bank.page(
        EXTERNAL,
        None,
        page(
            vec![
                transaction("past", "2026-05-02T00:00:00Z"),
                transaction("future", "2026-07-01T00:00:00Z"),
            ],
            None,
        ),
    );
    w.handle(backfill(None)).await.unwrap();
    assert_eq!(
        w.stored(),
        vec![
            ("future".to_string(), TransactionState::Parked),
            ("past".to_string(), TransactionState::Pending),
        ],
        "the future-dated one is refused as /ingest refuses it, and kept for an operator"
    );
    let parked = w.store.transactions(ACCOUNT);
    let future = parked.iter().find(|t| t.transaction.unique_id == "future");
    assert_eq!(
        future.and_then(|t| t.reason.as_deref()),
        Some("DatePostedInFuture")
    );
}

#[tokio::test]
async fn an_offboarded_account_parks_what_is_pending_after_its_watermark() {
    let w = world();
    let mut a = Account::new(
        ACCOUNT,
        EXTERNAL.into(),
        Some(BANK),
        Some(at("2026-05-01T00:00:00Z")),
        now(),
    );
    let held = transaction("held", "2026-05-02T00:00:00Z");
    let waiting = transaction("waiting", "2026-05-03T00:00:00Z");
    a.delivered_through = Some(pending_key(&held, 1));
    w.store.put_account(a);
    let stored = |t: &Transaction, seq| StoredTransaction {
        seq,
        state: TransactionState::Pending,
        transaction: t.clone(),
        statement_id: None,
        reason: None,
        received_at: now(),
        position: Some(pending_key(t, seq)),
    };
    w.store
        .put_pending(ACCOUNT, vec![stored(&held, 1), stored(&waiting, 2)]);
    w.handle(deleted()).await.unwrap();
    assert_eq!(w.store.account(ACCOUNT).status, AccountStatus::Cancelled);
    assert_eq!(
        w.stored(),
        vec![
            ("held".to_string(), TransactionState::Pending),
            ("waiting".to_string(), TransactionState::Parked),
        ],
        "only what Banking Service does not hold is parked"
    );
}

#[tokio::test]
async fn an_authorisation_is_announced_once_with_the_verified_bank_when_unnamed() {
    let w = world();
    let id = Uuid::from_u128(0xa17);
    let m = || WorkMessage::Notification {
        key: "n-4".into(),
        action: NotificationAction::AuthorisationCreated {
            authorisation_id: id,
            bank_id: None,
        },
        received_at: now(),
        verified_bank_id: Some(BANK),
    };
    w.handle(m()).await.unwrap();
    w.handle(m()).await.unwrap();
    assert_eq!(w.store.handshake_bank(id), Some(Some(BANK)));
}
