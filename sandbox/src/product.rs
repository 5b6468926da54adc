//! What a Sage product sees (sandbox spec §8), and the product-side operations the driver and the
//! control API share: create, link and delete bank accounts, start (re-)authorisations.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::consumer::{compact_json, consumer_signature};
use crate::envelope::{ApiError, DetailItem, json_response};
use crate::json::{Node, OwnedNode};
use crate::model::*;
use crate::notify::{self, Notification, Signing};
use crate::state::{Authorisation, Candidate, Core};
use crate::util::{parse_time_or_date, pct_encode};
use crate::validate::ACCOUNT_TYPES;

// ---------------------------------------------------------------- operations

/// The bank's notification URL (404 when the bank is unknown or removed).
pub fn bank_callbacks(core: &Core, bank_id: Uuid) -> Result<CallbackUrls, ApiError> {
    let st = core.state.lock();
    st.banks
        .get(&bank_id)
        .filter(|b| !b.removed)
        .map(|b| b.callbacks.clone())
        .ok_or_else(|| ApiError::not_found("Bank"))
}

pub async fn notify_bank(
    core: &Arc<Core>,
    bank_id: Uuid,
    n: Notification,
    signing: Signing,
    opts: &DeliveryOptions,
) -> Result<DeliveryReport, ApiError> {
    let url = bank_callbacks(core, bank_id)?.notification;
    Ok(notify::deliver(core, url, n, signing, true, true, opts).await)
}

/// Creates an authorisation (20 min, single use) and returns its id.
pub fn new_authorisation(
    core: &Core,
    kind: AuthorisationKind,
    bank_id: Uuid,
    bank_account_id: Option<Uuid>,
    organisation_id: &str,
    company_id: &str,
) -> Result<Uuid, ApiError> {
    let now = core.now();
    let mut st = core.state.lock();
    let Some(bank) = st.banks.get(&bank_id).filter(|b| !b.removed) else {
        return Err(ApiError::not_found("Bank"));
    };
    let provider_id = bank.provider_id;
    let group = match bank_account_id {
        Some(a) => match st.accounts.get(&a) {
            Some(acct) => acct.consent_group_id,
            None => return Err(ApiError::not_found("Bank account")),
        },
        None => st.rng.uuid(),
    };
    let id = st.rng.uuid();
    let poll_secret = st.rng.token(32);
    st.authorisations.insert(
        id,
        Authorisation {
            id,
            kind,
            bank_id,
            provider_id,
            bank_account_id,
            consent_group_id: group,
            organisation_id: organisation_id.to_string(),
            company_id: company_id.to_string(),
            created_at: now,
            expires_at: now + chrono::Duration::seconds(core.cfg.authorisation_ttl_s as i64),
            completed: false,
            patch: None,
            rejected_patches: 0,
            poll_secret: poll_secret.clone(),
        },
    );
    Ok(id)
}

/// What the product needs to create an account.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub bank_id: Uuid,
    pub organisation_id: String,
    pub company_id: String,
    pub consent_group_id: Option<Uuid>,
    pub external_id: String,
    pub account_name: String,
    pub bank_identifier: String,
    pub account_identifier: String,
    pub branch_identifier: Option<String>,
    pub account_type: Option<String>,
    pub requested_start_date: String,
}

fn bad(target: &str, msg: &str) -> ApiError {
    ApiError::validation(vec![DetailItem::invalid(target, msg)])
}

/// Creates the account (`pending`); the caller sends the notification.
pub fn create_account(core: &Core, n: NewAccount) -> Result<AccountView, ApiError> {
    let start = parse_time_or_date(&n.requested_start_date)
        .ok_or_else(|| bad("requestedStartDate", "must be a date or date-time"))?;
    if n.external_id.is_empty() || n.external_id.len() > 255 {
        return Err(bad("externalId", "length must be 1..255"));
    }
    let now = core.now();
    let mut st = core.state.lock();
    let Some(bank) = st.banks.get(&n.bank_id).filter(|b| !b.removed) else {
        return Err(ApiError::not_found("Bank"));
    };
    // Borrow juggling: copy what create_account needs from the bank first.
    let bank_snapshot = crate::state::Bank {
        id: bank.id,
        provider_id: bank.provider_id,
        name: String::new(),
        country_code: String::new(),
        url: None,
        supportiframe: bank.supportiframe,
        external_ref: String::new(),
        callbacks: bank.callbacks.clone(),
        removed: false,
        created_at: bank.created_at,
    };
    let group = n.consent_group_id.unwrap_or_else(|| st.rng.uuid());
    let id = st.create_account(
        now,
        &bank_snapshot,
        n.organisation_id,
        n.company_id,
        group,
        n.external_id,
        n.account_name,
        n.bank_identifier,
        n.account_identifier,
        n.branch_identifier,
        n.account_type,
        start,
        n.requested_start_date,
    );
    st.accounts
        .get(&id)
        .map(|a| a.view())
        .ok_or_else(|| ApiError::internal("account vanished"))
}

