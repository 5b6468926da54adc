//! In-memory state of Banking Service and Sage ID, and the shared core every handler uses.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use rust_decimal::Decimal;
use tokio::sync::watch;
use uuid::Uuid;

use crate::config::{ProviderClient, SandboxConfig};
use crate::envelope::DetailItem;
use crate::json::{JsonDecimal, OwnedNode};
use crate::model::*;
use crate::sageid::{KeySet, SigningKey};
use crate::util::{Clock, Rng, fmt_time};

pub struct Bank {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub name: String,
    pub country_code: String,
    pub url: Option<String>,
    pub supportiframe: bool,
    pub external_ref: String,
    pub callbacks: CallbackUrls,
    pub removed: bool,
    pub created_at: DateTime<Utc>,
}

impl Bank {
    pub fn view(&self) -> BankView {
        BankView {
            principal_id: self.id,
            provider_id: self.provider_id,
            name: self.name.clone(),
            country_code: self.country_code.clone(),
            url: self.url.clone(),
            supportiframe: self.supportiframe,
            external_ref: self.external_ref.clone(),
            callback_urls: self.callbacks.clone(),
            removed: self.removed,
            created_at: fmt_time(self.created_at),
        }
    }
}

/// A committed transaction.
pub struct StoredTxn {
    pub transaction_id: u64,
    pub unique_id: String,
    pub statement_id: Uuid,
    pub raw: OwnedNode,
}

#[derive(Default)]
pub struct TxnStore {
    pub txns: Vec<StoredTxn>,
    pub unique_ids: HashSet<String>,
    pub newest: Option<DateTime<Utc>>,
}

pub struct Account {
    pub id: Uuid,
    pub bank_id: Uuid,
    pub provider_id: Uuid,
    pub organisation_id: String,
    pub company_id: String,
    pub external_id: String,
    pub account_name: String,
    pub bank_identifier: String,
    pub branch_identifier: Option<String>,
    pub account_identifier: String,
    pub account_type: Option<String>,
    pub requested_start_date: DateTime<Utc>,
    pub requested_start_raw: String,
    pub status: AccountStatus,
    pub balances: Balances,
    pub last_transaction_id: u64,
    pub last_transactions_received: Option<DateTime<Utc>>,
    pub consent_group_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub created_seq: u64,
    pub store: TxnStore,
    pub in_flight: Option<Uuid>,
    /// When the connector acknowledged `resourceDeleted` (posting later is a violation).
    pub deleted_acknowledged_at: Option<DateTime<Utc>>,
}

impl Account {
    pub fn view(&self) -> AccountView {
        AccountView {
            bank_account_id: self.id,
            bank_id: self.bank_id,
            provider_id: self.provider_id,
            organisation_id: self.organisation_id.clone(),
            company_id: self.company_id.clone(),
            external_id: self.external_id.clone(),
            account_name: self.account_name.clone(),
            bank_identifier: self.bank_identifier.clone(),
            branch_identifier: self.branch_identifier.clone(),
            account_identifier: self.account_identifier.clone(),
            account_type: self.account_type.clone(),
            requested_start_date: self.requested_start_raw.clone(),
            status: self.status,
            balances: self.balances.clone(),
            last_transaction_id: self.last_transaction_id,
            last_transactions_received: self.last_transactions_received.map(fmt_time),
            consent_group_id: self.consent_group_id,
            created_at: fmt_time(self.created_at),
            transaction_count: self.store.txns.len(),
            in_flight_statement_id: self.in_flight,
        }
    }
}

/// A transaction of a statement, parsed and validated, not yet stored.
#[derive(Debug, Clone)]
pub struct ParsedTxn {
    pub unique_id: String,
    pub date_posted: DateTime<Utc>,
    pub amount: Decimal,
    pub status: String,
    pub raw: OwnedNode,
}

#[derive(Debug, Clone, Default)]
pub struct BalancesIn {
    pub ledger: Option<Decimal>,
    pub ledger_date: Option<String>,
    pub available: Option<Decimal>,
    pub available_date: Option<String>,
}

/// A statement body that passed every synchronous check.
#[derive(Debug, Clone)]
pub struct ParsedStatement {
    pub principal_id: Uuid,
    pub bank_id: Uuid,
    pub expected: Counts,
    pub actual: Counts,
    pub account_status: String,
    pub balances: BalancesIn,
    pub txns: Vec<ParsedTxn>,
    /// Free text longer than Banking Service stores (already truncated in `txns`).
    pub overlong: Vec<crate::validate::Overlong>,
    /// Paths of keys the contract does not name (ignored; contract violations).
    pub unknown_fields: Vec<String>,
}

