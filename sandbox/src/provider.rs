//! Provider API (`/v1/...`): the request pipeline of sandbox spec §4 and its handlers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::envelope::{ApiError, DetailItem, ErrorCode, gateway, ok_envelope};
use crate::model::*;
use crate::sageid::verify_access_token;
use crate::state::{Bank, Core, Statement, push_capped};
use crate::util::fmt_time;
use crate::validate;

/// Constant-time comparison of equal-length digests.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    let da = Sha256::digest(a);
    let db = Sha256::digest(b);
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Who is calling: set by the pipeline for the handlers.
#[derive(Debug, Clone)]
pub struct ProviderCtx {
    pub provider_id: Uuid,
    pub client_id: String,
}

/// Per-connection handle to close the connection without an answer (drop-after-commit).
#[derive(Clone)]
pub struct ConnControl(pub Arc<tokio::sync::Notify>);

#[allow(clippy::too_many_arguments)]
pub fn record_request(
    core: &Core,
    method: &str,
    path: &str,
    route: &str,
    status: u16,
    started: Instant,
    client_id: Option<String>,
    error_code: Option<String>,
) {
    let us = started.elapsed().as_micros() as u64;
    let now = core.now();
    let mut st = core.state.lock();
    st.metrics.record(route, status, us);
    if status == 429 {
        st.metrics.rate_limited += 1;
    }
    let seq = st.next_seq();
    push_capped(
        &mut st.requests,
        core.cfg.log_capacity,
        RequestLogEntry {
            seq,
            at: fmt_time(now),
            method: method.to_string(),
            path: path.to_string(),
            route: route.to_string(),
            status,
            latency_us: us,
            client_id,
            error_code,
        },
    );
}

fn route_matches(pattern: &str, route: &str) -> bool {
    pattern == "*" || pattern == route || route.split_once(' ').is_some_and(|(_, p)| p == pattern)
}

/// Decisions of the route faults for one request.
#[derive(Default)]
struct FaultPlan {
    error_status: Option<u16>,
    latency_before: u64,
    latency_after: u64,
    drop: bool,
}

fn plan_faults(core: &Core, route: &str) -> FaultPlan {
    let mut plan = FaultPlan::default();
    let mut st = core.state.lock();
    if st.faults.set.routes.is_empty() {
        return plan;
    }
    let st = &mut *st;
    for f in st.faults.set.routes.iter_mut() {
        if !route_matches(&f.route, route) || f.remaining == Some(0) {
            continue;
        }
        if let Some(r) = f.remaining.as_mut() {
            *r -= 1;
        }
        if plan.error_status.is_none() && f.error_rate > 0.0 && st.rng.unit() < f.error_rate {
            plan.error_status = Some(f.error_status);
        }
        let lat = f.latency_ms + st.rng.below(f.latency_jitter_ms + 1);
        if f.latency_after {
            plan.latency_after += lat;
        } else {
            plan.latency_before += lat;
        }
        if f.drop_after_commit_rate > 0.0 && st.rng.unit() < f.drop_after_commit_rate {
            plan.drop = true;
        }
    }
    plan
}

pub(crate) fn fault_response(status: u16) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::TOO_MANY_REQUESTS {
        ApiError::too_many(1).into_response()
    } else if code == StatusCode::INTERNAL_SERVER_ERROR {
        ApiError::internal("Injected failure").into_response()
    } else if code == StatusCode::CONFLICT {
        // As Banking Service refuses a statement for a cancelled account or one in flight.
        ApiError::conflict("Injected conflict").into_response()
    } else if code == StatusCode::UNAUTHORIZED {
        ApiError::unauthenticated().into_response()
    } else {
        gateway(code, "Injected gateway failure")
    }
}

/// Route faults answered before any state change (used by `/oauth/token` too).
pub async fn route_fault_before(core: &Core, route: &str) -> Option<Response> {
    let plan = plan_faults(core, route);
    if plan.latency_before > 0 {
        tokio::time::sleep(Duration::from_millis(plan.latency_before)).await;
    }
    plan.error_status.map(fault_response)
}

fn body_too_large(core: &Core, headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > core.cfg.max_body_bytes)
}

