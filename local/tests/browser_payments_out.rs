//! The Payments Out authorisation page in a real browser: headless Chromium, driven through
//! ChromeDriver, against the local stack (`common::browser`, as the Banking pages in
//! `browser.rs`).
//!
//! A product's subscription goes through Sage, `po-intake` and `po-worker` to its link; the
//! customer opens it in the browser (a top-level page: the product opens the link, it does not
//! frame it), continues to the demo bank, signs in and consents, or cancels on the connector's
//! page. Every form is sent from the keyboard; on every connector and bank page the tests check
//! that no script is there to run and that axe-core finds no WCAG 2.1 A or AA violation, and
//! save a screenshot (`docs/onboarding.md` shows them;
//! `CONNECTOR_SCREENSHOTS=$PWD/docs/onboarding` refreshes them). What a product or a crafted
//! link puts in the URL must come back as text, never as markup.

mod common;

use fantoccini::key::Key;
use serde_json::json;

use common::browser::{Browser, sign_in_at_bank, start_stack};
use sandbox::payments_out::client::PoClient;

/// Continue on the connector's page (a link just opened), then sign in at the demo bank and
/// approve, all by keyboard. Checks both pages when `check` names what is being walked.
async fn continue_and_consent(b: &mut Browser, check: Option<&str>) {
    b.wait_for("button[value='continue']", false).await;
    b.tab_to("button[value='continue']").await;
    b.press(Key::Enter).await;
    b.wait_for("form[data-bank-login]", false).await;
    if let Some(what) = check {
        b.check_page(&format!("{what}: bank sign-in")).await;
    }
    sign_in_at_bank(b).await;
    b.tab_to("button[value='approve']").await;
    b.press(Key::Enter).await;
}

/// The product's page a `returnUrl` brings the customer back to, on loopback (the only plain
/// http the connector accepts, and only locally): its address, and the server to abort.
async fn product_return_page() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move {
        let app = axum::Router::new().fallback(|| async {
            axum::response::Html(
                "<!doctype html><html lang=\"en\"><head><title>Acme payables</title></head>\
                 <body><main><h1>Back in your Sage product</h1>\
                 <p>The product reads the subscription's status from Payments Out.</p>\
                 </main></body></html>",
            )
        });
        let _ = axum::serve(listener, app).await;
    });
    (format!("{base}/payments/back"), server)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `name`'s value in the query of `url`, once (the connector appends `state`, never repeats it).
