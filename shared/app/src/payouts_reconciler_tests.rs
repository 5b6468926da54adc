//! The Payments Out reconciler through its ports, on the fakes' world (`fakes::payouts_world`):
//! stuck batches read at the bank and PATCHed, links expired or finished, `Pending`
//! subscriptions moved once the bank decides, and each item on its own.

use chrono::{DateTime, Utc};
use connector_domain::payouts::authorise::{LOGIN_GRACE, LoginSession};
use connector_domain::payouts::batches::{BatchRecord, PaymentRecord};
use connector_domain::payouts::onboarding::{AuthLink, SubscriptionView};
use connector_domain::payouts::status::BatchStatus;
use connector_domain::ports::{BatchChange, BatchStore, BoxFuture, CallError, StoreError};

use super::*;
use crate::fakes::FakeConsents;
use crate::fakes::payouts_world::{STUCK_AFTER, World, at_sage, batch_at_sage, event, now, world};
use crate::payouts_authorise::decision_change;
use crate::payouts_onboarding::Onboarded;

use PaymentStatus::{Paid, Processing};

fn report(looked_at: usize, closed: usize, failed: usize) -> PayoutsReport {
    PayoutsReport {
        looked_at,
        closed,
        failed,
        unpushed: 0,
    }
}

fn minutes(m: i64) -> DateTime<Utc> {
    now() + TimeDelta::minutes(m)
}

/// When the reconciler looks at the item next (`None`: closed).
async fn due_at(w: &World, kind: OpenKind, id: &str) -> Option<DateTime<Utc>> {
    let all = w.store.due(DateTime::<Utc>::MAX_UTC).await.unwrap();
    all.into_iter()
        .find(|i| i.kind == kind && i.id == id)
        .map(|i| i.due_at)
}

async fn nothing_watched(w: &World) -> bool {
    w.store
        .due(DateTime::<Utc>::MAX_UTC)
        .await
        .unwrap()
        .is_empty()
}

/// What the bank answers when the payment is read.
fn bank_says(w: &World, payment_id: Uuid, seq: u64, status: &str) {
    let mut states = w.bank.states.lock().unwrap();
    states.insert(payment_id, event(payment_id, seq, status));
}

/// A world whose batch was taken: checked, PATCHed `Processing`, submitted, watched.
async fn taken(amounts: &[&str]) -> World {
    let w = world(amounts).await;
    w.batches.take(w.batch_id, None).await.unwrap();
    w
}

/// The batch as the connector recorded it when it was checked (`Rejected`), its payments with
/// these statuses and whether Sage has them; watched from now.
async fn recorded(w: &World, batch_id: Uuid, payments: &[(Uuid, PaymentStatus, bool)]) {
    let record = BatchRecord {
        batch_id,
        subscription_id: Some(w.subscription_id),
        application: None,
        status: BatchStatus::Rejected,
        reason: Some("ValidationFailed: NoValidPayment".into()),
        payment_count: payments.len(),
        checked_at: now(),
        decision_patched: true,
        watched_payments: true,
    };
    let payments: Vec<PaymentRecord> = payments
        .iter()
        .map(|&(payment_id, status, patched)| PaymentRecord {
            payment_id,
            batch_id,
            status,
            reason: None,
            completed_at: None,
            submission: None,
            submitted: false,
            event_seq: 0,
            patched,
            returned: None,
            return_told: false,
            version: 1,
        })
        .collect();
    w.store.record_batch(&record, &payments).await.unwrap();
    let item = OpenItem {
        kind: OpenKind::Batch,
        id: batch_id.to_string(),
        due_at: now(),
    };
    w.store.open(&item).await.unwrap();
}

fn last_batch_patch(w: &World) -> BatchChange {
    w.payouts
        .batch_patches
        .lock()
        .unwrap()
        .last()
        .cloned()
        .unwrap()
}

fn subscription_at_sage(w: &World) -> SubscriptionStatus {
    w.payouts.subscriptions.lock().unwrap()[&w.subscription_id].status
}

fn set_subscription_at_sage(w: &World, status: SubscriptionStatus) {
    let mut subscriptions = w.payouts.subscriptions.lock().unwrap();
    subscriptions.get_mut(&w.subscription_id).unwrap().status = status;
}

