//! Translation between wire formats (`docs/formats.md`): each format has a decoder into
//! the internal representation ([`ir`]) and an encoder out of it. When the client's
//! format is the upstream's, nothing here runs — the request passes through as before.
//!
//! Built so far, plain and streamed, tools included:
//! - OpenAI Chat Completions clients served by Anthropic Messages upstreams (`anthropic`,
//!   `claude`, `claude-code`);
//! - OpenAI Chat Completions clients served by Gemini API-key upstreams (`gemini`,
//!   `google`, `aistudio`);
//! - Anthropic Messages clients (Claude Code) served by OpenAI Chat Completions upstreams
//!   (`openai`, `compatible`, `azure`) and by Gemini API-key upstreams.

pub mod anthropic;
pub mod body;
pub mod count;
mod function_tools;
pub mod gemini;
pub mod ir;
pub mod openai_chat;
pub mod openai_responses;
pub mod sse;

use axum::http::StatusCode;
use ez_contract::provider::ProviderType;
use ez_contract::routing::ProviderSnapshot;
use serde_json::{Map, Value};

use crate::error::ProxyError;
use crate::upstream::Ingress;

/// A request field the target format cannot express: refused, never dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The field, as the client wrote it (`messages[2].content[0].type`).
    pub param: String,
    pub message: String,
}

impl From<Refusal> for ProxyError {
    fn from(refusal: Refusal) -> ProxyError {
        ProxyError::new(StatusCode::BAD_REQUEST, "unsupported_parameter", refusal.message)
            .with_param(refusal.param)
    }
}

/// Reads an upstream's stream (SSE events) into IR events, keeping what it needs across
/// events.
pub trait StreamDecoder {
    /// The IR events of one SSE event (`event:` name and `data:` text).
    fn decode(&mut self, name: &str, data: &str, out: &mut Vec<ir::Event>);
    /// Whether the upstream said its answer is complete.
    fn ended(&self) -> bool;
    /// The upstream's stream closed: events still owed (formats without an end event
    /// finish here), and whether the answer was complete.
    fn close(&mut self, _out: &mut Vec<ir::Event>) -> bool {
        self.ended()
    }
}

/// Writes IR events in a client's stream grammar.
pub trait StreamEncoder {
    /// Appends the SSE lines of `event` to `out`.
    fn encode(&mut self, event: ir::Event, out: &mut Vec<u8>);
}

/// A conversation format, on either side of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenAI Chat Completions.
    Chat,
    /// OpenAI Responses.
    Responses,
    /// Anthropic Messages.
    Messages,
    /// Gemini `generateContent`.
    Gemini,
}

impl Format {
    /// The format a client endpoint speaks, when it is a conversation format.
    pub fn of_ingress(ingress: Ingress) -> Option<Format> {
        match ingress {
            Ingress::ChatCompletions => Some(Format::Chat),
            Ingress::Responses => Some(Format::Responses),
            Ingress::Messages => Some(Format::Messages),
            Ingress::Gemini => Some(Format::Gemini),
            Ingress::Completions
            | Ingress::Embeddings
            | Ingress::CountTokens
            | Ingress::GeminiCountTokens => None,
        }
    }

    /// The format an upstream of type `t` is sent translated requests in, when the
    /// gateway can reach it through a translator.
    pub fn of_upstream(t: ProviderType) -> Option<Format> {
        use ProviderType as P;
        match t {
            P::OpenAi | P::Compatible | P::Azure => Some(Format::Chat),
            P::Codex => Some(Format::Responses),
            P::Anthropic | P::Claude | P::ClaudeCode => Some(Format::Messages),
            P::Gemini
            | P::Google
            | P::AiStudio
            | P::Vertex
            | P::VertexExpress
            | P::GeminiCli
            | P::Antigravity => Some(Format::Gemini),
        }
    }