fn query_value(url: &str, name: &str) -> String {
    let values: Vec<String> = url::Url::parse(url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(values.len(), 1, "{name} in {url}");
    values[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_authorises_payments_by_keyboard() {
    let stack = start_stack(&[]).await;
    let mut b = Browser::start("payments-out").await;
    let po = PoClient::new(stack.sandbox.base_url());
    let org = po.create_organisation("Acme").await.unwrap();

    // The link the connector gave Payments Out, opened by the customer.
    let (id, link) = common::po_new_link(&po, org).await;
    assert!(link.starts_with(&format!("{}/authorise/", stack.api_url)));
    b.goto(&link).await;
    b.wait_for("button[value='continue']", false).await;
    assert_eq!(b.status().await, 200);
    assert_eq!(b.text("h1").await, "Authorise payments");
    b.check_page("connector: authorise payments").await;
    b.screenshot("authorise").await;
    b.tab_to("button[value='continue']").await;
    b.press(Key::Enter).await;

    // The demo bank, asked for payments: sign in, consent to the accounts.
    b.wait_for("form[data-bank-login]", false).await;
    let at_bank = b.url().await;
    assert!(
        at_bank.starts_with(&stack.sandbox.base_url()),
        "at the bank: {at_bank}"
    );
    assert_eq!(query_value(&at_bank, "scope"), "openid accounts payments");
    b.check_page("bank: sign in for payments").await;
    sign_in_at_bank(&b).await;
    b.screenshot("bank-sign-in").await;
    b.tab_to("button[value='approve']").await;
    b.press(Key::Enter).await;

    // Back on the connector's page: authorised, at Sage too, with the consent bound.
    b.wait_for_heading("Payments authorised").await;
    let done = b.url().await;
    assert!(
        done.starts_with(&format!("{}/authorise/callback?", stack.api_url)),
        "{done}"
    );
    assert_eq!(b.status().await, 200);
    b.check_page("connector: authorised").await;
    b.screenshot("authorised").await;
    common::po_at_sage(&po, id, "Authorised").await;
    let binding = common::table(&stack).binding(id).await.unwrap();
    assert!(
        binding.is_some(),
        "the consent is bound to the subscription"
    );

    // A product that sends its returnUrl (loopback is allowed locally) and state gets its
    // customer back with the state.
    let (back, server) = product_return_page().await;
    let (id, link) = common::po_new_link(&po, org).await;
    b.goto(&format!(
        "{link}?returnUrl={}&state=invoice-run%207",
        urlencode(&back)
    ))
    .await;
    continue_and_consent(&mut b, None).await;
    b.wait_for_heading("Back in your Sage product").await;
    assert_eq!(b.url().await, format!("{back}?state=invoice-run+7"));
    b.screenshot("back-in-the-product").await;
    common::po_at_sage(&po, id, "Authorised").await;
    server.abort();

    assert_eq!(po.violations().await.unwrap(), json!([]));
    b.stop().await;
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_on_the_page_and_links_that_cannot_be_used() {
    let stack = start_stack(&[]).await;
    let mut b = Browser::start("payments-out-stops").await;
    let po = PoClient::new(stack.sandbox.base_url());
    let org = po.create_organisation("Acme").await.unwrap();

    // Cancel on the connector's page: Rejected at Sage, with the reason, nothing bound.
    let (id, link) = common::po_new_link(&po, org).await;
    b.goto(&link).await;
    b.wait_for("button[value='cancel']", false).await;
    b.tab_to("button[value='cancel']").await;
    b.press(Key::Enter).await;
    b.wait_for_heading("Authorisation cancelled").await;
    assert_eq!(b.status().await, 200);
    b.check_page("connector: cancelled").await;
    b.screenshot("cancelled").await;
    let sub = common::po_at_sage(&po, id, "Rejected").await;
    assert!(
        sub.to_string().contains("CustomerCancelled"),
        "the reason goes with it: {sub}"
    );
    assert!(common::table(&stack).binding(id).await.unwrap().is_none());

    // The same link again: used (409), said plainly, not a redirect.
    b.goto(&link).await;
    b.wait_for_heading("This link has already been used").await;
    assert_eq!(b.status().await, 409);
    assert_eq!(b.url().await, link);
    b.check_page("connector: used link").await;
    b.screenshot("used-link").await;

    // A link the connector never issued: 404.
    b.goto(&format!(
        "{}/authorise/{}",
        stack.api_url,
        uuid::Uuid::new_v4().simple()
    ))
    .await;
    b.wait_for_heading("This link is not valid").await;
    assert_eq!(b.status().await, 404);
    b.check_page("connector: unknown link").await;
    b.screenshot("unknown-link").await;

    assert_eq!(po.violations().await.unwrap(), json!([]));
    b.stop().await;
    stack.finish().await;
}

/// Markup a customer (or a crafted link) could put into the page's URL: it must come back as
/// text. Were it run, `document.title` would change, an `<img>` would appear, or an alert would
/// stop the WebDriver session.
const STATE: &str = "\"><script>document.title='owned'</script><img src=x onerror=alert(1)>'\" autofocus onfocus=\"alert(2)";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_link_could_inject_is_shown_as_text_and_never_run() {
    let stack = start_stack(&[]).await;
    let mut b = Browser::start("payments-out-injected").await;
    let po = PoClient::new(stack.sandbox.base_url());
    let org = po.create_organisation("Acme").await.unwrap();
    let http = reqwest::Client::new();
    let (back, server) = product_return_page().await;

    // An allowed returnUrl whose query, and a state which, carry markup: the page keeps both
    // as the exact values of its hidden fields, and nothing else appears.
    let (id, link) = common::po_new_link(&po, org).await;
    let from = "\"><script>alert(1)</script>";
    let return_url = format!("{back}?from={}&x='y'", urlencode(from));
    let start = format!(
        "{link}?returnUrl={}&state={}",
        urlencode(&return_url),
        urlencode(STATE)
    );
    let raw = http.get(&start).send().await.unwrap();
    assert_eq!(raw.status().as_u16(), 200);
    let raw = raw.text().await.unwrap();
    assert!(
        !raw.contains("<script") && !raw.contains("<img"),
        "markup reflected: {raw}"
    );
    b.goto(&start).await;
    b.wait_for("button[value='continue']", false).await;
    b.check_page("connector: authorise, injected state").await;
    let page = b
        .js(
            "const f = document.forms[0]; return {title: document.title, \
             images: document.images.length, fields: f.elements.length, \
             state: f.elements.state.value, returnUrl: f.elements.returnUrl.value, \
             focused: document.activeElement === document.body}",
        )
        .await;
    assert_eq!(page["title"], "Authorise payments", "{page}");
    assert_eq!(page["images"], 0, "{page}");
    assert_eq!(
        page["fields"], 4,
        "two hidden fields and two buttons: {page}"
    );
    assert_eq!(page["state"], STATE, "{page}");
    assert_eq!(page["focused"], true, "nothing took the focus: {page}");
    let kept = page["returnUrl"].as_str().expect("returnUrl");
    assert_eq!(query_value(kept, "from"), from);
    assert_eq!(query_value(kept, "x"), "'y'");
    // Through the bank and back: the product receives its values exactly.
    continue_and_consent(&mut b, Some("injected state")).await;
    b.wait_for_heading("Back in your Sage product").await;
    let returned = b.url().await;
    assert!(returned.starts_with(&back), "{returned}");
    assert_eq!(query_value(&returned, "from"), from);
    assert_eq!(query_value(&returned, "x"), "'y'");
    assert_eq!(query_value(&returned, "state"), STATE);
    common::po_at_sage(&po, id, "Authorised").await;
    server.abort();

    // Link ids, return addresses and a bank callback made of markup: plain pages that show
    // none of it.
    let (_, link) = common::po_new_link(&po, org).await;
    let mut refused = Vec::new();
    for bad_id in [
        "<script>alert(1)",
        "\"onmouseover=\"alert(1)",
        "'><img src=x onerror=alert(1)>",
    ] {
        let url = format!("{}/authorise/{}", stack.api_url, urlencode(bad_id));
        refused.push((url, 404, "This link is not valid", None));
    }
    for (bad_return, shot) in [
        (
            "javascript:alert(document.domain)",
            Some("return-address-refused"),
        ),
        ("https://evil.test/\"><script>alert(1)</script>", None),
    ] {
        let url = format!("{link}?returnUrl={}", urlencode(bad_return));
        refused.push((url, 400, "This link is not valid", shot));
    }
    let callback = format!(
        "{}/authorise/callback?code=x&state={}",
        stack.api_url,
        urlencode(STATE)
    );
    refused.push((callback, 400, "This sign-in is no longer valid", None));
    for (url, status, heading, shot) in refused {
        let raw = http.get(&url).send().await.unwrap();
        assert_eq!(raw.status().as_u16(), status, "{url}");
        let raw = raw.text().await.unwrap();
        for markup in ["<script", "<img", "alert("] {
            assert!(!raw.contains(markup), "{url} reflects {markup}: {raw}");
        }
        b.goto(&url).await;
        b.wait_for_heading(heading).await;
        assert_eq!(b.status().await, status, "{url}");
        b.check_page(&format!("connector: {url}")).await;
        if let Some(name) = shot {
            b.screenshot(name).await;
        }
    }
    // A refused return address leaves the link as it was.
    b.goto(&link).await;
    b.wait_for_heading("Authorise payments").await;

    assert_eq!(po.violations().await.unwrap(), json!([]));
    b.stop().await;
    stack.finish().await;
}

/// A link opened after its life (`AUTH_LINK_TTL_S`): 410, said plainly, and nothing to press.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_opened_after_it_expired() {
    let stack = start_stack(&[("AUTH_LINK_TTL_S", "1")]).await;
    let mut b = Browser::start("payments-out-expired").await;
    let po = PoClient::new(stack.sandbox.base_url());
    let org = po.create_organisation("Acme").await.unwrap();
    let (id, link) = common::po_new_link(&po, org).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    b.goto(&link).await;
    b.wait_for_heading("This link has expired").await;
    assert_eq!(b.status().await, 410);
    assert_eq!(b.url().await, link);
    assert_eq!(
        b.js("return document.querySelectorAll('button, form').length")
            .await,
        json!(0),
        "an expired link offers nothing to press"
    );
    b.check_page("connector: expired link").await;
    b.screenshot("expired-link").await;
    assert!(common::table(&stack).binding(id).await.unwrap().is_none());

    assert_eq!(po.violations().await.unwrap(), json!([]));
    b.stop().await;
    stack.finish().await;
}
