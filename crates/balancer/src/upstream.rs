//! How a request goes to an upstream (SPEC §6 step 6): which provider types speak the
//! client's format, the URL, the credential, the static headers and the headers profile.

use ez_contract::provider::{ALL_PROVIDER_TYPES, ProviderType};
use ez_contract::routing::ProviderSnapshot;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// The client-facing endpoints the balancer forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    ChatCompletions,
    Completions,
    Embeddings,
    /// OpenAI Responses API.
    Responses,
    /// Anthropic Messages API.
    Messages,
    /// Anthropic's token counting (`/v1/messages/count_tokens`).
    CountTokens,
    /// Gemini `generateContent` / `streamGenerateContent` (model and stream in the URL).
    Gemini,
    /// Gemini's token counting (`/v1beta/models/{model}:countTokens`).
    GeminiCountTokens,
}

impl Ingress {
    /// The route as the client called it (for logs).
    pub fn route(self) -> &'static str {
        match self {
            Ingress::ChatCompletions => "/v1/chat/completions",
            Ingress::Completions => "/v1/completions",
            Ingress::Embeddings => "/v1/embeddings",
            Ingress::Responses => "/v1/responses",
            Ingress::Messages => "/v1/messages",
            Ingress::CountTokens => "/v1/messages/count_tokens",
            Ingress::Gemini => "/v1beta/models/{model}:generateContent",
            Ingress::GeminiCountTokens => "/v1beta/models/{model}:countTokens",
        }
    }

    /// The wire format's name in log records (`upstream_format`, `docs/formats.md`).
    pub fn format(self) -> &'static str {
        match self {
            Ingress::ChatCompletions => "openai_chat",
            Ingress::Completions => "openai_completions",
            Ingress::Embeddings => "openai_embeddings",
            Ingress::Responses => "openai_responses",
            Ingress::Messages => "anthropic_messages",
            Ingress::CountTokens => "anthropic_count_tokens",
            Ingress::Gemini => "gemini_generate_content",
            Ingress::GeminiCountTokens => "gemini_count_tokens",
        }
    }

    /// Whether a provider of type `t` takes this format as is (no translation).
    pub fn served_by(self, t: ProviderType) -> bool {
        use ProviderType as P;
        match self {
            Ingress::ChatCompletions | Ingress::Completions | Ingress::Embeddings => {
                matches!(t, P::OpenAi | P::Compatible | P::Azure)
            }
            // Most OpenAI-compatible servers have no Responses API: they get Chat, translated.
            Ingress::Responses => matches!(t, P::OpenAi | P::Azure | P::Codex),
            Ingress::Messages | Ingress::CountTokens => matches!(t, P::Anthropic | P::Claude | P::ClaudeCode),
            Ingress::Gemini | Ingress::GeminiCountTokens => matches!(
                t,
                P::Gemini | P::Google | P::AiStudio | P::Vertex | P::VertexExpress
            ),
        }
    }

    /// Whether the balancer may ask for a usage chunk the client did not request
    /// (`stream_options.include_usage`, OpenAI chat and completions streams only).
    pub fn supports_stream_usage_option(self) -> bool {
        matches!(self, Ingress::ChatCompletions | Ingress::Completions)
    }
}

/// The canonical type of a snapshot entry (the CP writes canonical names; no allocation).
pub fn provider_type(provider: &ProviderSnapshot) -> Option<ProviderType> {
    ALL_PROVIDER_TYPES
        .into_iter()
        .find(|t| t.as_str() == provider.provider_type)
}

