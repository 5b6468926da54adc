//! The driver: Banking Service's outbound side (sandbox spec §11). It announces authorisations,
//! drives the connector's `/auth` and `/authrefresh` pages as a browser, creates, links and deletes
//! accounts as the product would, and sends notifications (including negative variants).

pub mod html;
pub mod http;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::ApiError;
use crate::model::*;
use crate::notify::{self, Notification, Signing};
use crate::product::{self, AvailableError, CandidateView, NewAccount};
use crate::sageid::TokenVariant;
use crate::state::Core;
use crate::util::{append_query, fmt_time};

/// Which accounts to keep (bank consent checkboxes) or to create (product side).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccountPick {
    #[default]
    All,
    First,
    None,
    /// Positions among the customer's accounts (bank) or the PATCHed accounts (product).
    Indexes(Vec<usize>),
    /// Bank account ids (bank) or `bankAccountExternalId`s (product).
    Ids(Vec<String>),
}

impl AccountPick {
    fn keeps(&self, index: usize, id: &str) -> bool {
        match self {
            AccountPick::All => true,
            AccountPick::First => index == 0,
            AccountPick::None => false,
            AccountPick::Indexes(v) => v.contains(&index),
            AccountPick::Ids(v) => v.iter().any(|x| x == id),
        }
    }
}

/// Options of [`Driver::onboard`]; every field has a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OnboardOptions {
    /// Default: the most recently registered bank.
    pub bank_id: Option<Uuid>,
    pub username: String,
    pub password: String,
    /// Which of the customer's accounts stay checked on the bank's consent form.
    pub consent: AccountPick,
    /// Which PATCHed accounts the product then creates.
    pub create: AccountPick,
    /// Default: 30 days ago, start of day.
    pub requested_start_date: Option<String>,
    /// Press the bank's Cancel button instead of Approve.
    pub cancel: bool,
    /// Give `redirect_uri` a query (e.g. `src=probe`), which makes the connector use `&state=`.
    pub redirect_query: Option<String>,
    /// Default: a fresh UUID.
    pub state: Option<String>,
    pub organisation_id: Option<String>,
    pub company_id: Option<String>,
    /// Delivery of the notifications (authorisation and bankAccount).
    pub delivery: DeliveryOptions,
    /// Open the browser without waiting for the authorisation notification (race of §4.2.6).
    pub browser_first: bool,
}

