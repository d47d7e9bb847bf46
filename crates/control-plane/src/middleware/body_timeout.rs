//! `server.body_read_timeout`: the whole request body must arrive within this time after
//! the head, else the answer is 408 and the connection is closed.
//!
//! The body is wrapped so that reading it fails once the deadline has passed; whatever
//! the handler then answers (the balancer and the JSON extractors each map a failed read
//! to their own error) is replaced by the 408 envelope here, in one place. The deadline
//! covers reading the request only: the answer, streamed or not, is never timed here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Body as _, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;

pub async fn limit_body_read(request: Request, next: Next, timeout: Duration) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let version = request.version();
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|inner| {
        Body::new(TimedBody {
            inner,
            deadline: Instant::now() + timeout,
            sleep: None,
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_read_timeout",
        format!(
            "the request body did not arrive within {} (server.body_read_timeout)",
            humanize(timeout)
        ),
    )
    .into_response();
    // The rest of the body is still on its way: the connection cannot carry another
    // request. (HTTP/2 ends just the stream; connection headers are not allowed there.)
    if version <= Version::HTTP_11 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The request body with a deadline. The timer is only armed when a read has to wait,
/// so a body that arrived with its head costs no timer.
struct TimedBody {
    inner: Body,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

/// The read error once the deadline has passed.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyReadTimeout;

impl http_body::Body for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = self.deadline;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.expired.store(true, Ordering::Release);
        Poll::Ready(Some(Err(axum::Error::new(BodyReadTimeout))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn read_all(body: Body) -> Result<String, String> {
        axum::body::to_bytes(body, 1 << 20)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|_| "read failed".to_owned())
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/echo",
                post(|body: Body| async move {
                    match read_all(body).await {
                        Ok(text) => (StatusCode::OK, text),
                        Err(e) => (StatusCode::BAD_REQUEST, e),
                    }
                }),
            )
            .layer(axum::middleware::from_fn(|req: Request, next: Next| {
                limit_body_read(req, next, Duration::from_secs(2))
            }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_a_408() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        tx.send(Ok(Bytes::from_static(b"{\"par"))).await.unwrap();
        let body = Body::from_stream(tokio_stream_from(rx));
        let started = Instant::now();
        let response = app()
            .oneshot(Request::post("/echo").body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let envelope: serde_json::Value =
            serde_json::from_str(&read_all(response.into_body()).await.unwrap()).unwrap();
        assert_eq!(envelope["error"]["code"], "body_read_timeout");
        assert_eq!(envelope["error"]["type"], "invalid_request_error");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_timely_body_is_read() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let sender = tokio::spawn(async move {
            for piece in ["he", "ll", "o"] {
                tokio::time::sleep(Duration::from_millis(500)).await;
                tx.send(Ok(Bytes::from_static(piece.as_bytes()))).await.unwrap();
            }
        });
        let response = app()
            .oneshot(
                Request::post("/echo")
                    .body(Body::from_stream(tokio_stream_from(rx)))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(read_all(response.into_body()).await.unwrap(), "hello");
        sender.await.unwrap();
    }

    /// An mpsc receiver as a stream, without a dependency on tokio-stream.
    fn tokio_stream_from<T: Send + 'static>(
        rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send + 'static {
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
    }
}
