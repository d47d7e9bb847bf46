//! The whole configuration as one JSON document (backup, restore, config-as-code).
//!
//! Entities refer to each other by name, never by id, so a document imports into any
//! instance. Upstream secrets are included only when asked for; without them a
//! credential is identified by its `fingerprint` (a digest of its secret) and can only
//! update a credential the target already has. Masters and keys carry their token
//! digests (never secrets), so restored keys keep working.
//!
//! Import validates the whole document against itself and the database before writing
//! anything, so a malformed or inconsistent document changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};

use ez_contract::provider::ProviderType;
use ez_contract::snapshot::{KeyStatus, MasterStatus};
use ez_contract::{SecretToken, token::digest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::models::ModelOverride;
use crate::providers;
use crate::state::AppState;
use crate::store::{
    ApiKey, ApiKeyWrite, BindingWrite, GroupWrite, IssuedBy, KeyImport, KeyWrite, MasterImport, MasterWrite,
    NamespaceStatus, Store,
};
use crate::validation;

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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// The whole configuration, sorted by natural keys so two exports of equal
/// configurations are equal documents.
pub async fn export(store: &Store, include_secrets: bool) -> ApiResult<ConfigDocument> {
    let mut namespaces = Vec::new();
    let mut page = 1;
    loop {
        let (items, total) = store
            .list_namespaces(crate::store::PageRequest { page, page_size: 500 })
            .await?;
        let done = items.is_empty() || (page * 500) >= total;
        namespaces.extend(items);
        if done {
            break;
        }
        page += 1;
    }
    let groups = store.all_groups().await?;
    let group_names: HashMap<i64, String> = groups.iter().map(|g| (g.id, g.name.clone())).collect();
    let masters = store.all_masters().await?;
    let master_names: HashMap<i64, String> = masters.iter().map(|m| (m.id, m.name.clone())).collect();

    let mut doc = ConfigDocument {
        format: FORMAT.to_owned(),
        version: VERSION,
        namespaces: namespaces
            .into_iter()
            .map(|n| NamespaceDoc {
                name: n.name,
                description: n.description,
                status: n.status,
            })
            .collect(),
        provider_groups: groups
            .iter()
            .map(|g| GroupDoc {
                name: g.name.clone(),
                provider_type: g.provider_type.clone(),
                base_url: if include_secrets {
                    g.base_url.clone()
                } else {
                    crate::masking::masked_base_url(&g.base_url)
                },
                google_project: g.google_project.clone(),
                google_location: g.google_location.clone(),
                models: g.models.clone(),
                status: g.status.clone(),
                static_headers: if include_secrets {
                    g.static_headers.clone()
                } else {
                    providers::masked_headers(&g.static_headers)
                },
                headers_profile: g.headers_profile.clone(),
                route_group: g.route_group.clone(),
            })
            .collect(),
        api_keys: store
            .all_api_keys()
            .await?
            .iter()
            .filter_map(|k| {
                let secret =
                    |s: &SecretToken| (include_secrets && !s.is_empty()).then(|| s.expose().to_owned());
                Some(ApiKeyDoc {
                    group: group_names.get(&k.group_id)?.clone(),
                    fingerprint: fingerprint(k),
                    api_key: secret(&k.api_key),
                    access_token: secret(&k.access_token),
                    refresh_token: secret(&k.refresh_token),
                    weight: k.weight,
                    status: k.status.clone(),
                    auto_ban: k.auto_ban,
                    ban_reason: k.ban_reason.clone(),
                    ban_until: k.ban_until,
                    expires_at: k.expires_at,
                    account_id: k.account_id.clone(),
                    project_id: k.project_id.clone(),
                    models: k.models.clone(),
                })
            })
            .collect(),
        bindings: store
            .all_bindings()
            .await?
            .into_iter()
            .filter_map(|b| {
                Some(BindingDoc {
                    group: group_names.get(&b.group_id)?.clone(),
                    namespace: b.namespace,
                    public_model: b.public_model,
                    weight: b.weight,
                    selector_type: b.selector_type,
                    selector_value: b.selector_value,
                    status: b.status,
                })
            })
            .collect(),
        models: store
            .model_overrides()
            .await?
            .into_iter()
            .map(|(name, override_)| ModelDoc { name, override_ })
            .collect(),
        masters: masters
            .iter()
            .map(|m| MasterDoc {
                name: m.name.clone(),
                group: m.group.clone(),
                status: m.status,
                max_child_keys: m.max_child_keys,
                global_qps: m.global_qps,
                epoch: m.epoch,
                default_namespace: m.default_namespace.clone(),
                namespaces: m.namespaces.clone(),
                token_digest: m.token_digest.clone(),
                token_prefix: m.token_prefix.clone(),
            })
            .collect(),
        keys: store
            .all_keys()
            .await?
            .into_iter()
            .filter_map(|k| {
                Some(KeyDoc {
                    master: master_names.get(&k.master_id)?.clone(),
                    name: k.name,
                    token_digest: k.token_digest,
                    token_prefix: k.token_prefix,
                    status: k.status,
                    issued_at_epoch: k.issued_at_epoch,
                    issued_by: k.issued_by,
                    default_namespace: k.default_namespace,
                    namespaces: k.namespaces,
                    allow_ips: k.allow_ips,
                    deny_ips: k.deny_ips,
                    expires_at: k.expires_at,
                    qps: k.qps,
                })
            })
            .collect(),
    };
    doc.namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    doc.provider_groups.sort_by(|a, b| a.name.cmp(&b.name));
    doc.api_keys
        .sort_by(|a, b| (&a.group, &a.fingerprint).cmp(&(&b.group, &b.fingerprint)));
    doc.bindings.sort_by(|a, b| {
        (&a.namespace, &a.public_model, &a.group).cmp(&(&b.namespace, &b.public_model, &b.group))
    });
    doc.models.sort_by(|a, b| a.name.cmp(&b.name));
    doc.masters.sort_by(|a, b| a.name.cmp(&b.name));
    doc.keys
        .sort_by(|a, b| (&a.master, &a.name).cmp(&(&b.master, &b.name)));
    Ok(doc)
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

fn invalid(problems: Vec<String>) -> ApiError {
    let shown: Vec<String> = problems.iter().take(20).cloned().collect();
    let more = problems.len().saturating_sub(shown.len());
    let suffix = if more > 0 {
        format!(" (and {more} more)")
    } else {
        String::new()
    };
    ApiError::unprocessable(
        "invalid_import",
        format!("the document is not importable: {}{suffix}", shown.join("; ")),
    )
}

fn is_digest(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Collects a rule failure instead of stopping at the first.
fn check<T>(problems: &mut Vec<String>, context: &str, result: ApiResult<T>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            problems.push(format!("{context}: {}", e.message));
            None
        }
    }
}

/// Imports `doc`; with `dry_run`, only reports what would change.
pub async fn import(
    state: &AppState,
    doc: ConfigDocument,
    policy: ConflictPolicy,
    dry_run: bool,
) -> ApiResult<ImportReport> {
    let store = &state.store;
    if doc.format != FORMAT || doc.version != VERSION {
        return Err(ApiError::unprocessable(
            "unsupported_format",
            format!("expected format {FORMAT:?} version {VERSION}"),
        ));
    }
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut unique = |problems: &mut Vec<String>, kind: &str, key: String| {
        if !seen.insert(format!("{kind}\u{0}{key}")) {
            problems.push(format!("{kind} {key:?} appears twice"));
        }
    };

    // What exists already, by natural key.
    let (existing_ns, _) = store
        .list_namespaces(crate::store::PageRequest {
            page: 1,
            page_size: 100_000,
        })
        .await?;
    let existing_ns: HashMap<String, crate::store::Namespace> =
        existing_ns.into_iter().map(|n| (n.name.clone(), n)).collect();
    let existing_groups: HashMap<String, crate::store::ProviderGroup> = store
        .all_groups()
        .await?
        .into_iter()
        .map(|g| (g.name.clone(), g))
        .collect();
    let group_by_id: HashMap<i64, String> =
        existing_groups.values().map(|g| (g.id, g.name.clone())).collect();
    let existing_keys: HashMap<(String, String), ApiKey> = store
        .all_api_keys()
        .await?
        .into_iter()
        .filter_map(|k| Some(((group_by_id.get(&k.group_id)?.clone(), fingerprint(&k)), k)))
        .collect();
    let existing_bindings: HashMap<(String, String, String), crate::store::Binding> = store
        .all_bindings()
        .await?
        .into_iter()
        .filter_map(|b| {
            Some((
                (
                    b.namespace.clone(),
                    b.public_model.clone(),
                    group_by_id.get(&b.group_id)?.clone(),
                ),
                b,
            ))
        })
        .collect();
    let existing_models = store.model_overrides().await?;
    let existing_masters: HashMap<String, crate::store::Master> = store
        .all_masters()
        .await?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    let master_by_id: HashMap<i64, String> = existing_masters
        .values()
        .map(|m| (m.id, m.name.clone()))
        .collect();
    let existing_child: HashMap<(String, String), crate::store::Key> = store
        .all_keys()
        .await?
        .into_iter()
        .filter_map(|k| Some(((master_by_id.get(&k.master_id)?.clone(), k.name.clone()), k)))
        .collect();

    // Validate every entity with the API's own rules; collect every problem.
    let mut namespace_names: HashSet<String> = existing_ns.keys().cloned().collect();
    for ns in &doc.namespaces {
        unique(&mut problems, "namespace", ns.name.clone());
        if ns.description.chars().count() > 1024
            || ns
                .description
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            problems.push(format!(
                "namespace {:?}: description must be at most 1024 characters without control characters",
                ns.name
            ));
        }
        if check(
            &mut problems,
            "namespace",
            validation::identifier("name", &ns.name),
        )
        .is_some()
        {
            namespace_names.insert(ns.name.clone());
        }
    }
    let mut group_types: HashMap<String, ProviderType> = existing_groups
        .values()
        .filter_map(|g| Some((g.name.clone(), g.provider_type.parse().ok()?)))
        .collect();
    let mut groups = Vec::new();
    for g in &doc.provider_groups {
        unique(&mut problems, "provider group", g.name.clone());
        let write = GroupWrite {
            name: g.name.clone(),
            provider_type: g.provider_type.clone(),
            base_url: g.base_url.clone(),
            google_project: g.google_project.clone(),
            google_location: g.google_location.clone(),
            models: g.models.clone(),
            status: g.status.clone(),
            static_headers: g.static_headers.clone(),
            headers_profile: g.headers_profile.clone(),
            route_group: g.route_group.clone(),
        };
        if let Some(w) = check(
            &mut problems,
            &format!("provider group {:?}", g.name),
            providers::validate_group(write).and_then(|mut w| {
                let current = existing_groups.get(&w.name).map(|g| &g.static_headers);
                providers::restore_masked_headers(&mut w.static_headers, current)?;
                let current_url = existing_groups.get(&w.name).map(|g| g.base_url.as_str());
                crate::masking::restore_masked_base_url(&mut w.base_url, current_url).map(|()| w)
            }),
        ) {
            if let Ok(kind) = w.provider_type.parse() {
                group_types.insert(w.name.clone(), kind);
            }
            groups.push(w);
        }
    }
    let mut api_keys = Vec::new();
    for k in &doc.api_keys {
        let context = format!("api key {}/{}", k.group, k.fingerprint);
        unique(&mut problems, "api key", format!("{}/{}", k.group, k.fingerprint));
        let Some(kind) = group_types.get(&k.group).copied() else {
            problems.push(format!(
                "{context}: provider group {:?} is neither in the document nor configured",
                k.group
            ));
            continue;
        };
        let existing = existing_keys.get(&(k.group.clone(), k.fingerprint.clone()));
        let has_secret = k.api_key.is_some() || k.access_token.is_some() || k.refresh_token.is_some();
        if !has_secret && existing.is_none() {
            problems.push(format!(
                "{context}: no secret and no such credential here (export with include_secrets)"
            ));
            continue;
        }
        let keep = |doc_value: &Option<String>, current: Option<&SecretToken>| -> ApiResult<SecretToken> {
            match doc_value {
                Some(v) => providers::secret("secret", v),
                None => Ok(current
                    .cloned()
                    .unwrap_or_else(|| SecretToken::from_plaintext(""))),
            }
        };
        let secrets = (
            check(
                &mut problems,
                &context,
                keep(&k.api_key, existing.map(|e| &e.api_key)),
            ),
            check(
                &mut problems,
                &context,
                keep(&k.access_token, existing.map(|e| &e.access_token)),
            ),
            check(
                &mut problems,
                &context,
                keep(&k.refresh_token, existing.map(|e| &e.refresh_token)),
            ),
        );
        let (Some(api_key), Some(access_token), Some(refresh_token)) = secrets else {
            continue;
        };
        let write = ApiKeyWrite {
            group_id: 0,
            api_key,
            weight: k.weight,
            status: k.status.clone(),
            auto_ban: k.auto_ban,
            ban_reason: k.ban_reason.clone(),
            ban_until: k.ban_until,
            access_token,
            refresh_token,
            expires_at: k.expires_at,
            account_id: k.account_id.clone(),
            project_id: k.project_id.clone(),
            models: k.models.clone(),
            revision: existing.map_or(0, |e| e.revision),
        };
        if let Some(w) = check(&mut problems, &context, providers::check_api_key(write, kind)) {
            api_keys.push((k, w));
        }
    }
    let mut bindings = Vec::new();
    for b in &doc.bindings {
        let context = format!("binding {}.{} → {}", b.namespace, b.public_model, b.group);
        unique(
            &mut problems,
            "binding",
            format!("{}.{}/{}", b.namespace, b.public_model, b.group),
        );
        if !namespace_names.contains(&b.namespace) {
            problems.push(format!(
                "{context}: namespace {:?} is neither in the document nor configured",
                b.namespace
            ));
        }
        if !group_types.contains_key(&b.group) {
            problems.push(format!(
                "{context}: provider group {:?} is neither in the document nor configured",
                b.group
            ));
        }
        let write = BindingWrite {
            namespace: b.namespace.clone(),
            public_model: b.public_model.clone(),
            group_id: 0,
            weight: b.weight,
            selector_type: b.selector_type.clone(),
            selector_value: b.selector_value.clone(),
            status: b.status.clone(),
        };
        if let Some(w) = check(&mut problems, &context, providers::check_binding(write)) {
            bindings.push((b, w));
        }
    }
    for m in &doc.models {
        unique(&mut problems, "model", m.name.clone());
        check(
            &mut problems,
            &format!("model {:?}", m.name),
            providers::model_list("name", std::slice::from_ref(&m.name)),
        );
        if let Some(problem) = m.override_.problem() {
            problems.push(format!("model {:?}: {problem}", m.name));
        }
    }
    let mut master_namespaces: HashMap<String, Vec<String>> = existing_masters
        .values()
        .map(|m| (m.name.clone(), m.namespaces.clone()))
        .collect();
    let mut digests: HashMap<String, String> = existing_masters
        .values()
        .map(|m| (m.token_digest.clone(), m.name.clone()))
        .collect();
    for m in &doc.masters {
        let context = format!("master {:?}", m.name);
        unique(&mut problems, "master", m.name.clone());
        check(&mut problems, &context, validation::display_name("name", &m.name));
        check(&mut problems, &context, validation::identifier("group", &m.group));
        check(
            &mut problems,
            &context,
            validation::non_negative("max_child_keys", m.max_child_keys),
        );
        check(
            &mut problems,
            &context,
            validation::non_negative("global_qps", m.global_qps),
        );
        if m.epoch < 1 {
            problems.push(format!("{context}: epoch must be >= 1"));
        }
        if !is_digest(&m.token_digest) {
            problems.push(format!(
                "{context}: token_digest must be 64 lower-case hex characters"
            ));
        }
        if let Some(other) = digests.insert(m.token_digest.clone(), m.name.clone())
            && other != m.name
        {
            problems.push(format!(
                "{context}: its key is already the key of master {other:?}"
            ));
        }
        if m.namespaces.is_empty() || !m.namespaces.contains(&m.default_namespace) {
            problems.push(format!(
                "{context}: default_namespace must be one of a non-empty namespaces"
            ));
        }
        for ns in &m.namespaces {
            if !namespace_names.contains(ns) {
                problems.push(format!(
                    "{context}: namespace {ns:?} is neither in the document nor configured"
                ));
            }
        }
        check(
            &mut problems,
            &context,
            validation::display_name("token_prefix", &m.token_prefix),
        );
        // A master the import skips keeps its own namespaces; keys are checked against those.
        if !(policy == ConflictPolicy::Skip && existing_masters.contains_key(&m.name)) {
            master_namespaces.insert(m.name.clone(), m.namespaces.clone());
        }
    }
    let mut key_digests: HashMap<String, (String, String)> = existing_child
        .iter()
        .map(|((m, n), k)| (k.token_digest.clone(), (m.clone(), n.clone())))
        .collect();
    for k in &doc.keys {
        let context = format!("key {}/{}", k.master, k.name);
        unique(&mut problems, "key", format!("{}/{}", k.master, k.name));
        check(&mut problems, &context, validation::display_name("name", &k.name));
        let Some(allowed) = master_namespaces.get(&k.master) else {
            problems.push(format!(
                "{context}: master {:?} is neither in the document nor configured",
                k.master
            ));
            continue;
        };
        if !is_digest(&k.token_digest) {
            problems.push(format!(
                "{context}: token_digest must be 64 lower-case hex characters"
            ));
        }
        check(
            &mut problems,
            &context,
            validation::display_name("token_prefix", &k.token_prefix),
        );
        if let Some(current) = existing_child.get(&(k.master.clone(), k.name.clone()))
            && current.token_digest != k.token_digest
        {
            problems.push(format!(
                "{context}: a key of that name exists here with another secret"
            ));
        }
        if let Some(other) = key_digests.insert(k.token_digest.clone(), (k.master.clone(), k.name.clone()))
            && other != (k.master.clone(), k.name.clone())
        {
            problems.push(format!(
                "{context}: its digest is already the key {}/{}",
                other.0, other.1
            ));
        }
        if k.namespaces.iter().any(|n| !allowed.contains(n)) || !k.namespaces.contains(&k.default_namespace) {
            problems.push(format!(
                "{context}: namespaces must be a subset of the master's and include the default"
            ));
        }
        check(
            &mut problems,
            &context,
            validation::cidr_list("allow_ips", &k.allow_ips),
        );
        check(
            &mut problems,
            &context,
            validation::cidr_list("deny_ips", &k.deny_ips),
        );
        if k.qps.is_some_and(|q| q < 0) || k.issued_at_epoch < 1 {
            problems.push(format!("{context}: qps must be >= 0 and issued_at_epoch >= 1"));
        }
    }
    if !problems.is_empty() {
        return Err(invalid(problems));
    }

    // Plan: what each entity becomes.
    let action = |exists: bool| match (exists, policy) {
        (false, _) => ImportAction::Create,
        (true, ConflictPolicy::Skip) => ImportAction::Skip,
        (true, ConflictPolicy::Overwrite) => ImportAction::Update,
    };
    let mut changes = Vec::new();
    let mut plan = |kind: &'static str, key: String, exists: bool| -> ImportAction {
        let a = action(exists);
        changes.push(ImportChange { kind, key, action: a });
        a
    };
    let ns_actions: Vec<_> = doc
        .namespaces
        .iter()
        .map(|n| plan("namespace", n.name.clone(), existing_ns.contains_key(&n.name)))
        .collect();
    let group_actions: Vec<_> = groups
        .iter()
        .map(|g| {
            plan(
                "provider_group",
                g.name.clone(),
                existing_groups.contains_key(&g.name),
            )
        })
        .collect();
    let key_actions: Vec<_> = api_keys
        .iter()
        .map(|(d, _)| {
            let exists = existing_keys.contains_key(&(d.group.clone(), d.fingerprint.clone()));
            plan("api_key", format!("{}/{}", d.group, d.fingerprint), exists)
        })
        .collect();
    let binding_actions: Vec<_> = bindings
        .iter()
        .map(|(d, _)| {
            let exists = existing_bindings.contains_key(&(
                d.namespace.clone(),
                d.public_model.clone(),
                d.group.clone(),
            ));
            plan(
                "binding",
                format!("{}.{}/{}", d.namespace, d.public_model, d.group),
                exists,
            )
        })
        .collect();
    let model_actions: Vec<_> = doc
        .models
        .iter()
        .map(|m| plan("model", m.name.clone(), existing_models.contains_key(&m.name)))
        .collect();
    let master_actions: Vec<_> = doc
        .masters
        .iter()
        .map(|m| plan("master", m.name.clone(), existing_masters.contains_key(&m.name)))
        .collect();
    let child_actions: Vec<_> = doc
        .keys
        .iter()
        .map(|k| {
            plan(
                "key",
                format!("{}/{}", k.master, k.name),
                existing_child.contains_key(&(k.master.clone(), k.name.clone())),
            )
        })
        .collect();
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for c in &changes {
        *counts
            .entry(c.kind.to_owned())
            .or_default()
            .entry(c.action.as_str().to_owned())
            .or_default() += 1;
    }
    let report = ImportReport {
        dry_run,
        policy,
        counts,
        changes,
    };
    if dry_run {
        return Ok(report);
    }

    // Apply, in dependency order.
    for (ns, a) in doc.namespaces.iter().zip(ns_actions) {
        match a {
            ImportAction::Create => drop(
                store
                    .create_namespace(&ns.name, &ns.description, ns.status)
                    .await?,
            ),
            ImportAction::Update => {
                let id = existing_ns[&ns.name].id;
                drop(
                    store
                        .update_namespace(id, &ns.name, &ns.description, ns.status)
                        .await?,
                );
            }
            _ => {}
        }
    }
    let mut group_ids: HashMap<String, i64> =
        existing_groups.iter().map(|(n, g)| (n.clone(), g.id)).collect();
    for (g, a) in groups.iter().zip(group_actions) {
        match a {
            ImportAction::Create => {
                group_ids.insert(g.name.clone(), store.create_group(g).await?.id);
            }
            ImportAction::Update => drop(store.update_group(group_ids[&g.name], g).await?),
            _ => {}
        }
    }
    for ((d, w), a) in api_keys.into_iter().zip(key_actions) {
        let w = ApiKeyWrite {
            group_id: group_ids[&d.group],
            ..w
        };
        match a {
            ImportAction::Create => drop(store.create_api_key(&w).await?),
            ImportAction::Update => {
                let id = existing_keys[&(d.group.clone(), d.fingerprint.clone())].id;
                drop(store.update_api_key(id, &w).await?);
            }
            _ => {}
        }
    }
    for ((d, w), a) in bindings.into_iter().zip(binding_actions) {
        let w = BindingWrite {
            group_id: group_ids[&d.group],
            ..w
        };
        match a {
            ImportAction::Create => drop(store.create_binding(&w).await?),
            ImportAction::Update => {
                let id =
                    existing_bindings[&(d.namespace.clone(), d.public_model.clone(), d.group.clone())].id;
                drop(store.update_binding(id, &w).await?);
            }
            _ => {}
        }
    }
    for (m, a) in doc.models.iter().zip(model_actions) {
        if a != ImportAction::Skip {
            store.put_model_override(&m.name, &m.override_).await?;
        }
    }
    let mut master_ids: HashMap<String, i64> =
        existing_masters.iter().map(|(n, m)| (n.clone(), m.id)).collect();
    for (m, a) in doc.masters.iter().zip(master_actions) {
        match a {
            ImportAction::Create => {
                let created = store
                    .import_master(&MasterImport {
                        name: m.name.clone(),
                        group: m.group.clone(),
                        status: m.status.as_str().to_owned(),
                        max_child_keys: m.max_child_keys,
                        global_qps: m.global_qps,
                        epoch: m.epoch,
                        default_namespace: m.default_namespace.clone(),
                        namespaces: m.namespaces.clone(),
                        token_digest: m.token_digest.clone(),
                        token_prefix: m.token_prefix.clone(),
                    })
                    .await?;
                master_ids.insert(m.name.clone(), created.id);
            }
            ImportAction::Update => {
                let id = master_ids[&m.name];
                let write = MasterWrite {
                    name: m.name.clone(),
                    group: m.group.clone(),
                    status: m.status,
                    max_child_keys: m.max_child_keys,
                    global_qps: m.global_qps,
                    default_namespace: m.default_namespace.clone(),
                    namespaces: m.namespaces.clone(),
                    revision: existing_masters[&m.name].revision,
                };
                store.update_master(id, &write).await?;
                store
                    .merge_master_credentials(id, m.epoch, &m.token_digest, &m.token_prefix)
                    .await?;
            }
            _ => {}
        }
    }
    for (k, a) in doc.keys.iter().zip(child_actions) {
        match a {
            ImportAction::Create => drop(
                store
                    .import_key(&KeyImport {
                        master_id: master_ids[&k.master],
                        name: k.name.clone(),
                        token_digest: k.token_digest.clone(),
                        token_prefix: k.token_prefix.clone(),
                        status: k.status.as_str().to_owned(),
                        issued_at_epoch: k.issued_at_epoch,
                        issued_by: k.issued_by.as_str().to_owned(),
                        default_namespace: k.default_namespace.clone(),
                        namespaces: k.namespaces.clone(),
                        allow_ips: validation::cidr_list("allow_ips", &k.allow_ips)?,
                        deny_ips: validation::cidr_list("deny_ips", &k.deny_ips)?,
                        expires_at: k.expires_at,
                        qps: k.qps,
                    })
                    .await?,
            ),
            ImportAction::Update => {
                let current = &existing_child[&(k.master.clone(), k.name.clone())];
                let write = KeyWrite {
                    name: k.name.clone(),
                    status: k.status,
                    default_namespace: k.default_namespace.clone(),
                    namespaces: k.namespaces.clone(),
                    allow_ips: validation::cidr_list("allow_ips", &k.allow_ips)?,
                    deny_ips: validation::cidr_list("deny_ips", &k.deny_ips)?,
                    expires_at: k.expires_at,
                    qps: k.qps,
                    revision: current.revision,
                };
                // A revoked key stays revoked; the store refuses to revive it.
                if current.status != KeyStatus::Revoked {
                    store.update_key(current.id, &write).await?;
                }
            }
            _ => {}
        }
    }
    // An import touches everything; one full rebuild is cheaper than per-entity writes.
    if let Err(e) = state.sync.full_sync().await {
        tracing::warn!(error = %e, "bus sync after import failed; POST /admin/sync or the watchdog will repair it");
    }
    Ok(report)
}
