//! Masters and their child keys: every rule of SPEC §3–§5 in one place, used by the
//! admin handlers and the master's own `/v1/tokens` handlers alike. Each change is
//! committed to the database first, then written to the bus.

use ez_contract::snapshot::{KeyStatus, MasterStatus};
use ez_contract::{SecretToken, TokenKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::{IssuedBy, Key, KeyWrite, Master, MasterWrite, NewKey, NewMaster};
use crate::validation::{self, double_option};

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
    /// `active`, `suspended` or `revoked` (final).
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

/// Resolved access: the default namespace and the allowed list, default included.
struct Access {
    default_namespace: String,
    namespaces: Vec<String>,
}

/// Applies requested access changes over `current`, validates names and existence.
async fn resolve_access(
    state: &AppState,
    requested_default: Option<&str>,
    requested_list: Option<&[String]>,
    current: (&str, &[String]),
) -> ApiResult<Access> {
    let namespaces = match requested_list {
        Some(list) => {
            let list = validation::identifier_list("namespaces", list)?;
            if list.is_empty() {
                return Err(ApiError::invalid_field("namespaces", "must not be empty"));
            }
            list
        }
        None => current.1.to_vec(),
    };
    let default_namespace = match requested_default {
        Some(name) => validation::identifier("default_namespace", name)?,
        None if namespaces.iter().any(|n| n == current.0) => current.0.to_owned(),
        None => namespaces[0].clone(),
    };
    let mut namespaces = namespaces;
    if !namespaces.contains(&default_namespace) {
        if requested_list.is_some() {
            return Err(ApiError::unprocessable(
                "default_namespace_not_in_namespaces",
                format!("default_namespace {default_namespace:?} must be one of namespaces"),
            ));
        }
        namespaces.insert(0, default_namespace.clone());
    }
    let missing = state.store.missing_namespaces(&namespaces).await?;
    if !missing.is_empty() {
        return Err(ApiError::unprocessable(
            "namespace_not_found",
            format!("unknown namespace(s): {}", missing.join(", ")),
        ));
    }
    Ok(Access {
        default_namespace,
        namespaces,
    })
}

fn ensure_subset(key_namespaces: &[String], master: &Master) -> ApiResult<()> {
    let outside: Vec<&str> = key_namespaces
        .iter()
        .filter(|n| !master.namespaces.contains(n))
        .map(String::as_str)
        .collect();
    if outside.is_empty() {
        Ok(())
    } else {
        Err(ApiError::unprocessable(
            "namespace_not_allowed",
            format!("namespace(s) not allowed for this master: {}", outside.join(", ")),
        ))
    }
}

pub async fn create_master(state: &AppState, req: CreateMasterRequest) -> ApiResult<MasterWithKey> {
    let name = validation::display_name("name", &req.name)?;
    let group = validation::identifier("group", req.group.as_deref().unwrap_or(DEFAULT_GROUP))?;
    let max_child_keys = validation::non_negative(
        "max_child_keys",
        req.max_child_keys.unwrap_or(DEFAULT_MAX_CHILD_KEYS),
    )?;
    let global_qps = validation::non_negative("global_qps", req.global_qps.unwrap_or(0))?;
    let default_namespace = req
        .default_namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    let default_list = [default_namespace.clone()];
    let access = resolve_access(
        state,
        req.default_namespace.as_deref(),
        req.namespaces.as_deref(),
        (&default_namespace, &default_list),
    )
    .await?;
    let token = SecretToken::generate(TokenKind::Master);
    let master = state
        .store
        .create_master(&NewMaster {
            name,
            group,
            max_child_keys,
            global_qps,
            default_namespace: access.default_namespace,
            namespaces: access.namespaces,
            token_digest: token.digest(),
            token_prefix: token.display_prefix(),
        })
        .await?;
    state.sync.master_changed(master.id).await;
    tracing::info!(master_id = master.id, "master created");
    Ok(MasterWithKey {
        master,
        master_key: token.expose().to_owned(),
    })
}

pub async fn update_master(state: &AppState, id: i64, req: UpdateMasterRequest) -> ApiResult<Master> {
    let current = state.store.get_master(id).await?;
    let mut write = MasterWrite::from(&current);
    if let Some(name) = &req.name {
        write.name = validation::display_name("name", name)?;
    }
    if let Some(group) = &req.group {
        write.group = validation::identifier("group", group)?;
    }
    if let Some(status) = req.status {
        write.status = status;
    }
    if let Some(max) = req.max_child_keys {
        write.max_child_keys = validation::non_negative("max_child_keys", max)?;
    }
    if let Some(qps) = req.global_qps {
        write.global_qps = validation::non_negative("global_qps", qps)?;
    }
    let master = state.store.update_master(id, &write).await?;
    state.sync.master_changed(master.id).await;
    Ok(master)
}

pub async fn delete_master(state: &AppState, id: i64) -> ApiResult<Master> {
    let (master, keys) = state.store.delete_master(id).await?;
    state.sync.master_changed(master.id).await;
    tracing::info!(
        master_id = id,
        revoked_keys = keys.len(),
        "master deleted (suspended, keys revoked)"
    );
    Ok(master)
}

pub async fn rotate_master(state: &AppState, id: i64) -> ApiResult<MasterWithKey> {
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

pub async fn revoke_master_keys(state: &AppState, id: i64) -> ApiResult<Master> {
    let master = state.store.bump_master_epoch(id).await?;
    state.sync.master_changed(master.id).await;
    tracing::info!(
        master_id = id,
        epoch = master.epoch,
        "child keys revoked by epoch bump"
    );
    Ok(master)
}

pub async fn update_master_access(state: &AppState, id: i64, req: UpdateAccessRequest) -> ApiResult<Master> {
    let current = state.store.get_master(id).await?;
    let access = resolve_access(
        state,
        req.default_namespace.as_deref(),
        req.namespaces.as_deref(),
        (&current.default_namespace, &current.namespaces),
    )
    .await?;
    let keys = state.store.keys_of_master(id).await?;
    let mut key_updates = Vec::new();
    let mut outside = 0usize;
    for key in keys.iter().filter(|k| k.status != KeyStatus::Revoked) {
        let kept: Vec<String> = key
            .namespaces
            .iter()
            .filter(|n| access.namespaces.contains(n))
            .cloned()
            .collect();
        if kept.len() == key.namespaces.len() && kept.contains(&key.default_namespace) {
            continue;
        }
        outside += 1;
        let kept = if kept.is_empty() {
            vec![access.default_namespace.clone()]
        } else {
            kept
        };
        let default = if kept.contains(&key.default_namespace) {
            key.default_namespace.clone()
        } else if kept.contains(&access.default_namespace) {
            access.default_namespace.clone()
        } else {
            kept[0].clone()
        };
        key_updates.push((key.id, default, kept));
    }
    if outside > 0 && !req.propagate {
        return Err(ApiError::conflict(
            "keys_outside_namespaces",
            format!(
                "{outside} child key(s) use namespaces outside the new list; send \"propagate\": true to narrow them"
            ),
        ));
    }
    let (master, _) = state
        .store
        .update_master_access(id, &access.default_namespace, &access.namespaces, &key_updates)
        .await?;
    state.sync.master_changed(master.id).await;
    Ok(master)
}

pub async fn create_key(
    state: &AppState,
    master: &Master,
    issued_by: IssuedBy,
    req: CreateKeyRequest,
) -> ApiResult<KeyWithSecret> {
    if master.status != MasterStatus::Active {
        return Err(ApiError::conflict(
            "master_suspended",
            "cannot issue keys for a suspended master",
        ));
    }
    let token = SecretToken::generate(TokenKind::Child);
    let name = match &req.name {
        Some(name) => validation::display_name("name", name)?,
        None => token.display_prefix(),
    };
    let access = resolve_access(
        state,
        req.default_namespace.as_deref(),
        req.namespaces.as_deref(),
        (&master.default_namespace, &master.namespaces),
    )
    .await?;
    ensure_subset(&access.namespaces, master)?;
    let allow_ips = validation::cidr_list("allow_ips", req.allow_ips.as_deref().unwrap_or_default())?;
    let deny_ips = validation::cidr_list("deny_ips", req.deny_ips.as_deref().unwrap_or_default())?;
    let expires_at = req
        .expires_at
        .map(|t| validation::future_time("expires_at", t))
        .transpose()?;
    let qps = req.qps.map(|q| validation::non_negative("qps", q)).transpose()?;
    let key = state
        .store
        .create_key(&NewKey {
            master_id: master.id,
            name,
            token_digest: token.digest(),
            token_prefix: token.display_prefix(),
            issued_by,
            default_namespace: access.default_namespace,
            namespaces: access.namespaces,
            allow_ips,
            deny_ips,
            expires_at,
            qps,
        })
        .await?;
    // Re-read the master: the key carries its group, and the epoch may have moved.
    let master = state.store.get_master(master.id).await?;
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
pub async fn get_key(state: &AppState, id: i64, owner: Option<&Master>) -> ApiResult<Key> {
    let key = state.store.get_key(id).await?;
    match owner {
        Some(master) if master.id != key.master_id => Err(ApiError::not_found("key")),
        _ => Ok(key),
    }
}

pub async fn update_key(
    state: &AppState,
    id: i64,
    owner: Option<&Master>,
    req: UpdateKeyRequest,
) -> ApiResult<Key> {
    let current = get_key(state, id, owner).await?;
    if current.status == KeyStatus::Revoked {
        return Err(ApiError::conflict(
            "key_revoked",
            "a revoked key cannot be changed",
        ));
    }
    let master = state.store.get_master(current.master_id).await?;
    let mut write = KeyWrite::from(&current);
    if let Some(name) = &req.name {
        write.name = validation::display_name("name", name)?;
    }
    if let Some(status) = req.status {
        write.status = status;
    }
    if req.default_namespace.is_some() || req.namespaces.is_some() {
        let access = resolve_access(
            state,
            req.default_namespace.as_deref(),
            req.namespaces.as_deref(),
            (&current.default_namespace, &current.namespaces),
        )
        .await?;
        ensure_subset(&access.namespaces, &master)?;
        write.default_namespace = access.default_namespace;
        write.namespaces = access.namespaces;
    }
    if let Some(list) = &req.allow_ips {
        write.allow_ips = validation::cidr_list("allow_ips", list)?;
    }
    if let Some(list) = &req.deny_ips {
        write.deny_ips = validation::cidr_list("deny_ips", list)?;
    }
    if let Some(expires_at) = req.expires_at {
        write.expires_at = expires_at
            .map(|t| validation::future_time("expires_at", t))
            .transpose()?;
    }
    if let Some(qps) = req.qps {
        write.qps = qps.map(|q| validation::non_negative("qps", q)).transpose()?;
    }
    let key = state.store.update_key(id, &write).await?;
    state.sync.key_changed(key.id).await;
    Ok(key)
}

pub async fn update_key_access(state: &AppState, id: i64, req: UpdateKeyAccessRequest) -> ApiResult<Key> {
    let req = UpdateKeyRequest {
        default_namespace: req.default_namespace,
        namespaces: req.namespaces,
        ..Default::default()
    };
    update_key(state, id, None, req).await
}

pub async fn revoke_key(state: &AppState, id: i64, owner: Option<&Master>) -> ApiResult<Key> {
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
