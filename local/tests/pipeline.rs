//! The statement pipeline end to end (spec §7, §8.4; design invariants 1–5) against the local
//! stack: ordered delivery in statements of at most 1,000, one in flight per account, nothing
//! lost and nothing duplicated — also under faults.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{TimeDelta, TimeZone, Utc};
use local_stack::fauxqs::SqsEmulator;
use rust_decimal::Decimal;
use sandbox::SandboxConfig;
use sandbox::driver::{AccountPick, OnboardOptions};
use sandbox::model::{
    AccountStatus, CreateAccountRequest, FaultSet, Force429, RevokeRequest, RouteFault,
    StatementHold, StatementStatus,
};
use serde_json::{Value, json};
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(240);

fn account_request(bank_id: Uuid, external_id: &str, notify: bool) -> CreateAccountRequest {
    CreateAccountRequest {
        notify: Some(notify),
        ..CreateAccountRequest::new(bank_id, external_id, "2026-01-01T00:00:00.000Z")
    }
}

/// `n` cleared transactions in date order with running balances; deterministic per `tag`.
fn transactions(tag: &str, n: usize) -> Vec<Value> {
    let start = Utc.with_ymd_and_hms(2026, 9, 1, 0, 0, 0).unwrap();
    let mut balance = Decimal::new(100_000, 2);
    (0..n)
        .map(|i| {
            // Cents from a cheap deterministic mix; some debits, some credits.
            let cents = ((i as i64 * 7919 + tag.len() as i64 * 104_729) % 50_000) - 20_000;
            let amount = Decimal::new(if cents == 0 { 1 } else { cents }, 2);
            balance += amount;
            let posted = start + TimeDelta::minutes(17 * i as i64);
            json!({
                "uniqueId": format!("{tag}-{i:05}"),
                "transactionAmount": amount.to_string(),
                "transactionType": if amount.is_sign_negative() { "DEBIT" } else { "CREDIT" },
                "datePosted": posted.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "description": format!("Transaction {i} of {tag}"),
                "runningBalance": balance.to_string(),
            })
        })
        .collect()
}

async fn create_accounts(stack: &local_stack::LocalStack, tags: &[&str]) -> Vec<Uuid> {
    let client = stack.sandbox.client();
    let table = common::table(stack);
    let mut ids = Vec::new();
    for tag in tags {
        let created = client
            .create_account(&account_request(stack.bank_id, tag, true))
            .await
            .expect("account");
        ids.push(created.account.bank_account_id);
    }
    for id in &ids {
        common::eventually("the connector knows the account", LONG, || async {
            let a = table.get_account(*id).await.ok()??;
            (a.backfill == connector_domain::account::BackfillState::Done).then_some(())
        })
        .await;
    }
    ids
}

