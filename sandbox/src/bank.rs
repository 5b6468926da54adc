//! The demo bank: implements `docs/bank-data-api.md` under `/bank` (OIDC authorization code with
//! PKCE, consents, transactions) plus its control endpoints under `/_sandbox/bank/`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::SandboxConfig;
use crate::provider::ct_eq;
use crate::state::Core;
use crate::util::{Rng, append_query, b64url, fmt_time, form_get, html_escape, parse_form};

/// A transaction as the Bank Data API returns it (amounts are strings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankTransaction {
    pub transaction_id: String,
    pub booked_at: String,
    pub amount: String,
    pub currency: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: String,
    pub description: String,
    pub reference: String,
    pub counterparty: String,
    pub balance_after: String,
    /// Card payments: where the card was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_fields: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
struct Txn {
    id: String,
    booked_at: DateTime<Utc>,
    amount: Decimal,
    kind: &'static str,
    pending: bool,
    description: String,
    reference: String,
    counterparty: String,
    balance_after: Decimal,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub customer_id: String,
    pub name: String,
    pub kind: String,
    pub identifier: String,
    pub branch: String,
    pub bank_code: String,
    pub currency: String,
    txns: Vec<Txn>,
    generated: u64,
}

#[derive(Debug, Clone)]
pub struct Customer {
    pub id: String,
    pub username: String,
    pub password: String,
    pub account_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsentState {
    Active,
    Expired,
    Revoked,
    /// Held for manual review (payments out); decided by the control API.
    PendingReview,
    Rejected,
}

#[derive(Debug, Clone)]
struct Consent {
    id: String,
    customer_id: String,
    state: ConsentState,
    expires_at: DateTime<Utc>,
    account_ids: Vec<String>,
}

#[derive(Debug, Clone)]
struct Code {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    consent_id: String,
    customer_id: String,
    expires_at: DateTime<Utc>,
    used: bool,
}

pub struct DemoBank {
    seed: u64,
    history_days: u32,
    consent_ttl_days: u32,
    client_id: String,
    client_secret: String,
    customers: Vec<Customer>,
    accounts: HashMap<String, Account>,
    consents: HashMap<String, Consent>,
    codes: HashMap<String, Code>,
    rng: Rng,
    /// New consents start `pending_review` until approved or refused (payments out).
    pub review_consents: bool,
}

const KINDS: [(&str, &str); 6] = [
    ("business", "Business Current"),
    ("savings", "Savings"),
    ("creditCard", "Credit Card"),
    ("personal", "Personal Current"),
    ("loan", "Loan"),
    ("corporate", "Corporate"),
];

fn money(d: Decimal) -> String {
    format!("{:.2}", d.round_dp(2))
}

impl DemoBank {
    pub fn new(cfg: &SandboxConfig, now: DateTime<Utc>) -> Self {
        let mut b = DemoBank {
            seed: cfg.seed,
            history_days: cfg.bank_history_days,
            consent_ttl_days: cfg.bank_consent_ttl_days,
            client_id: cfg.bank_client_id.clone(),
            client_secret: cfg.bank_client_secret.clone(),
            customers: Vec::new(),
            accounts: HashMap::new(),
            consents: HashMap::new(),
            codes: HashMap::new(),
            rng: Rng::derived(cfg.seed, "demo-bank"),
            review_consents: false,
        };
        if cfg.demo_customers {
            let _ = b.create_customer("demo", "demo", &["business", "savings", "creditCard"], now);
            let _ = b.create_customer("alice", "alice", &["business", "savings"], now);
        }
        b
    }

