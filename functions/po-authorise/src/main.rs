//! `GET|POST /authorise/{linkId}` and `GET /authorise/callback`: the Payments Out authorisation
//! page, where the customer consents at the bank (docs/payments-out.md §7).

use connector_wiring::config::Env;
use connector_wiring::telemetry;

// One thread: at 256 MB Lambda gives a fraction of a vCPU, so worker threads would only add
// start-up time (docs/architecture.md, "Cold start").
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    telemetry::init();
    let page = match connector_wiring::payouts::authorise_page(&Env::from_process()).await {
        Ok(p) => p,
        Err(e) => telemetry::fail_start("po-authorise", &e),
    };
    let page = &page;
    lambda_http::run(lambda_http::service_fn(move |req| async move {
        Ok::<_, lambda_http::Error>(connector_wiring::lambda::serve_authorise(page, req).await)
    }))
    .await
}

#[cfg(test)]
mod tests {
    /// `events/po-authorise.json` stays a valid API Gateway event of what the page serves.
    #[test]
    fn sample_event_parses_into_the_page_request() {
        use lambda_http::RequestExt;
        let req = lambda_http::request::from_str(include_str!("../../../events/po-authorise.json"))
            .expect("an API Gateway HTTP API event");
        assert_eq!(req.method(), "GET");
        assert_eq!(
            req.path_parameters().first("linkId"),
            Some("k3J9cQ2mZ8pL0aX4bN7vYw")
        );
    }
}
