//! Sage's Payments Out Service, played by the sandbox (docs/payments-out-sandbox.md): the
//! Provider and provider messaging APIs, the product's side, deliveries to the connector, and
//! the demo bank's payment rails.

pub mod cli;
pub mod client;
mod control;
mod messaging;
mod notify;
mod product;
mod provider;
pub mod rails;
pub mod rules;
pub mod wire;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::Router;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::config::local;
use crate::model::RouteFault;
use crate::state::{Bucket, Core, push_capped};
use crate::util::{Rng, fmt_time};
use wire::{BatchStatus, PaymentStatus, SubscriptionStatus};

/// Well-known, obviously fake local values of Payments Out (refused off loopback like the rest).
pub mod defaults {
    pub const API_KEY: &str = "local-pos-api-key";
    pub const AUDIENCE: &str = "payments-out/local-provider";
    pub const NOTIFICATION_AUDIENCE: &str = "local-po-connector";
    pub const NOTIFICATION_AZP: &str = "local-payments-out-service";
    pub const HEADER_NAME: &str = "x-local-po-key";
    pub const HEADER_VALUE: &str = "local-po-header-value";
    pub const BANK_EVENTS_API_KEY: &str = "local-bank-events-key";
    pub const APPLICATION: &str = "sage.intacct";
}

/// Knobs of the demo bank's payment rails; also settable at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RailsConfig {
    /// From acceptance to `settled` (half of it to `submitted`).
    pub settlement_delay_ms: u64,
    pub failure_rate: f64,
    pub rejection_rate: f64,
    /// Share of settled payments later `returned`.
    pub return_rate: f64,
    pub return_delay_ms: u64,
    /// The connector's `POST /bank/payment-events` URL (unset: events are only logged).
    pub events_url: Option<String>,
    /// The connector's `POST /bank/consent-events` URL.
    pub consent_events_url: Option<String>,
    /// `x-api-key` sent with events.
    pub events_api_key: String,
    /// New consents start `pending_review`.
    pub consent_review: bool,
    /// Event pushes in flight at once (a webhook sender's bound; at least 1).
    pub events_concurrency: usize,
    /// The wait before each retry of an event push: a bank keeps trying for minutes, so that a
    /// burst the connector answers slowly is delivered late rather than lost.
    pub events_backoff_ms: Vec<u64>,
}

impl Default for RailsConfig {
    fn default() -> Self {
        RailsConfig {
            settlement_delay_ms: 2000,
            failure_rate: 0.0,
            rejection_rate: 0.0,
            return_rate: 0.0,
            return_delay_ms: 1000,
            events_url: None,
            consent_events_url: None,
            events_api_key: defaults::BANK_EVENTS_API_KEY.into(),
            consent_review: false,
            events_concurrency: 16,
            events_backoff_ms: vec![1000, 5000, 25_000, 60_000, 120_000, 300_000],
        }
    }
}

/// Every Payments Out knob, with its default (docs/payments-out-sandbox.md §1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoConfig {
    pub provider_id: Uuid,
    pub api_key: String,
    /// Sage ID audience of Provider API tokens; registered for the local provider client.
    pub audience: String,
    /// Sage ID clients allowed to act for the provider.
    pub client_ids: Vec<String>,
    pub provider_prefix: String,
    pub msg_prefix: String,
    /// Requests per second per API key, Provider and messaging together (0 disables).
    pub rate_per_s: f64,
    pub burst: u32,
    pub notification_audience: String,
    pub notification_scope: String,
    pub notification_azp: String,
    /// The custom header's value (its name is the provider's `providerHeaderKeyName`).
    pub header_value: String,
    pub notification_timeout_ms: u64,
    pub notification_retries: u32,
    pub notification_backoff_ms: Vec<u64>,
    /// Seeded into the provider configuration.
    pub notification_url: Option<String>,
    pub subscription_url: Option<String>,
    pub max_batch_payments: usize,
    pub idempotency_ttl_s: i64,
    /// "A token per request": more distinct tokens than this within half a lifetime.
    pub token_violation_threshold: usize,
    pub first_patch_target_ms: u64,
    pub outcome_patch_target_ms: u64,
    /// Record a PATCH later than its target as a violation too.
    pub lateness_is_violation: bool,
    /// How long after `authoriseExpiresAt` a link still counts as live: the connector's
    /// reconciler runs every 5 minutes, and a customer may finish a bank login begun in time.
    pub link_expiry_grace_s: u64,
    /// Transition tables replacing the built-in ones of docs/payments-out-sandbox.md §3.
    pub status_flows: wire::StatusFlows,
    pub rails: RailsConfig,
}

