use ez_contract::snapshot::KeyStatus;
use ez_contract::time::now_unix;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

use super::models::{IssuedBy, Key, SuspendedBy};
use super::{PageRequest, Store, StoreError, StoreResult, count, json_list, parse_list};

pub(super) const KEY_COLUMNS: &str = "id, master_id, name, token_digest, token_prefix, status, suspended_by, \
     issued_at_epoch, issued_by, default_namespace, namespaces, allow_ips, deny_ips, expires_at, qps, \
     last_used_at, revision, created_at, updated_at";

/// How many keys of master `m` take one of its `max_child_keys` slots: the SQL twin of
/// [`Key::takes_a_slot`] (not revoked, issued at or after the master's epoch, not
/// expired; suspended keys count). `now` names the parameter holding the Unix time.
fn slots_taken(now: &str) -> String {
    format!(
        "(SELECT COUNT(*) FROM child_keys k WHERE k.master_id = m.id AND k.status <> 'revoked' \
         AND k.issued_at_epoch >= m.epoch AND (k.expires_at IS NULL OR k.expires_at > {now}))"
    )
}

/// A child key to insert; validated by the tenants service.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub master_id: i64,
    pub name: String,
    pub token_digest: String,
    pub token_prefix: String,
    pub issued_by: IssuedBy,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub allow_ips: Vec<String>,
    pub deny_ips: Vec<String>,
    pub expires_at: Option<i64>,
    pub qps: Option<i64>,
}

/// The fields of a key an update may change.
#[derive(Debug, Clone)]
pub struct KeyWrite {
    pub name: String,
    pub status: KeyStatus,
    /// Set exactly when `status` is `suspended`.
    pub suspended_by: Option<SuspendedBy>,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub allow_ips: Vec<String>,
    pub deny_ips: Vec<String>,
    pub expires_at: Option<i64>,
    pub qps: Option<i64>,
    /// The revision the change was computed from.
    pub revision: i64,
}

impl From<&Key> for KeyWrite {
    fn from(k: &Key) -> KeyWrite {
        KeyWrite {
            name: k.name.clone(),
            status: k.status,
            suspended_by: k.suspended_by,
            default_namespace: k.default_namespace.clone(),
            namespaces: k.namespaces.clone(),
            allow_ips: k.allow_ips.clone(),
            deny_ips: k.deny_ips.clone(),
            expires_at: k.expires_at,
            qps: k.qps,
            revision: k.revision,
        }
    }
}