    /// Creates a customer with one account per kind; `Err` if the username is taken.
    pub fn create_customer(
        &mut self,
        username: &str,
        password: &str,
        kinds: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Customer, String> {
        if self.customers.iter().any(|c| c.username == username) {
            return Err(format!("username {username} already exists"));
        }
        let id = format!(
            "cus_{}",
            Rng::derived(self.seed, &format!("customer:{username}")).token(8)
        );
        self.customers.push(Customer {
            id: id.clone(),
            username: username.to_string(),
            password: password.to_string(),
            account_ids: Vec::new(),
        });
        for k in kinds {
            self.open_account(&id, k, None, now)?;
        }
        self.customer(&id)
            .cloned()
            .ok_or_else(|| "customer vanished".to_string())
    }

    pub fn customer(&self, id_or_username: &str) -> Option<&Customer> {
        self.customers
            .iter()
            .find(|c| c.id == id_or_username || c.username == id_or_username)
    }

    /// Opens an account (with history); it joins every consent of the customer.
    pub fn open_account(
        &mut self,
        customer: &str,
        kind: &str,
        name: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Account, String> {
        let Some(cust) = self
            .customers
            .iter_mut()
            .find(|c| c.id == customer || c.username == customer)
        else {
            return Err(format!("unknown customer {customer}"));
        };
        let Some((kind, label)) = KINDS.iter().find(|(k, _)| *k == kind).copied() else {
            return Err(format!("unknown account type {kind}"));
        };
        let index = cust.account_ids.len();
        let mut r = Rng::derived(self.seed, &format!("account:{}:{index}", cust.username));
        let id = format!("acc_{}", r.token(8));
        let number = format!("4{:04}", r.below(10_000));
        let acct = Account {
            id: id.clone(),
            customer_id: cust.id.clone(),
            name: name.map_or_else(|| format!("{label} ****{}", &number[1..]), str::to_string),
            kind: kind.to_string(),
            identifier: number,
            branch: "Leeds".to_string(),
            bank_code: format!("{}:demobank", cust.id),
            currency: "GBP".to_string(),
            txns: history(self.seed, &id, kind, self.history_days, now),
            generated: 0,
        };
        cust.account_ids.push(id.clone());
        let cust_id = cust.id.clone();
        for c in self
            .consents
            .values_mut()
            .filter(|c| c.customer_id == cust_id)
        {
            c.account_ids.push(id.clone());
        }
        self.accounts.insert(id, acct.clone());
        Ok(acct)
    }

    /// M new booked transactions, later than every existing one, returned in API shape.
    pub fn generate(
        &mut self,
        account_id: &str,
        count: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<BankTransaction>, String> {
        let seed = self.seed;
        let Some(a) = self.accounts.get_mut(account_id) else {
            return Err(format!("unknown account {account_id}"));
        };
        let last = a.txns.last().map(|t| t.booked_at);
        let earliest = now - Duration::milliseconds(10 * count as i64);
        let base = match last {
            Some(l) if l + Duration::milliseconds(1) > earliest => l + Duration::milliseconds(1),
            _ => earliest,
        };
        let mut balance = a
            .txns
            .iter()
            .rev()
            .find(|t| !t.pending)
            .map(|t| t.balance_after)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            a.generated += 1;
            let mut r = Rng::derived(seed, &format!("{}:gen:{}", a.id, a.generated));
            let at = base + Duration::milliseconds(10 * i as i64);
            let (kind, amount, desc, party) = pick_txn(&mut r, &a.kind);
            balance += amount;
            let t = Txn {
                id: format!("{}-{}-g{:06}", a.id, at.format("%Y%m%d"), a.generated),
                booked_at: at,
                amount,
                kind,
                pending: false,
                description: desc,
                reference: format!("REF{:06}", r.below(1_000_000)),
                counterparty: party,
                balance_after: balance,
            };
            out.push(api_txn(&t, &a.currency));
            a.txns.push(t);
        }
        Ok(out)
    }

    fn consent_state(c: &Consent, now: DateTime<Utc>) -> ConsentState {
        match c.state {
            ConsentState::Active if now >= c.expires_at => ConsentState::Expired,
            s => s,
        }
    }

    fn consent_json(&self, c: &Consent, now: DateTime<Utc>) -> serde_json::Value {
        let accounts: Vec<serde_json::Value> = c
            .account_ids
            .iter()
            .filter_map(|id| self.accounts.get(id))
            .map(|a| {
                json!({
                    "accountId": a.id, "name": a.name, "type": a.kind, "identifier": a.identifier,
                    "branch": a.branch, "bankCode": a.bank_code, "currency": a.currency,
                })
            })
            .collect();
        let status = match Self::consent_state(c, now) {
            ConsentState::Active => "active",
            ConsentState::Expired => "expired",
            ConsentState::Revoked => "revoked",
            ConsentState::PendingReview => "pending_review",
            ConsentState::Rejected => "rejected",
        };
        json!({
            "consentId": c.id, "customerId": c.customer_id, "status": status,
            "expiresAt": fmt_time(c.expires_at), "accounts": accounts,
        })
    }

    pub fn account_ids_of(&self, customer: &str) -> Vec<String> {
        self.customer(customer)
            .map(|c| c.account_ids.clone())
            .unwrap_or_default()
    }

    /// The consent ids of a customer (newest last).
    pub fn consents_of(&self, customer: &str) -> Vec<String> {
        let Some(c) = self.customer(customer) else {
            return Vec::new();
        };
        self.consents
            .values()
            .filter(|x| x.customer_id == c.id)
            .map(|x| x.id.clone())
            .collect()
    }

    /// HTTP Basic (or form) credentials of the connector's client, for the payment rails.
    pub fn client_authorised(&self, headers: &HeaderMap) -> bool {
        client_ok(self, client_auth(headers, &[]))
    }

    /// Currency and balance (the newest transaction's `balanceAfter`, else 0) of an account.
    pub fn account_money(&self, id: &str) -> Option<(String, Decimal)> {
        self.accounts.get(id).map(|a| {
            let bal = a.txns.last().map_or(Decimal::ZERO, |t| t.balance_after);
            (a.currency.clone(), bal)
        })
    }

    /// Sets an account's currency (payments out tests need USD accounts).
    pub fn set_account_currency(&mut self, id: &str, currency: &str) -> bool {
        match self.accounts.get_mut(id) {
            Some(a) => {
                a.currency = currency.to_string();
                true
            }
            None => false,
        }
    }

    /// Books a transaction (negative = debit) now; returns the new balance.
    pub fn book(
        &mut self,
        account_id: &str,
        amount: Decimal,
        description: &str,
        reference: &str,
        counterparty: &str,
        now: DateTime<Utc>,
    ) -> Option<Decimal> {
        let a = self.accounts.get_mut(account_id)?;
        let bal = a.txns.last().map_or(Decimal::ZERO, |t| t.balance_after) + amount;
        a.generated += 1;
        let id = format!("{}-p{}", a.id, a.generated);
        let booked_at = a.txns.last().map_or(now, |t| t.booked_at.max(now));
        a.txns.push(Txn {
            id,
            booked_at,
            amount,
            kind: if amount.is_sign_negative() {
                "PAYMENT"
            } else {
                "CREDIT"
            },
            pending: false,
            description: description.to_string(),
            reference: reference.to_string(),
            counterparty: counterparty.to_string(),
            balance_after: bal,
        });
        Some(bal)
    }

    /// Whether a consent is active now and covers the account: `Err` names the problem.
    pub fn consent_covers(
        &self,
        consent_id: &str,
        account_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), &'static str> {
        let c = self.consents.get(consent_id).ok_or("consent_not_found")?;
        match Self::consent_state(c, now) {
            ConsentState::Active => {}
            ConsentState::Expired => return Err("consent_expired"),
            ConsentState::Revoked => return Err("consent_revoked"),
            ConsentState::PendingReview => return Err("consent_pending_review"),
            ConsentState::Rejected => return Err("consent_rejected"),
        }
        if c.account_ids.iter().any(|a| a == account_id) {
            Ok(())
        } else {
            Err("account_not_in_consent")
        }
    }

    /// Decides a consent held for review; `false` if unknown or not pending.
    pub fn decide_consent(&mut self, id: &str, approve: bool) -> bool {
        match self.consents.get_mut(id) {
            Some(c) if c.state == ConsentState::PendingReview => {
                c.state = if approve {
                    ConsentState::Active
                } else {
                    ConsentState::Rejected
                };
                true
            }
            _ => false,
        }
    }

    pub fn expire_consent(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        match self.consents.get_mut(id) {
            Some(c) => {
                c.state = ConsentState::Expired;
                c.expires_at = c.expires_at.min(now);
                true
            }
            None => false,
        }
    }
}

fn pick_txn(r: &mut Rng, kind: &str) -> (&'static str, Decimal, String, String) {
    let cents =
        |r: &mut Rng, lo: i64, hi: i64| Decimal::new(lo + r.below((hi - lo) as u64) as i64, 2);
    const SHOPS: [&str; 6] = [
        "COFFEE CO",
        "RAIL TICKETS",
        "OFFICE SUPPLY",
        "CLOUD HOSTING",
        "FUEL STOP",
        "PRINT SHOP",
    ];
    const PAYERS: [&str; 4] = ["ACME LTD", "NORTHWIND", "GLOBEX", "INITECH"];
    let shop = SHOPS[r.below(SHOPS.len() as u64) as usize];
    let payer = PAYERS[r.below(PAYERS.len() as u64) as usize];
    match kind {
        "savings" => {
            if r.below(3) == 0 {
                (
                    "INT",
                    cents(r, 50, 900),
                    "INTEREST".into(),
                    "DEMO BANK".into(),
                )
            } else {
                (
                    "XFER",
                    cents(r, 10_000, 100_000),
                    "TRANSFER FROM CURRENT".into(),
                    "OWN ACCOUNT".into(),
                )
            }
        }
        "creditCard" => {
            if r.below(6) == 0 {
                (
                    "PAYMENT",
                    cents(r, 20_000, 80_000),
                    "PAYMENT RECEIVED THANK YOU".into(),
                    "OWN ACCOUNT".into(),
                )
            } else {
                (
                    "POS",
                    -cents(r, 500, 20_000),
                    format!("CARD PAYMENT {shop}"),
                    shop.into(),
                )
            }
        }
        _ => match r.below(5) {
            0 => (
                "CREDIT",
                cents(r, 10_000, 300_000),
                format!("INVOICE PAID {payer}"),
                payer.into(),
            ),
            1 => (
                "DIRECTDEBIT",
                -cents(r, 2_000, 50_000),
                format!("DIRECT DEBIT {shop}"),
                shop.into(),
            ),
            2 => (
                "FEE",
                -cents(r, 100, 1_500),
                "ACCOUNT FEE".into(),
                "DEMO BANK".into(),
            ),
            _ => (
                "POS",
                -cents(r, 500, 15_000),
                format!("CARD PAYMENT {shop}"),
                shop.into(),
            ),
        },
    }
}

/// Deterministic history per seed and account: from `days` back to yesterday.
fn history(seed: u64, account_id: &str, kind: &str, days: u32, now: DateTime<Utc>) -> Vec<Txn> {
    let today = now.date_naive();
    let mut balance = match kind {
        "savings" => Decimal::new(1_200_000, 2),
        "creditCard" => Decimal::new(-35_000, 2),
        "loan" => Decimal::new(-1_000_000, 2),
        _ => Decimal::new(500_000, 2),
    };
    let mut out = Vec::new();
    for back in (1..=i64::from(days)).rev() {
        let date: NaiveDate = today - Duration::days(back);
        let mut r = Rng::derived(seed, &format!("{account_id}:{}", date.format("%Y-%m-%d")));
        let n = match kind {
            "savings" | "loan" => r.below(2),
            _ => r.below(4),
        };
        let mut minutes: Vec<u64> = (0..n).map(|_| 8 * 60 + r.below(12 * 60)).collect();
        minutes.sort_unstable();
        for (i, m) in minutes.into_iter().enumerate() {
            let (k, amount, desc, party) = pick_txn(&mut r, kind);
            balance += amount;
            let Some(at) = date.and_hms_opt((m / 60) as u32, (m % 60) as u32, (r.below(60)) as u32)
            else {
                continue;
            };
            out.push(Txn {
                id: format!(
                    "{account_id}-{:04}{:02}{:02}-{:06}",
                    date.year(),
                    date.month(),
                    date.day(),
                    i + 1
                ),
                booked_at: at.and_utc(),
                amount,
                kind: k,
                pending: false,
                description: desc,
                reference: format!("REF{:06}", r.below(1_000_000)),
                counterparty: party,
                balance_after: balance,
            });
        }
    }
    // One pending card authorisation on current accounts: never to be sent to Sage.
    if kind == "business"
        && let Some(at) = (today - Duration::days(1)).and_hms_opt(23, 30, 0)
    {
        out.push(Txn {
            id: format!("{account_id}-pending-000001"),
            booked_at: at.and_utc(),
            amount: Decimal::new(-1_999, 2),
            kind: "POS",
            pending: true,
            description: "CARD AUTHORISATION HOTEL".into(),
            reference: "PENDING".into(),
            counterparty: "HOTEL".into(),
            balance_after: balance,
        });
    }
    out
}

fn api_txn(t: &Txn, currency: &str) -> BankTransaction {
    let card = (t.kind == "POS")
        .then(|| card_detail(&t.counterparty))
        .flatten();
    BankTransaction {
        transaction_id: t.id.clone(),
        booked_at: fmt_time(t.booked_at),
        amount: money(t.amount),
        currency: currency.to_string(),
        kind: t.kind.to_string(),
        status: if t.pending {
            "pending".into()
        } else {
            "booked".into()
        },
        description: t.description.clone(),
        reference: t.reference.clone(),
        counterparty: t.counterparty.clone(),
        balance_after: money(t.balance_after),
        coordinates: card.map(|(lat, long, _, _)| serde_json::json!({"lat": lat, "long": long})),
        category: card.map(|(_, _, sub, sic)| {
            serde_json::json!({"topLevelCategory": "Business expenses", "subCategory": sub,
                               "categoryId": 40, "standardIndustrialCode": sic})
        }),
        additional_fields: card.map(|_| {
            serde_json::json!([{"name": "channel", "value": "card"},
                               {"name": "merchant", "value": t.counterparty}])
        }),
    }
}

/// Where each demo shop is and how the bank classifies it (latitude, longitude, sub-category,
/// UK SIC code), so that card payments carry the Provider API's full transaction detail.
fn card_detail(shop: &str) -> Option<(f64, f64, &'static str, &'static str)> {
    Some(match shop {
        "COFFEE CO" => (53.7997, -1.5492, "Food and drink", "56102"),
        "RAIL TICKETS" => (51.5309, -0.1233, "Travel", "49100"),
        "OFFICE SUPPLY" => (52.4862, -1.8904, "Office supplies", "47620"),
        "CLOUD HOSTING" => (53.4808, -2.2426, "Software and IT", "63110"),
        "FUEL STOP" => (55.8642, -4.2518, "Fuel", "47300"),
        "PRINT SHOP" => (51.4545, -2.5879, "Printing", "18129"),
        _ => return None,
    })
}

// ---------------------------------------------------------------- HTTP

/// The Bank Data API routes served under `/bank` (method, path); `docs/bank-data-api.yaml` must
/// list exactly these (tests/bank_openapi.rs). The payment rails (the last four) are served by
/// `payments_out::rails`, as they belong to Payments Out's demo bank.
pub const ROUTES: [(&str, &str); 10] = [
    ("get", "/oauth/authorize"),
    ("post", "/oauth/authorize"),
    ("post", "/oauth/token"),
    ("get", "/v1/consents/{consentId}"),
    ("get", "/v1/accounts/{accountId}/transactions"),
    ("get", "/v1/accounts/{accountId}/balances"),
    ("get", "/v1/payments"),
    ("put", "/v1/payments/{paymentId}"),
    ("get", "/v1/payments/{paymentId}"),
    ("delete", "/v1/payments/{paymentId}"),
];

pub fn router() -> Router<Arc<Core>> {
    Router::new()
        .route(
            "/bank/oauth/authorize",
            get(authorize_page).post(authorize_submit),
        )
        .route("/bank/oauth/token", post(token))
        .route("/bank/v1/consents/{consentId}", get(get_consent))
        .route(
            "/bank/v1/accounts/{accountId}/transactions",
            get(get_transactions),
        )
        .route("/bank/v1/accounts/{accountId}/balances", get(get_balances))
        .route(
            "/_sandbox/bank/customers",
            get(list_customers).post(create_customer),
        )
        .route(
            "/_sandbox/bank/customers/{customer}/accounts",
            post(open_account),
        )
        .route(
            "/_sandbox/bank/accounts/{id}/transactions",
            post(generate_transactions).get(all_transactions),
        )
        .route("/_sandbox/bank/consents", get(list_consents))
        .route("/_sandbox/bank/consents/{id}/expire", post(expire_consent))
        .route("/_sandbox/bank/consents/{id}/revoke", post(revoke_consent))
}

/// The demo bank's look: plain, readable, a visible focus ring for keyboard users.
const BANK_STYLE: &str = "body{font-family:Georgia,serif;background:#f4f1ea;color:#222;margin:0}\
main{max-width:30rem;margin:2rem auto;background:#fff;padding:1.5rem;border-top:6px solid #7a1f2b}\
h1{color:#7a1f2b;margin-top:0}label{display:inline-block;margin:.4rem 0}\
input{font-size:1rem;padding:.3rem}button{font-size:1rem;padding:.5rem 1.2rem;margin:.8rem .5rem 0 0;\
border:1px solid #7a1f2b;border-radius:.3rem;background:#7a1f2b;color:#fff}\
button[value=cancel]{background:#fff;color:#7a1f2b}.error{color:#a00000;font-weight:bold}\
:focus-visible{outline:3px solid #1a5fb4;outline-offset:2px}";

fn oauth_json(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Demo Bank</title><style>{BANK_STYLE}</style></head><body><main><h1>Demo Bank</h1><p class=\"error\">{}</p></main></body></html>",
        html_escape(message)
    );
    (status, Html(body)).into_response()
}

/// The authorize request parameters, as carried through the login form.
#[derive(Debug, Clone, Default)]
struct AuthParams {
    response_type: String,
    client_id: String,
    redirect_uri: String,
    state: String,
    code_challenge: String,
    code_challenge_method: String,
    scope: String,
    consent_id: Option<String>,
}

impl AuthParams {
    fn from_pairs(p: &[(String, String)]) -> Self {
        let g = |k: &str| form_get(p, k).unwrap_or("").to_string();
        AuthParams {
            response_type: g("response_type"),
            client_id: g("client_id"),
            redirect_uri: g("redirect_uri"),
            state: g("state"),
            code_challenge: g("code_challenge"),
            code_challenge_method: g("code_challenge_method"),
            scope: g("scope"),
            consent_id: form_get(p, "consent_id")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        }
    }

