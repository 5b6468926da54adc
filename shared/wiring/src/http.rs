//! What every HTTP function answers with: the stable JSON error envelope, JSON bodies, and safe
//! HTML pages.

use connector_app::pages::PagePolicy;
use lambda_http::{Body, Response};
use serde::Serialize;

/// One item of an error's `detail` list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Detail {
    pub target: String,
    pub code: String,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    data: Option<()>,
    links: Option<()>,
    meta: Option<()>,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    detail: Option<&'a [Detail]>,
}

fn response(status: u16, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::Text(body));
    *r.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// An error in the envelope of spec §6.1: `code` and `message` are stable, never internal text.
pub fn error(status: u16, code: &str, message: &str, detail: &[Detail]) -> Response<Body> {
    let body = ErrorEnvelope {
        data: None,
        links: None,
        meta: None,
        error: ErrorBody {
            code,
            message,
            detail: (!detail.is_empty()).then_some(detail),
        },
    };
    let text = serde_json::to_string(&body).unwrap_or_else(|_| {
        r#"{"data":null,"links":null,"meta":null,"error":{"code":"InternalServerError","message":"Internal error","detail":null}}"#.into()
    });
    response(status, "application/json", text)
}

/// `{"data": …, "links": {}, "meta": {}}` with the given status.
pub fn data<T: Serialize>(status: u16, data: &T) -> Response<Body> {
    match serde_json::to_string(&serde_json::json!({"data": data, "links": {}, "meta": {}})) {
        Ok(text) => response(status, "application/json", text),
        Err(_) => internal_error(),
    }
}

/// A bare JSON body (for answers whose shape the spec fixes, such as `/availableaccounts`).
pub fn json<T: Serialize>(status: u16, value: &T) -> Response<Body> {
    match serde_json::to_string(value) {
        Ok(text) => response(status, "application/json", text),
        Err(_) => internal_error(),
    }
}

pub fn internal_error() -> Response<Body> {
    error(
        500,
        "InternalServerError",
        "The request could not be processed; retry later",
        &[],
    )
}

pub fn unavailable() -> Response<Body> {
    error(
        503,
        "ServiceUnavailable",
        "Temporarily unavailable; retry later",
        &[],
    )
}

/// An HTML page with the headers of spec §4.3: framed only by the allowed ancestors, never
/// cached, no referrer, HSTS, and no script or style from anywhere but the page itself.
pub fn html(status: u16, page: String, policy: &PagePolicy) -> Response<Body> {
    let mut r = response(status, "text/html; charset=utf-8", page);
    let h = r.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(&policy.content_security_policy()) {
        h.insert(http::header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(
        http::header::REFERRER_POLICY,
        http::HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        http::header::STRICT_TRANSPORT_SECURITY,
        http::HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    r
}

/// A `303 See Other` to `location`, with the page headers (the redirect is still a page load).
pub fn see_other(location: &str, policy: &PagePolicy) -> Response<Body> {
    let mut r = html(303, String::new(), policy);
    if let Ok(v) = http::HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_envelope_is_stable() {
        let r = error(
            400,
            "ValidationError",
            "bad",
            &[Detail {
                target: "type".into(),
                code: "MissingProperty".into(),
                message: "is required".into(),
            }],
        );
        assert_eq!(r.status(), 400);
        let Body::Text(text) = r.body() else {
            panic!("text body")
        };
        assert_eq!(
            text,
            r#"{"data":null,"links":null,"meta":null,"error":{"code":"ValidationError","message":"bad","detail":[{"target":"type","code":"MissingProperty","message":"is required"}]}}"#
        );
    }

    #[test]
    fn forms_go_to_plain_http_loopback_only_when_it_is_allowed() {
        let csp = |allow_http_loopback| {
            let policy = PagePolicy {
                frame_ancestors: "'self' https://*.sage.com".into(),
                allow_http_loopback,
            };
            let r = html(200, "<p>x</p>".into(), &policy);
            r.headers()[http::header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .to_string()
        };
        let strict = csp(false);
        assert!(strict.contains("form-action 'self' https:;"), "{strict}");
        assert!(!strict.contains("http://"), "{strict}");
        assert!(strict.ends_with("frame-ancestors 'self' https://*.sage.com"));
        let local = csp(true);
        assert!(
            local.contains("form-action 'self' https: http://127.0.0.1:* http://localhost:*;"),
            "{local}"
        );
    }
}
