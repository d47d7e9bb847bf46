//! Token counting across families: Anthropic's `count_tokens` served by a Gemini upstream's
//! `countTokens`, and Gemini's `countTokens` by Anthropic's `count_tokens`. The
//! conversation is translated like a generation request (what the IR cannot carry is
//! refused, so the count is of what the target would be sent), the settings that do not
//! change the prompt (token cap, sampling, stream) are left out, and the count comes back
//! in the client's shape. OpenAI has no counting endpoint: those routes answer 400.

use ez_contract::provider::ProviderType;
use serde_json::{Map, Value, json};

use super::gemini::endpoint;
use super::{Format, Refusal, Translation, anthropic, gemini};
use crate::upstream::Ingress;

/// The client and upstream formats of a count `ingress` can be translated between for an
/// upstream of type `t`.
pub fn formats(ingress: Ingress, t: ProviderType) -> Option<(Format, Format)> {
    let upstream = Format::of_upstream(t)?;
    match (ingress, upstream) {
        (Ingress::CountTokens, Format::Gemini) if !endpoint::is_code_assist(t) => {
            Some((Format::Messages, Format::Gemini))
        }
        (Ingress::GeminiCountTokens, Format::Messages) => Some((Format::Gemini, Format::Messages)),
        _ => None,
    }
}

/// The Gemini `countTokens` body's conversation: its `generateContentRequest`, or the
/// body itself (`contents`, and on Vertex `systemInstruction` and `tools`).
fn gemini_conversation(document: &Map<String, Value>) -> &Map<String, Value> {
    document
        .get("generateContentRequest")
        .and_then(Value::as_object)
        .unwrap_or(document)
}

/// The count request for `model` on an upstream of type `t`, and how its answer comes back.
pub fn request(
    ingress: Ingress,
    t: ProviderType,
    document: &Map<String, Value>,
    model: &str,
) -> Result<(Value, Translation), Refusal> {
    let Some((client, upstream)) = formats(ingress, t) else {
        return Err(super::refuse(
            "model",
            "this model's provider cannot count tokens",
        ));
    };
    let translation = Translation {
        client,
        upstream,
        stream: false,
        upstream_stream: false,
        include_usage: false,
        count: true,
    };
    let body = if upstream == Format::Messages {
        let mut conversation = gemini_conversation(document).clone();
        conversation.remove("model");
        let request = gemini::decode_request(&conversation, false)?;
        let mut body = anthropic::encode_request(&request, model);
        if let Some(fields) = body.as_object_mut() {
            fields.retain(|name, _| {
                matches!(
                    name.as_str(),
                    "model" | "messages" | "system" | "tools" | "tool_choice" | "thinking"
                )
            });
        }
        body
    } else {
        let mut conversation = document.clone();
        conversation.insert("max_tokens".into(), json!(1));
        let request = anthropic::decode_request(&conversation)?;
        let mut inner = gemini::encode_request(&request, model)?;
        if let Some(fields) = inner.as_object_mut() {
            fields.remove("generationConfig");
        }
        if t == ProviderType::Gemini || t == ProviderType::Google || t == ProviderType::AiStudio {
            inner["model"] = Value::String(format!("models/{model}"));
            json!({ "generateContentRequest": inner })
        } else {
            // Vertex counts the conversation given at the top level.
            inner
        }
    };
    Ok((body, translation))
}

/// The upstream's count (`input_tokens` or `totalTokens`) in the client's shape, or
/// `None` when the body holds none.
pub fn answer(client: Format, body: &Value) -> Option<Value> {
    let count = body["input_tokens"]
        .as_u64()
        .or_else(|| body["totalTokens"].as_u64())?;
    Some(match client {
        Format::Gemini => json!({ "totalTokens": count }),
        _ => json!({ "input_tokens": count }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn counts_cross_between_anthropic_and_gemini() {
        let anthropic_count = object(json!({ "model": "claude", "system": "Be brief.",
            "messages": [{ "role": "user", "content": "hi" }] }));
        let (body, translation) = request(
            Ingress::CountTokens,
            ProviderType::Gemini,
            &anthropic_count,
            "gemini-2.5-flash",
        )
        .unwrap();
        assert!(translation.count);
        assert_eq!(body["generateContentRequest"]["model"], "models/gemini-2.5-flash");
        assert_eq!(
            body["generateContentRequest"]["contents"][0]["parts"][0]["text"],
            "hi"
        );
        assert_eq!(
            body["generateContentRequest"]["systemInstruction"]["parts"][0]["text"],
            "Be brief."
        );
        assert!(body["generateContentRequest"].get("generationConfig").is_none());

        let gemini_count = object(json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] }));
        let (body, _) = request(
            Ingress::GeminiCountTokens,
            ProviderType::Anthropic,
            &gemini_count,
            "claude-x",
        )
        .unwrap();
        assert_eq!(
            body,
            json!({ "model": "claude-x", "messages": [{ "role": "user", "content": [{ "type": "text", "text": "hi" }] }] })
        );

        assert_eq!(
            answer(Format::Gemini, &json!({ "input_tokens": 12 })),
            Some(json!({ "totalTokens": 12 }))
        );
        assert_eq!(
            answer(Format::Messages, &json!({ "totalTokens": 9 })),
            Some(json!({ "input_tokens": 9 }))
        );
        assert_eq!(answer(Format::Messages, &json!({ "error": {} })), None);
        assert!(formats(Ingress::CountTokens, ProviderType::OpenAi).is_none());
        assert!(formats(Ingress::CountTokens, ProviderType::GeminiCli).is_none());
    }
}
