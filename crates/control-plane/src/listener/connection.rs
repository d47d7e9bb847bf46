//! One accepted connection: hyper serves it, and a deadline of our own closes it when it
//! waits too long for a request head or sits idle between requests.
//!
//! The deadline follows what the connection is doing, learnt from two places: the
//! service (a request was dispatched; its answer was handed over — hyper drops the
//! answer's body once it has taken the last bytes) and the socket (bytes still being
//! written after that are the answer's tail; the first byte read after it starts the
//! next head). While a request is in flight there is no deadline at all.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;
use tower::ServiceExt;

use super::Shared;

/// What a connection without a request in flight is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// The rest of a request head (or, right after the accept, its first byte).
    Head,
    /// The next request on a kept-alive connection.
    Idle,
}

impl Wait {
    fn label(self) -> &'static str {
        match self {
            Wait::Head => "header_read",
            Wait::Idle => "keep_alive_idle",
        }
    }
}

/// The connection's state as the deadline needs it; written by the service, the socket
/// and the answer's body, read by [`run`].
pub(super) struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    /// Since when, and for what, the connection waits: milliseconds since `epoch`
    /// shifted left by one, the low bit set for [`Wait::Idle`].
    wait: AtomicU64,
    /// Set when an HTTP/1 connection turns idle: the next byte read begins a head.
    awaiting_head: AtomicBool,
    /// HTTP/2 reads control frames (PING, SETTINGS) between streams: bytes then say
    /// nothing about a request, so only streams count.
    http2: AtomicBool,
    changed: Notify,
}

impl Activity {
    pub(super) fn new(now: Instant) -> Activity {
        Activity {
            epoch: now,
            in_flight: AtomicU32::new(0),
            wait: AtomicU64::new(0),
            awaiting_head: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    /// When the connection is to be closed and why; `None` while a request is in flight.
    pub(super) fn deadline(&self, head: Duration, idle: Duration) -> Option<(Instant, Wait)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let word = self.wait.load(Ordering::Acquire);
        let since = self.epoch + Duration::from_millis(word >> 1);
        Some(if word & 1 == 1 {
            (since + idle, Wait::Idle)
        } else {
            (since + head, Wait::Head)
        })
    }

    fn set_wait(&self, now: Instant, wait: Wait) {
        let millis = u64::try_from(now.duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX >> 1);
        let bit = u64::from(wait == Wait::Idle);
        self.wait.store((millis << 1) | bit, Ordering::Release);
    }

    pub(super) fn request_started(&self, version: Version) {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.set_wait(Instant::now(), Wait::Idle);
            if !self.http2.load(Ordering::Relaxed) {
                self.awaiting_head.store(true, Ordering::Release);
            }
            self.changed.notify_one();
        }
    }

    /// Called for every successful write. hyper drops an answer's body once it has
    /// taken the last bytes, which may still wait in its buffer for a slow reader: the
    /// idle time starts when they are out, so an answer is never cut while being written.
    pub(super) fn bytes_written(&self) {
        if self.awaiting_head.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Acquire) == 0 {
            self.set_wait(Instant::now(), Wait::Idle);
        }
    }

    /// Called for every successful read of at least one byte; cheap unless the
    /// connection was idle.
    pub(super) fn bytes_read(&self) {
        if self.awaiting_head.load(Ordering::Relaxed)
            && self.awaiting_head.swap(false, Ordering::AcqRel)
            && self.in_flight.load(Ordering::Acquire) == 0
        {
            self.set_wait(Instant::now(), Wait::Head);
            self.changed.notify_one();
        }
    }
}

/// Serves one connection until it ends, times out, or shutdown closes it. `slot` is its
/// place under `server.max_connections`, given back when this returns.
pub(super) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    shared: Arc<Shared>,
    slot: OwnedSemaphorePermit,
) {
    let _slot = Slot::new(shared.name, slot);
    let activity = Arc::new(Activity::new(Instant::now()));
    let io = TokioIo::new(TrackedStream {
        inner: stream,
        activity: activity.clone(),
    });
    let service = ConnectionService {
        app,
        peer,
        activity: activity.clone(),
    };
    let conn = shared.builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let sleep = tokio::time::sleep(Duration::ZERO);
    let mut sleep = std::pin::pin!(sleep);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(shared.header_read_timeout, shared.keep_alive_idle);
        if let Some((at, _)) = deadline
            && sleep.deadline() != at
        {
            sleep.as_mut().reset(at);
        }
        tokio::select! {
            biased;
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = activity.changed.notified() => {}
            () = sleep.as_mut(), if deadline.is_some() => {
                let due = activity.deadline(shared.header_read_timeout, shared.keep_alive_idle);
                if let Some((at, wait)) = due
                    && at <= Instant::now()
                {
                    metrics::counter!(
                        crate::metrics::HTTP_CONNECTIONS_TIMED_OUT,
                        "listener" => shared.name,
                        "waiting_for" => wait.label()
                    )
                    .increment(1);
                    tracing::debug!(%peer, waiting_for = wait.label(), "closing a connection that waited too long");
                    return;
                }
            }
            () = shared.draining.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = shared.closing.cancelled() => return,
        }
    }
}

