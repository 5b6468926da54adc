//! Sage ID HTTP endpoints: `POST /oauth/token` and `GET /.well-known/jwks.json` (sandbox spec §3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::model::ViolationKind;
use crate::sageid::AccessClaims;
use crate::state::Core;
use crate::util::{form_get, parse_form};

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

pub async fn jwks(State(core): State<Arc<Core>>) -> Response {
    let body = core.keys.read().jwks();
    axum::Json(body).into_response()
}

/// Token request fields from a form or a JSON body.
fn fields(headers: &HeaderMap, body: &[u8]) -> Option<Vec<(String, String)>> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let obj = v.as_object()?;
        Some(
            obj.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect(),
        )
    } else {
        Some(parse_form(std::str::from_utf8(body).ok()?))
    }
}

pub async fn token(State(core): State<Arc<Core>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let route = "POST /oauth/token";
    if let Some(mut resp) = crate::provider::route_fault_before(&core, route).await {
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            resp = oauth_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests");
        }
        crate::provider::record_request(
            &core,
            "POST",
            "/oauth/token",
            route,
            resp.status().as_u16(),
            started,
            None,
            None,
        );
        return resp;
    }
    let (resp, client) = token_inner(&core, &headers, &body);
    crate::provider::record_request(
        &core,
        "POST",
        "/oauth/token",
        route,
        resp.status().as_u16(),
        started,
        client,
        None,
    );
    resp
}

fn token_inner(core: &Core, headers: &HeaderMap, body: &[u8]) -> (Response, Option<String>) {
    let Some(f) = fields(headers, body) else {
        return (
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
            None,
        );
    };
    let get = |k: &str| form_get(&f, k).filter(|v| !v.is_empty());
    match get("grant_type") {
        None => {
            return (
                oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
                None,
            );
        }
        // Sage's pages misspell it (Banking Service) or write it in the singular (Payments Out's
        // JSON body); the sandbox accepts all three spellings.
        Some("client_credentials") | Some("client_credentails") | Some("client_credential") => {}
        Some(_) => {
            return (
                oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
                None,
            );
        }
    }
    let (Some(client_id), Some(secret), Some(audience)) =
        (get("client_id"), get("client_secret"), get("audience"))
    else {
        return (
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
            None,
        );
    };
    let now = core.now();
    let mut st = core.state.lock();
    let Some(client) = st.clients.get(client_id).cloned() else {
        return (oauth_error(StatusCode::UNAUTHORIZED, "access_denied"), None);
    };
    if !crate::provider::ct_eq(client.client_secret.as_bytes(), secret.as_bytes()) {
        return (
            oauth_error(StatusCode::UNAUTHORIZED, "access_denied"),
            Some(client.client_id),
        );
    }
    if !client.allowed_audiences.iter().any(|a| a == audience) {
        return (
            oauth_error(StatusCode::FORBIDDEN, "access_denied"),
            Some(client.client_id),
        );
    }
    *st.metrics
        .token_requests
        .entry(client.client_id.clone())
        .or_default() += 1;
    // Rate limit per client over a sliding minute.
    let window = st.token_window.entry(client.client_id.clone()).or_default();
    let minute = Duration::from_secs(60);
    while window.front().is_some_and(|t| t.elapsed() >= minute) {
        window.pop_front();
    }
    if window.len() >= core.cfg.token_max_requests_per_min as usize {
        return (
            oauth_error(StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Some(client.client_id),
        );
    }
    window.push_back(Instant::now());

    // The lifetime of the tokens issued now (a fault may shorten it).
    let lifetime = st
        .faults
        .set
        .token_expires_in_s
        .unwrap_or(core.cfg.token_lifetime_s);
    // Violation: too many token requests within half that lifetime without an intervening 401.
    let half = chrono::Duration::seconds((lifetime / 2) as i64);
    let since = st
        .token_since_401
        .entry(client.client_id.clone())
        .or_default();
    since.retain(|t| now - *t < half);
    since.push(now);
    let n = since.len();
    if n == core.cfg.token_requests_violation_threshold as usize + 1 {
        st.violation(
            core.cfg.log_capacity,
            now,
            ViolationKind::TooManyTokenRequests,
            format!("{n} token requests within half a token lifetime without an intervening 401"),
            None,
            None,
            Some(client.client_id.clone()),
        );
    }

    let jti = st.rng.uuid().to_string();
    st.issued_tokens
        .insert(jti.clone(), client.client_id.clone());
    drop(st);

    let iat = now.timestamp();
    let claims = AccessClaims {
        iss: core.issuer.clone(),
        sub: client.client_id.clone(),
        aud: audience.to_string(),
        azp: client.client_id.clone(),
        iat,
        exp: iat + lifetime as i64,
        jti,
    };
    let signed = core.keys.read().current.sign(&claims);
    match signed {
        Ok(t) => (
            axum::Json(
                json!({ "access_token": t, "token_type": "Bearer", "expires_in": lifetime }),
            )
            .into_response(),
            Some(client.client_id),
        ),
        Err(_) => (
            oauth_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
            Some(client.client_id),
        ),
    }
}
