//! Provider groups, credentials and bindings: the rules of SPEC §3 and §8 that need the
//! database (a group exists, a namespace exists, credentials suit their group's type),
//! used by the CRUD handlers and the preset/custom shortcuts. Field rules are the specs'
//! (`crate::spec`), shared with configuration import. Each change is committed to the
//! database first, then the affected routing entries are rewritten.

use std::collections::{BTreeMap, HashMap};

use ez_contract::SecretToken;
use ez_contract::provider::ProviderType;
use ez_contract::time::now_unix;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::routing::{self, CandidateResolution};
use crate::spec::{BindingSpec, CredentialSpec, GroupSpec, SpecError};
use crate::state::AppState;
use crate::store::{ApiKey, ApiKeyWrite, Binding, BindingWrite, GroupWrite, ProviderGroup, StoreError};
use crate::sync::RoutingChange;
use crate::usage::credential_health::CredentialHealthView;
use crate::validation::{self, double_option};

/// Why a change of a group, credential or binding is refused; `crate::error` maps each
/// to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("provider group {0} does not exist")]
    GroupNotFound(i64),
    #[error("{0}")]
    GroupInUse(String),
    #[error("namespace {0:?} does not exist")]
    UnknownNamespace(String),
    /// A group's type change that one of its credentials does not suit.
    #[error("credential {id} of this group: {source}")]
    CredentialUnfit { id: i64, source: SpecError },
    #[error("preset must be one of: openai, anthropic, gemini")]
    UnknownPreset,
    #[error("stored provider type {0:?} is unknown")]
    CorruptType(String),
    /// Credential files import into subscription groups only.
    #[error(
        "a {0} group takes API keys: credential files import into claude-code, codex, gemini-cli and antigravity groups"
    )]
    NotSubscription(String),
    #[error("at most {0} files per import")]
    TooManyFiles(usize),
}

pub type ProviderResult<T> = Result<T, ProviderError>;

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

/// For partial updates: each `$field` the request sent replaces the write's value.
macro_rules! take_fields {
    ($req:ident => $write:ident; $($field:ident),+ $(,)?) => {
        $( if let Some(v) = $req.$field { $write.$field = v; } )+
    };
}

#[derive(Deserialize, ToSchema)]
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
    /// The active probe of credentials that are disabled or banned: `off` (default),
    /// `on` (API-key credentials, with a free model list), `metered` (also subscription
    /// and service-account credentials, with a token grant).
    pub health_check: Option<String>,
}

ez_contract::debug_redacting!(CreateGroupRequest { name, provider_type, google_project, google_location, models, status, headers_profile, route_group, health_check } secret { base_url, static_headers });

#[derive(Default, Deserialize, ToSchema)]
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
    pub health_check: Option<String>,
}

ez_contract::debug_redacting!(UpdateGroupRequest { name, provider_type, google_project, google_location, models, status, headers_profile, route_group, health_check } secret { base_url, static_headers });

#[derive(Deserialize, ToSchema)]
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

ez_contract::debug_redacting!(CreateApiKeyRequest { group_id, weight, status, auto_ban, ban_reason, ban_until, expires_at, account_id, project_id, models } secret { api_key, access_token, refresh_token });

#[derive(Default, Deserialize, ToSchema)]
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

ez_contract::debug_redacting!(UpdateApiKeyRequest { group_id, weight, status, auto_ban, ban_reason, ban_until, expires_at, account_id, project_id, models } secret { api_key, access_token, refresh_token });

/// A credential as the API shows it: secrets masked to their last 4 characters, with what
/// balancers reported about its use.
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
    #[serde(flatten)]
    pub health: CredentialHealthView,
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
            health: CredentialHealthView::of(k, now_unix()),
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

async fn group_of(state: &AppState, group_id: i64) -> ProviderResult<ProviderGroup> {
    match state.store.get_group(group_id).await {
        Ok(group) => Ok(group),
        Err(StoreError::NotFound(_)) => Err(ProviderError::GroupNotFound(group_id)),
        Err(e) => Err(e.into()),
    }
}

fn kind_of(group: &ProviderGroup) -> ProviderResult<ProviderType> {
    group
        .provider_type
        .parse()
        .map_err(|_| ProviderError::CorruptType(group.provider_type.clone()))
}