fn patches(w: &World) -> Vec<SubscriptionChange> {
    w.payouts.patches.lock().unwrap().clone()
}

fn last_patch(w: &World) -> (SubscriptionStatus, Option<String>) {
    let last = patches(w).last().cloned().unwrap();
    (last.status, last.reason)
}

/// The world's subscription onboarded: `AwaitingAuthorisation` at Sage with its link, watched
/// from the link's expiry and login grace.
async fn linked() -> (World, PayoutsReconciler, AuthLink) {
    let w = world(&["10"]).await;
    let id = w.subscription_id;
    w.payouts.subscriptions.lock().unwrap().insert(
        id,
        SubscriptionView {
            subscription_id: id,
            status: SubscriptionStatus::Received,
            additional_data: None,
        },
    );
    let Onboarded::AwaitingAuthorisation(link) = w.onboarding().onboard(id, None).await.unwrap()
    else {
        panic!("awaiting authorisation")
    };
    let r = w.reconciler();
    (w, r, link)
}

async fn link_record(w: &World, link: &AuthLink) -> LinkRecord {
    w.store.link_record(&link.link_id).await.unwrap().unwrap()
}

/// A link decided `Pending` at the page, sent to Sage, and watched now; the reconciler reads
/// the consent (bound as `cns-1`) from `bank`.
async fn decided_pending(bank: impl BankLogin + 'static) -> (World, PayoutsReconciler, AuthLink) {
    let (w, mut r, link) = linked().await;
    r.consents = Arc::new(bank);
    let pending = Completion {
        status: SubscriptionStatus::Pending,
        reason: None,
        completed_at: now(),
    };
    assert!(
        w.store
            .complete_link(&link.link_id, &pending)
            .await
            .unwrap()
    );
    let change = decision_change(&pending);
    w.payouts
        .patch_subscription(w.subscription_id, None, &change)
        .await
        .unwrap();
    w.store.mark_patched(&link.link_id).await.unwrap();
    let watch = OpenItem {
        kind: OpenKind::Link,
        id: link.link_id.clone(),
        due_at: now(),
    };
    w.store.open(&watch).await.unwrap();
    (w, r, link)
}

// Stuck batches.

#[tokio::test]
async fn a_stuck_batch_gets_the_outcome_the_bank_never_pushed_and_is_watched_while_one_moves() {
    let w = taken(&["10", "20"]).await;
    let (a, b) = (w.payment_ids[0], w.payment_ids[1]);
    bank_says(&w, a, 3, "settled");
    bank_says(&w, b, 3, "submitted");
    let r = w.reconciler();
    assert_eq!(r.run().await.unwrap(), report(0, 0, 0), "not stuck yet");
    w.clock.set(minutes(16));
    assert_eq!(r.run().await.unwrap(), report(1, 0, 0));
    assert_eq!(
        at_sage(&w),
        (BatchStatus::Processing, vec![Paid, Processing])
    );
    let patch = last_batch_patch(&w);
    assert_eq!(patch.payments.len(), 1);
    assert_eq!(
        (patch.payments[0].payment_id, patch.payments[0].status),
        (a, Paid)
    );
    let id = w.batch_id.to_string();
    assert_eq!(
        due_at(&w, OpenKind::Batch, &id).await,
        Some(minutes(16) + STUCK_AFTER)
    );
}

#[tokio::test]
async fn a_stuck_batch_is_closed_once_every_payment_is_patched_and_final() {
    let w = taken(&["10", "20"]).await;
    bank_says(&w, w.payment_ids[0], 3, "settled");
    bank_says(&w, w.payment_ids[1], 4, "failed");
    let before = w.payouts.batch_patches.lock().unwrap().len();
    w.clock.set(minutes(16));
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 1, 0));
    use PaymentStatus::Failed;
    assert_eq!(
        at_sage(&w),
        (BatchStatus::PartiallyPaid, vec![Paid, Failed])
    );
    let after = w.payouts.batch_patches.lock().unwrap().len();
    assert_eq!(after, before + 1, "both outcomes in one PATCH");
    assert!(nothing_watched(&w).await);
    let submissions = w.bank.submissions.lock().unwrap().clone();
    assert!(submissions.values().all(|n| *n == 1), "{submissions:?}");
}