pub struct Statement {
    pub id: Uuid,
    pub principal_id: Uuid,
    pub provider_id: Uuid,
    pub bank_id: Uuid,
    pub status: StatementStatus,
    pub status_modified: DateTime<Utc>,
    pub created: DateTime<Utc>,
    pub expected: Counts,
    pub actual: Counts,
    pub details: Option<Vec<DetailItem>>,
    pub account_status: String,
    pub balances: BalancesIn,
    /// Dropped once terminal (memory).
    pub txns: Vec<ParsedTxn>,
    pub history: Vec<StatusChange>,
    pub processing_us: Option<u64>,
    pub last_polled: Option<Instant>,
    pub poll_count: u64,
}

impl Statement {
    pub fn set_status(&mut self, status: StatementStatus, now: DateTime<Utc>) {
        self.status = status;
        self.status_modified = now;
        self.history.push(StatusChange {
            status,
            at: fmt_time(now),
        });
    }

    pub fn view(&self) -> StatementView {
        StatementView {
            id: self.id,
            principal_id: self.principal_id,
            provider_id: self.provider_id,
            bank_id: self.bank_id,
            status: self.status,
            status_reason: self.status.reason().to_string(),
            status_modified_date: fmt_time(self.status_modified),
            created_date: fmt_time(self.created),
            expected: self.expected.clone(),
            actual: self.actual.clone(),
            details: self.details.clone(),
            account_status: self.account_status.clone(),
            history: self.history.clone(),
            processing_us: self.processing_us,
            poll_count: self.poll_count,
        }
    }

    /// The Provider API resource (spec §6.4/§6.5).
    pub fn resource(&self) -> StatementResource {
        StatementResource {
            id: self.id,
            principal_id: self.principal_id,
            provider_id: self.provider_id,
            status: self.status.as_str(),
            status_reason: self.status.reason(),
            status_modified_date: fmt_time(self.status_modified),
            expected: self.expected.clone(),
            actual: self.actual.clone(),
            details: if self.status == StatementStatus::Failed {
                self.details.clone()
            } else {
                None
            },
        }
    }
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementResource {
    #[serde(rename = "_id")]
    pub id: Uuid,
    pub principal_id: Uuid,
    pub provider_id: Uuid,
    pub status: &'static str,
    pub status_reason: &'static str,
    pub status_modified_date: String,
    pub expected: Counts,
    pub actual: Counts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<DetailItem>>,
}

/// An organisation a product registered (`POST /api/v1/organisations`).
pub struct Organisation {
    pub id: String,
    pub application: String,
    pub companies: Vec<String>,
    /// Signing key of its `GET /api/v1/accesstoken` requests.
    pub token: String,
}

/// A product access token (`GET /api/v1/accesstoken`), bound to one company.
pub struct ProductSession {
    pub organisation_id: String,
    pub company_id: String,
    pub application: String,
    pub expires_at: DateTime<Utc>,
}

pub struct Authorisation {
    pub id: Uuid,
    pub kind: AuthorisationKind,
    pub bank_id: Uuid,
    pub provider_id: Uuid,
    pub bank_account_id: Option<Uuid>,
    pub consent_group_id: Uuid,
    pub organisation_id: String,
    pub company_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub completed: bool,
    pub patch: Option<PatchRecord>,
    pub rejected_patches: u64,
    /// The opaque `data` of its `pollRoute`: the route's own credential.
    pub poll_secret: String,
}

impl Authorisation {
    pub fn status(&self, now: DateTime<Utc>) -> AuthorisationStatus {
        if self.completed {
            AuthorisationStatus::Completed
        } else if now > self.expires_at {
            AuthorisationStatus::Expired
        } else {
            AuthorisationStatus::Open
        }
    }

    pub fn view(&self, now: DateTime<Utc>) -> AuthorisationView {
        AuthorisationView {
            id: self.id,
            kind: self.kind,
            bank_id: self.bank_id,
            bank_account_id: self.bank_account_id,
            consent_group_id: self.consent_group_id,
            organisation_id: self.organisation_id.clone(),
            company_id: self.company_id.clone(),
            created_at: fmt_time(self.created_at),
            expires_at: fmt_time(self.expires_at),
            status: self.status(now),
            patch: self.patch.clone(),
            rejected_patches: self.rejected_patches,
        }
    }
}

/// A bank account candidate returned by `/availableaccounts` (multi-account linking).
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: Uuid,
    pub source_account_id: Uuid,
    pub bank_id: Uuid,
    pub provider_id: Uuid,
    pub organisation_id: String,
    pub company_id: String,
    pub consent_group_id: Uuid,
    pub account_type: String,
    pub account_name: String,
    pub external_id: String,
    pub bank_identifier: String,
    pub account_identifier: String,
    pub branch_identifier: Option<String>,
}

