//! Every Payments Out wire shape the connector reads or writes, in one module: Sage has not
//! published full schemas (the shapes decided here are those of docs/payments-out-sandbox.md §2), so when its reference arrives this is the file
//! that changes. What the connector passes through untouched (the creditor, the debtor, the
//! provider configuration) stays `serde_json::Value`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

pub use connector_domain::payouts::checks::Amount;
pub use connector_domain::payouts::status::{BatchStatus, PaymentStatus, SubscriptionStatus};

/// `GET /batchpayments/{batchId}` → `data`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    pub batch_id: Uuid,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub provider_id: Option<Uuid>,
    pub subscription_id: Uuid,
    pub status: BatchStatus,
    #[serde(default)]
    pub extended_status: Option<String>,
    #[serde(default)]
    pub payments: Vec<Payment>,
}

/// One payment of a batch.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub payment_id: Uuid,
    #[serde(default)]
    pub external_id: Option<String>,
    pub status: PaymentStatus,
    #[serde(default)]
    pub local_instrument: Option<String>,
    #[serde(default)]
    pub requested_execution_date: Option<String>,
    pub instructed_amount: InstructedAmount,
    #[serde(default)]
    pub debtor: Value,
    #[serde(default)]
    pub creditor: Value,
    #[serde(default)]
    pub remittance_information: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InstructedAmount {
    #[serde(deserialize_with = "literal_amount")]
    pub amount: Amount,
    pub currency: String,
}

fn literal_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
    let raw: Box<RawValue> = Deserialize::deserialize(d)?;
    let text = raw.get();
    let literal = match serde_json::from_str::<String>(text) {
        Ok(s) => s,
        Err(_) => text.to_string(),
    };
    Ok(Amount::from_literal(&literal))
}

/// `PATCH /batchpayments/{batchId}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchPatch {
    pub data: BatchPatchData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchPatchData {
    /// The batch status.
    pub default_status: BatchStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_status: Option<String>,
    pub payments: Vec<PaymentPatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPatch {
    pub payment_id: Uuid,
    pub status: PaymentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_completed_date: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_data: Option<String>,
}

/// `GET /subscriptions/{subscriptionId}` → `data`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub subscription_id: Uuid,
    #[serde(default)]
    pub organisation_id: Option<Uuid>,
    #[serde(default)]
    pub provider_id: Option<Uuid>,
    pub status: SubscriptionStatus,
    /// JSON in a string, as Sage sends it.
    #[serde(default)]
    pub additional_data: Option<String>,
}

/// `PATCH /subscriptions/{subscriptionId}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionPatch {
    pub data: SubscriptionPatchData,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionPatchData {
    pub status: SubscriptionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<AuthoriseLinks>,
    /// A reason, as JSON in a string (`{"reason":"AuthorisationExpired"}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub additional_data: Option<String>,
}

/// The authorisation link the connector minted, and its lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthoriseLinks {
    pub authorise: String,
    pub authorise_issued_at: DateTime<Utc>,
    pub authorise_expires_at: DateTime<Utc>,
}

/// A message to the product through the messaging API: `POST {prefix}/{op}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub subscription_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    pub data: Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(json: &str) -> Amount {
        let v: InstructedAmount =
            serde_json::from_str(&format!(r#"{{"amount": {json}, "currency": "USD"}}"#)).unwrap();
        v.amount
    }

    fn exact(text: &str) -> Option<rust_decimal::Decimal> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn amounts_are_read_exactly_from_their_literal_text() {
        assert_eq!(amount(r#""1250.00""#).value, exact("1250.00"));
        // A number is read from its text, not through a float: 2^53 + 1 stays odd.
        assert_eq!(amount("9007199254740993").value, exact("9007199254740993"));
        assert_eq!(amount("12.5").literal, "12.5");
        assert_eq!(amount("1e3").value, None);
        assert_eq!(amount(r#""ten""#).literal, "ten");
        assert_eq!(amount(r#""ten""#).value, None);
    }

    #[test]
    fn a_batch_patch_names_the_batch_status_and_each_payment() {
        let id = Uuid::nil();
        let patch = BatchPatch {
            data: BatchPatchData {
                default_status: BatchStatus::Processing,
                extended_status: None,
                payments: vec![PaymentPatch {
                    payment_id: id,
                    status: PaymentStatus::Rejected,
                    extended_status: Some("ValidationFailed: eb-ach-routing".into()),
                    payment_completed_date: None,
                    additional_data: None,
                }],
            },
        };
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!({"data": {"defaultStatus": "Processing", "payments": [
                {"paymentId": id, "status": "Rejected",
                 "extendedStatus": "ValidationFailed: eb-ach-routing"}]}})
        );
    }
}
