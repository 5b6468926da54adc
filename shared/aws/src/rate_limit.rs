//! One Provider API rate shared by every Lambda (invariant 5).
//!
//! Time is cut into slots of `1 / rps` seconds and each request claims a free slot with a
//! conditional put. Requests are therefore spread evenly, never in bursts, so Banking Service's
//! token bucket (10 per second, burst 10) does not answer 429 at saturation.
//!
//! A slot won too late (the put was slow, or the process stalled) is given up rather than
//! used: late requests would bunch up with punctual ones of later slots and empty the bucket.
//! Using a slot at most `MAX_LATE_SLOTS` slots after its start keeps any window of length T
//! at or below `rps × T + MAX_LATE_SLOTS + 1` requests, inside the burst of 10.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::Utc;
use connector_domain::ports::{BoxFuture, PortError, RateLimiter};

use crate::table::{StoreError, Table, n, s};

/// How many slots after its start a won slot may still be used (half the default burst).
const MAX_LATE_SLOTS: i64 = 5;

pub struct DynamoRateLimiter {
    table: Table,
    /// Key prefix, so that two API keys (two banks) get two independent rates.
    scope: String,
    slot_ms: i64,
    /// The last slot this process saw taken: where to start looking next time.
    hint: AtomicI64,
}

impl DynamoRateLimiter {
    pub fn new(table: Table, scope: impl Into<String>, rps: f64) -> Self {
        let slot_ms = (1000.0 / rps.max(0.001)).ceil() as i64;
        Self {
            table,
            scope: scope.into(),
            slot_ms: slot_ms.max(1),
            hint: AtomicI64::new(0),
        }
    }

    async fn try_slot(&self, slot: i64) -> Result<bool, StoreError> {
        let expires = Utc::now().timestamp() + 120;
        let res = self
            .table
            .client
            .put_item()
            .table_name(&self.table.name)
            .item("pk", s(format!("RATE#{}#{slot}", self.scope)))
            .item("sk", s("RATE"))
            .item("expiresAt", n(expires))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        crate::table::condition_held(res)
    }

    async fn acquire_slot(&self, max_wait: Duration) -> Result<bool, PortError> {
        let start_ms = Utc::now().timestamp_millis();
        let deadline_ms = start_ms + max_wait.as_millis() as i64;
        let mut slot = (start_ms / self.slot_ms).max(self.hint.load(Ordering::Relaxed) + 1);
        loop {
            let slot_start = slot * self.slot_ms;
            if slot_start > deadline_ms {
                return Ok(false);
            }
            let asked = Utc::now().timestamp_millis();
            let won = self
                .try_slot(slot)
                .await
                .map_err(|e| PortError(e.to_string()))?;
            self.hint.fetch_max(slot, Ordering::Relaxed);
            if won {
                let wait = slot_start - Utc::now().timestamp_millis();
                if wait > 0 {
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                let late = Utc::now().timestamp_millis() - slot_start;
                if late <= MAX_LATE_SLOTS * self.slot_ms {
                    return Ok(true);
                }
                // Too late to use: aim past what the put just took, so that the next win is
                // in time even while the table answers slowly.
                let took = Utc::now().timestamp_millis() - asked;
                slot = (Utc::now().timestamp_millis() + took) / self.slot_ms + 1;
                continue;
            }
            // Taken: the next slot, but never one already in the past.
            let now_slot = Utc::now().timestamp_millis() / self.slot_ms;
            slot = (slot + 1).max(now_slot);
        }
    }
}

impl RateLimiter for DynamoRateLimiter {
    fn acquire(&self, max_wait: Duration) -> BoxFuture<'_, Result<bool, PortError>> {
        Box::pin(self.acquire_slot(max_wait))
    }
}
