//! A batch end to end: the product pays two suppliers and sends one payment Sage's checks would
//! refuse (let through with the sandbox's `x-sim-skip-validation`); Payments Out notifies the
//! connector; `po-worker` reads and checks the batch, PATCHes it `Processing` with the bad
//! payment `Rejected` (the check named), and submits the two good ones to the demo bank; the
//! bank's events reach `po-bank-events`, which PATCHes them `Paid` with their completion date and
//! the batch `PartiallyPaid`. Each payment left the account exactly once; Sage records no
//! contract violation.

mod common;

use local_stack::payments_out as po_flow;
use sandbox::SandboxConfig;
use sandbox::payments_out::client::PoClient;
use serde_json::json;

/// How many items of a JSON array have `status`.
fn with_status(items: &serde_json::Value, status: &str) -> usize {
    items
        .as_array()
        .expect("an array")
        .iter()
        .filter(|i| i["status"] == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_checked_paid_at_the_bank_once_and_its_outcome_reaches_sage() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let (sub, debtor) = common::po_payer(&stack, &po).await;
    let tomorrow = po_flow::tomorrow();
    let batch = json!({ "externalId": "AP-RUN-1", "subscriptionId": sub, "payments": [
        local_stack::payments_out::payment("BILL-1", "1250.00", &debtor, &tomorrow),
        local_stack::payments_out::payment("BILL-2", "0", &debtor, &tomorrow),
        local_stack::payments_out::payment("BILL-3", "20.5", &debtor, &tomorrow),
    ]});
    let submitted = po.submit_batch(&batch, Some("run-1"), true).await.unwrap();
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let batch_id = submitted.body["data"]["batchId"]
        .as_str()
        .unwrap()
        .to_string();

    let done = local_stack::payments_out::batch_at_sage(&po, &batch_id, &["PartiallyPaid"])
        .await
        .unwrap();
    let payments = done["payments"].as_array().unwrap();
    let by_ref = |r: &str| {
        payments
            .iter()
            .find(|p| p["externalId"] == r)
            .cloned()
            .unwrap_or_else(|| panic!("{r} in {done}"))
    };
    for r in ["BILL-1", "BILL-3"] {
        let p = by_ref(r);
        assert_eq!(p["status"], "Paid", "{p}");
        assert!(p["paymentCompletedDate"].is_string(), "{p}");
    }
    let bad = by_ref("BILL-2");
    assert_eq!(bad["status"], "Rejected", "{bad}");
    assert_eq!(bad["extendedStatus"], "ValidationFailed: amount", "{bad}");

    // The bank: the two good payments, each executed once.
    let ledger = po.get("/_sandbox/payments-out/bank/ledger").await.unwrap();
    let entries = ledger.as_array().unwrap();
    assert_eq!(entries.len(), 2, "{ledger}");
    assert!(
        entries
            .iter()
            .all(|e| e["executions"] == 1 && e["executionsOfSamePayment"] == 1),
        "{ledger}"
    );
    assert_eq!(po.violations().await.unwrap(), json!([]));
    // First: it waits for the outcome window to finish, which the reads after it rely on.
    decision_noted_on_the_batch_alone(&stack, batch_id.parse().unwrap()).await;
    payments_are_found_by_their_watch(&stack, batch_id.parse().unwrap()).await;
    a_touch_never_puts_a_planned_look_off(&stack).await;
    stack.finish().await;
}

/// Open work through the DynamoDB adapter: a touch adds an item that is not there and leaves
/// the due time of one that is, marking it touched either way; an open moves it, keeping the
/// mark; a close takes it only once the mark is cleared.
async fn a_touch_never_puts_a_planned_look_off(stack: &common::TestStack) {
    use connector_domain::ports::{OpenItem, OpenKind};
    let table = connector_aws::Table::new(stack.dynamodb.clone(), stack.table_name.clone());
    let id = uuid::Uuid::new_v4().to_string();
    let at = |m: i64| {
        "2026-12-06T12:00:00Z"
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            + chrono::TimeDelta::minutes(m)
    };
    let item = |due_at| OpenItem {
        kind: OpenKind::Batch,
        id: id.clone(),
        due_at,
    };
    let due = async || {
        table
            .open_item(OpenKind::Batch, &id)
            .await
            .unwrap()
            .map(|i| i.due_at)
    };
    table.touch_work(&item(at(15))).await.unwrap();
    assert_eq!(due().await, Some(at(15)), "added");
    table.touch_work(&item(at(25))).await.unwrap();
    assert_eq!(due().await, Some(at(15)), "kept");
    // Marked touched: a close leaves it, and so after an open, which keeps the mark.
    let close = async || table.close_work(OpenKind::Batch, &id).await.unwrap();
    assert!(!close().await, "touched");
    assert_eq!(due().await, Some(at(15)), "left");
    table.open_work(&item(at(30))).await.unwrap();
    assert_eq!(due().await, Some(at(30)), "moved by an open");
    assert!(!close().await, "still touched");
    // The mark cleared (as a look does before it reads): closed.
    table.untouch_work(OpenKind::Batch, &id).await.unwrap();
    assert!(close().await, "untouched");
    assert_eq!(due().await, None);
    // Clearing the mark of an item that is not there adds nothing.
    table.untouch_work(OpenKind::Batch, &id).await.unwrap();
    assert!(
        table
            .open_item(OpenKind::Batch, &id)
            .await
            .unwrap()
            .is_none(),
        "nothing added"
    );
}

/// A window's reads through the DynamoDB adapter: the payments Sage lacks, and whether any
/// other is moving, each from its own batch only; a write moves a payment between them. A
/// paid batch has neither.
async fn payments_are_found_by_their_watch(stack: &common::TestStack, paid: uuid::Uuid) {
    use connector_domain::payouts::batches::{BatchRecord, PaymentRecord};
    use connector_domain::payouts::status::{BatchStatus, PaymentStatus};
    let table = connector_aws::Table::new(stack.dynamodb.clone(), stack.table_name.clone());
    assert!(table.payments_owing(paid).await.unwrap().is_empty());
    assert!(!table.any_payment_moving(paid).await.unwrap());

    let payment = |batch_id, status, patched| PaymentRecord {
        payment_id: uuid::Uuid::new_v4(),
        batch_id,
        status,
        reason: None,
        completed_at: None,
        submission: None,
        submitted: true,
        event_seq: 1,
        patched,
        returned: None,
        return_told: false,
        version: 1,
    };
    let record = |batch_id, payment_count| BatchRecord {
        batch_id,
        subscription_id: None,
        application: None,
        status: BatchStatus::Processing,
        reason: None,
        payment_count,
        checked_at: chrono::Utc::now(),
        decision_patched: true,
        watched_payments: true,
    };
    let (batch, other) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let moving = payment(batch, PaymentStatus::Processing, true);
    let owing = payment(batch, PaymentStatus::Failed, false);
    let done = payment(batch, PaymentStatus::Rejected, true);
    let elsewhere = payment(other, PaymentStatus::Failed, false);
    let mine = [moving.clone(), owing.clone(), done];
    table.record_batch(&record(batch, 3), &mine).await.unwrap();
    table
        .record_batch(&record(other, 1), &[elsewhere])
        .await
        .unwrap();

    let ids = |ps: Vec<PaymentRecord>| ps.iter().map(|p| p.payment_id).collect::<Vec<_>>();
    assert_eq!(
        ids(table.payments_owing(batch).await.unwrap()),
        [owing.payment_id]
    );
    assert!(table.any_payment_moving(batch).await.unwrap());

    // Settled: it leaves the moving and joins the owing.
    let settled = PaymentRecord {
        status: PaymentStatus::Paid,
        completed_at: Some(chrono::Utc::now()),
        patched: false,
        version: 2,
        ..moving
    };
    table.save_payment(&settled).await.unwrap();
    assert!(!table.any_payment_moving(batch).await.unwrap());
    let mut now_owing = ids(table.payments_owing(batch).await.unwrap());
    now_owing.sort();
    let mut expected = vec![owing.payment_id, settled.payment_id];
    expected.sort();
    assert_eq!(now_owing, expected);

    // Both PATCHed: nothing left to read.
    for p in [owing, settled] {
        let sent = PaymentRecord {
            patched: true,
            version: p.version + 1,
            ..p
        };
        table.save_payment(&sent).await.unwrap();
    }
    assert!(table.payments_owing(batch).await.unwrap().is_empty());
    assert_eq!(table.batch_payments(batch).await.unwrap().len(), 3);
}

/// The decision PATCH is noted on the batch's item by one attribute: its outcome lease, beside
/// it, is left as it was; a batch without a record is refused, as the use case expects. The lease
/// is taken once the outcome window has released it.
async fn decision_noted_on_the_batch_alone(stack: &common::TestStack, batch_id: uuid::Uuid) {
    let table = connector_aws::Table::new(stack.dynamodb.clone(), stack.table_name.clone());
    let record = table
        .batch_record(batch_id)
        .await
        .unwrap()
        .expect("recorded");
    assert!(record.decision_patched, "{record:?}");
    // Sage shows the outcome once the window's PATCH is answered; the window releases its lease
    // only after noting the PATCH, so the lease is free once that is done.
    let released = "the outcome window releases its lease";
    let (until, now) = common::eventually(released, std::time::Duration::from_secs(10), || async {
        let now = chrono::Utc::now();
        let until = now + chrono::TimeDelta::minutes(10);
        let taken = table.lease_sync(batch_id, until, now).await.unwrap();
        taken.then_some((until, now))
    })
    .await;
    table.note_decision_patched(batch_id).await.unwrap();
    assert!(
        !table.lease_sync(batch_id, until, now).await.unwrap(),
        "the lease is still held"
    );
    table.release_sync(batch_id).await.unwrap();
    assert!(matches!(
        table.note_decision_patched(uuid::Uuid::new_v4()).await,
        Err(connector_aws::StoreError::ConditionFailed)
    ));
}

/// The demo's Payments Out part (`cargo xtask demo`) stays runnable: a clean batch ends `Paid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_pays_a_clean_batch_in_full() {
    let stack = common::start(SandboxConfig::fast()).await;
    let report = local_stack::demo::payments_out(&stack, 3, false)
        .await
        .unwrap();
    assert_eq!(report.batch_status, "Paid", "{report:?}");
    assert_eq!((report.paid, report.violations), (3, 0), "{report:?}");
    stack.finish().await;
}

