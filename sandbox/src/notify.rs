//! Outbound calls to the connector: notifications with retries (sandbox spec §7) and
//! `/availableaccounts`, both signed with a Sage ID notification token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header;
use chrono::NaiveDate;
use serde_json::json;
use uuid::Uuid;

use crate::model::{DeliveryOptions, DeliveryReport, HeaderVariant, NotificationAttempt};
use crate::sageid::{NotificationTokenSpec, TokenVariant, mint_notification_token};
use crate::state::{Core, push_capped};
use crate::util::{Rng, fmt_time, parse_time_or_date, pct_encode};

/// The notifications of spec §5, or a raw body for negative tests.
#[derive(Debug, Clone)]
pub enum Notification {
    AuthorisationCreated {
        authorisation_id: Uuid,
        bank_id: Uuid,
    },
    BankAccountCreated {
        bank_account_id: Uuid,
        external_id: String,
        requested_start_date: String,
        bank_id: Uuid,
    },
    BankAccountDeleted {
        bank_account_id: Uuid,
        external_id: String,
        bank_id: Uuid,
    },
    Raw {
        body: String,
    },
}

impl Notification {
    pub fn kind(&self) -> &'static str {
        match self {
            Notification::AuthorisationCreated { .. } => "resourceCreated/authorisation",
            Notification::BankAccountCreated { .. } => "resourceCreated/bankAccount",
            Notification::BankAccountDeleted { .. } => "resourceDeleted/bankAccount",
            Notification::Raw { .. } => "raw",
        }
    }

    /// The bank the notification is about (none for a raw body).
    pub fn bank_id(&self) -> Option<Uuid> {
        match self {
            Notification::AuthorisationCreated { bank_id, .. }
            | Notification::BankAccountCreated { bank_id, .. }
            | Notification::BankAccountDeleted { bank_id, .. } => Some(*bank_id),
            Notification::Raw { .. } => None,
        }
    }

    pub fn resource_id(&self) -> Option<String> {
        match self {
            Notification::AuthorisationCreated {
                authorisation_id, ..
            } => Some(authorisation_id.to_string()),
            Notification::BankAccountCreated {
                bank_account_id, ..
            }
            | Notification::BankAccountDeleted {
                bank_account_id, ..
            } => Some(bank_account_id.to_string()),
            Notification::Raw { .. } => None,
        }
    }

    pub fn body(&self) -> String {
        match self {
            Notification::AuthorisationCreated { authorisation_id, bank_id } => json!({
                "type": "resourceCreated",
                "resource": { "id": authorisation_id, "type": "authorisation", "url": "NA" },
                "additionalData": { "bankId": bank_id },
            })
            .to_string(),
            Notification::BankAccountCreated { bank_account_id, external_id, requested_start_date, bank_id } => json!({
                "type": "resourceCreated",
                "resource": { "id": bank_account_id, "type": "bankAccount", "url": "NA" },
                "additionalData": {
                    "externalId": external_id, "requestedStartDate": requested_start_date, "bankId": bank_id,
                },
            })
            .to_string(),
            Notification::BankAccountDeleted { bank_account_id, external_id, bank_id } => json!({
                "type": "resourceDeleted",
                "resource": { "id": bank_account_id, "type": "bankAccount", "url": "NA" },
                "additionalData": { "externalId": external_id, "bankId": bank_id },
            })
            .to_string(),
            Notification::Raw { body } => body.clone(),
        }
    }
}

/// The `requestedStartDate` of the chosen day in the `i`-th of the formats Banking Service uses:
/// a date-time at the start of the day (`2025-01-01T00:00:00.000Z`, as in its examples and
/// `accountqueries` answers) and a plain date (`2025-01-01`).
pub fn start_date_in_format(day: NaiveDate, i: u64) -> String {
    let d = day.format("%Y-%m-%d");
    match i % START_DATE_FORMATS {
        0 => format!("{d}T00:00:00.000Z"),
        _ => d.to_string(),
    }
}

