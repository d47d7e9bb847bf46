//! One-call provider set-up: a group with its official endpoint and default models (or
//! any OpenAI-compatible endpoint), and one credential per key.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use ez_contract::redact::{MaskedUrl, RedactedHeaders};
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiJson;
use crate::auth::AdminAuth;
use crate::error::{ApiResult, ErrorEnvelope};
use crate::providers::{self, CreateGroupRequest, ProviderError, ProviderSetup};
use crate::state::AppState;

/// `Debug` redacts the keys (see `redacted_request_debug!`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresetRequest {
    /// `openai`, `anthropic` or `gemini`.
    pub preset: String,
    /// One credential is created per key.
    pub api_keys: Vec<String>,
    /// Group name (default: the preset's name).
    pub name: Option<String>,
    /// Models (default: the preset's well-known models).
    pub models: Option<Vec<String>>,
    /// One weight per key (default 1 each).
    pub weights: Option<Vec<i64>>,
    pub route_group: Option<String>,
}

/// `Debug` redacts the keys and masks the URL.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomRequest {
    pub name: String,
    /// Any OpenAI-compatible endpoint, e.g. `http://vllm:8000/v1`.
    pub base_url: String,
    pub api_keys: Vec<String>,
    pub models: Option<Vec<String>>,
    pub weights: Option<Vec<i64>>,
    pub static_headers: Option<BTreeMap<String, String>>,
    pub route_group: Option<String>,
}

/// The shortcut requests carry upstream keys in plain text: their `Debug` shows how many
/// keys there are, never the keys, and header values redacted.
impl std::fmt::Debug for PresetRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresetRequest")
            .field("preset", &self.preset)
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .field("name", &self.name)
            .field("models", &self.models)
            .field("weights", &self.weights)
            .field("route_group", &self.route_group)
            .finish()
    }
}

impl std::fmt::Debug for CustomRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomRequest")
            .field("name", &self.name)
            .field("base_url", &MaskedUrl(&self.base_url))
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .field("models", &self.models)
            .field("weights", &self.weights)
            .field(
                "static_headers",
                &self.static_headers.as_ref().map(RedactedHeaders),
            )
            .field("route_group", &self.route_group)
            .finish()
    }
}

/// Creates a group for an official provider, with its keys.
#[utoipa::path(post, path = "/admin/providers/preset", tag = "admin", security(("bearer" = [])),
    request_body = PresetRequest,
    responses((status = 201, body = ProviderSetup), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_preset_provider(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<PresetRequest>,
) -> ApiResult<(StatusCode, Json<ProviderSetup>)> {
    let (kind, default_models) = providers::preset(&req.preset).ok_or(ProviderError::UnknownPreset)?;
    let group = CreateGroupRequest {
        name: req.name.unwrap_or_else(|| kind.as_str().to_owned()),
        provider_type: kind.as_str().to_owned(),
        // Stored explicitly so the answer (and every later GET) shows the endpoint used.
        base_url: kind.official_base_url().map(str::to_owned),
        google_project: None,
        google_location: None,
        models: Some(
            req.models
                .unwrap_or_else(|| default_models.iter().map(|m| (*m).to_owned()).collect()),
        ),
        status: None,
        static_headers: None,
        headers_profile: None,
        route_group: req.route_group,
        health_check: None,
    };
    let setup = providers::create_setup(&state, group, &req.api_keys, req.weights.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(setup)))
}

/// Creates a group for any OpenAI-compatible endpoint, with its keys.
#[utoipa::path(post, path = "/admin/providers/custom", tag = "admin", security(("bearer" = [])),
    request_body = CustomRequest,
    responses((status = 201, body = ProviderSetup), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_custom_provider(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CustomRequest>,
) -> ApiResult<(StatusCode, Json<ProviderSetup>)> {
    let group = CreateGroupRequest {
        name: req.name,
        provider_type: "compatible".to_owned(),
        base_url: Some(req.base_url),
        google_project: None,
        google_location: None,
        models: req.models,
        status: None,
        static_headers: req.static_headers,
        headers_profile: None,
        route_group: req.route_group,
        health_check: None,
    };
    let setup = providers::create_setup(&state, group, &req.api_keys, req.weights.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(setup)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortcut_requests_debug_without_secrets() {
        let preset = PresetRequest {
            preset: "openai".into(),
            api_keys: vec!["sk-preset-secret-0001".into()],
            name: None,
            models: None,
            weights: None,
            route_group: None,
        };
        let custom = CustomRequest {
            name: "vllm".into(),
            base_url: "https://u:url-secret-0002@vllm.internal/v1?key=url-secret-0003".into(),
            api_keys: vec!["sk-custom-secret-0004".into()],
            models: None,
            weights: None,
            static_headers: Some([("x-api-key".to_owned(), "header-secret-0005".to_owned())].into()),
            route_group: None,
        };
        let shown = format!("{preset:?} {custom:?}");
        for secret in [
            "secret-0001",
            "secret-0002",
            "secret-0003",
            "secret-0004",
            "secret-0005",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("[1 redacted]") && shown.contains("vllm.internal/v1"),
            "{shown}"
        );
    }
}
