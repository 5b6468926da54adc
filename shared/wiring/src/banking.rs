//! Banking Service's use cases on real clients: the table, the queues, the Provider API client
//! of each bank (`crate::banks`) and the Bank Data API.

use std::sync::Arc;
use std::time::Duration;

use connector_app::available::AvailableAccounts;
use connector_app::browser::{BrowserFlows, PublicBase};
use connector_app::ingest::Ingest;
use connector_app::intake::NotificationIntake;
use connector_app::pages::PagePolicy;
use connector_app::pipeline::Pipeline;
use connector_app::poller::StatementPoller;
use connector_app::pusher::StatementPusher;
use connector_app::reconciler::Reconciler;
use connector_app::worker::{NotificationWorker, WorkerSettings};
use connector_domain::ports::{BankHistory, ExpectedKey, StatementApis};
use connector_domain::redirect::RedirectAllowList;
use connector_domain::schedule::{Backoff, PollSchedule};
use connector_domain::statement::BalanceShape;

use crate::SystemClock;
use crate::banks::{Providers, Verifiers};
use crate::config::{ConfigError, Env};
use crate::context::{Platform, QueueNeeds, bank_from_env, http_client};
use crate::sqs::Consumer;

/// `POST /notification`: the verifiers, the table's do-once claims and the work queue.
pub async fn notification_intake(env: &Env) -> Result<NotificationIntake, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NOTIFICATIONS).await?;
    let verifier = Verifiers::from_env(env, &platform, http_client(env)?).await?;
    Ok(NotificationIntake {
        auth: Arc::new(verifier),
        once: Arc::new(platform.table),
        queues: Arc::new(platform.queues),
        clock: Arc::new(SystemClock),
    })
}

/// `POST /ingest`: the table, the push queue and the optional `INGEST_API_KEY`.
pub async fn ingest(env: &Env) -> Result<Ingest, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::PUSH).await?;
    Ok(Ingest {
        api_key: api_key(env, &platform).await?,
        store: Arc::new(platform.table),
        queues: Arc::new(platform.queues),
        clock: Arc::new(SystemClock),
    })
}

/// `INGEST_API_KEY`, the key the bank presents where IAM does not guard its routes.
pub async fn api_key(
    env: &Env,
    platform: &Platform,
) -> Result<Option<Arc<dyn ExpectedKey>>, ConfigError> {
    let key = env
        .optional_secret("INGEST_API_KEY", &platform.secrets())
        .await?;
    Ok(key.map(|k| Arc::new(k) as Arc<dyn ExpectedKey>))
}

/// `POST /availableaccounts`: the verifiers, the table and the Bank Data API.
pub async fn available_accounts(env: &Env) -> Result<AvailableAccounts, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NONE).await?;
    let http = http_client(env)?;
    Ok(AvailableAccounts {
        auth: Arc::new(Verifiers::from_env(env, &platform, http.clone()).await?),
        bank: bank_from_env(env, &platform, &http).await?,
        store: Arc::new(platform.table),
        clock: Arc::new(SystemClock),
    })
}

/// `PUBLIC_BASE_URL` when set; otherwise API Gateway's domain when running on Lambda, which
/// sets `LAMBDA_TASK_ROOT` for every runtime (the local stack's runtime does not, and gives
/// `PUBLIC_BASE_URL` instead); otherwise a start-up error naming `PUBLIC_BASE_URL`.
pub fn public_base(env: &Env) -> Result<PublicBase, ConfigError> {
    const NAME: &str = "PUBLIC_BASE_URL";
    if env.optional(NAME).is_some() {
        let value = env.url(NAME)?;
        let parsed = url::Url::parse(&value).map_err(|e| ConfigError::Invalid {
            name: NAME.into(),
            reason: e.to_string(),
        })?;
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ConfigError::Invalid {
                name: NAME.into(),
                reason: "a base URL has no query or fragment".into(),
            });
        }
        return Ok(PublicBase::Configured(
            value.trim_end_matches('/').to_string(),
        ));
    }
    if env.optional("LAMBDA_TASK_ROOT").is_some() {
        return Ok(PublicBase::ApiGateway);
    }
    Err(ConfigError::Missing {
        name: NAME.into(),
        hint: "the connector's public base URL, e.g. https://connector.examplebank.com; \
               required off Lambda (on Lambda, empty means API Gateway's domain)",
    })
}

/// `GET /auth` and `GET /authrefresh`: the table, the work and push queues, the bank's sign-in
/// and the Provider API.
pub async fn browser_flows(env: &Env) -> Result<BrowserFlows, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NOTIFICATIONS_AND_PUSH).await?;
    let http = http_client(env)?;
    let allow_http_loopback = env.flag("REDIRECT_ALLOW_HTTP_LOOPBACK")?;
    let allow = RedirectAllowList::parse(
        &env.required("REDIRECT_HOST_ALLOWLIST")?,
        allow_http_loopback,
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "REDIRECT_HOST_ALLOWLIST".into(),
        reason,
    })?;
    let bank = bank_from_env(env, &platform, &http).await?;
    Ok(BrowserFlows {
        providers: Arc::new(Providers::from_env(env, &platform, &http).await?),
        sign_in: bank.clone(),
        bank,
        clock: Arc::new(SystemClock),
        allow,
        pages: PagePolicy {
            frame_ancestors: env.optional("FRAME_ANCESTORS").unwrap_or_else(|| {
                "'self' https://*.sagebankdrive.com https://*.sage.com https://*.intacct.com https://*.sageone.com".into()
            }),
            allow_http_loopback,
        },
        grace: env.duration_secs("AUTH_GRACE_S", Duration::from_secs(5))?,
        public_base: public_base(env)?,
        bank_name: env
            .optional("BANK_DISPLAY_NAME")
            .unwrap_or_else(|| "your bank".into()),
        patch_retries: 3,
        store: Arc::new(platform.table),
        queues: Arc::new(platform.queues),
    })
}

