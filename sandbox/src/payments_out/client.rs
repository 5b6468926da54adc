//! A small client of the Payments Out parts of a running sandbox: the product's side (with the
//! product bearer) and the inspection reads. Used by `sandbox driver po ...` and by tests.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::local;

/// An HTTP answer: status and JSON body (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct PoAnswer {
    pub status: u16,
    pub body: Value,
}

#[derive(Clone, Debug)]
pub struct PoClient {
    base: String,
    bearer: String,
    http: reqwest::Client,
}

impl PoClient {
    pub fn new(base_url: impl Into<String>) -> Self {
        PoClient {
            base: base_url.into().trim_end_matches('/').to_string(),
            bearer: local::PRODUCT_BEARER.into(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn with_bearer(mut self, bearer: impl Into<String>) -> Self {
        self.bearer = bearer.into();
        self
    }

    /// Any call: product bearer on `/v3` and `/api/msg-v1`, extra headers as given.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<PoAnswer, String> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut req = self
            .http
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(&self.bearer);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Ok(PoAnswer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        })
    }

    async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Value, String> {
        let a = self.call(method, path, body, headers).await?;
        if (200..300).contains(&a.status) {
            Ok(a.body)
        } else {
            Err(format!("{method} {path}: status {}: {}", a.status, a.body))
        }
    }

    pub async fn create_organisation(&self, name: &str) -> Result<Uuid, String> {
        let v = self
            .ok(
                "POST",
                "/v3/organisations",
                Some(&json!({ "data": { "name": name, "primaryCountry": "US", "defaultLanguage": "en-US" } })),
                &[],
            )
            .await?;
        uuid_at(&v, "/data/organisationId")
    }

    pub async fn create_subscription(
        &self,
        organisation_id: Uuid,
        provider_id: Uuid,
        additional_data: Option<&str>,
    ) -> Result<Value, String> {
        self.ok(
            "POST",
            &format!("/v3/subscriptions/organisations/{organisation_id}/subscriptions"),
            Some(&json!({ "data": { "providerId": provider_id, "additionalData": additional_data } })),
            &[],
        )
        .await
    }

    /// `POST /v3/batchpayments` with `{"data": data}`.
    pub async fn submit_batch(
        &self,
        data: &Value,
        idempotency_key: Option<&str>,
        skip_validation: bool,
    ) -> Result<PoAnswer, String> {
        let mut h = Vec::new();
        if let Some(k) = idempotency_key {
            h.push(("x-idempotency-key", k));
        }
        if skip_validation {
            h.push(("x-sim-skip-validation", "true"));
        }
        self.call(
            "POST",
            "/v3/batchpayments",
            Some(&json!({ "data": data })),
            &h,
        )
        .await
    }

    pub async fn message(
        &self,
        op: &str,
        subscription_id: Uuid,
        correlation_id: &str,
        data: &Value,
    ) -> Result<PoAnswer, String> {
        self.call(
            "POST",
            &format!("/api/msg-v1/{op}"),
            Some(&json!({ "subscriptionId": subscription_id, "correlationId": correlation_id, "data": data })),
            &[],
        )
        .await
    }

    pub async fn inbox(&self) -> Result<Value, String> {
        self.ok("GET", "/sim/consumer/inbox", None, &[]).await
    }

    pub async fn violations(&self) -> Result<Value, String> {
        self.ok("GET", "/sim/violations", None, &[]).await
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.ok("GET", path, None, &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.ok("PUT", path, Some(body), &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.ok("POST", path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, String> {
        self.ok("DELETE", path, None, &[]).await
    }
}

fn uuid_at(v: &Value, pointer: &str) -> Result<Uuid, String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| format!("no {pointer} in {v}"))
}
