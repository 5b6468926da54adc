//! The local stack's AWS endpoint: a pass-through that sends DynamoDB requests to DynamoDB Local,
//! SQS to its emulator (moto or fauxqs) and every other service (KMS) to moto, and counts every
//! request by caller and operation with its body sizes. Each function gets an endpoint of its own, so that the calls are attributed
//! to the function that made them (checked against its `aws-actions.txt`), and the pipeline
//! benchmark turns the counts into the request figures of docs/cost.md.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// Requests of one operation (`DynamoDB.PutItem`, `SQS.ReceiveMessage`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OperationCount {
    pub requests: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

impl OperationCount {
    /// What was counted after `before`, a snapshot of the same counter taken earlier.
    pub fn since(&self, before: &OperationCount) -> OperationCount {
        OperationCount {
            requests: self.requests.saturating_sub(before.requests),
            request_bytes: self.request_bytes.saturating_sub(before.request_bytes),
            response_bytes: self.response_bytes.saturating_sub(before.response_bytes),
        }
    }
}

/// Counts by (caller, operation).
#[derive(Default)]
struct Counts(Mutex<BTreeMap<(String, String), OperationCount>>);

pub struct Meter {
    /// The endpoint for callers that are not functions (tools, tests).
    pub endpoint: String,
    upstreams: Arc<Upstreams>,
    counts: Arc<Counts>,
    servers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Upstreams {
    dynamodb: String,
    sqs: String,
    others: String,
    http: reqwest::Client,
}

struct Caller {
    name: String,
    upstreams: Arc<Upstreams>,
    counts: Arc<Counts>,
}

/// The caller name of requests made through `Meter::endpoint`.
pub const TOOLS: &str = "tools";

/// `DynamoDB_20120810.PutItem` -> `DynamoDB.PutItem`; `AmazonSQS.SendMessage` -> `SQS.SendMessage`.
pub fn operation_of(target: Option<&str>) -> String {
    match target.and_then(|t| t.split_once('.')) {
        Some((service, op)) if service.starts_with("DynamoDB") => format!("DynamoDB.{op}"),
        Some((service, op)) if service.contains("SQS") => format!("SQS.{op}"),
        Some(("TrentService", op)) => format!("KMS.{op}"),
        Some((service, op)) if service.starts_with("secretsmanager") => {
            format!("SecretsManager.{op}")
        }
        Some((service, op)) => format!("{service}.{op}"),
        None => "other".into(),
    }
}

impl Meter {
    /// Routes DynamoDB to `dynamodb`, SQS to `sqs` and everything else (KMS) to `others`.
    pub async fn start(dynamodb: &str, sqs: &str, others: &str) -> Result<Self> {
        let upstreams = Arc::new(Upstreams {
            dynamodb: dynamodb.trim_end_matches('/').to_string(),
            sqs: sqs.trim_end_matches('/').to_string(),
            others: others.trim_end_matches('/').to_string(),
            // Never times out on its own: SQS long polls last up to 20 s.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .context("the meter's HTTP client")?,
        });
        let mut meter = Self {
            endpoint: String::new(),
            upstreams,
            counts: Arc::new(Counts::default()),
            servers: Mutex::new(Vec::new()),
        };
        meter.endpoint = meter.endpoint_for(TOOLS).await?;
        Ok(meter)
    }

    /// A new endpoint whose requests are counted as `caller`'s.
    pub async fn endpoint_for(&self, caller: &str) -> Result<String> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the AWS meter")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Caller {
            name: caller.to_string(),
            upstreams: self.upstreams.clone(),
            counts: self.counts.clone(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        if let Ok(mut servers) = self.servers.lock() {
            servers.push(server);
        }
        Ok(endpoint)
    }

    /// The counts so far, by operation, all callers together.
    pub fn snapshot(&self) -> BTreeMap<String, OperationCount> {
        let mut all: BTreeMap<String, OperationCount> = BTreeMap::new();
        for ((_, op), c) in self.by_caller_flat() {
            let a = all.entry(op).or_default();
            a.requests += c.requests;
            a.request_bytes += c.request_bytes;
            a.response_bytes += c.response_bytes;
        }
        all
    }

    /// The counts so far, by caller, then by operation.
    pub fn by_caller(&self) -> BTreeMap<String, BTreeMap<String, OperationCount>> {
        let mut out: BTreeMap<String, BTreeMap<String, OperationCount>> = BTreeMap::new();
        for ((caller, op), c) in self.by_caller_flat() {
            out.entry(caller).or_default().insert(op, c);
        }
        out
    }

    fn by_caller_flat(&self) -> BTreeMap<(String, String), OperationCount> {
        self.counts.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn stop(&self) {
        if let Ok(mut servers) = self.servers.lock() {
            for s in servers.drain(..) {
                s.abort();
            }
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn forward(
    State(caller): State<Arc<Caller>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut operation = operation_of(headers.get("x-amz-target").and_then(|v| v.to_str().ok()));
    let base = if operation.starts_with("DynamoDB.") {
        &caller.upstreams.dynamodb
    } else if operation.starts_with("SQS.") {
        &caller.upstreams.sqs
    } else {
        &caller.upstreams.others
    };
    // FIFO requests are priced apart from standard ones.
    if operation.starts_with("SQS.") && body.windows(7).any(|w| w == b".fifo\"") {
        operation.push_str(" (FIFO)");
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = caller
        .upstreams
        .http
        .request(method, format!("{base}{path}"));
    for (name, value) in &headers {
        // The client computes Host and Content-Length for the new connection.
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let request_bytes = body.len() as u64;
    let answer = match request.body(body).send().await {
        Ok(a) => a,
        Err(e) => {
            return (StatusCode::BAD_GATEWAY, format!("meter: upstream: {e}")).into_response();
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_GATEWAY,
                format!("meter: upstream body: {e}"),
            )
                .into_response();
        }
    };
    if let Ok(mut counts) = caller.counts.0.lock() {
        let c = counts.entry((caller.name.clone(), operation)).or_default();
        c.requests += 1;
        c.request_bytes += request_bytes;
        c.response_bytes += bytes.len() as u64;
    }
    let mut response = Response::builder().status(status);
    for (name, value) in &answer_headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::from(bytes))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_by_service_and_action() {
        assert_eq!(
            operation_of(Some("DynamoDB_20120810.PutItem")),
            "DynamoDB.PutItem"
        );
        assert_eq!(
            operation_of(Some("AmazonSQS.ReceiveMessage")),
            "SQS.ReceiveMessage"
        );
        assert_eq!(operation_of(None), "other");
    }

    #[test]
    fn a_count_since_a_snapshot_is_the_difference_of_each_field() {
        let before = OperationCount {
            requests: 2,
            request_bytes: 100,
            response_bytes: 40,
        };
        let after = OperationCount {
            requests: 5,
            request_bytes: 250,
            response_bytes: 90,
        };
        let d = after.since(&before);
        assert_eq!(
            (d.requests, d.request_bytes, d.response_bytes),
            (3, 150, 50)
        );
    }
}
