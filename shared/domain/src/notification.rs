//! Notifications from Banking Service (spec §4.5 and §5).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a body is refused with 400. Everything else is accepted (unknown kinds are ignored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the body is not a JSON object")]
    NotJson,
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    #[error("field `{0}` is malformed")]
    InvalidField(&'static str),
}

impl NotificationError {
    /// The field the error is about, for the `detail.target` of the error body.
    pub fn target(&self) -> Option<&'static str> {
        match self {
            Self::NotJson => None,
            Self::MissingField(f) | Self::InvalidField(f) => Some(f),
        }
    }
}

/// What a notification asks the connector to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum NotificationAction {
    /// §5 row 1: an onboarding or re-authorisation is about to send a browser to us.
    #[serde(rename_all = "camelCase")]
    AuthorisationCreated {
        authorisation_id: Uuid,
        bank_id: Option<Uuid>,
    },
    /// §5 rows 2 and 3: a product created or linked an account.
    #[serde(rename_all = "camelCase")]
    BankAccountCreated {
        bank_account_id: Uuid,
        external_id: Option<String>,
        requested_start_date: Option<DateTime<Utc>>,
        bank_id: Option<Uuid>,
    },
    /// §5 row 4: the product deleted the account (offboarding).
    #[serde(rename_all = "camelCase")]
    BankAccountDeleted {
        bank_account_id: Uuid,
        external_id: Option<String>,
        bank_id: Option<Uuid>,
    },
}

impl NotificationAction {
    /// `type.resourceType` of the notification, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            NotificationAction::AuthorisationCreated { .. } => "created.authorisation",
            NotificationAction::BankAccountCreated { .. } => "created.bankAccount",
            NotificationAction::BankAccountDeleted { .. } => "deleted.bankAccount",
        }
    }
}

/// A notification that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedNotification {
    /// A kind we act on, with its idempotency key `(type, resource.type, resource.id)`.
    Known {
        key: String,
        action: NotificationAction,
    },
    /// A `type`/`resource.type` pair we do not know: answered 200 so that new event kinds never
    /// cause redelivery storms, logged and otherwise ignored.
    Unknown { kind: String, resource_type: String },
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    resource: Option<WireResource>,
    #[serde(rename = "additionalData", default)]
    additional: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct WireResource {
    id: Option<serde_json::Value>,
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
}

fn required_str(
    v: Option<serde_json::Value>,
    name: &'static str,
) -> Result<String, NotificationError> {
    match v {
        None | Some(serde_json::Value::Null) => Err(NotificationError::MissingField(name)),
        Some(serde_json::Value::String(s)) if s.trim().is_empty() => {
            Err(NotificationError::MissingField(name))
        }
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(NotificationError::InvalidField(name)),
    }
}

/// Parses and validates a notification body (§4.5): 400 for not JSON or a missing `type`,
/// `resource.id` or `resource.type`; a known kind also needs a UUID `resource.id`.
pub fn parse_notification(body: &[u8]) -> Result<ParsedNotification, NotificationError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| NotificationError::NotJson)?;
    if !value.is_object() {
        return Err(NotificationError::NotJson);
    }
    let wire: Wire = serde_json::from_value(value).map_err(|_| NotificationError::NotJson)?;
    let kind = required_str(wire.kind, "type")?;
    let resource = wire
        .resource
        .ok_or(NotificationError::MissingField("resource"))?;
    let resource_id = required_str(resource.id, "resource.id")?;
    let resource_type = required_str(resource.kind, "resource.type")?;
    let extra = wire.additional.unwrap_or_default();

    let uuid_of = |s: &str, field: &'static str| {
        Uuid::parse_str(s.trim()).map_err(|_| NotificationError::InvalidField(field))
    };
    let action = match (kind.as_str(), resource_type.as_str()) {
        ("resourceCreated", "authorisation") => NotificationAction::AuthorisationCreated {
            authorisation_id: uuid_of(&resource_id, "resource.id")?,
            bank_id: optional_uuid(&extra, "bankId")?,
        },
        ("resourceCreated", "bankAccount") => NotificationAction::BankAccountCreated {
            bank_account_id: uuid_of(&resource_id, "resource.id")?,
            external_id: optional_string(&extra, "externalId")?,
            requested_start_date: optional_start_date(&extra)?,
            bank_id: optional_uuid(&extra, "bankId")?,
        },
        ("resourceDeleted", "bankAccount") => NotificationAction::BankAccountDeleted {
            bank_account_id: uuid_of(&resource_id, "resource.id")?,
            external_id: optional_string(&extra, "externalId")?,
            bank_id: optional_uuid(&extra, "bankId")?,
        },
        _ => {
            return Ok(ParsedNotification::Unknown {
                kind,
                resource_type,
            });
        }
    };
    Ok(ParsedNotification::Known {
        key: format!(
            "{kind}#{resource_type}#{}",
            resource_id.trim().to_ascii_lowercase()
        ),
        action,
    })
}

fn optional_string(
    extra: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<String>, NotificationError> {
    match extra.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        // The spec's limit for external ids is 255 characters.
        Some(serde_json::Value::String(s)) if s.chars().count() <= 255 => Ok(Some(s.clone())),
        Some(_) => Err(NotificationError::InvalidField(match name {
            "externalId" => "additionalData.externalId",
            _ => "additionalData",
        })),
    }
}

