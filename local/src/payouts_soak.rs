//! The Payments Out soak (issue 19's figures): many subscriptions' batches through the local
//! stack while Sage and the bank misbehave (docs/payments-out-sandbox.md §6) and consumers are
//! killed, then every payment checked three ways — at Sage, at the bank, and against each other.
//!
//! Faults, for the whole run: every delivery to the connector sent twice, reordered, and a share
//! of its acknowledgements lost (so resent); a 5xx rate on every Provider and messaging call; a
//! share of batch PATCHes applied and then answered 500; bursts of 429; the bank answering 503
//! to a share of its calls, holding a share of accepted PUTs until the connector times out,
//! pushing a share of its events twice and out of order; and failures, refusals and returns
//! among the payments. Every `kill_every` one instance of a random consumer is killed.
//!
//! It passes when no payment was executed twice by the bank, none is left without a final
//! status at Sage, every final status at Sage is the bank's outcome, and Sage saw no contract
//! violation.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use sandbox::payments_out::client::PoClient;
use serde_json::{Value, json};

use crate::payments_out as po_flow;
use crate::stack::LocalStack;

pub struct PayoutsSoakOptions {
    pub subscriptions: usize,
    pub batches: usize,
    pub payments: usize,
    /// Share of Provider and messaging calls answered 503.
    pub error_rate: f64,
    pub kill_every: Duration,
    /// How long the payments may take to reach a final status at Sage.
    pub deadline: Duration,
    pub seed: u64,
    pub progress: bool,
}

