//! The Payments Out worker: consumes what `po-intake` queued. Subscriptions are onboarded
//! (`payouts_onboarding`), the product's debtor account messages answered (`payouts_messages`)
//! and batches checked, submitted to the bank and cancelled on request (`payouts_batches`); a
//! delivery of another kind goes to the DLQ at once with that reason, to be redriven once it is
//! handled (redriving is safe: every delivery is keyed and its work idempotent).

use connector_domain::payouts::notification::PayoutsWork;
use connector_domain::payouts::status::BatchStatus;

use crate::batch::MessageError;
use crate::payouts_batches::{Batches, Taken};
use crate::payouts_messages::{Answered, MESSAGE_KINDS, Messages, ProductMessage};
use crate::payouts_onboarding::{Onboarded, Onboarding};

pub struct PayoutsWorker {
    pub onboarding: Onboarding,
    pub messages: Messages,
    pub batches: Batches,
}

fn uuid(v: &serde_json::Value) -> Option<uuid::Uuid> {
    v.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok())
}

/// The `batchId` of a `kind` message (a UUID); a message without one is poison, with why.
fn batch_id_of(data: &serde_json::Value, kind: &str) -> Result<uuid::Uuid, String> {
    uuid(&data["batchId"]).ok_or_else(|| format!("{kind} without a batchId (a UUID)"))
}

