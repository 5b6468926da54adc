//! Subscription onboarding (docs/payments-out.md §6): the subscription read from Payments Out
//! (authoritative, whatever the delivery said), its `additionalData` checked against the
//! provider's `Subscriptions` rules — a failure is a `Rejected` PATCH with the rule — then one
//! authorisation link minted and recorded, and the subscription moved to
//! `AwaitingAuthorisation` with it. Safe to repeat: a redelivery finds the subscription moved on,
//! or reuses the link an earlier attempt recorded.

use std::sync::Arc;

use chrono::TimeDelta;
use connector_domain::payouts::authorise::LOGIN_GRACE;
use connector_domain::payouts::checks::RuleSet;
use connector_domain::payouts::onboarding::{AuthLink, SubscriptionChange, check_subscription};
use connector_domain::payouts::status::SubscriptionStatus;
use connector_domain::ports::{
    CallError, Clock, LinkStore, OpenItem, OpenKind, OpenWork, PayoutsApiPort,
};
use uuid::Uuid;

use crate::batch::MessageError;

/// What onboarding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Onboarded {
    AwaitingAuthorisation(AuthLink),
    /// Refused by a `Subscriptions` rule: the reason sent with the `Rejected` PATCH.
    Rejected(String),
    /// Already past `Received` (a redelivery after the PATCH): nothing to do.
    Already(SubscriptionStatus),
    /// The customer's decision at the authorisation page, PATCHed here because the page's
    /// own PATCH failed.
    Decided(SubscriptionStatus),
}

pub struct Onboarding {
    pub api: Arc<dyn PayoutsApiPort>,
    pub links: Arc<dyn LinkStore>,
    pub clock: Arc<dyn Clock>,
    /// How long a link lives (`AUTH_LINK_TTL_S`, 7 days).
    pub link_ttl: TimeDelta,
    /// Where the reconciler finds links to expire.
    pub open: Arc<dyn OpenWork>,
}

/// A failed Payments Out call as a message outcome: a request Payments Out refuses as invalid
/// can never succeed (DLQ with the reason); everything else is tried again (a 409 re-reads the
/// subscription on the retry, a refused credential is alarmed by the provider client).
pub(crate) fn failed(step: &str, e: CallError) -> MessageError {
    match e {
        CallError::Invalid { summary } => MessageError::Poison(format!("{step}: {summary}")),
        e => MessageError::Retry(format!("{step}: {e}")),
    }
}

impl Onboarding {
    pub async fn onboard(
        &self,
        subscription_id: Uuid,
        application: Option<&str>,
    ) -> Result<Onboarded, MessageError> {
        let view = self
            .api
            .get_subscription(subscription_id, application)
            .await
            .map_err(|e| failed("GET subscription", e))?;
        if view.status != SubscriptionStatus::Received {
            if let Some(decided) = self
                .finish_decision(subscription_id, view.status, application)
                .await?
            {
                return Ok(Onboarded::Decided(decided));
            }
            tracing::info!(%subscription_id, status = ?view.status, "subscription already onboarded");
            return Ok(Onboarded::Already(view.status));
        }
        let rules = self.subscription_rules().await?;
        if let Err(reason) = check_subscription(view.additional_data.as_deref(), &rules) {
            tracing::warn!(%subscription_id, %reason, "subscription refused by a rule");
            let change = SubscriptionChange {
                status: SubscriptionStatus::Rejected,
                link: None,
                reason: Some(reason.clone()),
            };
            self.patch(subscription_id, application, &change).await?;
            return Ok(Onboarded::Rejected(reason));
        }
        let link = self.link(subscription_id).await?;
        let change = SubscriptionChange {
            status: SubscriptionStatus::AwaitingAuthorisation,
            link: Some(link.clone()),
            reason: None,
        };
        self.patch(subscription_id, application, &change).await?;
        tracing::info!(%subscription_id, "subscription awaiting authorisation");
        Ok(Onboarded::AwaitingAuthorisation(link))
    }

    /// The customer's decision at the authorisation page, when Payments Out does not have it
    /// yet (the page's PATCH failed): PATCHed now.
    async fn finish_decision(
        &self,
        subscription_id: Uuid,
        at_sage: SubscriptionStatus,
        application: Option<&str>,
    ) -> Result<Option<SubscriptionStatus>, MessageError> {
        let Some(link) = self.links.link_for(subscription_id).await? else {
            return Ok(None);
        };
        let Some(record) = self.links.link_record(&link.link_id).await? else {
            return Ok(None);
        };
        let Some(completion) = record.completion.filter(|_| !record.patched) else {
            return Ok(None);
        };
        if at_sage != completion.status {
            if !at_sage.can_move_to(completion.status) {
                tracing::warn!(%subscription_id, ?at_sage, decided = ?completion.status, "Payments Out moved the subscription on: the decision is not sent");
                return Ok(None);
            }
            let change = crate::payouts_authorise::decision_change(&completion);
            self.patch(subscription_id, application, &change).await?;
        }
        self.links.mark_patched(&link.link_id).await?;
        Ok(Some(completion.status))
    }

    /// The provider's rules, read now (an operator may change them at any time). A rule that
    /// cannot be used is the provider configuration's fault: retried, and logged as such.
    async fn subscription_rules(&self) -> Result<RuleSet, MessageError> {
        let configuration = self
            .api
            .provider_configuration()
            .await
            .map_err(|e| failed("GET provider", e))?;
        RuleSet::from_provider_config(&configuration).map_err(|e| {
            tracing::error!(error = %e, "configuration error: the provider configuration has an unusable rule");
            crate::metrics::count("ConfigurationErrors", &[("Step", "ProviderRules")]);
            MessageError::Retry(e.to_string())
        })
    }

