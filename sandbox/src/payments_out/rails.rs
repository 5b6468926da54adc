//! The demo bank's payment rails (docs/payments-out-sandbox.md §7): idempotent
//! `PUT /bank/v1/payments/{paymentId}`, reads, cancellation, outcome events pushed to the
//! connector, consent review, and an inspectable ledger.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::notify::{Auth, Delivery, Retries, deliver_once, spawn_delivery};
use super::wire::{
    BankAccepted, BankConsentEvent, BankPaymentEvent, BankPaymentList, BankPaymentRequest,
    BankPaymentView, BankStatus,
};
use super::{PoViolationKind, RailsConfig, Where, violation};
use crate::envelope::json_response;
use crate::provider::ConnControl;
use crate::state::Core;
use crate::util::{fmt_time, parse_contract_time};

pub struct BankPayment {
    pub id: String,
    canonical: String,
    pub debtor_account_id: String,
    pub amount: Decimal,
    pub currency: String,
    pub reference: String,
    pub fingerprint: String,
    pub status: BankStatus,
    pub bank_reference: String,
    pub accepted_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub reason_code: Option<String>,
    pub reason_message: Option<String>,
    pub updated_at: DateTime<Utc>,
    pub event_seq: u64,
    pub executions: u32,
}

impl BankPayment {
    fn view(&self) -> BankPaymentView {
        BankPaymentView {
            payment_id: self.id.clone(),
            status: self.status,
            bank_reference: self.bank_reference.clone(),
            completed_at: self.completed_at.map(fmt_time),
            reason_code: self.reason_code.clone(),
            reason_message: self.reason_message.clone(),
            updated_at: fmt_time(self.updated_at),
            event_seq: self.event_seq,
        }
    }

    fn accepted(&self) -> BankAccepted {
        BankAccepted {
            payment_id: self.id.clone(),
            status: BankStatus::Accepted,
            bank_reference: self.bank_reference.clone(),
            accepted_at: fmt_time(self.accepted_at),
        }
    }
}

/// One row of the ledger: what the bank executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub payment_id: String,
    pub status: BankStatus,
    pub debtor_account_id: String,
    pub amount: String,
    pub currency: String,
    pub reference: String,
    /// Times the money left the account for this payment (1 when all is well).
    pub executions: u32,
    /// Times the same payment (batch, reference, amount, creditor) was executed under any id.
    pub executions_of_same_payment: u32,
}

pub struct Rails {
    pub cfg: RailsConfig,
    pub payments: HashMap<String, BankPayment>,
    pub order: Vec<String>,
    pub event_seq: u64,
    pub events: Vec<BankPaymentEvent>,
    pub consent_events: Vec<BankConsentEvent>,
    /// fingerprint → executions under any payment id
    executed: HashMap<String, u32>,
    /// paymentId → when its outcome (terminal) event was first emitted
    outcome_at: HashMap<String, DateTime<Utc>>,
    /// paymentId → when the connector first acknowledged its outcome event
    outcome_pushed_at: HashMap<String, DateTime<Utc>>,
    /// Bounds the pushes in flight to `cfg.events_concurrency`, as a bank's webhook sender does.
    gate: Arc<Semaphore>,
}

impl Rails {
    pub fn new(cfg: RailsConfig) -> Self {
        Rails {
            payments: HashMap::new(),
            order: Vec::new(),
            event_seq: 0,
            events: Vec::new(),
            consent_events: Vec::new(),
            executed: HashMap::new(),
            outcome_at: HashMap::new(),
            outcome_pushed_at: HashMap::new(),
            gate: Arc::new(Semaphore::new(cfg.events_concurrency.max(1))),
            cfg,
        }
    }

    /// Replaces the knobs; a new push concurrency applies to pushes started after it.
    pub fn set_config(&mut self, cfg: RailsConfig) {
        if cfg.events_concurrency != self.cfg.events_concurrency {
            self.gate = Arc::new(Semaphore::new(cfg.events_concurrency.max(1)));
        }
        self.cfg = cfg;
    }

