use connector_app::intake::{IntakeError, MAX_BODY, NotificationIntake};
use connector_domain::ports::AuthRejection;
use connector_wiring::http::{self, Detail};
use lambda_http::{Body, Error, Request, Response};

pub async fn handle(intake: &NotificationIntake, req: Request) -> Result<Response<Body>, Error> {
    let body: &[u8] = req.body().as_ref();
    Ok(match intake.handle(req.headers(), body).await {
        Ok(outcome) => {
            tracing::info!(?outcome, "notification accepted");
            let (name, kind) = outcome.dimensions();
            connector_app::metrics::count("Notifications", &[("Outcome", name), ("Type", kind)]);
            http::data(200, &serde_json::json!({"value": "ok"}))
        }
        Err(IntakeError::Unauthorised(AuthRejection::Unavailable(reason))) => {
            tracing::error!(%reason, "cannot verify notifications: Sage ID keys unavailable");
            http::unavailable()
        }
        Err(IntakeError::Unauthorised(AuthRejection::Refused(check))) => {
            // The log names the failed check; the answer stays generic (spec §3.3 rule 3).
            tracing::warn!(failed_check = %check, "notification refused");
            connector_app::metrics::count(
                "Notifications",
                &[("Outcome", "refused"), ("Type", "unknown")],
            );
            http::error(401, "AuthenticationError", "Authentication failed", &[])
        }
        Err(IntakeError::Invalid(e)) => {
            connector_app::metrics::count(
                "Notifications",
                &[("Outcome", "invalid"), ("Type", "unknown")],
            );
            let detail: Vec<Detail> = e
                .target()
                .map(|t| Detail {
                    target: t.to_string(),
                    code: match e {
                        connector_domain::notification::NotificationError::MissingField(_) => {
                            "MissingProperty"
                        }
                        _ => "InvalidPropertyValue",
                    }
                    .into(),
                    message: e.to_string(),
                })
                .into_iter()
                .collect();
            http::error(
                400,
                "ValidationError",
                "The notification is not valid",
                &detail,
            )
        }
        Err(IntakeError::TooLarge) => http::error(
            413,
            "PayloadTooLarge",
            &format!("The body exceeds {MAX_BODY} bytes"),
            &[],
        ),
        Err(IntakeError::Unavailable(reason)) => {
            tracing::error!(%reason, "notification could not be stored");
            http::internal_error()
        }
    })
}

#[cfg(test)]
mod tests {
    /// `events/notification.json` stays a valid API Gateway event of what this handler serves.
    #[test]
    fn sample_event_parses_into_the_handler_request() {
        let req = lambda_http::request::from_str(include_str!("../../../events/notification.json"))
            .expect("an API Gateway HTTP API event");
        assert_eq!(req.method(), "POST");
        let parsed = connector_domain::notification::parse_notification(req.body().as_ref())
            .expect("a valid notification body");
        assert!(matches!(
            parsed,
            connector_domain::notification::ParsedNotification::Known { .. }
        ));
        assert!(req.headers().contains_key("authorization"));
    }
}
