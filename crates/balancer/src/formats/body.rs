//! The answer of a translated attempt on its way to the client: a stream translated event
//! by event as it arrives (never buffered whole), a JSON answer translated once complete.
//! Usage was already read from the upstream's own bytes (`crate::body`), so billing does
//! not depend on the translation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;

use super::anthropic::{EventDecoder, decode_error, decode_response};
use super::ir::Event;
use super::openai_chat::{ChunkEncoder, encode_response};
use super::sse::SseReader;

/// A JSON answer larger than this is not translated (the client gets a 502 error body).
const MAX_JSON: usize = 32 * 1024 * 1024;

enum Mode {
    Stream {
        reader: SseReader,
        decoder: EventDecoder,
        encoder: ChunkEncoder,
    },
    Json {
        status: u16,
        kept: BytesMut,
        created: i64,
    },
}

/// Translates an Anthropic Messages answer (the bytes of `inner`) into Chat Completions.
pub struct TranslatedBody<S> {
    inner: S,
    mode: Mode,
    done: bool,
}

impl<S> TranslatedBody<S> {
    pub fn anthropic_to_chat(inner: S, status: u16, stream: bool, include_usage: bool, created: i64) -> Self {
        let mode = if stream && status < 400 {
            Mode::Stream {
                reader: SseReader::default(),
                decoder: EventDecoder::default(),
                encoder: ChunkEncoder::new(created, include_usage),
            }
        } else {
            Mode::Json {
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
                let mut out = Vec::new();
                if !decoder.ended() {
                    for event in [
                        Event::Error {
                            code: "upstream_stream_error".into(),
                            message: "the upstream's stream ended before the answer was complete".into(),
                        },
                        Event::End,
                    ] {
                        encoder.encode(event, &mut out);
                    }
                }
                out
            }
            Mode::Json {
                status,
                kept,
                created,
            } => {
                let value: Value = serde_json::from_slice(kept).unwrap_or(Value::Null);
                if *status < 400
                    && let Some(response) = decode_response(&value)
                {
                    return serde_json::to_vec(&encode_response(&response, *created)).unwrap_or_default();
                }
                let (code, message) = decode_error(&value).unwrap_or_else(|| {
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