pub async fn create_and_notify(
    core: &Arc<Core>,
    n: NewAccount,
    notify_it: bool,
    opts: &DeliveryOptions,
) -> Result<(AccountView, Option<DeliveryReport>), ApiError> {
    let view = create_account(core, n)?;
    let report = if notify_it {
        let note = Notification::BankAccountCreated {
            bank_account_id: view.bank_account_id,
            external_id: view.external_id.clone(),
            requested_start_date: view.requested_start_date.clone(),
            bank_id: view.bank_id,
        };
        Some(notify_bank(core, view.bank_id, note, Signing::default(), opts).await?)
    } else {
        None
    };
    Ok((view, report))
}

/// The product deletes an account: `cancelled`, store hard-deleted, `resourceDeleted` sent.
pub async fn delete_account(
    core: &Arc<Core>,
    id: Uuid,
    opts: &DeliveryOptions,
) -> Result<(AccountView, DeliveryReport), ApiError> {
    let (view, note) = {
        let mut st = core.state.lock();
        let Some(a) = st.accounts.get_mut(&id) else {
            return Err(ApiError::not_found("Bank account"));
        };
        if a.status == AccountStatus::Cancelled {
            return Err(ApiError::conflict("The bank account is already cancelled"));
        }
        a.status = AccountStatus::Cancelled;
        a.store = crate::state::TxnStore::default();
        let note = Notification::BankAccountDeleted {
            bank_account_id: a.id,
            external_id: a.external_id.clone(),
            bank_id: a.bank_id,
        };
        (a.view(), note)
    };
    let report = notify_bank(core, view.bank_id, note, Signing::default(), opts).await?;
    Ok((view, report))
}

/// Validates the connector's `/availableaccounts` answer; every problem is listed.
pub fn check_available(body: &str) -> Result<Vec<OwnedNode>, Vec<String>> {
    let node = Node::parse(body).map_err(|e| vec![format!("not JSON: {e}")])?;
    let Node::Arr(items) = node else {
        return Err(vec!["answer must be a JSON array".into()]);
    };
    let mut problems = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let mut check = |key: &str, min: usize, max: usize, required: bool| match it.get(key) {
            Some(Node::Str(s)) => {
                let n = s.chars().count();
                if n < min || n > max {
                    problems.push(format!("[{i}].{key}: length {n} not in {min}..{max}"));
                }
            }
            None | Some(Node::Null) if !required => {}
            None | Some(Node::Null) => problems.push(format!("[{i}].{key}: missing")),
            Some(other) => problems.push(format!(
                "[{i}].{key}: must be a string, got {}",
                other.kind()
            )),
        };
        check("accountName", 1, 128, true);
        check("externalId", 1, 255, true);
        check("bankIdentifier", 1, 64, true);
        check("accountIdentifier", 1, 64, true);
        check("branchIdentifier", 1, 128, false);
        match it.get("accountType").and_then(Node::as_str) {
            Some(t) if ACCOUNT_TYPES.contains(&t) => {}
            Some(t) => problems.push(format!(
                "[{i}].accountType: {t:?} is not one of {}",
                ACCOUNT_TYPES.join(", ")
            )),
            None => problems.push(format!("[{i}].accountType: missing")),
        }
    }
    if problems.is_empty() {
        Ok(items.iter().map(Node::to_owned_node).collect())
    } else {
        Err(problems)
    }
}

/// A candidate as the product sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CandidateView {
    pub bank_account_candidate_id: Uuid,
    pub account_name: String,
    pub account_type: String,
    pub external_id: String,
    pub bank_identifier: String,
    pub account_identifier: String,
    #[serde(default)]
    pub branch_identifier: Option<String>,
    pub metadata: CandidateMetadata,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateMetadata {
    pub connected: bool,
}