#[tokio::test]
async fn a_batch_whose_payments_are_all_patched_and_received_or_final_is_closed_without_a_call() {
    let w = world(&[]).await;
    let payments = [
        (Uuid::new_v4(), PaymentStatus::Received, true),
        (Uuid::new_v4(), PaymentStatus::Rejected, true),
    ];
    recorded(&w, Uuid::new_v4(), &payments).await;
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 1, 0));
    assert!(nothing_watched(&w).await);
    assert!(w.payouts.batch_patches.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_final_payment_not_noted_as_patched_keeps_its_batch_watched() {
    let w = world(&["10"]).await;
    let rejected = [(w.payment_ids[0], PaymentStatus::Rejected, false)];
    recorded(&w, w.batch_id, &rejected).await;
    // Another writer wins each note that Sage has it (both PATCHes of the batch's take, and
    // the reconciler's own PATCH-and-tell after it).
    for _ in 0..3 {
        w.store
            .fail_next("save_payment", StoreError::ConditionFailed);
    }
    let r = w.reconciler();
    assert_eq!(r.run().await.unwrap(), report(1, 0, 0));
    assert_eq!(at_sage(&w).1, vec![PaymentStatus::Rejected]);
    let id = w.batch_id.to_string();
    assert_eq!(
        due_at(&w, OpenKind::Batch, &id).await,
        Some(now() + STUCK_AFTER)
    );
    w.clock.set(now() + STUCK_AFTER);
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
}

#[tokio::test]
async fn a_payment_never_submitted_is_submitted_once_its_batch_is_stuck() {
    let mut w = world(&["10", "20"]).await;
    w.batches.submit_budget = std::time::Duration::ZERO;
    w.batches.take(w.batch_id, None).await.unwrap();
    assert!(w.bank.submissions.lock().unwrap().is_empty());
    w.clock.set(minutes(16));
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 0, 0));
    let submissions = w.bank.submissions.lock().unwrap().clone();
    assert_eq!(submissions.len(), 2);
    assert!(submissions.values().all(|n| *n == 1), "{submissions:?}");
}

#[tokio::test]
async fn one_batch_failing_is_counted_and_watched_again_without_stopping_the_others() {
    let w = taken(&["10"]).await;
    let (other, other_payments) = w.add_batch(&["20"]);
    w.batches.take(other, None).await.unwrap();
    bank_says(&w, w.payment_ids[0], 3, "settled");
    bank_says(&w, other_payments[0], 3, "settled");
    w.bank.unreadable.lock().unwrap().insert(other_payments[0]);
    w.clock.set(minutes(16));
    let r = w.reconciler();
    assert_eq!(r.run().await.unwrap(), report(2, 1, 1));
    assert_eq!(at_sage(&w), (BatchStatus::Paid, vec![Paid]));
    assert_eq!(
        batch_at_sage(&w, other),
        (BatchStatus::Processing, vec![Processing])
    );
    assert_eq!(
        due_at(&w, OpenKind::Batch, &w.batch_id.to_string()).await,
        None
    );
    let other_due = due_at(&w, OpenKind::Batch, &other.to_string()).await;
    assert_eq!(other_due, Some(minutes(16) + STUCK_AFTER));
    // Once the bank answers again, the next run finishes it.
    w.bank.unreadable.lock().unwrap().clear();
    w.clock.set(minutes(32));
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(batch_at_sage(&w, other), (BatchStatus::Paid, vec![Paid]));
}

// Authorisation links.

