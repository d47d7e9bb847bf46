//! Which credentials the active probe (`health_probe`) tries: those of active groups with
//! `health_check` on that are `auto_disabled` or banned now (never `manual_disabled`).

use sqlx::Row;

use super::{ApiKey, ProviderGroup, Store, StoreResult};

impl Store {
    /// Up to `limit` credentials to probe at `now`, with their groups; longest broken first.
    pub async fn probe_candidates(&self, now: i64, limit: i64) -> StoreResult<Vec<(ProviderGroup, ApiKey)>> {
        let rows = sqlx::query(
            "SELECT k.id FROM api_keys k JOIN provider_groups g ON g.id = k.group_id \
             WHERE g.health_check <> 'off' AND g.status = 'active' \
             AND (k.status = 'auto_disabled' OR (k.status = 'active' AND k.ban_until > $1)) \
             ORDER BY k.updated_at, k.id LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = self.get_api_key(row.try_get("id")?).await?;
            let group = self.get_group(key.group_id).await?;
            out.push((group, key));
        }
        Ok(out)
    }
}