/// Why `/availableaccounts` could not be used.
#[derive(Debug, Clone)]
pub enum AvailableError {
    Api(ApiError),
    Status {
        status: Option<u16>,
        error: Option<String>,
        body: String,
    },
    Schema(Vec<String>),
}

pub async fn available_accounts(
    core: &Arc<Core>,
    bank_account_id: Uuid,
) -> Result<Vec<CandidateView>, AvailableError> {
    let (url, external_id, source) = {
        let st = core.state.lock();
        let Some(a) = st.accounts.get(&bank_account_id) else {
            return Err(AvailableError::Api(ApiError::not_found("Bank account")));
        };
        let Some(b) = st.banks.get(&a.bank_id) else {
            return Err(AvailableError::Api(ApiError::not_found("Bank")));
        };
        (
            b.callbacks.available_accounts.clone(),
            a.external_id.clone(),
            (
                a.id,
                a.bank_id,
                a.provider_id,
                a.organisation_id.clone(),
                a.company_id.clone(),
                a.consent_group_id,
            ),
        )
    };
    let ans = notify::call_available_accounts(core, &url, &external_id, Signing::default()).await;
    if ans.status != Some(200) {
        return Err(AvailableError::Status {
            status: ans.status,
            error: ans.error,
            body: ans.body,
        });
    }
    let items = check_available(&ans.body).map_err(AvailableError::Schema)?;
    let mut st = core.state.lock();
    let mut out = Vec::new();
    for it in items {
        let s = |k: &str| it.get(k).and_then(OwnedNode::as_str).map(str::to_string);
        let c = Candidate {
            id: st.rng.uuid(),
            source_account_id: source.0,
            bank_id: source.1,
            provider_id: source.2,
            organisation_id: source.3.clone(),
            company_id: source.4.clone(),
            consent_group_id: source.5,
            account_type: s("accountType").unwrap_or_default(),
            account_name: s("accountName").unwrap_or_default(),
            external_id: s("externalId").unwrap_or_default(),
            bank_identifier: s("bankIdentifier").unwrap_or_default(),
            account_identifier: s("accountIdentifier").unwrap_or_default(),
            branch_identifier: s("branchIdentifier"),
        };
        let connected = st.is_connected(
            &c.company_id,
            c.bank_id,
            &c.bank_identifier,
            &c.account_identifier,
            &c.external_id,
        );
        out.push(CandidateView {
            bank_account_candidate_id: c.id,
            account_name: c.account_name.clone(),
            account_type: c.account_type.clone(),
            external_id: c.external_id.clone(),
            bank_identifier: c.bank_identifier.clone(),
            account_identifier: c.account_identifier.clone(),
            branch_identifier: c.branch_identifier.clone(),
            metadata: CandidateMetadata { connected },
        });
        st.candidates.insert(c.id, c);
    }
    Ok(out)
}

pub async fn link_candidate(
    core: &Arc<Core>,
    candidate_id: Uuid,
    requested_start_date: &str,
    opts: &DeliveryOptions,
) -> Result<(AccountView, Option<DeliveryReport>), ApiError> {
    let c = core
        .state
        .lock()
        .candidates
        .get(&candidate_id)
        .cloned()
        .ok_or_else(|| ApiError::not_found("Bank account candidate"))?;
    let n = NewAccount {
        bank_id: c.bank_id,
        organisation_id: c.organisation_id,
        company_id: c.company_id,
        consent_group_id: Some(c.consent_group_id),
        external_id: c.external_id,
        account_name: c.account_name,
        bank_identifier: c.bank_identifier,
        account_identifier: c.account_identifier,
        branch_identifier: c.branch_identifier,
        account_type: Some(c.account_type),
        requested_start_date: requested_start_date.to_string(),
    };
    create_and_notify(core, n, true, opts).await
}

