//! Every Payments Out wire shape the sandbox reads or writes, in one module: Sage has not
//! published full schemas, so these follow `docs/payments-out-sandbox.md` §2; when Sage's
//! reference arrives, this is the file that changes.
//!
//! Bodies that the sandbox stores and hands back as they came (provider configuration, the
//! product's payment and message `data`) stay `serde_json::Value`; statuses, PATCH bodies,
//! notifications and the bank's payment rails are typed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

// ------------------------------------------------------------------ statuses

/// Subscription statuses (published) and the provider's transitions (docs/payments-out-sandbox.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SubscriptionStatus {
    Received,
    AwaitingAuthorisation,
    Authorised,
    Cancelled,
    Rejected,
    Suspended,
    Pending,
}

impl SubscriptionStatus {
    pub fn can_move_to(self, to: SubscriptionStatus) -> bool {
        use SubscriptionStatus::*;
        if self == to {
            return true;
        }
        match self {
            Received => matches!(to, AwaitingAuthorisation | Pending | Rejected),
            AwaitingAuthorisation => matches!(to, Authorised | Pending | Rejected | Cancelled),
            Pending => matches!(to, AwaitingAuthorisation | Authorised | Rejected),
            Authorised => matches!(to, Suspended | Cancelled),
            Suspended => matches!(to, Authorised | Cancelled),
            Rejected | Cancelled => false,
        }
    }
}

/// Payment statuses (docs/payments-out-sandbox.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PaymentStatus {
    Received,
    Processing,
    Paid,
    Failed,
    Rejected,
    Cancelled,
}

impl PaymentStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Paid | Self::Failed | Self::Rejected | Self::Cancelled
        )
    }

    /// A repeated status is a no-op and allowed; `Paid` needs a completion date (checked apart).
    pub fn can_move_to(self, to: PaymentStatus) -> bool {
        use PaymentStatus::*;
        if self == to {
            return true;
        }
        match self {
            Received => matches!(to, Processing | Rejected | Cancelled),
            Processing => matches!(to, Paid | Failed | Rejected | Cancelled),
            _ => false,
        }
    }
}

/// Batch statuses (docs/payments-out-sandbox.md §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BatchStatus {
    Received,
    AwaitingAuthorisation,
    Processing,
    Paid,
    PartiallyPaid,
    Failed,
    Rejected,
    Cancelled,
    PaymentFileAvailable,
}

impl BatchStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Received | Self::AwaitingAuthorisation | Self::Processing
        )
    }

    pub fn can_move_to(self, to: BatchStatus) -> bool {
        use BatchStatus::*;
        if self == to {
            return true;
        }
        match self {
            Received | AwaitingAuthorisation => matches!(to, Processing | Rejected | Cancelled),
            Processing => matches!(to, Paid | PartiallyPaid | Failed | Rejected | Cancelled),
            _ => false,
        }
    }

    /// The payment status a batch `defaultStatus` stands for, if any.
    pub fn as_payment(self) -> Option<PaymentStatus> {
        Some(match self {
            Self::Received => PaymentStatus::Received,
            Self::Processing => PaymentStatus::Processing,
            Self::Paid => PaymentStatus::Paid,
            Self::Failed => PaymentStatus::Failed,
            Self::Rejected => PaymentStatus::Rejected,
            Self::Cancelled => PaymentStatus::Cancelled,
            _ => return None,
        })
    }

    /// The final batch value once every payment is terminal (docs/payments-out-sandbox.md §3.2).
    pub fn final_for(payments: &[PaymentStatus]) -> BatchStatus {
        let all = |s: PaymentStatus| payments.iter().all(|p| *p == s);
        if payments.is_empty() {
            return BatchStatus::Rejected;
        }
        if all(PaymentStatus::Paid) {
            BatchStatus::Paid
        } else if payments.contains(&PaymentStatus::Paid) {
            BatchStatus::PartiallyPaid
        } else if all(PaymentStatus::Cancelled) {
            BatchStatus::Cancelled
        } else if all(PaymentStatus::Rejected) {
            BatchStatus::Rejected
        } else {
            BatchStatus::Failed
        }
    }
}

