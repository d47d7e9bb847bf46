//! The official `openai` Python package against a real `ezapi serve` with a child key:
//! chat completions (plain and streamed, with and without `stream_options.include_usage`),
//! embeddings (base64, the client's default, and float), model listing and the error
//! classes, forwarded to a mock upstream that answers with OpenAI's shapes; and the same
//! client against an Anthropic and a Gemini upstream through the gateway's translation —
//! plain, streamed, and tool-call round trips — where the mocks (`ez-test-upstreams`)
//! check every request against their provider's rules. Then the official `google-genai`
//! client on the same gateway (the Gemini route as is, the OpenAI and Anthropic routes
//! translated), and the official `anthropic` client (the Anthropic route as is, the
//! OpenAI and Gemini routes translated).
//!
//! Needs a Python with `openai` (and `google-genai`, `anthropic`) installed, named by `EZ_TEST_PYTHON`
//! (`.ci/run` builds one in `target/ci-venv`). Without it the test is skipped, except
//! under CI, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use ez_test_upstreams::{anthropic as mock_anthropic, gemini as mock_gemini};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ezapi");
const ADMIN: &str = "openai-python-admin-token-0123";
/// The upstream credential; the mock refuses any other.
const UPSTREAM_KEY: &str = "sk-upstream-1";
const CHAT_MODEL: &str = "gpt-4o-mini";
const EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// The public name of the Anthropic route, and the model it resolves to.
const CLAUDE_MODEL: &str = "claude-haiku";
const CLAUDE_UPSTREAM_MODEL: &str = "claude-3-5-haiku-20241022";
const ANTHROPIC_KEY: &str = "sk-ant-upstream-1";
/// The public name of the Gemini route.
const GEMINI_MODEL: &str = "gemini-flash";
/// What the mock answers, piece by piece when streaming. The Python script expects
/// exactly these (keep both in step).
const REPLY_PIECES: [&str; 5] = ["Hello", " from", " the", " mock", " upstream."];
const PROMPT_TOKENS: u64 = 9;
/// The embedding of input number `i` is `EMBEDDING` followed by `i`; every value is exact
/// in `f32`, so the base64 form decodes to the same numbers.
const EMBEDDING: [f32; 3] = [0.25, -0.5, 1.0];
const TEST_DEADLINE: Duration = Duration::from_secs(120);

// ---- the mock upstream ----

/// Requests the mock received: (path, body).
type Seen = Arc<Mutex<Vec<(&'static str, Value)>>>;

fn openai_error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    let body = json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    (status, Json(body)).into_response()
}

fn upstream_key_ok(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {UPSTREAM_KEY}"))
}

fn wrong_upstream_key() -> Response {
    openai_error(
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided.",
        "invalid_request_error",
        "invalid_api_key",
    )
}

fn usage() -> Value {
    let completion = REPLY_PIECES.len() as u64;
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

/// `POST /v1/chat/completions` as OpenAI answers it: a `chat.completion`, or with
/// `"stream": true` `chat.completion.chunk` events (role first, content pieces, the
/// finish reason, the usage chunk when `stream_options.include_usage` asks, `[DONE]`).
async fn mock_chat(State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    seen.lock().unwrap().push(("/chat/completions", body.clone()));
    if !upstream_key_ok(&headers) {
        return wrong_upstream_key();
    }
    if body["messages"].as_array().is_none_or(|m| m.is_empty()) {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'messages' is a required property",
            "invalid_request_error",
            "missing_required_parameter",
        );
    }
    let model = body["model"].as_str().unwrap_or_default();
    let id = "chatcmpl-mock0001";
    let created = 1_735_689_600;
    if body["stream"] != json!(true) {
        return Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": REPLY_PIECES.concat(), "refusal": null },
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": usage(),
            "service_tier": "default"
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"] == json!(true);
    let chunk = |choices: Value, usage: Value| {
        let mut chunk = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": choices,
        });
        // With include_usage every chunk carries `usage`, null but on the last one.
        if include_usage {
            chunk["usage"] = usage;
        }
        format!("data: {chunk}\n\n")
    };
    let choice = |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
    let mut events = vec![chunk(
        choice(
            json!({ "role": "assistant", "content": "", "refusal": null }),
            Value::Null,
        ),
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
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("a static response")
}

/// `POST /v1/embeddings`: one embedding per input, as floats or, with
/// `"encoding_format": "base64"` (the Python client's default), as little-endian `f32`s.
async fn mock_embeddings(State(seen): State<Seen>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    seen.lock().unwrap().push(("/embeddings", body.clone()));
    if !upstream_key_ok(&headers) {
        return wrong_upstream_key();
    }
    let inputs = match &body["input"] {
        Value::String(_) => 1,
        Value::Array(items) => items.len(),
        _ => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                "'input' is a required property",
                "invalid_request_error",
                "missing_required_parameter",
            );
        }
    };
    let base64 = body["encoding_format"] == json!("base64");
    let data: Vec<Value> = (0..inputs)
        .map(|index| {
            let mut vector = EMBEDDING.to_vec();
            vector.push(index as f32);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": { "prompt_tokens": 4, "total_tokens": 4 }
    }))
    .into_response()
}