/// `transactionNarrative`: trimmed, space-joined non-empty values, cut to 738 characters.
pub fn transaction_narrative(raw: &OwnedNode) -> String {
    let s = |k: &str| {
        raw.get(k)
            .and_then(OwnedNode::as_str)
            .map(str::trim)
            .unwrap_or("")
    };
    let payee = raw
        .get("payee")
        .and_then(|p| p.get("payeeDescription"))
        .and_then(OwnedNode::as_str)
        .map(str::trim)
        .unwrap_or("");
    let parts = [
        s("narrative1"),
        s("narrative2"),
        s("description"),
        s("referenceNumber"),
        payee,
        s("checkNumber"),
    ];
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    joined.chars().take(738).collect()
}

/// A stored transaction as JSON: the posted fields plus `transactionId` (and more).
pub fn stored_json(t: &crate::state::StoredTxn, product: bool) -> OwnedNode {
    let mut m = match &t.raw {
        OwnedNode::Obj(m) => m.clone(),
        _ => Default::default(),
    };
    m.insert(
        "transactionId".into(),
        OwnedNode::Num(t.transaction_id.to_string()),
    );
    if product {
        m.insert(
            "transactionNarrative".into(),
            OwnedNode::Str(transaction_narrative(&t.raw)),
        );
    } else {
        m.insert(
            "statementId".into(),
            OwnedNode::Str(t.statement_id.to_string()),
        );
    }
    OwnedNode::Obj(m)
}

// ---------------------------------------------------------------- HTTP (Consumer-API-shaped)

pub fn router() -> Router<Arc<Core>> {
    let co = "/api/v1/organisations/{org}/companies/{co}";
    Router::new()
        .route("/api/v1/organisations", post(post_organisation))
        .route("/api/v1/accesstoken", get(get_access_token))
        .route("/api/v1/banks/{bankId}", get(get_bank))
        .route(&format!("{co}/indirectlinkaccount"), get(indirect_link))
        .route(
            &format!("{co}/indirectlinkaccount/{{authorisationId}}"),
            get(poll_route),
        )
        .route(&format!("{co}/bankaccounts"), post(post_bank_account))
        .route(
            &format!("{co}/bankaccounts/{{id}}"),
            get(get_bank_account).delete(delete_bank_account),
        )
        .route(
            &format!("{co}/bankaccounts/{{id}}/transactions"),
            get(get_transactions),
        )
        .route(
            &format!("{co}/bankaccounts/{{id}}/indirectauth"),
            get(indirect_auth),
        )
        .route(&format!("{co}/availablebankaccounts"), get(get_available))
        .route(&format!("{co}/linkavailablebankaccount"), post(post_link))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A product call: the static test bearer, or an access token from the handshake with its
/// `x-application`. With `scope` (the path's organisation and company), the token must be that
/// company's (else 403).
fn authorised(
    core: &Core,
    headers: &HeaderMap,
    scope: Option<(&str, &str)>,
) -> Result<(), ApiError> {
    let auth = header_str(headers, header::AUTHORIZATION.as_str()).unwrap_or("");
    if auth == format!("Bearer {}", core.cfg.product_bearer) {
        return Ok(());
    }
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    else {
        return Err(ApiError::unauthenticated());
    };
    let now = core.now();
    let st = core.state.lock();
    let Some(session) = st
        .product_sessions
        .get(token.trim())
        .filter(|s| s.expires_at > now)
    else {
        return Err(ApiError::unauthenticated());
    };
    if header_str(headers, "x-application") != Some(session.application.as_str()) {
        return Err(ApiError::unauthenticated());
    }
    match scope {
        Some((org, co)) if org != session.organisation_id || co != session.company_id => {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "ForbiddenError",
                "The access token is for another organisation or company",
            ))
        }
        _ => Ok(()),
    }
}

/// Does `signature` sign this request with `key`? The route may have been signed as the path or
/// as the whole URL (Sage's collections sign the URL they call), the body as sent or compacted.
fn signature_ok(
    core: &Core,
    headers: &HeaderMap,
    method: &str,
    uri: &Uri,
    body: &str,
    key: &str,
) -> bool {
    let (Some(nonce), Some(signature)) = (
        header_str(headers, "x-nonce"),
        header_str(headers, "x-signature"),
    ) else {
        return false;
    };
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string());
    let mut routes = vec![
        path_and_query.clone(),
        format!("{}{path_and_query}", core.base_url),
    ];
    if let Some(host) = header_str(headers, header::HOST.as_str()) {
        for scheme in ["http", "https"] {
            routes.push(format!("{scheme}://{host}{path_and_query}"));
        }
    }
    let mut bodies = vec![None];
    if !body.trim().is_empty() {
        bodies = vec![Some(body.to_string())];
        let compact = compact_json(body);
        if compact != body {
            bodies.push(Some(compact));
        }
    }
    routes.iter().any(|route| {
        bodies.iter().any(|b| {
            let want = consumer_signature(method, route, b.as_deref(), nonce, key);
            crate::provider::ct_eq(want.as_bytes(), signature.as_bytes())
        })
    })
}