    /// How the bank's pushes are retried and bounded.
    pub fn retries(&self) -> Retries {
        Retries {
            backoff_ms: self.cfg.events_backoff_ms.clone(),
            gate: Some(self.gate.clone()),
        }
    }

    fn outcome_pushed(&mut self, payment_id: &str, at: DateTime<Utc>) {
        self.outcome_pushed_at
            .entry(payment_id.to_string())
            .or_insert(at);
    }

    /// When the connector acknowledged the payment's outcome event (first time).
    pub fn outcome_pushed_at(&self, payment_id: &str) -> Option<DateTime<Utc>> {
        self.outcome_pushed_at.get(payment_id).copied()
    }

    pub fn outcome_event_at(&self, payment_id: &str) -> Option<DateTime<Utc>> {
        self.outcome_at.get(payment_id).copied()
    }

    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.order
            .iter()
            .filter_map(|id| self.payments.get(id))
            .map(|p| LedgerEntry {
                payment_id: p.id.clone(),
                status: p.status,
                debtor_account_id: p.debtor_account_id.clone(),
                amount: p.amount.to_string(),
                currency: p.currency.clone(),
                reference: p.reference.clone(),
                executions: p.executions,
                executions_of_same_payment: self.executed.get(&p.fingerprint).copied().unwrap_or(0),
            })
            .collect()
    }
}

pub fn router(core: &Arc<Core>) -> Router<Arc<Core>> {
    Router::new()
        .route("/bank/v1/payments", get(list_payments))
        .route(
            "/bank/v1/payments/{paymentId}",
            put(put_payment).get(get_payment).delete(delete_payment),
        )
        .route_layer(middleware::from_fn_with_state(
            core.clone(),
            injected_errors,
        ))
        .route("/_sandbox/payments-out/bank/ledger", get(ledger))
        .route("/_sandbox/payments-out/bank/events", get(events))
        .route(
            "/_sandbox/payments-out/bank/config",
            get(get_config).put(put_config),
        )
        .route(
            "/_sandbox/payments-out/bank/accounts/{accountId}",
            put(put_account),
        )
        .route(
            "/_sandbox/payments-out/bank/consents/{consentId}/{decision}",
            post(decide_consent),
        )
}

/// The `bank.errors` fault: 429 + `Retry-After` or 503 before the handler, nothing changed.
async fn injected_errors(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let hit = {
        let mut guard = core.po.lock();
        let st = &mut *guard;
        match st.faults.bank.errors.as_mut() {
            Some(f) if f.remaining != Some(0) => {
                let roll = f.rate <= 0.0 || st.rng.unit() < f.rate;
                if roll && let Some(r) = f.remaining.as_mut() {
                    *r -= 1;
                }
                roll.then_some((f.status, f.retry_after_s.max(1)))
            }
            _ => None,
        }
    };
    match hit {
        Some((429, retry)) => {
            let mut r = err(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry));
            r
        }
        Some(_) => err(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        None => next.run(req).await,
    }
}

fn err(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn invalid(reasons: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "error": "invalid_payment", "reasons": reasons })),
    )
        .into_response()
}

fn reason(code: &str, field: &str, message: &str) -> Value {
    json!({ "code": code, "field": field, "message": message })
}

fn client_ok(core: &Core, headers: &HeaderMap) -> bool {
    core.bank.lock().client_authorised(headers)
}

/// Decimal string, > 0, at most 2 fraction digits (USD and the demo currencies).
fn parse_amount(v: Option<&Value>) -> Option<Decimal> {
    let s = v?.as_str()?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let ok = !int.is_empty()
        && int.len() <= 13
        && int.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'))
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit())
        && !(s.contains('.') && frac.is_empty());
    let d: Decimal = s.parse().ok().filter(|_| ok)?;
    (d > Decimal::ZERO).then_some(d)
}