/// Checks what a Sage product would see: every transaction once, in order.
async fn assert_delivered_exactly(stack: &local_stack::LocalStack, id: Uuid, sent: &[Value]) {
    let stored = stack
        .sandbox
        .client()
        .stored_transactions(id)
        .await
        .unwrap();
    let ids: Vec<&str> = stored.iter().map(|t| t.unique_id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicates at Banking Service");
    let expected: HashSet<&str> = sent
        .iter()
        .map(|t| t["uniqueId"].as_str().unwrap())
        .collect();
    assert_eq!(unique, expected, "lost or foreign transactions");
    let mut sorted = stored.clone();
    sorted.sort_by_key(|t| t.transaction_id);
    assert!(
        sorted
            .windows(2)
            .all(|w| w[0].date_posted <= w[1].date_posted),
        "out of order at Banking Service"
    );
    // The connector commits each outcome shortly after Banking Service stored it, and counts
    // it when it releases the account: wait for both.
    let table = common::table(stack);
    let started = std::time::Instant::now();
    while !stack.account_settled(id).await.unwrap_or(false) {
        if started.elapsed() > Duration::from_secs(60) {
            common::diagnose(stack).await;
            panic!("transactions still pending at the connector for {id}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(table.parked_records(Some(id), 10).await.unwrap().is_empty());
    // The operator's count agrees, duplicates after a lost answer included.
    let account = table.get_account(id).await.unwrap().unwrap();
    assert_eq!(
        account.delivered_count as usize,
        sent.len(),
        "delivered count"
    );
}

async fn ingest_all(stack: &local_stack::LocalStack, external_id: &str, records: &[Value]) {
    for chunk in records.chunks(250) {
        let (status, body, _) = common::ingest_retrying(
            stack,
            &json!({"externalId": external_id, "transactions": chunk}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["rejected"], 0, "{body}");
    }
}

/// The Provider API route a poll calls, as the sandbox logs and faults it.
const STATEMENT_GET: &str = "GET /v1/statements/{statementId}";

/// How many times Banking Service was asked for this statement (its polls), from its request log.
async fn polls_of(client: &sandbox::client::SandboxClient, statement_id: &str) -> usize {
    let log = client.requests().await.expect("requests");
    log.iter()
        .filter(|r| r.route == STATEMENT_GET && r.path.contains(statement_id))
        .count()
}

/// Banking Service keeps every statement `processing` until the faults are cleared.
async fn hold_statements_processing(client: &sandbox::client::SandboxClient) {
    client
        .set_faults(&FaultSet {
            statement_hold: Some(StatementHold {
                stage: StatementStatus::Processing,
                principal_id: None,
            }),
            ..FaultSet::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_accounts_of_2500_arrive_in_order_once_under_faults() {
    in_order_once_under_faults(common::options(SandboxConfig::fast())).await;
}

/// The fleet benchmark's SQS emulator keeps what the pipeline relies on (FIFO groups, delays,
/// visibility, redelivery after a killed consumer): the same run on fauxqs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_holds_on_the_benchmarks_sqs_emulator() {
    let mut options = common::options(SandboxConfig::fast());
    options.sqs = SqsEmulator::Fauxqs;
    in_order_once_under_faults(options).await;
}

async fn in_order_once_under_faults(mut options: local_stack::Options) {
    // Failed messages come back quickly, so that a killed consumer's batch is retried soon.
    options.retry_visibility = Some(Duration::from_secs(3));
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();
    let tags = ["acc_FAULT1", "acc_FAULT2", "acc_FAULT3"];
    let ids = create_accounts(&stack, &tags).await;

    client
        .set_faults(&FaultSet {
            routes: vec![
                RouteFault {
                    route: "POST /v1/statements".into(),
                    error_rate: 0.1,
                    error_status: 503,
                    drop_after_commit_rate: 0.1,
                    ..RouteFault::default()
                },
                RouteFault {
                    route: STATEMENT_GET.into(),
                    error_rate: 0.05,
                    error_status: 500,
                    ..RouteFault::default()
                },
            ],
            force_429: Some(Force429 {
                retry_after_s: 1,
                remaining: Some(5),
            }),
            token_expires_in_s: Some(20),
            ..FaultSet::default()
        })
        .await
        .expect("faults");

    let records: Vec<Vec<Value>> = tags.iter().map(|t| transactions(t, 2500)).collect();
    for (tag, r) in tags.iter().zip(&records) {
        ingest_all(&stack, tag, &r[..1250]).await;
    }
    // Mid-run: a pusher and a poller die with their batches, and every token is revoked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.function("statement-pusher").unwrap().kill_instance(0);
    stack.function("statement-poller").unwrap().kill_instance(0);
    client
        .revoke_tokens(&RevokeRequest {
            all: true,
            ..Default::default()
        })
        .await
        .expect("revoke");
    for (tag, r) in tags.iter().zip(&records) {
        ingest_all(&stack, tag, &r[1250..]).await;
    }

    for id in &ids {
        common::wait_held(&stack, *id, 2500, LONG).await;
    }
    for (id, r) in ids.iter().zip(&records) {
        assert_delivered_exactly(&stack, *id, r).await;
        for s in client.statements(Some(*id)).await.unwrap() {
            assert!(s.actual.transaction_details_count <= 1000);
        }
    }
    let metrics = client.metrics().await.unwrap();
    assert!(metrics.max_in_flight <= 1);
    let violations = client.violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    stack.finish().await;
}

/// A poller that records a statement's duplicates and deletes it, then dies before it releases
/// the account: the retried poll finds the statement deleted and must still count the
/// duplicates as delivered (CI once saw 2,250 counted of 2,500 held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_still_count_when_the_poller_dies_after_deleting_their_statement() {
    let mut options = common::options(SandboxConfig::fast());
    options.retry_visibility = Some(Duration::from_secs(2));
    // One poller instance, so that the one killed is the one deleting.
    options.max_consumer_concurrency = 1;
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();
    let tag = "acc_GONE1";
    let id = create_accounts(&stack, &[tag]).await[0];
    // The first statement's answer is lost, so the connector posts the same transactions
    // again and Banking Service fails that second statement as duplicates. Its deletion
    // answers 8 s after it is done: the window in which the poller dies.
    client
        .set_faults(&FaultSet {
            routes: vec![
                RouteFault {
                    route: "POST /v1/statements".into(),
                    drop_after_commit_rate: 1.0,
                    remaining: Some(1),
                    ..RouteFault::default()
                },
                RouteFault {
                    route: "DELETE /v1/statements/{statementId}".into(),
                    latency_ms: 8_000,
                    latency_after: true,
                    remaining: Some(1),
                    ..RouteFault::default()
                },
            ],
            ..FaultSet::default()
        })
        .await
        .expect("faults");
    let records = transactions(tag, 40);
    ingest_all(&stack, tag, &records).await;
    common::eventually("the duplicate statement is deleted", LONG, || async {
        let all = client.statements(Some(id)).await.ok()?;
        all.iter()
            .any(|s| s.status == StatementStatus::Deleted)
            .then_some(())
    })
    .await;
    stack.function("statement-poller").unwrap().kill_instance(0);
    common::wait_held(&stack, id, 40, LONG).await;
    assert_delivered_exactly(&stack, id, &records).await;
    let statements = client.statements(Some(id)).await.unwrap();
    let status: Vec<StatementStatus> = statements.iter().map(|s| s.status).collect();
    assert_eq!(
        status,
        [StatementStatus::Succeeded, StatementStatus::Deleted],
        "one statement delivered, one duplicate resubmission deleted"
    );
    stack.finish().await;
}

/// A failed poll moves the poll counter on like any other, so that the failed message is stale
/// if it is delivered again (its consumer killed later in the same batch): it polls nothing.
/// Before, both it and the retry it had scheduled polled, and the 100,000-transaction soak once
/// saw one statement polled twice within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_poll_delivered_again_polls_nothing() {
    let mut options = common::options(SandboxConfig::fast());
    // The retry after the failed poll waits at least 10 s: the window for the duplicate.
    options.env.insert("RETRY_BASE_DELAY_S".into(), "20".into());
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();
    let tag = "acc_POLL1";
    let id = create_accounts(&stack, &[tag]).await[0];
    client
        .set_faults(&FaultSet {
            routes: vec![RouteFault {
                route: STATEMENT_GET.into(),
                error_rate: 1.0,
                error_status: 503,
                remaining: Some(1),
                ..RouteFault::default()
            }],
            ..FaultSet::default()
        })
        .await
        .expect("faults");
    let records = transactions(tag, 5);
    ingest_all(&stack, tag, &records).await;
    let table = common::table(&stack);
    let claim = common::eventually("the failed poll moves the counter on", LONG, || async {
        let claim = table.get_account(id).await.ok()??.in_flight?;
        (claim.poll_attempt() >= 1).then_some(claim)
    })
    .await;
    let statement_id = claim.statement_id().expect("posted").to_string();
    // The counter moves before the GET is made: wait for the GET in the sandbox's log.
    common::eventually("the failed poll reaches Banking Service", LONG, || async {
        (polls_of(&client, &statement_id).await >= 1).then_some(())
    })
    .await;
    assert_eq!(
        polls_of(&client, &statement_id).await,
        1,
        "only the failed poll so far"
    );

    // The failed message (attempt 0) as it comes back after its consumer was killed.
    poll_queue(&stack)
        .send_timer(
            &connector_domain::messages::TimerMessage::Poll {
                bank_account_id: id,
                statement_id: statement_id.clone(),
                claim: claim.token.clone(),
                attempt: 0,
                posted_at: claim.posted().expect("posted").posted_at,
                transaction_count: claim.transaction_count(),
            },
            Duration::ZERO,
        )
        .await
        .expect("send");
    common::eventually("the duplicate is consumed", LONG, || async {
        let q = stack
            .sqs
            .get_queue_attributes()
            .queue_url(&stack.queue_urls["PollQueue"])
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .ok()?;
        let attrs = q.attributes?;
        let n = |k: aws_sdk_sqs::types::QueueAttributeName| {
            attrs
                .get(&k)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
        };
        // Left: only the scheduled retry, delayed.
        (n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages) == 0
            && n(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                == 0)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        polls_of(&client, &statement_id).await,
        1,
        "the duplicate polled the statement"
    );

    common::wait_held(&stack, id, 5, LONG).await;
    assert_delivered_exactly(&stack, id, &records).await;
    let violations = client.violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    stack.finish().await;
}

/// Spec §7.1 rule 6: a statement's balance is as of its last transaction. Transactions pushed
/// without running balances, after a balance the bank pushed earlier, must not carry that
/// earlier balance: the connector reads the bank's balance when it builds the statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_carries_the_balance_after_its_last_transaction_read_from_the_bank() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let onboarded = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            bank_id: Some(stack.bank_id),
            create: AccountPick::First,
            ..OnboardOptions::default()
        })
        .await
        .expect("onboarding");
    let id = onboarded.created[0].bank_account_id;
    let ext = onboarded.created[0].external_id.clone();
    // The backfill (from the requested start date) delivered first.
    common::eventually("the backfill is delivered", LONG, || async {
        (stack.account_settled(id).await.ok()? && common::held(&stack, id).await > 0).then_some(())
    })
    .await;
    let history = common::held(&stack, id).await;
    // A balance pushed now-a-year-ago, then new transactions without running balances.
    let (status, body) = common::ingest(
        &stack,
        &json!({"externalId": ext, "transactions": [],
                "balance": {"ledger": "0.01", "asOf": "2025-01-01T00:00:00.000Z"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let fresh: Vec<_> = client
        .generate_transactions(&ext, 4)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.status == "booked")
        .collect();
    assert!(!fresh.is_empty());
    let records: Vec<Value> = fresh
        .iter()
        .map(|t| {
            let mut r = local_stack::demo::ingest_record(t);
            r.as_object_mut().unwrap().remove("runningBalance");
            r
        })
        .collect();
    let (status, body) =
        common::ingest(&stack, &json!({"externalId": ext, "transactions": records})).await;
    assert_eq!(status, 200, "{body}");
    common::wait_held(&stack, id, history + fresh.len(), LONG).await;
    let expected: Decimal = fresh.last().unwrap().balance_after.parse().unwrap();
    let ledger = common::eventually("the balance reaches Banking Service", LONG, || async {
        let held = client.account(id).await.ok()?;
        held.balances.ledger_balance.map(|b| b.0)
    })
    .await;
    assert_eq!(
        ledger, expected,
        "the ledger balance after the last transaction"
    );
    assert!(client.violations().await.unwrap().is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_of_more_than_1000_goes_in_date_order_one_statement_after_another() {
    let mut config = SandboxConfig::fast();
    config.bank_history_days = 700;
    let stack = common::start(config).await;
    let client = stack.sandbox.client();
    let start = (Utc::now() - TimeDelta::days(700))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let onboarded = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            bank_id: Some(stack.bank_id),
            create: AccountPick::First,
            requested_start_date: Some(start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            ..OnboardOptions::default()
        })
        .await
        .expect("onboarding");
    let id = onboarded.created[0].bank_account_id;
    let history: Vec<_> = client
        .bank_transactions(&onboarded.created[0].external_id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.status == "booked")
        .collect();
    assert!(
        history.len() > 1000,
        "only {} in the history",
        history.len()
    );
    common::wait_held(&stack, id, history.len(), LONG).await;
    let mut statements = client.statements(Some(id)).await.unwrap();
    statements.sort_by(|a, b| a.created_date.cmp(&b.created_date));
    assert!(statements.len() >= 2);
    // Each statement was posted after the previous one had succeeded.
    for w in statements.windows(2) {
        assert!(w[0].status_modified_date <= w[1].created_date, "{w:?}");
        assert!(w[0].actual.transaction_details_count <= 1000);
    }
    let stored = client.stored_transactions(id).await.unwrap();
    assert!(
        stored
            .windows(2)
            .all(|w| w[0].date_posted <= w[1].date_posted)
    );
    // Card payments carry the bank's full detail to Banking Service (spec §6.4).
    let card = stored
        .iter()
        .find(|t| t.transaction_type == "POS")
        .expect("a card payment in the history");
    assert!(
        card.coordinates
            .as_ref()
            .is_some_and(|c| c["lat"].is_number()),
        "{card:?}"
    );
    assert_eq!(
        card.category.as_ref().unwrap()["topLevelCategory"],
        "Business expenses"
    );
    assert_eq!(
        card.provider_additional_fields.as_ref().unwrap()[0],
        json!({"name": "channel", "value": "card"})
    );
    // The first poll is timed for the expected processing time: about one poll per statement.
    let polls: u64 = statements.iter().map(|s| s.poll_count).sum();
    assert!(
        polls <= 2 * statements.len() as u64,
        "{polls} polls for {} statements",
        statements.len()
    );
    assert_eq!(
        client.account(id).await.unwrap().status,
        AccountStatus::Active
    );
    assert!(client.violations().await.unwrap().is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_bank_account_notification_is_recovered_through_accountqueries() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let table = common::table(&stack);
    let onboarded = stack
        .sandbox
        .driver()
        .onboard(OnboardOptions {
            bank_id: Some(stack.bank_id),
            create: AccountPick::None,
            ..OnboardOptions::default()
        })
        .await
        .expect("onboarding");
    let ext = onboarded.patched_accounts[0]
        .bank_account_external_id
        .clone();
    // The product creates the account, but the notification never reaches the connector.
    let created = client
        .create_account(&account_request(stack.bank_id, &ext, false))
        .await
        .unwrap();
    let id = created.account.bank_account_id;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(table.get_account(id).await.unwrap().is_none());

    let reconciler = stack.function("reconciler").unwrap();
    reconciler
        .invoke(serde_json::to_vec(&local_stack::events::scheduled_event()).unwrap())
        .await
        .unwrap();
    common::eventually(
        "the account is recovered and its history delivered",
        LONG,
        || async { (client.account(id).await.ok()?.status == AccountStatus::Active).then_some(()) },
    )
    .await;
    assert!(table.get_account(id).await.unwrap().is_some());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balances_token_revocation_and_duplicates() {
    let stack = common::start(SandboxConfig::fast()).await;
    let client = stack.sandbox.client();
    let ids = create_accounts(&stack, &["acc_BAL01"]).await;
    let id = ids[0];
    let records = transactions("acc_BAL01", 30);
    ingest_all(&stack, "acc_BAL01", &records[..20]).await;
    common::wait_held(&stack, id, 20, LONG).await;

    // Token revoked mid-run: one 401, one refresh, the retry succeeds.
    let before = client.metrics().await.unwrap();
    client
        .revoke_tokens(&RevokeRequest {
            all: true,
            ..Default::default()
        })
        .await
        .unwrap();
    ingest_all(&stack, "acc_BAL01", &records[20..]).await;
    common::wait_held(&stack, id, 30, LONG).await;
    let after = client.metrics().await.unwrap();
    let unauthorised = |m: &sandbox::model::MetricsView| {
        m.requests
            .iter()
            .filter(|r| r.status == 401)
            .map(|r| r.count)
            .sum::<u64>()
    };
    assert_eq!(unauthorised(&after) - unauthorised(&before), 1);
    let tokens =
        |m: &sandbox::model::MetricsView| m.token_requests_per_client.values().sum::<u64>();
    assert_eq!(tokens(&after) - tokens(&before), 1);

    // The same transactions again: recognised at ingest, never sent twice.
    let (status, body) = common::ingest(
        &stack,
        &json!({"externalId": "acc_BAL01", "transactions": &records[..10]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["duplicates"], 10, "{body}");

    // A balance change without transactions goes as a 0-transaction statement.
    let statements = client.statements(Some(id)).await.unwrap().len();
    let (status, body) = common::ingest(
        &stack,
        &json!({"externalId": "acc_BAL01", "transactions": [],
                "balance": {"ledger": "4321.09", "available": "4000.00", "asOf": "2026-11-30T00:00:00Z"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let view = common::eventually("balances updated", LONG, || async {
        let a = client.account(id).await.ok()?;
        (serde_json::to_value(&a.balances)
            .ok()?
            .to_string()
            .contains("4321.09"))
        .then_some(a)
    })
    .await;
    assert_eq!(view.status, AccountStatus::Active);
    let all = client.statements(Some(id)).await.unwrap();
    assert_eq!(all.len(), statements + 1);
    assert!(all.iter().any(|s| s.actual.transaction_details_count == 0));
    assert_delivered_exactly(&stack, id, &records).await;
    assert!(client.violations().await.unwrap().is_empty());
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_are_delivered_after_the_watermark_and_too_old_ones_parked() {
    let stack = common::start(SandboxConfig::fast()).await;
    let ids = create_accounts(&stack, &["acc_LATE01"]).await;
    let id = ids[0];
    // 100 transactions, one every 17 minutes from 1 September (to about 2 September).
    let records = transactions("acc_LATE01", 100);
    ingest_all(&stack, "acc_LATE01", &records).await;
    common::wait_held(&stack, id, 100, LONG).await;
    let late = |id: &str, date: &str| {
        json!({"uniqueId": id, "transactionAmount": "1.00", "transactionType": "CREDIT",
               "datePosted": date, "runningBalance": "1.00"})
    };
    // Older than what Banking Service holds, but within 14 days: delivered, not skipped.
    // Older than the 2-week rule: held back and parked with its reason.
    let (status, body) = common::ingest(
        &stack,
        &json!({"externalId": "acc_LATE01", "transactions": [
            late("late-ok", "2026-08-30T12:00:00.000Z"),
            late("late-too-old", "2026-08-01T12:00:00.000Z"),
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    common::wait_held(&stack, id, 101, LONG).await;
    let stored = stack
        .sandbox
        .client()
        .stored_transactions(id)
        .await
        .unwrap();
    assert!(stored.iter().any(|t| t.unique_id == "late-ok"));
    assert!(!stored.iter().any(|t| t.unique_id == "late-too-old"));
    let parked = common::eventually("the too-old one is parked", LONG, || async {
        let p = common::table(&stack)
            .parked_records(Some(id), 10)
            .await
            .ok()?;
        (!p.is_empty()).then_some(p)
    })
    .await;
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].unique_id, "late-too-old");
    assert_eq!(parked[0].reason, "TransactionTooOld");
    common::eventually("the connector commits the straggler", LONG, || async {
        (common::pending_at_connector(&stack, id).await == 0).then_some(())
    })
    .await;
    assert!(
        stack
            .sandbox
            .client()
            .violations()
            .await
            .unwrap()
            .is_empty()
    );
    stack.finish().await;
}

/// `requestedStartDate` bounds every statement, not only the backfill (the start of that UTC day
/// counts as inside), and a record dated ahead of the clock is refused at ingest: sent, it
/// would be a violation at Banking Service and the account's newest date for the 2-week rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_before_the_start_date_are_parked_and_future_ones_refused() {
    let stack = common::start(SandboxConfig::fast()).await;
    // requestedStartDate 2026-01-01.
    let ids = create_accounts(&stack, &["acc_EDGE01"]).await;
    let id = ids[0];
    let record = |id: &str, date: &str| {
        json!({"uniqueId": id, "transactionAmount": "1.00", "transactionType": "CREDIT",
               "datePosted": date, "runningBalance": "1.00"})
    };
    // Full transaction detail (spec §6.4) goes through `/ingest` to Banking Service.
    let detail = json!({
        "coordinates": {"lat": -33.8688, "long": 151.2093},
        "category": {"topLevelCategory": "Travel", "subCategory": "Rail", "categoryId": 7,
                     "standardIndustrialCode": "49100"},
        "providerAdditionalFields": [{"name": "channel", "value": "card"}],
    });
    let detailed = |mut r: Value| {
        r.as_object_mut()
            .unwrap()
            .extend(detail.as_object().unwrap().clone());
        r
    };
    let future =
        (Utc::now() + TimeDelta::days(3650)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let (status, body) = common::ingest(
        &stack,
        &json!({"externalId": "acc_EDGE01", "transactions": [
            record("edge-before", "2025-12-31T23:59:59.999Z"),
            record("edge-first-instant", "2026-01-01T00:00:00.000Z"),
            detailed(record("edge-inside", "2026-03-01T12:00:00.000Z")),
            record("edge-future", &future),
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let results = &body["data"]["results"];
    assert_eq!(results[3]["status"], "rejected", "{body}");
    assert_eq!(
        results[3]["problems"][0]["code"], "DatePostedInFuture",
        "{body}"
    );
    common::wait_held(&stack, id, 2, LONG).await;
    let parked = common::eventually("the early one is parked", LONG, || async {
        let p = common::table(&stack)
            .parked_records(Some(id), 10)
            .await
            .ok()?;
        (!p.is_empty()).then_some(p)
    })
    .await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].unique_id, "edge-before");
    assert_eq!(parked[0].reason, "BeforeRequestedStartDate");
    let stored = stack
        .sandbox
        .client()
        .stored_transactions(id)
        .await
        .unwrap();
    let held: Vec<&str> = stored.iter().map(|t| t.unique_id.as_str()).collect();
    assert_eq!(held, ["edge-first-instant", "edge-inside"]);
    assert_eq!(stored[1].coordinates.as_ref(), Some(&detail["coordinates"]));
    assert_eq!(stored[1].category.as_ref(), Some(&detail["category"]));
    assert_eq!(
        stored[1].provider_additional_fields.as_ref(),
        Some(&detail["providerAdditionalFields"])
    );
    // A later transaction is not held back by anything sent before.
    let (status, body) = common::ingest(
        &stack,
        &json!({"externalId": "acc_EDGE01", "transactions": [
            record("edge-later", "2026-03-02T12:00:00.000Z"),
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    common::wait_held(&stack, id, 3, LONG).await;
    assert!(
        stack
            .sandbox
            .client()
            .violations()
            .await
            .unwrap()
            .is_empty()
    );
    stack.finish().await;
}

/// Whether the functions' logs hold a data point of metric `name` with these dimensions.
fn logged_metric(stack: &common::TestStack, name: &str, dims: &[(&str, &str)]) -> bool {
    common::emf_points(&stack.log_text())
        .iter()
        .any(|m| m.get(name).is_some_and(Value::is_number) && dims.iter().all(|(k, v)| m[*k] == *v))
}

fn refuse_statements_with(status: u16) -> FaultSet {
    FaultSet {
        routes: vec![RouteFault {
            route: "POST /v1/statements".into(),
            error_rate: 1.0,
            error_status: status,
            ..RouteFault::default()
        }],
        ..FaultSet::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_api_key_alarms_and_waits_and_a_recurring_409_parks() {
    let mut o = common::options(SandboxConfig::fast());
    o.env.insert("CONFLICT_MAX_ATTEMPTS".into(), "3".into());
    let stack = common::start_with(o).await;
    let ids = create_accounts(&stack, &["acc_CONF01", "acc_CONF02"]).await;
    let client = stack.sandbox.client();
    let table = common::table(&stack);

    // 403: the API key is wrong. Alarmed, and retried in minutes, not in the seconds of the
    // transient back-off (at most RETRY_MAX_DELAY_S = 3 s here); nothing is parked.
    client
        .set_faults(&refuse_statements_with(403))
        .await
        .unwrap();
    ingest_all(&stack, "acc_CONF01", &transactions("conf1", 3)).await;
    common::eventually("the configuration error is reported", LONG, || async {
        logged_metric(&stack, "ConfigurationErrors", &[("Step", "PostStatement")]).then_some(())
    })
    .await;
    let claim = common::eventually("the claim waits to retry", LONG, || async {
        let claim = table.get_account(ids[0]).await.ok()??.in_flight?;
        matches!(
            claim.phase,
            connector_domain::account::ClaimPhase::RetryWait { .. }
        )
        .then_some(claim)
    })
    .await;
    let connector_domain::account::ClaimPhase::RetryWait { retry_at } = claim.phase else {
        unreachable!("waited for retryWait")
    };
    let wait = retry_at - Utc::now();
    assert!(wait > TimeDelta::minutes(4), "retried after {wait}");
    assert!(
        table
            .parked_records(Some(ids[0]), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // 409 again and again, while the account query says the account is active: parked with
    // the reason after CONFLICT_MAX_ATTEMPTS, and the account is free for what comes next.
    client
        .set_faults(&refuse_statements_with(409))
        .await
        .unwrap();
    ingest_all(&stack, "acc_CONF02", &transactions("conf2", 2)).await;
    let parked = common::eventually("the conflicted batch is parked", LONG, || async {
        let p = table.parked_records(Some(ids[1]), 10).await.ok()?;
        (p.len() == 2).then_some(p)
    })
    .await;
    assert!(
        parked[0].reason.starts_with("Conflict: 409 3 times"),
        "{parked:?}"
    );
    // Parked first, then released.
    common::eventually("the account is released", LONG, || async {
        let account = table.get_account(ids[1]).await.ok()??;
        account.in_flight.is_none().then_some(())
    })
    .await;
    assert!(!logged_metric(
        &stack,
        "ConfigurationErrors",
        &[("Step", "GetStatement")]
    ));
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_rate_limiter_keeps_429s_under_one_percent_at_saturation() {
    use connector_domain::ports::RateLimiter;
    use std::sync::Arc;
    let mut config = SandboxConfig::fast();
    config.ratelimit_rate_per_s = 10.0;
    config.ratelimit_burst = 10;
    let stack = common::start(config).await;
    let http = reqwest::Client::new();
    let token: Value = http
        .post(stack.sandbox.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", "sfdsbanking/sfdsBankingProvider-Pre"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = token["access_token"].as_str().unwrap().to_string();
    // Three "Lambdas", each with its own limiter, sharing the table; 30 callers at once.
    let limiters: Vec<Arc<connector_aws::rate_limit::DynamoRateLimiter>> = (0..3)
        .map(|_| {
            Arc::new(connector_aws::rate_limit::DynamoRateLimiter::new(
                common::table(&stack),
                "local-provider",
                10.0,
            ))
        })
        .collect();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..30 {
        let limiter = limiters[caller % 3].clone();
        let http = http.clone();
        let bearer = bearer.clone();
        let url = format!(
            "{}/v1/statements/{}",
            stack.sandbox.base_url(),
            Uuid::new_v4()
        );
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                assert!(limiter.acquire(Duration::from_secs(60)).await.unwrap());
                let r = http
                    .get(&url)
                    .header("x-api-key", "local-api-key")
                    .bearer_auth(&bearer)
                    .send()
                    .await
                    .unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let rate = statuses.len() as f64 / elapsed;
    eprintln!(
        "rate limiter: {} requests in {elapsed:.1} s = {rate:.2}/s, {limited} answered 429",
        statuses.len()
    );
    assert!(
        limited * 100 <= statuses.len(),
        "{limited} of {} answered 429",
        statuses.len()
    );
    assert!(rate <= 10.5, "the shared rate was exceeded: {rate:.2}/s");
    assert!(rate >= 8.0, "the limiter wastes the allowance: {rate:.2}/s");
    stack.finish().await;
}

/// A statement Banking Service keeps in `processing` past STATEMENT_MAX_AGE_S is parked and
/// alarmed: polled only every PARKED_POLL_S instead of at the back-off cap, and still picked up
/// (nothing lost) when Banking Service finishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overdue_statement_is_parked_then_picked_up_when_it_finishes() {
    let mut options = common::options(SandboxConfig::fast());
    options.env.insert("STATEMENT_MAX_AGE_S".into(), "4".into());
    options.env.insert("PARKED_POLL_S".into(), "6".into());
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();
    let ids = create_accounts(&stack, &["acc_PARK01"]).await;
    let id = ids[0];
    hold_statements_processing(&client).await;
    let records = transactions("acc_PARK01", 5);
    ingest_all(&stack, "acc_PARK01", &records).await;

    let parked = || async {
        stack
            .log_text()
            .contains("statement overdue: parked")
            .then_some(())
    };
    common::eventually("the statement is parked", LONG, parked).await;
    let polls = || async {
        client
            .statements(Some(id))
            .await
            .unwrap()
            .iter()
            .map(|s| s.poll_count)
            .sum::<u64>()
    };
    // Parked: at most one poll per PARKED_POLL_S (6 s) where the back-off cap (2 s here) would
    // have made six in 12 s.
    let before = polls().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let during = polls().await - before;
    assert!(during <= 3, "{during} polls in 12 s while parked");
    assert_eq!(common::held(&stack, id).await, 0);
    assert!(stack.log_text().contains("\"StatementsParked\""));

    // Banking Service finishes it: the next parked poll commits it; nothing was lost.
    client.clear_faults().await.unwrap();
    common::wait_held(&stack, id, 5, LONG).await;
    common::eventually("the connector commits the success", LONG, || async {
        (common::pending_at_connector(&stack, id).await == 0).then_some(())
    })
    .await;
    let violations = client.violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    stack.finish().await;
}

/// The poll queue, for sending a timer message by hand.
fn poll_queue(stack: &local_stack::LocalStack) -> connector_aws::queues::Queues {
    connector_aws::queues::Queues::new(
        stack.sqs.clone(),
        String::new(),
        String::new(),
        stack.queue_urls["PollQueue"].clone(),
    )
}

/// How long a claim left behind by a dead consumer may take to go on: the watchdog's grace
/// (`POSTING_STALE_AFTER_S`, 10 s in tests) twice over, plus the statement's own time. The
/// reconciler, the last resort, is off in tests, so without the watchdog this never happens.
const TAKEOVER: Duration = Duration::from_secs(90);

/// Claims `id` by hand in `phase`, as a pusher that died would have left it, then ingests `tag`'s
/// five transactions (the pusher only ever finds the account busy) and records them in the claim
/// as that pusher would have chosen them.
async fn claim_left_behind(
    stack: &local_stack::LocalStack,
    id: Uuid,
    tag: &str,
    retrying: bool,
    since: chrono::DateTime<Utc>,
) -> (connector_domain::account::Claim, Vec<Value>) {
    let table = common::table(stack);
    // The account's own backfill (its history at the bank) may still be in flight, and a
    // late wake-up may still take the account for a moment: wait until nothing is pending.
    common::eventually("the account is idle", LONG, || async {
        let a = table.get_account(id).await.ok()??;
        let pending = table.pending_transactions(id, None, 1).await.ok()?;
        (a.in_flight.is_none() && pending.is_empty()).then_some(())
    })
    .await;
    let mut claim = connector_domain::account::Claim::new(Uuid::new_v4().to_string(), since);
    if retrying {
        claim.wait_for_retry(since);
    }
    // A wake-up with nothing to send claims and releases at once: try until the claim is ours.
    common::eventually("the claim is taken by hand", LONG, || async {
        matches!(
            table.claim_account(id, &claim).await.ok()?,
            connector_domain::account::ClaimOutcome::Claimed(_)
        )
        .then_some(())
    })
    .await;
    let records = transactions(tag, 5);
    ingest_all(stack, tag, &records).await;
    let pending = table.pending_transactions(id, None, 10).await.unwrap();
    assert_eq!(pending.len(), 5);
    claim.batch.unique_ids = pending
        .iter()
        .map(|t| t.transaction.unique_id.clone())
        .collect();
    claim.batch.span = Some(connector_domain::account::BatchSpan {
        hi_key: pending
            .iter()
            .filter_map(|t| t.position.clone())
            .max()
            .unwrap(),
        newest_date: pending
            .iter()
            .map(|t| t.transaction.date_posted)
            .max()
            .unwrap(),
        oldest_received_at: pending.iter().map(|t| t.received_at).min().unwrap(),
    });
    assert!(table.update_claim(id, &claim.token, &claim).await.unwrap());
    (claim, records)
}

/// Delivered exactly, in one POST, with no contract violation.
async fn assert_posted_once(stack: &local_stack::LocalStack, id: Uuid, records: &[Value]) {
    let client = stack.sandbox.client();
    common::wait_held(stack, id, records.len(), TAKEOVER).await;
    assert_delivered_exactly(stack, id, records).await;
    let log = client.requests().await.expect("requests");
    let posts = log
        .iter()
        .filter(|r| r.route == "POST /v1/statements")
        .count();
    assert_eq!(posts, 1, "the statement is posted once, by the watchdog");
    let violations = client.violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

/// A pusher killed after it wrote `RetryWait` and before it sent the retry timer (CI saw it):
/// the redelivered kick finds the account claimed, so only the claim's watchdog can go on.
/// The state is the one that pusher left, made by hand: the claim, its watchdog, no timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_timer_lost_with_its_pusher_is_taken_over_by_the_watchdog() {
    let stack = common::start_with(common::options(SandboxConfig::fast())).await;
    let tag = "acc_LOST1";
    let id = create_accounts(&stack, &[tag]).await[0];
    let (claim, records) = claim_left_behind(&stack, id, tag, true, Utc::now()).await;
    // The watchdog the pusher armed when it took the claim.
    poll_queue(&stack)
        .send_timer(
            &connector_domain::messages::TimerMessage::Watchdog {
                bank_account_id: id,
                claim: claim.token.clone(),
            },
            Duration::ZERO,
        )
        .await
        .expect("send");
    assert_posted_once(&stack, id, &records).await;
    stack.finish().await;
}

/// A pusher killed after it took the claim and before it armed the claim's watchdog: the
/// redelivered kick (here, the ingest's kicks) finds the claim still being posted and arms one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_left_posting_without_a_watchdog_is_taken_over() {
    let stack = common::start_with(common::options(SandboxConfig::fast())).await;
    let tag = "acc_LOST3";
    let id = create_accounts(&stack, &[tag]).await[0];
    let (_, records) = claim_left_behind(&stack, id, tag, false, Utc::now()).await;
    assert_posted_once(&stack, id, &records).await;
    stack.finish().await;
}

/// A poller killed after it moved the poll counter on and before it sent the next poll: the
/// redelivered poll is stale (that is what stops a chain forking), so the chain is gone and
/// only the claim's watchdog can restart it. The dead poller's write is made by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_chain_lost_with_its_poller_is_restarted_by_the_watchdog() {
    let mut options = common::options(SandboxConfig::fast());
    // Time to make the dead poller's write before the first poll.
    options.env.insert("POLL_FIRST_DELAY_S".into(), "5".into());
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();
    let tag = "acc_LOST2";
    let id = create_accounts(&stack, &[tag]).await[0];
    let table = common::table(&stack);
    let records = transactions(tag, 5);
    ingest_all(&stack, tag, &records).await;
    let claim = common::eventually("the statement is posted", LONG, || async {
        let claim = table.get_account(id).await.ok()??.in_flight?;
        claim.posted().is_some().then_some(claim)
    })
    .await;
    assert_eq!(claim.poll_attempt(), 0);
    assert!(
        table
            .advance_poll(id, &claim.token, 0, false, Utc::now())
            .await
            .unwrap(),
        "the first poll came before the dead poller's write"
    );

    common::wait_held(&stack, id, 5, TAKEOVER).await;
    assert_delivered_exactly(&stack, id, &records).await;
    let statement_id = claim.statement_id().expect("posted").to_string();
    let polls = polls_of(&client, &statement_id).await;
    assert!(polls >= 1, "the restarted chain polled");
    let violations = client.violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    stack.finish().await;
}

/// SQS may deliver one message twice at the same moment: two deliveries of one poll must not
/// both poll the statement (Banking Service allows one poll a second). The statement is held
/// `processing` while two copies of its current poll are sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_delivered_twice_at_once_polls_once() {
    let mut options = common::options(SandboxConfig::fast());
    // The chain's own polls 4 s and more apart, so that the two copies, sent to arrive 2 s
    // after its last poll, come before its next one.
    options.env.insert("POLL_FIRST_DELAY_S".into(), "4".into());
    options.env.insert("POLL_MAX_DELAY_S".into(), "10".into());
    let stack = common::start_with(options).await;
    let client = stack.sandbox.client();
    let tag = "acc_TWICE1";
    let id = create_accounts(&stack, &[tag]).await[0];
    hold_statements_processing(&client).await;
    let records = transactions(tag, 5);
    ingest_all(&stack, tag, &records).await;
    let table = common::table(&stack);
    let queue = poll_queue(&stack);
    for round in 0..3 {
        // Timed from the chain's last GET as the sandbox logged it (not from the counter, which
        // may move a while before the GET under load): at rest every poll step has its GET.
        let claim = common::eventually("the statement is being polled", LONG, || async {
            let claim = table.get_account(id).await.ok()??.in_flight?;
            if claim.posted().is_none() || claim.poll_attempt() <= round {
                return None;
            }
            let statement_id = claim.statement_id()?;
            (polls_of(&client, statement_id).await >= claim.poll_attempt() as usize)
                .then_some(claim)
        })
        .await;
        let copy = connector_domain::messages::TimerMessage::Poll {
            bank_account_id: id,
            statement_id: claim.statement_id().expect("posted").to_string(),
            claim: claim.token.clone(),
            attempt: claim.poll_attempt(),
            posted_at: claim.posted().expect("posted").posted_at,
            transaction_count: claim.transaction_count(),
        };
        let (a, b) = tokio::join!(
            queue.send_timer(&copy, Duration::from_secs(2)),
            queue.send_timer(&copy, Duration::from_secs(2))
        );
        a.expect("send");
        b.expect("send");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let violations = client.violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");

    client.set_faults(&FaultSet::default()).await.unwrap();
    common::wait_held(&stack, id, 5, LONG).await;
    assert_delivered_exactly(&stack, id, &records).await;
    let violations = client.violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    stack.finish().await;
}