/// `POST /api/v1/organisations`, signed with the application's signing key: a new organisation
/// with one company, and the token its access-token requests are signed with.
async fn post_organisation(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let application = header_str(&headers, "x-application").unwrap_or("");
    if application != core.cfg.product_application_id {
        return Err(ApiError::unauthenticated());
    }
    let text = String::from_utf8(body.to_vec())
        .map_err(|_| bad("OrganisationRequest", "body is not UTF-8"))?;
    if !signature_ok(
        &core,
        &headers,
        "POST",
        &uri,
        &text,
        &core.cfg.product_signing_key,
    ) {
        return Err(ApiError::unauthenticated());
    }
    if !text.trim().is_empty() {
        let v: serde_json::Value = parse_json(text.as_bytes(), "OrganisationRequest")?;
        if !v.is_object() {
            return Err(bad("OrganisationRequest", "body must be a JSON object"));
        }
    }
    let mut st = core.state.lock();
    let id = st.rng.uuid().to_string();
    let company = st.rng.uuid().to_string();
    let token = st.rng.token(40);
    st.organisations.insert(
        id.clone(),
        crate::state::Organisation {
            id: id.clone(),
            application: application.to_string(),
            companies: vec![company.clone()],
            token: token.clone(),
        },
    );
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "organisationId": id, "companies": [company], "token": token }),
    ))
}

/// Lifetime of a product access token.
const PRODUCT_TOKEN_LIFETIME_S: i64 = 3600;

/// `GET /api/v1/accesstoken`, signed with the organisation's token: an access token (a JWT) for
/// one of its companies.
async fn get_access_token(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let org_id = header_str(&headers, "x-organisation-id").unwrap_or("");
    let company = header_str(&headers, "x-company-id").unwrap_or("");
    let application = header_str(&headers, "x-application").unwrap_or("");
    let key = {
        let st = core.state.lock();
        st.organisations
            .get(org_id)
            .filter(|o| o.application == application && o.companies.iter().any(|c| c == company))
            .map(|o| o.token.clone())
    };
    let Some(key) = key else {
        return Err(ApiError::unauthenticated());
    };
    if !signature_ok(&core, &headers, "GET", &uri, "", &key) {
        return Err(ApiError::unauthenticated());
    }
    let now = core.now();
    let expires_at = now + chrono::Duration::seconds(PRODUCT_TOKEN_LIFETIME_S);
    let jti = core.state.lock().rng.uuid().to_string();
    let claims = json!({
        "iss": core.issuer, "sub": company, "organisationId": org_id, "companyId": company,
        "application": application, "iat": now.timestamp(), "exp": expires_at.timestamp(), "jti": jti,
    });
    let jwt = core
        .keys
        .read()
        .current
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    core.state.lock().product_sessions.insert(
        jwt.clone(),
        crate::state::ProductSession {
            organisation_id: org_id.to_string(),
            company_id: company.to_string(),
            application: application.to_string(),
            expires_at,
        },
    );
    Ok(json_response(StatusCode::OK, &json!({ "jwt": jwt })))
}

fn uuid_param(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what))
}

/// `GET /api/v1/banks/{bankId}` needs only the application's `x-application` (or a product
/// token).
async fn get_bank(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    if header_str(&headers, "x-application") != Some(core.cfg.product_application_id.as_str()) {
        authorised(&core, &headers, None)?;
    }
    let id = uuid_param(&raw, "Bank")?;
    let st = core.state.lock();
    let b = st
        .banks
        .get(&id)
        .filter(|b| !b.removed)
        .ok_or_else(|| ApiError::not_found("Bank"))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "bankId": b.id, "name": b.name, "countryCode": b.country_code, "url": b.url,
            "supportiframe": b.supportiframe, "providerId": b.provider_id,
        }),
    ))
}

