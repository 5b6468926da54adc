//! Bank transactions as the connector accepts them (ingest and backfill) and as it sends them
//! (`TransactionDetail` of `POST /v1/statements`, spec §6.4).

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::amount::{self, AmountError};

/// `transactionType` values of spec §6.4.
pub const TRANSACTION_TYPES: &[&str] = &[
    "CREDIT",
    "DEBIT",
    "INT",
    "DIV",
    "FEE",
    "SRVCHG",
    "DEP",
    "ATM",
    "POS",
    "XFER",
    "CHECK",
    "PAYMENT",
    "CASH",
    "DIRECTDEP",
    "DIRECTDEBIT",
    "REPEATPMT",
    "HOLD",
    "OTHER",
];

/// Banking Service's date-time format: `YYYY-MM-DDTHH:MM:SS.sssZ`.
pub fn format_datetime(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 date-time in any offset, to UTC.
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Cuts free text to `max` characters on a character boundary (the spec asks the connector to
/// truncate rather than refuse).
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((idx, _)) => text[..idx].to_string(),
        None => text.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Payee {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address3: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee_bank_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee_account_id: Option<String>,
}

/// Where the transaction happened (`coordinates`, spec §6.4). The numbers are kept as the bank
/// wrote them, so that no digit is lost on the way to Banking Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinates {
    pub lat: serde_json::Number,
    pub long: serde_json::Number,
}

/// The bank's classification of the transaction (`category`, spec §6.4); all optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Category {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_level_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standard_industrial_code: Option<String>,
}

/// One of the bank's own name/value pairs (`providerAdditionalFields`, spec §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdditionalField {
    pub name: String,
    pub value: String,
}

/// Free-text limit of a category name (spec §6.4 Decision).
pub const CATEGORY_TEXT_MAX: usize = 128;
/// Length limits of `standardIndustrialCode`.
pub const INDUSTRIAL_CODE_LEN: std::ops::RangeInclusive<usize> = 1..=16;
/// Length limit of an additional field's name and value.
pub const ADDITIONAL_FIELD_MAX: usize = 50;
/// Additional fields per transaction (a Decision: Sage names no limit; this keeps a stored
/// transaction far below DynamoDB's item size whatever a bank sends).
pub const ADDITIONAL_FIELDS_MAX: usize = 20;

/// A cleared bank transaction, validated and normalised, ready to be stored and sent.
///
/// Field names follow the Provider API's `TransactionDetail` so that a bank's engineers see one
/// vocabulary; `runningBalance` is the account's ledger balance right after this transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub unique_id: String,
    #[serde(with = "amount::decimal_string")]
    pub transaction_amount: Decimal,
    pub transaction_type: String,
    pub date_posted: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_user_initiated: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange_currency: Option<String>,
    #[serde(
        default,
        with = "amount::decimal_string_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub exchange_amount: Option<Decimal>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narrative1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub narrative2: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee: Option<Payee>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<Coordinates>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Category>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provider_additional_fields: Vec<AdditionalField>,
    #[serde(
        default,
        with = "amount::decimal_string_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub running_balance: Option<Decimal>,
}

/// How far ahead of the connector's clock a `datePosted` may be (spec §7.1 rule 13): a booked
/// transaction cannot be dated later than now, and one that were sent would become the account's
/// newest date and trip the 2-week rule for everything after it.
pub const MAX_AHEAD_OF_CLOCK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// The refusal of a record dated more than [`MAX_AHEAD_OF_CLOCK`] after `now`, if it is.
pub fn dated_in_future(t: &Transaction, now: DateTime<Utc>) -> Option<RecordProblem> {
    (t.date_posted > now + MAX_AHEAD_OF_CLOCK).then(|| RecordProblem {
        field: "datePosted".into(),
        code: "DatePostedInFuture",
        message: "is more than 5 minutes ahead of the connector's clock".into(),
    })
}

/// Whether a transaction falls before the account's `requestedStartDate` (the start of that UTC
/// day counts as inside, spec §7.1 rule 11): Banking Service records it as a violation.
pub fn before_start(t: &Transaction, requested_start: Option<DateTime<Utc>>) -> bool {
    requested_start.is_some_and(|start| {
        t.date_posted
            < start
                .date_naive()
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
    })
}