impl Default for OnboardOptions {
    fn default() -> Self {
        OnboardOptions {
            bank_id: None,
            username: "demo".into(),
            password: "demo".into(),
            consent: AccountPick::All,
            create: AccountPick::All,
            requested_start_date: None,
            cancel: false,
            redirect_query: None,
            state: None,
            organisation_id: None,
            company_id: None,
            delivery: DeliveryOptions::default(),
            browser_first: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowserStep {
    pub method: String,
    pub url: String,
    pub status: u16,
    #[serde(default)]
    pub location: Option<String>,
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAccount {
    pub bank_account_id: Uuid,
    pub external_id: String,
    pub account: AccountView,
    #[serde(default)]
    pub notification: Option<DeliveryReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OnboardOutcome {
    pub authorisation_id: Uuid,
    pub bank_id: Uuid,
    pub state: String,
    pub redirect_uri: String,
    pub final_redirect: String,
    #[serde(default)]
    pub patch: Option<PatchRecord>,
    pub patched_accounts: Vec<PatchedAccount>,
    pub created: Vec<CreatedAccount>,
    #[serde(default)]
    pub authorisation_notification: Option<DeliveryReport>,
    pub steps: Vec<BrowserStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReauthOptions {
    pub username: String,
    pub password: String,
    pub cancel: bool,
    pub state: Option<String>,
    pub redirect_query: Option<String>,
    /// Send this `externalId` instead of the account's (ownership probe).
    pub external_id_override: Option<String>,
    pub delivery: DeliveryOptions,
}

impl Default for ReauthOptions {
    fn default() -> Self {
        ReauthOptions {
            username: "demo".into(),
            password: "demo".into(),
            cancel: false,
            state: None,
            redirect_query: None,
            external_id_override: None,
            delivery: DeliveryOptions::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReauthOutcome {
    pub authorisation_id: Uuid,
    pub final_redirect: String,
    #[serde(default)]
    pub patch: Option<PatchRecord>,
    /// Every account of the consent group after the PATCH.
    pub accounts: Vec<AccountView>,
    pub steps: Vec<BrowserStep>,
}

/// What [`Driver::send_notification`] sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum NotificationSpec {
    AuthorisationCreated {
        #[serde(default)]
        authorisation_id: Option<Uuid>,
    },
    BankAccountCreated {
        bank_account_id: Uuid,
        external_id: String,
        requested_start_date: String,
    },
    BankAccountDeleted {
        bank_account_id: Uuid,
        external_id: String,
    },
    Raw {
        body: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRequest {
    #[serde(default)]
    pub bank_id: Option<Uuid>,
    pub notification: NotificationSpec,
    #[serde(default)]
    pub token: TokenVariant,
    #[serde(default)]
    pub header: HeaderVariant,
    /// Retry per `notification.*` (default false: one attempt, for negative tests).
    #[serde(default)]
    pub retry: bool,
    #[serde(default)]
    pub delivery: DeliveryOptions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeVariant {
    UnknownAuthorisationId,
    ReusedAuthorisationId,
    ExpiredAuthorisationId,
    BankMismatch,
    ForeignRedirectUri,
    ReservedCharactersState,
    RedirectUriWithQuery,
    MissingState,
}

impl ProbeVariant {
    pub const ALL: [ProbeVariant; 8] = [
        ProbeVariant::UnknownAuthorisationId,
        ProbeVariant::ReusedAuthorisationId,
        ProbeVariant::ExpiredAuthorisationId,
        ProbeVariant::BankMismatch,
        ProbeVariant::ForeignRedirectUri,
        ProbeVariant::ReservedCharactersState,
        ProbeVariant::RedirectUriWithQuery,
        ProbeVariant::MissingState,
    ];

    /// The documented status (spec §4.3), `None` for the positive variants.
    pub fn expected_status(self) -> Option<&'static [u16]> {
        match self {
            ProbeVariant::UnknownAuthorisationId | ProbeVariant::BankMismatch => Some(&[403]),
            ProbeVariant::ReusedAuthorisationId => Some(&[409]),
            ProbeVariant::ExpiredAuthorisationId => Some(&[410, 409]),
            ProbeVariant::ForeignRedirectUri | ProbeVariant::MissingState => Some(&[400]),
            ProbeVariant::ReservedCharactersState | ProbeVariant::RedirectUriWithQuery => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeOutcome {
    pub variant: ProbeVariant,
    pub authorisation_id: Uuid,
    /// Status of the connector's answer to the probed page load.
    pub status: u16,
    #[serde(default)]
    pub location: Option<String>,
    /// PATCH requests the connector sent for this authorisation.
    pub patch_requests: u64,
    pub ok: bool,
    pub problems: Vec<String>,
    pub excerpt: String,
}

/// Which check failed, with enough context for a test failure message.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "check")]
pub enum DriverError {
    #[error("sandbox: {status} {code}: {message}")]
    Sandbox {
        status: u16,
        code: String,
        message: String,
    },
    #[error("no bank registered (POST /v1/banks first)")]
    NoBank,
    #[error(
        "notification {kind} not acknowledged: status {status:?} after {attempts} attempt(s) ({detail})"
    )]
    NotificationRejected {
        kind: String,
        status: Option<u16>,
        attempts: u32,
        detail: String,
    },
    #[error("HTTP {method} {url} failed: {error}")]
    Http {
        method: String,
        url: String,
        error: String,
    },
    #[error("{url}: HTML response without Content-Security-Policy frame-ancestors (CSP: {csp:?})")]
    FrameAncestorsMissing { url: String, csp: Option<String> },
    #[error("{url}: HTML response carries X-Frame-Options: {value}")]
    XFrameOptionsPresent { url: String, value: String },
    #[error("redirected to {location} before the authorisation {authorisation_id} was PATCHed")]
    PatchNotRecordedBeforeRedirect {
        authorisation_id: Uuid,
        location: String,
    },
    #[error("PATCH of {authorisation_id}: expected {expected}, got {got}")]
    PatchMismatch {
        authorisation_id: Uuid,
        expected: String,
        got: String,
    },
    #[error(
        "final redirect {location} does not start with redirect_uri {redirect_uri} followed by '{separator}'"
    )]
    RedirectMismatch {
        redirect_uri: String,
        location: String,
        separator: char,
    },
    #[error("state changed: sent {sent:?}, got {received:?} in {location}")]
    StateChanged {
        sent: String,
        received: Option<String>,
        location: String,
    },
    #[error("redirect to {location} is off the allow-list (only loopback hosts are followed)")]
    RedirectOffAllowList { location: String },
    #[error("browser stopped at {method} {url}: status {status}: {excerpt}")]
    PageStopped {
        method: String,
        url: String,
        status: u16,
        excerpt: String,
    },
    #[error("browser gave up after {steps} steps at {url}")]
    TooManySteps { steps: usize, url: String },
    #[error("/availableaccounts answered {status:?} {error:?}: {body}")]
    AvailableAccountsStatus {
        status: Option<u16>,
        error: Option<String>,
        body: String,
    },
    #[error("/availableaccounts answer is invalid: {problems:?}")]
    AvailableAccountsSchema { problems: Vec<String> },
    #[error("{0}")]
    Invalid(String),
}

impl From<ApiError> for DriverError {
    fn from(e: ApiError) -> Self {
        DriverError::Sandbox {
            status: e.status.as_u16(),
            code: e.code.to_string(),
            message: e.message,
        }
    }
}

/// The connector's final redirect, intercepted.
struct FinalRedirect {
    location: String,
    /// The page the walk ended on, when it may end on one (status, body).
    page: Option<(u16, String)>,
}

/// Request the browser is about to send.
struct Nav {
    method: reqwest::Method,
    url: String,
    form: Option<Vec<(String, String)>>,
}

/// What to do on the bank's login page.
#[derive(Clone)]
struct LoginScript {
    username: String,
    password: String,
    consent: AccountPick,
    cancel: bool,
}

struct Browser {
    http: reqwest::Client,
    jar: HashMap<String, Vec<(String, String)>>,
    steps: Vec<BrowserStep>,
    connector_origin: String,
    target_prefix: String,
    /// Whether a page with nothing to submit or follow ends the walk (else it is an error).
    accept_final_page: bool,
}

fn origin(u: &url::Url) -> String {
    u.origin().ascii_serialization()
}

fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Browser {
    fn new(core: &Core, connector_url: &str) -> Self {
        let connector_origin = url::Url::parse(connector_url)
            .map(|u| origin(&u))
            .unwrap_or_default();
        Browser {
            http: core.http.clone(),
            jar: HashMap::new(),
            steps: Vec::new(),
            connector_origin,
            target_prefix: format!("{}/ui/v1/indirectredirect/", core.base_url),
            accept_final_page: false,
        }
    }

    fn cookie_key(u: &url::Url) -> String {
        format!(
            "{}:{}",
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        )
    }

    fn store_cookies(&mut self, u: &url::Url, headers: &reqwest::header::HeaderMap) {
        let key = Self::cookie_key(u);
        for v in headers.get_all(reqwest::header::SET_COOKIE) {
            let Ok(s) = v.to_str() else { continue };
            let mut parts = s.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let expired = parts.any(|a| {
                let a = a.trim().to_ascii_lowercase();
                a.strip_prefix("max-age=")
                    .is_some_and(|n| n.trim().parse::<i64>().is_ok_and(|n| n <= 0))
            });
            let jar = self.jar.entry(key.clone()).or_default();
            jar.retain(|(n, _)| n != name.trim());
            if !expired {
                jar.push((name.trim().to_string(), value.trim().to_string()));
            }
        }
    }

    fn cookie_header(&self, u: &url::Url) -> Option<String> {
        let jar = self.jar.get(&Self::cookie_key(u))?;
        if jar.is_empty() {
            return None;
        }
        Some(
            jar.iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    fn check_html_headers(
        &self,
        u: &url::Url,
        headers: &reqwest::header::HeaderMap,
    ) -> Result<(), DriverError> {
        if origin(u) != self.connector_origin {
            return Ok(());
        }
        if let Some(x) = headers.get("x-frame-options") {
            return Err(DriverError::XFrameOptionsPresent {
                url: u.to_string(),
                value: x.to_str().unwrap_or("?").to_string(),
            });
        }
        let csp = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !csp
            .as_deref()
            .is_some_and(|c| c.to_ascii_lowercase().contains("frame-ancestors"))
        {
            return Err(DriverError::FrameAncestorsMissing {
                url: u.to_string(),
                csp,
            });
        }
        Ok(())
    }

    /// Sends one request; returns (status, headers, body).
    async fn send(
        &mut self,
        nav: &Nav,
    ) -> Result<(u16, reqwest::header::HeaderMap, String, url::Url), DriverError> {
        let http_err = |e: String| DriverError::Http {
            method: nav.method.to_string(),
            url: nav.url.clone(),
            error: e,
        };
        let u = url::Url::parse(&nav.url).map_err(|e| http_err(e.to_string()))?;
        let mut req = self
            .http
            .request(nav.method.clone(), u.clone())
            .timeout(Duration::from_secs(30));
        if let Some(c) = self.cookie_header(&u) {
            req = req.header(reqwest::header::COOKIE, c);
        }
        if let Some(form) = &nav.form {
            req = req.form(form);
        }
        let resp = req.send().await.map_err(|e| http_err(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        self.store_cookies(&u, &headers);
        let body = resp.text().await.unwrap_or_default();
        Ok((status, headers, body, u))
    }

    /// Follows the journey from `start` until the connector redirects to the `redirect_uri` target.
    async fn run(
        &mut self,
        start: String,
        script: &LoginScript,
    ) -> Result<FinalRedirect, DriverError> {
        let mut nav = Nav {
            method: reqwest::Method::GET,
            url: start,
            form: None,
        };
        for _ in 0..40 {
            let (status, headers, body, u) = self.send(&nav).await?;
            let location = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let is_html = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.contains("text/html"));
            let mut step = BrowserStep {
                method: nav.method.to_string(),
                url: nav.url.clone(),
                status,
                location: location.clone(),
                action: String::new(),
            };
            if is_html && let Err(e) = self.check_html_headers(&u, &headers) {
                self.steps.push(step);
                return Err(e);
            }
            if (300..400).contains(&status) {
                let Some(loc) = location else {
                    step.action = "redirect without Location".into();
                    self.steps.push(step);
                    return Err(DriverError::PageStopped {
                        method: nav.method.to_string(),
                        url: nav.url.clone(),
                        status,
                        excerpt: "redirect without Location".into(),
                    });
                };
                let next = u.join(&loc).map_err(|e| DriverError::Http {
                    method: "GET".into(),
                    url: loc.clone(),
                    error: e.to_string(),
                })?;
                step.action = format!("follow {status}");
                self.steps.push(step);
                if let Some(f) = self.intercept(&next)? {
                    return Ok(f);
                }
                nav = match status {
                    307 | 308 => Nav {
                        method: nav.method.clone(),
                        url: next.to_string(),
                        form: nav.form.take(),
                    },
                    _ => Nav {
                        method: reqwest::Method::GET,
                        url: next.to_string(),
                        form: None,
                    },
                };
                continue;
            }
            if status == 200 && is_html {
                let forms = html::forms(&body);
                let login = forms.iter().find(|f| f.has_attr("data-bank-login"));
                let chosen = login.or(if forms.len() == 1 {
                    forms.first()
                } else {
                    None
                });
                if let Some(form) = chosen {
                    let fields = if form.has_attr("data-bank-login") {
                        step.action = if script.cancel {
                            "bank login: cancel".into()
                        } else {
                            "bank login: approve".into()
                        };
                        fill_login(form, script)
                    } else {
                        step.action = "submit the page's form".into();
                        form.default_submission()
                    };
                    let action = form.action.clone().unwrap_or_default();
                    let target = if action.is_empty() {
                        u.clone()
                    } else {
                        u.join(&action).map_err(|e| DriverError::Http {
                            method: form.method.clone(),
                            url: action.clone(),
                            error: e.to_string(),
                        })?
                    };
                    self.steps.push(step);
                    if form.method == "post" {
                        self.check_follow(&target)?;
                        nav = Nav {
                            method: reqwest::Method::POST,
                            url: target.to_string(),
                            form: Some(fields),
                        };
                    } else {
                        let mut t = target.clone();
                        t.query_pairs_mut().clear().extend_pairs(fields.iter());
                        if let Some(f) = self.intercept(&t)? {
                            return Ok(f);
                        }
                        nav = Nav {
                            method: reqwest::Method::GET,
                            url: t.to_string(),
                            form: None,
                        };
                    }
                    continue;
                }
                let refresh = html::meta_refresh(&body).or_else(|| html::script_redirect(&body));
                if let Some(r) = refresh {
                    let next = u.join(&r).map_err(|e| DriverError::Http {
                        method: "GET".into(),
                        url: r.clone(),
                        error: e.to_string(),
                    })?;
                    step.action = "follow page redirect".into();
                    self.steps.push(step);
                    if let Some(f) = self.intercept(&next)? {
                        return Ok(f);
                    }
                    nav = Nav {
                        method: reqwest::Method::GET,
                        url: next.to_string(),
                        form: None,
                    };
                    continue;
                }
            }
            step.action = "stop".into();
            self.steps.push(step);
            if self.accept_final_page && is_html {
                return Ok(FinalRedirect {
                    location: nav.url.clone(),
                    page: Some((status, body)),
                });
            }
            return Err(DriverError::PageStopped {
                method: nav.method.to_string(),
                url: nav.url.clone(),
                status,
                excerpt: html::text_excerpt(&body, 300),
            });
        }
        Err(DriverError::TooManySteps {
            steps: self.steps.len(),
            url: nav.url,
        })
    }

    fn check_follow(&self, next: &url::Url) -> Result<(), DriverError> {
        if matches!(next.scheme(), "http" | "https") && is_loopback(next) {
            Ok(())
        } else {
            Err(DriverError::RedirectOffAllowList {
                location: next.to_string(),
            })
        }
    }

    /// `Some` when `next` is the final `redirect_uri` target (never followed).
    fn intercept(&self, next: &url::Url) -> Result<Option<FinalRedirect>, DriverError> {
        if next.as_str().starts_with(&self.target_prefix) {
            return Ok(Some(FinalRedirect {
                page: None,
                location: next.to_string(),
            }));
        }
        self.check_follow(next)?;
        Ok(None)
    }
}

/// Where a customer's walk through a Payments Out authorisation link ended.
#[derive(Debug, Clone)]
pub struct AuthorisationWalk {
    /// The connector's last page (status and its text), or `None` when it redirected to the
    /// product's return address.
    pub page: Option<(u16, String)>,
    /// The last URL: the page's, or the return address with its query.
    pub location: String,
    pub steps: Vec<BrowserStep>,
}

/// Payments Out: the customer opens `link_url` (the connector's authorisation page), submits
/// its form (continue), logs in at the demo bank as `username` with `password` and consents to the accounts
/// `consent` keeps — or cancels there — and ends on the connector's last page, or on a
/// redirect to `return_prefix`. The connector's HTML pages must carry `frame-ancestors`.
pub async fn walk_authorisation(
    link_url: &str,
    (username, password): (&str, &str),
    consent: AccountPick,
    cancel: bool,
    return_prefix: Option<&str>,
) -> Result<AuthorisationWalk, DriverError> {
    let connector_origin = url::Url::parse(link_url)
        .map(|u| origin(&u))
        .map_err(|e| DriverError::Invalid(format!("link URL: {e}")))?;
    // The browser follows redirects itself, one step at a time.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| DriverError::Invalid(e.to_string()))?;
    let mut browser = Browser {
        http,
        jar: HashMap::new(),
        steps: Vec::new(),
        connector_origin,
        // Nothing matches an empty prefix's stand-in: the walk ends on a page.
        target_prefix: return_prefix.unwrap_or("\u{0}").to_string(),
        accept_final_page: true,
    };
    let script = LoginScript {
        username: username.to_string(),
        password: password.to_string(),
        consent,
        cancel,
    };
    let fin = browser.run(link_url.to_string(), &script).await?;
    Ok(AuthorisationWalk {
        page: fin
            .page
            .map(|(status, body)| (status, html::text_excerpt(&body, 2000))),
        location: fin.location,
        steps: browser.steps,
    })
}

fn fill_login(form: &html::Form, script: &LoginScript) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut own_index = 0usize;
    for f in &form.fields {
        if f.name.is_empty() || f.is_submit() {
            continue;
        }
        match f.name.as_str() {
            "username" => out.push((f.name.clone(), script.username.clone())),
            "password" => out.push((f.name.clone(), script.password.clone())),
            "account" if f.kind == "checkbox" => {
                // Only the logged-in customer's checkboxes count for the pick.
                let own = f.attr("data-customer").is_none_or(|c| c == script.username);
                if own {
                    if script.consent.keeps(own_index, &f.value) {
                        out.push((f.name.clone(), f.value.clone()));
                    }
                    own_index += 1;
                }
            }
            _ if matches!(f.kind.as_str(), "checkbox" | "radio") && !f.checked => {}
            _ => out.push((f.name.clone(), f.value.clone())),
        }
    }
    out.push((
        "action".into(),
        if script.cancel {
            "cancel".into()
        } else {
            "approve".into()
        },
    ));
    out
}

/// Checks the final redirect: prefix and separator, and `state` unchanged.
fn check_final(redirect_uri: &str, state: &str, location: &str) -> Result<(), DriverError> {
    let base = redirect_uri.split('#').next().unwrap_or(redirect_uri);
    let separator = if base.contains('?') { '&' } else { '?' };
    let ok_prefix = location
        .strip_prefix(base)
        .is_some_and(|rest| rest.starts_with(separator));
    if !ok_prefix {
        return Err(DriverError::RedirectMismatch {
            redirect_uri: redirect_uri.to_string(),
            location: location.to_string(),
            separator,
        });
    }
    let received: Vec<String> = url::Url::parse(location)
        .map(|u| {
            u.query_pairs()
                .filter(|(k, _)| k == "state")
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default();
    if received.len() != 1 || received[0] != state {
        return Err(DriverError::StateChanged {
            sent: state.to_string(),
            received: received.first().cloned(),
            location: location.to_string(),
        });
    }
    Ok(())
}

fn default_start(core: &Core) -> String {
    let d = (core.now() - chrono::Duration::days(30)).date_naive();
    format!("{}T00:00:00.000Z", d.format("%Y-%m-%d"))
}

#[derive(Clone)]
pub struct Driver {
    core: Arc<Core>,
}

impl Driver {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Driver { core }
    }

    fn default_bank(&self, bank: Option<Uuid>) -> Result<Uuid, DriverError> {
        if let Some(b) = bank {
            return Ok(b);
        }
        let st = self.core.state.lock();
        st.bank_order
            .iter()
            .rev()
            .find(|id| st.banks.get(id).is_some_and(|b| !b.removed))
            .copied()
            .ok_or(DriverError::NoBank)
    }

    fn authorisation(&self, id: Uuid) -> Option<AuthorisationView> {
        let now = self.core.now();
        self.core
            .state
            .lock()
            .authorisations
            .get(&id)
            .map(|a| a.view(now))
    }

    fn patch_requests(&self, id: Uuid) -> u64 {
        let needle = format!("/v1/authorisations/{id}");
        self.core
            .state
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "PATCH" && r.path == needle)
            .count() as u64
    }

    async fn announce(
        &self,
        bank_id: Uuid,
        authorisation_id: Uuid,
        delivery: &DeliveryOptions,
    ) -> Result<DeliveryReport, DriverError> {
        let note = Notification::AuthorisationCreated {
            authorisation_id,
            bank_id,
        };
        let report =
            product::notify_bank(&self.core, bank_id, note, Signing::default(), delivery).await?;
        if !report.pending && !report.delivered {
            return Err(DriverError::NotificationRejected {
                kind: report.kind.clone(),
                status: report.final_status,
                attempts: report.attempts,
                detail: report.body.clone().unwrap_or_default(),
            });
        }
        Ok(report)
    }

    /// Onboarding (§8.1): authorisation + notification, the browser at `/auth` (login, consent,
    /// PATCH, redirect, all checked), then the product creates the picked accounts and notifies.
    pub async fn onboard(&self, opts: OnboardOptions) -> Result<OnboardOutcome, DriverError> {
        let bank_id = self.default_bank(opts.bank_id)?;
        let org = opts
            .organisation_id
            .clone()
            .unwrap_or_else(|| self.core.cfg.default_organisation_id.clone());
        let co = opts
            .company_id
            .clone()
            .unwrap_or_else(|| self.core.cfg.default_company_id.clone());
        let id = product::new_authorisation(
            &self.core,
            AuthorisationKind::Onboarding,
            bank_id,
            None,
            &org,
            &co,
        )?;
        self.run_onboarding(id, &opts).await
    }

    /// Runs onboarding for an existing authorisation (also used by the product view's
    /// `indirectlinkaccount`).
    pub async fn run_onboarding(
        &self,
        id: Uuid,
        opts: &OnboardOptions,
    ) -> Result<OnboardOutcome, DriverError> {
        let auth = self
            .authorisation(id)
            .ok_or_else(|| DriverError::Invalid(format!("unknown authorisation {id}")))?;
        let bank_id = auth.bank_id;
        let callbacks = product::bank_callbacks(&self.core, bank_id)?;
        let notification = if opts.browser_first {
            let d = self.clone();
            let delivery = opts.delivery.clone();
            self.core.spawn(async move {
                let _ = d.announce(bank_id, id, &delivery).await;
            });
            None
        } else {
            Some(self.announce(bank_id, id, &opts.delivery).await?)
        };
        let state = opts
            .state
            .clone()
            .unwrap_or_else(|| self.core.state.lock().rng.uuid().to_string());
        let mut redirect_uri = format!("{}/ui/v1/indirectredirect/{id}", self.core.base_url);
        if let Some(q) = &opts.redirect_query {
            redirect_uri = format!("{redirect_uri}?{q}");
        }
        let url = append_query(
            &callbacks.auth,
            &[
                ("bank", &bank_id.to_string()),
                ("authorisation_id", &id.to_string()),
                ("redirect_uri", &redirect_uri),
                ("state", &state),
            ],
        );
        let script = LoginScript {
            username: opts.username.clone(),
            password: opts.password.clone(),
            consent: opts.consent.clone(),
            cancel: opts.cancel,
        };
        let mut browser = Browser::new(&self.core, &callbacks.auth);
        let fin = browser.run(url, &script).await?;
        // PATCH before redirect: the authorisation must be completed when the redirect arrives.
        let after = self.authorisation(id);
        let patch = after.as_ref().and_then(|a| a.patch.clone());
        let Some(patch) = patch else {
            return Err(DriverError::PatchNotRecordedBeforeRedirect {
                authorisation_id: id,
                location: fin.location,
            });
        };
        check_final(&redirect_uri, &state, &fin.location)?;
        let expected = if opts.cancel { "cancelled" } else { "success" };
        if patch.status != expected {
            return Err(DriverError::PatchMismatch {
                authorisation_id: id,
                expected: expected.into(),
                got: patch.status.clone(),
            });
        }
        let mut created = Vec::new();
        let start = opts
            .requested_start_date
            .clone()
            .unwrap_or_else(|| default_start(&self.core));
        for (i, a) in patch.bank_accounts.iter().enumerate() {
            if !opts.create.keeps(i, &a.bank_account_external_id) {
                continue;
            }
            let n = NewAccount {
                bank_id,
                organisation_id: auth.organisation_id.clone(),
                company_id: auth.company_id.clone(),
                consent_group_id: Some(auth.consent_group_id),
                external_id: a.bank_account_external_id.clone(),
                account_name: a.account_name.clone(),
                bank_identifier: a.bank_identifier.clone(),
                account_identifier: a.account_identifier.clone(),
                branch_identifier: a.branch_identifier.clone(),
                account_type: None,
                requested_start_date: start.clone(),
            };
            let (account, report) =
                product::create_and_notify(&self.core, n, true, &opts.delivery).await?;
            if let Some(r) = &report
                && !r.pending
                && !r.delivered
            {
                return Err(DriverError::NotificationRejected {
                    kind: r.kind.clone(),
                    status: r.final_status,
                    attempts: r.attempts,
                    detail: r.body.clone().unwrap_or_default(),
                });
            }
            created.push(CreatedAccount {
                bank_account_id: account.bank_account_id,
                external_id: account.external_id.clone(),
                account,
                notification: report,
            });
        }
        Ok(OnboardOutcome {
            authorisation_id: id,
            bank_id,
            state,
            redirect_uri,
            final_redirect: fin.location,
            patched_accounts: patch.bank_accounts.clone(),
            patch: Some(patch),
            created,
            authorisation_notification: notification,
            steps: browser.steps,
        })
    }

    /// Re-authorisation (§8.2): authorisation + notification, the browser at `/authrefresh`,
    /// checks the PATCH `{status: "success"}` and `state`; the group transition is applied.
    pub async fn reauth(
        &self,
        bank_account_id: Uuid,
        opts: ReauthOptions,
    ) -> Result<ReauthOutcome, DriverError> {
        let acct = {
            let st = self.core.state.lock();
            st.accounts.get(&bank_account_id).map(|a| a.view())
        }
        .ok_or_else(|| DriverError::from(ApiError::not_found("Bank account")))?;
        let id = product::new_authorisation(
            &self.core,
            AuthorisationKind::Reauth,
            acct.bank_id,
            Some(bank_account_id),
            &acct.organisation_id,
            &acct.company_id,
        )?;
        self.announce(acct.bank_id, id, &opts.delivery).await?;
        let callbacks = product::bank_callbacks(&self.core, acct.bank_id)?;
        let state = opts
            .state
            .clone()
            .unwrap_or_else(|| self.core.state.lock().rng.uuid().to_string());
        let mut redirect_uri = format!("{}/ui/v1/indirectredirect/{id}", self.core.base_url);
        if let Some(q) = &opts.redirect_query {
            redirect_uri = format!("{redirect_uri}?{q}");
        }
        let external_id = opts
            .external_id_override
            .clone()
            .unwrap_or_else(|| acct.external_id.clone());
        let url = append_query(
            &callbacks.re_auth,
            &[
                ("bankaccount", &bank_account_id.to_string()),
                ("authorisation_id", &id.to_string()),
                ("redirect_uri", &redirect_uri),
                ("state", &state),
                ("externalId", &external_id),
            ],
        );
        let script = LoginScript {
            username: opts.username.clone(),
            password: opts.password.clone(),
            consent: AccountPick::All,
            cancel: opts.cancel,
        };
        let mut browser = Browser::new(&self.core, &callbacks.re_auth);
        let fin = browser.run(url, &script).await?;
        let patch = self.authorisation(id).and_then(|a| a.patch);
        let Some(patch) = patch else {
            return Err(DriverError::PatchNotRecordedBeforeRedirect {
                authorisation_id: id,
                location: fin.location,
            });
        };
        check_final(&redirect_uri, &state, &fin.location)?;
        let expected = if opts.cancel { "cancelled" } else { "success" };
        if patch.status != expected || !patch.bank_accounts.is_empty() && expected == "success" {
            return Err(DriverError::PatchMismatch {
                authorisation_id: id,
                expected: format!("{{status: {expected}}} without accounts"),
                got: format!(
                    "status {} with {} account(s)",
                    patch.status,
                    patch.bank_accounts.len()
                ),
            });
        }
        let accounts = {
            let st = self.core.state.lock();
            st.account_order
                .iter()
                .filter_map(|a| st.accounts.get(a))
                .filter(|a| a.consent_group_id == acct.consent_group_id)
                .map(|a| a.view())
                .collect()
        };
        Ok(ReauthOutcome {
            authorisation_id: id,
            final_redirect: fin.location,
            patch: Some(patch),
            accounts,
            steps: browser.steps,
        })
    }

    /// Signed call to `/availableaccounts?externalId=`; validates the answer; candidates with `connected`.
    pub async fn available_accounts(
        &self,
        bank_account_id: Uuid,
    ) -> Result<Vec<CandidateView>, DriverError> {
        product::available_accounts(&self.core, bank_account_id)
            .await
            .map_err(|e| match e {
                AvailableError::Api(e) => e.into(),
                AvailableError::Status {
                    status,
                    error,
                    body,
                } => DriverError::AvailableAccountsStatus {
                    status,
                    error,
                    body,
                },
                AvailableError::Schema(problems) => {
                    DriverError::AvailableAccountsSchema { problems }
                }
            })
    }

    /// Links a candidate: creates the account (`pending`) and sends `resourceCreated/bankAccount`.
    pub async fn link(
        &self,
        candidate_id: Uuid,
        requested_start_date: &str,
    ) -> Result<CreatedAccount, DriverError> {
        let (account, notification) = product::link_candidate(
            &self.core,
            candidate_id,
            requested_start_date,
            &DeliveryOptions::default(),
        )
        .await?;
        Ok(CreatedAccount {
            bank_account_id: account.bank_account_id,
            external_id: account.external_id.clone(),
            account,
            notification,
        })
    }

    /// The product deletes an account: `cancelled`, store deleted, `resourceDeleted` sent.
    pub async fn delete_account(
        &self,
        bank_account_id: Uuid,
    ) -> Result<(AccountView, DeliveryReport), DriverError> {
        Ok(
            product::delete_account(&self.core, bank_account_id, &DeliveryOptions::default())
                .await?,
        )
    }

    /// Creates an account as the product would (`pending`) and sends its notification.
    pub async fn create_account(
        &self,
        req: CreateAccountRequest,
    ) -> Result<CreateAccountResponse, DriverError> {
        let n = NewAccount {
            bank_id: req.bank_id,
            organisation_id: req
                .organisation_id
                .unwrap_or_else(|| self.core.cfg.default_organisation_id.clone()),
            company_id: req
                .company_id
                .unwrap_or_else(|| self.core.cfg.default_company_id.clone()),
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
            product::create_and_notify(&self.core, n, req.notify.unwrap_or(true), &req.delivery)
                .await?;
        Ok(CreateAccountResponse {
            account,
            notification,
        })
    }

    /// Sends a notification (or a raw body) with any token and header variant; one attempt unless
    /// `retry`. Returns the delivery report (status and latency).
    pub async fn send_notification(
        &self,
        req: NotificationRequest,
    ) -> Result<DeliveryReport, DriverError> {
        let bank_id = self.default_bank(req.bank_id)?;
        let note = match req.notification {
            NotificationSpec::AuthorisationCreated { authorisation_id } => {
                Notification::AuthorisationCreated {
                    authorisation_id: authorisation_id
                        .unwrap_or_else(|| self.core.state.lock().rng.uuid()),
                    bank_id,
                }
            }
            NotificationSpec::BankAccountCreated {
                bank_account_id,
                external_id,
                requested_start_date,
            } => Notification::BankAccountCreated {
                bank_account_id,
                external_id,
                requested_start_date,
                bank_id,
            },
            NotificationSpec::BankAccountDeleted {
                bank_account_id,
                external_id,
            } => Notification::BankAccountDeleted {
                bank_account_id,
                external_id,
                bank_id,
            },
            NotificationSpec::Raw { body } => Notification::Raw { body },
        };
        let url = product::bank_callbacks(&self.core, bank_id)?.notification;
        let signing = Signing {
            token: req.token,
            header: req.header,
        };
        // Sent exactly as asked: no field left out, the date as given.
        Ok(notify::deliver(
            &self.core,
            url,
            note,
            signing,
            req.retry,
            false,
            &req.delivery,
        )
        .await)
    }

    /// Probes `/auth` with a hostile or unusual request; checks no PATCH, no redirect off the
    /// allow-list and the documented status code.
    pub async fn probe_auth(
        &self,
        variant: ProbeVariant,
        bank_id: Option<Uuid>,
    ) -> Result<ProbeOutcome, DriverError> {
        let bank_id = self.default_bank(bank_id)?;
        let org = self.core.cfg.default_organisation_id.clone();
        let co = self.core.cfg.default_company_id.clone();
        let callbacks = product::bank_callbacks(&self.core, bank_id)?;
        let positive = matches!(
            variant,
            ProbeVariant::ReservedCharactersState | ProbeVariant::RedirectUriWithQuery
        );
        if positive {
            let opts = OnboardOptions {
                bank_id: Some(bank_id),
                create: AccountPick::None,
                state: (variant == ProbeVariant::ReservedCharactersState)
                    .then(|| "a b&c=d/e?f#g%h+i;j,k:é\"<'>".to_string()),
                redirect_query: (variant == ProbeVariant::RedirectUriWithQuery)
                    .then(|| "src=probe&x=1".to_string()),
                ..OnboardOptions::default()
            };
            let id = product::new_authorisation(
                &self.core,
                AuthorisationKind::Onboarding,
                bank_id,
                None,
                &org,
                &co,
            )?;
            let result = self.run_onboarding(id, &opts).await;
            let (ok, problems, location) = match &result {
                Ok(o) => (true, Vec::new(), Some(o.final_redirect.clone())),
                Err(e) => (false, vec![e.to_string()], None),
            };
            return Ok(ProbeOutcome {
                variant,
                authorisation_id: id,
                status: if ok { 303 } else { 0 },
                location,
                patch_requests: self.patch_requests(id),
                ok,
                problems,
                excerpt: String::new(),
            });
        }

        let mut id = product::new_authorisation(
            &self.core,
            AuthorisationKind::Onboarding,
            bank_id,
            None,
            &org,
            &co,
        )?;
        let mut state = self.core.state.lock().rng.uuid().to_string();
        let mut redirect_uri = format!("{}/ui/v1/indirectredirect/{id}", self.core.base_url);
        let mut bank_param = bank_id.to_string();
        let mut baseline_patches = 0;
        match variant {
            ProbeVariant::UnknownAuthorisationId => {
                // Never announced: a fresh id the connector cannot know.
                id = self.core.state.lock().rng.uuid();
                redirect_uri = format!("{}/ui/v1/indirectredirect/{id}", self.core.base_url);
            }
            ProbeVariant::ReusedAuthorisationId => {
                let opts = OnboardOptions {
                    bank_id: Some(bank_id),
                    create: AccountPick::None,
                    ..OnboardOptions::default()
                };
                self.run_onboarding(id, &opts).await?;
                baseline_patches = self.patch_requests(id);
                state = self.core.state.lock().rng.uuid().to_string();
            }
            ProbeVariant::ExpiredAuthorisationId => {
                let now = self.core.now();
                if let Some(a) = self.core.state.lock().authorisations.get_mut(&id) {
                    a.expires_at = now - chrono::Duration::seconds(1);
                }
                self.announce(bank_id, id, &DeliveryOptions::default())
                    .await?;
            }
            ProbeVariant::BankMismatch => {
                self.announce(bank_id, id, &DeliveryOptions::default())
                    .await?;
                bank_param = self.core.state.lock().rng.uuid().to_string();
            }
            ProbeVariant::ForeignRedirectUri => {
                self.announce(bank_id, id, &DeliveryOptions::default())
                    .await?;
                redirect_uri = "https://attacker.invalid/callback".to_string();
            }
            ProbeVariant::MissingState => {
                self.announce(bank_id, id, &DeliveryOptions::default())
                    .await?;
                state.clear();
            }
            ProbeVariant::ReservedCharactersState | ProbeVariant::RedirectUriWithQuery => {}
        }
        let mut params: Vec<(&str, String)> = vec![
            ("bank", bank_param),
            ("authorisation_id", id.to_string()),
            ("redirect_uri", redirect_uri.clone()),
        ];
        if !state.is_empty() {
            params.push(("state", state.clone()));
        }
        let pairs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = append_query(&callbacks.auth, &pairs);
        let mut browser = Browser::new(&self.core, &callbacks.auth);
        let mut problems = Vec::new();
        let (status, location, excerpt) = if variant == ProbeVariant::ExpiredAuthorisationId {
            // Play the whole journey: the connector may only notice at PATCH time (409).
            let script = LoginScript {
                username: "demo".into(),
                password: "demo".into(),
                consent: AccountPick::All,
                cancel: false,
            };
            match browser.run(url, &script).await {
                Ok(f) => (303, Some(f.location), String::new()),
                Err(DriverError::PageStopped {
                    status, excerpt, ..
                }) => (status, None, excerpt),
                Err(DriverError::RedirectOffAllowList { location }) => {
                    problems.push(format!("redirect off the allow-list: {location}"));
                    (0, Some(location), String::new())
                }
                Err(e) => return Err(e),
            }
        } else {
            let nav = Nav {
                method: reqwest::Method::GET,
                url,
                form: None,
            };
            let (status, headers, body, u) = browser.send(&nav).await?;
            let is_html = headers
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.contains("text/html"));
            if is_html && let Err(e) = browser.check_html_headers(&u, &headers) {
                problems.push(e.to_string());
            }
            let location = headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Some(l) = &location
                && let Ok(next) = u.join(l)
                && !(is_loopback(&next) && matches!(next.scheme(), "http" | "https"))
            {
                problems.push(format!("redirect off the allow-list: {next}"));
            }
            (status, location, html::text_excerpt(&body, 300))
        };
        let patch_requests = self.patch_requests(id).saturating_sub(baseline_patches);
        let completed_now = self
            .authorisation(id)
            .and_then(|a| a.patch)
            .is_some_and(|p| p.status == "success");
        if variant != ProbeVariant::ReusedAuthorisationId && completed_now {
            problems.push("the authorisation was PATCHed".into());
        }
        if patch_requests > 0 && variant != ProbeVariant::ExpiredAuthorisationId {
            problems.push(format!("{patch_requests} PATCH request(s) sent"));
        }
        if let Some(expected) = variant.expected_status()
            && !expected.contains(&status)
        {
            problems.push(format!("status {status}, documented {expected:?}"));
        }
        if variant == ProbeVariant::ExpiredAuthorisationId && location.is_some() {
            problems.push("redirected although the authorisation had expired".into());
        }
        Ok(ProbeOutcome {
            variant,
            authorisation_id: id,
            status,
            location,
            patch_requests,
            ok: problems.is_empty(),
            problems,
            excerpt,
        })
    }

    /// When did the sandbox last see this authorisation (for tests that need timing).
    pub fn authorisation_view(&self, id: Uuid) -> Option<AuthorisationView> {
        self.authorisation(id)
    }

    pub fn now(&self) -> String {
        fmt_time(self.core.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_redirect_checks() {
        let r = "http://127.0.0.1:1/ui/v1/indirectredirect/x";
        assert!(check_final(r, "s 1", &format!("{r}?state=s%201")).is_ok());
        assert!(matches!(
            check_final(r, "s", &format!("{r}&state=s")),
            Err(DriverError::RedirectMismatch { .. })
        ));
        assert!(matches!(
            check_final(r, "s", &format!("{r}?state=t")),
            Err(DriverError::StateChanged { .. })
        ));
        let rq = format!("{r}?src=probe");
        assert!(check_final(&rq, "s", &format!("{rq}&state=s")).is_ok());
        assert!(matches!(
            check_final(&rq, "s", &format!("{r}?state=s")),
            Err(DriverError::RedirectMismatch { .. })
        ));
    }

    #[test]
    fn picks() {
        assert!(AccountPick::All.keeps(3, "x"));
        assert!(AccountPick::First.keeps(0, "x") && !AccountPick::First.keeps(1, "x"));
        assert!(AccountPick::Ids(vec!["a".into()]).keeps(5, "a"));
        assert!(!AccountPick::None.keeps(0, "a"));
    }
}