/// The Provider API pipeline: routing is done; then API key, token bucket, bearer, faults, handler.
pub async fn pipeline(State(core): State<Arc<Core>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => format!("{method} {}", m.as_str()),
        None => format!("{method} {path}"),
    };
    let conn = req.extensions().get::<ConnControl>().cloned();
    let mut client_id = None;
    let resp = 'answer: {
        if body_too_large(&core, req.headers()) {
            break 'answer ApiError::too_large(core.cfg.max_body_bytes).into_response();
        }
        // (2) API key → 403 gateway style.
        let key = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let key_provider = core.state.lock().api_keys.get(key).copied();
        let Some(key_provider) = key_provider else {
            break 'answer gateway(StatusCode::FORBIDDEN, "Forbidden");
        };
        // (3) Token bucket per API key; a 429 does not consume.
        if let Some(retry) = take_token(&core, key) {
            break 'answer ApiError::too_many(retry).into_response();
        }
        // (4) Bearer token.
        let bearer = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .unwrap_or("")
            .to_string();
        let ctx = match authenticate(&core, &bearer, key_provider) {
            Ok(ctx) => ctx,
            Err(resp) => break 'answer *resp,
        };
        client_id = Some(ctx.client_id.clone());
        // (5) Faults, before any state change.
        let plan = plan_faults(&core, &route);
        if plan.latency_before > 0 {
            tokio::time::sleep(Duration::from_millis(plan.latency_before)).await;
        }
        if let Some(status) = plan.error_status {
            break 'answer fault_response(status);
        }
        // (6) Handler.
        req.extensions_mut().insert(ctx);
        let resp = next.run(req).await;
        if plan.latency_after > 0 {
            tokio::time::sleep(Duration::from_millis(plan.latency_after)).await;
        }
        if plan.drop
            && let Some(conn) = &conn
        {
            let code = resp
                .extensions()
                .get::<ErrorCode>()
                .map(|c| c.0.to_string());
            record_request(
                &core,
                &method,
                &path,
                &route,
                resp.status().as_u16(),
                started,
                client_id,
                code,
            );
            // Committed; now close the connection without answering.
            conn.0.notify_one();
            return std::future::pending::<Response>().await;
        }
        resp
    };
    let code = resp
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.to_string());
    record_request(
        &core,
        &method,
        &path,
        &route,
        resp.status().as_u16(),
        started,
        client_id,
        code,
    );
    resp
}

/// Returns `Some(retry_after_s)` when the request must get a 429.
fn take_token(core: &Core, key: &str) -> Option<u64> {
    let mut st = core.state.lock();
    if let Some(f) = st.faults.set.force_429.as_mut()
        && f.remaining != Some(0)
    {
        if let Some(r) = f.remaining.as_mut() {
            *r -= 1;
        }
        return Some(f.retry_after_s.max(1));
    }
    let (rate, burst) = match &st.faults.set.rate_limit {
        Some(o) => (o.rate_per_s, o.burst),
        None => (core.cfg.ratelimit_rate_per_s, core.cfg.ratelimit_burst),
    };
    if rate <= 0.0 {
        return None;
    }
    bucket_take(&mut st.buckets, key, rate, burst)
}

/// One step of a per-key token bucket (shared by every Provider API the sandbox plays):
/// `Some(retry_after_s)` when the bucket is empty (nothing consumed).
pub(crate) fn bucket_take(
    buckets: &mut std::collections::HashMap<String, crate::state::Bucket>,
    key: &str,
    rate: f64,
    burst: u32,
) -> Option<u64> {
    let burst = f64::from(burst.max(1));
    let now = Instant::now();
    let bucket = buckets
        .entry(key.to_string())
        .or_insert(crate::state::Bucket {
            tokens: burst,
            last: now,
        });
    let elapsed = now.duration_since(bucket.last).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
    bucket.last = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        None
    } else {
        Some(((1.0 - bucket.tokens) / rate).ceil().max(1.0) as u64)
    }
}

fn authenticate(
    core: &Core,
    bearer: &str,
    key_provider: Uuid,
) -> Result<ProviderCtx, Box<Response>> {
    let unauthenticated = |core: &Core| {
        // A 401 resets the "too many token requests" window of the provider's clients.
        let mut st = core.state.lock();
        let ids: Vec<String> = st
            .clients
            .values()
            .filter(|c| c.provider_id == key_provider)
            .map(|c| c.client_id.clone())
            .collect();
        for id in ids {
            st.token_since_401.remove(&id);
        }
        Err(Box::new(ApiError::unauthenticated().into_response()))
    };
    let Some(b) = verify_bearer(core, bearer, &core.cfg.provider_audience) else {
        return unauthenticated(core);
    };
    let client = b.client;
    if client.provider_id != key_provider {
        return Err(Box::new(gateway(StatusCode::FORBIDDEN, "Forbidden")));
    }
    Ok(ProviderCtx {
        provider_id: client.provider_id,
        client_id: client.client_id.clone(),
    })
}

