//! The product's side of Payments Out (Consumer API and consumer messaging, as a Sage product
//! calls them): organisations, subscriptions, batches, messages (docs/payments-out-sandbox.md §4).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::notify::{notification, send_notification, send_subscription};
use super::wire::{
    self, BatchStatus, MessageWire, NewSubscriptionWire, OrganisationWire, PRODUCT_MESSAGE_OPS,
    PaymentStatus, SubscriptionDelivery, SubscriptionStatus,
};
use super::{Batch, Idempotent, Organisation, Payment, Subscription, defaults, rules};
use crate::envelope::{ApiError, DetailItem, ok_envelope, raw_json};
use crate::provider::ct_eq;
use crate::state::Core;

pub fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/v3/organisations", post(create_organisation))
        .route("/v3/organisations/{organisationId}", get(get_organisation))
        .route(
            "/v3/subscriptions/organisations/{organisationId}/subscriptions",
            post(create_subscription).get(list_subscriptions),
        )
        .route(
            "/v3/subscriptions/organisations/{organisationId}/subscriptions/{subscriptionId}",
            get(get_subscription),
        )
        .route("/v3/batchpayments", post(submit_batch))
        .route("/v3/batchpayments/{batchId}", get(get_batch))
        .route("/v3/providers", get(list_providers))
        .route("/v3/localinstruments", get(local_instruments))
        .route("/api/msg-v1/{op}", post(post_message))
}

