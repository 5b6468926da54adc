//! Clients of Sage's side of the contract (`../shared/spec/banking-service.md` §3, §6).

pub mod provider;
pub mod secret;
pub mod token;
pub mod verifier;

pub use provider::{ProviderApi, ProviderConfig, ProviderError};
pub use secret::Secret;
pub use token::{SageIdConfig, TokenError, TokenProvider};
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
