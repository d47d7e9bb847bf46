//! Configuration import: all its writes in one transaction ([`ImportTx`]), so a failure
//! at the last entity leaves the database exactly as it was. Masters and keys keep what a
//! backup carries (epochs, digests, statuses) instead of starting fresh as the API does.

use ez_config::DatabaseKind;
use ez_contract::snapshot::{KeyStatus, MasterStatus};
use ez_contract::time::now_unix;
use sqlx::{Any, Transaction};
use tokio::sync::OwnedMutexGuard;

use super::bindings::{self, Binding, BindingWrite};
use super::keys::{self, KEY_COLUMNS, KeyWrite};
use super::masters::{self, COLUMNS as MASTER_COLUMNS, MasterWrite, from_row as master_from_row};
use super::models::{IssuedBy, Key, Master, Namespace, NamespaceStatus, SuspendedBy};
use super::providers::{self, ApiKey, ApiKeyWrite, GroupWrite, ProviderGroup};
use super::{Store, StoreError, StoreResult, json_list, model_overrides, namespaces};
use crate::models::ModelOverride;

/// A master as a configuration document describes it (validated by the importer).
#[derive(Debug, Clone)]
pub struct MasterImport {
    pub name: String,
    pub group: String,
    pub status: MasterStatus,
    pub max_child_keys: i64,
    pub global_qps: i64,
    pub epoch: i64,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub token_digest: String,
    pub token_prefix: String,
}

/// A child key as a configuration document describes it (validated by the importer).
#[derive(Debug, Clone)]
pub struct KeyImport {
    pub master_id: i64,
    pub name: String,
    pub token_digest: String,
    pub token_prefix: String,
    pub status: KeyStatus,
    pub suspended_by: Option<SuspendedBy>,
    pub issued_at_epoch: i64,
    pub issued_by: IssuedBy,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub allow_ips: Vec<String>,
    pub deny_ips: Vec<String>,
    pub expires_at: Option<i64>,
    pub qps: Option<i64>,
}

/// The writes of one import, inside one database transaction. End it with
/// [`ImportTx::commit`] or [`ImportTx::rollback`]; on SQLite it holds the store's write
/// permit until then, so no other write interleaves.
pub struct ImportTx {
    tx: Transaction<'static, Any>,
    _permit: Option<OwnedMutexGuard<()>>,
}

impl Store {
    /// Starts the transaction of an import.
    pub async fn begin_import(&self) -> StoreResult<ImportTx> {
        let permit = match self.kind {
            DatabaseKind::Sqlite => Some(self.sqlite_writer.clone().lock_owned().await),
            DatabaseKind::Postgres => None,
        };
        let tx = self.begin_write().await?;
        Ok(ImportTx { tx, _permit: permit })
    }
}

