//! `/notification` through its ports: verified before anything is read, queued once per key
//! whatever Banking Service redelivers, and a failure leaves nothing half done.

use std::sync::{Arc, Mutex};

use connector_domain::messages::WorkMessage;
use connector_domain::notification::NotificationAction;
use connector_domain::ports::{AuthRejection, BankingServiceAuth, BoxFuture, VerifiedSender};
use http::HeaderMap;
use serde_json::json;
use uuid::Uuid;

use super::{Accepted, IntakeError, MAX_BODY, NotificationIntake};
use crate::fakes::{ManualClock, MemoryQueues, MemoryStore, Sent};

const BANK: Uuid = Uuid::from_u128(0xb4c);
const ACCOUNT: &str = "6269cfb9-922c-4023-833d-97586646fad1";

/// Accepts (as `BANK`) or refuses every delivery, and records what it was asked.
struct Auth {
    answer: Result<VerifiedSender, AuthRejection>,
    several: bool,
    asked: Mutex<Vec<Option<Uuid>>>,
}

impl BankingServiceAuth for Auth {
    fn several(&self) -> bool {
        self.several
    }

    fn verify<'a>(
        &'a self,
        _headers: &'a HeaderMap,
        named: Option<Uuid>,
    ) -> BoxFuture<'a, Result<VerifiedSender, AuthRejection>> {
        self.asked.lock().unwrap().push(named);
        let answer = self.answer.clone();
        Box::pin(async move { answer })
    }
}

struct World {
    queues: Arc<MemoryQueues>,
    auth: Arc<Auth>,
    intake: NotificationIntake,
}

fn world(answer: Result<VerifiedSender, AuthRejection>, several: bool) -> World {
    let clock = Arc::new(ManualClock::new("2026-06-01T12:00:00Z".parse().unwrap()));
    let store = Arc::new(MemoryStore::default());
    let queues = Arc::new(MemoryQueues::new(clock.clone()));
    let auth = Arc::new(Auth {
        answer,
        several,
        asked: Mutex::new(Vec::new()),
    });
    let intake = NotificationIntake {
        auth: auth.clone(),
        once: store,
        queues: queues.clone(),
        clock,
    };
    World {
        queues,
        auth,
        intake,
    }
}

fn accepted() -> World {
    world(
        Ok(VerifiedSender {
            bank_id: Some(BANK),
            token_id: Some("jti-1".into()),
        }),
        false,
    )
}

fn created() -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "resourceCreated",
        "resource": {"id": ACCOUNT, "type": "bankAccount", "url": "NA"},
        "additionalData": {"externalId": "acc_1", "bankId": BANK}}))
    .unwrap()
}

impl World {
    fn queued(&self) -> Vec<WorkMessage> {
        std::iter::from_fn(|| self.queues.pop())
            .map(|(_, m)| match m {
                Sent::Work(w) => w,
                other => panic!("only work messages expected, got {other:?}"),
            })
            .collect()
    }
}

#[tokio::test]
async fn a_notification_is_queued_once_with_the_bank_that_verified_it() {
    let w = accepted();
    let h = HeaderMap::new();
    assert_eq!(
        w.intake.handle(&h, &created()).await.unwrap(),
        Accepted::Enqueued("created.bankAccount")
    );
    assert_eq!(
        w.intake.handle(&h, &created()).await.unwrap(),
        Accepted::Duplicate("created.bankAccount"),
        "a redelivery is acknowledged, not queued again"
    );
    match w.queued().as_slice() {
        [
            WorkMessage::Notification {
                action: NotificationAction::BankAccountCreated { external_id, .. },
                verified_bank_id,
                ..
            },
        ] => assert_eq!(
            (external_id.as_deref(), *verified_bank_id),
            (Some("acc_1"), Some(BANK))
        ),
        other => panic!("one notification expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_send_that_failed_is_sent_by_the_redelivery() {
    let w = accepted();
    w.queues.fail_next("work", 1);
    let first = w.intake.handle(&HeaderMap::new(), &created()).await;
    assert!(
        matches!(first, Err(IntakeError::Unavailable(_))),
        "{first:?}"
    );
    assert!(w.queued().is_empty());
    assert_eq!(
        w.intake
            .handle(&HeaderMap::new(), &created())
            .await
            .unwrap(),
        Accepted::Enqueued("created.bankAccount"),
        "the claim of the failed attempt does not make the redelivery a duplicate"
    );
    assert_eq!(w.queued().len(), 1);
}

#[tokio::test]
async fn a_refused_or_uncheckable_delivery_stores_and_queues_nothing() {
    for rejection in [
        AuthRejection::Refused("custom header missing".into()),
        AuthRejection::Unavailable("JWKS unreachable".into()),
    ] {
        let w = world(Err(rejection.clone()), false);
        let answer = w.intake.handle(&HeaderMap::new(), &created()).await;
        assert!(
            matches!(&answer, Err(IntakeError::Unauthorised(r)) if *r == rejection),
            "{answer:?}"
        );
        assert!(w.queued().is_empty());
    }
    // Not even a too-large body is looked at before the caller is known.
    let w = world(Err(AuthRejection::Refused("no bearer token".into())), false);
    let big = vec![b' '; MAX_BODY + 1];
    assert!(matches!(
        w.intake.handle(&HeaderMap::new(), &big).await,
        Err(IntakeError::Unauthorised(_))
    ));
}

#[tokio::test]
async fn with_several_banks_the_named_bank_chooses_whose_settings_verify() {
    let w = world(Ok(VerifiedSender::default()), true);
    w.intake
        .handle(&HeaderMap::new(), &created())
        .await
        .unwrap();
    assert_eq!(*w.auth.asked.lock().unwrap(), vec![Some(BANK)]);
    // One bank only: the body is not read before verification.
    let w = accepted();
    w.intake
        .handle(&HeaderMap::new(), &created())
        .await
        .unwrap();
    assert_eq!(*w.auth.asked.lock().unwrap(), vec![None]);
}

#[tokio::test]
async fn bad_unknown_and_unusable_notifications_are_answered_and_never_queued() {
    let w = accepted();
    let h = HeaderMap::new();
    let big = vec![b' '; MAX_BODY + 1];
    assert!(matches!(
        w.intake.handle(&h, &big).await,
        Err(IntakeError::TooLarge)
    ));
    assert!(matches!(
        w.intake.handle(&h, br#"{"type": "resourceCreated"}"#).await,
        Err(IntakeError::Invalid(_))
    ));
    let unknown = json!({"type": "somethingElse",
        "resource": {"id": ACCOUNT, "type": "bankAccount", "url": "NA"}});
    assert_eq!(
        w.intake
            .handle(&h, &serde_json::to_vec(&unknown).unwrap())
            .await
            .unwrap(),
        Accepted::Ignored
    );
    let unusable = json!({"type": "resourceCreated",
        "resource": {"id": "not-a-uuid", "type": "bankAccount", "url": "NA"},
        "additionalData": {"externalId": "acc_1"}});
    assert_eq!(
        w.intake
            .handle(&h, &serde_json::to_vec(&unusable).unwrap())
            .await
            .unwrap(),
        Accepted::Unusable("created.bankAccount")
    );
    assert!(w.queued().is_empty());
}
