//! Accounts: `show`, `parked`, `repush`.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use connector_aws::Table;
use connector_aws::transactions::ParkedRecord;
use connector_domain::account::{Account, AccountStatus, Claim};
use connector_domain::messages::{Kick, KickReason};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::{Config, require_url};
use crate::terminal::confirm;
use crate::{OpsError, Result, count, print_json};

const SHOW_ABOUT: &str = "Show where an account stands in the pipeline";
const SHOW_LONG: &str = "\
Show where an account stands in the pipeline: its status, the statement in flight (the claim:
statement id, kind, phase, since when, failed submissions, polls, and whether it is stale), how
many transactions are still to deliver, the delivered-through watermark and the last success,
the backfill state, and its parked records with their reasons.

The argument is a bankAccountId (Banking Service's UUID) or the bank's externalId; an
externalId linked by several companies shows each of its accounts.

Needs TABLE_NAME (and AWS credentials). --json prints a JSON array, one object per account.

Example: connector-ops show 3f2b6c1e-0d7a-4b8e-9a51-2c4f0e9d8b17
         connector-ops show acc_5QH7K2 --json";

#[derive(Debug, Args)]
#[command(about = SHOW_ABOUT, long_about = SHOW_LONG)]
pub struct ShowArgs {
    /// bankAccountId or externalId.
    pub account: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Show at most this many parked records per account.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub parked_limit: usize,
}

const PARKED_ABOUT: &str = "List parked records (never delivered) with their reasons";
const PARKED_LONG: &str = "\
List parked records: transactions that will never be delivered and were set aside with a
reason instead of being dropped — TransactionTooOld (Banking Service's 2-week rule),
AccountCancelled (offboarded with work pending), a statement that can never be built (e.g.
NoBalance: the bank sent no balance), or Banking Service's refusal of a statement as invalid.
They are listed in key order (account, then uniqueId) and expire after 180 days.

Needs TABLE_NAME. --json prints a JSON array.

Example: connector-ops parked --limit 50
         connector-ops parked --account 3f2b6c1e-0d7a-4b8e-9a51-2c4f0e9d8b17 --json";

#[derive(Debug, Args)]
#[command(about = PARKED_ABOUT, long_about = PARKED_LONG)]
pub struct ParkedArgs {
    /// Only this account (bankAccountId or externalId).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// List at most this many records.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

const REPUSH_ABOUT: &str = "Wake an account's pipeline up again (a kick on its FIFO group)";
const REPUSH_LONG: &str = "\
Wake an account's pipeline up: send a kick (reason `operator`) to the push queue in the
account's FIFO group, exactly as ingest, the poller and the reconciler do. The statement pusher
then claims the account and posts what is pending. A kick is always safe: when a statement is
in flight the pusher leaves it alone, and the poller kicks again when it finishes.

A claim with no progress for RECONCILE_STALE_AFTER_S (900 s) is stale. If its pusher or poller
died, the kick arms the claim's watchdog, which takes the dead step over a moment later (and the
reconciler re-drives it on its next run). A claim that stays stale while polls keep answering
`processing` is a statement stuck at Banking Service. --clear-claim removes a stale claim (only
if it has not moved since it was read) and then kicks; it asks for confirmation unless --yes. Clearing is refused for a claim that is not stale. After a clear, the
next statement is rebuilt from the watermark; transactions the abandoned statement did deliver
come back as duplicates and count as delivered (never stored twice). If that statement is still
processing at Banking Service, the next POST is answered 409 and retried until it finishes.

Needs TABLE_NAME and PUSH_QUEUE_URL.

Example: connector-ops repush 3f2b6c1e-0d7a-4b8e-9a51-2c4f0e9d8b17
         connector-ops repush 3f2b6c1e-0d7a-4b8e-9a51-2c4f0e9d8b17 --clear-claim --yes";

#[derive(Debug, Args)]
#[command(about = REPUSH_ABOUT, long_about = REPUSH_LONG)]
pub struct RepushArgs {
    /// bankAccountId (UUID).
    pub bank_account_id: String,
    /// Remove the account's stale claim first.
    #[arg(long)]
    pub clear_claim: bool,
    /// Do not ask for confirmation (needed without a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Accounts named by a bankAccountId or an externalId (live first, then newest).
pub async fn resolve(table: &Table, arg: &str) -> Result<Vec<Account>> {
    let arg = arg.trim();
    if let Ok(id) = Uuid::parse_str(arg)
        && let Some(a) = table.get_account(id).await.context("reading the account")?
    {
        return Ok(vec![a]);
    }
    let links = table
        .accounts_for_external_id(arg)
        .await
        .context("reading the externalId's accounts")?;
    let mut out = Vec::new();
    for link in links {
        if let Some(a) = table
            .get_account(link.bank_account_id)
            .await
            .context("reading the account")?
        {
            out.push(a);
        }
    }
    if out.is_empty() {
        return Err(OpsError::Failed(anyhow::anyhow!(
            "no account with bankAccountId or externalId `{arg}` in the table"
        )));
    }
    out.sort_by_key(|a| {
        (
            a.status == AccountStatus::Cancelled,
            std::cmp::Reverse(a.created_at),
        )
    });
    Ok(out)
}

/// The serialised name of an enum value (`authRequired`, `posting`, ...).
pub(crate) fn enum_text(v: serde_json::Result<Value>) -> String {
    match v {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// When the claim last moved (as the reconciler measures it).
fn last_progress(claim: &Claim) -> DateTime<Utc> {
    claim.last_progress()
}

fn is_stale(claim: &Claim, config: &Config, now: DateTime<Utc>) -> bool {
    let stale =
        chrono::TimeDelta::from_std(config.stale_after()).unwrap_or(chrono::TimeDelta::minutes(15));
    now - last_progress(claim) >= stale
}

fn claim_json(claim: &Claim, config: &Config, now: DateTime<Utc>) -> Value {
    json!({
        "statementId": claim.statement_id(),
        "kind": claim.kind.name(),
        "phase": claim.phase.name(),
        "since": claim.since,
        "postedAt": claim.posted().map(|p| p.posted_at),
        "failedSubmissions": claim.attempt,
        "polls": claim.poll_attempt(),
        "transactionCount": claim.transaction_count(),
        "overdue": claim.posted().is_some_and(|p| p.overdue),
        "secondsWithoutProgress": (now - last_progress(claim)).num_seconds(),
        "stale": is_stale(claim, config, now),
    })
}

fn parked_json(p: &ParkedRecord) -> Value {
    json!({
        "bankAccountId": p.bank_account_id,
        "uniqueId": p.unique_id,
        "reason": p.reason,
        "parkedAt": p.parked_at,
    })
}

async fn account_view(
    table: &Table,
    config: &Config,
    a: &Account,
    parked_limit: usize,
    now: DateTime<Utc>,
) -> Result<Value> {
    let id = a.bank_account_id;
    let pending = table
        .count_pending(id, a.delivered_through.as_deref())
        .await
        .context("counting pending transactions")?;
    // One more than shown tells whether there are more.
    let mut parked = table
        .parked_records(Some(id), parked_limit.saturating_add(1))
        .await
        .context("listing parked records")?;
    let more = parked.len() > parked_limit;
    parked.truncate(parked_limit);
    Ok(json!({
        "bankAccountId": id,
        "externalId": a.external_id,
        "bankId": a.bank_id,
        "status": enum_text(serde_json::to_value(a.status)),
        "createdAt": a.created_at,
        "cancelledAt": a.cancelled_at,
        "requestedStartDate": a.requested_start_date,
        "backfill": enum_text(serde_json::to_value(a.backfill)),
        "backfillCursor": a.backfill_cursor,
        "claim": a.in_flight.as_ref().map(|c| claim_json(c, config, now)),
        "pendingCount": pending,
        "deliveredThrough": a.delivered_through,
        "deliveredCount": a.delivered_count,
        "newestDelivered": a.newest_delivered,
        "lastSuccessAt": a.last_success_at,
        "horizon": a.horizon,
        "ingestsRunning": a.live_ingests(now),
        "authRequiredOwed": a.auth_required_owed,
        "balanceOwed": a.balance_owed(),
        "parked": parked.iter().map(parked_json).collect::<Vec<_>>(),
        "moreParked": more,
    }))
}

pub(crate) fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(crate) fn ago(now: DateTime<Utc>, v: &Value) -> String {
    let Some(t) = v
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
    else {
        return text(v);
    };
    let secs = (now - t.with_timezone(&Utc)).num_seconds();
    let rel = match secs {
        s if s < 0 => "in the future".to_string(),
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    };
    format!("{} ({rel})", text(v))
}

fn print_account(v: &Value, now: DateTime<Utc>) {
    let line = |k: &str, val: String| println!("  {k:<18} {val}");
    println!(
        "Account {} (externalId {})",
        text(&v["bankAccountId"]),
        text(&v["externalId"])
    );
    line("status", text(&v["status"]));
    line("bankId", text(&v["bankId"]));
    line("created", ago(now, &v["createdAt"]));
    if !v["cancelledAt"].is_null() {
        line("cancelled", ago(now, &v["cancelledAt"]));
    }
    line("backfill", text(&v["backfill"]));
    match &v["claim"] {
        Value::Null => line("in flight", "nothing (no claim)".into()),
        c => {
            line(
                "in flight",
                format!(
                    "{} statement {}, phase {}{}",
                    text(&c["kind"]),
                    text(&c["statementId"]),
                    text(&c["phase"]),
                    if c["overdue"] == json!(true) {
                        ", OVERDUE"
                    } else {
                        ""
                    }
                ),
            );
            line("  since", ago(now, &c["since"]));
            if !c["postedAt"].is_null() {
                line("  posted", ago(now, &c["postedAt"]));
            }
            line(
                "  attempts",
                format!(
                    "{} failed submissions, {} polls, {} transactions",
                    text(&c["failedSubmissions"]),
                    text(&c["polls"]),
                    text(&c["transactionCount"])
                ),
            );
            if c["stale"] == json!(true) {
                line(
                    "  STALE",
                    format!(
                        "no progress for {} s: see `connector-ops repush --clear-claim`",
                        text(&c["secondsWithoutProgress"])
                    ),
                );
            }
        }
    }
    line(
        "pending",
        format!("{} transactions to deliver", text(&v["pendingCount"])),
    );
    line(
        "delivered",
        format!("{} transactions", text(&v["deliveredCount"])),
    );
    line("delivered through", text(&v["deliveredThrough"]));
    line("newest delivered", text(&v["newestDelivered"]));
    line("last success", ago(now, &v["lastSuccessAt"]));
    line("ingests running", text(&v["ingestsRunning"]));
    if v["authRequiredOwed"] == json!(true) {
        line("owed", "an authRequired statement".into());
    }
    if v["balanceOwed"] == json!(true) {
        line("owed", "a balance statement".into());
    }
    let parked = v["parked"].as_array().cloned().unwrap_or_default();
    let more = if v["moreParked"] == json!(true) {
        " (more not shown)"
    } else {
        ""
    };
    line("parked", format!("{}{more}", parked.len()));
    for p in &parked {
        println!(
            "    {:<36} {:<24} {}",
            text(&p["uniqueId"]),
            text(&p["reason"]),
            text(&p["parkedAt"])
        );
    }
}

pub async fn show(config: &Config, args: ShowArgs) -> Result<()> {
    let (_, table) = config.sdk_and_table().await?;
    let now = Utc::now();
    let accounts = resolve(&table, &args.account).await?;
    let mut views = Vec::new();
    for a in &accounts {
        views.push(account_view(&table, config, a, args.parked_limit, now).await?);
    }
    if args.json {
        return print_json(&Value::Array(views));
    }
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_account(v, now);
    }
    Ok(())
}

pub async fn parked(config: &Config, args: ParkedArgs) -> Result<()> {
    let (_, table) = config.sdk_and_table().await?;
    let records = match &args.account {
        None => table
            .parked_records(None, args.limit)
            .await
            .context("listing parked records")?,
        Some(arg) => {
            let mut all = Vec::new();
            for a in resolve(&table, arg).await? {
                let left = args.limit.saturating_sub(all.len());
                if left == 0 {
                    break;
                }
                all.extend(
                    table
                        .parked_records(Some(a.bank_account_id), left)
                        .await
                        .context("listing parked records")?,
                );
            }
            all
        }
    };
    if args.json {
        return print_json(&Value::Array(records.iter().map(parked_json).collect()));
    }
    if records.is_empty() {
        println!("No parked records.");
        return Ok(());
    }
    println!(
        "{:<36}  {:<36}  {:<24}  PARKED AT",
        "BANK ACCOUNT", "UNIQUE ID", "REASON"
    );
    for p in &records {
        println!(
            "{:<36}  {:<36}  {:<24}  {}",
            p.bank_account_id,
            p.unique_id,
            p.reason,
            p.parked_at.to_rfc3339()
        );
    }
    let note = if records.len() >= args.limit {
        " (the limit; raise --limit to see more)".to_string()
    } else {
        String::new()
    };
    println!(
        "{}{note}",
        count(records.len() as u64, "parked record", "parked records")
    );
    Ok(())
}

pub async fn repush(config: &Config, args: RepushArgs) -> Result<()> {
    let id = Uuid::parse_str(args.bank_account_id.trim()).map_err(|_| {
        OpsError::Usage(format!(
            "`{}` is not a bankAccountId (a UUID); `connector-ops show` finds it from an externalId",
            args.bank_account_id
        ))
    })?;
    require_url(&config.push_queue_url, "PUSH_QUEUE_URL")?;
    let (sdk, table) = config.sdk_and_table().await?;
    let queues = config.push_queues(aws_sdk_sqs::Client::new(&sdk))?;
    let now = Utc::now();
    let account = table
        .get_account(id)
        .await
        .context("reading the account")?
        .ok_or_else(|| anyhow::anyhow!("no account {id} in the table"))?;
    if account.status == AccountStatus::Cancelled {
        return Err(OpsError::Failed(anyhow::anyhow!(
            "account {id} is cancelled (offboarded): nothing is ever pushed for it"
        )));
    }
    let mut notes: Vec<String> = Vec::new();
    let mut stale_claim = false;
    let mut cleared = false;
    if let Some(claim) = &account.in_flight {
        let stale = is_stale(claim, config, now);
        stale_claim = stale;
        let quiet = (now - last_progress(claim)).num_seconds();
        let about = format!(
            "{} statement {}, phase {}, no progress for {quiet} s",
            claim.kind.name(),
            claim.statement_id().unwrap_or("not posted yet"),
            claim.phase.name()
        );
        if args.clear_claim {
            if !stale {
                return Err(OpsError::Refused(format!(
                    "the claim of account {id} is not stale (last progress {quiet} s ago, stale after {} s): \
                     it is still being worked on; not cleared",
                    config.stale_after().as_secs()
                )));
            }
            confirm(
                &format!("clear the stale claim of account {id} ({about}) and kick the account"),
                args.yes,
            )?;
            if !table
                .clear_claim(id, claim)
                .await
                .context("clearing the claim")?
            {
                return Err(OpsError::Failed(anyhow::anyhow!(
                    "the claim of account {id} moved on while this ran: not cleared; look again with `connector-ops show {id}`"
                )));
            }
            cleared = true;
            notes.push(format!("cleared the stale claim ({about})"));
        } else if stale {
            notes.push(format!(
                "WARNING: the account has a stale claim ({about}). If its pusher or poller died, \
                 this kick arms the claim's watchdog, which takes it over; if it is still stale \
                 in a few minutes, its statement is stuck at Banking Service: rerun with \
                 --clear-claim."
            ));
        } else {
            notes.push(format!(
                "a statement is in flight ({about}): the poller kicks again when it finishes"
            ));
        }
    } else if args.clear_claim {
        notes.push("the account has no claim: nothing to clear".into());
    }
    queues
        .kick(&Kick {
            bank_account_id: id,
            claim: None,
            attempt: None,
            reason: KickReason::Operator,
        })
        .await
        .context("sending the kick to the push queue")?;
    let pending = table
        .count_pending(id, account.delivered_through.as_deref())
        .await
        .context("counting pending transactions")?;
    if args.json {
        return print_json(&json!({
            "bankAccountId": id,
            "kicked": true,
            "staleClaim": stale_claim,
            "claimCleared": cleared,
            "pendingCount": pending,
            "notes": notes,
        }));
    }
    for n in &notes {
        println!("{n}");
    }
    println!(
        "Kicked account {id} (push queue group {id}); {pending} transactions pending at the connector."
    );
    Ok(())
}