async fn put_payment(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    conn: Option<Extension<ConnControl>>,
    body: Bytes,
) -> Response {
    if !client_ok(&core, &headers) {
        return err(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return err(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let canonical = value.to_string();
    let Ok(req) = serde_json::from_value::<BankPaymentRequest>(value.clone()) else {
        return err(StatusCode::BAD_REQUEST, "invalid_request");
    };
    // Replays first: same id + same body → 200, different body → 409.
    {
        let st = core.po.lock();
        if let Some(p) = st.rails.payments.get(&id) {
            return if p.canonical == canonical {
                json_response(StatusCode::OK, &p.accepted())
            } else {
                err(StatusCode::CONFLICT, "idempotency_conflict")
            };
        }
    }
    let now = core.now();
    let mut reasons = Vec::new();
    let account = req.debtor_account_id.clone().unwrap_or_default();
    let amount = parse_amount(req.amount.as_ref());
    if amount.is_none() {
        reasons.push(reason(
            "invalid_amount",
            "amount",
            "a decimal string above 0, at most 2 decimals",
        ));
    }
    let currency = req.currency.clone().unwrap_or_default();
    {
        let bank = core.bank.lock();
        match bank.account_money(&account) {
            None => reasons.push(reason(
                "unknown_account",
                "debtorAccountId",
                "no such account",
            )),
            Some((cur, _)) if cur != currency => reasons.push(reason(
                "currency_mismatch",
                "currency",
                &format!("the account is in {cur}"),
            )),
            Some(_) => {}
        }
        match req.consent_id.as_deref() {
            None => reasons.push(reason("missing_field", "consentId", "is required")),
            Some(c) => {
                if let Err(e) = bank.consent_covers(c, &account, now) {
                    reasons.push(reason(
                        e,
                        "consentId",
                        "the consent does not allow this account",
                    ));
                }
            }
        }
    }
    let creditor = req.creditor.clone().unwrap_or(Value::Null);
    if creditor
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        reasons.push(reason("missing_field", "creditor.name", "is required"));
    }
    if !creditor.get("bankAccount").is_some_and(Value::is_object) {
        reasons.push(reason(
            "missing_field",
            "creditor.bankAccount",
            "is required",
        ));
    }
    if !reasons.is_empty() {
        return invalid(reasons);
    }
    let amount = amount.unwrap_or_default();
    let fingerprint = format!(
        "{}|{}|{}|{}|{}",
        req.batch_ref.as_deref().unwrap_or(""),
        req.reference.as_deref().unwrap_or(""),
        amount.normalize(),
        currency,
        creditor
            .get("bankAccount")
            .map(Value::to_string)
            .unwrap_or_default()
    );
    let (accepted, hold) = {
        let mut guard = core.po.lock();
        let st = &mut *guard;
        // A race with a concurrent identical PUT: re-check under the lock.
        if let Some(p) = st.rails.payments.get(&id) {
            return if p.canonical == canonical {
                json_response(StatusCode::OK, &p.accepted())
            } else {
                err(StatusCode::CONFLICT, "idempotency_conflict")
            };
        }
        let known = Uuid::parse_str(&id)
            .ok()
            .is_some_and(|u| st.payment_index.contains_key(&u));
        if !known {
            violation(
                &core,
                st,
                PoViolationKind::UnknownPaymentId,
                format!("bank PUT for payment {id}, which POS never issued"),
                Where {
                    payment_id: Some(id.clone()),
                    ..Where::default()
                },
            );
        }
        let bank_reference = format!("EB-{}", st.rng.token(10).to_uppercase());
        let p = BankPayment {
            id: id.clone(),
            canonical,
            debtor_account_id: account,
            amount,
            currency,
            reference: req.reference.clone().unwrap_or_default(),
            fingerprint,
            status: BankStatus::Accepted,
            bank_reference,
            accepted_at: now,
            completed_at: None,
            reason_code: None,
            reason_message: None,
            updated_at: now,
            event_seq: 0,
            executions: 0,
        };
        let accepted = p.accepted();
        st.rails.payments.insert(id.clone(), p);
        st.rails.order.push(id.clone());
        let f = &st.faults.bank;
        let hold = f.timeout_after_accept_ms > 0
            && f.timeout_after_accept_rate > 0.0
            && st.rng.unit() < f.timeout_after_accept_rate;
        (
            accepted,
            hold.then_some(st.faults.bank.timeout_after_accept_ms),
        )
    };
    emit(&core, &id, BankStatus::Accepted, None);
    schedule(&core, id);
    if let Some(ms) = hold {
        // Committed; the answer never arrives in time.
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if let Some(Extension(c)) = conn {
            c.0.notify_one();
            return std::future::pending::<Response>().await;
        }
    }
    json_response(StatusCode::CREATED, &accepted)
}

/// Moves a payment and pushes the event (`reason` = code, message).
fn emit(core: &Arc<Core>, id: &str, status: BankStatus, reason: Option<(&str, &str)>) {
    let now = core.now();
    let (event, url, key, twice, delay) = {
        let mut guard = core.po.lock();
        let st = &mut *guard;
        st.rails.event_seq += 1;
        let seq = st.rails.event_seq;
        let Some(p) = st.rails.payments.get_mut(id) else {
            return;
        };
        p.status = status;
        p.updated_at = now;
        p.event_seq = seq;
        if status == BankStatus::Settled {
            p.completed_at = Some(now);
        }
        if let Some((c, m)) = reason {
            p.reason_code = Some(c.to_string());
            p.reason_message = Some(m.to_string());
        }
        let event = BankPaymentEvent {
            event_id: st.rng.uuid(),
            payment_id: p.id.clone(),
            status,
            event_seq: seq,
            occurred_at: fmt_time(now),
            bank_reference: p.bank_reference.clone(),
            completed_at: p.completed_at.map(fmt_time),
            reason_code: p.reason_code.clone(),
            reason_message: p.reason_message.clone(),
        };
        if status.is_outcome() {
            st.rails.outcome_at.entry(id.to_string()).or_insert(now);
        }
        st.rails.events.push(event.clone());
        let f = st.faults.bank.clone();
        let twice = f.duplicate_event_rate > 0.0 && st.rng.unit() < f.duplicate_event_rate;
        let delay = if f.reorder_event_window_ms > 0 {
            st.rng.below(f.reorder_event_window_ms)
        } else {
            0
        };
        (
            event,
            st.rails.cfg.events_url.clone(),
            st.rails.cfg.events_api_key.clone(),
            twice,
            delay,
        )
    };
    let Some(url) = url else { return };
    let body = serde_json::to_string(&event).unwrap_or_default();
    let c = core.clone();
    core.spawn(async move {
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let d = Delivery {
            url,
            kind: "bankPaymentEvent".into(),
            key: format!("bankevent#{}", event.event_id),
            body,
            auth: Auth::ApiKey(key),
            header_name: String::new(),
        };
        let retries = c.po.lock().rails.retries();
        for _ in 0..if twice { 2 } else { 1 } {
            if deliver_once(&c, &d, &retries).await.delivered && status.is_outcome() {
                c.po.lock().rails.outcome_pushed(&event.payment_id, c.now());
            }
        }
    });
}

fn status_of(core: &Core, id: &str) -> Option<BankStatus> {
    core.po.lock().rails.payments.get(id).map(|p| p.status)
}

/// accepted → submitted → settled | failed | rejected (→ returned), per the knobs.
fn schedule(core: &Arc<Core>, id: String) {
    let c = core.clone();
    core.spawn(async move {
        let cfg = c.po.lock().rails.cfg.clone();
        let half = Duration::from_millis(cfg.settlement_delay_ms / 2);
        tokio::time::sleep(half).await;
        if status_of(&c, &id) != Some(BankStatus::Accepted) {
            return;
        }
        emit(&c, &id, BankStatus::Submitted, None);
        tokio::time::sleep(half).await;
        let roll = c.po.lock().rng.unit();
        if roll < cfg.rejection_rate {
            emit(
                &c,
                &id,
                BankStatus::Rejected,
                Some(("AC01", "Incorrect account number")),
            );
            return;
        }
        if roll < cfg.rejection_rate + cfg.failure_rate {
            emit(
                &c,
                &id,
                BankStatus::Failed,
                Some(("AM04", "Insufficient funds")),
            );
            return;
        }
        let Some((account, amount, reference, fingerprint)) =
            c.po.lock().rails.payments.get(&id).map(|p| {
                (
                    p.debtor_account_id.clone(),
                    p.amount,
                    p.reference.clone(),
                    p.fingerprint.clone(),
                )
            })
        else {
            return;
        };
        let now = c.now();
        let booked = {
            let mut bank = c.bank.lock();
            match bank.account_money(&account) {
                Some((_, bal)) if bal >= amount => bank.book(
                    &account,
                    -amount,
                    "PAYMENT OUT",
                    &reference,
                    "SAGE PAYMENTS OUT",
                    now,
                ),
                _ => None,
            }
        };
        if booked.is_none() {
            emit(
                &c,
                &id,
                BankStatus::Failed,
                Some(("AM04", "Insufficient funds")),
            );
            return;
        }
        {
            let mut guard = c.po.lock();
            let st = &mut *guard;
            if let Some(p) = st.rails.payments.get_mut(&id) {
                p.executions += 1;
            }
            let n = st.rails.executed.entry(fingerprint).or_default();
            *n += 1;
            if *n > 1 {
                let n = *n;
                violation(
                    &c,
                    st,
                    PoViolationKind::PaymentExecutedTwice,
                    format!("the bank executed the same payment {n} times (latest id {id})"),
                    Where {
                        payment_id: Some(id.clone()),
                        ..Where::default()
                    },
                );
            }
        }
        emit(&c, &id, BankStatus::Settled, None);
        let ret = c.po.lock().rng.unit() < cfg.return_rate;
        if ret {
            tokio::time::sleep(Duration::from_millis(cfg.return_delay_ms)).await;
            let now = c.now();
            c.bank.lock().book(
                &account,
                amount,
                "PAYMENT RETURNED",
                &reference,
                "SAGE PAYMENTS OUT",
                now,
            );
            emit(
                &c,
                &id,
                BankStatus::Returned,
                Some(("AC04", "Closed account number")),
            );
        }
    });
}

async fn get_payment(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !client_ok(&core, &headers) {
        return err(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    match core.po.lock().rails.payments.get(&id) {
        Some(p) => json_response(StatusCode::OK, &p.view()),
        None => err(StatusCode::NOT_FOUND, "not_found"),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    updated_since: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

async fn list_payments(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if !client_ok(&core, &headers) {
        return err(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let since = match q.updated_since.as_deref() {
        None => None,
        Some(s) => match parse_contract_time(s) {
            Some(t) => Some(t),
            None => return err(StatusCode::BAD_REQUEST, "invalid_request"),
        },
    };
    let after: u64 = match q.cursor.as_deref() {
        None => 0,
        Some(c) => match c.parse() {
            Ok(n) => n,
            Err(_) => return err(StatusCode::BAD_REQUEST, "invalid_request"),
        },
    };
    let limit: usize = match q.limit.as_deref() {
        None => 100,
        Some(l) => match l.parse() {
            Ok(n) if (1..=500).contains(&n) => n,
            _ => return err(StatusCode::BAD_REQUEST, "invalid_request"),
        },
    };
    let st = core.po.lock();
    let mut all: Vec<&BankPayment> = st
        .rails
        .payments
        .values()
        .filter(|p| p.event_seq > after && since.is_none_or(|s| p.updated_at >= s))
        .collect();
    all.sort_by_key(|p| p.event_seq);
    let more = all.len() > limit;
    let page: Vec<BankPaymentView> = all.iter().take(limit).map(|p| p.view()).collect();
    let next_cursor = if more {
        page.last().map(|p| p.event_seq.to_string())
    } else {
        None
    };
    json_response(
        StatusCode::OK,
        &BankPaymentList {
            payments: page,
            next_cursor,
        },
    )
}

async fn delete_payment(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !client_ok(&core, &headers) {
        return err(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    match status_of(&core, &id) {
        None => err(StatusCode::NOT_FOUND, "not_found"),
        Some(BankStatus::Accepted) => {
            emit(
                &core,
                &id,
                BankStatus::Cancelled,
                Some(("CANC", "Cancelled on request")),
            );
            json_response(
                StatusCode::OK,
                &json!({ "paymentId": id, "status": "cancelled" }),
            )
        }
        Some(BankStatus::Cancelled) => json_response(
            StatusCode::OK,
            &json!({ "paymentId": id, "status": "cancelled" }),
        ),
        Some(_) => err(StatusCode::CONFLICT, "not_cancellable"),
    }
}

// ------------------------------------------------------------------ control

async fn ledger(State(core): State<Arc<Core>>) -> Response {
    let l = core.po.lock().rails.ledger();
    json_response(StatusCode::OK, &l)
}

async fn events(State(core): State<Arc<Core>>) -> Response {
    let st = core.po.lock();
    json_response(
        StatusCode::OK,
        &json!({ "payments": st.rails.events, "consents": st.rails.consent_events }),
    )
}

async fn get_config(State(core): State<Arc<Core>>) -> Response {
    let c = core.po.lock().rails.cfg.clone();
    json_response(StatusCode::OK, &c)
}

async fn put_config(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let c: RailsConfig = match crate::control::parse_body(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let rates = [c.failure_rate, c.rejection_rate, c.return_rate];
    if rates.iter().any(|r| !(0.0..=1.0).contains(r)) || c.failure_rate + c.rejection_rate > 1.0 {
        return err(StatusCode::BAD_REQUEST, "rates must be in [0, 1]");
    }
    core.bank.lock().review_consents = c.consent_review;
    core.po.lock().rails.set_config(c.clone());
    json_response(StatusCode::OK, &c)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountChange {
    currency: Option<String>,
    /// Credited (or debited, if negative) to reach a balance for tests.
    credit: Option<String>,
}

async fn put_account(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let c: AccountChange = match crate::control::parse_body(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let now = core.now();
    let mut bank = core.bank.lock();
    if bank.account_money(&id).is_none() {
        return err(StatusCode::NOT_FOUND, "not_found");
    }
    if let Some(cur) = &c.currency {
        bank.set_account_currency(&id, cur);
    }
    if let Some(amt) = c.credit.as_deref() {
        let Ok(d) = amt.parse::<Decimal>() else {
            return err(StatusCode::BAD_REQUEST, "credit must be a decimal string");
        };
        bank.book(&id, d, "SANDBOX CREDIT", "SANDBOX", "SANDBOX", now);
    }
    let (currency, balance) = bank.account_money(&id).unwrap_or_default();
    json_response(
        StatusCode::OK,
        &json!({ "accountId": id, "currency": currency, "balance": balance.to_string() }),
    )
}

/// Records a consent event (`active`, `rejected`, `revoked`, `expired`) and pushes it to the
/// connector's consent events URL, when one is set.
pub fn push_consent_event(core: &Arc<Core>, consent_id: String, status: &str) -> BankConsentEvent {
    let now = core.now();
    let (event, url, key, retries) = {
        let mut st = core.po.lock();
        let event = BankConsentEvent {
            event_id: st.rng.uuid(),
            consent_id,
            status: status.into(),
            occurred_at: fmt_time(now),
        };
        st.rails.consent_events.push(event.clone());
        (
            event,
            st.rails.cfg.consent_events_url.clone(),
            st.rails.cfg.events_api_key.clone(),
            st.rails.retries(),
        )
    };
    if let Some(url) = url {
        let body = serde_json::to_string(&event).unwrap_or_default();
        let d = Delivery {
            url,
            kind: "bankConsentEvent".into(),
            key: format!("consentevent#{}", event.event_id),
            body,
            auth: Auth::ApiKey(key),
            header_name: String::new(),
        };
        spawn_delivery(core, d, retries);
    }
    event
}

/// Approves or refuses a consent held for review and pushes the consent event.
async fn decide_consent(
    State(core): State<Arc<Core>>,
    Path((id, decision)): Path<(String, String)>,
) -> Response {
    let approve = match decision.as_str() {
        "approve" => true,
        "refuse" => false,
        _ => return err(StatusCode::NOT_FOUND, "not_found"),
    };
    if !core.bank.lock().decide_consent(&id, approve) {
        return err(StatusCode::CONFLICT, "not_pending_review");
    }
    let event = push_consent_event(&core, id, if approve { "active" } else { "rejected" });
    json_response(StatusCode::OK, &event)
}