/// Sage speaks of "our status flows" without publishing them: each table here, when set,
/// replaces the built-in one of that object (from → the statuses it may move to). A repeated
/// status stays a no-op either way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct StatusFlows {
    pub subscription: Option<BTreeMap<SubscriptionStatus, Vec<SubscriptionStatus>>>,
    pub payment: Option<BTreeMap<PaymentStatus, Vec<PaymentStatus>>>,
    pub batch: Option<BTreeMap<BatchStatus, Vec<BatchStatus>>>,
}

fn allows<S: Ord + Copy>(
    table: Option<&BTreeMap<S, Vec<S>>>,
    from: S,
    to: S,
    built_in: fn(S, S) -> bool,
) -> bool {
    match table {
        _ if from == to => true,
        Some(t) => t.get(&from).is_some_and(|v| v.contains(&to)),
        None => built_in(from, to),
    }
}

impl StatusFlows {
    pub fn subscription(&self, from: SubscriptionStatus, to: SubscriptionStatus) -> bool {
        allows(
            self.subscription.as_ref(),
            from,
            to,
            SubscriptionStatus::can_move_to,
        )
    }

    pub fn payment(&self, from: PaymentStatus, to: PaymentStatus) -> bool {
        allows(self.payment.as_ref(), from, to, PaymentStatus::can_move_to)
    }

    pub fn batch(&self, from: BatchStatus, to: BatchStatus) -> bool {
        allows(self.batch.as_ref(), from, to, BatchStatus::can_move_to)
    }
}

pub fn parse_status<T: for<'de> Deserialize<'de>>(s: &str) -> Option<T> {
    serde_json::from_value(Value::String(s.to_string())).ok()
}

pub fn status_str<T: Serialize>(s: T) -> String {
    match serde_json::to_value(s) {
        Ok(Value::String(s)) => s,
        _ => String::new(),
    }
}

// ------------------------------------------------------------------ Provider API

/// `links` of a subscription (and of a batch, always null in v1).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthoriseLinks {
    #[serde(default)]
    pub authorise: Option<String>,
    #[serde(default)]
    pub authorise_issued_at: Option<String>,
    #[serde(default)]
    pub authorise_expires_at: Option<String>,
}

/// `GET /subscriptions/{id}` data, also the `/subscription` delivery's `data` (without links).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionWire {
    pub subscription_id: Uuid,
    pub organisation_id: Uuid,
    pub provider_id: Uuid,
    pub status: SubscriptionStatus,
    pub additional_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<AuthoriseLinks>,
}

/// `PATCH /subscriptions/{id}` `data`: every member optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionPatch {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub links: Option<AuthoriseLinks>,
    #[serde(default)]
    pub additional_data: Option<Option<String>>,
}

/// One payment of a `PATCH /batchpayments/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPatch {
    pub payment_id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub extended_status: Option<Option<String>>,
    #[serde(default)]
    pub payment_completed_date: Option<Option<String>>,
    #[serde(default)]
    pub additional_data: Option<Option<String>>,
}

/// `PATCH /batchpayments/{id}` `data`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchPatch {
    #[serde(default)]
    pub default_status: Option<String>,
    #[serde(default)]
    pub extended_status: Option<Option<String>>,
    #[serde(default)]
    pub additional_data: Option<Option<String>>,
    #[serde(default)]
    pub payments: Vec<PaymentPatch>,
}

/// The members POS sets on a payment; the rest is the product's payment as submitted.
pub const PAYMENT_STATUS_MEMBERS: [&str; 5] = [
    "paymentId",
    "status",
    "extendedStatus",
    "paymentCompletedDate",
    "additionalData",
];

/// Provider messaging operations (provider → POS) and the product operation each answers.
pub const PROVIDER_MESSAGE_OPS: [(&str, Option<&str>); 7] = [
    ("debtoraccountputs", Some("debtoraccountputs")),
    (
        "debtoraccountlistqueryresponses",
        Some("debtoraccountlistqueries"),
    ),
    ("debtoraccountdeletes", Some("debtoraccountdeletes")),
    ("creditorputs", Some("creditorputs")),
    ("creditorlistqueryresponses", Some("creditorlistqueries")),
    ("creditordeletes", Some("creditordeletes")),
    ("notifications", None),
];

/// Product (consumer) messaging operations POS forwards to the provider's `/notifications`.
pub const PRODUCT_MESSAGE_OPS: [&str; 7] = [
    "debtoraccountputs",
    "debtoraccountlistqueries",
    "debtoraccountdeletes",
    "creditorputs",
    "creditorlistqueries",
    "creditordeletes",
    "batchpaymentcancellations",
];