/// A credential's spec for the group it names, which must exist.
async fn credential_spec(state: &AppState, w: ApiKeyWrite) -> ProviderResult<CredentialSpec> {
    let group = group_of(state, w.group_id).await?;
    Ok(CredentialSpec::new(w, kind_of(&group)?)?)
}

/// A binding's spec; its namespace and group must exist.
async fn binding_spec(state: &AppState, w: BindingWrite) -> ProviderResult<BindingSpec> {
    let spec = BindingSpec::new(w)?;
    if !state
        .store
        .missing_namespaces(std::slice::from_ref(&spec.namespace))
        .await?
        .is_empty()
    {
        return Err(ProviderError::UnknownNamespace(spec.namespace.clone()));
    }
    group_of(state, spec.group_id).await?;
    Ok(spec)
}

pub async fn create_group(state: &AppState, req: CreateGroupRequest) -> ProviderResult<ProviderGroup> {
    let spec = GroupSpec::new(group_write(req), None)?;
    let group = state.store.create_group(&spec).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            groups: vec![group.id],
            ..Default::default()
        })
        .await;
    Ok(group)
}

fn group_write(req: CreateGroupRequest) -> GroupWrite {
    GroupWrite {
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
        health_check: req.health_check.unwrap_or_else(|| "off".into()),
    }
}

pub async fn update_group(
    state: &AppState,
    id: i64,
    req: UpdateGroupRequest,
) -> ProviderResult<ProviderGroup> {
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
        route_group,
        health_check
    );
    let spec = GroupSpec::new(w, Some(&current))?;
    if spec.provider_type != current.provider_type {
        // The credentials must suit the new type, as they would if created in it.
        for key in state.store.api_keys_of_group(id).await? {
            CredentialSpec::new(ApiKeyWrite::from(&key), spec.kind())
                .map_err(|source| ProviderError::CredentialUnfit { id: key.id, source })?;
        }
    }
    let group = state.store.update_group(id, &spec).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            groups: vec![id],
            ..Default::default()
        })
        .await;
    Ok(group)
}