    fn hidden_fields(&self) -> String {
        let mut out = String::new();
        let mut add = |k: &str, v: &str| {
            out.push_str(&format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">\n",
                html_escape(v)
            ));
        };
        add("response_type", &self.response_type);
        add("client_id", &self.client_id);
        add("redirect_uri", &self.redirect_uri);
        add("state", &self.state);
        add("code_challenge", &self.code_challenge);
        add("code_challenge_method", &self.code_challenge_method);
        add("scope", &self.scope);
        if let Some(c) = &self.consent_id {
            add("consent_id", c);
        }
        out
    }
}

/// Any `http://127.0.0.1:*` or `http://localhost:*` redirect is allowed for the connector's client.
fn redirect_allowed(uri: &str) -> bool {
    match url::Url::parse(uri) {
        Ok(u) => {
            u.scheme() == "http" && matches!(u.host_str(), Some("127.0.0.1") | Some("localhost"))
        }
        Err(_) => false,
    }
}

fn check_params(bank: &DemoBank, p: &AuthParams) -> Result<(), String> {
    if p.client_id != bank.client_id {
        return Err("Unknown client_id.".into());
    }
    if !redirect_allowed(&p.redirect_uri) {
        return Err("redirect_uri is not registered for this client.".into());
    }
    if p.response_type != "code" {
        return Err("response_type must be code.".into());
    }
    let valid_challenge = (43..=128).contains(&p.code_challenge.len())
        && p.code_challenge
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'));
    if !valid_challenge {
        return Err("code_challenge is missing or malformed.".into());
    }
    if p.code_challenge_method != "S256" {
        return Err("code_challenge_method must be S256.".into());
    }
    Ok(())
}