pub struct Bucket {
    pub tokens: f64,
    pub last: Instant,
}

pub struct LatencyRing {
    pub samples: Vec<u32>,
    pub next: usize,
    pub count: u64,
    pub max: u64,
}

impl LatencyRing {
    const CAP: usize = 8192;
    fn new() -> Self {
        LatencyRing {
            samples: Vec::new(),
            next: 0,
            count: 0,
            max: 0,
        }
    }
    pub fn record(&mut self, us: u64) {
        let v = u32::try_from(us).unwrap_or(u32::MAX);
        if self.samples.len() < Self::CAP {
            self.samples.push(v);
        } else {
            self.samples[self.next] = v;
        }
        self.next = (self.next + 1) % Self::CAP;
        self.count += 1;
        self.max = self.max.max(us);
    }
    fn percentile(&self, p: f64) -> u64 {
        if self.samples.is_empty() {
            return 0;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
        u64::from(s[idx.min(s.len() - 1)])
    }
}

#[derive(Default)]
pub struct Metrics {
    pub requests: HashMap<(String, u16), u64>,
    pub latency: HashMap<String, LatencyRing>,
    pub rate_limited: u64,
    pub in_flight_rejections: u64,
    pub cancelled_rejections: u64,
    pub max_in_flight: HashMap<Uuid, u64>,
    pub duplicates_rejected: u64,
    pub token_requests: HashMap<String, u64>,
    pub statements_final: HashMap<String, u64>,
    pub notification_attempts: u64,
}

impl Metrics {
    pub fn record(&mut self, route: &str, status: u16, us: u64) {
        *self
            .requests
            .entry((route.to_string(), status))
            .or_default() += 1;
        self.latency
            .entry(route.to_string())
            .or_insert_with(LatencyRing::new)
            .record(us);
    }
}

/// Runtime fault state: the set plus what the "next N" counters left.
#[derive(Default)]
pub struct FaultState {
    pub set: FaultSet,
}

pub struct State {
    pub clients: HashMap<String, ProviderClient>,
    /// API key → provider id.
    pub api_keys: HashMap<String, Uuid>,
    pub banks: HashMap<Uuid, Bank>,
    pub bank_order: Vec<Uuid>,
    pub accounts: HashMap<Uuid, Account>,
    pub account_order: Vec<Uuid>,
    pub account_seq: u64,
    pub statements: HashMap<Uuid, Statement>,
    pub statements_by_account: HashMap<Uuid, Vec<Uuid>>,
    pub authorisations: HashMap<Uuid, Authorisation>,
    pub candidates: HashMap<Uuid, Candidate>,
    pub organisations: HashMap<String, Organisation>,
    /// Product access token → its session.
    pub product_sessions: HashMap<String, ProductSession>,
    /// jti → client id of every token issued.
    pub issued_tokens: HashMap<String, String>,
    pub revoked: HashSet<String>,
    /// Verified tokens (signature checked once): token → (kid, claims).
    pub token_cache: HashMap<String, crate::sageid::VerifiedToken>,
    /// Token requests in the last minute, per client (rate limit).
    pub token_window: HashMap<String, VecDeque<Instant>>,
    /// Token requests since the client's last 401 (violation rule).
    pub token_since_401: HashMap<String, Vec<DateTime<Utc>>>,
    pub buckets: HashMap<String, Bucket>,
    pub rng: Rng,
    pub requests: VecDeque<RequestLogEntry>,
    pub notifications: VecDeque<NotificationAttempt>,
    pub violations: VecDeque<Violation>,
    pub overlong_fields: VecDeque<OverlongField>,
    /// `resourceCreated/bankAccount` notifications sent in a flow (picks the date format).
    pub start_dates_sent: u64,
    pub seq: u64,
    pub violation_count: u64,
    pub metrics: Metrics,
    pub faults: FaultState,
}

impl State {
    pub fn new(cfg: &SandboxConfig) -> Self {
        let mut s = State {
            clients: HashMap::new(),
            api_keys: HashMap::new(),
            banks: HashMap::new(),
            bank_order: Vec::new(),
            accounts: HashMap::new(),
            account_order: Vec::new(),
            account_seq: 0,
            statements: HashMap::new(),
            statements_by_account: HashMap::new(),
            authorisations: HashMap::new(),
            candidates: HashMap::new(),
            organisations: HashMap::new(),
            product_sessions: HashMap::new(),
            issued_tokens: HashMap::new(),
            revoked: HashSet::new(),
            token_cache: HashMap::new(),
            token_window: HashMap::new(),
            token_since_401: HashMap::new(),
            buckets: HashMap::new(),
            rng: Rng::new(cfg.seed),
            requests: VecDeque::new(),
            notifications: VecDeque::new(),
            violations: VecDeque::new(),
            overlong_fields: VecDeque::new(),
            start_dates_sent: 0,
            seq: 0,
            violation_count: 0,
            metrics: Metrics::default(),
            faults: FaultState::default(),
        };
        for c in &cfg.clients {
            s.add_client(c.clone());
        }
        s
    }

