//! Router assembly and the accept loop (own loop so a handler can close its connection unanswered).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

use crate::envelope::ApiError;
use crate::provider::{self, ConnControl};
use crate::state::Core;

pub fn router(core: Arc<Core>) -> Router {
    let v1 = Router::new()
        .route("/v1/statements", post(provider::post_statement))
        .route(
            "/v1/statements/{statementId}",
            get(provider::get_statement).delete(provider::delete_statement),
        )
        .route(
            "/v1/authorisations/{authorisationId}",
            patch(provider::patch_authorisation),
        )
        .route("/v1/accountqueries", post(provider::post_account_query))
        .route("/v1/banks", post(provider::post_banks))
        .route_layer(middleware::from_fn_with_state(
            core.clone(),
            provider::pipeline,
        ));

    Router::new()
        .route("/oauth/token", post(crate::identity::token))
        .route("/.well-known/jwks.json", get(crate::identity::jwks))
        .merge(v1)
        .merge(crate::control::router())
        .merge(crate::product::router())
        .merge(crate::ui::router())
        .merge(crate::bank::router())
        .merge(crate::payments_out::router(&core))
        .fallback(provider::not_found)
        .method_not_allowed_fallback(provider::method_not_allowed)
        .layer(DefaultBodyLimit::max(core.cfg.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            core.clone(),
            refuse_oversized,
        ))
        .with_state(core)
}

/// Oversized bodies are refused from `Content-Length`, before anything is read.
async fn refuse_oversized(State(core): State<Arc<Core>>, req: Request, next: Next) -> Response {
    let too_big = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > core.cfg.max_body_bytes);
    if too_big {
        crate::payments_out::note_oversized(&core, req.uri().path());
        return ApiError::too_large(core.cfg.max_body_bytes).into_response();
    }
    next.run(req).await
}

/// Accepts connections until shutdown; each connection can be killed through [`ConnControl`].
pub async fn serve(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let mut stop = shutdown.clone();
                conns.spawn(async move {
                    let kill = Arc::new(Notify::new());
                    let ctl = ConnControl(kill.clone());
                    let svc = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(ctl.clone());
                        let app = app.clone();
                        async move { app.oneshot(req.map(axum::body::Body::new)).await }
                    });
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder.timer(TokioTimer::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = kill.notified() => {}
                        _ = stopped(&mut stop) => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                        }
                    }
                });
                // Reap finished connection tasks so the set does not grow.
                while conns.try_join_next().is_some() {}
            }
            _ = stopped(&mut shutdown) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    conns.abort_all();
}

/// Resolves once shutdown is signalled (the watch guard is dropped before returning: not `Send`).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