impl Default for PoConfig {
    fn default() -> Self {
        PoConfig {
            provider_id: Uuid::parse_str(local::PROVIDER_ID).unwrap_or_default(),
            api_key: defaults::API_KEY.into(),
            audience: defaults::AUDIENCE.into(),
            client_ids: vec![local::CLIENT_ID.into()],
            provider_prefix: "/api-provider-v1".into(),
            msg_prefix: "/api-provider-msg-v1".into(),
            rate_per_s: 10.0,
            burst: 10,
            notification_audience: defaults::NOTIFICATION_AUDIENCE.into(),
            notification_scope: String::new(),
            notification_azp: defaults::NOTIFICATION_AZP.into(),
            header_value: defaults::HEADER_VALUE.into(),
            notification_timeout_ms: 5000,
            notification_retries: 3,
            notification_backoff_ms: vec![1000, 5000, 25_000],
            notification_url: None,
            subscription_url: None,
            max_batch_payments: 2000,
            idempotency_ttl_s: 14 * 24 * 3600,
            token_violation_threshold: 5,
            first_patch_target_ms: 30_000,
            outcome_patch_target_ms: 10_000,
            lateness_is_violation: false,
            link_expiry_grace_s: 600,
            status_flows: wire::StatusFlows::default(),
            rails: RailsConfig::default(),
        }
    }
}

impl PoConfig {
    /// Test settings: no rate limit, short back-off, instant settlement.
    pub fn fast() -> Self {
        PoConfig {
            rate_per_s: 0.0,
            notification_backoff_ms: vec![10, 20, 40],
            rails: RailsConfig {
                settlement_delay_ms: 0,
                return_delay_ms: 0,
                events_backoff_ms: vec![10, 20, 40],
                ..RailsConfig::default()
            },
            ..PoConfig::default()
        }
    }

    pub fn uses_local_credentials(&self) -> bool {
        self.api_key == defaults::API_KEY
            || self.header_value == defaults::HEADER_VALUE
            || self.rails.events_api_key == defaults::BANK_EVENTS_API_KEY
    }
}

// ------------------------------------------------------------------ violations and figures

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PoViolationKind {
    IllegalTransition,
    PaidWithoutCompletionDate,
    RateExceeded,
    TokenPerRequest,
    UnknownPaymentId,
    OversizeBody,
    QuoteInInput,
    InvalidRequest,
    WrongFinalBatchStatus,
    PaymentExecutedTwice,
    LatePatch,
    LinkExpiryMissed,
    AuthorisedAfterLinkExpiry,
    InvalidMessageAnswer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoViolation {
    pub seq: u64,
    pub at: String,
    pub kind: PoViolationKind,
    pub message: String,
    #[serde(default)]
    pub batch_id: Option<Uuid>,
    #[serde(default)]
    pub payment_id: Option<String>,
    #[serde(default)]
    pub subscription_id: Option<Uuid>,
    #[serde(default)]
    pub client_id: Option<String>,
}

/// How late one PATCH came against the targets of docs/payments-out-sandbox.md §5.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatenessRecord {
    pub seq: u64,
    /// `firstPatch` (after the batch notification) or `outcome` (after the bank event).
    pub kind: String,
    pub batch_id: Uuid,
    pub payment_id: Option<Uuid>,
    pub elapsed_ms: i64,
    /// An outcome's time from the connector's acknowledgement of the bank's push (what the
    /// connector spent, without the bank's own queue); none if the PATCH came first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_push_ms: Option<i64>,
    pub target_ms: u64,
    pub late: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LatenessSummary {
    pub count: usize,
    pub late: usize,
    pub max_ms: i64,
    pub p50_ms: i64,
    pub p99_ms: i64,
    pub records: Vec<LatenessRecord>,
}

/// What POS would tell the product (`GET /sim/consumer/inbox`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxItem {
    pub seq: u64,
    pub at: String,
    /// `subscriptionStatus`, `batchStatus`, `paymentStatus` or a provider messaging operation.
    #[serde(rename = "type")]
    pub kind: String,
    pub subscription_id: Option<Uuid>,
    pub batch_id: Option<Uuid>,
    pub correlation_id: Option<String>,
    pub data: Value,
}