/// One problem with one record, reported back to the bank per record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordProblem {
    /// JSON path inside the record, e.g. `transactionAmount` or `payee.country`.
    pub field: String,
    /// Stable machine code: `MissingProperty`, `InvalidPropertyValue`, `NotCleared`.
    pub code: &'static str,
    pub message: String,
}

impl RecordProblem {
    fn missing(field: &str) -> Self {
        Self {
            field: field.into(),
            code: "MissingProperty",
            message: "is required".into(),
        }
    }
    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code: "InvalidPropertyValue",
            message: message.into(),
        }
    }
}

/// A record as received: amounts stay raw JSON text so that no digit is lost to `f64`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawRecord {
    unique_id: Option<Value>,
    transaction_amount: Option<Box<RawValue>>,
    transaction_type: Option<Value>,
    transaction_status: Option<Value>,
    date_posted: Option<Value>,
    date_user_initiated: Option<Value>,
    exchange_currency: Option<Value>,
    exchange_amount: Option<Box<RawValue>>,
    check_number: Option<Value>,
    reference_number: Option<Value>,
    description: Option<Value>,
    narrative1: Option<Value>,
    narrative2: Option<Value>,
    payee: Option<Value>,
    coordinates: Option<Value>,
    category: Option<Value>,
    provider_additional_fields: Option<Value>,
    running_balance: Option<Box<RawValue>>,
}

#[derive(Default)]
struct Problems(Vec<RecordProblem>);

impl Problems {
    fn str_field<'v>(
        &mut self,
        name: &str,
        value: Option<&'v Value>,
        required: bool,
    ) -> Option<&'v str> {
        match value {
            None | Some(Value::Null) => {
                if required {
                    self.0.push(RecordProblem::missing(name));
                }
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                if required {
                    self.0.push(RecordProblem::missing(name));
                }
                None
            }
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                self.0
                    .push(RecordProblem::invalid(name, "must be a string"));
                None
            }
        }
    }

    /// Free text: truncated to `max` characters, never refused for length.
    fn text(&mut self, name: &str, value: Option<&Value>, max: usize) -> Option<String> {
        self.str_field(name, value, false)
            .map(|s| truncate_chars(s.trim(), max))
    }

    fn amount(&mut self, name: &str, value: Option<&RawValue>, required: bool) -> Option<Decimal> {
        let Some(raw) = value else {
            if required {
                self.0.push(RecordProblem::missing(name));
            }
            return None;
        };
        match amount::from_json_text(raw) {
            Ok(d) => Some(d),
            Err(AmountError::TooPrecise) => {
                self.0.push(RecordProblem::invalid(
                    name,
                    "must have at most 2 fraction digits",
                ));
                None
            }
            Err(e) => {
                self.0.push(RecordProblem::invalid(name, e.to_string()));
                None
            }
        }
    }

    fn datetime(
        &mut self,
        name: &str,
        value: Option<&Value>,
        required: bool,
    ) -> Option<DateTime<Utc>> {
        let text = self.str_field(name, value, required)?;
        match parse_datetime(text) {
            Some(d) => Some(d),
            None => {
                self.0.push(RecordProblem::invalid(
                    name,
                    "must be an RFC 3339 date-time such as 2025-03-03T09:12:44.000Z",
                ));
                None
            }
        }
    }
}

