//! The CP database: SQLite (embedded default) or PostgreSQL, one code path for both.
//!
//! Queries are written once in the SQL both engines accept and run through sqlx's `Any`
//! driver; the few dialect differences (auto-increment ids in the migrations, row locks)
//! are chosen by [`DatabaseKind`]. The same contract tests run against both engines.

mod apikey_stats;
mod bindings;
mod credential_health;
mod health_probe;
mod import;
mod keys;
mod masters;
mod model_overrides;
mod models;
mod namespaces;
mod outbox;
mod providers;
mod settings;
pub mod sqlite_files;
mod token_refresh;
mod usage;

use std::sync::Arc;
use std::time::Duration;

use ez_config::DatabaseKind;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};

pub use apikey_stats::{CredentialStats, CredentialStatsFilter};
pub use bindings::{Binding, BindingWrite};
pub use credential_health::{CredentialHealth, CredentialUsageOutcome, StoredWindow, cooling_in_force};
pub use import::{ImportTx, KeyImport, MasterImport};
pub use keys::{KeyWrite, NewKey};
pub use masters::{MasterWrite, NewMaster};
pub use models::{IssuedBy, Key, Master, Namespace, NamespaceStatus, SuspendedBy};
pub use outbox::{OutboxEntry, OutboxStatus};
pub use providers::{ApiKey, ApiKeyWrite, GroupWrite, ProviderGroup};
pub use usage::{BanOutcome, LOG_INSERT_CHUNK, LogFilter, LogInsert, StatusFilter, StoredLog};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("limit reached: {0}")]
    LimitReached(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Maps a unique-constraint violation to a conflict that names what clashed.
    fn or_conflict(err: sqlx::Error, what: &str) -> StoreError {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(format!("{what} already exists"))
            }
            _ => StoreError::Database(err),
        }
    }
}

impl StoreError {
    /// The database refused a value it was given (see [`is_refused_value`]): sending the
    /// same data again cannot succeed.
    pub fn is_refused_value(&self, kind: &DatabaseKind) -> bool {
        matches!(self, StoreError::Database(e) if is_refused_value(e, kind))
    }
}

/// Whether `err` says the database refused a value (a permanent defect of the data, not a
/// failure of the database): PostgreSQL's SQLSTATE classes 22 (data exception, e.g. NUL
/// in text) and 23 (integrity constraint); SQLite's `TOOBIG`, `CONSTRAINT` and `MISMATCH`
/// (primary result codes 18–20; extended codes keep them in the low byte); a value the
/// driver could not encode at all.
pub fn is_refused_value(err: &sqlx::Error, kind: &DatabaseKind) -> bool {
    match err {
        sqlx::Error::Encode(_) => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            match kind {
                DatabaseKind::Postgres => code.starts_with("22") || code.starts_with("23"),
                DatabaseKind::Sqlite => code.parse::<i32>().is_ok_and(|c| matches!(c & 0xff, 18..=20)),
            }
        }
        _ => false,
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A page request: 1-based page number and page size.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub page: i64,
    pub page_size: i64,
}

impl PageRequest {
    fn offset(self) -> i64 {
        (self.page - 1) * self.page_size
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DatabaseKind,
    /// SQLite allows one writer at a time; writers that collide wait in SQLite's busy
    /// handler, which backs off in steps of up to 100 ms. Queuing them here instead
    /// keeps write latency flat. (PostgreSQL needs no such thing.)
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    pub async fn connect(url: &str, kind: DatabaseKind, max_connections: u32) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let is_sqlite = kind == DatabaseKind::Sqlite;
        let sqlite_file = is_sqlite.then(|| sqlite_files::sqlite_path(url)).flatten();
        let secure = |path: &std::path::Path| {
            sqlite_files::secure_database_files(url, path).map_err(|e| {
                StoreError::Database(sqlx::Error::Configuration(
                    format!("securing the database file {}: {e}", path.display()).into(),
                ))
            })
        };
        if let Some(path) = &sqlite_file {
            secure(path)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if is_sqlite {
                        // WAL lets readers proceed while one writer commits.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        if let Some(path) = &sqlite_file {
            // The first connection may have created the file or its WAL side files.
            secure(path)?;
        }
        Ok(Store {
            pool,
            kind,
            sqlite_writer: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    pub fn kind(&self) -> &DatabaseKind {
        &self.kind
    }

    /// Applies pending migrations; returns how many were applied now.
    pub async fn migrate(&self) -> StoreResult<usize> {
        let migrator = match self.kind {
            DatabaseKind::Sqlite => &SQLITE_MIGRATIONS,
            DatabaseKind::Postgres => &POSTGRES_MIGRATIONS,
        };
        let before = self.applied_migrations().await.unwrap_or(0);
        migrator.run(&self.pool).await?;
        let after = self.applied_migrations().await?;
        Ok(after.saturating_sub(before))
    }

    /// How many migrations this build knows.
    pub fn known_migrations(&self) -> usize {
        match self.kind {
            DatabaseKind::Sqlite => SQLITE_MIGRATIONS.iter().count(),
            DatabaseKind::Postgres => POSTGRES_MIGRATIONS.iter().count(),
        }
    }

    async fn applied_migrations(&self) -> StoreResult<usize> {
        let row = sqlx::query("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = TRUE")
            .fetch_one(&self.pool)
            .await?;
        Ok(usize::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0))
    }

    pub async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Held by every write for its duration; `None` on PostgreSQL.
    async fn write_permit(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.kind {
            DatabaseKind::Sqlite => Some(self.sqlite_writer.lock().await),
            DatabaseKind::Postgres => None,
        }
    }

    /// Starts a write transaction. SQLite takes the write lock at once (`BEGIN
    /// IMMEDIATE`): a deferred transaction that reads and then writes fails with
    /// `SQLITE_BUSY` when another writer got in between, instead of waiting its turn.
    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.kind {
            DatabaseKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DatabaseKind::Postgres => self.pool.begin().await?,
        })
    }

    /// Commits on success and rolls back on failure. A transaction must never be merely
    /// dropped on an error path: its rollback would only be queued, and the connection
    /// could go back to the pool still holding row locks that block the next writer.
    async fn finish<T>(
        &self,
        tx: sqlx::Transaction<'static, sqlx::Any>,
        result: StoreResult<T>,
    ) -> StoreResult<T> {
        match result {
            Ok(value) => {
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rollback failed");
                }
                Err(e)
            }
        }
    }

    /// `FOR UPDATE` where the engine has row locks; SQLite serialises writers instead.
    fn lock_clause(&self) -> &'static str {
        match self.kind {
            DatabaseKind::Postgres => " FOR UPDATE",
            DatabaseKind::Sqlite => "",
        }
    }
}

fn count(row: &AnyRow) -> StoreResult<i64> {
    Ok(row.try_get::<i64, _>(0)?)
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(column: &'static str, raw: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

#[cfg(test)]
mod tests;
