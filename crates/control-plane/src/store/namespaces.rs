use ez_contract::time::now_unix;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::models::{Namespace, NamespaceStatus};
use super::{PageRequest, Store, StoreError, StoreResult, count};

const COLUMNS: &str = "id, name, description, status, created_at, updated_at";

fn from_row(row: &AnyRow) -> StoreResult<Namespace> {
    let status: String = row.try_get("status")?;
    Ok(Namespace {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        status: NamespaceStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("namespace status {status:?}")))?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl Store {
    pub async fn create_namespace(
        &self,
        name: &str,
        description: &str,
        status: NamespaceStatus,
    ) -> StoreResult<Namespace> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        insert_namespace(&mut conn, name, description, status).await
    }

    pub async fn list_namespaces(&self, page: PageRequest) -> StoreResult<(Vec<Namespace>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM namespaces ORDER BY id LIMIT $1 OFFSET $2"
        ))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let total = count(
            &sqlx::query("SELECT COUNT(*) FROM namespaces")
                .fetch_one(&self.pool)
                .await?,
        )?;
        Ok((rows.iter().map(from_row).collect::<StoreResult<_>>()?, total))
    }

    pub async fn get_namespace(&self, id: i64) -> StoreResult<Namespace> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM namespaces WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("namespace"))?;
        from_row(&row)
    }

    /// Which of `names` do not exist.
    pub async fn missing_namespaces(&self, names: &[String]) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM namespaces")
            .fetch_all(&self.pool)
            .await?;
        let existing: Vec<String> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
        Ok(names.iter().filter(|n| !existing.contains(n)).cloned().collect())
    }

    pub async fn update_namespace(
        &self,
        id: i64,
        name: &str,
        description: &str,
        status: NamespaceStatus,
    ) -> StoreResult<Namespace> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        write_namespace(&mut conn, id, name, description, status).await
    }

    /// How many masters, and keys that are not dead ([`super::Key::is_dead`]), name
    /// `namespace`.
    pub async fn namespace_usage(&self, namespace: &str) -> StoreResult<(i64, i64)> {
        // Namespace names are restricted to [A-Za-z0-9_-], so the quoted name can only
        // match a whole element of the JSON list; `_` is a LIKE wildcard and is escaped.
        let pattern = format!("%\"{}\"%", namespace.replace('_', "\\_"));
        let masters = count(
            &sqlx::query(
                "SELECT COUNT(*) FROM masters WHERE default_namespace = $1 OR namespaces LIKE $2 ESCAPE '\\'",
            )
            .bind(namespace)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?,
        )?;
        // Keys that can never authenticate again (revoked, or issued before their
        // master's epoch) are records: they do not hold a namespace. Expired keys do,
        // since a new expiry revives them.
        let keys = count(
            &sqlx::query(
                "SELECT COUNT(*) FROM child_keys k JOIN masters m ON m.id = k.master_id \
                 WHERE k.status <> 'revoked' AND k.issued_at_epoch >= m.epoch \
                 AND (k.default_namespace = $1 OR k.namespaces LIKE $2 ESCAPE '\\')",
            )
            .bind(namespace)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await?,
        )?;
        Ok((masters, keys))
    }

    pub async fn delete_namespace(&self, id: i64) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        let done = sqlx::query("DELETE FROM namespaces WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if done == 0 {
            return Err(StoreError::NotFound("namespace"));
        }
        Ok(())
    }
}

pub(super) async fn insert_namespace(
    conn: &mut AnyConnection,
    name: &str,
    description: &str,
    status: NamespaceStatus,
) -> StoreResult<Namespace> {
    let row = sqlx::query(&format!(
        "INSERT INTO namespaces (name, description, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) RETURNING {COLUMNS}"
    ))
    .bind(name)
    .bind(description)
    .bind(status.as_str())
    .bind(now_unix())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &format!("namespace {name:?}")))?;
    from_row(&row)
}

pub(super) async fn write_namespace(
    conn: &mut AnyConnection,
    id: i64,
    name: &str,
    description: &str,
    status: NamespaceStatus,
) -> StoreResult<Namespace> {
    let row = sqlx::query(&format!(
        "UPDATE namespaces SET name = $2, description = $3, status = $4, updated_at = $5 \
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(description)
    .bind(status.as_str())
    .bind(now_unix())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &format!("namespace {name:?}")))?
    .ok_or(StoreError::NotFound("namespace"))?;
    from_row(&row)
}
