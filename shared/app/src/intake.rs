//! `POST /notification` (spec §4.5, invariant 6): verify, validate, de-duplicate, enqueue,
//! answer — no Provider API call on the request path.

use std::sync::Arc;

use connector_domain::messages::WorkMessage;
use connector_domain::notification::{
    NotificationAction, NotificationError, ParsedNotification, parse_notification,
};
use connector_domain::ports::{AuthRejection, BankingServiceAuth, Clock, OnceClaims, Timers};
use http::HeaderMap;

use crate::once::Stored;

/// Bodies above this are refused before parsing (real notifications are a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Queued for the worker; the notification's kind (`created.bankAccount`, ...).
    Enqueued(&'static str),
    Duplicate(&'static str),
    /// An unknown `type`/`resource.type` pair: answered 200, logged, ignored.
    Ignored,
    /// A known kind that cannot be acted on (its `resource.id` is not a UUID): answered 200 so
    /// that it is not redelivered in vain, logged with a warning.
    Unusable(&'static str),
}

impl Accepted {
    /// The (outcome, kind) dimensions of the `Notifications` metric.
    pub fn dimensions(&self) -> (&'static str, &'static str) {
        match self {
            Accepted::Enqueued(kind) => ("enqueued", kind),
            Accepted::Duplicate(kind) => ("duplicate", kind),
            Accepted::Ignored => ("ignored", "unknown"),
            Accepted::Unusable(kind) => ("unusable", kind),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Refused (401, the check logged) or not checkable now (503).
    #[error("unauthorised: {0}")]
    Unauthorised(AuthRejection),
    #[error("invalid notification: {0}")]
    Invalid(NotificationError),
    #[error("body too large")]
    TooLarge,
    /// Could not store it: answered 5xx so that Banking Service retries.
    #[error("could not store the notification: {0}")]
    Unavailable(String),
}

pub struct NotificationIntake {
    pub auth: Arc<dyn BankingServiceAuth>,
    /// Do-once claims on each notification's key (the table).
    pub once: Arc<dyn OnceClaims>,
    /// The work queue.
    pub queues: Arc<dyn Timers>,
    pub clock: Arc<dyn Clock>,
}

/// The `bankId` a notification body names, read only to choose which bank's settings verify it
/// (nothing of it is stored or trusted before verification).
pub fn named_bank(body: &[u8]) -> Option<uuid::Uuid> {
    #[derive(serde::Deserialize)]
    struct Body {
        #[serde(rename = "additionalData")]
        additional_data: Option<Additional>,
    }
    #[derive(serde::Deserialize)]
    struct Additional {
        #[serde(rename = "bankId")]
        bank_id: Option<serde_json::Value>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let id = body.additional_data?.bank_id?;
    uuid::Uuid::parse_str(id.as_str()?.trim()).ok()
}

impl NotificationIntake {
    pub async fn handle(&self, headers: &HeaderMap, body: &[u8]) -> Result<Accepted, IntakeError> {
        // Authenticate before reading the body: nothing from an unauthenticated caller is parsed
        // or stored.
        // With several banks' settings, the `bankId` the body names (if any) chooses whose
        // settings verify it; nothing of the body is stored or acted on before that.
        let named = if self.auth.several() && body.len() <= MAX_BODY {
            named_bank(body)
        } else {
            None
        };
        let sender = self
            .auth
            .verify(headers, named)
            .await
            .map_err(IntakeError::Unauthorised)?;
        if body.len() > MAX_BODY {
            return Err(IntakeError::TooLarge);
        }
        let parsed = parse_notification(body).map_err(IntakeError::Invalid)?;
        let (key, action) = match actionable(parsed) {
            Ok(known) => known,
            Err(answered) => return Ok(answered),
        };
        tracing::info!(notification = %key, jti = sender.token_id.as_deref().unwrap_or(""), "notification verified");
        self.enqueue_once(key, action, sender.bank_id).await
    }

    /// Queues the notification for the worker, once per key whatever is redelivered.
    async fn enqueue_once(
        &self,
        key: String,
        action: NotificationAction,
        verified_bank_id: Option<uuid::Uuid>,
    ) -> Result<Accepted, IntakeError> {
        let payload =
            serde_json::to_vec(&action).map_err(|e| IntakeError::Unavailable(e.to_string()))?;
        let kind = action.kind();
        let now = self.clock.now();
        let message = WorkMessage::Notification {
            key: key.clone(),
            action,
            received_at: now,
            verified_bank_id,
        };
        let stored = crate::once::once(
            self.once.as_ref(),
            &key,
            &payload,
            now,
            self.queues.send_work(&message),
        )
        .await
        .map_err(IntakeError::Unavailable)?;
        Ok(match stored {
            Stored::New => Accepted::Enqueued(kind),
            Stored::Duplicate => Accepted::Duplicate(kind),
        })
    }
}

/// A known notification's key and action; else how one of an unknown kind, or of a known kind
/// that cannot be acted on, is answered: 200 (so that it is not redelivered in vain), logged.
fn actionable(parsed: ParsedNotification) -> Result<(String, NotificationAction), Accepted> {
    match parsed {
        ParsedNotification::Known {
            key,
            action,
            warnings,
        } => {
            for warning in &warnings {
                tracing::warn!(notification = %key, %warning, "optional field left out");
            }
            Ok((key, action))
        }
        ParsedNotification::Unknown {
            kind,
            resource_type,
        } => {
            tracing::warn!(kind, resource_type, "unknown notification kind ignored");
            Err(Accepted::Ignored)
        }
        ParsedNotification::Unusable {
            kind,
            resource_type,
            reason,
        } => {
            tracing::warn!(kind, resource_type, %reason, "notification cannot be acted on");
            Err(Accepted::Unusable(
                match (kind.as_str(), resource_type.as_str()) {
                    (_, "authorisation") => "created.authorisation",
                    ("resourceCreated", _) => "created.bankAccount",
                    _ => "deleted.bankAccount",
                },
            ))
        }
    }
}

#[cfg(test)]
#[path = "intake_tests.rs"]
mod tests;

#[cfg(test)]
mod named_bank_tests {
    use super::named_bank;

    const A: &str = "5f775565-62d9-4d03-aca0-5365ad75ac07";

    #[test]
    fn the_named_bank_is_read_leniently() {
        let id = uuid::Uuid::parse_str(A).unwrap();
        let body = format!(r#"{{"type":"x","additionalData":{{"bankId":" {A} "}}}}"#);
        assert_eq!(named_bank(body.as_bytes()), Some(id));
        for body in [
            r#"{"additionalData":{"bankId":42}}"#,
            r#"{"additionalData":{}}"#,
            r#"{"additionalData":null}"#,
            "not json",
        ] {
            assert_eq!(named_bank(body.as_bytes()), None, "{body}");
        }
    }
}
