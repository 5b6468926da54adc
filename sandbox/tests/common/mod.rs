//! Test harness: a sandbox, Provider API helpers, and a small reference connector playing the
//! connector's side (notification endpoint with JWT checks, /auth and /authrefresh against the
//! demo bank, /availableaccounts), so that the driver can be exercised end to end.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use parking_lot::Mutex;
use sandbox::client::SandboxClient;
use sandbox::{Sandbox, SandboxConfig};
use serde_json::{Value, json};
use sha2::Digest;
use uuid::Uuid;

pub const API_KEY: &str = "local-api-key";
pub const AUD: &str = "sfdsbanking/sfdsBankingProvider-Pre";

pub struct Harness {
    pub sb: Sandbox,
    pub http: reqwest::Client,
    pub client: SandboxClient,
    pub token: String,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn targets(&self) -> Vec<String> {
        self.body["error"]["detail"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|d| d["target"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

pub async fn start(cfg: SandboxConfig) -> Harness {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = sb.client();
    let mut h = Harness {
        sb,
        http,
        client,
        token: String::new(),
    };
    h.token = h.new_token().await;
    h
}

pub async fn fast() -> Harness {
    start(SandboxConfig::fast()).await
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sb.base_url())
    }

    pub async fn token_request(&self, form: &[(&str, &str)]) -> Answer {
        let r = self
            .http
            .post(self.sb.token_url())
            .form(form)
            .send()
            .await
            .unwrap();
        to_answer(r).await
    }

    pub async fn new_token(&self) -> String {
        let a = self
            .token_request(&[
                ("grant_type", "client_credentials"),
                ("client_id", "local-provider"),
                ("client_secret", "local-secret"),
                ("audience", AUD),
            ])
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["access_token"].as_str().unwrap().to_string()
    }

    /// A Provider API call with the API key and bearer.
    pub async fn api(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        self.api_with(method, path, body, Some(API_KEY), Some(&self.token))
            .await
    }

    pub async fn api_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        key: Option<&str>,
        token: Option<&str>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(m, self.url(path));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        to_answer(req.send().await.unwrap()).await
    }

    /// Registers a bank whose callbacks point at `connector`.
    pub async fn register_bank(&self, connector: &str) -> Uuid {
        let body = json!({ "data": { "toCreate": [{
            "name": "Example Bank", "countryCode": "GB", "url": "https://www.example-bank.test",
            "supportiframe": true, "externalRef": "d13b96e8-d1c1-4d83-b0f7-7c2ca78ff43a",
            "callbackURLs": {
                "auth": format!("{connector}/auth"), "reAuth": format!("{connector}/authrefresh"),
                "notification": format!("{connector}/notification"),
                "availableAccounts": format!("{connector}/availableaccounts"),
            } }] } });
        let a = self.api("POST", "/v1/banks", Some(&body.to_string())).await;
        assert_eq!(a.status, 200, "{}", a.text);
        Uuid::parse_str(
            a.body["data"]["created"][0]["principalId"]
                .as_str()
                .unwrap(),
        )
        .unwrap()
    }

    /// A bank whose callbacks go nowhere useful (port 9) plus a pending account on it.
    pub async fn bank_and_account(&self, connector: &str) -> (Uuid, Uuid) {
        let bank = self.register_bank(connector).await;
        let acct = self
            .account_on(bank, "acc_1", "2025-01-01T00:00:00.000Z")
            .await;
        (bank, acct)
    }

    pub async fn account_on(&self, bank: Uuid, external_id: &str, start: &str) -> Uuid {
        let r = self
            .client
            .create_account(&sandbox::model::CreateAccountRequest {
                notify: Some(false),
                ..sandbox::model::CreateAccountRequest::new(bank, external_id, start)
            })
            .await
            .unwrap();
        r.account.bank_account_id
    }

    pub async fn post_statement(&self, body: &Value) -> Answer {
        self.api("POST", "/v1/statements", Some(&body.to_string()))
            .await
    }

    /// Posts and waits for a terminal status (through the inspection API).
    pub async fn post_and_wait(&self, body: &Value) -> sandbox::model::StatementView {
        let a = self.post_statement(body).await;
        assert_eq!(a.status, 201, "{}", a.text);
        let id = Uuid::parse_str(a.body["data"]["_id"].as_str().unwrap()).unwrap();
        self.client
            .wait_statement_terminal(id, Duration::from_secs(10))
            .await
            .unwrap()
    }
}

pub async fn to_answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

/// A transaction JSON (amount written as given, verbatim).
pub fn txn(account: Uuid, id: &str, amount: &str, date: &str) -> String {
    format!(
        r#"{{"uniqueId":"{id}","bankAccountId":"{account}","transactionAmount":{amount},"transactionType":"POS","transactionStatus":"posted","datePosted":"{date}","description":"CARD PAYMENT"}}"#
    )
}

/// A statement body with correct `expected` for the given (id, amount, date) triples.
pub fn statement(account: Uuid, bank: Uuid, txns: &[(&str, &str, &str)]) -> Value {
    statement_with_status(account, bank, txns, "active")
}

pub fn statement_with_status(
    account: Uuid,
    bank: Uuid,
    txns: &[(&str, &str, &str)],
    status: &str,
) -> Value {
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let mut credit = Decimal::ZERO;
    let mut debit = Decimal::ZERO;
    for (_, a, _) in txns {
        let d = Decimal::from_str(a).unwrap();
        if d.is_sign_negative() {
            debit += d
        } else {
            credit += d
        }
    }
    let items: Vec<String> = txns.iter().map(|(i, a, d)| txn(account, i, a, d)).collect();
    let text = format!(
        r#"{{"data":{{"principalId":"{account}","bankId":"{bank}",
        "expected":{{"transactionDetailsCount":{n},"accountDetailsCount":1,"transactionCreditSum":{credit},"transactionDebitSum":{debit}}},
        "accountDetails":[{{"bankAccountId":"{account}","status":"{status}","ledgerBalance":100.00,"ledgerBalanceDate":"2025-03-04T00:00:00.000Z"}}],
        "transactionDetails":[{items}]}}}}"#,
        n = txns.len(),
        items = items.join(",")
    );
    serde_json::from_str(&text).unwrap()
}

