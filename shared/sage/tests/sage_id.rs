//! The Sage ID client and the notification verifier against a small Sage ID on loopback: the
//! token-request styles, the token lifetime, per-scope tokens and the optional scope check.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use base64::Engine;
use connector_domain::ports::{BoxFuture, CachedToken, PortError, SharedTokenCache};
use connector_sage::verifier::NotificationVerifier;
use connector_sage::{
    AuthFailure, SageIdConfig, Secret, TokenProviders, TokenStyle, VerifierConfig,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// What the fake Sage ID saw and how it answers.
#[derive(Default)]
struct Seen {
    /// (content type, body) of each token request.
    requests: Vec<(String, String)>,
}

struct SageId {
    seen: Mutex<Seen>,
    encoding: EncodingKey,
    jwk: Value,
    /// Leave `expires_in` out of token answers.
    omit_expires_in: bool,
}

impl SageId {
    fn new(omit_expires_in: bool) -> Self {
        let pair = KeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let encoding =
            EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        let public = pair.public_key();
        let jwk = json!({
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
            "n": b64url(public.modulus().big_endian_without_leading_zero()),
            "e": b64url(public.exponent().big_endian_without_leading_zero()),
        });
        Self {
            seen: Mutex::new(Seen::default()),
            encoding,
            jwk,
            omit_expires_in,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

async fn token(State(s): State<Arc<SageId>>, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = String::from_utf8_lossy(&body).to_string();
    // The audience is read from either style, so that each token says whom it is for.
    let audience = if ct.starts_with("application/json") {
        serde_json::from_str::<Value>(&text).unwrap()["audience"]
            .as_str()
            .unwrap_or("")
            .to_string()
    } else {
        url::form_urlencoded::parse(text.as_bytes())
            .find(|(k, _)| k == "audience")
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    s.seen.lock().unwrap().requests.push((ct, text));
    let now = chrono::Utc::now().timestamp();
    let access = s.sign(&json!({"aud": audience, "iat": now, "exp": now + 1200}));
    let mut answer = json!({"access_token": access, "token_type": "Bearer"});
    if !s.omit_expires_in {
        answer["expires_in"] = json!(28_800);
    }
    axum::Json(answer)
}

async fn jwks(State(s): State<Arc<SageId>>) -> axum::Json<Value> {
    axum::Json(json!({"keys": [s.jwk.clone()]}))
}

/// Serves the fake Sage ID; returns its issuer (`http://127.0.0.1:PORT/`).
async fn serve(sage_id: Arc<SageId>) -> String {
    let app = axum::Router::new()
        .route("/oauth/token", post(token))
        .route("/.well-known/jwks.json", get(jwks))
        .with_state(sage_id);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/")
}

fn sage_id_config(issuer: &str, audience: &str, style: TokenStyle) -> SageIdConfig {
    SageIdConfig {
        token_url: format!("{issuer}oauth/token"),
        client_id: "client-1".into(),
        client_secret: Secret::new("secret-1"),
        audience: audience.into(),
        refresh_margin: Duration::from_secs(300),
        style,
    }
}

fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_json_style_posts_payments_outs_documented_body() {
    let sage_id = Arc::new(SageId::new(false));
    let issuer = serve(sage_id.clone()).await;
    let tokens = TokenProviders::new(reqwest::Client::new(), Box::new(|_| None));
    tokens
        .get(sage_id_config(&issuer, "payments-out", TokenStyle::Json))
        .unwrap()
        .token()
        .await
        .unwrap();
    tokens
        .get(sage_id_config(&issuer, "banking", TokenStyle::Form))
        .unwrap()
        .token()
        .await
        .unwrap();
    let seen = sage_id.seen.lock().unwrap().requests.clone();
    assert_eq!(seen.len(), 2);
    let (ct, body) = &seen[0];
    assert!(ct.starts_with("application/json"), "{ct}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        json!({"grant_type": "client_credential", "client_id": "client-1",
               "client_secret": "secret-1", "audience": "payments-out"})
    );
    let (ct, body) = &seen[1];
    assert!(ct.starts_with("application/x-www-form-urlencoded"), "{ct}");
    assert!(body.contains("grant_type=client_credentials"), "{body}");
}

#[tokio::test]
async fn without_expires_in_a_token_lives_until_its_own_exp() {
    let sage_id = Arc::new(SageId::new(true));
    let issuer = serve(sage_id).await;
    let tokens = TokenProviders::new(reqwest::Client::new(), Box::new(|_| None));
    let t = tokens
        .get(sage_id_config(&issuer, "payments-out", TokenStyle::Json))
        .unwrap()
        .token()
        .await
        .unwrap();
    let lifetime = (t.expires_at - t.obtained_at).num_seconds();
    // The token's exp is 1,200 s out: not the 480-minute assumption.
    assert!((1_195..=1_200).contains(&lifetime), "{lifetime}");
}

/// A shared cache in memory, by scope, as DynamoDB holds it for every Lambda.
#[derive(Default, Clone)]
struct MemoryCaches(Arc<Mutex<HashMap<String, CachedToken>>>);

struct MemoryCache {
    scope: String,
    all: MemoryCaches,
}

impl SharedTokenCache for MemoryCache {
    fn load(&self) -> BoxFuture<'_, Result<Option<CachedToken>, PortError>> {
        let t = self.all.0.lock().unwrap().get(&self.scope).cloned();
        Box::pin(async move { Ok(t) })
    }
    fn store(&self, token: &CachedToken) -> BoxFuture<'_, Result<(), PortError>> {
        self.all
            .0
            .lock()
            .unwrap()
            .insert(self.scope.clone(), token.clone());
        Box::pin(async { Ok(()) })
    }
    fn invalidate(&self, _: &str) -> BoxFuture<'_, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }
    fn try_lease(&self, _: &str, _: Duration) -> BoxFuture<'_, Result<bool, PortError>> {
        Box::pin(async { Ok(true) })
    }
}