/// Starts the mock; returns its base URL (`http://127.0.0.1:PORT/v1`).
async fn start_mock(seen: Seen) -> String {
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(mock_chat))
        .route("/v1/embeddings", post(mock_embeddings))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock");
    let base = format!("http://{}/v1", listener.local_addr().expect("mock address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

// ---- the gateway (the real binary) ----

/// A running `ezapi serve`, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EZ_SERVER__DATA_DIR", dir.join("data"))
            .env("EZ_SERVER__LISTEN", "127.0.0.1:0")
            .env("EZ_AUTH__ADMIN_TOKEN", ADMIN)
            .env("EZ_LOG__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ezapi");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.addr.is_empty() {
            assert!(
                Instant::now() < deadline,
                "ezapi did not report its address in time"
            );
            let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) else {
                assert!(server.child.try_wait().unwrap().is_none(), "ezapi exited early");
                continue;
            };
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "ezapi listening" {
                server.addr = entry["fields"]["addr"].as_str().unwrap().to_owned();
            }
        }
        // Keep draining stderr so the gateway never blocks on a full pipe.
        std::thread::spawn(move || while lines.recv().is_ok() {});
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("ezapi-openai-py-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn call(client: &reqwest::Client, url: String, token: &str, body: Option<Value>) -> (u16, Value) {
    let req = match body {
        Some(body) => client.post(url).json(&body),
        None => client.get(url),
    };
    let resp = req.bearer_auth(token).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Configures the gateway through its API: the mock as a custom provider, both models
/// bound in `default`, a master and its child key. Returns the child key once the
/// balancer's snapshot lists both models.
async fn configure(server: &Server, upstream: &str, anthropic: &str, gemini: &str) -> String {
    let client = reqwest::Client::new();
    let admin_post = |path: &str, body: Value| {
        let (client, url) = (client.clone(), server.url(path));
        async move {
            let (status, answer) = call(&client, url.clone(), ADMIN, Some(body)).await;
            assert!(status == 200 || status == 201, "{url}: {status} {answer}");
            answer
        }
    };
    let setup = admin_post(
        "/admin/providers/custom",
        json!({ "name": "mock-openai", "base_url": upstream, "api_keys": [UPSTREAM_KEY],
                "models": [CHAT_MODEL, EMBEDDING_MODEL] }),
    )
    .await;
    let group_id = setup["group"]["id"].as_i64().expect("group.id");
    for model in [CHAT_MODEL, EMBEDDING_MODEL] {
        admin_post(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": model, "group_id": group_id }),
        )
        .await;
    }
    let claude = admin_post(
        "/admin/provider-groups",
        json!({ "name": "mock-anthropic", "type": "anthropic", "base_url": anthropic,
                "models": [CLAUDE_UPSTREAM_MODEL] }),
    )
    .await;
    admin_post(
        "/admin/api-keys",
        json!({ "group_id": claude["id"], "api_key": ANTHROPIC_KEY }),
    )
    .await;
    admin_post(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": CLAUDE_MODEL, "group_id": claude["id"],
                "selector_value": CLAUDE_UPSTREAM_MODEL }),
    )
    .await;
    let gemini_group = admin_post(
        "/admin/provider-groups",
        json!({ "name": "mock-gemini", "type": "gemini", "base_url": gemini, "models": [mock_gemini::MODEL] }),
    )
    .await;
    admin_post(
        "/admin/api-keys",
        json!({ "group_id": gemini_group["id"], "api_key": mock_gemini::KEY }),
    )
    .await;
    admin_post(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": GEMINI_MODEL, "group_id": gemini_group["id"],
                "selector_value": mock_gemini::MODEL }),
    )
    .await;
    let master = admin_post("/admin/masters", json!({ "name": "python" })).await;
    let master_key = master["master_key"].as_str().expect("master_key");
    let (status, key) = call(
        &client,
        server.url("/v1/tokens"),
        master_key,
        Some(json!({ "name": "openai-python" })),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let key = key["key"].as_str().expect("key").to_owned();

    // The balancer's snapshot follows the bus; wait until it routes both models.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, models) = call(&client, server.url("/v1/models"), &key, None).await;
        let ids: Vec<&str> = models["data"]
            .as_array()
            .map(|d| d.iter().filter_map(|m| m["id"].as_str()).collect())
            .unwrap_or_default();
        if status == 200
            && [CHAT_MODEL, EMBEDDING_MODEL, CLAUDE_MODEL, GEMINI_MODEL]
                .iter()
                .all(|m| ids.contains(m))
        {
            return key;
        }
        assert!(
            Instant::now() < deadline,
            "the balancer did not list every model in time: {status} {models}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn official_client_works_through_the_gateway(python: String) {
    let seen: Seen = Arc::default();
    let upstream = start_mock(seen.clone()).await;
    let anthropic_seen = mock_anthropic::Seen::default();
    let anthropic = mock_anthropic::start(ANTHROPIC_KEY, anthropic_seen.clone()).await;
    let (gemini, gemini_seen) = mock_gemini::start().await;
    let dir = temp_dir();
    let server = Server::start(&dir);
    let key = configure(&server, &upstream, &anthropic, &gemini).await;

    run_checks(
        &python,
        "openai_client_check.py",
        &[
            ("OPENAI_BASE_URL", server.url("/v1")),
            ("OPENAI_API_KEY", key.clone()),
        ],
    )
    .await;

    // Only routable requests reached the upstream, each with its public model name.
    let seen_now = seen.lock().unwrap().clone();
    let chats: Vec<&Value> = seen_now
        .iter()
        .filter(|(p, _)| *p == "/chat/completions")
        .map(|(_, b)| b)
        .collect();
    let embeddings = seen_now.iter().filter(|(p, _)| *p == "/embeddings").count();
    assert_eq!(
        chats.len(),
        3,
        "plain, streamed, streamed with usage: {seen_now:?}"
    );
    assert!(chats.iter().all(|b| b["model"] == CHAT_MODEL), "{seen_now:?}");
    assert_eq!(embeddings, 2, "base64 and float: {seen_now:?}");

    // The Anthropic upstream got every translated request, each within its rules.
    let anthropic_now = anthropic_seen.lock().unwrap().clone();
    let broken: Vec<_> = anthropic_now
        .iter()
        .filter_map(|(_, rule)| rule.as_ref())
        .collect();
    assert!(
        broken.is_empty(),
        "requests that broke Anthropic's rules: {broken:?}"
    );
    assert_eq!(
        anthropic_now.len(),
        5,
        "plain, streamed, tool call, tool result, streamed tool call: {anthropic_now:?}"
    );
    assert!(
        anthropic_now
            .iter()
            .all(|(b, _)| b["model"] == CLAUDE_UPSTREAM_MODEL)
    );
    // And the Gemini upstream, within Gemini's.
    let broken = mock_gemini::broken(&gemini_seen);
    assert!(
        broken.is_empty(),
        "requests that broke Gemini's rules: {broken:?}"
    );
    assert_eq!(
        gemini_seen.lock().unwrap().len(),
        4,
        "plain, streamed, tool call, tool result"
    );

    // The official google-genai client on the same routes: Gemini as is, OpenAI and
    // Anthropic translated.
    if has_module(&python, "google.genai").await {
        run_checks(
            &python,
            "genai_client_check.py",
            &[
                ("GEMINI_BASE_URL", server.url("")),
                ("GEMINI_API_KEY", key.clone()),
            ],
        )
        .await;
        let chats = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p == "/chat/completions")
            .count();
        assert_eq!(
            chats,
            3 + 2,
            "google-genai's plain and streamed requests to the OpenAI route"
        );
        let broken = mock_gemini::broken(&gemini_seen);
        assert!(
            broken.is_empty(),
            "requests that broke Gemini's rules: {broken:?}"
        );
        assert_eq!(
            gemini_seen.lock().unwrap().len(),
            4 + 4,
            "passed through: plain, stream, call, result"
        );
        let anthropic = anthropic_seen.lock().unwrap();
        assert!(anthropic.iter().all(|(_, rule)| rule.is_none()), "{anthropic:?}");
        assert_eq!(anthropic.len(), 5 + 4, "translated: plain, stream, call, result");
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} lacks google-genai: CI must run its checks (.ci/run installs it)"
        );
        eprintln!("skipped the google-genai checks: {python} lacks google-genai");
    }

    // The official anthropic client on the same routes: Anthropic as is, OpenAI and
    // Gemini translated.
    if has_module(&python, "anthropic").await {
        let count = || {
            let chats = seen
                .lock()
                .unwrap()
                .iter()
                .filter(|(p, _)| *p == "/chat/completions")
                .count();
            (
                chats,
                anthropic_seen.lock().unwrap().len(),
                gemini_seen.lock().unwrap().len(),
            )
        };
        let before = count();
        run_checks(
            &python,
            "anthropic_client_check.py",
            &[
                ("ANTHROPIC_BASE_URL", server.url("")),
                ("ANTHROPIC_API_KEY", key.clone()),
            ],
        )
        .await;
        let after = count();
        assert_eq!(
            (after.0 - before.0, after.1 - before.1, after.2 - before.2),
            (2, 4, 4),
            "OpenAI: plain and stream; Anthropic and Gemini: plain, stream, call, result"
        );
        assert!(
            anthropic_seen
                .lock()
                .unwrap()
                .iter()
                .all(|(_, rule)| rule.is_none())
        );
        assert!(mock_gemini::broken(&gemini_seen).is_empty());
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{python} lacks anthropic: CI must run its checks (.ci/run installs it)"
        );
        eprintln!("skipped the anthropic checks: {python} lacks anthropic");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