// ------------------------------------------------------------------ reference connector

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
}

pub struct Connector {
    pub addr: SocketAddr,
    pub state: Arc<ConnState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct ConnState {
    pub sandbox: String,
    pub issuer: String,
    pub audience: String,
    pub notifications: Mutex<Vec<Received>>,
    /// Status to answer notifications with (200 unless set).
    pub notify_status: AtomicU16,
    /// Fail the next N notifications with `notify_status`.
    pub fail_next: AtomicU64,
    pub announced: Mutex<HashMap<String, bool>>,
    pub announced_bank: Mutex<HashMap<String, String>>,
    pub sessions: Mutex<HashMap<String, Session>>,
    /// externalId → consent id
    pub consents: Mutex<HashMap<String, String>>,
    pub http: reqwest::Client,
    pub token: Mutex<String>,
    pub custom_header: Option<(String, String)>,
    /// Answer of /availableaccounts when set (raw JSON).
    pub available_override: Mutex<Option<(u16, String)>>,
    pub omit_csp: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub authorisation_id: String,
    pub redirect_uri: String,
    pub state: String,
    pub verifier: String,
    pub reauth_external_id: Option<String>,
}

const CSP: &str = "frame-ancestors 'self' https://*.sagebankdrive.com https://*.sage.com";

fn html(state: &ConnState, status: StatusCode, body: String) -> Response {
    let mut r = (status, Html(body)).into_response();
    if !state.omit_csp.load(Ordering::Relaxed) {
        r.headers_mut()
            .insert("content-security-policy", HeaderValue::from_static(CSP));
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(to).unwrap());
    r
}

/// Verifies a Sage ID notification JWT like the connector must (spec §3.3).
pub async fn verify_jwt(state: &ConnState, headers: &HeaderMap) -> Result<(), String> {
    if let Some((name, value)) = &state.custom_header {
        let got = headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .ok_or("custom header missing")?;
        if got != value {
            return Err("custom header mismatch".into());
        }
    }
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("no bearer")?;
    let token = auth.strip_prefix("Bearer ").ok_or("no bearer")?;
    let h = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    if h.alg != jsonwebtoken::Algorithm::RS256 {
        return Err(format!("alg {:?}", h.alg));
    }
    let kid = h.kid.ok_or("no kid")?;
    let jwks: Value = state
        .http
        .get(format!("{}.well-known/jwks.json", state.issuer))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|k| k.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or("unknown kid")?;
    let dk = jsonwebtoken::DecodingKey::from_rsa_components(
        key["n"].as_str().unwrap_or(""),
        key["e"].as_str().unwrap_or(""),
    )
    .map_err(|e| e.to_string())?;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_issuer(&[state.issuer.as_str()]);
    v.set_audience(&[state.audience.as_str()]);
    v.validate_nbf = true;
    v.leeway = 30;
    let data = jsonwebtoken::decode::<Value>(token, &dk, &v).map_err(|e| format!("claims: {e}"))?;
    let scope = data.claims["scope"].as_str().unwrap_or("");
    if !scope.split(' ').any(|s| s == "Notification") {
        return Err("scope".into());
    }
    Ok(())
}

async fn notification(
    State(s): State<Arc<ConnState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if verify_jwt(&s, &headers).await.is_err() {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "unauthorised"})),
        )
            .into_response();
    }
    let text = String::from_utf8_lossy(&body).to_string();
    s.notifications.lock().push(Received {
        headers: headers.clone(),
        body: text.clone(),
    });
    if s.fail_next.load(Ordering::SeqCst) > 0 {
        s.fail_next.fetch_sub(1, Ordering::SeqCst);
        let code = StatusCode::from_u16(s.notify_status.load(Ordering::SeqCst))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, "fail").into_response();
    }
    if let Ok(v) = serde_json::from_str::<Value>(&text)
        && v["resource"]["type"] == "authorisation"
        && let Some(id) = v["resource"]["id"].as_str()
    {
        s.announced.lock().entry(id.to_string()).or_insert(false);
        if let Some(b) = v["additionalData"]["bankId"].as_str() {
            s.announced_bank
                .lock()
                .insert(id.to_string(), b.to_string());
        }
    }
    axum::Json(json!({"data": {"value": "ok"}, "links": {}, "meta": {}})).into_response()
}

