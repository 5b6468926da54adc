//! Building statements for `POST /v1/statements` (spec §6.4, §7) and reading their outcome (§6.5).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::amount::{json_number, json_number_opt};
use crate::transaction::{
    AdditionalField, Category, Coordinates, Payee, Transaction, format_datetime,
};

/// Banking Service's limit of transactions per statement (§7.1 rule 1).
pub const MAX_TRANSACTIONS_PER_STATEMENT: usize = 1000;

/// Where balances go in an `accountDetail` (spec §6.4 "balance shape").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalanceShape {
    /// `"balances": {…}` as in Sage's current collection (the default).
    #[default]
    Nested,
    /// Balances flat on the accountDetail, as in older documents.
    Flat,
}

impl std::str::FromStr for BalanceShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nested" => Ok(Self::Nested),
            "flat" => Ok(Self::Flat),
            other => Err(format!("`{other}` is not `nested` or `flat`")),
        }
    }
}

/// Status an accountDetail reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AccountDetailStatus {
    Active,
    AuthRequired,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Expected {
    pub transaction_details_count: usize,
    pub account_details_count: usize,
    #[serde(with = "json_number")]
    pub transaction_credit_sum: Decimal,
    #[serde(with = "json_number")]
    pub transaction_debit_sum: Decimal,
}

impl Expected {
    /// Counts and sums of exactly the transactions given, in exact decimal arithmetic.
    pub fn of(transactions: &[Transaction]) -> Self {
        let zero = Decimal::new(0, 2);
        let (credit, debit) = transactions.iter().fold((zero, zero), |(c, d), t| {
            if t.transaction_amount.is_sign_negative() {
                (c, d + t.transaction_amount)
            } else {
                (c + t.transaction_amount, d)
            }
        });
        Self {
            transaction_details_count: transactions.len(),
            account_details_count: 1,
            transaction_credit_sum: credit,
            transaction_debit_sum: debit,
        }
    }
}

