//! The authorisation page end to end: a product's subscription goes through Sage, `po-intake`
//! and `po-worker` to its link; the customer opens the link (`po-authorise` behind the local
//! API), continues to the demo bank, logs in and consents; Sage ends with the subscription
//! `Authorised` and the connector with the consent bound to it. A customer who cancels at the
//! bank leaves it `Rejected`; a used link answers 409; the product's return address gets its
//! customer back with its `state`. Sage records no contract violation.

mod common;

use sandbox::SandboxConfig;
use sandbox::driver::{AccountPick, walk_authorisation};
use sandbox::payments_out::client::PoClient;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_authorises_payments_at_the_bank_through_the_link() {
    let stack = common::start(SandboxConfig::fast()).await;
    let po = PoClient::new(stack.sandbox.base_url());
    let http = reqwest::Client::new();
    let org = po.create_organisation("Acme").await.unwrap();

    // Consents: Authorised, and the consent bound to the subscription.
    let (id, link) = common::po_new_link(&po, org).await;
    assert!(link.starts_with(&format!("{}/authorise/", stack.api_url)));
    let walk = walk_authorisation(&link, ("demo", "demo"), AccountPick::All, false, None)
        .await
        .unwrap();
    let (status, text) = walk.page.clone().expect("ends on the connector's page");
    assert_eq!(status, 200, "{walk:?}");
    assert!(text.contains("Payments authorised"), "{text}");
    let sub = common::po_at_sage(&po, id, "Authorised").await;
    assert!(sub["links"]["authorise"].is_string(), "{sub}");
    let binding = common::table(&stack).binding(id).await.unwrap();
    let binding = binding.expect("the consent is bound to the subscription");
    assert!(!binding.consent_id.is_empty() && !binding.customer_id.is_empty());
    // Single use.
    let again = http.get(&link).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let csp = again.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors"), "{csp}");

    // Cancels at the bank: Rejected, nothing bound.
    let (id, link) = common::po_new_link(&po, org).await;
    let walk = walk_authorisation(&link, ("demo", "demo"), AccountPick::All, true, None)
        .await
        .unwrap();
    let (_, text) = walk.page.expect("ends on the connector's page");
    assert!(text.contains("cancelled"), "{text}");
    let sub = common::po_at_sage(&po, id, "Rejected").await;
    assert!(
        sub.to_string().contains("CustomerCancelled"),
        "the reason goes with it: {sub}"
    );
    assert!(common::table(&stack).binding(id).await.unwrap().is_none());

    // The product's return address (loopback is allowed locally) gets the customer back with
    // its state; a return address off the allow-list is refused before anything happens.
    let (id, link) = common::po_new_link(&po, org).await;
    let back = "http://127.0.0.1:9/payments/back";
    let refused = http
        .get(format!(
            "{link}?returnUrl=https%3A%2F%2Fevil.test%2F&state=s"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 400);
    let start = format!("{link}?returnUrl={}&state=prod%207", urlencode(back));
    let walk = walk_authorisation(
        &start,
        ("demo", "demo"),
        AccountPick::First,
        false,
        Some(back),
    )
    .await
    .unwrap();
    assert!(walk.page.is_none(), "{walk:?}");
    assert_eq!(walk.location, format!("{back}?state=prod+7"));
    common::po_at_sage(&po, id, "Authorised").await;

    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