/// The validation-rule `apiPath` a product message is checked against.
pub fn rule_api_paths_of(op: &str) -> &'static [&'static str] {
    match op {
        "creditorputs" => &["Creditors", "CreditorPut"],
        "debtoraccountputs" => &["DebtorAccountPut"],
        _ => &[],
    }
}

/// A messaging body, both directions: `{subscriptionId, correlationId, data}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageWire {
    pub subscription_id: Uuid,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub data: Value,
}

/// Debtor account and creditor statuses in the provider's answers.
pub const PARTY_STATUSES: [&str; 4] = ["Active", "PendingAuthorisation", "Rejected", "Deleted"];

/// What is wrong with a provider messaging answer (docs/payments-out-sandbox.md §2.3); empty
/// when it is well formed. Sage publishes few of these names, so the sandbox records a
/// violation rather than refusing the message.
pub fn message_answer_problems(op: &str, msg: &MessageWire) -> Vec<String> {
    let mut out = Vec::new();
    let answers = PROVIDER_MESSAGE_OPS
        .iter()
        .any(|(o, asked)| *o == op && asked.is_some());
    if answers && msg.correlation_id.as_deref().is_none_or(str::is_empty) {
        out.push("correlationId: an answer echoes the product's".to_string());
    }
    let d = &msg.data;
    match op {
        "debtoraccountputs" => party(d, "debtor", "debtorAccountId", &mut out),
        "creditorputs" => party(d, "creditor", "creditorId", &mut out),
        "debtoraccountlistqueryresponses" => listed(d, "debtor", "debtorAccountId", &mut out),
        "creditorlistqueryresponses" => listed(d, "creditor", "creditorId", &mut out),
        "debtoraccountdeletes" => deleted(d, "debtorAccountId", &mut out),
        "creditordeletes" => deleted(d, "creditorId", &mut out),
        "notifications" => {
            for k in ["resourceType", "resourceId", "event", "status"] {
                if !non_empty(d.get(k)) {
                    out.push(format!("data.{k}: a non-empty string"));
                }
            }
            if !d
                .get("message")
                .is_some_and(|m| m.is_string() || m.is_null())
            {
                out.push("data.message: a string or null".to_string());
            }
        }
        _ => {}
    }
    out
}

fn non_empty(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| !s.is_empty())
}

fn status_ok(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| PARTY_STATUSES.contains(&s))
}

/// `data.{key}` with its id and status; `Rejected` names a `statusReason`,
/// `PendingAuthorisation` comes with `data.links.authorise`.
fn party(d: &Value, key: &str, id: &str, out: &mut Vec<String>) {
    let Some(p) = d.get(key).filter(|p| p.is_object()) else {
        out.push(format!("data.{key}: an object"));
        return;
    };
    if !non_empty(p.get(id)) {
        out.push(format!("data.{key}.{id}: a non-empty string"));
    }
    if !status_ok(p.get("status")) {
        out.push(format!("data.{key}.status: one of {PARTY_STATUSES:?}"));
    }
    match p.get("status").and_then(Value::as_str) {
        Some("Rejected") if !non_empty(p.get("statusReason")) => {
            out.push(format!("data.{key}.statusReason: needed when Rejected"));
        }
        Some("PendingAuthorisation") if !non_empty(d.pointer("/links/authorise")) => {
            out.push("data.links.authorise: needed when PendingAuthorisation".to_string());
        }
        _ => {}
    }
}

/// One list-query answer: `query {correlationId, index, total}` and the item, null only when
/// nothing matched (`total` 0).
fn listed(d: &Value, key: &str, id: &str, out: &mut Vec<String>) {
    let q = d.get("query");
    let n = |k: &str| q.and_then(|q| q.get(k)).and_then(Value::as_u64);
    if !non_empty(q.and_then(|q| q.get("correlationId"))) {
        out.push("data.query.correlationId: a non-empty string".to_string());
    }
    match (n("index"), n("total")) {
        (Some(_), Some(0)) => {
            if !d.get(key).is_some_and(Value::is_null) {
                out.push(format!("data.{key}: null when total is 0"));
            }
        }
        (Some(i), Some(t)) if i < t => party(d, key, id, out),
        _ => out.push("data.query.index, total: integers, index below total".to_string()),
    }
}

