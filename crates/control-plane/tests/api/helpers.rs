//! A real control plane on a free port, on either backend pair, driven over HTTP.

use std::collections::BTreeMap;

use ez_bus::ConfigBus;
use ez_config::Config;
use ez_control_plane::ControlPlane;
use ez_control_plane::state::AppState;
use ez_control_plane::store::Store;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Runs `$name(backend)` once per backend pair: SQLite + memory always, PostgreSQL +
/// Redis when the test URLs are set (and always under CI).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use ez_control_plane::testing::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite_memory() {
                    $crate::helpers::within_deadline(super::$name(Backend::Embedded)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_redis() {
                    if Backend::Real.available() {
                        $crate::helpers::within_deadline(super::$name(Backend::Real)).await;
                    }
                }
            }
        )+
    };
}

/// A hung test fails after this long instead of stalling the whole run.
pub const TEST_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

pub async fn within_deadline(test: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(TEST_DEADLINE, test).await.is_err() {
        panic!("test did not finish within {TEST_DEADLINE:?}");
    }
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    db: Option<TestDatabase>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    scheduler: Option<ez_control_plane::scheduler::Scheduler>,
    jobs: Option<ez_control_plane::scheduler::SchedulerHandle>,
}

/// A response: status, headers and JSON body (`Value::Null` when the body is empty or
/// not JSON; `text` keeps the raw body).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Resp {
    #[track_caller]
    pub fn expect(self, status: u16) -> Resp {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        self
    }

    /// Asserts the SPEC §5 error envelope with this status and code.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Resp {
        assert_eq!(self.status, status, "unexpected status; body: {}", self.text);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "unexpected error code; body: {}", self.text);
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without message: {}",
            self.text
        );
        assert!(
            error["type"].as_str().is_some_and(|t| !t.is_empty()),
            "error without type: {}",
            self.text
        );
        self
    }

    pub fn id(&self) -> i64 {
        self.body["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("no id in {}", self.text))
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {}", self.text))
            .to_owned()
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        let db = TestDatabase::create(backend).await;
        let bus = test_bus(backend).await;
        TestApp::start(db, bus).await
    }

    /// Starts a control plane on an existing database and bus (restart tests).
    pub async fn start(db: TestDatabase, bus: std::sync::Arc<dyn ConfigBus>) -> TestApp {
        TestApp::start_with(db, bus, |_| {}).await
    }

    /// A control plane on its own database of `backend` whose internal API takes
    /// `stats_token`.
    pub async fn with_stats_token(backend: Backend, stats_token: &str) -> TestApp {
        let token = ez_contract::SecretToken::from_plaintext(stats_token);
        let db = TestDatabase::create(backend).await;
        TestApp::start_with(db, test_bus(backend).await, |c| {
            c.internal.stats_token = Some(token);
        })
        .await
    }

    /// Starts a control plane with a configuration adjusted by `configure`. Its periodic
    /// jobs are built but not started; see [`TestApp::start_jobs`].
    pub async fn start_with(
        db: TestDatabase,
        bus: std::sync::Arc<dyn ConfigBus>,
        configure: impl FnOnce(&mut Config),
    ) -> TestApp {
        init_log_capture();
        let mut config = Config::defaults();
        config.auth.admin_token = Some(ez_contract::SecretToken::from_plaintext(ADMIN_TOKEN));
        configure(&mut config);
        let store = Store::connect(&db.url, db.kind.clone(), 5)
            .await
            .expect("connect test database");
        store.migrate().await.expect("migrate test database");
        let cp = ControlPlane::build(&config, store, bus)
            .await
            .expect("build control plane");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = oneshot::channel::<()>();
        let app = cp.router();
        let server = tokio::spawn(async move {
            let _ = ez_control_plane::serve(listener, app, async {
                let _ = stopped.await;
            })
            .await;
        });
        TestApp {
            base,
            client: reqwest::Client::new(),
            state: cp.state.clone(),
            db: Some(db),
            stop: Some(stop),
            server: Some(server),
            scheduler: Some(cp.scheduler()),
            jobs: None,
        }
    }

    /// The URL of this test's database, for tests that reach past the API (e.g. to
    /// create a trigger that injects a failure).
    pub fn database_url(&self) -> &str {
        self.db.as_ref().map_or("", |db| db.url.as_str())
    }

    /// Starts the control plane's periodic jobs (outbox retry, bus watchdog).
    pub fn start_jobs(&mut self) {
        if let Some(scheduler) = self.scheduler.take() {
            self.jobs = Some(scheduler.start());
        }
    }

    /// Stops the server (draining) and hands back the database for a restart.
    pub async fn shutdown(mut self) -> TestDatabase {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        if let Some(jobs) = self.jobs.take() {
            jobs.shutdown().await;
        }
        self.state.store.close().await;
        self.db.take().expect("database present until shutdown")
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        into_resp(req.send().await.expect("request sent")).await
    }

    /// Sends a raw body with the given content type (malformed-input tests).
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: &str,
    ) -> Resp {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body.to_owned());
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        into_resp(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.request(reqwest::Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(reqwest::Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.request(reqwest::Method::PUT, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Resp {
        self.request(reqwest::Method::DELETE, path, Some(token), None)
            .await
    }

    pub async fn admin_get(&self, path: &str) -> Resp {
        self.get(path, ADMIN_TOKEN).await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> Resp {
        self.post(path, ADMIN_TOKEN, body).await
    }

    pub async fn admin_put(&self, path: &str, body: Value) -> Resp {
        self.put(path, ADMIN_TOKEN, body).await
    }

    pub async fn admin_delete(&self, path: &str) -> Resp {
        self.delete(path, ADMIN_TOKEN).await
    }

    /// Creates a master; returns (id, master key).
    pub async fn create_master(&self, body: Value) -> (i64, String) {
        let resp = self.admin_post("/admin/masters", body).await.expect(201);
        (resp.id(), resp.str("master_key"))
    }

    /// Issues a child key as the master; returns (id, key).
    pub async fn issue_key(&self, master_key: &str, body: Value) -> (i64, String) {
        let resp = self.post("/v1/tokens", master_key, body).await.expect(201);
        (resp.id(), resp.str("key"))
    }

    pub async fn create_namespace(&self, name: &str) -> i64 {
        self.admin_post("/admin/namespaces", json!({ "name": name }))
            .await
            .expect(201)
            .id()
    }

    pub async fn whoami(&self, token: &str) -> Resp {
        self.get("/v1/whoami", token).await
    }

    /// Everything the API and the bus hold, for "changes nothing" assertions.
    pub async fn state_snapshot(&self) -> Value {
        let masters = self
            .admin_get("/admin/masters?page_size=500")
            .await
            .expect(200)
            .body;
        let namespaces = self
            .admin_get("/admin/namespaces?page_size=500")
            .await
            .expect(200)
            .body;
        let mut keys = Vec::new();
        for m in masters["items"].as_array().expect("items") {
            let id = m["id"].as_i64().expect("id");
            keys.push(
                self.admin_get(&format!("/admin/masters/{id}/keys?page_size=500"))
                    .await
                    .expect(200)
                    .body,
            );
        }
        json!({
            "masters": masters,
            "namespaces": namespaces,
            "keys": keys,
            "bus": self.bus_snapshot().await,
        })
    }

    /// Every `auth:*` hash and the routing hashes on the bus, without time stamps
    /// (`version`, `updated_at`; inside JSON values too).
    pub async fn bus_snapshot(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let bus = self.state.bus.clone();
        let mut out = BTreeMap::new();
        for key in bus.keys_with_prefix("auth:").await.expect("bus keys") {
            let fields = bus.hash_get_all(&key).await.expect("bus hash");
            out.insert(key, without_stamps(fields));
        }
        for key in ROUTING_HASHES {
            let fields = bus.hash_get_all(key).await.expect("bus hash");
            if !fields.is_empty() {
                out.insert(key.to_owned(), without_stamps(fields));
            }
        }
        out
    }

    /// What a fresh full sync of the database would write, in the form of
    /// [`TestApp::bus_snapshot`].
    pub async fn desired_bus(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let sync = &self.state.sync;
        let mut out = BTreeMap::new();
        for (key, fields) in sync.desired_entries().await.expect("desired entries").entries {
            out.insert(key, without_stamps(fields));
        }
        for (key, fields) in sync
            .desired_routing_entries(0)
            .await
            .expect("desired routing")
            .hashes
        {
            if !fields.is_empty() {
                out.insert(key.to_owned(), without_stamps(fields));
            }
        }
        out
    }
}

const ROUTING_HASHES: [&str; 3] = [
    ez_contract::bus_keys::PROVIDERS,
    ez_contract::bus_keys::BINDINGS,
    ez_contract::bus_keys::MODELS,
];

fn without_stamps(fields: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    fields
        .into_iter()
        .filter(|(f, _)| f != "version" && f != "updated_at")
        .map(|(f, v)| {
            let v = match serde_json::from_str::<Value>(&v) {
                Ok(Value::Object(mut map)) => {
                    map.remove("updated_at");
                    map.remove("version");
                    Value::Object(map).to_string()
                }
                _ => v,
            };
            (f, v)
        })
        .collect()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn into_resp(resp: reqwest::Response) -> Resp {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

impl TestApp {
    /// Logs in and returns the session JWT.
    pub async fn post_login(&self, body: Value) -> String {
        let resp = self
            .request(reqwest::Method::POST, "/auth/login", None, Some(body))
            .await
            .expect(200);
        resp.str("token")
    }
}

/// Every log line the test binary emits (debug and up), captured once for all tests so a
/// test can check that no secret reached a log line.
static LOG_BUFFER: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct CaptureWriter;

impl std::io::Write for CaptureWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG_BUFFER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn init_log_capture() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_ansi(false)
            .with_writer(|| CaptureWriter)
            .try_init();
    });
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(
        &LOG_BUFFER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}
