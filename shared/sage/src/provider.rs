//! The Provider API client (spec §6): every call waits for the shared rate limiter, carries the
//! API key and a Sage ID token, and refreshes the token once on a 401.

use std::sync::Arc;
use std::time::Duration;

use connector_domain::ports::{BoxFuture, CallError, FoundAccount, RateLimiter, StatementApi};
use connector_domain::statement::{StatementRequest, StatementResource};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::secret::Secret;
use crate::token::{TokenError, TokenProvider};

/// One item of an error envelope's `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
pub struct ErrorDetail {
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The `error` member of the envelope (spec §6.1), when the body had one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, Default)]
pub struct ApiError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub detail: Option<Vec<ErrorDetail>>,
}

/// What went wrong, split by what the caller should do (spec §6.2).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// 429: wait `Retry-After` (or back off) and retry.
    #[error("rate limited by Banking Service")]
    RateLimited { retry_after: Option<Duration> },
    /// 401 twice in a row (after one token refresh): alert.
    #[error("Banking Service refused the token after a refresh")]
    Unauthorized,
    /// 403: the API key is wrong. Configuration; alert.
    #[error("Banking Service refused the API key")]
    Forbidden,
    #[error("not found: {0:?}")]
    NotFound(ApiError),
    /// 409: statement in flight, account cancelled, not deletable, authorisation completed.
    #[error("conflict: {0:?}")]
    Conflict(ApiError),
    /// 400: the request is invalid; retrying it unchanged cannot help.
    #[error("rejected as invalid: {0:?}")]
    Invalid(ApiError),
    /// 413: the body is over the service's limit; it must be split.
    #[error("the request body is too large")]
    TooLarge,
    /// 5xx: retry with back-off.
    #[error("Banking Service failed with HTTP {status}")]
    Server { status: u16 },
    /// No answer (timeout, connection lost): the request may or may not have been processed.
    #[error("no answer from Banking Service: {0}")]
    Transport(String),
    #[error("no Sage ID token: {0}")]
    Token(#[from] TokenError),
    /// The shared rate limiter had no slot within the wait allowed.
    #[error("no rate-limit slot in time")]
    Throttled,
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

impl ProviderError {
    /// Worth retrying later with the same request.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Server { .. }
                | Self::Transport(_)
                | Self::Throttled
                | Self::Token(TokenError::Unavailable(_))
        )
    }

    /// Only an operator can fix it: Sage ID refused the client (4xx), Banking Service refused
    /// the API key (403) or a freshly issued token (a second 401 in a row).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Self::Unauthorized | Self::Forbidden | Self::Token(TokenError::Rejected { .. })
        )
    }

    /// The wait Banking Service asked for with a 429, if it named one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Base URL; paths start with `/v1`.
    pub base_url: String,
    pub api_key: Secret,
    /// Longest wait for a rate-limit slot before giving up with [`ProviderError::Throttled`].
    pub max_rate_wait: Duration,
}

#[derive(Deserialize)]
pub(crate) struct Envelope<T> {
    pub(crate) data: Option<T>,
    #[serde(default)]
    pub(crate) error: Option<ApiError>,
}

pub use connector_domain::authorisation::{
    AuthorisationPatch, AuthorisationPatchData, AuthorisationStatus, PatchedAccount,
};

/// `POST /v1/accountqueries` answer (spec §6.7).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountQueryResult {
    pub bank_account_id: Uuid,
    pub status: String,
    #[serde(default)]
    pub requested_start_date: Option<String>,
}

pub struct ProviderApi {
    http: reqwest::Client,
    config: ProviderConfig,
    tokens: Arc<TokenProvider>,
    limiter: Arc<dyn RateLimiter>,
}

impl ProviderApi {
    pub fn new(
        http: reqwest::Client,
        config: ProviderConfig,
        tokens: Arc<TokenProvider>,
        limiter: Arc<dyn RateLimiter>,
    ) -> Self {
        Self {
            http,
            config,
            tokens,
            limiter,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.config.base_url.trim_end_matches('/'), path)
    }

