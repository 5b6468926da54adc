//! The table's adapter on DynamoDB Local, without the rest of the stack. What the reconciler
//! reads on every run, read without scanning the table (which holds every transaction for 400
//! days): accounts from their registry, recent grants from their day. Listings longer than one
//! page, read through the SDK's paginators. Parking and delivery, whose two writes leave no
//! parked record for a delivered transaction whatever step a crash interrupts.

use aws_sdk_dynamodb::Client;
use chrono::{DateTime, TimeZone, Utc};
use connector_aws::Table;
use connector_aws::consents::GrantedAccount;
use connector_domain::account::{Account, CreateOutcome};
use connector_domain::stored::TransactionState;
use connector_domain::transaction::Transaction;
use local_stack::dynamodb_local;
use local_stack::stack::{TABLE_NAME, create_table, sdk_config};
use local_stack::template::Template;
use serde_json::json;
use uuid::Uuid;

fn account(id: Uuid, external_id: &str) -> Account {
    serde_json::from_value(json!({
        "bankAccountId": id,
        "externalId": external_id,
        "status": "active",
        "backfill": "done",
        "createdAt": "2026-11-24T00:00:00Z",
    }))
    .expect("account")
}

/// A table of its own on this test binary's DynamoDB Local.
async fn table() -> ((), Client, Table) {
    let template = Template::load().expect("template");
    let endpoint = dynamodb_local::shared_endpoint()
        .await
        .expect("DynamoDB Local");
    let key = dynamodb_local::stack_access_key();
    let client = Client::new(&sdk_config(&endpoint, &key).await);
    create_table(&client, &template).await.expect("table");
    let table = Table::new(client.clone(), TABLE_NAME.to_string());
    ((), client, table)
}

fn ids(accounts: &[Account]) -> Vec<Uuid> {
    let mut v: Vec<Uuid> = accounts.iter().map(|a| a.bank_account_id).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_local_unpacks_its_library_into_a_directory_of_ours_not_the_shared_tmp() {
    let ((), _client, _table) = table().await;
    if std::env::var(dynamodb_local::ENDPOINT_VARIABLE).is_ok_and(|e| !e.is_empty()) {
        return; // Another process started it.
    }
    // A table exists, so its store (and the SQLite library it unpacks) does too.
    let unpacked: Vec<String> = dynamodb_local::own_temp_dirs()
        .iter()
        .flat_map(|d| std::fs::read_dir(d).expect("the JVM's temporary directory"))
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("sqlite-"))
        .collect();
    assert!(
        !unpacked.is_empty(),
        "nothing unpacked where the JVM was told to"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_are_listed_from_their_registry_and_a_half_made_one_is_completed() {
    let ((), client, table) = table().await;
    // More than one batch of 100.
    let mut made: Vec<Uuid> = Vec::new();
    for i in 0..230 {
        let id = Uuid::new_v4();
        let outcome = table
            .create_account(&account(id, &format!("ext-{i}")))
            .await
            .unwrap();
        assert_eq!(outcome, CreateOutcome::Created);
        made.push(id);
    }
    made.sort();
    assert_eq!(ids(&table.accounts().await.unwrap()), made);

    // A creation that died after writing the account item, before the rest: not listed (so the
    // list comes from the registry, not from a scan) until the redelivered creation completes it.
    let half = Uuid::new_v4();
    let sv = |v: String| aws_sdk_dynamodb::types::AttributeValue::S(v);
    let item = std::collections::HashMap::from([
        ("pk".to_string(), sv(format!("ACCT#{half}"))),
        ("sk".to_string(), sv("ACCOUNT".into())),
        ("bankAccountId".to_string(), sv(half.to_string())),
        ("externalId".to_string(), sv("ext-half".into())),
        ("status".to_string(), sv("active".into())),
        ("backfill".to_string(), sv("done".into())),
        ("createdAt".to_string(), sv("2026-11-24T00:00:00Z".into())),
    ]);
    client
        .put_item()
        .table_name(TABLE_NAME)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    assert!(table.get_account(half).await.unwrap().is_some());
    assert_eq!(ids(&table.accounts().await.unwrap()), made);
    assert!(
        table
            .accounts_for_external_id("ext-half")
            .await
            .unwrap()
            .is_empty()
    );

    let again = table
        .create_account(&account(half, "ext-half"))
        .await
        .unwrap();
    assert_eq!(again, CreateOutcome::AlreadyExists);
    made.push(half);
    made.sort();
    assert_eq!(ids(&table.accounts().await.unwrap()), made);
    let links = table.accounts_for_external_id("ext-half").await.unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].bank_account_id, half);
}

