//! The customer's pages in a real browser: headless Chromium, driven through ChromeDriver,
//! against the local stack.
//!
//! The Sage product (the sandbox's `sandbox::ui` pages) is served at `http://localhost:PORT` and
//! frames the connector's `/auth`, served at `http://127.0.0.1:PORT`: another site, as Sage's
//! products frame a bank's connector, with third-party cookies blocked, so a flow that passes
//! does not depend on them. Every form is sent from the keyboard (Tab to the control, then
//! Enter or Space). On every page the tests check that no script is there to run and run axe-core
//! (WCAG 2.1 A and AA rules: no violation allowed), and save a screenshot of what the customer
//! sees (`docs/onboarding.md` shows them; `CONNECTOR_SCREENSHOTS=docs/onboarding` refreshes it).
//!
//! Chromium, ChromeDriver and axe-core are installed when missing (`local_stack::browser`);
//! a test that cannot have them fails, it is never skipped.

mod common;

use std::time::{Duration, Instant};

use fantoccini::Locator;
use fantoccini::key::Key;
use serde_json::json;

use common::browser::{Browser, LONG, sign_in_at_bank, start_stack};
use sandbox::model::AccountStatus;

fn product_url(stack: &local_stack::LocalStack) -> String {
    format!(
        "{}/ui/v1/product",
        sandbox::ui::product_base(&stack.sandbox.base_url())
    )
}

