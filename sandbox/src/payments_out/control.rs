//! Payments Out control and inspection (`/_sandbox/payments-out/...`, plus the `/sim/...`
//! names of docs/payments-out-sandbox.md §8).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::notify::{Auth, Delivery, Retries, deliver_once, notification, provider_urls};
use super::{LatenessSummary, PoFaults};
use crate::control::parse_body;
use crate::envelope::{ApiError, DetailItem, json_response};
use crate::model::HeaderVariant;
use crate::sageid::TokenVariant;
use crate::state::Core;

pub fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/_sandbox/payments-out/reset", post(reset))
        .route("/_sandbox/payments-out/violations", get(violations))
        .route("/sim/violations", get(violations))
        .route("/_sandbox/payments-out/inbox", get(inbox))
        .route("/sim/consumer/inbox", get(inbox))
        .route("/_sandbox/payments-out/deliveries", get(deliveries))
        .route("/_sandbox/payments-out/lateness", get(lateness))
        .route(
            "/_sandbox/payments-out/faults",
            get(get_faults).put(set_faults).delete(clear_faults),
        )
        .route("/_sandbox/payments-out/batches", get(batches))
        .route("/_sandbox/payments-out/batches/{id}", get(batch))
        .route("/_sandbox/payments-out/subscriptions", get(subscriptions))
        .route("/_sandbox/payments-out/provider", get(provider))
        .route("/_sandbox/payments-out/notify", post(notify))
}

async fn reset(State(core): State<Arc<Core>>) -> Response {
    super::reset(&core);
    json_response(StatusCode::OK, &json!({ "reset": true }))
}

#[derive(Deserialize)]
struct Since {
    since: Option<u64>,
}

async fn violations(State(core): State<Arc<Core>>) -> Response {
    let mut st = core.po.lock();
    super::sweep_expired_links(&core, &mut st);
    json_response(StatusCode::OK, &st.violations)
}

async fn inbox(State(core): State<Arc<Core>>, Query(q): Query<Since>) -> Response {
    let st = core.po.lock();
    let after = q.since.unwrap_or(0);
    let items: Vec<_> = st.inbox.iter().filter(|i| i.seq > after).collect();
    json_response(StatusCode::OK, &items)
}

async fn deliveries(State(core): State<Arc<Core>>) -> Response {
    json_response(StatusCode::OK, &core.po.lock().deliveries)
}

