//! Verifies what Banking Service presents to `/notification` and `/availableaccounts` (spec §3.3):
//! the custom header in constant time, then the Sage ID JWT (RS256 only, key by `kid` from a
//! cached JWKS, `iss`, `aud`, `exp`/`nbf` with leeway, scope `Notification`, optional `azp`).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use http::HeaderMap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Sage ID issuer, ending with `/`; the JWKS is at `{issuer}.well-known/jwks.json`.
    pub issuer: String,
    pub audience: String,
    /// The scope the token must carry (`Notification` for Banking Service); empty = not
    /// checked (Payments Out's default: Sage has not published the scope of its tokens).
    pub required_scope: String,
    /// Sage client ids allowed as `azp`; empty = any.
    pub allowed_azp: Vec<String>,
    pub leeway: Duration,
    pub jwks_ttl: Duration,
    /// Custom header (name, value) when the provider registered one.
    pub custom_header: Option<(String, Secret)>,
}

/// Which check failed: logged (never the token), answered as a generic 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("custom header missing")]
    HeaderMissing,
    #[error("custom header value wrong")]
    HeaderMismatch,
    #[error("no bearer token")]
    NoBearer,
    #[error("token is not a well-formed JWT")]
    Malformed,
    #[error("algorithm {0} is not RS256")]
    WrongAlgorithm(String),
    #[error("token has no key id")]
    NoKeyId,
    #[error("key id unknown to the JWKS")]
    UnknownKey,
    #[error("signature invalid")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("issuer mismatch")]
    WrongIssuer,
    #[error("audience mismatch")]
    WrongAudience,
    #[error("required scope missing")]
    MissingScope,
    #[error("azp not allowed")]
    AzpNotAllowed,
    /// The key set could not be fetched: not the caller's fault; answered 503 so it retries.
    #[error("JWKS unavailable: {0}")]
    KeysUnavailable(String),
}

/// Claims the connector reads after verification.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifiedClaims {
    #[serde(default)]
    pub sub: Option<String>,
    #[serde(default)]
    pub azp: Option<String>,
    #[serde(default)]
    pub jti: Option<String>,
}

#[derive(Deserialize)]
struct ScopeClaims {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    azp: Option<String>,
}

struct KeyCache {
    keys: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
    /// Recent fetch times, to keep at most 10 fetches a minute (spec §3.3 rule 2).
    fetches: VecDeque<Instant>,
}

pub struct NotificationVerifier {
    http: reqwest::Client,
    config: VerifierConfig,
    header: Option<(http::HeaderName, Secret)>,
    cache: RwLock<KeyCache>,
}

const MAX_FETCHES_PER_MINUTE: usize = 10;

fn digest(value: &[u8]) -> [u8; 32] {
    Sha256::digest(value).into()
}

