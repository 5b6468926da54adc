//! Several banks in one deployment (spec §2 Decision; docs/configuration.md "Several banks"):
//! each bank's Provider API client and notification verifier, from the default variables and
//! `BANKS_CONFIG`'s overrides. A single-bank deployment (no `BANKS_CONFIG`) builds one of each,
//! as before.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use connector_aws::rate_limit::DynamoRateLimiter;
use connector_aws::token_cache::DynamoTokenCache;
use connector_domain::ports::{RateLimiter, SharedTokenCache};
use connector_sage::banks::{BanksConfig, NotificationSettings, ProviderSettings, SecretRef};
use connector_sage::verifier::VerifiedClaims;
use connector_sage::{
    AuthFailure, NotificationVerifier, ProviderApi, ProviderConfig, RateLimiters, SageIdConfig,
    Secret, TokenProviders, TokenStyle, VerifierConfig,
};
use http::HeaderMap;
use uuid::Uuid;

use crate::config::{ConfigError, Env, SecretSource};
use crate::context::Platform;

/// The variable holding the per-bank overrides: JSON, or the ARN of a secret holding it.
pub const BANKS_CONFIG: &str = "BANKS_CONFIG";

fn invalid(reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: BANKS_CONFIG.into(),
        reason: reason.into(),
    }
}

/// `BANKS_CONFIG`, parsed and checked; empty when unset.
pub async fn banks_config_from_env(
    env: &Env,
    secrets: &SecretSource,
) -> Result<BanksConfig, ConfigError> {
    let Some(text) = env.optional(BANKS_CONFIG) else {
        return Ok(BanksConfig::default());
    };
    // An ARN: the document is a secret (for its size, or because it holds secret values).
    let text = if text.starts_with(connector_sage::banks::SECRET_ARN_PREFIX) {
        secrets
            .resolve_named(BANKS_CONFIG, text)
            .await?
            .expose()
            .to_string()
    } else {
        text
    };
    BanksConfig::parse(&text).map_err(invalid)
}

/// Resolves each distinct secret reference once.
struct Resolver<'a> {
    secrets: &'a SecretSource,
    done: HashMap<SecretRef, Secret>,
}

impl Resolver<'_> {
    async fn get(&mut self, r: &SecretRef, label: &str) -> Result<Secret, ConfigError> {
        if let Some(s) = self.done.get(r) {
            return Ok(s.clone());
        }
        let s = self
            .secrets
            .resolve_named(label, r.reference().to_string())
            .await?;
        self.done.insert(r.clone(), s.clone());
        Ok(s)
    }
}

/// The Provider API client of each bank; unconfigured banks (and accounts whose bank is not
/// known) use the default client.
pub struct Providers {
    default: Arc<ProviderApi>,
    by_bank: HashMap<Uuid, Arc<ProviderApi>>,
}

impl Providers {
    /// One client for every bank.
    pub fn single(provider: Arc<ProviderApi>) -> Self {
        Self {
            default: provider,
            by_bank: HashMap::new(),
        }
    }

    /// The client of `bank`'s configuration (the default one when it has none of its own).
    pub fn for_bank(&self, bank: Option<Uuid>) -> &Arc<ProviderApi> {
        bank.and_then(|b| self.by_bank.get(&b))
            .unwrap_or(&self.default)
    }

    /// Whether some bank has a client of its own (its accounts' bank then matters).
    pub fn per_bank(&self) -> bool {
        !self.by_bank.is_empty()
    }

    pub async fn from_env(
        env: &Env,
        platform: &Platform,
        http: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let secrets = platform.secrets();
        let banks = banks_config_from_env(env, &secrets).await?;
        let table = platform.table.clone();
        let tokens = TokenProviders::new(
            http.clone(),
            Box::new(move |scope| {
                Some(Arc::new(DynamoTokenCache::new(table.clone(), scope))
                    as Arc<dyn SharedTokenCache>)
            }),
        );
        let table = platform.table.clone();
        let limiters = RateLimiters::new(Box::new(move |scope, rps| {
            Arc::new(DynamoRateLimiter::new(table.clone(), scope, rps)) as Arc<dyn RateLimiter>
        }));
        Self::build(env, &banks, &secrets, http, &tokens, &limiters).await
    }