/// A bearer token that passed [`verify_bearer`].
pub(crate) struct Bearer {
    pub client: crate::config::ProviderClient,
    pub jti: String,
}

/// Signature (verified once, then cached), `iss`, `aud`, unexpired `exp`, no revocation and a
/// known client; `None` means 401. Shared by every Provider API the sandbox plays.
pub(crate) fn verify_bearer(core: &Core, bearer: &str, audience: &str) -> Option<Bearer> {
    if bearer.is_empty() {
        return None;
    }
    let now = core.now().timestamp();
    let cached = core.state.lock().token_cache.get(bearer).cloned();
    let verified = match cached {
        Some(v) if v.claims.aud == audience && core.keys.read().find(&v.kid).is_some() => v,
        _ => {
            let keys = core.keys.read().clone();
            let v = verify_access_token(&keys, bearer, &core.issuer, audience, now).ok()?;
            let mut st = core.state.lock();
            if st.token_cache.len() > 10_000 {
                st.token_cache.clear();
            }
            st.token_cache.insert(bearer.to_string(), v.clone());
            v
        }
    };
    if verified.claims.exp <= now {
        return None;
    }
    let st = core.state.lock();
    if st.revoked.contains(&verified.claims.jti) {
        return None;
    }
    let client = st.clients.get(&verified.claims.azp)?.clone();
    Some(Bearer {
        client,
        jti: verified.claims.jti,
    })
}

/// Request body with the 413 envelope for oversized chunked bodies.
pub(crate) fn body_text(
    core: &Core,
    body: Result<Bytes, BytesRejection>,
    root: &str,
) -> Result<String, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(core.cfg.max_body_bytes)
        } else {
            ApiError::validation(vec![DetailItem::invalid(root, "could not read the body")])
        }
    })?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| ApiError::validation(vec![DetailItem::invalid(root, "body is not UTF-8")]))
}

fn path_uuid(raw: &str, target: &str) -> Result<Uuid, ApiError> {
    if validate::is_uuid_pattern(raw)
        && let Ok(u) = Uuid::parse_str(raw)
    {
        return Ok(u);
    }
    Err(ApiError::validation(vec![DetailItem::invalid(
        target,
        "does not match pattern",
    )]))
}

