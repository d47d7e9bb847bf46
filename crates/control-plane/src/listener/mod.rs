//! The HTTP listener of every ezapi process (`serve`, `control-plane`, `balancer`): an
//! accept loop that bounds what a client can hold without sending a request.
//!
//! - **Connection cap** (`server.max_connections`, per listener): at the cap a new
//!   connection is accepted and closed at once, and counted in
//!   `ezapi_http_connections_refused_total`. Closing at once (rather than leaving it in the
//!   kernel's backlog until a slot frees) tells the client and its load balancer right
//!   away, and keeps the process below its open-file limit, so it never fails `accept`
//!   with "too many open files" — the failure that used to stall `/health`.
//! - **Request head** (`server.header_read_timeout`): from the accept, and on a
//!   kept-alive connection from the first byte of the next request.
//! - **Keep-alive idle** (`server.keep_alive_idle`): from the end of an answer to the
//!   first byte of the next request (HTTP/2: to the next stream).
//! - The request body has its own deadline, in the middleware
//!   (`middleware::body_timeout`), so that it can answer 408.
//! - Nothing bounds writing an answer: the balancer streams for minutes and keeps its own
//!   upstream deadlines.
//!
//! hyper's own `header_read_timeout` is not used: it starts when hyper begins to read a
//! head, which on a kept-alive connection is right after the previous answer, so it also
//! cuts idle connections (a keep-alive idle longer than the head timeout could not be
//! expressed), and it does nothing for HTTP/2. Each connection instead keeps its own
//! deadline ([`connection`]).
//!
//! Shutdown: stop accepting, let connections finish their requests (idle HTTP/1
//! connections close at once, HTTP/2 ones get GOAWAY), and close whatever is left after
//! `server.shutdown_grace`.

mod connection;
mod file_limit;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use file_limit::raise_open_file_limit;

/// Limits of one listener; [`ListenerSettings::from_config`] reads them from `server.*`.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// The `listener` label of this listener's metrics (`public`, `internal`, `balancer`).
    pub name: &'static str,
    pub header_read_timeout: Duration,
    pub keep_alive_idle: Duration,
    pub max_connections: usize,
    /// How long in-flight requests may run on after shutdown begins.
    pub shutdown_grace: Duration,
}

impl ListenerSettings {
    pub fn from_config(name: &'static str, server: &ez_config::ServerConfig) -> ListenerSettings {
        ListenerSettings {
            name,
            header_read_timeout: server.header_read_timeout,
            keep_alive_idle: server.keep_alive_idle,
            max_connections: server.max_connections,
            shutdown_grace: server.shutdown_grace,
        }
    }

    /// Lowers `max_connections` so that `listeners` listeners, each at its cap, hold at
    /// most half of `open_file_limit`: the other half is for the database pool, Redis
    /// and, in a balancer, one upstream connection per client request. Returns the
    /// configured value when it had to be lowered.
    pub fn fit_open_file_limit(&mut self, open_file_limit: Option<u64>, listeners: usize) -> Option<usize> {
        let limit = open_file_limit?;
        let share = limit / 2 / (listeners.max(1) as u64);
        let budget = usize::try_from(share).unwrap_or(usize::MAX).max(1);
        if self.max_connections <= budget {
            return None;
        }
        let configured = self.max_connections;
        self.max_connections = budget;
        Some(configured)
    }
}

impl Default for ListenerSettings {
    /// The limits of the default configuration.
    fn default() -> ListenerSettings {
        ListenerSettings::from_config("public", &ez_config::Config::defaults().server)
    }
}