fn login_page(core: &Core, bank: &DemoBank, p: &AuthParams, error: Option<&str>) -> Response {
    let mut accounts = String::new();
    if p.consent_id.is_none() {
        accounts.push_str("<fieldset><legend>Accounts to share</legend>\n");
        for c in &bank.customers {
            for id in &c.account_ids {
                if let Some(a) = bank.accounts.get(id) {
                    accounts.push_str(&format!(
                        "<label><input type=\"checkbox\" name=\"account\" value=\"{}\" data-customer=\"{}\" checked> {} — {}</label><br>\n",
                        html_escape(&a.id),
                        html_escape(&c.username),
                        html_escape(&c.username),
                        html_escape(&a.name)
                    ));
                }
            }
        }
        accounts.push_str("</fieldset>\n");
    }
    let err = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", html_escape(e)))
        .unwrap_or_default();
    let title = if p.consent_id.is_some() {
        "Renew your consent"
    } else {
        "Sign in and choose accounts"
    };
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} — Demo Bank</title><style>{BANK_STYLE}</style></head><body><main>\n\
         <h1>Demo Bank</h1><h2>{title}</h2>{err}\n\
         <form method=\"post\" action=\"{base}/bank/oauth/authorize\" data-bank-login>\n{hidden}\
         <label>Username <input name=\"username\" autocomplete=\"username\"></label><br>\n\
         <label>Password <input type=\"password\" name=\"password\" autocomplete=\"current-password\"></label><br>\n\
         {accounts}\
         <button type=\"submit\" name=\"action\" value=\"approve\">Approve</button>\n\
         <button type=\"submit\" name=\"action\" value=\"cancel\">Cancel</button>\n</form></main></body></html>",
        base = core.base_url,
        hidden = p.hidden_fields(),
    );
    let mut resp = Html(body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn authorize_page(
    State(core): State<Arc<Core>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    let p = AuthParams::from_pairs(&q);
    let bank = core.bank.lock();
    if let Err(e) = check_params(&bank, &p) {
        return error_page(StatusCode::BAD_REQUEST, &e);
    }
    login_page(&core, &bank, &p, None)
}

fn redirect(to: String) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

async fn authorize_submit(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let pairs = parse_form(&String::from_utf8_lossy(&body));
    let p = AuthParams::from_pairs(&pairs);
    let now = core.now();
    let mut bank = core.bank.lock();
    if let Err(e) = check_params(&bank, &p) {
        return error_page(StatusCode::BAD_REQUEST, &e);
    }
    if form_get(&pairs, "action") == Some("cancel") {
        return redirect(append_query(
            &p.redirect_uri,
            &[("error", "access_denied"), ("state", &p.state)],
        ));
    }
    let username = form_get(&pairs, "username").unwrap_or("");
    let password = form_get(&pairs, "password").unwrap_or("");
    let Some(customer) = bank
        .customers
        .iter()
        .find(|c| c.username == username && ct_eq(c.password.as_bytes(), password.as_bytes()))
        .cloned()
    else {
        return login_page(&core, &bank, &p, Some("Wrong username or password."));
    };
    let consent_id = if let Some(cid) = &p.consent_id {
        let ttl = Duration::days(i64::from(bank.consent_ttl_days));
        match bank.consents.get_mut(cid) {
            None => {
                return redirect(append_query(
                    &p.redirect_uri,
                    &[
                        ("error", "access_denied"),
                        ("error_description", "unknown_consent"),
                        ("state", &p.state),
                    ],
                ));
            }
            Some(c) if c.customer_id != customer.id => {
                return redirect(append_query(
                    &p.redirect_uri,
                    &[
                        ("error", "access_denied"),
                        ("error_description", "consent_owner_mismatch"),
                        ("state", &p.state),
                    ],
                ));
            }
            Some(c) => {
                c.state = ConsentState::Active;
                c.expires_at = now + ttl;
                c.id.clone()
            }
        }
    } else {
        let picked: Vec<String> = pairs
            .iter()
            .filter(|(k, v)| k == "account" && customer.account_ids.contains(v))
            .map(|(_, v)| v.clone())
            .collect();
        if picked.is_empty() {
            return login_page(
                &core,
                &bank,
                &p,
                Some("Choose at least one of your accounts."),
            );
        }
        let id = format!("cns_{}", bank.rng.token(12));
        let ttl = Duration::days(i64::from(bank.consent_ttl_days));
        let state = if bank.review_consents {
            ConsentState::PendingReview
        } else {
            ConsentState::Active
        };
        bank.consents.insert(
            id.clone(),
            Consent {
                id: id.clone(),
                customer_id: customer.id.clone(),
                state,
                expires_at: now + ttl,
                account_ids: picked,
            },
        );
        id
    };
    let code = bank.rng.token(32);
    bank.codes.insert(
        code.clone(),
        Code {
            client_id: p.client_id.clone(),
            redirect_uri: p.redirect_uri.clone(),
            challenge: p.code_challenge.clone(),
            consent_id,
            customer_id: customer.id,
            expires_at: now + Duration::seconds(60),
            used: false,
        },
    );
    redirect(append_query(
        &p.redirect_uri,
        &[("code", &code), ("state", &p.state)],
    ))
}

/// Client credentials from HTTP Basic, or from the form.
fn client_auth(headers: &HeaderMap, form: &[(String, String)]) -> Option<(String, String)> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(b) = v.strip_prefix("Basic ")
    {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (id, secret) = s.split_once(':')?;
        return Some((id.to_string(), secret.to_string()));
    }
    Some((
        form_get(form, "client_id")?.to_string(),
        form_get(form, "client_secret")?.to_string(),
    ))
}