pub async fn post_statement(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<ProviderCtx>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(&core, body, "StatementRequest")?;
    let parsed = validate::parse_statement(&text, core.cfg.statement_max_transactions)
        .map_err(ApiError::validation)?;
    let now = core.now();
    let mut violations: Vec<(ViolationKind, String)> = Vec::new();
    let (resource, id, n) = {
        let mut guard = core.state.lock();
        let st = &mut *guard;
        let Some(acct) = st
            .accounts
            .get_mut(&parsed.principal_id)
            .filter(|a| a.provider_id == ctx.provider_id)
        else {
            return Err(ApiError::not_found("Bank account"));
        };
        if acct.bank_id != parsed.bank_id {
            return Err(ApiError::validation(vec![DetailItem::invalid(
                "StatementRequest.data.bankId",
                "does not match the bank account's bank",
            )]));
        }
        if acct.status == AccountStatus::Cancelled {
            st.metrics.cancelled_rejections += 1;
            if acct.deleted_acknowledged_at.is_some() {
                let v = (
                    ViolationKind::PostAfterResourceDeleted,
                    "statement posted after resourceDeleted was acknowledged".to_string(),
                );
                let acct_id = acct.id;
                st.violation(
                    core.cfg.log_capacity,
                    now,
                    v.0,
                    v.1,
                    Some(acct_id),
                    None,
                    Some(ctx.client_id.clone()),
                );
            }
            return Err(ApiError::conflict("The bank account is cancelled"));
        }
        if acct.in_flight.is_some() {
            st.metrics.in_flight_rejections += 1;
            return Err(ApiError::conflict(
                "A statement is already in flight for this bank account",
            ));
        }
        // Contract violations Banking Service does not reject (§5). `requestedStartDate` is a
        // day: the start of that UTC day counts as inside (README, notifications).
        let start = acct
            .requested_start_date
            .date_naive()
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        if let Some(i) = parsed
            .txns
            .windows(2)
            .position(|w| w[1].date_posted < w[0].date_posted)
        {
            violations.push((
                ViolationKind::TransactionsOutOfOrder,
                format!(
                    "transactionDetails[{}] is older than the one before it",
                    i + 1
                ),
            ));
        }
        let not_posted: Vec<&str> = parsed
            .txns
            .iter()
            .filter(|t| t.status != "posted")
            .map(|t| t.unique_id.as_str())
            .collect();
        if !not_posted.is_empty() {
            violations.push((
                ViolationKind::TransactionStatusNotPosted,
                format!("transactionStatus not posted: {}", not_posted.join(", ")),
            ));
        }
        let future: Vec<&str> = parsed
            .txns
            .iter()
            .filter(|t| t.date_posted > now)
            .map(|t| t.unique_id.as_str())
            .collect();
        if !future.is_empty() {
            violations.push((
                ViolationKind::DatePostedInFuture,
                format!("datePosted in the future: {}", future.join(", ")),
            ));
        }
        let early: Vec<&str> = parsed
            .txns
            .iter()
            .filter(|t| t.date_posted < start)
            .map(|t| t.unique_id.as_str())
            .collect();
        if !early.is_empty() {
            violations.push((
                ViolationKind::DatePostedBeforeRequestedStart,
                format!("datePosted before requestedStartDate: {}", early.join(", ")),
            ));
        }

        let id = st.rng.uuid();
        acct.in_flight = Some(id);
        let n = parsed.txns.len();
        let mut stmt = Statement {
            id,
            principal_id: parsed.principal_id,
            provider_id: ctx.provider_id,
            bank_id: parsed.bank_id,
            status: StatementStatus::Queued,
            status_modified: now,
            created: now,
            expected: parsed.expected,
            actual: parsed.actual,
            details: None,
            account_status: parsed.account_status,
            balances: parsed.balances,
            txns: parsed.txns,
            history: Vec::new(),
            processing_us: None,
            last_polled: None,
            poll_count: 0,
        };
        stmt.history.push(StatusChange {
            status: StatementStatus::Queued,
            at: fmt_time(now),
        });
        let resource = stmt.resource();
        st.statements.insert(id, stmt);
        st.statements_by_account
            .entry(parsed.principal_id)
            .or_default()
            .push(id);
        let in_flight = st.in_flight_count(parsed.principal_id);
        let m = st
            .metrics
            .max_in_flight
            .entry(parsed.principal_id)
            .or_default();
        *m = (*m).max(in_flight);
        // Unknown keys: one violation per key and place, array positions folded
        // (`transactionDetails[].narative1`), with the first full path and the count.
        let mut unknown: Vec<(String, String, usize)> = Vec::new();
        for path in &parsed.unknown_fields {
            let shape = fold_indexes(path);
            match unknown.iter_mut().find(|(s, _, _)| *s == shape) {
                Some(entry) => entry.2 += 1,
                None => unknown.push((shape, path.clone(), 1)),
            }
        }
        for (shape, first, count) in unknown {
            let key = shape.rsplit('.').next().unwrap_or_default().to_string();
            let message = if count == 1 {
                format!("unknown key `{key}` at {first}")
            } else {
                format!(
                    "unknown key `{key}` at {first} and {} more like it ({shape})",
                    count - 1
                )
            };
            st.violation_at(
                core.cfg.log_capacity,
                now,
                ViolationKind::UnknownField,
                message,
                Some(first),
                Some(parsed.principal_id),
                Some(id),
                Some(ctx.client_id.clone()),
            );
        }
        for o in &parsed.overlong {
            let seq = st.next_seq();
            push_capped(
                &mut st.overlong_fields,
                core.cfg.log_capacity,
                OverlongField {
                    seq,
                    at: fmt_time(now),
                    bank_account_id: parsed.principal_id,
                    statement_id: id,
                    path: o.path.clone(),
                    field: o.field.clone(),
                    unique_id: o.unique_id.clone(),
                    length: o.length,
                    limit: o.limit,
                    client_id: Some(ctx.client_id.clone()),
                },
            );
        }
        for (kind, msg) in violations.drain(..) {
            st.violation(
                core.cfg.log_capacity,
                now,
                kind,
                msg,
                Some(parsed.principal_id),
                Some(id),
                Some(ctx.client_id.clone()),
            );
        }
        (resource, id, n)
    };
    crate::engine::schedule(&core, id, n);
    Ok(ok_envelope(
        StatusCode::CREATED,
        resource,
        json!({ "self": format!("/v1/statements/{id}") }),
    ))
}

