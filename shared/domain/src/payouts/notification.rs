//! What Payments Out delivers to the connector (`POST /notifications`, `POST /subscription`),
//! read and checked before anything is stored (docs/payments-out.md §5): the work message it
//! becomes and the key that makes a redelivery a duplicate.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Bodies above Sage's limit are refused (413) before parsing.
pub const MAX_BODY: usize = 5 * 1024 * 1024;

/// The notification types the connector acts on.
pub const KNOWN_TYPES: [&str; 9] = [
    "batchpayments",
    "subscriptions",
    "debtoraccountputs",
    "debtoraccountlistqueries",
    "debtoraccountdeletes",
    "creditorputs",
    "creditorlistqueries",
    "creditordeletes",
    "batchpaymentcancellations",
];

/// Work for the Payments Out worker, as queued by the intake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum PayoutsWork {
    /// A `/notifications` delivery of a known type.
    #[serde(rename_all = "camelCase")]
    Notification {
        /// The idempotency key (`type#{batchId | subscriptionId | id}`).
        key: String,
        #[serde(rename = "type")]
        kind: String,
        id: String,
        #[serde(default)]
        subscription_id: Option<Uuid>,
        #[serde(default)]
        organisation_id: Option<Uuid>,
        /// The product that sent it: the `x-application` of the calls it leads to.
        #[serde(default)]
        application: Option<String>,
        #[serde(default)]
        correlation_id: Option<String>,
        /// `message.data`, as sent.
        data: Value,
        received_at: DateTime<Utc>,
    },
    /// A `/subscription` delivery: a new subscription to onboard.
    #[serde(rename_all = "camelCase")]
    Subscription {
        subscription_id: Uuid,
        #[serde(default)]
        organisation_id: Option<Uuid>,
        #[serde(default)]
        provider_id: Option<Uuid>,
        received_at: DateTime<Utc>,
    },
    /// A batch's outcome window (queued by the bank's events, `OUTCOME_WINDOW_S` later): PATCH
    /// what Payments Out lacks of it.
    #[serde(rename_all = "camelCase")]
    SyncBatch { batch_id: Uuid },
}

impl PayoutsWork {
    /// The idempotency key of the delivery.
    pub fn key(&self) -> String {
        match self {
            Self::Notification { key, .. } => key.clone(),
            Self::Subscription {
                subscription_id, ..
            } => format!("subscriptions#{subscription_id}"),
            Self::SyncBatch { batch_id } => format!("syncBatch#{batch_id}"),
        }
    }

    /// The `Type` dimension of the intake's metric.
    pub fn kind(&self) -> &str {
        match self {
            Self::Notification { kind, .. } => kind,
            Self::Subscription { .. } => "subscription",
            Self::SyncBatch { .. } => "syncBatch",
        }
    }
}

/// Why a delivery was refused with 400 (nothing stored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("the body is not a JSON object")]
    NotJson,
    #[error("`{0}` is missing or not a string")]
    Missing(&'static str),
    #[error("`{0}` is not a UUID")]
    NotUuid(&'static str),
}

/// A `/notifications` delivery read.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    Known(PayoutsWork),
    /// A type the connector does not act on: answered 201, logged, ignored.
    Unknown {
        kind: String,
    },
}

fn uuid_at(v: &Value, name: &'static str) -> Result<Option<Uuid>, DeliveryError> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map(Some)
            .map_err(|_| DeliveryError::NotUuid(name)),
        Some(_) => Err(DeliveryError::NotUuid(name)),
    }
}

fn text_at(v: &Value, name: &'static str) -> Result<String, DeliveryError> {
    v.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(DeliveryError::Missing(name))
}

/// Reads a `/notifications` body: `id` and `type` are required; the key is
/// `type#{batchId | subscriptionId | id}`, so that a batch is worked once however many
/// notifications name it.
pub fn parse_notification(body: &[u8], now: DateTime<Utc>) -> Result<Notification, DeliveryError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| DeliveryError::NotJson)?;
    if !v.is_object() {
        return Err(DeliveryError::NotJson);
    }
    let id = text_at(&v, "id")?;
    let kind = text_at(&v, "type")?;
    if !KNOWN_TYPES.contains(&kind.as_str()) {
        return Ok(Notification::Unknown { kind });
    }
    let subscription_id = uuid_at(&v, "subscriptionId")?;
    let message = v.get("message").cloned().unwrap_or(Value::Null);
    let data = message.get("data").cloned().unwrap_or(Value::Null);
    let batch_id = uuid_at(&data, "batchId")?;
    let about = match (kind.as_str(), batch_id, subscription_id) {
        ("batchpayments", Some(b), _) => b.to_string(),
        ("subscriptions", _, Some(s)) => s.to_string(),
        _ => id.clone(),
    };
    Ok(Notification::Known(PayoutsWork::Notification {
        key: format!("{kind}#{about}"),
        organisation_id: uuid_at(&v, "organisationId")?,
        application: v
            .get("application")
            .and_then(Value::as_str)
            .map(str::to_string),
        correlation_id: message
            .get("correlationId")
            .and_then(Value::as_str)
            .map(str::to_string),
        kind,
        id,
        subscription_id,
        data,
        received_at: now,
    }))
}