/// A balance and the moment it is true for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    #[serde(with = "crate::amount::decimal_string")]
    pub amount: Decimal,
    pub as_of: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Balances {
    #[serde(
        default,
        with = "json_number_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ledger_balance: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_balance_date: Option<String>,
    #[serde(
        default,
        with = "json_number_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub available_balance: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_balance_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountDetail {
    pub bank_account_id: Uuid,
    pub status: AccountDetailStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balances: Option<Balances>,
    #[serde(flatten)]
    pub flat_balances: Balances,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionDetail {
    pub unique_id: String,
    pub bank_account_id: Uuid,
    #[serde(with = "json_number")]
    pub transaction_amount: Decimal,
    pub transaction_type: String,
    pub transaction_status: &'static str,
    pub date_posted: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_user_initiated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_currency: Option<String>,
    #[serde(with = "json_number_opt", skip_serializing_if = "Option::is_none")]
    pub exchange_amount: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_number: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub narrative1: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub narrative2: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payee: Option<Payee>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provider_additional_fields: Vec<AdditionalField>,
}

impl TransactionDetail {
    pub fn from_transaction(t: &Transaction, bank_account_id: Uuid) -> Self {
        Self {
            unique_id: t.unique_id.clone(),
            bank_account_id,
            transaction_amount: t.transaction_amount,
            transaction_type: t.transaction_type.clone(),
            transaction_status: "posted",
            date_posted: format_datetime(&t.date_posted),
            date_user_initiated: t.date_user_initiated.as_ref().map(format_datetime),
            exchange_currency: t.exchange_currency.clone(),
            exchange_amount: t.exchange_amount,
            check_number: t.check_number.clone(),
            reference_number: t.reference_number.clone(),
            description: t.description.clone(),
            narrative1: t.narrative1.clone(),
            narrative2: t.narrative2.clone(),
            payee: t.payee.clone(),
            coordinates: t.coordinates.clone(),
            category: t.category.clone(),
            provider_additional_fields: t.provider_additional_fields.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementData {
    pub principal_id: Uuid,
    pub bank_id: Uuid,
    pub expected: Expected,
    pub account_details: Vec<AccountDetail>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transaction_details: Vec<TransactionDetail>,
}

/// The body of `POST /v1/statements`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementRequest {
    pub data: StatementData,
}

/// Everything a statement is built from.
#[derive(Debug, Clone)]
pub struct StatementInput<'a> {
    pub bank_account_id: Uuid,
    pub bank_id: Uuid,
    pub status: AccountDetailStatus,
    /// In statement order (see [`statement_order`]), at most [`MAX_TRANSACTIONS_PER_STATEMENT`].
    pub transactions: &'a [Transaction],
    pub ledger: Option<Balance>,
    pub available: Option<Balance>,
    pub shape: BalanceShape,
}

/// Why a statement cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("a statement holds at most 1000 transactions, got {0}")]
    TooManyTransactions(usize),
    #[error("a statement with transactions needs a ledger balance")]
    MissingLedgerBalance,
    #[error("transactions are not in statement order")]
    OutOfOrder,
}

/// Statement order (§7.1 rule 2): ascending `datePosted`; ties keep the order given (bank order).
pub fn statement_order(transactions: &mut [Transaction]) {
    // A stable sort keeps bank order for equal dates.
    transactions.sort_by_key(|t| t.date_posted);
}

/// Builds the request body, with `expected` computed exactly from the transactions.
pub fn build_statement(input: &StatementInput<'_>) -> Result<StatementRequest, BuildError> {
    if input.transactions.len() > MAX_TRANSACTIONS_PER_STATEMENT {
        return Err(BuildError::TooManyTransactions(input.transactions.len()));
    }
    if input
        .transactions
        .windows(2)
        .any(|w| w[0].date_posted > w[1].date_posted)
    {
        return Err(BuildError::OutOfOrder);
    }
    if !input.transactions.is_empty() && input.ledger.is_none() {
        return Err(BuildError::MissingLedgerBalance);
    }
    let balances = Balances {
        ledger_balance: input.ledger.as_ref().map(|b| b.amount),
        ledger_balance_date: input.ledger.as_ref().map(|b| format_datetime(&b.as_of)),
        available_balance: input.available.as_ref().map(|b| b.amount),
        available_balance_date: input.available.as_ref().map(|b| format_datetime(&b.as_of)),
    };
    let has_balances = balances.ledger_balance.is_some() || balances.available_balance.is_some();
    let (nested, flat) = match (input.shape, has_balances) {
        (_, false) => (None, Balances::default()),
        (BalanceShape::Nested, true) => (Some(balances), Balances::default()),
        (BalanceShape::Flat, true) => (None, balances),
    };
    Ok(StatementRequest {
        data: StatementData {
            principal_id: input.bank_account_id,
            bank_id: input.bank_id,
            expected: Expected::of(input.transactions),
            account_details: vec![AccountDetail {
                bank_account_id: input.bank_account_id,
                status: input.status,
                balances: nested,
                flat_balances: flat,
            }],
            transaction_details: input
                .transactions
                .iter()
                .map(|t| TransactionDetail::from_transaction(t, input.bank_account_id))
                .collect(),
        },
    })
}

/// The ledger balance right after the last transaction of a batch (spec §7.1 rule 6).
///
/// The bank's running balance on that transaction wins; otherwise a known ledger balance minus
/// every pending amount that comes after the batch (exact arithmetic) — but only a balance that
/// already counts all of them: one older than the newest of those transactions would give a
/// balance from before the batch. `None`: neither is known (the caller may read the bank's).
pub fn ledger_after_batch(
    batch: &[Transaction],
    later_pending: &[Transaction],
    current_ledger: Option<&Balance>,
) -> Option<Balance> {
    let last = batch.last()?;
    if let Some(running) = last.running_balance {
        return Some(Balance {
            amount: running,
            as_of: last.date_posted,
        });
    }
    let current = current_ledger?;
    let newest = batch
        .iter()
        .chain(later_pending)
        .map(|t| t.date_posted)
        .max()?;
    if current.as_of < newest {
        return None;
    }
    let later: Decimal = later_pending.iter().map(|t| t.transaction_amount).sum();
    Some(Balance {
        amount: current.amount - later,
        as_of: last.date_posted,
    })
}

/// `GET /v1/statements/{id}` → `data`, as far as the connector needs it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatementResource {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub principal_id: Option<String>,
    pub status: StatementStatus,
    #[serde(default)]
    pub details: Option<Vec<FailureDetail>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StatementStatus {
    Accepting,
    Queued,
    Processing,
    Succeeded,
    Failed,
    Deleted,
    /// A status this connector does not know yet: polled again like `processing`.
    #[serde(other)]
    Unknown,
}

impl StatementStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Deleted)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FailureDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// What a terminal statement means for the connector (spec §7.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// Failed only for `DuplicateTransaction` and/or `TransactionTooOld`: the duplicates count as
    /// delivered, the too-old ones are parked, the rest is resubmitted.
    FailedOnItems {
        duplicates: Vec<String>,
        too_old: Vec<String>,
    },
    /// `BankAccountCancelled`: stop posting for the account.
    AccountCancelled,
    /// Any other failure: delete, retry with back-off, then park.
    FailedOther(Vec<FailureDetail>),
    /// Deleted by us or by someone else: the content was not stored.
    Deleted,
}

