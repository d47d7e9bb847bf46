//! Nothing is lost when the bus fails: failed writes go to the outbox, are retried, die
//! visibly after `max_retries`, are settled by a full sync; a bus that lost its data is
//! rebuilt without an operator.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ez_bus::{BusError, BusWrite, ConfigBus, RedisBus, Subscription};
use ez_contract::time::now_unix;
use ez_control_plane::sync::{BusSync, OutboxRetry};
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::json;

use crate::both_backends;
use crate::helpers::TestApp;

/// A real bus that the test can switch off: while off, every call fails as a dead
/// Redis would.
pub(crate) struct SwitchableBus {
    inner: Arc<dyn ConfigBus>,
    up: AtomicBool,
}

impl SwitchableBus {
    pub(crate) fn new(inner: Arc<dyn ConfigBus>) -> Arc<SwitchableBus> {
        Arc::new(SwitchableBus {
            inner,
            up: AtomicBool::new(true),
        })
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), BusError> {
        if self.up.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(BusError::Unavailable("switched off by the test".into()))
        }
    }
}

#[async_trait]
impl ConfigBus for SwitchableBus {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.check()?;
        self.inner.ping().await
    }

    async fn apply(&self, writes: Vec<BusWrite>) -> Result<(), BusError> {
        self.check()?;
        self.inner.apply(writes).await
    }

    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, String>, BusError> {
        self.check()?;
        self.inner.hash_get_all(key).await
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<String>, BusError> {
        self.check()?;
        self.inner.hash_get(key, field).await
    }

    async fn get_values(&self, keys: &[String]) -> Result<Vec<Option<String>>, BusError> {
        self.check()?;
        self.inner.get_values(keys).await
    }

    async fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<String>, BusError> {
        self.check()?;
        self.inner.keys_with_prefix(prefix).await
    }

    async fn publish(&self, channel: &str, payload: &str) -> Result<(), BusError> {
        self.check()?;
        self.inner.publish(channel, payload).await
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, BusError> {
        self.check()?;
        self.inner.subscribe(channel).await
    }

    async fn count(&self, keys: &[String], ttl_ms: u64) -> Result<Vec<i64>, BusError> {
        self.check()?;
        self.inner.count(keys, ttl_ms).await
    }
}

/// What a fresh full sync of the database would write, without the time stamps.
async fn desired(app: &TestApp) -> BTreeMap<String, BTreeMap<String, String>> {
    app.desired_bus().await
}

pub(crate) fn retry_job(app: &TestApp, max_retries: i64) -> OutboxRetry {
    OutboxRetry {
        sync: app.state.sync.clone(),
        store: app.state.store.clone(),
        every: Duration::from_secs(1),
        batch_size: 100,
        max_retries,
    }
}

async fn outbox_total(app: &TestApp, status: &str) -> i64 {
    let body = app
        .admin_get(&format!("/admin/sync/outbox?status={status}"))
        .await
        .expect(200)
        .body;
    body["total"].as_i64().unwrap()
}

both_backends!(
    failed_writes_are_queued_and_retried,
    dead_entries_are_visible_and_a_full_sync_settles_them
);

async fn failed_writes_are_queued_and_retried(backend: Backend) {
    let bus = SwitchableBus::new(test_bus(backend).await);
    let app = TestApp::start(TestDatabase::create(backend).await, bus.clone()).await;
    let (master_a, key_a_master) = app.create_master(json!({ "name": "a" })).await;
    let (key_a_id, key_a) = app.issue_key(&key_a_master, json!({})).await;

    bus.set_up(false);
    // Every change still succeeds: the database is the source of truth.
    let (master_b, master_b_key) = app.create_master(json!({ "name": "b" })).await;
    let (_, key_b) = app.issue_key(&master_b_key, json!({})).await;
    app.delete(&format!("/v1/tokens/{key_a_id}"), &key_a_master)
        .await
        .expect(200);
    app.admin_post(&format!("/admin/masters/{master_a}/revoke-keys"), json!({}))
        .await
        .expect(200);
    app.admin_put(&format!("/admin/masters/{master_b}"), json!({ "global_qps": 9 }))
        .await
        .expect(200);

    let pending = app
        .admin_get("/admin/sync/outbox?status=pending")
        .await
        .expect(200)
        .body;
    let mut resources: Vec<String> = pending["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["resource"].as_str().unwrap(),
                e["resource_id"].as_str().unwrap()
            )
        })
        .collect();
    resources.sort();
    let mut expected = vec![
        format!("master:{master_a}"),
        format!("master:{master_b}"),
        format!("key:{key_a_id}"),
        format!("key:{}", key_a_id + 1),
    ];
    expected.sort();
    assert_eq!(
        resources, expected,
        "one pending entry per changed resource (repeated failures merge)"
    );
    assert!(
        pending["items"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("switched off")
    );
    // The keys still validate correctly from the database meanwhile.
    app.whoami(&key_b).await.expect(200);
    app.whoami(&key_a).await.expect_error(401, "key_revoked");

    bus.set_up(true);
    let retried = retry_job(&app, 10)
        .run_at(now_unix() + 3600)
        .await
        .expect("retry pass");
    assert_eq!(retried, 4);
    assert_eq!(outbox_total(&app, "pending").await, 0);
    assert_eq!(outbox_total(&app, "done").await, 4);
    assert_eq!(
        app.bus_snapshot().await,
        desired(&app).await,
        "the bus equals a fresh full sync"
    );
    app.whoami(&key_a).await.expect_error(401, "key_revoked");
    app.whoami(&key_b).await.expect(200);
}