async fn lateness(State(core): State<Arc<Core>>) -> Response {
    let st = core.po.lock();
    let mut ms: Vec<i64> = st.lateness.iter().map(|r| r.elapsed_ms).collect();
    ms.sort_unstable();
    let pct = |p: f64| {
        if ms.is_empty() {
            0
        } else {
            ms[((ms.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    let summary = LatenessSummary {
        count: ms.len(),
        late: st.lateness.iter().filter(|r| r.late).count(),
        max_ms: ms.last().copied().unwrap_or(0),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        records: st.lateness.clone(),
    };
    json_response(StatusCode::OK, &summary)
}

async fn get_faults(State(core): State<Arc<Core>>) -> Response {
    json_response(StatusCode::OK, &core.po.lock().faults)
}

async fn set_faults(State(core): State<Arc<Core>>, body: Bytes) -> Result<Response, ApiError> {
    let f: PoFaults = parse_body(&body)?;
    let bad_rate = |r: f64| !(0.0..=1.0).contains(&r);
    if bad_rate(f.notifications.lost_ack_rate)
        || bad_rate(f.bank.duplicate_event_rate)
        || bad_rate(f.bank.timeout_after_accept_rate)
        || f.routes.iter().any(|r| bad_rate(r.error_rate))
        || f.patch_applied_then_500
            .as_ref()
            .is_some_and(|p| bad_rate(p.rate))
    {
        return Err(ApiError::validation(vec![DetailItem::invalid(
            "faults",
            "rates must be in [0, 1]",
        )]));
    }
    if let Some(e) = &f.bank.errors
        && (!matches!(e.status, 429 | 503) || bad_rate(e.rate))
    {
        return Err(ApiError::validation(vec![DetailItem::invalid(
            "faults.bank.errors",
            "status must be 429 or 503 and rate in [0, 1]",
        )]));
    }
    if f.revoke_tokens {
        let mut st = core.state.lock();
        let all: Vec<String> = st.issued_tokens.keys().cloned().collect();
        st.revoked.extend(all);
    }
    if f.rotate_keys {
        let mut keys = core.keys.read().clone();
        keys.rotate(core.cfg.seed)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        *core.keys.write() = keys;
    }
    core.po.lock().faults = f.clone();
    Ok(json_response(StatusCode::OK, &f))
}

async fn clear_faults(State(core): State<Arc<Core>>) -> Response {
    core.po.lock().faults = PoFaults::default();
    json_response(StatusCode::OK, &PoFaults::default())
}

async fn batches(State(core): State<Arc<Core>>) -> Response {
    let st = core.po.lock();
    let prefix = &core.cfg.payments_out.provider_prefix;
    let list: Vec<Value> = st
        .batch_order
        .iter()
        .filter_map(|id| st.batches.get(id))
        .map(|b| b.wire(prefix))
        .collect();
    json_response(StatusCode::OK, &list)
}

async fn batch(State(core): State<Arc<Core>>, Path(id): Path<Uuid>) -> Response {
    let st = core.po.lock();
    match st.batches.get(&id) {
        Some(b) => {
            // The Provider API's view, and what the batch cost in Provider API calls.
            let mut view = b.wire(&core.cfg.payments_out.provider_prefix);
            view["calls"] = serde_json::json!({ "gets": b.gets, "patches": b.patches });
            json_response(StatusCode::OK, &view)
        }
        None => ApiError::not_found("Batch").into_response(),
    }
}

async fn subscriptions(State(core): State<Arc<Core>>) -> Response {
    let st = core.po.lock();
    let list: Vec<_> = st.subscriptions.values().map(|s| s.wire(true)).collect();
    json_response(StatusCode::OK, &list)
}

async fn provider(State(core): State<Arc<Core>>) -> Response {
    let st = core.po.lock();
    json_response(
        StatusCode::OK,
        &st.providers.get(&core.cfg.payments_out.provider_id),
    )
}

/// One delivery to the connector, any body, any signing variant (negative tests).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NotifyRequest {
    /// `notifications` (default) or `subscription`.
    pub target: Option<String>,
    /// A raw body; else a `type` + `data` notification is built.
    pub body: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub subscription_id: Option<Uuid>,
    pub data: Value,
    pub token: TokenVariant,
    pub header: HeaderVariant,
    pub retry: bool,
}

async fn notify(State(core): State<Arc<Core>>, body: Bytes) -> Result<Response, ApiError> {
    let req: NotifyRequest = parse_body(&body)?;
    let (n_url, s_url, header_name) = provider_urls(&core);
    let url = match req.target.as_deref() {
        Some("subscription") => s_url,
        _ => n_url,
    }
    .ok_or_else(|| {
        ApiError::validation(vec![DetailItem::invalid(
            "target",
            "the provider configuration has no URL for it",
        )])
    })?;
    let kind = req.kind.clone().unwrap_or_else(|| "batchpayments".into());
    let text = match req.body {
        Some(b) => b,
        None => {
            let n = notification(
                &core,
                &kind,
                req.subscription_id,
                None,
                super::defaults::APPLICATION,
                None,
                req.data,
            );
            serde_json::to_string(&n).unwrap_or_default()
        }
    };
    let delivery = Delivery {
        url,
        kind,
        key: "manual".into(),
        body: text,
        auth: Auth::Sage {
            token: req.token,
            header: req.header,
        },
        header_name,
    };
    let retries = if req.retry {
        Retries::sage(&core.cfg.payments_out)
    } else {
        Retries::default()
    };
    let out = deliver_once(&core, &delivery, &retries).await;
    Ok(json_response(StatusCode::OK, &out))
}