/// A cancellation request's `{batchId, paymentIds?}`; a malformed one is poison, with why.
fn cancellation_of(
    data: &serde_json::Value,
) -> Result<(uuid::Uuid, Option<Vec<uuid::Uuid>>), String> {
    let batch_id = batch_id_of(data, "batchpaymentcancellations")?;
    let only = match &data["paymentIds"] {
        serde_json::Value::Null => None,
        serde_json::Value::Array(ids) => Some(
            ids.iter()
                .map(|id| uuid(id).ok_or_else(|| "paymentIds: every item a UUID".to_string()))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err("paymentIds: an array of UUIDs".into()),
    };
    Ok((batch_id, only))
}

/// Why a delivery no other arm of [`PayoutsWorker::handle`] takes is poison: a subscription or
/// a product's message without the `subscriptionId` it is about (and its answer goes to), which
/// no redrive mends; or a type this release does not handle, which a later one may.
fn unworkable(kind: &str, key: &str) -> String {
    if kind == "subscriptions" || MESSAGE_KINDS.contains(&kind) {
        format!("{kind} without a subscriptionId ({key})")
    } else {
        format!("NotYetHandled: {kind} ({key}); redrive once the worker handles it")
    }
}

impl PayoutsWorker {
    pub async fn handle(&self, work: PayoutsWork) -> Result<(), MessageError> {
        match work {
            PayoutsWork::Subscription {
                subscription_id, ..
            } => self.onboard(subscription_id, None).await,
            PayoutsWork::Notification {
                kind,
                subscription_id: Some(subscription_id),
                application,
                ..
            } if kind == "subscriptions" => {
                self.onboard(subscription_id, application.as_deref()).await
            }
            PayoutsWork::Notification {
                kind,
                data,
                application,
                ..
            } if kind == "batchpayments" => self.batch(&data, application.as_deref()).await,
            PayoutsWork::Notification {
                kind,
                data,
                application,
                ..
            } if kind == "batchpaymentcancellations" => {
                self.cancel(&data, application.as_deref()).await
            }
            PayoutsWork::Notification {
                kind,
                subscription_id: Some(subscription_id),
                correlation_id,
                data,
                application,
                ..
            } if MESSAGE_KINDS.contains(&kind.as_str()) => {
                let message = ProductMessage {
                    kind: &kind,
                    subscription_id,
                    correlation_id: correlation_id.as_deref(),
                    data: &data,
                    application: application.as_deref(),
                };
                self.answer(message).await
            }
            PayoutsWork::SyncBatch { batch_id } => self.batches.sync_window(batch_id).await,
            PayoutsWork::Notification { kind, key, .. } => {
                Err(MessageError::Poison(unworkable(&kind, &key)))
            }
        }
    }

    async fn answer(&self, message: ProductMessage<'_>) -> Result<(), MessageError> {
        let kind = message.kind;
        let outcome = match self.messages.handle(message.clone()).await? {
            Answered::Put(status) => status.as_str(),
            Answered::Listed(_) => "listed",
            Answered::Deleted { .. } => "deleted",
        };
        crate::metrics::count("PayoutsMessages", &[("Type", kind), ("Outcome", outcome)]);
        Ok(())
    }

    async fn batch(
        &self,
        data: &serde_json::Value,
        application: Option<&str>,
    ) -> Result<(), MessageError> {
        let batch_id = batch_id_of(data, "batchpayments").map_err(MessageError::Poison)?;
        let outcome = match self.batches.take(batch_id, application).await? {
            Taken::Worked {
                status: BatchStatus::Rejected,
                ..
            } => "rejected",
            Taken::Worked { .. } => "processing",
            Taken::NotOurs(_) => "notOurs",
            Taken::Deferred => "deferred",
        };
        crate::metrics::count("PayoutsBatches", &[("Outcome", outcome)]);
        Ok(())
    }

    async fn cancel(
        &self,
        data: &serde_json::Value,
        application: Option<&str>,
    ) -> Result<(), MessageError> {
        let (batch_id, only) = cancellation_of(data).map_err(MessageError::Poison)?;
        let report = self
            .batches
            .cancel(batch_id, only.as_deref(), application)
            .await?;
        for (outcome, n) in [
            ("cancelled", report.cancelled),
            ("tooLate", report.too_late),
        ] {
            if n > 0 {
                crate::metrics::emit(
                    "PayoutsCancellations",
                    n as f64,
                    crate::metrics::Unit::Count,
                    &[("Outcome", outcome)],
                );
            }
        }
        Ok(())
    }

    async fn onboard(
        &self,
        subscription_id: uuid::Uuid,
        application: Option<&str>,
    ) -> Result<(), MessageError> {
        let outcome = self
            .onboarding
            .onboard(subscription_id, application)
            .await?;
        let name = match outcome {
            Onboarded::AwaitingAuthorisation(_) => "awaitingAuthorisation",
            Onboarded::Rejected(_) => "rejected",
            Onboarded::Already(_) => "already",
            Onboarded::Decided(_) => "decided",
        };
        crate::metrics::count("PayoutsSubscriptions", &[("Outcome", name)]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{cancellation_of, unworkable};

    #[test]
    fn a_known_type_without_its_subscription_is_malformed_and_another_type_not_yet_handled() {
        for kind in ["subscriptions", "creditorputs", "debtoraccountlistqueries"] {
            let reason = unworkable(kind, "k-1");
            assert_eq!(reason, format!("{kind} without a subscriptionId (k-1)"));
        }
        assert_eq!(
            unworkable("mandates", "mandates#m-1"),
            "NotYetHandled: mandates (mandates#m-1); redrive once the worker handles it"
        );
    }

    #[test]
    fn a_cancellation_names_its_batch_and_optionally_its_payments() {
        let batch = uuid::Uuid::new_v4();
        let p = uuid::Uuid::new_v4();
        assert_eq!(
            cancellation_of(&json!({"batchId": batch})),
            Ok((batch, None))
        );
        assert_eq!(
            cancellation_of(&json!({"batchId": batch, "paymentIds": [p]})),
            Ok((batch, Some(vec![p])))
        );
        for bad in [
            json!({}),
            json!({"batchId": "b-1"}),
            json!({"batchId": batch, "paymentIds": ["x"]}),
            json!({"batchId": batch, "paymentIds": p}),
        ] {
            assert!(cancellation_of(&bad).is_err(), "{bad}");
        }
    }
}
