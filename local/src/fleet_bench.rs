//! The fleet benchmark: a bank's day in miniature. Thousands of accounts each receive a trickle
//! of transactions (Poisson arrivals, a few a minute), so that the offered load exceeds what
//! Sage's rate allows and the pipeline must coalesce: each account's next statement carries
//! everything that arrived while its previous one was in flight.
//!
//! Bound, in statements: every statement costs one POST plus its polls, so at `rps` requests
//! per second at most `rps / (1 + polls per statement)` statements per second succeed. Serving
//! every account once then takes at least `accounts / bound` seconds (the rate limit's cycle),
//! which is the queueing delay an arrival can be made to wait.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, Utc};
use rand::{RngExt, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use crate::bench::amount_text;
use crate::stack::{LOCAL_INGEST_KEY, LocalStack};
use crate::stats::{parse_time, quantile_sorted};

#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub accounts: usize,
    /// Mean transactions per account per minute.
    pub per_minute: f64,
    /// How long transactions arrive.
    pub seconds: u64,
    /// Statements that succeed before this (seconds from the first arrival) are the warm-up:
    /// they are counted in the plot, not in the steady-state rate.
    pub warmup: u64,
    /// Ingest requests in flight at once (the bank's sender).
    pub senders: usize,
    pub seed: u64,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct FleetReport {
    pub options: FleetOptions,
    pub rps: f64,
    pub sent: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub statements: usize,
    pub polls_per_statement: f64,
    pub rate_limited: u64,
    /// Statements per second the rate allows: `rps / (1 + polls per statement)`.
    pub bound: f64,
    /// Statements succeeded per second between the warm-up and the last arrival.
    pub steady_statements_per_second: f64,
    /// Arrivals offered, in transactions per second.
    pub offered_per_second: f64,
    /// Mean transactions per statement in the steady-state window.
    pub transactions_per_statement: f64,
    /// `accounts / bound`: the rate limit's cycle, the queueing delay it forces.
    pub cycle_seconds: f64,
    /// Ingest accepted → its statement `succeeded` at Banking Service, every transaction.
    pub latency: Vec<f64>,
    /// Per account, its longest such wait.
    pub worst_account: f64,
    /// How late the bank's sender was against the arrival schedule (p99, seconds).
    pub sender_lag_p99: f64,
    pub drain_seconds: f64,
    pub plots: Vec<std::path::PathBuf>,
}

/// Every arrival of the run: `(seconds from the start, account index)`, in time order.
fn schedule(o: &FleetOptions) -> Vec<(f64, usize)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(o.seed);
    let rate = o.per_minute / 60.0;
    let mut arrivals = Vec::new();
    for account in 0..o.accounts {
        let mut t = 0.0;
        loop {
            // Exponential gaps: a Poisson process per account.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            t += -u.ln() / rate;
            if t >= o.seconds as f64 {
                break;
            }
            arrivals.push((t, account));
        }
    }
    arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
    arrivals
}

