//! The soak with faults (issue 7, item 3): many accounts' transactions pushed through ingest
//! while Banking Service misbehaves and consumers die, then what a Sage product sees is checked
//! transaction by transaction.
//!
//! Faults, all at once for the whole run: a 5xx rate on every Provider API route, responses
//! dropped after the statement was committed, bursts of forced 429s, access tokens that expire
//! every `token_lifetime_s`, and every `kill_every` one instance of a random consumer killed in
//! the middle of whatever it was doing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sandbox::model::{FaultSet, Force429, RouteFault, StatementStatus};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::bench::amount_text;
use crate::stack::{LOCAL_INGEST_KEY, LocalStack};
use crate::stats::{parse_time, quantile_sorted};

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub accounts: usize,
    pub transactions: usize,
    /// Records per ingest request.
    pub chunk: usize,
    /// Ingest requests in flight at once.
    pub ingest_concurrency: usize,
    pub error_rate: f64,
    pub drop_rate: f64,
    pub token_lifetime_s: u64,
    pub kill_every: Duration,
    pub limit: Duration,
    pub seed: u64,
    pub progress: bool,
}

impl Default for SoakOptions {
    fn default() -> Self {
        Self {
            accounts: 200,
            transactions: 500,
            chunk: 100,
            ingest_concurrency: 4,
            error_rate: 0.05,
            drop_rate: 0.02,
            token_lifetime_s: 60,
            kill_every: Duration::from_secs(20),
            limit: Duration::from_secs(3 * 3600),
            seed: 7,
            progress: true,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    pub sent: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub foreign: usize,
    pub out_of_order_accounts: usize,
    pub max_in_flight: u64,
    pub violations: usize,
    /// The first violations, one line each.
    pub violation_details: Vec<String>,
    pub parked: usize,
    pub statements: usize,
    pub statements_by_status: BTreeMap<String, u64>,
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub latency_max_s: f64,
    pub ingest_s: f64,
    pub total_s: f64,
    pub kills: usize,
    pub injected_5xx: u64,
    pub rate_limited: u64,
    pub token_requests: u64,
    pub ingest_retries: usize,
}

impl SoakReport {
    /// The targets of the issue: nothing lost, nothing twice, order kept, one in flight.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.foreign == 0
            && self.out_of_order_accounts == 0
            && self.max_in_flight <= 1
            && self.violations == 0
            && self.parked == 0
    }
}

/// The local stack as the soak runs it: consumers scaled out as Lambda would, a killed
/// consumer's batch back after 10 s (as after its visibility timeout), the reconciler every
/// minute.
pub fn configure(options: &mut crate::Options) {
    options.max_consumer_concurrency = 8;
    options.retry_visibility = Some(Duration::from_secs(10));
    options.schedule_every = Some(Duration::from_secs(60));
}

/// Transaction `i` of an account: exact cents, one every 7 minutes, in date order.
fn record(i: usize, tag: &str, start: DateTime<Utc>, balance: &mut i64) -> Value {
    let cents = match ((i as i64 * 7919 + tag.len() as i64 * 31) % 40_000) - 15_000 {
        0 => 1,
        c => c,
    };
    *balance += cents;
    json!({
        "uniqueId": format!("{tag}-{i:05}"),
        "transactionAmount": amount_text(cents),
        "transactionType": if cents < 0 { "DEBIT" } else { "CREDIT" },
        "datePosted": (start + TimeDelta::minutes(7 * i as i64)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "description": format!("Soak {i} of {tag}"),
        "runningBalance": amount_text(*balance),
    })
}

fn faults(o: &SoakOptions) -> FaultSet {
    let provider_route = |route: &str, drop: f64| RouteFault {
        route: route.into(),
        error_rate: o.error_rate,
        error_status: 503,
        drop_after_commit_rate: drop,
        ..RouteFault::default()
    };
    FaultSet {
        routes: vec![
            provider_route("POST /v1/statements", o.drop_rate),
            provider_route("GET /v1/statements/{statementId}", 0.0),
            provider_route("DELETE /v1/statements/{statementId}", 0.0),
            provider_route("POST /oauth/token", 0.0),
        ],
        force_429: Some(Force429 {
            retry_after_s: 1,
            remaining: Some(3),
        }),
        token_expires_in_s: Some(o.token_lifetime_s),
        ..FaultSet::default()
    }
}

/// The consumers a kill may hit (the HTTP functions are retried by their callers).
const CONSUMERS: [&str; 4] = [
    "statement-pusher",
    "statement-poller",
    "notification-worker",
    "reconciler",
];

pub async fn run(stack: &LocalStack, o: &SoakOptions) -> Result<SoakReport> {
    let started = Instant::now();
    let client = stack.sandbox.client();
    let table = connector_aws::Table::new(stack.dynamodb.clone(), stack.table_name.clone());
    let mut rng = sandbox::util::Rng::new(o.seed);

    if o.progress {
        println!("==> Onboarding {} accounts", o.accounts);
    }
    let mut accounts: Vec<(String, Uuid)> = Vec::new();
    for a in 0..o.accounts {
        let external = format!("acc_SOAK{a:04}");
        let created = client
            .create_account(&sandbox::model::CreateAccountRequest {
                notify: Some(true),
                ..sandbox::model::CreateAccountRequest::new(
                    stack.bank_id,
                    external.clone(),
                    "2026-01-01T00:00:00.000Z",
                )
            })
            .await
            .map_err(|e| anyhow!("{e}"))?;
        accounts.push((external, created.account.bank_account_id));
    }
    // Ingest answers 404 for an account the connector does not know yet: wait for all.
    let known_by = Instant::now() + Duration::from_secs(600);
    loop {
        let mut known = 0;
        for (_, id) in &accounts {
            if matches!(table.get_account(*id).await, Ok(Some(_))) {
                known += 1;
            }
        }
        if o.progress {
            print!("\r    known to the connector {known}/{}   ", accounts.len());
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
        if known == accounts.len() {
            break;
        }
        if Instant::now() > known_by {
            bail!(
                "only {known} of {} accounts reached the connector",
                accounts.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if o.progress {
        println!();
    }

    client
        .set_faults(&faults(o))
        .await
        .map_err(|e| anyhow!("{e}"))?;

    // Every record, and the moment its ingest request was answered.
    let start = Utc
        .with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
        .single()
        .ok_or_else(|| anyhow!("date"))?;
    // One lane per account: its requests go in order; lanes run side by side.
    let mut sent: HashMap<Uuid, Vec<Value>> = HashMap::new();
    let mut lanes: Vec<(String, Vec<Vec<Value>>)> = Vec::new();
    for (external, id) in &accounts {
        let mut balance = 0i64;
        let records: Vec<Value> = (0..o.transactions)
            .map(|i| record(i, external, start, &mut balance))
            .collect();
        lanes.push((
            external.clone(),
            records
                .chunks(o.chunk.max(1))
                .map(<[Value]>::to_vec)
                .collect(),
        ));
        sent.insert(*id, records);
    }
    let total: usize = sent.values().map(Vec::len).sum();
    let ingested_at: Arc<std::sync::Mutex<HashMap<String, DateTime<Utc>>>> = Arc::default();
    let retries = Arc::new(AtomicUsize::new(0));
    let done_requests = Arc::new(AtomicUsize::new(0));
    let ingest_started = Instant::now();
    let http = reqwest::Client::new();
    let url = format!("{}/ingest", stack.api_url);

    let next_lane = Arc::new(AtomicUsize::new(0));
    let lanes = Arc::new(lanes);
    let mut ingest_tasks = Vec::new();
    for _ in 0..o.ingest_concurrency.max(1) {
        let (lanes, next_lane, http, url) =
            (lanes.clone(), next_lane.clone(), http.clone(), url.clone());
        let (ingested_at, retries, done_requests) =
            (ingested_at.clone(), retries.clone(), done_requests.clone());
        ingest_tasks.push(tokio::spawn(async move {
            loop {
                let lane = next_lane.fetch_add(1, Ordering::SeqCst);
                let Some((external, chunks)) = lanes.get(lane) else {
                    return Ok::<(), anyhow::Error>(());
                };
                for records in chunks {
                    let body = json!({"externalId": external, "transactions": records});
                    // The ingest contract (docs/bank-data-api.md §3): retry a 5xx or a lost
                    // answer with the same body.
                    let mut attempt = 0;
                    loop {
                        attempt += 1;
                        let answer = http
                            .post(&url)
                            .header("x-api-key", LOCAL_INGEST_KEY)
                            .timeout(Duration::from_secs(60))
                            .json(&body)
                            .send()
                            .await;
                        match answer {
                            Ok(a) if a.status().is_success() => {
                                let v: Value = a.json().await?;
                                if v["data"]["rejected"] != 0 {
                                    bail!("ingest rejected records: {v}");
                                }
                                break;
                            }
                            Ok(a) if a.status().is_client_error() => {
                                bail!("ingest answered {}: {}", a.status(), a.text().await?)
                            }
                            _ if attempt < 20 => {
                                retries.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                            }
                            other => bail!("ingest kept failing: {other:?}"),
                        }
                    }
                    let now = Utc::now();
                    let mut at = ingested_at.lock().map_err(|_| anyhow!("lock"))?;
                    for r in records {
                        if let Some(u) = r["uniqueId"].as_str() {
                            at.insert(u.to_string(), now);
                        }
                    }
                    done_requests.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    let request_count: usize = lanes.iter().map(|(_, c)| c.len()).sum();

    // Chaos and progress until Banking Service holds everything and the connector committed it.
    let mut kills = 0;
    let mut next_kill = Instant::now() + o.kill_every;
    let mut next_burst = Instant::now() + Duration::from_secs(30);
    let mut ingest_s = None;
    let mut last_report = Instant::now() - Duration::from_secs(60);
    let mut all_held_at: Option<Instant> = None;
    loop {
        let ingest_done = ingest_tasks.iter().all(|t| t.is_finished());
        if ingest_done && ingest_s.is_none() {
            for t in ingest_tasks.drain(..) {
                t.await.map_err(|e| anyhow!("{e}"))??;
            }
            ingest_s = Some(ingest_started.elapsed().as_secs_f64());
        }
        if Instant::now() >= next_kill {
            let name = CONSUMERS[rng.below(CONSUMERS.len() as u64) as usize];
            if let Ok(f) = stack.function(name) {
                let index = rng.below(f.instances().max(1) as u64) as usize;
                f.kill_instance(index);
                kills += 1;
            }
            next_kill = Instant::now() + o.kill_every;
        }
        if Instant::now() >= next_burst {
            // Another burst of forced 429s (the fault set's counter ran out).
            client
                .set_faults(&faults(o))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            next_burst = Instant::now() + Duration::from_secs(30);
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            let statements = client.statements(None).await.map_err(|e| anyhow!("{e}"))?;
            let held: u64 = statements
                .iter()
                .filter(|s| s.status == StatementStatus::Succeeded)
                .map(|s| s.actual.transaction_details_count)
                .sum();
            if o.progress {
                print!(
                    "\r    {:>5.0} s  ingest requests {}/{}  held by Banking Service {held}/{total}  statements {}  consumers killed {kills}   ",
                    started.elapsed().as_secs_f64(),
                    done_requests.load(Ordering::SeqCst),
                    request_count,
                    statements.len(),
                );
                use std::io::Write;
                let _ = std::io::stdout().flush();
            }
            if ingest_s.is_some() && held as usize >= total {
                let all_held_at = *all_held_at.get_or_insert_with(Instant::now);
                let mut pending = 0;
                let mut behind = Vec::new();
                for (external, id) in &accounts {
                    if let Ok(Some(a)) = table.get_account(*id).await {
                        let owed = total / accounts.len()
                            - (a.delivered_count as usize).min(total / accounts.len());
                        if owed > 0 {
                            behind.push(external.clone());
                        }
                        pending += owed;
                    }
                }
                if pending == 0 {
                    break;
                }
                // Banking Service has everything: the connector should commit within minutes.
                if all_held_at.elapsed() > Duration::from_secs(600) {
                    if o.progress {
                        println!();
                    }
                    bail!(
                        "Banking Service holds every transaction, but after 10 minutes the connector still counts {pending} as undelivered ({})",
                        behind.join(", ")
                    );
                }
            }
        }
        if started.elapsed() > o.limit {
            if o.progress {
                println!();
            }
            bail!("not finished after {:?}", o.limit);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let total_s = started.elapsed().as_secs_f64();
    if o.progress {
        println!();
    }
    client.clear_faults().await.map_err(|e| anyhow!("{e}"))?;

    // What a Sage product sees, account by account.
    let statements = client.statements(None).await.map_err(|e| anyhow!("{e}"))?;
    let succeeded_at: HashMap<Uuid, DateTime<Utc>> = statements
        .iter()
        .filter_map(|s| {
            let at = s
                .history
                .iter()
                .find(|h| h.status == StatementStatus::Succeeded)?;
            Some((s.id, parse_time(&at.at)?))
        })
        .collect();
    let ingested_at = ingested_at.lock().map_err(|_| anyhow!("lock"))?.clone();
    let mut report = SoakReport {
        sent: total,
        statements: statements.len(),
        ingest_s: ingest_s.unwrap_or(f64::NAN),
        total_s,
        kills,
        ingest_retries: retries.load(Ordering::SeqCst),
        ..SoakReport::default()
    };
    for s in &statements {
        *report
            .statements_by_status
            .entry(format!("{:?}", s.status).to_lowercase())
            .or_default() += 1;
    }
    let mut latencies = Vec::new();
    for (_, id) in &accounts {
        let stored = client
            .stored_transactions(*id)
            .await
            .map_err(|e| anyhow!("{e}"))?;
        let expected: HashSet<&str> = sent
            .get(id)
            .map(|v| v.iter().filter_map(|r| r["uniqueId"].as_str()).collect())
            .unwrap_or_default();
        let mut seen = HashSet::new();
        for t in &stored {
            if !seen.insert(t.unique_id.as_str()) {
                report.duplicated += 1;
            } else if !expected.contains(t.unique_id.as_str()) {
                report.foreign += 1;
            }
            if let (Some(at), Some(statement)) = (ingested_at.get(&t.unique_id), t.statement_id)
                && let Some(done) = succeeded_at.get(&statement)
            {
                latencies.push((*done - *at).num_milliseconds().max(0) as f64 / 1000.0);
            }
        }
        report.delivered += expected.iter().filter(|u| seen.contains(*u)).count();
        report.lost += expected.iter().filter(|u| !seen.contains(*u)).count();
        let mut in_order = stored.clone();
        in_order.sort_by_key(|t| t.transaction_id);
        if !in_order
            .windows(2)
            .all(|w| w[0].date_posted <= w[1].date_posted)
        {
            report.out_of_order_accounts += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    report.latency_p50_s = quantile_sorted(&latencies, 0.5);
    report.latency_p99_s = quantile_sorted(&latencies, 0.99);
    report.latency_max_s = latencies.last().copied().unwrap_or(f64::NAN);
    let metrics = client.metrics().await.map_err(|e| anyhow!("{e}"))?;
    report.max_in_flight = metrics.max_in_flight;
    report.rate_limited = metrics.rate_limited;
    report.token_requests = metrics.token_requests_per_client.values().sum();
    report.injected_5xx = metrics
        .requests
        .iter()
        .filter(|r| r.status >= 500)
        .map(|r| r.count)
        .sum();
    let violations = client.violations().await.map_err(|e| anyhow!("{e}"))?;
    report.violations = violations.len();
    // What each one was, so that a failed run says why without a second run.
    report.violation_details = violations
        .iter()
        .take(20)
        .map(|v| {
            format!(
                "{} {:?}: {} (bank account {}, statement {})",
                v.at,
                v.kind,
                v.message,
                v.bank_account_id.map_or("-".into(), |u| u.to_string()),
                v.statement_id.map_or("-".into(), |u| u.to_string()),
            )
        })
        .collect();
    report.parked = table
        .parked_records(None, 1000)
        .await
        .map_err(|e| anyhow!("{e}"))?
        .len();
    Ok(report)
}

pub fn print(r: &SoakReport) {
    println!("Soak with faults");
    println!(
        "  sent                      {} transactions ({} ingest retries)",
        r.sent, r.ingest_retries
    );
    println!(
        "  delivered                 {} (lost {}, duplicated {}, foreign {})",
        r.delivered, r.lost, r.duplicated, r.foreign
    );
    println!(
        "  out of order              {} accounts",
        r.out_of_order_accounts
    );
    println!(
        "  max in flight per account {} (sandbox violations {})",
        r.max_in_flight, r.violations
    );
    for v in &r.violation_details {
        println!("    violation: {v}");
    }
    println!("  parked records            {}", r.parked);
    println!(
        "  statements                {} {:?}",
        r.statements, r.statements_by_status
    );
    println!(
        "  faults                    {} answers 5xx, {} x 429, {} token requests, {} consumers killed",
        r.injected_5xx, r.rate_limited, r.token_requests, r.kills
    );
    println!(
        "  ingest -> succeeded       p50 {:.1} s, p99 {:.1} s, max {:.1} s",
        r.latency_p50_s, r.latency_p99_s, r.latency_max_s
    );
    println!(
        "  time                      ingest {:.0} s, whole run {:.0} s",
        r.ingest_s, r.total_s
    );
    println!(
        "  result                    {}",
        if r.passed() {
            "PASS (0 lost, 0 duplicated, in order, <= 1 in flight)"
        } else {
            "FAIL"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_in_date_order_with_exact_amounts() {
        let start = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
        let mut balance = 0;
        let rs: Vec<Value> = (0..50)
            .map(|i| record(i, "acc_X", start, &mut balance))
            .collect();
        assert!(
            rs.windows(2)
                .all(|w| w[0]["datePosted"].as_str() < w[1]["datePosted"].as_str())
        );
        let sum: i64 = rs
            .iter()
            .map(|r| {
                let t = r["transactionAmount"].as_str().unwrap().replace('.', "");
                t.parse::<i64>().unwrap()
            })
            .sum();
        assert_eq!(sum, balance);
    }

    #[test]
    fn a_report_passes_only_with_nothing_lost_doubled_or_reordered() {
        let ok = SoakReport {
            max_in_flight: 1,
            ..SoakReport::default()
        };
        assert!(ok.passed());
        for bad in [
            SoakReport {
                lost: 1,
                ..ok.clone()
            },
            SoakReport {
                duplicated: 1,
                ..ok.clone()
            },
            SoakReport {
                out_of_order_accounts: 1,
                ..ok.clone()
            },
            SoakReport {
                max_in_flight: 2,
                ..ok.clone()
            },
            SoakReport {
                parked: 1,
                ..ok.clone()
            },
        ] {
            assert!(!bad.passed(), "{bad:?}");
        }
    }
}