fn client_ok(bank: &DemoBank, creds: Option<(String, String)>) -> bool {
    creds.is_some_and(|(id, secret)| {
        id == bank.client_id && ct_eq(secret.as_bytes(), bank.client_secret.as_bytes())
    })
}

async fn token(State(core): State<Arc<Core>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = parse_form(&String::from_utf8_lossy(&body));
    let now = core.now();
    let mut bank = core.bank.lock();
    match form_get(&form, "grant_type") {
        Some("authorization_code") => {}
        None => return oauth_json(StatusCode::BAD_REQUEST, "invalid_request"),
        Some(_) => return oauth_json(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    }
    if !client_ok(&bank, client_auth(&headers, &form)) {
        return oauth_json(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let (Some(code), Some(redirect_uri), Some(verifier)) = (
        form_get(&form, "code"),
        form_get(&form, "redirect_uri"),
        form_get(&form, "code_verifier"),
    ) else {
        return oauth_json(StatusCode::BAD_REQUEST, "invalid_request");
    };
    let client_id = bank.client_id.clone();
    let Some(c) = bank.codes.get_mut(code) else {
        return oauth_json(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    let challenge = b64url(&Sha256::digest(verifier.as_bytes()));
    if c.used
        || now >= c.expires_at
        || c.redirect_uri != redirect_uri
        || c.client_id != client_id
        || challenge != c.challenge
    {
        return oauth_json(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    c.used = true;
    let (consent_id, customer_id) = (c.consent_id.clone(), c.customer_id.clone());
    let expires = bank
        .consents
        .get(&consent_id)
        .map(|c| fmt_time(c.expires_at))
        .unwrap_or_default();
    let access = format!("bat_{}", bank.rng.token(32));
    axum::Json(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 600,
        "consent_id": consent_id, "customer_id": customer_id, "consent_expires_at": expires,
    }))
    .into_response()
}

async fn get_consent(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let now = core.now();
    let bank = core.bank.lock();
    if !client_ok(&bank, client_auth(&headers, &[])) {
        return oauth_json(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    match bank.consents.get(&id) {
        Some(c) => axum::Json(bank.consent_json(c, now)).into_response(),
        None => oauth_json(StatusCode::NOT_FOUND, "not_found"),
    }
}

#[derive(Deserialize)]
struct TxnQuery {
    from: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

/// The account `id` as a server-to-server read may see it: the client authenticated, the
/// consent of `X-Consent-Id` active and covering the account; else the error to answer.
fn readable_account<'a>(
    bank: &'a DemoBank,
    headers: &HeaderMap,
    id: &str,
    now: DateTime<Utc>,
) -> Result<&'a Account, (StatusCode, &'static str)> {
    if !client_ok(bank, client_auth(headers, &[])) {
        return Err((StatusCode::UNAUTHORIZED, "invalid_client"));
    }
    let Some(consent_id) = headers.get("x-consent-id").and_then(|v| v.to_str().ok()) else {
        return Err((StatusCode::BAD_REQUEST, "invalid_request"));
    };
    let Some(consent) = bank.consents.get(consent_id) else {
        return Err((StatusCode::NOT_FOUND, "not_found"));
    };
    match DemoBank::consent_state(consent, now) {
        ConsentState::Expired => return Err((StatusCode::FORBIDDEN, "consent_expired")),
        ConsentState::Revoked => return Err((StatusCode::FORBIDDEN, "consent_revoked")),
        ConsentState::PendingReview => {
            return Err((StatusCode::FORBIDDEN, "consent_pending_review"));
        }
        ConsentState::Rejected => return Err((StatusCode::FORBIDDEN, "consent_rejected")),
        ConsentState::Active => {}
    }
    bank.accounts
        .get(id)
        .filter(|_| consent.account_ids.iter().any(|a| a == id))
        .ok_or((StatusCode::NOT_FOUND, "not_found"))
}

/// The ledger balance after the last booked transaction, and the available one (pending
/// debits taken off), as of `now`.
fn balance_of(acct: &Account, now: DateTime<Utc>) -> serde_json::Value {
    let ledger = acct
        .txns
        .iter()
        .rev()
        .find(|t| !t.pending)
        .map(|t| t.balance_after)
        .unwrap_or_default();
    let pending: Decimal = acct
        .txns
        .iter()
        .filter(|t| t.pending && t.amount.is_sign_negative())
        .map(|t| t.amount)
        .sum();
    json!({ "ledger": money(ledger), "available": money(ledger + pending), "asOf": fmt_time(now) })
}

async fn get_balances(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let now = core.now();
    let bank = core.bank.lock();
    match readable_account(&bank, &headers, &id, now) {
        Ok(acct) => axum::Json(balance_of(acct, now)).into_response(),
        Err((status, code)) => oauth_json(status, code),
    }
}

async fn get_transactions(
    State(core): State<Arc<Core>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<TxnQuery>,
) -> Response {
    let now = core.now();
    let bank = core.bank.lock();
    let acct = match readable_account(&bank, &headers, &id, now) {
        Ok(a) => a,
        Err((status, code)) => return oauth_json(status, code),
    };
    let limit = match q.limit.as_deref() {
        None => 500,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => return oauth_json(StatusCode::BAD_REQUEST, "invalid_request"),
        },
    };
    let from = match q.from.as_deref() {
        None | Some("") => None,
        Some(s) => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(d) => d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()),
            Err(_) => return oauth_json(StatusCode::BAD_REQUEST, "invalid_request"),
        },
    };
    let offset = match q.cursor.as_deref() {
        None | Some("") => 0,
        Some(c) => match crate::util::b64url_decode(c)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("o:").and_then(|n| n.parse::<usize>().ok()))
        {
            Some(n) => n,
            None => return oauth_json(StatusCode::BAD_REQUEST, "invalid_request"),
        },
    };
    let matching: Vec<&Txn> = acct
        .txns
        .iter()
        .filter(|t| from.is_none_or(|f| t.booked_at >= f))
        .collect();
    let page: Vec<BankTransaction> = matching
        .iter()
        .skip(offset)
        .take(limit)
        .map(|t| api_txn(t, &acct.currency))
        .collect();
    let next = offset + page.len();
    let next_cursor = if next < matching.len() {
        Some(b64url(format!("o:{next}").as_bytes()))
    } else {
        None
    };
    axum::Json(json!({
        "transactions": page,
        "nextCursor": next_cursor,
        "balance": balance_of(acct, now),
    }))
    .into_response()
}

// ---------------------------------------------------------------- control

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NewCustomer {
    pub username: String,
    pub password: Option<String>,
    /// Number of accounts (types cycle business, savings, creditCard, ...) unless `types` is given.
    pub accounts: Option<usize>,
    pub types: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomerView {
    pub customer_id: String,
    pub username: String,
    pub accounts: Vec<AccountSummary>,
    pub consent_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountSummary {
    pub account_id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub identifier: String,
    pub bank_code: String,
    pub transaction_count: usize,
}

impl DemoBank {
    pub fn customer_view(&self, id: &str) -> Option<CustomerView> {
        let c = self.customer(id)?;
        Some(CustomerView {
            customer_id: c.id.clone(),
            username: c.username.clone(),
            accounts: c
                .account_ids
                .iter()
                .filter_map(|a| self.accounts.get(a))
                .map(|a| AccountSummary {
                    account_id: a.id.clone(),
                    name: a.name.clone(),
                    kind: a.kind.clone(),
                    identifier: a.identifier.clone(),
                    bank_code: a.bank_code.clone(),
                    transaction_count: a.txns.len(),
                })
                .collect(),
            consent_ids: self.consents_of(&c.id),
        })
    }
}

fn bad_request(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": "invalid_request", "message": msg })),
    )
        .into_response()
}

async fn list_customers(State(core): State<Arc<Core>>) -> Response {
    let bank = core.bank.lock();
    let list: Vec<CustomerView> = bank
        .customers
        .iter()
        .filter_map(|c| bank.customer_view(&c.id))
        .collect();
    axum::Json(list).into_response()
}

async fn create_customer(State(core): State<Arc<Core>>, body: Bytes) -> Response {
    let req: NewCustomer = match crate::control::parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.username.is_empty() {
        return bad_request("username is required");
    }
    let types: Vec<String> = match req.types {
        Some(t) => t,
        None => (0..req.accounts.unwrap_or(1))
            .map(|i| KINDS[i % 3].0.to_string())
            .collect(),
    };
    let kinds: Vec<&str> = types.iter().map(String::as_str).collect();
    let now = core.now();
    let mut bank = core.bank.lock();
    let password = req.password.unwrap_or_else(|| req.username.clone());
    match bank.create_customer(&req.username, &password, &kinds, now) {
        Ok(c) => (StatusCode::CREATED, axum::Json(bank.customer_view(&c.id))).into_response(),
        Err(e) => bad_request(&e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenAccount {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
}

async fn open_account(
    State(core): State<Arc<Core>>,
    Path(customer): Path<String>,
    body: Bytes,
) -> Response {
    let req: OpenAccount = match crate::control::parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let now = core.now();
    let mut bank = core.bank.lock();
    match bank.open_account(
        &customer,
        req.kind.as_deref().unwrap_or("business"),
        req.name.as_deref(),
        now,
    ) {
        Ok(a) => (
            StatusCode::CREATED,
            axum::Json(AccountSummary {
                account_id: a.id.clone(),
                name: a.name.clone(),
                kind: a.kind.clone(),
                identifier: a.identifier.clone(),
                bank_code: a.bank_code.clone(),
                transaction_count: a.txns.len(),
            }),
        )
            .into_response(),
        Err(e) => bad_request(&e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Generate {
    count: Option<usize>,
}

async fn generate_transactions(
    State(core): State<Arc<Core>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let req: Generate = match crate::control::parse_body(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let n = req.count.unwrap_or(1);
    if n > 100_000 {
        return bad_request("count must be at most 100000");
    }
    let now = core.now();
    let mut bank = core.bank.lock();
    match bank.generate(&id, n, now) {
        Ok(list) => (StatusCode::CREATED, axum::Json(list)).into_response(),
        Err(e) => bad_request(&e),
    }
}

async fn all_transactions(State(core): State<Arc<Core>>, Path(id): Path<String>) -> Response {
    let bank = core.bank.lock();
    match bank.accounts.get(&id) {
        Some(a) => {
            let list: Vec<BankTransaction> =
                a.txns.iter().map(|t| api_txn(t, &a.currency)).collect();
            axum::Json(list).into_response()
        }
        None => oauth_json(StatusCode::NOT_FOUND, "not_found"),
    }
}

async fn list_consents(State(core): State<Arc<Core>>) -> Response {
    let now = core.now();
    let bank = core.bank.lock();
    let list: Vec<serde_json::Value> = bank
        .consents
        .values()
        .map(|c| bank.consent_json(c, now))
        .collect();
    axum::Json(list).into_response()
}

/// Ends a consent now, and tells the connector by a consent event (docs/bank-data-api.md §4.5).
async fn expire_consent(State(core): State<Arc<Core>>, Path(id): Path<String>) -> Response {
    end_consent(&core, id, "expired")
}

async fn revoke_consent(State(core): State<Arc<Core>>, Path(id): Path<String>) -> Response {
    end_consent(&core, id, "revoked")
}

fn end_consent(core: &Arc<Core>, id: String, how: &str) -> Response {
    let now = core.now();
    let view = {
        let mut bank = core.bank.lock();
        let ended = match how {
            "expired" => bank.expire_consent(&id, now),
            _ => match bank.consents.get_mut(&id) {
                Some(c) => {
                    c.state = ConsentState::Revoked;
                    true
                }
                None => false,
            },
        };
        if !ended {
            return oauth_json(StatusCode::NOT_FOUND, "not_found");
        }
        bank.consents.get(&id).map(|c| bank.consent_json(c, now))
    };
    crate::payments_out::rails::push_consent_event(core, id, how);
    axum::Json(view).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_deterministic_and_balanced() {
        let now = Utc::now();
        let a = history(7, "acc_X", "business", 120, now);
        let b = history(7, "acc_X", "business", 120, now);
        assert_eq!(a.len(), b.len());
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.id == y.id && x.amount == y.amount)
        );
        let mut bal = Decimal::new(500_000, 2);
        for t in a.iter().filter(|t| !t.pending) {
            bal += t.amount;
            assert_eq!(bal, t.balance_after);
        }
        assert!(a.windows(2).all(|w| w[0].booked_at <= w[1].booked_at));
    }
}
