//! The Payments Out worker: consumes what `po-intake` queued. Subscriptions are onboarded
//! (`payouts_onboarding`), the product's debtor account messages answered (`payouts_messages`)
//! and batches checked, submitted to the bank and cancelled on request (`payouts_batches`); a
//! delivery of another kind goes to the DLQ at once with that reason, to be redriven once it is
//! handled (redriving is safe: every delivery is keyed and its work idempotent).

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use connector_aws::rate_limit::DynamoRateLimiter;
use connector_aws::token_cache::DynamoTokenCache;
use connector_domain::payouts::notification::PayoutsWork;
use connector_domain::payouts::status::BatchStatus;
use connector_domain::ports::SharedTokenCache;
use connector_sage::payouts::ProviderPayouts;
use connector_sage::{
    PayoutsApi, PayoutsPaths, ProviderApi, ProviderConfig, SageIdConfig, TokenProvider, TokenStyle,
    rate_scope,
};

use crate::batch::{DeadLetters, MessageError};
use crate::config::{ConfigError, Env};
use crate::context::{Platform, QueueNeeds, http_client};
use crate::payouts_batches::{Batches, Taken};
use crate::payouts_messages::{Answered, MESSAGE_KINDS, Messages, ProductMessage};
use crate::payouts_onboarding::{Onboarded, Onboarding};
use crate::pipeline::{Consumer, SystemClock};

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
            PayoutsWork::Notification { kind, key, .. } => Err(MessageError::Poison(format!(
                "NotYetHandled: {kind} ({key}); redrive once the worker handles it"
            ))),
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

    /// The worker on real clients, and where its poison goes.
    pub async fn from_env(env: &Env) -> Result<Consumer<Self>, ConfigError> {
        let platform = Platform::from_env(env, QueueNeeds::default()).await?;
        let links_base = match env.optional("PUBLIC_BASE_URL") {
            Some(_) => env.url("PUBLIC_BASE_URL")?,
            None => env.url("AUTHORISE_BASE_URL")?,
        };
        let api = payouts_from_env(env, &platform, links_base).await?;
        let ttl = env.duration_secs("AUTH_LINK_TTL_S", Duration::from_secs(7 * 24 * 3600))?;
        let api = Arc::new(api);
        let bank = crate::context::bank_from_env(env, &platform, &http_client(env)?).await?;
        let table = Arc::new(platform.table.clone());
        let messages = Messages {
            api: api.clone(),
            bindings: table.clone(),
            bank: bank.clone(),
            parties: table,
            clock: Arc::new(SystemClock),
            supported_currencies: supported_currencies(env),
            sealer: Arc::new(connector_aws::kms::KmsSealer::new(
                aws_sdk_kms::Client::new(&platform.sdk),
                env.required("CREDITOR_KEY_ID")?,
            )),
        };
        let batches = batches_from_env(env, &platform, api.clone(), bank)?;
        let onboarding = Onboarding {
            api,
            links: Arc::new(platform.table.clone()),
            clock: Arc::new(SystemClock),
            link_ttl: TimeDelta::from_std(ttl).unwrap_or(TimeDelta::days(7)),
            open: Arc::new(platform.table.clone()),
        };
        let dead_letters: DeadLetters = platform.dead_letters(env, false)?;
        Ok(Consumer {
            handler: Self {
                onboarding,
                messages,
                batches,
            },
            dead_letters,
        })
    }
}

/// `SUPPORTED_CURRENCIES` (`USD`).
pub fn supported_currencies(env: &Env) -> Vec<String> {
    env.optional("SUPPORTED_CURRENCIES")
        .unwrap_or_else(|| "USD".into())
        .split(',')
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .collect()
}

/// The batches' use cases on the table, Payments Out's client and the bank's.
pub fn batches_from_env(
    env: &Env,
    platform: &Platform,
    api: Arc<ProviderPayouts>,
    bank: Arc<connector_bank::BankClient>,
) -> Result<Batches, ConfigError> {
    let table = Arc::new(platform.table.clone());
    Ok(Batches {
        api: api.clone(),
        batches: api,
        store: table.clone(),
        parties: table.clone(),
        bindings: table,
        consents: bank.clone(),
        bank,
        clock: Arc::new(SystemClock),
        supported_currencies: supported_currencies(env),
        bank_concurrency: env.parse_or("BANK_CONCURRENCY", 8usize)?,
        open: Arc::new(platform.table.clone()),
        stuck_after: stuck_after(env)?,
        outcome_window: env.duration_secs("OUTCOME_WINDOW_S", Duration::from_secs(1))?,
        submit_budget: env.duration_secs("SUBMIT_BUDGET_S", Duration::from_secs(30))?,
        requeue: match env.optional("PAYOUTS_QUEUE_URL") {
            Some(_) => Some(Arc::new(connector_aws::queues::WorkQueue::new(
                platform.sqs.clone(),
                env.url("PAYOUTS_QUEUE_URL")?,
            ))),
            None => None,
        },
    })
}