fn is_upper_code(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// Validates one raw record of an ingest request or a backfill page.
pub fn validate_record(raw: &RawValue) -> Result<Transaction, Vec<RecordProblem>> {
    if !raw.get().trim_start().starts_with('{') {
        return Err(vec![RecordProblem::invalid("", "must be a JSON object")]);
    }
    let rec: RawRecord = serde_json::from_str(raw.get())
        .map_err(|_| vec![RecordProblem::invalid("", "must be a JSON object")])?;
    let mut p = Problems::default();

    let unique_id = p
        .str_field("uniqueId", rec.unique_id.as_ref(), true)
        .map(str::to_string);
    if let Some(id) = &unique_id
        && id.chars().count() > 255
    {
        p.0.push(RecordProblem::invalid(
            "uniqueId",
            "must be 1-255 characters",
        ));
    }
    let transaction_amount = p.amount("transactionAmount", rec.transaction_amount.as_deref(), true);
    let transaction_type = p
        .str_field("transactionType", rec.transaction_type.as_ref(), true)
        .map(str::to_string);
    if let Some(t) = &transaction_type
        && !TRANSACTION_TYPES.contains(&t.as_str())
    {
        p.0.push(RecordProblem::invalid(
            "transactionType",
            format!("must be one of {}", TRANSACTION_TYPES.join(", ")),
        ));
    }
    match p.str_field("transactionStatus", rec.transaction_status.as_ref(), false) {
        None | Some("posted") => {}
        Some(_) => p.0.push(RecordProblem {
            field: "transactionStatus".into(),
            code: "NotCleared",
            message: "only cleared (posted) transactions are accepted".into(),
        }),
    }
    let date_posted = p.datetime("datePosted", rec.date_posted.as_ref(), true);
    let date_user_initiated =
        p.datetime("dateUserInitiated", rec.date_user_initiated.as_ref(), false);
    let exchange_currency = p
        .str_field("exchangeCurrency", rec.exchange_currency.as_ref(), false)
        .map(str::to_string);
    if let Some(c) = &exchange_currency
        && !is_upper_code(c, 3)
    {
        p.0.push(RecordProblem::invalid(
            "exchangeCurrency",
            "must be an ISO 4217 code such as EUR",
        ));
    }
    let exchange_amount = p.amount("exchangeAmount", rec.exchange_amount.as_deref(), false);
    if exchange_amount.is_some() != exchange_currency.is_some() {
        p.0.push(RecordProblem::invalid(
            "exchangeAmount",
            "exchangeAmount and exchangeCurrency go together",
        ));
    }
    let check_number = p.text("checkNumber", rec.check_number.as_ref(), 12);
    let reference_number = p.text("referenceNumber", rec.reference_number.as_ref(), 32);
    let description = p.text("description", rec.description.as_ref(), 512);
    let narrative1 = p.text("narrative1", rec.narrative1.as_ref(), 32);
    let narrative2 = p.text("narrative2", rec.narrative2.as_ref(), 32);
    let running_balance = p.amount("runningBalance", rec.running_balance.as_deref(), false);
    let payee = match &rec.payee {
        None | Some(Value::Null) => None,
        Some(Value::Object(obj)) => Some(read_payee(obj, &mut p)),
        Some(_) => {
            p.0.push(RecordProblem::invalid("payee", "must be an object"));
            None
        }
    };

    let coordinates = nested(
        &mut p,
        "coordinates",
        rec.coordinates.as_ref(),
        read_coordinates,
    );
    let category = nested(&mut p, "category", rec.category.as_ref(), read_category).flatten();
    let provider_additional_fields = nested(
        &mut p,
        "providerAdditionalFields",
        rec.provider_additional_fields.as_ref(),
        read_additional_fields,
    )
    .unwrap_or_default();

    match (unique_id, transaction_amount, transaction_type, date_posted) {
        (Some(unique_id), Some(transaction_amount), Some(transaction_type), Some(date_posted))
            if p.0.is_empty() =>
        {
            Ok(Transaction {
                unique_id,
                transaction_amount,
                transaction_type,
                date_posted,
                date_user_initiated,
                exchange_currency,
                exchange_amount,
                check_number,
                reference_number,
                description,
                narrative1,
                narrative2,
                payee,
                coordinates,
                category,
                provider_additional_fields,
                running_balance,
            })
        }
        _ => Err(p.0),
    }
}

/// Reads an optional nested member with `read`, its problems prefixed with the member's name.
fn nested<T>(
    problems: &mut Problems,
    name: &str,
    value: Option<&Value>,
    read: fn(&Value) -> Result<T, Vec<RecordProblem>>,
) -> Option<T> {
    match value {
        None | Some(Value::Null) => None,
        Some(v) => match read(v) {
            Ok(t) => Some(t),
            Err(found) => {
                for mut problem in found {
                    problem.field = if problem.field.is_empty() {
                        name.to_string()
                    } else if problem.field.starts_with('[') {
                        format!("{name}{}", problem.field)
                    } else {
                        format!("{name}.{}", problem.field)
                    };
                    problems.0.push(problem);
                }
                None
            }
        },
    }
}

/// `{"lat": number, "long": number}` with lat in [-90, 90] and long in [-180, 180].
pub fn read_coordinates(value: &Value) -> Result<Coordinates, Vec<RecordProblem>> {
    let Value::Object(obj) = value else {
        return Err(vec![RecordProblem::invalid("", "must be an object")]);
    };
    let mut problems = Vec::new();
    let mut number = |key: &str, limit: f64| match obj.get(key) {
        None | Some(Value::Null) => {
            problems.push(RecordProblem::missing(key));
            None
        }
        Some(Value::Number(n)) if n.as_f64().is_some_and(|v| v.abs() <= limit) => Some(n.clone()),
        Some(_) => {
            problems.push(RecordProblem::invalid(
                key,
                format!("must be a number in [-{limit}, {limit}]"),
            ));
            None
        }
    };
    let (lat, long) = (number("lat", 90.0), number("long", 180.0));
    match (lat, long) {
        (Some(lat), Some(long)) => Ok(Coordinates { lat, long }),
        _ => Err(problems),
    }
}

/// A category; `None` when it names nothing. Names are free text (truncated); the id and the
/// industrial code are codes, refused when malformed.
pub fn read_category(value: &Value) -> Result<Option<Category>, Vec<RecordProblem>> {
    let Value::Object(obj) = value else {
        return Err(vec![RecordProblem::invalid("", "must be an object")]);
    };
    let mut p = Problems::default();
    let category_id = match obj.get("categoryId") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
        Some(_) => {
            p.0.push(RecordProblem::invalid("categoryId", "must be an integer"));
            None
        }
    };
    let code = p
        .str_field(
            "standardIndustrialCode",
            obj.get("standardIndustrialCode"),
            false,
        )
        .map(str::to_string);
    if let Some(c) = &code
        && !INDUSTRIAL_CODE_LEN.contains(&c.chars().count())
    {
        p.0.push(RecordProblem::invalid(
            "standardIndustrialCode",
            "must be 1-16 characters",
        ));
    }
    let category = Category {
        top_level_category: p.text(
            "topLevelCategory",
            obj.get("topLevelCategory"),
            CATEGORY_TEXT_MAX,
        ),
        sub_category: p.text("subCategory", obj.get("subCategory"), CATEGORY_TEXT_MAX),
        category_id,
        standard_industrial_code: code,
    };
    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok((category != Category::default()).then_some(category))
}