async fn dead_entries_are_visible_and_a_full_sync_settles_them(backend: Backend) {
    let bus = SwitchableBus::new(test_bus(backend).await);
    let app = TestApp::start(TestDatabase::create(backend).await, bus.clone()).await;
    bus.set_up(false);
    let (master_id, _) = app.create_master(json!({ "name": "lonely" })).await;

    let job = retry_job(&app, 3);
    let mut now = now_unix() + 1;
    for attempt in 1..=3 {
        assert!(
            job.run_at(now).await.is_err(),
            "attempt {attempt} fails while the bus is down"
        );
        // Rescheduled with backoff: not due again at the same instant.
        assert_eq!(job.run_at(now).await.expect("nothing due"), 0);
        now += 10_000;
    }
    let dead = app
        .admin_get("/admin/sync/outbox?status=dead")
        .await
        .expect(200)
        .body;
    assert_eq!(dead["total"], 1);
    assert_eq!(dead["items"][0]["attempts"], 3);
    assert_eq!(dead["items"][0]["resource"], "master");
    assert_eq!(dead["items"][0]["resource_id"], master_id.to_string());
    assert_eq!(
        job.run_at(now + 100_000)
            .await
            .expect("dead entries are not retried"),
        0
    );

    bus.set_up(true);
    let report = app.admin_post("/admin/sync", json!({})).await.expect(200).body;
    assert_eq!(report["settled_outbox"], 1);
    assert_eq!(outbox_total(&app, "dead").await, 0);
    assert_eq!(outbox_total(&app, "done").await, 1);
    assert_eq!(app.bus_snapshot().await, desired(&app).await);
    app.admin_get("/admin/sync/outbox?status=zombie")
        .await
        .expect_error(400, "invalid_query");
}

#[test]
fn backoff_doubles_and_is_capped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus: Arc<dyn ConfigBus> = Arc::new(ez_bus::MemoryBus::new());
        let db = TestDatabase::create(Backend::Embedded).await;
        let store = ez_control_plane::store::Store::connect(&db.url, db.kind.clone(), 1)
            .await
            .unwrap();
        let job = OutboxRetry {
            sync: BusSync::new(bus, store.clone()),
            store,
            every: Duration::from_secs(5),
            batch_size: 1,
            max_retries: 3,
        };
        assert_eq!(job.backoff_secs(1), 10);
        assert_eq!(job.backoff_secs(2), 20);
        assert_eq!(job.backoff_secs(5), 160);
        assert_eq!(job.backoff_secs(6), 300);
        assert_eq!(job.backoff_secs(1_000), 300);
    });
}