fn worker_settings(env: &Env) -> Result<WorkerSettings, ConfigError> {
    Ok(WorkerSettings {
        default_window: env.duration_secs(
            "BACKFILL_DEFAULT_DAYS_S",
            Duration::from_secs(90 * 24 * 3600),
        )?,
        single_bank: env.optional_uuid("BANKING_SERVICE_BANK_ID")?,
        handshake_ttl: env.duration_secs("AUTH_HANDSHAKE_TTL_S", Duration::from_secs(20 * 60))?,
    })
}

/// The notification worker, and where its poison goes.
pub async fn notification_worker(env: &Env) -> Result<Consumer<NotificationWorker>, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NOTIFICATIONS_AND_PUSH).await?;
    let http = http_client(env)?;
    let dead_letters = platform.dead_letters(env, false)?;
    let bank: Arc<dyn BankHistory> = bank_from_env(env, &platform, &http).await?;
    let providers = Arc::new(Providers::from_env(env, &platform, &http).await?);
    Ok(Consumer {
        handler: NotificationWorker {
            settings: worker_settings(env)?,
            bank,
            providers,
            store: Arc::new(platform.table),
            queues: Arc::new(platform.queues),
            clock: Arc::new(SystemClock),
        },
        dead_letters,
    })
}

/// The AWS clients of a pipeline consumer: the table, the push and the poll queues.
async fn pipeline_platform(env: &Env) -> Result<Platform, ConfigError> {
    Platform::from_env(env, QueueNeeds::PUSH_AND_POLL).await
}

/// The pipeline on clients already built (`platform` must have the push and poll queues), so
/// that a function needing more than the pipeline builds its AWS clients once.
pub async fn pipeline(env: &Env, platform: &Platform) -> Result<Pipeline, ConfigError> {
    let http = http_client(env)?;
    let providers: Arc<dyn StatementApis> =
        Arc::new(Providers::from_env(env, platform, &http).await?);
    let defaults = PollSchedule::default();
    let schedule = PollSchedule {
        base_processing: env.duration_secs("POLL_FIRST_DELAY_S", defaults.base_processing)?,
        per_transaction: defaults.per_transaction,
        factor: defaults.factor,
        cap: env.duration_secs("POLL_MAX_DELAY_S", defaults.cap)?,
        max_age: env.duration_secs("STATEMENT_MAX_AGE_S", defaults.max_age)?,
        parked_interval: env.duration_secs("PARKED_POLL_S", defaults.parked_interval)?,
    };
    let backoff = Backoff {
        base: env.duration_secs("RETRY_BASE_DELAY_S", Backoff::default().base)?,
        cap: env.duration_secs("RETRY_MAX_DELAY_S", Backoff::default().cap)?,
    };
    Ok(Pipeline {
        store: Arc::new(platform.table.clone()),
        timers: Arc::new(platform.queues.clone()),
        providers,
        clock: Arc::new(SystemClock),
        schedule,
        backoff,
        shape: env.parse_or("STATEMENT_BALANCE_SHAPE", BalanceShape::Nested)?,
        max_attempts: env.parse_or("STATEMENT_MAX_ATTEMPTS", 5u32)?,
        too_old: env.duration_days("TOO_OLD_DAYS", 14)?,
        posting_stale_after: env
            .duration_secs("POSTING_STALE_AFTER_S", Duration::from_secs(180))?,
        single_bank: env.optional_uuid("BANKING_SERVICE_BANK_ID")?,
        config_retry: env
            .duration_secs("CONFIG_RETRY_DELAY_S", Duration::from_secs(300))?
            // An SQS timer cannot wait longer.
            .min(Duration::from_secs(900)),
        max_conflicts: env.parse_or("CONFLICT_MAX_ATTEMPTS", 20u32)?,
    })
}

/// The statement pusher (on the FIFO push queue), and where its poison goes.
pub async fn statement_pusher(env: &Env) -> Result<Consumer<StatementPusher>, ConfigError> {
    let platform = pipeline_platform(env).await?;
    let pipeline = pipeline(env, &platform).await?;
    let bank = bank_from_env(env, &platform, &http_client(env)?).await?;
    Ok(Consumer {
        handler: StatementPusher::new(pipeline, bank),
        dead_letters: platform.dead_letters(env, true)?,
    })
}

/// The statement poller, and where its poison goes.
pub async fn statement_poller(env: &Env) -> Result<Consumer<StatementPoller>, ConfigError> {
    let platform = pipeline_platform(env).await?;
    Ok(Consumer {
        handler: StatementPoller::new(pipeline(env, &platform).await?),
        dead_letters: platform.dead_letters(env, false)?,
    })
}

/// The reconciler: the pipeline, the bank, and the work queue for recovered notifications.
pub async fn reconciler(env: &Env) -> Result<Reconciler, ConfigError> {
    // One set of AWS clients for the pipeline and the reconciler's own work (building the
    // SDK's clients is a measurable part of a cold start); the work queue is for recovered
    // notifications (the worker acts on them as on Banking Service's).
    let platform = Platform::from_env(env, QueueNeeds::ALL).await?;
    let pipeline = pipeline(env, &platform).await?;
    let bank = bank_from_env(env, &platform, &http_client(env)?).await?;
    Ok(Reconciler {
        pipeline,
        bank,
        stale_after: env.duration_secs("RECONCILE_STALE_AFTER_S", Duration::from_secs(900))?,
    })
}
