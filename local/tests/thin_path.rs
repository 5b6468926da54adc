//! The thinnest end-to-end path (issue 2, item 7): a notification signed like Sage ID for a new
//! bank account is accepted by /notification, queued, handled by the worker and stored; a
//! transaction ingested for that account is pushed as a statement and polled to `succeeded`.

mod common;

use std::time::Duration;

use sandbox::SandboxConfig;
use sandbox::model::CreateAccountRequest;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notification_to_succeeded_statement() {
    let stack = common::start(SandboxConfig::fast()).await;
    let sandbox = stack.sandbox.client();
    let table = common::table(&stack);

    // Hop 1-3: the product creates an account; Banking Service notifies the connector, whose
    // worker stores the mapping.
    let created = sandbox
        .create_account(&CreateAccountRequest::new(
            stack.bank_id,
            "acc_THIN01",
            "2026-01-01T00:00:00.000Z",
        ))
        .await
        .expect("create account");
    let id = created.account.bank_account_id;
    let delivered = sandbox.notifications().await.expect("notification log");
    assert!(
        delivered.iter().any(|n| n.status == Some(200)),
        "the connector did not accept the notification: {delivered:?}"
    );
    let account = common::eventually(
        "the worker stores the account",
        Duration::from_secs(20),
        || async { table.get_account(id).await.ok().flatten() },
    )
    .await;
    assert_eq!(account.external_id, "acc_THIN01");

    // Hop 4-6: the bank pushes a transaction; it is pushed as a statement and polled.
    let (status, report) = common::ingest(
        &stack,
        &json!({
            "externalId": "acc_THIN01",
            "balance": {"ledger": "1207.85", "available": "1157.85", "asOf": "2026-03-04T00:00:00Z"},
            "transactions": [{
                "uniqueId": "thin-0001",
                "transactionAmount": -42.15,
                "transactionType": "POS",
                "datePosted": "2026-03-03T09:12:44.000Z",
                "description": "CARD PAYMENT COFFEE CO",
                "runningBalance": "1207.85"
            }]
        }),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["data"]["accepted"], 1, "{report}");

    let stored = common::eventually(
        "the transaction reaches Banking Service",
        Duration::from_secs(30),
        || async {
            let t = sandbox.stored_transactions(id).await.ok()?;
            (!t.is_empty()).then_some(t)
        },
    )
    .await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].unique_id, "thin-0001");
    assert_eq!(stored[0].transaction_amount.0.to_string(), "-42.15");

    let statements = sandbox.statements(Some(id)).await.expect("statements");
    assert_eq!(statements.len(), 1, "{statements:?}");
    // The connector commits the success and releases the account: polled to `succeeded`.
    let settled = common::eventually(
        "the connector commits the statement",
        Duration::from_secs(20),
        || async {
            let a = table.get_account(id).await.ok().flatten()?;
            (a.in_flight.is_none() && a.delivered_count == 1).then_some(a)
        },
    )
    .await;
    assert!(settled.last_success_at.is_some());
    let view = sandbox.account(id).await.expect("account view");
    assert_eq!(format!("{:?}", view.status).to_lowercase(), "active");
    let violations = sandbox.violations().await.expect("violations");
    assert!(violations.is_empty(), "contract violations: {violations:?}");

    // The reconciler's run reports pipeline depth; every hop left its metric (issue 6).
    stack
        .function("reconciler")
        .unwrap()
        .invoke(serde_json::to_vec(&local_stack::events::scheduled_event()).unwrap())
        .await
        .expect("reconciler ran");
    let has = |metrics: &[serde_json::Value], name: &str, dims: &[(&str, &str)]| {
        metrics.iter().any(|m| {
            m.get(name).is_some_and(serde_json::Value::is_number)
                && dims.iter().all(|(k, v)| m[*k] == *v)
        })
    };
    let expected = [
        (
            "Notifications",
            &[("Outcome", "enqueued"), ("Type", "created.bankAccount")][..],
        ),
        ("StatementsPosted", &[("Kind", "transactions")][..]),
        ("StatementsSucceeded", &[][..]),
        ("PollsPerStatement", &[][..]),
        ("StatementProcessingTime", &[][..]),
        ("IngestToSucceeded", &[][..]),
        ("PendingTotal", &[][..]),
        ("OldestInFlightAge", &[][..]),
    ];
    // Function output reaches the log files a moment after the invocation answers.
    let started = std::time::Instant::now();
    let metrics = loop {
        let metrics = common::emf_points(&stack.log_text());
        let missing: Vec<_> = expected
            .iter()
            .filter(|(name, dims)| !has(&metrics, name, dims))
            .collect();
        if missing.is_empty() {
            break metrics;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no EMF points for {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Every AWS call of the functions went through the meter (the figures of docs/cost.md).
    let usage = stack.aws_usage();
    for op in [
        "DynamoDB.PutItem",
        "DynamoDB.UpdateItem",
        "DynamoDB.GetItem",
        "DynamoDB.Query",
        "SQS.SendMessage",
        "SQS.ReceiveMessage",
        "SQS.DeleteMessageBatch",
    ] {
        assert!(
            usage
                .get(op)
                .is_some_and(|c| c.requests > 0 && c.request_bytes > 0),
            "no {op} metered: {usage:?}"
        );
    }
    let (invocations, busy_ms) = stack.function("statement-pusher").unwrap().usage();
    assert!(invocations >= 1 && busy_ms >= 1, "{invocations} {busy_ms}");
    // The statement was delivered: the reconciler found nothing pending.
    assert!(
        metrics.iter().any(|m| m["PendingTotal"] == 0.0),
        "pending after delivery"
    );

    stack.finish().await;
}