/// The stack with the reconcilers run every second and a batch stuck after `stuck_after_s`.
async fn reconciling_stack(stuck_after_s: &str) -> common::TestStack {
    let mut options = common::options(SandboxConfig::fast());
    options.schedule_every = Some(std::time::Duration::from_secs(1));
    options
        .env
        .insert("STUCK_AFTER_S".into(), stuck_after_s.into());
    common::start_with(options).await
}

/// Outcomes the bank never pushes (its events switched off) are read at the bank by
/// `po-reconciler` once the batch is stuck, and reach Sage all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_reads_outcomes_the_bank_never_pushed() {
    let stack = reconciling_stack("1").await;
    let po = PoClient::new(stack.sandbox.base_url());
    let (sub, debtor) = common::po_payer(&stack, &po).await;
    let mut rails = po.get("/_sandbox/payments-out/bank/config").await.unwrap();
    rails["eventsUrl"] = serde_json::Value::Null;
    po.put("/_sandbox/payments-out/bank/config", &rails)
        .await
        .unwrap();
    let tomorrow = po_flow::tomorrow();
    let batch = json!({ "externalId": "AP-RUN-2", "subscriptionId": sub, "payments": [
        local_stack::payments_out::payment("BILL-1", "10.00", &debtor, &tomorrow),
        local_stack::payments_out::payment("BILL-2", "20.00", &debtor, &tomorrow),
    ]});
    let submitted = po.submit_batch(&batch, None, false).await.unwrap();
    let batch_id = submitted.body["data"]["batchId"]
        .as_str()
        .unwrap()
        .to_string();
    let done = local_stack::payments_out::batch_at_sage(&po, &batch_id, &["Paid"])
        .await
        .unwrap();
    assert!(
        done["payments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "Paid" && p["paymentCompletedDate"].is_string()),
        "{done}"
    );
    let events = po.get("/_sandbox/payments-out/bank/events").await.unwrap();
    assert!(
        !events["payments"].as_array().unwrap().is_empty(),
        "the bank had outcomes: {events}"
    );
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

/// A payer sends a one-payment batch that the bank settles and returns `return_delay_ms` later
/// (its events pushed or not); once Sage shows the batch `Paid`: the subscription, the batch id
/// and the payment id.
async fn paid_then_returned(
    stack: &local_stack::LocalStack,
    po: &PoClient,
    external_id: &str,
    return_delay_ms: u64,
    pushed: bool,
) -> (serde_json::Value, String, serde_json::Value) {
    let (sub, debtor) = common::po_payer(stack, po).await;
    po_flow::set_rails(po, |r| {
        if !pushed {
            r["eventsUrl"] = serde_json::Value::Null;
        }
        r["returnRate"] = json!(1.0);
        r["returnDelayMs"] = json!(return_delay_ms);
    })
    .await
    .unwrap();
    let batch = json!({ "externalId": external_id, "subscriptionId": sub, "payments": [
        po_flow::payment("BILL-1", "10.00", &debtor, &po_flow::tomorrow()),
    ]});
    let batch_id = po_flow::send_batch(po, &batch, None, false).await.unwrap();
    let paid = local_stack::payments_out::batch_at_sage(po, &batch_id, &["Paid"])
        .await
        .unwrap();
    (
        json!(sub),
        batch_id,
        paid["payments"][0]["paymentId"].clone(),
    )
}

/// The product's `notifications` messages, once there is one (within a minute).
async fn told_of_returns(po: &PoClient) -> Vec<serde_json::Value> {
    local_stack::payments_out::wait_for(
        "the product told of the return",
        std::time::Duration::from_secs(60),
        || async {
            let inbox = po.inbox().await.ok()?;
            let told: Vec<serde_json::Value> = inbox
                .as_array()?
                .iter()
                .filter(|m| m["type"] == "notifications")
                .cloned()
                .collect();
            (!told.is_empty()).then_some(told)
        },
    )
    .await
    .unwrap()
}

/// A bank whose pushes never arrive (none are sent here), with the stuck-batch path not due for
/// an hour: the reconciler's read of the bank's change feed alone brings the settlement (the
/// batch goes `Paid`) and the return after it (the product is told, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_and_returns_whose_pushes_never_came_are_read_from_the_banks_feed() {
    let stack = reconciling_stack("3600").await;
    let po = PoClient::new(stack.sandbox.base_url());
    let (_, _, payment_id) = paid_then_returned(&stack, &po, "AP-RUN-FEED", 2000, false).await;
    let told = told_of_returns(&po).await;
    assert_eq!(told[0]["data"]["resourceId"], payment_id, "{told:?}");
    assert_eq!(told[0]["data"]["event"], "Returned", "{told:?}");
    // Several runs later, still told once.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(told_of_returns(&po).await.len(), 1);
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

/// The product cancels one payment of a batch, then the rest (`batchpaymentcancellations`,
/// forwarded by Payments Out): each is cancelled at the bank before settlement and Sage shows
/// `Cancelled`; nothing leaves the account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_cancelled_on_request_are_cancelled_at_the_bank_and_at_sage() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let (sub, debtor) = common::po_payer(&stack, &po).await;
    // Settlement far off: the payments wait at the bank, cancellable.
    po_flow::set_rails(&po, |r| r["settlementDelayMs"] = json!(600_000))
        .await
        .unwrap();
    let tomorrow = po_flow::tomorrow();
    let batch = json!({ "externalId": "AP-RUN-3", "subscriptionId": sub, "payments": [
        po_flow::payment("BILL-1", "10.00", &debtor, &tomorrow),
        po_flow::payment("BILL-2", "20.00", &debtor, &tomorrow),
    ]});
    let batch_id = po_flow::send_batch(&po, &batch, None, false).await.unwrap();
    let processing = local_stack::payments_out::batch_at_sage(&po, &batch_id, &["Processing"])
        .await
        .unwrap();
    let first = processing["payments"][0]["paymentId"].clone();

    let asked = po
        .message(
            "batchpaymentcancellations",
            sub,
            "cancel-1",
            &json!({"batchId": batch_id, "paymentIds": [first]}),
        )
        .await
        .unwrap();
    assert_eq!(asked.status, 202, "{asked:?}");
    let one = local_stack::payments_out::wait_for(
        "the first payment Cancelled at Sage",
        std::time::Duration::from_secs(60),
        || async {
            let b = po_flow::batch_now(&po, &batch_id).await.ok()?;
            (b["payments"][0]["status"] == "Cancelled").then_some(b)
        },
    )
    .await
    .unwrap();
    assert_eq!(one["status"], "Processing", "{one}");
    assert_eq!(one["payments"][1]["status"], "Processing", "{one}");

    po.message(
        "batchpaymentcancellations",
        sub,
        "cancel-2",
        &json!({"batchId": batch_id}),
    )
    .await
    .unwrap();
    let done = local_stack::payments_out::batch_at_sage(&po, &batch_id, &["Cancelled"])
        .await
        .unwrap();
    assert!(
        done["payments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "Cancelled"),
        "{done}"
    );
    let events = po.get("/_sandbox/payments-out/bank/events").await.unwrap();
    let cancelled = with_status(&events["payments"], "cancelled");
    assert_eq!(cancelled, 2, "both cancelled at the bank: {events}");
    let ledger = po.get("/_sandbox/payments-out/bank/ledger").await.unwrap();
    assert!(
        ledger
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["executions"] == 0),
        "nothing left the account: {ledger}"
    );
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

/// The bank settles a payment and then returns it: Sage keeps it `Paid` and the product hears of
/// the return by a `notifications` message, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_returned_after_settling_is_told_to_the_product() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let (sub, batch_id, payment_id) = paid_then_returned(&stack, &po, "AP-RUN-4", 200, true).await;
    let told = told_of_returns(&po).await;
    let data = &told[0]["data"];
    assert_eq!(told[0]["subscriptionId"], json!(sub), "{told:?}");
    assert_eq!(
        (
            &data["resourceType"],
            &data["resourceId"],
            &data["event"],
            &data["status"]
        ),
        (
            &json!("payment"),
            &payment_id,
            &json!("Returned"),
            &json!("Paid")
        ),
        "{data}"
    );
    let events = po.get("/_sandbox/payments-out/bank/events").await.unwrap();
    assert!(
        events["payments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == "returned"),
        "{events}"
    );
    let again = po_flow::batch_now(&po, &batch_id).await.unwrap();
    assert_eq!(again["payments"][0]["status"], "Paid", "{again}");
    assert_eq!(told.len(), 1, "told once: {told:?}");
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

/// The customer revokes the consent at the bank: the bank's consent event cancels the
/// subscription at Sage (`ConsentRevoked`), and a batch sent afterwards pays nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_consent_cancels_the_subscription_and_pays_nothing_more() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let (sub, debtor) = common::po_payer(&stack, &po).await;
    let binding = connector_aws::Table::new(stack.dynamodb.clone(), stack.table_name.clone())
        .binding(sub)
        .await
        .unwrap()
        .expect("bound");
    let revoked = reqwest::Client::new()
        .post(format!(
            "{}/_sandbox/bank/consents/{}/revoke",
            stack.sandbox.base_url(),
            binding.consent_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let cancelled = local_stack::payments_out::subscription_at_sage(&po, sub, "Cancelled")
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "Cancelled", "{cancelled}");

    let batch = json!({ "externalId": "AP-RUN-5", "subscriptionId": sub, "payments": [
        po_flow::payment("BILL-1", "10.00", &debtor, &po_flow::tomorrow()),
    ]});
    // Sage refuses batches of a subscription that is not Authorised; let it through to see that
    // the connector refuses it too.
    let batch_id = po_flow::send_batch(&po, &batch, None, true).await.unwrap();
    let done = local_stack::payments_out::batch_at_sage(&po, &batch_id, &["Rejected"])
        .await
        .unwrap();
    assert_eq!(done["payments"][0]["status"], "Rejected", "{done}");
    let ledger = po.get("/_sandbox/payments-out/bank/ledger").await.unwrap();
    assert_eq!(ledger, json!([]), "nothing sent to the bank");
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

/// A batch larger than one invocation's submission budget: each `po-worker` pass submits what
/// fits and queues the rest for the next, until every payment is at the bank once and `Paid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_pass_is_finished_by_the_passes_after_it() {
    let mut options = common::options(SandboxConfig::fast());
    // A pass starts submissions for 1 ms only: a few payments each, then the rest handed on.
    options.env.insert("SUBMIT_BUDGET_S".into(), "0.001".into());
    let stack = common::start_with(options).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let (sub, debtor) = common::po_payer(&stack, &po).await;
    let tomorrow = po_flow::tomorrow();
    let payments: Vec<_> = (0..40)
        .map(|i| po_flow::payment(&format!("BIG-{i}"), "1.00", &debtor, &tomorrow))
        .collect();
    let batch = json!({ "externalId": "AP-BIG", "subscriptionId": sub, "payments": payments });
    let batch_id = po_flow::send_batch(&po, &batch, Some("big-1"), false)
        .await
        .unwrap();

    let done = po_flow::batch_at_sage(&po, &batch_id, &["Paid"])
        .await
        .unwrap();
    assert_eq!(with_status(&done["payments"], "Paid"), 40, "{done}");
    let handed_on = stack
        .log_text()
        .matches("the rest of the batch is queued")
        .count();
    assert!(
        handed_on >= 2,
        "handed on {handed_on} times: the budget did not bite"
    );
    let ledger = po.get("/_sandbox/payments-out/bank/ledger").await.unwrap();
    let entries = ledger.as_array().unwrap();
    assert_eq!(entries.len(), 40, "{ledger}");
    assert!(entries.iter().all(|e| e["executions"] == 1), "{ledger}");
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}
