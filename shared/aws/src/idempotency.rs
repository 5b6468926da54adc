//! Do-once claims: a conditional write with a lease and a payload hash.
//!
//! Used by `/notification` (one enqueue per notification, however often it is redelivered);
//! the queue consumers use none, their steps being idempotent or conditional on the account's
//! claim instead.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::table::{StoreError, Table, epoch, n, s, to_item};

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First time (or an earlier attempt with the same payload let its lease run out): go ahead,
    /// then [`Table::complete_claim`] (or [`Table::abandon_claim`] after a failure).
    New,
    /// Done before: do nothing and answer as if done now.
    Completed,
    /// Another attempt holds the lease right now: try again later.
    InProgress,
    /// The same key came with a different payload.
    Conflict,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimItem {
    pk: String,
    sk: String,
    state: String,
    payload_hash: String,
    lease_until: i64,
    expires_at: i64,
}

fn pk(key: &str) -> String {
    format!("IDEM#{key}")
}

impl Table {
    /// Claims `key` for `lease`; the record is kept for `keep` (then expires by TTL).
    pub async fn claim_once(
        &self,
        key: &str,
        payload_hash: &str,
        lease: Duration,
        keep: Duration,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let item = ClaimItem {
            pk: pk(key),
            sk: "IDEM".into(),
            state: "inProgress".into(),
            payload_hash: payload_hash.into(),
            lease_until: epoch(now) + lease.as_secs() as i64,
            expires_at: epoch(now) + keep.as_secs() as i64,
        };
        let put = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(to_item(&item)?))
            .condition_expression(
                "attribute_not_exists(pk) OR (#state = :in_progress AND leaseUntil < :now AND payloadHash = :hash)",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s("inProgress"))
            .expression_attribute_values(":now", n(epoch(now)))
            .expression_attribute_values(":hash", s(payload_hash))
            .send()
            .await;
        match put.map_err(crate::table::from_sdk) {
            Ok(_) => Ok(Claim::New),
            Err(StoreError::ConditionFailed) => {
                let Some(existing) = self.get_as::<ClaimItem>(pk(key), "IDEM").await? else {
                    // Gone between the two calls (`abandon_claim`, or its TTL): let the caller
                    // retry.
                    return Ok(Claim::InProgress);
                };
                Ok(if existing.payload_hash != payload_hash {
                    Claim::Conflict
                } else if existing.state == "completed" {
                    Claim::Completed
                } else {
                    Claim::InProgress
                })
            }
            Err(e) => Err(e),
        }
    }

    pub async fn complete_claim(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(pk(key), "IDEM")))
            .update_expression("SET #state = :completed")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":completed", s("completed"))
            .send()
            .await
            .map_err(crate::table::from_sdk)?;
        Ok(())
    }

    /// Gives the claim up after a failure, so that a retry can run at once.
    pub async fn abandon_claim(&self, key: &str) -> Result<(), StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.name)
            .set_key(Some(Table::key(pk(key), "IDEM")))
            .condition_expression("#state = :in_progress")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s("inProgress"))
            .send()
            .await
            .map_err(crate::table::from_sdk);
        match res {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