    pub fn add_client(&mut self, c: ProviderClient) {
        self.api_keys.insert(c.api_key.clone(), c.provider_id);
        self.clients.insert(c.client_id.clone(), c);
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    #[allow(clippy::too_many_arguments)]
    pub fn violation(
        &mut self,
        cap: usize,
        now: DateTime<Utc>,
        kind: ViolationKind,
        message: String,
        bank_account_id: Option<Uuid>,
        statement_id: Option<Uuid>,
        client_id: Option<String>,
    ) {
        self.violation_at(
            cap,
            now,
            kind,
            message,
            None,
            bank_account_id,
            statement_id,
            client_id,
        );
    }

    /// A violation about one place of a request (`path`, e.g. an unknown key).
    #[allow(clippy::too_many_arguments)]
    pub fn violation_at(
        &mut self,
        cap: usize,
        now: DateTime<Utc>,
        kind: ViolationKind,
        message: String,
        path: Option<String>,
        bank_account_id: Option<Uuid>,
        statement_id: Option<Uuid>,
        client_id: Option<String>,
    ) {
        let seq = self.next_seq();
        self.violation_count += 1;
        push_capped(
            &mut self.violations,
            cap,
            Violation {
                seq,
                at: fmt_time(now),
                kind,
                message,
                path,
                bank_account_id,
                statement_id,
                client_id,
            },
        );
    }

    pub fn metrics_view(&self) -> MetricsView {
        let mut requests: Vec<RouteStatusCount> = self
            .metrics
            .requests
            .iter()
            .map(|((route, status), count)| RouteStatusCount {
                route: route.clone(),
                status: *status,
                count: *count,
            })
            .collect();
        requests.sort_by(|a, b| (&a.route, a.status).cmp(&(&b.route, b.status)));
        let mut latency: Vec<RouteLatency> = self
            .metrics
            .latency
            .iter()
            .map(|(route, ring)| RouteLatency {
                route: route.clone(),
                count: ring.count,
                p50_us: ring.percentile(0.50),
                p99_us: ring.percentile(0.99),
                max_us: ring.max,
            })
            .collect();
        latency.sort_by(|a, b| a.route.cmp(&b.route));
        let max_in_flight_per_account: BTreeMap<Uuid, u64> = self
            .metrics
            .max_in_flight
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect();
        MetricsView {
            requests,
            rate_limited: self.metrics.rate_limited,
            in_flight_rejections: self.metrics.in_flight_rejections,
            cancelled_rejections: self.metrics.cancelled_rejections,
            max_in_flight: max_in_flight_per_account
                .values()
                .copied()
                .max()
                .unwrap_or(0),
            max_in_flight_per_account,
            duplicates_rejected: self.metrics.duplicates_rejected,
            token_requests_per_client: self
                .metrics
                .token_requests
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            statements_by_final_status: self
                .metrics
                .statements_final
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            latency,
            notification_attempts: self.metrics.notification_attempts,
            violations: self.violation_count,
        }
    }

    /// Statements of an account not yet terminal (for the in-flight gauge).
    pub fn in_flight_count(&self, account: Uuid) -> u64 {
        self.statements_by_account
            .get(&account)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.statements.get(id))
                    .filter(|s| !s.status.is_terminal())
                    .count() as u64
            })
            .unwrap_or(0)
    }

    pub fn release_lock(&mut self, account: Uuid, statement: Uuid) {
        if let Some(a) = self.accounts.get_mut(&account)
            && a.in_flight == Some(statement)
        {
            a.in_flight = None;
        }
    }

    /// Creates a bank account as the product does (`pending`).
    #[allow(clippy::too_many_arguments)]
    pub fn create_account(
        &mut self,
        now: DateTime<Utc>,
        bank: &Bank,
        organisation_id: String,
        company_id: String,
        consent_group_id: Uuid,
        external_id: String,
        account_name: String,
        bank_identifier: String,
        account_identifier: String,
        branch_identifier: Option<String>,
        account_type: Option<String>,
        requested_start_date: DateTime<Utc>,
        requested_start_raw: String,
    ) -> Uuid {
        let id = self.rng.uuid();
        self.account_seq += 1;
        let acct = Account {
            id,
            bank_id: bank.id,
            provider_id: bank.provider_id,
            organisation_id,
            company_id,
            external_id,
            account_name,
            bank_identifier,
            branch_identifier,
            account_identifier,
            account_type,
            requested_start_date,
            requested_start_raw,
            status: AccountStatus::Pending,
            balances: Balances::default(),
            last_transaction_id: 0,
            last_transactions_received: None,
            consent_group_id,
            created_at: now,
            created_seq: self.account_seq,
            store: TxnStore::default(),
            in_flight: None,
            deleted_acknowledged_at: None,
        };
        self.accounts.insert(id, acct);
        self.account_order.push(id);
        id
    }

    /// A live account of the same company matches by bank + account identifier, or by external id.
    pub fn is_connected(
        &self,
        company_id: &str,
        bank_id: Uuid,
        bank_identifier: &str,
        account_identifier: &str,
        external_id: &str,
    ) -> bool {
        self.accounts.values().any(|a| {
            a.status != AccountStatus::Cancelled
                && a.company_id == company_id
                && a.bank_id == bank_id
                && ((a.bank_identifier == bank_identifier
                    && a.account_identifier == account_identifier)
                    || a.external_id == external_id)
        })
    }
}

