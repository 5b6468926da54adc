//! Metrics in CloudWatch Embedded Metric Format: one JSON line on stdout per data point, which
//! CloudWatch turns into a metric without any API call from the function.

use serde_json::{Map, Value, json};

/// The namespace every metric of the connector is published under.
pub const NAMESPACE: &str = "SageBankingConnector";

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// The EMF document of one data point (exposed for tests).
pub fn document(
    name: &str,
    value: f64,
    unit: Unit,
    dimensions: &[(&str, &str)],
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
                "Dimensions": [dims],
                "Metrics": [{"Name": name, "Unit": unit.as_str()}],
            }],
        }),
    );
    doc.insert("Function".into(), json!(function));
    for (k, v) in dimensions {
        doc.insert((*k).into(), json!(v));
    }
    doc.insert(name.into(), json!(value));
    Value::Object(doc)
}

/// Emits one data point.
pub fn emit(name: &str, value: f64, unit: Unit, dimensions: &[(&str, &str)]) {
    let doc = document(
        name,
        value,
        unit,
        dimensions,
        chrono::Utc::now().timestamp_millis(),
    );
    println!("{doc}");
}

pub fn count(name: &str, dimensions: &[(&str, &str)]) {
    emit(name, 1.0, Unit::Count, dimensions);
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
            1_700_000_000_000,
        );
        let m = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], NAMESPACE);
        assert_eq!(m["Dimensions"][0], json!(["Function", "Kind"]));
        assert_eq!(m["Metrics"][0]["Name"], "StatementsPosted");
        assert_eq!(d["Kind"], "transactions");
        assert_eq!(d["StatementsPosted"], 1.0);
        assert_eq!(d["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }
}
