//! Payments Out Provider API (`/api-provider-v1/...`) and its request pipeline
//! (docs/payments-out-sandbox.md §3): API key, rate, bearer, faults, handler.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::wire::{
    self, BatchPatch, BatchStatus, PaymentStatus, SubscriptionPatch, SubscriptionStatus,
};
use super::{LatenessRecord, PoState, PoViolationKind, Where, violation};
use crate::envelope::{ApiError, DetailItem, ErrorCode, gateway, ok_envelope};
use crate::provider::{bucket_take, ct_eq, fault_response, record_request, verify_bearer};
use crate::state::Core;
use crate::util::parse_contract_time;

/// Who is calling (set by the pipeline).
#[derive(Debug, Clone)]
pub struct PoCtx {
    pub client_id: String,
}

/// Marks an answer whose violation the handler recorded already.
#[derive(Debug, Clone, Copy)]
pub struct Recorded;

pub fn router(core: &Arc<Core>) -> Router<Arc<Core>> {
    let p = &core.cfg.payments_out.provider_prefix;
    let m = &core.cfg.payments_out.msg_prefix;
    Router::new()
        .route(
            &format!("{p}/providers/{{providerId}}"),
            get(get_provider).patch(patch_provider),
        )
        .route(
            &format!("{p}/batchpayments/{{batchId}}"),
            get(get_batch).patch(patch_batch),
        )
        .route(
            &format!("{p}/subscriptions/{{subscriptionId}}"),
            get(get_subscription).patch(patch_subscription),
        )
        .route(&format!("{m}/{{op}}"), post(super::messaging::post_message))
        .route_layer(middleware::from_fn_with_state(core.clone(), pipeline))
}

/// A refusal that is also a contract violation.
pub fn refuse(
    core: &Core,
    st: &mut PoState,
    kind: PoViolationKind,
    w: Where,
    err: ApiError,
) -> Response {
    let msg = match &err.detail {
        Some(d) if !d.is_empty() => format!("{}: {} {}", err.message, d[0].target, d[0].message),
        _ => err.message.clone(),
    };
    violation(core, st, kind, msg, w);
    let mut resp = err.into_response();
    resp.extensions_mut().insert(Recorded);
    resp
}

fn route_plan(core: &Core, route: &str) -> (Option<u16>, u64, u64) {
    let mut guard = core.po.lock();
    let st = &mut *guard;
    let (mut err, mut before, mut after) = (None, 0, 0);
    for f in st.faults.routes.iter_mut() {
        let hit = f.route == "*"
            || f.route == route
            || route.split_once(' ').is_some_and(|(_, p)| p == f.route);
        if !hit || f.remaining == Some(0) {
            continue;
        }
        if let Some(r) = f.remaining.as_mut() {
            *r -= 1;
        }
        if err.is_none() && f.error_rate > 0.0 && st.rng.unit() < f.error_rate {
            err = Some(f.error_status);
        }
        let lat = f.latency_ms + st.rng.below(f.latency_jitter_ms + 1);
        if f.latency_after {
            after += lat;
        } else {
            before += lat;
        }
    }
    (err, before, after)
}