/// From the product's bank feeds to the connector's first page in the iframe.
async fn connect_from_product(b: &mut Browser, stack: &local_stack::LocalStack) {
    b.goto(&product_url(stack)).await;
    b.wait_for("form[action='/ui/v1/product/connect'] button", false)
        .await;
    b.tab_to("form[action='/ui/v1/product/connect'] button")
        .await;
    b.press(Key::Enter).await;
    b.wait_for("button[value='continue']", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onboarding_several_accounts_and_renewal_in_a_cross_site_iframe_by_keyboard() {
    let stack = start_stack(&[]).await;
    let mut b = Browser::start("onboarding").await;
    let client = stack.sandbox.client();

    // The product's bank feeds: nothing connected yet.
    b.goto(&product_url(&stack)).await;
    b.wait_for("h1", false).await;
    assert_eq!(b.text("h1").await, "Bank feeds");
    assert!(
        b.can_set_cookie().await,
        "the product, first party, keeps cookies"
    );
    b.check_page("bank feeds, empty").await;
    b.screenshot("bank-feeds-empty").await;

    // Connect: the connector's page in the product's iframe, another site, without cookies.
    connect_from_product(&mut b, &stack).await;
    b.to_top().await;
    b.check_page("product page framing /auth").await;
    b.enter_frame().await;
    let origin = b.js("return location.origin").await;
    assert_eq!(
        origin,
        json!(stack.api_url),
        "the frame shows the connector"
    );
    assert!(
        !b.can_set_cookie().await,
        "third-party cookies must be blocked in the frame for this test to mean anything"
    );
    assert_eq!(b.text("h1").await, "Connect your bank account");
    b.check_page("connector: connect").await;
    b.screenshot("connect").await;
    b.tab_to("button[value='continue']").await;
    b.press(Key::Enter).await;

    // The demo bank: sign in, share two of the three accounts (Space unticks the third).
    b.wait_for("form[data-bank-login]", true).await;
    b.check_page("bank: sign in").await;
    b.screenshot("bank-sign-in").await;
    sign_in_at_bank(&b).await;
    let demo_accounts = b
        .js("return Array.from(document.querySelectorAll('input[data-customer=demo]')).map(e => e.value)")
        .await;
    let demo_accounts: Vec<String> = serde_json::from_value(demo_accounts).expect("account ids");
    assert_eq!(demo_accounts.len(), 3, "demo has three accounts");
    let left_out = demo_accounts[2].clone();
    b.tab_to(&format!("input[value='{left_out}']")).await;
    b.press(Key::Space).await;
    b.screenshot("bank-accounts-chosen").await;
    b.tab_to("button[value='approve']").await;
    b.press(Key::Enter).await;

    // Back at Sage (Banking Service's page, still in the frame), then the whole window.
    b.wait_for("a[target='_top']", true).await;
    assert_eq!(b.text("h1").await, "Your bank is connected");
    b.check_page("banking service: connected").await;
    b.screenshot("connected").await;
    b.tab_to("a[target='_top']").await;
    b.press(Key::Enter).await;

    // The product offers the two shared accounts; the customer adds both.
    b.to_top().await;
    b.wait_for("fieldset input[type='checkbox']", false).await;
    let offered = b
        .js("return document.querySelectorAll('fieldset input[type=checkbox]').length")
        .await;
    assert_eq!(offered, json!(2), "the two shared accounts are offered");
    b.check_page("product: add accounts").await;
    b.screenshot("add-accounts").await;
    b.tab_to("button[type='submit']").await;
    b.press(Key::Enter).await;

    // The product sees both accounts; Banking Service makes them active with their history.
    b.wait_for("tr[data-account]", false).await;
    let ids: Vec<String> = serde_json::from_value(
        b.js("return Array.from(document.querySelectorAll('tr[data-account]')).map(r => r.dataset.account)")
            .await,
    )
    .expect("account rows");
    assert_eq!(ids.len(), 2, "both shared accounts are in the product");
    let table = common::table(&stack);
    for raw in &ids {
        let id: uuid::Uuid = raw.parse().expect("account id");
        let account = client.account(id).await.expect("Banking Service has it");
        assert_ne!(
            account.external_id, left_out,
            "the unshared account stays out"
        );
        common::eventually("the connector knows the account", LONG, || async {
            table.get_account(id).await.ok().flatten()
        })
        .await;
        common::eventually("the history makes it active", LONG, || async {
            (client.account(id).await.ok()?.status == AccountStatus::Active).then_some(())
        })
        .await;
    }
    b.goto(&product_url(&stack)).await;
    b.wait_for("tr[data-account]", false).await;
    let statuses = b
        .js("return Array.from(document.querySelectorAll('tr[data-account] td:nth-child(3)')).map(t => t.innerText)")
        .await;
    assert_eq!(statuses, json!(["Active", "Active"]));
    b.check_page("bank feeds, two accounts").await;
    b.screenshot("bank-feeds").await;

    // Renewal of the first account's feed: /authrefresh in the frame, the bank, back.
    b.tab_to("tr[data-account] button").await;
    b.press(Key::Enter).await;
    b.wait_for("button[value='continue']", true).await;
    assert_eq!(b.text("h1").await, "Renew your bank feed");
    b.check_page("connector: renew").await;
    b.screenshot("renew").await;
    b.tab_to("button[value='continue']").await;
    b.press(Key::Enter).await;
    b.wait_for("form[data-bank-login]", true).await;
    b.check_page("bank: renew consent").await;
    b.screenshot("bank-renew").await;
    sign_in_at_bank(&b).await;
    b.tab_to("button[value='approve']").await;
    b.press(Key::Enter).await;
    b.wait_for("a[target='_top']", true).await;
    assert_eq!(b.text("h1").await, "Your bank feed is renewed");
    b.check_page("banking service: renewed").await;
    b.screenshot("renewed").await;
    let renewals: Vec<_> = client
        .authorisations()
        .await
        .expect("authorisations")
        .into_iter()
        .filter(|a| a.kind == sandbox::model::AuthorisationKind::Reauth)
        .collect();
    assert_eq!(renewals.len(), 1);
    assert_eq!(
        renewals[0].patch.as_ref().map(|p| p.status.as_str()),
        Some("success")
    );

    assert!(client.violations().await.expect("violations").is_empty());
    b.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_at_the_bank_and_a_frame_the_csp_refuses() {
    let stack = start_stack(&[]).await;
    let mut b = Browser::start("refusals").await;
    let client = stack.sandbox.client();

    // The customer cancels at the bank: Banking Service hears `cancelled`, nothing is shared.
    connect_from_product(&mut b, &stack).await;
    b.tab_to("button[value='continue']").await;
    b.press(Key::Enter).await;
    b.wait_for("form[data-bank-login]", true).await;
    b.tab_to("button[value='cancel']").await;
    b.press(Key::Enter).await;
    b.wait_for("a[target='_top']", true).await;
    assert_eq!(b.text("h1").await, "Connection cancelled");
    b.check_page("banking service: cancelled").await;
    b.screenshot("cancelled").await;
    let auths = client.authorisations().await.expect("authorisations");
    assert_eq!(auths.len(), 1);
    let patch = auths[0].patch.as_ref().expect("the connector reported");
    assert_eq!(patch.status, "cancelled");
    assert!(patch.bank_accounts.is_empty());
    b.tab_to("a[target='_top']").await;
    b.press(Key::Enter).await;
    b.to_top().await;
    b.wait_for("h1", false).await;
    assert_eq!(b.text("h1").await, "Bank feeds");
    assert!(client.accounts().await.expect("accounts").is_empty());

    // A page on an origin outside FRAME_ANCESTORS frames a valid /auth link: the connector
    // answers it, the browser refuses to show it.
    let auth = client
        .create_authorisation(stack.bank_id, None, true)
        .await
        .expect("announced authorisation");
    let redirect_uri = format!(
        "{}/ui/v1/indirectredirect/{}",
        stack.sandbox.base_url(),
        auth.id
    );
    let link = format!(
        "{}/auth?{}",
        stack.api_url,
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("bank", &stack.bank_id.to_string())
            .append_pair("authorisation_id", &auth.id.to_string())
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("state", "s1")
            .finish()
    );
    let page = format!(
        "<!doctype html><html lang=\"en\"><title>Not Sage</title><main><h1>Not Sage</h1>\
         <iframe title=\"bank\" src=\"{}\" style=\"width:100%;height:30rem\"></iframe></main></html>",
        link.replace('&', "&amp;")
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let elsewhere = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let page = page.clone();
                async move { axum::response::Html(page) }
            }),
        );
        let _ = axum::serve(listener, app).await;
    });
    b.goto(&elsewhere).await;
    b.wait_for("iframe", false).await;
    let started = Instant::now();
    let framed = loop {
        b.enter_frame().await;
        let href = b.js("return location.href").await;
        if href != json!("about:blank") || started.elapsed() > LONG {
            break href;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !framed
            .as_str()
            .unwrap_or_default()
            .starts_with(&stack.api_url),
        "the connector's page must not render under {elsewhere}: {framed}"
    );
    assert!(
        b.client
            .find(Locator::Css("button[value='continue']"))
            .await
            .is_err()
    );
    b.to_top().await;
    b.screenshot("frame-refused").await;
    server.abort();
    // The same link framed by the product renders: only the embedding origin differed.
    b.goto(&format!(
        "{}/ui/v1/product/authorisations/{}",
        sandbox::ui::product_base(&stack.sandbox.base_url()),
        auth.id
    ))
    .await;
    b.wait_for("button[value='continue']", true).await;
    assert!(
        client
            .authorisation(auth.id)
            .await
            .expect("authorisation")
            .patch
            .is_none()
    );

    b.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_that_expired_while_the_customer_waited() {
    let stack = start_stack(&[("AUTH_HANDSHAKE_TTL_S", "4")]).await;
    let mut b = Browser::start("expired").await;
    connect_from_product(&mut b, &stack).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.tab_to("button[value='continue']").await;
    b.press(Key::Enter).await;
    b.wait_for("h1", true).await;
    let started = Instant::now();
    while b.text("h1").await == "Connect your bank account" && started.elapsed() < LONG {
        tokio::time::sleep(Duration::from_millis(200)).await;
        b.enter_frame().await;
    }
    assert_eq!(b.text("h1").await, "This request has expired");
    assert_eq!(b.js("return location.origin").await, json!(stack.api_url));
    b.check_page("connector: expired").await;
    b.screenshot("expired").await;
    let auths = stack
        .sandbox
        .client()
        .authorisations()
        .await
        .expect("authorisations");
    assert!(auths.iter().all(|a| a.patch.is_none()), "no PATCH");
    b.stop().await;
    stack.finish().await;
}
