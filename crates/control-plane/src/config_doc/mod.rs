//! The whole configuration as one JSON document (backup, restore, config-as-code).
//!
//! Entities refer to each other by name, never by id, so a document imports into any
//! instance. Upstream secrets are included only when asked for; without them a
//! credential is identified by its `fingerprint` (a digest of its secret) and can only
//! update a credential the target already has. Masters and keys carry their token
//! digests (never secrets), so restored keys keep working.
//!
//! Import checks every entity with the API's own rules — it builds the same specs
//! (`crate::spec`) the handlers build — and the whole document against itself and the
//! database before writing anything, then writes everything in one database transaction:
//! a malformed or inconsistent document, or a write that fails half-way, changes nothing.
//! The bus follows after the commit.

mod apply;
mod export;
mod import;

use std::collections::BTreeMap;

use ez_contract::snapshot::{KeyStatus, MasterStatus};
use ez_contract::token::digest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use export::export;
pub use import::import;

use crate::models::ModelOverride;
use crate::store::{ApiKey, IssuedBy, NamespaceStatus, StoreError, SuspendedBy};

pub const FORMAT: &str = "ezapi-config";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigDocument {
    /// Always `ezapi-config`.
    pub format: String,
    /// Document version (1).
    pub version: u32,
    #[serde(default)]
    pub namespaces: Vec<NamespaceDoc>,
    #[serde(default)]
    pub provider_groups: Vec<GroupDoc>,
    #[serde(default)]
    pub api_keys: Vec<ApiKeyDoc>,
    #[serde(default)]
    pub bindings: Vec<BindingDoc>,
    #[serde(default)]
    pub models: Vec<ModelDoc>,
    #[serde(default)]
    pub masters: Vec<MasterDoc>,
    #[serde(default)]
    pub keys: Vec<KeyDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceDoc {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub status: NamespaceStatus,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupDoc {
    pub name: String,
    #[serde(rename = "type")]
    pub provider_type: String,
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub google_project: String,
    #[serde(default)]
    pub google_location: String,
    #[serde(default)]
    pub models: Vec<String>,
    pub status: String,
    #[serde(default)]
    pub static_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub headers_profile: String,
    pub route_group: String,
    /// `off` in documents written before it existed.
    #[serde(default = "health_check_off")]
    pub health_check: String,
}

fn health_check_off() -> String {
    "off".to_owned()
}

ez_contract::debug_redacting!(GroupDoc { name, provider_type, google_project, google_location, models, status, headers_profile, route_group, health_check } secret { base_url, static_headers });

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyDoc {
    /// Name of the provider group.
    pub group: String,
    /// Identifies the credential without its secret.
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub weight: i64,
    pub status: String,
    pub auto_ban: bool,
    #[serde(default)]
    pub ban_reason: String,
    pub ban_until: Option<i64>,
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub account_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub models: Vec<String>,
}

ez_contract::debug_redacting!(ApiKeyDoc { group, fingerprint, weight, status, auto_ban, ban_reason, ban_until, expires_at, account_id, project_id, models } secret { api_key, access_token, refresh_token });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingDoc {
    pub namespace: String,
    pub public_model: String,
    /// Name of the provider group.
    pub group: String,
    pub weight: i64,
    pub selector_type: String,
    #[serde(default)]
    pub selector_value: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelDoc {
    pub name: String,
    #[serde(rename = "override")]
    pub override_: ModelOverride,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MasterDoc {
    pub name: String,
    pub group: String,
    #[schema(value_type = String)]
    pub status: MasterStatus,
    pub max_child_keys: i64,
    pub global_qps: i64,
    pub epoch: i64,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    /// SHA-256 hex of the master key (the key itself is never exported).
    pub token_digest: String,
    pub token_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyDoc {
    /// Name of the master.
    pub master: String,
    pub name: String,
    pub token_digest: String,
    pub token_prefix: String,
    #[schema(value_type = String)]
    pub status: KeyStatus,
    /// Who suspended the key (`admin` or `master`); absent unless it is suspended. A
    /// suspended key without it is taken for suspended by an admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_by: Option<SuspendedBy>,
    pub issued_at_epoch: i64,
    pub issued_by: IssuedBy,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub allow_ips: Vec<String>,
    #[serde(default)]
    pub deny_ips: Vec<String>,
    pub expires_at: Option<i64>,
    pub qps: Option<i64>,
}

/// A stable identity for a credential that does not reveal its secret.
pub fn fingerprint(key: &ApiKey) -> String {
    let basis = if !key.api_key.is_empty() {
        format!("api_key:{}", key.api_key.expose())
    } else if !key.account_id.is_empty() {
        format!("account:{}", key.account_id)
    } else if !key.refresh_token.is_empty() {
        format!("refresh:{}", key.refresh_token.expose())
    } else {
        format!("access:{}", key.access_token.expose())
    };
    digest(&basis)[..16].to_owned()
}

/// What to do with an entity that already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictPolicy {
    Skip,
    Overwrite,
}

/// What an import does with one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ImportAction {
    Create,
    Update,
    Skip,
}

impl ImportAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportAction::Create => "create",
            ImportAction::Update => "update",
            ImportAction::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportChange {
    /// `namespace`, `provider_group`, `api_key`, `binding`, `model`, `master`, `key`.
    pub kind: &'static str,
    /// The entity's natural key (name, or names joined by `/`).
    pub key: String,
    /// `create`, `update` or `skip`.
    pub action: ImportAction,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportReport {
    pub dry_run: bool,
    pub policy: ConflictPolicy,
    /// Per kind: how many are created, updated, skipped.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    pub changes: Vec<ImportChange>,
}

/// Why an import is refused; `crate::error` maps each to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("expected format {FORMAT:?} version {VERSION}")]
    UnsupportedFormat,
    /// Every rule the document breaks, each prefixed with the entity it concerns.
    #[error("the document is not importable: {}", shown_problems(.0))]
    Invalid(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The first 20 problems, and how many more there are.
fn shown_problems(problems: &[String]) -> String {
    const SHOWN: usize = 20;
    let mut text = problems
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > SHOWN {
        text.push_str(&format!(" (and {} more)", problems.len() - SHOWN));
    }
    text
}
