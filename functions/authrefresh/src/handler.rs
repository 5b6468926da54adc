use connector_app::browser::BrowserFlows;
use connector_domain::handshake::Flow;
use lambda_http::{Body, Error, Request, Response};

pub async fn handle(flows: &BrowserFlows, req: Request) -> Result<Response<Body>, Error> {
    Ok(connector_wiring::lambda::serve_browser(flows, Flow::AuthRefresh, req).await)
}

#[cfg(test)]
mod tests {
    /// `events/authrefresh.json` stays a valid API Gateway event of what this handler serves.
    #[test]
    fn sample_event_parses_into_the_handler_request() {
        let req = lambda_http::request::from_str(include_str!("../../../events/authrefresh.json"))
            .expect("an API Gateway HTTP API event");
        use lambda_http::RequestExt;
        assert_eq!(req.method(), "GET");
        let q = req.query_string_parameters();
        for key in [
            "bankaccount",
            "authorisation_id",
            "redirect_uri",
            "state",
            "externalId",
        ] {
            assert!(q.first(key).is_some(), "{key} missing");
        }
    }
}
