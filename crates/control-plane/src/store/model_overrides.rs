//! Admin overrides of the model catalogue, one JSON object per model name.

use std::collections::HashMap;

use ez_contract::time::now_unix;
use sqlx::Row;

use super::{Store, StoreError, StoreResult};
use crate::models::ModelOverride;

impl Store {
    /// Creates or replaces the override of `name`; returns whether it was created.
    pub async fn put_model_override(&self, name: &str, value: &ModelOverride) -> StoreResult<bool> {
        let _permit = self.write_permit().await;
        let data = serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let now = now_unix();
        let updated = sqlx::query("UPDATE model_overrides SET data = $2, updated_at = $3 WHERE name = $1")
            .bind(name)
            .bind(&data)
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if updated > 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO model_overrides (name, data, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(name)
        .bind(&data)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::or_conflict(e, &format!("an override of {name:?}")))?;
        Ok(true)
    }

    /// Creates the override of `name`; a conflict when one exists (also under races).
    pub async fn create_model_override(&self, name: &str, value: &ModelOverride) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        let data = serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO model_overrides (name, data, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(name)
        .bind(&data)
        .bind(now_unix())
        .execute(&self.pool)
        .await
        .map_err(|e| {
            StoreError::or_conflict(e, &format!("metadata of model {name:?} (use PUT to replace it)"))
        })?;
        Ok(())
    }

    pub async fn model_overrides(&self) -> StoreResult<HashMap<String, ModelOverride>> {
        let rows = sqlx::query("SELECT name, data FROM model_overrides")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get("name")?;
                let data: String = row.try_get("data")?;
                let value = serde_json::from_str(&data)
                    .map_err(|e| StoreError::Corrupt(format!("model override {name:?}: {e}")))?;
                Ok((name, value))
            })
            .collect()
    }

    pub async fn delete_model_override(&self, name: &str) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        let deleted = sqlx::query("DELETE FROM model_overrides WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound("model override"));
        }
        Ok(())
    }
}

/// Creates or replaces the override of `name` on `conn`: the write of
/// [`Store::put_model_override`] for a caller that holds a transaction (an import).
pub(super) async fn upsert_override(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    value: &ModelOverride,
) -> StoreResult<()> {
    let data = serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let now = now_unix();
    let updated = sqlx::query("UPDATE model_overrides SET data = $2, updated_at = $3 WHERE name = $1")
        .bind(name)
        .bind(&data)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if updated == 0 {
        sqlx::query(
            "INSERT INTO model_overrides (name, data, created_at, updated_at) VALUES ($1, $2, $3, $3)",
        )
        .bind(name)
        .bind(&data)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| StoreError::or_conflict(e, &format!("an override of {name:?}")))?;
    }
    Ok(())
}
