//! Bindings: public model names in a namespace, bound to provider groups.

use ez_contract::time::now_unix;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::{PageRequest, Store, StoreError, StoreResult, count};

const COLUMNS: &str = "id, namespace, public_model, group_id, weight, selector_type, selector_value, status, created_at, updated_at";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Binding {
    pub id: i64,
    pub namespace: String,
    /// The name clients send.
    pub public_model: String,
    pub group_id: i64,
    /// Relative weight among the candidates of one (namespace, public model).
    pub weight: i64,
    /// `exact`, `regex` or `normalize_exact`.
    pub selector_type: String,
    /// Which of the group's models to use; empty = the public model.
    pub selector_value: String,
    /// `active` or `disabled`.
    pub status: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct BindingWrite {
    pub namespace: String,
    pub public_model: String,
    pub group_id: i64,
    pub weight: i64,
    pub selector_type: String,
    pub selector_value: String,
    pub status: String,
}

impl From<&Binding> for BindingWrite {
    fn from(b: &Binding) -> BindingWrite {
        BindingWrite {
            namespace: b.namespace.clone(),
            public_model: b.public_model.clone(),
            group_id: b.group_id,
            weight: b.weight,
            selector_type: b.selector_type.clone(),
            selector_value: b.selector_value.clone(),
            status: b.status.clone(),
        }
    }
}

fn from_row(row: &AnyRow) -> StoreResult<Binding> {
    Ok(Binding {
        id: row.try_get("id")?,
        namespace: row.try_get("namespace")?,
        public_model: row.try_get("public_model")?,
        group_id: row.try_get("group_id")?,
        weight: row.try_get("weight")?,
        selector_type: row.try_get("selector_type")?,
        selector_value: row.try_get("selector_value")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn conflict(w: &BindingWrite) -> String {
    format!(
        "a binding of {}.{} to group {}",
        w.namespace, w.public_model, w.group_id
    )
}

impl Store {
    pub async fn create_binding(&self, w: &BindingWrite) -> StoreResult<Binding> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        insert_binding(&mut conn, w).await
    }

    pub async fn update_binding(&self, id: i64, w: &BindingWrite) -> StoreResult<Binding> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        write_binding(&mut conn, id, w).await
    }

    pub async fn get_binding(&self, id: i64) -> StoreResult<Binding> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM bindings WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("binding"))?;
        from_row(&row)
    }

    pub async fn list_bindings(&self, page: PageRequest) -> StoreResult<(Vec<Binding>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM bindings ORDER BY id LIMIT $1 OFFSET $2"
        ))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let total = count(
            &sqlx::query("SELECT COUNT(*) FROM bindings")
                .fetch_one(&self.pool)
                .await?,
        )?;
        Ok((rows.iter().map(from_row).collect::<StoreResult<_>>()?, total))
    }

    /// The candidates of one route (`namespace`, `public_model`).
    pub async fn bindings_for_route(&self, namespace: &str, public_model: &str) -> StoreResult<Vec<Binding>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE namespace = $1 AND public_model = $2 ORDER BY id"
        ))
        .bind(namespace)
        .bind(public_model)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn bindings_of_group(&self, group_id: i64) -> StoreResult<Vec<Binding>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM bindings WHERE group_id = $1 ORDER BY id"
        ))
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn all_bindings(&self) -> StoreResult<Vec<Binding>> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM bindings ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    pub async fn delete_binding(&self, id: i64) -> StoreResult<Binding> {
        let _permit = self.write_permit().await;
        let row = sqlx::query(&format!("DELETE FROM bindings WHERE id = $1 RETURNING {COLUMNS}"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("binding"))?;
        from_row(&row)
    }

    /// How many bindings name `namespace`.
    pub async fn bindings_in_namespace(&self, namespace: &str) -> StoreResult<i64> {
        count(
            &sqlx::query("SELECT COUNT(*) FROM bindings WHERE namespace = $1")
                .bind(namespace)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

pub(super) async fn insert_binding(conn: &mut AnyConnection, w: &BindingWrite) -> StoreResult<Binding> {
    let row = sqlx::query(&format!(
        "INSERT INTO bindings (namespace, public_model, group_id, weight, selector_type, selector_value, \
         status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {COLUMNS}"
    ))
    .bind(&w.namespace)
    .bind(&w.public_model)
    .bind(w.group_id)
    .bind(w.weight)
    .bind(&w.selector_type)
    .bind(&w.selector_value)
    .bind(&w.status)
    .bind(now_unix())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &conflict(w)))?;
    from_row(&row)
}

pub(super) async fn write_binding(
    conn: &mut AnyConnection,
    id: i64,
    w: &BindingWrite,
) -> StoreResult<Binding> {
    let row = sqlx::query(&format!(
        "UPDATE bindings SET namespace = $2, public_model = $3, group_id = $4, weight = $5, selector_type = $6, \
         selector_value = $7, status = $8, updated_at = $9 WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(&w.namespace)
    .bind(&w.public_model)
    .bind(w.group_id)
    .bind(w.weight)
    .bind(&w.selector_type)
    .bind(&w.selector_value)
    .bind(&w.status)
    .bind(now_unix())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &conflict(w)))?
    .ok_or(StoreError::NotFound("binding"))?;
    from_row(&row)
}
