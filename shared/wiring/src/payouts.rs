//! Payments Out's use cases on real clients: the table, the Payments Out work queue, Payments
//! Out's own Sage ID, Provider and messaging client (`POS_*`), the bank, and the creditor key.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use connector_app::pages::PagePolicy;
use connector_app::payouts_authorise::{Authorise, AuthorisePage};
use connector_app::payouts_bank_events::BankEvents;
use connector_app::payouts_batches::Batches;
use connector_app::payouts_intake::PayoutsIntake;
use connector_app::payouts_messages::Messages;
use connector_app::payouts_onboarding::Onboarding;
use connector_app::payouts_reconciler::PayoutsReconciler;
use connector_app::payouts_worker::PayoutsWorker;
use connector_aws::queues::WorkQueue;
use connector_aws::rate_limit::DynamoRateLimiter;
use connector_aws::token_cache::DynamoTokenCache;
use connector_domain::ports::{Clock, PayoutsQueue, SharedTokenCache};
use connector_domain::redirect::RedirectAllowList;
use connector_sage::payouts::ProviderPayouts;
use connector_sage::{
    NotificationVerifier, PayoutsApi, PayoutsPaths, ProviderApi, ProviderConfig, SageIdConfig,
    TokenProvider, TokenStyle, VerifierConfig, rate_scope,
};

use crate::SystemClock;
use crate::config::{ConfigError, Env, SecretSource};
use crate::context::{Platform, QueueNeeds, bank_from_env, http_client};
use crate::sqs::Consumer;

/// Payments Out's verifier settings: both the custom header and the token are required (Sage
/// asks providers to check both); the scope is checked only when set, since Sage has not
/// published the scope of its tokens.
pub async fn verifier_config(
    env: &Env,
    secrets: &SecretSource,
) -> Result<VerifierConfig, ConfigError> {
    let mut issuer = match env.optional("POS_NOTIFICATION_ISSUER") {
        Some(i) => i,
        None => env.url("SAGE_ID_ISSUER")?,
    };
    if !issuer.ends_with('/') {
        issuer.push('/');
    }
    let header_name = env.required("POS_HEADER_NAME")?;
    let header_value = env.secret("POS_HEADER_VALUE", secrets).await?;
    Ok(VerifierConfig {
        issuer,
        audience: env.required("POS_NOTIFICATION_AUDIENCE")?,
        required_scope: env.optional("POS_NOTIFICATION_SCOPE").unwrap_or_default(),
        allowed_azp: env.list("POS_NOTIFICATION_ALLOWED_AZP"),
        leeway: env.duration_secs("NOTIFICATION_LEEWAY_S", std::time::Duration::from_secs(30))?,
        jwks_ttl: env.duration_secs("JWKS_CACHE_S", std::time::Duration::from_secs(3600))?,
        custom_header: Some((header_name, header_value)),
    })
}

/// The intake on real clients: the table's do-once claims, the Payments Out work queue
/// (`PAYOUTS_QUEUE_URL`) and a verifier with Payments Out's own settings (`POS_*`).
pub async fn intake(env: &Env) -> Result<PayoutsIntake, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NONE).await?;
    let verifier = NotificationVerifier::new(
        http_client(env)?,
        verifier_config(env, &platform.secrets()).await?,
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "POS_HEADER_NAME".into(),
        reason,
    })?;
    Ok(PayoutsIntake {
        auth: Arc::new(verifier),
        claims: Arc::new(platform.table.clone()),
        queue: payouts_queue(env, &platform)?,
        clock: Arc::new(SystemClock),
    })
}

/// The worker on real clients, and where its poison goes.
pub async fn worker(env: &Env) -> Result<Consumer<PayoutsWorker>, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NONE).await?;
    let links_base = match env.optional("PUBLIC_BASE_URL") {
        Some(_) => env.url("PUBLIC_BASE_URL")?,
        None => env.url("AUTHORISE_BASE_URL")?,
    };
    let api = payouts_from_env(env, &platform, links_base).await?;
    let ttl = env.duration_secs("AUTH_LINK_TTL_S", Duration::from_secs(7 * 24 * 3600))?;
    let api = Arc::new(api);
    let bank = bank_from_env(env, &platform, &http_client(env)?).await?;
    let table = Arc::new(platform.table.clone());
    let messages = Messages {
        api: api.clone(),
        bindings: table.clone(),
        bank: bank.clone(),
        parties: table,
        clock: Arc::new(SystemClock),
        supported_currencies: supported_currencies(env),
        sealer: Arc::new(connector_aws::kms::KmsSealer::new(
            aws_sdk_kms::Client::new(&platform.sdk),
            env.required("CREDITOR_KEY_ID")?,
        )),
    };
    let batches = batches_from_env(env, &platform, api.clone(), bank, Requeue::IfSet)?;
    let onboarding = Onboarding {
        api,
        links: Arc::new(platform.table.clone()),
        clock: Arc::new(SystemClock),
        link_ttl: TimeDelta::from_std(ttl).unwrap_or(TimeDelta::days(7)),
        open: Arc::new(platform.table.clone()),
    };
    let dead_letters = platform.dead_letters(env, false)?;
    Ok(Consumer {
        handler: PayoutsWorker {
            onboarding,
            messages,
            batches,
        },
        dead_letters,
    })
}