/// The pipeline: API key (403), rate (429), bearer (401), faults, then the handler.
pub async fn pipeline(State(core): State<Arc<Core>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let cfg = &core.cfg.payments_out;
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let route = match req.extensions().get::<MatchedPath>() {
        Some(m) => format!("{method} {}", m.as_str()),
        None => format!("{method} {path}"),
    };
    let fapi = req.headers().get("x-fapi-interaction-id").cloned();
    let mut client_id = None;
    let mut resp = 'answer: {
        let key = req
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !ct_eq(key.as_bytes(), cfg.api_key.as_bytes()) {
            break 'answer gateway(StatusCode::FORBIDDEN, "Forbidden");
        }
        {
            let mut guard = core.po.lock();
            let st = &mut *guard;
            if let Some(f) = st.faults.force_429.as_mut()
                && f.remaining != Some(0)
            {
                if let Some(r) = f.remaining.as_mut() {
                    *r -= 1;
                }
                break 'answer ApiError::too_many(f.retry_after_s.max(1)).into_response();
            }
            if cfg.rate_per_s > 0.0
                && let Some(retry) = bucket_take(&mut st.buckets, &key, cfg.rate_per_s, cfg.burst)
            {
                violation(
                    &core,
                    st,
                    PoViolationKind::RateExceeded,
                    format!("over {} requests per second: {route}", cfg.rate_per_s),
                    Where::default(),
                );
                let mut r = ApiError::too_many(retry).into_response();
                r.extensions_mut().insert(Recorded);
                break 'answer r;
            }
        }
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
        let Some(b) = verify_bearer(&core, &bearer, &cfg.audience) else {
            // A 401 resets the "token per request" window.
            core.po.lock().tokens_seen.clear();
            break 'answer ApiError::unauthenticated().into_response();
        };
        if !cfg.client_ids.contains(&b.client.client_id) {
            break 'answer gateway(StatusCode::FORBIDDEN, "Forbidden");
        }
        note_token(&core, &b.client.client_id, &b.jti);
        client_id = Some(b.client.client_id.clone());
        let (err, before, after) = route_plan(&core, &route);
        if before > 0 {
            tokio::time::sleep(Duration::from_millis(before)).await;
        }
        if let Some(s) = err {
            break 'answer fault_response(s);
        }
        req.extensions_mut().insert(PoCtx {
            client_id: b.client.client_id,
        });
        let resp = next.run(req).await;
        if after > 0 {
            tokio::time::sleep(Duration::from_millis(after)).await;
        }
        resp
    };
    let status = resp.status();
    if status == StatusCode::BAD_REQUEST && resp.extensions().get::<Recorded>().is_none() {
        let mut st = core.po.lock();
        violation(
            &core,
            &mut st,
            PoViolationKind::InvalidRequest,
            format!("400 on {route}"),
            Where {
                client_id: client_id.clone(),
                ..Where::default()
            },
        );
    }
    if let Some(v) = fapi {
        resp.headers_mut().insert("x-fapi-interaction-id", v);
    }
    let code = resp
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.to_string());
    record_request(
        &core,
        &method,
        &path,
        &route,
        status.as_u16(),
        started,
        client_id,
        code,
    );
    resp
}

/// "A token per request": more distinct tokens than the threshold within half a lifetime.
fn note_token(core: &Core, client: &str, jti: &str) {
    let now = core.now();
    let half = chrono::Duration::seconds((core.cfg.token_lifetime_s / 2) as i64);
    let threshold = core.cfg.payments_out.token_violation_threshold;
    let mut guard = core.po.lock();
    let st = &mut *guard;
    let seen = st.tokens_seen.entry(client.to_string()).or_default();
    seen.retain(|(t, _)| now - *t < half);
    if seen.iter().any(|(_, j)| j == jti) {
        return;
    }
    seen.push((now, jti.to_string()));
    if seen.len() == threshold + 1 {
        let n = seen.len();
        violation(
            core,
            st,
            PoViolationKind::TokenPerRequest,
            format!("{n} distinct access tokens within half a token lifetime without a 401"),
            Where {
                client_id: Some(client.to_string()),
                ..Where::default()
            },
        );
    }
}