#[derive(Deserialize)]
struct LinkQuery {
    bankid: Option<String>,
}

async fn indirect_link(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co)): Path<(String, String)>,
    Query(q): Query<LinkQuery>,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let bank_id = q
        .bankid
        .as_deref()
        .and_then(|b| Uuid::parse_str(b).ok())
        .ok_or_else(|| bad("bankid", "must be a bank id"))?;
    let id = new_authorisation(
        &core,
        AuthorisationKind::Onboarding,
        bank_id,
        None,
        &org,
        &co,
    )?;
    // The user's journey (notification, then the browser at /auth) runs in the background.
    let driver = crate::driver::Driver::new(core.clone());
    core.spawn(async move {
        let opts = crate::driver::OnboardOptions {
            create: crate::driver::AccountPick::None,
            ..Default::default()
        };
        let _ = driver.run_onboarding(id, &opts).await;
    });
    let secret = core
        .state
        .lock()
        .authorisations
        .get(&id)
        .map(|a| a.poll_secret.clone())
        .unwrap_or_default();
    // Absolute, usable as the whole request URL; its `data` is its own credential.
    let poll_route = format!(
        "{}/api/v1/organisations/{}/companies/{}/indirectlinkaccount/{id}?data={secret}",
        core.base_url,
        pct_encode(&org),
        pct_encode(&co)
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({ "pollRoute": poll_route, "authorisationId": id }),
    ))
}

#[derive(Deserialize)]
struct PollQuery {
    data: Option<String>,
}

/// `GET {pollRoute}`: no headers needed, its `data` is the credential (or a product token).
async fn poll_route(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co, raw)): Path<(String, String, String)>,
    Query(q): Query<PollQuery>,
) -> Result<Response, ApiError> {
    let id = uuid_param(&raw, "Authorisation")?;
    let secret = core
        .state
        .lock()
        .authorisations
        .get(&id)
        .filter(|a| a.organisation_id == org && a.company_id == co)
        .map(|a| a.poll_secret.clone());
    let by_route = match (&secret, &q.data) {
        (Some(s), Some(d)) => crate::provider::ct_eq(s.as_bytes(), d.as_bytes()),
        _ => false,
    };
    if !by_route {
        authorised(&core, &headers, Some((&org, &co)))?;
    }
    if secret.is_none() {
        return Err(ApiError::not_found("Authorisation"));
    }
    let now = core.now();
    let st = core.state.lock();
    let a = st
        .authorisations
        .get(&id)
        .ok_or_else(|| ApiError::not_found("Authorisation"))?;
    let view = a.view(now);
    let accounts: Vec<serde_json::Value> = view
        .patch
        .as_ref()
        .map(|p| {
            p.bank_accounts
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    json!({
                        "accountName": b.account_name, "accountKey": i.to_string(),
                        "accountIdentifier": b.account_identifier, "bankIdentifier": b.bank_identifier,
                        "branchIdentifier": b.branch_identifier,
                        "bankAccountExternalId": b.bank_account_external_id, "connected": b.connected,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let success = view.patch.as_ref().is_some_and(|p| p.status == "success");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "success": success,
            "status": view.patch.as_ref().map(|p| p.status.clone()),
            "account": accounts.first(),
            "accounts": accounts,
        }),
    ))
}

/// `POST .../bankaccounts`: Sage's body (`accountType`, `accountName`, `accountKey`,
/// `accountIdentifier`, `bankIdentifier`, `branchIdentifier`, `defaultCurrency`, `bankId`,
/// `requestedStartDate`), or the sandbox's shortcut with `authorisationId`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostAccount {
    authorisation_id: Option<Uuid>,
    bank_account_external_id: Option<String>,
    account_key: Option<String>,
    requested_start_date: Option<String>,
    bank_id: Option<Uuid>,
    account_identifier: Option<String>,
    bank_identifier: Option<String>,
    account_type: Option<String>,
}