/// Whether `python` can import `module`.
async fn has_module(python: &str, module: &str) -> bool {
    tokio::process::Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output()
        .await
        .is_ok_and(|o| o.status.success())
}

/// Runs `tests/python/<script>` with `env`; asserts it exits 0, printing its report.
async fn run_checks(python: &str, script: &str, env: &[(&str, String)]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env_remove("OPENAI_ORG_ID")
        .env_remove("OPENAI_PROJECT_ID")
        .env_remove("GOOGLE_API_KEY")
        .env_remove("ANTHROPIC_AUTH_TOKEN")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    let report = format!(
        "{python} {}\n--- stdout ---\n{}--- stderr ---\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("{report}");
    assert!(
        output.status.success(),
        "the client checks failed ({}):\n{report}",
        output.status
    );
}

#[tokio::test]
async fn the_official_openai_python_client_works_with_a_child_key() {
    let Some(python) = std::env::var("EZ_TEST_PYTHON").ok().filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "EZ_TEST_PYTHON is not set: CI must run the openai Python client test (.ci/run builds target/ci-venv)"
        );
        eprintln!("skipped: set EZ_TEST_PYTHON to a Python with `openai` installed to run this test");
        return;
    };
    tokio::time::timeout(TEST_DEADLINE, official_client_works_through_the_gateway(python))
        .await
        .expect("the openai client test did not finish in time");
}
