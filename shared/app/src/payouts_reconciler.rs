//! The Payments Out reconciler (docs/payments-out.md §11), on a schedule: whatever stopped
//! moving is moved on from the records and a fresh read of the bank.
//!
//! - A batch not final at Sage after `STUCK_AFTER_S`: each payment the bank has but whose
//!   outcome never arrived is read at the bank and applied as its event would have been; what
//!   was never submitted is submitted; what Sage lacks is PATCHed. Watched until final.
//! - An authorisation link: past its expiry (and the login grace) unused, its subscription is
//!   `Rejected` (`AuthorisationExpired`); used but not PATCHed, the decision is sent; decided
//!   `Pending`, the consent is read again and the subscription moved when the bank has decided.
//!
//! - The bank's change feed, from where the last run left it: a change whose push never
//!   arrived (a `returned` after the batch was closed, say) is worked as the push would have been.
//!
//! Each item is worked on its own (8 at once): one failing is counted and looked at again on
//! the next run.

use std::sync::Arc;

use chrono::TimeDelta;
use connector_domain::payouts::authorise::{Completion, LinkRecord};
use connector_domain::payouts::onboarding::SubscriptionChange;
use connector_domain::payouts::status::{PaymentStatus, SubscriptionStatus};
use connector_domain::ports::{
    BankLogin, BindingStore, Clock, LinkStore, LoginError, OpenItem, OpenKind, OpenWork,
    PayoutsApiPort,
};
use futures::StreamExt;
use serde::Serialize;
use uuid::Uuid;

use crate::batch::MessageError;
use crate::payouts_batches::Batches;
use crate::payouts_onboarding::{Onboarding, failed};

pub struct PayoutsReconciler {
    pub open: Arc<dyn OpenWork>,
    pub batches: Batches,
    pub onboarding: Onboarding,
    pub links: Arc<dyn LinkStore>,
    pub api: Arc<dyn PayoutsApiPort>,
    pub bindings: Arc<dyn BindingStore>,
    pub consents: Arc<dyn BankLogin>,
    pub clock: Arc<dyn Clock>,
    pub stuck_after: TimeDelta,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PayoutsReport {
    pub looked_at: usize,
    /// Done with: final batches, expired or decided links.
    pub closed: usize,
    pub failed: usize,
    /// Changes read from the bank's feed that no push had brought.
    pub unpushed: usize,
}

/// The bank's feed is read in pages of this many changes, at most `FEED_PAGES` a run: a backlog
/// (the first run, or a long outage) is caught up over several runs.
const FEED_PAGE: usize = 500;
const FEED_PAGES: usize = 20;

/// What looking at one item concluded.
enum Look {
    /// Done: no longer watched.
    Closed,
    /// Look again later.
    Later,
}

impl PayoutsReconciler {
    pub async fn run(&self) -> Result<PayoutsReport, MessageError> {
        let due = self.open.due(self.clock.now()).await?;
        let looks: Vec<(OpenItem, Result<Look, MessageError>)> = futures::stream::iter(due)
            .map(|item| async move {
                // A touch from now on (a return pushed during the look) keeps the item open.
                let look = match self.open.untouch(item.kind, &item.id).await {
                    Ok(()) => self.look(&item).await,
                    Err(e) => Err(e.into()),
                };
                (item, look)
            })
            .buffer_unordered(8)
            .collect()
            .await;
        let mut report = PayoutsReport {
            looked_at: looks.len(),
            ..PayoutsReport::default()
        };
        for (item, look) in looks {
            // Each item on its own: one the table cannot close or re-open now is counted and
            // stays due, so the next run looks at it again; the others are still recorded.
            match self.record(&item, look).await {
                Ok(true) => report.closed += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(kind = ?item.kind, id = %item.id, error = %e, "Payments Out reconciliation failed for this item; next run");
                    report.failed += 1;
                }
            }
        }
        match self.follow_bank().await {
            Ok(unpushed) => report.unpushed = unpushed,
            Err(e) => {
                tracing::warn!(error = %e, "reading the bank's change feed failed; next run");
                report.failed += 1;
            }
        }
        crate::metrics::emit(
            "PayoutsReconciled",
            report.closed as f64,
            crate::metrics::Unit::Count,
            &[],
        );
        Ok(report)
    }