/// The upstream URL for `ingress` and the upstream `model` on `provider`. OpenAI-format
/// base URLs include the version (`https://api.openai.com/v1`); Anthropic's do not
/// (`https://api.anthropic.com`); Azure's name a layout of their own (`azure.rs`).
pub fn url(provider: &ProviderSnapshot, ingress: Ingress, model: &str) -> String {
    let base = provider.base_url.trim_end_matches('/');
    let path = match ingress {
        Ingress::ChatCompletions => "/chat/completions",
        Ingress::Completions => "/completions",
        Ingress::Embeddings => "/embeddings",
        Ingress::Responses => "/responses",
        Ingress::Messages if base.ends_with("/v1") => "/messages",
        Ingress::Messages => "/v1/messages",
        Ingress::CountTokens if base.ends_with("/v1") => "/messages/count_tokens",
        Ingress::CountTokens => "/v1/messages/count_tokens",
        // Gemini URLs carry the model: `formats::gemini::endpoint::url`.
        Ingress::Gemini | Ingress::GeminiCountTokens => "",
    };
    if provider.provider_type == ProviderType::Azure.as_str() {
        return crate::azure::url(&provider.base_url, path, model);
    }
    let mut url = String::with_capacity(base.len() + path.len());
    url.push_str(base);
    url.push_str(path);
    url
}

/// Client headers passed through to the upstream (API versions and beta flags); every
/// other client header (its key, cookies, hop-by-hop headers) stays here.
pub const FORWARDED_CLIENT_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The credential in the form the provider expects, plus the provider's fixed headers:
/// static headers, then the headers profile (a subscription CLI's), which win.
pub fn headers(provider: &ProviderSnapshot, kind: ProviderType, client: &http::HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED_CLIENT_HEADERS {
        if let Some(value) = client.get(name) {
            out.insert(HeaderName::from_static(name), value.clone());
        }
    }
    // OAuth subscriptions present their access token, and so do Vertex credentials
    // holding a service-account key (never sent: the control plane exchanges it); API-key
    // types their key.
    let secret = if (kind.is_subscription() && !provider.access_token.is_empty())
        || holds_service_account(provider, kind)
    {
        &provider.access_token
    } else {
        &provider.api_key
    };
    match kind {
        ProviderType::Azure => insert(&mut out, "api-key", secret),
        ProviderType::Gemini
        | ProviderType::Google
        | ProviderType::AiStudio
        | ProviderType::VertexExpress => {
            insert(&mut out, "x-goog-api-key", secret);
        }
        ProviderType::Anthropic | ProviderType::Claude => {
            insert(&mut out, "x-api-key", secret);
            if !out.contains_key("anthropic-version") {
                out.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
            }
        }
        ProviderType::ClaudeCode => {
            insert(&mut out, "authorization", &format!("Bearer {secret}"));
            if !out.contains_key("anthropic-version") {
                out.insert("anthropic-version", HeaderValue::from_static(ANTHROPIC_VERSION));
            }
        }
        _ => insert(&mut out, "authorization", &format!("Bearer {secret}")),
    }
    for (name, value) in &provider.static_headers {
        insert(&mut out, name, value);
    }
    for (name, value) in profile(&provider.headers_profile) {
        insert(&mut out, name, value);
    }
    if provider.headers_profile == "codex" && !provider.account_id.is_empty() {
        insert(&mut out, "chatgpt-account-id", &provider.account_id);
    }
    out
}

/// A Vertex credential whose key is a service-account key document.
pub fn holds_service_account(provider: &ProviderSnapshot, kind: ProviderType) -> bool {
    kind == ProviderType::Vertex && ez_contract::provider::is_service_account_key(&provider.api_key)
}

fn insert(out: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(name), Ok(mut value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
        value.set_sensitive(true);
        out.insert(name, value);
    }
}

