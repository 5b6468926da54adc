//! Transactions of an account in the table (the model and its position rule:
//! `connector_domain::stored`).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::KeysAndAttributes;
use chrono::{DateTime, Utc};
use connector_domain::stored::{StoredTransaction, TransactionState, position_after};
use connector_domain::transaction::Transaction;
use futures::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::accounts::account_pk;
use crate::table::{Item, PENDING_INDEX, StoreError, Table, epoch, from_item, n, s};

/// How long a transaction is kept after it arrived (then it expires by TTL). Long past the
/// 2-week rule, so it can no longer be sent anyway; a redelivery after that is still safe:
/// Banking Service answers `DuplicateTransaction`, which counts as delivered.
const KEEP_TRANSACTIONS: Duration = Duration::from_secs(400 * 24 * 3600);
/// How long parked records stay listable before they expire.
const KEEP_PARKED: Duration = Duration::from_secs(180 * 24 * 3600);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransactionItem {
    pk: String,
    sk: String,
    unique_id: String,
    seq: u64,
    state: TransactionState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_key: Option<String>,
    /// The normalised record as JSON text (amounts as strings, exact).
    record: String,
    received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    statement_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

impl TransactionItem {
    fn into_stored(self) -> Result<StoredTransaction, StoreError> {
        Ok(StoredTransaction {
            seq: self.seq,
            state: self.state,
            transaction: serde_json::from_str(&self.record).map_err(StoreError::corrupt)?,
            statement_id: self.statement_id,
            reason: self.reason,
            received_at: self.received_at,
            position: self.pending_key,
        })
    }
}

/// A parked record, as an operator lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedRecord {
    pub bank_account_id: Uuid,
    pub unique_id: String,
    pub reason: String,
    pub parked_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParkedItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    record: ParkedRecord,
    expires_at: i64,
}

fn txn_sk(unique_id: &str) -> String {
    format!("U#{unique_id}")
}

/// The partition of every parked record, so that an operator lists them in one query.
const PARKED_PK: &str = "PARKED";

fn parked_sk(account: Uuid, unique_id: &str) -> String {
    format!("{account}#{unique_id}")
}

pub use connector_domain::ports::PutOutcome;

