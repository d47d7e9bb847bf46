//! The split deployment with real processes: `ezapi control-plane` and `ezapi balancer`
//! sharing Redis, a mock OpenAI upstream in the test.
//!
//! Issue 4, "done when": with the control plane stopped, a split balancer keeps answering
//! from its snapshot and no request waits on logging; when the control plane returns, the
//! buffered logs arrive. The control plane is first frozen (SIGSTOP: its port still
//! accepts connections, nothing answers — the report client waits), then killed
//! (SIGKILL: connections are refused), then started again on the same port and data.
//! Along the way: `/internal/*` refuses callers without the stats token, and a balancer
//! with a wrong one keeps its records instead of losing them.
//!
//! Needs Redis (`EZ_TEST_REDIS_URL`); without it the test is skipped, except under CI,
//! where it fails. The control plane runs on a SQLite file in a temporary data dir, and
//! also on a fresh PostgreSQL schema when `EZ_TEST_DATABASE_URL` is set.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ez_control_plane::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ezapi");
const ADMIN: &str = "split-test-admin-token-0123456789";
const STATS_TOKEN: &str = "split-test-stats-token-0123456789";
const WRONG_STATS_TOKEN: &str = "not-the-stats-token-9876543210";
/// The upstream credential; the mock refuses any other.
const UPSTREAM_KEY: &str = "sk-upstream-split-1";
const MODEL: &str = "gpt-4o-mini";
const REPLY_PIECES: [&str; 4] = ["Hello", " from", " the", " mock."];
const PROMPT_TOKENS: i64 = 9;
const COMPLETION_TOKENS: i64 = REPLY_PIECES.len() as i64;
/// `balancer.report_interval` of the balancers under test.
const REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// The slowest a request may be while the control plane is away: far below the report
/// client's timeouts (3 s connect, 15 s total), so a request that waited on a delivery
/// would show.
const MAX_LATENCY: Duration = Duration::from_millis(500);
/// Longer than any acceptable request, shorter than the report client's 15 s timeout.
const CHAT_TIMEOUT: Duration = Duration::from_secs(5);
const TEST_DEADLINE: Duration = Duration::from_secs(120);

// ---- the mock upstream ----

fn usage() -> Value {
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS
    })
}

/// `POST /v1/chat/completions`: a `chat.completion` with usage, or with `"stream": true`
/// `chat.completion.chunk` events (the usage chunk when `stream_options.include_usage`
/// asks) and `[DONE]`.
async fn mock_chat(
    State(calls): State<Arc<AtomicUsize>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    calls.fetch_add(1, Ordering::Relaxed);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {UPSTREAM_KEY}")) {
        let error = json!({ "error": { "message": "Incorrect API key provided.",
            "type": "invalid_request_error", "param": null, "code": "invalid_api_key" } });
        return (StatusCode::UNAUTHORIZED, Json(error)).into_response();
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let (id, created) = ("chatcmpl-split0001", 1_735_689_600);
    if body["stream"] != json!(true) {
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": REPLY_PIECES.concat() },
                "finish_reason": "stop"
            }],
            "usage": usage()
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    let chunk = |choices: Value, usage: Value| {
        let mut chunk = json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": choices,
        });
        if include_usage {
            chunk["usage"] = usage;
        }
        format!("data: {chunk}\n\n")
    };
    let choice =
        |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "finish_reason": finish }]);
    let mut events = vec![chunk(
        choice(json!({ "role": "assistant", "content": "" }), Value::Null),
        Value::Null,
    )];
    for piece in REPLY_PIECES {
        events.push(chunk(
            choice(json!({ "content": piece }), Value::Null),
            Value::Null,
        ));
    }
    events.push(chunk(choice(json!({}), json!("stop")), Value::Null));
    if include_usage {
        events.push(chunk(json!([]), usage()));
    }
    events.push("data: [DONE]\n\n".to_owned());
    let stream = futures_util::stream::iter(events.into_iter().map(Ok::<_, std::io::Error>));
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(Body::from_stream(stream))
        .expect("a static response")
}