fn deleted(d: &Value, id: &str, out: &mut Vec<String>) {
    if !non_empty(d.get(id)) {
        out.push(format!("data.{id}: a non-empty string"));
    }
    if !status_ok(d.get("status")) {
        out.push(format!("data.status: one of {PARTY_STATUSES:?}"));
    }
}

/// The `numericAmounts` fault: each payment's `instructedAmount.amount` decimal string becomes a
/// JSON number of the same value. One that a binary float cannot carry exactly (more than
/// about 15 significant digits) stays a string, so that the fault never changes an amount.
pub fn amounts_as_numbers(batch: &mut Value) {
    let Some(payments) = batch.get_mut("payments").and_then(Value::as_array_mut) else {
        return;
    };
    for p in payments {
        let Some(a) = p.pointer_mut("/instructedAmount/amount") else {
            continue;
        };
        let Some(text) = a.as_str() else { continue };
        let exact: Option<rust_decimal::Decimal> = text.parse().ok();
        let n = text
            .parse::<f64>()
            .ok()
            .filter(|f| exact.is_some() && f.to_string().parse().ok() == exact)
            .and_then(serde_json::Number::from_f64);
        if let Some(n) = n {
            *a = Value::Number(n);
        }
    }
}

// ------------------------------------------------------------------ POS → connector

/// `POST /notifications` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationWire {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_date_time: String,
    pub provider_id: Uuid,
    pub subscription_id: Option<Uuid>,
    pub organisation_id: Option<Uuid>,
    pub application: String,
    pub message: NotificationMessage,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationMessage {
    pub correlation_id: Option<String>,
    pub data: Value,
}

/// `POST /subscription` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriptionDelivery {
    pub data: SubscriptionWire,
}

// ------------------------------------------------------------------ product side

/// `POST /v3/organisations` `data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrganisationWire {
    #[serde(default)]
    pub organisation_id: Option<Uuid>,
    pub name: String,
    #[serde(default)]
    pub primary_country: Option<String>,
    #[serde(default)]
    pub default_language: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
}

/// `POST /v3/subscriptions/organisations/{organisationId}/subscriptions` `data`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSubscriptionWire {
    pub provider_id: Uuid,
    #[serde(default)]
    pub additional_data: Option<String>,
}

/// The supported local instruments and their built-in rules (docs/payments-out-sandbox.md §2.4).
pub fn local_instruments() -> Value {
    serde_json::json!([
        { "localInstrumentId": "ACH", "name": "ACH", "country": "US", "currency": "USD",
          "validationRules": [
            { "ruleId": "ach-routing-number", "validation": { "apiPath": "BatchPayments",
              "jsonPath": "$.data.payments[*].creditor.bankAccount.routingNumber", "optionality": "Required",
              "regex": "^[0-9]{9}$", "example": "021000021", "description": "ABA routing number",
              "errorMessage": "Use 9 digits" } },
            { "ruleId": "ach-account-number", "validation": { "apiPath": "BatchPayments",
              "jsonPath": "$.data.payments[*].creditor.bankAccount.accountNumber", "optionality": "Required",
              "regex": "^[0-9]{4,17}$", "example": "000123456789", "description": "Account number",
              "errorMessage": "Use 4 to 17 digits" } },
            { "ruleId": "ach-creditor-routing-number", "validation": { "apiPath": "CreditorPut",
              "jsonPath": "$.data.creditor.bankAccount.routingNumber", "optionality": "Required",
              "regex": "^[0-9]{9}$", "example": "021000021", "description": "ABA routing number",
              "errorMessage": "Use 9 digits" } } ] },
        { "localInstrumentId": "BACS", "name": "Bacs", "country": "GB", "currency": "GBP",
          "validationRules": [
            { "ruleId": "bacs-sort-code", "validation": { "apiPath": "BatchPayments",
              "jsonPath": "$.data.payments[*].creditor.bankAccount.sortCode", "optionality": "Required",
              "regex": "^[0-9]{6}$", "example": "400530", "description": "Sort code",
              "errorMessage": "Use 6 digits" } },
            { "ruleId": "bacs-account-number", "validation": { "apiPath": "BatchPayments",
              "jsonPath": "$.data.payments[*].creditor.bankAccount.accountNumber", "optionality": "Required",
              "regex": "^[0-9]{8}$", "example": "12345678", "description": "Account number",
              "errorMessage": "Use 8 digits" } } ] }
    ])
}

