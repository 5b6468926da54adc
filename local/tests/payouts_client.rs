//! The Payments Out client (`connector_sage::PayoutsApi`) against the sandbox's Payments Out
//! Service on loopback: batches read with exact amounts, PATCHes applied or refused whole,
//! subscriptions moved with their authorisation link, messages reaching the product, and a
//! revoked token refreshed once.

mod common;

use chrono::Utc;
use connector_sage::payouts_wire::{
    Amount, AuthoriseLinks, BatchPatch, BatchPatchData, BatchStatus, Message, PaymentPatch,
    PaymentStatus, SubscriptionPatch, SubscriptionPatchData, SubscriptionStatus,
};
use connector_sage::{PayoutsApi, ProviderError};
use sandbox::payments_out::client::PoClient;
use sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use uuid::Uuid;

const PROVIDER: &str = "7baf4c0d-ce95-4823-bde2-695a7c528ce9";

struct H {
    _sandbox: Sandbox,
    po: PoClient,
    api: PayoutsApi,
}

async fn start() -> H {
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), SandboxConfig::fast())
        .await
        .unwrap();
    H {
        po: PoClient::new(sandbox.base_url()),
        api: common::payouts_api(&sandbox, "https://po.eb.test"),
        _sandbox: sandbox,
    }
}

impl H {
    /// A new organisation's subscription, still `Received`.
    async fn subscription(&self) -> Uuid {
        let org = self.po.create_organisation("Acme").await.unwrap();
        let s = self
            .po
            .create_subscription(org, Uuid::parse_str(PROVIDER).unwrap(), None)
            .await
            .unwrap();
        Uuid::parse_str(s["data"]["subscriptionId"].as_str().unwrap()).unwrap()
    }

    async fn move_subscription(&self, id: Uuid, status: SubscriptionStatus) {
        let patch = SubscriptionPatch {
            data: SubscriptionPatchData {
                status,
                links: None,
                additional_data: None,
            },
        };
        self.api.patch_subscription(id, None, &patch).await.unwrap();
    }

    /// A batch of `n` payments of 1250.10 for an authorised subscription.
    async fn batch(&self, n: usize) -> Uuid {
        let sub = self.subscription().await;
        self.link(sub).await;
        self.move_subscription(sub, SubscriptionStatus::Authorised)
            .await;
        let data = sandbox::payments_out::cli::demo_batch(sub, n, "1250.10", "dac_1");
        let a = self.po.submit_batch(&data, None, false).await.unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
        Uuid::parse_str(a.body["data"]["batchId"].as_str().unwrap()).unwrap()
    }

    async fn link(&self, sub: Uuid) {
        let now = Utc::now();
        let patch = SubscriptionPatch {
            data: SubscriptionPatchData {
                status: SubscriptionStatus::AwaitingAuthorisation,
                links: Some(AuthoriseLinks {
                    authorise: "https://po.eb.test/authorise/k3J9".into(),
                    authorise_issued_at: now,
                    authorise_expires_at: now + chrono::TimeDelta::days(7),
                }),
                additional_data: None,
            },
        };
        self.api
            .patch_subscription(sub, Some("sage.intacct"), &patch)
            .await
            .unwrap();
    }