fn pkce() -> (String, String) {
    let verifier = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let challenge = sandbox::util::b64url(&sha2::Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

async fn begin(s: &ConnState, q: &HashMap<String, String>, reauth: bool) -> Response {
    let (Some(auth_id), Some(redirect_uri)) = (q.get("authorisation_id"), q.get("redirect_uri"))
    else {
        return html(
            s,
            StatusCode::BAD_REQUEST,
            "<p>missing parameter</p>".into(),
        );
    };
    let Some(state) = q.get("state") else {
        return html(s, StatusCode::BAD_REQUEST, "<p>missing state</p>".into());
    };
    let ok_host = url::Url::parse(redirect_uri)
        .ok()
        .is_some_and(|u| u.host_str() == Some("127.0.0.1"));
    if !ok_host {
        return html(
            s,
            StatusCode::BAD_REQUEST,
            "<p>redirect_uri not allowed</p>".into(),
        );
    }
    match s.announced.lock().get(auth_id) {
        None => {
            return html(
                s,
                StatusCode::FORBIDDEN,
                "<p>unknown authorisation</p>".into(),
            );
        }
        Some(true) => return html(s, StatusCode::CONFLICT, "<p>already completed</p>".into()),
        Some(false) => {}
    }
    // `bankId` may be missing from the announcement; a bank it does name must match.
    if !reauth
        && s.announced_bank
            .lock()
            .get(auth_id)
            .is_some_and(|b| Some(b) != q.get("bank"))
    {
        return html(s, StatusCode::FORBIDDEN, "<p>bank mismatch</p>".into());
    }
    let (verifier, challenge) = pkce();
    let sid = Uuid::new_v4().to_string();
    let mut consent = None;
    let mut reauth_ext = None;
    if reauth {
        let ext = q.get("externalId").cloned().unwrap_or_default();
        consent = s.consents.lock().get(&ext).cloned();
        if consent.is_none() {
            return html(s, StatusCode::FORBIDDEN, "<p>unknown account</p>".into());
        }
        reauth_ext = Some(ext);
    }
    s.sessions.lock().insert(
        sid.clone(),
        Session {
            authorisation_id: auth_id.clone(),
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            verifier,
            reauth_external_id: reauth_ext,
        },
    );
    let me = format!("http://{}", q.get("__self").cloned().unwrap_or_default());
    let mut params = vec![
        ("response_type", "code".to_string()),
        ("client_id", "local-connector".to_string()),
        ("redirect_uri", format!("{me}/callback")),
        ("state", sid),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256".to_string()),
        ("scope", "openid accounts transactions".to_string()),
    ];
    if let Some(c) = consent {
        params.push(("consent_id", c));
    }
    let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // A consent page with one form (the driver submits it), like the real connector's.
    html(
        s,
        StatusCode::OK,
        format!(
            "<html><body><p>Continue to your bank</p><form method=\"get\" action=\"{}\">{}<button type=\"submit\">Continue</button></form></body></html>",
            sandbox::util::html_escape(&format!("{}/bank/oauth/authorize", s.sandbox)),
            pairs
                .iter()
                .map(|(k, v)| format!(
                    "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                    sandbox::util::html_escape(v)
                ))
                .collect::<String>()
        ),
    )
}

async fn auth(
    State(s): State<Arc<ConnState>>,
    headers: HeaderMap,
    Query(mut q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(h) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        q.insert("__self".into(), h.to_string());
    }
    begin(&s, &q, false).await
}

async fn authrefresh(
    State(s): State<Arc<ConnState>>,
    headers: HeaderMap,
    Query(mut q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(h) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        q.insert("__self".into(), h.to_string());
    }
    begin(&s, &q, true).await
}

async fn sandbox_token(s: &ConnState) -> String {
    let t = s.token.lock().clone();
    if !t.is_empty() {
        return t;
    }
    let r: Value = s
        .http
        .post(format!("{}oauth/token", s.issuer))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "local-provider"),
            ("client_secret", "local-secret"),
            ("audience", AUD),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let t = r["access_token"].as_str().unwrap_or("").to_string();
    *s.token.lock() = t.clone();
    t
}

async fn callback(
    State(s): State<Arc<ConnState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(sess) = q.get("state").and_then(|sid| s.sessions.lock().remove(sid)) else {
        return html(&s, StatusCode::BAD_REQUEST, "<p>unknown session</p>".into());
    };
    let patch_body = if q.contains_key("error") {
        json!({"data": {"status": "cancelled"}})
    } else {
        let code = q.get("code").cloned().unwrap_or_default();
        let tok: Value = s
            .http
            .post(format!("{}/bank/oauth/token", s.sandbox))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", &format!("http://{host}/callback")),
                ("client_id", "local-connector"),
                ("client_secret", "local-bank-secret"),
                ("code_verifier", sess.verifier.as_str()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let consent_id = tok["consent_id"].as_str().unwrap_or("").to_string();
        if sess.reauth_external_id.is_some() {
            json!({"data": {"status": "success"}})
        } else {
            let consent: Value = s
                .http
                .get(format!("{}/bank/v1/consents/{consent_id}", s.sandbox))
                .basic_auth("local-connector", Some("local-bank-secret"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut accounts = Vec::new();
            for a in consent["accounts"].as_array().cloned().unwrap_or_default() {
                let ext = a["accountId"].as_str().unwrap_or("").to_string();
                s.consents.lock().insert(ext.clone(), consent_id.clone());
                accounts.push(json!({
                    "bankAccountExternalId": ext, "accountName": a["name"], "bankIdentifier": a["bankCode"],
                    "branchIdentifier": a["branch"], "accountIdentifier": a["identifier"],
                }));
            }
            json!({"data": {"status": "success", "bankAccounts": accounts}})
        }
    };
    let token = sandbox_token(&s).await;
    let r = s
        .http
        .patch(format!(
            "{}/v1/authorisations/{}",
            s.sandbox, sess.authorisation_id
        ))
        .header("x-api-key", API_KEY)
        .bearer_auth(token)
        .json(&patch_body)
        .send()
        .await
        .unwrap();
    if !r.status().is_success() {
        return html(
            &s,
            StatusCode::CONFLICT,
            format!("<p>PATCH failed: {}</p>", r.status()),
        );
    }
    s.announced
        .lock()
        .insert(sess.authorisation_id.clone(), true);
    see_other(&sandbox::util::append_query(
        &sess.redirect_uri,
        &[("state", &sess.state)],
    ))
}

async fn available(
    State(s): State<Arc<ConnState>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if verify_jwt(&s, &headers).await.is_err() {
        return (StatusCode::UNAUTHORIZED, "no").into_response();
    }
    if let Some((status, body)) = s.available_override.lock().clone() {
        let mut r = (StatusCode::from_u16(status).unwrap(), body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return r;
    }
    let ext = q.get("externalId").cloned().unwrap_or_default();
    let Some(consent_id) = s.consents.lock().get(&ext).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "unknown"})),
        )
            .into_response();
    };
    let consent: Value = s
        .http
        .get(format!("{}/bank/v1/consents/{consent_id}", s.sandbox))
        .basic_auth("local-connector", Some("local-bank-secret"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list: Vec<Value> = consent["accounts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| {
            s.consents.lock().insert(a["accountId"].as_str().unwrap_or("").to_string(), consent_id.clone());
            json!({
                "accountType": a["type"], "accountName": a["name"], "externalId": a["accountId"],
                "bankIdentifier": a["bankCode"], "accountIdentifier": a["identifier"], "branchIdentifier": a["branch"],
            })
        })
        .collect();
    axum::Json(list).into_response()
}

pub async fn connector(sb: &Sandbox, custom_header: Option<(String, String)>) -> Connector {
    let state = Arc::new(ConnState {
        sandbox: sb.base_url(),
        issuer: sb.issuer(),
        audience: sb.config().notification_audience.clone(),
        notifications: Mutex::new(Vec::new()),
        notify_status: AtomicU16::new(500),
        fail_next: AtomicU64::new(0),
        announced: Mutex::new(HashMap::new()),
        announced_bank: Mutex::new(HashMap::new()),
        sessions: Mutex::new(HashMap::new()),
        consents: Mutex::new(HashMap::new()),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        token: Mutex::new(String::new()),
        custom_header,
        available_override: Mutex::new(None),
        omit_csp: std::sync::atomic::AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/notification", post(notification))
        .route("/auth", get(auth))
        .route("/authrefresh", get(authrefresh))
        .route("/callback", get(callback))
        .route("/availableaccounts", get(available))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Connector { addr, state, task }
}

impl Connector {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn notification_bodies(&self) -> Vec<Value> {
        self.state
            .notifications
            .lock()
            .iter()
            .filter_map(|r| serde_json::from_str(&r.body).ok())
            .collect()
    }
}