    /// The clients of `banks` on the given token and limiter registries.
    pub async fn build(
        env: &Env,
        banks: &BanksConfig,
        secrets: &SecretSource,
        http: &reqwest::Client,
        tokens: &TokenProviders,
        limiters: &RateLimiters,
    ) -> Result<Self, ConfigError> {
        let default = ProviderSettings {
            region: None,
            base_url: env.url("BANKING_SERVICE_URL")?,
            token_url: env.url("SAGE_ID_TOKEN_URL")?,
            audience: env.required("SAGE_ID_AUDIENCE")?,
            client_id: env.required("SAGE_ID_CLIENT_ID")?,
            client_secret: SecretRef::new(env.required("SAGE_ID_CLIENT_SECRET")?),
            api_key: SecretRef::new(env.required("PROVIDER_API_KEY")?),
        };
        let rps: f64 = env.parse_or("PROVIDER_RATE_LIMIT_RPS", 10.0)?;
        if !(rps.is_finite() && rps > 0.0) {
            return Err(ConfigError::Invalid {
                name: "PROVIDER_RATE_LIMIT_RPS".into(),
                reason: "must be a positive number of requests per second".into(),
            });
        }
        let refresh_margin =
            env.duration_secs("SAGE_ID_REFRESH_MARGIN_S", Duration::from_secs(300))?;
        let max_rate_wait =
            env.duration_secs("PROVIDER_MAX_RATE_WAIT_S", Duration::from_secs(20))?;
        let environment = env.optional("CONNECTOR_ENVIRONMENT");
        let mut resolver = Resolver {
            secrets,
            done: HashMap::new(),
        };
        let mut clients: HashMap<ProviderSettings, Arc<ProviderApi>> = HashMap::new();
        let mut client = async |s: &ProviderSettings,
                                label: &dyn Fn(&str) -> String|
               -> Result<Arc<ProviderApi>, ConfigError> {
            if let Some(c) = clients.get(s) {
                return Ok(c.clone());
            }
            let client_secret = resolver
                .get(&s.client_secret, &label("SAGE_ID_CLIENT_SECRET"))
                .await?;
            let api_key = resolver.get(&s.api_key, &label("PROVIDER_API_KEY")).await?;
            let token = tokens
                .get(SageIdConfig {
                    token_url: s.token_url.clone(),
                    client_id: s.client_id.clone(),
                    client_secret,
                    audience: s.audience.clone(),
                    refresh_margin,
                    style: TokenStyle::Form,
                })
                .map_err(|e| ConfigError::Invalid {
                    name: label("SAGE_ID_CLIENT_SECRET"),
                    reason: e.to_string(),
                })?;
            let limiter = limiters
                .get(&api_key, rps)
                .map_err(|e| ConfigError::Invalid {
                    name: label("PROVIDER_API_KEY"),
                    reason: e.to_string(),
                })?;
            let api = Arc::new(ProviderApi::new(
                http.clone(),
                ProviderConfig {
                    base_url: s.base_url.clone(),
                    api_key,
                    max_rate_wait,
                },
                token,
                limiter,
            ));
            clients.insert(s.clone(), api.clone());
            Ok(api)
        };
        let default_client = client(&default, &|name: &str| name.to_string()).await?;
        let mut by_bank = HashMap::new();
        for (bank, o) in &banks.banks {
            let settings = o
                .provider(&default, environment.as_deref())
                .map_err(|e| invalid(format!("bank {bank}: {e}")))?;
            let label = |key: &str| {
                let key = match key {
                    "SAGE_ID_CLIENT_SECRET" => "clientSecretRef",
                    _ => "apiKeyRef",
                };
                format!("{BANKS_CONFIG} (bank {bank}, {key})")
            };
            let api = client(&settings, &label).await?;
            tracing::info!(
                bankId = %bank,
                region = settings.region.as_deref().unwrap_or(""),
                base_url = %settings.base_url,
                own_client = !Arc::ptr_eq(&api, &default_client),
                "bank configured"
            );
            by_bank.insert(*bank, api);
        }
        Ok(Self {
            default: default_client,
            by_bank,
        })
    }
}

/// One distinct verification configuration and the banks that use it.
struct VerifierEntry {
    verifier: NotificationVerifier,
    /// Configured banks with these settings (the default entry: those that override nothing
    /// of the notification side).
    banks: BTreeSet<Uuid>,
    is_default: bool,
}