/// Reads a `/subscription` body: `data.subscriptionId` is required.
pub fn parse_subscription(body: &[u8], now: DateTime<Utc>) -> Result<PayoutsWork, DeliveryError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| DeliveryError::NotJson)?;
    let data = v
        .get("data")
        .filter(|d| d.is_object())
        .ok_or(DeliveryError::Missing("data"))?;
    Ok(PayoutsWork::Subscription {
        subscription_id: uuid_at(data, "subscriptionId")?
            .ok_or(DeliveryError::Missing("data.subscriptionId"))?,
        organisation_id: uuid_at(data, "organisationId")?,
        provider_id: uuid_at(data, "providerId")?,
        received_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_batch_notification_is_keyed_by_its_batch() {
        let batch = Uuid::new_v4();
        let sub = Uuid::new_v4();
        let body = json!({"id": "n-1", "type": "batchpayments", "subscriptionId": sub,
            "application": "sage.intacct",
            "message": {"correlationId": "c-1", "data": {"batchId": batch}}});
        let Notification::Known(work) =
            parse_notification(body.to_string().as_bytes(), now()).unwrap()
        else {
            panic!("known")
        };
        assert_eq!(work.key(), format!("batchpayments#{batch}"));
        assert_eq!(work.kind(), "batchpayments");
        let PayoutsWork::Notification {
            subscription_id,
            application,
            correlation_id,
            ..
        } = &work
        else {
            panic!("a notification")
        };
        assert_eq!(*subscription_id, Some(sub));
        assert_eq!(application.as_deref(), Some("sage.intacct"));
        assert_eq!(correlation_id.as_deref(), Some("c-1"));
        // The queued message reads back as it was.
        let text = serde_json::to_string(&work).unwrap();
        assert_eq!(serde_json::from_str::<PayoutsWork>(&text).unwrap(), work);
    }

    #[test]
    fn other_messages_are_keyed_by_their_id_and_unknown_types_are_ignored() {
        let body =
            json!({"id": "n-2", "type": "creditorputs", "message": {"data": {"creditor": {}}}});
        let Notification::Known(work) =
            parse_notification(body.to_string().as_bytes(), now()).unwrap()
        else {
            panic!("known")
        };
        assert_eq!(work.key(), "creditorputs#n-2");
        let body = json!({"id": "n-3", "type": "somethingnew"});
        assert_eq!(
            parse_notification(body.to_string().as_bytes(), now()).unwrap(),
            Notification::Unknown {
                kind: "somethingnew".into()
            }
        );
    }

    #[test]
    fn malformed_deliveries_name_what_is_wrong() {
        let parse = |v: Value| parse_notification(v.to_string().as_bytes(), now());
        assert_eq!(parse_notification(b"{", now()), Err(DeliveryError::NotJson));
        assert_eq!(parse(json!([1])), Err(DeliveryError::NotJson));
        assert_eq!(
            parse(json!({"type": "batchpayments"})),
            Err(DeliveryError::Missing("id"))
        );
        assert_eq!(
            parse(json!({"id": "x"})),
            Err(DeliveryError::Missing("type"))
        );
        assert_eq!(
            parse(
                json!({"id": "x", "type": "batchpayments", "message": {"data": {"batchId": "nope"}}})
            ),
            Err(DeliveryError::NotUuid("batchId"))
        );
        let sub = |v: Value| parse_subscription(v.to_string().as_bytes(), now());
        assert_eq!(sub(json!({})), Err(DeliveryError::Missing("data")));
        assert_eq!(
            sub(json!({"data": {}})),
            Err(DeliveryError::Missing("data.subscriptionId"))
        );
        let id = Uuid::new_v4();
        assert_eq!(
            sub(json!({"data": {"subscriptionId": id}})).unwrap().key(),
            format!("subscriptions#{id}")
        );
    }
}