fn authorised(core: &Core, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if ct_eq(bearer.as_bytes(), core.cfg.product_bearer.as_bytes()) {
        Ok(())
    } else {
        Err(Box::new(ApiError::unauthenticated().into_response()))
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn skip_validation(headers: &HeaderMap) -> bool {
    header(headers, "x-sim-skip-validation").is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn application(headers: &HeaderMap) -> String {
    header(headers, "x-application")
        .unwrap_or(defaults::APPLICATION)
        .to_string()
}

fn data_of(body: &[u8], root: &str) -> Result<Value, Box<Response>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| {
            ApiError::validation(vec![DetailItem::invalid(
                root,
                format!("invalid JSON: {e}"),
            )])
            .into_response()
        })
        .map_err(Box::new)?;
    match v.get("data") {
        Some(d) if d.is_object() => Ok(d.clone()),
        _ => Err(Box::new(
            ApiError::validation(vec![DetailItem::missing(format!("{root}.data"))]).into_response(),
        )),
    }
}

/// A stored answer for the key, if it is younger than the retention.
fn replay(core: &Core, key: Option<&str>) -> Option<Response> {
    let key = key?;
    let now = core.now();
    let ttl = chrono::Duration::seconds(core.cfg.payments_out.idempotency_ttl_s);
    let mut st = core.po.lock();
    st.idempotency.retain(|_, v| now - v.at < ttl);
    st.idempotency.get(key).map(|i| {
        raw_json(
            StatusCode::from_u16(i.status).unwrap_or(StatusCode::CREATED),
            i.body.clone(),
        )
    })
}

fn remember(core: &Core, key: Option<&str>, status: StatusCode, body: &str) {
    if let Some(k) = key {
        let at = core.now();
        core.po.lock().idempotency.insert(
            k.to_string(),
            Idempotent {
                at,
                status: status.as_u16(),
                body: body.to_string(),
            },
        );
    }
}

fn created(core: &Core, key: Option<&str>, data: Value) -> Response {
    let body = json!({ "data": data, "links": null, "meta": null, "error": null }).to_string();
    remember(core, key, StatusCode::CREATED, &body);
    raw_json(StatusCode::CREATED, body)
}

// ------------------------------------------------------------------ organisations

async fn create_organisation(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let data = match data_of(&body, "OrganisationRequest") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let mut org: OrganisationWire = match serde_json::from_value(data) {
        Ok(o) => o,
        Err(e) => {
            return ApiError::validation(vec![DetailItem::invalid(
                "OrganisationRequest.data",
                e.to_string(),
            )])
            .into_response();
        }
    };
    let id = core.po.lock().rng.uuid();
    org.organisation_id = Some(id);
    let view = serde_json::to_value(&org).unwrap_or(Value::Null);
    core.po
        .lock()
        .organisations
        .insert(id, Organisation { wire: org });
    created(&core, None, view)
}

async fn get_organisation(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let st = core.po.lock();
    match st.organisations.get(&id) {
        Some(o) => ok_envelope(StatusCode::OK, &o.wire, Value::Null),
        None => ApiError::not_found("Organisation").into_response(),
    }
}

// ------------------------------------------------------------------ subscriptions

async fn create_subscription(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(org): Path<Uuid>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let key = header(&headers, "x-idempotency-key").map(|k| format!("subscription:{org}:{k}"));
    if let Some(r) = replay(&core, key.as_deref()) {
        return r;
    }
    let data = match data_of(&body, "SubscriptionRequest") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let req: NewSubscriptionWire = match serde_json::from_value(data.clone()) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::validation(vec![DetailItem::invalid(
                "SubscriptionRequest.data",
                e.to_string(),
            )])
            .into_response();
        }
    };
    let app = application(&headers);
    let provider = {
        let st = core.po.lock();
        if !st.organisations.contains_key(&org) {
            return ApiError::not_found("Organisation").into_response();
        }
        match st.providers.get(&req.provider_id) {
            Some(p) => p.clone(),
            None => return ApiError::not_found("Provider").into_response(),
        }
    };
    if !skip_validation(&headers) {
        let mut problems = Vec::new();
        if let Some(at) = rules::find_quote(&data, "SubscriptionRequest.data") {
            problems.push(DetailItem::invalid(at, "must not contain \""));
        }
        // Paths below `$.data.additionalData` address the parsed JSON string.
        let parsed = req
            .additional_data
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .unwrap_or(Value::Null);
        let target = json!({ "data": { "providerId": req.provider_id, "additionalData": parsed } });
        let rs = rules::effective_rules(&provider, &Value::Null, None, &["Subscriptions"]);
        problems.extend(rules::apply(&rs, &target));
        if !problems.is_empty() {
            return ApiError::validation(problems).into_response();
        }
    }
    let now = core.now();
    let sub = {
        let mut st = core.po.lock();
        let id = st.rng.uuid();
        let s = Subscription {
            id,
            organisation_id: org,
            provider_id: req.provider_id,
            status: SubscriptionStatus::Received,
            additional_data: req.additional_data,
            links: None,
            application: app.clone(),
            expiry_flagged: false,
        };
        let view = s.wire(true);
        st.subscriptions.insert(id, s);
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
        view
    };
    let delivery = SubscriptionDelivery {
        data: wire::SubscriptionWire {
            links: None,
            ..sub.clone()
        },
    };
    send_subscription(&core, &delivery, &app);
    created(
        &core,
        key.as_deref(),
        serde_json::to_value(&sub).unwrap_or(Value::Null),
    )
}

async fn list_subscriptions(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(org): Path<Uuid>,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let st = core.po.lock();
    let list: Vec<wire::SubscriptionWire> = st
        .subscriptions
        .values()
        .filter(|s| s.organisation_id == org)
        .map(|s| s.wire(true))
        .collect();
    ok_envelope(StatusCode::OK, list, Value::Null)
}

async fn get_subscription(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, id)): Path<(Uuid, Uuid)>,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let st = core.po.lock();
    match st
        .subscriptions
        .get(&id)
        .filter(|s| s.organisation_id == org)
    {
        Some(s) => ok_envelope(StatusCode::OK, s.wire(true), Value::Null),
        None => ApiError::not_found("Subscription").into_response(),
    }
}

// ------------------------------------------------------------------ batches

fn batch_problem(code: &'static str, status: StatusCode, message: String) -> Response {
    ApiError::new(status, code, message).into_response()
}

