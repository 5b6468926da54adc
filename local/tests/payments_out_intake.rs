//! Payments Out's deliveries to the connector (`POST /notifications`, `POST /subscription`)
//! through the local API to `po-intake`, signed by the sandbox as Sage signs them: stored once and
//! queued for the worker; refused with 401 and nothing queued when the header or the token is
//! wrong; 400 for a malformed body.

mod common;

use std::time::Duration;

use sandbox::SandboxConfig;
use sandbox::payments_out::client::PoClient;
use serde_json::{Value, json};
use uuid::Uuid;

const PROVIDER: &str = "7baf4c0d-ce95-4823-bde2-695a7c528ce9";

/// Every message waiting on the Payments Out queue (read without deleting, then left to
/// become visible again: the test reads the queue once, at the end).
async fn queued(stack: &local_stack::LocalStack) -> Vec<Value> {
    let mut all = Vec::new();
    for _ in 0..5 {
        let out = stack
            .sqs
            .receive_message()
            .queue_url(&stack.queue_urls["PayoutsQueue"])
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive from the Payments Out queue");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            all.push(serde_json::from_str(m.body().unwrap_or("null")).unwrap());
        }
    }
    all
}

/// One delivery made by the sandbox now (no retries), and the connector's answer.
async fn notify(po: &PoClient, request: Value) -> (u64, String) {
    let out = po
        .post("/_sandbox/payments-out/notify", &request)
        .await
        .expect("the sandbox delivers");
    (
        out["finalStatus"].as_u64().unwrap_or(0),
        out["body"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_verified_stored_once_and_queued() {
    let stack = common::start(SandboxConfig::fast()).await;
    // The worker is held back: what the intake queued stays on the queue to be read here.
    stack.set_source_paused("PayoutsQueue", true).unwrap();
    let po = PoClient::new(stack.sandbox.base_url());

    // A new subscription: Sage delivers it to /subscription, which answers 201 with its id.
    let org = po.create_organisation("Acme").await.unwrap();
    let sub = common::po_subscription(&po, org, None).await.to_string();
    common::eventually(
        "the subscription is delivered",
        Duration::from_secs(30),
        || async {
            let deliveries = po.get("/_sandbox/payments-out/deliveries").await.ok()?;
            deliveries
                .as_array()?
                .iter()
                .find(|d| {
                    d["kind"] == "subscription"
                        && d["status"] == 201
                        && d["key"].as_str().is_some_and(|k| k.contains(&sub))
                })
                .cloned()
        },
    )
    .await;
    // Delivered again (Sage retries), it is a duplicate that still answers with its id.
    let again = json!({"data": {"subscriptionId": sub, "organisationId": org,
        "providerId": PROVIDER, "status": "Received"}});
    let (status, body) = notify(
        &po,
        json!({"target": "subscription", "type": "subscription", "body": again.to_string()}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["data"]["subscriptionId"], sub.as_str());

    // A batch notification, delivered twice (Sage retries): queued once.
    let batch = Uuid::new_v4();
    for _ in 0..2 {
        let (status, body) = notify(
            &po,
            json!({"type": "batchpayments", "subscriptionId": sub, "data": {"batchId": batch}}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }

    // Refused: a foreign key's signature, the header missing or wrong. Nothing queued.
    for (token, header) in [
        ("foreignKey", "configured"),
        ("valid", "missing"),
        ("valid", "wrongValue"),
        ("missing", "configured"),
    ] {
        let (status, body) = notify(
            &po,
            json!({"type": "batchpayments", "data": {"batchId": Uuid::new_v4()},
                "token": token, "header": header}),
        )
        .await;
        assert_eq!(status, 401, "{token}/{header}: {body}");
        assert!(body.contains("AuthenticationError"), "{body}");
    }
    // Malformed (no `id`). Over 5 MB is 413: the sandbox cannot send that much (Sage's own
    // limit), so `payouts_intake`'s unit tests show it.
    let (status, body) = notify(&po, json!({"body": r#"{"type": "batchpayments"}"#})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("MissingProperty"), "{body}");

    let messages = queued(&stack).await;
    let keys: Vec<String> = messages
        .iter()
        .map(|m| match m["kind"].as_str() {
            Some("subscription") => {
                format!("subscriptions#{}", m["subscriptionId"].as_str().unwrap())
            }
            _ => m["key"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    let mut expected = vec![
        format!("subscriptions#{sub}"),
        format!("batchpayments#{batch}"),
    ];
    expected.sort();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    assert_eq!(keys_sorted, expected, "{messages:#?}");
    let batch_message = messages
        .iter()
        .find(|m| m["type"] == "batchpayments")
        .unwrap();
    assert_eq!(batch_message["application"], "sage.intacct");
    assert_eq!(batch_message["subscriptionId"], sub);
    stack.finish().await;
}
