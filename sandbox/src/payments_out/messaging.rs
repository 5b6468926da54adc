//! Provider messaging API: `POST {msgPrefix}/{op}` → 202, forwarded to the product's inbox.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::provider::request_data;
use super::wire::{MessageWire, PROVIDER_MESSAGE_OPS, message_answer_problems};
use super::{PoViolationKind, Where, violation};
use crate::envelope::{ApiError, DetailItem};
use crate::state::Core;

/// The messaging body is `{subscriptionId, correlationId, data}`: the `"` rule applies to all
/// of it, so it is checked as if it were the `data` of an envelope.
pub async fn post_message(
    State(core): State<Arc<Core>>,
    Path(op): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !PROVIDER_MESSAGE_OPS.iter().any(|(o, _)| *o == op) {
        return ApiError::not_found("Messaging operation").into_response();
    }
    // Wrap so that request_data sees `{"data": <body>}`.
    let wrapped = body.map(|b| {
        let mut v = b"{\"data\":".to_vec();
        v.extend_from_slice(&b);
        v.push(b'}');
        Bytes::from(v)
    });
    let whole = match request_data(&core, wrapped, "Message") {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let msg: MessageWire = match serde_json::from_value(whole) {
        Ok(m) => m,
        Err(e) => {
            return ApiError::validation(vec![DetailItem::invalid("Message", e.to_string())])
                .into_response();
        }
    };
    if !msg.data.is_object() {
        return ApiError::validation(vec![DetailItem::missing("Message.data")]).into_response();
    }
    let now = core.now();
    let mut st = core.po.lock();
    let ours = |s: &super::Subscription| s.provider_id == core.cfg.payments_out.provider_id;
    if st
        .subscriptions
        .get(&msg.subscription_id)
        .is_none_or(|s| !ours(s))
    {
        return ApiError::not_found("Subscription").into_response();
    }
    let problems = message_answer_problems(&op, &msg);
    if !problems.is_empty() {
        violation(
            &core,
            &mut st,
            PoViolationKind::InvalidMessageAnswer,
            format!("{op}: {}", problems.join("; ")),
            Where {
                subscription_id: Some(msg.subscription_id),
                ..Where::default()
            },
        );
    }
    st.inbox_push(
        core.cfg.log_capacity,
        now,
        &op,
        Some(msg.subscription_id),
        None,
        msg.correlation_id.clone(),
        match msg.data {
            Value::Null => Value::Null,
            d => d,
        },
    );
    StatusCode::ACCEPTED.into_response()
}
