//! Every knob of sandbox spec §2, with its default.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The well-known local credentials (sandbox spec §3). Obviously fake; refused off loopback.
pub mod local {
    pub const CLIENT_ID: &str = "local-provider";
    pub const CLIENT_SECRET: &str = "local-secret";
    pub const API_KEY: &str = "local-api-key";
    pub const PROVIDER_AUDIENCE: &str = "sfdsbanking/sfdsBankingProvider-Pre";
    pub const NOTIFICATION_AUDIENCE: &str = "local-connector";
    pub const NOTIFICATION_AZP: &str = "local-banking-service";
    pub const PROVIDER_ID: &str = "7baf4c0d-ce95-4823-bde2-695a7c528ce9";
    pub const BANK_CLIENT_ID: &str = "local-connector";
    pub const BANK_CLIENT_SECRET: &str = "local-bank-secret";
    pub const PRODUCT_BEARER: &str = "local-product-token";
    pub const PRODUCT_APPLICATION: &str = "local-application";
    pub const PRODUCT_SIGNING_KEY: &str = "local-signing-key";
    pub const ORGANISATION_ID: &str = "local-org";
    pub const COMPANY_ID: &str = "local-company";
    /// Payments Out's Sage ID audience (docs/payments-out-sandbox.md §1).
    pub const PO_AUDIENCE: &str = crate::payments_out::defaults::AUDIENCE;
}

/// A Sage ID client and the provider it stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderClient {
    pub client_id: String,
    pub client_secret: String,
    pub allowed_audiences: Vec<String>,
    pub provider_id: Uuid,
    pub api_key: String,
    /// The audience of notifications about this provider's banks, when it is not the
    /// sandbox's `notification_audience` (a provider registered with its own settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_audience: Option<String>,
    /// The custom header on notifications about this provider's banks, when it is not the
    /// sandbox's `custom_header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_header: Option<CustomHeader>,
}

impl ProviderClient {
    pub fn local() -> Self {
        ProviderClient {
            client_id: local::CLIENT_ID.into(),
            client_secret: local::CLIENT_SECRET.into(),
            allowed_audiences: vec![local::PROVIDER_AUDIENCE.into(), local::PO_AUDIENCE.into()],
            provider_id: Uuid::parse_str(local::PROVIDER_ID).unwrap_or_default(),
            api_key: local::API_KEY.into(),
            notification_audience: None,
            custom_header: None,
        }
    }