/// What every connection of one listener shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    keep_alive_idle: Duration,
    name: &'static str,
    /// Cancelled when shutdown begins: connections finish their requests and close.
    draining: CancellationToken,
    /// Cancelled when the grace period is over: connections close at once.
    closing: CancellationToken,
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: see the module
/// documentation. Handlers get the peer address as `ConnectInfo<SocketAddr>`.
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    settings: ListenerSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        builder: http_builder(&settings),
        header_read_timeout: settings.header_read_timeout,
        keep_alive_idle: settings.keep_alive_idle,
        name: settings.name,
        draining: CancellationToken::new(),
        closing: CancellationToken::new(),
    });
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let connections = TaskTracker::new();
    let accept_errors = RateLimitedLog::default();
    let refusals = RateLimitedLog::default();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    metrics::counter!(crate::metrics::HTTP_ACCEPT_ERRORS, "listener" => settings.name).increment(1);
                    if accept_errors.due() {
                        tracing::error!(listener = settings.name, error = %e, "cannot accept connections");
                    }
                    // Out of file descriptors or memory: retrying at once would spin.
                    if !is_per_connection(&e) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!(crate::metrics::HTTP_CONNECTIONS_REFUSED, "listener" => settings.name)
                .increment(1);
            if refusals.due() {
                tracing::warn!(
                    listener = settings.name,
                    max_connections = settings.max_connections,
                    "connection refused: server.max_connections reached"
                );
            }
            drop(stream);
            continue;
        };
        // No Nagle: SSE chunks go out as written, not after the client's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        connections.spawn(connection::run(stream, peer, app.clone(), shared.clone(), slot));
    }
    drop(listener);
    shared.draining.cancel();
    connections.close();
    if tokio::time::timeout(settings.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = settings.name,
            open = connections.len(),
            "shutdown grace period elapsed with requests still in flight; closing them"
        );
        shared.closing.cancel();
        connections.wait().await;
    }
    Ok(())
}

fn http_builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Deadlines are the connection's own (see the module documentation).
    builder.http1().header_read_timeout(None);
    // HTTP/2 (prior knowledge): PINGs find dead peers, also under a long stream.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(settings.keep_alive_idle))
        .keep_alive_timeout(settings.header_read_timeout);
    builder
}

/// Errors of one connection (reset before it was accepted) rather than of the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    )
}

/// At most one line a second for a condition that can repeat per connection.
#[derive(Default)]
struct RateLimitedLog {
    last_secs: AtomicU64,
}

impl RateLimitedLog {
    fn due(&self) -> bool {
        let now = u64::try_from(ez_contract::time::now_unix()).unwrap_or(1);
        self.last_secs.swap(now, Ordering::Relaxed) != now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(max_connections: usize) -> ListenerSettings {
        ListenerSettings {
            max_connections,
            ..ListenerSettings::default()
        }
    }

    #[test]
    fn the_cap_leaves_half_the_open_file_limit_to_the_rest() {
        let mut s = settings(10_000);
        assert_eq!(s.fit_open_file_limit(Some(1024), 1), Some(10_000));
        assert_eq!(s.max_connections, 512);
        let mut s = settings(10_000);
        assert_eq!(s.fit_open_file_limit(Some(1024), 2), Some(10_000));
        assert_eq!(s.max_connections, 256, "two listeners share the budget");
        let mut s = settings(100);
        assert_eq!(s.fit_open_file_limit(Some(1024), 1), None);
        assert_eq!(s.max_connections, 100, "a cap within the budget is kept");
        assert_eq!(s.fit_open_file_limit(None, 1), None, "unknown limit: kept");
        let mut s = settings(10);
        assert_eq!(s.fit_open_file_limit(Some(1), 1), Some(10));
        assert_eq!(s.max_connections, 1, "never below one connection");
    }

    #[test]
    fn defaults_follow_the_configuration() {
        let s = ListenerSettings::default();
        let server = ez_config::Config::defaults().server;
        assert_eq!(s.header_read_timeout, server.header_read_timeout);
        assert_eq!(s.keep_alive_idle, server.keep_alive_idle);
        assert_eq!(s.max_connections, server.max_connections);
        assert_eq!(s.shutdown_grace, server.shutdown_grace);
    }
}