/// How many `requestedStartDate` formats [`start_date_in_format`] knows.
pub const START_DATE_FORMATS: u64 = 2;

/// Keeps an optional field unless the draw says to leave it out (no draw when `rate` is 0).
fn keep(rng: &mut Rng, rate: f64, field: &str, omitted: &mut Vec<String>) -> bool {
    if rate > 0.0 && rng.unit() < rate {
        omitted.push(field.to_string());
        false
    } else {
        true
    }
}

/// The body as Banking Service sends it in a flow, and the fields it left out: each optional
/// `additionalData` field is left out at `notification_omit_optional_rate`, and
/// `requestedStartDate` is the start of its UTC day in the next of Sage's formats, in turn. The
/// `externalId` of `resourceCreated/bankAccount` is always sent: Sage's own examples always carry
/// it, and without it the account could not be identified at all.
pub fn sage_body(core: &Core, n: &Notification) -> (String, Vec<String>) {
    let rate = core.cfg.notification_omit_optional_rate;
    let mut omitted = Vec::new();
    let mut guard = core.state.lock();
    let st = &mut *guard;
    let mut data = serde_json::Map::new();
    let (kind, resource_type, id) = match n {
        Notification::AuthorisationCreated {
            authorisation_id,
            bank_id,
        } => {
            if keep(&mut st.rng, rate, "bankId", &mut omitted) {
                data.insert("bankId".into(), json!(bank_id));
            }
            ("resourceCreated", "authorisation", *authorisation_id)
        }
        Notification::BankAccountCreated {
            bank_account_id,
            external_id,
            requested_start_date,
            bank_id,
        } => {
            data.insert("externalId".into(), json!(external_id));
            if keep(&mut st.rng, rate, "requestedStartDate", &mut omitted) {
                let text = match parse_time_or_date(requested_start_date) {
                    Some(t) => {
                        st.start_dates_sent += 1;
                        start_date_in_format(t.date_naive(), st.start_dates_sent - 1)
                    }
                    None => requested_start_date.clone(),
                };
                data.insert("requestedStartDate".into(), json!(text));
            }
            if keep(&mut st.rng, rate, "bankId", &mut omitted) {
                data.insert("bankId".into(), json!(bank_id));
            }
            ("resourceCreated", "bankAccount", *bank_account_id)
        }
        Notification::BankAccountDeleted {
            bank_account_id,
            external_id,
            bank_id,
        } => {
            if keep(&mut st.rng, rate, "externalId", &mut omitted) {
                data.insert("externalId".into(), json!(external_id));
            }
            if keep(&mut st.rng, rate, "bankId", &mut omitted) {
                data.insert("bankId".into(), json!(bank_id));
            }
            ("resourceDeleted", "bankAccount", *bank_account_id)
        }
        Notification::Raw { body } => return (body.clone(), omitted),
    };
    let body = json!({
        "type": kind,
        "resource": { "id": id, "type": resource_type, "url": "NA" },
        "additionalData": data,
    });
    (body.to_string(), omitted)
}

/// How one call is signed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Signing {
    pub token: TokenVariant,
    pub header: HeaderVariant,
}

/// The audience and custom header of notifications about `bank`: its provider's own when that
/// provider was registered with them, else the sandbox's.
fn signer(core: &Core, bank: Option<Uuid>) -> (String, Option<crate::config::CustomHeader>) {
    let provider = bank.and_then(|b| core.state.lock().banks.get(&b).map(|b| b.provider_id));
    let client = provider.and_then(|p| core.cfg.clients.iter().find(|c| c.provider_id == p));
    (
        client
            .and_then(|c| c.notification_audience.clone())
            .unwrap_or_else(|| core.cfg.notification_audience.clone()),
        client
            .and_then(|c| c.custom_header.clone())
            .or_else(|| core.cfg.custom_header.clone()),
    )
}

