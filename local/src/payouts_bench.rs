//! Payments Out figures (issue targets, not timed tests): batches of many payments through the
//! local stack and the sandbox at Sage's rate limit, with what Sage saw — how fast deliveries
//! were acknowledged, how long after its notification each batch got its first PATCH, how
//! long after the bank's event each outcome reached Sage, and how many Provider API calls each
//! batch cost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use sandbox::payments_out::client::PoClient;
use serde_json::{Value, json};

use crate::payments_out as po_flow;
use crate::stack::LocalStack;

pub struct PayoutsBenchOptions {
    pub batches: usize,
    pub payments: usize,
    /// Payments of a batch paid before the measured ones (0: none), so that the figures are
    /// the connector's steady state, not DynamoDB Local's JIT compiling or first starts.
    pub warmup: usize,
    pub progress: bool,
}

/// Percentiles of a set of milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    fn of(mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| crate::stats::quantile_sorted(&ms, q);
        Self {
            count: ms.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PayoutsBenchReport {
    pub batches: usize,
    pub payments_per_batch: usize,
    /// Payments of the warm-up batch left out of every figure.
    pub warmup: usize,
    pub paid: usize,
    /// `/notifications` and `/subscription` answered, as Sage timed them.
    pub ack: Spread,
    /// From the batch notification to the first PATCH.
    pub first_patch: Spread,
    /// From the bank's event to the PATCH carrying the outcome.
    pub outcome: Spread,
    /// From the connector's acknowledgement of the bank's push to that PATCH.
    pub outcome_since_push: Spread,
    /// The connector's answers to the bank's pushes (2xx), as the bank timed them.
    pub bank_push: Spread,
    /// Push attempts that timed out or failed (the bank retries them while its schedule lasts).
    pub bank_push_failed: usize,
    /// Pushes acknowledged per second, from the first to the last.
    pub bank_push_rate: f64,
    /// Provider API calls per batch: (reads, PATCHes).
    pub calls: Vec<(u64, u64)>,
    pub elapsed: Duration,
    pub violations: usize,
    /// AWS requests made during the run, by caller, then by operation (`DynamoDB.GetItem`, ...).
    pub aws: BTreeMap<String, BTreeMap<String, u64>>,
}

/// A progress bar of the payments final at Sage, read every 2 s until aborted.
fn watch_outcomes(
    po: &PoClient,
    ids: &[String],
    total: usize,
    progress: bool,
) -> tokio::task::JoinHandle<()> {
    let pb = crate::demo::bar(progress, total as u64, "final at Sage");
    let (po, ids) = (po.clone(), ids.to_vec());
    tokio::spawn(async move {
        loop {
            let mut done = 0;
            for id in &ids {
                if let Ok(b) = po_flow::batch_now(&po, id).await {
                    done += b["payments"].as_array().map_or(0, |ps| {
                        ps.iter()
                            .filter(|p| p["status"] != "Processing" && p["status"] != "Received")
                            .count()
                    });
                }
            }
            pb.set_position(done as u64);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    })
}

/// Sends `batches` batches of `payments` payments from one payer and waits for every outcome.
pub async fn run(stack: &LocalStack, o: &PayoutsBenchOptions) -> Result<PayoutsBenchReport> {
    let po = PoClient::new(stack.sandbox.base_url());
    if o.progress {
        println!("==> A subscription authorised at the bank, one funded debtor account");
    }
    let (subscription, debtor) = po_flow::payer(stack, &po).await?;
    let date = po_flow::tomorrow();
    let batch_of = |name: &str, count: usize| {
        let payments: Vec<Value> = (0..count)
            .map(|i| po_flow::payment(&format!("{name}-{i}"), "1.00", &debtor, &date))
            .collect();
        json!({"externalId": format!("BENCH-{name}"), "subscriptionId": subscription,
            "payments": payments})
    };
    if o.warmup > 0 {
        let id = po_flow::send_batch(&po, &batch_of("W", o.warmup), None, false).await?;
        if o.progress {
            println!(
                "==> Warm-up batch ({} payments, left out of the figures): {id}",
                o.warmup
            );
        }
        po_flow::batch_at_sage_within(&po, &id, FINAL, Duration::from_secs(600)).await?;
    }
    let measured_from = chrono::Utc::now();
    let aws_before = stack.aws_usage_by_caller();
    let started = Instant::now();
    let mut ids = Vec::new();
    for b in 0..o.batches {
        let id =
            po_flow::send_batch(&po, &batch_of(&format!("B{b}"), o.payments), None, false).await?;
        if o.progress {
            println!("==> Batch {b} ({} payments) sent: {id}", o.payments);
        }
        ids.push(id);
    }
    let watcher = watch_outcomes(&po, &ids, o.batches * o.payments, o.progress);
    let mut calls = Vec::new();
    let mut paid = 0;
    for id in &ids {
        let done = po_flow::batch_at_sage_within(&po, id, FINAL, Duration::from_secs(1800)).await?;
        paid += done["payments"]
            .as_array()
            .map_or(0, |p| p.iter().filter(|p| p["status"] == "Paid").count());
        calls.push((
            done["calls"]["gets"].as_u64().unwrap_or(0),
            done["calls"]["patches"].as_u64().unwrap_or(0),
        ));
        if o.progress {
            println!(
                "    {id}: {} after {:.1} s",
                done["status"],
                started.elapsed().as_secs_f64()
            );
        }
    }
    watcher.abort();
    let elapsed = started.elapsed();
    let aws = aws_since(&aws_before, &stack.aws_usage_by_caller());
    let ms = |v: &Value| v.as_f64().unwrap_or(0.0);
    let deliveries = po
        .get("/_sandbox/payments-out/deliveries")
        .await
        .map_err(|e| anyhow!(e))?;
    let deliveries: Vec<&Value> = deliveries
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|d| since(d, measured_from))
        .collect();
    let is_bank = |d: &&Value| d["kind"].as_str().unwrap_or_default().starts_with("bank");
    let is_2xx = |d: &&Value| {
        d["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
    };
    let ack = Spread::of(
        deliveries
            .iter()
            .copied()
            // Sage's deliveries only (the demo bank's event pushes are logged beside them).
            .filter(|d| !is_bank(d))
            .filter(is_2xx)
            .map(|d| ms(&d["latencyMs"]))
            .collect(),
    );
    let pushed: Vec<&Value> = deliveries
        .iter()
        .copied()
        .filter(is_bank)
        .filter(is_2xx)
        .collect();
    let bank_push = Spread::of(pushed.iter().map(|d| ms(&d["latencyMs"])).collect());
    let bank_push_failed = deliveries
        .iter()
        .copied()
        .filter(is_bank)
        .filter(|d| !is_2xx(d))
        .count();
    let bank_push_rate = per_second(&pushed);
    let lateness = po
        .get("/_sandbox/payments-out/lateness")
        .await
        .map_err(|e| anyhow!(e))?;
    let of_kind = |kind: &str, field: &str| {
        Spread::of(
            lateness["records"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|r| r["kind"] == kind && r[field].is_number())
                .filter(|r| ids.iter().any(|id| r["batchId"] == id.as_str()))
                .map(|r| ms(&r[field]))
                .collect(),
        )
    };
    let violations = po.violations().await.map_err(|e| anyhow!(e))?;
    Ok(PayoutsBenchReport {
        batches: o.batches,
        payments_per_batch: o.payments,
        warmup: o.warmup,
        paid,
        ack,
        first_patch: of_kind("firstPatch", "elapsedMs"),
        outcome: of_kind("outcome", "elapsedMs"),
        outcome_since_push: of_kind("outcome", "sincePushMs"),
        bank_push,
        bank_push_failed,
        bank_push_rate,
        calls,
        elapsed,
        violations: violations.as_array().map_or(0, Vec::len),
        aws,
    })
}

/// What Payments Out shows for a batch no connector call will change any more.
const FINAL: &[&str] = &["Paid", "PartiallyPaid", "Failed", "Rejected", "Cancelled"];

/// Whether the sandbox logged `delivery` at or after `from` (the warm-up's are left out).
fn since(delivery: &Value, from: chrono::DateTime<chrono::Utc>) -> bool {
    delivery["at"]
        .as_str()
        .and_then(|at| at.parse::<chrono::DateTime<chrono::Utc>>().ok())
        .is_some_and(|at| at >= from)
}

type Usage = BTreeMap<String, BTreeMap<String, crate::meter::OperationCount>>;

/// Requests between two snapshots of the meter, by caller and operation.
fn aws_since(before: &Usage, after: &Usage) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (caller, ops) in after {
        for (op, c) in ops {
            let earlier = before.get(caller).and_then(|b| b.get(op));
            let new = earlier.map_or(*c, |b| c.since(b));
            out.entry(caller.clone())
                .or_default()
                .insert(op.clone(), new.requests);
        }
    }
    out.retain(|_, ops| {
        ops.retain(|_, n| *n > 0);
        !ops.is_empty()
    });
    out
}

/// Deliveries per second between the first and the last one logged.
fn per_second(deliveries: &[&Value]) -> f64 {
    let times: Vec<chrono::DateTime<chrono::Utc>> = deliveries
        .iter()
        .filter_map(|d| d["at"].as_str()?.parse().ok())
        .collect();
    match (times.iter().min(), times.iter().max()) {
        (Some(first), Some(last)) if last > first => {
            times.len() as f64 / ((*last - *first).num_milliseconds() as f64 / 1000.0)
        }
        _ => 0.0,
    }
}

/// The figures against the targets.
pub fn print(r: &PayoutsBenchReport) {
    let line = |what: &str, s: &Spread, target_ms: f64| {
        println!(
            "{what:<42} {:>6} {:>9.0} {:>9.0} {:>9.0}   ≤ {target_ms:.0} ms: {}",
            s.count,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            if s.p99_ms <= target_ms {
                "met"
            } else {
                "missed"
            }
        );
    };
    println!(
        "\nPayments Out: {} batch(es) of {} payments, {} Paid, {:.1} s, {} Sage violation(s)",
        r.batches,
        r.payments_per_batch,
        r.paid,
        r.elapsed.as_secs_f64(),
        r.violations
    );
    match r.warmup {
        0 => println!("(a cold stack: no warm-up batch)\n"),
        n => println!("(after a warm-up batch of {n} payments, left out of every figure)\n"),
    }
    println!(
        "{:<42} {:>6} {:>9} {:>9} {:>9}",
        "", "count", "p50 ms", "p99 ms", "max ms"
    );
    line("notification acknowledged (Sage's timing)", &r.ack, 1_000.0);
    line(
        "first PATCH after the batch notification",
        &r.first_patch,
        30_000.0,
    );
    line(
        "outcome PATCHed after the bank's event",
        &r.outcome,
        10_000.0,
    );
    // A diagnostic beside the target: the connector's share, without the bank's own queue.
    println!(
        "{:<42} {:>6} {:>9.0} {:>9.0} {:>9.0}   ({} PATCHed before the acknowledgement was seen)",
        "  … after the connector acknowledged it",
        r.outcome_since_push.count,
        r.outcome_since_push.p50_ms,
        r.outcome_since_push.p99_ms,
        r.outcome_since_push.max_ms,
        r.outcome.count.saturating_sub(r.outcome_since_push.count)
    );
    println!(
        "{:<42} {:>6} {:>9.0} {:>9.0} {:>9.0}   {:.0} per s; {} failed attempt(s)",
        "bank event acknowledged (the bank's timing)",
        r.bank_push.count,
        r.bank_push.p50_ms,
        r.bank_push.p99_ms,
        r.bank_push.max_ms,
        r.bank_push_rate,
        r.bank_push_failed
    );
    print_aws(r);
    for (i, (gets, patches)) in r.calls.iter().enumerate() {
        // One GET, one Processing PATCH, then one PATCH per outcome window.
        let windows = patches.saturating_sub(1);
        println!(
            "batch {i}: Provider API calls {} = {gets} GET + {patches} PATCH ({windows} outcome window(s)); target ≤ 2 + windows: {}",
            gets + patches,
            if gets + patches <= 2 + windows {
                "met"
            } else {
                "missed"
            }
        );
    }
}

/// What the run cost in AWS requests, per payment, by caller and operation: where a burst's
/// time goes on the emulators.
fn print_aws(r: &PayoutsBenchReport) {
    let payments = (r.batches * r.payments_per_batch).max(1) as f64;
    println!("AWS requests per payment, by caller:");
    for (caller, ops) in &r.aws {
        let total: u64 = ops.values().sum();
        let each: Vec<String> = ops
            .iter()
            .map(|(op, n)| format!("{op} {:.2}", *n as f64 / payments))
            .collect();
        println!(
            "  {caller:<40} {:>5.2}: {}",
            total as f64 / payments,
            each.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::OperationCount;

    fn usage(rows: &[(&str, &str, u64)]) -> Usage {
        let mut u = Usage::new();
        for (caller, op, n) in rows {
            u.entry(caller.to_string()).or_default().insert(
                op.to_string(),
                OperationCount {
                    requests: *n,
                    ..OperationCount::default()
                },
            );
        }
        u
    }

    #[test]
    fn aws_requests_are_counted_since_the_first_snapshot() {
        let before = usage(&[
            ("po-bank-events", "DynamoDB.GetItem", 10),
            ("tools", "DynamoDB.CreateTable", 1),
        ]);
        let after = usage(&[
            ("po-bank-events", "DynamoDB.GetItem", 30),
            ("po-bank-events", "DynamoDB.UpdateItem", 5),
            ("po-bank-events", "SQS.SendMessage", 2),
            ("tools", "DynamoDB.CreateTable", 1),
        ]);
        let got = aws_since(&before, &after);
        assert_eq!(
            got.len(),
            1,
            "a caller without new requests is left out: {got:?}"
        );
        let events = &got["po-bank-events"];
        let counts = (
            events["DynamoDB.GetItem"],
            events["DynamoDB.UpdateItem"],
            events["SQS.SendMessage"],
        );
        assert_eq!(counts, (20, 5, 2));
    }

    #[test]
    fn deliveries_before_the_measured_batches_are_left_out() {
        let from: chrono::DateTime<chrono::Utc> = "2026-12-06T14:00:00Z".parse().unwrap();
        assert!(since(&json!({"at": "2026-12-06T14:00:00.001Z"}), from));
        assert!(since(&json!({"at": "2026-12-06T15:00:00+01:00"}), from));
        assert!(!since(&json!({"at": "2026-12-06T13:59:59.999Z"}), from));
        assert!(!since(&json!({}), from));
    }
}
