//! Shared set-up of the integration tests: a whole local stack per test.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use connector_aws::Table;
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
    o.sandbox = sandbox;
    o.retry_visibility = Some(Duration::from_secs(2));
    o.schedule_every = Some(Duration::from_secs(3600));
    o.log_dir = std::env::temp_dir().join(format!("connector-test-logs-{}", uuid::Uuid::new_v4()));
    for (k, v) in [
        ("POLL_FIRST_DELAY_S", "0.2"),
        ("POLL_MAX_DELAY_S", "2"),
        ("RETRY_BASE_DELAY_S", "0.5"),
        ("RETRY_MAX_DELAY_S", "3"),
    ] {
        o.env.insert(k.into(), v.into());
    }
    o
}

pub async fn start(sandbox: SandboxConfig) -> LocalStack {
    let o = options(sandbox);
    let logs = o.log_dir.clone();
    match LocalStack::start(o).await {
        Ok(s) => s,
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
