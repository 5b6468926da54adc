//! One Sage ID token per issuer + client + audience, and one rate budget per API key, however
//! many banks or services (Banking Service, Payments Out) a process talks for.
//!
//! Two banks configured with the same Sage ID client and audience share one token (asking Sage
//! ID for a second one would only spend its token-request allowance); any difference gives each
//! its own token, so that a token is never presented where its audience or client is wrong.
//! Sage throttles per API key (spec §3.2), so every caller with one key shares one budget,
//! whichever bank or API it calls for; two keys never share one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use connector_domain::ports::{RateLimiter, SharedTokenCache};
use sha2::{Digest, Sha256};

use crate::secret::Secret;
use crate::token::{SageIdConfig, TokenProvider};

/// Builds the cross-process token cache of one scope (`SageIdConfig::cache_scope`).
pub type SharedCacheFactory = Box<dyn Fn(&str) -> Option<Arc<dyn SharedTokenCache>> + Send + Sync>;
/// Builds the cross-process limiter of one scope (`rate_scope`) at a rate (requests/s).
pub type LimiterFactory = Box<dyn Fn(&str, f64) -> Arc<dyn RateLimiter> + Send + Sync>;

/// Two configurations that would share a token or a rate budget but disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyConflict {
    #[error(
        "Sage ID client `{client_id}` is configured twice for one issuer and audience with a different secret or token style"
    )]
    Token { client_id: String },
    #[error("one API key is configured with two rates ({first} and {second} requests/s)")]
    Rate { first: String, second: String },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Token providers by scope: the same scope always gets the same provider (one in-process
/// token, one single-flight refresh, one shared-cache item).
pub struct TokenProviders {
    http: reqwest::Client,
    shared: SharedCacheFactory,
    by_scope: Mutex<HashMap<String, Arc<TokenProvider>>>,
}

impl TokenProviders {
    pub fn new(http: reqwest::Client, shared: SharedCacheFactory) -> Self {
        Self {
            http,
            shared,
            by_scope: Mutex::new(HashMap::new()),
        }
    }

    /// The provider of `config`'s scope, built on first use.
    pub fn get(&self, config: SageIdConfig) -> Result<Arc<TokenProvider>, KeyConflict> {
        let scope = config.cache_scope();
        let mut map = lock(&self.by_scope);
        if let Some(existing) = map.get(&scope) {
            let known = existing.config();
            if known.client_secret != config.client_secret || known.style != config.style {
                return Err(KeyConflict::Token {
                    client_id: config.client_id,
                });
            }
            return Ok(existing.clone());
        }
        let shared = (self.shared)(&scope);
        let provider = Arc::new(TokenProvider::new(self.http.clone(), config, shared));
        map.insert(scope, provider.clone());
        Ok(provider)
    }

    /// How many distinct tokens are configured.
    pub fn len(&self) -> usize {
        lock(&self.by_scope).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The rate-limit scope of an API key: a digest of it (the key itself never reaches the
/// table), the same wherever the key is used.
pub fn rate_scope(api_key: &Secret) -> String {
    let mut h = Sha256::new();
    h.update(b"sage-api-key-rate\0");
    h.update(api_key.expose().as_bytes());
    format!("key-{}", crate::hex(&h.finalize()[..16]))
}

/// A limiter and the rate it was built for.
type RatedLimiter = (f64, Arc<dyn RateLimiter>);

/// Rate limiters by API key: callers with one key share one limiter.
pub struct RateLimiters {
    factory: LimiterFactory,
    by_scope: Mutex<HashMap<String, RatedLimiter>>,
}

impl RateLimiters {
    pub fn new(factory: LimiterFactory) -> Self {
        Self {
            factory,
            by_scope: Mutex::new(HashMap::new()),
        }
    }

    /// The limiter of `api_key` at `rps`, built on first use. One key at two rates is refused:
    /// the budget is Sage's, one per key.
    pub fn get(&self, api_key: &Secret, rps: f64) -> Result<Arc<dyn RateLimiter>, KeyConflict> {
        let scope = rate_scope(api_key);
        let mut map = lock(&self.by_scope);
        if let Some((known, limiter)) = map.get(&scope) {
            if (known - rps).abs() > f64::EPSILON {
                return Err(KeyConflict::Rate {
                    first: known.to_string(),
                    second: rps.to_string(),
                });
            }
            return Ok(limiter.clone());
        }
        let limiter = (self.factory)(&scope, rps);
        map.insert(scope, (rps, limiter.clone()));
        Ok(limiter)
    }

    /// How many distinct budgets (API keys) are configured.
    pub fn len(&self) -> usize {
        lock(&self.by_scope).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use connector_domain::ports::{BoxFuture, PortError};

    use super::*;
    use crate::token::TokenStyle;

    fn config(token_url: &str, client: &str, secret: &str, audience: &str) -> SageIdConfig {
        SageIdConfig {
            token_url: token_url.into(),
            client_id: client.into(),
            client_secret: Secret::new(secret),
            audience: audience.into(),
            refresh_margin: Duration::from_secs(300),
            style: TokenStyle::Form,
        }
    }

    #[test]
    fn one_token_per_issuer_client_and_audience() {
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let seen = scopes.clone();
        let tokens = TokenProviders::new(
            reqwest::Client::new(),
            Box::new(move |scope| {
                lock(&seen).push(scope.to_string());
                None
            }),
        );
        let eu = "https://id.example/oauth/token";
        let other_issuer = "https://id-other.example/oauth/token";
        let a = tokens.get(config(eu, "c1", "s1", "banking")).unwrap();
        let again = tokens.get(config(eu, "c1", "s1", "banking")).unwrap();
        assert!(Arc::ptr_eq(&a, &again), "same key, same token provider");
        for (url, client, audience) in [
            (eu, "c1", "payments-out"),
            (eu, "c2", "banking"),
            (other_issuer, "c1", "banking"),
        ] {
            let other = tokens
                .get(config(
                    url,
                    client,
                    &format!("secret-of-{client}"),
                    audience,
                ))
                .unwrap();
            assert!(
                !Arc::ptr_eq(&a, &other),
                "{url} {client} {audience} must not share the token"
            );
        }
        assert_eq!(tokens.len(), 4);
        let scopes = lock(&scopes).clone();
        let distinct: std::collections::HashSet<_> = scopes.iter().collect();
        assert_eq!(distinct.len(), 4, "four shared-cache items: {scopes:?}");
        // A scope is a digest: it names neither the client nor the audience.
        assert!(
            scopes
                .iter()
                .all(|s| !s.contains("c1") && !s.contains("banking"))
        );
    }

    #[test]
    fn one_client_with_two_secrets_is_a_configuration_error() {
        let tokens = TokenProviders::new(reqwest::Client::new(), Box::new(|_| None));
        let url = "https://id.example/oauth/token";
        tokens.get(config(url, "c1", "s1", "aud")).unwrap();
        let err = match tokens.get(config(url, "c1", "s2", "aud")) {
            Err(e) => e,
            Ok(_) => panic!("a second secret for one client must be refused"),
        };
        assert!(err.to_string().contains("c1"), "{err}");
        assert!(!err.to_string().contains("s2"), "never the secret: {err}");
    }

    struct Counting(Arc<AtomicUsize>);
    impl RateLimiter for Counting {
        fn acquire(&self, _: Duration) -> BoxFuture<'_, Result<bool, PortError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(true) })
        }
    }

    #[tokio::test]
    async fn one_rate_budget_per_api_key() {
        let built = Arc::new(Mutex::new(Vec::new()));
        let log = built.clone();
        let limiters = RateLimiters::new(Box::new(move |scope, _rps| {
            let n = Arc::new(AtomicUsize::new(0));
            lock(&log).push((scope.to_string(), n.clone()));
            Arc::new(Counting(n)) as Arc<dyn RateLimiter>
        }));
        let key_a = Secret::new("key-of-bank-a");
        let key_b = Secret::new("key-of-bank-b");
        // Banking Service for bank A, Payments Out with the same key, and bank B.
        let banking_a = limiters.get(&key_a, 10.0).unwrap();
        let payments_a = limiters.get(&key_a.clone(), 10.0).unwrap();
        let banking_b = limiters.get(&key_b, 10.0).unwrap();
        for l in [&banking_a, &payments_a, &banking_b] {
            l.acquire(Duration::ZERO).await.unwrap();
        }
        let built = lock(&built).clone();
        assert_eq!(built.len(), 2, "two keys, two budgets");
        assert_eq!(built[0].0, rate_scope(&key_a));
        assert_eq!(
            built[0].1.load(Ordering::SeqCst),
            2,
            "A's calls share A's budget"
        );
        assert_eq!(
            built[1].1.load(Ordering::SeqCst),
            1,
            "B's budget is B's alone"
        );
        assert!(
            !built[0].0.contains("key-of-bank-a"),
            "never the key itself"
        );
        assert!(matches!(
            limiters.get(&key_a, 5.0),
            Err(KeyConflict::Rate { .. })
        ));
    }
}
