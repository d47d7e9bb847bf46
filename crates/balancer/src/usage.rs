//! Token usage from upstream answers (SPEC §6 step 9): the `usage` block of a JSON body,
//! or of the SSE events of a stream, in the OpenAI (chat, completions, embeddings,
//! responses) and Anthropic (messages) shapes.

use bytes::{Bytes, BytesMut};
use memchr::memmem;
use serde_json::Value;

use crate::estimate::DeltaMeter;

/// Input and output tokens of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: i64,
    pub output: i64,
}

impl Usage {
    /// Streams report usage cumulatively (Anthropic sends output tokens in
    /// `message_start` and again, grown, in `message_delta`): keep the largest seen.
    fn merge(&mut self, other: Usage) {
        self.input = self.input.max(other.input);
        self.output = self.output.max(other.output);
    }

    pub fn total(self) -> i64 {
        self.input + self.output
    }
}

fn tokens(usage: &Value, names: [&str; 2]) -> i64 {
    names
        .iter()
        .find_map(|n| usage.get(*n).and_then(Value::as_i64))
        .unwrap_or(0)
        .max(0)
}

/// The usage object of a document: top-level `usage`, or inside `response` (Responses
/// API stream events) or `message` (Anthropic `message_start`); Gemini's
/// `usageMetadata` (its thinking tokens are output, as OpenAI counts reasoning), also
/// inside Code Assist's `response` envelope.
pub fn extract(document: &Value) -> Option<Usage> {
    let meta = document
        .get("usageMetadata")
        .or_else(|| document.get("response").and_then(|r| r.get("usageMetadata")));
    if let Some(meta) = meta.filter(|m| m.is_object()) {
        let count = |name: &str| meta[name].as_i64().unwrap_or(0).max(0);
        return Some(Usage {
            input: count("promptTokenCount"),
            output: count("candidatesTokenCount") + count("thoughtsTokenCount"),
        });
    }
    let usage = [
        document.get("usage"),
        document.get("response").and_then(|r| r.get("usage")),
        document.get("message").and_then(|m| m.get("usage")),
    ]
    .into_iter()
    .flatten()
    .find(|u| u.is_object())?;
    Some(Usage {
        input: tokens(usage, ["prompt_tokens", "input_tokens"]),
        output: tokens(usage, ["completion_tokens", "output_tokens"]),
    })
}

/// Kept whole up to this size; beyond, only the tail is kept to find `usage` in.
const MAX_KEPT_BODY: usize = 256 * 1024;
const TAIL: usize = 16 * 1024;

/// Watches a JSON (non-streamed) body pass and finds its usage at the end. Bodies larger
/// than [`MAX_KEPT_BODY`] are not kept: the usage block comes last in every provider's
/// answer, so the tail is searched instead.
#[derive(Default)]
pub struct JsonBodyWatch {
    kept: BytesMut,
    overflowed: bool,
}

impl JsonBodyWatch {
    pub fn observe(&mut self, chunk: &[u8]) {
        self.kept.extend_from_slice(chunk);
        if self.kept.len() > MAX_KEPT_BODY {
            self.overflowed = true;
            let cut = self.kept.len() - TAIL;
            let _ = self.kept.split_to(cut);
        }
    }

    /// The whole body, when it was small enough to keep.
    pub fn body(&self) -> Option<&[u8]> {
        (!self.overflowed).then_some(&self.kept[..])
    }

    /// The usage block, read where it stands — the body is not parsed as a whole.
    pub fn usage(&self) -> Option<Usage> {
        usage_after_last_key(&self.kept).or_else(|| {
            // A `"usage"` that is not the key (a string value): the whole document.
            let body = self.body()?;
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|v| extract(&v))
        })
    }
}