/// Classifies a terminal statement; `None` while it is still being processed.
pub fn classify(resource: &StatementResource) -> Option<Outcome> {
    match resource.status {
        StatementStatus::Succeeded => Some(Outcome::Succeeded),
        StatementStatus::Deleted => Some(Outcome::Deleted),
        StatementStatus::Failed => {
            let details = resource.details.clone().unwrap_or_default();
            if details.iter().any(|d| d.code == "BankAccountCancelled") {
                return Some(Outcome::AccountCancelled);
            }
            let mut duplicates = Vec::new();
            let mut too_old = Vec::new();
            for d in &details {
                match (d.code.as_str(), &d.target) {
                    ("DuplicateTransaction", Some(t)) => duplicates.push(t.clone()),
                    ("TransactionTooOld", Some(t)) => too_old.push(t.clone()),
                    _ => return Some(Outcome::FailedOther(details)),
                }
            }
            if duplicates.is_empty() && too_old.is_empty() {
                Some(Outcome::FailedOther(details))
            } else {
                Some(Outcome::FailedOnItems {
                    duplicates,
                    too_old,
                })
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::parse_datetime;

    fn txn(id: &str, amount: &str, date: &str) -> Transaction {
        Transaction {
            unique_id: id.into(),
            transaction_amount: amount.parse().unwrap(),
            transaction_type: "OTHER".into(),
            date_posted: parse_datetime(date).unwrap(),
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
        }
    }

    fn input<'a>(txns: &'a [Transaction], shape: BalanceShape) -> StatementInput<'a> {
        StatementInput {
            bank_account_id: Uuid::nil(),
            bank_id: Uuid::nil(),
            status: AccountDetailStatus::Active,
            transactions: txns,
            ledger: Some(Balance {
                amount: "1207.85".parse().unwrap(),
                as_of: parse_datetime("2025-03-04T00:00:00Z").unwrap(),
            }),
            available: None,
            shape,
        }
    }

    #[test]
    fn the_spec_example_has_the_spec_expected_block() {
        let txns = [
            txn("a", "-42.15", "2025-03-03T09:12:44Z"),
            txn("b", "250.00", "2025-03-03T15:40:02Z"),
        ];
        let text =
            serde_json::to_string(&build_statement(&input(&txns, BalanceShape::Nested)).unwrap())
                .unwrap();
        // Checked on the text: amounts must keep their literal form (`250.00`), which a
        // round trip through `serde_json::Value` would not show.
        assert!(text.contains(
            r#""expected":{"transactionDetailsCount":2,"accountDetailsCount":1,"transactionCreditSum":250.00,"transactionDebitSum":-42.15}"#
        ));
        assert!(text.contains(r#""ledgerBalance":1207.85"#));
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body["data"]["accountDetails"][0]["balances"]["ledgerBalanceDate"],
            "2025-03-04T00:00:00.000Z"
        );
        assert_eq!(
            body["data"]["transactionDetails"][0]["transactionStatus"],
            "posted"
        );
        assert_eq!(
            body["data"]["transactionDetails"][0]["datePosted"],
            "2025-03-03T09:12:44.000Z"
        );
    }

    #[test]
    fn the_flat_shape_puts_balances_on_the_account_detail() {
        let txns = [txn("a", "1", "2025-03-03T09:12:44Z")];
        let text =
            serde_json::to_string(&build_statement(&input(&txns, BalanceShape::Flat)).unwrap())
                .unwrap();
        assert!(text.contains(r#""status":"active","ledgerBalance":1207.85,"ledgerBalanceDate""#));
        assert!(!text.contains("balances"));
    }

    #[test]
    fn a_status_only_statement_is_0_1_0_0() {
        let mut i = input(&[], BalanceShape::Nested);
        i.status = AccountDetailStatus::AuthRequired;
        i.ledger = None;
        let body = serde_json::to_string(&build_statement(&i).unwrap()).unwrap();
        assert!(body.contains(
            r#""expected":{"transactionDetailsCount":0,"accountDetailsCount":1,"transactionCreditSum":0.00,"transactionDebitSum":0.00}"#
        ));
        assert!(body.contains(r#""status":"authRequired""#));
        assert!(!body.contains("transactionDetails\":"));
    }

    #[test]
    fn refuses_batches_it_must_never_send() {
        let many: Vec<_> = (0..1001)
            .map(|i| txn(&i.to_string(), "1", "2025-03-03T09:12:44Z"))
            .collect();
        assert_eq!(
            build_statement(&input(&many, BalanceShape::Nested)),
            Err(BuildError::TooManyTransactions(1001))
        );
        let unordered = [
            txn("a", "1", "2025-03-04T09:12:44Z"),
            txn("b", "1", "2025-03-03T09:12:44Z"),
        ];
        assert_eq!(
            build_statement(&input(&unordered, BalanceShape::Nested)),
            Err(BuildError::OutOfOrder)
        );
        let mut no_ledger = input(&unordered[..1], BalanceShape::Nested);
        no_ledger.ledger = None;
        assert_eq!(
            build_statement(&no_ledger),
            Err(BuildError::MissingLedgerBalance)
        );
    }

    #[test]
    fn ledger_after_a_batch_prefers_the_running_balance() {
        let mut batch = vec![txn("a", "-10.00", "2025-03-03T09:00:00Z")];
        let later = vec![txn("b", "5.50", "2025-03-04T09:00:00Z")];
        let current = Balance {
            amount: "100.00".parse().unwrap(),
            as_of: parse_datetime("2025-03-05T00:00:00Z").unwrap(),
        };
        let derived = ledger_after_batch(&batch, &later, Some(&current)).unwrap();
        assert_eq!(derived.amount.to_string(), "94.50");
        batch[0].running_balance = Some("77.77".parse().unwrap());
        let running = ledger_after_batch(&batch, &later, Some(&current)).unwrap();
        assert_eq!(running.amount.to_string(), "77.77");
    }

    #[test]
    fn a_balance_older_than_the_transactions_it_should_count_is_not_used() {
        let batch = vec![txn("a", "-10.00", "2025-03-03T09:00:00Z")];
        let later = vec![txn("b", "5.50", "2025-03-04T09:00:00Z")];
        let at = |when: &str| Balance {
            amount: "100.00".parse().unwrap(),
            as_of: parse_datetime(when).unwrap(),
        };
        // Older than the later pending one: it does not count it yet.
        assert_eq!(
            ledger_after_batch(&batch, &later, Some(&at("2025-03-04T08:59:59Z"))),
            None
        );
        assert_eq!(
            ledger_after_batch(&batch, &[], Some(&at("2025-03-03T08:00:00Z"))),
            None
        );
        let fresh = ledger_after_batch(&batch, &later, Some(&at("2025-03-04T09:00:00Z")));
        assert_eq!(
            fresh.map(|b| b.amount.to_string()).as_deref(),
            Some("94.50")
        );
    }

    #[test]
    fn classifies_terminal_outcomes() {
        let failed = |details: Vec<(&str, &str)>| StatementResource {
            id: "s".into(),
            principal_id: None,
            status: StatementStatus::Failed,
            details: Some(
                details
                    .into_iter()
                    .map(|(c, t)| FailureDetail {
                        code: c.into(),
                        target: Some(t.into()),
                        message: None,
                    })
                    .collect(),
            ),
        };
        assert_eq!(
            classify(&failed(vec![
                ("DuplicateTransaction", "a"),
                ("TransactionTooOld", "b")
            ])),
            Some(Outcome::FailedOnItems {
                duplicates: vec!["a".into()],
                too_old: vec!["b".into()]
            })
        );
        assert_eq!(
            classify(&failed(vec![("BankAccountCancelled", "x")])),
            Some(Outcome::AccountCancelled)
        );
        assert!(matches!(
            classify(&failed(vec![("DuplicateTransaction", "a"), ("Weird", "b")])),
            Some(Outcome::FailedOther(_))
        ));
        let processing: StatementResource =
            serde_json::from_str(r#"{"_id":"s","status":"processing"}"#).unwrap();
        assert_eq!(classify(&processing), None);
        let novel: StatementResource =
            serde_json::from_str(r#"{"_id":"s","status":"validating"}"#).unwrap();
        assert_eq!(novel.status, StatementStatus::Unknown);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use rust_decimal::prelude::ToPrimitive;

        /// Transactions with random cents in ±1,000,000.00 and random dates in one year.
        fn arb_transactions(max: usize) -> impl Strategy<Value = Vec<Transaction>> {
            prop::collection::vec((-100_000_000i64..100_000_000, 0i64..31_536_000), 0..max)
                .prop_map(|v| {
                    v.into_iter()
                        .enumerate()
                        .map(|(i, (cents, secs))| {
                            let mut t = txn(&format!("u{i}"), "0", "2025-01-01T00:00:00Z");
                            t.transaction_amount = Decimal::new(cents, 2);
                            t.date_posted += chrono::TimeDelta::seconds(secs);
                            t
                        })
                        .collect()
                })
        }

        proptest! {
            #[test]
            fn statement_order_is_by_date_and_keeps_bank_order_for_ties(mut txns in arb_transactions(300)) {
                let before = txns.clone();
                statement_order(&mut txns);
                prop_assert!(txns.windows(2).all(|w| w[0].date_posted <= w[1].date_posted));
                // Stable: equal dates keep their original relative order.
                for w in txns.windows(2) {
                    if w[0].date_posted == w[1].date_posted {
                        let a = before.iter().position(|t| t.unique_id == w[0].unique_id);
                        let b = before.iter().position(|t| t.unique_id == w[1].unique_id);
                        prop_assert!(a < b);
                    }
                }
            }

            #[test]
            fn batches_of_at_most_1000_carry_everything_once_with_exact_sums(mut txns in arb_transactions(2600)) {
                statement_order(&mut txns);
                let mut seen = Vec::new();
                for batch in txns.chunks(MAX_TRANSACTIONS_PER_STATEMENT) {
                    let mut i = input(batch, BalanceShape::Nested);
                    i.ledger = Some(Balance { amount: Decimal::ZERO, as_of: batch[0].date_posted });
                    let req = build_statement(&i).unwrap();
                    let e = &req.data.expected;
                    prop_assert!(e.transaction_details_count <= MAX_TRANSACTIONS_PER_STATEMENT);
                    prop_assert_eq!(e.transaction_details_count, batch.len());
                    // The same sums computed in integer cents.
                    let cents: Vec<i64> = batch
                        .iter()
                        .map(|t| (t.transaction_amount * Decimal::from(100)).to_i64().unwrap())
                        .collect();
                    let credit: i64 = cents.iter().filter(|c| **c >= 0).sum();
                    let debit: i64 = cents.iter().filter(|c| **c < 0).sum();
                    prop_assert_eq!(e.transaction_credit_sum, Decimal::new(credit, 2));
                    prop_assert_eq!(e.transaction_debit_sum, Decimal::new(debit, 2));
                    prop_assert!(e.transaction_debit_sum <= Decimal::ZERO);
                    // Amounts go out as plain numbers with at most two fraction digits.
                    let numbers = req
                        .data
                        .transaction_details
                        .iter()
                        .map(|d| d.transaction_amount)
                        .chain([e.transaction_credit_sum, e.transaction_debit_sum]);
                    for n in numbers {
                        let text = crate::amount::to_json_number(&n);
                        prop_assert!(!text.get().contains(['e', 'E']), "{}", text.get());
                        prop_assert!(n.scale() <= 2);
                    }
                    seen.extend(req.data.transaction_details.iter().map(|d| d.unique_id.clone()));
                }
                let all: Vec<String> = txns.iter().map(|t| t.unique_id.clone()).collect();
                prop_assert_eq!(seen, all);
            }

            #[test]
            fn the_ledger_after_a_batch_plus_what_follows_is_the_current_balance(
                txns in arb_transactions(50),
                split in 0usize..50,
                current in -100_000_000i64..100_000_000,
            ) {
                prop_assume!(!txns.is_empty());
                let split = split.min(txns.len() - 1) + 1;
                let (batch, later) = txns.split_at(split);
                let newest = txns.iter().map(|t| t.date_posted).max().unwrap();
                let current = Balance { amount: Decimal::new(current, 2), as_of: newest };
                let after = ledger_after_batch(batch, later, Some(&current)).unwrap();
                let later_sum: Decimal = later.iter().map(|t| t.transaction_amount).sum();
                prop_assert_eq!(after.amount + later_sum, current.amount);
                prop_assert_eq!(after.as_of, batch[batch.len() - 1].date_posted);
            }
        }
    }
}
