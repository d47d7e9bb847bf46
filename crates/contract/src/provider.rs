//! Provider types (SPEC §8): the canonical names, how input is normalised, and what
//! each type needs.

use std::fmt;
use std::str::FromStr;

/// Every upstream kind ez-api knows. The string forms are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderType {
    OpenAi,
    /// Any OpenAI-compatible endpoint.
    Compatible,
    Azure,
    Anthropic,
    Claude,
    Gemini,
    Google,
    AiStudio,
    Vertex,
    VertexExpress,
    ClaudeCode,
    Codex,
    GeminiCli,
    Antigravity,
}

pub const ALL_PROVIDER_TYPES: [ProviderType; 14] = [
    ProviderType::OpenAi,
    ProviderType::Compatible,
    ProviderType::Azure,
    ProviderType::Anthropic,
    ProviderType::Claude,
    ProviderType::Gemini,
    ProviderType::Google,
    ProviderType::AiStudio,
    ProviderType::Vertex,
    ProviderType::VertexExpress,
    ProviderType::ClaudeCode,
    ProviderType::Codex,
    ProviderType::GeminiCli,
    ProviderType::Antigravity,
];

/// The wire format a provider type speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    OpenAi,
    Anthropic,
    Gemini,
}

impl ProviderType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderType::OpenAi => "openai",
            ProviderType::Compatible => "compatible",
            ProviderType::Azure => "azure",
            ProviderType::Anthropic => "anthropic",
            ProviderType::Claude => "claude",
            ProviderType::Gemini => "gemini",
            ProviderType::Google => "google",
            ProviderType::AiStudio => "aistudio",
            ProviderType::Vertex => "vertex",
            ProviderType::VertexExpress => "vertex-express",
            ProviderType::ClaudeCode => "claude-code",
            ProviderType::Codex => "codex",
            ProviderType::GeminiCli => "gemini-cli",
            ProviderType::Antigravity => "antigravity",
        }
    }

    /// The Google family: `gemini`, `google`, `aistudio`, `vertex`, `vertex-express`.
    pub fn is_google_family(self) -> bool {
        matches!(
            self,
            ProviderType::Gemini
                | ProviderType::Google
                | ProviderType::AiStudio
                | ProviderType::Vertex
                | ProviderType::VertexExpress
        )
    }

    /// `vertex` and `vertex-express`: `google_location` defaults to `global`.
    pub fn is_vertex_family(self) -> bool {
        matches!(self, ProviderType::Vertex | ProviderType::VertexExpress)
    }

    /// Whether the upstream needs `google_project` (Vertex with service credentials; the
    /// API-key "express" mode does not).
    pub fn requires_google_project(self) -> bool {
        self == ProviderType::Vertex
    }

    /// Subscription accounts authenticated by OAuth tokens, not API keys.
    pub fn is_subscription(self) -> bool {
        matches!(
            self,
            ProviderType::ClaudeCode
                | ProviderType::Codex
                | ProviderType::GeminiCli
                | ProviderType::Antigravity
        )
    }

    /// The official endpoint, when the type has one; `compatible` and `azure` need a
    /// `base_url`.
    pub fn official_base_url(self) -> Option<&'static str> {
        match self {
            ProviderType::OpenAi => Some("https://api.openai.com/v1"),
            ProviderType::Anthropic | ProviderType::Claude | ProviderType::ClaudeCode => {
                Some("https://api.anthropic.com")
            }
            ProviderType::Gemini | ProviderType::Google | ProviderType::AiStudio => {
                Some("https://generativelanguage.googleapis.com")
            }
            ProviderType::Vertex | ProviderType::VertexExpress => Some("https://aiplatform.googleapis.com"),
            ProviderType::Codex => Some("https://chatgpt.com/backend-api/codex"),
            ProviderType::GeminiCli | ProviderType::Antigravity => {
                Some("https://cloudcode-pa.googleapis.com")
            }
            ProviderType::Compatible | ProviderType::Azure => None,
        }
    }

    pub fn wire_format(self) -> WireFormat {
        match self {
            ProviderType::OpenAi | ProviderType::Compatible | ProviderType::Azure | ProviderType::Codex => {
                WireFormat::OpenAi
            }
            ProviderType::Anthropic | ProviderType::Claude | ProviderType::ClaudeCode => {
                WireFormat::Anthropic
            }
            _ => WireFormat::Gemini,
        }
    }
}

impl FromStr for ProviderType {
    type Err = String;

    /// Trims, lower-cases and reads `_` as `-`; anything else unknown is an error.
    fn from_str(input: &str) -> Result<ProviderType, String> {
        let normalised = input.trim().to_ascii_lowercase().replace('_', "-");
        ALL_PROVIDER_TYPES
            .into_iter()
            .find(|t| t.as_str() == normalised)
            .ok_or_else(|| {
                let known: Vec<&str> = ALL_PROVIDER_TYPES.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown provider type {input:?}; expected one of: {}",
                    known.join(", ")
                )
            })
    }
}

impl fmt::Display for ProviderType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a `vertex` credential's key is a service-account key document (JSON): its
/// access tokens come from the control plane's token refresh. An API key or access token
/// never starts with `{`.
pub fn is_service_account_key(api_key: &str) -> bool {
    api_key.trim_start().starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_normalised() {
        assert_eq!(" OpenAI ".parse(), Ok(ProviderType::OpenAi));
        assert_eq!("vertex_express".parse(), Ok(ProviderType::VertexExpress));
        assert_eq!("Claude_Code".parse(), Ok(ProviderType::ClaudeCode));
        assert_eq!("GEMINI-CLI".parse(), Ok(ProviderType::GeminiCli));
        assert!("openai2".parse::<ProviderType>().is_err());
        assert!("".parse::<ProviderType>().is_err());
    }

    #[test]
    fn every_type_round_trips_and_is_lower_case_hyphenated() {
        for t in ALL_PROVIDER_TYPES {
            assert_eq!(t.as_str().parse(), Ok(t));
            assert!(t.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'-'));
        }
    }

    #[test]
    fn families() {
        let google: Vec<_> = ALL_PROVIDER_TYPES
            .into_iter()
            .filter(|t| t.is_google_family())
            .collect();
        assert_eq!(google.len(), 5);
        assert!(ProviderType::Vertex.is_vertex_family() && ProviderType::VertexExpress.is_vertex_family());
        assert!(!ProviderType::Gemini.is_vertex_family());
        let subscriptions = ALL_PROVIDER_TYPES
            .into_iter()
            .filter(|t| t.is_subscription())
            .count();
        assert_eq!(subscriptions, 4);
        assert!(ProviderType::Compatible.official_base_url().is_none());
        assert!(ProviderType::Azure.official_base_url().is_none());
    }
}