#[tokio::test]
async fn two_audiences_of_one_client_never_swap_tokens_even_across_processes() {
    let sage_id = Arc::new(SageId::new(false));
    let issuer = serve(sage_id.clone()).await;
    let caches = MemoryCaches::default();
    let process = |caches: MemoryCaches| {
        TokenProviders::new(
            reqwest::Client::new(),
            Box::new(move |scope| {
                Some(Arc::new(MemoryCache {
                    scope: scope.to_string(),
                    all: caches.clone(),
                }) as Arc<dyn SharedTokenCache>)
            }),
        )
    };
    // One process (Banking Service's) gets its token; another (Payments Out's) then asks for
    // the same client's token for its own audience through the same shared cache.
    let banking = process(caches.clone());
    let payments = process(caches.clone());
    let b = banking
        .get(sage_id_config(&issuer, "banking", TokenStyle::Form))
        .unwrap()
        .token()
        .await
        .unwrap();
    let p = payments
        .get(sage_id_config(&issuer, "payments-out", TokenStyle::Json))
        .unwrap()
        .token()
        .await
        .unwrap();
    assert_eq!(claims_of(&b.access_token)["aud"], "banking");
    assert_eq!(claims_of(&p.access_token)["aud"], "payments-out");
    // A third process with Banking Service's key reuses the shared token: no new request.
    let again = process(caches.clone())
        .get(sage_id_config(&issuer, "banking", TokenStyle::Form))
        .unwrap()
        .token()
        .await
        .unwrap();
    assert_eq!(again.access_token, b.access_token);
    assert_eq!(sage_id.seen.lock().unwrap().requests.len(), 2);
}

fn verifier(issuer: &str, required_scope: &str) -> NotificationVerifier {
    NotificationVerifier::new(
        reqwest::Client::new(),
        VerifierConfig {
            issuer: issuer.into(),
            audience: "connector".into(),
            required_scope: required_scope.into(),
            allowed_azp: Vec::new(),
            leeway: Duration::from_secs(30),
            jwks_ttl: Duration::from_secs(3600),
            custom_header: None,
        },
    )
    .unwrap()
}

#[tokio::test]
async fn an_empty_required_scope_is_not_checked() {
    let sage_id = Arc::new(SageId::new(false));
    let issuer = serve(sage_id.clone()).await;
    let now = chrono::Utc::now().timestamp();
    let claims = |scope: Option<&str>| {
        let mut c = json!({"iss": issuer, "aud": "connector", "iat": now, "exp": now + 300});
        if let Some(s) = scope {
            c["scope"] = json!(s);
        }
        sage_id.sign(&c)
    };
    let no_scope = claims(None);
    let other_scope = claims(Some("Payments Other"));
    let notification = claims(Some("read Notification"));

    // Payments Out: empty = not checked.
    let any = verifier(&issuer, "");
    for t in [&no_scope, &other_scope, &notification] {
        any.verify_token(t).await.unwrap();
    }
    // Banking Service: the scope is required, as before.
    let banking = verifier(&issuer, "Notification");
    banking.verify_token(&notification).await.unwrap();
    for t in [&no_scope, &other_scope] {
        assert_eq!(
            banking.verify_token(t).await.unwrap_err(),
            AuthFailure::MissingScope
        );
    }
}
