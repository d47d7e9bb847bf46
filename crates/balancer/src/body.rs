//! The upstream's answer on its way to the client: passed on chunk by chunk (SSE event by
//! event), watched for usage and the first token, held to the idle and total deadlines,
//! and recorded when it ends — completely, cut by the upstream, or abandoned by the
//! client (dropping the body drops the upstream request with it).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ez_contract::error::ErrorEnvelope;
use ez_contract::report::LogRecord;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use tokio::time::Sleep;

use crate::metrics::GroupMetrics;
use crate::report::{Outcome, Reporter};
use crate::snapshot::TokenKey;
use crate::usage::{JsonBodyWatch, SseWatch, Usage};

/// One request's log record, filled in as the request goes, recorded exactly once: when
/// the answer ends, or — if it is dropped first — as abandoned by the client (499).
pub struct Trace {
    reporter: Arc<Reporter>,
    pub started: Instant,
    pub record: LogRecord,
    /// Estimated tokens of the request's text, for a stream whose usage never arrives.
    pub prompt_tokens: i64,
    /// The counters of the provider group of the credential tried last; its usage is
    /// counted there.
    pub upstream: Option<Arc<GroupMetrics>>,
    /// Why the last attempt got no HTTP answer (cause and host, see
    /// `upstream_failure.rs`): added to the record's error message when the request
    /// fails. Cleared when another attempt starts.
    pub upstream_failure: Option<String>,
    token_hash: TokenKey,
    recorded: bool,
}

/// Status recorded for a request the client abandoned (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

impl Trace {
    pub fn new(reporter: Arc<Reporter>, started: Instant, record: LogRecord, token_hash: TokenKey) -> Trace {
        Trace {
            reporter,
            started,
            record,
            prompt_tokens: 0,
            upstream: None,
            upstream_failure: None,
            token_hash,
            recorded: false,
        }
    }

    pub fn finish(&mut self, status: u16, error: Option<(&'static str, String)>) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        self.record.status_code = status;
        if let Some((code, message)) = error {
            self.record.error_code = Some(code.to_owned());
            self.record.error_message = Some(match self.upstream_failure.take() {
                Some(failure) => format!("{message}; {failure}"),
                None => message,
            });
        }
        if let Some(group) = &self.upstream {
            group.tokens(self.record.input_tokens, self.record.output_tokens);
        }
        self.record.latency_ms = millis(self.started.elapsed());
        // Client-controlled text (model, namespace, request id, echoed in messages) is
        // bounded before it is buffered: one tenant cannot bloat or poison the logs.
        self.record.sanitise();
        self.reporter.record(Outcome {
            record: std::mem::take(&mut self.record),
            token_hash: self.token_hash,
        });
    }

    pub fn set_usage(&mut self, usage: Option<Usage>) {
        if let Some(usage) = usage {
            self.record.input_tokens = usage.input;
            self.record.output_tokens = usage.output;
        }
    }

    /// A stream's usage: as the upstream reported it, or — when its final usage block
    /// never came (client gone, stream cut, upstream that reports none) — what it did
    /// report, topped up with estimates from the request's text and the streamed deltas.
    pub fn set_stream_usage(&mut self, watch: &SseWatch) {
        let reported = watch.usage.unwrap_or_default();
        if watch.final_usage {
            self.set_usage(Some(reported));
            return;
        }
        self.record.input_tokens = if reported.input > 0 {
            reported.input
        } else {
            self.prompt_tokens
        };
        self.record.output_tokens = reported.output.max(watch.deltas.tokens());
        self.record.usage_estimated = true;
    }
}

impl Drop for Trace {
    fn drop(&mut self) {
        if !self.recorded {
            self.finish(
                CLIENT_CLOSED,
                Some((
                    "client_closed",
                    "the client went away before the answer was complete".into(),
                )),
            );
        }
    }
}

pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

enum Watch {
    Sse(SseWatch),
    Json(JsonBodyWatch),
    /// Neither SSE nor JSON: passed through unread.
    Opaque,
}

/// The response body stream handed to the client.
pub struct ObservedBody {
    upstream: BoxStream<'static, reqwest::Result<Bytes>>,
    watch: Watch,
    trace: Trace,
    status: u16,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    total: Pin<Box<Sleep>>,
    ended: bool,
}

impl ObservedBody {
    pub fn new(
        upstream: reqwest::Response,
        sse: bool,
        strip_usage_chunk: bool,
        trace: Trace,
        idle_timeout: Duration,
        deadline: tokio::time::Instant,
    ) -> ObservedBody {
        let status = upstream.status().as_u16();
        let json = upstream
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json"));
        let watch = if sse {
            Watch::Sse(SseWatch::new(strip_usage_chunk))
        } else if json {
            Watch::Json(JsonBodyWatch::default())
        } else {
            Watch::Opaque
        };
        ObservedBody {
            upstream: upstream.bytes_stream().boxed(),
            watch,
            trace,
            status,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            total: Box::pin(tokio::time::sleep_until(deadline)),
            ended: false,
        }
    }

