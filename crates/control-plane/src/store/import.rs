//! Writes used only by configuration import: they keep what a backup carries (epochs,
//! digests, statuses) instead of starting fresh as the API does.

use ez_contract::time::now_unix;

use super::keys::KEY_COLUMNS;
use super::masters::{COLUMNS as MASTER_COLUMNS, from_row as master_from_row};
use super::models::{Key, Master};
use super::{Store, StoreError, StoreResult, json_list};

/// A master as a configuration document describes it.
#[derive(Debug, Clone)]
pub struct MasterImport {
    pub name: String,
    pub group: String,
    pub status: String,
    pub max_child_keys: i64,
    pub global_qps: i64,
    pub epoch: i64,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub token_digest: String,
    pub token_prefix: String,
}

/// A child key as a configuration document describes it.
#[derive(Debug, Clone)]
pub struct KeyImport {
    pub master_id: i64,
    pub name: String,
    pub token_digest: String,
    pub token_prefix: String,
    pub status: String,
    pub issued_at_epoch: i64,
    pub issued_by: String,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub allow_ips: Vec<String>,
    pub deny_ips: Vec<String>,
    pub expires_at: Option<i64>,
    pub qps: Option<i64>,
}

impl Store {
    pub async fn import_master(&self, m: &MasterImport) -> StoreResult<Master> {
        let _permit = self.write_permit().await;
        let row = sqlx::query(&format!(
            "INSERT INTO masters (name, group_name, status, max_child_keys, global_qps, epoch, default_namespace, \
             namespaces, token_digest, token_prefix, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {MASTER_COLUMNS}"
        ))
        .bind(&m.name)
        .bind(&m.group)
        .bind(&m.status)
        .bind(m.max_child_keys)
        .bind(m.global_qps)
        .bind(m.epoch)
        .bind(&m.default_namespace)
        .bind(json_list(&m.namespaces))
        .bind(&m.token_digest)
        .bind(&m.token_prefix)
        .bind(now_unix())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::or_conflict(e, &format!("master {:?} or its key", m.name)))?;
        master_from_row(&row)
    }

    /// Overwrites a master's key digest and raises (never lowers) its epoch: lowering it
    /// would bring revoked keys back.
    pub async fn merge_master_credentials(
        &self,
        id: i64,
        epoch: i64,
        digest: &str,
        prefix: &str,
    ) -> StoreResult<Master> {
        let _permit = self.write_permit().await;
        let row = sqlx::query(&format!(
            "UPDATE masters SET revision = revision + 1, epoch = CASE WHEN epoch > $2 THEN epoch ELSE $2 END, token_digest = $3, \
             token_prefix = $4, updated_at = $5 WHERE id = $1 RETURNING {MASTER_COLUMNS}"
        ))
        .bind(id)
        .bind(epoch)
        .bind(digest)
        .bind(prefix)
        .bind(now_unix())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| StoreError::or_conflict(e, "a master with this key"))?
        .ok_or(StoreError::NotFound("master"))?;
        master_from_row(&row)
    }

    pub async fn import_key(&self, k: &KeyImport) -> StoreResult<Key> {
        let _permit = self.write_permit().await;
        let row = sqlx::query(&format!(
            "INSERT INTO child_keys (master_id, name, token_digest, token_prefix, status, issued_at_epoch, issued_by, \
             default_namespace, namespaces, allow_ips, deny_ips, expires_at, qps, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING {KEY_COLUMNS}"
        ))
        .bind(k.master_id)
        .bind(&k.name)
        .bind(&k.token_digest)
        .bind(&k.token_prefix)
        .bind(&k.status)
        .bind(k.issued_at_epoch)
        .bind(&k.issued_by)
        .bind(&k.default_namespace)
        .bind(json_list(&k.namespaces))
        .bind(json_list(&k.allow_ips))
        .bind(json_list(&k.deny_ips))
        .bind(k.expires_at)
        .bind(k.qps)
        .bind(now_unix())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::or_conflict(e, &format!("key {:?} or its digest", k.name)))?;
        super::keys::from_row(&row)
    }
}
