//! Types of the inspection and control API, shared by the server and [`crate::client::SandboxClient`].
//! Amounts are [`JsonDecimal`]: JSON numbers written and read exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::envelope::DetailItem;
pub use crate::json::JsonDecimal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccountStatus {
    Pending,
    Active,
    AuthRequired,
    Cancelled,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Pending => "pending",
            AccountStatus::Active => "active",
            AccountStatus::AuthRequired => "authRequired",
            AccountStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StatementStatus {
    Accepting,
    Queued,
    Processing,
    Succeeded,
    Failed,
    Deleted,
}

impl StatementStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementStatus::Accepting => "accepting",
            StatementStatus::Queued => "queued",
            StatementStatus::Processing => "processing",
            StatementStatus::Succeeded => "succeeded",
            StatementStatus::Failed => "failed",
            StatementStatus::Deleted => "deleted",
        }
    }

    /// Fixed per status (free text; the connector never parses it).
    pub fn reason(self) -> &'static str {
        match self {
            StatementStatus::Accepting => "This Batch is accepting parts",
            StatementStatus::Queued => "This Batch is queued for processing",
            StatementStatus::Processing => "This Batch is being processed",
            StatementStatus::Succeeded => "This Batch has been processed successfully",
            StatementStatus::Failed => "This Batch has failed processing",
            StatementStatus::Deleted => "This Batch has been deleted",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StatementStatus::Succeeded | StatementStatus::Failed | StatementStatus::Deleted
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balances {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_balance: Option<JsonDecimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_balance_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_balance: Option<JsonDecimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_balance_date: Option<String>,
}

/// Full state of a bank account as Banking Service holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub bank_account_id: Uuid,
    pub bank_id: Uuid,
    pub provider_id: Uuid,
    pub organisation_id: String,
    pub company_id: String,
    pub external_id: String,
    pub account_name: String,
    pub bank_identifier: String,
    #[serde(default)]
    pub branch_identifier: Option<String>,
    pub account_identifier: String,
    #[serde(default)]
    pub account_type: Option<String>,
    pub requested_start_date: String,
    pub status: AccountStatus,
    pub balances: Balances,
    pub last_transaction_id: u64,
    #[serde(default)]
    pub last_transactions_received: Option<String>,
    pub consent_group_id: Uuid,
    pub created_at: String,
    pub transaction_count: usize,
    #[serde(default)]
    pub in_flight_statement_id: Option<Uuid>,
}

/// One stored transaction: the posted fields as received plus its sequence id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTransaction {
    pub transaction_id: u64,
    pub unique_id: String,
    pub bank_account_id: Uuid,
    pub transaction_amount: JsonDecimal,
    pub transaction_type: String,
    pub transaction_status: String,
    pub date_posted: String,
    #[serde(default)]
    pub statement_id: Option<Uuid>,
    #[serde(default)]
    pub date_user_initiated: Option<String>,
    #[serde(default)]
    pub exchange_currency: Option<String>,
    #[serde(default)]
    pub exchange_amount: Option<JsonDecimal>,
    #[serde(default)]
    pub check_number: Option<String>,
    #[serde(default)]
    pub reference_number: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub narrative1: Option<String>,
    #[serde(default)]
    pub narrative2: Option<String>,
    #[serde(default)]
    pub payee: Option<serde_json::Value>,
    #[serde(default)]
    pub coordinates: Option<serde_json::Value>,
    #[serde(default)]
    pub category: Option<serde_json::Value>,
    #[serde(default)]
    pub provider_additional_fields: Option<serde_json::Value>,
    /// Product view only (sandbox spec §8).
    #[serde(default)]
    pub transaction_narrative: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub transaction_details_count: u64,
    pub account_details_count: u64,
    pub transaction_credit_sum: JsonDecimal,
    pub transaction_debit_sum: JsonDecimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    pub status: StatementStatus,
    pub at: String,
}