/// `STUCK_AFTER_S` (900): how long Payments Out work may go without progress before the
/// reconciler looks at it.
pub fn stuck_after(env: &Env) -> Result<TimeDelta, ConfigError> {
    let d = env.duration_secs("STUCK_AFTER_S", Duration::from_secs(900))?;
    TimeDelta::from_std(d).map_err(|e| ConfigError::Invalid {
        name: "STUCK_AFTER_S".into(),
        reason: e.to_string(),
    })
}

/// Payments Out's client from the configuration contract (`POS_*`): its own Sage ID audience
/// (the token cache is keyed by issuer, client and audience, so it never swaps tokens with
/// Banking Service), the Sage ID client shared with Banking Service unless
/// `POS_SAGE_ID_CLIENT_ID`/`_SECRET` are set, and a rate limit keyed by its API key.
/// `links_base` starts the authorisation links it PATCHes into subscriptions.
pub async fn payouts_from_env(
    env: &Env,
    platform: &Platform,
    links_base: String,
) -> Result<ProviderPayouts, ConfigError> {
    let secrets = platform.secrets();
    let http = http_client(env)?;
    let (client_id, client_secret) = match env.optional("POS_SAGE_ID_CLIENT_ID") {
        Some(id) => (id, env.secret("POS_SAGE_ID_CLIENT_SECRET", &secrets).await?),
        None => (
            env.required("SAGE_ID_CLIENT_ID")?,
            env.secret("SAGE_ID_CLIENT_SECRET", &secrets).await?,
        ),
    };
    let style = match env.optional("POS_SAGE_ID_TOKEN_STYLE").as_deref() {
        None | Some("form") => TokenStyle::Form,
        Some("json") => TokenStyle::Json,
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "POS_SAGE_ID_TOKEN_STYLE".into(),
                reason: format!("`{other}` is neither form nor json"),
            });
        }
    };
    let sage_id = SageIdConfig {
        token_url: env.url("SAGE_ID_TOKEN_URL")?,
        client_id,
        client_secret,
        audience: env.required("POS_SAGE_ID_AUDIENCE")?,
        refresh_margin: env.duration_secs("SAGE_ID_REFRESH_MARGIN_S", Duration::from_secs(300))?,
        style,
    };
    let cache: Arc<dyn SharedTokenCache> = Arc::new(DynamoTokenCache::new(
        platform.table.clone(),
        &sage_id.cache_scope(),
    ));
    let tokens = Arc::new(TokenProvider::new(http.clone(), sage_id, Some(cache)));
    let api_key = env.secret("POS_API_KEY", &secrets).await?;
    let rps: f64 = env.parse_or("POS_RATE_LIMIT_RPS", 10.0)?;
    let limiter = Arc::new(DynamoRateLimiter::new(
        platform.table.clone(),
        rate_scope(&api_key),
        rps,
    ));
    let defaults = PayoutsPaths::default();
    let core = ProviderApi::new(
        http,
        ProviderConfig {
            base_url: env.url("POS_BASE_URL")?,
            api_key,
            max_rate_wait: env
                .duration_secs("PROVIDER_MAX_RATE_WAIT_S", Duration::from_secs(20))?,
        },
        tokens,
        limiter,
    );
    let paths = PayoutsPaths {
        provider: env
            .optional("POS_PROVIDER_PREFIX")
            .unwrap_or(defaults.provider),
        messaging: env.optional("POS_MSG_PREFIX").unwrap_or(defaults.messaging),
        application_default: env
            .optional("POS_APPLICATION_DEFAULT")
            .unwrap_or(defaults.application_default),
        public_base_url: links_base,
    };
    Ok(ProviderPayouts {
        api: PayoutsApi::new(core, paths),
        provider_id: env
            .optional_uuid("POS_PROVIDER_ID")?
            .ok_or_else(|| ConfigError::Missing {
                name: "POS_PROVIDER_ID".into(),
                hint: "the providerId Payments Out gave the provider",
            })?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::cancellation_of;

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