impl Table {
    /// Stores transactions (given in arrival order) as pending, with sequence numbers from
    /// `first_seq`. A `uniqueId` stored before is left untouched and reported as a duplicate,
    /// which makes ingest and backfill idempotent.
    ///
    /// One conditional put per transaction, several at a time: cheaper than transactions
    /// (which DynamoDB bills twice) and nothing here needs all-or-nothing — a retry of the whole
    /// request re-stores only what is missing.
    pub async fn put_transactions(
        &self,
        account: Uuid,
        transactions: &[Transaction],
        first_seq: u64,
        horizon: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        let expires = epoch(now) + KEEP_TRANSACTIONS.as_secs() as i64;
        // The first occurrence of a uniqueId in the request wins; later ones are duplicates.
        let mut seen = HashMap::new();
        let todo: Vec<usize> = (0..transactions.len())
            .filter(|&i| seen.insert(transactions[i].unique_id.as_str(), i).is_none())
            .collect();
        let stored: Vec<(usize, PutOutcome)> = stream::iter(todo)
            .map(|i| async move {
                let t = &transactions[i];
                let seq = first_seq + i as u64;
                let item = TransactionItem {
                    pk: account_pk(account),
                    sk: txn_sk(&t.unique_id),
                    unique_id: t.unique_id.clone(),
                    seq,
                    state: TransactionState::Pending,
                    pending_key: Some(position_after(t, seq, horizon)),
                    record: serde_json::to_string(t).map_err(StoreError::corrupt)?,
                    received_at: now,
                    statement_id: None,
                    reason: None,
                    expires_at: Some(expires),
                };
                Ok((
                    i,
                    if self.put_new(&item).await? {
                        PutOutcome::Stored
                    } else {
                        PutOutcome::Duplicate
                    },
                ))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        let mut outcomes = vec![PutOutcome::Duplicate; transactions.len()];
        for (i, o) in stored {
            outcomes[i] = o;
        }
        Ok(outcomes)
    }

    /// Up to `limit` transactions in position order after `after` (the account's watermark):
    /// those Banking Service does not hold yet.
    pub async fn pending_transactions(
        &self,
        account: Uuid,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredTransaction>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        // Pages of at most `limit`; no further page is asked for once `limit` are found.
        let mut items = self
            .position_query(account, after)
            .consistent_read(true)
            .into_paginator()
            .page_size(limit.min(1000) as i32)
            .items()
            .send();
        while let Some(item) = items.try_next().await.map_err(crate::table::from_sdk)? {
            let it: TransactionItem = from_item(item)?;
            // The index is sparse on `pendingKey`; the state check guards a stale projection.
            if it.state == TransactionState::Pending {
                out.push(it.into_stored()?);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn position_query(
        &self,
        account: Uuid,
        after: Option<&str>,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let q = self
            .client
            .query()
            .table_name(&self.name)
            .index_name(PENDING_INDEX)
            .expression_attribute_values(":pk", s(account_pk(account)));
        match after {
            Some(a) => q
                .key_condition_expression("pk = :pk AND pendingKey > :after")
                .expression_attribute_values(":after", s(a)),
            None => q.key_condition_expression("pk = :pk"),
        }
    }

    /// Number of transactions after `after` (not yet held by Banking Service).
    pub async fn count_pending(
        &self,
        account: Uuid,
        after: Option<&str>,
    ) -> Result<u64, StoreError> {
        let mut pages = self
            .position_query(account, after)
            .select(aws_sdk_dynamodb::types::Select::Count)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut total = 0u64;
        while let Some(page) = pages.try_next().await.map_err(crate::table::from_sdk)? {
            total += page.count.max(0) as u64;
        }
        Ok(total)
    }

    /// The transactions with these uniqueIds, in the order given (missing ones are skipped).
    pub async fn transactions_by_ids(
        &self,
        account: Uuid,
        unique_ids: &[String],
    ) -> Result<Vec<StoredTransaction>, StoreError> {
        let mut found: HashMap<String, StoredTransaction> = HashMap::new();
        for chunk in unique_ids.chunks(100) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|id| Table::key(account_pk(account), txn_sk(id)))
                .collect();
            // BatchGetItem may return only part of the keys; ask again for the rest.
            while !keys.is_empty() {
                let req = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(StoreError::corrupt)?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.name, req)
                    .send()
                    .await
                    .map_err(crate::table::from_sdk)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.name))
                    .unwrap_or_default()
                {
                    let it: TransactionItem = from_item(item)?;
                    found.insert(it.unique_id.clone(), it.into_stored()?);
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.name))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(unique_ids
            .iter()
            .filter_map(|id| found.remove(id))
            .collect())
    }

    /// Takes transactions Banking Service turned out to hold already (`DuplicateTransaction`, or
    /// a statement that succeeded while offboarding parked its batch) out of the position order,
    /// and drops any parked record of theirs. Idempotent.
    ///
    /// Write order, so that no parked record outlives a delivered transaction: the record goes
    /// first, then the transaction becomes delivered, then the record goes again. A crash after
    /// the first delete leaves a parked or pending transaction without a record (true enough
    /// until the retried step marks it delivered: the caller still holds the claim, so its
    /// message comes back). The second delete removes a record that a concurrent
    /// [`Table::park_transactions`] wrote after the first one (see there).
    pub async fn mark_held(
        &self,
        account: Uuid,
        unique_ids: &[String],
        statement_id: &str,
    ) -> Result<(), StoreError> {
        stream::iter(unique_ids.iter().map(Ok::<_, StoreError>))
            .try_for_each_concurrent(16, |id| async move {
                self.delete_parked(account, id).await?;
                let res = self
                    .client
                    .update_item()
                    .table_name(&self.name)
                    .set_key(Some(Table::key(account_pk(account), txn_sk(id))))
                    .update_expression(
                        "SET #state = :delivered, statementId = :statement REMOVE pendingKey",
                    )
                    .condition_expression("attribute_exists(pk)")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":delivered", s("delivered"))
                    .expression_attribute_values(":statement", s(statement_id))
                    .send()
                    .await
                    .map_err(crate::table::from_sdk);
                match res {
                    Ok(_) | Err(StoreError::ConditionFailed) => {}
                    Err(e) => return Err(e),
                }
                self.delete_parked(account, id).await
            })
            .await
    }