/// `SUPPORTED_CURRENCIES` (`USD`).
pub fn supported_currencies(env: &Env) -> Vec<String> {
    env.optional("SUPPORTED_CURRENCIES")
        .unwrap_or_else(|| "USD".into())
        .split(',')
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .collect()
}

/// Payments Out's work queue (`PAYOUTS_QUEUE_URL`).
fn payouts_queue(env: &Env, platform: &Platform) -> Result<Arc<WorkQueue>, ConfigError> {
    Ok(Arc::new(WorkQueue::new(
        platform.sqs.clone(),
        env.url("PAYOUTS_QUEUE_URL")?,
    )))
}

/// Whether a function's batches requeue their later work on Payments Out's queue.
#[derive(Clone, Copy)]
pub enum Requeue {
    /// Where `PAYOUTS_QUEUE_URL` is set; without it the work runs in place.
    IfSet,
    /// A start-up error without `PAYOUTS_QUEUE_URL`.
    Required,
}

/// The batches' use cases on the table, Payments Out's client and the bank's.
pub fn batches_from_env(
    env: &Env,
    platform: &Platform,
    api: Arc<ProviderPayouts>,
    bank: Arc<connector_bank::BankClient>,
    requeue: Requeue,
) -> Result<Batches, ConfigError> {
    let requeue = match requeue {
        Requeue::IfSet if env.optional("PAYOUTS_QUEUE_URL").is_none() => None,
        _ => Some(payouts_queue(env, platform)? as Arc<dyn PayoutsQueue>),
    };
    let table = Arc::new(platform.table.clone());
    Ok(Batches {
        api: api.clone(),
        batches: api,
        store: table.clone(),
        checks: table.clone(),
        parties: table.clone(),
        bindings: table,
        consents: bank.clone(),
        bank,
        clock: Arc::new(SystemClock),
        supported_currencies: supported_currencies(env),
        bank_concurrency: env.parse_or("BANK_CONCURRENCY", 8usize)?,
        open: Arc::new(platform.table.clone()),
        stuck_after: stuck_after(env)?,
        outcome_window: env.duration_secs("OUTCOME_WINDOW_S", Duration::from_secs(1))?,
        submit_budget: env.duration_secs("SUBMIT_BUDGET_S", Duration::from_secs(30))?,
        requeue,
    })
}

/// `STUCK_AFTER_S` (900): how long Payments Out work may go without progress before the
/// reconciler looks at it.
pub fn stuck_after(env: &Env) -> Result<TimeDelta, ConfigError> {
    let d = env.duration_secs("STUCK_AFTER_S", Duration::from_secs(900))?;
    TimeDelta::from_std(d).map_err(|e| ConfigError::Invalid {
        name: "STUCK_AFTER_S".into(),
        reason: e.to_string(),
    })
}

/// Payments Out's client from the configuration contract (`POS_*`): its own Sage ID audience
/// (the token cache is keyed by issuer, client and audience, so it never swaps tokens with
/// Banking Service), the Sage ID client shared with Banking Service unless
/// `POS_SAGE_ID_CLIENT_ID`/`_SECRET` are set, and a rate limit keyed by its API key.
/// `links_base` starts the authorisation links it PATCHes into subscriptions.
pub async fn payouts_from_env(
    env: &Env,
    platform: &Platform,
    links_base: String,
) -> Result<ProviderPayouts, ConfigError> {
    let secrets = platform.secrets();
    let http = http_client(env)?;
    let (client_id, client_secret) = match env.optional("POS_SAGE_ID_CLIENT_ID") {
        Some(id) => (id, env.secret("POS_SAGE_ID_CLIENT_SECRET", &secrets).await?),
        None => (
            env.required("SAGE_ID_CLIENT_ID")?,
            env.secret("SAGE_ID_CLIENT_SECRET", &secrets).await?,
        ),
    };
    let style = match env.optional("POS_SAGE_ID_TOKEN_STYLE").as_deref() {
        None | Some("form") => TokenStyle::Form,
        Some("json") => TokenStyle::Json,
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "POS_SAGE_ID_TOKEN_STYLE".into(),
                reason: format!("`{other}` is neither form nor json"),
            });
        }
    };
    let sage_id = SageIdConfig {
        token_url: env.url("SAGE_ID_TOKEN_URL")?,
        client_id,
        client_secret,
        audience: env.required("POS_SAGE_ID_AUDIENCE")?,
        refresh_margin: env.duration_secs("SAGE_ID_REFRESH_MARGIN_S", Duration::from_secs(300))?,
        style,
    };
    let cache: Arc<dyn SharedTokenCache> = Arc::new(DynamoTokenCache::new(
        platform.table.clone(),
        &sage_id.cache_scope(),
    ));
    let tokens = Arc::new(TokenProvider::new(http.clone(), sage_id, Some(cache)));
    let api_key = env.secret("POS_API_KEY", &secrets).await?;
    let rps: f64 = env.parse_or("POS_RATE_LIMIT_RPS", 10.0)?;
    let limiter = Arc::new(DynamoRateLimiter::new(
        platform.table.clone(),
        rate_scope(&api_key),
        rps,
    ));
    let defaults = PayoutsPaths::default();
    let core = ProviderApi::new(
        http,
        ProviderConfig {
            base_url: env.url("POS_BASE_URL")?,
            api_key,
            max_rate_wait: env
                .duration_secs("PROVIDER_MAX_RATE_WAIT_S", Duration::from_secs(20))?,
        },
        tokens,
        limiter,
    );
    let paths = PayoutsPaths {
        provider: env
            .optional("POS_PROVIDER_PREFIX")
            .unwrap_or(defaults.provider),
        messaging: env.optional("POS_MSG_PREFIX").unwrap_or(defaults.messaging),
        application_default: env
            .optional("POS_APPLICATION_DEFAULT")
            .unwrap_or(defaults.application_default),
        public_base_url: links_base,
    };
    Ok(ProviderPayouts {
        api: PayoutsApi::new(core, paths),
        provider_id: env
            .optional_uuid("POS_PROVIDER_ID")?
            .ok_or_else(|| ConfigError::Missing {
                name: "POS_PROVIDER_ID".into(),
                hint: "the providerId Payments Out gave the provider",
            })?,
    })
}