    /// The endpoint of this format (its name in log records).
    pub fn ingress(self) -> Ingress {
        match self {
            Format::Chat => Ingress::ChatCompletions,
            Format::Responses => Ingress::Responses,
            Format::Messages => Ingress::Messages,
            Format::Gemini => Ingress::Gemini,
        }
    }
}

/// How one translated attempt's answer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub client: Format,
    pub upstream: Format,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the upstream was asked for one (the Codex backend streams only: a whole
    /// answer is then collected from its stream).
    pub upstream_stream: bool,
    /// Whether a Chat client gets a final usage chunk.
    pub include_usage: bool,
    /// A token count (`count_tokens`, `countTokens`), not a generation.
    pub count: bool,
}

impl Translation {
    /// A client that did not ask for stream usage gets none, even when the balancer asked
    /// the upstream for it.
    pub fn without_usage_chunk(mut self, client_did_not_ask: bool) -> Translation {
        self.include_usage &= !client_did_not_ask;
        self
    }
}

/// Whether `ingress` can reach an upstream of type `t` through a translator.
pub fn translates(ingress: Ingress, t: ProviderType) -> bool {
    // The Code Assist envelope is put on (and taken off) by the translator, so Gemini
    // clients reach Code Assist upstreams through it too.
    matches!(
        (Format::of_ingress(ingress), Format::of_upstream(t)),
        (Some(client), Some(upstream)) if client != upstream || gemini::endpoint::is_code_assist(t)
    ) || count::formats(ingress, t).is_some()
}

/// Where a translated request for `model` goes on `provider`, and the upstream format's
/// name for the log record.
pub fn target(
    provider: &ProviderSnapshot,
    t: ProviderType,
    model: &str,
    translation: Translation,
) -> (String, &'static str) {
    if translation.count {
        return match translation.upstream {
            Format::Gemini => (
                gemini::endpoint::count_url(provider, t, model),
                Ingress::GeminiCountTokens.format(),
            ),
            _ => (
                crate::upstream::url(provider, Ingress::CountTokens, model),
                Ingress::CountTokens.format(),
            ),
        };
    }
    let endpoint = translation.upstream.ingress();
    let url = match translation.upstream {
        Format::Gemini => gemini::endpoint::url(provider, t, model, translation.upstream_stream),
        _ => crate::upstream::url(provider, endpoint, model),
    };
    (url, endpoint.format())
}

/// The client's `document` decoded into the IR. `stream` is the client's (for formats
/// that say it in the URL rather than the body).
fn decode(client: Format, document: &Map<String, Value>, stream: bool) -> Result<ir::Request, Refusal> {
    match client {
        Format::Chat => openai_chat::decode_request(document),
        Format::Responses => openai_responses::decode_request(document),
        Format::Messages => anthropic::decode_request(document),
        Format::Gemini => gemini::decode_request(document, stream),
    }
}

/// The client's `document` for `model` on `provider` of type `t` (one that
/// [`translates`] says is reachable): the body to send and how its answer is translated
/// back.
pub fn request(
    ingress: Ingress,
    provider: &ProviderSnapshot,
    t: ProviderType,
    document: &Map<String, Value>,
    model: &str,
    stream: bool,
) -> Result<(Value, Translation), Refusal> {
    if matches!(ingress, Ingress::CountTokens | Ingress::GeminiCountTokens) {
        return count::request(ingress, t, document, model);
    }
    let (Some(client), Some(upstream)) = (Format::of_ingress(ingress), Format::of_upstream(t)) else {
        return Err(refuse(
            "model",
            "this model's provider cannot be reached from this endpoint",
        ));
    };
    let request = decode(client, document, stream)?;
    let mut translation = Translation {
        client,
        upstream,
        stream: request.stream,
        upstream_stream: request.stream,
        include_usage: client == Format::Chat && request.stream_usage,
        count: false,
    };
    let body = match upstream {
        Format::Chat => {
            let mut body = openai_chat::encode_request(&request, model);
            // OpenAI's own models (o-series, GPT-5) take only `max_completion_tokens`;
            // OpenAI-compatible servers mostly know `max_tokens` alone.
            if matches!(t, ProviderType::OpenAi | ProviderType::Azure)
                && let Some(fields) = body.as_object_mut()
                && let Some(max) = fields.remove("max_tokens")
            {
                fields.insert("max_completion_tokens".into(), max);
            }
            body
        }
        Format::Messages => {
            anthropic::refusals(&request)?;
            anthropic::encode_request(&request, model)
        }
        Format::Gemini => {
            gemini::endpoint::wrap(provider, t, model, gemini::encode_request(&request, model)?)
        }
        Format::Responses => {
            let codex = t == ProviderType::Codex;
            translation.upstream_stream |= codex;
            openai_responses::encode_request(&request, model, codex)?
        }
    };
    Ok((body, translation))
}

