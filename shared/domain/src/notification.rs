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

/// A notification that passed validation (spec §4.5: only a body that is not JSON or lacks
/// `type`, `resource.id` or `resource.type` is refused; Banking Service drops a notification
/// after three failed deliveries, so anything else is taken as far as it can be used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedNotification {
    /// A kind we act on, with its idempotency key `(type, resource.type, resource.id)`, and
    /// what was wrong with optional fields that were left out (for a warning).
    Known {
        key: String,
        action: NotificationAction,
        warnings: Vec<String>,
    },
    /// A `type`/`resource.type` pair we do not know: answered 200 so that new event kinds never
    /// cause redelivery storms, logged and otherwise ignored.
    Unknown { kind: String, resource_type: String },
    /// A kind we know whose `resource.id` is not a UUID: nothing can be done with it, but
    /// refusing it would only make Banking Service retry it; answered 200 and logged.
    Unusable {
        kind: String,
        resource_type: String,
        reason: String,
    },
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

/// A required field's text; a value of another JSON type is taken as its JSON text (it is
/// present, so not one of §4.5's refusals; it can only name an unknown kind or id).
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
        Some(other) => Ok(other.to_string()),
    }
}

/// Optional fields read leniently: a malformed one is left out with a warning.
struct Optional<'a> {
    extra: &'a serde_json::Map<String, serde_json::Value>,
    warnings: Vec<String>,
}

impl Optional<'_> {
    fn keep<T>(&mut self, read: Result<Option<T>, NotificationError>) -> Option<T> {
        read.unwrap_or_else(|e| {
            self.warnings.push(format!("{e}: left out"));
            None
        })
    }

    fn uuid(&mut self, name: &'static str) -> Option<Uuid> {
        let read = optional_uuid(self.extra, name);
        self.keep(read)
    }

    fn string(&mut self, name: &'static str) -> Option<String> {
        let read = optional_string(self.extra, name);
        self.keep(read)
    }

    fn start_date(&mut self) -> Option<DateTime<Utc>> {
        let read = optional_start_date(self.extra);
        self.keep(read)
    }
}

/// Parses and validates a notification body (§4.5): an error (400) only for not JSON or a
/// missing `type`, `resource.id` or `resource.type`.
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
    let known = matches!(
        (kind.as_str(), resource_type.as_str()),
        ("resourceCreated", "authorisation")
            | ("resourceCreated", "bankAccount")
            | ("resourceDeleted", "bankAccount")
    );
    if !known {
        return Ok(ParsedNotification::Unknown {
            kind,
            resource_type,
        });
    }
    // One id however it is spelt (braces, `urn:uuid:`, no hyphens, upper case).
    let Ok(id) = Uuid::parse_str(resource_id.trim()) else {
        return Ok(ParsedNotification::Unusable {
            kind,
            resource_type,
            reason: "resource.id is not a UUID".into(),
        });
    };
    let mut optional = Optional {
        extra: &extra,
        warnings: Vec::new(),
    };
    let action = match (kind.as_str(), resource_type.as_str()) {
        ("resourceCreated", "authorisation") => NotificationAction::AuthorisationCreated {
            authorisation_id: id,
            bank_id: optional.uuid("bankId"),
        },
        ("resourceCreated", "bankAccount") => NotificationAction::BankAccountCreated {
            bank_account_id: id,
            external_id: optional.string("externalId"),
            requested_start_date: optional.start_date(),
            bank_id: optional.uuid("bankId"),
        },
        _ => NotificationAction::BankAccountDeleted {
            bank_account_id: id,
            external_id: optional.string("externalId"),
            bank_id: optional.uuid("bankId"),
        },
    };
    Ok(ParsedNotification::Known {
        key: format!("{kind}#{resource_type}#{}", id.hyphenated()),
        action,
        warnings: optional.warnings,
    })
}

fn optional_string(
    extra: &serde_json::Map<String, serde_json::Value>,
    name: &'static str,
) -> Result<Option<String>, NotificationError> {
    match extra.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) if s.is_empty() => Ok(None),
        // Kept whole even past the 255 characters Sage documents: it must match the bank's id.
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
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

/// Start of the UTC day of a date or date-time text, in the spellings Sage's services use:
/// RFC 3339 (`2025-01-01T00:00:00.000Z`, `+01:00`), an offset without a colon (`+0000`), no
/// offset at all (taken as UTC), a space for the `T`, or a plain date.
pub fn parse_start_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(start_of_day(dt.with_timezone(&Utc).date_naive()));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(dt) = DateTime::parse_from_str(text, format) {
            return Some(start_of_day(dt.with_timezone(&Utc).date_naive()));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(start_of_day(dt.date()));
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .map(start_of_day)
}

fn start_of_day(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(NaiveTime::MIN).and_utc()
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
        let ParsedNotification::Known { key, action, .. } =
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
    }

    #[test]
    fn malformed_fields_that_are_present_are_not_refused() {
        assert!(matches!(
            parse_notification(
                br#"{"type":"resourceCreated","resource":{"id":"not-a-uuid","type":"bankAccount"}}"#
            ),
            Ok(ParsedNotification::Unusable { .. })
        ));
        assert!(matches!(
            parse_notification(br#"{"type":7,"resource":{"id":"x","type":"y"}}"#),
            Ok(ParsedNotification::Unknown { .. })
        ));
        let long = "x".repeat(300);
        let body = format!(
            r#"{{"type":"resourceCreated","resource":{{"id":"{ACCOUNT}","type":"bankAccount"}},"additionalData":{{"externalId":"{long}","bankId":"bank-7","requestedStartDate":"01/02/2025"}}}}"#
        );
        let Ok(ParsedNotification::Known {
            action, warnings, ..
        }) = parse_notification(body.as_bytes())
        else {
            panic!("accepted")
        };
        assert_eq!(
            action,
            NotificationAction::BankAccountCreated {
                bank_account_id: Uuid::parse_str(ACCOUNT).unwrap(),
                external_id: Some(long),
                requested_start_date: None,
                bank_id: None,
            }
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn one_id_however_it_is_spelt_is_one_key() {
        let key = |id: &str| {
            let body = format!(
                r#"{{"type":"resourceDeleted","resource":{{"id":"{id}","type":"bankAccount"}}}}"#
            );
            match parse_notification(body.as_bytes()).unwrap() {
                ParsedNotification::Known { key, .. } => key,
                other => panic!("{other:?}"),
            }
        };
        let plain = key(ACCOUNT);
        for spelling in [
            format!("{{{ACCOUNT}}}"),
            format!("urn:uuid:{ACCOUNT}"),
            ACCOUNT.replace('-', ""),
            ACCOUNT.to_uppercase(),
        ] {
            assert_eq!(key(&spelling), plain, "{spelling}");
        }
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
        for spelling in [
            "2025-01-01",
            "2025-01-01T00:00:00Z",
            "2025-01-01T10:00:00.000+0000",
            "2025-01-01T10:00:00",
            "2025-01-01 10:00:00.123",
            "2025-01-01T01:00:00+01:00",
        ] {
            assert_eq!(
                parse_start_date(spelling)
                    .map(|d| d.to_rfc3339())
                    .as_deref(),
                Some("2025-01-01T00:00:00+00:00"),
                "{spelling}"
            );
        }
        assert!(parse_start_date("01/01/2025").is_none());
    }
}
