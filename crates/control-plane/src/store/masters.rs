use ez_contract::snapshot::MasterStatus;
use ez_contract::time::now_unix;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::models::{Key, Master};
use super::{PageRequest, Store, StoreError, StoreResult, count, json_list, parse_list};

pub(super) const COLUMNS: &str = "id, name, group_name, status, max_child_keys, global_qps, epoch, \
     default_namespace, namespaces, token_digest, token_prefix, revision, created_at, updated_at";

/// A master to insert; validated by the tenants service.
#[derive(Debug, Clone)]
pub struct NewMaster {
    pub name: String,
    pub group: String,
    pub max_child_keys: i64,
    pub global_qps: i64,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub token_digest: String,
    pub token_prefix: String,
}

/// The fields of a master an update may change. Epoch and token have their own atomic
/// operations so that an update can never undo a revocation or a rotation.
#[derive(Debug, Clone)]
pub struct MasterWrite {
    pub name: String,
    pub group: String,
    pub status: MasterStatus,
    pub max_child_keys: i64,
    pub global_qps: i64,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    /// The revision the change was computed from.
    pub revision: i64,
}

impl From<&Master> for MasterWrite {
    fn from(m: &Master) -> MasterWrite {
        MasterWrite {
            name: m.name.clone(),
            group: m.group.clone(),
            status: m.status,
            max_child_keys: m.max_child_keys,
            global_qps: m.global_qps,
            default_namespace: m.default_namespace.clone(),
            namespaces: m.namespaces.clone(),
            revision: m.revision,
        }
    }
}