/// `a.b[3].c[0].d` → `a.b[].c[].d`
fn fold_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_brackets = false;
    for ch in path.chars() {
        match ch {
            '[' => {
                in_brackets = true;
                out.push('[');
            }
            ']' => {
                in_brackets = false;
                out.push(']');
            }
            _ if in_brackets => {}
            _ => out.push(ch),
        }
    }
    out
}

pub async fn get_statement(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<ProviderCtx>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "statementId")?;
    let now = core.now();
    let mut guard = core.state.lock();
    let st = &mut *guard;
    let Some(stmt) = st
        .statements
        .get_mut(&id)
        .filter(|s| s.provider_id == ctx.provider_id)
    else {
        return Err(ApiError::not_found("Statement"));
    };
    let polled = Instant::now();
    let too_fast = stmt
        .last_polled
        .is_some_and(|t| polled.duration_since(t) < Duration::from_secs(1));
    stmt.last_polled = Some(polled);
    stmt.poll_count += 1;
    let resource = stmt.resource();
    let principal = stmt.principal_id;
    if too_fast {
        st.violation(
            core.cfg.log_capacity,
            now,
            ViolationKind::PollingTooFast,
            "statement polled more than once per second".into(),
            Some(principal),
            Some(id),
            Some(ctx.client_id.clone()),
        );
    }
    drop(guard);
    Ok(ok_envelope(
        StatusCode::OK,
        resource,
        json!({ "self": format!("/v1/statements/{id}") }),
    ))
}

pub async fn delete_statement(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<ProviderCtx>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "statementId")?;
    let now = core.now();
    let mut guard = core.state.lock();
    let st = &mut *guard;
    let Some(stmt) = st
        .statements
        .get_mut(&id)
        .filter(|s| s.provider_id == ctx.provider_id)
    else {
        return Err(ApiError::not_found("Statement"));
    };
    if !matches!(
        stmt.status,
        StatementStatus::Accepting | StatementStatus::Failed
    ) {
        return Err(ApiError::conflict(format!(
            "A statement in status {} cannot be deleted",
            stmt.status.as_str()
        )));
    }
    let was_accepting = stmt.status == StatementStatus::Accepting;
    stmt.set_status(StatementStatus::Deleted, now);
    stmt.txns = Vec::new();
    let resource = stmt.resource();
    let principal = stmt.principal_id;
    st.release_lock(principal, id);
    if was_accepting {
        *st.metrics
            .statements_final
            .entry("deleted".into())
            .or_default() += 1;
    }
    drop(guard);
    Ok(ok_envelope(
        StatusCode::OK,
        resource,
        json!({ "self": format!("/v1/statements/{id}") }),
    ))
}

pub async fn patch_authorisation(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<ProviderCtx>,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(&core, body, "AuthorisationRequest")?;
    let parsed = validate::parse_patch(&text, false).map_err(ApiError::validation)?;
    let id = Uuid::parse_str(&raw).map_err(|_| ApiError::not_found("Authorisation"))?;
    let now = core.now();
    let mut guard = core.state.lock();
    let st = &mut *guard;
    let Some(auth) = st
        .authorisations
        .get_mut(&id)
        .filter(|a| a.provider_id == ctx.provider_id)
    else {
        return Err(ApiError::not_found("Authorisation"));
    };
    match auth.status(now) {
        AuthorisationStatus::Completed => {
            auth.rejected_patches += 1;
            return Err(ApiError::conflict("The authorisation is already completed"));
        }
        AuthorisationStatus::Expired => {
            auth.rejected_patches += 1;
            return Err(ApiError::conflict("The authorisation has expired"));
        }
        AuthorisationStatus::Open => {}
    }
    if auth.kind == AuthorisationKind::Onboarding
        && parsed.status == "success"
        && parsed.accounts.is_empty()
    {
        return Err(ApiError::validation(vec![DetailItem::invalid(
            "AuthorisationRequest.data.bankAccounts",
            "onboarding success needs at least one account",
        )]));
    }
    let kind = auth.kind;
    let group = auth.consent_group_id;
    let company = auth.company_id.clone();
    let bank_id = auth.bank_id;
    let mut accounts = parsed.accounts;
    auth.completed = true;
    for a in accounts.iter_mut() {
        a.connected = st.is_connected(
            &company,
            bank_id,
            &a.bank_identifier,
            &a.account_identifier,
            &a.bank_account_external_id,
        );
    }
    if let Some(auth) = st.authorisations.get_mut(&id) {
        auth.patch = Some(PatchRecord {
            status: parsed.status.clone(),
            bank_accounts: accounts,
            at: fmt_time(now),
        });
    }
    if kind == AuthorisationKind::Reauth && parsed.status == "success" {
        for a in st.accounts.values_mut() {
            if a.consent_group_id == group && a.status == AccountStatus::AuthRequired {
                a.status = if a.store.txns.is_empty() {
                    AccountStatus::Pending
                } else {
                    AccountStatus::Active
                };
            }
        }
    }
    drop(guard);
    Ok(ok_envelope(
        StatusCode::OK,
        json!({ "_id": id, "status": parsed.status }),
        json!({}),
    ))
}

