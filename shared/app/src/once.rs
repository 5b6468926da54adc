//! Storing a delivery once: the claim, the effect, then the claim completed — or given up if the
//! effect failed, so that the sender's retry can take it. Shared by Banking Service's and
//! Payments Out's intakes.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use connector_domain::ports::{Once, OnceClaims};
use sha2::{Digest, Sha256};

/// How long a delivery's record is kept (senders retry for seconds to minutes).
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long one delivery may hold the claim before another may take it over.
pub const LEASE: Duration = Duration::from_secs(30);

/// What storing found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Done now.
    New,
    /// Done before (or the same key with other content, whose first version stands).
    Duplicate,
}

/// Runs `effect` once for `key` (`payload` tells a redelivery from different content).
/// `Err`: try again later (the claim is held right now, the store is unavailable, or the effect
/// failed and was given up).
pub async fn once<F, E>(
    claims: &dyn OnceClaims,
    key: &str,
    payload: &[u8],
    now: DateTime<Utc>,
    effect: F,
) -> Result<Stored, String>
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let hash = hex(&Sha256::digest(payload));
    match claims
        .claim_once(key, &hash, LEASE, KEEP, now)
        .await
        .map_err(|e| e.to_string())?
    {
        Once::Completed => return Ok(Stored::Duplicate),
        Once::Conflict => {
            tracing::warn!(key, "redelivery with different content ignored");
            return Ok(Stored::Duplicate);
        }
        Once::InProgress => return Err("the same delivery is being stored right now".into()),
        Once::New => {}
    }
    if let Err(e) = effect.await {
        if let Err(e2) = claims.abandon_claim(key).await {
            tracing::error!(error = %e2, "could not give the claim up");
        }
        return Err(e.to_string());
    }
    claims
        .complete_claim(key)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Stored::New)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