/// The headers each subscription CLI sends (SPEC §8 `headers_profile`).
pub fn profile(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "claude-code" => &[
            ("anthropic-beta", "claude-code-20250219,oauth-2025-04-20"),
            ("anthropic-dangerous-direct-browser-access", "true"),
            ("user-agent", "claude-cli/2.0.0 (external, cli)"),
            ("x-app", "cli"),
        ],
        "codex" => &[
            ("openai-beta", "responses=experimental"),
            ("originator", "codex_cli_rs"),
            ("user-agent", "codex_cli_rs/0.50.0"),
        ],
        "gemini-cli" => &[
            ("user-agent", "GeminiCLI/0.10.0"),
            ("x-goog-api-client", "gl-node/22.0.0"),
        ],
        "antigravity" => &[("user-agent", "antigravity/1.0.0")],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn provider(t: &str, base: &str) -> ProviderSnapshot {
        ProviderSnapshot {
            id: 1,
            name: "g#1".into(),
            provider_type: t.into(),
            base_url: base.into(),
            api_key: "sk-upstream".into(),
            google_project: String::new(),
            google_location: String::new(),
            group_id: 1,
            group: "default".into(),
            models: vec![],
            status: "active".into(),
            auto_ban: true,
            weight: 1,
            ban_until: 0,
            ban_reason: String::new(),
            cooling_until: 0,
            access_token: "oauth-token".into(),
            refresh_token: String::new(),
            expires_at: 0,
            account_id: "acct-1".into(),
            project_id: String::new(),
            static_headers: BTreeMap::from([("x-team".to_owned(), "blue".to_owned())]),
            headers_profile: String::new(),
        }
    }

    #[test]
    fn urls_follow_each_format() {
        let openai = provider("openai", "https://api.openai.com/v1/");
        assert_eq!(
            url(&openai, Ingress::ChatCompletions, "m"),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            url(&openai, Ingress::Responses, "m"),
            "https://api.openai.com/v1/responses"
        );
        let anthropic = provider("anthropic", "https://api.anthropic.com");
        assert_eq!(
            url(&anthropic, Ingress::Messages, "m"),
            "https://api.anthropic.com/v1/messages"
        );
        let proxy = provider("anthropic", "https://proxy.local/v1");
        assert_eq!(
            url(&proxy, Ingress::Messages, "m"),
            "https://proxy.local/v1/messages"
        );
        assert_eq!(
            url(&anthropic, Ingress::CountTokens, "m"),
            "https://api.anthropic.com/v1/messages/count_tokens"
        );
    }

    #[test]
    fn formats_reach_only_providers_that_speak_them() {
        assert!(Ingress::ChatCompletions.served_by(ProviderType::Azure));
        assert!(!Ingress::ChatCompletions.served_by(ProviderType::Anthropic));
        assert!(!Ingress::ChatCompletions.served_by(ProviderType::Codex));
        assert!(Ingress::Responses.served_by(ProviderType::Codex));
        assert!(!Ingress::Responses.served_by(ProviderType::Compatible));
        assert!(Ingress::Messages.served_by(ProviderType::ClaudeCode));
        assert!(!Ingress::Messages.served_by(ProviderType::OpenAi));
    }

    #[test]
    fn credentials_go_where_each_provider_expects_them() {
        let client = http::HeaderMap::new();
        let h = headers(&provider("openai", ""), ProviderType::OpenAi, &client);
        assert_eq!(h["authorization"], "Bearer sk-upstream");
        assert_eq!(h["x-team"], "blue");
        let h = headers(&provider("azure", ""), ProviderType::Azure, &client);
        assert_eq!(h["api-key"], "sk-upstream");
        assert!(!h.contains_key("authorization"));
        let mut client = http::HeaderMap::new();
        client.insert("anthropic-version", "2024-01-01".parse().unwrap());
        client.insert("authorization", "Bearer sk-ez-client".parse().unwrap());
        let h = headers(&provider("anthropic", ""), ProviderType::Anthropic, &client);
        assert_eq!(h["x-api-key"], "sk-upstream");
        assert_eq!(h["anthropic-version"], "2024-01-01");
        assert!(
            !h.contains_key("authorization"),
            "the client's key never goes upstream"
        );
        let mut p = provider("claude-code", "");
        p.headers_profile = "claude-code".into();
        let h = headers(&p, ProviderType::ClaudeCode, &http::HeaderMap::new());
        assert_eq!(h["authorization"], "Bearer oauth-token");
        assert_eq!(h["x-app"], "cli");
        let mut p = provider("codex", "");
        p.headers_profile = "codex".into();
        let h = headers(&p, ProviderType::Codex, &http::HeaderMap::new());
        assert_eq!(h["chatgpt-account-id"], "acct-1");
        assert_eq!(h["originator"], "codex_cli_rs");
    }
}