#[tokio::test]
async fn an_unused_link_past_its_expiry_is_rejected_as_expired_used_up_and_closed() {
    let (w, r, link) = linked().await;
    w.clock.set(link.expires_at + LOGIN_GRACE);
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Rejected);
    let expired = (
        SubscriptionStatus::Rejected,
        Some("AuthorisationExpired".into()),
    );
    assert_eq!(last_patch(&w), expired);
    let record = link_record(&w, &link).await;
    let completion = record.completion.unwrap();
    assert_eq!((completion.status, completion.reason), expired);
    assert!(record.patched);
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn an_expired_link_patches_nothing_once_sage_no_longer_awaits_authorisation() {
    let (w, r, link) = linked().await;
    set_subscription_at_sage(&w, SubscriptionStatus::Cancelled);
    w.clock.set(link.expires_at + LOGIN_GRACE);
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(patches(&w).len(), 1, "only onboarding's");
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Cancelled);
    let record = link_record(&w, &link).await;
    assert!(record.completion.is_some() && record.patched, "used up");
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn a_login_begun_before_the_expiry_is_left_to_finish_within_the_grace() {
    let (w, r, link) = linked().await;
    let session = LoginSession {
        nonce: "n".into(),
        verifier: "v".into(),
        return_url: None,
        return_state: None,
        started_at: link.expires_at - TimeDelta::minutes(1),
    };
    assert!(w.store.begin_login(&link.link_id, &session).await.unwrap());
    let early = OpenItem {
        kind: OpenKind::Link,
        id: link.link_id.clone(),
        due_at: link.expires_at,
    };
    w.store.open(&early).await.unwrap();
    let at = link.expires_at + TimeDelta::minutes(5);
    w.clock.set(at);
    assert_eq!(r.run().await.unwrap(), report(1, 0, 0));
    assert_eq!(link_record(&w, &link).await.completion, None);
    assert_eq!(
        subscription_at_sage(&w),
        SubscriptionStatus::AwaitingAuthorisation
    );
    let due = due_at(&w, OpenKind::Link, &link.link_id).await;
    assert_eq!(due, Some(at + STUCK_AFTER));
}

#[tokio::test]
async fn an_expiry_whose_patch_failed_is_counted_and_sent_by_a_later_run() {
    let (w, r, link) = linked().await;
    let failure = CallError::Transient("503".into());
    w.payouts.fail_patches.lock().unwrap().push_back(failure);
    let at = link.expires_at + LOGIN_GRACE;
    w.clock.set(at);
    assert_eq!(r.run().await.unwrap(), report(1, 0, 1));
    assert_eq!(
        subscription_at_sage(&w),
        SubscriptionStatus::AwaitingAuthorisation
    );
    let due = due_at(&w, OpenKind::Link, &link.link_id).await;
    assert_eq!(due, Some(at + STUCK_AFTER));
    // The expiry was recorded: the next run sends it (the onboarding path), the one after closes.
    w.clock.set(at + STUCK_AFTER);
    assert_eq!(r.run().await.unwrap(), report(1, 0, 0));
    let expired = (
        SubscriptionStatus::Rejected,
        Some("AuthorisationExpired".into()),
    );
    assert_eq!(last_patch(&w), expired);
    w.clock.set(at + STUCK_AFTER * 2);
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
}

#[tokio::test]
async fn a_decision_recorded_but_not_patched_is_sent_by_onboarding_then_closed() {
    let (w, r, link) = linked().await;
    let authorised = Completion {
        status: SubscriptionStatus::Authorised,
        reason: None,
        completed_at: now(),
    };
    assert!(
        w.store
            .complete_link(&link.link_id, &authorised)
            .await
            .unwrap()
    );
    let at = link.expires_at + LOGIN_GRACE;
    w.clock.set(at);
    assert_eq!(r.run().await.unwrap(), report(1, 0, 0));
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Authorised);
    assert_eq!(last_patch(&w), (SubscriptionStatus::Authorised, None));
    assert!(link_record(&w, &link).await.patched);
    let sent = patches(&w).len();
    w.clock.set(at + STUCK_AFTER);
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(patches(&w).len(), sent, "sent once");
    assert!(nothing_watched(&w).await);
}

// `Pending` subscriptions.

#[tokio::test]
async fn a_pending_subscription_still_under_review_is_looked_at_again_later() {
    let (w, r, link) = decided_pending(FakeConsents::new("pending_review")).await;
    let sent = patches(&w).len();
    assert_eq!(r.run().await.unwrap(), report(1, 0, 0));
    assert_eq!(patches(&w).len(), sent);
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Pending);
    let due = due_at(&w, OpenKind::Link, &link.link_id).await;
    assert_eq!(due, Some(now() + STUCK_AFTER));
}

