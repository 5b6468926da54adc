//! Lambda's events as the use cases need them: an invocation's deadline, the time left to
//! answer API Gateway, and the browser pages' requests and responses.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use connector_app::available::time_to_answer;
use connector_app::browser::{self, BrowserFlows, PageOutcome, PageRequest};
use connector_app::pages::PagePolicy;
use connector_app::payouts_authorise::AuthorisePage;
use connector_domain::handshake::Flow;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};

/// The deadline of a Lambda invocation (milliseconds since the epoch) as a time.
pub fn deadline_of(context: &lambda_runtime::Context) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp_millis(i64::try_from(context.deadline).ok()?)
}

/// `time_to_answer` for an API Gateway request: its receipt time and the invocation's deadline.
pub fn time_left(req: &Request) -> Duration {
    let received_ms = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) if c.time_epoch > 0 => Some(c.time_epoch),
        _ => None,
    };
    let deadline_ms = req
        .lambda_context_ref()
        .and_then(|c| i64::try_from(c.deadline).ok())
        .filter(|d| *d > 0);
    time_to_answer(received_ms, deadline_ms, Utc::now().timestamp_millis())
}

/// The domain API Gateway served the request on (`requestContext.domainName`).
fn gateway_domain(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(c)) => c.domain_name.clone(),
        _ => None,
    }
}

/// A page request as read off API Gateway's event (`domain`: `gateway_domain(req)`).
fn page_request<'a>(req: &'a Request, domain: Option<&'a str>) -> PageRequest<'a> {
    let query: HashMap<String, String> = req
        .query_string_parameters()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    PageRequest {
        method: req.method().as_str(),
        path: req.uri().path(),
        link_id: req.path_parameters_ref().and_then(|p| p.first("linkId")),
        query,
        body: req.body().as_ref(),
        gateway_domain: domain,
    }
}

/// A page's outcome as API Gateway's response, with the page headers of `policy`.
fn respond(outcome: PageOutcome, policy: &PagePolicy) -> Response<Body> {
    match outcome {
        PageOutcome::Page { status, html } => crate::http::html(status, html, policy),
        PageOutcome::Redirect { location } => crate::http::see_other(&location, policy),
    }
}

/// `/auth` and `/authrefresh` (and their callbacks) for API Gateway.
pub async fn serve_browser(flows: &BrowserFlows, flow: Flow, req: Request) -> Response<Body> {
    let domain = gateway_domain(&req);
    let page = page_request(&req, domain.as_deref());
    respond(browser::answer(flows, flow, &page).await, &flows.pages)
}

/// Payments Out's authorisation page (and its callback) for API Gateway.
pub async fn serve_authorise(page: &AuthorisePage, req: Request) -> Response<Body> {
    let domain = gateway_domain(&req);
    let request = page_request(&req, domain.as_deref());
    respond(page.answer(&request).await, &page.pages)
}

#[cfg(test)]
mod tests {
    use connector_app::browser::PublicBase;

    use super::*;
    use crate::config::Env;

    /// `events/auth.json` with its `Host` header and API Gateway domain replaced.
    fn request(host: &str, domain: Option<&str>) -> Request {
        let mut event: serde_json::Value =
            serde_json::from_str(include_str!("../../../events/auth.json")).unwrap();
        event["headers"]["host"] = host.into();
        match domain {
            Some(d) => event["requestContext"]["domainName"] = d.into(),
            None => {
                event["requestContext"]
                    .as_object_mut()
                    .unwrap()
                    .remove("domainName");
            }
        }
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    #[test]
    fn the_public_base_url_comes_from_api_gateways_domain_and_never_the_host_header() {
        let gateway = "abc123.execute-api.eu-west-1.amazonaws.com";
        let spoofed = request("evil.example", Some(gateway));
        assert_eq!(
            PublicBase::ApiGateway
                .origin(gateway_domain(&spoofed).as_deref())
                .as_deref(),
            Some("https://abc123.execute-api.eu-west-1.amazonaws.com")
        );
        assert_eq!(gateway_domain(&request(gateway, None)), None);
    }

    #[test]
    fn the_lambda_deadline_is_read_in_milliseconds() {
        let mut context = lambda_runtime::Context::default();
        context.deadline = 1_700_000_000_123;
        let d = deadline_of(&context).expect("a time");
        assert_eq!(d.timestamp_millis(), 1_700_000_000_123);
    }

    #[test]
    fn without_public_base_url_only_lambda_starts_and_the_error_names_the_variable() {
        let from = |pairs: &[(&str, &str)]| crate::banking::public_base(&Env::from_pairs(pairs));
        assert_eq!(
            from(&[("PUBLIC_BASE_URL", "https://connector.examplebank.com/")]),
            Ok(PublicBase::Configured(
                "https://connector.examplebank.com".into()
            ))
        );
        assert_eq!(
            from(&[
                ("PUBLIC_BASE_URL", "http://127.0.0.1:3000"),
                ("LAMBDA_TASK_ROOT", "/var/task")
            ]),
            Ok(PublicBase::Configured("http://127.0.0.1:3000".into()))
        );
        assert_eq!(
            from(&[("LAMBDA_TASK_ROOT", "/var/task"), ("PUBLIC_BASE_URL", "")]),
            Ok(PublicBase::ApiGateway)
        );
        // Off Lambda (the local stack's runtime sets AWS_LAMBDA_FUNCTION_NAME, not
        // LAMBDA_TASK_ROOT) there is no API Gateway domain to trust.
        let missing = from(&[("AWS_LAMBDA_FUNCTION_NAME", "auth")])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("PUBLIC_BASE_URL"), "{missing}");
        for bad in [
            "connector.examplebank.com",
            "https://c.example/?x=1",
            "ftp://c.example",
        ] {
            let e = from(&[("PUBLIC_BASE_URL", bad), ("LAMBDA_TASK_ROOT", "/var/task")])
                .unwrap_err()
                .to_string();
            assert!(e.contains("PUBLIC_BASE_URL"), "{bad}: {e}");
        }
    }
}
