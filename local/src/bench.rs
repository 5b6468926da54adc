//! The statement pipeline's throughput benchmark: the sandbox limited to Sage's default rate,
//! several accounts with a backlog, and the figures that say how close the connector gets to
//! what the rate allows.
//!
//! Bound: every statement costs one POST plus its polls, so at `rps` requests per second at
//! most `1000 × rps / (1 + polls per statement)` transactions per second can be delivered.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;

use crate::stack::{LOCAL_INGEST_KEY, LocalStack};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub accounts: usize,
    pub transactions: usize,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub rps: f64,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub statements: usize,
    pub polls_per_statement: f64,
    pub rate_limited: u64,
    pub provider_requests: u64,
    pub seconds: f64,
    pub delivered_per_second: f64,
    /// While the backlog goes from 25 % to 75 % delivered: the pipeline's pace once it is full,
    /// without the first round trip's latency and the last statements' tail.
    pub sustained_per_second: f64,
    /// Provider API requests per second over the delivery, against the `rps` allowed.
    pub provider_rps_used: f64,
    pub bound_per_second: f64,
    /// `(seconds since release, transactions committed)` every half second.
    pub samples: Vec<(f64, f64)>,
    /// Each statement's time from `POST` to its last status change (Banking Service's view).
    pub statement_seconds: Vec<f64>,
    /// Where the plots were written.
    pub plots: Vec<std::path::PathBuf>,
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// The whole run (accounts, notifications, ingest, delivery): AWS requests by operation.
    pub aws: BTreeMap<String, crate::meter::OperationCount>,
    /// Per function: invocations, billed milliseconds, memory (MB), log bytes written.
    pub lambda: BTreeMap<String, LambdaUsage>,
    /// Requests the API gateway served (ingest, notifications).
    pub api_requests: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LambdaUsage {
    pub invocations: u64,
    pub billed_ms: u64,
    pub memory_mb: u64,
    pub log_bytes: u64,
}

fn log_sizes(stack: &LocalStack) -> BTreeMap<String, u64> {
    stack
        .functions
        .iter()
        .map(|(name, f)| {
            let size = std::fs::metadata(f.log_file()).map_or(0, |m| m.len());
            (name.clone(), size)
        })
        .collect()
}

fn usage(stack: &LocalStack) -> BTreeMap<String, (u64, u64)> {
    stack
        .functions
        .iter()
        .map(|(name, f)| (name.clone(), f.usage()))
        .collect()
}

