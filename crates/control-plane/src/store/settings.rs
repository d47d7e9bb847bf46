//! Small persisted settings: generated secrets (digests only, where a digest suffices).

use ez_contract::time::now_unix;
use sqlx::Row;

use super::{Store, StoreResult};

impl Store {
    pub async fn get_setting(&self, key: &str) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get::<String, _>(0)).transpose()?)
    }

    /// Stores `value` unless the setting already exists; returns the value in force and
    /// whether it is the one passed in. Safe when several CPs start at once.
    pub async fn init_setting(&self, key: &str, value: &str) -> StoreResult<(String, bool)> {
        let _permit = self.write_permit().await;
        let now = now_unix();
        let inserted = sqlx::query(
            "INSERT INTO settings (key, value, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let current = self.get_setting(key).await?.unwrap_or_else(|| value.to_owned());
        Ok((current, inserted))
    }
}