/// What verified a request.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: VerifiedClaims,
    /// The bank whose configuration (and only its) verified the request: known when the request
    /// named it, or when exactly one configured bank's settings accept it. `None` for the
    /// default settings, which stand for any bank without settings of its own.
    pub bank_id: Option<Uuid>,
}

/// The verifiers of Banking Service's tokens (shared by `/notification` and
/// `/availableaccounts`): the default one, and one per distinct bank configuration.
pub struct Verifiers {
    entries: Vec<VerifierEntry>,
    by_bank: HashMap<Uuid, usize>,
}

impl Verifiers {
    /// Whether more than one configuration may verify a request (the body's `bankId` then
    /// chooses, or each is tried in turn).
    pub fn several(&self) -> bool {
        self.entries.len() > 1
    }

    pub async fn from_env(
        env: &Env,
        platform: &Platform,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let secrets = platform.secrets();
        let banks = banks_config_from_env(env, &secrets).await?;
        Self::build(env, &banks, &secrets, http).await
    }

    pub async fn build(
        env: &Env,
        banks: &BanksConfig,
        secrets: &SecretSource,
        http: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let mut issuer = env.url("SAGE_ID_ISSUER")?;
        if !issuer.ends_with('/') {
            issuer.push('/');
        }
        let header_name = env.optional("NOTIFICATION_HEADER_NAME");
        let header_value = env.optional("NOTIFICATION_HEADER_VALUE");
        let custom_header = match (header_name, header_value) {
            (Some(n), Some(v)) => Some((n, SecretRef::new(v))),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    name: "NOTIFICATION_HEADER_VALUE".into(),
                    hint: "set together with NOTIFICATION_HEADER_NAME",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    name: "NOTIFICATION_HEADER_NAME".into(),
                    hint: "set together with NOTIFICATION_HEADER_VALUE",
                });
            }
        };
        let default = NotificationSettings {
            issuer,
            audience: env.required("NOTIFICATION_AUDIENCE")?,
            custom_header,
        };
        // Banking Service's defaults stay: the scope `Notification` unless set otherwise.
        let required_scope = env
            .optional("NOTIFICATION_SCOPE")
            .unwrap_or_else(|| "Notification".into());
        let allowed_azp = env.list("NOTIFICATION_ALLOWED_AZP");
        let leeway = env.duration_secs("NOTIFICATION_LEEWAY_S", Duration::from_secs(30))?;
        let jwks_ttl = env.duration_secs("JWKS_CACHE_S", Duration::from_secs(3600))?;

        let mut resolver = Resolver {
            secrets,
            done: HashMap::new(),
        };
        let mut entries: Vec<VerifierEntry> = Vec::new();
        let mut index: HashMap<NotificationSettings, usize> = HashMap::new();
        let mut by_bank = HashMap::new();
        let wanted = std::iter::once((None, default.clone())).chain(
            banks
                .banks
                .iter()
                .map(|(bank, o)| (Some(*bank), o.notification(&default))),
        );
        for (bank, settings) in wanted {
            let i = match index.get(&settings) {
                Some(i) => *i,
                None => {
                    let (header_label, name_label) = match bank {
                        None => (
                            "NOTIFICATION_HEADER_VALUE".to_string(),
                            "NOTIFICATION_HEADER_NAME".to_string(),
                        ),
                        Some(b) => (
                            format!("{BANKS_CONFIG} (bank {b}, customHeaderValueRef)"),
                            format!("{BANKS_CONFIG} (bank {b}, customHeaderName)"),
                        ),
                    };
                    let custom_header = match &settings.custom_header {
                        None => None,
                        Some((name, value)) => {
                            Some((name.clone(), resolver.get(value, &header_label).await?))
                        }
                    };
                    let verifier = NotificationVerifier::new(
                        http.clone(),
                        VerifierConfig {
                            issuer: settings.issuer.clone(),
                            audience: settings.audience.clone(),
                            required_scope: required_scope.clone(),
                            allowed_azp: allowed_azp.clone(),
                            leeway,
                            jwks_ttl,
                            custom_header,
                        },
                    )
                    .map_err(|reason| ConfigError::Invalid {
                        name: name_label,
                        reason,
                    })?;
                    entries.push(VerifierEntry {
                        verifier,
                        banks: BTreeSet::new(),
                        is_default: bank.is_none(),
                    });
                    index.insert(settings, entries.len() - 1);
                    entries.len() - 1
                }
            };
            if let Some(b) = bank {
                entries[i].banks.insert(b);
                by_bank.insert(b, i);
            }
        }
        Ok(Self { entries, by_bank })
    }

    /// Verifies a request against the settings of the bank it names, or, when it names none
    /// (or one without settings of its own), against each configuration in turn.
    pub async fn verify(
        &self,
        headers: &HeaderMap,
        named: Option<Uuid>,
    ) -> Result<Verified, AuthFailure> {
        if let Some(bank) = named {
            let entry = &self.entries[self.by_bank.get(&bank).copied().unwrap_or(0)];
            let claims = entry.verifier.verify(headers).await?;
            return Ok(Verified {
                claims,
                bank_id: Some(bank),
            });
        }
        let mut passed: Vec<(&VerifierEntry, VerifiedClaims)> = Vec::new();
        let mut first_failure = None;
        let mut keys_unavailable = None;
        for entry in &self.entries {
            match entry.verifier.verify(headers).await {
                Ok(claims) => passed.push((entry, claims)),
                Err(e) => {
                    if self.several() {
                        tracing::debug!(failure = %e, default = entry.is_default, "one bank's settings refused the token");
                    }
                    if matches!(e, AuthFailure::KeysUnavailable(_)) {
                        keys_unavailable.get_or_insert(e.clone());
                    }
                    first_failure.get_or_insert(e);
                }
            }
        }
        match passed.len() {
            0 => Err(keys_unavailable
                .or(first_failure)
                .unwrap_or(AuthFailure::NoBearer)),
            1 => {
                let (entry, claims) = passed.remove(0);
                let bank_id = match (entry.is_default, entry.banks.len()) {
                    (false, 1) => entry.banks.first().copied(),
                    _ => None,
                };
                Ok(Verified { claims, bank_id })
            }
            // Accepted by several configurations: authentic, but it says nothing of the bank.
            _ => Ok(Verified {
                claims: passed.remove(0).1,
                bank_id: None,
            }),
        }
    }
}