    /// Reads the bank's changes since the last run and works those no push brought (8 at once);
    /// the mark moves after each page, so a failure re-reads at most one page.
    async fn follow_bank(&self) -> Result<usize, MessageError> {
        let mut read_to = self.open.feed_read_to().await?;
        // Never read yet: the bank's history before the connector held any payment is of no
        // use, so the first read starts a day back instead of at the bank's first payment.
        let since = (read_to == 0).then(|| self.clock.now() - TimeDelta::days(1));
        let mut unpushed = 0;
        for _ in 0..FEED_PAGES {
            let changes = self
                .batches
                .bank
                .changed_after(read_to, since, FEED_PAGE)
                .await
                .map_err(|e| MessageError::Retry(format!("bank: {e}")))?;
            let Some(last) = changes.last().map(|c| c.event_seq) else {
                break;
            };
            let worked: Vec<Result<bool, MessageError>> = futures::stream::iter(&changes)
                .map(|change| self.batches.from_feed(change))
                .buffer_unordered(8)
                .collect()
                .await;
            for one in worked {
                match one {
                    Ok(worked) => unpushed += usize::from(worked),
                    // Can never be worked (a payment record that does not decode): passed
                    // over, so that it does not hold the feed back.
                    Err(MessageError::Poison(reason)) => {
                        tracing::error!(%reason, "a change on the bank's feed that cannot be worked: passed over");
                    }
                    // The page is read again next run; what was worked now is then news no
                    // more and passed over.
                    Err(e) => return Err(e),
                }
            }
            self.open.set_feed_read_to(last).await?;
            read_to = last;
            if changes.len() < FEED_PAGE {
                break;
            }
        }
        Ok(unpushed)
    }

    /// Closes an item or opens it again for later, as its look concluded; `true` when closed.
    async fn record(
        &self,
        item: &OpenItem,
        look: Result<Look, MessageError>,
    ) -> Result<bool, MessageError> {
        match look {
            Ok(Look::Closed) => {
                if self.open.close(item.kind, &item.id).await? {
                    return Ok(true);
                }
                // Touched during the look (a return pushed meanwhile, say): the look may have
                // concluded on reads from before the touch's change, so the next run looks
                // again.
                self.open
                    .open(&OpenItem {
                        due_at: self.clock.now(),
                        ..item.clone()
                    })
                    .await?;
                Ok(false)
            }
            Ok(Look::Later) => self.later(item).await.map(|()| false),
            // Can never succeed (an item the connector did not write): closed, with the reason.
            Err(MessageError::Poison(reason)) => {
                tracing::error!(kind = ?item.kind, id = %item.id, %reason, "a Payments Out item that cannot be reconciled: closed");
                // Left when touched during the look: the next run looks, and closes, again.
                self.open.close(item.kind, &item.id).await?;
                Err(MessageError::Poison(reason))
            }
            Err(e) => {
                self.later(item).await?;
                Err(e)
            }
        }
    }

    async fn later(&self, item: &OpenItem) -> Result<(), MessageError> {
        let next = OpenItem {
            due_at: self.clock.now() + self.stuck_after,
            ..item.clone()
        };
        Ok(self.open.open(&next).await?)
    }

    async fn look(&self, item: &OpenItem) -> Result<Look, MessageError> {
        match item.kind {
            OpenKind::Batch => {
                let id = Uuid::parse_str(&item.id)
                    .map_err(|e| MessageError::Poison(format!("batch id {}: {e}", item.id)))?;
                self.batch(id).await
            }
            OpenKind::Link => self.link(&item.id).await,
        }
    }

    /// Notes the bank's state of every submitted open payment, then works the batch on (which
    /// PATCHes them all at once).
    async fn batch(&self, batch_id: Uuid) -> Result<Look, MessageError> {
        let Some(mut record) = self.batches.store.batch(batch_id).await? else {
            return Ok(Look::Closed);
        };
        let open: Vec<Uuid> = self
            .batches
            .store
            .payments(batch_id)
            .await?
            .into_iter()
            .filter(|p| p.submitted && !p.status.is_terminal())
            .map(|p| p.payment_id)
            .collect();
        // A few reads at a time: a stuck batch of 2,000 must fit in one run.
        let noted: Vec<Result<(), MessageError>> = futures::stream::iter(open)
            .map(|payment_id| self.note_bank_state(payment_id))
            .buffer_unordered(8)
            .collect()
            .await;
        noted.into_iter().collect::<Result<(), _>>()?;
        // One PATCH for every outcome noted (and whatever else Sage lacks).
        self.batches
            .take(batch_id, record.application.as_deref())
            .await?;
        // A return the product was never told of (its message failed): told now. On the
        // record as `take` left it: its decision PATCH is sent by now.
        record.decision_patched = true;
        self.batches.patch_and_tell_all(&mut record).await?;
        let payments = self.batches.store.payments(batch_id).await?;
        let settled = payments.iter().all(|p| {
            !p.owes_sage() && (p.status.is_terminal() || p.status == PaymentStatus::Received)
        });
        Ok(if settled { Look::Closed } else { Look::Later })
    }

