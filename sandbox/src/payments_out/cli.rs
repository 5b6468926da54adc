//! Payments Out flags of `sandbox` and the `sandbox driver po ...` sub-commands.

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use uuid::Uuid;

use super::PoConfig;
use super::client::PoClient;

/// Payments Out flags (each with its default).
#[derive(Args, Debug, Clone, Default)]
pub struct PoArgs {
    /// Payments Out requests per second per API key, Provider and messaging together
    /// (default 10; 0 disables).
    #[arg(long, env = "SANDBOX_PO_RATE_LIMIT")]
    pub po_rate_limit: Option<f64>,
    /// Payments Out API key (default local-pos-api-key).
    #[arg(long, env = "SANDBOX_PO_API_KEY")]
    pub po_api_key: Option<String>,
    /// Provider messaging prefix (default /api-provider-msg-v1).
    #[arg(long, env = "SANDBOX_PO_MSG_PREFIX")]
    pub po_msg_prefix: Option<String>,
    /// `aud` of the tokens sent to the connector's /notifications and /subscription
    /// (its POS_NOTIFICATION_AUDIENCE; default local-po-connector).
    #[arg(long, env = "SANDBOX_PO_NOTIFICATION_AUDIENCE")]
    pub po_notification_audience: Option<String>,
    /// `scope` of those tokens (default Notification).
    #[arg(long, env = "SANDBOX_PO_NOTIFICATION_SCOPE")]
    pub po_notification_scope: Option<String>,
    /// Value of the provider's custom header (its POS_HEADER_VALUE; default local-po-header-value).
    #[arg(long, env = "SANDBOX_PO_HEADER_VALUE")]
    pub po_header_value: Option<String>,
    /// The connector's /notifications URL, seeded into the provider configuration (default unset).
    #[arg(long, env = "SANDBOX_PO_NOTIFICATION_URL")]
    pub po_notification_url: Option<String>,
    /// The connector's /subscription URL, seeded into the provider configuration (default unset:
    /// new subscriptions go to /notifications as type `subscriptions`).
    #[arg(long, env = "SANDBOX_PO_SUBSCRIPTION_URL")]
    pub po_subscription_url: Option<String>,
    /// Demo bank: milliseconds from acceptance to settlement (default 2000).
    #[arg(long, env = "SANDBOX_PO_SETTLEMENT_DELAY_MS")]
    pub po_settlement_delay_ms: Option<u64>,
    /// Demo bank: share of payments that fail (default 0).
    #[arg(long, env = "SANDBOX_PO_FAILURE_RATE")]
    pub po_failure_rate: Option<f64>,
    /// Demo bank: share of payments rejected (default 0).
    #[arg(long, env = "SANDBOX_PO_REJECTION_RATE")]
    pub po_rejection_rate: Option<f64>,
    /// Demo bank: share of settled payments later returned (default 0).
    #[arg(long, env = "SANDBOX_PO_RETURN_RATE")]
    pub po_return_rate: Option<f64>,
    /// Demo bank: the connector's /bank/payment-events URL (default unset: events only logged).
    #[arg(long, env = "SANDBOX_PO_BANK_EVENTS_URL")]
    pub po_bank_events_url: Option<String>,
    /// Demo bank: the connector's /bank/consent-events URL (default unset).
    #[arg(long, env = "SANDBOX_PO_CONSENT_EVENTS_URL")]
    pub po_consent_events_url: Option<String>,
    /// Demo bank: x-api-key sent with its events (default local-bank-events-key).
    #[arg(long, env = "SANDBOX_PO_BANK_EVENTS_API_KEY")]
    pub po_bank_events_api_key: Option<String>,
    /// Demo bank: hold new consents for manual review (default off).
    #[arg(long, env = "SANDBOX_PO_CONSENT_REVIEW")]
    pub po_consent_review: bool,
}

impl PoArgs {
    pub fn apply(&self, c: &mut PoConfig) {
        let set = |dst: &mut Option<String>, v: &Option<String>| {
            if v.is_some() {
                dst.clone_from(v);
            }
        };
        if let Some(v) = self.po_rate_limit {
            c.rate_per_s = v;
        }
        if let Some(v) = &self.po_api_key {
            c.api_key.clone_from(v);
        }
        if let Some(v) = &self.po_msg_prefix {
            c.msg_prefix = v.trim_end_matches('/').to_string();
        }
        if let Some(v) = &self.po_notification_audience {
            c.notification_audience.clone_from(v);
        }
        if let Some(v) = &self.po_notification_scope {
            c.notification_scope.clone_from(v);
        }
        if let Some(v) = &self.po_header_value {
            c.header_value.clone_from(v);
        }
        set(&mut c.notification_url, &self.po_notification_url);
        set(&mut c.subscription_url, &self.po_subscription_url);
        if let Some(v) = self.po_settlement_delay_ms {
            c.rails.settlement_delay_ms = v;
        }
        if let Some(v) = self.po_failure_rate {
            c.rails.failure_rate = v;
        }
        if let Some(v) = self.po_rejection_rate {
            c.rails.rejection_rate = v;
        }
        if let Some(v) = self.po_return_rate {
            c.rails.return_rate = v;
        }
        set(&mut c.rails.events_url, &self.po_bank_events_url);
        set(&mut c.rails.consent_events_url, &self.po_consent_events_url);
        if let Some(v) = &self.po_bank_events_api_key {
            c.rails.events_api_key.clone_from(v);
        }
        if self.po_consent_review {
            c.rails.consent_review = true;
        }
    }
}