/// One delivery attempt to the connector (notifications, subscriptions, bank events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoDelivery {
    pub seq: u64,
    pub delivery_id: Uuid,
    pub at: String,
    pub kind: String,
    pub key: String,
    pub url: String,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: f64,
}

// ------------------------------------------------------------------ faults

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoNotificationFaults {
    /// Every delivery is sent twice.
    pub duplicate: bool,
    /// Fixed delay before each delivery.
    pub delay_ms: u64,
    /// Random extra delay in [0, reorder_window_ms): deliveries overtake each other.
    pub reorder_window_ms: u64,
    /// A 2xx answer is treated as lost (and redelivered) at this rate.
    pub lost_ack_rate: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoBankFaults {
    /// A PUT commits, then the answer is held this long and the connection closed.
    pub timeout_after_accept_ms: u64,
    /// Share of accepted PUTs that get that treatment (with `timeout_after_accept_ms` > 0).
    pub timeout_after_accept_rate: f64,
    /// Share of events pushed twice.
    pub duplicate_event_rate: f64,
    /// Random delay in [0, window) per event: events arrive out of order.
    pub reorder_event_window_ms: u64,
    /// 429 or 503 answers on the payment rails.
    pub errors: Option<PoBankErrors>,
}

/// The bank answers 429 (with `Retry-After`) or 503 before anything changes, so that the
/// connector's back-off and retry of the same request have something to meet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoBankErrors {
    /// 429 or 503.
    pub status: u16,
    /// Share of calls answered so (0 = every call while `remaining` lasts).
    pub rate: f64,
    /// `Retry-After` of a 429 (at least 1).
    pub retry_after_s: u64,
    pub remaining: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Po429 {
    pub retry_after_s: u64,
    pub remaining: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoPatch500 {
    pub rate: f64,
    pub remaining: Option<u64>,
}

/// Payments Out faults (docs/payments-out-sandbox.md §6); `PUT` replaces the set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PoFaults {
    pub notifications: PoNotificationFaults,
    /// `GET /batchpayments/{id}` answers 404 for this long after the batch's notification.
    pub batch_not_found_for_s: u64,
    /// Forced 429 with `Retry-After` on Provider and messaging calls.
    pub force_429: Option<Po429>,
    /// 5xx and slow answers per route (`*`, `PATCH /api-provider-v1/batchpayments/{batchId}`, ...).
    pub routes: Vec<RouteFault>,
    /// PATCHes applied, then answered 500.
    pub patch_applied_then_500: Option<PoPatch500>,
    /// One-shot on apply: revoke every access token issued so far.
    pub revoke_tokens: bool,
    /// One-shot on apply: rotate Sage ID's signing key.
    pub rotate_keys: bool,
    /// `GET /batchpayments/{id}` sends amounts as JSON numbers (§9.8: the connector takes both).
    pub numeric_amounts: bool,
    pub bank: PoBankFaults,
}

// ------------------------------------------------------------------ state

pub struct Organisation {
    pub wire: wire::OrganisationWire,
}

pub struct Subscription {
    pub id: Uuid,
    pub organisation_id: Uuid,
    pub provider_id: Uuid,
    pub status: SubscriptionStatus,
    pub additional_data: Option<String>,
    pub links: Option<wire::AuthoriseLinks>,
    pub application: String,
    /// `LinkExpiryMissed` was recorded for it (once per subscription).
    pub expiry_flagged: bool,
}

impl Subscription {
    /// When its authorisation link stops counting as live (expiry + grace), if it has one.
    pub fn link_dead_at(&self, grace_s: u64) -> Option<DateTime<Utc>> {
        let l = self.links.as_ref()?;
        l.authorise.as_ref()?;
        let exp = crate::util::parse_contract_time(l.authorise_expires_at.as_deref()?)?;
        Some(exp + chrono::Duration::seconds(i64::try_from(grace_s).unwrap_or(i64::MAX)))
    }

    pub fn wire(&self, with_links: bool) -> wire::SubscriptionWire {
        wire::SubscriptionWire {
            subscription_id: self.id,
            organisation_id: self.organisation_id,
            provider_id: self.provider_id,
            status: self.status,
            additional_data: self.additional_data.clone(),
            links: if with_links {
                Some(self.links.clone().unwrap_or_default())
            } else {
                None
            },
        }
    }
}

pub struct Payment {
    pub id: Uuid,
    /// The product's payment as submitted, without the members POS sets.
    pub body: serde_json::Map<String, Value>,
    pub status: PaymentStatus,
    pub extended_status: Option<String>,
    pub completed: Option<String>,
    pub additional_data: Option<String>,
}

impl Payment {
    pub fn wire(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("paymentId".into(), Value::String(self.id.to_string()));
        for (k, v) in &self.body {
            m.insert(k.clone(), v.clone());
        }
        m.insert(
            "status".into(),
            Value::String(wire::status_str(self.status)),
        );
        m.insert("extendedStatus".into(), opt(&self.extended_status));
        m.insert("paymentCompletedDate".into(), opt(&self.completed));
        m.insert("additionalData".into(), opt(&self.additional_data));
        Value::Object(m)
    }
}

fn opt(v: &Option<String>) -> Value {
    v.clone().map_or(Value::Null, Value::String)
}

pub struct Batch {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub provider_id: Uuid,
    pub subscription_id: Option<Uuid>,
    pub organisation_id: Option<Uuid>,
    pub application: String,
    pub status: BatchStatus,
    pub extended_status: Option<String>,
    pub additional_data: Option<String>,
    pub payments: Vec<Payment>,
    pub created: DateTime<Utc>,
    /// When its notification went out (lateness of the first PATCH, 404 fault window).
    pub notified_at: DateTime<Utc>,
    pub patches: u64,
    /// Provider API reads of the batch (answered or not): with `patches`, the calls it cost.
    pub gets: u64,
}

impl Batch {
    pub fn wire(&self, prefix: &str) -> Value {
        serde_json::json!({
            "batchId": self.id, "externalId": self.external_id, "providerId": self.provider_id,
            "subscriptionId": self.subscription_id, "status": wire::status_str(self.status),
            "extendedStatus": self.extended_status, "additionalData": self.additional_data,
            "paymentCount": self.payments.len(),
            "links": { "self": format!("{prefix}/batchpayments/{}", self.id), "authorise": null,
                       "authoriseIssuedAt": null, "authoriseExpiresAt": null },
            "payments": self.payments.iter().map(Payment::wire).collect::<Vec<_>>(),
        })
    }
}

pub struct Idempotent {
    pub at: DateTime<Utc>,
    pub status: u16,
    pub body: String,
}

pub struct PoState {
    pub providers: HashMap<Uuid, Value>,
    pub organisations: HashMap<Uuid, Organisation>,
    pub subscriptions: HashMap<Uuid, Subscription>,
    pub batches: HashMap<Uuid, Batch>,
    pub batch_order: Vec<Uuid>,
    /// paymentId → batchId
    pub payment_index: HashMap<Uuid, Uuid>,
    pub idempotency: HashMap<String, Idempotent>,
    pub inbox: VecDeque<InboxItem>,
    pub deliveries: VecDeque<PoDelivery>,
    pub violations: VecDeque<PoViolation>,
    pub violation_count: u64,
    pub lateness: Vec<LatenessRecord>,
    pub buckets: HashMap<String, Bucket>,
    /// client → (time, jti) of tokens presented since its last 401.
    pub tokens_seen: HashMap<String, Vec<(DateTime<Utc>, String)>>,
    pub faults: PoFaults,
    pub rails: rails::Rails,
    pub rng: Rng,
    pub seq: u64,
}

impl PoState {
    pub fn new(cfg: &PoConfig, seed: u64) -> Self {
        let mut providers = HashMap::new();
        providers.insert(
            cfg.provider_id,
            wire::initial_provider(
                cfg.provider_id,
                cfg.notification_url.as_deref(),
                cfg.subscription_url.as_deref(),
                defaults::HEADER_NAME,
            ),
        );
        PoState {
            providers,
            organisations: HashMap::new(),
            subscriptions: HashMap::new(),
            batches: HashMap::new(),
            batch_order: Vec::new(),
            payment_index: HashMap::new(),
            idempotency: HashMap::new(),
            inbox: VecDeque::new(),
            deliveries: VecDeque::new(),
            violations: VecDeque::new(),
            violation_count: 0,
            lateness: Vec::new(),
            buckets: HashMap::new(),
            tokens_seen: HashMap::new(),
            faults: PoFaults::default(),
            rails: rails::Rails::new(cfg.rails.clone()),
            rng: Rng::derived(seed, "payments-out"),
            seq: 0,
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    #[allow(clippy::too_many_arguments)]
    pub fn inbox_push(
        &mut self,
        cap: usize,
        now: DateTime<Utc>,
        kind: &str,
        subscription_id: Option<Uuid>,
        batch_id: Option<Uuid>,
        correlation_id: Option<String>,
        data: Value,
    ) {
        let seq = self.next_seq();
        push_capped(
            &mut self.inbox,
            cap,
            InboxItem {
                seq,
                at: fmt_time(now),
                kind: kind.to_string(),
                subscription_id,
                batch_id,
                correlation_id,
                data,
            },
        );
    }
}

/// Context of one violation.
#[derive(Debug, Clone, Default)]
pub struct Where {
    pub batch_id: Option<Uuid>,
    pub payment_id: Option<String>,
    pub subscription_id: Option<Uuid>,
    pub client_id: Option<String>,
}

pub fn violation(core: &Core, st: &mut PoState, kind: PoViolationKind, message: String, w: Where) {
    let seq = st.next_seq();
    st.violation_count += 1;
    push_capped(
        &mut st.violations,
        core.cfg.log_capacity,
        PoViolation {
            seq,
            at: fmt_time(core.now()),
            kind,
            message,
            batch_id: w.batch_id,
            payment_id: w.payment_id,
            subscription_id: w.subscription_id,
            client_id: w.client_id,
        },
    );
}

/// A subscription still `AwaitingAuthorisation` once its link is dead: the connector should
/// have PATCHed it `Rejected` (`AuthorisationExpired`). Checked when violations are read, so
/// that the virtual clock decides.
pub fn sweep_expired_links(core: &Core, st: &mut PoState) {
    let now = core.now();
    let grace = core.cfg.payments_out.link_expiry_grace_s;
    let mut missed = Vec::new();
    for s in st.subscriptions.values_mut() {
        if s.status == SubscriptionStatus::AwaitingAuthorisation
            && !s.expiry_flagged
            && s.link_dead_at(grace).is_some_and(|t| now > t)
        {
            s.expiry_flagged = true;
            missed.push(s.id);
        }
    }
    missed.sort();
    for id in missed {
        violation(
            core,
            st,
            PoViolationKind::LinkExpiryMissed,
            format!("subscription {id} is still AwaitingAuthorisation after its link expired"),
            Where {
                subscription_id: Some(id),
                ..Where::default()
            },
        );
    }
}

/// Is this path one of Payments Out's (Provider API or messaging)?
pub fn is_provider_path(cfg: &PoConfig, path: &str) -> bool {
    path.starts_with(&format!("{}/", cfg.provider_prefix))
        || path.starts_with(&format!("{}/", cfg.msg_prefix))
}

/// Called by the server's `Content-Length` check: an oversized Payments Out request is a violation.
pub fn note_oversized(core: &Core, path: &str) {
    if is_provider_path(&core.cfg.payments_out, path) {
        let mut st = core.po.lock();
        violation(
            core,
            &mut st,
            PoViolationKind::OversizeBody,
            format!(
                "request body over {} bytes on {path}",
                core.cfg.max_body_bytes
            ),
            Where::default(),
        );
    }
}

/// Every Payments Out route.
pub fn router(core: &Arc<Core>) -> Router<Arc<Core>> {
    provider::router(core)
        .merge(product::router())
        .merge(control::router())
        .merge(rails::router(core))
}

/// Back to the start state (part of `POST /_sandbox/reset`).
pub fn reset(core: &Core) {
    *core.po.lock() = PoState::new(&core.cfg.payments_out, core.cfg.seed);
    core.bank.lock().review_consents = core.cfg.payments_out.rails.consent_review;
}
