use connector_app::batch::MessageError;
use connector_app::payouts_bank_events::{BankEvents, ConsentEvent};
use connector_domain::payouts::batches::BankEvent;
use connector_wiring::http::{self, Detail};
use lambda_http::{Body, Error, Request, Response};

/// An event is small; anything larger is not one.
const MAX_BODY: usize = 64 * 1024;

pub async fn handle(events: &BankEvents, req: Request) -> Result<Response<Body>, Error> {
    let presented = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if !events.authorised(presented).await {
        return Ok(http::error(
            401,
            "AuthenticationError",
            "Authentication failed",
            &[],
        ));
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY {
        return Ok(http::error(
            413,
            "PayloadTooLarge",
            "The event is too large",
            &[],
        ));
    }
    let consent = req
        .uri()
        .path()
        .trim_end_matches('/')
        .ends_with("/consent-events");
    let outcome = if consent {
        match serde_json::from_slice::<ConsentEvent>(body) {
            Ok(e) => events.consent(&e).await.map(|_| ()),
            Err(e) => return Ok(invalid(&e.to_string())),
        }
    } else {
        match serde_json::from_slice::<BankEvent>(body) {
            Ok(e) => events.payment(&e).await.map(|_| ()),
            Err(e) => return Ok(invalid(&e.to_string())),
        }
    };
    Ok(match outcome {
        Ok(()) => http::json(204, &serde_json::Value::Null),
        // The bank retries a non-2xx: worth it only when a retry can succeed.
        Err(MessageError::Retry(reason)) => {
            tracing::warn!(%reason, "bank event not applied now: the bank will retry");
            http::unavailable()
        }
        Err(MessageError::Poison(reason)) => {
            tracing::error!(%reason, "bank event cannot be applied");
            http::json(204, &serde_json::Value::Null)
        }
    })
}

fn invalid(reason: &str) -> Response<Body> {
    let detail = Detail {
        target: "body".into(),
        code: "InvalidEvent".into(),
        message: reason.chars().take(200).collect(),
    };
    http::error(400, "ValidationError", "The event is not valid", &[detail])
}

#[cfg(test)]
mod tests {
    /// `events/po-bank-events.json` stays a valid API Gateway event of what this handler serves.
    #[test]
    fn sample_event_parses_into_a_bank_event() {
        let req =
            lambda_http::request::from_str(include_str!("../../../events/po-bank-events.json"))
                .expect("an API Gateway HTTP API event");
        assert_eq!(req.method(), "POST");
        let event: connector_domain::payouts::batches::BankEvent =
            serde_json::from_slice(req.body().as_ref()).expect("a payment event");
        assert_eq!(event.status, "settled");
    }
}