/// Name/value pairs: a name is 1-50 characters (refused otherwise: it is a key), a value is
/// free text (truncated to 50), at most [`ADDITIONAL_FIELDS_MAX`] of them.
pub fn read_additional_fields(value: &Value) -> Result<Vec<AdditionalField>, Vec<RecordProblem>> {
    let Value::Array(items) = value else {
        return Err(vec![RecordProblem::invalid("", "must be an array")]);
    };
    if items.len() > ADDITIONAL_FIELDS_MAX {
        return Err(vec![RecordProblem::invalid(
            "",
            format!("must have at most {ADDITIONAL_FIELDS_MAX} items"),
        )]);
    }
    let mut problems = Vec::new();
    let mut fields = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut p = Problems::default();
        let Value::Object(obj) = item else {
            problems.push(RecordProblem::invalid(
                &format!("[{i}]"),
                "must be an object",
            ));
            continue;
        };
        let name = p.str_field("name", obj.get("name"), true).map(str::trim);
        if let Some(n) = name
            && n.chars().count() > ADDITIONAL_FIELD_MAX
        {
            p.0.push(RecordProblem::invalid("name", "must be 1-50 characters"));
        }
        let value = p
            .str_field("value", obj.get("value"), true)
            .map(|v| truncate_chars(v.trim(), ADDITIONAL_FIELD_MAX));
        match (name, value) {
            (Some(name), Some(value)) if p.0.is_empty() => fields.push(AdditionalField {
                name: name.to_string(),
                value,
            }),
            _ => problems.extend(p.0.into_iter().map(|mut problem| {
                problem.field = format!("[{i}].{}", problem.field);
                problem
            })),
        }
    }
    if problems.is_empty() {
        Ok(fields)
    } else {
        Err(problems)
    }
}