/// Starts the mock; returns its base URL (`http://127.0.0.1:PORT/v1`) and its call count.
async fn start_mock() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(mock_chat))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock");
    let base = format!("http://{}/v1", listener.local_addr().expect("mock address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, calls)
}

// ---- the processes (the real binary) ----

/// A running `ezapi` subcommand, its stderr collected; killed on drop (its log tail is
/// printed when the test is failing).
struct Proc {
    name: &'static str,
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// Why a start did not produce a listening process.
enum StartError {
    /// The listen address was taken (worth another try).
    AddressInUse(String),
    Other(String),
}

impl Proc {
    /// Spawns `ezapi <subcommand>` with exactly `env` (plus `PATH`) and waits for its
    /// "listening" log line.
    async fn spawn(
        name: &'static str,
        subcommand: &str,
        dir: &Path,
        env: &[(&'static str, String)],
    ) -> Result<Proc, StartError> {
        let mut cmd = Command::new(BIN);
        cmd.arg(subcommand)
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EZ_LOG__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ezapi");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut proc = Proc {
            name,
            child,
            addr: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let listening = proc.log.lock().unwrap().iter().find_map(|line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                let message = entry["fields"]["message"].as_str()?;
                (message == "ezapi listening" || message == "ezapi balancer listening")
                    .then(|| entry["fields"]["addr"].as_str().map(str::to_owned))?
            });
            if let Some(addr) = listening {
                proc.addr = addr;
                return Ok(proc);
            }
            if let Some(status) = proc.child.try_wait().expect("try_wait") {
                // Give the reader thread a moment to collect the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let tail = proc.tail();
                let report = format!("{name} exited early ({status}):\n{tail}");
                return Err(
                    if tail.contains("Address already in use") || tail.contains("AddrInUse") {
                        StartError::AddressInUse(report)
                    } else {
                        StartError::Other(report)
                    },
                );
            }
            if Instant::now() > deadline {
                return Err(StartError::Other(format!(
                    "{name} did not report its address in time:\n{}",
                    proc.tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`Proc::spawn`], retried for a while when the listen address is still taken.
    async fn start(name: &'static str, subcommand: &str, dir: &Path, env: &[(&'static str, String)]) -> Proc {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Proc::spawn(name, subcommand, dir, env).await {
                Ok(proc) => return proc,
                Err(StartError::AddressInUse(report)) if Instant::now() < deadline => {
                    eprintln!("retrying: {report}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(StartError::AddressInUse(report) | StartError::Other(report)) => panic!("{report}"),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let start = log.len().saturating_sub(40);
        log[start..].join("\n")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// SIGKILL (a crash), and wait for the process to be gone.
    fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- last log lines of {} ---\n{}", self.name, self.tail());
        }
    }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ezapi-split-{}-{:016x}", std::process::id(), random()));
    std::fs::create_dir_all(&dir).expect("create the temp dir");
    dir
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

// ---- HTTP helpers ----

async fn call(client: &reqwest::Client, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
    let req = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let resp = req.bearer_auth(token).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// One chat completion through the balancer with `X-Request-ID: id`: returns the status,
/// the body and the time to the end of the body.
async fn chat(
    client: &reqwest::Client,
    balancer: &str,
    key: &str,
    id: &str,
    stream: bool,
) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = client
        .post(format!("{balancer}/v1/chat/completions"))
        .bearer_auth(key)
        .header("x-request-id", id)
        .json(&json!({ "model": MODEL, "stream": stream,
                       "messages": [{ "role": "user", "content": "Say hello" }] }))
        .timeout(CHAT_TIMEOUT)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{id}: no answer from the balancer after {:?}: {e}",
                started.elapsed()
            )
        });
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("{id}: the body did not end after {:?}: {e}", started.elapsed()));
    (status, body, started.elapsed())
}

/// Asserts a successful answer carries the mock's reply.
fn assert_reply(id: &str, stream: bool, status: u16, body: &str) {
    assert_eq!(status, 200, "{id}: {body}");
    if stream {
        let text: String = body
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(text, REPLY_PIECES.concat(), "{id}: {body}");
        assert!(body.contains("data: [DONE]"), "{id}: {body}");
    } else {
        let answer: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{id}: {e}: {body}"));
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            REPLY_PIECES.concat(),
            "{id}"
        );
        assert_eq!(answer["usage"]["prompt_tokens"], PROMPT_TOKENS, "{id}");
    }
}

/// The balancer's `GET /health`.
async fn health(client: &reqwest::Client, balancer: &Proc) -> Value {
    let resp = client
        .get(balancer.url("/health"))
        .send()
        .await
        .expect("balancer health");
    assert_eq!(resp.status(), 200, "{} is not ready", balancer.name);
    resp.json().await.expect("health JSON")
}

/// Every stored log record (`GET /admin/logs`, all pages), and the reported total.
async fn all_logs(client: &reqwest::Client, cp: &str) -> Option<(Vec<Value>, i64)> {
    let mut items = Vec::new();
    for page in 1.. {
        let resp = client
            .get(format!("{cp}/admin/logs?page={page}&page_size=500"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?;
        if resp.status() != 200 {
            return None;
        }
        let body: Value = resp.json().await.ok()?;
        let got = body["items"].as_array()?.clone();
        let total = body["total"].as_i64()?;
        let last = got.len() < 500;
        items.extend(got);
        if last {
            return Some((items, total));
        }
    }
    unreachable!()
}

/// Polls `GET /admin/logs` until every id of `ids` is stored; returns all records, the
/// total and how long it took.
async fn wait_for_logs(
    client: &reqwest::Client,
    cp: &str,
    ids: &[String],
    within: Duration,
) -> (Vec<Value>, i64, Duration) {
    let started = Instant::now();
    loop {
        if let Some((items, total)) = all_logs(client, cp).await {
            let missing = ids
                .iter()
                .filter(|id| !items.iter().any(|r| r["request_id"] == id.as_str()))
                .count();
            if missing == 0 {
                return (items, total, started.elapsed());
            }
            assert!(
                started.elapsed() < within,
                "{missing} of {} log records did not arrive within {within:?} (total {total})",
                ids.len()
            );
        } else {
            assert!(started.elapsed() < within, "GET /admin/logs kept failing");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls the balancer's health until `reports.buffered_logs` is `want`.
async fn wait_for_buffered(client: &reqwest::Client, balancer: &Proc, want: u64, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let health = health(client, balancer).await;
        if health["reports"]["buffered_logs"] == want {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "{}: buffered_logs did not reach {want}: {health}",
            balancer.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The requests sent while the control plane is away.
#[derive(Default)]
struct Outage {
    ids: Vec<String>,
    latencies: Vec<Duration>,
}

impl Outage {
    /// Sequential requests spread over several report rounds, then a concurrent burst;
    /// each must be answered, and fast.
    async fn send(&mut self, client: &reqwest::Client, balancer: &str, key: &str, phase: &str, db: &str) {
        let first = self.latencies.len();
        for i in 0..15 {
            let id = format!("outage-{phase}-{i}");
            let stream = i % 2 == 1;
            let (status, body, took) = chat(client, balancer, key, &id, stream).await;
            self.check(id, stream, status, &body, took, phase);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        let burst = futures_util::future::join_all((0..8).map(|i| {
            let id = format!("outage-{phase}-burst-{i}");
            async move {
                let result = chat(client, balancer, key, &id, i % 2 == 0).await;
                (id, i % 2 == 0, result)
            }
        }))
        .await;
        for (id, stream, (status, body, took)) in burst {
            self.check(id, stream, status, &body, took, phase);
        }
        let mut phase_latencies = self.latencies[first..].to_vec();
        phase_latencies.sort();
        eprintln!(
            "[{db}] control plane {phase}: {} requests, p50 {:?}, max {:?}",
            phase_latencies.len(),
            percentile(&phase_latencies, 0.5),
            phase_latencies[phase_latencies.len() - 1]
        );
    }

    fn check(&mut self, id: String, stream: bool, status: u16, body: &str, took: Duration, phase: &str) {
        assert_reply(&id, stream, status, body);
        assert!(
            took < MAX_LATENCY,
            "{id} took {took:?} with the control plane {phase}"
        );
        self.latencies.push(took);
        self.ids.push(id);
    }
}

// ---- the scenario ----

/// Configures the deployment through the control plane: the mock as a custom provider,
/// `MODEL` bound in `default`, a master and its child key. Returns the child key.
async fn configure(client: &reqwest::Client, cp: &Proc, upstream: &str) -> String {
    let admin_post = |path: &str, body: Value| {
        let url = cp.url(path);
        async move {
            let (status, answer) = call(client, url.clone(), ADMIN, Some(body)).await;
            assert!(status == 200 || status == 201, "{url}: {status} {answer}");
            answer
        }
    };
    let setup = admin_post(
        "/admin/providers/custom",
        json!({ "name": "mock-openai", "base_url": upstream, "api_keys": [UPSTREAM_KEY], "models": [MODEL] }),
    )
    .await;
    let group_id = setup["group"]["id"].as_i64().expect("group.id");
    admin_post(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": MODEL, "group_id": group_id }),
    )
    .await;
    let master = admin_post("/admin/masters", json!({ "name": "split" })).await;
    let master_key = master["master_key"].as_str().expect("master_key");
    let (status, key) = call(
        client,
        cp.url("/v1/tokens"),
        master_key,
        Some(json!({ "name": "split-test" })),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    key["key"].as_str().expect("key").to_owned()
}

/// Waits until the balancer's snapshot routes the child key (a 200 from the mock).
async fn wait_until_routable(client: &reqwest::Client, balancer: &Proc, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for attempt in 0.. {
        let (status, body, _) = chat(
            client,
            &balancer.url(""),
            key,
            &format!("warmup-{attempt}"),
            false,
        )
        .await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} does not route the key: {status} {body}",
            balancer.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cp_keeps_balancer_logs_while_away(database_url: Option<String>) {
    let db = if database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let redis = std::env::var("EZ_TEST_REDIS_URL").expect("EZ_TEST_REDIS_URL");
    let dir = temp_dir();
    let prefix = format!("test:split-{:016x}:", random());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (upstream, upstream_calls) = start_mock().await;

    let common = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("EZ_REDIS__URL", redis.clone()),
            ("EZ_REDIS__KEY_PREFIX", prefix.clone()),
            ("EZ_SERVER__DATA_DIR", dir.join("data").display().to_string()),
        ];
        env.extend(extra);
        env
    };
    let cp_env = |listen: String| {
        let mut env = common(vec![
            ("EZ_SERVER__LISTEN", listen),
            ("EZ_AUTH__ADMIN_TOKEN", ADMIN.to_owned()),
            ("EZ_INTERNAL__STATS_TOKEN", STATS_TOKEN.to_owned()),
        ]);
        if let Some(url) = &database_url {
            env.push(("EZ_DATABASE__URL", url.clone()));
        }
        env
    };

    // The control plane on a port of its choosing; it comes back on the same one.
    let cp = Proc::start(
        "control plane",
        "control-plane",
        &dir,
        &cp_env("127.0.0.1:0".to_owned()),
    )
    .await;
    let cp_port = cp.port();
    let cp_base = cp.url("");
    let balancer_env = |token: &str| {
        common(vec![
            ("EZ_SERVER__BALANCER_LISTEN", "127.0.0.1:0".to_owned()),
            ("EZ_INTERNAL__CONTROL_PLANE_URL", cp_base.clone()),
            ("EZ_INTERNAL__STATS_TOKEN", token.to_owned()),
            ("EZ_BALANCER__REPORT_INTERVAL", "200ms".to_owned()),
            ("EZ_BALANCER__RECONCILE_INTERVAL", "1s".to_owned()),
        ])
    };

    // The internal API wants the stats token.
    for (token, code) in [
        (None, "missing_internal_token"),
        (Some(WRONG_STATS_TOKEN), "invalid_internal_token"),
    ] {
        let mut req = client
            .post(cp.url("/internal/logs"))
            .json(&json!({ "items": [] }));
        if let Some(token) = token {
            req = req.header("x-internal-token", token);
        }
        let resp = req.send().await.expect("POST /internal/logs");
        assert_eq!(resp.status(), 401);
        let body: Value = resp.json().await.expect("error JSON");
        assert_eq!(body["error"]["code"], code, "{body}");
    }

    let key = configure(&client, &cp, &upstream).await;
    let balancer = Proc::start("balancer", "balancer", &dir, &balancer_env(STATS_TOKEN)).await;
    let b = balancer.url("");
    wait_until_routable(&client, &balancer, &key).await;
    let ready = health(&client, &balancer).await;
    assert_eq!(ready["snapshot"]["ready"], true, "{ready}");

    // A balancer with the wrong stats token answers, but keeps its logs: the control
    // plane refuses them (401) and the balancer holds them for a corrected deployment.
    let misconfigured = Proc::start(
        "misconfigured balancer",
        "balancer",
        &dir,
        &balancer_env(WRONG_STATS_TOKEN),
    )
    .await;
    wait_until_routable(&client, &misconfigured, &key).await;
    let refused: Vec<String> = (0..3).map(|i| format!("refused-{i}")).collect();
    for (i, id) in refused.iter().enumerate() {
        let (status, body, _) = chat(&client, &misconfigured.url(""), &key, id, i % 2 == 1).await;
        assert_reply(id, i % 2 == 1, status, &body);
    }
    // Several report rounds go by; the records stay (warm-up records too).
    tokio::time::sleep(REPORT_INTERVAL * 5).await;
    let held = health(&client, &misconfigured).await;
    let held_logs = held["reports"]["buffered_logs"].as_u64().expect("buffered_logs");
    assert!(held_logs >= refused.len() as u64, "{held}");
    assert!(
        misconfigured.tail().contains("invalid_internal_token"),
        "the misconfigured balancer says why its reports fail:\n{}",
        misconfigured.tail()
    );
    misconfigured.kill();

    // With the control plane up, records arrive over HTTP.
    let before: Vec<String> = (0..6).map(|i| format!("before-{i}")).collect();
    for (i, id) in before.iter().enumerate() {
        let (status, body, _) = chat(&client, &b, &key, id, i % 2 == 1).await;
        assert_reply(id, i % 2 == 1, status, &body);
    }
    let (items, _, took) = wait_for_logs(&client, &cp_base, &before, Duration::from_secs(20)).await;
    eprintln!("[{db}] logs with the control plane up: stored {took:?} after the last request");
    for (i, id) in before.iter().enumerate() {
        let record = items
            .iter()
            .find(|r| r["request_id"] == id.as_str())
            .expect("record");
        assert_eq!(record["status_code"], 200, "{record}");
        assert_eq!(record["public_model"], MODEL, "{record}");
        assert_eq!(record["stream"], i % 2 == 1, "{record}");
        assert_eq!(record["input_tokens"], PROMPT_TOKENS, "{record}");
        assert_eq!(record["output_tokens"], COMPLETION_TOKENS, "{record}");
    }
    assert!(
        items.iter().all(|r| !r["request_id"]
            .as_str()
            .unwrap_or_default()
            .starts_with("refused-")),
        "records refused for a wrong token are not stored"
    );
    // Nothing in flight before the outage: the balancer's buffer is empty and the
    // database holds everything it sent.
    wait_for_buffered(&client, &balancer, 0, Duration::from_secs(10)).await;
    tokio::time::sleep(REPORT_INTERVAL * 3).await;
    let (_, total_before) = all_logs(&client, &cp_base).await.expect("logs");

    // Outage, part 1: the control plane hangs (SIGSTOP): it still accepts connections,
    // so the balancer's report waits for an answer that does not come. Then, part 2, it
    // crashes (SIGKILL): connections are refused.
    let upstream_before = upstream_calls.load(Ordering::Relaxed);
    cp.signal("-STOP");
    let mut outage = Outage::default();
    outage.send(&client, &b, &key, "frozen", db).await;
    cp.kill();
    outage.send(&client, &b, &key, "down", db).await;
    let Outage {
        ids: outage,
        mut latencies,
    } = outage;
    assert_eq!(
        upstream_calls.load(Ordering::Relaxed) - upstream_before,
        outage.len(),
        "every outage request reached the upstream once"
    );
    latencies.sort();
    let (p50, p95, max) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        latencies[latencies.len() - 1],
    );
    eprintln!(
        "[{db}] {} requests with the control plane away: p50 {p50:?}, p95 {p95:?}, max {max:?}",
        latencies.len()
    );
    assert!(p50 < REPORT_INTERVAL, "p50 {p50:?}");

    // The balancer holds exactly the records of the outage, drops none, still serves.
    let held = wait_for_buffered(&client, &balancer, outage.len() as u64, Duration::from_secs(2)).await;
    assert_eq!(held["reports"]["dropped_logs"], 0, "{held}");
    assert_eq!(held["status"], "ok", "{held}");
    eprintln!("[{db}] balancer health during the outage: {held}");

    // The control plane returns on the same port and data: the records arrive.
    let restarted_at = Instant::now();
    let cp = Proc::start(
        "restarted control plane",
        "control-plane",
        &dir,
        &cp_env(format!("127.0.0.1:{cp_port}")),
    )
    .await;
    let started_in = restarted_at.elapsed();
    let (items, total_after, took) =
        wait_for_logs(&client, &cp.url(""), &outage, Duration::from_secs(20)).await;
    eprintln!(
        "[{db}] control plane restarted in {started_in:?}; the {} buffered records were stored {took:?} later",
        outage.len()
    );
    assert_eq!(
        total_after,
        total_before + outage.len() as i64,
        "each buffered record is stored exactly once"
    );
    for id in &outage {
        let record = items
            .iter()
            .find(|r| r["request_id"] == id.as_str())
            .expect("record");
        assert_eq!(record["status_code"], 200, "{record}");
        assert_eq!(record["input_tokens"], PROMPT_TOKENS, "{record}");
        assert_eq!(record["output_tokens"], COMPLETION_TOKENS, "{record}");
    }
    wait_for_buffered(&client, &balancer, 0, Duration::from_secs(5)).await;

    drop(balancer);
    drop(cp);
    remove_bus_keys(&redis, &prefix).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Removes what the deployment wrote under its key prefix.
async fn remove_bus_keys(redis: &str, prefix: &str) {
    use ez_bus::{BusWrite, ConfigBus, RedisBus};
    let bus = RedisBus::connect(redis, prefix.to_owned())
        .await
        .expect("connect to Redis");
    let keys = bus.keys_with_prefix("").await.expect("list the test's keys");
    let writes = keys.into_iter().map(|key| BusWrite::Delete { key }).collect();
    bus.apply(writes).await.expect("remove the test's keys");
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Whether Redis is there (it must be under CI).
fn redis_available() -> bool {
    if env_set("EZ_TEST_REDIS_URL") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "EZ_TEST_REDIS_URL is not set: CI must run the split deployment test"
    );
    eprintln!("skipped: set EZ_TEST_REDIS_URL to run the split deployment test");
    false
}

async fn run(database_url: Option<String>) {
    tokio::time::timeout(TEST_DEADLINE, cp_keeps_balancer_logs_while_away(database_url))
        .await
        .expect("the split deployment test did not finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_balancer_outlives_the_control_plane_sqlite() {
    if redis_available() {
        run(None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_balancer_outlives_the_control_plane_postgres() {
    if !redis_available() {
        return;
    }
    if !env_set("EZ_TEST_DATABASE_URL") {
        assert!(
            std::env::var_os("CI").is_none(),
            "EZ_TEST_DATABASE_URL is not set: CI must run the PostgreSQL split deployment test"
        );
        eprintln!("skipped: set EZ_TEST_DATABASE_URL to run the split deployment test on PostgreSQL");
        return;
    }
    let db = TestDatabase::create(Backend::Real).await;
    run(Some(db.url.clone())).await;
    drop(db);
}
