use connector_app::payouts_intake::{Accepted, Endpoint, PayoutsIntake, Refusal};
use connector_domain::payouts::notification::{DeliveryError, MAX_BODY};
use connector_wiring::http::{self, Detail};
use lambda_http::{Body, Error, Request, Response};

/// Which endpoint the request came to (one function serves both routes).
fn endpoint(path: &str) -> Endpoint {
    if path.trim_end_matches('/').ends_with("/subscription") {
        Endpoint::Subscription
    } else {
        Endpoint::Notifications
    }
}

pub async fn handle(intake: &PayoutsIntake, req: Request) -> Result<Response<Body>, Error> {
    let endpoint = endpoint(req.uri().path());
    let body: &[u8] = req.body().as_ref();
    Ok(match intake.handle(endpoint, req.headers(), body).await {
        Ok(outcome) => accepted(endpoint, body, &outcome),
        Err(refusal) => refused(&refusal),
    })
}

/// 201: empty for `/notifications`; `{"data":{"subscriptionId"}}` for `/subscription`.
fn accepted(endpoint: Endpoint, body: &[u8], outcome: &Accepted) -> Response<Body> {
    let (name, kind) = outcome.dimensions();
    connector_app::metrics::count("PayoutsDeliveries", &[("Outcome", name), ("Type", kind)]);
    match endpoint {
        Endpoint::Notifications => http::json(201, &serde_json::Value::Null),
        Endpoint::Subscription => {
            let id = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["data"]["subscriptionId"].as_str().map(str::to_string));
            http::data(201, &serde_json::json!({ "subscriptionId": id }))
        }
    }
}

fn refused(refusal: &Refusal) -> Response<Body> {
    let outcome = match refusal {
        Refusal::Unauthorised => "refused",
        Refusal::Invalid(_) | Refusal::TooLarge => "invalid",
        Refusal::Unavailable(_) => "unavailable",
    };
    connector_app::metrics::count(
        "PayoutsDeliveries",
        &[("Outcome", outcome), ("Type", "unknown")],
    );
    match refusal {
        // The log names the failed check (the verifier logged it); the answer stays generic.
        Refusal::Unauthorised => {
            http::error(401, "AuthenticationError", "Authentication failed", &[])
        }
        Refusal::TooLarge => http::error(
            413,
            "PayloadTooLarge",
            &format!("The body exceeds {MAX_BODY} bytes"),
            &[],
        ),
        Refusal::Invalid(e) => {
            let (target, code) = match e {
                DeliveryError::NotJson => ("body", "InvalidJson"),
                DeliveryError::Missing(t) => (*t, "MissingProperty"),
                DeliveryError::NotUuid(t) => (*t, "InvalidPropertyValue"),
            };
            let detail = Detail {
                target: target.to_string(),
                code: code.into(),
                message: e.to_string(),
            };
            http::error(
                400,
                "ValidationError",
                "The delivery is not valid",
                &[detail],
            )
        }
        Refusal::Unavailable(reason) => {
            tracing::error!(%reason, "Payments Out delivery could not be stored");
            http::unavailable()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_chooses_the_endpoint() {
        assert_eq!(endpoint("/subscription"), Endpoint::Subscription);
        assert_eq!(endpoint("/prod/subscription/"), Endpoint::Subscription);
        assert_eq!(endpoint("/notifications"), Endpoint::Notifications);
    }

    /// `events/po-intake.json` stays a valid API Gateway event of what this handler serves.
    #[test]
    fn sample_event_parses_into_the_handler_request() {
        let req = lambda_http::request::from_str(include_str!("../../../events/po-intake.json"))
            .expect("an API Gateway HTTP API event");
        assert_eq!(req.method(), "POST");
        let parsed = connector_domain::payouts::notification::parse_notification(
            req.body().as_ref(),
            chrono_now(),
        );
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    fn chrono_now() -> chrono::DateTime<chrono::Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }
}
