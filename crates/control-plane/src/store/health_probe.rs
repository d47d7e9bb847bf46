//! Which credentials the active probe (`health_probe`) tries — those of active groups with
//! `health_check` on that are `auto_disabled` or banned now, of a type it can probe (never
//! `manual_disabled`, never banned for an exhausted quota, which a free probe cannot
//! see) — and its write when one works again.

use ez_contract::time::now_unix;
use sqlx::Row;

use super::{ApiKey, ProviderGroup, Store, StoreResult};

/// Types probed with their free model list (`health_check` `on` or `metered`).
const LISTED_TYPES: &str = "'openai', 'compatible', 'anthropic', 'claude', 'gemini', 'google', 'aistudio'";
/// Subscription types, probed with a token grant (`metered` only).
const GRANTED_TYPES: &str = "'claude-code', 'codex', 'gemini-cli', 'antigravity'";

impl Store {
    /// Up to `limit` credentials to probe at `now` whose id is above `after` (the probe
    /// goes round all of them, `limit` at a time), in id order, with their groups.
    pub async fn probe_candidates(
        &self,
        now: i64,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<(ProviderGroup, ApiKey)>> {
        let sql = format!(
            "SELECT k.id FROM api_keys k JOIN provider_groups g ON g.id = k.group_id \
             WHERE g.health_check <> 'off' AND g.status = 'active' AND k.id > $2 \
             AND (k.status = 'auto_disabled' \
                  OR (k.status = 'active' AND k.ban_until > $1 AND k.ban_reason NOT LIKE 'quota exhausted%')) \
             AND (g.type IN ({LISTED_TYPES}) OR (g.health_check = 'metered' AND \
                  ((g.type IN ({GRANTED_TYPES}) AND k.refresh_token <> '') \
                   OR (g.type = 'vertex' AND k.api_key LIKE '{{%')))) \
             ORDER BY k.id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(now)
            .bind(after)
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

    /// Makes credential `id` active with no ban, unless it changed since it was read at
    /// `revision` (an operator disabled it meanwhile, or a balancer banned it again);
    /// whether it did.
    pub async fn reenable_credential(&self, id: i64, revision: i64) -> StoreResult<bool> {
        let _permit = self.write_permit().await;
        let done = sqlx::query(
            "UPDATE api_keys SET status = 'active', ban_until = NULL, ban_reason = '', \
             revision = revision + 1, updated_at = $3 \
             WHERE id = $1 AND revision = $2 AND status <> 'manual_disabled'",
        )
        .bind(id)
        .bind(revision)
        .bind(now_unix())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(done == 1)
    }
}