/// The value of the last `"usage":` (or Gemini's `"usageMetadata":`) in `bytes`, read as
/// one JSON value.
fn usage_after_last_key(bytes: &[u8]) -> Option<Usage> {
    let found = [&b"\"usage\""[..], &b"\"usageMetadata\""[..]]
        .into_iter()
        .filter_map(|key| memmem::rfind(bytes, key).map(|at| (at, key)))
        .max_by_key(|(at, _)| *at);
    let (at, key) = found?;
    let rest = &bytes[at + key.len()..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let value = serde_json::Deserializer::from_slice(&rest[colon + 1..])
        .into_iter::<Value>()
        .next()?
        .ok()?;
    let name = std::str::from_utf8(&key[1..key.len() - 1]).ok()?;
    extract(&serde_json::json!({ name: value }))
}

/// Splits an SSE stream into events as chunks arrive, reads usage from the events that
/// carry one, and optionally drops the usage-only chunk the balancer asked for itself
/// (`stream_options.include_usage` that the client did not request).
pub struct SseWatch {
    pending: BytesMut,
    strip_usage_chunk: bool,
    pub usage: Option<Usage>,
    /// Whether the stream's final usage block arrived (not only Anthropic's
    /// `message_start`, which carries the input tokens before any output).
    pub final_usage: bool,
    /// The generated text seen, for an estimate when the final usage never comes.
    pub deltas: DeltaMeter,
    /// Events seen; the first marks the time to first token.
    pub events: u64,
}

impl SseWatch {
    pub fn new(strip_usage_chunk: bool) -> SseWatch {
        SseWatch {
            pending: BytesMut::new(),
            strip_usage_chunk,
            usage: None,
            final_usage: false,
            deltas: DeltaMeter::default(),
            events: 0,
        }
    }

    /// Takes a chunk from upstream; returns the bytes to pass on (whole events only; a
    /// partial event waits for the rest).
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end).freeze();
            if self.keep(&event) {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }

    /// What is left when the upstream ends (an unterminated last event).
    pub fn finish(&mut self) -> Bytes {
        let rest = self.pending.split().freeze();
        if !rest.is_empty() && self.keep(&rest) {
            rest
        } else {
            Bytes::new()
        }
    }

    fn keep(&mut self, event: &[u8]) -> bool {
        self.events += 1;
        self.deltas.observe(event);
        // `"usage"` (OpenAI, Anthropic) or `"usageMetadata"` (Gemini).
        if memmem::find(event, b"\"usage").is_none() {
            return true;
        }
        let Some(document) = data_of(event).and_then(|d| serde_json::from_slice::<Value>(&d).ok()) else {
            return true;
        };
        if let Some(usage) = extract(&document) {
            self.usage.get_or_insert_with(Usage::default).merge(usage);
            self.final_usage |= document.get("type").and_then(Value::as_str) != Some("message_start");
            let usage_only = document
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty);
            if self.strip_usage_chunk && usage_only {
                return false;
            }
        }
        true
    }
}

/// The end (exclusive) of the first complete event: after a blank line.
fn event_end(buf: &[u8]) -> Option<usize> {
    crate::formats::sse::event_end(buf).map(|(len, separator)| len + separator)
}

