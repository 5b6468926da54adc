//! An account's history as the backfill reads it: the Bank Data API's booked transactions in the
//! connector's vocabulary (`connector_domain::ports::BankHistory`).

use chrono::NaiveDate;
use connector_domain::ports::{BankBalances, BankHistory, BoxFuture, HistoryError, HistoryPage};
use connector_domain::transaction::{
    Payee, RecordProblem, TRANSACTION_TYPES, Transaction, read_additional_fields, read_category,
    read_coordinates, truncate_chars,
};

use crate::{BankClient, BankError, BankTransaction};

impl BankHistory for BankClient {
    fn history<'a>(
        &'a self,
        consent_id: &'a str,
        external_id: &'a str,
        from: NaiveDate,
        cursor: Option<&'a str>,
        limit: u32,
    ) -> BoxFuture<'a, Result<HistoryPage, HistoryError>> {
        Box::pin(async move {
            let page = self
                .transactions(consent_id, external_id, from, cursor, limit)
                .await
                .map_err(|e| match e {
                    BankError::ConsentExpired => HistoryError::ConsentExpired,
                    BankError::NotFound => HistoryError::NotFound,
                    BankError::Unavailable(reason) => HistoryError::Unavailable(reason),
                    // Refused credentials or an odd answer: retried too (an operator fixes the
                    // former; the alarm is on the bank client's errors), with what happened.
                    e => HistoryError::Unavailable(e.to_string()),
                })?;
            Ok(HistoryPage {
                // Pending ones come back booked, under their own id, on a later page or ingest.
                transactions: page
                    .transactions
                    .iter()
                    .filter(|t| t.status == "booked")
                    .map(from_bank)
                    .collect(),
                balances: page.balance.map(|b| BankBalances {
                    ledger: b.ledger,
                    available: b.available,
                    as_of: b.as_of,
                }),
                next_cursor: page.next_cursor,
            })
        })
    }
}

/// A Bank Data API transaction in the connector's vocabulary.
pub fn from_bank(t: &BankTransaction) -> Transaction {
    let kind = t
        .kind
        .as_deref()
        .filter(|k| TRANSACTION_TYPES.contains(k))
        .unwrap_or(if t.amount.is_sign_negative() {
            "DEBIT"
        } else {
            "CREDIT"
        });
    Transaction {
        unique_id: truncate_chars(&t.transaction_id, 255),
        transaction_amount: t.amount,
        transaction_type: kind.to_string(),
        date_posted: t.booked_at,
        date_user_initiated: None,
        exchange_currency: None,
        exchange_amount: None,
        check_number: None,
        reference_number: t.reference.as_deref().map(|r| truncate_chars(r, 32)),
        description: t.description.as_deref().map(|d| truncate_chars(d, 512)),
        narrative1: None,
        narrative2: None,
        payee: t.counterparty.as_deref().map(|c| Payee {
            payee_description: Some(truncate_chars(c, 12)),
            ..Default::default()
        }),
        coordinates: detail(t, "coordinates", t.coordinates.as_ref(), read_coordinates),
        category: detail(t, "category", t.category.as_ref(), read_category).flatten(),
        provider_additional_fields: detail(
            t,
            "additionalFields",
            t.additional_fields.as_ref(),
            read_additional_fields,
        )
        .unwrap_or_default(),
        running_balance: t.balance_after,
    }
}

/// An optional detail of a booked transaction: one the bank got wrong is left out (logged),
/// never a reason to hold the transaction back.
fn detail<T>(
    t: &BankTransaction,
    name: &str,
    value: Option<&serde_json::Value>,
    read: fn(&serde_json::Value) -> Result<T, Vec<RecordProblem>>,
) -> Option<T> {
    match read(value?) {
        Ok(v) => Some(v),
        Err(problems) => {
            tracing::warn!(transactionId = %t.transaction_id, field = name, ?problems, "bank detail left out");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank_transaction(json: serde_json::Value) -> BankTransaction {
        serde_json::from_value(json).expect("a bank transaction")
    }

    #[test]
    fn a_bank_transaction_is_mapped_into_the_connectors_vocabulary_within_sages_limits() {
        let t = from_bank(&bank_transaction(serde_json::json!({
            "transactionId": "x".repeat(300), "bookedAt": "2026-05-02T10:00:00Z",
            "amount": "-12.50", "status": "booked", "reference": "R".repeat(40),
            "counterparty": "Northwind Supplies Ltd", "type": "NOT-A-TYPE",
            "category": {"bogus": true},
        })));
        assert_eq!(t.unique_id.chars().count(), 255);
        assert_eq!(
            t.transaction_type, "DEBIT",
            "an unknown type follows the sign"
        );
        assert_eq!(t.reference_number.map(|r| r.len()), Some(32));
        assert_eq!(
            t.payee.and_then(|p| p.payee_description).as_deref(),
            Some("Northwind Su")
        );
        assert_eq!(
            t.category, None,
            "a malformed detail is left out, not fatal"
        );
        let credit = from_bank(&bank_transaction(serde_json::json!({
            "transactionId": "c1", "bookedAt": "2026-05-02T10:00:00Z", "amount": "3.00",
            "status": "booked", "type": "INT",
        })));
        assert_eq!(credit.transaction_type, "INT");
    }
}
