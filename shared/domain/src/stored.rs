//! Transactions as the connector holds them: stored once per `uniqueId` at a *statement
//! position* (`datePosted`, then arrival). The account's watermark (`deliveredThrough`) says how
//! far Banking Service holds them, so a success is one write on the account, not one per
//! transaction. Items leave the position order only when parked or found already held.
//!
//! A transaction that arrives after the pusher's horizon has passed its natural position (a
//! straggler, older than what was already batched) is placed just after the horizon, so it is
//! never skipped by the watermark; statements are sorted by date within themselves.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::transaction::Transaction;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TransactionState {
    /// In position order: held by Banking Service once the account's watermark passes it.
    Pending,
    /// Found already held by Banking Service (`DuplicateTransaction`).
    Delivered,
    Parked,
}

/// A stored transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTransaction {
    pub seq: u64,
    pub state: TransactionState,
    pub transaction: Transaction,
    pub statement_id: Option<String>,
    pub reason: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Statement position while in position order.
    pub position: Option<String>,
}

/// Statement order as a sortable key: `datePosted`, then arrival sequence.
pub fn pending_key(t: &Transaction, seq: u64) -> String {
    format!("{}#{seq:015}", t.date_posted.format("%Y%m%dT%H%M%S%.3fZ"))
}

/// The position of a transaction arriving now: its natural one, or — when the pusher's horizon
/// already passed it — just after the horizon.
pub fn position_after(t: &Transaction, seq: u64, horizon: Option<&str>) -> String {
    let natural = pending_key(t, seq);
    match horizon {
        Some(h) if natural.as_str() <= h => format!("{h}~{natural}"),
        _ => natural,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::parse_datetime;

    #[test]
    fn pending_keys_sort_by_date_then_arrival() {
        let mut t = Transaction {
            unique_id: "a".into(),
            transaction_amount: "1".parse().unwrap(),
            transaction_type: "OTHER".into(),
            date_posted: parse_datetime("2025-03-03T09:12:44.5Z").unwrap(),
            date_user_initiated: None,
            exchange_currency: None,
            exchange_amount: None,
            check_number: None,
            reference_number: None,
            description: None,
            narrative1: None,
            narrative2: None,
            payee: None,
            coordinates: None,
            category: None,
            provider_additional_fields: Vec::new(),
            running_balance: None,
        };
        let a = pending_key(&t, 9);
        let b = pending_key(&t, 10);
        t.date_posted = parse_datetime("2025-03-03T09:12:45Z").unwrap();
        let c = pending_key(&t, 1);
        assert_eq!(a, "20250303T091244.500Z#000000000000009");
        assert!(a < b && b < c);

        // A straggler (older than the horizon) goes right after the horizon, before anything
        // that comes naturally later.
        t.date_posted = parse_datetime("2025-03-01T00:00:00Z").unwrap();
        let straggler = position_after(&t, 11, Some(&b));
        assert!(straggler.as_str() > b.as_str() && straggler.as_str() < c.as_str());
        assert_eq!(position_after(&t, 11, None), pending_key(&t, 11));
    }
}
