//! Control, faults and inspection API under `/_sandbox/` (sandbox spec §9, §10).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use crate::envelope::{ApiError, DetailItem, json_response};
use crate::json::OwnedNode;
use crate::model::*;
use crate::notify::{Notification, Signing};
use crate::product::{self, NewAccount};
use crate::state::{Core, State as SbState, Statement};
use crate::util::{fmt_time, parse_time_or_date};

pub fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/_sandbox/reset", post(reset))
        .route("/_sandbox/fixtures", post(fixtures))
        .route("/_sandbox/banks", get(banks))
        .route("/_sandbox/bankaccounts", get(accounts).post(create_account))
        .route(
            "/_sandbox/bankaccounts/{id}",
            get(account).delete(delete_account),
        )
        .route(
            "/_sandbox/bankaccounts/{id}/transactions",
            get(account_transactions),
        )
        .route(
            "/_sandbox/bankaccounts/{id}/product-transactions",
            get(product_transactions),
        )
        .route(
            "/_sandbox/statements",
            get(statements).post(create_accepting),
        )
        .route("/_sandbox/statements/{id}", get(statement))
        .route("/_sandbox/statements/{id}/submit", post(submit_accepting))
        .route(
            "/_sandbox/authorisations",
            get(authorisations).post(create_authorisation),
        )
        .route("/_sandbox/authorisations/{id}", get(authorisation))
        .route("/_sandbox/notifications", get(notifications))
        .route("/_sandbox/requests", get(requests))
        .route("/_sandbox/violations", get(violations))
        .route("/_sandbox/overlong-fields", get(overlong_fields))
        .route("/_sandbox/metrics", get(metrics))
        .route(
            "/_sandbox/faults",
            put(set_faults).delete(clear_faults).get(get_faults),
        )
        .route("/_sandbox/clock", post(clock).get(get_clock))
        .route("/_sandbox/tokens/revoke", post(revoke))
        .route("/_sandbox/tokens/notification", post(notification_token))
        .route("/_sandbox/keys/rotate", post(rotate))
        .merge(crate::driver::http::router())
}

pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::validation(vec![DetailItem::invalid(
            "body",
            format!("invalid JSON: {e}"),
        )])
    })
}

fn path_uuid(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what))
}

async fn reset(State(core): State<Arc<Core>>) -> Response {
    *core.state.lock() = SbState::new(&core.cfg);
    *core.bank.lock() = crate::bank::DemoBank::new(&core.cfg, core.now());
    crate::payments_out::reset(&core);
    core.clock.reset();
    json_response(StatusCode::OK, &json!({ "reset": true }))
}

async fn fixtures(State(core): State<Arc<Core>>, body: Bytes) -> Result<Response, ApiError> {
    let f: Fixtures = parse_body(&body)?;
    let mut st = core.state.lock();
    if f.replace_clients {
        st.clients.clear();
        st.api_keys.clear();
    }
    for c in f.clients {
        st.add_client(c);
    }
    let ids: Vec<String> = st.clients.keys().cloned().collect();
    Ok(json_response(StatusCode::OK, &json!({ "clients": ids })))
}

async fn banks(State(core): State<Arc<Core>>) -> Response {
    let st = core.state.lock();
    let list: Vec<BankView> = st
        .bank_order
        .iter()
        .filter_map(|id| st.banks.get(id))
        .map(|b| b.view())
        .collect();
    json_response(StatusCode::OK, &list)
}

async fn accounts(State(core): State<Arc<Core>>) -> Response {
    let st = core.state.lock();
    let list: Vec<AccountView> = st
        .account_order
        .iter()
        .filter_map(|id| st.accounts.get(id))
        .map(|a| a.view())
        .collect();
    json_response(StatusCode::OK, &list)
}

async fn account(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "Bank account")?;
    let st = core.state.lock();
    let a = st
        .accounts
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Bank account"))?;
    Ok(json_response(StatusCode::OK, &a.view()))
}

