//! Clients every function builds once at start-up, from the configuration contract.

use std::sync::Arc;
use std::time::Duration;

use connector_aws::Table;
use connector_aws::queues::Queues;
use connector_aws::rate_limit::DynamoRateLimiter;
use connector_aws::token_cache::DynamoTokenCache;
use connector_bank::{BankClient, BankConfig};
use connector_sage::{ProviderApi, ProviderConfig, SageIdConfig, TokenProvider};

use crate::batch::DeadLetters;
use crate::config::{ConfigError, Env, SecretSource};

/// The AWS side: SDK configuration, the table and the queues.
#[derive(Clone)]
pub struct Platform {
    pub sdk: aws_config::SdkConfig,
    pub table: Table,
    pub queues: Queues,
    pub sqs: aws_sdk_sqs::Client,
}

/// Which queue URLs a function needs; the others are not read.
#[derive(Default, Clone, Copy)]
pub struct QueueNeeds {
    pub notifications: bool,
    pub push: bool,
    pub poll: bool,
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
        let sdk = connector_aws::sdk_config().await;
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

/// The outbound HTTP client: rustls, short connect timeout, bounded request time. Built once
/// per process and shared (a clone shares the pool): building one loads the TLS roots, which
/// is a measurable part of a cold start.
pub fn http_client() -> Result<reqwest::Client, ConfigError> {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    if let Some(c) = CLIENT.get() {
        return Ok(c.clone());
    }
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(15))
        .pool_idle_timeout(Duration::from_secs(50))
        .user_agent(concat!(
            "sage-banking-connector/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| ConfigError::Invalid {
            name: "HTTP client".into(),
            reason: e.to_string(),
        })?;
    Ok(CLIENT.get_or_init(|| client).clone())
}

/// The Provider API client with the shared token cache and the shared rate limiter.
pub async fn provider_from_env(
    env: &Env,
    platform: &Platform,
    http: &reqwest::Client,
) -> Result<Arc<ProviderApi>, ConfigError> {
    let secrets = platform.secrets();
    let client_id = env.required("SAGE_ID_CLIENT_ID")?;
    let sage_id = SageIdConfig {
        token_url: env.url("SAGE_ID_TOKEN_URL")?,
        client_id: client_id.clone(),
        client_secret: env.secret("SAGE_ID_CLIENT_SECRET", &secrets).await?,
        audience: env.required("SAGE_ID_AUDIENCE")?,
        refresh_margin: env.duration_secs("SAGE_ID_REFRESH_MARGIN_S", Duration::from_secs(300))?,
    };
    let rps: f64 = env.parse_or("PROVIDER_RATE_LIMIT_RPS", 10.0)?;
    if !(rps.is_finite() && rps > 0.0) {
        return Err(ConfigError::Invalid {
            name: "PROVIDER_RATE_LIMIT_RPS".into(),
            reason: "must be a positive number of requests per second".into(),
        });
    }
    let cache = Arc::new(DynamoTokenCache::new(platform.table.clone(), &client_id));
    let tokens = Arc::new(TokenProvider::new(http.clone(), sage_id, Some(cache)));
    // The rate is per API key; scope the slots by client id (one key per client in practice).
    let limiter = Arc::new(DynamoRateLimiter::new(
        platform.table.clone(),
        client_id,
        rps,
    ));
    let config = ProviderConfig {
        base_url: env.url("BANKING_SERVICE_URL")?,
        api_key: env.secret("PROVIDER_API_KEY", &secrets).await?,
        max_rate_wait: env.duration_secs("PROVIDER_MAX_RATE_WAIT_S", Duration::from_secs(20))?,
    };
    Ok(Arc::new(ProviderApi::new(
        http.clone(),
        config,
        tokens,
        limiter,
    )))
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