/// The PATCHed account `req` names among `accounts`: by `bankAccountExternalId`, else by
/// `accountIdentifier` (and `bankIdentifier` when given), else by `accountKey` (its position).
fn pick_offered<'a>(
    req: &PostAccount,
    accounts: &'a [PatchedAccount],
) -> Option<&'a PatchedAccount> {
    if let Some(ext) = &req.bank_account_external_id {
        return accounts.iter().find(|b| &b.bank_account_external_id == ext);
    }
    if let Some(acct) = &req.account_identifier {
        return accounts.iter().find(|b| {
            &b.account_identifier == acct
                && req
                    .bank_identifier
                    .as_ref()
                    .is_none_or(|bank| &b.bank_identifier == bank)
        });
    }
    match &req.account_key {
        Some(k) => k.parse::<usize>().ok().and_then(|i| accounts.get(i)),
        None => accounts.first(),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], root: &str) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(root, &format!("invalid body: {e}")))
}

async fn post_bank_account(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let req: PostAccount = parse_json(&body, "BankAccountRequest")?;
    let start = req
        .requested_start_date
        .clone()
        .ok_or_else(|| bad("requestedStartDate", "is required"))?;
    let (bank_id, group, acct) = {
        let st = core.state.lock();
        match req.authorisation_id {
            // The sandbox's shortcut: the authorisation named.
            Some(auth_id) => {
                let a = st
                    .authorisations
                    .get(&auth_id)
                    .ok_or_else(|| ApiError::not_found("Authorisation"))?;
                let patch = a
                    .patch
                    .as_ref()
                    .filter(|p| p.status == "success")
                    .ok_or_else(|| {
                        ApiError::conflict("The authorisation has no successful PATCH")
                    })?;
                let acct = pick_offered(&req, &patch.bank_accounts)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found("Bank account"))?;
                (a.bank_id, a.consent_group_id, acct)
            }
            // As Sage: the company's latest completed onboarding that offered the account.
            None => {
                let mut offered: Vec<&Authorisation> = st
                    .authorisations
                    .values()
                    .filter(|a| {
                        a.kind == AuthorisationKind::Onboarding
                            && a.organisation_id == org
                            && a.company_id == co
                            && req.bank_id.is_none_or(|b| b == a.bank_id)
                            && a.patch.as_ref().is_some_and(|p| p.status == "success")
                    })
                    .collect();
                offered.sort_by_key(|a| std::cmp::Reverse((a.created_at, a.id)));
                offered
                    .iter()
                    .find_map(|a| {
                        let patch = a.patch.as_ref()?;
                        pick_offered(&req, &patch.bank_accounts)
                            .map(|acct| (a.bank_id, a.consent_group_id, acct.clone()))
                    })
                    .ok_or_else(|| {
                        ApiError::not_found("Bank account offered by a completed authorisation")
                    })?
            }
        }
    };
    let n = NewAccount {
        bank_id,
        organisation_id: org,
        company_id: co,
        consent_group_id: Some(group),
        external_id: acct.bank_account_external_id,
        account_name: acct.account_name,
        bank_identifier: acct.bank_identifier,
        account_identifier: acct.account_identifier,
        branch_identifier: acct.branch_identifier,
        account_type: req.account_type.clone(),
        requested_start_date: start,
    };
    let (view, _) = create_and_notify(&core, n, true, &DeliveryOptions::default()).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "bankAccountId": view.bank_account_id, "status": "pending", "lastTransactionId": view.last_transaction_id }),
    ))
}

fn company_account(core: &Core, org: &str, co: &str, raw: &str) -> Result<AccountView, ApiError> {
    let id = uuid_param(raw, "Bank account")?;
    let st = core.state.lock();
    st.accounts
        .get(&id)
        .filter(|a| a.organisation_id == org && a.company_id == co)
        .map(|a| a.view())
        .ok_or_else(|| ApiError::not_found("Bank account"))
}

async fn get_bank_account(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co, raw)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let view = company_account(&core, &org, &co, &raw)?;
    Ok(json_response(StatusCode::OK, &view))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TxnQuery {
    start_index: Option<String>,
}

/// Product view of the transactions: pages of 100 from `transactionId >= startIndex`.
pub fn product_transactions(core: &Core, id: Uuid, start_index: u64) -> Vec<OwnedNode> {
    let st = core.state.lock();
    st.accounts
        .get(&id)
        .map(|a| {
            a.store
                .txns
                .iter()
                .filter(|t| t.transaction_id >= start_index)
                .take(100)
                .map(|t| stored_json(t, true))
                .collect()
        })
        .unwrap_or_default()
}

