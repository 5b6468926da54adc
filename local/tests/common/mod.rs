//! Shared set-up of the integration tests: a whole local stack per test.

#![allow(dead_code)]

pub mod browser;

use std::future::Future;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use clap::ValueEnum;
use connector_aws::Table;
use local_stack::fauxqs::SqsEmulator;
use local_stack::stack::{LOCAL_INGEST_KEY, binaries_present, default_bin_dir};
use local_stack::{LocalStack, Options};
use sandbox::SandboxConfig;

/// Options for a test stack: fast sandbox, quick retries, reconciler effectively off.
pub fn options(sandbox: SandboxConfig) -> Options {
    let bin_dir = default_bin_dir().expect("bin dir");
    if let Err(missing) = binaries_present(&bin_dir) {
        panic!(
            "function binaries missing in {}: {missing:?}; run `cargo build --bins` first \
             (`cargo xtask test` does it)",
            bin_dir.display()
        );
    }
    let mut o = Options::new(bin_dir);
    // As Sage runs: its default rate limit (10 requests/s), and notifications that leave out
    // optional fields now and then (any `additionalData` field may be missing).
    let mut sandbox = sandbox;
    if sandbox.ratelimit_rate_per_s == 0.0 {
        sandbox.ratelimit_rate_per_s = 10.0;
        sandbox.ratelimit_burst = 10;
    }
    if sandbox.notification_omit_optional_rate == 0.0 {
        sandbox = sandbox.omitting_optional_fields(0.5);
    }
    o.sandbox = sandbox;
    o.sqs = sqs_emulator();
    o.retry_visibility = Some(Duration::from_secs(2));
    o.schedule_every = Some(Duration::from_secs(3600));
    o.log_dir = std::env::temp_dir().join(format!("connector-test-logs-{}", uuid::Uuid::new_v4()));
    for (k, v) in [
        ("POLL_FIRST_DELAY_S", "0.2"),
        ("POLL_MAX_DELAY_S", "2"),
        ("RETRY_BASE_DELAY_S", "0.5"),
        ("RETRY_MAX_DELAY_S", "3"),
        ("POSTING_STALE_AFTER_S", "10"),
    ] {
        o.env.insert(k.into(), v.into());
    }
    o
}

/// The SQS emulator of the tests: moto, unless `CONNECTOR_SQS_EMULATOR=fauxqs` asks for the
/// benchmarks' other one (to check that it keeps the guarantees the pipeline relies on).
pub fn sqs_emulator() -> SqsEmulator {
    match std::env::var("CONNECTOR_SQS_EMULATOR") {
        Err(_) => SqsEmulator::Moto,
        Ok(name) => SqsEmulator::from_str(&name, true)
            .unwrap_or_else(|e| panic!("CONNECTOR_SQS_EMULATOR={name}: {e} (moto or fauxqs)")),
    }
}

/// Two stacks at a time per test binary: each runs ~20 processes and this machine has 2 cores.
pub fn slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(Semaphore::new(2))).clone()
}

/// A running stack for one test; `finish` stops it and removes its logs (kept on failure).
pub struct TestStack {
    stack: Option<LocalStack>,
    logs: PathBuf,
    _slot: OwnedSemaphorePermit,
}

impl Deref for TestStack {
    type Target = LocalStack;
    fn deref(&self) -> &LocalStack {
        self.stack.as_ref().expect("stack is running")
    }
}