async fn account_transactions(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "Bank account")?;
    let st = core.state.lock();
    let a = st
        .accounts
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Bank account"))?;
    let list: Vec<OwnedNode> = a
        .store
        .txns
        .iter()
        .map(|t| product::stored_json(t, false))
        .collect();
    Ok(json_response(StatusCode::OK, &OwnedNode::Arr(list)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartIndex {
    start_index: Option<u64>,
}

async fn product_transactions(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
    Query(q): Query<StartIndex>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "Bank account")?;
    if !core.state.lock().accounts.contains_key(&id) {
        return Err(ApiError::not_found("Bank account"));
    }
    let list = product::product_transactions(&core, id, q.start_index.unwrap_or(0));
    Ok(json_response(StatusCode::OK, &OwnedNode::Arr(list)))
}

async fn create_account(State(core): State<Arc<Core>>, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateAccountRequest = parse_body(&body)?;
    let n = NewAccount {
        bank_id: req.bank_id,
        organisation_id: req
            .organisation_id
            .unwrap_or_else(|| core.cfg.default_organisation_id.clone()),
        company_id: req
            .company_id
            .unwrap_or_else(|| core.cfg.default_company_id.clone()),
        consent_group_id: None,
        account_name: req
            .account_name
            .unwrap_or_else(|| format!("Account {}", req.external_id)),
        bank_identifier: req.bank_identifier.unwrap_or_else(|| "sandbox:bank".into()),
        account_identifier: req
            .account_identifier
            .unwrap_or_else(|| req.external_id.clone()),
        branch_identifier: req.branch_identifier,
        external_id: req.external_id,
        account_type: None,
        requested_start_date: req.requested_start_date,
    };
    let (account, notification) =
        product::create_and_notify(&core, n, req.notify.unwrap_or(true), &req.delivery).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &CreateAccountResponse {
            account,
            notification,
        },
    ))
}

async fn delete_account(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "Bank account")?;
    let opts: DeliveryOptions = parse_body(&body)?;
    let (account, notification) = product::delete_account(&core, id, &opts).await?;
    Ok(json_response(
        StatusCode::OK,
        &CreateAccountResponse {
            account,
            notification: Some(notification),
        },
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatementsQuery {
    principal_id: Option<Uuid>,
}

async fn statements(State(core): State<Arc<Core>>, Query(q): Query<StatementsQuery>) -> Response {
    let st = core.state.lock();
    let mut list: Vec<StatementView> = match q.principal_id {
        Some(p) => st
            .statements_by_account
            .get(&p)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| st.statements.get(id))
                    .map(Statement::view)
                    .collect()
            })
            .unwrap_or_default(),
        None => st.statements.values().map(Statement::view).collect(),
    };
    list.sort_by(|a, b| a.created_date.cmp(&b.created_date));
    json_response(StatusCode::OK, &list)
}

async fn statement(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "Statement")?;
    let st = core.state.lock();
    let s = st
        .statements
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Statement"))?;
    Ok(json_response(StatusCode::OK, &s.view()))
}

async fn create_accepting(
    State(core): State<Arc<Core>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: AcceptingStatementRequest = parse_body(&body)?;
    let now = core.now();
    let mut st = core.state.lock();
    let st = &mut *st;
    let acct = st
        .accounts
        .get_mut(&req.principal_id)
        .ok_or_else(|| ApiError::not_found("Bank account"))?;
    if acct.status == AccountStatus::Cancelled {
        return Err(ApiError::conflict("The bank account is cancelled"));
    }
    if acct.in_flight.is_some() {
        return Err(ApiError::conflict(
            "A statement is already in flight for this bank account",
        ));
    }
    let id = st.rng.uuid();
    acct.in_flight = Some(id);
    let zero = Counts {
        account_details_count: 1,
        ..Counts::default()
    };
    let stmt = Statement {
        id,
        principal_id: acct.id,
        provider_id: acct.provider_id,
        bank_id: acct.bank_id,
        status: StatementStatus::Accepting,
        status_modified: now,
        created: now,
        expected: zero.clone(),
        actual: zero,
        details: None,
        account_status: "active".into(),
        balances: Default::default(),
        txns: Vec::new(),
        history: vec![StatusChange {
            status: StatementStatus::Accepting,
            at: fmt_time(now),
        }],
        processing_us: None,
        last_polled: None,
        poll_count: 0,
    };
    let view = stmt.view();
    st.statements.insert(id, stmt);
    st.statements_by_account
        .entry(req.principal_id)
        .or_default()
        .push(id);
    let n = st.in_flight_count(req.principal_id);
    let m = st
        .metrics
        .max_in_flight
        .entry(req.principal_id)
        .or_default();
    *m = (*m).max(n);
    Ok(json_response(StatusCode::CREATED, &view))
}

