//! `connector-ops` as an operator runs it: the built binary as a subprocess, configured only
//! through the environment contract, against a whole local stack (DynamoDB Local, moto, the sandbox, the real
//! function binaries). Each test checks the command's output and the state it leaves behind.
//!
//! Build the function binaries first: `cargo build --workspace --bins`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use connector_aws::Table;
use connector_domain::account::{BackfillState, Claim, ClaimOutcome};
use connector_domain::payouts::notification::PayoutsWork;
use local_stack::stack::{LOCAL_INGEST_KEY, binaries_present, default_bin_dir};
use local_stack::{LocalStack, Options};
use sandbox::SandboxConfig;
use sandbox::model::CreateAccountRequest;
use sandbox::payments_out::client::PoClient;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The stack (the minimum of local/tests/common/mod.rs)

/// One stack at a time: each runs ~20 processes and the machine has 2 cores.
fn slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    SLOTS.get_or_init(|| Arc::new(Semaphore::new(1))).clone()
}

struct TestStack {
    stack: Option<LocalStack>,
    logs: PathBuf,
    _slot: OwnedSemaphorePermit,
}

impl std::ops::Deref for TestStack {
    type Target = LocalStack;
    fn deref(&self) -> &LocalStack {
        self.stack.as_ref().expect("stack is running")
    }
}

impl TestStack {
    async fn start() -> Self {
        let bin_dir = default_bin_dir().expect("bin dir");
        if let Err(missing) = binaries_present(&bin_dir) {
            panic!(
                "function binaries missing in {}: {missing:?}; run `cargo build --workspace --bins` first",
                bin_dir.display()
            );
        }
        let mut o = Options::new(bin_dir);
        o.sandbox = SandboxConfig::fast();
        o.retry_visibility = Some(Duration::from_secs(2));
        // The reconciler stays out of the way: these tests show what the operator's commands do.
        o.schedule_every = Some(Duration::from_secs(3600));
        o.log_dir =
            std::env::temp_dir().join(format!("connector-ops-test-logs-{}", Uuid::new_v4()));
        for (k, v) in [
            ("POLL_FIRST_DELAY_S", "0.2"),
            ("POLL_MAX_DELAY_S", "2"),
            ("RETRY_BASE_DELAY_S", "0.5"),
            ("RETRY_MAX_DELAY_S", "3"),
        ] {
            o.env.insert(k.into(), v.into());
        }
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

    /// Stops the stack; fails if a function made an AWS call its `aws-actions.txt` lacks.
    async fn finish(mut self) {
        if let Some(s) = self.stack.take() {
            let not_permitted = s.calls_not_permitted();
            s.shutdown().await;
            let calls = not_permitted.expect("the functions' aws-actions.txt");
            assert!(
                calls.is_empty(),
                "AWS calls that the functions' roles would refuse: {calls:#?}"
            );
        }
        let _ = std::fs::remove_dir_all(&self.logs);
    }

    fn table(&self) -> Table {
        Table::new(self.dynamodb.clone(), self.table_name.clone())
    }

    fn queue(&self, logical_id: &str) -> String {
        self.queue_urls
            .get(logical_id)
            .cloned()
            .unwrap_or_else(|| panic!("no queue {logical_id}"))
    }

    /// The configuration contract of this stack, as the functions get it.
    fn env(&self) -> BTreeMap<String, String> {
        let cfg = self.sandbox.config();
        let client = cfg
            .clients
            .first()
            .cloned()
            .unwrap_or_else(sandbox::ProviderClient::local);
        let mut env = aws_env(&self.aws_endpoint, &self.aws_access_key);
        for (k, v) in [
            ("TABLE_NAME", self.table_name.clone()),
            ("NOTIFICATIONS_QUEUE_URL", self.queue("NotificationsQueue")),
            ("PUSH_QUEUE_URL", self.queue("PushQueue")),
            ("POLL_QUEUE_URL", self.queue("PollQueue")),
            ("NOTIFICATIONS_DLQ_URL", self.queue("NotificationsDLQ")),
            ("PUSH_DLQ_URL", self.queue("PushDLQ")),
            ("POLL_DLQ_URL", self.queue("PollDLQ")),
            ("PAYOUTS_QUEUE_URL", self.queue("PayoutsQueue")),
            ("PAYOUTS_DLQ_URL", self.queue("PayoutsDLQ")),
            ("BANKING_SERVICE_URL", self.sandbox.base_url()),
            ("SAGE_ID_TOKEN_URL", self.sandbox.token_url()),
            (
                "SAGE_ID_AUDIENCE",
                client
                    .allowed_audiences
                    .first()
                    .cloned()
                    .unwrap_or_default(),
            ),
            ("SAGE_ID_CLIENT_ID", client.client_id.clone()),
            ("SAGE_ID_CLIENT_SECRET", client.client_secret.clone()),
            ("PROVIDER_API_KEY", client.api_key.clone()),
            // The functions' rate (the local stack gives them 1000 when the sandbox has none).
            ("PROVIDER_RATE_LIMIT_RPS", "1000".into()),
        ] {
            env.insert(k.to_string(), v);
        }
        env
    }

    async fn secrets(&self) -> aws_sdk_secretsmanager::Client {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&self.aws_endpoint)
            .region(aws_config::Region::new("eu-west-1"))
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                &self.aws_access_key,
                "local",
                None,
                None,
                "test",
            ))
            .load()
            .await;
        aws_sdk_secretsmanager::Client::new(&sdk)
    }
}

