//! Payments Out's deliveries: `POST /notifications` and `POST /subscription` (docs/payments-out.md
//! §5). Verify the custom header and the Sage ID token, refuse what is too large or malformed
//! with nothing stored, store each delivery once and queue it for the worker, answer fast — no
//! call to Sage or the bank on the request path.

use std::sync::Arc;

use connector_domain::payouts::notification::{
    DeliveryError, MAX_BODY, Notification, PayoutsWork, parse_notification, parse_subscription,
};
use connector_domain::ports::{AuthRejection, Clock, DeliveryAuth, OnceClaims, PayoutsQueue};
use http::HeaderMap;

use crate::once::{Stored, once};

/// Which endpoint a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Notifications,
    Subscription,
}

/// What happened to an accepted delivery (all answered 201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Queued for the worker: the delivery's type.
    Queued(String),
    Duplicate(String),
    /// A type the connector does not act on: logged and ignored.
    Ignored(String),
}

impl Accepted {
    /// The (outcome, type) dimensions of the `PayoutsDeliveries` metric.
    pub fn dimensions(&self) -> (&'static str, &str) {
        match self {
            Self::Queued(t) => ("queued", t),
            Self::Duplicate(t) => ("duplicate", t),
            Self::Ignored(t) => ("ignored", t),
        }
    }
}

/// Why a delivery was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 401, nothing read.
    #[error("unauthorised")]
    Unauthorised,
    /// 413.
    #[error("body too large")]
    TooLarge,
    /// 400 with the reason.
    #[error("invalid: {0}")]
    Invalid(DeliveryError),
    /// 503: not stored; Sage retries.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

pub struct PayoutsIntake {
    pub auth: Arc<dyn DeliveryAuth>,
    pub claims: Arc<dyn OnceClaims>,
    pub queue: Arc<dyn PayoutsQueue>,
    pub clock: Arc<dyn Clock>,
}

