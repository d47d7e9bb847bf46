//! Translation between wire formats (`docs/formats.md`): each format has a decoder into
//! the internal representation ([`ir`]) and an encoder out of it. When the client's
//! format is the upstream's, nothing here runs — the request passes through as before.
//!
//! Built so far: OpenAI Chat Completions clients served by Anthropic Messages upstreams
//! (`anthropic`, `claude`, `claude-code`) and by Gemini API-key upstreams (`gemini`,
//! `google`, `aistudio`), plain and streamed, tools included.

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

/// How one attempt's answer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// The upstream speaks the client's format.
    None,
    /// An OpenAI Chat client, an Anthropic Messages upstream.
    ChatToAnthropic { stream: bool, include_usage: bool },
    /// An OpenAI Chat client, a Gemini `generateContent` upstream.
    ChatToGemini { stream: bool, include_usage: bool },
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
            Translation::None => Translation::None,
        }
    }
}

impl Translation {
    /// How the answer is translated back: from which upstream format, streamed or not,
    /// with a usage chunk or not; `None` when the answer passes through.
    pub fn answer(self) -> Option<(body::Source, bool, bool)> {
        match self {
            Translation::None => None,
            Translation::ChatToAnthropic {
                stream,
                include_usage,
            } => Some((body::Source::Anthropic, stream, include_usage)),
            Translation::ChatToGemini {
                stream,
                include_usage,
            } => Some((body::Source::Gemini, stream, include_usage)),
        }
    }
}

/// Whether `ingress` can reach an upstream of type `t` through a translator.
pub fn translates(ingress: Ingress, t: ProviderType) -> bool {
    ingress == Ingress::ChatCompletions
        && (matches!(
            t,
            ProviderType::Anthropic | ProviderType::Claude | ProviderType::ClaudeCode
        ) || is_gemini(t))
}

/// The Gemini types that call the Gemini API with an API key. Vertex and the Code Assist
/// subscriptions (`gemini-cli`, `antigravity`) need their own envelopes: not yet.
pub fn is_gemini(t: ProviderType) -> bool {
    matches!(
        t,
        ProviderType::Gemini | ProviderType::Google | ProviderType::AiStudio
    )
}

/// The format name of Gemini upstreams in log records.
pub const GEMINI_FORMAT: &str = "gemini_generate_content";

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

/// The endpoint a translated request goes to (the upstream's own format).
pub fn upstream_ingress(t: ProviderType) -> Ingress {
    match t {
        ProviderType::Anthropic | ProviderType::Claude | ProviderType::ClaudeCode => Ingress::Messages,
        _ => Ingress::ChatCompletions,
    }
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
        let stream = matches!(translation, Translation::ChatToGemini { stream: true, .. });
        return (gemini_url(&provider.base_url, model, stream), GEMINI_FORMAT);
    }
    let endpoint = upstream_ingress(t);
    (crate::upstream::url(provider, endpoint), endpoint.format())
}

/// The client's `document` for `model` on an upstream of type `t`: the body to send and
/// how its answer is translated back.
pub fn request(
    ingress: Ingress,
    t: ProviderType,
    document: &Map<String, Value>,
    model: &str,
) -> Result<(Value, Translation), Refusal> {
    debug_assert!(translates(ingress, t));
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

#[cfg(test)]
mod tests;
