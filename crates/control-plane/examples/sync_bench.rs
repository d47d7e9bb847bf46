//! How long a full bus sync of a large configuration takes, and one incremental change:
//! 10,000 credentials in 100 provider groups and 10,000 bindings (one route each), on
//! SQLite + memory bus and, when `EZ_TEST_DATABASE_URL` / `EZ_TEST_REDIS_URL` are set, on
//! PostgreSQL + Redis — in one run.
//!
//!     cargo run --release -p ez-control-plane --example sync_bench [-- CREDENTIALS BINDINGS]

use std::time::Instant;

use ez_config::Config;
use ez_contract::time::now_unix;
use ez_control_plane::ControlPlane;
use ez_control_plane::store::Store;
use ez_control_plane::sync::RoutingChange;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use sqlx::Connection;

const GROUPS: usize = 100;

/// Inserts the configuration with multi-row statements (setup, not measured).
async fn populate(url: &str, credentials: usize, bindings: usize) {
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let now = now_unix();
    let models_per_group = bindings.div_ceil(GROUPS);
    let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
    for g in 0..GROUPS {
        let models: Vec<String> = (0..models_per_group)
            .map(|m| format!("model-{}", g * models_per_group + m))
            .collect();
        sqlx::query(
            "INSERT INTO provider_groups (name, type, base_url, models, status, route_group, created_at, updated_at) \
             VALUES ($1, 'openai', '', $2, 'active', 'default', $3, $3)",
        )
        .bind(format!("group-{g}"))
        .bind(serde_json::to_string(&models).unwrap())
        .bind(now)
        .execute(&mut *tx)
        .await
        .expect("insert group");
    }
    for chunk in (0..credentials).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "({}, 'sk-bench-{i:08}', 1, 'active', 1, {now}, {now})",
                    i % GROUPS + 1
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO api_keys (group_id, api_key, weight, status, auto_ban, created_at, updated_at) VALUES {}",
            values.join(", ")
        ))
        .execute(&mut *tx)
        .await
        .expect("insert credentials");
    }
    for chunk in (0..bindings).collect::<Vec<_>>().chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "('default', 'model-{i}', {}, 1, 'exact', '', 'active', {now}, {now})",
                    i / models_per_group + 1
                )
            })
            .collect();
        sqlx::query(&format!(
            "INSERT INTO bindings (namespace, public_model, group_id, weight, selector_type, selector_value, status, \
             created_at, updated_at) VALUES {}",
            values.join(", ")
        ))
        .execute(&mut *tx)
        .await
        .expect("insert bindings");
    }
    tx.commit().await.expect("commit");
}

async fn run(backend: Backend, credentials: usize, bindings: usize) {
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, db.kind.clone(), 10)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    populate(&db.url, credentials, bindings).await;
    let bus = test_bus(backend).await;
    let mut config = Config::defaults();
    config.auth.admin_token = Some(ez_contract::SecretToken::from_plaintext(
        "bench-admin-token-0123456789",
    ));
    // `build` runs the start-up full sync; measure further ones explicitly.
    let cp = ControlPlane::build(&config, store.clone(), bus)
        .await
        .expect("build");
    let label = match backend {
        Backend::Embedded => "SQLite + memory",
        Backend::Real => "PostgreSQL + Redis",
    };
    let mut times = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let report = cp.state.sync.full_sync().await.expect("full sync");
        times.push(started.elapsed());
        assert_eq!((report.providers, report.bindings), (credentials, bindings));
    }
    times.sort();
    let incremental = {
        let started = Instant::now();
        cp.state
            .sync
            .routing_changed(RoutingChange {
                credentials: vec![1],
                ..Default::default()
            })
            .await;
        started.elapsed()
    };
    let route = {
        let started = Instant::now();
        let routes = vec![("default".to_owned(), "model-0".to_owned())];
        cp.state
            .sync
            .routing_changed(RoutingChange {
                routes,
                ..Default::default()
            })
            .await;
        started.elapsed()
    };
    println!(
        "| {label} | {credentials} | {bindings} | {:.0} | {:.0} | {:.1} | {:.1} |",
        times[1].as_secs_f64() * 1000.0,
        times[2].as_secs_f64() * 1000.0,
        incremental.as_secs_f64() * 1000.0,
        route.as_secs_f64() * 1000.0,
    );
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let credentials = args.next().unwrap_or(10_000);
    let bindings = args.next().unwrap_or(10_000);
    println!(
        "| backend | credentials | bindings | full sync median ms | full sync max ms | one credential change ms | one binding change ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for backend in [Backend::Embedded, Backend::Real] {
        if backend.available() {
            run(backend, credentials, bindings).await;
        }
    }
}