/// A Responses request for the Codex backend, passed on in its own format with what the
/// backend requires: a stream (collected into one answer when the client wanted one),
/// nothing stored, `instructions` present, no token cap (the subscription sets it). A
/// sampling setting the backend refuses is refused here, naming it.
pub fn codex_pass_through(
    document: &Map<String, Value>,
    model: &str,
) -> Result<(Map<String, Value>, Option<Translation>), Refusal> {
    for name in ["temperature", "top_p"] {
        if document
            .get(name)
            .is_some_and(|v| !v.is_null() && v.as_f64() != Some(1.0))
        {
            return Err(refuse(name, "the Codex backend does not take it"));
        }
    }
    if document.get("store") == Some(&Value::Bool(true)) {
        return Err(refuse(
            "store",
            "the Codex backend stores nothing: set store to false",
        ));
    }
    let mut document = document.clone();
    for name in ["temperature", "top_p", "max_output_tokens"] {
        document.remove(name);
    }
    document.insert("model".into(), Value::String(model.to_owned()));
    document.insert("store".into(), Value::Bool(false));
    if !document.get("instructions").is_some_and(Value::is_string) {
        document.insert("instructions".into(), Value::String(String::new()));
    }
    let streamed = document.get("stream") == Some(&Value::Bool(true));
    document.insert("stream".into(), Value::Bool(true));
    let collect = (!streamed).then_some(Translation {
        client: Format::Responses,
        upstream: Format::Responses,
        stream: false,
        upstream_stream: true,
        include_usage: false,
        count: false,
    });
    Ok((document, collect))
}

/// Fields that are harmless at their neutral value (`0`, `false`, `null`, `1` for `n`).
pub(crate) fn neutral(name: &str, value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) if name == "n" => n.as_u64() == Some(1),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(_) => false,
    }
}

/// A number field of the client's request (`null` or absent: none).
pub(crate) fn number(document: &Map<String, Value>, name: &str) -> Result<Option<f64>, Refusal> {
    match document.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| refuse(name, "must be a number")),
    }
}

pub(crate) fn refuse(param: impl Into<String>, why: &str) -> Refusal {
    let param = param.into();
    Refusal {
        message: format!("{param}: {why}"),
        param,
    }
}

/// Text given as a string, `null` (empty) or an array of `{"type": "text", "text"}`
/// blocks, joined; any other block is refused at `at[k]` with `why`.
pub(crate) fn joined_text(value: &Value, at: &str, why: &str) -> Result<String, Refusal> {
    match value {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for (k, block) in blocks.iter().enumerate() {
                match (block["type"].as_str(), block["text"].as_str()) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => return Err(refuse(format!("{at}[{k}]"), why)),
                }
            }
            Ok(text)
        }
        _ => Err(refuse(at, "must be a string or an array of text blocks")),
    }
}

/// Appends one SSE `data:` line holding `value`.
pub(crate) fn data(out: &mut Vec<u8>, value: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_responses;
#[cfg(test)]
mod tests_reverse;
#[cfg(test)]
mod tests_signatures;

#[cfg(test)]
mod tests_roundtrip;