/// Peak resident set (VmHWM) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Exact cents as the API's decimal text (`-12.05`).
pub(crate) fn amount_text(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// Transaction `i` of an account: deterministic amounts in exact cents, one a minute.
fn record(i: usize, tag: &str, start: DateTime<Utc>, balance: &mut i64) -> serde_json::Value {
    let cents = match ((i as i64 * 7919) % 40_000) - 15_000 {
        0 => 1,
        c => c,
    };
    *balance += cents;
    json!({
        "uniqueId": format!("{tag}-{i:06}"),
        "transactionAmount": amount_text(cents),
        "transactionType": if cents < 0 { "DEBIT" } else { "CREDIT" },
        "datePosted": (start + TimeDelta::seconds(60 * i as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "runningBalance": amount_text(*balance),
    })
}

pub async fn run(stack: &LocalStack, o: &BenchOptions) -> Result<BenchReport> {
    let client = stack.sandbox.client();
    let http = reqwest::Client::new();
    let logs_before = log_sizes(stack);
    let usage_before = usage(stack);
    let aws_before = stack.aws_usage();
    let rps = stack.sandbox.config().ratelimit_rate_per_s;
    if rps <= 0.0 {
        bail!("the benchmark needs the sandbox's rate limit on");
    }
    // Accounts created as a product would, each notified to the connector.
    let mut accounts = Vec::new();
    for a in 0..o.accounts {
        let external = format!("acc_BENCH{a:03}");
        let created = client
            .create_account(&sandbox::model::CreateAccountRequest::new(
                stack.bank_id,
                external.clone(),
                "2026-01-01T00:00:00.000Z",
            ))
            .await
            .map_err(|e| anyhow!("{e}"))?;
        accounts.push((external, created.account.bank_account_id));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    if o.progress {
        println!(
            "==> Ingesting {} transactions for each of {} accounts",
            o.transactions, o.accounts
        );
    }
    let start = Utc
        .with_ymd_and_hms(2026, 6, 1, 0, 0, 0)
        .single()
        .ok_or_else(|| anyhow!("date"))?;
    let total = o.transactions * o.accounts;
    // The backlog builds up first (the push queue's mapping disabled), then drains: the figure
    // is the pipeline's, not the ingest's.
    stack.set_source_paused("PushQueue", true)?;
    let ingest_started = Instant::now();
    let mut balances = vec![0i64; accounts.len()];
    for chunk_start in (0..o.transactions).step_by(250) {
        for ((external, _), balance) in accounts.iter().zip(balances.iter_mut()) {
            let records: Vec<_> = (chunk_start..(chunk_start + 250).min(o.transactions))
                .map(|i| record(i, external, start, balance))
                .collect();
            let answer = http
                .post(format!("{}/ingest", stack.api_url))
                .header("x-api-key", LOCAL_INGEST_KEY)
                .json(&json!({"externalId": external, "transactions": records}))
                .send()
                .await?;
            if !answer.status().is_success() {
                bail!("ingest answered {}", answer.status());
            }
        }
    }
    if o.progress {
        println!(
            "    ingested in {:.1} s; delivering",
            ingest_started.elapsed().as_secs_f64()
        );
    }
    stack.set_source_paused("PushQueue", false)?;
    let started = Instant::now();

    let requests_at_release = provider_requests_so_far(stack).await?;
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut peak: BTreeMap<String, u64> = BTreeMap::new();
    let limit = Duration::from_secs(1800);
    let table = connector_aws::Table::new(stack.dynamodb.clone(), stack.table_name.clone());
    loop {
        // Done when the connector has committed every success (not merely when Banking
        // Service stored them): that is when the next batch could go.
        // All accounts read at once, so that a sample is one instant, not a sweep.
        let counts =
            futures::future::join_all(accounts.iter().map(|(_, id)| table.get_account(*id))).await;
        let held: usize = counts
            .into_iter()
            .filter_map(|a| Some(a.ok()??.delivered_count as usize))
            .sum();
        for (name, f) in &stack.functions {
            for pid in f.pids() {
                if let Some(kib) = peak_rss_kib(pid) {
                    let e = peak.entry(name.clone()).or_default();
                    *e = (*e).max(kib);
                }
            }
        }
        samples.push((started.elapsed().as_secs_f64(), held as f64));
        if o.progress {
            print!("\r    delivered {held}/{total}   ");
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
        if held >= total {
            break;
        }
        if started.elapsed() > limit {
            bail!("only {held} of {total} delivered after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let delivery_time = started.elapsed().as_secs_f64();
    let requests_in_delivery = provider_requests_so_far(stack).await? - requests_at_release;
    if o.progress {
        println!();
    }
    if let Some(kib) = stack.sqs_pid().and_then(peak_rss_kib) {
        peak.insert("SQS emulator".into(), kib);
    }
    if let Some(kib) = peak_rss_kib(std::process::id()) {
        peak.insert("local stack + sandbox".into(), kib);
    }

    // What a product sees, and the timing of the statements.
    let mut delivered = 0;
    let mut duplicated = 0;
    let mut statements = Vec::new();
    for (_, id) in &accounts {
        let stored = client
            .stored_transactions(*id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let unique: std::collections::HashSet<_> =
            stored.iter().map(|t| t.unique_id.clone()).collect();
        duplicated += stored.len() - unique.len();
        delivered += unique.len();
        statements.extend(
            client
                .statements(Some(*id))
                .await
                .map_err(|e| anyhow!("{e}"))?,
        );
    }
    let seconds = delivery_time;
    let polls: u64 = statements.iter().map(|s| s.poll_count).sum();
    let polls_per_statement = polls as f64 / statements.len().max(1) as f64;
    let metrics = client.metrics().await.map_err(|e| anyhow!("{e}"))?;
    let provider_requests: u64 = metrics
        .requests
        .iter()
        .filter(|r| r.route.contains("/v1/"))
        .map(|r| r.count)
        .sum();
    let per_second = delivered as f64 / seconds.max(0.001);
    let logs_after = log_sizes(stack);
    let usage_after = usage(stack);
    let mut lambda = BTreeMap::new();
    for (name, f) in &stack.functions {
        let (i1, ms1) = usage_after.get(name).copied().unwrap_or_default();
        let (i0, ms0) = usage_before.get(name).copied().unwrap_or_default();
        lambda.insert(
            name.clone(),
            LambdaUsage {
                invocations: i1 - i0,
                billed_ms: ms1 - ms0,
                memory_mb: f.memory_mb(),
                log_bytes: logs_after.get(name).copied().unwrap_or(0)
                    - logs_before.get(name).copied().unwrap_or(0),
            },
        );
    }
    let mut aws = stack.aws_usage();
    for (op, c) in aws.iter_mut() {
        if let Some(b) = aws_before.get(op) {
            *c = c.since(b);
        }
    }
    let api_requests = [
        "ingest",
        "notification",
        "auth",
        "authrefresh",
        "availableaccounts",
    ]
    .iter()
    .filter_map(|f| lambda.get(*f))
    .map(|u: &LambdaUsage| u.invocations)
    .sum();
    // Full statements are the bound's premise; with a partial one, the mean actually sent.
    let per_statement = (delivered as f64 / statements.len().max(1) as f64).min(1000.0);
    let bound = per_statement * rps / (1.0 + polls_per_statement.max(1.0));
    // Steady state: while the backlog goes from a quarter to three quarters delivered, the
    // pipeline is full at both ends (no first round trip to wait for, no tail to drain).
    let crossing = |share: f64| {
        samples
            .iter()
            .find(|s| s.1 >= share * total as f64)
            .copied()
    };
    let sustained = match (crossing(0.25), crossing(0.75)) {
        (Some((t0, n0)), Some((t1, n1))) if t1 > t0 => (n1 - n0) / (t1 - t0),
        _ => per_second,
    };
    let statement_seconds: Vec<f64> = statements
        .iter()
        .filter_map(|s| {
            let created = DateTime::parse_from_rfc3339(&s.created_date).ok()?;
            let done = DateTime::parse_from_rfc3339(&s.status_modified_date).ok()?;
            Some((done - created).num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    let plot_dir = crate::plot::bench_dir();
    let throughput_svg = plot_dir.join("pipeline-backlog.svg");
    crate::plot::throughput(
        &throughput_svg,
        &format!(
            "Backlog: {} accounts x {} transactions, sandbox at {rps} requests/s",
            o.accounts, o.transactions
        ),
        (
            "seconds since the backlog was released",
            "transactions delivered per second",
        ),
        &crate::plot::rates(&samples, 2.0),
        bound,
    )?;
    let latency_svg = plot_dir.join("pipeline-backlog-statements.svg");
    crate::plot::latency(
        &latency_svg,
        "Backlog: seconds from a statement's POST to its final status",
        &statement_seconds,
        20,
    )?;
    Ok(BenchReport {
        rps,
        delivered,
        lost: total.saturating_sub(delivered),
        duplicated,
        statements: statements.len(),
        polls_per_statement,
        rate_limited: metrics.rate_limited,
        provider_requests,
        seconds,
        delivered_per_second: per_second,
        sustained_per_second: sustained,
        provider_rps_used: requests_in_delivery as f64 / seconds.max(0.001),
        bound_per_second: bound,
        samples,
        statement_seconds,
        plots: vec![throughput_svg, latency_svg],
        peak_rss_kib: peak,
        aws,
        lambda,
        api_requests,
    })
}

/// Provider API requests Banking Service has answered so far (429s included).
async fn provider_requests_so_far(stack: &LocalStack) -> Result<u64> {
    let metrics = stack
        .sandbox
        .client()
        .metrics()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    Ok(metrics
        .requests
        .iter()
        .filter(|r| r.route.contains("/v1/"))
        .map(|r| r.count)
        .sum())
}

pub fn print(r: &BenchReport) {
    println!(
        "Statement pipeline benchmark (sandbox at {} requests/s)",
        r.rps
    );
    println!(
        "  delivered                 {} (lost {}, duplicated {})",
        r.delivered, r.lost, r.duplicated
    );
    println!(
        "  statements                {} ({:.2} polls per statement)",
        r.statements, r.polls_per_statement
    );
    println!(
        "  Provider API requests     {} ({} answered 429)",
        r.provider_requests, r.rate_limited
    );
    println!(
        "  delivery time             {:.1} s (backlog released to last commit)",
        r.seconds
    );
    println!(
        "  throughput                {:.0} transactions/s = {:.1} % of the bound {:.0} = 1000 x {} / (1 + {:.2})",
        r.delivered_per_second,
        100.0 * r.delivered_per_second / r.bound_per_second,
        r.bound_per_second,
        r.rps,
        r.polls_per_statement.max(1.0)
    );
    println!(
        "  steady state (25 % -> 75 % delivered) {:.0} transactions/s = {:.1} % of the bound",
        r.sustained_per_second,
        100.0 * r.sustained_per_second / r.bound_per_second
    );
    println!(
        "  Provider API rate used      {:.2} requests/s of the {} allowed ({:.1} %)",
        r.provider_rps_used,
        r.rps,
        100.0 * r.provider_rps_used / r.rps
    );
    let mut secs = r.statement_seconds.clone();
    secs.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (secs.first(), secs.last()) {
        println!(
            "  statement POST -> final     median {:.1} s, min {first:.1} s, max {last:.1} s",
            secs[secs.len() / 2]
        );
    }
    println!(
        "  target: >= 90 % of the bound, <= 1.2 polls per statement, 0 x 429, 0 lost: {}",
        if r.delivered_per_second >= 0.9 * r.bound_per_second
            && r.polls_per_statement <= 1.2
            && r.rate_limited == 0
            && r.lost == 0
        {
            "met"
        } else {
            "missed"
        }
    );
    for p in &r.plots {
        println!("  plot: {}", p.display());
    }
    println!("  peak memory (VmHWM)");
    for (name, kib) in &r.peak_rss_kib {
        println!("    {name:<26} {:>7.1} MiB", *kib as f64 / 1024.0);
    }
    if !r.aws.is_empty() {
        println!("  AWS requests of the run (accounts, ingest, delivery)");
        for (op, c) in &r.aws {
            println!(
                "    {op:<34} {:>8}  avg request {:>6.0} B, answer {:>6.0} B",
                c.requests,
                c.request_bytes as f64 / c.requests.max(1) as f64,
                c.response_bytes as f64 / c.requests.max(1) as f64
            );
        }
        println!("  Lambda (invocations, billed duration in the local stack, log bytes)");
        for (name, u) in &r.lambda {
            println!(
                "    {name:<26} {:>7} invocations {:>9.1} s  {:>5} MB  {:>9} log bytes",
                u.invocations,
                u.billed_ms as f64 / 1000.0,
                u.memory_mb,
                u.log_bytes
            );
        }
        println!(
            "  cost per million delivered transactions (list prices, us-east-1; docs/cost.md)"
        );
        let lines = cost_per_million(r);
        for l in &lines {
            println!(
                "    {:<28} {:>14.1} {:<12} ${:>8.3}",
                l.item, l.quantity, l.unit, l.usd
            );
        }
        println!(
            "    {:<28} {:>14} {:<12} ${:>8.3}",
            "total",
            "",
            "",
            lines.iter().map(|l| l.usd).sum::<f64>()
        );
    }
}

/// On-demand list prices (USD, us-east-1, as published in 2026; docs/cost.md cites them).
pub struct Prices {
    pub dynamodb_per_million_wru: f64,
    pub dynamodb_per_million_rru: f64,
    pub sqs_standard_per_million: f64,
    pub sqs_fifo_per_million: f64,
    pub lambda_per_million_requests: f64,
    pub lambda_arm64_per_gb_second: f64,
    pub http_api_per_million: f64,
    pub logs_ingested_per_gb: f64,
}

pub const PRICES: Prices = Prices {
    dynamodb_per_million_wru: 0.625,
    dynamodb_per_million_rru: 0.125,
    sqs_standard_per_million: 0.40,
    sqs_fifo_per_million: 0.50,
    lambda_per_million_requests: 0.20,
    lambda_arm64_per_gb_second: 0.000_013_333_4,
    http_api_per_million: 1.00,
    logs_ingested_per_gb: 0.50,
};

/// One line of the cost model: a quantity per million delivered transactions and its price.
#[derive(Debug, Clone)]
pub struct CostLine {
    pub item: String,
    pub quantity: f64,
    pub unit: &'static str,
    pub usd: f64,
}

/// Cost per million delivered transactions from the run's counts. DynamoDB units are
/// estimated from body sizes (the emulators report no real consumed capacity): a write costs one unit
/// per KiB of item (a transaction put also writes the `pending` index), an update is priced at
/// the size of the account item (the average GetItem answer), reads at 4 KiB per unit,
/// strongly consistent.
pub fn cost_per_million(r: &BenchReport) -> Vec<CostLine> {
    let scale = 1_000_000.0 / r.delivered.max(1) as f64;
    let op = |name: &str| r.aws.get(name).copied().unwrap_or_default();
    let avg = |bytes: u64, n: u64| bytes as f64 / n.max(1) as f64;
    let kib_units = |bytes: f64, unit: f64| (bytes / unit).ceil().max(1.0);
    let put = op("DynamoDB.PutItem");
    let update = op("DynamoDB.UpdateItem");
    let delete = op("DynamoDB.DeleteItem");
    let get = op("DynamoDB.GetItem");
    let account_item = avg(get.response_bytes, get.requests);
    let wru = put.requests as f64 * (kib_units(avg(put.request_bytes, put.requests), 1024.0) + 1.0)
        + update.requests as f64 * kib_units(account_item, 1024.0)
        + delete.requests as f64;
    let mut rru = get.requests as f64 * kib_units(account_item, 4096.0);
    for name in ["DynamoDB.Query", "DynamoDB.Scan"] {
        let q = op(name);
        rru += q.requests as f64 + q.response_bytes as f64 / 4096.0;
    }
    let (mut sqs_standard, mut sqs_fifo) = (0u64, 0u64);
    for (name, c) in &r.aws {
        if name.starts_with("SQS.") {
            if name.ends_with("(FIFO)") {
                sqs_fifo += c.requests;
            } else {
                sqs_standard += c.requests;
            }
        }
    }
    let invocations: u64 = r.lambda.values().map(|u| u.invocations).sum();
    let gb_seconds: f64 = r
        .lambda
        .values()
        .map(|u| u.billed_ms as f64 / 1000.0 * u.memory_mb as f64 / 1024.0)
        .sum();
    let log_gb = r.lambda.values().map(|u| u.log_bytes).sum::<u64>() as f64 / 1e9;
    let p = &PRICES;
    let line = |item: &str, quantity: f64, unit: &'static str, price_per: f64| CostLine {
        item: item.into(),
        quantity: quantity * scale,
        unit,
        usd: quantity * scale * price_per,
    };
    vec![
        line(
            "DynamoDB writes",
            wru,
            "WRU",
            p.dynamodb_per_million_wru / 1e6,
        ),
        line(
            "DynamoDB reads",
            rru,
            "RRU",
            p.dynamodb_per_million_rru / 1e6,
        ),
        line(
            "SQS standard requests",
            sqs_standard as f64,
            "requests",
            p.sqs_standard_per_million / 1e6,
        ),
        line(
            "SQS FIFO requests",
            sqs_fifo as f64,
            "requests",
            p.sqs_fifo_per_million / 1e6,
        ),
        line(
            "Lambda requests",
            invocations as f64,
            "invocations",
            p.lambda_per_million_requests / 1e6,
        ),
        line(
            "Lambda compute (arm64)",
            gb_seconds,
            "GB-s",
            p.lambda_arm64_per_gb_second,
        ),
        line(
            "API Gateway HTTP API",
            r.api_requests as f64,
            "requests",
            p.http_api_per_million / 1e6,
        ),
        line(
            "CloudWatch Logs ingestion",
            log_gb,
            "GB",
            p.logs_ingested_per_gb,
        ),
    ]
}
