use connector_app::available::{AvailableAccounts, AvailableError};
use connector_domain::ports::AuthRejection;
use connector_wiring::http;
use lambda_http::{Body, Error, Request, RequestExt, Response};

pub async fn handle(available: &AvailableAccounts, req: Request) -> Result<Response<Body>, Error> {
    let query = req.query_string_parameters();
    let time_left = connector_wiring::lambda::time_left(&req);
    Ok(
        match available
            .handle(req.headers(), query.first("externalId"), time_left)
            .await
        {
            Ok(accounts) => http::json(200, &accounts),
            Err(AvailableError::Unauthorised(AuthRejection::Unavailable(reason))) => {
                tracing::error!(%reason, "cannot verify callers: Sage ID keys unavailable");
                http::unavailable()
            }
            Err(AvailableError::Unauthorised(AuthRejection::Refused(check))) => {
                tracing::warn!(failed_check = %check, "availableaccounts refused");
                http::error(401, "AuthenticationError", "Authentication failed", &[])
            }
            Err(AvailableError::MissingExternalId) => http::error(
                400,
                "ValidationError",
                "externalId is required",
                &[http::Detail {
                    target: "externalId".into(),
                    code: "MissingProperty".into(),
                    message: "is required (1-255 characters)".into(),
                }],
            ),
            Err(AvailableError::UnknownExternalId) => {
                http::error(404, "NotFoundError", "No account has this externalId", &[])
            }
            Err(AvailableError::Unavailable(reason)) => {
                tracing::error!(%reason, "availableaccounts failed");
                http::unavailable()
            }
        },
    )
}

#[cfg(test)]
mod tests {
    /// `events/availableaccounts.json` stays a valid API Gateway event of what this handler serves.
    #[test]
    fn sample_event_parses_into_the_handler_request() {
        let req =
            lambda_http::request::from_str(include_str!("../../../events/availableaccounts.json"))
                .expect("an API Gateway HTTP API event");
        use lambda_http::RequestExt;
        assert_eq!(req.method(), "GET");
        assert_eq!(
            req.query_string_parameters().first("externalId"),
            Some("acc_5QH7K2")
        );
    }
}
