//! The body of `POST /ingest` (docs/bank-data-api.md §3), parsed without I/O: the envelope is
//! checked here, each record later on its own (`transaction::validate_record`), so that one bad
//! record never refuses the good ones beside it.

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::amount;
use crate::statement::Balance;
use crate::transaction::parse_datetime;

/// Most records per ingest request (one statement's worth).
pub const MAX_RECORDS: usize = 1000;
/// Largest ingest body accepted.
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// A well-formed ingest request; its records are still raw.
#[derive(Debug)]
pub struct IngestRequest {
    pub external_id: String,
    pub records: Vec<Box<RawValue>>,
    /// The bank's ledger balance and, when it has one, the available balance.
    pub balance: Option<(Balance, Option<Balance>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestBodyError {
    #[error("the body is too large")]
    TooLarge,
    #[error("too many records: at most {MAX_RECORDS} per request")]
    TooMany,
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IngestBody {
    external_id: Option<String>,
    #[serde(default)]
    transactions: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    balance: Option<BalanceBody>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BalanceBody {
    ledger: Box<RawValue>,
    #[serde(default)]
    available: Option<Box<RawValue>>,
    as_of: String,
}

pub fn parse_ingest_body(body: &[u8]) -> Result<IngestRequest, IngestBodyError> {
    if body.len() > MAX_BODY {
        return Err(IngestBodyError::TooLarge);
    }
    let parsed: IngestBody = serde_json::from_slice(body).map_err(|_| {
        IngestBodyError::Invalid("not a JSON object with externalId and transactions".into())
    })?;
    let external_id = parsed
        .external_id
        .filter(|e| !e.trim().is_empty() && e.chars().count() <= 255)
        .ok_or_else(|| {
            IngestBodyError::Invalid("externalId is required (1-255 characters)".into())
        })?;
    let records = parsed
        .transactions
        .ok_or_else(|| IngestBodyError::Invalid("transactions is required".into()))?;
    if records.len() > MAX_RECORDS {
        return Err(IngestBodyError::TooMany);
    }
    let balance = parsed.balance.map(parse_balance).transpose()?;
    Ok(IngestRequest {
        external_id,
        records,
        balance,
    })
}

fn parse_balance(b: BalanceBody) -> Result<(Balance, Option<Balance>), IngestBodyError> {
    let as_of = parse_datetime(&b.as_of).ok_or_else(|| {
        IngestBodyError::Invalid("balance.asOf must be an RFC 3339 date-time".into())
    })?;
    let amount_of = |raw: &RawValue, field: &str| -> Result<Decimal, IngestBodyError> {
        amount::from_json_text(raw)
            .map_err(|e| IngestBodyError::Invalid(format!("balance.{field} {e}")))
    };
    let ledger = Balance {
        amount: amount_of(&b.ledger, "ledger")?,
        as_of,
    };
    let available = b
        .available
        .as_deref()
        .filter(|r| r.get() != "null")
        .map(|r| amount_of(r, "available").map(|amount| Balance { amount, as_of }))
        .transpose()?;
    Ok((ledger, available))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_body_and_each_refusal() {
        let ok = parse_ingest_body(
            br#"{"externalId":"acc_1","balance":{"ledger":"10.50","asOf":"2026-01-01T00:00:00Z"},"transactions":[{"x":1}]}"#,
        )
        .unwrap();
        assert_eq!(ok.external_id, "acc_1");
        assert_eq!(ok.records.len(), 1);
        assert_eq!(ok.balance.unwrap().0.amount.to_string(), "10.50");
        for (body, expected) in [
            (&b"[]"[..], "not a JSON object"),
            (br#"{"transactions":[]}"#, "externalId is required"),
            (br#"{"externalId":" ","transactions":[]}"#, "externalId is required"),
            (br#"{"externalId":"a"}"#, "transactions is required"),
            (
                br#"{"externalId":"a","transactions":[],"balance":{"ledger":"1.005","asOf":"2026-01-01T00:00:00Z"}}"#,
                "balance.ledger",
            ),
            (
                br#"{"externalId":"a","transactions":[],"balance":{"ledger":"1","asOf":"yesterday"}}"#,
                "balance.asOf",
            ),
        ] {
            match parse_ingest_body(body) {
                Err(IngestBodyError::Invalid(m)) => assert!(m.contains(expected), "{m}"),
                other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        let many = format!(
            r#"{{"externalId":"a","transactions":[{}]}}"#,
            vec!["{}"; MAX_RECORDS + 1].join(",")
        );
        assert_eq!(
            parse_ingest_body(many.as_bytes()).unwrap_err(),
            IngestBodyError::TooMany
        );
        assert_eq!(
            parse_ingest_body(&vec![b' '; MAX_BODY + 1]).unwrap_err(),
            IngestBodyError::TooLarge
        );
    }
}