/// The `data:` lines of an event, joined by newlines.
fn data_of(event: &[u8]) -> Option<Vec<u8>> {
    let mut data: Option<Vec<u8>> = None;
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(value) = line.strip_prefix(b"data:") {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            let buf = data.get_or_insert_with(Vec::new);
            if !buf.is_empty() {
                buf.push(b'\n');
            }
            buf.extend_from_slice(value);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn usage_is_read_from_every_provider_shape() {
        let openai = json!({ "usage": { "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8 } });
        assert_eq!(extract(&openai), Some(Usage { input: 3, output: 5 }));
        let embeddings = json!({ "usage": { "prompt_tokens": 7, "total_tokens": 7 } });
        assert_eq!(extract(&embeddings), Some(Usage { input: 7, output: 0 }));
        let anthropic = json!({ "type": "message_start", "message": { "usage": { "input_tokens": 11, "output_tokens": 1 } } });
        assert_eq!(extract(&anthropic), Some(Usage { input: 11, output: 1 }));
        let responses = json!({ "type": "response.completed", "response": { "usage": { "input_tokens": 2, "output_tokens": 9 } } });
        assert_eq!(extract(&responses), Some(Usage { input: 2, output: 9 }));
        let gemini = json!({ "usageMetadata": { "promptTokenCount": 8, "candidatesTokenCount": 5, "thoughtsTokenCount": 2 } });
        assert_eq!(extract(&gemini), Some(Usage { input: 8, output: 7 }));
        let code_assist = json!({ "response": gemini, "traceId": "t" });
        assert_eq!(extract(&code_assist), Some(Usage { input: 8, output: 7 }));
        assert_eq!(extract(&json!({ "usage": null })), None);
        assert_eq!(extract(&json!({ "choices": [] })), None);
    }

    #[test]
    fn sse_events_are_passed_whole_and_usage_chunks_stripped_on_request() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n"
        );
        // Split inside an event: nothing of it is passed before it is complete.
        let (a, b) = stream.split_at(20);
        let mut watch = SseWatch::new(true);
        assert!(watch.push(a.as_bytes()).is_empty());
        let out = watch.push(b.as_bytes());
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(watch.usage, Some(Usage { input: 4, output: 2 }));
        assert!(watch.finish().is_empty());

        let mut keep = SseWatch::new(false);
        assert_eq!(keep.push(stream.as_bytes()), Bytes::from(stream));
        assert_eq!(keep.usage, Some(Usage { input: 4, output: 2 }));
    }

    #[test]
    fn anthropic_streams_report_the_largest_counts() {
        let stream = concat!(
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\r\n\r\n",
            "event: message_delta\r\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":42}}\r\n\r\n",
        );
        let mut watch = SseWatch::new(false);
        assert_eq!(watch.push(stream.as_bytes()).len(), stream.len());
        assert_eq!(
            watch.usage,
            Some(Usage {
                input: 10,
                output: 42
            })
        );
        assert_eq!(watch.events, 2);
        assert!(watch.final_usage);
        let mut started = SseWatch::new(false);
        started.push(stream.split("event: message_delta").next().unwrap().as_bytes());
        assert_eq!(started.usage, Some(Usage { input: 10, output: 1 }));
        assert!(!started.final_usage, "message_start alone is not the final usage");
    }

    #[test]
    fn large_json_bodies_find_usage_in_their_tail() {
        let mut watch = JsonBodyWatch::default();
        let big = "x".repeat(MAX_KEPT_BODY);
        let body = format!("{{\"data\":\"{big}\",\"usage\":{{\"prompt_tokens\":12,\"total_tokens\":12}}}}");
        for chunk in body.as_bytes().chunks(8192) {
            watch.observe(chunk);
        }
        assert!(watch.body().is_none());
        assert_eq!(watch.usage(), Some(Usage { input: 12, output: 0 }));
        // Gemini's large answers: `usageMetadata`, found in the tail too.
        let mut gemini = JsonBodyWatch::default();
        let body = format!(
            "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{big}\"}}]}}}}],\"usageMetadata\":{{\"promptTokenCount\":30,\"candidatesTokenCount\":9000}},\"modelVersion\":\"gemini-2.5-pro\"}}"
        );
        for chunk in body.as_bytes().chunks(8192) {
            gemini.observe(chunk);
        }
        assert_eq!(
            gemini.usage(),
            Some(Usage {
                input: 30,
                output: 9000
            })
        );

        let mut small = JsonBodyWatch::default();
        small.observe(br#"{"usage":{"input_tokens":1,"output_tokens":2}}"#);
        assert_eq!(small.usage(), Some(Usage { input: 1, output: 2 }));
        // The word as a value after the block: the whole document is read instead.
        let mut value = JsonBodyWatch::default();
        value.observe(br#"{"usage" : {"prompt_tokens":4,"completion_tokens":1},"note":"usage"}"#);
        assert_eq!(value.usage(), Some(Usage { input: 4, output: 1 }));
    }
}