fn grant(external_id: &str, at: DateTime<Utc>) -> GrantedAccount {
    GrantedAccount {
        external_id: external_id.into(),
        consent_id: "consent-1".into(),
        customer_id: "customer-1".into(),
        name: "Current account".into(),
        kind: "checking".into(),
        identifier: "12345678".into(),
        branch: None,
        bank_code: None,
        bank_id: Some(Uuid::nil()),
        granted_at: Some(at),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_grants_are_read_by_day_across_midnight() {
    let ((), _client, table) = table().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 1, 0, 0).unwrap();
    let since = now - chrono::TimeDelta::hours(24);
    let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
    for g in [
        grant("ext-late-yesterday", at(23, 23, 0)),
        grant("ext-too-old", at(23, 0, 30)),
        grant("ext-today", at(24, 0, 10)),
        // Granted twice in the window: the newest grant counts.
        grant("ext-twice", at(23, 9, 0)),
        grant("ext-twice", at(24, 0, 40)),
        // Without a time it was never a recent grant.
        GrantedAccount {
            granted_at: None,
            ..grant("ext-undated", at(24, 0, 0))
        },
    ] {
        table.put_granted_account(&g).await.unwrap();
    }
    let mut found: Vec<(String, DateTime<Utc>)> = table
        .granted_since(since, now)
        .await
        .unwrap()
        .into_iter()
        .map(|g| (g.external_id, g.granted_at.unwrap()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("ext-late-yesterday".to_string(), at(23, 23, 0)),
            ("ext-today".to_string(), at(24, 0, 10)),
            ("ext-twice".to_string(), at(24, 0, 40)),
        ]
    );
    // The per-account record is still there for the consent checks.
    assert!(
        table
            .granted_account("ext-undated")
            .await
            .unwrap()
            .is_some()
    );
}

/// `n` transactions a second apart, each with a long description so that the listings need
/// more than one page of DynamoDB's 1 MB.
fn transactions(n: usize) -> Vec<Transaction> {
    let start = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    (0..n)
        .map(|i| {
            serde_json::from_value(json!({
                "uniqueId": format!("uid-{i:05}"),
                "transactionAmount": "-1.00",
                "transactionType": "DEBIT",
                "datePosted": start + chrono::TimeDelta::seconds(i as i64),
                "description": "x".repeat(1000),
            }))
            .expect("transaction")
        })
        .collect()
}

fn unique_ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("uid-{i:05}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_longer_than_a_page_are_read_whole_and_stop_at_their_limit() {
    let ((), _client, table) = table().await;
    let id = Uuid::new_v4();
    table
        .create_account(&account(id, "ext-pages"))
        .await
        .unwrap();
    let now = Utc::now();
    // About 1.3 KB each: 1,200 of them are more than one page for every listing below.
    let n = 1200;
    table
        .put_transactions(id, &transactions(n), 1, None, now)
        .await
        .unwrap();

    let pending = |after: Option<String>, limit| {
        let table = table.clone();
        async move {
            let got = table
                .pending_transactions(id, after.as_deref(), limit)
                .await
                .unwrap();
            got.into_iter()
                .map(|t| t.transaction.unique_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(pending(None, 1100).await, unique_ids(0..1100));
    assert_eq!(pending(None, 7).await, unique_ids(0..7));
    assert_eq!(pending(None, 0).await, Vec::<String>::new());
    assert_eq!(pending(None, 5000).await, unique_ids(0..n));
    assert_eq!(table.count_pending(id, None).await.unwrap(), n as u64);
    let all = table.all_transactions(id).await.unwrap();
    assert_eq!(all.len(), n);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));

    // Offboarding parks all of it, a page of pending transactions at a time.
    let watermark = table.pending_transactions(id, None, 200).await.unwrap()[199]
        .position
        .clone();
    let parked = table
        .park_all_pending(id, watermark.as_deref(), "AccountCancelled", now)
        .await
        .unwrap();
    assert_eq!(parked, n - 200);
    assert_eq!(
        table.count_pending(id, watermark.as_deref()).await.unwrap(),
        0
    );
    assert_eq!(table.parked_records(Some(id), 10).await.unwrap().len(), 10);
    let records = table.parked_records(Some(id), 5000).await.unwrap();
    let mut listed: Vec<String> = records.into_iter().map(|r| r.unique_id).collect();
    listed.sort();
    assert_eq!(listed, unique_ids(200..n));
    assert!(table.parked_records(Some(id), 0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_record_never_outlives_a_delivered_transaction() {
    let ((), client, table) = table().await;
    let id = Uuid::new_v4();
    table
        .create_account(&account(id, "ext-park"))
        .await
        .unwrap();
    let now = Utc::now();
    table
        .put_transactions(id, &transactions(4), 1, None, now)
        .await
        .unwrap();
    let records = || async {
        let mut v: Vec<String> = table
            .parked_records(Some(id), 100)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.unique_id)
            .collect();
        v.sort();
        v
    };
    let state = |u: &'static str| {
        let table = table.clone();
        async move {
            table
                .transactions_by_ids(id, &[u.to_string()])
                .await
                .unwrap()
                .remove(0)
                .state
        }
    };

    table
        .park_transactions(id, &unique_ids(0..2), "Rejected: x", now)
        .await
        .unwrap();
    assert_eq!(records().await, unique_ids(0..2));
    assert_eq!(state("uid-00000").await, TransactionState::Parked);

    // Found delivered after all: its record goes with it.
    table
        .mark_held(id, &unique_ids(0..1), "statement-1")
        .await
        .unwrap();
    assert_eq!(state("uid-00000").await, TransactionState::Delivered);
    assert_eq!(records().await, unique_ids(1..2));

    // Parking a delivered transaction writes no record, and drops one left behind (here by
    // hand, as the earlier write order left it when it crashed after the record).
    // A parked record written by hand, as a crash or a race could leave it.
    let put_record = |u: &'static str| {
        let sv = |v: String| aws_sdk_dynamodb::types::AttributeValue::S(v);
        let item = std::collections::HashMap::from([
            ("pk".to_string(), sv("PARKED".into())),
            ("sk".to_string(), sv(format!("{id}#{u}"))),
            ("bankAccountId".to_string(), sv(id.to_string())),
            ("uniqueId".to_string(), sv(u.into())),
            ("reason".to_string(), sv("AccountCancelled".into())),
            ("parkedAt".to_string(), sv(now.to_rfc3339())),
            (
                "expiresAt".to_string(),
                aws_sdk_dynamodb::types::AttributeValue::N("4102444800".into()),
            ),
        ]);
        let put = client
            .put_item()
            .table_name(TABLE_NAME)
            .set_item(Some(item));
        async move { put.send().await.unwrap() }
    };
    put_record("uid-00000").await;
    assert_eq!(records().await, unique_ids(0..2));
    table
        .park_transactions(id, &unique_ids(0..1), "AccountCancelled", now)
        .await
        .unwrap();
    assert_eq!(state("uid-00000").await, TransactionState::Delivered);
    assert_eq!(records().await, unique_ids(1..2));

    // A record a concurrent park wrote for a transaction being marked delivered (the old order,
    // or a park racing the poller): marking it delivered again removes it.
    put_record("uid-00003").await;
    table
        .mark_held(id, &unique_ids(3..4), "statement-2")
        .await
        .unwrap();
    assert_eq!(state("uid-00003").await, TransactionState::Delivered);
    assert_eq!(records().await, unique_ids(1..2));

    // A park that died between its two writes (the transaction parked, no record yet): the
    // transaction is out of the pending order and listed by nobody until the retried step
    // writes the record.
    client
        .update_item()
        .table_name(TABLE_NAME)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("ACCT#{id}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("U#uid-00002".into()),
        )
        .update_expression("SET #state = :parked REMOVE pendingKey")
        .expression_attribute_names("#state", "state")
        .expression_attribute_values(
            ":parked",
            aws_sdk_dynamodb::types::AttributeValue::S("parked".into()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(records().await, unique_ids(1..2));
    table
        .park_transactions(id, &unique_ids(2..3), "Rejected: x", now)
        .await
        .unwrap();
    assert_eq!(records().await, unique_ids(1..3));
    assert_eq!(table.count_pending(id, None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_refused_before_it_was_stored_is_kept_parked_and_stays_a_duplicate() {
    let ((), _client, table) = table().await;
    let id = Uuid::new_v4();
    table
        .create_account(&account(id, "ext-future"))
        .await
        .unwrap();
    let now = Utc::now();
    let all = transactions(3);
    // uid-00000 was stored before (by an ingest); uid-00001 and uid-00002 come refused.
    table
        .put_transactions(id, &all[..1], 1, None, now)
        .await
        .unwrap();
    table
        .park_new(id, &all, "DatePostedInFuture", now)
        .await
        .unwrap();
    let mut parked: Vec<(String, String)> = table
        .parked_records(Some(id), 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.unique_id, r.reason))
        .collect();
    parked.sort();
    assert_eq!(
        parked,
        unique_ids(1..3)
            .into_iter()
            .map(|u| (u, "DatePostedInFuture".to_string()))
            .collect::<Vec<_>>()
    );
    let states: Vec<TransactionState> = table
        .transactions_by_ids(id, &unique_ids(0..3))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(
        states,
        vec![
            TransactionState::Pending,
            TransactionState::Parked,
            TransactionState::Parked
        ],
        "the stored one is left as it was"
    );
    // The bank sends one of them again later: a duplicate, as a stored record would be.
    let again = table
        .put_transactions(id, &all[1..2], 10, None, now)
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![connector_aws::transactions::PutOutcome::Duplicate]
    );
    assert!(
        table
            .pending_transactions(id, None, 10)
            .await
            .unwrap()
            .iter()
            .all(|t| t.transaction.unique_id == "uid-00000")
    );
}

/// How far the Payments Out reconciler has read the bank's change feed: 0 before the first read,
/// then what was written last; kept apart from the open work, whose partition is read whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_feed_mark_starts_at_zero_and_lives_apart_from_the_open_work() {
    use connector_domain::ports::{OpenItem, OpenKind};
    let (_, _, table) = table().await;
    assert_eq!(table.feed_read_to().await.unwrap(), 0);
    let now = Utc::now();
    let item = OpenItem {
        kind: OpenKind::Link,
        id: "lnk-1".into(),
        due_at: now,
    };
    table.open_work(&item).await.unwrap();
    table.set_feed_read_to(41).await.unwrap();
    table.set_feed_read_to(42).await.unwrap();
    assert_eq!(table.feed_read_to().await.unwrap(), 42);
    assert_eq!(table.due_work(now).await.unwrap(), vec![item]);
}