impl PayoutsIntake {
    pub async fn handle(
        &self,
        endpoint: Endpoint,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Accepted, Refusal> {
        // Authenticate before reading the body: nothing from an unauthenticated caller is parsed
        // or stored.
        match self.auth.verify(headers).await {
            Ok(()) => {}
            Err(AuthRejection::Refused(_)) => return Err(Refusal::Unauthorised),
            Err(AuthRejection::Unavailable(e)) => return Err(Refusal::Unavailable(e)),
        }
        if body.len() > MAX_BODY {
            return Err(Refusal::TooLarge);
        }
        let now = self.clock.now();
        let work = match endpoint {
            Endpoint::Subscription => parse_subscription(body, now),
            Endpoint::Notifications => match parse_notification(body, now) {
                Ok(Notification::Known(work)) => Ok(work),
                Ok(Notification::Unknown { kind }) => {
                    tracing::warn!(kind, "notification type not acted on: ignored");
                    return Ok(Accepted::Ignored(kind));
                }
                Err(e) => Err(e),
            },
        }
        .map_err(Refusal::Invalid)?;
        self.store(work).await
    }

    /// Queues the delivery once per key: a redelivery, or a second notification of the same
    /// batch, is a duplicate.
    async fn store(&self, work: PayoutsWork) -> Result<Accepted, Refusal> {
        let key = work.key();
        let kind = work.kind().to_string();
        // What identifies the content: the message without the time it arrived, nor the
        // notification's own id (two notifications of one batch are the same work).
        let mut payload = work.clone();
        match &mut payload {
            PayoutsWork::Notification {
                received_at, id, ..
            } => {
                *received_at = Default::default();
                id.clear();
            }
            PayoutsWork::Subscription { received_at, .. } => *received_at = Default::default(),
            // Queued by the connector itself, never a delivery.
            PayoutsWork::SyncBatch { .. } => {}
        }
        let payload =
            serde_json::to_vec(&payload).map_err(|e| Refusal::Unavailable(e.to_string()))?;
        let stored = once(
            &*self.claims,
            &key,
            &payload,
            self.clock.now(),
            self.queue.send(&work),
        )
        .await
        .map_err(Refusal::Unavailable)?;
        tracing::info!(key, outcome = ?stored, "Payments Out delivery stored");
        Ok(match stored {
            Stored::New => Accepted::Queued(kind),
            Stored::Duplicate => Accepted::Duplicate(kind),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::{DateTime, Utc};
    use connector_domain::ports::{BoxFuture, QueueError};
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::fakes::{ManualClock, MemoryStore};

    struct Auth(Option<AuthRejection>);

    impl DeliveryAuth for Auth {
        fn verify<'a>(&'a self, _: &'a HeaderMap) -> BoxFuture<'a, Result<(), AuthRejection>> {
            let answer = self.0.clone();
            Box::pin(async move { answer.map_or(Ok(()), Err) })
        }
    }

    #[derive(Default)]
    struct Queue {
        sent: Mutex<Vec<PayoutsWork>>,
        fail_next: Mutex<bool>,
    }

    impl PayoutsQueue for Queue {
        fn send<'a>(&'a self, work: &'a PayoutsWork) -> BoxFuture<'a, Result<(), QueueError>> {
            Box::pin(async move {
                if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
                    return Err(QueueError::Unavailable("send failed".into()));
                }
                self.sent.lock().unwrap().push(work.clone());
                Ok(())
            })
        }
    }

    fn intake(auth: Option<AuthRejection>) -> (PayoutsIntake, Arc<Queue>) {
        let queue = Arc::new(Queue::default());
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let intake = PayoutsIntake {
            auth: Arc::new(Auth(auth)),
            claims: Arc::new(MemoryStore::default()),
            queue: queue.clone(),
            clock: Arc::new(ManualClock::new(start)),
        };
        (intake, queue)
    }

    fn batch_notification(id: &str, batch: Uuid) -> Vec<u8> {
        json!({"id": id, "type": "batchpayments", "application": "sage.intacct",
            "message": {"data": {"batchId": batch}}})
        .to_string()
        .into_bytes()
    }

    async fn deliver(i: &PayoutsIntake, body: &[u8]) -> Result<Accepted, Refusal> {
        i.handle(Endpoint::Notifications, &HeaderMap::new(), body)
            .await
    }

    #[tokio::test]
    async fn a_batch_is_queued_once_however_many_notifications_name_it() {
        let (i, queue) = intake(None);
        let batch = Uuid::new_v4();
        let first = deliver(&i, &batch_notification("n-1", batch)).await;
        assert_eq!(first, Ok(Accepted::Queued("batchpayments".into())));
        for again in ["n-1", "n-2"] {
            let dup = deliver(&i, &batch_notification(again, batch)).await;
            assert_eq!(dup, Ok(Accepted::Duplicate("batchpayments".into())));
        }
        assert_eq!(queue.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn nothing_is_read_or_stored_for_a_refused_caller() {
        let (i, queue) = intake(Some(AuthRejection::Refused("header missing".into())));
        let result = deliver(&i, b"not even json").await;
        assert_eq!(result, Err(Refusal::Unauthorised));
        let (i, _) = intake(Some(AuthRejection::Unavailable("JWKS down".into())));
        assert!(matches!(
            deliver(&i, b"{}").await,
            Err(Refusal::Unavailable(_))
        ));
        assert!(queue.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn bad_bodies_get_their_reason_and_unknown_types_are_ignored() {
        let (i, queue) = intake(None);
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(deliver(&i, &big).await, Err(Refusal::TooLarge));
        assert_eq!(
            deliver(&i, br#"{"type": "batchpayments"}"#).await,
            Err(Refusal::Invalid(DeliveryError::Missing("id")))
        );
        assert_eq!(
            deliver(&i, br#"{"id": "n", "type": "brandnew"}"#).await,
            Ok(Accepted::Ignored("brandnew".into()))
        );
        assert!(queue.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_failed_send_gives_the_claim_up_so_that_the_retry_queues_it() {
        let (i, queue) = intake(None);
        *queue.fail_next.lock().unwrap() = true;
        let batch = Uuid::new_v4();
        assert!(matches!(
            deliver(&i, &batch_notification("n-1", batch)).await,
            Err(Refusal::Unavailable(_))
        ));
        assert_eq!(
            deliver(&i, &batch_notification("n-1", batch)).await,
            Ok(Accepted::Queued("batchpayments".into()))
        );
        assert_eq!(queue.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_subscription_delivered_by_either_route_is_onboarded_once() {
        let (i, queue) = intake(None);
        let sub = Uuid::new_v4();
        let body = json!({"data": {"subscriptionId": sub, "status": "Received"}}).to_string();
        let first = i
            .handle(Endpoint::Subscription, &HeaderMap::new(), body.as_bytes())
            .await;
        assert_eq!(first, Ok(Accepted::Queued("subscription".into())));
        let notified = json!({"id": "n-9", "type": "subscriptions", "subscriptionId": sub,
            "message": {"data": {"subscriptionId": sub}}})
        .to_string();
        let second = deliver(&i, notified.as_bytes()).await;
        assert!(matches!(second, Ok(Accepted::Duplicate(_))), "{second:?}");
        assert_eq!(queue.sent.lock().unwrap().len(), 1);
    }
}
