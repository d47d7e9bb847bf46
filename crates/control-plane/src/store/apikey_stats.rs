//! Credentials' request counts for the stats summary: the cumulative totals balancers
//! report, or those of the request log from an instant on.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreResult};

/// Which credentials the summary covers and which requests it counts.
#[derive(Debug, Clone, Default)]
pub struct CredentialStatsFilter {
    pub group_id: Option<i64>,
    pub status: Option<String>,
    /// Unix seconds: count the log records created at or after it instead of the
    /// cumulative totals.
    pub since: Option<i64>,
}

/// One credential with its group's name and its request counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialStats {
    pub id: i64,
    pub group_id: i64,
    pub group: String,
    pub status: String,
    pub requests: i64,
    pub successes: i64,
    pub last_used_at: Option<i64>,
    /// Empty = none reported.
    pub last_error: String,
    pub cooling_until: Option<i64>,
}

/// Requests per credential in the log from `$1` on. A success is what the balancers'
/// totals and `/admin/logs?status=success` count as one: a status below 400 and no error
/// code (a stream cut after its 200 carries one).
const LOGGED_COUNTS: &str = "SELECT api_key_id, COUNT(*) AS requests, \
     SUM(CASE WHEN status_code < 400 AND error_code IS NULL THEN 1 ELSE 0 END) AS successes \
     FROM log_records WHERE created_at >= $1 AND api_key_id IS NOT NULL GROUP BY api_key_id";

fn stats_from_row(row: &AnyRow) -> StoreResult<CredentialStats> {
    Ok(CredentialStats {
        id: row.try_get("id")?,
        group_id: row.try_get("group_id")?,
        group: row.try_get("group_name")?,
        status: row.try_get("status")?,
        requests: row.try_get("requests")?,
        successes: row.try_get("successes")?,
        last_used_at: row.try_get("last_used_at")?,
        last_error: row.try_get("last_error")?,
        cooling_until: row.try_get("cooling_until")?,
    })
}

impl Store {
    /// Every credential `filter` matches, by id.
    pub async fn credential_stats(
        &self,
        filter: &CredentialStatsFilter,
    ) -> StoreResult<Vec<CredentialStats>> {
        let (counts, join) = if filter.since.is_some() {
            (
                "COALESCE(l.requests, 0) AS requests, COALESCE(l.successes, 0) AS successes",
                format!(" LEFT JOIN ({LOGGED_COUNTS}) l ON l.api_key_id = k.id"),
            )
        } else {
            (
                "k.request_count AS requests, k.success_count AS successes",
                String::new(),
            )
        };
        let mut parameters = usize::from(filter.since.is_some());
        let mut conditions = Vec::new();
        if filter.group_id.is_some() {
            parameters += 1;
            conditions.push(format!("k.group_id = ${parameters}"));
        }
        if filter.status.is_some() {
            parameters += 1;
            conditions.push(format!("k.status = ${parameters}"));
        }
        let clause = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT k.id, k.group_id, g.name AS group_name, k.status, k.last_used_at, k.last_error, \
             k.cooling_until, {counts} FROM api_keys k JOIN provider_groups g ON g.id = k.group_id{join}{clause} \
             ORDER BY k.id"
        );
        let mut query = sqlx::query(&sql);
        if let Some(since) = filter.since {
            query = query.bind(since);
        }
        if let Some(group_id) = filter.group_id {
            query = query.bind(group_id);
        }
        if let Some(status) = &filter.status {
            query = query.bind(status.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(stats_from_row).collect()
    }
}