pub async fn post_account_query(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<ProviderCtx>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(&core, body, "AccountQueryRequest")?;
    let (bank_id, external_id) =
        validate::parse_account_query(&text).map_err(ApiError::validation)?;
    let st = core.state.lock();
    let matches = st.accounts.values().filter(|a| {
        a.provider_id == ctx.provider_id && a.bank_id == bank_id && a.external_id == external_id
    });
    let mut best_live: Option<&crate::state::Account> = None;
    let mut best_cancelled: Option<&crate::state::Account> = None;
    for a in matches {
        let slot = if a.status == AccountStatus::Cancelled {
            &mut best_cancelled
        } else {
            &mut best_live
        };
        if slot.is_none_or(|b| a.created_seq > b.created_seq) {
            *slot = Some(a);
        }
    }
    let Some(a) = best_live.or(best_cancelled) else {
        return Err(ApiError::not_found("Bank account"));
    };
    let data = json!({
        "bankAccountId": a.id,
        "status": a.status.as_str(),
        "requestedStartDate": a.requested_start_raw,
    });
    Ok(ok_envelope(StatusCode::OK, data, json!({})))
}

pub async fn post_banks(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<ProviderCtx>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let text = body_text(&core, body, "BankRequest")?;
    let sync = validate::parse_bank_sync(&text).map_err(ApiError::validation)?;
    let now = core.now();
    let mut st = core.state.lock();
    // All-or-nothing: every referenced bank must exist for this provider.
    for id in sync
        .update
        .iter()
        .map(|u| u.principal_id)
        .chain(sync.remove.iter().map(|r| r.0))
    {
        if !st
            .banks
            .get(&id)
            .is_some_and(|b| b.provider_id == ctx.provider_id && !b.removed)
        {
            return Err(ApiError::not_found("Bank"));
        }
    }
    let mut created = Vec::new();
    for c in sync.create {
        let id = st.rng.uuid();
        created.push(json!({ "principalId": id, "externalRef": c.external_ref, "name": c.name }));
        st.banks.insert(
            id,
            Bank {
                id,
                provider_id: ctx.provider_id,
                name: c.name,
                country_code: c.country_code,
                url: c.url,
                supportiframe: c.supportiframe,
                external_ref: c.external_ref,
                callbacks: c.callbacks,
                removed: false,
                created_at: now,
            },
        );
        st.bank_order.push(id);
    }
    let mut updated = Vec::new();
    for u in sync.update {
        if let Some(b) = st.banks.get_mut(&u.principal_id) {
            if let Some(n) = u.name {
                b.name = n;
            }
            if let Some(e) = u.external_ref {
                b.external_ref = e;
            }
            if let Some(cb) = u.callbacks {
                b.callbacks = cb;
            }
            updated.push(json!({ "principalId": u.principal_id }));
        }
    }
    let mut removed = Vec::new();
    for (id, _) in sync.remove {
        if let Some(b) = st.banks.get_mut(&id) {
            b.removed = true;
            removed.push(json!({ "principalId": id }));
        }
    }
    drop(st);
    Ok(ok_envelope(
        StatusCode::OK,
        json!({ "created": created, "updated": updated, "removed": removed }),
        json!({}),
    ))
}

/// 404 for unknown `/v1` routes (envelope).
pub async fn not_found() -> Response {
    ApiError::not_found("Route").into_response()
}

pub async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "Method not allowed",
    )
    .into_response()
}
