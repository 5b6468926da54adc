//! The Payments Out Service client: the Provider API (provider configuration, batches,
//! subscriptions) and the provider messaging API. Every call goes through the Banking Service
//! client's sending path (`ProviderApi::send_with`: the shared rate slot, `x-api-key`, the Sage ID
//! token, one refresh on a 401) and adds Payments Out's headers: `x-application` (the product that
//! introduced the batch or subscription) and a fresh `x-fapi-interaction-id`, which is logged.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use connector_domain::payouts::batches::{BatchView, PaymentView};
use connector_domain::payouts::onboarding::{SubscriptionChange, SubscriptionView};
use connector_domain::ports::{BatchChange, BoxFuture, CallError};

use crate::payouts_wire::{
    AuthoriseLinks, Batch, BatchPatch, BatchPatchData, Message, PaymentPatch, Subscription,
    SubscriptionPatch, SubscriptionPatchData,
};
use crate::provider::{Envelope, ProviderApi, ProviderError};

/// Where Payments Out's two APIs live under its base URL.
#[derive(Debug, Clone)]
pub struct PayoutsPaths {
    /// `POS_PROVIDER_PREFIX`: `/api-provider-v1`.
    pub provider: String,
    /// `POS_MSG_PREFIX`: `/api-provider-msg-v1`.
    pub messaging: String,
    /// `x-application` when no notification named the product (`POS_APPLICATION_DEFAULT`).
    pub application_default: String,
    /// The connector's public base URL: authorisation links are `{it}/authorise/{linkId}`.
    pub public_base_url: String,
}

impl Default for PayoutsPaths {
    fn default() -> Self {
        Self {
            provider: "/api-provider-v1".into(),
            messaging: "/api-provider-msg-v1".into(),
            application_default: "sage.provider".into(),
            public_base_url: String::new(),
        }
    }
}

pub struct PayoutsApi {
    /// The sending path, configured with Payments Out's base URL and API key.
    core: ProviderApi,
    pub paths: PayoutsPaths,
}

/// The longest `Retry-After` a call waits out itself before it fails as rate limited.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
/// How many times a call waits out a 429 before it fails as rate limited.
const MAX_RETRIES: u32 = 3;

impl PayoutsApi {
    pub fn new(core: ProviderApi, paths: PayoutsPaths) -> Self {
        Self { core, paths }
    }

    /// One call; `Ok(None)` for a success without a body (204, 202).
    async fn call(
        &self,
        method: Method,
        path: &str,
        application: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, ProviderError> {
        let interaction = Uuid::new_v4().to_string();
        let application = application.unwrap_or(&self.paths.application_default);
        tracing::debug!(%method, path, interaction_id = %interaction, "Payments Out call");
        let headers = [
            ("x-application", application.to_string()),
            ("x-fapi-interaction-id", interaction.clone()),
        ];
        let mut waits = 0;
        let (status, retry_after, bytes) = loop {
            let (status, retry_after, bytes) = self
                .core
                .send_with(method.clone(), path, body, &headers)
                .await?;
            // A 429 means nothing was done: after a short Retry-After the same call is sent
            // again, rather than failing work that a burst of throttling would then starve.
            match retry_after {
                Some(wait)
                    if status == StatusCode::TOO_MANY_REQUESTS
                        && wait <= MAX_RETRY_AFTER
                        && waits < MAX_RETRIES =>
                {
                    waits += 1;
                    tracing::info!(
                        path,
                        wait_ms = wait.as_millis() as u64,
                        "Payments Out asked to wait: sending again"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => break (status, retry_after, bytes),
            }
        };
        if !status.is_success() {
            tracing::warn!(path, interaction_id = %interaction, status = status.as_u16(), "Payments Out refused the call");
            return Err(ProviderApi::error_of(status, retry_after, &bytes));
        }
        Ok((status != StatusCode::NO_CONTENT
            && status != StatusCode::ACCEPTED
            && !bytes.is_empty())
        .then_some(bytes))
    }

    async fn get_bytes(
        &self,
        path: &str,
        application: Option<&str>,
    ) -> Result<Vec<u8>, ProviderError> {
        self.call(Method::GET, path, application, None)
            .await?
            .ok_or_else(|| ProviderError::Unexpected("an empty answer to a GET".into()))
    }

    async fn get_data<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        application: Option<&str>,
    ) -> Result<T, ProviderError> {
        let bytes = self.get_bytes(path, application).await?;
        data_of(&bytes)
    }

    async fn send_body(
        &self,
        method: Method,
        path: &str,
        application: Option<&str>,
        body: &impl serde::Serialize,
    ) -> Result<(), ProviderError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| ProviderError::Unexpected(e.to_string()))?;
        self.call(method, path, application, Some(&bytes)).await?;
        Ok(())
    }

