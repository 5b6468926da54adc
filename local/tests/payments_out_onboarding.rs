//! Subscription onboarding (`connector_app::payouts_onboarding`) on its real adapters — the
//! Payments Out client against the sandbox and the links in DynamoDB Local — with the provider's
//! `Subscriptions` rule, tightened after the subscriptions were made: a valid subscription ends `AwaitingAuthorisation` with a link to the
//! connector's authorisation page, recorded once; one breaking the rule ends `Rejected` with the
//! rule; Sage records no contract violation.

mod common;

use std::sync::Arc;

use chrono::TimeDelta;
use connector_app::payouts_onboarding::{Onboarded, Onboarding};
use connector_app::pipeline::SystemClock;
use connector_domain::payouts::status::SubscriptionStatus;
use connector_sage::payouts::ProviderPayouts;
use sandbox::SandboxConfig;
use sandbox::payments_out::client::PoClient;
use serde_json::{Value, json};
use uuid::Uuid;

const PROVIDER: &str = "7baf4c0d-ce95-4823-bde2-695a7c528ce9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_onboarded_or_rejected_by_the_providers_rule() {
    let stack = common::start(SandboxConfig::fast()).await;
    // The worker is held back: onboarding runs here, on its adapters.
    stack.set_source_paused("PayoutsQueue", true).unwrap();
    let po = PoClient::new(stack.sandbox.base_url());
    let provider = Uuid::parse_str(PROVIDER).unwrap();
    // The operator's client (provider configuration) and the onboarding's own.
    let operator = common::payouts_api(&stack.sandbox, &stack.api_url);
    let onboarding = Onboarding {
        api: Arc::new(ProviderPayouts {
            api: common::payouts_api(&stack.sandbox, &stack.api_url),
            provider_id: provider,
        }),
        links: Arc::new(common::table(&stack)),
        clock: Arc::new(SystemClock),
        link_ttl: TimeDelta::days(7),
        open: Arc::new(common::table(&stack)),
    };
    let org = po.create_organisation("Acme").await.unwrap();
    let good = common::po_subscription(
        &po,
        org,
        Some(r#"{"legalName":"Acme Holdings LLC","taxId":"12-3456789"}"#),
    )
    .await;
    let bad = common::po_subscription(
        &po,
        org,
        Some(r#"{"legalName":"Acme Holdings LLC","taxId":"123"}"#),
    )
    .await;
    // Then the provider tightens its rules: a US tax id in the subscription's additionalData
    // (Sage checks new subscriptions against it; these two came before).
    let mut configuration = operator.get_provider(provider).await.unwrap();
    configuration["accountType"]["validationRules"] = json!([{"ruleId": "eb-tax-id",
        "validation": {"apiPath": "Subscriptions", "jsonPath": "$.data.additionalData.taxId",
            "optionality": "Required", "regex": "^[0-9]{2}-[0-9]{7}$",
            "errorMessage": "Use NN-NNNNNNN"}}]);
    operator
        .patch_provider(provider, &configuration)
        .await
        .unwrap();

    let Onboarded::AwaitingAuthorisation(link) = onboarding
        .onboard(good, Some("sage.intacct"))
        .await
        .unwrap()
    else {
        panic!("awaiting authorisation")
    };
    let seen: Value = po
        .get("/_sandbox/payments-out/subscriptions")
        .await
        .unwrap();
    let at_sage = seen
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subscriptionId"] == good.to_string())
        .cloned()
        .expect("Sage has the subscription");
    assert_eq!(at_sage["status"], "AwaitingAuthorisation", "{at_sage}");
    assert!(
        at_sage.to_string().contains(&link.url(&stack.api_url)),
        "the link points at the connector's page: {at_sage}"
    );
    // Recorded under the link too (the authorisation page finds its subscription by it), and a
    // redelivery changes nothing.
    let by_id = common::table(&stack).link(&link.link_id).await.unwrap();
    assert_eq!(by_id, Some(link.clone()));
    assert_eq!(
        onboarding.onboard(good, None).await.unwrap(),
        Onboarded::Already(SubscriptionStatus::AwaitingAuthorisation)
    );

    assert_eq!(
        onboarding.onboard(bad, None).await.unwrap(),
        Onboarded::Rejected("ValidationFailed: eb-tax-id".into())
    );
    assert!(common::table(&stack).link_for(bad).await.unwrap().is_none());

    let violations = po.violations().await.unwrap();
    assert_eq!(
        violations,
        json!([]),
        "Sage saw the connector break no rule"
    );
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_subscription_goes_from_sage_through_the_intake_and_the_worker_to_its_link() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let org = po.create_organisation("Acme").await.unwrap();
    let sub = common::po_subscription(&po, org, None).await.to_string();
    let at_sage = common::eventually(
        "the subscription awaits authorisation",
        std::time::Duration::from_secs(60),
        || async {
            let all = po.get("/_sandbox/payments-out/subscriptions").await.ok()?;
            all.as_array()?
                .iter()
                .find(|s| {
                    s["subscriptionId"] == sub.as_str() && s["status"] == "AwaitingAuthorisation"
                })
                .cloned()
        },
    )
    .await;
    let link = format!("{}/authorise/", stack.api_url);
    assert!(at_sage.to_string().contains(&link), "{at_sage}");
    let id = Uuid::parse_str(&sub).unwrap();
    assert!(common::table(&stack).link_for(id).await.unwrap().is_some());
    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}