    pub fn is_local_default(&self) -> bool {
        self.client_secret == local::CLIENT_SECRET || self.api_key == local::API_KEY
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SandboxConfig {
    /// `token.lifetime_s`
    pub token_lifetime_s: u64,
    /// `token.max_requests_per_min` per client
    pub token_max_requests_per_min: u32,
    /// Violation threshold: more than this many token requests per client within half a lifetime.
    pub token_requests_violation_threshold: u32,
    /// `ratelimit.rate_per_s` per API key (0 disables)
    pub ratelimit_rate_per_s: f64,
    /// `ratelimit.burst`
    pub ratelimit_burst: u32,
    pub statement_queue_delay_ms: u64,
    pub statement_processing_delay_ms: u64,
    pub statement_per_txn_us: u64,
    /// Jitter applied to every statement delay, in percent.
    pub statement_jitter_pct: u32,
    pub statement_max_transactions: usize,
    pub rule_too_old_days: i64,
    pub authorisation_ttl_s: u64,
    pub notification_timeout_ms: u64,
    pub notification_retries: u32,
    pub notification_backoff_ms: Vec<u64>,
    pub notification_backoff_jitter_pct: u32,
    pub availableaccounts_timeout_ms: u64,
    /// Probability (0 to 1) that each optional `additionalData` field is left out of a notification
    /// Banking Service sends in a flow (`bankId` everywhere; `requestedStartDate` of
    /// `resourceCreated/bankAccount`; `externalId` of `resourceDeleted/bankAccount`). 0 sends them
    /// all. Notifications sent explicitly through the driver are sent as asked.
    pub notification_omit_optional_rate: f64,
    pub notification_audience: String,
    pub notification_scope: String,
    pub notification_azp: String,
    pub custom_header: Option<CustomHeader>,
    pub seed: u64,
    /// Provider API audience the tokens carry.
    pub provider_audience: String,
    /// Clients registered at start (the local defaults unless replaced).
    pub clients: Vec<ProviderClient>,
    /// Request bodies above this are refused with 413.
    pub max_body_bytes: usize,
    /// Static bearer of the product view, a shortcut beside Sage's handshake (the project's tests).
    pub product_bearer: String,
    /// `x-application` of the product's Sage application (the Consumer API handshake).
    pub product_application_id: String,
    /// That application's signing key: `POST /api/v1/organisations` is signed with it.
    pub product_signing_key: String,
    pub default_organisation_id: String,
    pub default_company_id: String,
    /// The connector's client at the demo bank.
    pub bank_client_id: String,
    pub bank_client_secret: String,
    /// Seed the demo customers (`demo`, `alice`).
    pub demo_customers: bool,
    pub bank_history_days: u32,
    pub bank_consent_ttl_days: u32,
    /// Keep at most this many entries in each log (requests, notifications, violations).
    pub log_capacity: usize,
    /// Payments Out Service and the demo bank's payment rails.
    pub payments_out: crate::payments_out::PoConfig,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            token_lifetime_s: 28_800,
            token_max_requests_per_min: 30,
            token_requests_violation_threshold: 5,
            ratelimit_rate_per_s: 10.0,
            ratelimit_burst: 10,
            statement_queue_delay_ms: 100,
            statement_processing_delay_ms: 200,
            statement_per_txn_us: 500,
            statement_jitter_pct: 20,
            statement_max_transactions: 1000,
            rule_too_old_days: 14,
            authorisation_ttl_s: 1200,
            notification_timeout_ms: 5000,
            notification_retries: 3,
            notification_backoff_ms: vec![1000, 4000, 16000],
            notification_backoff_jitter_pct: 20,
            availableaccounts_timeout_ms: 10_000,
            notification_omit_optional_rate: 0.0,
            notification_audience: local::NOTIFICATION_AUDIENCE.into(),
            notification_scope: "Notification".into(),
            notification_azp: local::NOTIFICATION_AZP.into(),
            custom_header: None,
            seed: 42,
            provider_audience: local::PROVIDER_AUDIENCE.into(),
            clients: vec![ProviderClient::local()],
            max_body_bytes: 5 * 1024 * 1024,
            product_bearer: local::PRODUCT_BEARER.into(),
            product_application_id: local::PRODUCT_APPLICATION.into(),
            product_signing_key: local::PRODUCT_SIGNING_KEY.into(),
            default_organisation_id: local::ORGANISATION_ID.into(),
            default_company_id: local::COMPANY_ID.into(),
            bank_client_id: local::BANK_CLIENT_ID.into(),
            bank_client_secret: local::BANK_CLIENT_SECRET.into(),
            demo_customers: true,
            bank_history_days: 120,
            bank_consent_ttl_days: 90,
            log_capacity: 20_000,
            payments_out: crate::payments_out::PoConfig::default(),
        }
    }
}

impl SandboxConfig {
    /// Fast settings for tests: no statement delays, no rate limit, short notification back-off.
    pub fn fast() -> Self {
        SandboxConfig {
            ratelimit_rate_per_s: 0.0,
            statement_queue_delay_ms: 0,
            statement_processing_delay_ms: 0,
            statement_per_txn_us: 0,
            notification_backoff_ms: vec![10, 20, 40],
            payments_out: crate::payments_out::PoConfig::fast(),
            ..SandboxConfig::default()
        }
    }

    /// The same settings, with each optional `additionalData` field of the flows' notifications
    /// left out at `rate` (0 to 1), as Banking Service may: see
    /// [`SandboxConfig::notification_omit_optional_rate`].
    pub fn omitting_optional_fields(self, rate: f64) -> Self {
        SandboxConfig {
            notification_omit_optional_rate: rate.clamp(0.0, 1.0),
            ..self
        }
    }

    /// True when any registered client uses the well-known local credentials.
    pub fn uses_local_credentials(&self) -> bool {
        self.clients.iter().any(ProviderClient::is_local_default)
            || self.bank_client_secret == local::BANK_CLIENT_SECRET
            || self.payments_out.uses_local_credentials()
    }
}