    async fn note_bank_state(&self, payment_id: Uuid) -> Result<(), MessageError> {
        let state = self
            .batches
            .bank
            .state(payment_id)
            .await
            .map_err(|e| MessageError::Retry(format!("bank: {e}")))?;
        if let Some(event) = state {
            self.batches.note_event(&event).await?;
        }
        Ok(())
    }

    async fn link(&self, link_id: &str) -> Result<Look, MessageError> {
        let Some(record) = self.links.link_record(link_id).await? else {
            return Ok(Look::Closed);
        };
        let subscription_id = record.link.subscription_id;
        match &record.completion {
            None if record.login_may_finish(self.clock.now()) => Ok(Look::Later),
            None if record.link.expired(self.clock.now()) => self.expire(&record).await,
            None => Ok(Look::Later),
            // The page's PATCH failed: the worker's path sends the recorded decision.
            Some(_) if !record.patched => {
                self.onboarding.onboard(subscription_id, None).await?;
                Ok(Look::Later)
            }
            Some(c) if c.status == SubscriptionStatus::Pending => {
                self.pending(subscription_id).await
            }
            Some(_) => Ok(Look::Closed),
        }
    }

    /// An unused link past its expiry: the subscription is `Rejected` if Sage still waits.
    async fn expire(&self, record: &LinkRecord) -> Result<Look, MessageError> {
        let subscription_id = record.link.subscription_id;
        let completion = Completion {
            status: SubscriptionStatus::Rejected,
            reason: Some("AuthorisationExpired".into()),
            completed_at: self.clock.now(),
        };
        // Used up first: a customer arriving now gets the 409 page, not a login.
        if !self
            .links
            .complete_link(&record.link.link_id, &completion)
            .await?
        {
            return Ok(Look::Later);
        }
        let view = self
            .api
            .get_subscription(subscription_id, None)
            .await
            .map_err(|e| failed("GET subscription", e))?;
        // Still waiting for the customer, or for the link itself (the PATCH that would have
        // sent it never landed): either way Sage still waits, and `Rejected` ends it.
        if matches!(
            view.status,
            SubscriptionStatus::AwaitingAuthorisation | SubscriptionStatus::Received
        ) {
            let change = SubscriptionChange {
                status: SubscriptionStatus::Rejected,
                link: None,
                reason: completion.reason.clone(),
            };
            self.api
                .patch_subscription(subscription_id, None, &change)
                .await
                .map_err(|e| failed("PATCH subscription", e))?;
            tracing::info!(%subscription_id, "authorisation link expired unused: subscription rejected");
        }
        self.links.mark_patched(&record.link.link_id).await?;
        Ok(Look::Closed)
    }

    /// A subscription `Pending` on the bank's review: moved once the bank has decided.
    async fn pending(&self, subscription_id: Uuid) -> Result<Look, MessageError> {
        let Some(binding) = self.bindings.binding(subscription_id).await? else {
            return Ok(Look::Closed);
        };
        let consent = match self.consents.consent(&binding.consent_id).await {
            Ok(c) => Some(c),
            Err(LoginError::Consent(_)) => None,
            Err(e) => return Err(MessageError::Retry(e.to_string())),
        };
        let refused = |reason: &str| (SubscriptionStatus::Rejected, Some(reason.to_string()));
        let (to, reason) = match consent {
            Some(c) if c.status == "pending_review" => return Ok(Look::Later),
            // Approved, but too late to pay from: as a batch would find it.
            Some(c) if c.status == "active" && c.expires_at <= self.clock.now() => {
                refused("ConsentExpired")
            }
            Some(c) if c.status == "active" => (SubscriptionStatus::Authorised, None),
            _ => refused("ConsentRefused"),
        };
        let view = self
            .api
            .get_subscription(subscription_id, None)
            .await
            .map_err(|e| failed("GET subscription", e))?;
        if view.status == SubscriptionStatus::Pending {
            let change = SubscriptionChange {
                status: to,
                link: None,
                reason,
            };
            self.api
                .patch_subscription(subscription_id, None, &change)
                .await
                .map_err(|e| failed("PATCH subscription", e))?;
        }
        Ok(Look::Closed)
    }
}

#[cfg(test)]
#[path = "payouts_reconciler_tests.rs"]
mod tests;
