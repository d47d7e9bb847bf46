//! Provider groups, credentials and bindings: every rule of SPEC §3 and §8 in one place,
//! used by the CRUD handlers, the preset/custom shortcuts and import alike. Each change is
//! committed to the database first, then the affected routing entries are rewritten.

use std::collections::{BTreeMap, HashMap};

use ez_contract::SecretToken;
use ez_contract::provider::ProviderType;
use ez_contract::selector::SelectorType;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::routing::{self, CandidateResolution};
use crate::state::AppState;
use crate::store::{ApiKey, ApiKeyWrite, Binding, BindingWrite, GroupWrite, ProviderGroup};
use crate::sync::RoutingChange;
use crate::validation::{self, double_option};

/// Whether a static header carries a credential (its value is then a secret: masked in
/// responses and left out of exports without secrets).
pub fn is_secret_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "authorization"
        || name == "proxy-authorization"
        || name == "cookie"
        || ["key", "token", "secret", "auth", "password"]
            .iter()
            .any(|part| name.contains(part))
}

/// `static_headers` with credential values masked.
pub fn masked_headers(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(name, value)| {
            let shown = if is_secret_header(name) {
                SecretToken::from_plaintext(value.clone()).masked()
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect()
}

/// A group as the API shows it: credential header values masked.
pub fn group_view(mut group: ProviderGroup) -> ProviderGroup {
    group.static_headers = masked_headers(&group.static_headers);
    group.base_url = crate::masking::masked_base_url(&group.base_url);
    group
}

/// Puts back secret header values a client sent in their masked form (a read-modify-write
/// round trip, or an export without secrets); a masked value with nothing to restore is
/// refused rather than stored.
pub fn restore_masked_headers(
    headers: &mut BTreeMap<String, String>,
    current: Option<&BTreeMap<String, String>>,
) -> ApiResult<()> {
    for (name, value) in headers.iter_mut() {
        if !is_secret_header(name) || !value.starts_with("****") {
            continue;
        }
        let original = current
            .and_then(|c| c.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v)
            .filter(|v| SecretToken::from_plaintext((*v).clone()).masked() == *value);
        match original {
            Some(original) => *value = original.clone(),
            None => {
                return Err(ApiError::invalid_field(
                    "static_headers",
                    format!(
                        "{name} holds a masked value; send the real one (or export with include_secrets)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// For partial updates: each `$field` the request sent replaces the write's value.
macro_rules! take_fields {
    ($req:ident => $write:ident; $($field:ident),+ $(,)?) => {
        $( if let Some(v) = $req.$field { $write.$field = v; } )+
    };
}

pub const GROUP_STATUSES: &[&str] = &["active", "disabled"];
pub const KEY_STATUSES: &[&str] = &["active", "auto_disabled", "manual_disabled"];
pub const BINDING_STATUSES: &[&str] = &["active", "disabled"];
/// Header sets the data plane knows how to send (the official CLIs' headers).
pub const HEADERS_PROFILES: &[&str] = &["", "claude-code", "codex", "gemini-cli", "antigravity"];
/// Headers a group may not set: they belong to the HTTP connection, not the request.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];
const MAX_MODELS: usize = 2000;
const MAX_MODEL_NAME: usize = 256;
const MAX_SECRET: usize = 16 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// Unique; 1–64 of `A-Za-z0-9_-`.
    pub name: String,
    /// Provider type (SPEC §8); trimmed, case-insensitive, `_` read as `-`.
    #[serde(rename = "type")]
    pub provider_type: String,
    /// Required for `compatible` and `azure`; else defaults to the official endpoint.
    pub base_url: Option<String>,
    pub google_project: Option<String>,
    /// Defaults to `global` for the Vertex family.
    pub google_location: Option<String>,
    pub models: Option<Vec<String>>,
    /// `active` (default) or `disabled`.
    pub status: Option<String>,
    pub static_headers: Option<BTreeMap<String, String>>,
    pub headers_profile: Option<String>,
    /// Routing group of the credentials (default `default`).
    pub route_group: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGroupRequest {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub provider_type: Option<String>,
    pub base_url: Option<String>,
    pub google_project: Option<String>,
    pub google_location: Option<String>,
    pub models: Option<Vec<String>>,
    pub status: Option<String>,
    pub static_headers: Option<BTreeMap<String, String>>,
    pub headers_profile: Option<String>,
    pub route_group: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub group_id: i64,
    /// The upstream API key (not needed for subscription types, which use OAuth tokens).
    pub api_key: Option<String>,
    /// ≥ 1 (default 1).
    pub weight: Option<i64>,
    /// `active` (default), `auto_disabled` or `manual_disabled`.
    pub status: Option<String>,
    /// Ban automatically on 401/403/quota errors (default true).
    pub auto_ban: Option<bool>,
    pub ban_reason: Option<String>,
    /// Unix seconds.
    pub ban_until: Option<i64>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    /// Unix seconds when `access_token` expires.
    pub expires_at: Option<i64>,
    pub account_id: Option<String>,
    pub project_id: Option<String>,
    /// Models of this credential; empty = the group's.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApiKeyRequest {
    pub group_id: Option<i64>,
    pub api_key: Option<String>,
    pub weight: Option<i64>,
    pub status: Option<String>,
    pub auto_ban: Option<bool>,
    pub ban_reason: Option<String>,
    /// `null` lifts the ban.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable)]
    pub ban_until: Option<Option<i64>>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable)]
    pub expires_at: Option<Option<i64>>,
    pub account_id: Option<String>,
    pub project_id: Option<String>,
    pub models: Option<Vec<String>>,
}

/// A credential as the API shows it: secrets masked to their last 4 characters.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: i64,
    pub group_id: i64,
    pub api_key: String,
    pub weight: i64,
    pub status: String,
    pub auto_ban: bool,
    pub ban_reason: String,
    pub ban_until: Option<i64>,
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: Option<i64>,
    pub account_id: String,
    pub project_id: String,
    pub models: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> ApiKeyView {
        ApiKeyView {
            id: k.id,
            group_id: k.group_id,
            api_key: k.api_key.masked(),
            weight: k.weight,
            status: k.status.clone(),
            auto_ban: k.auto_ban,
            ban_reason: k.ban_reason.clone(),
            ban_until: k.ban_until,
            access_token: k.access_token.masked(),
            refresh_token: k.refresh_token.masked(),
            expires_at: k.expires_at,
            account_id: k.account_id.clone(),
            project_id: k.project_id.clone(),
            models: k.models.clone(),
            created_at: k.created_at,
            updated_at: k.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBindingRequest {
    pub namespace: String,
    pub public_model: String,
    pub group_id: i64,
    /// ≥ 1 (default 1).
    pub weight: Option<i64>,
    /// `exact` (default), `regex` or `normalize_exact`.
    pub selector_type: Option<String>,
    /// Empty (default) = the public model.
    pub selector_value: Option<String>,
    pub status: Option<String>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBindingRequest {
    pub namespace: Option<String>,
    pub public_model: Option<String>,
    pub group_id: Option<i64>,
    pub weight: Option<i64>,
    pub selector_type: Option<String>,
    pub selector_value: Option<String>,
    pub status: Option<String>,
}

/// A binding with how its selector resolves right now.
#[derive(Debug, Serialize, ToSchema)]
pub struct BindingView {
    #[serde(flatten)]
    pub binding: Binding,
    pub resolution: CandidateResolution,
}

fn one_of(field: &str, value: &str, allowed: &[&str]) -> ApiResult<String> {
    let value = value.trim();
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid_field(
            field,
            format!("must be one of: {}", allowed.join(", ")),
        ))
    }
}

/// Upstream model names: trimmed, non-empty, no whitespace, de-duplicated in order.
pub fn model_list(field: &str, models: &[String]) -> ApiResult<Vec<String>> {
    if models.len() > MAX_MODELS {
        return Err(ApiError::invalid_field(
            field,
            format!("at most {MAX_MODELS} models"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(models.len());
    for m in models {
        let m = m.trim();
        if m.is_empty() || m.len() > MAX_MODEL_NAME || m.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::invalid_field(
                field,
                format!("{m:?} is not a model name"),
            ));
        }
        if !out.iter().any(|o| o == m) {
            out.push(m.to_owned());
        }
    }
    Ok(out)
}

fn base_url(value: &str) -> ApiResult<String> {
    let value = value.trim().trim_end_matches('/');
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.len() > "https://".len()
        && value.len() <= 2048
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(ApiError::invalid_field(
            "base_url",
            "must be an http:// or https:// URL",
        ));
    }
    Ok(value.to_owned())
}

fn headers(map: &BTreeMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    if map.len() > 64 {
        return Err(ApiError::invalid_field("static_headers", "at most 64 headers"));
    }
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let lower = name.trim().to_ascii_lowercase();
        let token = !lower.is_empty()
            && lower.len() <= 128
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(ApiError::invalid_field(
                "static_headers",
                format!("{name:?} is not a header name"),
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(ApiError::invalid_field(
                "static_headers",
                format!("{lower} is managed by the gateway"),
            ));
        }
        if value.len() > 8192 || value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(ApiError::invalid_field(
                "static_headers",
                format!("the value of {lower} is not a header value"),
            ));
        }
        out.insert(lower, value.clone());
    }
    Ok(out)
}

fn text(field: &str, value: &str, max: usize) -> ApiResult<String> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters without control characters"),
        ));
    }
    Ok(value.trim().to_owned())
}

pub(crate) fn secret(field: &str, value: &str) -> ApiResult<SecretToken> {
    let value = value.trim();
    if value.len() > MAX_SECRET || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        // The message never repeats the value.
        return Err(ApiError::invalid_field(field, "is not a valid credential"));
    }
    Ok(SecretToken::from_plaintext(value))
}

fn unix_time(field: &str, value: i64) -> ApiResult<i64> {
    if !(0..=253_402_300_799).contains(&value) {
        return Err(ApiError::invalid_field(field, "must be Unix seconds"));
    }
    Ok(value)
}

fn weight(value: i64) -> ApiResult<i64> {
    if !(1..=1_000_000).contains(&value) {
        return Err(ApiError::invalid_field("weight", "must be between 1 and 1000000"));
    }
    Ok(value)
}

/// Checks a complete group write: type, endpoint, Google fields, lists, headers.
pub(crate) fn validate_group(mut w: GroupWrite) -> ApiResult<GroupWrite> {
    w.name = validation::identifier("name", &w.name)?;
    let kind: ProviderType = w
        .provider_type
        .parse()
        .map_err(|e: String| ApiError::unprocessable("unknown_provider_type", e))?;
    w.provider_type = kind.as_str().to_owned();
    w.base_url = if w.base_url.trim().is_empty() {
        String::new()
    } else {
        base_url(&w.base_url)?
    };
    if w.base_url.is_empty() && kind.official_base_url().is_none() {
        return Err(ApiError::unprocessable(
            "base_url_required",
            format!("provider type {kind} has no official endpoint; base_url is required"),
        ));
    }
    w.google_project = text("google_project", &w.google_project, 128)?;
    w.google_location = text("google_location", &w.google_location, 64)?;
    if kind.is_vertex_family() && w.google_location.is_empty() {
        w.google_location = "global".to_owned();
    }
    if kind.requires_google_project() && w.google_project.is_empty() {
        return Err(ApiError::unprocessable(
            "google_project_required",
            format!("provider type {kind} needs google_project"),
        ));
    }
    w.models = model_list("models", &w.models)?;
    w.status = one_of("status", &w.status, GROUP_STATUSES)?;
    w.static_headers = headers(&w.static_headers)?;
    w.headers_profile = one_of("headers_profile", &w.headers_profile, HEADERS_PROFILES)?;
    w.route_group = validation::identifier("route_group", &w.route_group)?;
    Ok(w)
}

/// Checks a complete credential write against its group.
async fn validate_api_key(state: &AppState, w: ApiKeyWrite) -> ApiResult<(ApiKeyWrite, ProviderGroup)> {
    let group = match state.store.get_group(w.group_id).await {
        Ok(group) => group,
        Err(crate::store::StoreError::NotFound(_)) => {
            return Err(ApiError::unprocessable(
                "group_not_found",
                format!("provider group {} does not exist", w.group_id),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let kind: ProviderType = group
        .provider_type
        .parse()
        .map_err(|e: String| ApiError::internal(e))?;
    Ok((check_api_key(w, kind)?, group))
}

/// The rules of a credential for a group of type `kind`.
pub(crate) fn check_api_key(mut w: ApiKeyWrite, kind: ProviderType) -> ApiResult<ApiKeyWrite> {
    if kind.is_subscription() {
        if w.access_token.is_empty() && w.refresh_token.is_empty() {
            return Err(ApiError::unprocessable(
                "oauth_token_required",
                format!("{kind} credentials need access_token or refresh_token"),
            ));
        }
    } else if w.api_key.is_empty() {
        return Err(ApiError::unprocessable(
            "api_key_required",
            format!("{kind} credentials need api_key"),
        ));
    }
    w.weight = weight(w.weight)?;
    w.status = one_of("status", &w.status, KEY_STATUSES)?;
    w.ban_reason = text("ban_reason", &w.ban_reason, 512)?;
    w.ban_until = w.ban_until.map(|t| unix_time("ban_until", t)).transpose()?;
    w.expires_at = w.expires_at.map(|t| unix_time("expires_at", t)).transpose()?;
    w.account_id = text("account_id", &w.account_id, 256)?;
    w.project_id = text("project_id", &w.project_id, 256)?;
    w.models = model_list("models", &w.models)?;
    Ok(w)
}

async fn validate_binding(state: &AppState, w: BindingWrite) -> ApiResult<BindingWrite> {
    let w = check_binding(w)?;
    if !state
        .store
        .missing_namespaces(std::slice::from_ref(&w.namespace))
        .await?
        .is_empty()
    {
        return Err(ApiError::unprocessable(
            "namespace_not_found",
            format!("namespace {:?} does not exist", w.namespace),
        ));
    }
    match state.store.get_group(w.group_id).await {
        Ok(_) => Ok(w),
        Err(crate::store::StoreError::NotFound(_)) => Err(ApiError::unprocessable(
            "group_not_found",
            format!("provider group {} does not exist", w.group_id),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The rules of a binding that need no database.
pub(crate) fn check_binding(mut w: BindingWrite) -> ApiResult<BindingWrite> {
    w.namespace = validation::identifier("namespace", &w.namespace)?;
    let public = w.public_model.trim();
    if public.is_empty()
        || public.len() > MAX_MODEL_NAME
        || public.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::invalid_field(
            "public_model",
            "must be a model name without spaces",
        ));
    }
    w.public_model = public.to_owned();
    w.weight = weight(w.weight)?;
    let kind: SelectorType = w
        .selector_type
        .parse()
        .map_err(|e: String| ApiError::invalid_field("selector_type", e))?;
    w.selector_type = kind.as_str().to_owned();
    w.selector_value = text("selector_value", &w.selector_value, 512)?;
    if kind == SelectorType::Regex {
        let pattern = if w.selector_value.is_empty() {
            &w.public_model
        } else {
            &w.selector_value
        };
        if let Err(e) = regex::Regex::new(pattern) {
            return Err(ApiError::unprocessable(
                "invalid_selector",
                format!("selector_value is not a valid regex: {e}"),
            ));
        }
    }
    w.status = one_of("status", &w.status, BINDING_STATUSES)?;
    Ok(w)
}

pub async fn create_group(state: &AppState, req: CreateGroupRequest) -> ApiResult<ProviderGroup> {
    let write = validate_group(GroupWrite {
        name: req.name,
        provider_type: req.provider_type,
        base_url: req.base_url.unwrap_or_default(),
        google_project: req.google_project.unwrap_or_default(),
        google_location: req.google_location.unwrap_or_default(),
        models: req.models.unwrap_or_default(),
        status: req.status.unwrap_or_else(|| "active".into()),
        static_headers: req.static_headers.unwrap_or_default(),
        headers_profile: req.headers_profile.unwrap_or_default(),
        route_group: req.route_group.unwrap_or_else(|| "default".into()),
    })?;
    let group = state.store.create_group(&write).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            groups: vec![group.id],
            ..Default::default()
        })
        .await;
    Ok(group)
}

pub async fn update_group(state: &AppState, id: i64, req: UpdateGroupRequest) -> ApiResult<ProviderGroup> {
    let current = state.store.get_group(id).await?;
    let mut w = GroupWrite::from(&current);
    take_fields!(req => w;
        name,
        provider_type,
        base_url,
        google_project,
        google_location,
        models,
        status,
        static_headers,
        headers_profile,
        route_group
    );
    let mut write = validate_group(w)?;
    restore_masked_headers(&mut write.static_headers, Some(&current.static_headers))?;
    crate::masking::restore_masked_base_url(&mut write.base_url, Some(&current.base_url))?;
    if write.provider_type != current.provider_type {
        // The credentials must suit the new type, as they would if created in it.
        let kind: ProviderType = write
            .provider_type
            .parse()
            .map_err(|e: String| ApiError::internal(e))?;
        for key in state.store.api_keys_of_group(id).await? {
            check_api_key(ApiKeyWrite::from(&key), kind).map_err(|e| {
                ApiError::new(
                    e.status,
                    e.code,
                    format!("credential {} of this group: {}", key.id, e.message),
                )
            })?;
        }
    }
    let group = state.store.update_group(id, &write).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            groups: vec![id],
            ..Default::default()
        })
        .await;
    Ok(group)
}

pub async fn delete_group(state: &AppState, id: i64) -> ApiResult<()> {
    let removed = state.store.delete_group(id).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(message) => ApiError::conflict("group_in_use", message),
        other => other.into(),
    })?;
    state
        .sync
        .routing_changed(RoutingChange {
            credentials: removed,
            ..Default::default()
        })
        .await;
    Ok(())
}

pub async fn create_api_key(state: &AppState, req: CreateApiKeyRequest) -> ApiResult<ApiKey> {
    let write = ApiKeyWrite {
        group_id: req.group_id,
        api_key: secret("api_key", req.api_key.as_deref().unwrap_or_default())?,
        weight: req.weight.unwrap_or(1),
        status: req.status.unwrap_or_else(|| "active".into()),
        auto_ban: req.auto_ban.unwrap_or(true),
        ban_reason: req.ban_reason.unwrap_or_default(),
        ban_until: req.ban_until,
        access_token: secret("access_token", req.access_token.as_deref().unwrap_or_default())?,
        refresh_token: secret("refresh_token", req.refresh_token.as_deref().unwrap_or_default())?,
        expires_at: req.expires_at,
        account_id: req.account_id.unwrap_or_default(),
        project_id: req.project_id.unwrap_or_default(),
        models: req.models.unwrap_or_default(),
        revision: 0,
    };
    let (write, _) = validate_api_key(state, write).await?;
    let key = state.store.create_api_key(&write).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            credentials: vec![key.id],
            ..Default::default()
        })
        .await;
    Ok(key)
}

pub async fn update_api_key(state: &AppState, id: i64, req: UpdateApiKeyRequest) -> ApiResult<ApiKey> {
    let current = state.store.get_api_key(id).await?;
    let mut w = ApiKeyWrite::from(&current);
    if let Some(v) = req.group_id {
        w.group_id = v;
    }
    if let Some(v) = &req.api_key {
        w.api_key = secret("api_key", v)?;
    }
    if let Some(v) = &req.access_token {
        w.access_token = secret("access_token", v)?;
    }
    if let Some(v) = &req.refresh_token {
        w.refresh_token = secret("refresh_token", v)?;
    }
    take_fields!(req => w;
        weight, status, auto_ban, ban_reason, ban_until, expires_at, account_id, project_id, models
    );
    let (write, _) = validate_api_key(state, w).await?;
    let key = state.store.update_api_key(id, &write).await?;
    let mut change = RoutingChange {
        credentials: vec![id],
        ..Default::default()
    };
    if current.group_id != key.group_id {
        change.groups.push(current.group_id);
    }
    state.sync.routing_changed(change).await;
    Ok(key)
}

pub async fn delete_api_key(state: &AppState, id: i64) -> ApiResult<()> {
    let current = state.store.get_api_key(id).await?;
    state.store.delete_api_key(id).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            credentials: vec![id],
            groups: vec![current.group_id],
            ..Default::default()
        })
        .await;
    Ok(())
}