async fn get_transactions(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co, raw)): Path<(String, String, String)>,
    Query(q): Query<TxnQuery>,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let view = company_account(&core, &org, &co, &raw)?;
    let start = match q.start_index.as_deref() {
        None | Some("") => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| bad("startIndex", "must be a non-negative integer"))?,
    };
    let list = product_transactions(&core, view.bank_account_id, start);
    let mut m = std::collections::BTreeMap::new();
    m.insert("bankTransactionList".to_string(), OwnedNode::Arr(list));
    Ok(json_response(StatusCode::OK, &OwnedNode::Obj(m)))
}

async fn delete_bank_account(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co, raw)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let view = company_account(&core, &org, &co, &raw)?;
    delete_account(&core, view.bank_account_id, &DeliveryOptions::default()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The URL of the connector's re-authorisation page for an authorisation.
pub fn reauth_url(
    core: &Core,
    authorisation_id: Uuid,
    state: &str,
) -> Result<(String, String), ApiError> {
    let st = core.state.lock();
    let a = st
        .authorisations
        .get(&authorisation_id)
        .ok_or_else(|| ApiError::not_found("Authorisation"))?;
    let acct_id = a
        .bank_account_id
        .ok_or_else(|| ApiError::conflict("not a re-authorisation"))?;
    let acct = st
        .accounts
        .get(&acct_id)
        .ok_or_else(|| ApiError::not_found("Bank account"))?;
    let bank = st
        .banks
        .get(&a.bank_id)
        .ok_or_else(|| ApiError::not_found("Bank"))?;
    let redirect_uri = format!(
        "{}/ui/v1/indirectredirect/{authorisation_id}",
        core.base_url
    );
    let url = crate::util::append_query(
        &bank.callbacks.re_auth,
        &[
            ("bankaccount", &acct_id.to_string()),
            ("authorisation_id", &authorisation_id.to_string()),
            ("redirect_uri", &redirect_uri),
            ("state", state),
            ("externalId", &acct.external_id),
        ],
    );
    Ok((url, redirect_uri))
}

async fn indirect_auth(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co, raw)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let view = company_account(&core, &org, &co, &raw)?;
    let id = new_authorisation(
        &core,
        AuthorisationKind::Reauth,
        view.bank_id,
        Some(view.bank_account_id),
        &org,
        &co,
    )?;
    let note = Notification::AuthorisationCreated {
        authorisation_id: id,
        bank_id: view.bank_id,
    };
    notify_bank(
        &core,
        view.bank_id,
        note,
        Signing::default(),
        &DeliveryOptions::default(),
    )
    .await?;
    let state = core.state.lock().rng.uuid().to_string();
    let (url, _) = reauth_url(&core, id, &state)?;
    let mut resp = json_response(
        StatusCode::FOUND,
        &json!({ "redirect": url, "authorisationId": id }),
    );
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AvailableQuery {
    bank_account_ids: Option<String>,
}

async fn get_available(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co)): Path<(String, String)>,
    Query(q): Query<AvailableQuery>,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let first = q
        .bank_account_ids
        .as_deref()
        .and_then(|s| s.split(',').next())
        .ok_or_else(|| bad("bankAccountIds", "is required"))?
        .to_string();
    let view = company_account(&core, &org, &co, &first)?;
    match available_accounts(&core, view.bank_account_id).await {
        Ok(list) => Ok(json_response(
            StatusCode::OK,
            &json!({ "availableAccounts": list }),
        )),
        Err(AvailableError::Api(e)) => Err(e),
        Err(AvailableError::Status { status, error, .. }) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "UpstreamError",
            format!(
                "/availableaccounts answered {status:?} {}",
                error.unwrap_or_default()
            ),
        )),
        Err(AvailableError::Schema(p)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "UpstreamError",
            format!("/availableaccounts answer invalid: {}", p.join("; ")),
        )),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkBody {
    bank_account_candidate_id: Uuid,
    requested_start_date: String,
}

async fn post_link(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path((org, co)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorised(&core, &headers, Some((&org, &co)))?;
    let req: LinkBody = parse_json(&body, "LinkRequest")?;
    let (view, _) = link_candidate(
        &core,
        req.bank_account_candidate_id,
        &req.requested_start_date,
        &DeliveryOptions::default(),
    )
    .await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({ "bankAccountId": view.bank_account_id, "status": view.status, "lastTransactionId": view.last_transaction_id }),
    ))
}