/// A statement with its history (inspection view).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementView {
    #[serde(rename = "_id")]
    pub id: Uuid,
    pub principal_id: Uuid,
    pub provider_id: Uuid,
    pub bank_id: Uuid,
    pub status: StatementStatus,
    pub status_reason: String,
    pub status_modified_date: String,
    pub created_date: String,
    pub expected: Counts,
    pub actual: Counts,
    #[serde(default)]
    pub details: Option<Vec<DetailItem>>,
    /// `accountDetails[0].status` as posted.
    pub account_status: String,
    pub history: Vec<StatusChange>,
    /// Time spent evaluating and committing, in microseconds.
    #[serde(default)]
    pub processing_us: Option<u64>,
    pub poll_count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthorisationKind {
    Onboarding,
    Reauth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AuthorisationStatus {
    Open,
    Completed,
    Expired,
}

/// An account as PATCHed by the connector (spec §6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchedAccount {
    pub bank_account_external_id: String,
    pub account_name: String,
    pub bank_identifier: String,
    #[serde(default)]
    pub branch_identifier: Option<String>,
    pub account_identifier: String,
    /// A live account of the same company matched it when the PATCH arrived.
    #[serde(default)]
    pub connected: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatchRecord {
    pub status: String,
    pub bank_accounts: Vec<PatchedAccount>,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorisationView {
    pub id: Uuid,
    pub kind: AuthorisationKind,
    pub bank_id: Uuid,
    #[serde(default)]
    pub bank_account_id: Option<Uuid>,
    pub consent_group_id: Uuid,
    pub organisation_id: String,
    pub company_id: String,
    pub created_at: String,
    pub expires_at: String,
    pub status: AuthorisationStatus,
    #[serde(default)]
    pub patch: Option<PatchRecord>,
    /// PATCH attempts refused (409 after completion or expiry).
    pub rejected_patches: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackUrls {
    pub auth: String,
    pub re_auth: String,
    pub notification: String,
    pub available_accounts: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankView {
    pub principal_id: Uuid,
    pub provider_id: Uuid,
    pub name: String,
    pub country_code: String,
    #[serde(default)]
    pub url: Option<String>,
    pub supportiframe: bool,
    pub external_ref: String,
    pub callback_urls: CallbackUrls,
    pub removed: bool,
    pub created_at: String,
}

/// One delivery attempt of an outbound call (notification or `/availableaccounts`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationAttempt {
    pub seq: u64,
    pub delivery_id: Uuid,
    pub at: String,
    /// `resourceCreated/authorisation`, `resourceCreated/bankAccount`, `resourceDeleted/bankAccount`,
    /// `availableAccounts` or `raw`.
    pub kind: String,
    #[serde(default)]
    pub resource_id: Option<String>,
    pub url: String,
    pub attempt: u32,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub error: Option<String>,
    pub latency_ms: f64,
    pub token_variant: crate::sageid::TokenVariant,
    pub header_variant: HeaderVariant,
    /// Optional `additionalData` fields left out of this notification (see
    /// `SandboxConfig::notification_omit_optional_rate`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub omitted: Vec<String>,
}

/// Which custom header a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HeaderVariant {
    /// As configured (none when no custom header is configured).
    #[default]
    Configured,
    Missing,
    WrongValue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestLogEntry {
    pub seq: u64,
    pub at: String,
    pub method: String,
    pub path: String,
    pub route: String,
    pub status: u16,
    pub latency_us: u64,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub error_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ViolationKind {
    TransactionsOutOfOrder,
    TransactionStatusNotPosted,
    DatePostedInFuture,
    DatePostedBeforeRequestedStart,
    TooManyTokenRequests,
    PollingTooFast,
    PostAfterResourceDeleted,
    /// A statement, account detail or transaction (or an object inside one) carries a key the
    /// contract does not name, a misspelling included; Banking Service ignores it.
    UnknownField,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub seq: u64,
    pub at: String,
    pub kind: ViolationKind,
    pub message: String,
    /// Where in the request (`unknownField`: the first key of its kind in the statement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default)]
    pub bank_account_id: Option<Uuid>,
    #[serde(default)]
    pub statement_id: Option<Uuid>,
    #[serde(default)]
    pub client_id: Option<String>,
}

/// A free-text field of an accepted statement longer than Banking Service stores it: accepted,
/// stored truncated to `limit` characters, and recorded here (`GET /_sandbox/overlong-fields`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlongField {
    pub seq: u64,
    pub at: String,
    pub bank_account_id: Uuid,
    pub statement_id: Uuid,
    /// Request path, e.g. `StatementRequest.data.transactionDetails[3].payee.postalCode`.
    pub path: String,
    /// Field within the transaction, e.g. `narrative1` or `payee.postalCode`.
    pub field: String,
    #[serde(default)]
    pub unique_id: Option<String>,
    /// Length received, in characters.
    pub length: usize,
    /// Length stored.
    pub limit: usize,
    #[serde(default)]
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatusCount {
    pub route: String,
    pub status: u16,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteLatency {
    pub route: String,
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricsView {
    pub requests: Vec<RouteStatusCount>,
    pub rate_limited: u64,
    pub in_flight_rejections: u64,
    pub cancelled_rejections: u64,
    /// Most statements ever in flight at once, per account (the lock keeps it at 1).
    pub max_in_flight_per_account: BTreeMap<Uuid, u64>,
    pub max_in_flight: u64,
    pub duplicates_rejected: u64,
    pub token_requests_per_client: BTreeMap<String, u64>,
    pub statements_by_final_status: BTreeMap<String, u64>,
    pub latency: Vec<RouteLatency>,
    pub notification_attempts: u64,
    pub violations: u64,
}

impl MetricsView {
    pub fn count(&self, route: &str, status: u16) -> u64 {
        self.requests
            .iter()
            .filter(|r| r.route == route && r.status == status)
            .map(|r| r.count)
            .sum()
    }
}

/// Fault knobs (sandbox spec §10). `PUT /_sandbox/faults` replaces the whole set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FaultSet {
    pub routes: Vec<RouteFault>,
    pub rate_limit: Option<RateLimitOverride>,
    pub force_429: Option<Force429>,
    /// Revoke every token issued so far when the set is applied.
    pub revoke_tokens: bool,
    /// `expires_in` (and `exp`) of newly issued access tokens.
    pub token_expires_in_s: Option<u64>,
    pub statement_hold: Option<StatementHold>,
    pub statement_fail: Option<StatementFail>,
    pub notifications: NotificationFaults,
}

/// Route keys: `*`, `METHOD /path/{template}` (e.g. `POST /v1/statements`,
/// `GET /v1/statements/{statementId}`, `POST /oauth/token`) or the path template alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RouteFault {
    pub route: String,
    pub error_rate: f64,
    pub error_status: u16,
    pub latency_ms: u64,
    pub latency_jitter_ms: u64,
    /// Apply the latency after the handler (state changed) instead of before.
    pub latency_after: bool,
    pub drop_after_commit_rate: f64,
    /// Only the next N matching requests.
    pub remaining: Option<u64>,
}

impl Default for RouteFault {
    fn default() -> Self {
        RouteFault {
            route: "*".into(),
            error_rate: 0.0,
            error_status: 500,
            latency_ms: 0,
            latency_jitter_ms: 0,
            latency_after: false,
            drop_after_commit_rate: 0.0,
            remaining: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitOverride {
    pub rate_per_s: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Force429 {
    pub retry_after_s: u64,
    #[serde(default)]
    pub remaining: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementHold {
    pub stage: StatementStatus,
    #[serde(default)]
    pub principal_id: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementFail {
    pub code: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub principal_id: Option<Uuid>,
    #[serde(default)]
    pub remaining: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NotificationFaults {
    /// Deliver every notification twice.
    pub duplicate: bool,
    /// Wait this long before the first attempt.
    pub delay_ms: u64,
}

/// `POST /_sandbox/tokens/revoke`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RevokeRequest {
    pub jti: Option<String>,
    pub client_id: Option<String>,
    pub all: bool,
}

/// `POST /_sandbox/clock`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClockRequest {
    pub set: Option<String>,
    pub advance_s: Option<i64>,
    pub reset: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockView {
    pub now: String,
    pub offset_ms: i64,
}

/// `POST /_sandbox/bankaccounts`: create an account as the product would (`pending`), and notify.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAccountRequest {
    pub bank_id: Uuid,
    pub external_id: String,
    pub requested_start_date: String,
    #[serde(default)]
    pub account_name: Option<String>,
    #[serde(default)]
    pub bank_identifier: Option<String>,
    #[serde(default)]
    pub account_identifier: Option<String>,
    #[serde(default)]
    pub branch_identifier: Option<String>,
    #[serde(default)]
    pub organisation_id: Option<String>,
    #[serde(default)]
    pub company_id: Option<String>,
    /// Send `resourceCreated/bankAccount` (default true).
    #[serde(default)]
    pub notify: Option<bool>,
    #[serde(default)]
    pub delivery: DeliveryOptions,
}

impl CreateAccountRequest {
    /// An account with only what every creation needs: no identifiers or names, notified
    /// (the default), delivered as usual.
    pub fn new(
        bank_id: Uuid,
        external_id: impl Into<String>,
        requested_start_date: impl Into<String>,
    ) -> Self {
        Self {
            bank_id,
            external_id: external_id.into(),
            requested_start_date: requested_start_date.into(),
            account_name: None,
            bank_identifier: None,
            account_identifier: None,
            branch_identifier: None,
            organisation_id: None,
            company_id: None,
            notify: None,
            delivery: DeliveryOptions::default(),
        }
    }
}

/// How an outbound notification is delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeliveryOptions {
    /// Return at once; deliver in the background.
    pub skip_wait: bool,
    /// Deliver it twice (the second after the first finished).
    pub twice: bool,
    /// Wait this long before the first attempt.
    pub delay_ms: u64,
}

/// Outcome of one delivery (all its attempts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    pub delivery_id: Uuid,
    pub kind: String,
    pub url: String,
    pub delivered: bool,
    #[serde(default)]
    pub final_status: Option<u16>,
    pub attempts: u32,
    /// Latency of the last attempt.
    pub latency_ms: f64,
    /// True when the delivery was left to run in the background.
    pub pending: bool,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateAccountResponse {
    pub account: AccountView,
    #[serde(default)]
    pub notification: Option<DeliveryReport>,
}

/// `POST /_sandbox/statements`: a statement in `accepting` (holds the account's lock).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceptingStatementRequest {
    pub principal_id: Uuid,
}

/// `POST /_sandbox/fixtures`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Fixtures {
    pub clients: Vec<crate::config::ProviderClient>,
    /// Replace the configured clients instead of adding to them.
    pub replace_clients: bool,
}