    /// Parks transactions with a reason an operator can list; they leave the pending order. A
    /// transaction already delivered is left alone and keeps no parked record.
    ///
    /// Write order, so that no parked record outlives a delivered transaction: the transaction
    /// first (conditional on it not being delivered), its record second, then a look at the
    /// transaction again. A crash between the writes leaves a parked transaction without its
    /// record, which the retried step writes (the caller still holds the claim, or the
    /// notification comes back); the reverse order could leave a record for a transaction that
    /// the pipeline goes on to deliver. The last look catches a [`Table::mark_held`] that
    /// delivered the transaction between the two writes and deleted the record before it was
    /// written.
    pub async fn park_transactions(
        &self,
        account: Uuid,
        unique_ids: &[String],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let expires = epoch(now) + KEEP_PARKED.as_secs() as i64;
        stream::iter(unique_ids.iter().map(Ok::<_, StoreError>))
            .try_for_each_concurrent(16, |id| async move {
                let res = self
                    .client
                    .update_item()
                    .table_name(&self.name)
                    .set_key(Some(Table::key(account_pk(account), txn_sk(id))))
                    .update_expression(
                        "SET #state = :parked, reason = :reason, expiresAt = :expires REMOVE pendingKey",
                    )
                    .condition_expression("attribute_exists(pk) AND #state <> :delivered")
                    .expression_attribute_names("#state", "state")
                    .expression_attribute_values(":parked", s("parked"))
                    .expression_attribute_values(":delivered", s("delivered"))
                    .expression_attribute_values(":reason", s(reason))
                    .expression_attribute_values(":expires", n(expires))
                    .send()
                    .await
                    .map_err(crate::table::from_sdk);
                match res {
                    Ok(_) => {}
                    // Delivered (or expired): nothing to park, and no record may say otherwise.
                    Err(StoreError::ConditionFailed) => return self.delete_parked(account, id).await,
                    Err(e) => return Err(e),
                }
                self.put_as(&ParkedItem {
                    pk: PARKED_PK.into(),
                    sk: parked_sk(account, id),
                    record: ParkedRecord {
                        bank_account_id: account,
                        unique_id: id.clone(),
                        reason: reason.to_string(),
                        parked_at: now,
                    },
                    expires_at: expires,
                })
                .await?;
                let state = self
                    .get_as::<TransactionItem>(account_pk(account), &txn_sk(id))
                    .await?
                    .map(|t| t.state);
                if state != Some(TransactionState::Parked) {
                    self.delete_parked(account, id).await?;
                }
                Ok(())
            })
            .await
    }

    async fn delete_parked(&self, account: Uuid, unique_id: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(PARKED_PK, parked_sk(account, unique_id))))
            .send()
            .await
            .map_err(crate::table::from_sdk)?;
        Ok(())
    }

    /// Parks every transaction after the watermark `after` (offboarding).
    pub async fn park_all_pending(
        &self,
        account: Uuid,
        after: Option<&str>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let batch = self.pending_transactions(account, after, 1000).await?;
            if batch.is_empty() {
                return Ok(total);
            }
            let ids: Vec<String> = batch.into_iter().map(|t| t.transaction.unique_id).collect();
            total += ids.len();
            self.park_transactions(account, &ids, reason, now).await?;
        }
    }

    /// Keeps records that were refused before they were ever stored (a backfill's future-dated
    /// ones) as parked, for an operator to see: the transaction item (so that the same
    /// `uniqueId` later is a duplicate, as it would have been) and its parked record. A
    /// `uniqueId` stored already is left as it is.
    pub async fn park_new(
        &self,
        account: Uuid,
        transactions: &[Transaction],
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let expires = epoch(now) + KEEP_PARKED.as_secs() as i64;
        stream::iter(transactions.iter().map(Ok::<_, StoreError>))
            .try_for_each_concurrent(16, |t| async move {
                let item = TransactionItem {
                    pk: account_pk(account),
                    sk: txn_sk(&t.unique_id),
                    unique_id: t.unique_id.clone(),
                    seq: 0,
                    state: TransactionState::Parked,
                    pending_key: None,
                    record: serde_json::to_string(t).map_err(StoreError::corrupt)?,
                    received_at: now,
                    statement_id: None,
                    reason: Some(reason.to_string()),
                    expires_at: Some(expires),
                };
                if !self.put_new(&item).await? {
                    return Ok(());
                }
                self.put_as(&ParkedItem {
                    pk: PARKED_PK.into(),
                    sk: parked_sk(account, &t.unique_id),
                    record: ParkedRecord {
                        bank_account_id: account,
                        unique_id: t.unique_id.clone(),
                        reason: reason.to_string(),
                        parked_at: now,
                    },
                    expires_at: expires,
                })
                .await
            })
            .await
    }

    /// Parked records, newest accounts first is not promised: in key order, up to `limit`.
    pub async fn parked_records(
        &self,
        account: Option<Uuid>,
        limit: usize,
    ) -> Result<Vec<ParkedRecord>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let q = self
            .client
            .query()
            .table_name(&self.name)
            .expression_attribute_values(":pk", s(PARKED_PK))
            .consistent_read(true);
        let q = match account {
            Some(a) => q
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":prefix", s(format!("{a}#"))),
            None => q.key_condition_expression("pk = :pk"),
        };
        let mut items = q.into_paginator().items().send();
        while let Some(item) = items.try_next().await.map_err(crate::table::from_sdk)? {
            out.push(from_item::<ParkedItem>(item)?.record);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every transaction stored for an account with its state, in key order (operator tooling
    /// and tests; not on a hot path).
    pub async fn all_transactions(
        &self,
        account: Uuid,
    ) -> Result<Vec<StoredTransaction>, StoreError> {
        let items: Vec<TransactionItem> = self.query_as(account_pk(account), Some("U#")).await?;
        let mut out = items
            .into_iter()
            .map(TransactionItem::into_stored)
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|t| t.seq);
        Ok(out)
    }
}