    /// Sends one request: rate slot, token, and on 401 one refresh and one retry (§3.1 rule 2).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(StatusCode, Option<Duration>, Vec<u8>), ProviderError> {
        self.send_with(method, path, body, &[]).await
    }

    /// `send` with more headers (Payments Out's `x-application`, `x-fapi-interaction-id`).
    pub(crate) async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, String)],
    ) -> Result<(StatusCode, Option<Duration>, Vec<u8>), ProviderError> {
        let mut refreshed = false;
        loop {
            let token = self.tokens.token().await?;
            let granted = self
                .limiter
                .acquire(self.config.max_rate_wait)
                .await
                .map_err(|e| ProviderError::Unexpected(format!("rate limiter: {e}")))?;
            if !granted {
                return Err(ProviderError::Throttled);
            }
            let api_key = self.config.api_key.fresh().await;
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .header("x-api-key", &*api_key)
                .header(
                    "authorization",
                    format!("{} {}", token.token_type, token.access_token),
                );
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            if let Some(b) = body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.to_vec());
            }
            let response = req
                .send()
                .await
                .map_err(|e| ProviderError::Transport(crate::describe_reqwest(&e)))?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after(v, chrono::Utc::now()));
            let bytes = response
                .bytes()
                .await
                .map_err(|e| ProviderError::Transport(crate::describe_reqwest(&e)))?;
            if status == StatusCode::TOO_MANY_REQUESTS {
                connector_metrics::count("RateLimited", &[]);
            }
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                // Perhaps the key was rotated: read again (at most every few seconds).
                self.config.api_key.refused();
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                tracing::warn!(path, "Provider API answered 401: refreshing the token once");
                connector_metrics::count("TokenRefreshes", &[("Cause", "401")]);
                self.tokens.invalidate(&token.access_token).await;
                refreshed = true;
                continue;
            }
            return Ok((status, retry_after, bytes.to_vec()));
        }
    }

    pub(crate) fn error_of(
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> ProviderError {
        let api_error = || {
            serde_json::from_slice::<Envelope<serde_json::Value>>(body)
                .ok()
                .and_then(|e| e.error)
                .unwrap_or_default()
        };
        match status.as_u16() {
            400 => ProviderError::Invalid(api_error()),
            401 => ProviderError::Unauthorized,
            403 => ProviderError::Forbidden,
            404 => ProviderError::NotFound(api_error()),
            409 => ProviderError::Conflict(api_error()),
            413 => ProviderError::TooLarge,
            429 => ProviderError::RateLimited { retry_after },
            s if s >= 500 => ProviderError::Server { status: s },
            s => ProviderError::Unexpected(format!("HTTP {s}")),
        }
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ProviderError> {
        let (status, retry_after, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            return Err(Self::error_of(status, retry_after, &bytes));
        }
        let envelope: Envelope<T> = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::Unexpected(format!("undecodable body: {e}")))?;
        envelope
            .data
            .ok_or_else(|| ProviderError::Unexpected("no data in the answer".into()))
    }

    pub async fn post_statement(
        &self,
        statement: &StatementRequest,
    ) -> Result<StatementResource, ProviderError> {
        let body =
            serde_json::to_vec(statement).map_err(|e| ProviderError::Unexpected(e.to_string()))?;
        self.call(Method::POST, "/v1/statements", Some(&body)).await
    }

    pub async fn get_statement(&self, id: &str) -> Result<StatementResource, ProviderError> {
        self.call(
            Method::GET,
            &format!("/v1/statements/{}", path_segment(id)),
            None,
        )
        .await
    }

    pub async fn delete_statement(&self, id: &str) -> Result<(), ProviderError> {
        let (status, retry_after, bytes) = self
            .send(
                Method::DELETE,
                &format!("/v1/statements/{}", path_segment(id)),
                None,
            )
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::error_of(status, retry_after, &bytes))
        }
    }

    pub async fn patch_authorisation(
        &self,
        authorisation_id: Uuid,
        patch: &AuthorisationPatch,
    ) -> Result<(), ProviderError> {
        let body =
            serde_json::to_vec(patch).map_err(|e| ProviderError::Unexpected(e.to_string()))?;
        let (status, retry_after, bytes) = self
            .send(
                Method::PATCH,
                &format!("/v1/authorisations/{authorisation_id}"),
                Some(&body),
            )
            .await?;
        // Any 2xx is success; the body is ignored (spec §6.3 Decision).
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::error_of(status, retry_after, &bytes))
        }
    }

    /// `POST /v1/accountqueries`; `Ok(None)` when no account matches.
    pub async fn query_account(
        &self,
        bank_id: Uuid,
        external_id: &str,
    ) -> Result<Option<AccountQueryResult>, ProviderError> {
        let body = serde_json::to_vec(&serde_json::json!({
            "data": {"bankId": bank_id, "externalId": external_id}
        }))
        .map_err(|e| ProviderError::Unexpected(e.to_string()))?;
        match self
            .call(Method::POST, "/v1/accountqueries", Some(&body))
            .await
        {
            Ok(found) => Ok(Some(found)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /v1/banks` (Bank Sync); returns `data` as received.
    pub async fn sync_banks(
        &self,
        request: &serde_json::Value,
    ) -> Result<serde_json::Value, ProviderError> {
        let body =
            serde_json::to_vec(request).map_err(|e| ProviderError::Unexpected(e.to_string()))?;
        self.call(Method::POST, "/v1/banks", Some(&body)).await
    }
}

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110 §10.2.3), as a wait from `now`
/// (a date already past means no wait).
pub fn retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) is RFC 2822's form with the zone `GMT`.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
}

/// Ids come from Banking Service's answers; keep them from changing the path.
pub(crate) fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

impl ApiError {
    /// The first detail's code and target, else the error's code: what a parked record says.
    pub fn summary(&self) -> String {
        self.detail
            .as_ref()
            .and_then(|d| d.first())
            .map(|d| {
                format!(
                    "{} {}",
                    d.code.as_deref().unwrap_or(""),
                    d.target.as_deref().unwrap_or("")
                )
            })
            .unwrap_or_else(|| self.code.clone().unwrap_or_default())
            .trim()
            .to_string()
    }
}

impl From<ProviderError> for CallError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::RateLimited { retry_after } => Self::RateLimited { retry_after },
            ProviderError::Conflict(e) => Self::Conflict {
                message: e.message.unwrap_or_else(|| "no message".into()),
            },
            ProviderError::Invalid(e) => Self::Invalid {
                summary: e.summary(),
            },
            ProviderError::NotFound(e) => Self::NotFound {
                summary: e.summary(),
            },
            e if e.is_configuration() => Self::Configuration(e.to_string()),
            e => Self::Transient(e.to_string()),
        }
    }
}

/// The client as the pipeline's port.
impl StatementApi for ProviderApi {
    fn post_statement<'a>(
        &'a self,
        request: &'a StatementRequest,
    ) -> BoxFuture<'a, Result<String, CallError>> {
        Box::pin(async move { Ok(ProviderApi::post_statement(self, request).await?.id) })
    }

    fn get_statement<'a>(
        &'a self,
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<StatementResource, CallError>> {
        Box::pin(async move { Ok(ProviderApi::get_statement(self, statement_id).await?) })
    }

    fn delete_statement<'a>(
        &'a self,
        statement_id: &'a str,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move { Ok(ProviderApi::delete_statement(self, statement_id).await?) })
    }

    fn query_account<'a>(
        &'a self,
        bank_id: Uuid,
        external_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<FoundAccount>, CallError>> {
        Box::pin(async move {
            Ok(ProviderApi::query_account(self, bank_id, external_id)
                .await?
                .map(|f| FoundAccount {
                    bank_account_id: f.bank_account_id,
                    status: f.status,
                    requested_start_date: f.requested_start_date,
                }))
        })
    }

    fn patch_authorisation<'a>(
        &'a self,
        authorisation_id: Uuid,
        patch: &'a AuthorisationPatch,
    ) -> BoxFuture<'a, Result<(), CallError>> {
        Box::pin(async move {
            Ok(ProviderApi::patch_authorisation(self, authorisation_id, patch).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T08:49:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Sat, 05 Dec 2026 08:49:37 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after("Sat, 05 Dec 2026 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
    }
}
