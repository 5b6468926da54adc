//! A Sage product's pages, as a customer sees them in a browser (sandbox README, "Product pages").
//!
//! Sage's products show the provider's `/auth` (or `/authrefresh`) page in an iframe and, once
//! the browser lands on Banking Service's redirect page, let the customer add the accounts the
//! bank shared. These pages do the same for one organisation and company (the sandbox's
//! defaults): no script, every value escaped, usable by keyboard.
//!
//! The product is served at `http://localhost:PORT` while Banking Service's own pages (the
//! redirect landing) and the demo bank stay on the sandbox's base URL (`http://127.0.0.1:PORT`):
//! a local connector on `127.0.0.1` is then framed by another site, as it is by Sage's products.
//!
//! - `GET /ui/v1/product`: the company's bank feeds, a button to connect each bank, and one to
//!   renew each account's feed.
//! - `POST /ui/v1/product/connect` (`bank`) and `POST /ui/v1/product/reauth` (`bankaccount`):
//!   create an authorisation, notify the bank (`authorisationCreated`), then show it.
//! - `GET /ui/v1/product/authorisations/{id}`: the provider's page in an iframe.
//! - `GET /ui/v1/indirectredirect/{id}`: where the provider redirects (inside the iframe); says
//!   how it ended and links the whole window back to the product.
//! - `GET|POST /ui/v1/product/authorisations/{id}/accounts`: pick the accounts to add; the POST
//!   creates them (`bankAccountCreated` to the bank) and returns to the feeds.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use uuid::Uuid;

use crate::model::{AccountStatus, AuthorisationKind, DeliveryOptions, PatchRecord};
use crate::notify::{Notification, Signing};
use crate::product::{self, NewAccount};
use crate::state::Core;
use crate::util::{append_query, form_get, html_escape, parse_form};

pub fn router() -> Router<Arc<Core>> {
    Router::new()
        .route("/ui/v1/product", get(home))
        .route("/ui/v1/product/connect", post(connect))
        .route("/ui/v1/product/reauth", post(reauth))
        .route("/ui/v1/product/authorisations/{id}", get(framed))
        .route(
            "/ui/v1/product/authorisations/{id}/accounts",
            get(pick_accounts).post(add_accounts),
        )
        .route("/ui/v1/indirectredirect/{authorisationId}", get(landing))
}