#[tokio::test]
async fn a_pending_subscription_whose_consent_became_active_is_authorised_and_closed() {
    let (w, r, _) = decided_pending(FakeConsents::new("active")).await;
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Authorised);
    assert_eq!(last_patch(&w), (SubscriptionStatus::Authorised, None));
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn a_pending_subscription_whose_consent_the_bank_refused_is_rejected_and_closed() {
    let (w, r, _) = decided_pending(FakeConsents::unusable()).await;
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Rejected);
    let refused = (SubscriptionStatus::Rejected, Some("ConsentRefused".into()));
    assert_eq!(last_patch(&w), refused);
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn a_pending_decision_patches_nothing_once_sage_shows_another_status() {
    let (w, r, _) = decided_pending(FakeConsents::new("active")).await;
    set_subscription_at_sage(&w, SubscriptionStatus::Cancelled);
    let sent = patches(&w).len();
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(patches(&w).len(), sent);
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Cancelled);
}

// Gone.

#[tokio::test]
async fn an_item_whose_batch_or_link_the_store_no_longer_has_is_closed() {
    let w = world(&["10"]).await;
    let gone = [
        (OpenKind::Batch, Uuid::new_v4().to_string()),
        (OpenKind::Link, "goneLinkId".to_string()),
    ];
    for (kind, id) in gone {
        let item = OpenItem {
            kind,
            id,
            due_at: now(),
        };
        w.store.open(&item).await.unwrap();
    }
    assert_eq!(w.reconciler().run().await.unwrap(), report(2, 2, 0));
    assert!(nothing_watched(&w).await);
    assert!(w.payouts.batch_patches.lock().unwrap().is_empty());
    assert!(patches(&w).is_empty());
}

#[tokio::test]
async fn an_item_that_can_never_be_reconciled_is_counted_and_closed() {
    let w = world(&["10"]).await;
    let item = OpenItem {
        kind: OpenKind::Batch,
        id: "not-a-batch-id".to_string(),
        due_at: now(),
    };
    w.store.open(&item).await.unwrap();
    // Touched before the run (a push for it): the look takes note of that before it reads.
    w.store.touch(&item).await.unwrap();
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 0, 1));
    // Not re-opened: it would fail the same way on every run.
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn an_item_the_table_cannot_close_stays_due_and_the_others_are_still_closed() {
    let w = world(&["10"]).await;
    for id in ["goneLinkA", "goneLinkB"] {
        let item = OpenItem {
            kind: OpenKind::Link,
            id: id.to_string(),
            due_at: now(),
        };
        w.store.open(&item).await.unwrap();
    }
    w.store
        .fail_next("close", StoreError::Unavailable("throttled".into()));
    assert_eq!(w.reconciler().run().await.unwrap(), report(2, 1, 1));
    // The one not closed is still due now; the next run closes it.
    let left = w.store.due(now()).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 1, 0));
    assert!(nothing_watched(&w).await);
}

/// A one-payment batch settled (`eventSeq` 3) and returned (4) as the reconciler notes them: the
/// return recorded, the product not told.
async fn returned_untold() -> (World, Uuid) {
    let w = taken(&["10"]).await;
    let payment_id = w.payment_ids[0];
    for (seq, status) in [(3, "settled"), (4, "returned")] {
        w.batches
            .note_event(&event(payment_id, seq, status))
            .await
            .unwrap();
    }
    (w, payment_id)
}

#[tokio::test]
async fn a_return_the_product_was_never_told_of_is_told_before_its_batch_is_closed() {
    let (w, payment_id) = returned_untold().await;
    w.payouts
        .fail_messages
        .lock()
        .unwrap()
        .push_back(CallError::Transient("503".into()));
    w.clock.set(minutes(16));
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 0, 1));
    assert_eq!(at_sage(&w), (BatchStatus::Paid, vec![Paid]));
    assert!(w.payouts.messages.lock().unwrap().is_empty());
    let batch = w.batch_id.to_string();
    assert_eq!(
        due_at(&w, OpenKind::Batch, &batch).await,
        Some(minutes(31)),
        "watched until the product is told"
    );
    w.clock.set(minutes(31));
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 1, 0));
    let told = w.payouts.messages.lock().unwrap().clone();
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(told[0].0, "notifications");
    assert_eq!(told[0].3["event"], "Returned");
    assert_eq!(told[0].3["resourceId"], payment_id.to_string());
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn a_pending_subscription_whose_consent_was_approved_after_it_expired_is_rejected() {
    let mut bank = FakeConsents::new("active");
    bank.expires_at = now() - TimeDelta::minutes(1);
    let (w, r, _) = decided_pending(bank).await;
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Rejected);
    let expired = (SubscriptionStatus::Rejected, Some("ConsentExpired".into()));
    assert_eq!(last_patch(&w), expired);
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn an_expired_link_whose_own_patch_never_reached_sage_still_rejects_the_subscription() {
    let (w, r, link) = linked().await;
    // Sage never got the link: it still shows the subscription as it arrived.
    set_subscription_at_sage(&w, SubscriptionStatus::Received);
    w.clock.set(link.expires_at + LOGIN_GRACE);
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(subscription_at_sage(&w), SubscriptionStatus::Rejected);
    let expired = (
        SubscriptionStatus::Rejected,
        Some("AuthorisationExpired".into()),
    );
    assert_eq!(last_patch(&w), expired);
    assert!(nothing_watched(&w).await);
}

