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
pub mod gemini;
pub mod ir;
pub mod openai_chat;
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

/// How one attempt's answer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The upstream speaks the client's format.
    None,
    /// An OpenAI Chat client, an Anthropic Messages upstream.
    ChatToAnthropic { stream: bool, include_usage: bool },
    /// An OpenAI Chat client, a Gemini `generateContent` upstream.
    ChatToGemini { stream: bool, include_usage: bool },
    /// An Anthropic Messages client, an OpenAI Chat upstream.
    AnthropicToChat { stream: bool },
    /// An Anthropic Messages client, a Gemini `generateContent` upstream.
    AnthropicToGemini { stream: bool },
    /// A Gemini client, an OpenAI Chat upstream.
    GeminiToChat { stream: bool },
    /// A Gemini client, an Anthropic Messages upstream.
    GeminiToAnthropic { stream: bool },
}

impl Translation {
    /// A client that did not ask for stream usage gets none, even when the balancer asked
    /// the upstream for it.
    pub fn without_usage_chunk(self, client_did_not_ask: bool) -> Translation {
        match self {
            Translation::ChatToAnthropic {
                stream,
                include_usage,
            } => Translation::ChatToAnthropic {
                stream,
                include_usage: include_usage && !client_did_not_ask,
            },
            Translation::ChatToGemini {
                stream,
                include_usage,
            } => Translation::ChatToGemini {
                stream,
                include_usage: include_usage && !client_did_not_ask,
            },
            other => other,
        }
    }

    /// Whether a Chat client gets a final usage chunk.
    pub fn include_usage(self) -> bool {
        matches!(
            self,
            Translation::ChatToAnthropic {
                include_usage: true,
                ..
            } | Translation::ChatToGemini {
                include_usage: true,
                ..
            }
        )
    }

    /// Whether the client asked for a stream.
    pub fn stream(self) -> bool {
        match self {
            Translation::None => false,
            Translation::ChatToAnthropic { stream, .. }
            | Translation::ChatToGemini { stream, .. }
            | Translation::AnthropicToChat { stream }
            | Translation::AnthropicToGemini { stream }
            | Translation::GeminiToChat { stream }
            | Translation::GeminiToAnthropic { stream } => stream,
        }
    }
}

fn speaks_anthropic(t: ProviderType) -> bool {
    matches!(
        t,
        ProviderType::Anthropic | ProviderType::Claude | ProviderType::ClaudeCode
    )
}

fn speaks_chat(t: ProviderType) -> bool {
    matches!(
        t,
        ProviderType::OpenAi | ProviderType::Compatible | ProviderType::Azure
    )
}

/// Whether `ingress` can reach an upstream of type `t` through a translator.
pub fn translates(ingress: Ingress, t: ProviderType) -> bool {
    match ingress {
        Ingress::ChatCompletions => speaks_anthropic(t) || is_gemini(t),
        Ingress::Messages => speaks_chat(t) || is_gemini(t),
        Ingress::Gemini => speaks_chat(t) || speaks_anthropic(t),
        _ => false,
    }
}

/// The Gemini types that call the Gemini API with an API key. Vertex and the Code Assist
/// subscriptions (`gemini-cli`, `antigravity`) need their own envelopes: not yet.
pub fn is_gemini(t: ProviderType) -> bool {
    matches!(
        t,
        ProviderType::Gemini | ProviderType::Google | ProviderType::AiStudio
    )
}

/// `{base}/v1beta/models/{model}:generateContent`, or `:streamGenerateContent?alt=sse`.
pub fn gemini_url(base: &str, model: &str, stream: bool) -> String {
    let base = base.trim_end_matches('/');
    let version = if base.ends_with("/v1beta") || base.ends_with("/v1") {
        ""
    } else {
        "/v1beta"
    };
    let method = if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    };
    format!("{base}{version}/models/{model}{method}")
}

/// Where a translated request for `model` goes on `provider` (of type `t`), and the
/// upstream format's name for the log record.
pub fn target(
    provider: &ProviderSnapshot,
    t: ProviderType,
    model: &str,
    translation: Translation,
) -> (String, &'static str) {
    if is_gemini(t) {
        return (
            gemini_url(&provider.base_url, model, translation.stream()),
            Ingress::Gemini.format(),
        );
    }
    let endpoint = upstream_ingress(t);
    (crate::upstream::url(provider, endpoint), endpoint.format())
}

/// The endpoint a translated request goes to (the upstream's own format).
pub fn upstream_ingress(t: ProviderType) -> Ingress {
    if speaks_anthropic(t) {
        Ingress::Messages
    } else {
        Ingress::ChatCompletions
    }
}

/// The client's `document` for `model` on an upstream of type `t`: the body to send and
/// how its answer is translated back. `stream` is the client's (for formats that say it
/// in the URL rather than the body).
pub fn request(
    ingress: Ingress,
    t: ProviderType,
    document: &Map<String, Value>,
    model: &str,
    stream: bool,
) -> Result<(Value, Translation), Refusal> {
    debug_assert!(translates(ingress, t));
    if ingress == Ingress::Gemini {
        let request = gemini::decode_request(document, stream)?;
        return Ok(if speaks_anthropic(t) {
            (
                anthropic::encode_request(&request, model),
                Translation::GeminiToAnthropic { stream },
            )
        } else {
            (
                openai_chat::encode_request(&request, model),
                Translation::GeminiToChat { stream },
            )
        });
    }
    if ingress == Ingress::Messages && is_gemini(t) {
        let request = anthropic::decode_request(document)?;
        let translation = Translation::AnthropicToGemini {
            stream: request.stream,
        };
        return Ok((gemini::encode_request(&request)?, translation));
    }
    if ingress == Ingress::Messages {
        let request = anthropic::decode_request(document)?;
        let translation = Translation::AnthropicToChat {
            stream: request.stream,
        };
        return Ok((openai_chat::encode_request(&request, model), translation));
    }
    let request = openai_chat::decode_request(document)?;
    let (stream, include_usage) = (request.stream, request.stream_usage);
    if is_gemini(t) {
        let body = gemini::encode_request(&request)?;
        return Ok((
            body,
            Translation::ChatToGemini {
                stream,
                include_usage,
            },
        ));
    }
    let translation = Translation::ChatToAnthropic {
        stream,
        include_usage,
    };
    Ok((anthropic::encode_request(&request, model), translation))
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
mod tests_reverse;