fn request(
    core: &Core,
    builder: reqwest::RequestBuilder,
    signing: Signing,
    bank: Option<Uuid>,
) -> Result<reqwest::RequestBuilder, String> {
    let foreign = core.foreign_key().map_err(|e| e.to_string())?;
    let (audience, custom_header) = signer(core, bank);
    let spec = NotificationTokenSpec {
        issuer: &core.issuer,
        audience: &audience,
        azp: &core.cfg.notification_azp,
        scope: &core.cfg.notification_scope,
        now: core.now().timestamp(),
        jti: core.state.lock().rng.uuid().to_string(),
    };
    let token = {
        let keys = core.keys.read();
        mint_notification_token(&keys, &foreign, &spec, signing.token).map_err(|e| e.to_string())?
    };
    let mut b = builder;
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(h) = &custom_header {
        match signing.header {
            HeaderVariant::Configured => b = b.header(h.name.as_str(), h.value.as_str()),
            HeaderVariant::WrongValue => {
                b = b.header(h.name.as_str(), format!("{}-wrong", h.value))
            }
            HeaderVariant::Missing => {}
        }
    }
    Ok(b)
}

#[allow(clippy::too_many_arguments)]
fn log_attempt(
    core: &Core,
    delivery_id: Uuid,
    kind: &str,
    resource_id: Option<String>,
    url: &str,
    attempt: u32,
    status: Option<u16>,
    error: Option<String>,
    latency: Duration,
    signing: Signing,
    omitted: &[String],
) {
    let now = core.now();
    let mut st = core.state.lock();
    st.metrics.notification_attempts += 1;
    let seq = st.next_seq();
    push_capped(
        &mut st.notifications,
        core.cfg.log_capacity,
        NotificationAttempt {
            seq,
            delivery_id,
            at: fmt_time(now),
            kind: kind.to_string(),
            resource_id,
            url: url.to_string(),
            attempt,
            status,
            error,
            latency_ms: latency.as_secs_f64() * 1000.0,
            token_variant: signing.token,
            header_variant: signing.header,
            omitted: omitted.to_vec(),
        },
    );
}

/// Delivers `body` (the wire form of `n`) with retries (`notification.retries`, back-off ±
/// jitter) unless `retry` is false; every attempt sends the same body.
pub async fn deliver_once(
    core: &Arc<Core>,
    url: &str,
    n: &Notification,
    (body, omitted): (&str, &[String]),
    signing: Signing,
    retry: bool,
) -> DeliveryReport {
    let delivery_id = core.state.lock().rng.uuid();
    let max_attempts = if retry {
        1 + core.cfg.notification_retries
    } else {
        1
    };
    let mut report = DeliveryReport {
        delivery_id,
        kind: n.kind().to_string(),
        url: url.to_string(),
        delivered: false,
        final_status: None,
        attempts: 0,
        latency_ms: 0.0,
        pending: false,
        body: None,
    };
    for attempt in 1..=max_attempts {
        if attempt > 1 {
            let backoffs = &core.cfg.notification_backoff_ms;
            let idx = (attempt as usize - 2).min(backoffs.len().saturating_sub(1));
            let base = backoffs.get(idx).copied().unwrap_or(1000);
            let wait = core
                .state
                .lock()
                .rng
                .jitter(base, core.cfg.notification_backoff_jitter_pct);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let started = Instant::now();
        let builder = core
            .http
            .post(url)
            .timeout(Duration::from_millis(core.cfg.notification_timeout_ms))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let (status, error, text) = match request(core, builder, signing, n.bank_id()) {
            Err(e) => (None, Some(e), None),
            Ok(b) => match b.send().await {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    let t = resp.text().await.ok();
                    (Some(s), None, t)
                }
                Err(e) => (
                    None,
                    Some(if e.is_timeout() {
                        "timeout".to_string()
                    } else {
                        e.to_string()
                    }),
                    None,
                ),
            },
        };
        let latency = started.elapsed();
        log_attempt(
            core,
            delivery_id,
            n.kind(),
            n.resource_id(),
            url,
            attempt,
            status,
            error,
            latency,
            signing,
            omitted,
        );
        report.attempts = attempt;
        report.final_status = status;
        report.latency_ms = latency.as_secs_f64() * 1000.0;
        report.body = text;
        if status.is_some_and(|s| (200..300).contains(&s)) {
            report.delivered = true;
            break;
        }
    }
    if report.delivered
        && let Notification::BankAccountDeleted {
            bank_account_id, ..
        } = n
    {
        let now = core.now();
        if let Some(a) = core.state.lock().accounts.get_mut(bank_account_id) {
            a.deleted_acknowledged_at = Some(now);
        }
    }
    report
}