fn optional_uuid(
    extra: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<Uuid>, NotificationError> {
    match extra.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => Uuid::parse_str(s.trim())
            .map(Some)
            .map_err(|_| NotificationError::InvalidField("additionalData.bankId")),
        Some(_) => Err(NotificationError::InvalidField("additionalData.bankId")),
    }
}

/// `requestedStartDate` is a date or a date-time; the start of that day in UTC counts (§5).
fn optional_start_date(
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<Option<DateTime<Utc>>, NotificationError> {
    const FIELD: &str = "additionalData.requestedStartDate";
    match extra.get("requestedStartDate") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        Some(serde_json::Value::String(s)) => parse_start_date(s)
            .map(Some)
            .ok_or(NotificationError::InvalidField(FIELD)),
        Some(_) => Err(NotificationError::InvalidField(FIELD)),
    }
}

/// Start of the UTC day of a date or date-time text.
pub fn parse_start_date(text: &str) -> Option<DateTime<Utc>> {
    let day = if let Ok(dt) = DateTime::parse_from_rfc3339(text.trim()) {
        dt.with_timezone(&Utc).date_naive()
    } else {
        NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?
    };
    Some(day.and_time(NaiveTime::MIN).and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANK: &str = "5f775565-62d9-4d03-aca0-5365ad75ac07";
    const ACCOUNT: &str = "6269cfb9-922c-4023-833d-97586646fad1";

    #[test]
    fn parses_each_kind_of_section_5() {
        let auth = format!(
            r#"{{"type":"resourceCreated","resource":{{"id":"7f353233-2d17-4a3c-a3c5-1276dea5ffc3","type":"authorisation","url":"NA"}},"additionalData":{{"bankId":"{BANK}"}}}}"#
        );
        let ParsedNotification::Known { key, action } =
            parse_notification(auth.as_bytes()).unwrap()
        else {
            panic!("known kind")
        };
        assert_eq!(
            key,
            "resourceCreated#authorisation#7f353233-2d17-4a3c-a3c5-1276dea5ffc3"
        );
        assert!(matches!(
            action,
            NotificationAction::AuthorisationCreated {
                bank_id: Some(_),
                ..
            }
        ));

        let created = format!(
            r#"{{"type":"resourceCreated","resource":{{"id":"{ACCOUNT}","type":"bankAccount","url":""}},"additionalData":{{"externalId":"acc_5QH7K2","requestedStartDate":"2025-01-01T10:00:00.000Z","bankId":"{BANK}"}}}}"#
        );
        let ParsedNotification::Known { action, .. } =
            parse_notification(created.as_bytes()).unwrap()
        else {
            panic!("known kind")
        };
        assert_eq!(
            action,
            NotificationAction::BankAccountCreated {
                bank_account_id: Uuid::parse_str(ACCOUNT).unwrap(),
                external_id: Some("acc_5QH7K2".into()),
                requested_start_date: parse_start_date("2025-01-01"),
                bank_id: Some(Uuid::parse_str(BANK).unwrap()),
            }
        );

        let deleted = format!(
            r#"{{"type":"resourceDeleted","resource":{{"id":"{ACCOUNT}","type":"bankAccount"}}}}"#
        );
        assert!(matches!(
            parse_notification(deleted.as_bytes()).unwrap(),
            ParsedNotification::Known {
                action: NotificationAction::BankAccountDeleted {
                    external_id: None,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn refuses_what_section_4_5_refuses() {
        assert_eq!(
            parse_notification(b"not json"),
            Err(NotificationError::NotJson)
        );
        assert_eq!(parse_notification(b"[1]"), Err(NotificationError::NotJson));
        assert_eq!(
            parse_notification(br#"{"resource":{"id":"x","type":"bankAccount"}}"#),
            Err(NotificationError::MissingField("type"))
        );
        assert_eq!(
            parse_notification(br#"{"type":"resourceCreated","resource":{"type":"bankAccount"}}"#),
            Err(NotificationError::MissingField("resource.id"))
        );
        assert_eq!(
            parse_notification(br#"{"type":"resourceCreated","resource":{"id":"x"}}"#),
            Err(NotificationError::MissingField("resource.type"))
        );
        assert_eq!(
            parse_notification(
                br#"{"type":"resourceCreated","resource":{"id":"not-a-uuid","type":"bankAccount"}}"#
            ),
            Err(NotificationError::InvalidField("resource.id"))
        );
        assert_eq!(
            parse_notification(br#"{"type":7,"resource":{"id":"x","type":"y"}}"#),
            Err(NotificationError::InvalidField("type"))
        );
    }

    #[test]
    fn unknown_pairs_are_accepted_and_ignored() {
        let parsed = parse_notification(
            br#"{"type":"resourceUpdated","resource":{"id":"x","type":"bankAccount"}}"#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            ParsedNotification::Unknown {
                kind: "resourceUpdated".into(),
                resource_type: "bankAccount".into()
            }
        );
    }

    #[test]
    fn start_dates_are_the_start_of_the_utc_day() {
        let d = parse_start_date("2025-01-01T23:59:00.000Z").unwrap();
        assert_eq!(d.to_rfc3339(), "2025-01-01T00:00:00+00:00");
        assert!(parse_start_date("01/01/2025").is_none());
    }
}
