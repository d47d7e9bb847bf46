//! What balancers report: log records (written in batches), usage totals of child keys,
//! and credential bans (a credential's use and health: `credential_health.rs`).

use ez_contract::report::{KeyUsage, LogRecord};
use ez_contract::time::now_unix;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{PageRequest, Store, StoreError, StoreResult, count};

/// The columns an insert binds, in [`bind_record`]'s order.
const LOG_INSERT_COLUMNS: &str = "request_id, master_id, key_id, namespace, public_model, upstream_model, \
     group_id, api_key_id, endpoint, upstream_format, status_code, error_code, error_message, latency_ms, \
     first_token_ms, input_tokens, output_tokens, usage_estimated, client_ip, stream, created_at";
const LOG_COLUMNS: &str = "id, request_id, master_id, key_id, namespace, public_model, upstream_model, \
     group_id, api_key_id, endpoint, upstream_format, status_code, error_code, error_message, latency_ms, first_token_ms, \
     input_tokens, output_tokens, usage_estimated, client_ip, stream, created_at";

/// Columns an insert binds per record.
const LOG_INSERT_ARITY: usize = 21;
/// Where usage totals stop growing (they saturate instead of overflowing BIGINT).
pub(super) const SATURATED: i64 = i64::MAX;
/// Most records per INSERT statement (bind parameters stay below every engine's limit).
pub const LOG_INSERT_CHUNK: usize = 1_000;

/// A stored log record, as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StoredLog {
    pub id: i64,
    pub request_id: String,
    pub master_id: i64,
    pub key_id: i64,
    pub namespace: String,
    pub public_model: String,
    pub upstream_model: String,
    pub group_id: Option<i64>,
    pub api_key_id: Option<i64>,
    pub endpoint: String,
    /// The wire format of the upstream that answered (empty when none was reached);
    /// not the ingress route's when the request was translated.
    pub upstream_format: String,
    pub status_code: i64,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub latency_ms: i64,
    pub first_token_ms: Option<i64>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// The upstream's usage block never arrived: `output_tokens` was counted from the
    /// streamed text.
    pub usage_estimated: bool,
    pub client_ip: Option<String>,
    pub stream: bool,
    pub created_at: i64,
}

/// What became of a batch of log records: every record is either stored or refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogInsert {
    pub stored: usize,
    /// Records the database refused (a value it cannot hold); dropped.
    pub refused: usize,
}

/// Which records a listing returns; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub master_id: Option<i64>,
    pub key_id: Option<i64>,
    pub model: Option<String>,
    pub status: Option<StatusFilter>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Code(i64),
    /// Status below 400 and no error code.
    Success,
    /// Status 400 and above, or an error code (a stream cut after its 200).
    Error,
}

/// What became of a reported ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BanOutcome {
    Banned {
        group_id: i64,
    },
    /// The credential does not allow automatic bans (`auto_ban` is off).
    NotAllowed,
}