impl NotificationVerifier {
    pub fn new(http: reqwest::Client, config: VerifierConfig) -> Result<Self, String> {
        let header = match &config.custom_header {
            None => None,
            Some((name, value)) => {
                let name = http::HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?;
                Some((name, value.clone()))
            }
        };
        Ok(Self {
            http,
            config,
            header,
            cache: RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
                fetches: VecDeque::new(),
            }),
        })
    }

    pub fn jwks_url(&self) -> String {
        format!("{}.well-known/jwks.json", self.config.issuer)
    }

    /// Checks the request's headers; `Ok` only when every configured check passes.
    pub async fn verify(&self, headers: &HeaderMap) -> Result<VerifiedClaims, AuthFailure> {
        self.check_custom_header(headers).await?;
        let token = bearer(headers).ok_or(AuthFailure::NoBearer)?;
        self.verify_token(token).await
    }

    async fn check_custom_header(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        let Some((name, expected)) = &self.header else {
            return Ok(());
        };
        // `HeaderMap` lookups are case-insensitive; a repeated header is ambiguous: refuse it.
        let mut values = headers.get_all(name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(AuthFailure::HeaderMissing);
        };
        let presented = digest(value.as_bytes());
        // Equal-length digests compared in constant time: neither length nor content leaks.
        let matches = |v: &str| bool::from(presented.ct_eq(&digest(v.as_bytes())));
        if matches(&expected.fresh().await) {
            return Ok(());
        }
        // Perhaps Sage switched to a rotated value: read it again (at most every few seconds).
        expected.refused();
        if matches(&expected.fresh().await) {
            Ok(())
        } else {
            Err(AuthFailure::HeaderMismatch)
        }
    }

    pub async fn verify_token(&self, token: &str) -> Result<VerifiedClaims, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // An unknown algorithm such as `none` fails to parse as a header.
            if token.split('.').next().is_some_and(|h| !h.is_empty())
                && e.to_string().contains("variant")
            {
                AuthFailure::WrongAlgorithm("unsupported".into())
            } else {
                AuthFailure::Malformed
            }
        })?;
        if header.alg != Algorithm::RS256 {
            return Err(AuthFailure::WrongAlgorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(AuthFailure::NoKeyId)?;
        let key = self.key_for(&kid).await?;

        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[self.config.issuer.as_str()]);
        validation.set_audience(&[self.config.audience.as_str()]);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data =
            jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::InvalidSignature => AuthFailure::BadSignature,
                    K::ExpiredSignature => AuthFailure::Expired,
                    K::ImmatureSignature => AuthFailure::NotYetValid,
                    K::InvalidIssuer => AuthFailure::WrongIssuer,
                    K::InvalidAudience => AuthFailure::WrongAudience,
                    K::InvalidAlgorithm => AuthFailure::WrongAlgorithm("mismatch".into()),
                    K::MissingRequiredClaim(c) if c == "aud" => AuthFailure::WrongAudience,
                    K::MissingRequiredClaim(c) if c == "iss" => AuthFailure::WrongIssuer,
                    K::MissingRequiredClaim(_) => AuthFailure::Expired,
                    _ => AuthFailure::Malformed,
                }
            })?;
        let scopes: ScopeClaims =
            serde_json::from_value(data.claims.clone()).map_err(|_| AuthFailure::Malformed)?;
        if !scope_satisfied(&self.config.required_scope, scopes.scope.as_deref()) {
            return Err(AuthFailure::MissingScope);
        }
        if !self.config.allowed_azp.is_empty()
            && !scopes
                .azp
                .as_ref()
                .is_some_and(|a| self.config.allowed_azp.contains(a))
        {
            return Err(AuthFailure::AzpNotAllowed);
        }
        serde_json::from_value(data.claims).map_err(|_| AuthFailure::Malformed)
    }

    async fn key_for(&self, kid: &str) -> Result<DecodingKey, AuthFailure> {
        {
            let cache = self.cache.read().await;
            let fresh = cache
                .fetched_at
                .is_some_and(|t| t.elapsed() < self.config.jwks_ttl);
            if fresh && let Some(k) = cache.keys.get(kid) {
                return Ok(k.clone());
            }
        }
        // Stale cache or unknown kid: one refetch, within the rate allowance.
        let mut cache = self.cache.write().await;
        let fresh = cache
            .fetched_at
            .is_some_and(|t| t.elapsed() < self.config.jwks_ttl);
        if fresh && let Some(k) = cache.keys.get(kid) {
            return Ok(k.clone());
        }
        let now = Instant::now();
        while cache
            .fetches
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            cache.fetches.pop_front();
        }
        if cache.fetches.len() >= MAX_FETCHES_PER_MINUTE {
            // Too many refetches (an attacker cycling kids): answer from what we have.
            return cache.keys.get(kid).cloned().ok_or(AuthFailure::UnknownKey);
        }
        cache.fetches.push_back(now);
        match self.fetch_keys().await {
            Ok(keys) => {
                cache.keys = keys;
                cache.fetched_at = Some(now);
            }
            Err(e) if cache.keys.is_empty() => return Err(e),
            // Keep serving the old keys while Sage ID is unreachable.
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys"),
        }
        cache.keys.get(kid).cloned().ok_or(AuthFailure::UnknownKey)
    }

    async fn fetch_keys(&self) -> Result<HashMap<String, DecodingKey>, AuthFailure> {
        let response = self
            .http
            .get(self.jwks_url())
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .map_err(|e| AuthFailure::KeysUnavailable(crate::describe_reqwest(&e)))?;
        if !response.status().is_success() {
            return Err(AuthFailure::KeysUnavailable(format!(
                "HTTP {}",
                response.status().as_u16()
            )));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| AuthFailure::KeysUnavailable(format!("not a JWKS: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            keys.insert(kid, key);
        }
        Ok(keys)
    }
}

/// Whether a token's `scope` claim (space-separated) satisfies `required`; an empty `required`
/// is satisfied by any token, with or without a scope.
fn scope_satisfied(required: &str, scope: Option<&str>) -> bool {
    required.is_empty()
        || scope
            .unwrap_or("")
            .split_whitespace()
            .any(|s| s == required)
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The verifier as a port: which check failed is logged here, never the token.
impl connector_domain::ports::DeliveryAuth for NotificationVerifier {
    fn verify<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> connector_domain::ports::BoxFuture<'a, Result<(), connector_domain::ports::AuthRejection>>
    {
        use connector_domain::ports::AuthRejection;
        Box::pin(async move {
            match NotificationVerifier::verify(self, headers).await {
                Ok(_) => Ok(()),
                Err(AuthFailure::KeysUnavailable(e)) => Err(AuthRejection::Unavailable(e)),
                Err(e) => {
                    tracing::warn!(check = %e, "delivery refused");
                    Err(AuthRejection::Refused(e.to_string()))
                }
            }
        })
    }
}