    /// The provider configuration, whole (unknown members included, so that a PATCH, which
    /// replaces it, keeps them).
    pub async fn get_provider(&self, provider_id: Uuid) -> Result<Value, ProviderError> {
        let path = format!("{}/providers/{provider_id}", self.paths.provider);
        self.get_data(&path, None).await
    }

    /// Replaces the provider configuration (omitted members are removed).
    pub async fn patch_provider(
        &self,
        provider_id: Uuid,
        configuration: &Value,
    ) -> Result<(), ProviderError> {
        let path = format!("{}/providers/{provider_id}", self.paths.provider);
        let body = serde_json::json!({ "data": configuration });
        self.send_body(Method::PATCH, &path, None, &body).await
    }

    pub async fn get_batch(
        &self,
        batch_id: Uuid,
        application: Option<&str>,
    ) -> Result<Batch, ProviderError> {
        let path = format!("{}/batchpayments/{batch_id}", self.paths.provider);
        self.get_data(&path, application).await
    }

    /// Moves the batch and the payments listed (atomic at Sage: an illegal transition is a 409
    /// and nothing is applied).
    pub async fn patch_batch(
        &self,
        batch_id: Uuid,
        application: Option<&str>,
        patch: &BatchPatch,
    ) -> Result<(), ProviderError> {
        let path = format!("{}/batchpayments/{batch_id}", self.paths.provider);
        self.send_body(Method::PATCH, &path, application, patch)
            .await
    }

    pub async fn get_subscription(
        &self,
        subscription_id: Uuid,
        application: Option<&str>,
    ) -> Result<Subscription, ProviderError> {
        let path = format!("{}/subscriptions/{subscription_id}", self.paths.provider);
        self.get_data(&path, application).await
    }

    pub async fn patch_subscription(
        &self,
        subscription_id: Uuid,
        application: Option<&str>,
        patch: &SubscriptionPatch,
    ) -> Result<(), ProviderError> {
        let path = format!("{}/subscriptions/{subscription_id}", self.paths.provider);
        self.send_body(Method::PATCH, &path, application, patch)
            .await
    }

    /// Posts a message to the product (`op`: `creditorputs`, `debtoraccountputs`, ...); Sage
    /// answers 202 without a body.
    pub async fn post_message(
        &self,
        op: &str,
        application: Option<&str>,
        message: &Message,
    ) -> Result<(), ProviderError> {
        let path = format!(
            "{}/{}",
            self.paths.messaging,
            crate::provider::path_segment(op)
        );
        self.send_body(Method::POST, &path, application, message)
            .await
    }
}

fn data_of<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProviderError> {
    let envelope: Envelope<T> = serde_json::from_slice(bytes)
        .map_err(|e| ProviderError::Unexpected(format!("undecodable body: {e}")))?;
    envelope
        .data
        .ok_or_else(|| ProviderError::Unexpected("no data in the answer".into()))
}

impl PayoutsApi {
    /// The batch, and each payment as sent (for the rules and the bank): one GET, read twice
    /// (typed, with amounts from their literal text, and whole).
    pub async fn get_batch_with_documents(
        &self,
        batch_id: Uuid,
        application: Option<&str>,
    ) -> Result<(Batch, Vec<Value>), ProviderError> {
        let path = format!("{}/batchpayments/{batch_id}", self.paths.provider);
        let bytes = self.get_bytes(&path, application).await?;
        let batch: Batch = data_of(&bytes)?;
        let whole: Value = data_of(&bytes)?;
        let documents = whole["payments"].as_array().cloned().unwrap_or_default();
        Ok((batch, documents))
    }
}

