//! Payments Out: `payouts subscription` and `payouts batch` — what the connector's table holds
//! about a subscription (its authorisation link, its binding, its debtor accounts) and about a
//! batch (its record, one record per payment, and whether `po-reconciler` still watches it).
//! Read-only: nothing is called at Payments Out or at the bank.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use connector_aws::Table;
use connector_domain::payouts::authorise::{Binding, LinkRecord, LinkState};
use connector_domain::payouts::batches::{BatchRecord, PaymentRecord};
use connector_domain::payouts::parties::DebtorAccount;
use connector_domain::payouts::status::final_batch_status;
use connector_domain::ports::{OpenItem, OpenKind};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::account::{enum_text, text};
use crate::config::Config;
use crate::{OpsError, Result, print_json};

const ABOUT: &str = "Show what the connector holds about a Payments Out subscription or batch";
const LONG: &str = "\
Show what the connector's table holds about Payments Out work (docs/payments-out.md §6–§11),
without calling Payments Out or the bank:

  subscription <subscriptionId>  its authorisation link, its binding to the customer's consent
                                 and its debtor accounts
  batch <batchId>                the batch's record, each payment's record, and whether
                                 po-reconciler still watches the batch

Needs TABLE_NAME (and AWS credentials). --json prints one JSON object.";

#[derive(Debug, Args)]
#[command(about = ABOUT, long_about = LONG)]
pub struct PayoutsArgs {
    #[command(subcommand)]
    pub what: PayoutsCommand,
}

#[derive(Debug, Subcommand)]
pub enum PayoutsCommand {
    Subscription(SubscriptionArgs),
    Batch(BatchArgs),
}

const SUBSCRIPTION_ABOUT: &str = "Show a subscription's link, binding and debtor accounts";
const SUBSCRIPTION_LONG: &str = "\
Show a Payments Out subscription as the connector holds it:

- its authorisation link (docs/payments-out.md §6–§7): the link id, when it was issued and when
  it expires, whether it is open, expired or used, the customer's decision (Authorised, Pending
  or Rejected, with its reason and time), whether Payments Out has that decision (the PATCH
  succeeded; if not, po-worker or po-reconciler sends it), and whether po-reconciler still
  watches the link;
- its binding (Authorised or Pending): the bank's customer id and consent id;
- its debtor accounts (§8): id, status (Active, Rejected, Deleted), reason, currency.