impl Default for PayoutsSoakOptions {
    fn default() -> Self {
        Self {
            subscriptions: 4,
            batches: 2,
            payments: 500,
            error_rate: 0.05,
            kill_every: Duration::from_secs(15),
            deadline: Duration::from_secs(1800),
            seed: 7,
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayoutsSoakReport {
    pub payments: usize,
    /// Final status at Sage, by status.
    pub at_sage: Vec<(String, usize)>,
    /// Not final at Sage when the deadline came.
    pub lost: usize,
    /// The first few of them: the payment, its status at Sage and at the bank.
    pub lost_examples: Vec<String>,
    /// Why payments were refused or ended without payment (`extendedStatus`), by reason.
    pub reasons: Vec<(String, usize)>,
    /// Executed more than once by the bank (under one id or several).
    pub executed_twice: usize,
    /// Final at Sage with another status than the bank's outcome.
    pub mismatched: Vec<String>,
    pub violations: usize,
    /// The first few of them, as Sage recorded them.
    pub violation_examples: Vec<String>,
    pub kills: usize,
    pub elapsed_s: u64,
}

impl PayoutsSoakReport {
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.executed_twice == 0
            && self.mismatched.is_empty()
            && self.violations == 0
    }
}

/// The stack as the soak runs it: consumers scaled out as Lambda would, a killed consumer's
/// message back after 10 s (as after its visibility timeout), the reconciler every 10 s with
/// batches stuck after 30 s, so that it works beside the bank's retried pushes (which reach a
/// killed handler again for minutes) and its reads race them.
pub fn configure(options: &mut crate::Options) {
    options.max_consumer_concurrency = 8;
    options.http_instances = 4;
    options.retry_visibility = Some(Duration::from_secs(10));
    options.schedule_every = Some(Duration::from_secs(10));
    options.env.insert("STUCK_AFTER_S".into(), "30".into());
}

/// The consumers a kill may hit; `po-bank-events` is retried by the bank, then the reconciler.
const KILLABLE: [&str; 3] = ["po-worker", "po-bank-events", "po-reconciler"];

fn faults(o: &PayoutsSoakOptions) -> Value {
    json!({
        "notifications": {"duplicate": true, "reorderWindowMs": 300, "lostAckRate": 0.05},
        "force429": {"retryAfterS": 1, "remaining": 3},
        "routes": [{"route": "*", "errorRate": o.error_rate, "errorStatus": 503}],
        "patchAppliedThen500": {"rate": 0.05},
        "bank": {
            "timeoutAfterAcceptMs": 12_000, "timeoutAfterAcceptRate": 0.01,
            "duplicateEventRate": 0.1, "reorderEventWindowMs": 300,
            "errors": {"status": 503, "rate": 0.02, "retryAfterS": 1},
        },
    })
}

/// The Sage status a bank outcome must show (`None`: not final at the bank yet).
fn expected_at_sage(bank: &str) -> Option<&'static str> {
    match bank {
        "settled" | "returned" => Some("Paid"),
        "failed" => Some("Failed"),
        "rejected" => Some("Rejected"),
        "cancelled" => Some("Cancelled"),
        _ => None,
    }
}

const FINAL: [&str; 5] = ["Paid", "Failed", "Rejected", "Cancelled", "PartiallyPaid"];

pub async fn run(stack: &LocalStack, o: &PayoutsSoakOptions) -> Result<PayoutsSoakReport> {
    let started = Instant::now();
    let po = PoClient::new(stack.sandbox.base_url());
    let mut rng = sandbox::util::Rng::new(o.seed);
    if o.progress {
        println!(
            "==> {} subscriptions authorised at the bank, each with a funded debtor account",
            o.subscriptions
        );
    }
    let mut payers = Vec::new();
    for _ in 0..o.subscriptions {
        payers.push(po_flow::payer(stack, &po).await?);
    }
    po_flow::set_rails(&po, |rails| {
        rails["settlementDelayMs"] = json!(500);
        rails["failureRate"] = json!(0.03);
        rails["rejectionRate"] = json!(0.02);
        rails["returnRate"] = json!(0.02);
        rails["returnDelayMs"] = json!(500);
    })
    .await?;
    po.put("/_sandbox/payments-out/faults", &faults(o))
        .await
        .map_err(|e| anyhow!(e))?;

    let date = po_flow::tomorrow();
    let mut batch_ids = Vec::new();
    for (s, (subscription, debtor)) in payers.iter().enumerate() {
        for b in 0..o.batches {
            let payments: Vec<Value> = (0..o.payments)
                .map(|i| po_flow::payment(&format!("S{s}B{b}-{i}"), "1.00", debtor, &date))
                .collect();
            let batch = json!({"externalId": format!("SOAK-{s}-{b}"),
                "subscriptionId": subscription, "payments": payments});
            let key = format!("soak-{s}-{b}");
            let id = po_flow::send_batch(&po, &batch, Some(&key), false).await?;
            batch_ids.push(id);
        }
    }
    if o.progress {
        println!(
            "==> {} batches of {} payments sent; faults on, a consumer killed every {:?}",
            batch_ids.len(),
            o.payments,
            o.kill_every
        );
    }

    let mut kills = 0;
    let mut next_kill = Instant::now() + o.kill_every;
    let mut next_burst = Instant::now() + Duration::from_secs(30);
    let deadline = Instant::now() + o.deadline;
    loop {
        let batches = at_sage(&po, &batch_ids).await?;
        let open = batches
            .iter()
            .filter(|b| !FINAL.iter().any(|f| b["status"] == *f))
            .count();
        if o.progress {
            print!(
                "\r    {:>5.0} s  batches final at Sage {}/{}  consumers killed {kills}   ",
                started.elapsed().as_secs_f64(),
                batch_ids.len() - open,
                batch_ids.len()
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
        if open == 0 || Instant::now() > deadline {
            break;
        }
        if Instant::now() >= next_kill {
            let name = KILLABLE[rng.below(KILLABLE.len() as u64) as usize];
            if let Ok(f) = stack.function(name) {
                f.kill_instance(rng.below(f.instances().max(1) as u64) as usize);
                kills += 1;
            }
            next_kill = Instant::now() + o.kill_every;
        }
        if Instant::now() >= next_burst {
            // Another burst of forced 429s (the fault set's counter ran out).
            po.put("/_sandbox/payments-out/faults", &faults(o))
                .await
                .map_err(|e| anyhow!(e))?;
            next_burst = Instant::now() + Duration::from_secs(30);
        }
        tokio::time::sleep(Duration::from_secs(2).min(o.kill_every)).await;
    }
    if o.progress {
        println!();
    }
    po.delete("/_sandbox/payments-out/faults")
        .await
        .map_err(|e| anyhow!(e))?;
    let mut report = check(&po, &batch_ids).await?;
    report.kills = kills;
    report.elapsed_s = started.elapsed().as_secs();
    Ok(report)
}

async fn at_sage(po: &PoClient, ids: &[String]) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for id in ids {
        out.push(po_flow::batch_now(po, id).await?);
    }
    Ok(out)
}

/// Every payment at Sage against the bank's ledger.
async fn check(po: &PoClient, ids: &[String]) -> Result<PayoutsSoakReport> {
    let ledger = po
        .get("/_sandbox/payments-out/bank/ledger")
        .await
        .map_err(|e| anyhow!(e))?;
    let entries = ledger.as_array().cloned().unwrap_or_default();
    let at_bank: HashMap<String, &Value> = entries
        .iter()
        .filter_map(|e| Some((e["paymentId"].as_str()?.to_string(), e)))
        .collect();
    let mut report = PayoutsSoakReport {
        executed_twice: entries
            .iter()
            .filter(|e| {
                e["executions"].as_u64() > Some(1)
                    || e["executionsOfSamePayment"].as_u64() > Some(1)
            })
            .count(),
        ..PayoutsSoakReport::default()
    };
    let mut by_status: HashMap<String, usize> = HashMap::new();
    let mut by_reason: HashMap<String, usize> = HashMap::new();
    for batch in at_sage(po, ids).await? {
        for p in batch["payments"].as_array().cloned().unwrap_or_default() {
            report.payments += 1;
            let id = p["paymentId"].as_str().unwrap_or_default().to_string();
            let status = p["status"].as_str().unwrap_or_default().to_string();
            let bank = at_bank.get(&id).and_then(|e| e["status"].as_str());
            if !FINAL.contains(&status.as_str()) {
                report.lost += 1;
                if report.lost_examples.len() < 10 {
                    report.lost_examples.push(format!(
                        "{id} of batch {}: Sage {status}, bank {}",
                        batch["batchId"].as_str().unwrap_or("?"),
                        bank.unwrap_or("none")
                    ));
                }
                continue;
            }
            *by_status.entry(status.clone()).or_default() += 1;
            if let Some(reason) = p["extendedStatus"].as_str() {
                *by_reason.entry(reason.to_string()).or_default() += 1;
            }
            let agrees = match bank {
                // Never sent: only a refusal by the connector's checks, or a cancellation.
                None => matches!(status.as_str(), "Rejected" | "Cancelled"),
                Some(b) => expected_at_sage(b) == Some(status.as_str()),
            };
            if !agrees {
                report.mismatched.push(format!(
                    "{id}: Sage {status}, bank {}",
                    bank.unwrap_or("none")
                ));
            }
        }
    }
    let mut statuses: Vec<(String, usize)> = by_status.into_iter().collect();
    statuses.sort();
    report.at_sage = statuses;
    let mut reasons: Vec<(String, usize)> = by_reason.into_iter().collect();
    reasons.sort();
    report.reasons = reasons;
    let violations = po.violations().await.map_err(|e| anyhow!(e))?;
    let violations = violations.as_array().cloned().unwrap_or_default();
    report.violations = violations.len();
    report.violation_examples = violations.iter().take(5).map(Value::to_string).collect();
    Ok(report)
}

pub fn print(r: &PayoutsSoakReport) {
    println!(
        "\nPayments Out soak: {} payments in {} s, {} consumer(s) killed",
        r.payments, r.elapsed_s, r.kills
    );
    let at_sage: Vec<String> = r.at_sage.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!("  final at Sage          {}", at_sage.join(", "));
    for (reason, n) in &r.reasons {
        println!("    {reason}: {n}");
    }
    println!("  executed twice         {}   (target 0)", r.executed_twice);
    println!("  lost (not final)       {}   (target 0)", r.lost);
    for l in &r.lost_examples {
        println!("    {l}");
    }
    println!(
        "  Sage ≠ bank            {}   (target 0)",
        r.mismatched.len()
    );
    for m in r.mismatched.iter().take(10) {
        println!("    {m}");
    }
    println!("  Sage violations        {}   (target 0)", r.violations);
    for v in &r.violation_examples {
        println!("    {v}");
    }
    println!("  {}", if r.passed() { "PASSED" } else { "FAILED" });
}