/// Dummy credentials and a loopback endpoint: nothing leaves the machine.
fn aws_env(endpoint: &str, access_key: &str) -> BTreeMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", access_key),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
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

/// Transactions Banking Service holds for an account.
async fn held(stack: &LocalStack, id: Uuid) -> usize {
    stack
        .sandbox
        .client()
        .account(id)
        .await
        .map(|a| a.transaction_count)
        .unwrap_or(0)
}

async fn wait_held(stack: &LocalStack, id: Uuid, n: usize) {
    eventually(&format!("{n} transactions held for {id}"), LONG, || async {
        (held(stack, id).await >= n).then_some(())
    })
    .await;
}

/// The connector committed everything: no claim, nothing pending.
async fn wait_settled(stack: &TestStack, id: Uuid) {
    eventually(
        "the connector commits and releases the account",
        LONG,
        || async { stack.account_settled(id).await.ok()?.then_some(()) },
    )
    .await;
}

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `n`th card payment of 12.34 from an opening balance of 1,000.00 (statements carry the
/// balance after their last transaction).
fn record(unique_id: &str, posted: DateTime<Utc>, n: i64) -> Value {
    let cents = 100_000 - 1_234 * n;
    json!({
        "uniqueId": unique_id,
        "transactionAmount": "-12.34",
        "transactionType": "POS",
        "datePosted": at(posted),
        "description": format!("card payment {unique_id}"),
        "runningBalance": format!("{}.{:02}", cents / 100, cents % 100),
    })
}

async fn ingest(stack: &LocalStack, external_id: &str, records: Vec<Value>) {
    let body = json!({"externalId": external_id, "transactions": records});
    for attempt in 0..5 {
        let r = reqwest::Client::new()
            .post(format!("{}/ingest", stack.api_url))
            .header("x-api-key", LOCAL_INGEST_KEY)
            .json(&body)
            .send()
            .await
            .expect("ingest request");
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap_or(Value::Null);
        if status == 200 {
            assert_eq!(answer["data"]["rejected"], 0, "{answer}");
            return;
        }
        // A 5xx is retried with the same body, as docs/bank-data-api.md tells the bank to.
        assert!(status >= 500, "ingest answered {status}: {answer}");
        tokio::time::sleep(Duration::from_secs(attempt + 1)).await;
    }
    panic!("ingest kept failing");
}

/// A product creates the account; the connector stores it and finishes its backfill.
async fn onboard(stack: &TestStack, external_id: &str) -> Uuid {
    let created = stack
        .sandbox
        .client()
        .create_account(&CreateAccountRequest {
            notify: Some(true),
            ..CreateAccountRequest::new(
                stack.bank_id,
                external_id,
                at(Utc::now() - TimeDelta::days(90)),
            )
        })
        .await
        .expect("create account");
    let id = created.account.bank_account_id;
    let table = stack.table();
    eventually("the connector knows the account", LONG, || async {
        let a = table.get_account(id).await.ok()??;
        (a.backfill == BackfillState::Done).then_some(())
    })
    .await;
    id
}

async fn dlq_depth(stack: &LocalStack, url: &str) -> u64 {
    stack
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("queue attributes")
        .attributes
        .unwrap_or_default()
        .values()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Receives and deletes every visible message of a queue; returns them.
async fn drain(stack: &LocalStack, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let out = stack
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        for m in &messages {
            stack
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
        all.extend(messages);
    }
}

// ---------------------------------------------------------------------------------------------
// The tool

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the built binary with exactly `env` (nothing inherited but PATH), stdin as given (no
/// terminal either way).
async fn ops_with_stdin(env: &BTreeMap<String, String>, args: &[&str], stdin: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_connector-ops"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("run connector-ops");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("connector-ops finished in time")
        .expect("connector-ops output");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(
        !run.stderr.contains("panicked"),
        "connector-ops panicked: {}",
        run.stderr
    );
    run
}

async fn ops(env: &BTreeMap<String, String>, args: &[&str]) -> Run {
    ops_with_stdin(env, args, None).await
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("connector-ops-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_parked_and_repush_an_account() {
    let stack = TestStack::start().await;
    let env = stack.env();
    let table = stack.table();
    let id = onboard(&stack, "acc_OPS01").await;
    let now = Utc::now();

    // Three transactions delivered; then one more than 14 days older than them: parked.
    ingest(
        &stack,
        "acc_OPS01",
        (1..=3)
            .map(|i| record(&format!("ops-{i}"), now - TimeDelta::days(4 - i), i))
            .collect(),
    )
    .await;
    wait_held(&stack, id, 3).await;
    wait_settled(&stack, id).await;
    ingest(
        &stack,
        "acc_OPS01",
        vec![record("ops-old", now - TimeDelta::days(40), 0)],
    )
    .await;
    eventually("the old transaction is parked", LONG, || async {
        let p = table.parked_records(Some(id), 10).await.ok()?;
        (!p.is_empty()).then_some(())
    })
    .await;
    wait_settled(&stack, id).await;

    // show: status, watermark, last success, backfill, no claim, nothing pending, the parked one.
    let shown = ops(&env, &["show", &id.to_string(), "--json"])
        .await
        .ok()
        .json();
    let a = &shown[0];
    assert_eq!(shown.as_array().map(Vec::len), Some(1), "{shown}");
    assert_eq!(a["bankAccountId"], json!(id.to_string()), "{a}");
    assert_eq!(a["externalId"], "acc_OPS01");
    assert_eq!(a["status"], "active", "{a}");
    assert_eq!(a["backfill"], "done", "{a}");
    assert_eq!(a["deliveredCount"], 3, "{a}");
    assert_eq!(a["pendingCount"], 0, "{a}");
    assert!(a["claim"].is_null(), "{a}");
    let stored = table.get_account(id).await.unwrap().unwrap();
    assert_eq!(
        a["deliveredThrough"],
        json!(stored.delivered_through),
        "{a}"
    );
    assert!(a["deliveredThrough"].is_string(), "{a}");
    assert!(a["lastSuccessAt"].is_string(), "{a}");
    assert_eq!(a["parked"][0]["uniqueId"], "ops-old", "{a}");
    assert_eq!(a["parked"][0]["reason"], "TransactionTooOld", "{a}");

    // The same by externalId, as text.
    let text = ops(&env, &["show", "acc_OPS01"]).await.ok().stdout;
    for expected in [
        id.to_string().as_str(),
        "active",
        "nothing (no claim)",
        "0 transactions to deliver",
        "3 transactions",
        "ops-old",
        "TransactionTooOld",
    ] {
        assert!(text.contains(expected), "`{expected}` not in:\n{text}");
    }

    // parked: across accounts (JSON) and for the account (text).
    let parked = ops(&env, &["parked", "--json"]).await.ok().json();
    assert!(
        parked
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["uniqueId"] == "ops-old"
                && p["reason"] == "TransactionTooOld"
                && p["bankAccountId"] == json!(id.to_string())),
        "{parked}"
    );
    let listed = ops(&env, &["parked", "--account", &id.to_string()])
        .await
        .ok()
        .stdout;
    assert!(
        listed.contains("ops-old") && listed.contains("TransactionTooOld"),
        "{listed}"
    );
    assert!(
        ops(&env, &["parked", "--limit", "0", "--json"])
            .await
            .ok()
            .json()
            == json!([])
    );

    // A lost wake-up: new work arrives but its kick never reaches the pusher.
    stack.set_source_paused("PushQueue", true).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    ingest(
        &stack,
        "acc_OPS01",
        vec![
            record("ops-4", now - TimeDelta::hours(12), 4),
            record("ops-5", now - TimeDelta::hours(11), 5),
        ],
    )
    .await;
    let lost = drain(&stack, &stack.queue("PushQueue")).await;
    assert!(
        !lost.is_empty(),
        "the ingest's kick was not in the push queue"
    );
    stack.set_source_paused("PushQueue", false).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(held(&stack, id).await, 3, "delivered without a wake-up");

    // repush wakes it up: the pending work is delivered.
    let repushed = ops(&env, &["repush", &id.to_string()]).await.ok();
    assert!(
        repushed.stdout.contains("Kicked account"),
        "{}",
        repushed.all()
    );
    wait_held(&stack, id, 5).await;
    wait_settled(&stack, id).await;

    // A stale claim: its pusher died long ago, before it armed the claim's watchdog. The push
    // queue's consumer is held back while the operator looks, so that nothing moves meanwhile.
    let dead_pusher = |token: &str| -> Claim {
        serde_json::from_value(json!({
            "token": token,
            "phase": "posting",
            "kind": "transactions",
            "since": at(Utc::now() - TimeDelta::hours(2)),
        }))
        .unwrap()
    };
    let stuck = dead_pusher("claim-of-a-dead-pusher");
    assert!(matches!(
        table.claim_account(id, &stuck).await.unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    stack.set_source_paused("PushQueue", true).unwrap();
    ingest(
        &stack,
        "acc_OPS01",
        vec![
            record("ops-6", now - TimeDelta::hours(5), 6),
            record("ops-7", now - TimeDelta::hours(4), 7),
        ],
    )
    .await;
    let shown = ops(&env, &["show", &id.to_string(), "--json"])
        .await
        .ok()
        .json();
    let claim = &shown[0]["claim"];
    assert_eq!(claim["stale"], true, "{claim}");
    assert_eq!(claim["phase"], "posting", "{claim}");
    assert_eq!(claim["kind"], "transactions", "{claim}");
    assert_eq!(claim["failedSubmissions"], 0, "{claim}");
    assert_eq!(shown[0]["pendingCount"], 2, "{}", shown[0]);

    // A plain repush says what the kick does: it arms the claim's watchdog, which takes the
    // claim over; the pending work is delivered without clearing anything.
    let warned = ops(&env, &["repush", &id.to_string()]).await.ok();
    assert!(
        warned.stdout.contains("stale claim") && warned.stdout.contains("watchdog"),
        "{}",
        warned.all()
    );
    stack.set_source_paused("PushQueue", false).unwrap();
    wait_held(&stack, id, 7).await;
    wait_settled(&stack, id).await;

    // The same again with the pusher down (its queue's consumer held back): the operator
    // clears the claim.
    stack.set_source_paused("PushQueue", true).unwrap();
    let stuck = dead_pusher("claim-of-another-dead-pusher");
    assert!(matches!(
        table.claim_account(id, &stuck).await.unwrap(),
        ClaimOutcome::Claimed(_)
    ));
    ingest(
        &stack,
        "acc_OPS01",
        vec![
            record("ops-8", now - TimeDelta::hours(3), 8),
            record("ops-9", now - TimeDelta::hours(2), 9),
        ],
    )
    .await;

    // Clearing is destructive: without a terminal and without --yes it is refused.
    let refused = ops(&env, &["repush", &id.to_string(), "--clear-claim"]).await;
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains("--yes"), "{}", refused.all());
    let still = table.get_account(id).await.unwrap().unwrap();
    assert_eq!(
        still.in_flight.map(|c| c.token).as_deref(),
        Some("claim-of-another-dead-pusher")
    );

    // The table only clears the claim exactly as it was seen: one that moved on stays.
    let mut moved_on = stuck.clone();
    moved_on.attempt = 1;
    assert!(!table.clear_claim(id, &moved_on).await.unwrap());
    assert!(
        table
            .get_account(id)
            .await
            .unwrap()
            .unwrap()
            .in_flight
            .is_some()
    );

    // With --yes the claim goes and the pending work is delivered.
    let cleared = ops(
        &env,
        &[
            "repush",
            &id.to_string(),
            "--clear-claim",
            "--yes",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(cleared["claimCleared"], true, "{cleared}");
    assert_eq!(cleared["kicked"], true, "{cleared}");
    stack.set_source_paused("PushQueue", false).unwrap();
    wait_held(&stack, id, 9).await;
    wait_settled(&stack, id).await;
    let shown = ops(&env, &["show", &id.to_string(), "--json"])
        .await
        .ok()
        .json();
    assert_eq!(shown[0]["deliveredCount"], 9, "{shown}");
    assert!(shown[0]["claim"].is_null(), "{shown}");

    let stored = stack
        .sandbox
        .client()
        .stored_transactions(id)
        .await
        .unwrap();
    assert_eq!(stored.len(), 9, "each transaction once");
    let violations = stack.sandbox.client().violations().await.unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_bank_sync_and_rotate_secret() {
    let stack = TestStack::start().await;
    let mut env = stack.env();
    let dir = temp_dir();

    // ---- redrive push: a poison kick in the push DLQ goes back to the FIFO queue.
    let push = stack.queue("PushQueue");
    let push_dlq = stack.queue("PushDLQ");
    stack.set_source_paused("PushQueue", true).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let account = Uuid::new_v4();
    let body = json!({"bankAccountId": account, "reason": "operator"}).to_string();
    stack
        .sqs
        .send_message()
        .queue_url(&push_dlq)
        .message_body(&body)
        .message_group_id(account.to_string())
        .message_deduplication_id("original-dedup")
        .message_attributes(
            "poisonReason",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value("retried 5 times: table unavailable")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("put a message into the DLQ");

    let dry = ops(&env, &["redrive", "push", "--dry-run", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(dry["wouldMove"], 1, "{dry}");
    let listed = &dry["messages"][0];
    assert_eq!(listed["group"], json!(account.to_string()), "{dry}");
    assert_eq!(
        listed["poisonReason"], "retried 5 times: table unavailable",
        "{dry}"
    );
    assert_eq!(listed["body"], json!(body), "{dry}");
    assert_eq!(
        dlq_depth(&stack, &push_dlq).await,
        1,
        "a dry run moved something"
    );
    assert_eq!(
        dlq_depth(&stack, &push).await,
        0,
        "a dry run moved something"
    );
    let text = ops(&env, &["redrive", "push", "--dry-run"])
        .await
        .ok()
        .stdout;
    assert!(
        text.contains("nothing moved") && text.contains(&account.to_string()),
        "{text}"
    );

    let refused = ops(&env, &["redrive", "push"]).await;
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains("--yes"), "{}", refused.all());
    assert_eq!(dlq_depth(&stack, &push_dlq).await, 1);

    let moved = ops(&env, &["redrive", "push", "--yes"]).await.ok();
    assert!(
        moved.stdout.contains("Moved 1 message from the push DLQ"),
        "{}",
        moved.all()
    );
    assert_eq!(dlq_depth(&stack, &push_dlq).await, 0);
    let back = drain(&stack, &push).await;
    assert_eq!(back.len(), 1);
    let m = &back[0];
    assert_eq!(m.body(), Some(body.as_str()));
    let attrs = m.attributes().cloned().unwrap_or_default();
    assert_eq!(
        attrs.get(&MessageSystemAttributeName::MessageGroupId),
        Some(&account.to_string())
    );
    let dedup = attrs.get(&MessageSystemAttributeName::MessageDeduplicationId);
    assert!(dedup.is_some_and(|d| d != "original-dedup"), "{dedup:?}");
    assert!(
        m.message_attributes()
            .is_none_or(|a| !a.contains_key("poisonReason")),
        "{m:?}"
    );
    stack.set_source_paused("PushQueue", false).unwrap();

    // ---- redrive payouts: a delivery po-worker does not handle yet goes back to its queue
    // (standard, as the notifications queue), held back from po-worker while we look.
    let payouts = stack.queue("PayoutsQueue");
    let payouts_dlq = stack.queue("PayoutsDLQ");
    stack.set_source_paused("PayoutsQueue", true).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let work = PayoutsWork::Notification {
        key: "creditorputs#ops-creditor-1".into(),
        kind: "creditorputs".into(),
        id: "ops-creditor-1".into(),
        subscription_id: Some(Uuid::new_v4()),
        organisation_id: None,
        application: Some("sage.intacct".into()),
        correlation_id: Some("ops-corr-1".into()),
        data: json!({"creditor": {"name": "Northwind Supplies"}}),
        received_at: Utc::now(),
    };
    let body = serde_json::to_string(&work).unwrap();
    let reason = "NotYetHandled: creditorputs (creditorputs#ops-creditor-1); redrive once the worker handles it";
    stack
        .sqs
        .send_message()
        .queue_url(&payouts_dlq)
        .message_body(&body)
        .message_attributes(
            "poisonReason",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(reason)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("put a message into the payouts DLQ");

    let dry = ops(&env, &["redrive", "payouts", "--dry-run", "--json"])
        .await
        .ok()
        .json();
    assert_eq!(dry["queue"], "payouts", "{dry}");
    assert_eq!(dry["source"], json!(payouts), "{dry}");
    assert_eq!(dry["wouldMove"], 1, "{dry}");
    let listed = &dry["messages"][0];
    assert!(
        listed["group"].is_null(),
        "a standard queue has no group: {dry}"
    );
    assert_eq!(listed["poisonReason"], reason, "{dry}");
    assert!(
        body.starts_with(listed["body"].as_str().unwrap().trim_end_matches('…')),
        "{dry}"
    );
    let text = ops(&env, &["redrive", "payouts", "--dry-run"])
        .await
        .ok()
        .stdout;
    assert!(
        text.contains("nothing moved") && text.contains("NotYetHandled: creditorputs"),
        "{text}"
    );
    assert_eq!(
        dlq_depth(&stack, &payouts_dlq).await,
        1,
        "a dry run moved it"
    );
    assert_eq!(dlq_depth(&stack, &payouts).await, 0, "a dry run moved it");

    let refused = ops(&env, &["redrive", "payouts"]).await;
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert_eq!(dlq_depth(&stack, &payouts_dlq).await, 1);

    let moved = ops(&env, &["redrive", "payouts", "--yes"]).await.ok();
    assert!(
        moved
            .stdout
            .contains("Moved 1 message from the payouts DLQ"),
        "{}",
        moved.all()
    );
    assert_eq!(dlq_depth(&stack, &payouts_dlq).await, 0);
    let back = drain(&stack, &payouts).await;
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].body(), Some(body.as_str()));
    let redelivered: PayoutsWork = serde_json::from_str(back[0].body().unwrap()).unwrap();
    assert_eq!(redelivered, work);
    assert!(
        back[0]
            .message_attributes()
            .is_none_or(|a| !a.contains_key("poisonReason")),
        "{:?}",
        back[0]
    );
    stack.set_source_paused("PayoutsQueue", false).unwrap();

    // ---- secrets in moto's Secrets Manager.
    let secrets = stack.secrets().await;
    let create = |name: &str, value: &str| {
        let secrets = secrets.clone();
        let (name, value) = (name.to_string(), value.to_string());
        async move {
            secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .send()
                .await
                .expect("create secret")
                .arn
                .expect("arn")
        }
    };
    let read = |arn: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .expect("read secret")
                .secret_string
                .unwrap_or_default()
        }
    };
    // Bank Sync reads the Sage ID client secret through its ARN, as the functions can.
    let sage_secret = env["SAGE_ID_CLIENT_SECRET"].clone();
    let sage_arn = create("connector/test/sage-client-secret", &sage_secret).await;
    env.insert("SAGE_ID_CLIENT_SECRET".into(), sage_arn.clone());

    // ---- bank-sync: an invalid file is refused with each problem at its place.
    let client = stack.sandbox.client();
    let banks_before = client.banks().await.unwrap().len();
    let callbacks = json!({
        "auth": format!("{}/auth", stack.api_url),
        "reAuth": format!("{}/authrefresh", stack.api_url),
        "notification": format!("{}/notification", stack.api_url),
        "availableAccounts": format!("{}/availableaccounts", stack.api_url),
    });
    let bank = |name: &str, r: &str| {
        json!({"name": name, "countryCode": "GB", "url": "https://ops-bank.example",
               "supportiframe": true, "externalRef": r, "callbackURLs": callbacks})
    };
    let one = bank("Ops Bank One", "ops-bank-1");
    let two = bank("Ops Bank Two", "ops-bank-2");
    let mut broken = two.clone();
    broken["countryCode"] = json!("G1");
    broken["callbackURLs"]
        .as_object_mut()
        .unwrap()
        .remove("reAuth");
    let bad_file = write(&dir, "bad.json", &json!([one, broken]).to_string());
    let invalid = ops(&env, &["bank-sync", "create", "--file", &bad_file, "--yes"]).await;
    assert_eq!(invalid.code, 2, "{}", invalid.all());
    assert!(
        invalid
            .stderr
            .contains("banks[1] (\"Ops Bank Two\").countryCode: must be 2 or 3 letters"),
        "{}",
        invalid.all()
    );
    assert!(
        invalid
            .stderr
            .contains("banks[1] (\"Ops Bank Two\").callbackURLs.reAuth: is required"),
        "{}",
        invalid.all()
    );
    assert_eq!(
        client.banks().await.unwrap().len(),
        banks_before,
        "sent anyway"
    );

    // A dry run sends nothing; the real run registers both banks.
    let good_file = write(&dir, "banks.json", &json!([one, two]).to_string());
    let dry = ops(
        &env,
        &["bank-sync", "create", "--file", &good_file, "--dry-run"],
    )
    .await
    .ok();
    assert!(dry.stdout.contains("nothing sent"), "{}", dry.all());
    assert_eq!(client.banks().await.unwrap().len(), banks_before);
    let created = ops(
        &env,
        &[
            "bank-sync",
            "create",
            "--file",
            &good_file,
            "--yes",
            "--json",
        ],
    )
    .await
    .ok()
    .json();
    let results = created["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2, "{created}");
    let banks = client.banks().await.unwrap();
    for (r, name, external_ref) in [
        (&results[0], "Ops Bank One", "ops-bank-1"),
        (&results[1], "Ops Bank Two", "ops-bank-2"),
    ] {
        assert_eq!(r["outcome"], "created", "{created}");
        let id: Uuid = r["principalId"].as_str().unwrap().parse().unwrap();
        let b = banks
            .iter()
            .find(|b| b.principal_id == id)
            .unwrap_or_else(|| panic!("{id} not registered: {banks:?}"));
        assert_eq!(b.name, name);
        assert_eq!(b.external_ref, external_ref);
        assert_eq!(
            b.callback_urls.re_auth,
            format!("{}/authrefresh", stack.api_url)
        );
        assert!(!b.removed);
    }

    // remove is destructive: refused without --yes, done with it.
    let removed_id = results[1]["principalId"].as_str().unwrap().to_string();
    let remove_file = write(
        &dir,
        "remove.json",
        &json!([{"principalId": removed_id, "externalRef": "ops-bank-2"}]).to_string(),
    );
    let refused = ops(&env, &["bank-sync", "remove", "--file", &remove_file]).await;
    assert_eq!(refused.code, 2, "{}", refused.all());
    let is_removed = |banks: &[sandbox::model::BankView]| {
        banks
            .iter()
            .any(|b| b.principal_id.to_string() == removed_id && b.removed)
    };
    assert!(!is_removed(&client.banks().await.unwrap()));
    let done = ops(
        &env,
        &["bank-sync", "remove", "--file", &remove_file, "--yes"],
    )
    .await
    .ok();
    assert!(done.stdout.contains("removed"), "{}", done.all());
    assert!(is_removed(&client.banks().await.unwrap()));

    // An update of a bank Banking Service does not know fails, saying which banks were not done.
    let unknown_file = write(
        &dir,
        "unknown.json",
        &json!([{"principalId": Uuid::new_v4(), "name": "Renamed"}]).to_string(),
    );
    let unknown = ops(
        &env,
        &["bank-sync", "update", "--file", &unknown_file, "--yes"],
    )
    .await;
    assert_eq!(unknown.code, 1, "{}", unknown.all());
    assert!(
        unknown.stdout.contains("banks[0]: not done") && unknown.stderr.contains("(404)"),
        "{}",
        unknown.all()
    );

    // ---- rotate-secret: the secret gets the new value, which is never printed.
    let key_arn = create("connector/test/provider-api-key", "old-api-key").await;
    env.insert("PROVIDER_API_KEY".into(), key_arn.clone());
    let new_value = "rotated-api-key-7f3c9a";
    let value_file = write(&dir, "new-key.txt", &format!("{new_value}\n"));
    let refused = ops(
        &env,
        &[
            "rotate-secret",
            "provider-api-key",
            "--value-file",
            &value_file,
        ],
    )
    .await;
    assert_eq!(refused.code, 2, "{}", refused.all());
    assert!(refused.stderr.contains("--yes"), "{}", refused.all());
    assert_eq!(read(key_arn.clone()).await, "old-api-key");
    let rotated = ops(
        &env,
        &[
            "rotate-secret",
            "provider-api-key",
            "--value-file",
            &value_file,
            "--yes",
        ],
    )
    .await
    .ok();
    assert!(!rotated.all().contains(new_value), "{}", rotated.all());
    assert!(
        rotated.stdout.contains("PROVIDER_API_KEY"),
        "{}",
        rotated.all()
    );
    assert_eq!(read(key_arn.clone()).await, new_value);

    // From standard input, for the bank client secret.
    let bank_arn = create("connector/test/bank-client-secret", "old-bank-secret").await;
    env.insert("BANK_CLIENT_SECRET".into(), bank_arn.clone());
    let rotated = ops_with_stdin(
        &env,
        &[
            "rotate-secret",
            "bank-client-secret",
            "--value-stdin",
            "--yes",
            "--json",
        ],
        Some("new-bank-secret\n"),
    )
    .await
    .ok();
    assert!(
        !rotated.all().contains("new-bank-secret"),
        "{}",
        rotated.all()
    );
    assert_eq!(rotated.json()["secretArn"], json!(bank_arn));
    assert_eq!(read(bank_arn).await, "new-bank-secret");

    // Payments Out's API key, by its own name.
    let pos_arn = create("connector/test/pos-api-key", "old-pos-key").await;
    env.insert("POS_API_KEY".into(), pos_arn.clone());
    let rotated = ops_with_stdin(
        &env,
        &[
            "rotate-secret",
            "payouts-api-key",
            "--value-stdin",
            "--yes",
            "--json",
        ],
        Some("new-pos-key\n"),
    )
    .await
    .ok();
    assert_eq!(rotated.json()["variable"], json!("POS_API_KEY"));
    assert_eq!(read(pos_arn).await, "new-pos-key");

    // A variable holding the value itself (not an ARN) is refused, naming the variable.
    let mut plain = env.clone();
    plain.insert("PROVIDER_API_KEY".into(), "a-plain-key".into());
    let not_arn = ops(
        &plain,
        &[
            "rotate-secret",
            "provider-api-key",
            "--value-file",
            &value_file,
            "--yes",
        ],
    )
    .await;
    assert_eq!(not_arn.code, 2, "{}", not_arn.all());
    assert!(
        not_arn.stderr.contains("PROVIDER_API_KEY")
            && not_arn.stderr.contains("not a Secrets Manager ARN"),
        "{}",
        not_arn.all()
    );
    assert!(!not_arn.all().contains("a-plain-key"));

    let _ = std::fs::remove_dir_all(&dir);
    stack.finish().await;
}

/// Payments Out as the operator sees it: a subscription authorised through its link with one
/// debtor account, and a batch of one good payment and one Sage's checks would refuse (let
/// through with the sandbox's `x-sim-skip-validation`), paid through to `PartiallyPaid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_subscription_and_batch() {
    let stack = TestStack::start().await;
    let env = stack.env();
    let po = PoClient::new(stack.sandbox.base_url());
    let (sub, debtor) = local_stack::payments_out::payer(&stack, &po)
        .await
        .expect("an authorised subscription with a debtor account");
    let binding = stack.table().binding(sub).await.unwrap().expect("bound");

    // ---- payouts subscription: the used link and its decision, the binding, the account.
    let shown = ops(
        &env,
        &["payouts", "subscription", &sub.to_string(), "--json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(shown["subscriptionId"], json!(sub.to_string()), "{shown}");
    let link = &shown["link"];
    assert_eq!(link["state"], "used", "{shown}");
    assert_eq!(link["used"], true, "{shown}");
    assert!(
        link["linkId"].is_string() && link["expiresAt"].is_string(),
        "{shown}"
    );
    assert_eq!(link["decision"]["status"], "Authorised", "{shown}");
    assert_eq!(link["paymentsOutHasDecision"], true, "{shown}");
    assert_eq!(
        shown["binding"]["consentId"],
        json!(binding.consent_id),
        "{shown}"
    );
    assert_eq!(
        shown["binding"]["customerId"],
        json!(binding.customer_id),
        "{shown}"
    );
    let accounts = shown["debtorAccounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{shown}");
    assert_eq!(accounts[0]["debtorAccountId"], json!(debtor), "{shown}");
    assert_eq!(accounts[0]["status"], "Active", "{shown}");
    assert_eq!(accounts[0]["currency"], "USD", "{shown}");

    let text = ops(&env, &["payouts", "subscription", &sub.to_string()])
        .await
        .ok()
        .stdout;
    for expected in [
        sub.to_string().as_str(),
        "used",
        "Authorised",
        "yes (PATCHed)",
        binding.consent_id.as_str(),
        debtor.as_str(),
        "Active",
        "USD",
    ] {
        assert!(text.contains(expected), "`{expected}` not in:\n{text}");
    }

    // ---- a batch: one payment paid, one rejected by the connector's checks.
    let tomorrow = (Utc::now() + TimeDelta::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let batch = json!({ "externalId": "OPS-RUN-1", "subscriptionId": sub, "payments": [
        local_stack::payments_out::payment("OPS-BILL-1", "12.50", &debtor, &tomorrow),
        local_stack::payments_out::payment("OPS-BILL-2", "0", &debtor, &tomorrow),
    ]});
    let submitted = po
        .submit_batch(&batch, Some("ops-run-1"), true)
        .await
        .unwrap();
    assert_eq!(submitted.status, 201, "{submitted:?}");
    let batch_id = submitted.body["data"]["batchId"]
        .as_str()
        .unwrap()
        .to_string();
    local_stack::payments_out::batch_at_sage(&po, &batch_id, &["PartiallyPaid"])
        .await
        .unwrap();

    // The table notes that Payments Out has each status just after the PATCH Sage shows.
    let shown = eventually(
        "every payment recorded as at Payments Out",
        LONG,
        || async {
            let v = ops(&env, &["payouts", "batch", &batch_id, "--json"])
                .await
                .ok()
                .json();
            (v["paymentsPatched"] == 2).then_some(v)
        },
    )
    .await;
    assert_eq!(shown["batchId"], json!(batch_id), "{shown}");
    assert_eq!(shown["status"], "Processing", "{shown}");
    assert_eq!(shown["finalStatus"], "PartiallyPaid", "{shown}");
    assert_eq!(shown["paymentCount"], 2, "{shown}");
    assert_eq!(shown["subscriptionId"], json!(sub.to_string()), "{shown}");
    assert!(shown["checkedAt"].is_string(), "{shown}");
    // The reconciler (on an hourly schedule here) has not closed it yet.
    assert_eq!(shown["reconciler"]["watched"], true, "{shown}");
    assert!(shown["reconciler"]["dueAt"].is_string(), "{shown}");
    let payments = shown["payments"].as_array().unwrap();
    assert_eq!(payments.len(), 2, "{shown}");
    let paid = payments
        .iter()
        .find(|p| p["status"] == "Paid")
        .expect("a Paid payment");
    assert_eq!(paid["submitted"], true, "{shown}");
    assert!(paid["completedAt"].is_string(), "{shown}");
    assert!(paid["eventSeq"].as_u64().is_some_and(|s| s > 0), "{shown}");
    let rejected = payments
        .iter()
        .find(|p| p["status"] == "Rejected")
        .expect("a Rejected payment");
    assert_eq!(rejected["reason"], "ValidationFailed: amount", "{shown}");
    assert_eq!(rejected["submitted"], false, "{shown}");

    let text = ops(&env, &["payouts", "batch", &batch_id])
        .await
        .ok()
        .stdout;
    for expected in [
        batch_id.as_str(),
        "Processing (as checked)",
        "PartiallyPaid",
        "Paid",
        "Rejected",
        "ValidationFailed: amount",
        "watched by po-reconciler",
        paid["paymentId"].as_str().unwrap(),
    ] {
        assert!(text.contains(expected), "`{expected}` not in:\n{text}");
    }

    // ---- unknown ids: a clear message and exit code 1; not a UUID: exit code 2.
    for what in ["subscription", "batch"] {
        let unknown = Uuid::new_v4().to_string();
        let run = ops(&env, &["payouts", what, &unknown]).await;
        assert_eq!(run.code, 1, "{what}: {}", run.all());
        assert!(
            run.stderr
                .contains(&format!("no Payments Out {what} {unknown}")),
            "{what}: {}",
            run.all()
        );
        assert!(run.stdout.is_empty(), "{what}: {}", run.all());
        let run = ops(&env, &["payouts", what, "not-a-uuid", "--json"]).await;
        assert_eq!(run.code, 2, "{what}: {}", run.all());
        assert!(run.stderr.contains("not a"), "{what}: {}", run.all());
    }

    assert_eq!(po.violations().await.unwrap(), json!([]));
    stack.finish().await;
}

/// Without a stack: configuration errors and refusals happen before anything is contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configuration_and_no_terminal_are_refused_with_exit_code_2() {
    let dir = temp_dir();
    // Nothing listens on port 9 of loopback: any network call would fail, not succeed.
    let aws = aws_env("http://127.0.0.1:9", "local");

    let cases: [(&[&str], BTreeMap<String, String>, &str); 6] = [
        (&["show", "acc_X"], BTreeMap::new(), "TABLE_NAME"),
        (
            &["repush", "6269cfb9-922c-4023-833d-97586646fad1"],
            [("TABLE_NAME".to_string(), "t".to_string())].into(),
            "PUSH_QUEUE_URL",
        ),
        (
            &["redrive", "poll", "--dry-run"],
            aws.clone(),
            "POLL_QUEUE_URL",
        ),
        (
            &["redrive", "payouts", "--dry-run"],
            aws.clone(),
            "PAYOUTS_QUEUE_URL",
        ),
        (
            &["payouts", "batch", "6269cfb9-922c-4023-833d-97586646fad1"],
            aws.clone(),
            "TABLE_NAME",
        ),
        (
            &["rotate-secret", "sage-id-client-secret", "--value-stdin"],
            aws.clone(),
            "SAGE_ID_CLIENT_SECRET",
        ),
    ];
    for (args, env, variable) in cases {
        let run = ops(&env, args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stderr.contains(variable), "{args:?}: {}", run.all());
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "one line: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let banks = write(&dir, "banks.json", "[]");
    let run = ops(&BTreeMap::new(), &["bank-sync", "create", "--file", &banks]).await;
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("no banks"), "{}", run.all());

    // Destructive without a terminal and without --yes: refused before any call.
    let mut env = aws.clone();
    env.insert(
        "PROVIDER_API_KEY".into(),
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:connector/key-AbCdEf".into(),
    );
    let value = write(&dir, "value.txt", "new\n");
    let run = ops(
        &env,
        &["rotate-secret", "provider-api-key", "--value-file", &value],
    )
    .await;
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(
        run.stderr.contains("no terminal") && run.stderr.contains("--yes"),
        "{}",
        run.all()
    );

    // On a terminal (a pseudo-terminal from util-linux `script`) it asks; "n" stops it, "y"
    // goes on to Secrets Manager (here: nothing listening, so the call fails with exit 1).
    let command = format!(
        "'{}' rotate-secret provider-api-key --value-file '{value}'",
        env!("CARGO_BIN_EXE_connector-ops")
    );
    for (answer, code) in [("n", 2), ("y", 1)] {
        let mut script = tokio::process::Command::new("script");
        script
            .args(["-qec", &command, "/dev/null"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = script
            .spawn()
            .expect("util-linux `script` runs the tool on a pseudo-terminal");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .await
            .expect("answer");
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("finished in time")
            .expect("output");
        drop(stdin);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Proceed? [y/N]"), "{answer}: {text}");
        assert_eq!(out.status.code(), Some(code), "{answer}: {text}");
        if answer == "n" {
            assert!(text.contains("not confirmed"), "{text}");
        } else {
            assert!(text.contains("PutSecretValue"), "{text}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
