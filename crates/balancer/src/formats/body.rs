//! The answer of a translated attempt on its way to the client: a stream translated event
//! by event as it arrives (never buffered whole), a JSON answer translated once complete.
//! Usage was already read from the upstream's own bytes (`crate::body`), so billing does
//! not depend on the translation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;

use super::ir::{Event, Response};
use super::openai_chat::{ChunkEncoder, encode_response};
use super::sse::SseReader;
use super::{anthropic, gemini};

/// A JSON answer larger than this is not translated (the client gets a 502 error body).
const MAX_JSON: usize = 32 * 1024 * 1024;

/// The upstream format a translated answer is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Anthropic,
    Gemini,
}

impl Source {
    fn decode_response(self, body: &Value) -> Option<Response> {
        match self {
            Source::Anthropic => anthropic::decode_response(body),
            Source::Gemini => gemini::decode_response(body),
        }
    }

    fn decode_error(self, body: &Value) -> Option<(String, String)> {
        match self {
            Source::Anthropic => anthropic::decode_error(body),
            Source::Gemini => gemini::decode_error(body),
        }
    }
}

/// A stream decoder of the upstream's format.
enum Decoder {
    Anthropic(anthropic::EventDecoder),
    Gemini(gemini::ChunkDecoder),
}

impl Decoder {
    fn decode(&mut self, name: &str, data: &str, out: &mut Vec<Event>) {
        match self {
            Decoder::Anthropic(d) => d.decode(name, data, out),
            Decoder::Gemini(d) => d.decode(data, out),
        }
    }

    /// The upstream's stream ended; whether the answer was complete.
    fn close(&mut self, out: &mut Vec<Event>) -> bool {
        match self {
            Decoder::Anthropic(d) => d.ended(),
            Decoder::Gemini(d) => d.close(out),
        }
    }
}

enum Mode {
    Stream {
        reader: SseReader,
        decoder: Decoder,
        encoder: ChunkEncoder,
    },
    Json {
        source: Source,
        status: u16,
        kept: BytesMut,
        created: i64,
    },
}

/// Translates an upstream's answer (the bytes of `inner`) into Chat Completions.
pub struct TranslatedBody<S> {
    inner: S,
    mode: Mode,
    done: bool,
}

impl<S> TranslatedBody<S> {
    pub fn to_chat(
        inner: S,
        source: Source,
        status: u16,
        stream: bool,
        include_usage: bool,
        created: i64,
    ) -> Self {
        let mode = if stream && status < 400 {
            Mode::Stream {
                reader: SseReader::default(),
                decoder: match source {
                    Source::Anthropic => Decoder::Anthropic(anthropic::EventDecoder::default()),
                    Source::Gemini => Decoder::Gemini(gemini::ChunkDecoder::default()),
                },
                encoder: ChunkEncoder::new(created, include_usage),
            }
        } else {
            Mode::Json {
                source,
                status,
                kept: BytesMut::new(),
                created,
            }
        };
        TranslatedBody {
            inner,
            mode,
            done: false,
        }
    }
}

fn error_body(status: u16, code: &str, message: &str) -> Vec<u8> {
    let envelope = ez_contract::error::ErrorEnvelope::new(status, code, message);
    serde_json::to_vec(&envelope).unwrap_or_default()
}

impl Mode {
    /// Translated bytes for `chunk` (streams), or nothing yet (JSON).
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Mode::Stream {
                reader,
                decoder,
                encoder,
            } => {
                let mut events = Vec::new();
                reader.feed_with(chunk, |name, data| decoder.decode(name, data, &mut events));
                let mut out = Vec::new();
                for event in events {
                    encoder.encode(event, &mut out);
                }
                out
            }
            Mode::Json { kept, .. } => {
                if kept.len() + chunk.len() <= MAX_JSON {
                    kept.extend_from_slice(chunk);
                }
                Vec::new()
            }
        }
    }

    /// What is left to send once the upstream's answer ended.
    fn finish(&mut self) -> Vec<u8> {
        match self {
            Mode::Stream { decoder, encoder, .. } => {
                let mut events = Vec::new();
                if !decoder.close(&mut events) {
                    events.push(Event::Error {
                        code: "upstream_stream_error".into(),
                        message: "the upstream's stream ended before the answer was complete".into(),
                    });
                    events.push(Event::End);
                }
                let mut out = Vec::new();
                for event in events {
                    encoder.encode(event, &mut out);
                }
                out
            }
            Mode::Json {
                source,
                status,
                kept,
                created,
            } => {
                let value: Value = serde_json::from_slice(kept).unwrap_or(Value::Null);
                if *status < 400
                    && let Some(response) = source.decode_response(&value)
                {
                    return serde_json::to_vec(&encode_response(&response, *created)).unwrap_or_default();
                }
                let (code, message) = source.decode_error(&value).unwrap_or_else(|| {
                    (
                        "upstream_error".into(),
                        "the upstream's answer could not be translated".into(),
                    )
                });
                error_body((*status).max(400), &code, &message)
            }
        }
    }
}

impl<S> Stream for TranslatedBody<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = this.mode.feed(&chunk);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(out))));
                    }
                }
                Poll::Ready(None) => {
                    this.done = true;
                    let out = this.mode.finish();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Bytes::from(out))));
                    }
                }
            }
        }
    }
}