/// The bank's pushes: the batches' use cases, and the key the bank presents off AWS.
pub async fn bank_events(env: &Env) -> Result<BankEvents, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NONE).await?;
    // Events PATCH batches, never links: no links base.
    let api = Arc::new(payouts_from_env(env, &platform, String::new()).await?);
    let bank = bank_from_env(env, &platform, &http_client(env)?).await?;
    // The queue is required here: without it a batch's outcome window would run inside the
    // bank's request, under its timeout and without the role's grant on the table's index.
    let batches = batches_from_env(env, &platform, api.clone(), bank, Requeue::Required)?;
    let api_key = crate::banking::api_key(env, &platform).await?;
    Ok(BankEvents {
        batches,
        api,
        bindings: Arc::new(platform.table.clone()),
        api_key,
    })
}

/// The reconciler on real clients (the worker's, and the table's open work).
pub async fn reconciler(env: &Env) -> Result<PayoutsReconciler, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NONE).await?;
    // The reconciler PATCHes statuses, never links: no links base.
    let api = Arc::new(payouts_from_env(env, &platform, String::new()).await?);
    let bank = bank_from_env(env, &platform, &http_client(env)?).await?;
    let table = Arc::new(platform.table.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    Ok(PayoutsReconciler {
        open: table.clone(),
        batches: batches_from_env(env, &platform, api.clone(), bank.clone(), Requeue::IfSet)?,
        onboarding: Onboarding {
            api: api.clone(),
            links: table.clone(),
            clock: clock.clone(),
            link_ttl: TimeDelta::days(7),
            open: table.clone(),
        },
        links: table.clone(),
        api,
        bindings: table,
        consents: bank,
        clock,
        stuck_after: stuck_after(env)?,
    })
}

/// The page on real clients: Payments Out's (`POS_*`), the bank's (`BANK_*`), the table,
/// and the worker's queue.
pub async fn authorise_page(env: &Env) -> Result<AuthorisePage, ConfigError> {
    let platform = Platform::from_env(env, QueueNeeds::NONE).await?;
    let http = http_client(env)?;
    // The page PATCHes decisions, never links: no links base.
    let api = payouts_from_env(env, &platform, String::new()).await?;
    let allow_http_loopback = env.flag("REDIRECT_ALLOW_HTTP_LOOPBACK")?;
    let returns = RedirectAllowList::parse(
        &env.optional("RETURN_HOST_ALLOWLIST")
            .unwrap_or_else(|| "*.intacct.com,*.sage.com".into()),
        allow_http_loopback,
    )
    .map_err(|reason| ConfigError::Invalid {
        name: "RETURN_HOST_ALLOWLIST".into(),
        reason,
    })?;
    let flow = Authorise {
        links: Arc::new(platform.table.clone()),
        bindings: Arc::new(platform.table.clone()),
        bank: bank_from_env(env, &platform, &http).await?,
        api: Arc::new(api),
        queue: payouts_queue(env, &platform)?,
        clock: Arc::new(SystemClock),
        returns,
        bank_name: env
            .optional("BANK_DISPLAY_NAME")
            .unwrap_or_else(|| "your bank".into()),
        patch_attempts: 3,
        patch_pause: Duration::from_millis(300),
        open: Arc::new(platform.table.clone()),
        stuck_after: stuck_after(env)?,
    };
    let pages = PagePolicy {
        frame_ancestors: env
            .optional("FRAME_ANCESTORS")
            .unwrap_or_else(|| "'self' https://*.intacct.com https://*.sage.com".into()),
        allow_http_loopback,
    };
    Ok(AuthorisePage {
        flow,
        pages,
        public_base: crate::banking::public_base(env)?,
    })
}