/// Where the product's pages are served: the sandbox's base URL with `127.0.0.1` written as
/// `localhost`, another site for the browser (same server).
pub fn product_base(base_url: &str) -> String {
    match base_url.strip_prefix("http://127.0.0.1:") {
        Some(port) => format!("http://localhost:{port}"),
        None => base_url.to_string(),
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1b1b1b;background:#f2f2f2}\
header{background:#00323c;color:#fff;padding:.75rem 1.5rem;font-weight:600}main{max-width:48rem;\
margin:1.5rem auto;padding:0 1rem}h1{font-size:1.4rem}table{border-collapse:collapse;width:100%;\
background:#fff}th,td{text-align:left;padding:.5rem;border-bottom:1px solid #ccc}\
button{font-size:1rem;padding:.5rem 1rem;border-radius:.4rem;border:1px solid #006b4f;\
background:#006b4f;color:#fff;cursor:pointer}button.link{background:#fff;color:#006b4f}\
:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}\
iframe{width:100%;height:40rem;border:1px solid #999;background:#fff}\
a{color:#0b5394}.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;\
clip:rect(0 0 0 0);white-space:nowrap}form.inline{display:inline}fieldset{background:#fff;border:1px solid #999}";

fn page(title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{t} — Sage (sandbox)</title><style>{STYLE}</style></head><body>\
<header>Sage Accounting <small>(Banking Service sandbox)</small></header>\
<main>{body}</main></body></html>",
        t = html_escape(title)
    );
    let mut resp = Html(html).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error(status: StatusCode, message: &str) -> Response {
    let mut r = page(
        "Something went wrong",
        &format!(
            "<h1>Something went wrong</h1><p>{}</p><p><a href=\"/ui/v1/product\">Back to bank feeds</a></p>",
            html_escape(message)
        ),
    );
    *r.status_mut() = status;
    r
}

/// What these pages need of an authorisation.
struct AuthInfo {
    id: Uuid,
    kind: AuthorisationKind,
    bank_id: Uuid,
    bank_account_id: Option<Uuid>,
    organisation_id: String,
    company_id: String,
    consent_group_id: Uuid,
    patch: Option<PatchRecord>,
}

fn authorisation(core: &Core, raw: &str) -> Option<AuthInfo> {
    let id = Uuid::parse_str(raw).ok()?;
    let st = core.state.lock();
    let a = st.authorisations.get(&id)?;
    Some(AuthInfo {
        id,
        kind: a.kind,
        bank_id: a.bank_id,
        bank_account_id: a.bank_account_id,
        organisation_id: a.organisation_id.clone(),
        company_id: a.company_id.clone(),
        consent_group_id: a.consent_group_id,
        patch: a.patch.clone(),
    })
}

fn see_other(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn status_text(s: AccountStatus) -> &'static str {
    match s {
        AccountStatus::Pending => "Waiting for transactions",
        AccountStatus::Active => "Active",
        AccountStatus::AuthRequired => "Needs your permission again",
        AccountStatus::Cancelled => "Cancelled",
    }
}

async fn home(State(core): State<Arc<Core>>) -> Response {
    let (org, co) = (
        core.cfg.default_organisation_id.clone(),
        core.cfg.default_company_id.clone(),
    );
    let (banks, accounts) = {
        let st = core.state.lock();
        let banks: Vec<(Uuid, String)> = st
            .bank_order
            .iter()
            .filter_map(|id| st.banks.get(id))
            .filter(|b| !b.removed)
            .map(|b| (b.id, b.name.clone()))
            .collect();
        let accounts: Vec<_> = st
            .account_order
            .iter()
            .filter_map(|id| st.accounts.get(id))
            .map(|a| a.view())
            .filter(|a| a.organisation_id == org && a.company_id == co)
            .collect();
        (banks, accounts)
    };
    let mut body = String::from("<h1>Bank feeds</h1>");
    if accounts.is_empty() {
        body.push_str("<p>No bank account is connected yet.</p>");
    } else {
        body.push_str(
            "<table><caption class=\"visually-hidden\">Connected bank accounts</caption><thead><tr>\
<th scope=\"col\">Account</th><th scope=\"col\">Number</th><th scope=\"col\">Status</th>\
<th scope=\"col\">Transactions</th><th scope=\"col\"><span>Feed</span></th></tr></thead><tbody>",
        );
        for a in &accounts {
            body.push_str(&format!(
                "<tr data-account=\"{id}\"><td>{name}</td><td>{number}</td><td>{status}</td><td>{n}</td><td>\
<form class=\"inline\" method=\"post\" action=\"/ui/v1/product/reauth\">\
<input type=\"hidden\" name=\"bankaccount\" value=\"{id}\">\
<button class=\"link\" type=\"submit\" aria-label=\"Renew the feed of {name}\">Renew</button></form></td></tr>",
                id = a.bank_account_id,
                name = html_escape(&a.account_name),
                number = html_escape(&a.account_identifier),
                status = status_text(a.status),
                n = a.transaction_count,
            ));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("<h2>Connect a bank account</h2>");
    if banks.is_empty() {
        body.push_str("<p>No bank is registered with Banking Service.</p>");
    }
    for (id, name) in &banks {
        body.push_str(&format!(
            "<form method=\"post\" action=\"/ui/v1/product/connect\">\
<input type=\"hidden\" name=\"bank\" value=\"{id}\">\
<button type=\"submit\">Connect {name}</button></form>",
            name = html_escape(name)
        ));
    }
    page("Bank feeds", &body)
}

/// Notifies the bank of a new authorisation (as Banking Service does before the browser
/// arrives) and sends the browser to the page that frames the provider's.
async fn announce_and_show(core: &Arc<Core>, bank_id: Uuid, id: Uuid) -> Response {
    let note = Notification::AuthorisationCreated {
        authorisation_id: id,
        bank_id,
    };
    match product::notify_bank(
        core,
        bank_id,
        note,
        Signing::default(),
        &DeliveryOptions::default(),
    )
    .await
    {
        Ok(r) if r.delivered || r.pending => {
            see_other(&format!("/ui/v1/product/authorisations/{id}"))
        }
        Ok(r) => error(
            StatusCode::BAD_GATEWAY,
            &format!(
                "The bank's connector refused the notification (HTTP {:?}).",
                r.final_status
            ),
        ),
        Err(e) => error(StatusCode::BAD_GATEWAY, &e.message),
    }
}

async fn connect(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let pairs = parse_form(&String::from_utf8_lossy(&body));
    let Some(bank_id) = form_get(&pairs, "bank").and_then(|b| Uuid::parse_str(b).ok()) else {
        return error(StatusCode::BAD_REQUEST, "Choose a bank.");
    };
    let id = match product::new_authorisation(
        &core,
        AuthorisationKind::Onboarding,
        bank_id,
        None,
        &core.cfg.default_organisation_id,
        &core.cfg.default_company_id,
    ) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::NOT_FOUND, &e.message),
    };
    announce_and_show(&core, bank_id, id).await
}

async fn reauth(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let pairs = parse_form(&String::from_utf8_lossy(&body));
    let account = form_get(&pairs, "bankaccount")
        .and_then(|b| Uuid::parse_str(b).ok())
        .and_then(|id| core.state.lock().accounts.get(&id).map(|a| a.view()));
    let Some(account) = account else {
        return error(StatusCode::NOT_FOUND, "No such bank account.");
    };
    let id = match product::new_authorisation(
        &core,
        AuthorisationKind::Reauth,
        account.bank_id,
        Some(account.bank_account_id),
        &account.organisation_id,
        &account.company_id,
    ) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::NOT_FOUND, &e.message),
    };
    announce_and_show(&core, account.bank_id, id).await
}

/// The provider's page in an iframe, with the query Banking Service gives it (spec §4.2, §4.4).
async fn framed(State(core): State<Arc<Core>>, Path(raw): Path<String>) -> Response {
    let Some(auth) = authorisation(&core, &raw) else {
        return error(StatusCode::NOT_FOUND, "No such authorisation.");
    };
    let callbacks = match product::bank_callbacks(&core, auth.bank_id) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::NOT_FOUND, &e.message),
    };
    let state = core.state.lock().rng.uuid().to_string();
    let id = auth.id;
    let redirect_uri = format!("{}/ui/v1/indirectredirect/{id}", core.base_url);
    let (src, title, heading) = match (auth.kind, auth.bank_account_id) {
        (AuthorisationKind::Reauth, Some(account)) => {
            let external_id = core
                .state
                .lock()
                .accounts
                .get(&account)
                .map(|a| a.view().external_id)
                .unwrap_or_default();
            (
                append_query(
                    &callbacks.re_auth,
                    &[
                        ("bankaccount", &account.to_string()),
                        ("authorisation_id", &id.to_string()),
                        ("redirect_uri", &redirect_uri),
                        ("state", &state),
                        ("externalId", &external_id),
                    ],
                ),
                "Renew your bank feed at your bank",
                "Renew a bank feed",
            )
        }
        _ => (
            append_query(
                &callbacks.auth,
                &[
                    ("bank", &auth.bank_id.to_string()),
                    ("authorisation_id", &id.to_string()),
                    ("redirect_uri", &redirect_uri),
                    ("state", &state),
                ],
            ),
            "Connect your bank account at your bank",
            "Connect a bank account",
        ),
    };
    page(
        heading,
        &format!(
            "<h1>{heading}</h1><p>Your bank's pages open below. \
<a href=\"/ui/v1/product\">Back to bank feeds</a></p>\
<iframe src=\"{src}\" title=\"{title}\"></iframe>",
            src = html_escape(&src),
        ),
    )
}

/// Banking Service's redirect page, inside the product's iframe: says how it ended, and links
/// the whole window (`target="_top"`) back to the product.
async fn landing(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let state = q
        .iter()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let product = product_base(&core.base_url);
    let auth = authorisation(&core, &raw);
    let patch = auth
        .as_ref()
        .and_then(|a| a.patch.as_ref().map(|p| p.status.clone()));
    let (heading, text, next, label) = match (&auth, patch.as_deref()) {
        (Some(a), Some("success")) if a.kind == AuthorisationKind::Onboarding => (
            "Your bank is connected",
            "Choose which of the accounts you shared to add to Sage.".to_string(),
            format!("{product}/ui/v1/product/authorisations/{}/accounts", a.id),
            "Continue",
        ),
        (Some(_), Some("success")) => (
            "Your bank feed is renewed",
            "Sage receives your transactions again.".to_string(),
            format!("{product}/ui/v1/product"),
            "Back to bank feeds",
        ),
        (Some(_), Some("cancelled")) => (
            "Connection cancelled",
            "Nothing was shared with Sage.".to_string(),
            format!("{product}/ui/v1/product"),
            "Back to bank feeds",
        ),
        _ => (
            "The connection did not complete",
            "Please start again from Sage.".to_string(),
            format!("{product}/ui/v1/product"),
            "Back to bank feeds",
        ),
    };
    page(
        heading,
        &format!(
            "<h1>{heading}</h1><p>{text}</p>\
<p><a href=\"{next}\" target=\"_top\">{label}</a></p>\
<p><small>Authorisation {id}, state {state}</small></p>",
            next = html_escape(&next),
            id = html_escape(&raw),
            state = html_escape(state),
        ),
    )
}

/// The accounts a successful onboarding shared, for the customer to pick.
async fn pick_accounts(State(core): State<Arc<Core>>, Path(raw): Path<String>) -> Response {
    let auth = authorisation(&core, &raw);
    let Some(patch) = auth.and_then(|a| a.patch).filter(|p| p.status == "success") else {
        return error(
            StatusCode::NOT_FOUND,
            "This connection has no accounts to add.",
        );
    };
    let mut rows = String::new();
    for (i, b) in patch.bank_accounts.iter().enumerate() {
        if b.connected {
            continue;
        }
        rows.push_str(&format!(
            "<div><input type=\"checkbox\" id=\"acct{i}\" name=\"account\" value=\"{ext}\" checked> \
<label for=\"acct{i}\">{name} ({bank} {number})</label></div>",
            ext = html_escape(&b.bank_account_external_id),
            name = html_escape(&b.account_name),
            bank = html_escape(&b.bank_identifier),
            number = html_escape(&b.account_identifier),
        ));
    }
    page(
        "Add bank accounts",
        &format!(
            "<h1>Add bank accounts</h1><form method=\"post\">\
<fieldset><legend>Accounts your bank shared</legend>{rows}</fieldset>\
<p><button type=\"submit\">Add to Sage</button></p></form>"
        ),
    )
}

async fn add_accounts(
    State(core): State<Arc<Core>>,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let Some(auth) = authorisation(&core, &raw) else {
        return error(StatusCode::NOT_FOUND, "No such authorisation.");
    };
    let Some(patch) = auth.patch.as_ref().filter(|p| p.status == "success") else {
        return error(
            StatusCode::NOT_FOUND,
            "This connection has no accounts to add.",
        );
    };
    let pairs = parse_form(&String::from_utf8_lossy(&body));
    let start = {
        let d = (core.now() - chrono::Duration::days(30)).date_naive();
        format!("{}T00:00:00.000Z", d.format("%Y-%m-%d"))
    };
    for b in &patch.bank_accounts {
        let picked = pairs
            .iter()
            .any(|(k, v)| k == "account" && *v == b.bank_account_external_id);
        if !picked || b.connected {
            continue;
        }
        let n = NewAccount {
            bank_id: auth.bank_id,
            organisation_id: auth.organisation_id.clone(),
            company_id: auth.company_id.clone(),
            consent_group_id: Some(auth.consent_group_id),
            external_id: b.bank_account_external_id.clone(),
            account_name: b.account_name.clone(),
            bank_identifier: b.bank_identifier.clone(),
            account_identifier: b.account_identifier.clone(),
            branch_identifier: b.branch_identifier.clone(),
            account_type: None,
            requested_start_date: start.clone(),
        };
        if let Err(e) =
            product::create_and_notify(&core, n, true, &DeliveryOptions::default()).await
        {
            return error(StatusCode::BAD_GATEWAY, &e.message);
        }
    }
    see_other("/ui/v1/product")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_is_another_site_than_the_sandbox() {
        assert_eq!(
            product_base("http://127.0.0.1:8080"),
            "http://localhost:8080"
        );
        assert_eq!(
            product_base("https://sandbox.example"),
            "https://sandbox.example"
        );
    }
}
