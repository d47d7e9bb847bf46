//! Why an upstream gave no HTTP answer, told apart by the types in the error's source
//! chain (never by its words): DNS, a refused or reset connection, TLS, a connect or
//! response timeout.
//!
//! Who learns what: the client (a tenant) gets the cause class only; the operator's log
//! line gets the cause, the upstream's host and port and the whole source chain; the log
//! record gets the cause and the host and port. Neither ever carries the URL's path,
//! query or userinfo, where secrets can sit.

use std::error::Error;
use std::fmt;
use std::io::ErrorKind;
use std::time::Duration;

use axum::http::StatusCode;
use ez_contract::routing::ProviderSnapshot;

use crate::body::Trace;
use crate::error::ProxyError;

/// The failure classes, also the `cause` label of `ezapi_upstream_errors_total`. The
/// discriminants index the per-group counters (`metrics.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The upstream's host name did not resolve.
    Dns,
    ConnectionRefused,
    /// No connection within `balancer.connect_timeout`.
    ConnectTimeout,
    Tls,
    /// The network or host is unreachable.
    Unreachable,
    /// Connecting failed otherwise.
    Connect,
    /// The connection was reset or aborted by the peer.
    ConnectionReset,
    /// No response headers within `balancer.first_byte_timeout`.
    ResponseTimeout,
    /// The request failed after connecting (the upstream closed the connection, or
    /// answered with something that is not HTTP).
    Other,
}

impl FailureCause {
    pub const ALL: [FailureCause; 9] = [
        FailureCause::Dns,
        FailureCause::ConnectionRefused,
        FailureCause::ConnectTimeout,
        FailureCause::Tls,
        FailureCause::Unreachable,
        FailureCause::Connect,
        FailureCause::ConnectionReset,
        FailureCause::ResponseTimeout,
        FailureCause::Other,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            FailureCause::Dns => "dns",
            FailureCause::ConnectionRefused => "connection_refused",
            FailureCause::ConnectTimeout => "connect_timeout",
            FailureCause::Tls => "tls",
            FailureCause::Unreachable => "unreachable",
            FailureCause::Connect => "connect",
            FailureCause::ConnectionReset => "connection_reset",
            FailureCause::ResponseTimeout => "response_timeout",
            FailureCause::Other => "other",
        }
    }

    /// A short phrase for people (clients included).
    pub fn phrase(self) -> &'static str {
        match self {
            FailureCause::Dns => "DNS resolution failed",
            FailureCause::ConnectionRefused => "connection refused",
            FailureCause::ConnectTimeout => "connect timeout",
            FailureCause::Tls => "TLS handshake failed",
            FailureCause::Unreachable => "network unreachable",
            FailureCause::Connect => "connection failed",
            FailureCause::ConnectionReset => "connection reset",
            FailureCause::ResponseTimeout => "no response in time",
            FailureCause::Other => "the request failed",
        }
    }

    /// The error the client gets when no other credential does better: the cause class,
    /// nothing about where the upstream is.
    pub fn client_error(self) -> ProxyError {
        match self {
            FailureCause::ResponseTimeout => ProxyError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream did not answer in time",
            ),
            FailureCause::ConnectTimeout => ProxyError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the upstream could not be reached in time (connect timeout)",
            ),
            cause => ProxyError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                format!("the upstream could not be reached ({})", cause.phrase()),
            ),
        }
    }

    /// The class of a request error of the upstream client.
    pub fn of(e: &reqwest::Error) -> FailureCause {
        if e.is_dns() {
            return FailureCause::Dns;
        }
        let connecting = e.is_connect();
        let mut source: Option<&(dyn Error + 'static)> = Some(e);
        while let Some(err) = source {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    ErrorKind::ConnectionRefused => return FailureCause::ConnectionRefused,
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                        return FailureCause::ConnectionReset;
                    }
                    ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => {
                        return FailureCause::Unreachable;
                    }
                    ErrorKind::TimedOut if connecting => return FailureCause::ConnectTimeout,
                    ErrorKind::TimedOut => return FailureCause::ResponseTimeout,
                    // The TLS stack reports every handshake failure (a bad certificate, a
                    // peer that does not speak TLS) as invalid data; plain TCP never does.
                    ErrorKind::InvalidData if connecting => return FailureCause::Tls,
                    _ => {}
                }
            }
            source = next_source(err);
        }
        match (e.is_timeout(), connecting) {
            (true, true) => FailureCause::ConnectTimeout,
            (true, false) => FailureCause::ResponseTimeout,
            (false, true) => FailureCause::Connect,
            (false, false) => FailureCause::Other,
        }
    }
}

/// The next error of a source chain. An `io::Error` wrapping another error reports that
/// error's source, skipping the error itself (the TLS stack's error sits there).
fn next_source<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
        return Some(inner);
    }
    err.source()
}