impl TestStack {
    /// Everything the functions logged so far.
    pub fn log_text(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
        {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        all
    }

    /// Stops the stack, then fails the test if a function made an AWS call that its
    /// `aws-actions.txt` (the list its role is checked against) lacks.
    pub async fn finish(mut self) {
        if let Some(s) = self.stack.take() {
            let not_permitted = s.calls_not_permitted();
            s.shutdown().await;
            match not_permitted {
                Ok(calls) => assert!(
                    calls.is_empty(),
                    "AWS calls that the functions' roles would refuse: {calls:#?}"
                ),
                Err(e) => panic!("reading the functions' aws-actions.txt: {e:#}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }
}

pub async fn start(sandbox: SandboxConfig) -> TestStack {
    start_with(options(sandbox)).await
}

pub async fn start_with(o: Options) -> TestStack {
    let slot = slots().acquire_owned().await.expect("semaphore");
    let logs = o.log_dir.clone();
    match LocalStack::start(o).await {
        Ok(s) => TestStack {
            stack: Some(s),
            logs,
            _slot: slot,
        },
        Err(e) => panic!(
            "local stack did not start: {e:#} (logs in {})",
            logs.display()
        ),
    }
}

pub fn table(stack: &LocalStack) -> Table {
    Table::new(stack.dynamodb.clone(), stack.table_name.clone())
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if started.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Posts an ingest body as the bank would.
pub async fn ingest(stack: &LocalStack, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/ingest", stack.api_url))
        .header("x-api-key", LOCAL_INGEST_KEY)
        .json(body)
        .send()
        .await
        .expect("ingest request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// `POST /ingest` the way docs/bank-data-api.md §3 tells a bank to: a 5xx (the function timed
/// out on a loaded emulator, say) is retried with the same body, which ingest's idempotence on
/// `uniqueId` makes safe. Returns the final answer and how many attempts failed.
pub async fn ingest_retrying(
    stack: &LocalStack,
    body: &serde_json::Value,
) -> (u16, serde_json::Value, u32) {
    let mut failed = 0;
    loop {
        let (status, answer) = ingest(stack, body).await;
        if status < 500 || failed >= 5 {
            return (status, answer, failed);
        }
        failed += 1;
        eprintln!("ingest answered {status}; retrying ({failed})");
        tokio::time::sleep(Duration::from_secs(u64::from(failed))).await;
    }
}

/// Transactions Banking Service holds for an account.
pub async fn held(stack: &LocalStack, id: uuid::Uuid) -> usize {
    stack
        .sandbox
        .client()
        .account(id)
        .await
        .map(|a| a.transaction_count)
        .unwrap_or(0)
}

pub async fn wait_held(stack: &LocalStack, id: uuid::Uuid, n: usize, limit: Duration) {
    let started = Instant::now();
    while held(stack, id).await < n {
        if started.elapsed() > limit {
            diagnose(stack).await;
            panic!(
                "timed out after {limit:?}: {} of {n} transactions held for {id}",
                held(stack, id).await
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Prints the state of the queues and of every account's claim, for a failing test.
pub async fn diagnose(stack: &LocalStack) {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    for (name, url) in &stack.queue_urls {
        if let Ok(out) = stack
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(A::All)
            .send()
            .await
        {
            let a = out.attributes.unwrap_or_default();
            let get = |k: A| a.get(&k).cloned().unwrap_or_default();
            eprintln!(
                "queue {name}: visible {} in flight {} delayed {}",
                get(A::ApproximateNumberOfMessages),
                get(A::ApproximateNumberOfMessagesNotVisible),
                get(A::ApproximateNumberOfMessagesDelayed)
            );
        }
    }
    for (queue, stats) in &stack.source_stats {
        eprintln!("event source {queue}: {stats:?}");
    }
    if let Ok(accounts) = table(stack).accounts().await {
        for a in accounts {
            let pending = table(stack)
                .count_pending(a.bank_account_id, a.delivered_through.as_deref())
                .await
                .unwrap_or(0);
            eprintln!(
                "account {} {:?} pending {pending} delivered {} fences {:?} claim {:?}",
                a.bank_account_id,
                a.status,
                a.delivered_count,
                a.ingesting,
                a.in_flight.map(|c| (
                    c.phase.name(),
                    c.kind,
                    c.statement_id().map(str::to_string),
                    c.attempt,
                    c.poll_attempt(),
                    c.since
                ))
            );
        }
    }
}

/// Pushes the bank's transactions for `external_id` to `/ingest`.
pub async fn push_bank_transactions(
    stack: &LocalStack,
    external_id: &str,
    txns: &[sandbox::bank::BankTransaction],
) -> serde_json::Value {
    let records: Vec<serde_json::Value> = txns
        .iter()
        .filter(|t| t.status == "booked")
        .map(local_stack::demo::ingest_record)
        .collect();
    let (status, body) = ingest(
        stack,
        &serde_json::json!({"externalId": external_id, "transactions": records}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `GET /availableaccounts` with a token variant minted by the sandbox.
pub async fn available_accounts_raw(
    stack: &LocalStack,
    external_id: &str,
    variant: sandbox::TokenVariant,
) -> (u16, serde_json::Value) {
    let token = stack
        .sandbox
        .client()
        .mint_notification_token(variant)
        .await
        .expect("mint token");
    let mut req = reqwest::Client::new()
        .get(format!("{}/availableaccounts", stack.api_url))
        .query(&[("externalId", external_id)]);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("availableaccounts");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Transactions the connector still has to deliver for an account (after its watermark).
pub async fn pending_at_connector(stack: &LocalStack, id: uuid::Uuid) -> u64 {
    let t = table(stack);
    let watermark = t
        .get_account(id)
        .await
        .ok()
        .flatten()
        .and_then(|a| a.delivered_through);
    t.count_pending(id, watermark.as_deref())
        .await
        .unwrap_or(u64::MAX)
}

/// Every Embedded Metric Format document in the functions' logs, each checked for the shape
/// CloudWatch requires: the metric named in `_aws` is a top-level member, and so is each
/// dimension.
pub fn emf_points(logs: &str) -> Vec<serde_json::Value> {
    let mut points = Vec::new();
    for line in logs.lines() {
        let Some(start) = line.find('{') else {
            continue;
        };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line[start..]) else {
            continue;
        };
        let Some(meta) = doc["_aws"]["CloudWatchMetrics"].get(0) else {
            continue;
        };
        assert_eq!(meta["Namespace"], "SageBankingConnector");
        for m in meta["Metrics"].as_array().expect("Metrics") {
            let name = m["Name"].as_str().expect("metric name");
            assert!(
                connector_metrics::NAMES.contains(&name),
                "{name} is emitted but not listed in metrics::NAMES"
            );
            assert!(doc[name].is_number(), "{name} has no value in {doc}");
        }
        for d in meta["Dimensions"][0].as_array().expect("Dimensions") {
            let d = d.as_str().expect("dimension name");
            assert!(doc[d].is_string(), "dimension {d} missing in {doc}");
        }
        points.push(doc);
    }
    points
}

/// Every call gets a rate slot (the shared limiter is tested with the Banking Service client).
pub struct FreeLimiter;

impl connector_domain::ports::RateLimiter for FreeLimiter {
    fn acquire(
        &self,
        _: Duration,
    ) -> connector_domain::ports::BoxFuture<'_, Result<bool, connector_domain::ports::PortError>>
    {
        Box::pin(async { Ok(true) })
    }
}

/// The Payments Out client of the sandbox's local provider (its Sage ID client and API key).
pub fn payouts_api(
    sandbox: &sandbox::Sandbox,
    public_base_url: &str,
) -> connector_sage::PayoutsApi {
    use connector_sage::{
        PayoutsApi, PayoutsPaths, ProviderApi, ProviderConfig, SageIdConfig, Secret, TokenProvider,
        TokenStyle,
    };
    let defaults = &sandbox::payments_out::defaults::API_KEY;
    let http = reqwest::Client::new();
    let tokens = Arc::new(TokenProvider::new(
        http.clone(),
        SageIdConfig {
            token_url: sandbox.token_url(),
            client_id: sandbox::config::local::CLIENT_ID.into(),
            client_secret: Secret::new(sandbox::config::local::CLIENT_SECRET),
            audience: sandbox::payments_out::defaults::AUDIENCE.into(),
            refresh_margin: Duration::from_secs(300),
            style: TokenStyle::Form,
        },
        None,
    ));
    let core = ProviderApi::new(
        http,
        ProviderConfig {
            base_url: sandbox.base_url(),
            api_key: Secret::new(*defaults),
            max_rate_wait: Duration::from_secs(5),
        },
        tokens,
        Arc::new(FreeLimiter),
    );
    PayoutsApi::new(
        core,
        PayoutsPaths {
            public_base_url: public_base_url.to_string(),
            ..PayoutsPaths::default()
        },
    )
}

/// A product's new subscription at the sandbox's Payments Out (Sage then delivers it to the
/// connector): its id.
pub async fn po_subscription(
    po: &sandbox::payments_out::client::PoClient,
    organisation: uuid::Uuid,
    additional_data: Option<&str>,
) -> uuid::Uuid {
    local_stack::payments_out::new_subscription(po, organisation, additional_data)
        .await
        .unwrap()
}

/// The subscription at Sage once it has `status`.
pub async fn po_at_sage(
    po: &sandbox::payments_out::client::PoClient,
    id: uuid::Uuid,
    status: &str,
) -> serde_json::Value {
    local_stack::payments_out::subscription_at_sage(po, id, status)
        .await
        .unwrap()
}

/// A new subscription's authorisation link, once the worker has PATCHed it into Sage.
pub async fn po_new_link(
    po: &sandbox::payments_out::client::PoClient,
    org: uuid::Uuid,
) -> (uuid::Uuid, String) {
    local_stack::payments_out::new_link(po, org).await.unwrap()
}

/// A subscription the customer `demo` has authorised at the demo bank, through the link.
pub async fn po_authorised(
    stack: &LocalStack,
    po: &sandbox::payments_out::client::PoClient,
    org: uuid::Uuid,
) -> (uuid::Uuid, connector_domain::payouts::authorise::Binding) {
    local_stack::payments_out::authorised(stack, po, org)
        .await
        .unwrap()
}

/// The product's inbox entries answering `correlation_id`, once there are `n`.
pub async fn po_answers(
    po: &sandbox::payments_out::client::PoClient,
    correlation_id: &str,
    n: usize,
) -> Vec<serde_json::Value> {
    local_stack::payments_out::answers(po, correlation_id, n)
        .await
        .unwrap()
}

/// An authorised subscription with one `Active` debtor account of the consent in USD, funded:
/// the subscription and the `debtorAccountId`.
pub async fn po_payer(
    stack: &LocalStack,
    po: &sandbox::payments_out::client::PoClient,
) -> (uuid::Uuid, String) {
    local_stack::payments_out::payer(stack, po).await.unwrap()
}