async fn submit_batch(State(core): State<Arc<Core>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let key = header(&headers, "x-idempotency-key").map(|k| format!("batch:{k}"));
    if let Some(r) = replay(&core, key.as_deref()) {
        return r;
    }
    let data = match data_of(&body, "BatchPaymentsRequest") {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let skip = skip_validation(&headers);
    let app = application(&headers);
    let cfg = &core.cfg.payments_out;
    let Some(payments) = data.get("payments").and_then(Value::as_array).cloned() else {
        return ApiError::validation(vec![DetailItem::missing(
            "BatchPaymentsRequest.data.payments",
        )])
        .into_response();
    };
    let sub_id = data
        .get("subscriptionId")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    let provider_id = data
        .get("providerId")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok());
    // Who the batch is for.
    let (provider_id, org_id, sub_status) = {
        let st = core.po.lock();
        match sub_id {
            Some(s) => match st.subscriptions.get(&s) {
                Some(sub) => (sub.provider_id, Some(sub.organisation_id), Some(sub.status)),
                None => return ApiError::not_found("Subscription").into_response(),
            },
            None => match provider_id {
                Some(p) if st.providers.contains_key(&p) => (p, None, None),
                Some(_) => return ApiError::not_found("Provider").into_response(),
                None => {
                    return ApiError::validation(vec![DetailItem::missing(
                        "BatchPaymentsRequest.data.subscriptionId",
                    )])
                    .into_response();
                }
            },
        }
    };
    let provider = core
        .po
        .lock()
        .providers
        .get(&provider_id)
        .cloned()
        .unwrap_or(Value::Null);
    if !skip {
        let max = provider
            .get("maximumPaymentCount")
            .and_then(Value::as_u64)
            .map_or(cfg.max_batch_payments, |m| {
                (m as usize).min(cfg.max_batch_payments)
            });
        if payments.len() > max {
            return ApiError::validation(vec![DetailItem::new(
                "BatchPaymentsRequest.data.payments",
                "TooManyPayments",
                format!("at most {max} payments"),
            )])
            .into_response();
        }
        if payments.is_empty() {
            return ApiError::validation(vec![DetailItem::missing(
                "BatchPaymentsRequest.data.payments",
            )])
            .into_response();
        }
        if let Some(s) = sub_status
            && s != SubscriptionStatus::Authorised
        {
            return batch_problem(
                "SubscriptionNotAuthorised",
                StatusCode::CONFLICT,
                format!("the subscription is {}", wire::status_str(s)),
            );
        }
        let mut problems = Vec::new();
        if let Some(at) = rules::find_quote(&data, "BatchPaymentsRequest.data") {
            problems.push(DetailItem::invalid(at, "must not contain \""));
        }
        let instrument = payments
            .first()
            .and_then(|p| p.get("localInstrument"))
            .and_then(Value::as_str)
            .or_else(|| {
                provider
                    .get("defaultLocalInstrument")
                    .and_then(Value::as_str)
            })
            .map(str::to_string);
        let rs = rules::effective_rules(
            &provider,
            &wire::local_instruments(),
            instrument.as_deref(),
            &["BatchPayments"],
        );
        problems.extend(rules::apply(&rs, &json!({ "data": data })));
        if !problems.is_empty() {
            return ApiError::validation(problems).into_response();
        }
    }
    let now = core.now();
    let (view, batch_id) = {
        let mut guard = core.po.lock();
        let st = &mut *guard;
        let id = st.rng.uuid();
        let mut list = Vec::with_capacity(payments.len());
        for p in payments {
            let mut body = match p {
                Value::Object(m) => m,
                other => {
                    let mut m = serde_json::Map::new();
                    m.insert("value".into(), other);
                    m
                }
            };
            for k in wire::PAYMENT_STATUS_MEMBERS {
                body.remove(k);
            }
            let pid = st.rng.uuid();
            st.payment_index.insert(pid, id);
            list.push(Payment {
                id: pid,
                body,
                status: PaymentStatus::Received,
                extended_status: None,
                completed: None,
                additional_data: None,
            });
        }
        let batch = Batch {
            id,
            external_id: data
                .get("externalId")
                .and_then(Value::as_str)
                .map(str::to_string),
            provider_id,
            subscription_id: sub_id,
            organisation_id: org_id,
            application: app.clone(),
            status: BatchStatus::Received,
            extended_status: None,
            additional_data: data
                .get("additionalData")
                .and_then(Value::as_str)
                .map(str::to_string),
            payments: list,
            created: now,
            notified_at: now,
            patches: 0,
            gets: 0,
        };
        let view = batch.wire(&cfg.provider_prefix);
        st.batches.insert(id, batch);
        st.batch_order.push(id);
        st.inbox_push(
            core.cfg.log_capacity,
            now,
            "batchStatus",
            sub_id,
            Some(id),
            None,
            json!({ "batchId": id, "status": "Received", "payments": [] }),
        );
        (view, id)
    };
    let n = notification(
        &core,
        "batchpayments",
        sub_id,
        org_id,
        &app,
        header(&headers, "x-correlation-id").map(str::to_string),
        json!({ "batchId": batch_id }),
    );
    send_notification(&core, &n);
    created(&core, key.as_deref(), view)
}