/// A connection's place under `server.max_connections`, counted in
/// `ezapi_http_connections_open`; given back however the connection's task ends.
struct Slot {
    listener: &'static str,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    fn new(listener: &'static str, permit: OwnedSemaphorePermit) -> Slot {
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS_OPEN, "listener" => listener).increment(1.0);
        Slot {
            listener,
            permit: Some(permit),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The place is free before the gauge says so: a reader of the gauge may count
        // on it.
        drop(self.permit.take());
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS_OPEN, "listener" => self.listener).decrement(1.0);
    }
}

/// The socket, reporting reads to the connection's [`Activity`].
struct TrackedStream {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl TrackedStream {
    fn wrote(&self, polled: Poll<std::io::Result<usize>>) -> Poll<std::io::Result<usize>> {
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bytes_written();
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The router for one connection: adds `ConnectInfo<SocketAddr>` (handlers take the
/// client IP from it) and marks each request in flight until its answer is sent.
#[derive(Clone)]
struct ConnectionService {
    app: Router,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

type ServiceFuture = Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ServiceFuture;

    fn call(&self, req: Request<Incoming>) -> ServiceFuture {
        let in_flight = InFlight::start(self.activity.clone(), req.version());
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(self.peer));
        let call = self.app.clone().oneshot(req);
        Box::pin(async move {
            let response = match call.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|inner| TrackedBody {
                inner,
                _in_flight: in_flight,
            }))
        })
    }
}

/// A request in flight, from dispatch until its answer's body is dropped (written out,
/// or abandoned with the connection).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>, version: Version) -> InFlight {
        activity.request_started(version);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// An answer's body carrying its request's [`InFlight`] mark.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: Duration = Duration::from_secs(10);
    const IDLE: Duration = Duration::from_secs(75);

    #[tokio::test(start_paused = true)]
    async fn the_deadline_follows_the_connection() {
        let start = Instant::now();
        let a = Activity::new(start);
        assert_eq!(
            a.deadline(HEAD, IDLE),
            Some((start + HEAD, Wait::Head)),
            "from the accept"
        );

        a.request_started(Version::HTTP_11);
        assert_eq!(
            a.deadline(HEAD, IDLE),
            None,
            "no deadline while a request is in flight"
        );
        a.bytes_read();
        assert_eq!(a.deadline(HEAD, IDLE), None, "reading a body is not a head");

        tokio::time::advance(Duration::from_secs(3)).await;
        a.request_finished();
        let answered = Instant::now();
        assert_eq!(a.deadline(HEAD, IDLE), Some((answered + IDLE, Wait::Idle)));

        tokio::time::advance(Duration::from_secs(2)).await;
        a.bytes_written();
        let written = Instant::now();
        assert_eq!(
            a.deadline(HEAD, IDLE),
            Some((written + IDLE, Wait::Idle)),
            "idle from the last byte of the answer written, not handed over"
        );

        tokio::time::advance(Duration::from_secs(20)).await;
        a.bytes_read();
        let first_byte = Instant::now();
        assert_eq!(
            a.deadline(HEAD, IDLE),
            Some((first_byte + HEAD, Wait::Head)),
            "the next head is timed from its first byte"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        a.bytes_read();
        a.bytes_written();
        assert_eq!(
            a.deadline(HEAD, IDLE),
            Some((first_byte + HEAD, Wait::Head)),
            "more bytes of the same head do not extend it, nor does a write"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_waits_for_streams_not_bytes() {
        let a = Activity::new(Instant::now());
        a.request_started(Version::HTTP_2);
        a.request_started(Version::HTTP_2);
        a.request_finished();
        assert_eq!(a.deadline(HEAD, IDLE), None, "one stream is still open");
        a.request_finished();
        let idle_since = Instant::now();
        tokio::time::advance(Duration::from_secs(5)).await;
        a.bytes_read();
        a.bytes_written();
        assert_eq!(
            a.deadline(HEAD, IDLE),
            Some((idle_since + IDLE, Wait::Idle)),
            "a PING (or its answer) is not the start of a request"
        );
    }
}