    /// The subscription's link: the one an earlier attempt recorded, or a new one.
    async fn link(&self, subscription_id: Uuid) -> Result<AuthLink, MessageError> {
        let link = match self.links.link_for(subscription_id).await? {
            Some(link) => link,
            None => {
                let fresh = AuthLink::new(
                    rand::random(),
                    subscription_id,
                    self.clock.now(),
                    self.link_ttl,
                );
                self.links.record_link(&fresh).await?
            }
        };
        // Before the PATCH: a link Sage shows is always one the reconciler will expire.
        let watch = OpenItem {
            kind: OpenKind::Link,
            id: link.link_id.clone(),
            due_at: link.expires_at + LOGIN_GRACE,
        };
        self.open.open(&watch).await?;
        Ok(link)
    }

    async fn patch(
        &self,
        subscription_id: Uuid,
        application: Option<&str>,
        change: &SubscriptionChange,
    ) -> Result<(), MessageError> {
        self.api
            .patch_subscription(subscription_id, application, change)
            .await
            .map_err(|e| failed("PATCH subscription", e))
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use connector_domain::payouts::onboarding::SubscriptionView;
    use serde_json::json;

    use super::*;
    use crate::fakes::{FakePayouts, ManualClock, MemoryStore};

    fn setup(additional_data: Option<&str>) -> (Onboarding, Arc<FakePayouts>, Uuid) {
        let payouts = Arc::new(FakePayouts::default());
        let id = Uuid::new_v4();
        payouts.subscriptions.lock().unwrap().insert(
            id,
            SubscriptionView {
                subscription_id: id,
                status: SubscriptionStatus::Received,
                additional_data: additional_data.map(str::to_string),
            },
        );
        *payouts.configuration.lock().unwrap() = json!({"accountType": {"validationRules": [
            {"ruleId": "eb-tax-id", "validation": {"apiPath": "Subscriptions",
             "jsonPath": "$.data.additionalData.taxId", "optionality": "Required",
             "regex": "^[0-9]{2}-[0-9]{7}$"}}]}});
        let start: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let onboarding = Onboarding {
            api: payouts.clone(),
            links: Arc::new(MemoryStore::default()),
            clock: Arc::new(ManualClock::new(start)),
            link_ttl: TimeDelta::days(7),
            open: Arc::new(MemoryStore::default()),
        };
        (onboarding, payouts, id)
    }

    #[tokio::test]
    async fn a_valid_subscription_awaits_authorisation_with_one_link_however_often_it_comes() {
        let (o, payouts, id) = setup(Some(r#"{"taxId":"12-3456789"}"#));
        let Onboarded::AwaitingAuthorisation(link) =
            o.onboard(id, Some("sage.intacct")).await.unwrap()
        else {
            panic!("awaiting authorisation")
        };
        assert_eq!(link.subscription_id, id);
        assert_eq!(link.expires_at - link.issued_at, TimeDelta::days(7));
        assert_eq!(
            o.onboard(id, None).await.unwrap(),
            Onboarded::Already(SubscriptionStatus::AwaitingAuthorisation)
        );
        let patches = payouts.patches.lock().unwrap().clone();
        assert_eq!(patches.len(), 1);
        assert_eq!(patches[0].link.as_ref(), Some(&link));
    }

    #[tokio::test]
    async fn a_patch_that_failed_is_retried_with_the_same_link() {
        let (o, payouts, id) = setup(Some(r#"{"taxId":"12-3456789"}"#));
        payouts
            .fail_patches
            .lock()
            .unwrap()
            .push_back(CallError::Transient("502".into()));
        assert!(matches!(
            o.onboard(id, None).await,
            Err(MessageError::Retry(_))
        ));
        let first = o
            .links
            .link_for(id)
            .await
            .unwrap()
            .expect("recorded before the PATCH");
        let Onboarded::AwaitingAuthorisation(link) = o.onboard(id, None).await.unwrap() else {
            panic!("awaiting authorisation")
        };
        assert_eq!(link, first);
    }

    #[tokio::test]
    async fn a_subscription_breaking_a_rule_is_rejected_with_the_rule() {
        let (o, payouts, id) = setup(Some(r#"{"taxId":"123"}"#));
        assert_eq!(
            o.onboard(id, None).await.unwrap(),
            Onboarded::Rejected("ValidationFailed: eb-tax-id".into())
        );
        let patches = payouts.patches.lock().unwrap().clone();
        assert_eq!(patches[0].status, SubscriptionStatus::Rejected);
        assert_eq!(
            patches[0].reason.as_deref(),
            Some("ValidationFailed: eb-tax-id")
        );
        assert!(
            o.links.link_for(id).await.unwrap().is_none(),
            "no link for a rejected one"
        );
    }

    #[tokio::test]
    async fn an_unknown_subscription_is_retried_and_an_invalid_request_is_poison() {
        let (o, payouts, id) = setup(Some(r#"{"taxId":"12-3456789"}"#));
        assert!(matches!(
            o.onboard(Uuid::new_v4(), None).await,
            Err(MessageError::Retry(_))
        ));
        payouts
            .fail_patches
            .lock()
            .unwrap()
            .push_back(CallError::Invalid {
                summary: "ValidationError links".into(),
            });
        assert!(matches!(
            o.onboard(id, None).await,
            Err(MessageError::Poison(_))
        ));
    }
}
