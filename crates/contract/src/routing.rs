//! The routing snapshot (SPEC §7): `config:providers`, `config:bindings`, `meta:models`
//! and their `meta:*_meta` hashes. Values are JSON documents; field names and types follow
//! `shared/contract/*.json` and are pinned by golden files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::redact::{MaskedUrl, Redacted, RedactedHeaders};

/// `config:providers` field = credential id; one per credential (APIKey). Its `Debug`
/// redacts the secrets (see the impl below).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderSnapshot {
    pub id: i64,
    /// `{group name}#{id}`.
    pub name: String,
    #[serde(rename = "type")]
    pub provider_type: String,
    /// The endpoint to call: the group's `base_url`, else the type's official one.
    pub base_url: String,
    pub api_key: String,
    pub google_project: String,
    pub google_location: String,
    pub group_id: i64,
    /// The routing group of the provider group.
    pub group: String,
    /// Upstream models this credential serves.
    pub models: Vec<String>,
    /// `active`, `auto_disabled` or `manual_disabled`; only `active` credentials of active
    /// groups are routable.
    pub status: String,
    pub auto_ban: bool,
    pub weight: i64,
    /// Unix seconds; 0 = not banned. A credential is skipped while it is in the future.
    pub ban_until: i64,
    pub ban_reason: String,
    /// Unix seconds; 0 = not cooling. An upstream announced an exhausted usage window:
    /// the credential is skipped until then (routing state, not a ban).
    #[serde(default)]
    pub cooling_until: i64,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds when `access_token` expires; 0 = unknown.
    pub expires_at: i64,
    pub account_id: String,
    pub project_id: String,
    pub static_headers: BTreeMap<String, String>,
    pub headers_profile: String,
}

/// Every field, with the credential's secrets redacted and the URL masked: a snapshot
/// (or anything holding one) may end up in a log line.
impl std::fmt::Debug for ProviderSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSnapshot")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("provider_type", &self.provider_type)
            .field("base_url", &MaskedUrl(&self.base_url))
            .field("api_key", &Redacted(&self.api_key))
            .field("google_project", &self.google_project)
            .field("google_location", &self.google_location)
            .field("group_id", &self.group_id)
            .field("group", &self.group)
            .field("models", &self.models)
            .field("status", &self.status)
            .field("auto_ban", &self.auto_ban)
            .field("weight", &self.weight)
            .field("ban_until", &self.ban_until)
            .field("ban_reason", &self.ban_reason)
            .field("cooling_until", &self.cooling_until)
            .field("access_token", &Redacted(&self.access_token))
            .field("refresh_token", &Redacted(&self.refresh_token))
            .field("expires_at", &self.expires_at)
            .field("account_id", &self.account_id)
            .field("project_id", &self.project_id)
            .field("static_headers", &RedactedHeaders(&self.static_headers))
            .field("headers_profile", &self.headers_profile)
            .finish()
    }
}

/// Why a candidate has no upstream.
pub mod candidate_error {
    /// No usable credential serves a matching model.
    pub const NO_PROVIDER: &str = "no_provider";
    /// The selector is invalid or matches several models.
    pub const CONFIG_ERROR: &str = "config_error";
}

/// One bound group of a binding, with its selector resolved per credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateSnapshot {
    /// The binding this candidate comes from, so an error can point at
    /// `GET /admin/bindings/{id}`; 0 in entries written before it existed.
    #[serde(default)]
    pub binding_id: i64,
    pub group_id: i64,
    pub route_group: String,
    pub weight: i64,
    pub selector_type: String,
    pub selector_value: String,
    pub status: String,
    /// Empty when the candidate routes; `no_provider` or `config_error` otherwise.
    pub error: String,
    /// Human explanation of `error` and how to fix it: the resolution's problems joined
    /// with `; `. Also set when some credentials of a routing candidate were left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error_detail: String,
    /// Credential id (decimal string) → upstream model to send.
    pub upstreams: BTreeMap<String, String>,
}

/// `config:bindings` field = `namespace.public_model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingSnapshot {
    pub namespace: String,
    pub public_model: String,
    pub status: String,
    pub updated_at: i64,
    pub candidates: Vec<CandidateSnapshot>,
}

/// `meta:models` field = `namespace.public_model`: what clients can expect of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSnapshot {
    /// `namespace.public_model`.
    pub name: String,
    pub kind: String,
    /// Tokens; 0 = unknown (the reference shape has a number here, never null).
    pub context_window: i64,
    pub supports_vision: bool,
    pub supports_functions: bool,
    pub supports_tool_choice: bool,
    pub supports_fim: bool,
    pub supports_reasoning: bool,
    pub supports_json_output: bool,
    /// Tokens; 0 = unknown.
    pub max_output_tokens: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_price_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_price_per_mtok: Option<f64>,
}

/// The field name of a binding or model entry.
pub fn route_key(namespace: &str, public_model: &str) -> String {
    format!("{namespace}.{public_model}")
}

/// SHA-256 hex over the entries sorted by field, each as `field\npayload\n`.
pub fn checksum<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut sorted: Vec<(&str, &str)> = entries.into_iter().collect();
    sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (field, payload) in sorted {
        hasher.update(field.as_bytes());
        hasher.update(b"\n");
        hasher.update(payload.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_snapshot_debug_shows_no_secret() {
        let snapshot = ProviderSnapshot {
            id: 7,
            name: "openai#7".into(),
            provider_type: "openai".into(),
            base_url: "https://proxy-user:proxy-pass-0001@proxy.example.com/v1?key=url-key-0002".into(),
            api_key: "sk-upstream-0003".into(),
            google_project: String::new(),
            google_location: String::new(),
            group_id: 1,
            group: "default".into(),
            models: vec!["gpt-4o".into()],
            status: "active".into(),
            auto_ban: true,
            weight: 1,
            ban_until: 0,
            ban_reason: String::new(),
            cooling_until: 0,
            access_token: "oauth-access-0004".into(),
            refresh_token: "oauth-refresh-0005".into(),
            expires_at: 0,
            account_id: "acct-1".into(),
            project_id: String::new(),
            static_headers: [("x-custom-auth".to_owned(), "header-secret-0006".to_owned())].into(),
            headers_profile: String::new(),
        };
        let shown = format!("{snapshot:?} {:?}", vec![Some(snapshot.clone())]);
        for secret in [
            "proxy-pass-0001",
            "url-key-0002",
            "sk-upstream-0003",
            "oauth-access-0004",
            "oauth-refresh-0005",
            "header-secret-0006",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for visible in [
            "openai#7",
            "proxy.example.com/v1",
            "x-custom-auth",
            "acct-1",
            "gpt-4o",
        ] {
            assert!(shown.contains(visible), "{visible} missing from {shown}");
        }
    }

    #[test]
    fn checksum_follows_the_rule_and_ignores_order() {
        let a = checksum([("2", "b"), ("1", "a")]);
        let b = checksum([("1", "a"), ("2", "b")]);
        assert_eq!(a, b);
        assert_eq!(a, hex::encode(Sha256::digest(b"1\na\n2\nb\n")));
        assert_ne!(a, checksum([("1", "a"), ("2", "c")]));
        assert_eq!(checksum([]), hex::encode(Sha256::digest(b"")));
    }

    #[test]
    fn route_keys_join_with_a_dot() {
        assert_eq!(route_key("default", "gpt-4.1"), "default.gpt-4.1");
    }
}