pub async fn create_binding(state: &AppState, req: CreateBindingRequest) -> ApiResult<Binding> {
    let write = validate_binding(
        state,
        BindingWrite {
            namespace: req.namespace,
            public_model: req.public_model,
            group_id: req.group_id,
            weight: req.weight.unwrap_or(1),
            selector_type: req.selector_type.unwrap_or_else(|| "exact".into()),
            selector_value: req.selector_value.unwrap_or_default(),
            status: req.status.unwrap_or_else(|| "active".into()),
        },
    )
    .await?;
    let binding = state.store.create_binding(&write).await?;
    let routes = vec![(binding.namespace.clone(), binding.public_model.clone())];
    state
        .sync
        .routing_changed(RoutingChange {
            routes,
            ..Default::default()
        })
        .await;
    Ok(binding)
}

pub async fn update_binding(state: &AppState, id: i64, req: UpdateBindingRequest) -> ApiResult<Binding> {
    let current = state.store.get_binding(id).await?;
    let mut w = BindingWrite::from(&current);
    take_fields!(req => w;
        namespace,
        public_model,
        group_id,
        weight,
        selector_type,
        selector_value,
        status
    );
    let write = validate_binding(state, w).await?;
    let binding = state.store.update_binding(id, &write).await?;
    let mut routes = vec![(binding.namespace.clone(), binding.public_model.clone())];
    routes.push((current.namespace, current.public_model));
    state
        .sync
        .routing_changed(RoutingChange {
            routes,
            ..Default::default()
        })
        .await;
    Ok(binding)
}

