//! Masters and their child keys: every rule of SPEC §3–§5 in one place, used by the
//! admin handlers and the master's own `/v1/tokens` handlers alike. Field rules are the
//! specs' (`crate::spec`); this module adds the rules that need the database or know who
//! is asking. Each change is committed to the database first, then written to the bus.

use ez_contract::snapshot::{KeyStatus, MasterStatus};
use ez_contract::{SecretToken, TokenKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::spec::{AccessSpec, KeySpec, MasterSpec, SpecError};
use crate::state::AppState;
use crate::store::{IssuedBy, Key, KeyWrite, Master, MasterWrite, StoreError, SuspendedBy};
use crate::validation::{self, double_option};

/// Why a change of a master or child key is refused; `crate::error` maps each to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("unknown namespace(s): {}", .0.join(", "))]
    UnknownNamespaces(Vec<String>),
    #[error("cannot issue keys for a suspended master")]
    MasterSuspended,
    #[error("{0} child key(s) use namespaces outside the new list; send \"propagate\": true to narrow them")]
    KeysOutsideNamespaces(usize),
    #[error("a revoked key cannot be changed")]
    KeyRevoked,
    #[error("an admin suspended this key; only an admin can lift the suspension")]
    SuspendedByAdmin,
}

pub type TenantResult<T> = Result<T, TenantError>;

pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_GROUP: &str = "default";
pub const DEFAULT_MAX_CHILD_KEYS: i64 = 5;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMasterRequest {
    /// Unique name of the tenant.
    pub name: String,
    /// Routing group (default `default`).
    pub group: Option<String>,
    /// Maximum number of live (not revoked) child keys (default 5).
    pub max_child_keys: Option<i64>,
    /// Requests per second across all the master's keys; 0 = unlimited (default).
    pub global_qps: Option<i64>,
    pub default_namespace: Option<String>,
    pub namespaces: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMasterRequest {
    pub name: Option<String>,
    pub group: Option<String>,
    #[schema(value_type = Option<String>, example = "suspended")]
    pub status: Option<MasterStatus>,
    pub max_child_keys: Option<i64>,
    pub global_qps: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAccessRequest {
    pub default_namespace: Option<String>,
    pub namespaces: Option<Vec<String>>,
    /// Masters only: also narrow the child keys so they stay a subset. Without it, a
    /// change that would leave a key outside the master's namespaces is refused.
    #[serde(default)]
    pub propagate: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// Unique among the master's keys; defaults to the key's display prefix.
    pub name: Option<String>,
    /// Defaults to the master's default namespace.
    pub default_namespace: Option<String>,
    /// Must be a subset of the master's; defaults to the master's.
    pub namespaces: Option<Vec<String>>,
    /// CIDRs or addresses; when non-empty, only these may use the key.
    pub allow_ips: Option<Vec<String>>,
    /// CIDRs or addresses that may never use the key.
    pub deny_ips: Option<Vec<String>>,
    /// Unix seconds; must be in the future.
    pub expires_at: Option<i64>,
    /// Requests per second for this key; 0 or absent = unlimited.
    pub qps: Option<i64>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyRequest {
    pub name: Option<String>,
    /// `active`, `suspended` or `revoked` (final). A master cannot lift a suspension an
    /// admin made (403 `suspended_by_admin`).
    #[schema(value_type = Option<String>, example = "suspended")]
    pub status: Option<KeyStatus>,
    pub default_namespace: Option<String>,
    pub namespaces: Option<Vec<String>>,
    pub allow_ips: Option<Vec<String>>,
    pub deny_ips: Option<Vec<String>>,
    /// Unix seconds; `null` removes the expiry.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable)]
    pub expires_at: Option<Option<i64>>,
    /// `null` removes the per-key limit.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, nullable)]
    pub qps: Option<Option<i64>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyAccessRequest {
    pub default_namespace: Option<String>,
    pub namespaces: Option<Vec<String>>,
}

/// A master as created or rotated: the object plus its key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasterWithKey {
    #[serde(flatten)]
    pub master: Master,
    /// The master key in plaintext. It is not stored and cannot be shown again.
    pub master_key: String,
}

/// A child key as created: the object plus the key, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyWithSecret {
    #[serde(flatten)]
    pub object: Key,
    /// The API key in plaintext. It is not stored and cannot be shown again.
    pub key: String,
}

/// Refuses namespaces that do not exist.
async fn ensure_namespaces_exist(state: &AppState, names: &[String]) -> TenantResult<()> {
    let missing = state.store.missing_namespaces(names).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(TenantError::UnknownNamespaces(missing))
    }
}

/// Builds a key's spec within its master's namespaces (`scope`, see [`KeySpec::new`]). A
/// namespace outside them that does not exist at all is reported as unknown rather than
/// as not allowed.
async fn key_spec(state: &AppState, write: KeyWrite, scope: Option<&[String]>) -> TenantResult<KeySpec> {
    match KeySpec::new(write, scope) {
        Ok(spec) => Ok(spec),
        Err(SpecError::NamespacesNotAllowed(outside)) => {
            ensure_namespaces_exist(state, &outside).await?;
            Err(SpecError::NamespacesNotAllowed(outside).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Who changes a key: an admin, or the master that owns it.
fn actor(owner: Option<&Master>) -> SuspendedBy {
    owner.map_or(SuspendedBy::Admin, |_| SuspendedBy::Master)
}

/// The status and suspension author after `actor` asks for `requested` on `current`. An
/// admin's suspension sticks: a master can neither lift it nor make it its own; an
/// admin who suspends a key a master suspended makes the suspension an admin's.
fn status_after(
    current: &Key,
    requested: Option<KeyStatus>,
    actor: SuspendedBy,
) -> TenantResult<(KeyStatus, Option<SuspendedBy>)> {
    let Some(next) = requested else {
        return Ok((current.status, current.suspended_by));
    };
    let admin_suspended =
        current.status == KeyStatus::Suspended && current.suspended_by == Some(SuspendedBy::Admin);
    Ok(match next {
        KeyStatus::Suspended if admin_suspended => (next, Some(SuspendedBy::Admin)),
        KeyStatus::Suspended => (next, Some(actor)),
        KeyStatus::Active if admin_suspended && actor == SuspendedBy::Master => {
            return Err(TenantError::SuspendedByAdmin);
        }
        KeyStatus::Active | KeyStatus::Revoked => (next, None),
    })
}

pub async fn create_master(state: &AppState, req: CreateMasterRequest) -> TenantResult<MasterWithKey> {
    let default_namespace = req
        .default_namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let access = AccessSpec::merge(
        req.default_namespace.as_deref(),
        req.namespaces.as_deref(),
        (&default_namespace, std::slice::from_ref(&default_namespace)),
    )?;
    let (default_namespace, namespaces) = access.into_parts();
    let spec = MasterSpec::new(MasterWrite {
        name: req.name,
        group: req.group.unwrap_or_else(|| DEFAULT_GROUP.to_owned()),
        status: MasterStatus::Active,
        max_child_keys: req.max_child_keys.unwrap_or(DEFAULT_MAX_CHILD_KEYS),
        global_qps: req.global_qps.unwrap_or(0),
        default_namespace,
        namespaces,
        revision: 0,
    })?;
    ensure_namespaces_exist(state, &spec.namespaces).await?;
    let token = SecretToken::generate(TokenKind::Master);
    let master = state
        .store
        .create_master(&spec.new_master(token.digest(), token.display_prefix()))
        .await?;
    state.sync.master_changed(master.id).await;
    tracing::info!(master_id = master.id, "master created");
    Ok(MasterWithKey {
        master,
        master_key: token.expose().to_owned(),
    })
}

pub async fn update_master(state: &AppState, id: i64, req: UpdateMasterRequest) -> TenantResult<Master> {
    let current = state.store.get_master(id).await?;
    let mut write = MasterWrite::from(&current);
    if let Some(name) = req.name {
        write.name = name;
    }
    if let Some(group) = req.group {
        write.group = group;
    }
    if let Some(status) = req.status {
        write.status = status;
    }
    if let Some(max) = req.max_child_keys {
        write.max_child_keys = max;
    }
    if let Some(qps) = req.global_qps {
        write.global_qps = qps;
    }
    let spec = MasterSpec::new(write)?;
    let master = state.store.update_master(id, &spec).await?;
    state.sync.master_changed(master.id).await;
    Ok(master)
}

pub async fn delete_master(state: &AppState, id: i64) -> TenantResult<Master> {
    let (master, keys) = state.store.delete_master(id).await?;
    state.sync.master_changed(master.id).await;
    tracing::info!(
        master_id = id,
        revoked_keys = keys.len(),
        "master deleted (suspended, keys revoked)"
    );
    Ok(master)
}

pub async fn rotate_master(state: &AppState, id: i64) -> TenantResult<MasterWithKey> {
    let token = SecretToken::generate(TokenKind::Master);
    let master = state
        .store
        .rotate_master_token(id, &token.digest(), &token.display_prefix())
        .await?;
    tracing::info!(master_id = id, "master key rotated");
    Ok(MasterWithKey {
        master,
        master_key: token.expose().to_owned(),
    })
}

pub async fn revoke_master_keys(state: &AppState, id: i64) -> TenantResult<Master> {
    let master = state.store.bump_master_epoch(id).await?;
    state.sync.master_changed(master.id).await;
    tracing::info!(
        master_id = id,
        epoch = master.epoch,
        "child keys revoked by epoch bump"
    );
    Ok(master)
}

/// The keys whose access must narrow for the master's new `access`: (id, default
/// namespace, namespaces). Keys that can never authenticate again keep theirs (a record).
fn narrowed_keys(keys: &[Key], master_epoch: i64, access: &AccessSpec) -> Vec<(i64, String, Vec<String>)> {
    let allowed = access.namespaces();
    let mut updates = Vec::new();
    for key in keys.iter().filter(|k| !k.is_dead(master_epoch)) {
        let kept: Vec<String> = key
            .namespaces
            .iter()
            .filter(|n| allowed.contains(n))
            .cloned()
            .collect();
        if kept.len() == key.namespaces.len() && kept.contains(&key.default_namespace) {
            continue;
        }
        let kept = if kept.is_empty() {
            vec![access.default_namespace().to_owned()]
        } else {
            kept
        };
        let default = if kept.contains(&key.default_namespace) {
            key.default_namespace.clone()
        } else if kept.iter().any(|n| n == access.default_namespace()) {
            access.default_namespace().to_owned()
        } else {
            kept[0].clone()
        };
        updates.push((key.id, default, kept));
    }
    updates
}

pub async fn update_master_access(
    state: &AppState,
    id: i64,
    req: UpdateAccessRequest,
) -> TenantResult<Master> {
    let current = state.store.get_master(id).await?;
    let access = AccessSpec::merge(
        req.default_namespace.as_deref(),
        req.namespaces.as_deref(),
        (&current.default_namespace, &current.namespaces),
    )?;
    ensure_namespaces_exist(state, access.namespaces()).await?;
    let keys = state.store.keys_of_master(id).await?;
    let key_updates = narrowed_keys(&keys, current.epoch, &access);
    if !key_updates.is_empty() && !req.propagate {
        return Err(TenantError::KeysOutsideNamespaces(key_updates.len()));
    }
    let (master, _) = state
        .store
        .update_master_access(id, access.default_namespace(), access.namespaces(), &key_updates)
        .await?;
    state.sync.master_changed(master.id).await;
    Ok(master)
}

pub async fn create_key(
    state: &AppState,
    master: &Master,
    issued_by: IssuedBy,
    req: CreateKeyRequest,
) -> TenantResult<KeyWithSecret> {
    if master.status != MasterStatus::Active {
        return Err(TenantError::MasterSuspended);
    }
    let token = SecretToken::generate(TokenKind::Child);
    let access = AccessSpec::merge(
        req.default_namespace.as_deref(),
        req.namespaces.as_deref(),
        (&master.default_namespace, &master.namespaces),
    )?;
    let expires_at = req
        .expires_at
        .map(|t| validation::future_time("expires_at", t))
        .transpose()?;
    let (default_namespace, namespaces) = access.into_parts();
    let write = KeyWrite {
        name: req.name.unwrap_or_else(|| token.display_prefix()),
        status: KeyStatus::Active,
        suspended_by: None,
        default_namespace,
        namespaces,
        allow_ips: req.allow_ips.unwrap_or_default(),
        deny_ips: req.deny_ips.unwrap_or_default(),
        expires_at,
        qps: req.qps,
        revision: 0,
    };
    let spec = key_spec(state, write, Some(&master.namespaces)).await?;
    let key = state
        .store
        .create_key(&spec.new_key(master.id, token.digest(), token.display_prefix(), issued_by))
        .await?;
    state.sync.key_changed(key.id).await;
    tracing::info!(
        master_id = master.id,
        key_id = key.id,
        issued_by = issued_by.as_str(),
        "child key issued"
    );
    Ok(KeyWithSecret {
        object: key,
        key: token.expose().to_owned(),
    })
}

/// Loads a key, as seen by `owner` when given: another master's key does not exist for
/// it (404, never 403, so ids cannot be probed).
pub async fn get_key(state: &AppState, id: i64, owner: Option<&Master>) -> TenantResult<Key> {
    let key = state.store.get_key(id).await?;
    match owner {
        Some(master) if master.id != key.master_id => Err(StoreError::NotFound("key").into()),
        _ => Ok(key),
    }
}

/// Changes a key, as an admin (`owner` = `None`) or as its master.
pub async fn update_key(
    state: &AppState,
    id: i64,
    owner: Option<&Master>,
    req: UpdateKeyRequest,
) -> TenantResult<Key> {
    let current = get_key(state, id, owner).await?;
    if current.status == KeyStatus::Revoked {
        return Err(TenantError::KeyRevoked);
    }
    let master = state.store.get_master(current.master_id).await?;
    let mut write = KeyWrite::from(&current);
    if let Some(name) = req.name {
        write.name = name;
    }
    (write.status, write.suspended_by) = status_after(&current, req.status, actor(owner))?;
    let changes_access = req.default_namespace.is_some() || req.namespaces.is_some();
    if changes_access {
        let (default_namespace, namespaces) = AccessSpec::merge(
            req.default_namespace.as_deref(),
            req.namespaces.as_deref(),
            (&current.default_namespace, &current.namespaces),
        )?
        .into_parts();
        write.default_namespace = default_namespace;
        write.namespaces = namespaces;
    }
    if let Some(list) = req.allow_ips {
        write.allow_ips = list;
    }
    if let Some(list) = req.deny_ips {
        write.deny_ips = list;
    }
    if let Some(expires_at) = req.expires_at {
        write.expires_at = expires_at
            .map(|t| validation::future_time("expires_at", t))
            .transpose()?;
    }
    if let Some(qps) = req.qps {
        write.qps = qps;
    }
    // A key that can never authenticate again keeps its namespaces as a record, even
    // outside its master's (see `narrowed_keys`), unless this change sets new ones.
    let scope = (changes_access || !current.is_dead(master.epoch)).then_some(master.namespaces.as_slice());
    let spec = key_spec(state, write, scope).await?;
    let key = state.store.update_key(id, &spec).await?;
    state.sync.key_changed(key.id).await;
    Ok(key)
}

pub async fn update_key_access(state: &AppState, id: i64, req: UpdateKeyAccessRequest) -> TenantResult<Key> {
    let req = UpdateKeyRequest {
        default_namespace: req.default_namespace,
        namespaces: req.namespaces,
        ..Default::default()
    };
    update_key(state, id, None, req).await
}

pub async fn revoke_key(state: &AppState, id: i64, owner: Option<&Master>) -> TenantResult<Key> {
    let current = get_key(state, id, owner).await?;
    if current.status == KeyStatus::Revoked {
        return Ok(current);
    }
    let req = UpdateKeyRequest {
        status: Some(KeyStatus::Revoked),
        ..Default::default()
    };
    let key = update_key(state, id, owner, req).await?;
    tracing::info!(key_id = id, "child key revoked");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(status: KeyStatus, suspended_by: Option<SuspendedBy>) -> Key {
        Key {
            id: 1,
            master_id: 1,
            name: "k".into(),
            token_digest: String::new(),
            token_prefix: String::new(),
            status,
            suspended_by,
            issued_at_epoch: 1,
            issued_by: IssuedBy::Master,
            default_namespace: "default".into(),
            namespaces: vec!["default".into()],
            allow_ips: vec![],
            deny_ips: vec![],
            expires_at: None,
            qps: None,
            last_used_at: None,
            revision: 0,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn an_admins_suspension_sticks() {
        use KeyStatus::{Active, Revoked, Suspended};
        use SuspendedBy::{Admin, Master};
        let by_admin = key(Suspended, Some(Admin));
        let by_master = key(Suspended, Some(Master));
        let active = key(Active, None);
        assert!(matches!(
            status_after(&by_admin, Some(Active), Master),
            Err(TenantError::SuspendedByAdmin)
        ));
        assert_eq!(
            status_after(&by_admin, Some(Active), Admin).unwrap(),
            (Active, None)
        );
        assert_eq!(
            status_after(&by_admin, Some(Suspended), Master).unwrap(),
            (Suspended, Some(Admin))
        );
        assert_eq!(
            status_after(&by_admin, Some(Revoked), Master).unwrap(),
            (Revoked, None)
        );
        assert_eq!(
            status_after(&by_admin, None, Master).unwrap(),
            (Suspended, Some(Admin))
        );
        assert_eq!(
            status_after(&by_master, Some(Active), Master).unwrap(),
            (Active, None)
        );
        assert_eq!(
            status_after(&by_master, Some(Suspended), Admin).unwrap(),
            (Suspended, Some(Admin))
        );
        assert_eq!(
            status_after(&by_master, None, Admin).unwrap(),
            (Suspended, Some(Master))
        );
        assert_eq!(
            status_after(&active, Some(Suspended), Master).unwrap(),
            (Suspended, Some(Master))
        );
        assert_eq!(
            status_after(&active, Some(Suspended), Admin).unwrap(),
            (Suspended, Some(Admin))
        );
    }
}
