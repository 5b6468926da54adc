//! The product's main job, end to end on one machine: a customer onboards at the demo bank, the
//! connector pulls the account's history, the bank pushes new transactions, and every one of
//! them reaches Banking Service in order — with what happened printed step by step.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sandbox::bank::BankTransaction;
use sandbox::driver::{AccountPick, OnboardOptions};
use serde_json::{Value, json};

use crate::stack::{LOCAL_INGEST_KEY, LocalStack};

/// What the demo saw.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub bank_account_id: uuid::Uuid,
    pub external_id: String,
    pub backfilled: usize,
    pub pushed: usize,
    pub delivered: usize,
    pub statements: usize,
    pub elapsed: Duration,
    pub violations: usize,
}

/// The Bank Data API transaction as the bank's systems push it to `/ingest`.
pub fn ingest_record(t: &BankTransaction) -> Value {
    json!({
        "uniqueId": t.transaction_id,
        "transactionAmount": t.amount,
        "transactionType": t.kind,
        "transactionStatus": "posted",
        "datePosted": t.booked_at,
        "description": t.description,
        "referenceNumber": t.reference,
        "payee": {"payeeDescription": t.counterparty},
        "runningBalance": t.balance_after,
    })
}

fn step(progress: bool, text: &str) {
    if progress {
        println!("==> {text}");
    }
}