pub async fn delete_binding(state: &AppState, id: i64) -> ApiResult<()> {
    let binding = state.store.delete_binding(id).await?;
    let routes = vec![(binding.namespace, binding.public_model)];
    state
        .sync
        .routing_changed(RoutingChange {
            routes,
            ..Default::default()
        })
        .await;
    Ok(())
}

/// Bindings with their current resolution; groups and credentials are read once per
/// group.
pub async fn binding_views(state: &AppState, bindings: Vec<Binding>) -> ApiResult<Vec<BindingView>> {
    let mut groups: HashMap<i64, Option<ProviderGroup>> = HashMap::new();
    let mut keys: HashMap<i64, Vec<ApiKey>> = HashMap::new();
    let mut views = Vec::with_capacity(bindings.len());
    for binding in bindings {
        if let std::collections::hash_map::Entry::Vacant(slot) = groups.entry(binding.group_id) {
            let group = match state.store.get_group(binding.group_id).await {
                Ok(g) => Some(g),
                Err(crate::store::StoreError::NotFound(_)) => None,
                Err(e) => return Err(e.into()),
            };
            keys.insert(
                binding.group_id,
                state.store.api_keys_of_group(binding.group_id).await?,
            );
            slot.insert(group);
        }
        let group = groups.get(&binding.group_id).and_then(Option::as_ref);
        let resolution = routing::resolve_candidate(
            &binding,
            group,
            keys.get(&binding.group_id).map_or(&[], Vec::as_slice),
        );
        views.push(BindingView { binding, resolution });
    }
    Ok(views)
}

