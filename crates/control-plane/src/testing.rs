//! Test support shared by this crate's tests and the integration tests: a fresh database
//! per test (a SQLite file, or a new PostgreSQL schema when `EZ_TEST_DATABASE_URL` is set)
//! and a fresh bus (memory, or Redis under a unique key prefix when `EZ_TEST_REDIS_URL` is
//! set). Compiled into the crate so integration tests can use it; it does nothing unless
//! called.

use std::path::PathBuf;
use std::sync::Arc;

use ez_bus::{ConfigBus, MemoryBus, RedisBus};
use ez_config::DatabaseKind;
use rand::Rng;
use sqlx::Connection;

/// Which pair of real parts a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file + in-memory bus: always available.
    Embedded,
    /// PostgreSQL + Redis from `EZ_TEST_DATABASE_URL` / `EZ_TEST_REDIS_URL`.
    Real,
}

impl Backend {
    /// Whether the backend can run here. Under CI (`CI` set) the real servers are
    /// mandatory: a missing URL fails the test rather than skipping it.
    pub fn available(self) -> bool {
        match self {
            Backend::Embedded => true,
            Backend::Real => {
                let set = std::env::var_os("EZ_TEST_DATABASE_URL").is_some()
                    && std::env::var_os("EZ_TEST_REDIS_URL").is_some();
                assert!(
                    set || std::env::var_os("CI").is_none(),
                    "CI must set EZ_TEST_DATABASE_URL and EZ_TEST_REDIS_URL"
                );
                if !set {
                    eprintln!(
                        "EZ_TEST_DATABASE_URL / EZ_TEST_REDIS_URL not set: skipping the PostgreSQL + Redis run"
                    );
                }
                set
            }
        }
    }
}

fn unique_suffix() -> String {
    format!("{:016x}", rand::thread_rng().r#gen::<u64>())
}

/// A database that exists for one test and is removed when dropped.
pub struct TestDatabase {
    pub url: String,
    pub kind: DatabaseKind,
    cleanup: Cleanup,
}

enum Cleanup {
    File(PathBuf),
    Schema { admin_url: String, schema: String },
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Embedded => {
                let dir = std::env::temp_dir().join(format!("ezapi-test-{}", unique_suffix()));
                std::fs::create_dir_all(&dir).expect("create test dir");
                TestDatabase {
                    url: format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
                    kind: DatabaseKind::Sqlite,
                    cleanup: Cleanup::File(dir),
                }
            }
            Backend::Real => {
                let admin_url = std::env::var("EZ_TEST_DATABASE_URL").expect("EZ_TEST_DATABASE_URL");
                let schema = format!("ez_test_{}", unique_suffix());
                let mut conn = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to test PostgreSQL");
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test schema");
                let _ = conn.close().await;
                let sep = if admin_url.contains('?') { '&' } else { '?' };
                TestDatabase {
                    url: format!("{admin_url}{sep}options=-c%20search_path%3D{schema}"),
                    kind: DatabaseKind::Postgres,
                    cleanup: Cleanup::Schema { admin_url, schema },
                }
            }
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema { admin_url, schema } => {
                let (url, statement) = (
                    admin_url.clone(),
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                );
                // Drop runs inside the test's runtime; use a thread with its own.
                let _ = std::thread::spawn(move || {
                    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                        return;
                    };
                    rt.block_on(async move {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                            let _ = sqlx::query(&statement).execute(&mut conn).await;
                            let _ = conn.close().await;
                        }
                    });
                })
                .join();
            }
        }
    }
}

/// A bus for one test: memory, or Redis under a key prefix no other test uses.
pub async fn test_bus(backend: Backend) -> Arc<dyn ConfigBus> {
    match backend {
        Backend::Embedded => Arc::new(MemoryBus::new()),
        Backend::Real => {
            let url = std::env::var("EZ_TEST_REDIS_URL").expect("EZ_TEST_REDIS_URL");
            Arc::new(
                RedisBus::connect(&url, format!("ez-test:{}:", unique_suffix()))
                    .await
                    .expect("connect to test Redis"),
            )
        }
    }
}