    fn first_token(&mut self) {
        if self.trace.record.first_token_ms.is_none() {
            self.trace.record.first_token_ms = Some(millis(self.trace.started.elapsed()));
        }
    }

    /// Usage as far as the answer went (estimated for a stream that did not finish).
    fn settle_usage(&mut self) {
        match &self.watch {
            Watch::Sse(w) if self.status < 400 => self.trace.set_stream_usage(w),
            Watch::Sse(w) => self.trace.set_usage(w.usage),
            Watch::Json(w) => self.trace.set_usage(w.usage()),
            Watch::Opaque => {}
        }
    }

    /// The upstream ended normally.
    fn complete(&mut self) -> Option<Bytes> {
        self.ended = true;
        let (rest, error) = match &mut self.watch {
            Watch::Sse(w) => (Some(w.finish()), None),
            Watch::Json(w) => {
                let error = (self.status >= 400).then(|| upstream_error_message(w.body()));
                (None, error)
            }
            Watch::Opaque => (None, None),
        };
        self.settle_usage();
        let error = error.map(|message| ("upstream_error", message));
        self.trace.finish(self.status, error);
        rest.filter(|b| !b.is_empty())
    }

    /// The answer cannot be completed (upstream cut, deadline). For SSE the client gets
    /// an error event and a clean end — never a silent success; other bodies are aborted
    /// so the client sees a truncated response.
    fn fail(&mut self, code: &'static str, message: &str) -> Option<Result<Bytes, std::io::Error>> {
        self.ended = true;
        self.settle_usage();
        self.trace.finish(self.status, Some((code, message.to_owned())));
        match self.watch {
            Watch::Sse(_) => {
                let event =
                    serde_json::to_string(&ErrorEnvelope::new(502, code, message)).unwrap_or_default();
                Some(Ok(Bytes::from(format!("event: error\ndata: {event}\n\n"))))
            }
            _ => Some(Err(std::io::Error::other(message.to_owned()))),
        }
    }
}

impl Drop for ObservedBody {
    /// The client went away before the end: what the answer used so far is recorded
    /// with the 499 (the trace records it as it drops, right after this).
    fn drop(&mut self) {
        if !self.ended {
            self.settle_usage();
        }
    }
}

/// The `error.message` of an upstream error body, else a short excerpt of it.
fn upstream_error_message(body: Option<&[u8]>) -> String {
    let Some(body) = body else {
        return "upstream error (body too large to keep)".into();
    };
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(message) = value
            .get("error")
            .and_then(|e| e.get("message").or(Some(e)))
            .and_then(|m| m.as_str())
    {
        return message.chars().take(500).collect();
    }
    String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned()
}

impl Stream for ObservedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.upstream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    let deadline = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(deadline);
                    let out = match &mut this.watch {
                        Watch::Sse(w) => w.push(&chunk),
                        Watch::Json(w) => {
                            w.observe(&chunk);
                            chunk
                        }
                        Watch::Opaque => chunk,
                    };
                    if out.is_empty() {
                        continue;
                    }
                    this.first_token();
                    return Poll::Ready(Some(Ok(out)));
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(
                        request_id = %this.trace.record.request_id,
                        credential = this.trace.record.api_key_id,
                        error = %crate::upstream_failure::chain(&e.without_url()),
                        "upstream stream broke after the first byte"
                    );
                    return Poll::Ready(this.fail(
                        "upstream_stream_error",
                        "the upstream connection broke before the answer was complete",
                    ));
                }
                Poll::Ready(None) => {
                    return Poll::Ready(this.complete().map(Ok));
                }
                Poll::Pending => {
                    if this.total.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(this.fail(
                            "upstream_timeout",
                            "the request exceeded the balancer's total deadline",
                        ));
                    }
                    if this.idle.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(this.fail(
                            "upstream_idle_timeout",
                            "the upstream went silent for longer than the idle deadline",
                        ));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}
