//! Metrics in CloudWatch Embedded Metric Format: one JSON line on stdout per data point, which
//! CloudWatch turns into a metric without any API call from the function.

use serde_json::{Map, Value, json};

/// The namespace every metric of the connector is published under.
pub const NAMESPACE: &str = "SageBankingConnector";

/// Every metric the connector emits (docs/operations.md explains each). Alarms and the dashboard
/// in template.yaml may only name these: a test holds them to it.
pub const NAMES: &[&str] = &[
    "Notifications",
    "PayoutsAuthorisations",
    "PayoutsBankEvents",
    "PayoutsBatches",
    "PayoutsDeliveries",
    "PayoutsMessages",
    "PayoutsReconciled",
    "PayoutsSubscriptions",
    "StatementsPosted",
    "StatementsSucceeded",
    "StatementsFailed",
    "StatementsOverdue",
    "StatementsParked",
    "PollsPerStatement",
    "StatementProcessingTime",
    "IngestToSucceeded",
    "RateLimited",
    "TokenRefreshes",
    "RecordsParked",
    "PendingDepth",
    "PendingTotal",
    "PendingMax",
    "OldestInFlightAge",
    "WatchdogTakeovers",
    "ConfigurationErrors",
];

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// The EMF document of one data point (exposed for tests). `properties` are searchable in the
/// log (CloudWatch Logs Insights) without becoming dimensions, which cost per distinct value.
pub fn document(
    name: &str,
    value: f64,
    unit: Unit,
    dimensions: &[(&str, &str)],
    properties: &[(&str, &str)],
    now_ms: i64,
) -> Value {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
    let mut dims: Vec<&str> = vec!["Function"];
    dims.extend(dimensions.iter().map(|(k, _)| *k));
    let mut doc = Map::new();
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                // Per function and dimension, and once more with no dimension at all: the
                // stack-wide series that alarms and the dashboard read.
                "Dimensions": [dims, []],
                "Metrics": [{"Name": name, "Unit": unit.as_str()}],
            }],
        }),
    );
    doc.insert("Function".into(), json!(function));
    for (k, v) in properties.iter().chain(dimensions) {
        doc.insert((*k).into(), json!(v));
    }
    doc.insert(name.into(), json!(value));
    Value::Object(doc)
}

/// Emits one data point.
pub fn emit(name: &str, value: f64, unit: Unit, dimensions: &[(&str, &str)]) {
    emit_with(name, value, unit, dimensions, &[]);
}

/// Emits one data point with properties (say `bankAccountId`) that stay out of the dimensions.
pub fn emit_with(
    name: &str,
    value: f64,
    unit: Unit,
    dimensions: &[(&str, &str)],
    properties: &[(&str, &str)],
) {
    let doc = document(
        name,
        value,
        unit,
        dimensions,
        properties,
        chrono::Utc::now().timestamp_millis(),
    );
    println!("{doc}");
}

pub fn count(name: &str, dimensions: &[(&str, &str)]) {
    emit(name, 1.0, Unit::Count, dimensions);
}

/// The reason class of a parked record: the text before the first `:` (`Failed: ...` ->
/// `Failed`), so that the metric's dimension has a handful of values, not one per message.
pub fn reason_class(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

/// `RecordsParked` by reason class.
pub fn parked(reason: &str, records: usize) {
    if records > 0 {
        emit(
            "RecordsParked",
            records as f64,
            Unit::Count,
            &[("Reason", reason_class(reason))],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_point_is_a_valid_emf_document() {
        let d = document(
            "StatementsPosted",
            1.0,
            Unit::Count,
            &[("Kind", "transactions")],
            &[("bankAccountId", "6f1c")],
            1_700_000_000_000,
        );
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], NAMESPACE);
        assert_eq!(m["Dimensions"][0], json!(["Function", "Kind"]));
        assert_eq!(m["Dimensions"][1], json!([]));
        assert_eq!(m["Metrics"][0]["Name"], "StatementsPosted");
        assert_eq!(d["Kind"], "transactions");
        assert_eq!(d["StatementsPosted"], 1.0);
        assert_eq!(d["_aws"]["Timestamp"], 1_700_000_000_000i64);
        // A property is in the document but not a dimension.
        assert_eq!(d["bankAccountId"], "6f1c");
    }

    #[test]
    fn parked_reasons_fold_into_a_few_classes() {
        assert_eq!(reason_class("Failed: InvalidPropertyValue x"), "Failed");
        assert_eq!(reason_class("Rejected: MissingProperty y"), "Rejected");
        assert_eq!(reason_class("TransactionTooOld"), "TransactionTooOld");
    }
}
