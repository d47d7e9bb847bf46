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

use super::ir::{Event, Response};
use super::sse::SseReader;
use super::{StreamDecoder, StreamEncoder, Translation, anthropic, gemini, openai_chat};

/// A JSON answer larger than this is not translated (the client gets a 502 error body).
const MAX_JSON: usize = 32 * 1024 * 1024;

/// The upstream's whole answer (its status and JSON) as the client's body.
type Answer = fn(u16, &Value, i64) -> Vec<u8>;

enum Mode {
    Stream {
        reader: SseReader,
        decoder: Box<dyn StreamDecoder + Send>,
        encoder: Box<dyn StreamEncoder + Send>,
    },
    Json {
        status: u16,
        kept: BytesMut,
        created: i64,
        answer: Answer,
    },
}

/// Translates the upstream's answer (the bytes of `inner`) into the client's format.
pub struct TranslatedBody<S> {
    inner: S,
    mode: Mode,
    done: bool,
}

impl<S> TranslatedBody<S> {
    /// The answer to a request sent with `translation` (never [`Translation::None`]);
    /// `created` is the time chat answers carry.
    pub fn new(inner: S, status: u16, translation: Translation, created: i64) -> Self {
        type Pieces = (
            Box<dyn StreamDecoder + Send>,
            Box<dyn StreamEncoder + Send>,
            Answer,
        );
        debug_assert!(
            translation != Translation::None,
            "a pass-through answer is not translated"
        );
        let (decoder, encoder, answer): Pieces = match translation {
            Translation::AnthropicToChat { .. } => (
                Box::new(openai_chat::ChunkDecoder::default()),
                Box::new(anthropic::EventEncoder::default()),
                chat_to_anthropic,
            ),
            Translation::GeminiToChat { .. } => (
                Box::new(openai_chat::ChunkDecoder::default()),
                Box::new(gemini::ChunkEncoder::default()),
                chat_to_gemini,
            ),
            Translation::GeminiToAnthropic { .. } => (
                Box::new(anthropic::EventDecoder::default()),
                Box::new(gemini::ChunkEncoder::default()),
                anthropic_to_gemini,
            ),
            Translation::AnthropicToGemini { .. } => (
                Box::new(gemini::ChunkDecoder::default()),
                Box::new(anthropic::EventEncoder::default()),
                gemini_to_anthropic,
            ),
            Translation::ChatToGemini { include_usage, .. } => (
                Box::new(gemini::ChunkDecoder::default()),
                Box::new(openai_chat::ChunkEncoder::new(created, include_usage)),
                gemini_to_chat,
            ),
            // `None` never reaches here (asserted above); it reads as Anthropic's.
            Translation::ChatToAnthropic { .. } | Translation::None => (
                Box::new(anthropic::EventDecoder::default()),
                Box::new(openai_chat::ChunkEncoder::new(
                    created,
                    translation.include_usage(),
                )),
                anthropic_to_chat,
            ),
        };
        let mode = if translation.stream() && status < 400 {
            Mode::Stream {
                reader: SseReader::default(),
                decoder,
                encoder,
            }
        } else {
            Mode::Json {
                status,
                kept: BytesMut::new(),
                created,
                answer,
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

/// An answer (`decoded`) or an error (`error`) of the upstream, for a Chat client; errors
/// in the gateway's envelope.
fn for_chat(
    status: u16,
    decoded: Option<Response>,
    error: Option<(String, String)>,
    created: i64,
) -> Vec<u8> {
    if status < 400
        && let Some(response) = decoded
    {
        return serde_json::to_vec(&openai_chat::encode_response(&response, created)).unwrap_or_default();
    }
    let (code, message) = error.unwrap_or_else(|| ("upstream_error".into(), UNTRANSLATABLE.into()));
    let envelope = ez_contract::error::ErrorEnvelope::new(status.max(400), code, message);
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// The same for an Anthropic client; errors in Anthropic's shape.
fn for_anthropic(status: u16, decoded: Option<Response>, error: Option<(String, String)>) -> Vec<u8> {
    if status < 400
        && let Some(response) = decoded
    {
        return serde_json::to_vec(&anthropic::encode_response(&response)).unwrap_or_default();
    }
    let (code, message) = error.unwrap_or_else(|| ("upstream_error".into(), UNTRANSLATABLE.into()));
    // A success that is no answer is the upstream's fault.
    let status = if status < 400 { 502 } else { status };
    serde_json::to_vec(&anthropic::encode_error(status, &code, &message)).unwrap_or_default()
}

fn anthropic_to_chat(status: u16, value: &Value, created: i64) -> Vec<u8> {
    for_chat(
        status,
        anthropic::decode_response(value),
        anthropic::decode_error(value),
        created,
    )
}

fn gemini_to_chat(status: u16, value: &Value, created: i64) -> Vec<u8> {
    for_chat(
        status,
        gemini::decode_response(value),
        gemini::decode_error(value),
        created,
    )
}

fn chat_to_anthropic(status: u16, value: &Value, _created: i64) -> Vec<u8> {
    for_anthropic(
        status,
        openai_chat::decode_response(value),
        openai_chat::decode_error(value),
    )
}

fn gemini_to_anthropic(status: u16, value: &Value, _created: i64) -> Vec<u8> {
    for_anthropic(
        status,
        gemini::decode_response(value),
        gemini::decode_error(value),
    )
}

/// An answer or an error of the upstream, for a Gemini client; errors in Gemini's shape.
fn for_gemini(status: u16, decoded: Option<Response>, error: Option<(String, String)>) -> Vec<u8> {
    if status < 400
        && let Some(response) = decoded
    {
        return serde_json::to_vec(&gemini::encode_response(&response)).unwrap_or_default();
    }
    let message = error.map_or_else(|| UNTRANSLATABLE.to_owned(), |(_, message)| message);
    let status = if status < 400 { 502 } else { status };
    serde_json::to_vec(&gemini::encode_error(status, &message)).unwrap_or_default()
}

fn chat_to_gemini(status: u16, value: &Value, _created: i64) -> Vec<u8> {
    for_gemini(
        status,
        openai_chat::decode_response(value),
        openai_chat::decode_error(value),
    )
}

fn anthropic_to_gemini(status: u16, value: &Value, _created: i64) -> Vec<u8> {
    for_gemini(
        status,
        anthropic::decode_response(value),
        anthropic::decode_error(value),
    )
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
                status,
                kept,
                created,
                answer,
            } => {
                let value: Value = serde_json::from_slice(kept).unwrap_or(Value::Null);
                answer(*status, &value, *created)
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