    async fn violations(&self) -> Vec<Value> {
        self.po
            .violations()
            .await
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn processing(payments: &[Uuid]) -> BatchPatch {
    BatchPatch {
        data: BatchPatchData {
            default_status: BatchStatus::Processing,
            extended_status: Some("Submitted to ACH".into()),
            payments: payments
                .iter()
                .map(|id| PaymentPatch {
                    payment_id: *id,
                    status: PaymentStatus::Processing,
                    extended_status: None,
                    payment_completed_date: None,
                    additional_data: None,
                })
                .collect(),
        },
    }
}

#[tokio::test]
async fn a_batch_is_read_exactly_and_moved_by_patches_refused_whole_when_illegal() {
    let h = start().await;
    let batch_id = h.batch(3).await;
    let batch = h
        .api
        .get_batch(batch_id, Some("sage.intacct"))
        .await
        .unwrap();
    assert_eq!(batch.batch_id, batch_id);
    assert_eq!(batch.status, BatchStatus::Received);
    assert_eq!(batch.payments.len(), 3);
    for p in &batch.payments {
        assert_eq!(p.status, PaymentStatus::Received);
        assert_eq!(p.instructed_amount.currency, "USD");
        assert_eq!(p.instructed_amount.amount, Amount::from_literal("1250.10"));
        assert_eq!(p.instructed_amount.amount.literal, "1250.10");
    }
    let ids: Vec<Uuid> = batch.payments.iter().map(|p| p.payment_id).collect();
    h.api
        .patch_batch(batch_id, None, &processing(&ids))
        .await
        .unwrap();
    let batch = h.api.get_batch(batch_id, None).await.unwrap();
    assert!(
        batch
            .payments
            .iter()
            .all(|p| p.status == PaymentStatus::Processing)
    );
    // Back to Received is illegal: a 409, and nothing applied.
    let mut back = processing(&ids);
    back.data.default_status = BatchStatus::Received;
    back.data.payments[0].status = PaymentStatus::Received;
    let refused = h.api.patch_batch(batch_id, None, &back).await;
    assert!(
        matches!(refused, Err(ProviderError::Conflict(_))),
        "{refused:?}"
    );
    let batch = h.api.get_batch(batch_id, None).await.unwrap();
    assert_eq!(batch.payments[0].status, PaymentStatus::Processing);
    let kinds: Vec<Value> = h
        .violations()
        .await
        .iter()
        .map(|v| v["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        [json!("illegalTransition")],
        "only the PATCH we meant to be refused"
    );
}

#[tokio::test]
async fn amounts_sent_as_json_numbers_are_still_read_exactly() {
    let h = start().await;
    let batch_id = h.batch(1).await;
    h.po.put(
        "/_sandbox/payments-out/faults",
        &json!({"numericAmounts": true}),
    )
    .await
    .unwrap();
    let batch = h.api.get_batch(batch_id, None).await.unwrap();
    let amount = &batch.payments[0].instructed_amount.amount;
    assert_eq!(amount.value, Some("1250.10".parse().unwrap()));
    assert_ne!(amount.literal, "1250.10", "the fault sends a number");
}

#[tokio::test]
async fn a_subscription_and_the_provider_configuration_are_read_and_written() {
    let h = start().await;
    let sub = h.subscription().await;
    let read = h.api.get_subscription(sub, None).await.unwrap();
    assert_eq!(read.subscription_id, sub);
    assert_eq!(read.status, SubscriptionStatus::Received);
    h.link(sub).await;
    assert_eq!(
        h.api.get_subscription(sub, None).await.unwrap().status,
        SubscriptionStatus::AwaitingAuthorisation
    );

    // The provider configuration goes back whole, unknown members included.
    let provider = Uuid::parse_str(PROVIDER).unwrap();
    let mut config = h.api.get_provider(provider).await.unwrap();
    config["name"] = json!("Example Bank Payments (renamed)");
    config["aMemberThisConnectorDoesNotKnow"] = json!({"kept": true});
    h.api.patch_provider(provider, &config).await.unwrap();
    let again = h.api.get_provider(provider).await.unwrap();
    assert_eq!(again["name"], "Example Bank Payments (renamed)");
    assert_eq!(again["aMemberThisConnectorDoesNotKnow"]["kept"], true);
    assert!(
        h.violations().await.is_empty(),
        "{:?}",
        h.violations().await
    );
}

#[tokio::test]
async fn a_message_reaches_the_product_and_a_revoked_token_is_refreshed_once() {
    let h = start().await;
    let sub = h.subscription().await;
    h.link(sub).await;
    h.move_subscription(sub, SubscriptionStatus::Authorised)
        .await;
    // Every token issued so far is revoked: the next call gets a 401, refreshes and succeeds.
    h.po.put(
        "/_sandbox/payments-out/faults",
        &json!({"revokeTokens": true}),
    )
    .await
    .unwrap();
    let message = Message {
        subscription_id: sub,
        correlation_id: Some("prod-req-1".into()),
        data: json!({"creditor": {"creditorId": "cre_1", "externalId": "V-2001",
            "name": "Northwind", "creditorType": "Organisation", "status": "Active"}}),
    };
    h.api
        .post_message("creditorputs", Some("sage.intacct"), &message)
        .await
        .unwrap();
    let inbox = h.po.inbox().await.unwrap();
    let item = inbox
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "creditorputs")
        .expect("the product received the answer");
    assert_eq!(item["correlationId"], "prod-req-1");
    assert_eq!(item["data"]["creditor"]["creditorId"], "cre_1");
}

#[tokio::test]
async fn a_short_retry_after_is_waited_out_three_times_then_the_call_fails_as_rate_limited() {
    let h = start().await;
    let provider = Uuid::parse_str(PROVIDER).unwrap();
    let throttle = |n: u64| json!({"force429": {"retryAfterS": 1, "remaining": n}});
    h.po.put("/_sandbox/payments-out/faults", &throttle(3))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    h.api.get_provider(provider).await.unwrap();
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "waited out the three Retry-Afters"
    );
    h.po.put("/_sandbox/payments-out/faults", &throttle(4))
        .await
        .unwrap();
    let err = h.api.get_provider(provider).await.unwrap_err();
    assert!(matches!(err, ProviderError::RateLimited { .. }), "{err:?}");
}
