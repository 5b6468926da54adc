//! Sage ID access tokens for the Provider API (spec §3.1): reused until a margin before expiry,
//! shared by every Lambda, refreshed single-flight.
//!
//! Two token-request styles (docs/configuration.md, "Sage ID token requests"): Banking Service's
//! form body (`grant_type=client_credentials`) and Payments Out's documented JSON body
//! (`{"grant_type":"client_credential",...}`). A token's lifetime is `expires_in`, else the
//! token's own (unverified) `exp`, else 480 minutes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use connector_domain::ports::{CachedToken, SharedTokenCache};
use serde::Deserialize;
use sha2::Digest;
use tokio::sync::Mutex;

use crate::secret::Secret;

/// Assumed lifetime when Sage ID omits `expires_in` (spec §3.1 rule 1).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(480 * 60);

/// How the token request is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenStyle {
    /// `application/x-www-form-urlencoded`, `grant_type=client_credentials` (Banking Service).
    #[default]
    Form,
    /// `application/json`, `{"grant_type":"client_credential","client_id","client_secret",
    /// "audience"}`: Payments Out's documented body, sent verbatim.
    Json,
}

impl std::str::FromStr for TokenStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "form" => Ok(Self::Form),
            "json" => Ok(Self::Json),
            other => Err(format!("`{other}` is neither form nor json")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SageIdConfig {
    pub token_url: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub audience: String,
    /// Refresh this long before expiry (default 5 minutes).
    pub refresh_margin: Duration,
    pub style: TokenStyle,
}

impl SageIdConfig {
    /// What a token is shared under: issuer (its token URL) + client + audience. Two
    /// configurations with the same scope may share one token; any difference gives another
    /// token (two banks, or Banking Service and Payments Out, never swap tokens).
    pub fn cache_scope(&self) -> String {
        token_scope(&self.token_url, &self.client_id, &self.audience)
    }
}

/// The key a token of (`token_url`, `client_id`, `audience`) is cached under: a digest, so
/// that the key has a bounded length and names no audience or client in the table.
pub fn token_scope(token_url: &str, client_id: &str, audience: &str) -> String {
    let mut h = sha2::Sha256::new();
    for part in [token_url, client_id, audience] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    crate::hex(&h.finalize()[..16])
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

    /// What this provider asks Sage ID with.
    pub fn config(&self) -> &SageIdConfig {
        &self.config
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
        let secret = self.config.client_secret.fresh().await;
        let request = self.http.post(&self.config.token_url);
        let request = match self.config.style {
            TokenStyle::Form => request.form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.config.client_id.as_str()),
                ("client_secret", &*secret),
                ("audience", self.config.audience.as_str()),
            ]),
            TokenStyle::Json => request.json(&serde_json::json!({
                "grant_type": "client_credential",
                "client_id": self.config.client_id,
                "client_secret": &*secret,
                "audience": self.config.audience,
            })),
        };
        let response = request
            .send()
            .await
            .map_err(|e| TokenError::Unavailable(crate::describe_reqwest(&e)))?;
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(TokenError::Unavailable(format!("HTTP {}", status.as_u16())));
        }
        if matches!(status.as_u16(), 400 | 401 | 403) {
            // Perhaps rotated: the next token request reads the secret again.
            self.config.client_secret.refused();
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
        let now = Utc::now();
        let lifetime = body
            .expires_in
            .map(Duration::from_secs)
            .or_else(|| unverified_lifetime(&body.access_token, now))
            .unwrap_or(DEFAULT_LIFETIME);
        tracing::info!(lifetime_s = lifetime.as_secs(), "obtained a Sage ID token");
        Ok(CachedToken {
            access_token: body.access_token,
            token_type: body.token_type.unwrap_or_else(|| "Bearer".into()),
            obtained_at: now,
            expires_at: now + TimeDelta::from_std(lifetime).unwrap_or(TimeDelta::zero()),
        })
    }
}

/// What is left of a JWT's life by its own `exp` claim, read without verifying the token (the
/// connector only presents it; Sage verifies it). `None` when it is not a JWT with an `exp` in
/// the future.
fn unverified_lifetime(token: &str, now: chrono::DateTime<Utc>) -> Option<Duration> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(Deserialize)]
    struct Exp {
        exp: i64,
    }
    let Exp { exp } = serde_json::from_slice(&bytes).ok()?;
    let left = exp.checked_sub(now.timestamp())?;
    (left > 0).then(|| Duration::from_secs(left as u64))
}
