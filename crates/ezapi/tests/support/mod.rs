//! The harness of the tests that drive the real `ezapi` binary as separate processes
//! (split deployments, restarts): a mock OpenAI upstream, processes with their logs, and
//! the HTTP calls the scenarios share.

#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

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
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_ezapi");
pub const ADMIN: &str = "ezapi-test-admin-token-0123456789";
pub const STATS_TOKEN: &str = "ezapi-test-stats-token-0123456789";
/// The upstream credential; the mock refuses any other.
pub const UPSTREAM_KEY: &str = "sk-upstream-test-1";
pub const MODEL: &str = "gpt-4o-mini";
pub const REPLY_PIECES: [&str; 4] = ["Hello", " from", " the", " mock."];
pub const PROMPT_TOKENS: i64 = 9;
pub const COMPLETION_TOKENS: i64 = REPLY_PIECES.len() as i64;
/// Longer than any acceptable request, shorter than the report client's 15 s timeout.
pub const CHAT_TIMEOUT: Duration = Duration::from_secs(5);

// ---- the mock upstream ----

pub fn usage() -> Value {
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS
    })
}

/// `POST /v1/chat/completions`: a `chat.completion` with usage, or with `"stream": true`
/// `chat.completion.chunk` events (the usage chunk when `stream_options.include_usage`
/// asks) and `[DONE]`. A stream whose first message says [`DRIP`] sends one delta every
/// 200 ms for a minute; `max_tokens` over 100,000 is a 402 naming that parameter.
pub async fn mock_chat(
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
    if body["stream"] == json!(true) && body["messages"][0]["content"] == DRIP {
        return drip(model);
    }
    // What a pay-as-you-go upstream answers when `max_tokens` exceeds the credit left:
    // the request's fault, not the credential's.
    if body["max_tokens"].as_i64().is_some_and(|n| n > 100_000) {
        let error = json!({ "error": { "message": "This request requires more credits, or fewer max_tokens.",
            "type": "invalid_request_error", "param": "max_tokens", "code": "insufficient_credits" } });
        return (StatusCode::PAYMENT_REQUIRED, Json(error)).into_response();
    }
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

/// The prompt that makes the mock stream slowly.
pub const DRIP: &str = "drip";

fn drip(model: String) -> Response {
    let stream = futures_util::stream::unfold(0u32, move |i| {
        let chunk = json!({ "object": "chat.completion.chunk", "model": model,
                            "choices": [{ "index": 0, "delta": { "content": "drop " } }] });
        async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (i < 300).then(|| (Ok::<_, std::io::Error>(format!("data: {chunk}\n\n")), i + 1))
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(stream))
        .expect("a static response")
}

/// Starts the mock; returns its base URL (`http://127.0.0.1:PORT/v1`) and its call count.
pub async fn start_mock() -> (String, Arc<AtomicUsize>) {
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
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// Why a start did not produce a listening process.
pub enum StartError {
    /// The listen address was taken (worth another try).
    AddressInUse(String),
    Other(String),
}

impl Proc {
    /// Spawns `ezapi <subcommand>` with exactly `env` (plus `PATH`) and waits for its
    /// "listening" log line.
    pub async fn spawn(
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
    pub async fn start(
        name: &'static str,
        subcommand: &str,
        dir: &Path,
        env: &[(&'static str, String)],
    ) -> Proc {
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

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port")
    }

    pub fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        let start = log.len().saturating_sub(40);
        log[start..].join("\n")
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// SIGKILL (a crash), and wait for the process to be gone.
    pub fn kill(mut self) {
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

pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ezapi-test-{}-{:016x}", std::process::id(), random()));
    std::fs::create_dir_all(&dir).expect("create the temp dir");
    dir
}

pub fn random() -> u64 {
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

pub async fn call(client: &reqwest::Client, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
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
pub async fn chat(
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
pub fn assert_reply(id: &str, stream: bool, status: u16, body: &str) {
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

/// Every stored log record (`GET /admin/logs`, all pages), and the reported total.
pub async fn all_logs(client: &reqwest::Client, cp: &str) -> Option<(Vec<Value>, i64)> {
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
pub async fn wait_for_logs(
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

/// Configures the deployment through the control plane: the mock as a custom provider,
/// `MODEL` bound in `default`, a master and its child key. Returns the child key.
pub async fn configure(client: &reqwest::Client, cp: &Proc, upstream: &str) -> String {
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
pub async fn wait_until_routable(client: &reqwest::Client, balancer: &Proc, key: &str) {
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

/// Removes what the deployment wrote under its key prefix.
pub async fn remove_bus_keys(redis: &str, prefix: &str) {
    use ez_bus::{BusWrite, ConfigBus, RedisBus};
    let bus = RedisBus::connect(redis, prefix.to_owned())
        .await
        .expect("connect to Redis");
    let keys = bus.keys_with_prefix("").await.expect("list the test's keys");
    let writes = keys.into_iter().map(|key| BusWrite::Delete { key }).collect();
    bus.apply(writes).await.expect("remove the test's keys");
}

pub fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Whether Redis is there (it must be under CI).
pub fn redis_available() -> bool {
    if env_set("EZ_TEST_REDIS_URL") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "EZ_TEST_REDIS_URL is not set: CI must run the tests of split deployments"
    );
    eprintln!("skipped: set EZ_TEST_REDIS_URL to run the tests of split deployments");
    false
}
