//! The bank's pushes to the connector (docs/bank-data-api.md §4.4, §4.5): payment events move
//! payments to their outcome at Payments Out (`payouts_batches`); consent events move a
//! subscription held `Pending` for the bank's review to `Authorised` or `Rejected`, and cancel an
//! authorised one whose consent was revoked or expired. Both are idempotent: an event changes
//! only what it moves forward.

use std::sync::Arc;

use connector_domain::payouts::batches::BankEvent;
use connector_domain::payouts::onboarding::SubscriptionChange;
use connector_domain::payouts::status::SubscriptionStatus;
use connector_domain::ports::{BindingStore, ExpectedKey, PayoutsApiPort};
use serde::Deserialize;

use crate::batch::MessageError;
use crate::payouts_batches::{Batches, EventOutcome};
use crate::payouts_onboarding::failed;

/// A consent decision (docs/bank-data-api.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsentEvent {
    pub event_id: String,
    pub consent_id: String,
    pub status: String,
}

/// Where a consent event takes a subscription in `current` at Payments Out, with the reason:
/// the bank's decision on a consent it reviewed moves a `Pending` one; a consent revoked or
/// expired cancels an `Authorised` or `Suspended` one (its unsubmitted payments are then
/// cancelled, not sent: docs/payments-out.md §9). Anything else changes nothing.
fn consent_move(
    current: SubscriptionStatus,
    consent: &str,
) -> Option<(SubscriptionStatus, Option<String>)> {
    use SubscriptionStatus::*;
    match (current, consent) {
        (Pending, "active") => Some((Authorised, None)),
        (Pending, _) => Some((Rejected, Some("ConsentRefused".into()))),
        (Authorised | Suspended, "revoked") => Some((Cancelled, Some("ConsentRevoked".into()))),
        (Authorised | Suspended, "expired") => Some((Cancelled, Some("ConsentExpired".into()))),
        _ => None,
    }
}

/// What a consent event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentOutcome {
    Decided(SubscriptionStatus),
    /// Not pending at Payments Out, or no subscription is bound to the consent.
    Ignored,
}

pub struct BankEvents {
    pub batches: Batches,
    pub api: Arc<dyn PayoutsApiPort>,
    pub bindings: Arc<dyn BindingStore>,
    /// `INGEST_API_KEY`: the key the bank presents (on AWS the route is IAM-authorised).
    pub api_key: Option<Arc<dyn ExpectedKey>>,
}

impl BankEvents {
    /// Whether the presented key is the bank's (compared in constant time); always when no key
    /// is configured (IAM decided already).
    pub async fn authorised(&self, presented: Option<&str>) -> bool {
        crate::browser::key_accepted(self.api_key.as_ref(), presented).await
    }

    pub async fn payment(&self, event: &BankEvent) -> Result<EventOutcome, MessageError> {
        let outcome = self.batches.on_event(event).await?;
        let name = match outcome {
            EventOutcome::Applied(_) => "applied",
            EventOutcome::Ignored => "ignored",
            EventOutcome::UnknownPayment => "unknownPayment",
        };
        crate::metrics::count(
            "PayoutsBankEvents",
            &[("Kind", "payment"), ("Outcome", name)],
        );
        Ok(outcome)
    }

    pub async fn consent(&self, event: &ConsentEvent) -> Result<ConsentOutcome, MessageError> {
        let outcome = self.decide_consent(event).await?;
        let name = match outcome {
            ConsentOutcome::Decided(_) => "applied",
            ConsentOutcome::Ignored => "ignored",
        };
        crate::metrics::count(
            "PayoutsBankEvents",
            &[("Kind", "consent"), ("Outcome", name)],
        );
        Ok(outcome)
    }

    async fn decide_consent(&self, event: &ConsentEvent) -> Result<ConsentOutcome, MessageError> {
        let Some(binding) = self.bindings.binding_by_consent(&event.consent_id).await? else {
            tracing::warn!(consent_id = %event.consent_id, "a consent event for no subscription");
            return Ok(ConsentOutcome::Ignored);
        };
        let subscription_id = binding.subscription_id;
        let view = self
            .api
            .get_subscription(subscription_id, None)
            .await
            .map_err(|e| failed("GET subscription", e))?;
        let Some((status, reason)) = consent_move(view.status, &event.status) else {
            return Ok(ConsentOutcome::Ignored);
        };
        let change = SubscriptionChange {
            status,
            link: None,
            reason,
        };
        self.api
            .patch_subscription(subscription_id, None, &change)
            .await
            .map_err(|e| failed("PATCH subscription", e))?;
        tracing::info!(%subscription_id, ?status, event_id = %event.event_id, consent = %event.status, "a consent event moved the subscription");
        Ok(ConsentOutcome::Decided(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consent_event_moves_a_subscription_only_where_it_leads() {
        use SubscriptionStatus::*;
        assert_eq!(consent_move(Pending, "active"), Some((Authorised, None)));
        assert_eq!(
            consent_move(Pending, "rejected"),
            Some((Rejected, Some("ConsentRefused".into())))
        );
        for from in [Authorised, Suspended] {
            assert_eq!(
                consent_move(from, "revoked"),
                Some((Cancelled, Some("ConsentRevoked".into())))
            );
            assert_eq!(
                consent_move(from, "expired"),
                Some((Cancelled, Some("ConsentExpired".into())))
            );
        }
        assert_eq!(consent_move(Authorised, "active"), None, "already");
        for done in [Cancelled, Rejected] {
            assert_eq!(consent_move(done, "revoked"), None, "terminal");
        }
        assert_eq!(consent_move(AwaitingAuthorisation, "revoked"), None);
    }
}
