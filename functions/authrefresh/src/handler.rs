use connector_app::browser::{self, BrowserFlows};
use connector_aws::handshakes::Flow;
use lambda_http::{Body, Error, Request, Response};

pub async fn handle(flows: &BrowserFlows, req: Request) -> Result<Response<Body>, Error> {
    Ok(browser::serve(flows, Flow::AuthRefresh, req).await)
}
