//! The statement engine (sandbox spec §5): queued → processing → succeeded | failed, on tokio timers,
//! evaluating every rule and committing in one step.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::envelope::DetailItem;
use crate::model::{AccountStatus, JsonDecimal, StatementStatus};
use crate::state::{Core, StoredTxn};

/// Schedules the processing of a freshly queued statement.
pub fn schedule(core: &Arc<Core>, statement_id: Uuid, txn_count: usize) {
    let (queue_ms, proc_us) = {
        let mut st = core.state.lock();
        let cfg = &core.cfg;
        let q = st
            .rng
            .jitter(cfg.statement_queue_delay_ms, cfg.statement_jitter_pct);
        let base_us =
            cfg.statement_processing_delay_ms * 1000 + cfg.statement_per_txn_us * txn_count as u64;
        let p = st.rng.jitter(base_us, cfg.statement_jitter_pct);
        (q, p)
    };
    let c = core.clone();
    core.spawn(async move {
        if queue_ms > 0 {
            tokio::time::sleep(Duration::from_millis(queue_ms)).await;
        }
        wait_while_held(&c, statement_id, StatementStatus::Queued).await;
        if !enter_processing(&c, statement_id) {
            return;
        }
        if proc_us > 0 {
            tokio::time::sleep(Duration::from_micros(proc_us)).await;
        }
        wait_while_held(&c, statement_id, StatementStatus::Processing).await;
        finish(&c, statement_id);
    });
}

/// Resumes a statement from its current status (after an `accepting` one is submitted).
pub fn resume(core: &Arc<Core>, statement_id: Uuid) {
    let n = core
        .state
        .lock()
        .statements
        .get(&statement_id)
        .map(|s| s.txns.len())
        .unwrap_or(0);
    schedule(core, statement_id, n);
}

async fn wait_while_held(core: &Core, id: Uuid, stage: StatementStatus) {
    loop {
        let held = {
            let st = core.state.lock();
            let principal = st.statements.get(&id).map(|s| s.principal_id);
            match (&st.faults.set.statement_hold, principal) {
                (Some(h), Some(p)) => h.stage == stage && h.principal_id.is_none_or(|x| x == p),
                _ => false,
            }
        };
        if !held {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn enter_processing(core: &Core, id: Uuid) -> bool {
    let now = core.now();
    let mut st = core.state.lock();
    match st.statements.get_mut(&id) {
        Some(s) if s.status == StatementStatus::Queued => {
            s.set_status(StatementStatus::Processing, now);
            true
        }
        _ => false,
    }
}

/// Evaluates every rule, then fails with all items or commits atomically.
pub fn finish(core: &Core, id: Uuid) {
    let started = Instant::now();
    let now = core.now();
    let too_old = chrono::Duration::days(core.cfg.rule_too_old_days);
    let mut guard = core.state.lock();
    let st = &mut *guard;
    let Some(stmt) = st.statements.get_mut(&id) else {
        return;
    };
    if stmt.status != StatementStatus::Processing {
        return;
    }
    let principal = stmt.principal_id;
    let Some(acct) = st.accounts.get_mut(&principal) else {
        return;
    };

    let mut items: Vec<DetailItem> = Vec::new();
    if acct.status == AccountStatus::Cancelled {
        items.push(DetailItem::new(
            principal.to_string(),
            "BankAccountCancelled",
            "The bank account has been cancelled",
        ));
    }
    let mut seen: HashSet<&str> = HashSet::with_capacity(stmt.txns.len());
    let mut duplicates = 0u64;
    for t in &stmt.txns {
        if acct.store.unique_ids.contains(&t.unique_id) || !seen.insert(t.unique_id.as_str()) {
            duplicates += 1;
            items.push(DetailItem::new(
                t.unique_id.clone(),
                "DuplicateTransaction",
                "A transaction with this uniqueId already exists",
            ));
        }
    }
    if let Some(newest) = acct.store.newest {
        for t in &stmt.txns {
            if newest - t.date_posted > too_old {
                items.push(DetailItem::new(
                    t.unique_id.clone(),
                    "TransactionTooOld",
                    format!(
                        "datePosted is more than {} days older than the newest stored transaction",
                        too_old.num_days()
                    ),
                ));
            }
        }
    }
    let forced = st
        .faults
        .set
        .statement_fail
        .as_mut()
        .filter(|f| f.principal_id.is_none_or(|p| p == principal) && f.remaining != Some(0));
    if let Some(f) = forced {
        if let Some(r) = f.remaining.as_mut() {
            *r = r.saturating_sub(1);
        }
        items.push(DetailItem::new(
            f.target.clone().unwrap_or_else(|| principal.to_string()),
            &f.code,
            f.message
                .clone()
                .unwrap_or_else(|| "Injected failure".into()),
        ));
    }

    let final_status;
    if items.is_empty() {
        let txns = std::mem::take(&mut stmt.txns);
        let stored = txns.len();
        for t in txns {
            acct.last_transaction_id += 1;
            acct.store.unique_ids.insert(t.unique_id.clone());
            acct.store.newest = Some(
                acct.store
                    .newest
                    .map_or(t.date_posted, |n| n.max(t.date_posted)),
            );
            acct.store.txns.push(StoredTxn {
                transaction_id: acct.last_transaction_id,
                unique_id: t.unique_id,
                statement_id: id,
                raw: t.raw,
            });
        }
        let b = &stmt.balances;
        if let Some(v) = b.ledger {
            acct.balances.ledger_balance = Some(JsonDecimal(v));
            acct.balances.ledger_balance_date = b.ledger_date.clone();
        }
        if let Some(v) = b.available {
            acct.balances.available_balance = Some(JsonDecimal(v));
            acct.balances.available_balance_date = b.available_date.clone();
        }
        acct.status = match (acct.status, stmt.account_status.as_str()) {
            (AccountStatus::Cancelled, _) => AccountStatus::Cancelled,
            (_, "authRequired") => AccountStatus::AuthRequired,
            (AccountStatus::AuthRequired, _) => AccountStatus::AuthRequired,
            (AccountStatus::Pending, _) if stored > 0 => AccountStatus::Active,
            (s, _) => s,
        };
        acct.last_transactions_received = Some(now);
        stmt.set_status(StatementStatus::Succeeded, now);
        final_status = StatementStatus::Succeeded;
    } else {
        stmt.details = Some(items);
        stmt.txns = Vec::new();
        stmt.set_status(StatementStatus::Failed, now);
        final_status = StatementStatus::Failed;
    }
    stmt.processing_us = Some(started.elapsed().as_micros() as u64);
    if acct.in_flight == Some(id) {
        acct.in_flight = None;
    }
    st.metrics.duplicates_rejected += duplicates;
    *st.metrics
        .statements_final
        .entry(final_status.as_str().to_string())
        .or_default() += 1;
}