/// A redis-server of this test's own, on a free port, that can be killed and restarted
/// empty.
struct PrivateRedis {
    port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    fn start(port: u16) -> Option<PrivateRedis> {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(PrivateRedis { port, child })
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

both_backends!(redis_killed_and_restarted_empty_is_rebuilt_with_nothing_lost);

async fn redis_killed_and_restarted_empty_is_rebuilt_with_nothing_lost(backend: Backend) {
    let port = free_port();
    let Some(mut redis) = PrivateRedis::start(port) else {
        assert!(std::env::var_os("CI").is_none(), "CI machines have redis-server");
        eprintln!("redis-server not installed: skipping");
        return;
    };
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let bus: Arc<dyn ConfigBus> = Arc::new(RedisBus::connect(&url, "").await.expect("connect private Redis"));
    let mut app = TestApp::start_with(TestDatabase::create(backend).await, bus, |config| {
        config.sync_outbox.interval = Duration::from_millis(200);
        config.sync_outbox.bus_check_interval = Duration::from_millis(200);
    })
    .await;
    app.start_jobs();

    let (master_a, master_a_key) = app.create_master(json!({ "name": "a" })).await;
    let (key_a_id, key_a) = app.issue_key(&master_a_key, json!({})).await;
    let setup = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": "openai", "api_keys": ["sk-upstream-aaaa1111"] }),
        )
        .await
        .expect(201)
        .body;
    let group_id = setup["group"]["id"].as_i64().unwrap();
    app.admin_post(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": group_id }),
    )
    .await
    .expect(201);
    assert_eq!(app.bus_snapshot().await, desired(&app).await);

    redis.kill();
    app.admin_post(
        "/admin/api-keys",
        json!({ "group_id": group_id, "api_key": "sk-upstream-bbbb2222", "weight": 3 }),
    )
    .await
    .expect(201);
    app.admin_post("/admin/bindings", json!({ "namespace": "default", "public_model": "fast", "group_id": group_id, "selector_value": "gpt-4o-mini" }))
        .await
        .expect(201);
    let (_, master_b_key) = app.create_master(json!({ "name": "b" })).await;
    let (_, key_b) = app.issue_key(&master_b_key, json!({ "name": "b1" })).await;
    app.delete(&format!("/v1/tokens/{key_a_id}"), &master_a_key)
        .await
        .expect(200);
    app.admin_post(&format!("/admin/masters/{master_a}/revoke-keys"), json!({}))
        .await
        .expect(200);
    assert!(
        outbox_total(&app, "pending").await >= 1,
        "failed writes were queued"
    );

    // Redis comes back with nothing in it; the CP notices and rebuilds, unattended.
    let _redis = PrivateRedis::start(port).expect("restart redis-server");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bus_now = app.state.bus.keys_with_prefix("auth:").await.ok();
        if bus_now.is_some()
            && app.bus_snapshot().await == desired(&app).await
            && outbox_total(&app, "pending").await == 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "the bus was not rebuilt in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(outbox_total(&app, "dead").await, 0, "nothing died");
    let bus = app.bus_snapshot().await;
    assert_eq!(
        bus.keys().filter(|k| k.starts_with("auth:")).count(),
        4,
        "two masters and two keys"
    );
    assert_eq!(bus["config:providers"].len(), 2, "both credentials");
    assert_eq!(bus["config:bindings"].len(), 2, "both routes");
    app.whoami(&key_a).await.expect_error(401, "key_revoked");
    app.whoami(&key_b).await.expect(200);
    app.shutdown().await;
}
