use connector_app::ingest::{Ingest, IngestError, MAX_BODY, MAX_RECORDS};
use connector_wiring::http;
use connector_wiring::lambda::deadline_of;
use lambda_http::{Body, Error, Request, RequestExt, Response};

pub async fn handle(ingest: &Ingest, req: Request) -> Result<Response<Body>, Error> {
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if ingest.authorise(key).await.is_err() {
        return Ok(http::error(
            401,
            "AuthenticationError",
            "Authentication failed",
            &[],
        ));
    }
    let deadline = req.lambda_context_ref().and_then(deadline_of);
    let body: &[u8] = req.body().as_ref();
    Ok(match ingest.handle(body, deadline).await {
        Ok(report) => {
            tracing::info!(
                accepted = report.accepted,
                duplicates = report.duplicates,
                rejected = report.rejected,
                "ingest"
            );
            http::data(200, &report)
        }
        Err(IngestError::Unauthorised) => {
            http::error(401, "AuthenticationError", "Authentication failed", &[])
        }
        Err(IngestError::BadBody(reason)) => http::error(400, "ValidationError", &reason, &[]),
        Err(IngestError::TooMany) => http::error(
            413,
            "PayloadTooLarge",
            &format!("At most {MAX_RECORDS} transactions per request"),
            &[],
        ),
        Err(IngestError::TooLarge) => http::error(
            413,
            "PayloadTooLarge",
            &format!("The body exceeds {MAX_BODY} bytes"),
            &[],
        ),
        Err(IngestError::UnknownAccount) => http::error(
            404,
            "NotFoundError",
            "No connected account has this externalId",
            &[],
        ),
        Err(IngestError::Unavailable(reason)) => {
            tracing::error!(%reason, "ingest failed");
            http::unavailable()
        }
    })
}

#[cfg(test)]
mod tests {
    /// `events/ingest.json` stays a valid API Gateway event of what this handler serves.
    #[test]
    fn sample_event_parses_into_the_handler_request() {
        let req = lambda_http::request::from_str(include_str!("../../../events/ingest.json"))
            .expect("an API Gateway HTTP API event");
        assert_eq!(req.method(), "POST");
        let body: serde_json::Value =
            serde_json::from_slice(req.body().as_ref()).expect("JSON body");
        for record in body["transactions"].as_array().expect("transactions") {
            let raw = serde_json::value::RawValue::from_string(record.to_string()).expect("record");
            connector_domain::transaction::validate_record(&raw).expect("a valid record");
        }
    }
}