/// The official presets of `POST /admin/providers/preset`: type and default models.
pub fn preset(name: &str) -> Option<(ProviderType, &'static [&'static str])> {
    match name.trim().to_ascii_lowercase().as_str() {
        "openai" => Some((
            ProviderType::OpenAi,
            &[
                "gpt-4o",
                "gpt-4o-mini",
                "gpt-4.1",
                "gpt-4.1-mini",
                "o4-mini",
                "text-embedding-3-small",
                "text-embedding-3-large",
            ],
        )),
        "anthropic" => Some((
            ProviderType::Anthropic,
            &["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"],
        )),
        "gemini" => Some((
            ProviderType::Gemini,
            &[
                "gemini-2.5-pro",
                "gemini-2.5-flash",
                "gemini-2.5-flash-lite",
                "gemini-embedding-001",
            ],
        )),
        _ => None,
    }
}

/// A group and its credentials, as created by a shortcut.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderSetup {
    pub group: ProviderGroup,
    pub api_keys: Vec<ApiKeyView>,
}

/// Creates a group and one credential per key. Keys and weights are validated before
/// anything is written.
pub async fn create_setup(
    state: &AppState,
    group: CreateGroupRequest,
    api_keys: &[String],
    weights: Option<&[i64]>,
) -> ApiResult<ProviderSetup> {
    if api_keys.is_empty() || api_keys.len() > 100 {
        return Err(ApiError::invalid_field("api_keys", "give between 1 and 100 keys"));
    }
    if weights.is_some_and(|w| w.len() != api_keys.len()) {
        return Err(ApiError::invalid_field("weights", "must have one weight per key"));
    }
    let mut credentials = Vec::with_capacity(api_keys.len());
    for (i, key) in api_keys.iter().enumerate() {
        let secret = secret("api_keys", key)?;
        if secret.is_empty() {
            return Err(ApiError::invalid_field("api_keys", "keys must not be empty"));
        }
        credentials.push((secret, weight(weights.map_or(1, |w| w[i]))?));
    }
    let group = create_group(state, group).await?;
    let mut created = Vec::with_capacity(credentials.len());
    for (api_key, weight) in credentials {
        let write = ApiKeyWrite {
            group_id: group.id,
            api_key,
            weight,
            status: "active".into(),
            auto_ban: true,
            ban_reason: String::new(),
            ban_until: None,
            access_token: SecretToken::from_plaintext(""),
            refresh_token: SecretToken::from_plaintext(""),
            expires_at: None,
            account_id: String::new(),
            project_id: String::new(),
            models: Vec::new(),
            revision: 0,
        };
        created.push(state.store.create_api_key(&write).await?);
    }
    state
        .sync
        .routing_changed(RoutingChange {
            groups: vec![group.id],
            ..Default::default()
        })
        .await;
    Ok(ProviderSetup {
        group: group_view(group),
        api_keys: created.iter().map(ApiKeyView::from).collect(),
    })
}
