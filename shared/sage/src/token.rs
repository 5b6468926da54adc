//! Sage ID access tokens for the Provider API (spec §3.1): reused until a margin before expiry,
//! shared by every Lambda, refreshed single-flight.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use connector_domain::ports::{CachedToken, SharedTokenCache};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::secret::Secret;

/// Assumed lifetime when Sage ID omits `expires_in` (spec §3.1 rule 1).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(480 * 60);

#[derive(Debug, Clone)]
pub struct SageIdConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub audience: String,
    /// Refresh this long before expiry (default 5 minutes).
    pub refresh_margin: Duration,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    /// 4xx from Sage ID: wrong credentials or audience. A configuration error: alert, no loop.
    #[error("Sage ID refused the client credentials (HTTP {status})")]
    Rejected { status: u16 },
    /// 5xx, 429 or a network failure: back off and retry.
    #[error("Sage ID is unavailable: {0}")]
    Unavailable(String),
    #[error("Sage ID answered something that is not a token")]
    Malformed,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Hands out a valid token; one per process at a time asks Sage ID, and across processes the
/// shared cache's lease lets one refresh while the others wait for its result.
pub struct TokenProvider {
    http: reqwest::Client,
    config: SageIdConfig,
    memory: Mutex<Option<CachedToken>>,
    shared: Option<Arc<dyn SharedTokenCache>>,
    holder: String,
}

impl TokenProvider {
    pub fn new(
        http: reqwest::Client,
        config: SageIdConfig,
        shared: Option<Arc<dyn SharedTokenCache>>,
    ) -> Self {
        Self {
            http,
            config,
            memory: Mutex::new(None),
            shared,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Valid for longer than the refresh margin; the margin shrinks to a quarter of the
    /// lifetime for short-lived tokens (test set-ups), so that a token is never refreshed at once.
    fn fresh(&self, token: &CachedToken) -> bool {
        let configured =
            TimeDelta::from_std(self.config.refresh_margin).unwrap_or(TimeDelta::zero());
        let margin = configured.min((token.expires_at - token.obtained_at) / 4);
        token.expires_at - margin > Utc::now()
    }

    /// A token that is valid for at least the refresh margin.
    pub async fn token(&self) -> Result<CachedToken, TokenError> {
        // The mutex makes refreshes single-flight inside the process.
        let mut memory = self.memory.lock().await;
        if let Some(t) = memory.as_ref().filter(|t| self.fresh(t)) {
            return Ok(t.clone());
        }
        let token = self.shared_or_fetch().await?;
        *memory = Some(token.clone());
        Ok(token)
    }

    async fn shared_or_fetch(&self) -> Result<CachedToken, TokenError> {
        let Some(shared) = &self.shared else {
            return self.fetch().await;
        };
        // A shared-cache failure must not stop the pipeline: fall back to asking Sage ID.
        if let Ok(Some(t)) = shared.load().await
            && self.fresh(&t)
        {
            return Ok(t);
        }
        let leased = shared
            .try_lease(&self.holder, Duration::from_secs(15))
            .await
            .unwrap_or(true);
        if leased {
            // Another process may have stored a new token between our read and our lease.
            if let Ok(Some(t)) = shared.load().await
                && self.fresh(&t)
            {
                return Ok(t);
            }
        } else {
            // Someone else is refreshing: wait briefly for their token.
            for _ in 0..25 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Ok(Some(t)) = shared.load().await
                    && self.fresh(&t)
                {
                    return Ok(t);
                }
            }
        }
        let token = self.fetch().await?;
        if let Err(e) = shared.store(&token).await {
            tracing::warn!(error = %e, "could not share the Sage ID token");
        }
        Ok(token)
    }

    /// Drops `access_token` after the Provider API refused it (401), here and in the shared
    /// cache, unless a newer token has replaced it already.
    pub async fn invalidate(&self, access_token: &str) {
        let mut memory = self.memory.lock().await;
        if memory
            .as_ref()
            .is_some_and(|t| t.access_token == access_token)
        {
            *memory = None;
        }
        if let Some(shared) = &self.shared
            && let Err(e) = shared.invalidate(access_token).await
        {
            tracing::warn!(error = %e, "could not invalidate the shared Sage ID token");
        }
    }

    async fn fetch(&self) -> Result<CachedToken, TokenError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.config.client_id.as_str()),
            ("client_secret", self.config.client_secret.expose()),
            ("audience", self.config.audience.as_str()),
        ];
        let response = self
            .http
            .post(&self.config.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(crate::describe_reqwest(&e)))?;
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(TokenError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(TokenError::Rejected {
                status: status.as_u16(),
            });
        }
        let body: TokenResponse = response.json().await.map_err(|_| TokenError::Malformed)?;
        if body.access_token.is_empty() {
            return Err(TokenError::Malformed);
        }
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        tracing::info!(lifetime_s = lifetime.as_secs(), "obtained a Sage ID token");
        let now = Utc::now();
        Ok(CachedToken {
            access_token: body.access_token,
            token_type: body.token_type.unwrap_or_else(|| "Bearer".into()),
            obtained_at: now,
            expires_at: now + TimeDelta::from_std(lifetime).unwrap_or(TimeDelta::zero()),
        })
    }
}
