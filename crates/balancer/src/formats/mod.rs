//! Translation between wire formats (`docs/formats.md`): each format has a decoder into
//! the internal representation ([`ir`]) and an encoder out of it. When the client's
//! format is the upstream's, nothing here runs — the request passes through as before.
//!
//! Built so far: OpenAI Chat Completions clients served by Anthropic Messages upstreams
//! (`anthropic`, `claude`, `claude-code`), plain and streamed, tools included.

pub mod anthropic;
pub mod body;
pub mod gemini;
pub mod ir;
pub mod openai_chat;
pub mod sse;

use axum::http::StatusCode;
use ez_contract::provider::ProviderType;
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
            Translation::None => Translation::None,
        }
    }
}

/// Whether `ingress` can reach an upstream of type `t` through a translator.
pub fn translates(ingress: Ingress, t: ProviderType) -> bool {
    ingress == Ingress::ChatCompletions
        && matches!(
            t,
            ProviderType::Anthropic | ProviderType::Claude | ProviderType::ClaudeCode
        )
}

/// The endpoint a translated request goes to (the upstream's own format).
pub fn upstream_ingress(t: ProviderType) -> Ingress {
    match t {
        ProviderType::Anthropic | ProviderType::Claude | ProviderType::ClaudeCode => Ingress::Messages,
        _ => Ingress::ChatCompletions,
    }
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
    let translation = Translation::ChatToAnthropic {
        stream: request.stream,
        include_usage: request.stream_usage,
    };
    Ok((anthropic::encode_request(&request, model), translation))
}

#[cfg(test)]
mod tests;