pub(super) fn from_row(row: &AnyRow) -> StoreResult<Key> {
    let status: String = row.try_get("status")?;
    let issued_by: String = row.try_get("issued_by")?;
    let suspended_by = row
        .try_get::<Option<String>, _>("suspended_by")?
        .map(|s| SuspendedBy::parse(&s).ok_or_else(|| StoreError::Corrupt(format!("suspended_by {s:?}"))))
        .transpose()?;
    let text = |column: &'static str| -> StoreResult<Vec<String>> {
        let raw: String = row.try_get(column)?;
        parse_list(column, &raw)
    };
    Ok(Key {
        id: row.try_get("id")?,
        master_id: row.try_get("master_id")?,
        name: row.try_get("name")?,
        token_digest: row.try_get("token_digest")?,
        token_prefix: row.try_get("token_prefix")?,
        status: status.parse().map_err(StoreError::Corrupt)?,
        suspended_by,
        issued_at_epoch: row.try_get("issued_at_epoch")?,
        issued_by: IssuedBy::parse(&issued_by)
            .ok_or_else(|| StoreError::Corrupt(format!("issued_by {issued_by:?}")))?,
        default_namespace: row.try_get("default_namespace")?,
        namespaces: text("namespaces")?,
        allow_ips: text("allow_ips")?,
        deny_ips: text("deny_ips")?,
        expires_at: row.try_get("expires_at")?,
        qps: row.try_get("qps")?,
        last_used_at: row.try_get("last_used_at")?,
        revision: row.try_get("revision")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

pub(super) async fn keys_of_master<'c, E>(executor: E, master_id: i64) -> StoreResult<Vec<Key>>
where
    E: Executor<'c, Database = Any>,
{
    let rows = sqlx::query(&format!(
        "SELECT {KEY_COLUMNS} FROM child_keys WHERE master_id = $1 ORDER BY id"
    ))
    .bind(master_id)
    .fetch_all(executor)
    .await?;
    rows.iter().map(from_row).collect()
}

impl Store {
    /// Inserts a key unless its master's `max_child_keys` slots are all taken (see
    /// [`Key::takes_a_slot`]). The key is stamped with the master's epoch at the moment of
    /// insertion, in the same statement, so a concurrent revocation cannot be missed.
    pub async fn create_key(&self, new: &NewKey) -> StoreResult<Key> {
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            // Serialises concurrent creations for one master (PostgreSQL); SQLite already runs
            // one writer at a time.
            let lock = format!("SELECT id FROM masters WHERE id = $1{}", self.lock_clause());
            sqlx::query(&lock)
                .bind(new.master_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound("master"))?;
            let now = now_unix();
            let row = sqlx::query(&format!(
                "INSERT INTO child_keys (master_id, name, token_digest, token_prefix, status, \
                 issued_at_epoch, issued_by, default_namespace, namespaces, allow_ips, deny_ips, \
                 expires_at, qps, created_at, updated_at) \
                 SELECT $1, $2, $3, $4, 'active', m.epoch, $5, $6, $7, $8, $9, $10, $11, $12, $12 \
                 FROM masters m WHERE m.id = $1 AND m.max_child_keys > {} \
                 RETURNING {KEY_COLUMNS}",
                slots_taken("$12")
            ))
            .bind(new.master_id)
            .bind(&new.name)
            .bind(&new.token_digest)
            .bind(&new.token_prefix)
            .bind(new.issued_by.as_str())
            .bind(&new.default_namespace)
            .bind(json_list(&new.namespaces))
            .bind(json_list(&new.allow_ips))
            .bind(json_list(&new.deny_ips))
            .bind(new.expires_at)
            .bind(new.qps)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| StoreError::or_conflict(e, &format!("a key named {:?}", new.name)))?;
            let Some(row) = row else {
                return Err(StoreError::LimitReached(
                    "the master already has max_child_keys keys that can authenticate".into(),
                ));
            };
            let key = from_row(&row)?;
            Ok(key)
        }
        .await;
        self.finish(tx, result).await
    }

    pub async fn list_keys(&self, master_id: i64, page: PageRequest) -> StoreResult<(Vec<Key>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM child_keys WHERE master_id = $1 ORDER BY id LIMIT $2 OFFSET $3"
        ))
        .bind(master_id)
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let total = count(
            &sqlx::query("SELECT COUNT(*) FROM child_keys WHERE master_id = $1")
                .bind(master_id)
                .fetch_one(&self.pool)
                .await?,
        )?;
        Ok((rows.iter().map(from_row).collect::<StoreResult<_>>()?, total))
    }

    pub async fn keys_of_master(&self, master_id: i64) -> StoreResult<Vec<Key>> {
        keys_of_master(&self.pool, master_id).await
    }

    pub async fn all_keys(&self) -> StoreResult<Vec<Key>> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM child_keys ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn get_key(&self, id: i64) -> StoreResult<Key> {
        get_key(&self.pool, id).await
    }

    pub async fn find_key_by_digest(&self, digest: &str) -> StoreResult<Option<Key>> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM child_keys WHERE token_digest = $1"
        ))
        .bind(digest)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Writes the changeable fields of a key. A revoked key stays revoked: the update
    /// does not apply to it unless it is itself a revocation. An update that gives an
    /// expired key a slot again (a new expiry) needs a free slot, checked under the
    /// master's lock as when a key is issued.
    pub async fn update_key(&self, id: i64, w: &KeyWrite) -> StoreResult<Key> {
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let now = now_unix();
            let current = get_key(&mut *tx, id).await?;
            let expired = current.expires_at.is_some_and(|t| t <= now);
            let renewed = w.status != KeyStatus::Revoked && w.expires_at.is_none_or(|t| t > now);
            if expired && renewed {
                self.ensure_slot_for_renewal(&mut tx, &current, now).await?;
            }
            write_key(&mut tx, id, w, now).await
        }
        .await;
        self.finish(tx, result).await
    }

    async fn ensure_slot_for_renewal(
        &self,
        conn: &mut AnyConnection,
        key: &Key,
        now: i64,
    ) -> StoreResult<()> {
        let lock = format!("SELECT epoch FROM masters WHERE id = $1{}", self.lock_clause());
        let epoch: i64 = sqlx::query(&lock)
            .bind(key.master_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound("master"))?
            .try_get(0)?;
        if key.is_dead(epoch) {
            // It cannot authenticate again whatever its expiry: it takes no slot.
            return Ok(());
        }
        let room = sqlx::query(&format!(
            "SELECT m.max_child_keys - {} FROM masters m WHERE m.id = $1",
            slots_taken("$2")
        ))
        .bind(key.master_id)
        .bind(now)
        .fetch_one(&mut *conn)
        .await?;
        if count(&room)? <= 0 {
            return Err(StoreError::LimitReached(
                "renewing this expired key would exceed the master's max_child_keys".into(),
            ));
        }
        Ok(())
    }
}

pub(super) async fn get_key<'c, E>(executor: E, id: i64) -> StoreResult<Key>
where
    E: Executor<'c, Database = Any>,
{
    let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM child_keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(StoreError::NotFound("key"))?;
    from_row(&row)
}

/// The `UPDATE` of [`Store::update_key`], also run inside an import's transaction.
pub(super) async fn write_key(conn: &mut AnyConnection, id: i64, w: &KeyWrite, now: i64) -> StoreResult<Key> {
    let row = sqlx::query(&format!(
        "UPDATE child_keys SET revision = revision + 1, name = $2, status = $3, suspended_by = $4, \
         default_namespace = $5, namespaces = $6, allow_ips = $7, deny_ips = $8, expires_at = $9, qps = $10, \
         updated_at = $11 WHERE id = $1 AND revision = $12 AND (status <> 'revoked' OR $3 = 'revoked') \
         RETURNING {KEY_COLUMNS}"
    ))
    .bind(id)
    .bind(&w.name)
    .bind(w.status.as_str())
    .bind(w.suspended_by.map(SuspendedBy::as_str))
    .bind(&w.default_namespace)
    .bind(json_list(&w.namespaces))
    .bind(json_list(&w.allow_ips))
    .bind(json_list(&w.deny_ips))
    .bind(w.expires_at)
    .bind(w.qps)
    .bind(now)
    .bind(w.revision)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &format!("a key named {:?}", w.name)))?;
    match row {
        Some(row) => from_row(&row),
        None => {
            // Either the key is gone, or it was revoked or changed meanwhile.
            let current = get_key(&mut *conn, id).await?;
            Err(StoreError::Conflict(format!(
                "key {} is {} and changed meanwhile; read it again and retry",
                current.id, current.status
            )))
        }
    }
}
