//! The token refresh's bookkeeping in `api_keys`: which credentials are due, and a lease
//! per credential so that of several control planes on one database exactly one refreshes
//! it (the others skip it while the lease holds, and read the winner's token after).

use sqlx::Row;

use super::{Store, StoreResult};

/// The provider types whose credentials are OAuth subscriptions the job refreshes.
const REFRESHED_TYPES: &str = "'claude-code', 'codex', 'gemini-cli', 'antigravity'";

impl Store {
    /// Active subscription credentials with a refresh token, and active Vertex
    /// credentials holding a service-account key (a JSON document), whose access token
    /// expires before `due_by` (or has no known expiry), whose lease is free at `now`:
    /// (id, the transient failures in a row so far). At most `limit`, soonest expiry first.
    pub async fn due_refreshes(&self, now: i64, due_by: i64, limit: i64) -> StoreResult<Vec<(i64, i64)>> {
        let sql = format!(
            "SELECT k.id, k.refresh_failures FROM api_keys k JOIN provider_groups g ON g.id = k.group_id \
             WHERE ((g.type IN ({REFRESHED_TYPES}) AND k.refresh_token <> '') \
             OR (g.type = 'vertex' AND k.api_key LIKE '{{%')) AND k.status = 'active' \
             AND (k.expires_at IS NULL OR k.expires_at < $1) AND k.refresh_lease_until < $2 \
             ORDER BY k.expires_at IS NOT NULL, k.expires_at, k.id LIMIT $3"
        );
        let rows = sqlx::query(&sql)
            .bind(due_by)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("id")?, row.try_get("refresh_failures")?)))
            .collect()
    }

    /// Takes credential `id`'s refresh lease until `until`, unless another holder has it
    /// at `now`; whether this caller got it. One conditional update: of several racing
    /// callers exactly one wins.
    pub async fn take_refresh_lease(&self, id: i64, now: i64, until: i64) -> StoreResult<bool> {
        let _permit = self.write_permit().await;
        let taken = sqlx::query(
            "UPDATE api_keys SET refresh_lease_until = $1 WHERE id = $2 AND refresh_lease_until < $3",
        )
        .bind(until)
        .bind(id)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(taken == 1)
    }

    /// Ends the lease: the next attempt not before `retry_at` (0: whenever due), with
    /// `failures` transient failures in a row (0 after a success).
    pub async fn end_refresh_lease(&self, id: i64, retry_at: i64, failures: i64) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        sqlx::query("UPDATE api_keys SET refresh_lease_until = $1, refresh_failures = $2 WHERE id = $3")
            .bind(retry_at)
            .bind(failures)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