/// The provider configuration the sandbox starts with (docs/payments-out-sandbox.md §2.2).
pub fn initial_provider(
    provider_id: Uuid,
    notification_url: Option<&str>,
    subscription_url: Option<&str>,
    header_name: &str,
) -> Value {
    serde_json::json!({
        "providerId": provider_id, "clientID": "local-provider", "name": "Local Demo Bank Payments",
        "author": "Local Demo Bank", "country": ["US"], "defaultLanguage": "en-US",
        "supportedLanguages": ["en-US"], "logo": "https://demo-bank.invalid/logo.png",
        "logoSvg": "https://demo-bank.invalid/logo.svg", "termsOfUse": "https://demo-bank.invalid/terms",
        "privacyAgreement": "https://demo-bank.invalid/privacy",
        "notificationUrl": notification_url, "providerHeaderKeyName": header_name,
        "subscriptionUrl": subscription_url, "maximumPaymentCount": 2000,
        "localInstruments": ["ACH"], "defaultLocalInstrument": "ACH",
        "accountType": { "validationRules": [] }
    })
}

// ------------------------------------------------------------------ Bank payment rails

/// `PUT /v1/payments/{paymentId}` body (bank side).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankPaymentRequest {
    #[serde(default)]
    pub debtor_account_id: Option<String>,
    #[serde(default)]
    pub consent_id: Option<String>,
    #[serde(default)]
    pub amount: Option<Value>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub local_instrument: Option<String>,
    #[serde(default)]
    pub requested_execution_date: Option<String>,
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub batch_ref: Option<String>,
    #[serde(default)]
    pub creditor: Option<Value>,
    #[serde(default)]
    pub remittance_email: Option<String>,
}

/// Bank payment statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BankStatus {
    Accepted,
    Submitted,
    Settled,
    Failed,
    Rejected,
    Cancelled,
    Returned,
}

impl BankStatus {
    /// A status that ends the payment at Sage (`returned` follows `settled`, which did).
    pub fn is_outcome(self) -> bool {
        matches!(
            self,
            Self::Settled | Self::Failed | Self::Rejected | Self::Cancelled
        )
    }
}

/// `201`/`200` answer of the PUT.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankAccepted {
    pub payment_id: String,
    pub status: BankStatus,
    pub bank_reference: String,
    pub accepted_at: String,
}

/// `GET /v1/payments/{paymentId}` and the list items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankPaymentView {
    pub payment_id: String,
    pub status: BankStatus,
    pub bank_reference: String,
    pub completed_at: Option<String>,
    pub reason_code: Option<String>,
    pub reason_message: Option<String>,
    pub updated_at: String,
    pub event_seq: u64,
}

/// `GET /v1/payments?updatedSince=` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankPaymentList {
    pub payments: Vec<BankPaymentView>,
    pub next_cursor: Option<String>,
}

/// `POST {connector}/bank/payment-events` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankPaymentEvent {
    pub event_id: Uuid,
    pub payment_id: String,
    pub status: BankStatus,
    pub event_seq: u64,
    pub occurred_at: String,
    pub bank_reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_message: Option<String>,
}

/// `POST {connector}/bank/consent-events` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankConsentEvent {
    pub event_id: Uuid,
    pub consent_id: String,
    pub status: String,
    pub occurred_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_batch_values() {
        use PaymentStatus::*;
        assert_eq!(BatchStatus::final_for(&[Paid, Paid]), BatchStatus::Paid);
        assert_eq!(
            BatchStatus::final_for(&[Paid, Failed]),
            BatchStatus::PartiallyPaid
        );
        assert_eq!(
            BatchStatus::final_for(&[Cancelled, Cancelled]),
            BatchStatus::Cancelled
        );
        assert_eq!(BatchStatus::final_for(&[Rejected]), BatchStatus::Rejected);
        assert_eq!(
            BatchStatus::final_for(&[Rejected, Cancelled]),
            BatchStatus::Failed
        );
    }

    #[test]
    fn status_names_round_trip() {
        assert_eq!(
            status_str(SubscriptionStatus::AwaitingAuthorisation),
            "AwaitingAuthorisation"
        );
        assert_eq!(
            parse_status::<PaymentStatus>("Paid"),
            Some(PaymentStatus::Paid)
        );
        assert_eq!(parse_status::<PaymentStatus>("paid"), None);
        assert_eq!(status_str(BankStatus::Settled), "settled");
    }
}
