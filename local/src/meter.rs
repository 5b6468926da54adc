//! A metering pass-through in front of moto: every AWS request of the functions and of the
//! event sources goes through it, counted by operation with its body sizes. The pipeline
//! benchmark turns the counts into the request figures of docs/cost.md (moto itself counts
//! nothing, and its consumed capacity is a constant).

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

#[derive(Default)]
struct Counts(Mutex<BTreeMap<String, OperationCount>>);

pub struct Meter {
    pub endpoint: String,
    counts: Arc<Counts>,
    server: tokio::task::JoinHandle<()>,
}

struct Upstream {
    base: String,
    http: reqwest::Client,
    counts: Arc<Counts>,
}

/// `DynamoDB_20120810.PutItem` -> `DynamoDB.PutItem`; `AmazonSQS.SendMessage` -> `SQS.SendMessage`.
pub fn operation_of(target: Option<&str>) -> String {
    match target.and_then(|t| t.split_once('.')) {
        Some((service, op)) if service.starts_with("DynamoDB") => format!("DynamoDB.{op}"),
        Some((service, op)) if service.contains("SQS") => format!("SQS.{op}"),
        Some((service, op)) if service.starts_with("secretsmanager") => {
            format!("SecretsManager.{op}")
        }
        Some((service, op)) => format!("{service}.{op}"),
        None => "other".into(),
    }
}

impl Meter {
    pub async fn start(upstream: &str) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the AWS meter")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let state = Arc::new(Upstream {
            base: upstream.trim_end_matches('/').to_string(),
            // Never times out on its own: SQS long polls last up to 20 s.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .context("the meter's HTTP client")?,
            counts: counts.clone(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
            .with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            endpoint,
            counts,
            server,
        })
    }

    /// The counts so far, by operation.
    pub fn snapshot(&self) -> BTreeMap<String, OperationCount> {
        self.counts.0.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn stop(&self) {
        self.server.abort();
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn forward(
    State(up): State<Arc<Upstream>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut operation = operation_of(headers.get("x-amz-target").and_then(|v| v.to_str().ok()));
    // FIFO requests are priced apart from standard ones.
    if operation.starts_with("SQS.") && body.windows(7).any(|w| w == b".fifo\"") {
        operation.push_str(" (FIFO)");
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = up.http.request(method, format!("{}{path}", up.base));
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
    if let Ok(mut counts) = up.counts.0.lock() {
        let c = counts.entry(operation).or_default();
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
}