/// `sandbox driver po ...`: the product's side of Payments Out.
#[derive(Subcommand, Debug, Clone)]
pub enum PoCommand {
    /// Create an organisation; prints its id.
    CreateOrganisation {
        #[arg(long, default_value = "Acme Holdings LLC")]
        name: String,
    },
    /// Create a subscription to the provider (POS then calls the connector).
    Subscribe {
        #[arg(long)]
        organisation_id: Uuid,
        /// Default: the sandbox's provider.
        #[arg(long)]
        provider_id: Option<Uuid>,
        /// JSON text carried as `additionalData`.
        #[arg(long)]
        additional_data: Option<String>,
    },
    /// Submit a batch: `--file` holds the batch `data` JSON, or `--payments N` demo payments.
    SubmitBatch {
        #[arg(long)]
        subscription_id: Uuid,
        #[arg(long)]
        file: Option<String>,
        #[arg(long, default_value_t = 1)]
        payments: usize,
        #[arg(long, default_value = "100.00")]
        amount: String,
        /// The debtor account id the connector gave the product.
        #[arg(long, default_value = "dac_demo")]
        debtor_account_id: String,
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Let a bad batch through (x-sim-skip-validation).
        #[arg(long)]
        skip_validation: bool,
    },
    /// Post a consumer message (debtoraccountputs, creditorputs, ..., batchpaymentcancellations).
    Message {
        #[arg(long)]
        op: String,
        #[arg(long)]
        subscription_id: Uuid,
        #[arg(long, default_value = "cli-1")]
        correlation_id: String,
        /// The message `data` as JSON.
        #[arg(long, default_value = "{}")]
        data: String,
    },
    /// Ask for a batch to be cancelled (all non-terminal payments, or the listed ones).
    CancelBatch {
        #[arg(long)]
        subscription_id: Uuid,
        #[arg(long)]
        batch_id: Uuid,
        #[arg(long)]
        payment_id: Vec<Uuid>,
    },
    /// What POS told the product.
    Inbox,
    /// Payments Out contract violations.
    Violations,
    /// The demo bank's ledger of payments.
    Ledger,
}

/// A demo batch `data` of `n` ACH payments.
pub fn demo_batch(subscription_id: Uuid, n: usize, amount: &str, debtor: &str) -> Value {
    let payments: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "externalId": format!("BILL-{}", 10_000 + i), "localInstrument": "ACH",
                "requestedExecutionDate": "2025-03-05",
                "instructedAmount": { "amount": amount, "currency": "USD" },
                "debtor": { "debtorAccountId": debtor, "remittanceEmail": "ap@acme.test" },
                "creditor": { "creditorId": null, "name": "Northwind Supplies", "creditorType": "Organisation",
                  "postalAddress": { "addressLine1": "1 Main St", "townName": "Austin", "countrySubdivision": "TX",
                                     "postCode": "73301", "country": "US" },
                  "bankAccount": { "routingNumber": "021000021", "accountNumber": "000123456789" } },
                "remittanceInformation": { "reference": format!("BILL-{}", 10_000 + i) }
            })
        })
        .collect();
    json!({ "externalId": "AP-RUN-DEMO", "subscriptionId": subscription_id, "payments": payments })
}

fn print(v: Result<Value, String>) -> Result<(), String> {
    let v = v?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

fn answer(a: Result<super::client::PoAnswer, String>) -> Result<Value, String> {
    let a = a?;
    if (200..300).contains(&a.status) {
        Ok(a.body)
    } else {
        Err(format!("status {}: {}", a.status, a.body))
    }
}

pub async fn run(sandbox_url: String, cmd: PoCommand) -> Result<(), String> {
    let c = PoClient::new(sandbox_url);
    match cmd {
        PoCommand::CreateOrganisation { name } => {
            let id = c.create_organisation(&name).await?;
            print(Ok(json!({ "organisationId": id })))
        }
        PoCommand::Subscribe {
            organisation_id,
            provider_id,
            additional_data,
        } => {
            let provider = match provider_id {
                Some(p) => p,
                None => c
                    .get("/_sandbox/payments-out/provider")
                    .await?
                    .get("providerId")
                    .and_then(Value::as_str)
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or("no provider configured")?,
            };
            print(
                c.create_subscription(organisation_id, provider, additional_data.as_deref())
                    .await,
            )
        }
        PoCommand::SubmitBatch {
            subscription_id,
            file,
            payments,
            amount,
            debtor_account_id,
            idempotency_key,
            skip_validation,
        } => {
            let data = match file {
                Some(f) => {
                    let text = std::fs::read_to_string(&f).map_err(|e| format!("{f}: {e}"))?;
                    serde_json::from_str(&text).map_err(|e| format!("{f}: {e}"))?
                }
                None => demo_batch(subscription_id, payments, &amount, &debtor_account_id),
            };
            print(answer(
                c.submit_batch(&data, idempotency_key.as_deref(), skip_validation)
                    .await,
            ))
        }
        PoCommand::Message {
            op,
            subscription_id,
            correlation_id,
            data,
        } => {
            let data: Value = serde_json::from_str(&data).map_err(|e| format!("--data: {e}"))?;
            print(answer(
                c.message(&op, subscription_id, &correlation_id, &data)
                    .await,
            ))
        }
        PoCommand::CancelBatch {
            subscription_id,
            batch_id,
            payment_id,
        } => {
            let mut data = json!({ "batchId": batch_id });
            if !payment_id.is_empty() {
                data["paymentIds"] = json!(payment_id);
            }
            print(answer(
                c.message(
                    "batchpaymentcancellations",
                    subscription_id,
                    "cli-cancel",
                    &data,
                )
                .await,
            ))
        }
        PoCommand::Inbox => print(c.inbox().await),
        PoCommand::Violations => print(c.violations().await),
        PoCommand::Ledger => print(c.get("/_sandbox/payments-out/bank/ledger").await),
    }
}
