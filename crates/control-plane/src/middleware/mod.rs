//! Cross-cutting HTTP concerns, one file each, assembled by [`apply`].

mod metrics;
mod request_id;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;

pub use metrics::install_recorder;
pub use request_id::{REQUEST_ID_HEADER, RequestId};

use crate::error::ApiError;

/// Wraps `router` in the middleware stack. Order, outermost first:
/// 1. request id — assigns the id, opens the request's log span, echoes `X-Request-ID`
///    on every response (errors and panics included);
/// 2. metrics — counts and times each request by matched route and status;
/// 3. panic catcher — a panicking handler becomes a generic 500 envelope;
/// 4. body limit — bodies over `max_body_bytes` are refused with 413.
pub fn apply<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    max_body_bytes: usize,
) -> Router<S> {
    router
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(axum::middleware::from_fn(request_id::assign))
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::internal("handler panicked").into_response()
}
