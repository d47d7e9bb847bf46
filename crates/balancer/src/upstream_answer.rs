//! An upstream's answer before anything of it reaches the client: passed on, or a
//! reason to try another credential (see `refusal.rs` for the decision).
//!
//! A 4xx body is read (at most [`MAX_ERROR_BODY`], within a deadline) to find the
//! provider's structured error. When the answer then goes to the client after all (a
//! request-level refusal), it is rebuilt from what was read plus the rest of the body,
//! so the client gets exactly what the upstream sent.

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt, future};
use reqwest::header;

use ez_contract::report::QuotaWindow;
use ez_contract::time::now_unix;

use crate::refusal::{ErrorFacts, Verdict, verdict};

/// Error bodies are small; a larger 4xx body is no structured error (it passes on).
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// What became of one upstream answer.
pub enum Classified {
    /// For the client, as the upstream sent it.
    Pass(reqwest::Response),
    /// Not for the client: `verdict` is never [`Verdict::Answer`]. `retry_after` is the
    /// upstream's `Retry-After` in seconds (1–3600), when it sent one; `window` the usage
    /// window the refusal announces (`quota.rs`).
    Refused {
        verdict: Verdict,
        retry_after: Option<u64>,
        window: Option<QuotaWindow>,
    },
}

/// Sorts an upstream answer. `read_by` bounds reading an error body (a stalled body must
/// not eat the time left for failover).
pub async fn classify(response: reqwest::Response, read_by: tokio::time::Instant) -> Classified {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.clamp(1, 3600));
    let refused = |verdict, window| Classified::Refused {
        verdict,
        retry_after,
        window,
    };
    if !(400..=499).contains(&status) {
        // Successes pass unread; redirects and server errors need no body to decide.
        return match verdict(status, &ErrorFacts::default()) {
            Verdict::Answer => Classified::Pass(response),
            other => refused(other, None),
        };
    }
    let peeked = Peeked::read(response, read_by).await;
    let facts = if peeked.complete {
        ErrorFacts::parse(&peeked.head)
    } else {
        ErrorFacts::default()
    };
    match verdict(status, &facts) {
        Verdict::Answer => Classified::Pass(peeked.into_response()),
        other => {
            let body: &[u8] = if peeked.complete { &peeked.head } else { b"" };
            let window = crate::quota::from_refusal(status, &peeked.headers, body, now_unix());
            refused(other, window)
        }
    }
}

/// The start of an answer's body, read ahead, with what is left of it.
struct Peeked {
    status: reqwest::StatusCode,
    version: reqwest::Version,
    headers: header::HeaderMap,
    head: Vec<u8>,
    /// The whole body is in `head`.
    complete: bool,
    /// The body broke while it was read: the client gets this error after `head`.
    broken: Option<reqwest::Error>,
    rest: BoxStream<'static, reqwest::Result<Bytes>>,
}

impl Peeked {
    async fn read(response: reqwest::Response, read_by: tokio::time::Instant) -> Peeked {
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let mut rest = response.bytes_stream().boxed();
        let mut head = Vec::new();
        let mut complete = false;
        let mut broken = None;
        loop {
            match tokio::time::timeout_at(read_by, rest.next()).await {
                // Stalled: decided on the status alone; the rest may still come.
                Err(_) => break,
                Ok(None) => {
                    complete = true;
                    break;
                }
                Ok(Some(Ok(chunk))) => {
                    head.extend_from_slice(&chunk);
                    if head.len() > MAX_ERROR_BODY {
                        break;
                    }
                }
                Ok(Some(Err(e))) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        Peeked {
            status,
            version,
            headers,
            head,
            complete,
            broken,
            rest,
        }
    }

    /// The answer again, its body being what was read followed by the rest.
    fn into_response(self) -> reqwest::Response {
        let head = stream::once(future::ready(Ok(Bytes::from(self.head))));
        let body: BoxStream<'static, reqwest::Result<Bytes>> = match (self.complete, self.broken) {
            (true, _) => head.boxed(),
            (false, Some(e)) => head.chain(stream::once(future::ready(Err(e)))).boxed(),
            (false, None) => head.chain(self.rest).boxed(),
        };
        let mut rebuilt = http::Response::new(reqwest::Body::wrap_stream(body));
        *rebuilt.status_mut() = self.status;
        *rebuilt.version_mut() = self.version;
        *rebuilt.headers_mut() = self.headers;
        reqwest::Response::from(rebuilt)
    }
}
