//! Interfaces the Provider API client needs from the platform, implemented by adapters
//! (DynamoDB in production and locally, in memory in unit tests).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure of the platform behind a port; the caller retries later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// Keeps every Provider API call of every Lambda under one rate (spec §7.1 rule 9).
pub trait RateLimiter: Send + Sync {
    /// Waits for a slot, at most `max_wait`; `Ok(false)` when none came in time.
    fn acquire(&self, max_wait: Duration) -> BoxFuture<'_, Result<bool, PortError>>;
}

/// A Sage ID access token shared by every Lambda, so that the connector asks Sage ID for a new
/// one only when the shared one nears expiry or was refused (spec §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedToken {
    pub access_token: String,
    pub token_type: String,
    pub obtained_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub trait SharedTokenCache: Send + Sync {
    fn load(&self) -> BoxFuture<'_, Result<Option<CachedToken>, PortError>>;
    fn store(&self, token: &CachedToken) -> BoxFuture<'_, Result<(), PortError>>;
    /// Drops the shared token if it is still `access_token` (after a 401).
    fn invalidate(&self, access_token: &str) -> BoxFuture<'_, Result<(), PortError>>;
    /// Takes a short lease on refreshing, so that one caller refreshes while others wait.
    fn try_lease(&self, holder: &str, ttl: Duration) -> BoxFuture<'_, Result<bool, PortError>>;
}