pub(crate) fn bar(progress: bool, len: u64, what: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("    {msg} [{bar:30}] {pos}/{len} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Waits until Banking Service holds `target` transactions for the account.
async fn watch_delivery(
    stack: &LocalStack,
    id: uuid::Uuid,
    target: usize,
    pb: &ProgressBar,
    limit: Duration,
) -> Result<usize> {
    let sage = stack.sage_client();
    let started = Instant::now();
    loop {
        let held = sage
            .account(id)
            .await
            .map(|a| a.transaction_count)
            .unwrap_or(0);
        pb.set_position(held as u64);
        if held >= target {
            pb.finish();
            return Ok(held);
        }
        if started.elapsed() > limit {
            pb.abandon();
            bail!("only {held} of {target} transactions reached Banking Service within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs the demo against a started stack. `new_transactions` are pushed after the backfill.
pub async fn run(
    stack: &LocalStack,
    new_transactions: usize,
    progress: bool,
) -> Result<DemoReport> {
    let started = Instant::now();
    // Banking Service (built in, or the external sandbox of `--sage`) and the demo bank.
    let sage = stack.sage_client();
    let bank = stack.sandbox.client();

    step(
        progress,
        "Onboarding: the customer `demo` connects Demo Bank from a Sage product",
    );
    let onboard = sage
        .onboard(&OnboardOptions {
            bank_id: Some(stack.bank_id),
            consent: AccountPick::All,
            create: AccountPick::First,
            ..OnboardOptions::default()
        })
        .await
        .map_err(|e| anyhow!("onboarding failed: {e}"))?;
    let created = onboard
        .created
        .first()
        .ok_or_else(|| anyhow!("onboarding created no account"))?;
    let id = created.bank_account_id;
    let external_id = created.external_id.clone();
    if progress {
        println!(
            "    /auth -> bank login -> PATCH /v1/authorisations/{} with {} account(s) -> back to Sage",
            onboard.authorisation_id,
            onboard.patched_accounts.len()
        );
        println!(
            "    the product created bank account {id} (externalId {external_id}), status pending"
        );
    }

    step(
        progress,
        "Backfill: the connector pulls the account's history from its start date",
    );
    let parse = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
    let start = parse(&created.account.requested_start_date)
        .ok_or_else(|| anyhow!("unreadable requestedStartDate"))?;
    let history: Vec<BankTransaction> = bank
        .bank_transactions(&external_id)
        .await
        .map_err(|e| anyhow!("reading the demo bank: {e}"))?
        .into_iter()
        .filter(|t| t.status == "booked" && parse(&t.booked_at).is_some_and(|b| b >= start))
        .collect();
    let pb = bar(progress, history.len() as u64, "delivered");
    let backfilled =
        watch_delivery(stack, id, history.len(), &pb, Duration::from_secs(180)).await?;
    if progress {
        println!("    {backfilled} transactions of history delivered");
    }

    step(
        progress,
        &format!("Ingest: the bank pushes {new_transactions} new transactions"),
    );
    let fresh = bank
        .generate_transactions(&external_id, new_transactions)
        .await
        .map_err(|e| anyhow!("generating transactions: {e}"))?;
    let records: Vec<Value> = fresh
        .iter()
        .filter(|t| t.status == "booked")
        .map(ingest_record)
        .collect();
    let pushed = records.len();
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/ingest", stack.api_url))
        .header("x-api-key", LOCAL_INGEST_KEY)
        .json(&json!({"externalId": external_id, "transactions": records}))
        .send()
        .await?
        .error_for_status()
        .context("POST /ingest")?
        .json()
        .await?;
    if progress {
        println!(
            "    /ingest accepted {} (duplicates {}, rejected {})",
            answer["data"]["accepted"], answer["data"]["duplicates"], answer["data"]["rejected"]
        );
    }
    let pb = bar(progress, (backfilled + pushed) as u64, "delivered");
    let delivered = watch_delivery(
        stack,
        id,
        backfilled + pushed,
        &pb,
        Duration::from_secs(120),
    )
    .await?;

    let statements = sage
        .statements(Some(id))
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let violations = sage.violations().await.map_err(|e| anyhow!("{e}"))?;
    let report = DemoReport {
        bank_account_id: id,
        external_id,
        backfilled,
        pushed,
        delivered,
        statements: statements.len(),
        elapsed: started.elapsed(),
        violations: violations.len(),
    };
    if progress {
        println!("==> Done in {:.1} s", report.elapsed.as_secs_f64());
        println!(
            "    {} transactions held by Banking Service for {} ({} backfilled + {} pushed) in {} statement(s); {} contract violation(s)",
            report.delivered,
            report.bank_account_id,
            report.backfilled,
            report.pushed,
            report.statements,
            report.violations
        );
        for v in violations.iter().take(5) {
            println!("    violation: {v:?}");
        }
    }
    Ok(report)
}

/// What the Payments Out part of the demo saw.
#[derive(Debug, Clone)]
pub struct PayoutsReport {
    pub subscription_id: uuid::Uuid,
    pub batch_id: String,
    pub batch_status: String,
    pub paid: usize,
    pub elapsed: Duration,
    pub violations: usize,
}

/// Payments Out end to end: a product subscribes, its customer authorises payments at the bank
/// through the connector's link, the product registers the account to pay from and sends a
/// batch of `payments`, which the connector checks, submits to the bank and reports `Paid`.
pub async fn payments_out(
    stack: &LocalStack,
    payments: usize,
    progress: bool,
) -> Result<PayoutsReport> {
    use crate::payments_out as po_flow;
    let started = Instant::now();
    let po = sandbox::payments_out::client::PoClient::new(stack.sandbox.base_url());
    step(
        progress,
        "Payments Out: a product subscribes; the customer authorises payments at Demo Bank",
    );
    let (subscription_id, debtor) = po_flow::payer(stack, &po).await?;
    if progress {
        println!(
            "    subscription {subscription_id}: /subscription -> link -> /authorise -> bank login -> Authorised"
        );
        println!("    debtoraccountputs answered Active: debtorAccountId {debtor}");
    }
    step(
        progress,
        &format!("Payments Out: the product sends a batch of {payments} payment(s)"),
    );
    let date = (chrono::Utc::now() + chrono::TimeDelta::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let list: Vec<Value> = (0..payments)
        .map(|i| {
            let reference = format!("BILL-{}", 10_000 + i);
            po_flow::payment(&reference, &format!("{}.00", 100 + i), &debtor, &date)
        })
        .collect();
    let batch =
        json!({"externalId": "AP-RUN-DEMO", "subscriptionId": subscription_id, "payments": list});
    let answer = po
        .submit_batch(&batch, None, false)
        .await
        .map_err(|e| anyhow!("the product's batch: {e}"))?;
    let batch_id = answer.body["data"]["batchId"]
        .as_str()
        .ok_or_else(|| anyhow!("no batchId in {:?}", answer.body))?
        .to_string();
    let done = po_flow::batch_at_sage(
        &po,
        &batch_id,
        &["Paid", "PartiallyPaid", "Failed", "Rejected", "Cancelled"],
    )
    .await?;
    let paid = done["payments"]
        .as_array()
        .map_or(0, |p| p.iter().filter(|p| p["status"] == "Paid").count());
    let violations = po.violations().await.map_err(|e| anyhow!("{e}"))?;
    let report = PayoutsReport {
        subscription_id,
        batch_id,
        batch_status: done["status"].as_str().unwrap_or("?").to_string(),
        paid,
        elapsed: started.elapsed(),
        violations: violations.as_array().map_or(0, Vec::len),
    };
    if progress {
        println!(
            "    batch {}: checked, PATCHed Processing, submitted to the bank, {} of {payments} Paid; the batch is {} ({:.1} s)",
            report.batch_id,
            report.paid,
            report.batch_status,
            report.elapsed.as_secs_f64()
        );
        println!(
            "    {} Payments Out contract violation(s)",
            report.violations
        );
    }
    Ok(report)
}