/// Delivers per the options and the notification faults; waits unless `skip_wait`. `as_sage`
/// shapes the body as Banking Service does in a flow ([`sage_body`]); otherwise it is sent
/// exactly as given (negative and replay tests). A duplicate delivery repeats the same body.
pub async fn deliver(
    core: &Arc<Core>,
    url: String,
    n: Notification,
    signing: Signing,
    retry: bool,
    as_sage: bool,
    opts: &DeliveryOptions,
) -> DeliveryReport {
    let (body, omitted) = if as_sage {
        sage_body(core, &n)
    } else {
        (n.body(), Vec::new())
    };
    let faults = core.state.lock().faults.set.notifications.clone();
    let twice = opts.twice || faults.duplicate;
    let delay = opts.delay_ms + faults.delay_ms;
    let c = core.clone();
    let run = async move {
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let wire = (body.as_str(), omitted.as_slice());
        let first = deliver_once(&c, &url, &n, wire, signing, retry).await;
        if twice {
            deliver_once(&c, &url, &n, wire, signing, retry).await;
        }
        first
    };
    if opts.skip_wait {
        let kind = String::new();
        core.spawn(async move {
            let _ = run.await;
        });
        return DeliveryReport {
            delivery_id: Uuid::nil(),
            kind,
            url: String::new(),
            delivered: false,
            final_status: None,
            attempts: 0,
            latency_ms: 0.0,
            pending: true,
            body: None,
        };
    }
    run.await
}

/// The answer of the connector's `/availableaccounts`.
pub struct AvailableAnswer {
    pub status: Option<u16>,
    pub body: String,
    pub error: Option<String>,
}

pub async fn call_available_accounts(
    core: &Arc<Core>,
    url: &str,
    external_id: &str,
    signing: Signing,
) -> AvailableAnswer {
    let full = if url.contains('?') {
        format!("{url}&externalId={}", pct_encode(external_id))
    } else {
        format!("{url}?externalId={}", pct_encode(external_id))
    };
    let started = Instant::now();
    let builder = core
        .http
        .get(&full)
        .timeout(Duration::from_millis(core.cfg.availableaccounts_timeout_ms));
    let (status, body, error) = match request(core, builder, signing, None) {
        Err(e) => (None, String::new(), Some(e)),
        Ok(b) => match b.send().await {
            Ok(resp) => {
                let s = resp.status().as_u16();
                (Some(s), resp.text().await.unwrap_or_default(), None)
            }
            Err(e) => (
                None,
                String::new(),
                Some(if e.is_timeout() {
                    "timeout".into()
                } else {
                    e.to_string()
                }),
            ),
        },
    };
    let latency = started.elapsed();
    let id = core.state.lock().rng.uuid();
    log_attempt(
        core,
        id,
        "availableAccounts",
        Some(external_id.to_string()),
        &full,
        1,
        status,
        error.clone(),
        latency,
        signing,
        &[],
    );
    AvailableAnswer {
        status,
        body,
        error,
    }
}