async fn submit_accepting(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "Statement")?;
    let now = core.now();
    {
        let mut st = core.state.lock();
        let s = st
            .statements
            .get_mut(&id)
            .ok_or_else(|| ApiError::not_found("Statement"))?;
        if s.status != StatementStatus::Accepting {
            return Err(ApiError::conflict(
                "only an accepting statement can be submitted",
            ));
        }
        s.set_status(StatementStatus::Queued, now);
    }
    crate::engine::resume(&core, id);
    statement(State(core), Path(raw)).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewAuthorisation {
    bank_id: Uuid,
    #[serde(default)]
    bank_account_id: Option<Uuid>,
    #[serde(default)]
    notify: bool,
}

/// Creates an authorisation directly (PATCH tests), optionally announcing it.
async fn create_authorisation(
    State(core): State<Arc<Core>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NewAuthorisation = parse_body(&body)?;
    let kind = if req.bank_account_id.is_some() {
        AuthorisationKind::Reauth
    } else {
        AuthorisationKind::Onboarding
    };
    let id = product::new_authorisation(
        &core,
        kind,
        req.bank_id,
        req.bank_account_id,
        &core.cfg.default_organisation_id,
        &core.cfg.default_company_id,
    )?;
    let report = if req.notify {
        let note = Notification::AuthorisationCreated {
            authorisation_id: id,
            bank_id: req.bank_id,
        };
        Some(
            product::notify_bank(
                &core,
                req.bank_id,
                note,
                Signing::default(),
                &DeliveryOptions::default(),
            )
            .await?,
        )
    } else {
        None
    };
    let view = core
        .state
        .lock()
        .authorisations
        .get(&id)
        .map(|a| a.view(core.now()));
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "authorisation": view, "notification": report }),
    ))
}

async fn authorisations(State(core): State<Arc<Core>>) -> Response {
    let now = core.now();
    let st = core.state.lock();
    let mut list: Vec<AuthorisationView> =
        st.authorisations.values().map(|a| a.view(now)).collect();
    list.sort_by(|a, b| a.created_at.cmp(&b.created_at));
    json_response(StatusCode::OK, &list)
}

async fn authorisation(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let id = path_uuid(&raw, "Authorisation")?;
    let now = core.now();
    let st = core.state.lock();
    let a = st
        .authorisations
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Authorisation"))?;
    Ok(json_response(StatusCode::OK, &a.view(now)))
}

async fn notifications(State(core): State<Arc<Core>>) -> Response {
    let st = core.state.lock();
    json_response(StatusCode::OK, &st.notifications)
}

async fn requests(State(core): State<Arc<Core>>) -> Response {
    let st = core.state.lock();
    json_response(StatusCode::OK, &st.requests)
}

async fn overlong_fields(State(core): State<Arc<Core>>) -> Response {
    let st = core.state.lock();
    json_response(StatusCode::OK, &st.overlong_fields)
}

async fn violations(State(core): State<Arc<Core>>) -> Response {
    let st = core.state.lock();
    json_response(StatusCode::OK, &st.violations)
}

async fn metrics(State(core): State<Arc<Core>>) -> Response {
    let view = core.state.lock().metrics_view();
    json_response(StatusCode::OK, &view)
}