async fn get_batch(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let st = core.po.lock();
    match st.batches.get(&id) {
        Some(b) => ok_envelope(
            StatusCode::OK,
            b.wire(&core.cfg.payments_out.provider_prefix),
            Value::Null,
        ),
        None => ApiError::not_found("Batch").into_response(),
    }
}

#[derive(Deserialize)]
struct CountryQuery {
    country: Option<String>,
}

async fn list_providers(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Query(q): Query<CountryQuery>,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    let st = core.po.lock();
    let list: Vec<&Value> = st
        .providers
        .values()
        .filter(|p| {
            q.country.as_deref().is_none_or(|c| {
                p.get("country")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(c)))
            })
        })
        .collect();
    ok_envelope(StatusCode::OK, list, Value::Null)
}

async fn local_instruments(State(core): State<Arc<Core>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    ok_envelope(StatusCode::OK, wire::local_instruments(), Value::Null)
}

// ------------------------------------------------------------------ consumer messaging

async fn post_message(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(op): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorised(&core, &headers) {
        return *r;
    }
    if !PRODUCT_MESSAGE_OPS.contains(&op.as_str()) {
        return ApiError::not_found("Messaging operation").into_response();
    }
    let msg: MessageWire = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return ApiError::validation(vec![DetailItem::invalid("Message", e.to_string())])
                .into_response();
        }
    };
    let (org, provider, app) = {
        let st = core.po.lock();
        let Some(s) = st.subscriptions.get(&msg.subscription_id) else {
            return ApiError::not_found("Subscription").into_response();
        };
        (
            s.organisation_id,
            st.providers
                .get(&s.provider_id)
                .cloned()
                .unwrap_or(Value::Null),
            s.application.clone(),
        )
    };
    if !skip_validation(&headers) {
        let mut problems = Vec::new();
        if let Some(at) = rules::find_quote(&msg.data, "Message.data") {
            problems.push(DetailItem::invalid(at, "must not contain \""));
        }
        let instrument = provider
            .get("defaultLocalInstrument")
            .and_then(Value::as_str)
            .map(str::to_string);
        let rs = rules::effective_rules(
            &provider,
            &wire::local_instruments(),
            instrument.as_deref(),
            wire::rule_api_paths_of(&op),
        );
        problems.extend(rules::apply(&rs, &json!({ "data": msg.data })));
        if !problems.is_empty() {
            return ApiError::validation(problems).into_response();
        }
    }
    let n = notification(
        &core,
        &op,
        Some(msg.subscription_id),
        Some(org),
        &app,
        msg.correlation_id.clone(),
        msg.data,
    );
    send_notification(&core, &n);
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "notificationId": n.id })),
    )
        .into_response()
}
