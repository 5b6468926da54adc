//! Clients every function builds once at start-up, from the configuration contract.

use std::sync::Arc;
use std::time::Duration;

use connector_aws::Table;
use connector_aws::queues::Queues;
use connector_bank::{BankClient, BankConfig};

use crate::config::{ConfigError, Env, SecretSource};
use crate::sqs::DeadLetters;

/// The AWS side: SDK configuration, the table and the queues.
#[derive(Clone)]
pub struct Platform {
    pub sdk: aws_config::SdkConfig,
    pub table: Table,
    pub queues: Queues,
    pub sqs: aws_sdk_sqs::Client,
}

/// Which queue URLs a function needs; the others are not read.
#[derive(Clone, Copy)]
pub struct QueueNeeds {
    pub notifications: bool,
    pub push: bool,
    pub poll: bool,
}

impl QueueNeeds {
    pub const NONE: Self = Self::of(false, false, false);
    pub const NOTIFICATIONS: Self = Self::of(true, false, false);
    pub const PUSH: Self = Self::of(false, true, false);
    /// The notification work that may start an account's first push.
    pub const NOTIFICATIONS_AND_PUSH: Self = Self::of(true, true, false);
    pub const PUSH_AND_POLL: Self = Self::of(false, true, true);
    pub const ALL: Self = Self::of(true, true, true);

    const fn of(notifications: bool, push: bool, poll: bool) -> Self {
        Self {
            notifications,
            push,
            poll,
        }
    }
}

impl Platform {
    pub async fn from_env(env: &Env, needs: QueueNeeds) -> Result<Self, ConfigError> {
        let table_name = env.required("TABLE_NAME")?;
        let url = |need: bool, name: &str| -> Result<String, ConfigError> {
            if need {
                env.url(name)
            } else {
                Ok(String::new())
            }
        };
        let notifications = url(needs.notifications, "NOTIFICATIONS_QUEUE_URL")?;
        let push = url(needs.push, "PUSH_QUEUE_URL")?;
        let poll = url(needs.poll, "POLL_QUEUE_URL")?;
        let sdk = connector_aws::sdk_config()
            .await
            .map_err(|e| ConfigError::Invalid {
                name: "AWS_CA_BUNDLE".into(),
                reason: format!("{}: {}", e.path, e.reason),
            })?;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        Ok(Self {
            table: Table::new(dynamo, table_name),
            queues: Queues::new(sqs.clone(), notifications, push, poll),
            sqs,
            sdk,
        })
    }

    /// Where a consumer sends its poison messages (`DLQ_URL`, set per function by the template).
    pub fn dead_letters(&self, env: &Env, fifo: bool) -> Result<DeadLetters, ConfigError> {
        Ok(DeadLetters {
            client: self.sqs.clone(),
            dlq_url: env.url("DLQ_URL")?,
            fifo,
        })
    }

    pub fn secrets(&self) -> SecretSource {
        SecretSource::new(Some(self.sdk.clone()))
    }
}

/// Where the outbound client's trust anchors come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The Mozilla set compiled in (`webpki-root-certs`): nothing to read at start-up.
    Bundled,
    /// The platform store, because the operator pointed at one with `SSL_CERT_FILE` or
    /// `SSL_CERT_DIR` (for example to add the bank's private CA for the Bank Data API).
    Platform,
}

impl RootSource {
    pub fn from_env(env: &Env) -> Self {
        if env.optional("SSL_CERT_FILE").is_some() || env.optional("SSL_CERT_DIR").is_some() {
            Self::Platform
        } else {
            Self::Bundled
        }
    }
}

/// The outbound client's trust anchors. Reading the platform store means decoding ~150 PEM files
/// (6-9 ms of a cold start measured here); the compiled-in set is already parsed, so taking it
/// costs nothing.
pub fn outbound_roots(source: RootSource) -> Result<rustls::RootCertStore, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match source {
        RootSource::Bundled => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        RootSource::Platform => {
            let loaded = rustls_native_certs::load_native_certs();
            for e in &loaded.errors {
                tracing::warn!(error = %e, "a CA certificate of the platform store was not loaded");
            }
            let (_, unusable) = roots.add_parsable_certificates(loaded.certs);
            if unusable > 0 {
                tracing::warn!(
                    unusable,
                    "CA certificates of the platform store were not usable"
                );
            }
        }
    }
    if roots.is_empty() {
        return Err(ConfigError::Invalid {
            name: "SSL_CERT_FILE / SSL_CERT_DIR".into(),
            reason: "no CA certificate could be loaded".into(),
        });
    }
    Ok(roots)
}

/// The outbound HTTP client: rustls, short connect timeout, bounded request time. Built once
/// per process and shared (a clone shares the pool).
pub fn http_client(env: &Env) -> Result<reqwest::Client, ConfigError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let client = outbound_client(outbound_roots(RootSource::from_env(env))?)?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// An outbound client trusting `roots` (what `http_client` builds once per process).
pub fn outbound_client(roots: rustls::RootCertStore) -> Result<reqwest::Client, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "HTTP client".into(),
        reason,
    };
    // rustls' safe defaults with the aws-lc-rs provider: what reqwest would configure itself.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15))
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(concat!(
            "sage-banking-connector/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| invalid(e.to_string()))
}

/// The Bank Data API client.
pub async fn bank_from_env(
    env: &Env,
    platform: &Platform,
    http: &reqwest::Client,
) -> Result<Arc<BankClient>, ConfigError> {
    let config = BankConfig {
        base_url: env.url("BANK_API_URL")?,
        client_id: env.required("BANK_CLIENT_ID")?,
        client_secret: env
            .secret("BANK_CLIENT_SECRET", &platform.secrets())
            .await?,
    };
    Ok(Arc::new(BankClient::new(http.clone(), config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outbound_client_uses_the_bundled_roots_unless_the_operator_names_a_store() {
        assert_eq!(
            RootSource::from_env(&Env::from_pairs(&[])),
            RootSource::Bundled
        );
        assert_eq!(
            RootSource::from_env(&Env::from_pairs(&[("SSL_CERT_FILE", "  ")])),
            RootSource::Bundled
        );
        for name in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
            assert_eq!(
                RootSource::from_env(&Env::from_pairs(&[(name, "/etc/ssl/certs")])),
                RootSource::Platform,
                "{name}"
            );
        }
        // The Mozilla set: well over a hundred roots, every one usable.
        let bundled = outbound_roots(RootSource::Bundled).unwrap();
        assert_eq!(bundled.len(), webpki_roots::TLS_SERVER_ROOTS.len());
        assert!(bundled.len() > 100);
    }
}