pub fn push_capped<T>(q: &mut VecDeque<T>, cap: usize, item: T) {
    if q.len() >= cap.max(1) {
        q.pop_front();
    }
    q.push_back(item);
}

/// Everything a handler needs; one per running sandbox.
pub struct Core {
    pub cfg: SandboxConfig,
    pub base_url: String,
    pub issuer: String,
    pub state: Mutex<State>,
    pub keys: RwLock<KeySet>,
    /// A key outside the JWKS, for the "foreign key" token variant (made on first use).
    pub foreign_key: Mutex<Option<Arc<SigningKey>>>,
    pub clock: Clock,
    pub http: reqwest::Client,
    pub shutdown: watch::Sender<bool>,
    pub bank: Mutex<crate::bank::DemoBank>,
    /// Payments Out Service and the demo bank's payment rails.
    pub po: Mutex<crate::payments_out::PoState>,
}

impl Core {
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs a background task that stops when the sandbox shuts down.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut rx = self.shutdown.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = crate::server::stopped(&mut rx) => {}
            }
        });
    }

    pub fn foreign_key(&self) -> Result<Arc<SigningKey>, crate::SandboxError> {
        let mut slot = self.foreign_key.lock();
        if let Some(k) = slot.as_ref() {
            return Ok(k.clone());
        }
        let k = Arc::new(SigningKey::generate("foreign".into())?);
        *slot = Some(k.clone());
        Ok(k)
    }

    pub fn record_violation(
        &self,
        kind: ViolationKind,
        message: String,
        bank_account_id: Option<Uuid>,
        statement_id: Option<Uuid>,
        client_id: Option<String>,
    ) {
        let now = self.now();
        self.state.lock().violation(
            self.cfg.log_capacity,
            now,
            kind,
            message,
            bank_account_id,
            statement_id,
            client_id,
        );
    }
}

/// Sum of the positive and of the negative amounts.
pub fn counts_of(txns: &[ParsedTxn], account_details: u64) -> Counts {
    let mut credit = Decimal::ZERO;
    let mut debit = Decimal::ZERO;
    for t in txns {
        if t.amount.is_sign_negative() {
            debit += t.amount;
        } else {
            credit += t.amount;
        }
    }
    Counts {
        transaction_details_count: txns.len() as u64,
        account_details_count: account_details,
        transaction_credit_sum: JsonDecimal(credit),
        transaction_debit_sum: JsonDecimal(debit),
    }
}