// The bank's change feed.

fn report_unpushed(
    looked_at: usize,
    closed: usize,
    failed: usize,
    unpushed: usize,
) -> PayoutsReport {
    PayoutsReport {
        unpushed,
        ..report(looked_at, closed, failed)
    }
}

/// The bank publishes these changes on its feed.
fn bank_feeds(w: &World, changes: &[(Uuid, u64, &str)]) {
    let mut feed = w.bank.feed.lock().unwrap();
    feed.extend(
        changes
            .iter()
            .map(|&(id, seq, status)| event(id, seq, status)),
    );
}

fn returns_told(w: &World) -> Vec<String> {
    w.payouts
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.0 == "notifications" && m.3["event"] == "Returned")
        .map(|m| m.3["resourceId"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A one-payment batch whose settlement was pushed (`eventSeq` 3).
async fn settled_by_its_push() -> (World, Uuid) {
    let w = taken(&["10"]).await;
    let payment_id = w.payment_ids[0];
    w.batches
        .on_event(&event(payment_id, 3, "settled"))
        .await
        .unwrap();
    (w, payment_id)
}

#[tokio::test]
async fn a_return_whose_push_was_lost_after_its_batch_closed_is_read_from_the_feed_and_told_once() {
    let (w, payment_id) = settled_by_its_push().await;
    w.clock.set(minutes(16));
    let r = w.reconciler();
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert!(nothing_watched(&w).await);
    assert!(returns_told(&w).is_empty());

    // The settlement was pushed; the return's push never came.
    bank_feeds(
        &w,
        &[(payment_id, 3, "settled"), (payment_id, 4, "returned")],
    );
    assert_eq!(r.run().await.unwrap(), report_unpushed(0, 0, 0, 1));
    assert_eq!(returns_told(&w), vec![payment_id.to_string()]);
    assert_eq!(
        at_sage(&w),
        (BatchStatus::Paid, vec![Paid]),
        "a return stays Paid"
    );
    assert_eq!(w.store.feed_read_to().await.unwrap(), 4);

    // Read once: the next run starts after it, and its push arriving late changes nothing.
    assert_eq!(r.run().await.unwrap(), report(0, 0, 0));
    let since = w.bank.feed_since.lock().unwrap().clone();
    let a_day_back = Some(minutes(16) - TimeDelta::days(1));
    assert_eq!(
        since,
        vec![a_day_back, a_day_back, None],
        "never read: from a day back; then from the mark alone"
    );
    w.batches
        .on_event(&event(payment_id, 4, "returned"))
        .await
        .unwrap();
    assert_eq!(returns_told(&w).len(), 1);
}

#[tokio::test]
async fn a_return_pushed_while_a_dead_holder_keeps_the_lease_is_told_by_the_reconciler() {
    let (w, payment_id) = settled_by_its_push().await;
    w.clock.set(minutes(16));
    let r = w.reconciler();
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert!(nothing_watched(&w).await);
    // A window's holder took the lease and died before queueing its window.
    assert!(
        w.store
            .lease_sync(w.batch_id, minutes(26), minutes(16))
            .await
            .unwrap()
    );
    w.batches
        .on_event(&event(payment_id, 4, "returned"))
        .await
        .unwrap();
    assert!(returns_told(&w).is_empty(), "the lease is held");
    let batch = w.batch_id.to_string();
    assert_eq!(
        due_at(&w, OpenKind::Batch, &batch).await,
        Some(minutes(16) + STUCK_AFTER),
        "the closed batch is watched again"
    );
    w.clock.set(minutes(31));
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(returns_told(&w), vec![payment_id.to_string()]);
    assert!(nothing_watched(&w).await);
}

#[tokio::test]
async fn a_return_pushed_while_its_batch_is_open_leaves_the_reconcilers_look_where_it_was() {
    let w = taken(&["10", "20"]).await;
    let batch = w.batch_id.to_string();
    assert_eq!(due_at(&w, OpenKind::Batch, &batch).await, Some(minutes(15)));
    w.clock.set(minutes(10));
    let paid = w.payment_ids[0];
    for (seq, status) in [(3, "settled"), (4, "returned")] {
        w.batches.on_event(&event(paid, seq, status)).await.unwrap();
    }
    assert_eq!(returns_told(&w), vec![paid.to_string()]);
    assert_eq!(
        due_at(&w, OpenKind::Batch, &batch).await,
        Some(minutes(15)),
        "not put off to minute 25"
    );
}

/// A one-payment batch whose settlement (`eventSeq` 3) is on the bank's feed, never pushed.
async fn settled_only_on_the_feed() -> World {
    let w = taken(&["10"]).await;
    bank_feeds(&w, &[(w.payment_ids[0], 3, "settled")]);
    w
}

/// A run fails with the feed's mark where it was and nothing moved; after `heal`, the next run
/// works the settlement.
async fn fails_then_catches_up(w: &World, heal: impl FnOnce()) {
    let r = w.reconciler();
    assert_eq!(r.run().await.unwrap(), report(0, 0, 1));
    assert_eq!(w.store.feed_read_to().await.unwrap(), 0);
    assert_eq!(at_sage(w).1, vec![Processing]);
    heal();
    assert_eq!(r.run().await.unwrap(), report_unpushed(0, 0, 0, 1));
    assert_eq!(at_sage(w), (BatchStatus::Paid, vec![Paid]));
    assert_eq!(w.store.feed_read_to().await.unwrap(), 3);
}

#[tokio::test]
async fn a_feed_the_bank_cannot_answer_is_counted_and_read_again_from_the_same_place() {
    let w = settled_only_on_the_feed().await;
    *w.bank.down.lock().unwrap() = true;
    fails_then_catches_up(&w, || *w.bank.down.lock().unwrap() = false).await;
}

#[tokio::test]
async fn changes_already_pushed_or_of_payments_the_connector_never_had_are_passed_over() {
    let (w, payment_id) = settled_by_its_push().await;
    w.batches
        .on_event(&event(payment_id, 4, "returned"))
        .await
        .unwrap();
    assert_eq!(returns_told(&w).len(), 1);
    let (other, other_payments) = w.add_batch(&["20"]);
    w.batches.take(other, None).await.unwrap();
    let patches = w.payouts.batch_patches.lock().unwrap().len();
    let unknown = Uuid::new_v4();
    bank_feeds(
        &w,
        &[
            // Pushed and worked already (a return keeps the settlement's `eventSeq`).
            (payment_id, 3, "settled"),
            (payment_id, 4, "returned"),
            // Submitted: the status the connector shows already.
            (other_payments[0], 6, "submitted"),
            (unknown, 7, "settled"),
        ],
    );
    assert_eq!(w.reconciler().run().await.unwrap(), report(0, 0, 0));
    assert_eq!(w.store.feed_read_to().await.unwrap(), 7);
    assert_eq!(w.payouts.batch_patches.lock().unwrap().len(), patches);
    assert_eq!(returns_told(&w).len(), 1);
}

#[tokio::test]
async fn a_change_that_cannot_be_worked_leaves_the_mark_and_is_worked_next_run() {
    let w = settled_only_on_the_feed().await;
    w.store
        .fail_next("payment", StoreError::Unavailable("throttled".into()));
    fails_then_catches_up(&w, || ()).await;
}

#[tokio::test]
async fn a_return_noted_but_never_told_is_told_when_the_feed_shows_it() {
    let (w, payment_id) = returned_untold().await;
    assert!(returns_told(&w).is_empty());
    bank_feeds(&w, &[(payment_id, 4, "returned")]);
    assert_eq!(
        w.reconciler().run().await.unwrap(),
        report_unpushed(0, 0, 0, 1)
    );
    assert_eq!(returns_told(&w), vec![payment_id.to_string()]);
}

/// Open work whose first close meets a return pushed after the look read the batch, while a
/// dead holder keeps the batch's outcome lease: the push recorded the return and touched the
/// batch's item (and, with `then_watched`, a redelivered notification of the batch watched it
/// again before the close).
struct ReturnPushedBeforeClose {
    store: Arc<crate::fakes::MemoryStore>,
    payment_id: std::sync::Mutex<Option<Uuid>>,
    then_watched: bool,
}

impl OpenWork for ReturnPushedBeforeClose {
    fn open<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>> {
        self.store.open(item)
    }

    fn touch<'a>(&'a self, item: &'a OpenItem) -> BoxFuture<'a, Result<(), StoreError>> {
        self.store.touch(item)
    }

    fn untouch<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.store.untouch(kind, id)
    }

    fn close<'a>(&'a self, kind: OpenKind, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(async move {
            let pushed = self.payment_id.lock().unwrap().take();
            if let Some(payment_id) = pushed {
                let paid = self.store.payment(payment_id).await?.expect("recorded");
                let returned = PaymentRecord {
                    returned: Some(String::new()),
                    version: paid.version + 1,
                    ..paid
                };
                self.store.save_payment(&returned).await?;
                let watch = OpenItem {
                    kind,
                    id: id.to_string(),
                    due_at: DateTime::<Utc>::MAX_UTC,
                };
                self.store.touch(&watch).await?;
                if self.then_watched {
                    self.store.open(&watch).await?;
                }
            }
            self.store.close(kind, id).await
        })
    }

    fn due(&self, now: DateTime<Utc>) -> BoxFuture<'_, Result<Vec<OpenItem>, StoreError>> {
        self.store.due(now)
    }

    fn feed_read_to(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.store.feed_read_to()
    }

    fn set_feed_read_to(&self, event_seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        self.store.set_feed_read_to(event_seq)
    }
}