fn log_from_row(row: &AnyRow) -> StoreResult<StoredLog> {
    Ok(StoredLog {
        id: row.try_get("id")?,
        request_id: row.try_get("request_id")?,
        master_id: row.try_get("master_id")?,
        key_id: row.try_get("key_id")?,
        namespace: row.try_get("namespace")?,
        public_model: row.try_get("public_model")?,
        upstream_model: row.try_get("upstream_model")?,
        group_id: row.try_get("group_id")?,
        api_key_id: row.try_get("api_key_id")?,
        endpoint: row.try_get("endpoint")?,
        upstream_format: row.try_get("upstream_format")?,
        status_code: row.try_get("status_code")?,
        error_code: row.try_get("error_code")?,
        error_message: row.try_get("error_message")?,
        latency_ms: row.try_get("latency_ms")?,
        first_token_ms: row.try_get("first_token_ms")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        usage_estimated: row.try_get::<i64, _>("usage_estimated")? != 0,
        client_ip: row.try_get("client_ip")?,
        stream: row.try_get::<i64, _>("stream")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

impl LogFilter {
    /// The WHERE clause (numbered from `$1`) and its parameters, in order.
    fn clause(&self) -> (String, Vec<FilterValue>) {
        let mut conditions = Vec::new();
        let mut values = Vec::new();
        let mut push = |condition: &str, value: FilterValue| {
            values.push(value);
            conditions.push(condition.replace('?', &format!("${}", values.len())));
        };
        if let Some(id) = self.master_id {
            push("master_id = ?", FilterValue::Int(id));
        }
        if let Some(id) = self.key_id {
            push("key_id = ?", FilterValue::Int(id));
        }
        if let Some(model) = &self.model {
            push("public_model = ?", FilterValue::Text(model.clone()));
        }
        match self.status {
            Some(StatusFilter::Code(code)) => push("status_code = ?", FilterValue::Int(code)),
            // A stream that broke after its 200 carries an error code: it is an error.
            Some(StatusFilter::Success) => {
                push("status_code < ? AND error_code IS NULL", FilterValue::Int(400))
            }
            Some(StatusFilter::Error) => push(
                "(status_code >= ? OR error_code IS NOT NULL)",
                FilterValue::Int(400),
            ),
            None => {}
        }
        if let Some(since) = self.since {
            push("created_at >= ?", FilterValue::Int(since));
        }
        if let Some(until) = self.until {
            push("created_at < ?", FilterValue::Int(until));
        }
        if conditions.is_empty() {
            (String::new(), values)
        } else {
            (format!(" WHERE {}", conditions.join(" AND ")), values)
        }
    }
}

/// `INSERT INTO log_records (…) VALUES (…), …` for `rows` records.
fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO log_records ({LOG_INSERT_COLUMNS}) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for p in 1..=LOG_INSERT_ARITY {
            if p > 1 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(i * LOG_INSERT_ARITY + p).to_string());
        }
        sql.push(')');
    }
    sql
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// Binds one record's values, in [`LOG_INSERT_COLUMNS`]' order.
fn bind_record<'q>(query: AnyQuery<'q>, r: &'q LogRecord) -> AnyQuery<'q> {
    query
        .bind(r.request_id.as_str())
        .bind(r.master_id)
        .bind(r.key_id)
        .bind(r.namespace.as_str())
        .bind(r.public_model.as_str())
        .bind(r.upstream_model.as_str())
        .bind(r.group_id)
        .bind(r.api_key_id)
        .bind(r.endpoint.as_str())
        .bind(r.upstream_format.as_str())
        .bind(i64::from(r.status_code))
        .bind(r.error_code.as_deref())
        .bind(r.error_message.as_deref())
        .bind(r.latency_ms)
        .bind(r.first_token_ms)
        .bind(r.input_tokens)
        .bind(r.output_tokens)
        .bind(i64::from(r.usage_estimated))
        .bind(r.client_ip.as_deref())
        .bind(i64::from(r.stream))
        .bind(r.created_at)
}

/// Full chunks of `rows` records with one statement text, the rest one row at a time
/// with another: the statement texts never depend on the batch's size.
async fn insert_chunked(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    records: &[LogRecord],
    rows: usize,
) -> Result<(), sqlx::Error> {
    let full = if rows > 1 { records.len() / rows * rows } else { 0 };
    if full > 0 {
        let sql = insert_sql(rows);
        for chunk in records[..full].chunks_exact(rows) {
            let mut query = sqlx::query(&sql);
            for record in chunk {
                query = bind_record(query, record);
            }
            query.execute(&mut **tx).await?;
        }
    }
    let single = insert_sql(1);
    for record in &records[full..] {
        bind_record(sqlx::query(&single), record)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

enum FilterValue {
    Int(i64),
    Text(String),
}

fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    values: &'q [FilterValue],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for value in values {
        query = match value {
            FilterValue::Int(v) => query.bind(*v),
            FilterValue::Text(v) => query.bind(v.as_str()),
        };
    }
    query
}

impl Store {
    /// Stores log records in one transaction, in statements of `rows_per_statement` rows
    /// (at most [`LOG_INSERT_CHUNK`]; the remainder one row each, so only two statement
    /// texts exist and each is prepared once per connection). When the database refuses a
    /// value, the batch is stored again record by record and the refused ones are dropped:
    /// one poison record must never hold back the others.
    pub async fn insert_logs(
        &self,
        records: &[LogRecord],
        rows_per_statement: usize,
    ) -> StoreResult<LogInsert> {
        if records.is_empty() {
            return Ok(LogInsert::default());
        }
        let rows = rows_per_statement.clamp(1, LOG_INSERT_CHUNK);
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = insert_chunked(&mut tx, records, rows)
            .await
            .map_err(StoreError::from);
        match self.finish(tx, result).await {
            Ok(()) => Ok(LogInsert {
                stored: records.len(),
                refused: 0,
            }),
            Err(e) if e.is_refused_value(&self.kind) => {
                tracing::warn!(error = %e, records = records.len(), "log batch refused by the database; storing its records one by one");
                self.insert_logs_one_by_one(records).await
            }
            Err(e) => Err(e),
        }
    }

    /// Each record in its own savepoint of one transaction: a record the database refuses
    /// rolls back alone and is counted; any other error fails the whole batch. The caller
    /// holds the write permit (it is not reentrant).
    async fn insert_logs_one_by_one(&self, records: &[LogRecord]) -> StoreResult<LogInsert> {
        let mut tx = self.begin_write().await?;
        let sql = insert_sql(1);
        let result = async {
            let mut outcome = LogInsert::default();
            for record in records {
                let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
                match bind_record(sqlx::query(&sql), record)
                    .execute(&mut *savepoint)
                    .await
                {
                    Ok(_) => {
                        savepoint.commit().await?;
                        outcome.stored += 1;
                    }
                    Err(e) if super::is_refused_value(&e, &self.kind) => {
                        savepoint.rollback().await?;
                        outcome.refused += 1;
                    }
                    Err(e) => return Err(StoreError::from(e)),
                }
            }
            Ok(outcome)
        }
        .await;
        self.finish(tx, result).await
    }

    /// Newest first.
    pub async fn list_logs(
        &self,
        filter: &LogFilter,
        page: PageRequest,
    ) -> StoreResult<(Vec<StoredLog>, i64)> {
        let (clause, values) = filter.clause();
        let n = values.len();
        let sql = format!(
            "SELECT {LOG_COLUMNS} FROM log_records{clause} ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = bind_all(sqlx::query(&sql), &values)
            .bind(page.page_size)
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await?;
        let count_sql = format!("SELECT COUNT(*) FROM log_records{clause}");
        let total = count(
            &bind_all(sqlx::query(&count_sql), &values)
                .fetch_one(&self.pool)
                .await?,
        )?;
        Ok((rows.iter().map(log_from_row).collect::<StoreResult<_>>()?, total))
    }

    /// Removes records older than `before` (Unix seconds); returns how many went.
    pub async fn delete_logs_before(&self, before: i64) -> StoreResult<u64> {
        let _permit = self.write_permit().await;
        let done = sqlx::query("DELETE FROM log_records WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Runs one statement per item in one transaction; returns the rows changed.
    async fn update_each<T>(
        &self,
        items: &[T],
        statement: for<'q> fn(&'q T) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> StoreResult<u64> {
        if items.is_empty() {
            return Ok(0);
        }
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let mut updated = 0;
            for item in items {
                updated += statement(item).execute(&mut *tx).await?.rows_affected();
            }
            Ok(updated)
        }
        .await;
        self.finish(tx, result).await
    }

    /// Adds reported usage to the child keys' totals and moves `last_used_at` forward.
    /// Keys that no longer exist are skipped; returns how many were updated.
    pub async fn add_key_usage(&self, items: &[KeyUsage]) -> StoreResult<u64> {
        self.update_each(items, |item| {
            sqlx::query(
                "UPDATE child_keys SET request_count = CASE WHEN request_count > $5 - $1 THEN $5 ELSE request_count + $1 END, \
                 token_count = CASE WHEN token_count > $5 - $2 THEN $5 ELSE token_count + $2 END, \
                 last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $3 THEN $3 ELSE last_used_at END \
                 WHERE token_digest = $4",
            )
            .bind(item.requests)
            .bind(item.tokens)
            .bind(item.last_accessed_at)
            .bind(item.token_hash.as_str())
            .bind(SATURATED)
        })
        .await
    }

    /// Bans a credential with `auto_ban` until `until` (a longer ban already in place is
    /// kept). Bumps the revision, so an admin update computed before the ban is refused
    /// rather than silently lifting it.
    pub async fn ban_credential(&self, id: i64, until: i64, reason: &str) -> StoreResult<BanOutcome> {
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let row = sqlx::query(&format!(
                "SELECT group_id, auto_ban FROM api_keys WHERE id = $1{}",
                self.lock_clause()
            ))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("api key"))?;
            let group_id: i64 = row.try_get("group_id")?;
            let auto_ban: i64 = row.try_get("auto_ban")?;
            if auto_ban == 0 {
                return Ok(BanOutcome::NotAllowed);
            }
            sqlx::query(
                "UPDATE api_keys SET ban_until = CASE WHEN ban_until IS NULL OR ban_until < $1 THEN $1 ELSE ban_until END, \
                 ban_reason = $2, revision = revision + 1, updated_at = $3 WHERE id = $4",
            )
            .bind(until)
            .bind(reason)
            .bind(now_unix())
            .bind(id)
            .execute(&mut *tx)
            .await?;
            Ok(BanOutcome::Banned { group_id })
        }
        .await;
        self.finish(tx, result).await
    }

    /// Usage totals of a credential: (requests, successful requests).
    pub async fn credential_usage(&self, id: i64) -> StoreResult<(i64, i64)> {
        let row = sqlx::query("SELECT request_count, success_count FROM api_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("api key"))?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Usage totals of a child key: (requests, tokens).
    pub async fn key_usage(&self, id: i64) -> StoreResult<(i64, i64)> {
        let row = sqlx::query("SELECT request_count, token_count FROM child_keys WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("key"))?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }
}