/// Links of a source chain shown at most: real chains have five or six.
const MAX_CHAIN: usize = 10;

/// The messages of `e` and its sources, joined by `: `, a message repeated by the next
/// link shown once.
pub fn chain(e: &(dyn Error + 'static)) -> String {
    let mut out = String::new();
    let mut last = String::new();
    let mut source = Some(e);
    for _ in 0..MAX_CHAIN {
        let Some(err) = source else { break };
        let message = err.to_string();
        if message != last {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&message);
            last = message;
        }
        source = next_source(err);
    }
    out
}

/// `host:port` of an upstream base URL, without its userinfo, path or query; the
/// scheme's port when none is given.
pub fn host_port(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => "(no host)".to_owned(),
        },
        Err(_) => "(unparsable base URL)".to_owned(),
    }
}

/// An attempt that got no HTTP answer.
#[derive(Debug)]
pub struct UpstreamFailure {
    pub cause: FailureCause,
    /// `host:port`.
    pub upstream: String,
    /// What the upstream client said, source by source.
    pub chain: String,
}

impl UpstreamFailure {
    /// From a request error of the upstream client.
    pub fn from_error(provider: &ProviderSnapshot, e: reqwest::Error) -> UpstreamFailure {
        // The URL (path and query included) is left out of the message.
        let e = e.without_url();
        UpstreamFailure {
            cause: FailureCause::of(&e),
            upstream: host_port(&provider.base_url),
            chain: chain(&e),
        }
    }

    /// No response headers within `waited`.
    pub fn timed_out(provider: &ProviderSnapshot, waited: Duration) -> UpstreamFailure {
        UpstreamFailure {
            cause: FailureCause::ResponseTimeout,
            upstream: host_port(&provider.base_url),
            chain: format!("no response headers within {} ms", waited.as_millis()),
        }
    }

    /// Counts the failure, logs it for the operator, keeps cause and host for the log
    /// record, and returns the client's error.
    pub fn report(self, provider: &ProviderSnapshot, trace: &mut Trace) -> ProxyError {
        if let Some(group) = &trace.upstream {
            group.failed(self.cause);
        }
        tracing::warn!(
            request_id = %trace.record.request_id,
            credential = provider.id,
            group = crate::metrics::group_name(provider),
            upstream = %self.upstream,
            cause = self.cause.label(),
            error = %self.chain,
            "upstream unreachable; failing over"
        );
        trace.upstream_failure = Some(self.to_string());
        self.cause.client_error()
    }
}

/// `connection refused at api.example.com:443` — what the log record adds to the
/// client's message.
impl fmt::Display for UpstreamFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.cause.phrase(), self.upstream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_shown_without_userinfo_path_or_query() {
        assert_eq!(
            host_port("https://user:pass-0001@api.example.com/v1?key=secret-0002"),
            "api.example.com:443"
        );
        assert_eq!(host_port("http://10.0.0.5:8080/v1"), "10.0.0.5:8080");
        assert_eq!(host_port("http://[::1]:9000"), "[::1]:9000");
        assert_eq!(host_port("not a url"), "(unparsable base URL)");
    }

    /// A local server that reads a request, then does `then` with the connection.
    async fn server(then: fn(tokio::net::TcpStream)) -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                then(stream);
            }
        });
        addr
    }

    async fn cause_of(url: String) -> FailureCause {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let e = client.post(url).body("{}").send().await.unwrap_err();
        FailureCause::of(&e)
    }

    #[tokio::test]
    async fn request_errors_are_classified_by_their_source_chain() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(
            cause_of(format!("http://{closed}/v1")).await,
            FailureCause::ConnectionRefused
        );
        let reset = server(|stream| {
            let _ = stream.set_zero_linger();
        })
        .await;
        assert_eq!(
            cause_of(format!("http://{reset}/v1")).await,
            FailureCause::ConnectionReset
        );
        // A peer that hangs up without answering: hyper's "incomplete message", which
        // has no I/O error behind it.
        let hangs_up = server(drop).await;
        assert_eq!(
            cause_of(format!("http://{hangs_up}/v1")).await,
            FailureCause::Other
        );
        // TLS spoken to a plain HTTP server (which answers the hello with garbage).
        let plain = server(|stream| {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut stream = stream;
                let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            });
        })
        .await;
        assert_eq!(cause_of(format!("https://{plain}/v1")).await, FailureCause::Tls);
    }

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_follow_wrapped_io_errors_and_show_repeats_once() {
        #[derive(Debug)]
        struct Tls;
        impl fmt::Display for Tls {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("received corrupt message")
            }
        }
        impl Error for Tls {}
        // As the TLS stack nests it: io(Other, io(InvalidData, rustls error)).
        let inner = std::io::Error::new(ErrorKind::InvalidData, Tls);
        let e = Outer(std::io::Error::other(inner));
        assert_eq!(chain(&e), "client error (Connect): received corrupt message");
    }
}
