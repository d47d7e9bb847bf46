//! Cross-cutting HTTP concerns, one file each, assembled by [`apply`].

mod body_timeout;
mod metrics;
mod request_id;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

pub use metrics::{MetricsUpkeep, install_recorder};
pub use request_id::{REQUEST_ID_HEADER, RequestId};

use crate::error::ApiError;

/// What a request may send: `server.max_body_bytes`, `server.body_read_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
}

impl RequestLimits {
    pub fn from_config(server: &ez_config::ServerConfig) -> RequestLimits {
        RequestLimits {
            max_body_bytes: server.max_body_bytes,
            body_read_timeout: server.body_read_timeout,
        }
    }
}

/// [`apply_with`] with `max_body_bytes` and the default body read timeout.
pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>, max_body_bytes: usize) -> Router<S> {
    let limits = RequestLimits {
        max_body_bytes,
        ..RequestLimits::from_config(&ez_config::Config::defaults().server)
    };
    apply_with(router, limits)
}

/// Wraps `router` in the middleware stack. Order, outermost first:
/// 1. request id — assigns the id, opens the request's log span, echoes `X-Request-ID`
///    on every response (errors and panics included);
/// 2. metrics — counts and times each request by matched route and status;
/// 3. panic catcher — a panicking handler becomes a generic 500 envelope;
/// 4. body read timeout — a body that has not fully arrived within
///    `body_read_timeout` ends the request with 408 (`body_timeout.rs`);
/// 5. body limit — bodies over `max_body_bytes` are refused with 413: at once when
///    `Content-Length` says so (a client sending `Expect: 100-continue` then never
///    uploads the body), else while reading.
pub fn apply_with<S: Clone + Send + Sync + 'static>(router: Router<S>, limits: RequestLimits) -> Router<S> {
    let RequestLimits {
        max_body_bytes,
        body_read_timeout,
    } = limits;
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            reject_declared_oversize(req, next, max_body_bytes)
        }))
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            body_timeout::limit_body_read(req, next, body_read_timeout)
        }))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(request_id::assign))
}

async fn reject_declared_oversize(req: Request, next: Next, max_body_bytes: usize) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body_bytes as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "request body is too large",
        )
        .into_response();
    }
    next.run(req).await
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("handler panicked").into_response()
}