/// The clients as the pipeline's port.
impl connector_domain::ports::StatementApis for Providers {
    fn for_bank(&self, bank: Option<Uuid>) -> Arc<dyn connector_domain::ports::StatementApi> {
        Providers::for_bank(self, bank).clone()
    }

    fn per_bank(&self) -> bool {
        Providers::per_bank(self)
    }
}

/// The verifiers as the intake's port: an outage of Sage ID's keys is `Unavailable` (answered
/// 503 so that Banking Service retries), every other failure a refusal naming the check.
impl connector_domain::ports::BankingServiceAuth for Verifiers {
    fn several(&self) -> bool {
        Verifiers::several(self)
    }

    fn verify<'a>(
        &'a self,
        headers: &'a HeaderMap,
        named: Option<Uuid>,
    ) -> connector_domain::ports::BoxFuture<
        'a,
        Result<connector_domain::ports::VerifiedSender, connector_domain::ports::AuthRejection>,
    > {
        use connector_domain::ports::{AuthRejection, VerifiedSender};
        Box::pin(async move {
            match Verifiers::verify(self, headers, named).await {
                Ok(v) => Ok(VerifiedSender {
                    bank_id: v.bank_id,
                    token_id: v.claims.jti,
                }),
                Err(AuthFailure::KeysUnavailable(reason)) => {
                    Err(AuthRejection::Unavailable(reason))
                }
                Err(check) => Err(AuthRejection::Refused(check.to_string())),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    const A: &str = "5f775565-62d9-4d03-aca0-5365ad75ac07";
    const B: &str = "3993ba12-039d-43a5-a5ae-1493e5ac1ff8";
    const C: &str = "0d7f3b55-1c2e-4d84-9a51-2f4f3d1c9a10";

    fn env() -> Env {
        Env::from_pairs(&[
            ("BANKING_SERVICE_URL", "https://papi.example/eu"),
            ("SAGE_ID_TOKEN_URL", "https://id.example/oauth/token"),
            ("SAGE_ID_AUDIENCE", "provider"),
            ("SAGE_ID_CLIENT_ID", "eu-client"),
            ("SAGE_ID_CLIENT_SECRET", "eu-secret"),
            ("PROVIDER_API_KEY", "eu-key"),
        ])
    }

    struct Registries {
        tokens: TokenProviders,
        limiters: RateLimiters,
        token_scopes: Arc<Mutex<Vec<String>>>,
        rate_scopes: Arc<Mutex<Vec<String>>>,
    }

    fn registries() -> Registries {
        let token_scopes = Arc::new(Mutex::new(Vec::new()));
        let rate_scopes = Arc::new(Mutex::new(Vec::new()));
        let (t, r) = (token_scopes.clone(), rate_scopes.clone());
        struct Free;
        impl RateLimiter for Free {
            fn acquire(
                &self,
                _: Duration,
            ) -> connector_domain::ports::BoxFuture<
                '_,
                Result<bool, connector_domain::ports::PortError>,
            > {
                Box::pin(async { Ok(true) })
            }
        }
        Registries {
            tokens: TokenProviders::new(
                reqwest::Client::new(),
                Box::new(move |scope| {
                    t.lock().unwrap().push(scope.to_string());
                    None
                }),
            ),
            limiters: RateLimiters::new(Box::new(move |scope, _| {
                r.lock().unwrap().push(scope.to_string());
                Arc::new(Free) as Arc<dyn RateLimiter>
            })),
            token_scopes,
            rate_scopes,
        }
    }

    #[tokio::test]
    async fn each_bank_gets_its_own_token_and_budget_only_where_its_settings_differ() {
        let banks = BanksConfig::parse(&format!(
            r#"{{
                "{A}": {{"region": "us-east-1", "providerApiBase": "https://papi.example/us",
                         "clientId": "us-client", "clientSecretRef": "us-secret", "apiKeyRef": "us-key"}},
                "{B}": {{"clientId": "b-client", "clientSecretRef": "b-secret"}},
                "{C}": {{"providerAudience": "provider"}}
            }}"#
        ))
        .unwrap();
        let r = registries();
        let secrets = SecretSource::new(None);
        let providers = Providers::build(
            &env(),
            &banks,
            &secrets,
            &reqwest::Client::new(),
            &r.tokens,
            &r.limiters,
        )
        .await
        .unwrap();
        let bank = |s: &str| Some(Uuid::parse_str(s).unwrap());
        let default = providers.for_bank(None);
        assert!(providers.per_bank());
        // A bank overriding nothing that matters shares the default client; an unknown bank
        // gets the default.
        assert!(Arc::ptr_eq(providers.for_bank(bank(C)), default));
        assert!(Arc::ptr_eq(
            providers.for_bank(Some(Uuid::new_v4())),
            default
        ));
        assert!(!Arc::ptr_eq(providers.for_bank(bank(A)), default));
        assert!(!Arc::ptr_eq(providers.for_bank(bank(B)), default));
        // Tokens: default, A's client, B's client. Budgets: the default key (shared by B,
        // which kept it) and A's key.
        assert_eq!(r.tokens.len(), 3);
        assert_eq!(r.limiters.len(), 2);
        assert_eq!(r.token_scopes.lock().unwrap().len(), 3);
        assert_eq!(
            *r.rate_scopes.lock().unwrap(),
            vec![
                connector_sage::rate_scope(&Secret::new("eu-key")),
                connector_sage::rate_scope(&Secret::new("us-key"))
            ]
        );
    }

    #[tokio::test]
    async fn a_bad_bank_entry_stops_the_start_naming_banks_config_and_the_bank() {
        let r = registries();
        let secrets = SecretSource::new(None);
        // A region with no environment to place it in.
        let banks = BanksConfig::parse(&format!(r#"{{"{A}": {{"region": "us"}}}}"#)).unwrap();
        let err = Providers::build(
            &env(),
            &banks,
            &secrets,
            &reqwest::Client::new(),
            &r.tokens,
            &r.limiters,
        )
        .await
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("BANKS_CONFIG") && err.contains(A), "{err}");
        // A secret ARN with no AWS configuration to fetch it names where it is.
        let banks = BanksConfig::parse(&format!(
            r#"{{"{A}": {{"apiKeyRef": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:k-AbC123"}}}}"#
        ))
        .unwrap();
        let err = Providers::build(
            &env(),
            &banks,
            &secrets,
            &reqwest::Client::new(),
            &r.tokens,
            &r.limiters,
        )
        .await
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains("apiKeyRef") && err.contains(A), "{err}");
        // And BANKS_CONFIG itself must parse.
        let err =
            banks_config_from_env(&Env::from_pairs(&[("BANKS_CONFIG", "{not json")]), &secrets)
                .await
                .unwrap_err()
                .to_string();
        assert!(err.contains("BANKS_CONFIG"), "{err}");
    }
}
