//! `/ingest` through its ports, against the in-memory fakes: each record judged on its own,
//! new transactions stored once for every account linked to the `externalId`, and the pusher
//! kicked only when something new arrived.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use connector_domain::account::{Account, AccountStatus};
use connector_domain::messages::KickReason;
use connector_domain::ports::StoreError;
use connector_domain::stored::TransactionState;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Ingest, IngestError, RecordStatus};
use crate::fakes::{ManualClock, MemoryQueues, MemoryStore, Sent};

const FIRST: Uuid = Uuid::from_u128(0xa1);
const SECOND: Uuid = Uuid::from_u128(0xa2);
const CANCELLED: Uuid = Uuid::from_u128(0xa3);

fn now() -> DateTime<Utc> {
    "2026-06-01T12:00:00Z".parse().unwrap()
}

struct World {
    store: Arc<MemoryStore>,
    queues: Arc<MemoryQueues>,
    ingest: Ingest,
}

/// `acc-1` is linked by two companies (and was by a third, since offboarded).
fn world() -> World {
    let clock = Arc::new(ManualClock::new(now()));
    let store = Arc::new(MemoryStore::default());
    let queues = Arc::new(MemoryQueues::new(clock.clone()));
    for id in [FIRST, SECOND, CANCELLED] {
        let mut a = Account::new(id, "acc-1".into(), None, None, now());
        if id == CANCELLED {
            a.status = AccountStatus::Cancelled;
        }
        store.put_account(a);
    }
    let ingest = Ingest {
        store: store.clone(),
        queues: queues.clone(),
        clock,
        api_key: None,
    };
    World {
        store,
        queues,
        ingest,
    }
}

fn record(id: &str, date: &str) -> Value {
    json!({"uniqueId": id, "transactionAmount": "5.00", "transactionType": "CREDIT",
           "datePosted": date})
}

fn body(records: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"externalId": "acc-1", "transactions": records})).unwrap()
}

impl World {
    fn kicked(&self) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = std::iter::from_fn(|| self.queues.pop())
            .map(|(_, m)| match m {
                Sent::Kick(k) if k.reason == KickReason::Ingest => k.bank_account_id,
                other => panic!("only ingest kicks expected, got {other:?}"),
            })
            .collect();
        v.sort();
        v
    }

    fn pending(&self, id: Uuid) -> usize {
        self.store
            .transactions(id)
            .iter()
            .filter(|t| t.state == TransactionState::Pending)
            .count()
    }
}

#[tokio::test]
async fn new_records_reach_every_linked_account_once_and_each_is_kicked() {
    let w = world();
    let records = vec![
        record("t1", "2026-05-30T10:00:00.000Z"),
        record("t2", "2026-05-31T10:00:00.000Z"),
    ];
    let report = w.ingest.handle(&body(records.clone()), None).await.unwrap();
    assert_eq!((report.accepted, report.duplicates), (2, 0));
    assert_eq!(
        [FIRST, SECOND, CANCELLED].map(|a| w.pending(a)),
        [2, 2, 0],
        "the offboarded link gets nothing"
    );
    assert_eq!(w.kicked(), vec![FIRST, SECOND]);
    for a in [FIRST, SECOND] {
        assert!(w.store.account(a).ingesting.is_empty(), "fence lifted");
    }

    // The bank sends the same request again (its answer was lost): nothing new, nobody kicked.
    let again = w.ingest.handle(&body(records), None).await.unwrap();
    assert_eq!((again.accepted, again.duplicates), (0, 2));
    assert!(
        again
            .results
            .iter()
            .all(|r| r.status == RecordStatus::Duplicate)
    );
    assert_eq!([FIRST, SECOND].map(|a| w.pending(a)), [2, 2]);
    assert!(w.kicked().is_empty());
}

#[tokio::test]
async fn a_bad_record_is_rejected_with_its_problems_and_the_good_ones_beside_it_stored() {
    let w = world();
    let report = w
        .ingest
        .handle(
            &body(vec![
                record("good", "2026-05-30T10:00:00.000Z"),
                json!({"uniqueId": "no-amount", "transactionType": "CREDIT",
                       "datePosted": "2026-05-30T10:00:00.000Z"}),
                record("future", "2026-07-01T10:00:00.000Z"),
            ]),
            None,
        )
        .await
        .unwrap();
    assert_eq!((report.accepted, report.rejected), (1, 2));
    let rejected: Vec<(Option<&str>, bool)> = report
        .results
        .iter()
        .filter(|r| r.status == RecordStatus::Rejected)
        .map(|r| (r.unique_id.as_deref(), !r.problems.is_empty()))
        .collect();
    assert_eq!(
        rejected,
        vec![(Some("no-amount"), true), (Some("future"), true)]
    );
    assert_eq!(w.pending(FIRST), 1);
}

#[tokio::test]
async fn an_external_id_with_no_live_account_is_refused_and_nothing_is_stored() {
    let w = world();
    let body = serde_json::to_vec(&json!({"externalId": "acc-unknown", "transactions": [
        record("t1", "2026-05-30T10:00:00.000Z")]}))
    .unwrap();
    assert!(matches!(
        w.ingest.handle(&body, None).await,
        Err(IngestError::UnknownAccount)
    ));
    assert!(w.kicked().is_empty());
}

#[tokio::test]
async fn a_balance_alone_is_recorded_and_kicks_the_accounts() {
    let w = world();
    let body = serde_json::to_vec(&json!({"externalId": "acc-1", "transactions": [],
        "balance": {"ledger": "42.00", "asOf": "2026-06-01T11:00:00Z"}}))
    .unwrap();
    w.ingest.handle(&body, None).await.unwrap();
    assert_eq!(
        w.store.account(FIRST).ledger.map(|l| l.amount.to_string()),
        Some("42.00".into())
    );
    assert_eq!(w.kicked(), vec![FIRST, SECOND]);
}

#[tokio::test]
async fn a_store_outage_midway_answers_unavailable_and_lifts_the_fence_for_the_retry() {
    let w = world();
    w.store.fail_next(
        "put_transactions",
        StoreError::Unavailable("throttled".into()),
    );
    let records = vec![record("t1", "2026-05-30T10:00:00.000Z")];
    assert!(matches!(
        w.ingest.handle(&body(records.clone()), None).await,
        Err(IngestError::Unavailable(_))
    ));
    assert!(
        w.store.account(FIRST).ingesting.is_empty(),
        "a failed write leaves no fence to hold the pusher off"
    );
    let report = w.ingest.handle(&body(records), None).await.unwrap();
    assert_eq!(report.accepted, 1);
    assert_eq!([FIRST, SECOND].map(|a| w.pending(a)), [1, 1]);
}