/// The client for one provider, as the Payments Out use cases' port.
pub struct ProviderPayouts {
    pub api: PayoutsApi,
    pub provider_id: Uuid,
}

impl connector_domain::ports::PayoutsApiPort for ProviderPayouts {
    fn get_subscription<'a>(
        &'a self,
        subscription_id: Uuid,
        application: Option<&'a str>,
    ) -> BoxFuture<'a, Result<SubscriptionView, CallError>> {
        Box::pin(async move {
            let s = self
                .api
                .get_subscription(subscription_id, application)
                .await?;
            Ok(SubscriptionView {
                subscription_id: s.subscription_id,
                status: s.status,
                additional_data: s.additional_data,
            })
        })
    }

    fn patch_subscription<'a>(
        &'a self,
        subscription_id: Uuid,
        application: Option<&'a str>,
        change: &'a SubscriptionChange,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let patch = SubscriptionPatch {
                data: SubscriptionPatchData {
                    status: change.status,
                    links: change.link.as_ref().map(|l| AuthoriseLinks {
                        authorise: l.url(&self.api.paths.public_base_url),
                        authorise_issued_at: l.issued_at,
                        authorise_expires_at: l.expires_at,
                    }),
                    additional_data: change
                        .reason
                        .as_ref()
                        .map(|r| serde_json::json!({ "reason": sanitise(r) }).to_string()),
                },
            };
            Ok(self
                .api
                .patch_subscription(subscription_id, application, &patch)
                .await?)
        })
    }

    fn post_message<'a>(
        &'a self,
        op: &'a str,
        subscription_id: Uuid,
        correlation_id: Option<&'a str>,
        data: &'a Value,
        application: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let message = Message {
                subscription_id,
                correlation_id: correlation_id.map(str::to_string),
                data: data.clone(),
            };
            Ok(self.api.post_message(op, application, &message).await?)
        })
    }

    fn provider_configuration(&self) -> BoxFuture<'_, Result<Value, CallError>> {
        Box::pin(async move { Ok(self.api.get_provider(self.provider_id).await?) })
    }
}

/// Free text sent to Payments Out never holds `"` (Sage refuses it everywhere).
pub fn sanitise(text: &str) -> String {
    text.replace('"', "'")
}

impl connector_domain::ports::BatchApi for ProviderPayouts {
    fn get_batch<'a>(
        &'a self,
        batch_id: Uuid,
        application: Option<&'a str>,
    ) -> BoxFuture<'a, Result<BatchView, CallError>> {
        Box::pin(async move {
            let (batch, documents) = self
                .api
                .get_batch_with_documents(batch_id, application)
                .await?;
            let payments = batch
                .payments
                .into_iter()
                .zip(documents.into_iter().chain(std::iter::repeat(Value::Null)))
                .map(|(p, document)| PaymentView {
                    payment_id: p.payment_id,
                    status: p.status,
                    amount: p.instructed_amount.amount,
                    currency: p.instructed_amount.currency,
                    local_instrument: p.local_instrument,
                    requested_execution_date: p.requested_execution_date,
                    document,
                })
                .collect();
            Ok(BatchView {
                batch_id: batch.batch_id,
                subscription_id: Some(batch.subscription_id),
                status: batch.status,
                payments,
            })
        })
    }

    fn patch_batch<'a>(
        &'a self,
        batch_id: Uuid,
        application: Option<&'a str>,
        change: &'a BatchChange,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            let patch = BatchPatch {
                data: BatchPatchData {
                    default_status: change.status,
                    extended_status: change.reason.as_deref().map(sanitise),
                    payments: change
                        .payments
                        .iter()
                        .map(|p| PaymentPatch {
                            payment_id: p.payment_id,
                            status: p.status,
                            extended_status: p.reason.as_deref().map(sanitise),
                            payment_completed_date: p.completed_at,
                            additional_data: None,
                        })
                        .collect(),
                },
            };
            Ok(self.api.patch_batch(batch_id, application, &patch).await?)
        })
    }
}
