//! An API Gateway HTTP API on loopback: routes from the template, payload format 2.0 events to
//! the function, its proxy response back to the client.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::runtime::{Function, Outcome};

/// API Gateway's payload limit.
const MAX_BODY: usize = 10 * 1024 * 1024;

pub struct Route {
    pub method: String,
    pub path: String,
    pub function: Arc<Function>,
}

pub struct Gateway {
    pub routes: Vec<Route>,
}

/// The values of a template path's `{name}` segments in `path`, if it matches.
fn path_match(template: &str, path: &str) -> Option<BTreeMap<String, String>> {
    let (mut t, mut p) = (template.split('/'), path.split('/'));
    let mut parameters = BTreeMap::new();
    loop {
        match (t.next(), p.next()) {
            (None, None) => return Some(parameters),
            (Some(ts), Some(ps)) => match ts.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
                Some(name) if !ps.is_empty() => {
                    let value = percent_decode(ps)?;
                    parameters.insert(name.to_string(), value);
                }
                Some(_) => return None,
                None if ts == ps => {}
                None => return None,
            },
            _ => return None,
        }
    }
}

fn percent_decode(segment: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("v={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

impl Gateway {
    /// The route for a request, as API Gateway chooses it: a literal path before one with
    /// `{name}` segments.
    fn route(&self, method: &str, path: &str) -> Option<(&Route, BTreeMap<String, String>)> {
        let methods = |r: &&Route| r.method == method || r.method == "ANY";
        self.routes
            .iter()
            .filter(methods)
            .find(|r| r.path == path)
            .map(|r| (r, BTreeMap::new()))
            .or_else(|| {
                self.routes
                    .iter()
                    .filter(methods)
                    .find_map(|r| path_match(&r.path, path).map(|params| (r, params)))
            })
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "application/json")],
        r#"{"message":"Not Found"}"#,
    )
        .into_response()
}

fn gateway_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

/// Builds the payload format 2.0 event of an HTTP request.
pub fn http_event(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    source_ip: &str,
    route_key: &str,
) -> Value {
    let mut header_map: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let v = String::from_utf8_lossy(value.as_bytes()).to_string();
        if name == "cookie" {
            cookies.extend(
                v.split(';')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty()),
            );
            continue;
        }
        header_map
            .entry(name.as_str().to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    // API Gateway adds these; the functions build absolute URLs from them.
    header_map
        .entry("x-forwarded-proto".into())
        .or_insert_with(|| "http".into());
    header_map
        .entry("x-forwarded-for".into())
        .or_insert_with(|| source_ip.to_string());
    let raw_query = uri.query().unwrap_or("").to_string();
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        query
            .entry(k.to_string())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v.to_string());
    }
    let (body_text, base64) = match std::str::from_utf8(body) {
        Ok(t) => (t.to_string(), false),
        Err(_) => (STANDARD.encode(body), true),
    };
    let now = chrono::Utc::now();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": uri.path(),
        "rawQueryString": raw_query,
        "headers": header_map,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method.as_str(),
                "path": uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": base64,
    });
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !body.is_empty() {
        event["body"] = json!(body_text);
    }
    event
}

/// Turns the function's proxy response into an HTTP response.
pub fn proxy_response(payload: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let status = v
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| StatusCode::from_u16(s as u16).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder().status(status);
    if let Some(h) = response.headers_mut() {
        for source in ["headers", "multiValueHeaders"] {
            if let Some(map) = v.get(source).and_then(Value::as_object) {
                for (k, val) in map {
                    let values: Vec<String> = match val {
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect(),
                        Value::String(s) => vec![s.clone()],
                        other => vec![other.to_string()],
                    };
                    let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                        continue;
                    };
                    h.remove(&name);
                    for value in values {
                        if let Ok(hv) = HeaderValue::from_str(&value) {
                            h.append(name.clone(), hv);
                        }
                    }
                }
            }
        }
        for c in v
            .get("cookies")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(Ok(hv)) = c.as_str().map(HeaderValue::from_str) {
                h.append("set-cookie", hv);
            }
        }
    }
    let body = v.get("body").and_then(Value::as_str).unwrap_or("");
    let bytes = if v
        .get("isBase64Encoded")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        STANDARD.decode(body).unwrap_or_default()
    } else {
        body.as_bytes().to_vec()
    };
    response.body(Body::from(bytes)).unwrap_or_else(|_| {
        gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    })
}

pub async fn handle(
    State(gateway): State<Arc<Gateway>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((route, parameters)) = gateway.route(method.as_str(), uri.path()) else {
        return not_found();
    };
    if body.len() > MAX_BODY {
        return gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    let route_key = format!("{} {}", route.method, route.path);
    let mut event = http_event(
        &method,
        &uri,
        &headers,
        &body,
        &peer.ip().to_string(),
        &route_key,
    );
    if !parameters.is_empty() {
        event["pathParameters"] = json!(parameters);
    }
    let payload = match serde_json::to_vec(&event) {
        Ok(p) => p,
        Err(_) => return gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    };
    match route.function.invoke(payload).await {
        Ok(Outcome::Response(body)) => proxy_response(&body),
        Ok(Outcome::Timeout) => {
            gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
        Ok(_) | Err(_) => gateway_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    }
}

pub fn router(gateway: Arc<Gateway>) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY + 1))
        .with_state(gateway)
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn template_paths_match_with_their_parameters_and_literals_only_exactly() {
        let m = |t: &str, p: &str| path_match(t, p);
        assert_eq!(
            m("/authorise/{linkId}", "/authorise/k3J9-_x"),
            Some(BTreeMap::from([(
                "linkId".to_string(),
                "k3J9-_x".to_string()
            )]))
        );
        assert_eq!(
            m("/authorise/{linkId}", "/authorise/a%20b"),
            Some(BTreeMap::from([("linkId".to_string(), "a b".to_string())]))
        );
        assert_eq!(m("/authorise/{linkId}", "/authorise/"), None);
        assert_eq!(m("/authorise/{linkId}", "/authorise/a/b"), None);
        assert_eq!(m("/authorise/{linkId}", "/authorised/a"), None);
        assert_eq!(m("/auth", "/auth"), Some(BTreeMap::new()));
        assert_eq!(m("/auth", "/auth/x"), None);
    }
}