impl ImportTx {
    pub async fn commit(self) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }

    /// Undoes every write of the import. Never merely drop an `ImportTx` on an error
    /// path: see `Store::finish`.
    pub async fn rollback(self) {
        if let Err(e) = self.tx.rollback().await {
            tracing::warn!(error = %e, "rollback of an import failed");
        }
    }

    pub async fn create_namespace(
        &mut self,
        name: &str,
        description: &str,
        status: NamespaceStatus,
    ) -> StoreResult<Namespace> {
        namespaces::insert_namespace(&mut self.tx, name, description, status).await
    }

    pub async fn update_namespace(
        &mut self,
        id: i64,
        name: &str,
        description: &str,
        status: NamespaceStatus,
    ) -> StoreResult<Namespace> {
        namespaces::write_namespace(&mut self.tx, id, name, description, status).await
    }

    pub async fn create_group(&mut self, w: &GroupWrite) -> StoreResult<ProviderGroup> {
        providers::insert_group(&mut self.tx, w).await
    }

    pub async fn update_group(&mut self, id: i64, w: &GroupWrite) -> StoreResult<ProviderGroup> {
        providers::write_group(&mut self.tx, id, w).await
    }

    pub async fn create_api_key(&mut self, w: &ApiKeyWrite) -> StoreResult<ApiKey> {
        providers::insert_api_key(&mut self.tx, w).await
    }

    pub async fn update_api_key(&mut self, id: i64, w: &ApiKeyWrite) -> StoreResult<ApiKey> {
        providers::write_api_key(&mut self.tx, id, w).await
    }

    pub async fn create_binding(&mut self, w: &BindingWrite) -> StoreResult<Binding> {
        bindings::insert_binding(&mut self.tx, w).await
    }

    pub async fn update_binding(&mut self, id: i64, w: &BindingWrite) -> StoreResult<Binding> {
        bindings::write_binding(&mut self.tx, id, w).await
    }

    pub async fn put_model_override(&mut self, name: &str, value: &ModelOverride) -> StoreResult<()> {
        model_overrides::upsert_override(&mut self.tx, name, value).await
    }

    pub async fn create_master(&mut self, m: &MasterImport) -> StoreResult<Master> {
        let row = sqlx::query(&format!(
            "INSERT INTO masters (name, group_name, status, max_child_keys, global_qps, epoch, default_namespace, \
             namespaces, token_digest, token_prefix, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING {MASTER_COLUMNS}"
        ))
        .bind(&m.name)
        .bind(&m.group)
        .bind(m.status.as_str())
        .bind(m.max_child_keys)
        .bind(m.global_qps)
        .bind(m.epoch)
        .bind(&m.default_namespace)
        .bind(json_list(&m.namespaces))
        .bind(&m.token_digest)
        .bind(&m.token_prefix)
        .bind(now_unix())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::or_conflict(e, &format!("master {:?} or its key", m.name)))?;
        master_from_row(&row)
    }

    /// Overwrites a master's fields and key digest and raises (never lowers) its epoch:
    /// lowering it would bring revoked keys back.
    pub async fn update_master(
        &mut self,
        id: i64,
        w: &MasterWrite,
        epoch: i64,
        digest: &str,
        prefix: &str,
    ) -> StoreResult<Master> {
        let now = now_unix();
        masters::write_master(&mut self.tx, id, w, now).await?;
        let row = sqlx::query(&format!(
            "UPDATE masters SET revision = revision + 1, epoch = CASE WHEN epoch > $2 THEN epoch ELSE $2 END, \
             token_digest = $3, token_prefix = $4, updated_at = $5 WHERE id = $1 RETURNING {MASTER_COLUMNS}"
        ))
        .bind(id)
        .bind(epoch)
        .bind(digest)
        .bind(prefix)
        .bind(now)
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(|e| StoreError::or_conflict(e, "a master with this key"))?
        .ok_or(StoreError::NotFound("master"))?;
        master_from_row(&row)
    }

    pub async fn create_key(&mut self, k: &KeyImport) -> StoreResult<Key> {
        let row = sqlx::query(&format!(
            "INSERT INTO child_keys (master_id, name, token_digest, token_prefix, status, suspended_by, \
             issued_at_epoch, issued_by, default_namespace, namespaces, allow_ips, deny_ips, expires_at, qps, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15) RETURNING {KEY_COLUMNS}"
        ))
        .bind(k.master_id)
        .bind(&k.name)
        .bind(&k.token_digest)
        .bind(&k.token_prefix)
        .bind(k.status.as_str())
        .bind(k.suspended_by.map(SuspendedBy::as_str))
        .bind(k.issued_at_epoch)
        .bind(k.issued_by.as_str())
        .bind(&k.default_namespace)
        .bind(json_list(&k.namespaces))
        .bind(json_list(&k.allow_ips))
        .bind(json_list(&k.deny_ips))
        .bind(k.expires_at)
        .bind(k.qps)
        .bind(now_unix())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| StoreError::or_conflict(e, &format!("key {:?} or its digest", k.name)))?;
        keys::from_row(&row)
    }

    /// Overwrites a key's changeable fields; a revoked key stays revoked (see
    /// [`Store::update_key`]). An import restores keys as the document has them, so the
    /// master's `max_child_keys` is not checked here.
    pub async fn update_key(&mut self, id: i64, w: &KeyWrite) -> StoreResult<Key> {
        keys::write_key(&mut self.tx, id, w, now_unix()).await
    }
}
