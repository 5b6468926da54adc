//! Clients of Sage's side of the contract (spec §3, §6: see docs/spec-references.md).

pub mod banks;
pub mod keyed;
pub mod payouts;
pub mod payouts_wire;
pub mod provider;
pub mod secret;
pub mod token;
pub mod verifier;

pub use keyed::{KeyConflict, RateLimiters, TokenProviders, rate_scope};
pub use payouts::{PayoutsApi, PayoutsPaths};
pub use provider::{ProviderApi, ProviderConfig, ProviderError};
pub use secret::Secret;
pub use token::{SageIdConfig, TokenError, TokenProvider, TokenStyle, token_scope};
pub use verifier::{AuthFailure, NotificationVerifier, VerifierConfig};

/// A reqwest error as a short sentence without the URL's query (which could carry secrets).
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{kind} ({}{})", u.host_str().unwrap_or(""), u.path()),
        None => kind.to_string(),
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