pub(super) fn from_row(row: &AnyRow) -> StoreResult<Master> {
    let status: String = row.try_get("status")?;
    let namespaces: String = row.try_get("namespaces")?;
    Ok(Master {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        group: row.try_get("group_name")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        max_child_keys: row.try_get("max_child_keys")?,
        global_qps: row.try_get("global_qps")?,
        epoch: row.try_get("epoch")?,
        default_namespace: row.try_get("default_namespace")?,
        namespaces: parse_list("masters.namespaces", &namespaces)?,
        token_digest: row.try_get("token_digest")?,
        token_prefix: row.try_get("token_prefix")?,
        revision: row.try_get("revision")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn create_master(&self, new: &NewMaster) -> StoreResult<Master> {
        let _permit = self.write_permit().await;
        let now = now_unix();
        let row = sqlx::query(&format!(
            "INSERT INTO masters (name, group_name, status, max_child_keys, global_qps, epoch, \
             default_namespace, namespaces, token_digest, token_prefix, created_at, updated_at) \
             VALUES ($1, $2, 'active', $3, $4, 1, $5, $6, $7, $8, $9, $9) RETURNING {COLUMNS}"
        ))
        .bind(&new.name)
        .bind(&new.group)
        .bind(new.max_child_keys)
        .bind(new.global_qps)
        .bind(&new.default_namespace)
        .bind(json_list(&new.namespaces))
        .bind(&new.token_digest)
        .bind(&new.token_prefix)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::or_conflict(e, &format!("master {:?}", new.name)))?;
        from_row(&row)
    }

    pub async fn list_masters(&self, page: PageRequest) -> StoreResult<(Vec<Master>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM masters ORDER BY id LIMIT $1 OFFSET $2"
        ))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let total = count(
            &sqlx::query("SELECT COUNT(*) FROM masters")
                .fetch_one(&self.pool)
                .await?,
        )?;
        Ok((rows.iter().map(from_row).collect::<StoreResult<_>>()?, total))
    }

    pub async fn all_masters(&self) -> StoreResult<Vec<Master>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM masters ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_master(&self, id: i64) -> StoreResult<Master> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM masters WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("master"))?;
        from_row(&row)
    }

    pub async fn find_master_by_digest(&self, digest: &str) -> StoreResult<Option<Master>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM masters WHERE token_digest = $1"))
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    pub async fn update_master(&self, id: i64, w: &MasterWrite) -> StoreResult<Master> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        write_master(&mut conn, id, w, now_unix()).await
    }

    /// Raises the master's revocation epoch by one: every key issued before is dead.
    pub async fn bump_master_epoch(&self, id: i64) -> StoreResult<Master> {
        let _permit = self.write_permit().await;
        let row = sqlx::query(&format!(
            "UPDATE masters SET revision = revision + 1, epoch = epoch + 1, updated_at = $2 WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(now_unix())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("master"))?;
        from_row(&row)
    }

    pub async fn rotate_master_token(&self, id: i64, digest: &str, prefix: &str) -> StoreResult<Master> {
        let _permit = self.write_permit().await;
        let row = sqlx::query(&format!(
            "UPDATE masters SET revision = revision + 1, token_digest = $2, token_prefix = $3, updated_at = $4 \
             WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .bind(digest)
        .bind(prefix)
        .bind(now_unix())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("master"))?;
        from_row(&row)
    }

    /// Suspends the master and revokes all its keys in one transaction.
    pub async fn delete_master(&self, id: i64) -> StoreResult<(Master, Vec<Key>)> {
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let now = now_unix();
            let row = sqlx::query(&format!(
                "UPDATE masters SET revision = revision + 1, status = 'suspended', updated_at = $2 WHERE id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("master"))?;
            let master = from_row(&row)?;
            sqlx::query(
                "UPDATE child_keys SET revision = revision + 1, status = 'revoked', suspended_by = NULL, updated_at = $2 \
                 WHERE master_id = $1",
            )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            let keys = super::keys::keys_of_master(&mut *tx, id).await?;
            Ok((master, keys))
        }
        .await;
        self.finish(tx, result).await
    }

    /// Sets the master's namespaces and, in the same transaction, the rewritten access of
    /// its keys (`key_updates`: id, default namespace, namespaces).
    pub async fn update_master_access(
        &self,
        id: i64,
        default_namespace: &str,
        namespaces: &[String],
        key_updates: &[(i64, String, Vec<String>)],
    ) -> StoreResult<(Master, Vec<Key>)> {
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let now = now_unix();
            let row = sqlx::query(&format!(
                "UPDATE masters SET revision = revision + 1, default_namespace = $2, namespaces = $3, updated_at = $4 \
                 WHERE id = $1 RETURNING {COLUMNS}"
            ))
            .bind(id)
            .bind(default_namespace)
            .bind(json_list(namespaces))
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("master"))?;
            let master = from_row(&row)?;
            for (key_id, default, list) in key_updates {
                sqlx::query(
                    "UPDATE child_keys SET revision = revision + 1, default_namespace = $3, namespaces = $4, updated_at = $5 \
                     WHERE id = $1 AND master_id = $2",
                )
                .bind(key_id)
                .bind(id)
                .bind(default)
                .bind(json_list(list))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let keys = super::keys::keys_of_master(&mut *tx, id).await?;
            Ok((master, keys))
        }
        .await;
        self.finish(tx, result).await
    }
}

/// The `UPDATE` of [`Store::update_master`], also run inside an import's transaction.
pub(super) async fn write_master(
    conn: &mut AnyConnection,
    id: i64,
    w: &MasterWrite,
    now: i64,
) -> StoreResult<Master> {
    let row = sqlx::query(&format!(
        "UPDATE masters SET revision = revision + 1, name = $2, group_name = $3, status = $4, max_child_keys = $5, \
         global_qps = $6, default_namespace = $7, namespaces = $8, updated_at = $9 \
         WHERE id = $1 AND revision = $10 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&w.name)
    .bind(&w.group)
    .bind(w.status.as_str())
    .bind(w.max_child_keys)
    .bind(w.global_qps)
    .bind(&w.default_namespace)
    .bind(json_list(&w.namespaces))
    .bind(now)
    .bind(w.revision)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &format!("master {:?}", w.name)))?;
    match row {
        Some(row) => from_row(&row),
        None => {
            sqlx::query("SELECT id FROM masters WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound("master"))?;
            Err(StoreError::Conflict(format!(
                "master {id} changed meanwhile; read it again and retry"
            )))
        }
    }
}