pub async fn delete_group(state: &AppState, id: i64) -> ProviderResult<()> {
    let removed = state.store.delete_group(id).await.map_err(|e| match e {
        StoreError::Conflict(message) => ProviderError::GroupInUse(message),
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

/// A secret as sent: empty when absent.
fn sent_secret(value: Option<String>) -> SecretToken {
    SecretToken::from_plaintext(value.unwrap_or_default())
}

pub async fn create_api_key(state: &AppState, req: CreateApiKeyRequest) -> ProviderResult<ApiKey> {
    let write = ApiKeyWrite {
        group_id: req.group_id,
        api_key: sent_secret(req.api_key),
        weight: req.weight.unwrap_or(1),
        status: req.status.unwrap_or_else(|| "active".into()),
        auto_ban: req.auto_ban.unwrap_or(true),
        ban_reason: req.ban_reason.unwrap_or_default(),
        ban_until: req.ban_until,
        access_token: sent_secret(req.access_token),
        refresh_token: sent_secret(req.refresh_token),
        expires_at: req.expires_at,
        account_id: req.account_id.unwrap_or_default(),
        project_id: req.project_id.unwrap_or_default(),
        models: req.models.unwrap_or_default(),
        revision: 0,
    };
    let spec = credential_spec(state, write).await?;
    let key = state.store.create_api_key(&spec).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            credentials: vec![key.id],
            ..Default::default()
        })
        .await;
    Ok(key)
}

pub async fn update_api_key(state: &AppState, id: i64, req: UpdateApiKeyRequest) -> ProviderResult<ApiKey> {
    let current = state.store.get_api_key(id).await?;
    let mut w = ApiKeyWrite::from(&current);
    if let Some(v) = req.api_key {
        w.api_key = SecretToken::from_plaintext(v);
    }
    if let Some(v) = req.access_token {
        w.access_token = SecretToken::from_plaintext(v);
    }
    if let Some(v) = req.refresh_token {
        w.refresh_token = SecretToken::from_plaintext(v);
    }
    take_fields!(req => w;
        group_id, weight, status, auto_ban, ban_reason, ban_until, expires_at, account_id, project_id, models
    );
    let spec = credential_spec(state, w).await?;
    let key = state.store.update_api_key(id, &spec).await?;
    let mut change = RoutingChange {
        credentials: vec![id],
        // A refreshed token (the usual update) touches the credential's entry alone.
        entries_only: current.group_id == key.group_id
            && current.status == key.status
            && current.weight == key.weight
            && current.models == key.models,
        ..Default::default()
    };
    if current.group_id != key.group_id {
        change.groups.push(current.group_id);
    }
    state.sync.routing_changed(change).await;
    Ok(key)
}

pub async fn delete_api_key(state: &AppState, id: i64) -> ProviderResult<()> {
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

pub async fn create_binding(state: &AppState, req: CreateBindingRequest) -> ProviderResult<Binding> {
    let spec = binding_spec(
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
    let binding = state.store.create_binding(&spec).await?;
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

pub async fn update_binding(state: &AppState, id: i64, req: UpdateBindingRequest) -> ProviderResult<Binding> {
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
    let spec = binding_spec(state, w).await?;
    let binding = state.store.update_binding(id, &spec).await?;
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

pub async fn delete_binding(state: &AppState, id: i64) -> ProviderResult<()> {
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
pub async fn binding_views(state: &AppState, bindings: Vec<Binding>) -> ProviderResult<Vec<BindingView>> {
    let mut groups: HashMap<i64, Option<ProviderGroup>> = HashMap::new();
    let mut keys: HashMap<i64, Vec<ApiKey>> = HashMap::new();
    let mut views = Vec::with_capacity(bindings.len());
    for binding in bindings {
        if let std::collections::hash_map::Entry::Vacant(slot) = groups.entry(binding.group_id) {
            let group = match state.store.get_group(binding.group_id).await {
                Ok(g) => Some(g),
                Err(StoreError::NotFound(_)) => None,
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

/// Creates a group and one credential per key. Every value is checked before anything is
/// written.
pub async fn create_setup(
    state: &AppState,
    group: CreateGroupRequest,
    api_keys: &[String],
    weights: Option<&[i64]>,
) -> ProviderResult<ProviderSetup> {
    if api_keys.is_empty() || api_keys.len() > 100 {
        return Err(SpecError::invalid("api_keys", "give between 1 and 100 keys").into());
    }
    if weights.is_some_and(|w| w.len() != api_keys.len()) {
        return Err(SpecError::invalid("weights", "must have one weight per key").into());
    }
    let group = GroupSpec::new(group_write(group), None)?;
    let mut credentials = Vec::with_capacity(api_keys.len());
    for (i, key) in api_keys.iter().enumerate() {
        let api_key = validation::secret("api_keys", &SecretToken::from_plaintext(key.as_str()))?;
        if api_key.is_empty() {
            return Err(SpecError::invalid("api_keys", "keys must not be empty").into());
        }
        let write = ApiKeyWrite {
            group_id: 0,
            api_key,
            weight: weights.map_or(1, |w| w[i]),
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
        credentials.push(CredentialSpec::new(write, group.kind())?);
    }
    let group = state.store.create_group(&group).await?;
    let mut created = Vec::with_capacity(credentials.len());
    for spec in credentials {
        created.push(state.store.create_api_key(&spec.in_group(group.id)).await?);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_holding_secrets_print_none() {
        let create: CreateApiKeyRequest = serde_json::from_value(serde_json::json!({
            "group_id": 1, "api_key": "sk-secret-0001", "access_token": "at-secret-0002",
            "refresh_token": "rt-secret-0003"
        }))
        .unwrap();
        let group: UpdateGroupRequest = serde_json::from_value(serde_json::json!({
            "base_url": "https://u:pw-secret-0004@host/v1", "static_headers": { "x-api-key": "hdr-secret-0005" }
        }))
        .unwrap();
        let shown = format!("{create:?} {group:?}");
        for secret in [
            "secret-0001",
            "secret-0002",
            "secret-0003",
            "secret-0004",
            "secret-0005",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("group_id: 1"), "{shown}");
    }
}
