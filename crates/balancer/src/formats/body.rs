//! The answer of a translated attempt on its way to the client: a stream translated event
//! by event as it arrives (never buffered whole) by the upstream format's decoder and the
//! client format's encoder, a JSON answer translated once complete.
//! Usage was already read from the upstream's own bytes (`crate::body`), so billing does
//! not depend on the translation.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use serde_json::Value;

use super::ir::Collector;
use super::ir::{Event, Response};
use super::sse::SseReader;
use super::{
    Format, StreamDecoder, StreamEncoder, Translation, anthropic, gemini, openai_chat, openai_responses,
};

/// A JSON answer larger than this is not translated (the client gets a 502 error body).
const MAX_JSON: usize = 32 * 1024 * 1024;

enum Mode {
    /// A stream, translated event by event; or, for a client that asked for a whole
    /// answer from an upstream that only streams, collected into one.
    Stream {
        reader: SseReader,
        decoder: Box<dyn StreamDecoder + Send>,
        out: StreamOut,
    },
    Json {
        status: u16,
        kept: BytesMut,
        created: i64,
        upstream: Format,
        client: Format,
        count: bool,
    },
}

enum StreamOut {
    Events(Box<dyn StreamEncoder + Send>),
    Collect {
        collector: Box<Collector>,
        client: Format,
        created: i64,
    },
}

/// Translates the upstream's answer (the bytes of `inner`) into the client's format.
pub struct TranslatedBody<S> {
    inner: S,
    mode: Mode,
    done: bool,
}

fn decoder(upstream: Format) -> Box<dyn StreamDecoder + Send> {
    match upstream {
        Format::Chat => Box::new(openai_chat::ChunkDecoder::default()),
        Format::Responses => Box::new(openai_responses::EventDecoder::default()),
        Format::Messages => Box::new(anthropic::EventDecoder::default()),
        Format::Gemini => Box::new(gemini::ChunkDecoder::default()),
    }
}

fn encoder(translation: Translation, created: i64) -> Box<dyn StreamEncoder + Send> {
    match translation.client {
        Format::Chat => Box::new(openai_chat::ChunkEncoder::new(created, translation.include_usage)),
        Format::Responses => Box::new(openai_responses::EventEncoder::new(created)),
        Format::Messages => Box::new(anthropic::EventEncoder::default()),
        Format::Gemini => Box::new(gemini::ChunkEncoder::default()),
    }
}

impl<S> TranslatedBody<S> {
    /// The answer to a request sent with `translation`; `created` is the time OpenAI
    /// answers carry.
    pub fn new(inner: S, status: u16, translation: Translation, created: i64) -> Self {
        let mode = if translation.upstream_stream && status < 400 {
            let out = if translation.stream {
                StreamOut::Events(encoder(translation, created))
            } else {
                StreamOut::Collect {
                    collector: Box::default(),
                    client: translation.client,
                    created,
                }
            };
            Mode::Stream {
                reader: SseReader::default(),
                decoder: decoder(translation.upstream),
                out,
            }
        } else {
            Mode::Json {
                status,
                kept: BytesMut::new(),
                created,
                upstream: translation.upstream,
                client: translation.client,
                count: translation.count,
            }
        };
        TranslatedBody {
            inner,
            mode,
            done: false,
        }
    }
}

/// What a body that is neither an answer nor an error says.
const UNTRANSLATABLE: &str = "the upstream's answer could not be translated";

/// The upstream's JSON body read as an answer and as an error.
fn decode_json(upstream: Format, value: &Value) -> (Option<Response>, Option<(String, String)>) {
    match upstream {
        Format::Chat => (
            openai_chat::decode_response(value),
            openai_chat::decode_error(value),
        ),
        Format::Responses => (
            openai_responses::decode_response(value),
            openai_responses::decode_error(value),
        ),
        Format::Messages => (anthropic::decode_response(value), anthropic::decode_error(value)),
        Format::Gemini => (gemini::decode_response(value), gemini::decode_error(value)),
    }
}

/// An answer (`decoded`) or an error (`error`, code and message) of the upstream, as the
/// client's body: OpenAI clients get errors in the gateway's envelope, the others in
/// their provider's shape. A success that is no answer is the upstream's fault (502).
fn for_client(
    client: Format,
    status: u16,
    decoded: Option<Response>,
    error: Option<(String, String)>,
    created: i64,
) -> Vec<u8> {
    if status < 400
        && let Some(response) = decoded
    {
        let value = match client {
            Format::Chat => openai_chat::encode_response(&response, created),
            Format::Responses => openai_responses::encode_response(&response, created),
            Format::Messages => anthropic::encode_response(&response),
            Format::Gemini => gemini::encode_response(&response),
        };
        return serde_json::to_vec(&value).unwrap_or_default();
    }
    let (code, message) = error.unwrap_or_else(|| ("upstream_error".into(), UNTRANSLATABLE.into()));
    let status = if status < 400 { 502 } else { status };
    let value = match client {
        Format::Chat | Format::Responses => {
            serde_json::to_value(ez_contract::error::ErrorEnvelope::new(status, code, message))
                .unwrap_or_default()
        }
        Format::Messages => anthropic::encode_error(status, &code, &message),
        Format::Gemini => gemini::encode_error(status, &message),
    };
    serde_json::to_vec(&value).unwrap_or_default()
}

impl StreamOut {
    /// Writes `events` for the client: as stream events, or into the collected answer.
    fn put(&mut self, events: Vec<Event>, out: &mut Vec<u8>) {
        match self {
            StreamOut::Events(encoder) => {
                for event in events {
                    encoder.encode(event, out);
                }
            }
            StreamOut::Collect { collector, .. } => {
                for event in events {
                    collector.push(event);
                }
            }
        }
    }

    /// The collected answer as the client's JSON body (nothing for a stream).
    fn answer(&mut self, out: &mut Vec<u8>) {
        if let StreamOut::Collect {
            collector,
            client,
            created,
        } = self
        {
            let collector = std::mem::take(collector);
            let (status, decoded, error) = match collector.finish() {
                Ok(response) => (200, Some(response), None),
                Err(error) => (502, None, Some(error)),
            };
            out.extend(for_client(*client, status, decoded, error, *created));
        }
    }
}

impl Mode {
    /// Translated bytes for `chunk` (streams), or nothing yet (JSON, collected answers).
    fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Mode::Stream { reader, decoder, out } => {
                let mut events = Vec::new();
                reader.feed_with(chunk, |name, data| decoder.decode(name, data, &mut events));
                let mut bytes = Vec::new();
                out.put(events, &mut bytes);
                bytes
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
            Mode::Stream { decoder, out, .. } => {
                let mut events = Vec::new();
                if !decoder.close(&mut events) {
                    events.push(Event::Error {
                        code: "upstream_stream_error".into(),
                        message: "the upstream's stream ended before the answer was complete".into(),
                    });
                    events.push(Event::End);
                }
                let mut bytes = Vec::new();
                out.put(events, &mut bytes);
                out.answer(&mut bytes);
                bytes
            }
            Mode::Json {
                status,
                kept,
                created,
                upstream,
                client,
                count,
            } => {
                let value: Value = serde_json::from_slice(kept).unwrap_or(Value::Null);
                if *count
                    && *status < 400
                    && let Some(answer) = super::count::answer(*client, &value)
                {
                    return serde_json::to_vec(&answer).unwrap_or_default();
                }
                let (decoded, error) = decode_json(*upstream, &value);
                let decoded = decoded.filter(|_| !*count);
                for_client(*client, *status, decoded, error, *created)
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
