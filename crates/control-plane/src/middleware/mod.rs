//! Cross-cutting HTTP concerns, one file each, assembled by [`apply`].

mod metrics;
mod request_id;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

pub use metrics::{MetricsUpkeep, install_recorder};
pub use request_id::{REQUEST_ID_HEADER, RequestId};

use crate::error::ApiError;

/// Wraps `router` in the middleware stack. Order, outermost first:
/// 1. request id — assigns the id, opens the request's log span, echoes `X-Request-ID`
///    on every response (errors and panics included);
/// 2. metrics — counts and times each request by matched route and status;
/// 3. panic catcher — a panicking handler becomes a generic 500 envelope;
/// 4. body limit — bodies over `max_body_bytes` are refused with 413: at once when
///    `Content-Length` says so (a client sending `Expect: 100-continue` then never
///    uploads the body), else while reading.
pub fn apply<S: Clone + Send + Sync + 'static>(router: Router<S>, max_body_bytes: usize) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(move |req: Request, next: Next| {
            reject_declared_oversize(req, next, max_body_bytes)
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