fn read_payee(obj: &serde_json::Map<String, Value>, problems: &mut Problems) -> Payee {
    let mut p = Problems::default();
    let country = p
        .str_field("country", obj.get("country"), false)
        .map(str::to_string);
    if let Some(c) = &country
        && !is_upper_code(c, 3)
    {
        p.0.push(RecordProblem::invalid(
            "country",
            "must be an ISO 3166 alpha-3 code such as GBR",
        ));
    }
    let payee = Payee {
        payee_description: p.text("payeeDescription", obj.get("payeeDescription"), 12),
        address1: p.text("address1", obj.get("address1"), 32),
        address2: p.text("address2", obj.get("address2"), 32),
        address3: p.text("address3", obj.get("address3"), 32),
        city: p.text("city", obj.get("city"), 32),
        state: p.text("state", obj.get("state"), 32),
        postal_code: p.text("postalCode", obj.get("postalCode"), 11),
        country,
        phone_number: p.text("phoneNumber", obj.get("phoneNumber"), 32),
        payee_bank_id: p.text("payeeBankId", obj.get("payeeBankId"), 9),
        payee_account_id: p.text("payeeAccountId", obj.get("payeeAccountId"), 22),
    };
    for mut problem in p.0 {
        problem.field = format!("payee.{}", problem.field);
        problems.0.push(problem);
    }
    payee
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_of_the_start_day_is_inside_and_the_clock_bounds_dates() {
        let at = |text: &str| Transaction {
            date_posted: parse_datetime(text).unwrap(),
            ..serde_json::from_value(serde_json::json!({
                "uniqueId": "x", "transactionAmount": "1.00", "transactionType": "CREDIT",
                "datePosted": "2026-01-01T00:00:00Z"
            }))
            .unwrap()
        };
        // A start given as a date-time counts from the start of its UTC day.
        let start = parse_datetime("2026-01-01T10:00:00Z");
        assert!(before_start(&at("2025-12-31T23:59:59.999Z"), start));
        assert!(!before_start(&at("2026-01-01T00:00:00Z"), start));
        assert!(!before_start(&at("2020-01-01T00:00:00Z"), None));
        let now = parse_datetime("2026-12-05T12:00:00Z").unwrap();
        assert!(dated_in_future(&at("2026-12-05T12:05:00Z"), now).is_none());
        let refused = dated_in_future(&at("2026-12-05T12:05:01Z"), now).expect("refused");
        assert_eq!(refused.code, "DatePostedInFuture");
    }
    use serde_json::json;

    fn raw(v: &Value) -> Box<RawValue> {
        RawValue::from_string(v.to_string()).unwrap()
    }

    fn good() -> Value {
        json!({
            "uniqueId": "eb-20250303-000187",
            "transactionAmount": "-42.15",
            "transactionType": "POS",
            "transactionStatus": "posted",
            "datePosted": "2025-03-03T09:12:44.000Z",
            "description": "CARD PAYMENT COFFEE CO",
            "payee": {"payeeDescription": "COFFEE CO LIMITED TRADING", "country": "GBR"},
            "runningBalance": "1207.85"
        })
    }

    #[test]
    fn accepts_and_normalises_a_good_record() {
        let t = validate_record(&raw(&good())).unwrap();
        assert_eq!(t.transaction_amount, Decimal::new(-4215, 2));
        assert_eq!(t.running_balance, Some(Decimal::new(120785, 2)));
        // Free text is cut to the spec's limit instead of refused.
        assert_eq!(
            t.payee.unwrap().payee_description.as_deref(),
            Some("COFFEE CO LI")
        );
        assert_eq!(format_datetime(&t.date_posted), "2025-03-03T09:12:44.000Z");
    }

    #[test]
    fn reports_every_problem_of_a_record() {
        let mut bad = good();
        bad["transactionAmount"] = json!("1.234");
        bad["transactionType"] = json!("GIFT");
        bad["transactionStatus"] = json!("pending");
        bad["datePosted"] = json!("yesterday");
        bad["payee"]["country"] = json!("GB");
        bad.as_object_mut().unwrap().remove("uniqueId");
        let problems = validate_record(&raw(&bad)).unwrap_err();
        let fields: Vec<_> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.code))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("uniqueId", "MissingProperty"),
                ("transactionAmount", "InvalidPropertyValue"),
                ("transactionType", "InvalidPropertyValue"),
                ("transactionStatus", "NotCleared"),
                ("datePosted", "InvalidPropertyValue"),
                ("payee.country", "InvalidPropertyValue"),
            ]
        );
    }

    #[test]
    fn amounts_keep_every_digit_of_the_literal_number() {
        let text = r#"{"uniqueId":"u","transactionAmount":123456789012345.67,"transactionType":"CREDIT","datePosted":"2025-03-03T09:12:44Z"}"#;
        let t = validate_record(&RawValue::from_string(text.into()).unwrap()).unwrap();
        assert_eq!(t.transaction_amount.to_string(), "123456789012345.67");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate_chars("ééééé", 3), "ééé");
        assert_eq!(truncate_chars("ab", 3), "ab");
    }

    #[test]
    fn stored_form_round_trips_exactly() {
        let t = validate_record(&raw(&good())).unwrap();
        let stored = serde_json::to_string(&t).unwrap();
        assert!(stored.contains(r#""transactionAmount":"-42.15""#));
        let back: Transaction = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, t);
    }

    fn with_detail(detail: serde_json::Value) -> Result<Transaction, Vec<RecordProblem>> {
        let mut record = good();
        record
            .as_object_mut()
            .unwrap()
            .extend(detail.as_object().unwrap().clone());
        validate_record(&raw(&record))
    }

    #[test]
    fn full_detail_is_kept_free_text_cut_and_sent_as_given() {
        let long = "x".repeat(200);
        let t = with_detail(serde_json::json!({
            "coordinates": {"lat": 53.7997, "long": -1.5492},
            "category": {"topLevelCategory": long, "subCategory": "Food", "categoryId": 40,
                         "standardIndustrialCode": "56102"},
            "providerAdditionalFields": [{"name": "channel", "value": "y".repeat(60)}],
        }))
        .expect("valid");
        let category = t.category.clone().expect("category");
        assert_eq!(
            category.top_level_category.unwrap().len(),
            CATEGORY_TEXT_MAX
        );
        assert_eq!(category.category_id, Some(40));
        assert_eq!(
            t.provider_additional_fields[0].value.len(),
            ADDITIONAL_FIELD_MAX
        );
        let detail = serde_json::to_value(crate::statement::TransactionDetail::from_transaction(
            &t,
            uuid::Uuid::nil(),
        ))
        .unwrap();
        assert_eq!(
            detail["coordinates"],
            serde_json::json!({"lat": 53.7997, "long": -1.5492})
        );
        assert_eq!(detail["category"]["standardIndustrialCode"], "56102");
        assert_eq!(detail["providerAdditionalFields"][0]["name"], "channel");
        // Stored and read back unchanged.
        let back: Transaction = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        // Absent detail is absent on the wire.
        let plain = crate::statement::TransactionDetail::from_transaction(
            &validate_record(&raw(&good())).unwrap(),
            uuid::Uuid::nil(),
        );
        let plain = serde_json::to_value(plain).unwrap();
        for key in ["coordinates", "category", "providerAdditionalFields"] {
            assert!(plain.get(key).is_none(), "{key} sent though absent");
        }
    }

    #[test]
    fn malformed_detail_is_refused_with_its_place() {
        let fields = |detail| {
            let mut found: Vec<String> = with_detail(detail)
                .unwrap_err()
                .into_iter()
                .map(|p| p.field)
                .collect();
            found.sort();
            found
        };
        assert_eq!(
            fields(serde_json::json!({"coordinates": {"lat": 91, "long": "0"}})),
            ["coordinates.lat", "coordinates.long"]
        );
        assert_eq!(
            fields(serde_json::json!({"coordinates": {"lat": 1}})),
            ["coordinates.long"]
        );
        assert_eq!(
            fields(serde_json::json!({"category": {"categoryId": 1.5,
                                                   "standardIndustrialCode": "x".repeat(17)}})),
            ["category.categoryId", "category.standardIndustrialCode"]
        );
        assert_eq!(
            fields(serde_json::json!({"providerAdditionalFields": [
                {"name": "ok", "value": "v"}, {"name": "n".repeat(51), "value": "v"}, {"value": "v"}
            ]})),
            [
                "providerAdditionalFields[1].name",
                "providerAdditionalFields[2].name"
            ]
        );
        let many: Vec<_> = (0..21)
            .map(|i| serde_json::json!({"name": format!("f{i}"), "value": "v"}))
            .collect();
        assert_eq!(
            fields(serde_json::json!({"providerAdditionalFields": many})),
            ["providerAdditionalFields"]
        );
        assert!(
            with_detail(serde_json::json!({"category": {}}))
                .unwrap()
                .category
                .is_none()
        );
    }
}
