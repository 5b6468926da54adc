//! The driver over HTTP (`/_sandbox/driver/...`), used by the CLI and by out-of-process tests.
//! Driver failures answer 422 `{"error": <DriverError>, "message": "..."}`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    Driver, DriverError, NotificationRequest, OnboardOptions, ProbeVariant, ReauthOptions,
};
use crate::control::parse_body;
use crate::envelope::json_response;
use crate::model::CreateAccountRequest;
use crate::state::Core;

pub fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/_sandbox/driver/onboard", post(onboard))
        .route("/_sandbox/driver/reauth", post(reauth))
        .route("/_sandbox/driver/available-accounts", post(available))
        .route("/_sandbox/driver/link", post(link))
        .route("/_sandbox/driver/delete", post(delete))
        .route("/_sandbox/driver/create-account", post(create_account))
        .route("/_sandbox/driver/notify", post(notify))
        .route("/_sandbox/driver/probe", post(probe))
}

/// Error body of a failed driver call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriverFailure {
    pub error: DriverError,
    pub message: String,
}

fn answer<T: Serialize>(status: StatusCode, r: Result<T, DriverError>) -> Response {
    match r {
        Ok(v) => json_response(status, &v),
        Err(e) => {
            let message = e.to_string();
            json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &DriverFailure { error: e, message },
            )
        }
    }
}

macro_rules! body_or_400 {
    ($body:expr) => {
        match parse_body(&$body) {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        }
    };
}

async fn onboard(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let opts: OnboardOptions = body_or_400!(body);
    answer(StatusCode::OK, Driver::new(core).onboard(opts).await)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReauthRequest {
    pub bank_account_id: Uuid,
    #[serde(default, flatten)]
    pub options: ReauthOptions,
}

async fn reauth(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: ReauthRequest = body_or_400!(body);
    answer(
        StatusCode::OK,
        Driver::new(core)
            .reauth(req.bank_account_id, req.options)
            .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountRef {
    bank_account_id: Uuid,
}

async fn available(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: AccountRef = body_or_400!(body);
    answer(
        StatusCode::OK,
        Driver::new(core)
            .available_accounts(req.bank_account_id)
            .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkRequest {
    bank_account_candidate_id: Uuid,
    requested_start_date: String,
}

async fn link(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: LinkRequest = body_or_400!(body);
    answer(
        StatusCode::CREATED,
        Driver::new(core)
            .link(req.bank_account_candidate_id, &req.requested_start_date)
            .await,
    )
}

async fn delete(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: AccountRef = body_or_400!(body);
    let r = Driver::new(core)
        .delete_account(req.bank_account_id)
        .await
        .map(
            |(account, notification)| crate::model::CreateAccountResponse {
                account,
                notification: Some(notification),
            },
        );
    answer(StatusCode::OK, r)
}

async fn create_account(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: CreateAccountRequest = body_or_400!(body);
    answer(
        StatusCode::CREATED,
        Driver::new(core).create_account(req).await,
    )
}

async fn notify(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: NotificationRequest = body_or_400!(body);
    answer(
        StatusCode::OK,
        Driver::new(core).send_notification(req).await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProbeRequest {
    variant: ProbeVariant,
    #[serde(default)]
    bank_id: Option<Uuid>,
}

async fn probe(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: ProbeRequest = body_or_400!(body);
    answer(
        StatusCode::OK,
        Driver::new(core).probe_auth(req.variant, req.bank_id).await,
    )
}