#[tokio::test]
async fn a_return_pushed_between_a_look_and_its_close_is_looked_at_again_and_told() {
    a_return_pushed_before_the_close(false).await;
}

#[tokio::test]
async fn a_return_pushed_then_watched_again_before_the_close_is_still_looked_at_again() {
    a_return_pushed_before_the_close(true).await;
}

async fn a_return_pushed_before_the_close(then_watched: bool) {
    let (w, payment_id) = settled_by_its_push().await;
    w.clock.set(minutes(16));
    assert!(
        w.store
            .lease_sync(w.batch_id, minutes(26), minutes(16))
            .await
            .unwrap(),
        "a dead holder's lease"
    );
    let mut r = w.reconciler();
    r.open = Arc::new(ReturnPushedBeforeClose {
        store: w.store.clone(),
        payment_id: std::sync::Mutex::new(Some(payment_id)),
        then_watched,
    });
    assert_eq!(r.run().await.unwrap(), report(1, 0, 0), "not closed");
    let batch = w.batch_id.to_string();
    assert_eq!(
        due_at(&w, OpenKind::Batch, &batch).await,
        Some(minutes(16)),
        "due at once"
    );
    assert!(returns_told(&w).is_empty());
    w.clock.set(minutes(17));
    assert_eq!(r.run().await.unwrap(), report(1, 1, 0));
    assert_eq!(returns_told(&w), vec![payment_id.to_string()]);
    assert!(nothing_watched(&w).await);
}

/// A change recorded by another release (during a deploy, or after a rollback) lacks its
/// payment's watch, so windows never see it: the reconciler's look reads every payment.
#[tokio::test]
async fn the_reconcilers_look_tells_a_return_from_every_payment_not_from_the_watch() {
    let (w, payment_id) = settled_by_its_push().await;
    w.clock.set(minutes(16));
    let paid = w.store.payment(payment_id).await.unwrap().unwrap();
    let returned = PaymentRecord {
        returned: Some(String::new()),
        version: paid.version + 1,
        ..paid
    };
    w.store.save_payment(&returned).await.unwrap();
    // Planned to fail: a look that reads by the watch meets it.
    w.store
        .fail_next("payments_owing", StoreError::Unavailable("planned".into()));
    assert_eq!(w.reconciler().run().await.unwrap(), report(1, 1, 0));
    assert_eq!(returns_told(&w), vec![payment_id.to_string()]);
    assert!(
        w.store.payments_owing(w.batch_id).await.is_err(),
        "the look never read by the watch"
    );
}