/// `{"data": {...}}` with the `"` rule applied; refusals recorded.
pub fn request_data(
    core: &Core,
    body: Result<Bytes, BytesRejection>,
    root: &str,
) -> Result<Value, Box<Response>> {
    let text = match crate::provider::body_text(core, body, root) {
        Ok(t) => t,
        Err(e) => {
            if e.status == StatusCode::PAYLOAD_TOO_LARGE {
                let mut st = core.po.lock();
                return Err(Box::new(refuse(
                    core,
                    &mut st,
                    PoViolationKind::OversizeBody,
                    Where::default(),
                    e,
                )));
            }
            return Err(Box::new(e.into_response()));
        }
    };
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| {
            ApiError::validation(vec![DetailItem::invalid(
                root,
                format!("invalid JSON: {e}"),
            )])
            .into_response()
        })
        .map_err(Box::new)?;
    let Some(data) = v.get("data").filter(|d| d.is_object()) else {
        return Err(Box::new(
            ApiError::validation(vec![DetailItem::missing(format!("{root}.data"))]).into_response(),
        ));
    };
    if let Some(at) = super::rules::find_quote(data, &format!("{root}.data")) {
        let mut st = core.po.lock();
        return Err(Box::new(refuse(
            core,
            &mut st,
            PoViolationKind::QuoteInInput,
            Where::default(),
            ApiError::validation(vec![DetailItem::invalid(at, "must not contain \"")]),
        )));
    }
    Ok(data.clone())
}

fn path_uuid(raw: &str, what: &str) -> Result<Uuid, Box<Response>> {
    Uuid::parse_str(raw).map_err(|_| Box::new(ApiError::not_found(what).into_response()))
}

fn transition_error(message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, "InvalidStatusTransition", message)
}

