//! One test per rule of docs/payments-out-sandbox.md: the Payments Out Provider and messaging
//! APIs, the product's side, deliveries to the connector, the demo bank's payment rails,
//! violations and faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use parking_lot::Mutex;
use sandbox::payments_out::client::PoClient;
use sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use uuid::Uuid;

const KEY: &str = "local-pos-api-key";
const AUD: &str = "payments-out/local-provider";
const PROVIDER: &str = "7baf4c0d-ce95-4823-bde2-695a7c528ce9";
const P: &str = "/api-provider-v1";
const M: &str = "/api-provider-msg-v1";
const BANK_BASIC: (&str, &str) = ("local-connector", "local-bank-secret");

// ------------------------------------------------------------------ a recording connector

#[derive(Debug, Clone)]
struct Hit {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Rec {
    hits: Vec<Hit>,
    /// Statuses to answer, in order; then 201 (204 for bank events).
    answers: VecDeque<u16>,
    delay_ms: u64,
    in_flight: usize,
    max_in_flight: usize,
    /// Bank events: each event's first attempts answered 503.
    fail_each_event: usize,
}

#[derive(Clone)]
struct Connector {
    url: String,
    rec: Arc<Mutex<Rec>>,
}

impl Connector {
    async fn start() -> Connector {
        let rec = Arc::new(Mutex::new(Rec::default()));
        async fn hit(
            State(rec): State<Arc<Mutex<Rec>>>,
            uri: axum::http::Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> axum::response::Response {
            let (status, delay) = {
                let mut r = rec.lock();
                r.hits.push(Hit {
                    path: uri.path().to_string(),
                    headers,
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let default = if uri.path().starts_with("/bank/") {
                    204
                } else {
                    201
                };
                r.in_flight += 1;
                r.max_in_flight = r.max_in_flight.max(r.in_flight);
                let event = r.hits.last().map(|h| h.body["eventId"].clone());
                let seen = r
                    .hits
                    .iter()
                    .filter(|h| {
                        event
                            .as_ref()
                            .is_some_and(|e| !e.is_null() && h.body["eventId"] == *e)
                    })
                    .count();
                if seen > 0 && seen <= r.fail_each_event {
                    (503, r.delay_ms)
                } else {
                    (r.answers.pop_front().unwrap_or(default), r.delay_ms)
                }
            };
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            rec.lock().in_flight -= 1;
            StatusCode::from_u16(status).unwrap().into_response()
        }
        let app = Router::new()
            .route("/notifications", post(hit))
            .route("/subscription", post(hit))
            .route("/bank/payment-events", post(hit))
            .route("/bank/consent-events", post(hit))
            .with_state(rec.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Connector { url, rec }
    }

    fn hits(&self, path: &str) -> Vec<Hit> {
        self.rec
            .lock()
            .hits
            .iter()
            .filter(|h| h.path == path)
            .cloned()
            .collect()
    }

    async fn wait(&self, path: &str, n: usize) -> Vec<Hit> {
        for _ in 0..300 {
            let h = self.hits(path);
            if h.len() >= n {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} hits on {path}: {:?}", self.hits(path).len());
    }
}

// ------------------------------------------------------------------ harness

struct H {
    sb: Sandbox,
    http: reqwest::Client,
    po: PoClient,
    token: String,
    conn: Connector,
}

struct A {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl A {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

async fn to_a(r: reqwest::Response) -> A {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    A {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

fn cfg() -> SandboxConfig {
    SandboxConfig::fast()
}

async fn start_with(mut c: SandboxConfig) -> H {
    let conn = Connector::start().await;
    c.payments_out.notification_url = Some(format!("{}/notifications", conn.url));
    c.payments_out.subscription_url = Some(format!("{}/subscription", conn.url));
    c.payments_out.rails.events_url = Some(format!("{}/bank/payment-events", conn.url));
    c.payments_out.rails.consent_events_url = Some(format!("{}/bank/consent-events", conn.url));
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), c)
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let po = PoClient::new(sb.base_url());
    let mut h = H {
        sb,
        http,
        po,
        token: String::new(),
        conn,
    };
    h.token = h.new_token(AUD).await;
    h
}

async fn start() -> H {
    start_with(cfg()).await
}

impl H {
    fn url(&self, p: &str) -> String {
        format!("{}{p}", self.sb.base_url())
    }

    async fn new_token(&self, aud: &str) -> String {
        let r = self
            .http
            .post(self.sb.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "local-provider"),
                ("client_secret", "local-secret"),
                ("audience", aud),
            ])
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        key: &str,
        token: &str,
    ) -> A {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(m, self.url(path))
            .header("x-api-key", key)
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(b);
        }
        to_a(r.send().await.unwrap()).await
    }

    async fn api(&self, method: &str, path: &str, body: Option<&Value>) -> A {
        self.api_with(method, path, body, KEY, &self.token).await
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

    async fn violation_kinds(&self) -> Vec<String> {
        self.violations()
            .await
            .iter()
            .map(|v| v["kind"].as_str().unwrap().to_string())
            .collect()
    }

    async fn inbox(&self) -> Vec<Value> {
        self.po
            .inbox()
            .await
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Organisation + subscription moved to `Authorised` by the provider.
    async fn authorised_subscription(&self) -> Uuid {
        let id = self.received_subscription().await;
        for st in ["AwaitingAuthorisation", "Authorised"] {
            let a = self
                .api(
                    "PATCH",
                    &format!("{P}/subscriptions/{id}"),
                    Some(&json!({"data": {"status": st}})),
                )
                .await;
            assert_eq!(a.status, 204, "{:?}", a.body);
        }
        id
    }

    /// The sandbox's clock now.
    async fn now(&self) -> chrono::DateTime<chrono::Utc> {
        let c = self.po.get("/_sandbox/clock").await.unwrap();
        c["now"].as_str().unwrap().parse().unwrap()
    }

    async fn advance_s(&self, s: u64) {
        self.po
            .post("/_sandbox/clock", &json!({"advanceS": s}))
            .await
            .unwrap();
    }

    /// A new organisation's subscription, `Received`.
    async fn received_subscription(&self) -> Uuid {
        let org = self.po.create_organisation("Acme").await.unwrap();
        let s = self
            .po
            .create_subscription(org, Uuid::parse_str(PROVIDER).unwrap(), None)
            .await
            .unwrap();
        Uuid::parse_str(s["data"]["subscriptionId"].as_str().unwrap()).unwrap()
    }

    /// A subscription the provider moved to `AwaitingAuthorisation` with a link that expires in
    /// `expires_in_s`.
    async fn awaiting_with_link(&self, expires_in_s: i64) -> Uuid {
        let id = self.received_subscription().await;
        let now = self.now().await;
        let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let body = json!({"data": {"status": "AwaitingAuthorisation", "links": {
            "authorise": "https://po.eb.test/authorise/k3J9", "authoriseIssuedAt": fmt(now),
            "authoriseExpiresAt": fmt(now + chrono::Duration::seconds(expires_in_s))}}});
        let a = self
            .api("PATCH", &format!("{P}/subscriptions/{id}"), Some(&body))
            .await;
        assert_eq!(a.status, 204, "{:?}", a.body);
        id
    }

    async fn patch_subscription(&self, id: Uuid, status: &str) -> u16 {
        self.api(
            "PATCH",
            &format!("{P}/subscriptions/{id}"),
            Some(&json!({"data": {"status": status}})),
        )
        .await
        .status
    }

    /// A batch of `n` payments for an authorised subscription: (batchId, paymentIds).
    async fn batch(&self, n: usize) -> (Uuid, Vec<Uuid>) {
        let sub = self.authorised_subscription().await;
        self.batch_for(sub, n).await
    }

    async fn batch_for(&self, sub: Uuid, n: usize) -> (Uuid, Vec<Uuid>) {
        let data = sandbox::payments_out::cli::demo_batch(sub, n, "10.00", "dac_1");
        let a = self.po.submit_batch(&data, None, false).await.unwrap();
        assert_eq!(a.status, 201, "{}", a.body);
        ids_of(&a.body["data"])
    }

    /// The demo customer's business account, in USD with money, under a fresh consent.
    async fn consent(&self) -> (String, String) {
        let customers: Value = self
            .http
            .get(self.url("/_sandbox/bank/customers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let demo = customers
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["username"] == "demo")
            .unwrap();
        let account = demo["accounts"][0]["accountId"]
            .as_str()
            .unwrap()
            .to_string();
        self.po
            .put(
                &format!("/_sandbox/payments-out/bank/accounts/{account}"),
                &json!({"currency": "USD", "credit": "1000000.00"}),
            )
            .await
            .unwrap();
        let before = self.consent_ids().await;
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(self.url("/bank/oauth/authorize"))
            .form(&[
                ("response_type", "code"),
                ("client_id", "local-connector"),
                ("redirect_uri", "http://127.0.0.1:9/cb"),
                ("state", "s"),
                (
                    "code_challenge",
                    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                ),
                ("code_challenge_method", "S256"),
                ("scope", "openid accounts payments"),
                ("username", "demo"),
                ("password", "demo"),
                ("account", account.as_str()),
                ("action", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{}", r.status());
        // The bank lists consents in no particular order: the new one is the one not seen before.
        let made = self
            .consent_ids()
            .await
            .into_iter()
            .find(|c| !before.contains(c))
            .unwrap();
        (made, account)
    }

    async fn consent_ids(&self) -> Vec<String> {
        let consents: Value = self
            .http
            .get(self.url("/_sandbox/bank/consents"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        consents
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["consentId"].as_str().unwrap().to_string())
            .collect()
    }

    async fn bank(&self, method: &str, path: &str, body: Option<&Value>) -> A {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self
            .http
            .request(m, self.url(&format!("/bank{path}")))
            .basic_auth(BANK_BASIC.0, Some(BANK_BASIC.1));
        if let Some(b) = body {
            r = r.json(b);
        }
        to_a(r.send().await.unwrap()).await
    }

    async fn ledger(&self) -> Vec<Value> {
        self.po
            .get("/_sandbox/payments-out/bank/ledger")
            .await
            .unwrap()
            .as_array()
            .cloned()
            .unwrap()
    }

    async fn faults(&self, f: Value) {
        self.po
            .put("/_sandbox/payments-out/faults", &f)
            .await
            .unwrap();
    }

    async fn wait_bank_status(&self, id: &str, status: &str) -> A {
        for _ in 0..300 {
            let a = self.bank("GET", &format!("/v1/payments/{id}"), None).await;
            if a.body["status"] == status {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("payment {id} never reached {status}");
    }
}

fn ids_of(batch: &Value) -> (Uuid, Vec<Uuid>) {
    let id = Uuid::parse_str(batch["batchId"].as_str().unwrap()).unwrap();
    let p = batch["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Uuid::parse_str(p["paymentId"].as_str().unwrap()).unwrap())
        .collect();
    (id, p)
}

fn bank_body(consent: &str, account: &str, reference: &str, amount: &str) -> Value {
    json!({ "debtorAccountId": account, "consentId": consent, "amount": amount, "currency": "USD",
        "localInstrument": "ACH", "requestedExecutionDate": "2025-03-05", "reference": reference,
        "batchRef": "b-1", "creditor": { "name": "Northwind Supplies",
        "bankAccount": { "routingNumber": "021000021", "accountNumber": "000123456789" } } })
}

// ------------------------------------------------------------------ 1. Provider API

#[tokio::test]
async fn po_tokens_have_their_own_audience() {
    let h = start().await;
    let banking = h.new_token("sfdsbanking/sfdsBankingProvider-Pre").await;
    let a = h
        .api_with(
            "GET",
            &format!("{P}/providers/{PROVIDER}"),
            None,
            KEY,
            &banking,
        )
        .await;
    assert_eq!((a.status, a.code()), (401, "AuthenticationError"));
    let a = h
        .api("GET", &format!("{P}/providers/{PROVIDER}"), None)
        .await;
    assert_eq!(a.status, 200);
    // And a Payments Out token is no good on Banking Service.
    let r = h
        .http
        .get(h.url(&format!("/v1/statements/{}", Uuid::new_v4())))
        .header("x-api-key", "local-api-key")
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn po_token_takes_the_documented_json_body() {
    let h = start().await;
    let r = h
        .http
        .post(h.sb.token_url())
        .json(
            &json!({"grant_type": "client_credential", "client_id": "local-provider",
            "client_secret": "local-secret", "audience": AUD}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let t = v["access_token"].as_str().unwrap();
    assert_eq!(
        h.api_with("GET", &format!("{P}/providers/{PROVIDER}"), None, KEY, t)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn po_wrong_or_missing_api_key_is_a_gateway_403() {
    let h = start().await;
    for key in ["", "local-api-key", "nope"] {
        let a = h
            .api_with(
                "GET",
                &format!("{P}/providers/{PROVIDER}"),
                None,
                key,
                &h.token,
            )
            .await;
        assert_eq!(a.status, 403);
        assert_eq!(a.body["message"], "Forbidden");
    }
}

#[tokio::test]
async fn po_provider_patch_replaces_the_whole_configuration() {
    let h = start().await;
    let a = h
        .api("GET", &format!("{P}/providers/{PROVIDER}"), None)
        .await;
    assert_eq!(a.status, 200);
    assert!(a.body["error"].is_null() && a.body["meta"].is_null());
    let mut p = a.body["data"].clone();
    assert_eq!(p["providerId"], PROVIDER);
    p.as_object_mut().unwrap().remove("logoSvg");
    p["name"] = json!("Renamed");
    p["unknownMember"] = json!({"kept": true});
    let a = h
        .api(
            "PATCH",
            &format!("{P}/providers/{PROVIDER}"),
            Some(&json!({"data": p})),
        )
        .await;
    assert_eq!(a.status, 204);
    let a = h
        .api("GET", &format!("{P}/providers/{PROVIDER}"), None)
        .await;
    assert_eq!(a.body["data"]["name"], "Renamed");
    assert!(
        a.body["data"].get("logoSvg").is_none(),
        "omitted members are removed"
    );
    assert_eq!(a.body["data"]["unknownMember"]["kept"], true);
    let a = h
        .api(
            "PATCH",
            &format!("{P}/providers/{PROVIDER}"),
            Some(&json!({"data": {"name": "Only"}})),
        )
        .await;
    assert_eq!(a.status, 204);
    let a = h
        .api("GET", &format!("{P}/providers/{PROVIDER}"), None)
        .await;
    assert_eq!(
        a.body["data"],
        json!({"name": "Only", "providerId": PROVIDER})
    );
}

#[tokio::test]
async fn po_provider_patch_refuses_rules_it_cannot_apply() {
    let h = start().await;
    let rule = |re: &str, opt: &str| {
        json!({"data": {"accountType": {"validationRules": [{"ruleId": "r", "validation": {
            "apiPath": "CreditorPut", "jsonPath": "$.data.creditor.name", "optionality": opt, "regex": re}}]}}})
    };
    let a = h
        .api(
            "PATCH",
            &format!("{P}/providers/{PROVIDER}"),
            Some(&rule("^(", "Required")),
        )
        .await;
    assert_eq!((a.status, a.code()), (400, "ValidationError"));
    let a = h
        .api(
            "PATCH",
            &format!("{P}/providers/{PROVIDER}"),
            Some(&rule("^a$", "Sometimes")),
        )
        .await;
    assert_eq!(a.status, 400);
    let other = Uuid::new_v4();
    let a = h.api("GET", &format!("{P}/providers/{other}"), None).await;
    assert_eq!((a.status, a.code()), (404, "NotFoundError"));
}

#[tokio::test]
async fn po_batch_get_has_the_payments_with_string_amounts() {
    let h = start().await;
    let (batch, payments) = h.batch(2).await;
    let a = h
        .api("GET", &format!("{P}/batchpayments/{batch}"), None)
        .await;
    assert_eq!(a.status, 200);
    let d = &a.body["data"];
    assert_eq!(d["status"], "Received");
    assert_eq!(d["paymentCount"], 2);
    assert_eq!(d["providerId"], PROVIDER);
    assert!(d["links"]["authorise"].is_null());
    let p = &d["payments"][0];
    assert_eq!(p["paymentId"], payments[0].to_string());
    assert_eq!(p["status"], "Received");
    assert_eq!(p["instructedAmount"]["amount"], "10.00");
    assert!(p["paymentCompletedDate"].is_null());
    let a = h
        .api(
            "GET",
            &format!("{P}/batchpayments/{}", Uuid::new_v4()),
            None,
        )
        .await;
    assert_eq!((a.status, a.code()), (404, "NotFoundError"));
}

#[tokio::test]
async fn po_batch_patch_moves_statuses_and_default_status_reaches_unlisted_payments() {
    let h = start().await;
    let (batch, p) = h.batch(3).await;
    let body = json!({"data": {"defaultStatus": "Processing", "extendedStatus": "Submitted",
        "payments": [{"paymentId": p[0], "status": "Rejected", "extendedStatus": "ValidationFailed: x"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!(a.status, 204);
    let d = h
        .api("GET", &format!("{P}/batchpayments/{batch}"), None)
        .await
        .body["data"]
        .clone();
    assert_eq!(d["status"], "Processing");
    assert_eq!(d["payments"][0]["status"], "Rejected");
    assert_eq!(
        d["payments"][1]["status"], "Processing",
        "unlisted follows defaultStatus"
    );
    let body = json!({"data": {"defaultStatus": "PartiallyPaid", "payments": [
        {"paymentId": p[1], "status": "Paid", "paymentCompletedDate": "2025-03-05T14:03:00Z"},
        {"paymentId": p[2], "status": "Failed", "extendedStatus": "AM04: Insufficient funds"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!(a.status, 204);
    let d = h
        .api("GET", &format!("{P}/batchpayments/{batch}"), None)
        .await
        .body["data"]
        .clone();
    assert_eq!(d["status"], "PartiallyPaid");
    assert_eq!(
        d["payments"][1]["paymentCompletedDate"],
        "2025-03-05T14:03:00Z"
    );
    assert!(
        h.violations().await.is_empty(),
        "{:?}",
        h.violations().await
    );
}

#[tokio::test]
async fn po_illegal_transition_refuses_the_whole_patch() {
    let h = start().await;
    let (batch, p) = h.batch(2).await;
    // p[0] → Processing is legal, p[1] Received → Paid is not: nothing is applied.
    let body = json!({"data": {"payments": [
        {"paymentId": p[0], "status": "Processing"},
        {"paymentId": p[1], "status": "Paid", "paymentCompletedDate": "2025-03-05T14:03:00Z"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!((a.status, a.code()), (409, "InvalidStatusTransition"));
    let d = h
        .api("GET", &format!("{P}/batchpayments/{batch}"), None)
        .await
        .body["data"]
        .clone();
    assert_eq!(d["payments"][0]["status"], "Received");
    let a = h
        .api(
            "PATCH",
            &format!("{P}/batchpayments/{batch}"),
            Some(&json!({"data": {"defaultStatus": "Paid"}})),
        )
        .await;
    assert_eq!(a.status, 409, "batch Received → Paid");
    assert_eq!(
        h.violation_kinds().await,
        vec!["illegalTransition", "illegalTransition"]
    );
}

#[tokio::test]
async fn po_status_flows_are_configurable() {
    let mut c = cfg();
    c.payments_out.status_flows = serde_json::from_value(json!({
        "payment": {"Received": ["Processing", "Failed"], "Processing": ["Paid", "Failed"]},
        "subscription": {"Received": ["AwaitingAuthorisation", "Authorised"],
                         "AwaitingAuthorisation": ["Authorised"]}}))
    .unwrap();
    let h = start_with(c).await;
    let (batch, p) = h.batch(2).await;
    let patch =
        |pid: Uuid, to: &str| json!({"data": {"payments": [{"paymentId": pid, "status": to}]}});
    let path = format!("{P}/batchpayments/{batch}");
    let a = h.api("PATCH", &path, Some(&patch(p[0], "Rejected"))).await;
    assert_eq!(
        (a.status, a.code()),
        (409, "InvalidStatusTransition"),
        "the built-in table allows it; this one does not"
    );
    let a = h.api("PATCH", &path, Some(&patch(p[1], "Failed"))).await;
    assert_eq!(
        a.status, 204,
        "this table allows what the built-in one refuses"
    );
    let a = h
        .api(
            "PATCH",
            &path,
            Some(&json!({"data": {"defaultStatus": "Processing"}})),
        )
        .await;
    assert_eq!(a.status, 204, "batches keep the built-in table");
    let sub = h.received_subscription().await;
    assert_eq!(h.patch_subscription(sub, "Rejected").await, 409);
    assert_eq!(h.patch_subscription(sub, "Authorised").await, 204);
}

#[tokio::test]
async fn po_repeated_status_is_a_no_op() {
    let h = start().await;
    let (batch, p) = h.batch(1).await;
    for _ in 0..2 {
        let body = json!({"data": {"defaultStatus": "Processing", "payments": [{"paymentId": p[0], "status": "Processing"}]}});
        let a = h
            .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
            .await;
        assert_eq!(a.status, 204);
    }
    let paid = json!({"data": {"defaultStatus": "Paid", "payments": [{"paymentId": p[0], "status": "Paid", "paymentCompletedDate": "2025-03-05"}]}});
    for _ in 0..2 {
        let a = h
            .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&paid))
            .await;
        assert_eq!(a.status, 204);
    }
    assert!(h.violations().await.is_empty());
}

#[tokio::test]
async fn po_paid_without_completion_date_is_refused_and_recorded() {
    let h = start().await;
    let (batch, p) = h.batch(1).await;
    h.api(
        "PATCH",
        &format!("{P}/batchpayments/{batch}"),
        Some(&json!({"data": {"defaultStatus": "Processing"}})),
    )
    .await;
    let body = json!({"data": {"payments": [{"paymentId": p[0], "status": "Paid"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!((a.status, a.code()), (400, "ValidationError"));
    assert_eq!(h.violation_kinds().await, vec!["paidWithoutCompletionDate"]);
    let body = json!({"data": {"payments": [{"paymentId": p[0], "status": "Failed", "paymentCompletedDate": "2025-03-05"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!(a.status, 400, "a completion date only goes with Paid");
}

#[tokio::test]
async fn po_unknown_payment_id_is_refused_and_recorded() {
    let h = start().await;
    let (batch, _) = h.batch(1).await;
    let (_, other) = h.batch(1).await;
    let body = json!({"data": {"payments": [{"paymentId": other[0], "status": "Processing"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!(a.status, 400);
    let v = h.violations().await;
    assert_eq!(v[0]["kind"], "unknownPaymentId");
    assert_eq!(v[0]["paymentId"], other[0].to_string());
}

#[tokio::test]
async fn po_quote_is_refused_outside_additional_data() {
    let h = start().await;
    let (batch, p) = h.batch(1).await;
    let body = json!({"data": {"defaultStatus": "Processing", "additionalData": "{\"a\":1}",
        "payments": [{"paymentId": p[0], "status": "Processing", "additionalData": "{\"ref\":\"x\"}"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!(a.status, 204, "additionalData is exempt");
    let body = json!({"data": {"extendedStatus": "say \"hi\""}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!(a.status, 400);
    let v = h.violations().await;
    assert_eq!(v[0]["kind"], "quoteInInput");
    assert!(v[0]["message"].as_str().unwrap().contains("extendedStatus"));
}

#[tokio::test]
async fn po_subscription_transitions_follow_the_table() {
    let h = start().await;
    let org = h.po.create_organisation("Acme").await.unwrap();
    let s =
        h.po.create_subscription(
            org,
            Uuid::parse_str(PROVIDER).unwrap(),
            Some("{\"legalName\":\"Acme\"}"),
        )
        .await
        .unwrap();
    let id = s["data"]["subscriptionId"].as_str().unwrap().to_string();
    let a = h.api("GET", &format!("{P}/subscriptions/{id}"), None).await;
    assert_eq!(a.body["data"]["status"], "Received");
    assert_eq!(a.body["data"]["additionalData"], "{\"legalName\":\"Acme\"}");
    let body = json!({"data": {"status": "AwaitingAuthorisation", "links": {"authorise": "https://po.eb.test/authorise/k3J9",
        "authoriseIssuedAt": "2025-03-04T09:00:05Z", "authoriseExpiresAt": "2025-03-11T09:00:05Z"}}});
    assert_eq!(
        h.api("PATCH", &format!("{P}/subscriptions/{id}"), Some(&body))
            .await
            .status,
        204
    );
    let a = h.api("GET", &format!("{P}/subscriptions/{id}"), None).await;
    assert_eq!(
        a.body["data"]["links"]["authorise"],
        "https://po.eb.test/authorise/k3J9"
    );
    let a = h
        .api(
            "PATCH",
            &format!("{P}/subscriptions/{id}"),
            Some(&json!({"data": {"status": "Suspended"}})),
        )
        .await;
    assert_eq!((a.status, a.code()), (409, "InvalidStatusTransition"));
    for (to, code) in [
        ("Authorised", 204),
        ("Suspended", 204),
        ("Authorised", 204),
        ("Cancelled", 204),
        ("Authorised", 409),
    ] {
        let a = h
            .api(
                "PATCH",
                &format!("{P}/subscriptions/{id}"),
                Some(&json!({"data": {"status": to}})),
            )
            .await;
        assert_eq!(a.status, code, "→ {to}");
    }
}

#[tokio::test]
async fn po_subscription_link_needs_its_issue_and_expiry_times() {
    let h = start().await;
    let id = h.awaiting_with_link(60).await;
    for links in [
        json!({"authorise": "https://po.eb.test/authorise/x"}),
        json!({"authorise": "https://po.eb.test/authorise/x", "authoriseIssuedAt": "2025-03-04T09:00:05Z",
               "authoriseExpiresAt": "next week"}),
        json!({"authorise": "https://po.eb.test/authorise/x", "authoriseIssuedAt": "2025-03-04T09:00:05Z",
               "authoriseExpiresAt": "2025-03-04T09:00:05Z"}),
    ] {
        let a = h
            .api(
                "PATCH",
                &format!("{P}/subscriptions/{id}"),
                Some(&json!({"data": {"links": links}})),
            )
            .await;
        assert_eq!((a.status, a.code()), (400, "ValidationError"), "{links}");
    }
}

#[tokio::test]
async fn link_left_awaiting_authorisation_after_expiry_is_recorded() {
    let h = start().await;
    let left = h.awaiting_with_link(60).await;
    let rejected = h.awaiting_with_link(60).await;
    h.advance_s(100).await;
    assert!(h.violations().await.is_empty(), "still within the grace");
    assert_eq!(h.patch_subscription(rejected, "Rejected").await, 204);
    h.advance_s(600).await;
    let v = h.violations().await;
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0]["kind"], "linkExpiryMissed");
    assert_eq!(v[0]["subscriptionId"], left.to_string());
    assert_eq!(h.violations().await.len(), 1, "recorded once");
}

#[tokio::test]
async fn authorising_through_an_expired_link_is_recorded() {
    let h = start().await;
    let in_grace = h.awaiting_with_link(60).await;
    let late = h.awaiting_with_link(120).await;
    h.advance_s(100).await;
    assert_eq!(h.patch_subscription(in_grace, "Authorised").await, 204);
    assert!(h.violations().await.is_empty(), "a login begun in time");
    h.advance_s(700).await;
    assert_eq!(
        h.patch_subscription(late, "Authorised").await,
        204,
        "Sage takes it"
    );
    assert_eq!(h.violation_kinds().await, vec!["authorisedAfterLinkExpiry"]);
}

#[tokio::test]
async fn po_messaging_answers_202_and_reaches_the_product() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let body = json!({"subscriptionId": sub, "correlationId": "prod-req-1",
        "data": {"creditor": {"creditorId": "cre_1", "name": "Northwind", "status": "Active"}}});
    let a = h
        .api("POST", &format!("{M}/creditorputs"), Some(&body))
        .await;
    assert_eq!(a.status, 202);
    let inbox = h.inbox().await;
    let item = inbox.iter().find(|i| i["type"] == "creditorputs").unwrap();
    assert_eq!(item["correlationId"], "prod-req-1");
    assert_eq!(item["data"]["creditor"]["creditorId"], "cre_1");
    let a = h.api("POST", &format!("{M}/nosuchop"), Some(&body)).await;
    assert_eq!(a.status, 404);
    let body = json!({"subscriptionId": Uuid::new_v4(), "data": {}});
    assert_eq!(
        h.api("POST", &format!("{M}/notifications"), Some(&body))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn po_messaging_answers_of_the_wrong_shape_are_recorded() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let good = [
        (
            "debtoraccountputs",
            json!({"debtor": {"debtorAccountId": "dac_1", "status": "Active"},
            "legalEntity": {"name": "Acme"}}),
        ),
        (
            "debtoraccountputs",
            json!({"debtor": {"debtorAccountId": "dac_2", "status": "Rejected",
            "statusReason": "AccountNotInConsent"}}),
        ),
        (
            "creditorputs",
            json!({"creditor": {"creditorId": "cre_1", "status": "PendingAuthorisation"},
            "links": {"authorise": "https://po.eb.test/payee/1", "authoriseIssuedAt": null, "authoriseExpiresAt": null}}),
        ),
        (
            "debtoraccountlistqueryresponses",
            json!({"debtor": {"debtorAccountId": "dac_1", "status": "Active"},
            "query": {"correlationId": "q-1", "index": 0, "total": 1}}),
        ),
        (
            "creditorlistqueryresponses",
            json!({"creditor": null,
            "query": {"correlationId": "q-2", "index": 0, "total": 0}}),
        ),
        (
            "creditordeletes",
            json!({"creditorId": "cre_1", "status": "Deleted"}),
        ),
        (
            "notifications",
            json!({"resourceType": "payment", "resourceId": "e8d1", "event": "Returned",
            "status": "Paid", "message": null}),
        ),
    ];
    for (op, data) in &good {
        let body = json!({"subscriptionId": sub, "correlationId": "c-1", "data": data});
        let a = h.api("POST", &format!("{M}/{op}"), Some(&body)).await;
        assert_eq!(a.status, 202);
    }
    assert!(
        h.violations().await.is_empty(),
        "{:?}",
        h.violations().await
    );
    let bad = [
        (
            "debtoraccountputs",
            json!({"debtor": {"status": "Active"}}),
            "debtorAccountId",
        ),
        (
            "debtoraccountputs",
            json!({"debtor": {"debtorAccountId": "d", "status": "active"}}),
            "status",
        ),
        (
            "debtoraccountputs",
            json!({"debtor": {"debtorAccountId": "d", "status": "Rejected"}}),
            "statusReason",
        ),
        (
            "creditorputs",
            json!({"creditor": {"creditorId": "c", "status": "PendingAuthorisation"}}),
            "links.authorise",
        ),
        (
            "creditorputs",
            json!({"name": "Northwind"}),
            "data.creditor",
        ),
        (
            "creditorlistqueryresponses",
            json!({"creditor": {"creditorId": "c", "status": "Active"}}),
            "query",
        ),
        (
            "debtoraccountlistqueryresponses",
            json!({"debtor": {"debtorAccountId": "d", "status": "Active"},
            "query": {"correlationId": "q", "index": 0, "total": 0}}),
            "null when total is 0",
        ),
        (
            "debtoraccountdeletes",
            json!({"status": "Deleted"}),
            "debtorAccountId",
        ),
        (
            "notifications",
            json!({"resourceType": "payment"}),
            "resourceId",
        ),
    ];
    for (i, (op, data, what)) in bad.iter().enumerate() {
        let body = json!({"subscriptionId": sub, "correlationId": "c-1", "data": data});
        let a = h.api("POST", &format!("{M}/{op}"), Some(&body)).await;
        assert_eq!(a.status, 202, "recorded, not refused");
        let v = h.violations().await;
        assert_eq!(v.len(), i + 1, "{op} {data}");
        assert_eq!(v[i]["kind"], "invalidMessageAnswer");
        let m = v[i]["message"].as_str().unwrap();
        assert!(m.starts_with(op) && m.contains(what), "{m}");
    }
    let body = json!({"subscriptionId": sub,
        "data": {"creditor": {"creditorId": "c", "status": "Active"}}});
    h.api("POST", &format!("{M}/creditorputs"), Some(&body))
        .await;
    let v = h.violations().await;
    assert!(
        v.last().unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("correlationId")
    );
}

#[tokio::test]
async fn po_rate_limit_is_per_key_over_provider_and_messaging_calls() {
    let mut c = cfg();
    c.payments_out.rate_per_s = 10.0;
    let h = start_with(c).await;
    let sub_body = json!({"subscriptionId": Uuid::new_v4(), "data": {}});
    let mut statuses = Vec::new();
    for i in 0..12 {
        let a = if i % 2 == 0 {
            h.api("GET", &format!("{P}/providers/{PROVIDER}"), None)
                .await
        } else {
            h.api("POST", &format!("{M}/notifications"), Some(&sub_body))
                .await
        };
        statuses.push(a.status);
        if a.status == 429 {
            assert_eq!(a.code(), "TooManyRequests");
            let ra: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(ra >= 1);
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    assert!(
        h.violation_kinds()
            .await
            .iter()
            .all(|k| k == "rateExceeded" || k == "invalidRequest")
    );
    assert!(
        h.violation_kinds()
            .await
            .contains(&"rateExceeded".to_string())
    );
}

#[tokio::test]
async fn po_body_over_5_mb_is_413_and_recorded() {
    let h = start().await;
    let big = json!({"data": {"name": "x".repeat(5 * 1024 * 1024 + 10)}});
    let a = h
        .api("PATCH", &format!("{P}/providers/{PROVIDER}"), Some(&big))
        .await;
    assert_eq!((a.status, a.code()), (413, "PayloadTooLarge"));
    assert_eq!(h.violation_kinds().await, vec!["oversizeBody"]);
}

#[tokio::test]
async fn po_fapi_interaction_id_is_echoed() {
    let h = start().await;
    let r = h
        .http
        .get(h.url(&format!("{P}/providers/{PROVIDER}")))
        .header("x-api-key", KEY)
        .header(
            "x-fapi-interaction-id",
            "5b0e6f44-0000-4000-8000-000000000001",
        )
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["x-fapi-interaction-id"],
        "5b0e6f44-0000-4000-8000-000000000001"
    );
}

#[tokio::test]
async fn po_a_token_per_request_is_recorded() {
    let h = start().await;
    for _ in 0..6 {
        let t = h.new_token(AUD).await;
        h.api_with("GET", &format!("{P}/providers/{PROVIDER}"), None, KEY, &t)
            .await;
    }
    assert_eq!(h.violation_kinds().await, vec!["tokenPerRequest"]);
}

#[tokio::test]
async fn po_wrong_final_batch_status_is_recorded() {
    let h = start().await;
    let (batch, p) = h.batch(2).await;
    h.api(
        "PATCH",
        &format!("{P}/batchpayments/{batch}"),
        Some(&json!({"data": {"defaultStatus": "Processing"}})),
    )
    .await;
    let body = json!({"data": {"defaultStatus": "Paid", "payments": [
        {"paymentId": p[0], "status": "Paid", "paymentCompletedDate": "2025-03-05"},
        {"paymentId": p[1], "status": "Failed"}]}});
    let a = h
        .api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    assert_eq!(a.status, 204, "recorded, not refused");
    assert_eq!(h.violation_kinds().await, vec!["wrongFinalBatchStatus"]);
}

// ------------------------------------------------------------------ 2. the product's side

#[tokio::test]
async fn product_batches_are_capped_at_2000_and_at_maximum_payment_count() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let big = sandbox::payments_out::cli::demo_batch(sub, 2001, "1.00", "dac_1");
    let a = h.po.submit_batch(&big, None, false).await.unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["detail"][0]["code"], "TooManyPayments");
    let ok = sandbox::payments_out::cli::demo_batch(sub, 2000, "1.00", "dac_1");
    assert_eq!(
        h.po.submit_batch(&ok, None, false).await.unwrap().status,
        201
    );
    let mut p = h
        .api("GET", &format!("{P}/providers/{PROVIDER}"), None)
        .await
        .body["data"]
        .clone();
    p["maximumPaymentCount"] = json!(3);
    assert_eq!(
        h.api(
            "PATCH",
            &format!("{P}/providers/{PROVIDER}"),
            Some(&json!({"data": p}))
        )
        .await
        .status,
        204
    );
    let four = sandbox::payments_out::cli::demo_batch(sub, 4, "1.00", "dac_1");
    assert_eq!(
        h.po.submit_batch(&four, None, false).await.unwrap().status,
        400
    );
    assert_eq!(
        h.po.submit_batch(&four, None, true).await.unwrap().status,
        201,
        "x-sim-skip-validation"
    );
}

#[tokio::test]
async fn product_idempotency_key_is_kept_two_weeks() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let data = sandbox::payments_out::cli::demo_batch(sub, 1, "1.00", "dac_1");
    let a = h.po.submit_batch(&data, Some("k-1"), false).await.unwrap();
    let b = h.po.submit_batch(&data, Some("k-1"), false).await.unwrap();
    assert_eq!(b.status, 201);
    assert_eq!(a.body["data"]["batchId"], b.body["data"]["batchId"]);
    h.po.post("/_sandbox/clock", &json!({"advanceS": 14 * 24 * 3600 + 1}))
        .await
        .unwrap();
    let c = h.po.submit_batch(&data, Some("k-1"), false).await.unwrap();
    assert_ne!(a.body["data"]["batchId"], c.body["data"]["batchId"]);
}

#[tokio::test]
async fn product_batches_need_an_authorised_subscription() {
    let h = start().await;
    let sub = h.received_subscription().await;
    let data = sandbox::payments_out::cli::demo_batch(sub, 1, "1.00", "dac_1");
    let a = h.po.submit_batch(&data, None, false).await.unwrap();
    assert_eq!(
        (a.status, a.body["error"]["code"].as_str()),
        (409, Some("SubscriptionNotAuthorised"))
    );
    assert_eq!(
        h.po.submit_batch(&data, None, true).await.unwrap().status,
        201
    );
}

#[tokio::test]
async fn product_batches_get_the_provider_and_instrument_rules_and_the_quote_rule() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let mut data = sandbox::payments_out::cli::demo_batch(sub, 2, "1.00", "dac_1");
    data["payments"][1]["creditor"]["bankAccount"]["routingNumber"] = json!("12345678");
    let a = h.po.submit_batch(&data, None, false).await.unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(a.body["error"]["detail"][0]["code"], "ach-routing-number");
    assert_eq!(
        a.body["error"]["detail"][0]["target"],
        "data.payments[1].creditor.bankAccount.routingNumber"
    );
    // The provider's own rule on the same path wins over the instrument's.
    let mut p = h
        .api("GET", &format!("{P}/providers/{PROVIDER}"), None)
        .await
        .body["data"]
        .clone();
    p["accountType"]["validationRules"] = json!([{"ruleId": "eb-any-routing", "validation": {"apiPath": "BatchPayments",
        "jsonPath": "$.data.payments[*].creditor.bankAccount.routingNumber", "optionality": "Required", "regex": "^[0-9]{8,9}$"}}]);
    h.api(
        "PATCH",
        &format!("{P}/providers/{PROVIDER}"),
        Some(&json!({"data": p})),
    )
    .await;
    assert_eq!(
        h.po.submit_batch(&data, None, false).await.unwrap().status,
        201
    );
    let mut q = sandbox::payments_out::cli::demo_batch(sub, 1, "1.00", "dac_1");
    q["payments"][0]["creditor"]["name"] = json!("North \"wind\"");
    assert_eq!(
        h.po.submit_batch(&q, None, false).await.unwrap().status,
        400
    );
}

#[tokio::test]
async fn product_messages_reach_the_connector_as_notifications() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let data = json!({"creditor": {"externalId": "V-2001", "name": "Northwind", "creditorType": "Organisation",
        "bankAccount": {"routingNumber": "021000021", "accountNumber": "000123456789"}}});
    let a =
        h.po.message("creditorputs", sub, "prod-req-88413", &data)
            .await
            .unwrap();
    assert_eq!(a.status, 202);
    let hits = h.conn.wait("/notifications", 1).await;
    let n = hits
        .iter()
        .find(|x| x.body["type"] == "creditorputs")
        .unwrap();
    assert_eq!(n.body["message"]["correlationId"], "prod-req-88413");
    assert_eq!(n.body["message"]["data"], data);
    assert_eq!(n.body["subscriptionId"], sub.to_string());
    assert_eq!(n.body["providerId"], PROVIDER);
    assert_eq!(n.body["application"], "sage.intacct");
    let mut bad = data.clone();
    bad["creditor"]["bankAccount"]["routingNumber"] = json!("1");
    assert_eq!(
        h.po.message("creditorputs", sub, "c", &bad)
            .await
            .unwrap()
            .status,
        400,
        "CreditorPut rules"
    );
    assert_eq!(
        h.po.message("nosuch", sub, "c", &data)
            .await
            .unwrap()
            .status,
        404
    );
}

#[tokio::test]
async fn product_inbox_has_what_pos_would_tell_the_product() {
    let h = start().await;
    let (batch, p) = h.batch(1).await;
    let body = json!({"data": {"defaultStatus": "Processing", "payments": [{"paymentId": p[0], "status": "Processing"}]}});
    h.api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
        .await;
    let inbox = h.inbox().await;
    let kinds: Vec<&str> = inbox.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "subscriptionStatus").count(),
        3,
        "Received, AwaitingAuthorisation, Authorised"
    );
    let last = inbox.last().unwrap();
    assert_eq!(last["type"], "batchStatus");
    assert_eq!(last["data"]["status"], "Processing");
    assert_eq!(last["data"]["payments"][0]["status"], "Processing");
    let r =
        h.po.call(
            "POST",
            "/v3/organisations",
            Some(&json!({"data": {"name": "x"}})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201);
    let r =
        h.po.clone()
            .with_bearer("wrong")
            .call("GET", "/v3/localinstruments", None, &[])
            .await
            .unwrap();
    assert_eq!(r.status, 401);
}

// ------------------------------------------------------------------ 3. deliveries

#[tokio::test]
async fn notifications_carry_the_sage_id_token_and_the_custom_header() {
    let h = start().await;
    let (batch, _) = h.batch(1).await;
    let hits = h.conn.wait("/notifications", 1).await;
    let n = &hits[0];
    assert_eq!(n.body["type"], "batchpayments");
    assert_eq!(n.body["message"]["data"]["batchId"], batch.to_string());
    assert_eq!(n.headers["x-local-po-key"], "local-po-header-value");
    let t = n.headers["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(t).unwrap().alg,
        jsonwebtoken::Algorithm::RS256
    );
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(t)
        .unwrap()
        .claims;
    assert_eq!(claims["iss"], h.sb.issuer());
    assert_eq!(claims["aud"], "local-po-connector");
    // The header's name follows the provider configuration.
    let mut p = h
        .api("GET", &format!("{P}/providers/{PROVIDER}"), None)
        .await
        .body["data"]
        .clone();
    p["providerHeaderKeyName"] = json!("x-eb-sage-key");
    h.api(
        "PATCH",
        &format!("{P}/providers/{PROVIDER}"),
        Some(&json!({"data": p})),
    )
    .await;
    h.batch(1).await;
    let hits = h.conn.wait("/notifications", 2).await;
    assert!(
        hits.iter()
            .any(|x| x.headers.get("x-eb-sage-key").is_some())
    );
}

#[tokio::test]
async fn new_subscriptions_go_to_the_subscription_url() {
    let h = start().await;
    let org = h.po.create_organisation("Acme").await.unwrap();
    let s =
        h.po.create_subscription(
            org,
            Uuid::parse_str(PROVIDER).unwrap(),
            Some("{\"taxId\":\"12-3456789\"}"),
        )
        .await
        .unwrap();
    let hits = h.conn.wait("/subscription", 1).await;
    let d = &hits[0].body["data"];
    assert_eq!(d["subscriptionId"], s["data"]["subscriptionId"]);
    assert_eq!(d["organisationId"], org.to_string());
    assert_eq!(d["providerId"], PROVIDER);
    assert_eq!(d["status"], "Received");
    assert_eq!(d["additionalData"], "{\"taxId\":\"12-3456789\"}");
    assert!(hits[0].headers.get("authorization").is_some());
}

#[tokio::test]
async fn deliveries_are_retried_after_errors_and_timeouts() {
    let mut c = cfg();
    c.payments_out.notification_timeout_ms = 200;
    let h = start_with(c).await;
    let sub = h.authorised_subscription().await;
    h.conn.wait("/subscription", 1).await;
    h.conn.rec.lock().answers.extend([500, 503]);
    h.batch_for(sub, 1).await;
    let hits = h.conn.wait("/notifications", 3).await;
    assert_eq!(hits.len(), 3);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        h.conn.hits("/notifications").len(),
        3,
        "delivered on the third attempt"
    );
    let d = h.po.get("/_sandbox/payments-out/deliveries").await.unwrap();
    let statuses: Vec<Value> = d
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "batchpayments")
        .map(|x| x["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(503), json!(201)]);
    // A connector slower than the timeout gets 1 + 3 attempts.
    h.conn.rec.lock().delay_ms = 400;
    h.po.message("creditorlistqueries", sub, "q", &json!({}))
        .await
        .unwrap();
    for _ in 0..200 {
        let d = h.po.get("/_sandbox/payments-out/deliveries").await.unwrap();
        let t: Vec<Value> = d
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "creditorlistqueries")
            .cloned()
            .collect();
        if t.len() == 4 {
            assert!(t.iter().all(|x| x["error"] == "timeout"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no 4 timed-out attempts");
}

#[tokio::test]
async fn negative_deliveries_can_be_sent_by_hand() {
    let h = start().await;
    let out =
        h.po.post(
            "/_sandbox/payments-out/notify",
            &json!({"type": "batchpayments", "data": {"batchId": Uuid::new_v4()},
        "token": "algNone", "header": "wrongValue"}),
        )
        .await
        .unwrap();
    assert_eq!(out["finalStatus"], 201);
    let hits = h.conn.wait("/notifications", 1).await;
    assert_eq!(
        hits[0].headers["x-local-po-key"],
        "local-po-header-value-wrong"
    );
}

// ------------------------------------------------------------------ 4. the demo bank's rails

#[tokio::test]
async fn bank_put_is_idempotent_by_payment_id() {
    let h = start().await;
    let (_, p) = h.batch(1).await;
    let (consent, account) = h.consent().await;
    let body = bank_body(&consent, &account, "BILL-1", "1250.00");
    let a = h
        .bank("PUT", &format!("/v1/payments/{}", p[0]), Some(&body))
        .await;
    assert_eq!(a.status, 201);
    assert_eq!(a.body["status"], "accepted");
    let b = h
        .bank("PUT", &format!("/v1/payments/{}", p[0]), Some(&body))
        .await;
    assert_eq!(b.status, 200);
    assert_eq!(a.body, b.body);
    let mut other = body.clone();
    other["amount"] = json!("1250.01");
    let c = h
        .bank("PUT", &format!("/v1/payments/{}", p[0]), Some(&other))
        .await;
    assert_eq!(
        (c.status, c.body["error"].as_str()),
        (409, Some("idempotency_conflict"))
    );
    let r = h
        .http
        .put(h.url(&format!("/bank/v1/payments/{}", p[0])))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn bank_refuses_what_it_cannot_pay_with_422() {
    let h = start().await;
    let (_, p) = h.batch(1).await;
    let (consent, account) = h.consent().await;
    let mut body = bank_body(&consent, &account, "BILL-1", "1250.001");
    body["currency"] = json!("EUR");
    let a = h
        .bank("PUT", &format!("/v1/payments/{}", p[0]), Some(&body))
        .await;
    assert_eq!(a.status, 422);
    let codes: Vec<&str> = a.body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, vec!["invalid_amount", "currency_mismatch"]);
    let a = h.bank("GET", &format!("/v1/payments/{}", p[0]), None).await;
    assert_eq!(a.status, 404, "nothing created");
}

#[tokio::test]
async fn bank_settles_debits_and_keeps_a_ledger() {
    let h = start().await;
    let (_, p) = h.batch(1).await;
    let (consent, account) = h.consent().await;
    let before =
        h.po.put(
            &format!("/_sandbox/payments-out/bank/accounts/{account}"),
            &json!({}),
        )
        .await
        .unwrap();
    let id = p[0].to_string();
    h.bank(
        "PUT",
        &format!("/v1/payments/{id}"),
        Some(&bank_body(&consent, &account, "BILL-1", "25.50")),
    )
    .await;
    let a = h.wait_bank_status(&id, "settled").await;
    assert!(a.body["completedAt"].is_string());
    assert_eq!(a.body["eventSeq"], 3, "accepted, submitted, settled");
    let after =
        h.po.put(
            &format!("/_sandbox/payments-out/bank/accounts/{account}"),
            &json!({}),
        )
        .await
        .unwrap();
    let diff: rust_decimal::Decimal = before["balance"]
        .as_str()
        .unwrap()
        .parse::<rust_decimal::Decimal>()
        .unwrap()
        - after["balance"]
            .as_str()
            .unwrap()
            .parse::<rust_decimal::Decimal>()
            .unwrap();
    assert_eq!(diff.to_string(), "25.50");
    let l = h.ledger().await;
    assert_eq!(l.len(), 1);
    assert_eq!(
        (l[0]["paymentId"].as_str(), l[0]["executions"].as_u64()),
        (Some(id.as_str()), Some(1))
    );
    let list = h
        .bank(
            "GET",
            "/v1/payments?updatedSince=2000-01-01T00:00:00Z&limit=1",
            None,
        )
        .await;
    assert_eq!(list.body["payments"][0]["paymentId"], id);
    assert!(list.body["nextCursor"].is_null());
    assert_eq!(
        h.bank("GET", "/v1/payments?limit=501", None).await.status,
        400
    );
    let events = h.conn.wait("/bank/payment-events", 3).await;
    let st: Vec<&str> = events
        .iter()
        .map(|e| e.body["status"].as_str().unwrap())
        .collect();
    assert_eq!(st, vec!["accepted", "submitted", "settled"]);
    assert_eq!(events[0].headers["x-api-key"], "local-bank-events-key");
}

#[tokio::test]
async fn bank_event_pushes_are_bounded_in_flight_and_retried_past_sages_schedule() {
    let mut c = cfg();
    c.payments_out.rails.events_concurrency = 2;
    // Five retries where Sage's deliveries make three.
    c.payments_out.rails.events_backoff_ms = vec![10, 20, 40, 80, 160];
    let h = start_with(c).await;
    let (_, p) = h.batch(4).await;
    let (consent, account) = h.consent().await;
    {
        let mut r = h.conn.rec.lock();
        r.delay_ms = 50;
        // Each event's first four attempts fail: it is delivered by the fifth.
        r.fail_each_event = 4;
    }
    for (i, id) in p.iter().enumerate() {
        h.bank(
            "PUT",
            &format!("/v1/payments/{id}"),
            Some(&bank_body(&consent, &account, &format!("C-{i}"), "1.00")),
        )
        .await;
    }
    let hits = h.conn.wait("/bank/payment-events", 5 * 12).await;
    let mut delivered: Vec<String> = hits.iter().map(|e| e.body["eventId"].to_string()).collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(delivered.len(), 12, "every event of 4 payments delivered");
    assert_eq!(
        h.conn.rec.lock().max_in_flight,
        2,
        "never more pushes in flight than eventsConcurrency (and the bound reached)"
    );
    // The last answers reach the log just after the connector saw the hits.
    let mut ok = Vec::new();
    for _ in 0..200 {
        let d = h.po.get("/_sandbox/payments-out/deliveries").await.unwrap();
        ok = d
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["kind"] == "bankPaymentEvent" && x["status"] == 204)
            .map(|x| x["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>();
        if ok.len() >= 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attempts = *ok.iter().max().unwrap();
    assert_eq!(
        (ok.len(), attempts),
        (12, 5),
        "each delivered once, on the fifth attempt"
    );
}

#[tokio::test]
async fn bank_delete_cancels_only_before_submission() {
    let mut c = cfg();
    c.payments_out.rails.settlement_delay_ms = 400;
    let h = start_with(c).await;
    let (_, p) = h.batch(2).await;
    let (consent, account) = h.consent().await;
    for (i, id) in p.iter().enumerate() {
        h.bank(
            "PUT",
            &format!("/v1/payments/{id}"),
            Some(&bank_body(&consent, &account, &format!("B-{i}"), "1.00")),
        )
        .await;
    }
    let a = h
        .bank("DELETE", &format!("/v1/payments/{}", p[0]), None)
        .await;
    assert_eq!(
        (a.status, a.body["status"].as_str()),
        (200, Some("cancelled"))
    );
    h.wait_bank_status(&p[1].to_string(), "submitted").await;
    let a = h
        .bank("DELETE", &format!("/v1/payments/{}", p[1]), None)
        .await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (409, Some("not_cancellable"))
    );
    assert_eq!(
        h.bank("DELETE", &format!("/v1/payments/{}", Uuid::new_v4()), None)
            .await
            .status,
        404
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        h.bank("GET", &format!("/v1/payments/{}", p[0]), None)
            .await
            .body["status"],
        "cancelled"
    );
}

#[tokio::test]
async fn bank_failure_rejection_and_return_rates_are_knobs() {
    let h = start().await;
    let (_, p) = h.batch(3).await;
    let (consent, account) = h.consent().await;
    let mut knobs =
        h.po.get("/_sandbox/payments-out/bank/config")
            .await
            .unwrap();
    for (i, (rate, outcome)) in [
        ("rejectionRate", "rejected"),
        ("failureRate", "failed"),
        ("returnRate", "returned"),
    ]
    .iter()
    .enumerate()
    {
        knobs["rejectionRate"] = json!(0.0);
        knobs["failureRate"] = json!(0.0);
        knobs["returnRate"] = json!(0.0);
        knobs[*rate] = json!(1.0);
        h.po.put("/_sandbox/payments-out/bank/config", &knobs)
            .await
            .unwrap();
        let id = p[i].to_string();
        h.bank(
            "PUT",
            &format!("/v1/payments/{id}"),
            Some(&bank_body(&consent, &account, &format!("R-{i}"), "2.00")),
        )
        .await;
        let a = h.wait_bank_status(&id, outcome).await;
        assert!(a.body["reasonCode"].is_string());
    }
    let l = h.ledger().await;
    let exec: Vec<u64> = l
        .iter()
        .map(|e| e["executions"].as_u64().unwrap())
        .collect();
    assert_eq!(
        exec,
        vec![0, 0, 1],
        "only the returned one left the account"
    );
}

#[tokio::test]
async fn bank_consents_can_be_held_for_review_then_decided() {
    let mut c = cfg();
    c.payments_out.rails.consent_review = true;
    let h = start_with(c).await;
    let (consent, _) = h.consent().await;
    let a = h
        .bank("GET", &format!("/v1/consents/{consent}"), None)
        .await;
    assert_eq!(a.body["status"], "pending_review");
    let e =
        h.po.post(
            &format!("/_sandbox/payments-out/bank/consents/{consent}/approve"),
            &json!({}),
        )
        .await
        .unwrap();
    assert_eq!(e["status"], "active");
    assert_eq!(
        h.bank("GET", &format!("/v1/consents/{consent}"), None)
            .await
            .body["status"],
        "active"
    );
    let hits = h.conn.wait("/bank/consent-events", 1).await;
    assert_eq!(hits[0].body["consentId"], consent);
    assert_eq!(hits[0].body["status"], "active");
    let again =
        h.po.call(
            "POST",
            &format!("/_sandbox/payments-out/bank/consents/{consent}/refuse"),
            None,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(again.status, 409, "already decided");
}

/// docs/bank-data-api.yaml, where the payment rails are documented beside the Bank Data API.
fn bank_doc() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/bank-data-api.yaml");
    serde_norway::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Checks `v` has every member the document's schema requires, and `status` in its enum.
fn conforms(doc: &Value, schema: &str, v: &Value) {
    let s = &doc["components"]["schemas"][schema];
    for k in s["required"].as_array().unwrap() {
        let k = k.as_str().unwrap();
        assert!(v.get(k).is_some(), "{schema}.{k} missing in {v}");
    }
    let status = &s["properties"]["status"];
    let allowed = match status.get("$ref").and_then(Value::as_str) {
        Some(r) => doc["components"]["schemas"][r.rsplit('/').next().unwrap()]["enum"].clone(),
        None => status
            .get("enum")
            .cloned()
            .or_else(|| status.get("const").map(|c| json!([c])))
            .unwrap_or(Value::Null),
    };
    if let Some(allowed) = allowed.as_array() {
        assert!(allowed.contains(&v["status"]), "{schema}.status {v}");
    }
}

#[tokio::test]
async fn bank_payment_rails_answer_as_the_bank_api_document_says() {
    let doc = bank_doc();
    let mut c = cfg();
    c.payments_out.rails.settlement_delay_ms = 400;
    let h = start_with(c).await;
    let (_, p) = h.batch(2).await;
    let (consent, account) = h.consent().await;
    for (i, id) in p.iter().enumerate() {
        let body = bank_body(&consent, &account, &format!("D-{i}"), "4.00");
        let a = h
            .bank("PUT", &format!("/v1/payments/{id}"), Some(&body))
            .await;
        assert_eq!(a.status, 201);
        conforms(&doc, "PaymentAccepted", &a.body);
    }
    let d = h
        .bank("DELETE", &format!("/v1/payments/{}", p[1]), None)
        .await;
    assert_eq!(d.status, 200);
    conforms(&doc, "PaymentCancelled", &d.body);
    let settled = h.wait_bank_status(&p[0].to_string(), "settled").await;
    conforms(&doc, "Payment", &settled.body);
    let list = h.bank("GET", "/v1/payments?limit=500", None).await;
    conforms(&doc, "PaymentList", &list.body);
    for item in list.body["payments"].as_array().unwrap() {
        conforms(&doc, "Payment", item);
    }
    let mut bad = bank_body(&consent, &account, "D-9", "0");
    bad["currency"] = json!("EUR");
    let r = h
        .bank(
            "PUT",
            &format!("/v1/payments/{}", Uuid::new_v4()),
            Some(&bad),
        )
        .await;
    assert_eq!(r.status, 422);
    conforms(&doc, "PaymentRefusal", &r.body);
    let codes = &doc["components"]["schemas"]["PaymentRefusal"]["properties"]["reasons"]["items"]["properties"]
        ["code"]["enum"];
    for reason in r.body["reasons"].as_array().unwrap() {
        assert!(
            codes.as_array().unwrap().contains(&reason["code"]),
            "{reason}"
        );
    }
    // accepted, submitted, settled for the first; accepted, cancelled for the second.
    for e in h.conn.wait("/bank/payment-events", 5).await {
        conforms(&doc, "PaymentEvent", &e.body);
    }
    let mut knobs =
        h.po.get("/_sandbox/payments-out/bank/config")
            .await
            .unwrap();
    knobs["consentReview"] = json!(true);
    h.po.put("/_sandbox/payments-out/bank/config", &knobs)
        .await
        .unwrap();
    let (held, _) = h.consent().await;
    h.po.post(
        &format!("/_sandbox/payments-out/bank/consents/{held}/refuse"),
        &json!({}),
    )
    .await
    .unwrap();
    for e in h.conn.wait("/bank/consent-events", 1).await {
        conforms(&doc, "ConsentEvent", &e.body);
    }
}

#[tokio::test]
async fn product_can_ask_for_a_batch_to_be_cancelled() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let (batch, p) = h.batch_for(sub, 2).await;
    let a =
        h.po.message(
            "batchpaymentcancellations",
            sub,
            "cancel-1",
            &json!({"batchId": batch, "paymentIds": [p[1]]}),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 202);
    let hits = h.conn.wait("/notifications", 2).await;
    let n = hits
        .iter()
        .find(|x| x.body["type"] == "batchpaymentcancellations")
        .unwrap();
    assert_eq!(n.body["message"]["data"]["batchId"], batch.to_string());
}

// ------------------------------------------------------------------ 5. violations and lateness

#[tokio::test]
async fn a_payment_executed_twice_is_recorded() {
    let h = start().await;
    let (_, p) = h.batch(1).await;
    let (consent, account) = h.consent().await;
    let body = bank_body(&consent, &account, "BILL-9", "3.00");
    h.bank("PUT", &format!("/v1/payments/{}", p[0]), Some(&body))
        .await;
    // The same payment under an id POS never issued.
    let stray = Uuid::new_v4().to_string();
    h.bank("PUT", &format!("/v1/payments/{stray}"), Some(&body))
        .await;
    h.wait_bank_status(&stray, "settled").await;
    h.wait_bank_status(&p[0].to_string(), "settled").await;
    let kinds = h.violation_kinds().await;
    assert!(kinds.contains(&"unknownPaymentId".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"paymentExecutedTwice".to_string()),
        "{kinds:?}"
    );
    let l = h.ledger().await;
    assert!(l.iter().all(|e| e["executionsOfSamePayment"] == 2));
}

#[tokio::test]
async fn lateness_of_each_patch_is_a_figure_and_a_violation_only_on_request() {
    let mut c = cfg();
    c.payments_out.first_patch_target_ms = 0;
    let h = start_with(c.clone()).await;
    let (batch, p) = h.batch(1).await;
    let (consent, account) = h.consent().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    h.api(
        "PATCH",
        &format!("{P}/batchpayments/{batch}"),
        Some(&json!({"data": {"defaultStatus": "Processing"}})),
    )
    .await;
    h.bank(
        "PUT",
        &format!("/v1/payments/{}", p[0]),
        Some(&bank_body(&consent, &account, "L-1", "1.00")),
    )
    .await;
    let done = h.wait_bank_status(&p[0].to_string(), "settled").await;
    let body = json!({"data": {"defaultStatus": "Paid", "payments": [{"paymentId": p[0], "status": "Paid",
        "paymentCompletedDate": done.body["completedAt"]}]}});
    assert_eq!(
        h.api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
            .await
            .status,
        204
    );
    let l = h.po.get("/_sandbox/payments-out/lateness").await.unwrap();
    assert_eq!(l["count"], 2);
    let kinds: Vec<&str> = l["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["firstPatch", "outcome"]);
    assert_eq!(l["late"], 1, "the first PATCH missed a 0 ms target");
    assert!(
        h.violations().await.is_empty(),
        "not a violation unless asked"
    );
    c.payments_out.lateness_is_violation = true;
    let h = start_with(c).await;
    let (batch, _) = h.batch(1).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    h.api(
        "PATCH",
        &format!("{P}/batchpayments/{batch}"),
        Some(&json!({"data": {"defaultStatus": "Processing"}})),
    )
    .await;
    assert_eq!(h.violation_kinds().await, vec!["latePatch"]);
}

// ------------------------------------------------------------------ 6. faults

#[tokio::test]
async fn fault_duplicate_and_delayed_notifications() {
    let h = start().await;
    h.faults(json!({"notifications": {"duplicate": true, "delayMs": 100}}))
        .await;
    let started = std::time::Instant::now();
    h.batch(1).await;
    let hits = h.conn.wait("/notifications", 2).await;
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(hits[0].body, hits[1].body, "the same notification twice");
}

#[tokio::test]
async fn fault_reordered_notifications() {
    let h = start().await;
    h.faults(json!({"notifications": {"reorderWindowMs": 300}}))
        .await;
    let sub = h.authorised_subscription().await;
    for i in 0..8 {
        h.po.message("creditorlistqueries", sub, &format!("c-{i}"), &json!({}))
            .await
            .unwrap();
    }
    let hits = h.conn.wait("/notifications", 8).await;
    let order: Vec<String> = hits
        .iter()
        .map(|x| {
            x.body["message"]["correlationId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_ne!(order, sorted, "seeded delays reorder them");
}

#[tokio::test]
async fn fault_lost_ack_means_redelivery() {
    let h = start().await;
    h.faults(json!({"notifications": {"lostAckRate": 1.0}}))
        .await;
    h.batch(1).await;
    let hits = h.conn.wait("/notifications", 4).await;
    assert!(hits.iter().all(|x| x.body["id"] == hits[0].body["id"]));
}

#[tokio::test]
async fn fault_batch_404s_for_a_while_after_its_notification() {
    let h = start().await;
    h.faults(json!({"batchNotFoundForS": 60})).await;
    let (batch, _) = h.batch(1).await;
    assert_eq!(
        h.api("GET", &format!("{P}/batchpayments/{batch}"), None)
            .await
            .status,
        404
    );
    h.po.post("/_sandbox/clock", &json!({"advanceS": 61}))
        .await
        .unwrap();
    assert_eq!(
        h.api("GET", &format!("{P}/batchpayments/{batch}"), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn fault_429_bursts_and_5xx() {
    let h = start().await;
    h.faults(json!({"force429": {"retryAfterS": 7, "remaining": 2}}))
        .await;
    let path = format!("{P}/providers/{PROVIDER}");
    for _ in 0..2 {
        let a = h.api("GET", &path, None).await;
        assert_eq!(
            (a.status, a.headers["retry-after"].to_str().unwrap()),
            (429, "7")
        );
    }
    assert_eq!(h.api("GET", &path, None).await.status, 200);
    h.faults(json!({"routes": [{"route": "GET /api-provider-v1/providers/{providerId}", "errorRate": 1.0, "errorStatus": 503, "remaining": 1}]})).await;
    assert_eq!(h.api("GET", &path, None).await.status, 503);
    assert_eq!(h.api("GET", &path, None).await.status, 200);
    assert!(
        h.violations().await.is_empty(),
        "injected answers are not the connector's fault"
    );
}

#[tokio::test]
async fn fault_numeric_amounts_in_batches() {
    let h = start().await;
    let sub = h.authorised_subscription().await;
    let mut data = sandbox::payments_out::cli::demo_batch(sub, 3, "10.00", "dac_1");
    let amounts = ["10.00", "0.10", "9999999999999.999"];
    for (i, a) in amounts.iter().enumerate() {
        data["payments"][i]["instructedAmount"]["amount"] = json!(a);
    }
    let a = h.po.submit_batch(&data, None, true).await.unwrap();
    let (batch, _) = ids_of(&a.body["data"]);
    let path = format!("{P}/batchpayments/{batch}");
    let amount_of =
        |b: &Value, i: usize| b["data"]["payments"][i]["instructedAmount"]["amount"].clone();
    h.faults(json!({"numericAmounts": true})).await;
    let b = h.api("GET", &path, None).await;
    assert_eq!(amount_of(&b.body, 0), json!(10.0));
    assert_eq!(amount_of(&b.body, 1), json!(0.1));
    assert_eq!(
        amount_of(&b.body, 2),
        json!("9999999999999.999"),
        "a float could not carry it"
    );
    h.faults(json!({})).await;
    let b = h.api("GET", &path, None).await;
    for (i, a) in amounts.iter().enumerate() {
        assert_eq!(amount_of(&b.body, i), json!(a), "stored as written");
    }
}

#[tokio::test]
async fn fault_patch_applied_but_answered_500() {
    let h = start().await;
    let (batch, _) = h.batch(1).await;
    h.faults(json!({"patchAppliedThen500": {"remaining": 1}}))
        .await;
    let body = json!({"data": {"defaultStatus": "Processing"}});
    assert_eq!(
        h.api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
            .await
            .status,
        500
    );
    let d = h
        .api("GET", &format!("{P}/batchpayments/{batch}"), None)
        .await;
    assert_eq!(d.body["data"]["status"], "Processing", "applied");
    assert_eq!(
        h.api("PATCH", &format!("{P}/batchpayments/{batch}"), Some(&body))
            .await
            .status,
        204,
        "retry is a no-op"
    );
}

#[tokio::test]
async fn fault_token_revocation_and_key_rotation() {
    let h = start().await;
    let path = format!("{P}/providers/{PROVIDER}");
    h.faults(json!({"revokeTokens": true})).await;
    assert_eq!(h.api("GET", &path, None).await.status, 401);
    let fresh = h.new_token(AUD).await;
    assert_eq!(
        h.api_with("GET", &path, None, KEY, &fresh).await.status,
        200
    );
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    h.faults(json!({"rotateKeys": true})).await;
    let rotated = h.new_token(AUD).await;
    assert_ne!(kid(&fresh), kid(&rotated));
    assert_eq!(
        h.api_with("GET", &path, None, KEY, &fresh).await.status,
        200,
        "previous key still published"
    );
    let jwks: Value = h
        .http
        .get(h.sb.jwks_url())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn fault_bank_timeout_after_accept_and_duplicate_events() {
    let h = start().await;
    let (_, p) = h.batch(1).await;
    let (consent, account) = h.consent().await;
    h.faults(json!({"bank": {"timeoutAfterAcceptMs": 300, "timeoutAfterAcceptRate": 1.0, "duplicateEventRate": 1.0}})).await;
    let r = h
        .http
        .put(h.url(&format!("/bank/v1/payments/{}", p[0])))
        .basic_auth(BANK_BASIC.0, Some(BANK_BASIC.1))
        .json(&bank_body(&consent, &account, "T-1", "1.00"))
        .timeout(Duration::from_millis(150))
        .send()
        .await;
    assert!(r.is_err(), "no answer in time");
    let a = h
        .bank(
            "PUT",
            &format!("/v1/payments/{}", p[0]),
            Some(&bank_body(&consent, &account, "T-1", "1.00")),
        )
        .await;
    assert_eq!(a.status, 200, "it was accepted: the retry is a replay");
    let events = h.conn.wait("/bank/payment-events", 6).await;
    let ids: Vec<&Value> = events.iter().map(|e| &e.body["eventId"]).collect();
    assert_eq!(ids[0], ids[1], "each event pushed twice");
}

#[tokio::test]
async fn fault_bank_events_out_of_order() {
    let h = start().await;
    let (_, p) = h.batch(4).await;
    let (consent, account) = h.consent().await;
    h.faults(json!({"bank": {"reorderEventWindowMs": 200}}))
        .await;
    for (i, id) in p.iter().enumerate() {
        h.bank(
            "PUT",
            &format!("/v1/payments/{id}"),
            Some(&bank_body(&consent, &account, &format!("O-{i}"), "1.00")),
        )
        .await;
    }
    let events = h.conn.wait("/bank/payment-events", 12).await;
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.body["eventSeq"].as_u64().unwrap())
        .collect();
    let mut sorted = seqs.clone();
    sorted.sort_unstable();
    assert_ne!(seqs, sorted);
}

#[tokio::test]
async fn fault_bank_429_and_503_on_the_payment_rails() {
    let h = start().await;
    let (_, p) = h.batch(1).await;
    let (consent, account) = h.consent().await;
    let path = format!("/v1/payments/{}", p[0]);
    let body = bank_body(&consent, &account, "E-1", "1.00");
    h.faults(json!({"bank": {"errors": {"status": 429, "retryAfterS": 3, "remaining": 1}}}))
        .await;
    let a = h.bank("PUT", &path, Some(&body)).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (429, Some("rate_limited"))
    );
    assert_eq!(a.headers["retry-after"], "3");
    assert_eq!(
        h.bank("GET", &path, None).await.status,
        404,
        "nothing created"
    );
    h.faults(json!({"bank": {"errors": {"status": 503, "remaining": 2}}}))
        .await;
    let a = h.bank("PUT", &path, Some(&body)).await;
    assert_eq!(
        (a.status, a.body["error"].as_str()),
        (503, Some("unavailable"))
    );
    let c = h
        .bank("GET", &format!("/v1/consents/{consent}"), None)
        .await;
    assert_eq!(c.status, 200, "only the payment rails");
    assert_eq!(h.bank("GET", "/v1/payments", None).await.status, 503);
    assert_eq!(h.bank("PUT", &path, Some(&body)).await.status, 201);
    assert!(h.violations().await.is_empty());
    let refused =
        h.po.call(
            "PUT",
            "/_sandbox/payments-out/faults",
            Some(&json!({"bank": {"errors": {"status": 500}}})),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 400, "only 429 and 503");
}

// ------------------------------------------------------------------ driver sub-commands

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_po_sub_commands_play_the_product() {
    let h = start().await;
    let run = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sandbox"))
            .args(["driver", "--sandbox-url", &h.sb.base_url(), "po"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let org = run(vec!["create-organisation".into()]);
    let org = org["organisationId"].as_str().unwrap().to_string();
    let sub = run(vec!["subscribe".into(), "--organisation-id".into(), org]);
    let sub = sub["data"]["subscriptionId"].as_str().unwrap().to_string();
    for st in ["AwaitingAuthorisation", "Authorised"] {
        h.api(
            "PATCH",
            &format!("{P}/subscriptions/{sub}"),
            Some(&json!({"data": {"status": st}})),
        )
        .await;
    }
    let b = run(vec![
        "submit-batch".into(),
        "--subscription-id".into(),
        sub.clone(),
        "--payments".into(),
        "3".into(),
    ]);
    assert_eq!(b["data"]["paymentCount"], 3);
    let inbox = run(vec!["inbox".into()]);
    assert!(
        inbox
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["type"] == "batchStatus")
    );
}