/// Creates the accounts at the sandbox (each notified to the connector) and waits until the
/// connector knows every one, so that no ingest meets an unknown account.
async fn open_accounts(stack: &LocalStack, o: &FleetOptions) -> Result<Vec<(String, Uuid)>> {
    let client = stack.sandbox.client();
    let mut accounts = Vec::new();
    for a in 0..o.accounts {
        let external = format!("acc_FLEET{a:05}");
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
    let table = connector_aws::Table::new(stack.dynamodb.clone(), stack.table_name.clone());
    let started = Instant::now();
    let mut missing: Vec<Uuid> = accounts.iter().map(|(_, id)| *id).collect();
    while !missing.is_empty() {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("{} accounts still unknown to the connector", missing.len());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let known = futures::future::join_all(missing.iter().map(|id| table.get_account(*id)));
        let known: Vec<bool> = known
            .await
            .into_iter()
            .map(|a| matches!(a, Ok(Some(_))))
            .collect();
        missing = missing
            .into_iter()
            .zip(known)
            .filter(|(_, k)| !k)
            .map(|(id, _)| id)
            .collect();
        if o.progress {
            println!(
                "    {} of {} accounts connected ({:.0} s)",
                o.accounts - missing.len(),
                o.accounts,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(accounts)
}

/// What the bank's sender did: when each transaction was accepted, and how late it went.
struct Sent {
    accepted_at: HashMap<String, DateTime<Utc>>,
    lag: Vec<f64>,
}

/// Sends every arrival at its time (at most `senders` in flight), one transaction per request,
/// dated when it arrives. A refused ingest stops the run: the figures would not be the
/// pipeline's.
async fn send(stack: &LocalStack, o: &FleetOptions, accounts: &[(String, Uuid)]) -> Result<Sent> {
    let arrivals = schedule(o);
    if o.progress {
        println!(
            "==> {} transactions arriving over {} s ({:.1} per s)",
            arrivals.len(),
            o.seconds,
            arrivals.len() as f64 / o.seconds as f64
        );
    }
    let http = reqwest::Client::new();
    let sent = Arc::new(Mutex::new(Sent {
        accepted_at: HashMap::new(),
        lag: Vec::new(),
    }));
    let gate = Arc::new(tokio::sync::Semaphore::new(o.senders.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut balances = vec![0i64; accounts.len()];
    let mut last_report = 0;
    for (n, (at, account)) in arrivals.iter().enumerate() {
        let due = Duration::from_secs_f64(*at);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let permit = gate.clone().acquire_owned().await?;
        let lag = started.elapsed().as_secs_f64() - at;
        let (external, _) = &accounts[*account];
        let cents = ((n as i64 * 7919) % 40_000) - 15_000;
        let cents = if cents == 0 { 1 } else { cents };
        balances[*account] += cents;
        let unique = format!("{external}-{n:07}");
        let record = json!({
            "uniqueId": unique,
            "transactionAmount": amount_text(cents),
            "transactionType": if cents < 0 { "DEBIT" } else { "CREDIT" },
            "datePosted": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "runningBalance": amount_text(balances[*account]),
        });
        let request = http
            .post(format!("{}/ingest", stack.api_url))
            .header("x-api-key", LOCAL_INGEST_KEY)
            .json(&json!({"externalId": external, "transactions": [record]}));
        let sent = sent.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let answer = request.send().await?;
            if !answer.status().is_success() {
                bail!("ingest answered {}", answer.status());
            }
            let mut s = sent.lock().map_err(|_| anyhow!("poisoned"))?;
            s.accepted_at.insert(unique, Utc::now());
            s.lag.push(lag);
            Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
        let second = started.elapsed().as_secs();
        if o.progress && second >= last_report + 30 {
            last_report = second;
            println!("    {second} s: {} sent", n + 1);
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let sent = Arc::try_unwrap(sent)
        .map_err(|_| anyhow!("a sender still runs"))?
        .into_inner()
        .map_err(|_| anyhow!("poisoned"))?;
    Ok(sent)
}

pub async fn run(stack: &LocalStack, o: &FleetOptions) -> Result<FleetReport> {
    let client = stack.sandbox.client();
    let rps = stack.sandbox.config().ratelimit_rate_per_s;
    if rps <= 0.0 {
        bail!("the benchmark needs the sandbox's rate limit on");
    }
    if o.progress {
        println!("==> Connecting {} accounts", o.accounts);
    }
    let accounts = open_accounts(stack, o).await?;
    let first_arrival = Utc::now();
    let sent = send(stack, o, &accounts).await?;
    let arrivals_ended = Utc::now();

    // Drained when Banking Service holds every transaction sent.
    if o.progress {
        println!("==> Draining");
    }
    let drain_started = Instant::now();
    let (stored, statements) = loop {
        let stored = stored_transactions(stack, &accounts).await?;
        let held: usize = stored.values().map(Vec::len).sum();
        if o.progress {
            println!(
                "    {held} of {} at Banking Service",
                sent.accepted_at.len()
            );
        }
        if held >= sent.accepted_at.len() {
            break (
                stored,
                client.statements(None).await.map_err(|e| anyhow!("{e}"))?,
            );
        }
        if drain_started.elapsed() > Duration::from_secs(1800) {
            bail!("only {held} of {} delivered", sent.accepted_at.len());
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    report(
        stack,
        o,
        rps,
        Window {
            first_arrival,
            arrivals_ended,
        },
        sent,
        stored,
        statements,
        drain_seconds,
    )
    .await
}

struct Window {
    first_arrival: DateTime<Utc>,
    arrivals_ended: DateTime<Utc>,
}

async fn stored_transactions(
    stack: &LocalStack,
    accounts: &[(String, Uuid)],
) -> Result<BTreeMap<Uuid, Vec<sandbox::model::StoredTransaction>>> {
    let client = stack.sandbox.client();
    let mut out = BTreeMap::new();
    for (_, id) in accounts {
        let stored = client
            .stored_transactions(*id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        out.insert(*id, stored);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn report(
    stack: &LocalStack,
    o: &FleetOptions,
    rps: f64,
    window: Window,
    sent: Sent,
    stored: BTreeMap<Uuid, Vec<sandbox::model::StoredTransaction>>,
    statements: Vec<sandbox::model::StatementView>,
    drain_seconds: f64,
) -> Result<FleetReport> {
    let ours: HashSet<Uuid> = stored.keys().copied().collect();
    let statements: Vec<_> = statements
        .into_iter()
        .filter(|s| ours.contains(&s.principal_id))
        .collect();
    let succeeded: HashMap<Uuid, DateTime<Utc>> = statements
        .iter()
        .filter(|s| s.status == sandbox::model::StatementStatus::Succeeded)
        .filter_map(|s| Some((s.id, parse_time(&s.status_modified_date)?)))
        .collect();
    let polls: u64 = statements.iter().map(|s| s.poll_count).sum();
    let polls_per_statement = polls as f64 / statements.len().max(1) as f64;
    let bound = rps / (1.0 + polls_per_statement.max(1.0));

    // Latency of every transaction, and each account's worst.
    let mut latency = Vec::new();
    let mut worst_account: f64 = 0.0;
    let mut delivered = 0;
    let mut duplicated = 0;
    for transactions in stored.values() {
        let unique: HashSet<_> = transactions.iter().map(|t| &t.unique_id).collect();
        duplicated += transactions.len() - unique.len();
        delivered += unique.len();
        for t in transactions {
            let (Some(accepted), Some(done)) = (
                sent.accepted_at.get(&t.unique_id),
                t.statement_id.and_then(|s| succeeded.get(&s)),
            ) else {
                continue;
            };
            let wait = (*done - *accepted).num_milliseconds().max(0) as f64 / 1000.0;
            worst_account = worst_account.max(wait);
            latency.push(wait);
        }
    }
    latency.sort_by(f64::total_cmp);

    // Steady state: statements that succeeded after the warm-up and before the last arrival.
    let from = window.first_arrival + chrono::TimeDelta::seconds(o.warmup as i64);
    let until = window.arrivals_ended;
    let in_window: Vec<_> = statements
        .iter()
        .filter(|s| {
            succeeded
                .get(&s.id)
                .is_some_and(|d| *d >= from && *d < until)
        })
        .collect();
    let window_seconds = (until - from).num_milliseconds().max(1) as f64 / 1000.0;
    let steady = in_window.len() as f64 / window_seconds;
    let transactions_per_statement = in_window
        .iter()
        .map(|s| s.actual.transaction_details_count as f64)
        .sum::<f64>()
        / in_window.len().max(1) as f64;

    // Statements succeeded per second over the whole run, for the plot.
    let mut per_second: BTreeMap<i64, f64> = BTreeMap::new();
    for done in succeeded.values() {
        let t = (*done - window.first_arrival).num_seconds();
        *per_second.entry(t).or_default() += 1.0;
    }
    let mut cumulative = 0.0;
    let samples: Vec<(f64, f64)> = per_second
        .iter()
        .map(|(t, n)| {
            cumulative += n;
            (*t as f64, cumulative)
        })
        .collect();
    let plot_dir = crate::plot::bench_dir();
    let throughput_svg = plot_dir.join("pipeline-fleet.svg");
    crate::plot::throughput(
        &throughput_svg,
        &format!(
            "Fleet: {} accounts x {} transactions a minute, sandbox at {rps} requests/s",
            o.accounts, o.per_minute
        ),
        (
            "seconds since the first arrival",
            "statements succeeded per second",
        ),
        &crate::plot::rates(&samples, 10.0),
        bound,
    )?;
    let latency_svg = plot_dir.join("pipeline-fleet-latency.svg");
    crate::plot::latency(
        &latency_svg,
        "Fleet: seconds from ingest to the statement's success",
        &latency,
        24,
    )?;
    let metrics = stack
        .sandbox
        .client()
        .metrics()
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let mut lag = sent.lag.clone();
    lag.sort_by(f64::total_cmp);
    Ok(FleetReport {
        options: o.clone(),
        rps,
        sent: sent.accepted_at.len(),
        delivered,
        lost: sent.accepted_at.len().saturating_sub(delivered),
        duplicated,
        statements: statements.len(),
        polls_per_statement,
        rate_limited: metrics.rate_limited,
        bound,
        steady_statements_per_second: steady,
        offered_per_second: sent.accepted_at.len() as f64 / o.seconds.max(1) as f64,
        transactions_per_statement,
        cycle_seconds: o.accounts as f64 / bound,
        latency,
        worst_account,
        sender_lag_p99: quantile_sorted(&lag, 0.99),
        drain_seconds,
        plots: vec![throughput_svg, latency_svg],
    })
}

pub fn print(r: &FleetReport) {
    let o = &r.options;
    println!(
        "Fleet benchmark: {} accounts, {} transactions a minute each (Poisson), {} s of arrivals, sandbox at {} requests/s",
        o.accounts, o.per_minute, o.seconds, r.rps
    );
    println!(
        "  offered                   {:.1} transactions/s; if each were its own statement {:.1} statements/s = {:.1} x the bound",
        r.offered_per_second,
        r.offered_per_second,
        r.offered_per_second / r.bound
    );
    println!(
        "  delivered                 {} of {} sent (lost {}, duplicated {})",
        r.delivered, r.sent, r.lost, r.duplicated
    );
    println!(
        "  statements                {} ({:.2} polls per statement), {} answered 429",
        r.statements, r.polls_per_statement, r.rate_limited
    );
    println!(
        "  steady state (after {} s of warm-up, to the last arrival)",
        o.warmup
    );
    println!(
        "    statements/s            {:.2} = {:.1} % of the bound {:.2} = {} / (1 + {:.2})",
        r.steady_statements_per_second,
        100.0 * r.steady_statements_per_second / r.bound,
        r.bound,
        r.rps,
        r.polls_per_statement.max(1.0)
    );
    println!(
        "    transactions/statement  {:.1}",
        r.transactions_per_statement
    );
    println!(
        "  ingest -> succeeded       p50 {:.1} s, p99 {:.1} s, max {:.1} s (worst account's longest wait {:.1} s)",
        quantile_sorted(&r.latency, 0.5),
        quantile_sorted(&r.latency, 0.99),
        r.latency.last().copied().unwrap_or_default(),
        r.worst_account
    );
    println!(
        "    against the rate limit's cycle accounts / bound = {:.0} s (p99 = {:.2} cycles)",
        r.cycle_seconds,
        quantile_sorted(&r.latency, 0.99) / r.cycle_seconds
    );
    println!(
        "  the bank's sender         p99 {:.2} s behind its schedule; drained {:.0} s after the last arrival",
        r.sender_lag_p99, r.drain_seconds
    );
    for p in &r.plots {
        println!("  plot                      {}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(accounts: usize, per_minute: f64, seconds: u64) -> FleetOptions {
        FleetOptions {
            accounts,
            per_minute,
            seconds,
            warmup: 0,
            senders: 1,
            seed: 7,
            progress: false,
        }
    }

    #[test]
    fn arrivals_are_poisson_at_the_asked_rate_in_time_order() {
        let o = options(200, 3.0, 600);
        let arrivals = schedule(&o);
        // 200 accounts x 3 a minute x 10 minutes = 6,000 expected; Poisson's spread is ~77.
        let n = arrivals.len() as f64;
        assert!((n - 6000.0).abs() < 400.0, "{n}");
        assert!(arrivals.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(arrivals.iter().all(|(t, a)| *t < 600.0 && *a < 200));
        // Exponential gaps: about a third of an account's gaps exceed its mean of 20 s
        // (e^-1 = 0.37); evenly spaced arrivals would give none or all.
        let mut last: HashMap<usize, f64> = HashMap::new();
        let (mut long, mut gaps) = (0, 0);
        for (t, a) in &arrivals {
            if let Some(prev) = last.insert(*a, *t) {
                gaps += 1;
                if t - prev > 20.0 {
                    long += 1;
                }
            }
        }
        let share = long as f64 / gaps as f64;
        assert!((0.32..0.42).contains(&share), "{share}");
        // The same seed, the same day.
        assert_eq!(schedule(&o), arrivals);
    }
}