async fn set_faults(State(core): State<Arc<Core>>, body: Bytes) -> Result<Response, ApiError> {
    let set: FaultSet = parse_body(&body)?;
    for r in &set.routes {
        if !(0.0..=1.0).contains(&r.error_rate) || !(0.0..=1.0).contains(&r.drop_after_commit_rate)
        {
            return Err(ApiError::validation(vec![DetailItem::invalid(
                "routes",
                "rates must be in [0, 1]",
            )]));
        }
        if r.error_rate > 0.0 && !matches!(r.error_status, 401 | 403 | 409 | 429 | 500..=504) {
            return Err(ApiError::validation(vec![DetailItem::invalid(
                "routes.errorStatus",
                "one of 401, 403, 409, 429, 500, 502, 503, 504",
            )]));
        }
    }
    let mut st = core.state.lock();
    if set.revoke_tokens {
        let all: Vec<String> = st.issued_tokens.keys().cloned().collect();
        st.revoked.extend(all);
    }
    st.faults.set = set.clone();
    Ok(json_response(StatusCode::OK, &set))
}

async fn clear_faults(State(core): State<Arc<Core>>) -> Response {
    core.state.lock().faults.set = FaultSet::default();
    json_response(StatusCode::OK, &FaultSet::default())
}

async fn get_faults(State(core): State<Arc<Core>>) -> Response {
    let set = core.state.lock().faults.set.clone();
    json_response(StatusCode::OK, &set)
}

fn clock_view(core: &Core) -> ClockView {
    ClockView {
        now: fmt_time(core.now()),
        offset_ms: core.clock.offset_ms(),
    }
}

async fn clock(State(core): State<Arc<Core>>, body: Bytes) -> Result<Response, ApiError> {
    let req: ClockRequest = parse_body(&body)?;
    if req.reset {
        core.clock.reset();
    }
    if let Some(s) = &req.set {
        let t = parse_time_or_date(s).ok_or_else(|| {
            ApiError::validation(vec![DetailItem::invalid("set", "must be a date-time")])
        })?;
        core.clock.set(t);
    }
    if let Some(a) = req.advance_s {
        core.clock.advance_ms(a.saturating_mul(1000));
    }
    Ok(json_response(StatusCode::OK, &clock_view(&core)))
}

async fn get_clock(State(core): State<Arc<Core>>) -> Response {
    json_response(StatusCode::OK, &clock_view(&core))
}

async fn revoke(State(core): State<Arc<Core>>, body: Bytes) -> Result<Response, ApiError> {
    let req: RevokeRequest = parse_body(&body)?;
    let mut st = core.state.lock();
    let mut jtis: Vec<String> = Vec::new();
    if let Some(j) = req.jti {
        jtis.push(j);
    }
    if let Some(c) = &req.client_id {
        jtis.extend(
            st.issued_tokens
                .iter()
                .filter(|(_, v)| *v == c)
                .map(|(k, _)| k.clone()),
        );
    }
    if req.all {
        jtis.extend(st.issued_tokens.keys().cloned());
    }
    let n = jtis.len();
    st.revoked.extend(jtis);
    Ok(json_response(StatusCode::OK, &json!({ "revoked": n })))
}

/// Mints a token like the ones Banking Service presents to `/notification` and
/// `/availableaccounts`, in any variant, for tests and for people calling the connector by hand.
async fn notification_token(
    State(core): State<Arc<Core>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct MintRequest {
        variant: crate::sageid::TokenVariant,
    }
    let req: MintRequest = parse_body(&body)?;
    let foreign = core
        .foreign_key()
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let spec = crate::sageid::NotificationTokenSpec {
        issuer: &core.issuer,
        audience: &core.cfg.notification_audience,
        azp: &core.cfg.notification_azp,
        scope: &core.cfg.notification_scope,
        now: core.now().timestamp(),
        jti: core.state.lock().rng.uuid().to_string(),
    };
    let token = {
        let keys = core.keys.read();
        crate::sageid::mint_notification_token(&keys, &foreign, &spec, req.variant)
            .map_err(|e| ApiError::internal(e.to_string()))?
    };
    Ok(json_response(StatusCode::OK, &json!({ "token": token })))
}

async fn rotate(State(core): State<Arc<Core>>) -> Result<Response, ApiError> {
    let mut keys = core.keys.read().clone();
    keys.rotate(core.cfg.seed)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let jwks = keys.jwks();
    *core.keys.write() = keys;
    Ok(json_response(StatusCode::OK, &jwks))
}
