//! The sync outbox: bus writes that failed, with their retry state.

use ez_contract::time::now_unix;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::{PageRequest, Store, StoreError, StoreResult, count};

const COLUMNS: &str = "id, resource, resource_id, action, attempts, next_retry_at, last_error, status, generation, \
     created_at, updated_at";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    Pending,
    Done,
    Dead,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Done => "done",
            OutboxStatus::Dead => "dead",
        }
    }

    fn parse(s: &str) -> StoreResult<OutboxStatus> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "done" => Ok(OutboxStatus::Done),
            "dead" => Ok(OutboxStatus::Dead),
            other => Err(StoreError::Corrupt(format!("outbox status {other:?}"))),
        }
    }
}

/// One failed bus write. `resource` + `resource_id` name what to re-write; the payload is
/// not stored: a retry writes the resource's state as the database holds it then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OutboxEntry {
    pub id: i64,
    pub resource: String,
    pub resource_id: String,
    pub action: String,
    pub attempts: i64,
    pub next_retry_at: i64,
    pub last_error: String,
    pub status: OutboxStatus,
    /// Bumped by every failure merged into this entry.
    pub generation: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

fn from_row(row: &AnyRow) -> StoreResult<OutboxEntry> {
    let status: String = row.try_get("status")?;
    Ok(OutboxEntry {
        id: row.try_get("id")?,
        resource: row.try_get("resource")?,
        resource_id: row.try_get("resource_id")?,
        action: row.try_get("action")?,
        attempts: row.try_get("attempts")?,
        next_retry_at: row.try_get("next_retry_at")?,
        last_error: row.try_get("last_error")?,
        status: OutboxStatus::parse(&status)?,
        generation: row.try_get("generation")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Errors are stored for operators; keep them short.
fn clip(error: &str) -> String {
    error.chars().take(500).collect()
}

impl Store {
    /// Records a failed write of `resource`/`resource_id`, merging with a pending entry
    /// for the same resource (its retry schedule is kept).
    pub async fn record_outbox(
        &self,
        resource: &str,
        resource_id: &str,
        action: &str,
        error: &str,
    ) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        let now = now_unix();
        for _ in 0..2 {
            let updated = sqlx::query(
                "UPDATE sync_outbox SET action = $3, last_error = $4, updated_at = $5, generation = generation + 1 \
                 WHERE resource = $1 AND resource_id = $2 AND status = 'pending'",
            )
            .bind(resource)
            .bind(resource_id)
            .bind(action)
            .bind(clip(error))
            .bind(now)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if updated > 0 {
                return Ok(());
            }
            let inserted = sqlx::query(
                "INSERT INTO sync_outbox (resource, resource_id, action, attempts, next_retry_at, \
                 last_error, status, created_at, updated_at) VALUES ($1, $2, $3, 0, $4, $5, 'pending', $4, $4)",
            )
            .bind(resource)
            .bind(resource_id)
            .bind(action)
            .bind(now)
            .bind(clip(error))
            .execute(&self.pool)
            .await;
            match inserted {
                Ok(_) => return Ok(()),
                // Another CP inserted the pending entry meanwhile: merge into it.
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Pending entries due at `now`, oldest first.
    pub async fn due_outbox(&self, now: i64, limit: i64) -> StoreResult<Vec<OutboxEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sync_outbox WHERE status = 'pending' AND next_retry_at <= $1 \
             ORDER BY next_retry_at, id LIMIT $2"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Marks an entry done, unless a newer failure merged into it meanwhile.
    pub async fn outbox_done(&self, entry: &OutboxEntry) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        sqlx::query(
            "UPDATE sync_outbox SET status = 'done', updated_at = $3 \
             WHERE id = $1 AND generation = $2 AND status = 'pending'",
        )
        .bind(entry.id)
        .bind(entry.generation)
        .bind(now_unix())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts a failed retry: reschedules it, or marks it `dead` when `dead` is set.
    pub async fn outbox_retry_failed(
        &self,
        entry: &OutboxEntry,
        next_retry_at: i64,
        error: &str,
        dead: bool,
    ) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        let status = if dead {
            OutboxStatus::Dead
        } else {
            OutboxStatus::Pending
        };
        sqlx::query(
            "UPDATE sync_outbox SET attempts = attempts + 1, next_retry_at = $3, last_error = $4, \
             status = $5, updated_at = $6 WHERE id = $1 AND generation = $2 AND status = 'pending'",
        )
        .bind(entry.id)
        .bind(entry.generation)
        .bind(next_retry_at)
        .bind(clip(error))
        .bind(status.as_str())
        .bind(now_unix())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The open entries (pending and dead) as they are now.
    pub async fn open_outbox(&self) -> StoreResult<Vec<OutboxEntry>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM sync_outbox WHERE status IN ('pending', 'dead') ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Marks `entries` done — those no newer failure merged into since they were read.
    pub async fn settle_outbox(&self, entries: &[OutboxEntry]) -> StoreResult<u64> {
        let _permit = self.write_permit().await;
        let mut done = 0;
        for entry in entries {
            done += sqlx::query(
                "UPDATE sync_outbox SET status = 'done', updated_at = $3 \
                 WHERE id = $1 AND generation = $2 AND status IN ('pending', 'dead')",
            )
            .bind(entry.id)
            .bind(entry.generation)
            .bind(now_unix())
            .execute(&self.pool)
            .await?
            .rows_affected();
        }
        Ok(done)
    }

    pub async fn list_outbox(
        &self,
        status: Option<OutboxStatus>,
        page: PageRequest,
    ) -> StoreResult<(Vec<OutboxEntry>, i64)> {
        let filter = status.map_or("", |_| " WHERE status = $3");
        let sql = format!("SELECT {COLUMNS} FROM sync_outbox{filter} ORDER BY id DESC LIMIT $1 OFFSET $2");
        let mut query = sqlx::query(&sql).bind(page.page_size).bind(page.offset());
        let count_filter = status.map_or("", |_| " WHERE status = $1");
        let count_sql = format!("SELECT COUNT(*) FROM sync_outbox{count_filter}");
        let mut count_query = sqlx::query(&count_sql);
        if let Some(status) = status {
            query = query.bind(status.as_str());
            count_query = count_query.bind(status.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let total = count(&count_query.fetch_one(&self.pool).await?)?;
        Ok((rows.iter().map(from_row).collect::<StoreResult<_>>()?, total))
    }
}
