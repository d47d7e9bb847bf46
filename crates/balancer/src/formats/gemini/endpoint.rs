//! Where a `generateContent` request goes on each Google upstream, and the envelope it
//! travels in:
//! - the Gemini API (`gemini`, `google`, `aistudio`): `{base}/v1beta/models/{model}:generateContent`;
//! - Vertex AI (`vertex`): `{base}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`,
//!   the official host being regional (`{location}-aiplatform.googleapis.com`) unless the
//!   location is `global`;
//! - Vertex AI express mode (`vertex-express`, an API key): `{base}/v1/publishers/google/models/{model}:generateContent`;
//! - the Code Assist API behind the Gemini CLI and Antigravity subscriptions
//!   (`gemini-cli`, `antigravity`): `{base}/v1internal:generateContent`, the request wrapped
//!   as `{"model", "project", "request"}` (Antigravity adds `userAgent` and `requestId`)
//!   and every answer as `{"response": …}`.
//!
//! Streams use `:streamGenerateContent?alt=sse` everywhere.

use ez_contract::provider::ProviderType;
use ez_contract::routing::ProviderSnapshot;
use serde_json::{Value, json};

const VERTEX_HOST: &str = "https://aiplatform.googleapis.com";

fn method(stream: bool) -> &'static str {
    if stream {
        ":streamGenerateContent?alt=sse"
    } else {
        ":generateContent"
    }
}

/// Whether requests to `t` travel in the Code Assist envelope.
pub fn is_code_assist(t: ProviderType) -> bool {
    matches!(t, ProviderType::GeminiCli | ProviderType::Antigravity)
}

/// The URL of a `generateContent` (or streamed) call for `model` on `provider` of type `t`.
pub fn url(provider: &ProviderSnapshot, t: ProviderType, model: &str, stream: bool) -> String {
    at(provider, t, model, method(stream))
}

/// The URL of a `countTokens` call (the Gemini API and Vertex; Code Assist has its own).
pub fn count_url(provider: &ProviderSnapshot, t: ProviderType, model: &str) -> String {
    at(provider, t, model, ":countTokens")
}

fn at(provider: &ProviderSnapshot, t: ProviderType, model: &str, method: &str) -> String {
    let base = provider.base_url.trim_end_matches('/');
    match t {
        ProviderType::Vertex => {
            let location = match provider.google_location.as_str() {
                "" => "global",
                location => location,
            };
            let host = if base == VERTEX_HOST && location != "global" {
                format!("https://{location}-aiplatform.googleapis.com")
            } else {
                base.to_owned()
            };
            let project = &provider.google_project;
            format!(
                "{host}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}{method}"
            )
        }
        ProviderType::VertexExpress => format!("{base}/v1/publishers/google/models/{model}{method}"),
        t if is_code_assist(t) => format!("{base}/v1internal{method}"),
        _ => {
            let version = if base.ends_with("/v1beta") || base.ends_with("/v1") {
                ""
            } else {
                "/v1beta"
            };
            format!("{base}{version}/models/{model}{method}")
        }
    }
}

/// The request `body` in the envelope `t` needs (as is for the Gemini API and Vertex).
pub fn wrap(provider: &ProviderSnapshot, t: ProviderType, model: &str, body: Value) -> Value {
    if !is_code_assist(t) {
        return body;
    }
    let project = if provider.project_id.is_empty() {
        &provider.google_project
    } else {
        &provider.project_id
    };
    let mut envelope = json!({ "model": model, "project": project, "request": body });
    if t == ProviderType::Antigravity {
        envelope["userAgent"] = "antigravity".into();
        envelope["requestId"] = format!("agent-{:032x}", rand::random::<u128>()).into();
    }
    envelope
}

/// A Code Assist answer's inner `generateContent` answer (`{"response": …}`); any other
/// body as it is.
pub fn unwrap(body: &Value) -> &Value {
    match body.get("response") {
        Some(inner) if inner.is_object() && body.get("candidates").is_none() => inner,
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(base: &str, location: &str) -> ProviderSnapshot {
        ProviderSnapshot {
            base_url: base.into(),
            google_project: "proj-1".into(),
            google_location: location.into(),
            ..ProviderSnapshot::default()
        }
    }

    #[test]
    fn each_google_upstream_has_its_url_layout() {
        let p = provider("https://generativelanguage.googleapis.com", "");
        assert_eq!(
            url(&p, ProviderType::Gemini, "gemini-2.5-flash", true),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let regional = provider(VERTEX_HOST, "europe-west4");
        assert_eq!(
            url(&regional, ProviderType::Vertex, "gemini-2.5-pro", false),
            "https://europe-west4-aiplatform.googleapis.com/v1/projects/proj-1/locations/europe-west4/publishers/google/models/gemini-2.5-pro:generateContent"
        );
        let global = provider(VERTEX_HOST, "");
        assert_eq!(
            url(&global, ProviderType::Vertex, "m", false),
            "https://aiplatform.googleapis.com/v1/projects/proj-1/locations/global/publishers/google/models/m:generateContent"
        );
        let mock = provider("http://127.0.0.1:9/", "us-central1");
        assert!(
            url(&mock, ProviderType::Vertex, "m", false)
                .starts_with("http://127.0.0.1:9/v1/projects/proj-1/locations/us-central1/")
        );
        assert_eq!(
            url(&global, ProviderType::VertexExpress, "m", true),
            "https://aiplatform.googleapis.com/v1/publishers/google/models/m:streamGenerateContent?alt=sse"
        );
        let code_assist = provider("https://cloudcode-pa.googleapis.com", "");
        assert_eq!(
            url(&code_assist, ProviderType::GeminiCli, "gemini-2.5-pro", false),
            "https://cloudcode-pa.googleapis.com/v1internal:generateContent"
        );
    }

    #[test]
    fn code_assist_requests_and_answers_travel_in_an_envelope() {
        let mut p = provider("", "");
        p.project_id = "cloud-proj".into();
        let body = json!({ "contents": [] });
        assert_eq!(wrap(&p, ProviderType::Gemini, "m", body.clone()), body);
        assert_eq!(
            wrap(&p, ProviderType::GeminiCli, "m", body.clone()),
            json!({ "model": "m", "project": "cloud-proj", "request": body })
        );
        let antigravity = wrap(&p, ProviderType::Antigravity, "m", body.clone());
        assert_eq!(antigravity["userAgent"], "antigravity");
        assert!(antigravity["requestId"].as_str().unwrap().starts_with("agent-"));
        let inner = json!({ "candidates": [] });
        assert_eq!(
            unwrap(&json!({ "response": inner.clone(), "traceId": "t" })),
            &inner
        );
        assert_eq!(unwrap(&inner), &inner);
    }
}