A subscription the table does not know at all was never onboarded here: Payments Out has not
delivered it, po-worker has not worked it yet (see the Payments Out queue and DLQ), or it was
rejected by a provider rule before a link was minted (po-worker's log says which rule).

Needs TABLE_NAME. --json prints one JSON object.

Example: connector-ops payouts subscription 8d1f3a52-6c0e-4c1b-9a57-2f1e0b7c4d93
         connector-ops payouts subscription 8d1f3a52-6c0e-4c1b-9a57-2f1e0b7c4d93 --json";

#[derive(Debug, Args)]
#[command(about = SUBSCRIPTION_ABOUT, long_about = SUBSCRIPTION_LONG)]
pub struct SubscriptionArgs {
    /// subscriptionId (UUID).
    pub subscription_id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

const BATCH_ABOUT: &str = "Show a batch's record, its payments and whether it is still watched";
const BATCH_LONG: &str = "\
Show a Payments Out batch as the connector holds it (docs/payments-out.md §9–§11):

- the batch's record: the status po-worker decided when it checked the batch (Processing or
  Rejected) with its reason, the product (application), when it was checked, how many
  payments; and the batch's final status once every payment is terminal;
- one line per payment: payment id, status, reason (the failed check or the bank's), whether it
  was submitted to the bank, whether Payments Out has its status (patched), the last bank event
  applied (eventSeq), and when it completed;
- whether po-reconciler still watches the batch (PO#OPEN) and when it looks next: a batch not
  final after STUCK_AFTER_S (900 s) has its submitted payments read at the bank, its unsubmitted
  ones submitted and what Payments Out lacks PATCHed, every 5 minutes until it is done.

A batch the table does not know was never checked here: po-worker has not worked its
notification yet (see the Payments Out queue and DLQ), or it was already past Received at
Payments Out when it came.

Needs TABLE_NAME. --json prints one JSON object.

Example: connector-ops payouts batch 5b0e2d7a-91c4-4f3e-8a26-7d9c1e4b0f18
         connector-ops payouts batch 5b0e2d7a-91c4-4f3e-8a26-7d9c1e4b0f18 --json";

#[derive(Debug, Args)]
#[command(about = BATCH_ABOUT, long_about = BATCH_LONG)]
pub struct BatchArgs {
    /// batchId (UUID).
    pub batch_id: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn payouts(config: &Config, args: PayoutsArgs) -> Result<()> {
    match args.what {
        PayoutsCommand::Subscription(a) => subscription(config, a).await,
        PayoutsCommand::Batch(a) => batch(config, a).await,
    }
}

/// A UUID argument, or a usage error naming what it should be.
fn uuid_arg(arg: &str, what: &str) -> Result<Uuid> {
    Uuid::parse_str(arg.trim())
        .map_err(|_| OpsError::Usage(format!("`{arg}` is not a {what} (a UUID)")))
}

/// `2025-03-04T09:00:00Z (3 h ago)`, `… (in 6 days)`, or `-`.
fn when(now: DateTime<Utc>, v: &Value) -> String {
    let Some(t) = v
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return text(v);
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds();
    let span = |s: i64| match s {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    };
    let rel = if secs >= 0 {
        format!("{} ago", span(secs))
    } else {
        format!("in {}", span(-secs))
    };
    format!("{} ({rel})", text(v))
}

fn yes_no(v: &Value) -> &'static str {
    if v == &json!(true) { "yes" } else { "no" }
}

fn watched_json(item: Option<&OpenItem>) -> Value {
    json!({
        "watched": item.is_some(),
        "dueAt": item.map(|i| i.due_at),
    })
}

fn link_json(record: &LinkRecord, open: Option<&OpenItem>, now: DateTime<Utc>) -> Value {
    let state = match record.state(now) {
        LinkState::Open => "open",
        LinkState::Expired => "expired",
        LinkState::Completed => "used",
    };
    json!({
        "linkId": record.link.link_id,
        "issuedAt": record.link.issued_at,
        "expiresAt": record.link.expires_at,
        "state": state,
        "used": record.completion.is_some(),
        "loginStartedAt": record.session.as_ref().map(|s| s.started_at),
        "decision": record.completion.as_ref().map(|c| json!({
            "status": enum_text(serde_json::to_value(c.status)),
            "reason": c.reason,
            "decidedAt": c.completed_at,
        })),
        "paymentsOutHasDecision": record.completion.is_some() && record.patched,
        "reconciler": watched_json(open),
    })
}

fn binding_json(b: &Binding) -> Value {
    json!({
        "customerId": b.customer_id,
        "consentId": b.consent_id,
        "boundAt": b.bound_at,
    })
}

fn debtor_json(d: &DebtorAccount) -> Value {
    json!({
        "debtorAccountId": d.debtor_account_id,
        "status": d.status.as_str(),
        "reason": d.status_reason,
        "currency": d.currency,
        "bankAccountId": d.bank_account_id,
        "updatedAt": d.updated_at,
    })
}

async fn subscription_view(table: &Table, id: Uuid, now: DateTime<Utc>) -> Result<Value> {
    let link = table
        .link_for(id)
        .await
        .context("reading the subscription's link")?;
    // The record under the link id holds the login and the decision; the one under the
    // subscription only the link (a crash between the two writes leaves the second missing).
    let (record, open) = match &link {
        None => (None, None),
        Some(l) => {
            let record = table
                .link_record(&l.link_id)
                .await
                .context("reading the link's record")?
                .unwrap_or_else(|| LinkRecord {
                    link: l.clone(),
                    session: None,
                    completion: None,
                    patched: false,
                });
            let open = table
                .open_item(OpenKind::Link, &l.link_id)
                .await
                .context("reading the reconciler's open work")?;
            (Some(record), open)
        }
    };
    let binding = table
        .binding(id)
        .await
        .context("reading the subscription's binding")?;
    let mut debtors = table
        .debtors(id)
        .await
        .context("reading the subscription's debtor accounts")?;
    if record.is_none() && binding.is_none() && debtors.is_empty() {
        return Err(OpsError::Failed(anyhow::anyhow!(
            "no Payments Out subscription {id} in the table (no link, binding or debtor account): \
             it was never onboarded here — not delivered or not worked yet (see the Payments Out \
             queue and DLQ), or rejected by a provider rule before a link was minted (po-worker's log)"
        )));
    }
    debtors.sort_by(|a, b| a.debtor_account_id.cmp(&b.debtor_account_id));
    Ok(json!({
        "subscriptionId": id,
        "link": record.as_ref().map(|r| link_json(r, open.as_ref(), now)),
        "binding": binding.as_ref().map(binding_json),
        "debtorAccounts": debtors.iter().map(debtor_json).collect::<Vec<_>>(),
    }))
}

fn print_subscription(v: &Value, now: DateTime<Utc>) {
    let line = |k: &str, val: String| println!("  {k:<18} {val}");
    println!("Payments Out subscription {}", text(&v["subscriptionId"]));
    match &v["link"] {
        Value::Null => line("link", "none (no authorisation link minted)".into()),
        l => {
            line("link", text(&l["linkId"]));
            line("  issued", when(now, &l["issuedAt"]));
            line("  expires", when(now, &l["expiresAt"]));
            line("  state", text(&l["state"]));
            if !l["loginStartedAt"].is_null() {
                line(
                    "  bank login",
                    format!("begun {}", when(now, &l["loginStartedAt"])),
                );
            }
            match &l["decision"] {
                Value::Null => line("  decision", "none yet".into()),
                d => {
                    let reason = match &d["reason"] {
                        Value::Null => String::new(),
                        r => format!(" ({})", text(r)),
                    };
                    line(
                        "  decision",
                        format!(
                            "{}{reason}, {}",
                            text(&d["status"]),
                            when(now, &d["decidedAt"])
                        ),
                    );
                    line(
                        "  at Payments Out",
                        if l["paymentsOutHasDecision"] == json!(true) {
                            "yes (PATCHed)".into()
                        } else {
                            "NO: not PATCHed yet (po-worker or po-reconciler sends it)".into()
                        },
                    );
                }
            }
            line("  reconciler", watched_text(&l["reconciler"], now));
        }
    }
    match &v["binding"] {
        Value::Null => line("binding", "none (no consent bound)".into()),
        b => {
            line("binding", format!("customer {}", text(&b["customerId"])));
            line("  consent", text(&b["consentId"]));
            line("  bound", when(now, &b["boundAt"]));
        }
    }
    let debtors = v["debtorAccounts"].as_array().cloned().unwrap_or_default();
    line("debtor accounts", debtors.len().to_string());
    for d in &debtors {
        println!(
            "    {:<40} {:<10} {:<28} {}",
            text(&d["debtorAccountId"]),
            text(&d["status"]),
            text(&d["reason"]),
            text(&d["currency"])
        );
    }
}

fn watched_text(w: &Value, now: DateTime<Utc>) -> String {
    if w["watched"] == json!(true) {
        format!(
            "watched by po-reconciler, next look {}",
            when(now, &w["dueAt"])
        )
    } else {
        "not watched (po-reconciler is done with it)".into()
    }
}

pub async fn subscription(config: &Config, args: SubscriptionArgs) -> Result<()> {
    let id = uuid_arg(&args.subscription_id, "subscriptionId")?;
    let (_, table) = config.sdk_and_table().await?;
    let now = Utc::now();
    let view = subscription_view(&table, id, now).await?;
    if args.json {
        return print_json(&view);
    }
    print_subscription(&view, now);
    Ok(())
}

/// `decision_sent`: whether the batch's decision PATCH was sent, without which no status the
/// check decided is at Payments Out yet.
fn payment_json(p: &PaymentRecord, decision_sent: bool) -> Value {
    json!({
        "paymentId": p.payment_id,
        "status": enum_text(serde_json::to_value(p.status)),
        "reason": p.reason,
        "submitted": p.submitted,
        "patched": p.patched && decision_sent,
        "eventSeq": p.event_seq,
        "completedAt": p.completed_at,
    })
}

fn batch_json(
    id: Uuid,
    record: Option<&BatchRecord>,
    payments: &[PaymentRecord],
    open: Option<&OpenItem>,
) -> Value {
    let statuses: Vec<_> = payments.iter().map(|p| p.status).collect();
    let decision_sent = record.is_some_and(|r| r.decision_patched);
    json!({
        "batchId": id,
        "recorded": record.is_some(),
        "subscriptionId": record.and_then(|r| r.subscription_id),
        "application": record.and_then(|r| r.application.clone()),
        "status": record.map(|r| enum_text(serde_json::to_value(r.status))),
        "reason": record.and_then(|r| r.reason.clone()),
        "paymentCount": record.map(|r| r.payment_count),
        "checkedAt": record.map(|r| r.checked_at),
        "finalStatus": final_batch_status(&statuses).map(|s| enum_text(serde_json::to_value(s))),
        "paymentsTerminal": statuses.iter().filter(|s| s.is_terminal()).count(),
        "decisionPatched": decision_sent,
        "watchedPayments": record.is_some_and(|r| r.watched_payments),
        "paymentsPatched": payments.iter().filter(|p| p.patched && decision_sent).count(),
        "payments": payments
            .iter()
            .map(|p| payment_json(p, decision_sent))
            .collect::<Vec<_>>(),
        "reconciler": watched_json(open),
    })
}

fn print_batch(v: &Value, now: DateTime<Utc>) {
    let line = |k: &str, val: String| println!("  {k:<18} {val}");
    println!("Payments Out batch {}", text(&v["batchId"]));
    if v["recorded"] != json!(true) {
        line(
            "record",
            "MISSING: payments recorded but not the batch (po-worker stopped between the two \
             writes; its retry or po-reconciler writes it)"
                .into(),
        );
    } else {
        let reason = match &v["reason"] {
            Value::Null => String::new(),
            r => format!(" ({})", text(r)),
        };
        line(
            "status",
            format!("{}{reason} (as checked)", text(&v["status"])),
        );
        line("subscription", text(&v["subscriptionId"]));
        line("application", text(&v["application"]));
        line("checked", when(now, &v["checkedAt"]));
    }
    let payments = v["payments"].as_array().cloned().unwrap_or_default();
    line(
        "final status",
        match &v["finalStatus"] {
            Value::Null => format!(
                "none yet: {} of {} payments terminal",
                text(&v["paymentsTerminal"]),
                payments.len()
            ),
            s => text(s),
        },
    );
    line(
        "payments",
        format!(
            "{} recorded (of {}), {} at Payments Out",
            payments.len(),
            text(&v["paymentCount"]),
            text(&v["paymentsPatched"])
        ),
    );
    line("reconciler", watched_text(&v["reconciler"], now));
    if !payments.is_empty() {
        println!(
            "    {:<36}  {:<10}  {:<9}  {:<7}  {:<8}  {:<24}  REASON",
            "PAYMENT", "STATUS", "SUBMITTED", "PATCHED", "EVENTSEQ", "COMPLETED AT"
        );
    }
    for p in &payments {
        println!(
            "    {:<36}  {:<10}  {:<9}  {:<7}  {:<8}  {:<24}  {}",
            text(&p["paymentId"]),
            text(&p["status"]),
            yes_no(&p["submitted"]),
            yes_no(&p["patched"]),
            text(&p["eventSeq"]),
            text(&p["completedAt"]),
            text(&p["reason"])
        );
    }
}

pub async fn batch(config: &Config, args: BatchArgs) -> Result<()> {
    let id = uuid_arg(&args.batch_id, "batchId")?;
    let (_, table) = config.sdk_and_table().await?;
    let now = Utc::now();
    let record = table
        .batch_record(id)
        .await
        .context("reading the batch's record")?;
    let payments = table
        .batch_payments(id)
        .await
        .context("reading the batch's payments")?;
    if record.is_none() && payments.is_empty() {
        return Err(OpsError::Failed(anyhow::anyhow!(
            "no Payments Out batch {id} in the table: po-worker never checked it — its \
             notification not delivered or not worked yet (see the Payments Out queue and DLQ), \
             or the batch was already past Received at Payments Out"
        )));
    }
    let open = table
        .open_item(OpenKind::Batch, &id.to_string())
        .await
        .context("reading the reconciler's open work")?;
    let view = batch_json(id, record.as_ref(), &payments, open.as_ref());
    if args.json {
        return print_json(&view);
    }
    print_batch(&view, now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_says_how_long_ago_or_until() {
        let now: DateTime<Utc> = "2025-03-04T12:00:00Z".parse().unwrap();
        assert_eq!(
            when(now, &json!("2025-03-04T09:00:00Z")),
            "2025-03-04T09:00:00Z (3 h ago)"
        );
        assert_eq!(
            when(now, &json!("2025-03-11T12:00:00Z")),
            "2025-03-11T12:00:00Z (in 7 days)"
        );
        assert_eq!(when(now, &Value::Null), "-");
    }

    #[test]
    fn a_malformed_id_is_a_usage_error() {
        let e = uuid_arg("batch-1", "batchId").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("batchId"), "{e}");
    }

    #[test]
    fn a_batch_view_has_its_final_status_once_every_payment_is_terminal() {
        use connector_domain::payouts::status::{BatchStatus, PaymentStatus};
        let id = Uuid::nil();
        let pay = |status, patched| PaymentRecord {
            payment_id: Uuid::new_v4(),
            batch_id: id,
            status,
            reason: None,
            completed_at: None,
            submission: None,
            submitted: true,
            event_seq: 3,
            patched,
            returned: None,
            return_told: false,
            version: 1,
        };
        let record = BatchRecord {
            batch_id: id,
            subscription_id: None,
            application: Some("sage.ap".into()),
            status: BatchStatus::Processing,
            reason: None,
            payment_count: 2,
            checked_at: "2025-03-04T09:00:00Z".parse().unwrap(),
            decision_patched: true,
            watched_payments: true,
        };
        let open = OpenItem {
            kind: OpenKind::Batch,
            id: id.to_string(),
            due_at: "2025-03-04T09:15:00Z".parse().unwrap(),
        };
        let moving = [
            pay(PaymentStatus::Paid, true),
            pay(PaymentStatus::Processing, false),
        ];
        let v = batch_json(id, Some(&record), &moving, Some(&open));
        assert_eq!(v["status"], "Processing", "{v}");
        assert!(v["finalStatus"].is_null(), "{v}");
        assert_eq!(v["paymentsTerminal"], 1, "{v}");
        assert_eq!(v["paymentsPatched"], 1, "{v}");
        assert_eq!(v["reconciler"]["watched"], true, "{v}");
        assert_eq!(v["payments"][0]["eventSeq"], 3, "{v}");
        let done = [
            pay(PaymentStatus::Paid, true),
            pay(PaymentStatus::Failed, true),
        ];
        let v = batch_json(id, Some(&record), &done, None);
        assert_eq!(v["finalStatus"], "PartiallyPaid", "{v}");
        assert_eq!(v["reconciler"]["watched"], false, "{v}");
    }
}