/// The "PATCH applied, answered 500" fault (`rate` 0 = every PATCH while `remaining` lasts).
fn patch_fails_after_commit(st: &mut PoState) -> bool {
    let Some(f) = st.faults.patch_applied_then_500.clone() else {
        return false;
    };
    if f.remaining == Some(0) {
        return false;
    }
    let hit = f.rate <= 0.0 || st.rng.unit() < f.rate;
    if hit
        && let Some(r) = st
            .faults
            .patch_applied_then_500
            .as_mut()
            .and_then(|f| f.remaining.as_mut())
    {
        *r -= 1;
    }
    hit
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn applied_answer(st: &mut PoState) -> Response {
    if patch_fails_after_commit(st) {
        ApiError::internal("Injected failure after commit").into_response()
    } else {
        no_content()
    }
}

// ------------------------------------------------------------------ providers

async fn get_provider(State(core): State<Arc<Core>>, Path(raw): Path<String>) -> Response {
    let id = match path_uuid(&raw, "Provider") {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let st = core.po.lock();
    match st
        .providers
        .get(&id)
        .filter(|_| id == core.cfg.payments_out.provider_id)
    {
        Some(p) => ok_envelope(
            StatusCode::OK,
            p,
            json!({ "self": format!("{}/providers/{id}", core.cfg.payments_out.provider_prefix) }),
        ),
        None => ApiError::not_found("Provider").into_response(),
    }
}

async fn patch_provider(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = match path_uuid(&raw, "Provider") {
        Ok(id) => id,
        Err(r) => return *r,
    };
    if id != core.cfg.payments_out.provider_id {
        return ApiError::not_found("Provider").into_response();
    }
    let mut data = match request_data(&core, body, "ProviderRequest") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let mut problems = super::rules::check_rule_definitions(&data);
    match data.get("providerId") {
        None => {}
        Some(Value::String(s)) if Uuid::parse_str(s).ok() == Some(id) => {}
        Some(_) => problems.push(DetailItem::invalid(
            "ProviderRequest.data.providerId",
            "does not match the path",
        )),
    }
    if let Some(n) = data.get("maximumPaymentCount")
        && n.as_u64().is_none_or(|n| n == 0)
    {
        problems.push(DetailItem::invalid(
            "ProviderRequest.data.maximumPaymentCount",
            "must be a positive integer",
        ));
    }
    if !problems.is_empty() {
        return ApiError::validation(problems).into_response();
    }
    if let Some(m) = data.as_object_mut() {
        m.insert("providerId".into(), Value::String(id.to_string()));
    }
    let mut st = core.po.lock();
    // Replace semantics: omitted members are removed.
    st.providers.insert(id, data);
    applied_answer(&mut st)
}

// ------------------------------------------------------------------ batches

async fn get_batch(State(core): State<Arc<Core>>, Path(raw): Path<String>) -> Response {
    let id = match path_uuid(&raw, "Batch") {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let now = core.now();
    let mut st = core.po.lock();
    if let Some(b) = st.batches.get_mut(&id) {
        b.gets += 1;
    }
    let hidden_for = chrono::Duration::seconds(st.faults.batch_not_found_for_s as i64);
    match st
        .batches
        .get(&id)
        .filter(|b| b.provider_id == core.cfg.payments_out.provider_id)
    {
        Some(b) if now - b.notified_at >= hidden_for => {
            let mut view = b.wire(&core.cfg.payments_out.provider_prefix);
            if st.faults.numeric_amounts {
                wire::amounts_as_numbers(&mut view);
            }
            ok_envelope(
                StatusCode::OK,
                view,
                json!({ "self": format!("{}/batchpayments/{id}", core.cfg.payments_out.provider_prefix) }),
            )
        }
        _ => ApiError::not_found("Batch").into_response(),
    }
}

fn parse_completed(s: &str) -> Option<DateTime<Utc>> {
    parse_contract_time(s).or_else(|| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|d| d.and_utc())
    })
}

async fn patch_batch(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<PoCtx>,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = match path_uuid(&raw, "Batch") {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let data = match request_data(&core, body, "BatchPaymentsRequest") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let patch: BatchPatch = match serde_json::from_value(data) {
        Ok(p) => p,
        Err(e) => {
            return ApiError::validation(vec![DetailItem::invalid(
                "BatchPaymentsRequest.data",
                e.to_string(),
            )])
            .into_response();
        }
    };
    let now = core.now();
    let cfg = &core.cfg.payments_out;
    let flows = &cfg.status_flows;
    let mut guard = core.po.lock();
    let st = &mut *guard;
    let Some(batch) = st
        .batches
        .get(&id)
        .filter(|b| b.provider_id == cfg.provider_id)
    else {
        return ApiError::not_found("Batch").into_response();
    };
    let w = |payment: Option<String>| Where {
        batch_id: Some(id),
        payment_id: payment,
        subscription_id: batch.subscription_id,
        client_id: Some(ctx.client_id.clone()),
    };
    // Validate everything first: the PATCH is applied whole or not at all.
    struct Change {
        idx: usize,
        status: PaymentStatus,
        extended: Option<Option<String>>,
        completed: Option<String>,
        additional: Option<Option<String>>,
    }
    let mut changes: Vec<Change> = Vec::new();
    let mut refusal: Option<(PoViolationKind, Where, ApiError)> = None;
    for (i, pp) in patch.payments.iter().enumerate() {
        let target = format!("BatchPaymentsRequest.data.payments[{i}]");
        let idx = Uuid::parse_str(&pp.payment_id)
            .ok()
            .and_then(|pid| batch.payments.iter().position(|p| p.id == pid));
        let Some(idx) = idx else {
            refusal = Some((
                PoViolationKind::UnknownPaymentId,
                w(Some(pp.payment_id.clone())),
                ApiError::validation(vec![DetailItem::invalid(
                    format!("{target}.paymentId"),
                    "not a payment of this batch",
                )]),
            ));
            break;
        };
        let current = &batch.payments[idx];
        let status = match pp.status.as_deref() {
            None => current.status,
            Some(s) => match wire::parse_status::<PaymentStatus>(s) {
                Some(s) => s,
                None => {
                    refusal = Some((
                        PoViolationKind::InvalidRequest,
                        w(Some(pp.payment_id.clone())),
                        ApiError::validation(vec![DetailItem::invalid(
                            format!("{target}.status"),
                            "unknown status",
                        )]),
                    ));
                    break;
                }
            },
        };
        let completed = pp.payment_completed_date.clone().flatten();
        if let Some(c) = &completed
            && (status != PaymentStatus::Paid || parse_completed(c).is_none())
        {
            refusal = Some((
                PoViolationKind::InvalidRequest,
                w(Some(pp.payment_id.clone())),
                ApiError::validation(vec![DetailItem::invalid(
                    format!("{target}.paymentCompletedDate"),
                    "a date-time, only with status Paid",
                )]),
            ));
            break;
        }
        if status == PaymentStatus::Paid && completed.is_none() && current.completed.is_none() {
            refusal = Some((
                PoViolationKind::PaidWithoutCompletionDate,
                w(Some(pp.payment_id.clone())),
                ApiError::validation(vec![DetailItem::missing(format!(
                    "{target}.paymentCompletedDate"
                ))]),
            ));
            break;
        }
        if !flows.payment(current.status, status) {
            refusal = Some((
                PoViolationKind::IllegalTransition,
                w(Some(pp.payment_id.clone())),
                transition_error(format!(
                    "payment {} cannot move from {} to {}",
                    current.id,
                    wire::status_str(current.status),
                    wire::status_str(status)
                )),
            ));
            break;
        }
        changes.push(Change {
            idx,
            status,
            extended: pp.extended_status.clone(),
            completed,
            additional: pp.additional_data.clone(),
        });
    }
    let mut default = None;
    if refusal.is_none()
        && let Some(ds) = patch.default_status.as_deref()
    {
        match wire::parse_status::<BatchStatus>(ds) {
            None => {
                refusal = Some((
                    PoViolationKind::InvalidRequest,
                    w(None),
                    ApiError::validation(vec![DetailItem::invalid(
                        "BatchPaymentsRequest.data.defaultStatus",
                        "unknown status",
                    )]),
                ))
            }
            Some(s) if !flows.batch(batch.status, s) => {
                refusal = Some((
                    PoViolationKind::IllegalTransition,
                    w(None),
                    transition_error(format!(
                        "batch {id} cannot move from {} to {}",
                        wire::status_str(batch.status),
                        wire::status_str(s)
                    )),
                ))
            }
            Some(s) => default = Some(s),
        }
    }
    if let Some((kind, w, err)) = refusal {
        return refuse(&core, st, kind, w, err);
    }
    let subscription_id = batch.subscription_id;
    let first_patch = batch.patches == 0;
    let notified_at = batch.notified_at;

    // Apply.
    let Some(batch) = st.batches.get_mut(&id) else {
        return ApiError::not_found("Batch").into_response();
    };
    let before: Vec<PaymentStatus> = batch.payments.iter().map(|p| p.status).collect();
    let listed: Vec<usize> = changes.iter().map(|c| c.idx).collect();
    for c in changes {
        let p = &mut batch.payments[c.idx];
        if p.status.is_terminal() && p.status == c.status {
            continue; // a repeated terminal status is a no-op
        }
        p.status = c.status;
        if let Some(e) = c.extended {
            p.extended_status = e;
        }
        if c.completed.is_some() {
            p.completed = c.completed;
        }
        if let Some(a) = c.additional {
            p.additional_data = a;
        }
    }
    let batch_before = batch.status;
    if let Some(ds) = default {
        batch.status = ds;
        if let Some(ps) = ds.as_payment().filter(|s| *s != PaymentStatus::Paid) {
            for (i, p) in batch.payments.iter_mut().enumerate() {
                if !listed.contains(&i) && !p.status.is_terminal() && flows.payment(p.status, ps) {
                    p.status = ps;
                }
            }
        }
    }
    if let Some(e) = patch.extended_status {
        batch.extended_status = e;
    }
    if let Some(a) = patch.additional_data {
        batch.additional_data = a;
    }
    batch.patches += 1;
    let after: Vec<PaymentStatus> = batch.payments.iter().map(|p| p.status).collect();
    let batch_status = batch.status;
    let changed: Vec<(Uuid, PaymentStatus)> = batch
        .payments
        .iter()
        .zip(before.iter())
        .filter(|(p, b)| p.status != **b)
        .map(|(p, _)| (p.id, p.status))
        .collect();

    // Consistency of the final batch value (recorded, not refused).
    if after.iter().all(|s| s.is_terminal()) {
        let expected = BatchStatus::final_for(&after);
        if batch_status != expected {
            violation(
                &core,
                st,
                PoViolationKind::WrongFinalBatchStatus,
                format!(
                    "every payment is terminal; batch is {} but should be {}",
                    wire::status_str(batch_status),
                    wire::status_str(expected)
                ),
                Where {
                    batch_id: Some(id),
                    subscription_id,
                    client_id: Some(ctx.client_id.clone()),
                    ..Where::default()
                },
            );
        }
    }
    // Lateness figures.
    let mut records = Vec::new();
    if first_patch {
        records.push((
            "firstPatch",
            None,
            (now - notified_at).num_milliseconds(),
            None,
            cfg.first_patch_target_ms,
        ));
    }
    for (pid, s) in &changed {
        if s.is_terminal()
            && let Some(at) = st.rails.outcome_event_at(&pid.to_string())
        {
            let pushed = st.rails.outcome_pushed_at(&pid.to_string());
            records.push((
                "outcome",
                Some(*pid),
                (now - at).num_milliseconds(),
                pushed.map(|p| (now - p).num_milliseconds()),
                cfg.outcome_patch_target_ms,
            ));
        }
    }
    for (kind, pid, elapsed, since_push_ms, target) in records {
        let late = elapsed > target as i64;
        let seq = st.next_seq();
        st.lateness.push(LatenessRecord {
            seq,
            kind: kind.into(),
            batch_id: id,
            payment_id: pid,
            elapsed_ms: elapsed,
            since_push_ms,
            target_ms: target,
            late,
        });
        if late && cfg.lateness_is_violation {
            violation(
                &core,
                st,
                PoViolationKind::LatePatch,
                format!("{kind} PATCH {elapsed} ms after its trigger (target {target} ms)"),
                Where {
                    batch_id: Some(id),
                    payment_id: pid.map(|p| p.to_string()),
                    subscription_id,
                    client_id: Some(ctx.client_id.clone()),
                },
            );
        }
    }
    // What POS tells the product.
    if batch_status != batch_before || !changed.is_empty() {
        let data = json!({
            "batchId": id, "status": wire::status_str(batch_status),
            "payments": changed.iter().map(|(p, s)| json!({"paymentId": p, "status": wire::status_str(*s)})).collect::<Vec<_>>(),
        });
        st.inbox_push(
            core.cfg.log_capacity,
            now,
            "batchStatus",
            subscription_id,
            Some(id),
            None,
            data,
        );
    }
    applied_answer(st)
}

// ------------------------------------------------------------------ subscriptions

async fn get_subscription(State(core): State<Arc<Core>>, Path(raw): Path<String>) -> Response {
    let id = match path_uuid(&raw, "Subscription") {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let st = core.po.lock();
    match st
        .subscriptions
        .get(&id)
        .filter(|s| s.provider_id == core.cfg.payments_out.provider_id)
    {
        Some(s) => ok_envelope(
            StatusCode::OK,
            s.wire(true),
            json!({ "self": format!("{}/subscriptions/{id}", core.cfg.payments_out.provider_prefix) }),
        ),
        None => ApiError::not_found("Subscription").into_response(),
    }
}

/// A link needs both times, RFC 3339 UTC, expiry after issue: the expiry is what the sandbox
/// checks the connector against.
fn link_times_problem(l: &wire::AuthoriseLinks) -> Option<DetailItem> {
    l.authorise.as_ref()?;
    let at = |v: &Option<String>| v.as_deref().and_then(parse_contract_time);
    let target = "SubscriptionRequest.data.links";
    match (at(&l.authorise_issued_at), at(&l.authorise_expires_at)) {
        (Some(i), Some(e)) if e > i => None,
        (Some(_), Some(_)) => Some(DetailItem::invalid(
            format!("{target}.authoriseExpiresAt"),
            "must be after authoriseIssuedAt",
        )),
        _ => Some(DetailItem::invalid(
            target,
            "authorise needs authoriseIssuedAt and authoriseExpiresAt (RFC 3339 UTC)",
        )),
    }
}

async fn patch_subscription(
    State(core): State<Arc<Core>>,
    Extension(ctx): Extension<PoCtx>,
    Path(raw): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = match path_uuid(&raw, "Subscription") {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let data = match request_data(&core, body, "SubscriptionRequest") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let patch: SubscriptionPatch = match serde_json::from_value(data) {
        Ok(p) => p,
        Err(e) => {
            return ApiError::validation(vec![DetailItem::invalid(
                "SubscriptionRequest.data",
                e.to_string(),
            )])
            .into_response();
        }
    };
    let now = core.now();
    let mut guard = core.po.lock();
    let st = &mut *guard;
    let Some(sub) = st
        .subscriptions
        .get_mut(&id)
        .filter(|s| s.provider_id == core.cfg.payments_out.provider_id)
    else {
        return ApiError::not_found("Subscription").into_response();
    };
    let to = match patch.status.as_deref() {
        None => sub.status,
        Some(s) => match wire::parse_status::<SubscriptionStatus>(s) {
            Some(s) => s,
            None => {
                return ApiError::validation(vec![DetailItem::invalid(
                    "SubscriptionRequest.data.status",
                    "unknown status",
                )])
                .into_response();
            }
        },
    };
    if !core
        .cfg
        .payments_out
        .status_flows
        .subscription(sub.status, to)
    {
        let err = transition_error(format!(
            "subscription {id} cannot move from {} to {}",
            wire::status_str(sub.status),
            wire::status_str(to)
        ));
        return refuse(
            &core,
            st,
            PoViolationKind::IllegalTransition,
            Where {
                subscription_id: Some(id),
                client_id: Some(ctx.client_id.clone()),
                ..Where::default()
            },
            err,
        );
    }
    if let Some(l) = &patch.links
        && let Some(problem) = link_times_problem(l)
    {
        return ApiError::validation(vec![problem]).into_response();
    }
    let grace = core.cfg.payments_out.link_expiry_grace_s;
    if sub.status == SubscriptionStatus::AwaitingAuthorisation
        && matches!(
            to,
            SubscriptionStatus::Authorised | SubscriptionStatus::Pending
        )
        && sub.link_dead_at(grace).is_some_and(|t| now > t)
    {
        // Recorded, not refused: Sage would take it; the connector should have answered 410.
        let msg = format!(
            "subscription {id} moved to {} through a link that had expired",
            wire::status_str(to)
        );
        violation(
            &core,
            st,
            PoViolationKind::AuthorisedAfterLinkExpiry,
            msg,
            Where {
                subscription_id: Some(id),
                client_id: Some(ctx.client_id.clone()),
                ..Where::default()
            },
        );
    }
    let Some(sub) = st.subscriptions.get_mut(&id) else {
        return ApiError::not_found("Subscription").into_response();
    };
    let changed = sub.status != to || patch.links.is_some() || patch.additional_data.is_some();
    sub.status = to;
    if let Some(l) = patch.links {
        sub.links = Some(l);
    }
    if let Some(a) = patch.additional_data {
        sub.additional_data = a;
    }
    let view = sub.wire(true);
    if changed {
        let data = serde_json::to_value(&view).unwrap_or(Value::Null);
        st.inbox_push(
            core.cfg.log_capacity,
            now,
            "subscriptionStatus",
            Some(id),
            None,
            None,
            data,
        );
    }
    applied_answer(st)
}
