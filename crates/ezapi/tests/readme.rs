//! The README, followed literally: the shell blocks of "Five-minute walkthrough" and
//! "Upstreams in one call" are parsed from `README.md` and run with `bash` against a fresh
//! `ezapi serve` (its generated admin token read from its output, its data in a new
//! directory), so the README cannot drift from the product. Each `# → …` line under a
//! command is checked against that command's answer; each placeholder (`MASTER=ezm-…  #
//! master_key from the response`) is filled from the answer it names. Every binding the
//! README creates must resolve, and the one to the OpenAI-compatible endpoint must carry a
//! request for its public name to the differently named upstream model.
//!
//! Two substitutions, both checked: `$API` is the test server's address (the README's
//! value must be the default listen address), and the README's example endpoint
//! `http://vllm:8000/v1` is this test's mock upstream. The binary is
//! `EZ_TEST_BINARY` when set (e.g. `target/release/ezapi`), else the one cargo built for
//! the tests.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::{Value, json};

const README: &str = include_str!("../../../README.md");
const SECTIONS: [&str; 2] = ["## Five-minute walkthrough", "## Upstreams in one call"];
const DEFAULT_API: &str = "http://127.0.0.1:8080";
const EXAMPLE_ENDPOINT: &str = "http://vllm:8000/v1";

/// One shell command of the README (continuation lines joined) and the `# → …` answer
/// the README shows for it, if any.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Option<String>,
}

/// The shell blocks under `heading`, up to the next `## ` heading.
fn sh_blocks(heading: &str) -> Vec<String> {
    let start = README
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let section = &README[start + heading.len() + 2..];
    let section = section.find("\n## ").map_or(section, |end| &section[..end]);
    section
        .split("```sh\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().expect("a closed block").to_owned())
        .collect()
}

fn steps(block: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.trim_end();
        if pending.is_empty() {
            let trimmed = line.trim_start();
            if let Some(answer) = trimmed.strip_prefix("# → ") {
                let last = steps.last_mut().expect("an answer follows a command");
                last.expected = Some(answer.to_owned());
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                steps.push(Step {
                    command: std::mem::take(&mut pending),
                    expected: None,
                });
            }
        }
    }
    assert!(pending.is_empty(), "a continued line ends the block: {pending}");
    steps
}

/// `NAME=value   # comment` → (name, value, comment).
fn assignment(command: &str) -> Option<(&str, &str, &str)> {
    let (name, rest) = command.split_once('=')?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return None;
    }
    let (value, comment) = rest.split_once('#').unwrap_or((rest, ""));
    Some((name, value.trim(), comment.trim()))
}

/// Every field of `expected` is in `actual` with the same value (objects compared field by
/// field, recursively; the README elides the rest with `…`).
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            e.iter().all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v)))
        }
        _ => actual == expected,
    }
}

/// `401 {"error": …}` or `{"type":"key",…}` → (status, JSON without the elisions).
fn parse_expected(text: &str) -> (Option<u16>, Value) {
    let (status, json) = match text.split_once(' ') {
        Some((code, rest)) if code.parse::<u16>().is_ok() => (code.parse().ok(), rest),
        _ => (None, text),
    };
    let json = json.replace(",…}", "}").replace(",…]", "]");
    let value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("README answer {json:?}: {e}"));
    (status, value)
}

// ---- the process and the mock upstream ----

struct Serve {
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Serve {
    fn start(dir: &Path) -> Serve {
        let bin = std::env::var("EZ_TEST_BINARY").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ezapi").to_owned());
        let mut child = Command::new(bin)
            .arg("serve")
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EZ_SERVER__LISTEN", "127.0.0.1:0")
            // Log lines as JSON, to read the address from; the token is printed as text.
            .env("EZ_LOG__FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ezapi serve");
        let output = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
            let sink = output.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line);
                }
            });
        }
        Serve { child, output }
    }

    fn text(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// The generated admin token and the listening address, once both were printed.
    async fn ready(&mut self) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.text();
            let token = text.split_whitespace().find(|w| {
                w.strip_prefix("eza-")
                    .is_some_and(|s| s.len() >= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            });
            let addr = text.lines().find_map(|line| {
                let entry: Value = serde_json::from_str(line).ok()?;
                (entry["fields"]["message"] == "ezapi listening")
                    .then(|| entry["fields"]["addr"].as_str().map(str::to_owned))?
            });
            if let (Some(token), Some(addr)) = (token, addr) {
                return (token.to_owned(), format!("http://{addr}"));
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("ezapi serve exited ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "ezapi serve did not start:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ezapi serve ---\n{}", self.text());
        }
    }
}

/// An OpenAI-compatible upstream that accepts any key and records the models asked for.
async fn mock_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    async fn chat(State(seen): State<Arc<Mutex<Vec<String>>>>, Json(body): Json<Value>) -> Json<Value> {
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        seen.lock().unwrap().push(model.clone());
        Json(json!({
            "id": "chatcmpl-readme", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{ "index": 0, "finish_reason": "stop",
                "message": { "role": "assistant", "content": "hello from the mock" } }],
            "usage": { "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7 }
        }))
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, seen)
}

/// Runs one README command with `bash`, the variables set so far in its environment;
/// returns the HTTP status curl saw and the body.
fn run(command: &str, vars: &BTreeMap<String, String>) -> (u16, String) {
    const MARK: &str = "\n__ezapi_readme_status__";
    let with_status = format!("{command} -w '{MARK}%{{http_code}}'");
    let output = Command::new("bash")
        .arg("-c")
        .arg(&with_status)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(vars)
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let (body, status) = stdout.rsplit_once(MARK).expect("curl printed its status");
    (status.trim().parse().expect("a status"), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_and_upstreams_work_as_written() {
    let dir = std::env::temp_dir().join(format!("ezapi-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mock, seen) = mock_upstream().await;
    let mut serve = Serve::start(&dir);
    let (admin, api) = serve.ready().await;

    let mut vars = BTreeMap::new();
    let mut last = Value::Null;
    let mut bindings = Vec::new();
    let mut substituted = false;
    let mut ran = 0;
    for heading in SECTIONS {
        for block in sh_blocks(heading) {
            for step in steps(&block) {
                if let Some((name, value, comment)) = assignment(&step.command) {
                    let actual = match name {
                        "API" => {
                            assert_eq!(value, DEFAULT_API, "the README's API is the default address");
                            api.clone()
                        }
                        "ADMIN" => admin.clone(),
                        _ => {
                            let field = comment
                                .strip_suffix("from the response")
                                .map(str::trim)
                                .unwrap_or_else(|| panic!("{name}: say which field of the response it is"));
                            match &last[field] {
                                Value::String(s) => s.clone(),
                                Value::Number(n) => n.to_string(),
                                other => panic!("{name}: the response has no {field}: {other} in {last}"),
                            }
                        }
                    };
                    match value.strip_suffix('…') {
                        Some(prefix) => assert!(actual.starts_with(prefix), "{name}={actual} is not {value}"),
                        None if name != "API" => assert_eq!(actual, value, "{name}"),
                        None => {}
                    }
                    vars.insert(name.to_owned(), actual);
                    continue;
                }
                assert!(
                    step.command.starts_with("curl "),
                    "a README line this test does not know how to run: {}",
                    step.command
                );
                let command = if step.command.contains(EXAMPLE_ENDPOINT) {
                    substituted = true;
                    step.command.replace(EXAMPLE_ENDPOINT, &mock)
                } else {
                    step.command.clone()
                };
                let (status, body) = run(&command, &vars);
                ran += 1;
                last = serde_json::from_str(&body).unwrap_or(Value::Null);
                match &step.expected {
                    Some(expected) => {
                        let (want_status, want) = parse_expected(expected);
                        if let Some(want_status) = want_status {
                            assert_eq!(status, want_status, "{command}: {body}");
                        } else {
                            assert!((200..300).contains(&status), "{command}: {status} {body}");
                        }
                        assert!(contains(&last, &want), "{command}:\n got {body}\nwant {expected}");
                    }
                    None => assert!((200..300).contains(&status), "{command}: {status} {body}"),
                }
                if command.contains("/admin/bindings") && command.contains("POST") {
                    bindings.push(last.clone());
                }
            }
        }
    }
    assert!(ran >= 8, "only {ran} commands found in the README");
    assert!(substituted, "the README no longer shows {EXAMPLE_ENDPOINT}");
    assert!(!bindings.is_empty(), "the README creates no binding");

    // Every binding the README creates resolves, and one goes to the example endpoint
    // under another name than its public one.
    let mut renamed = None;
    for binding in &bindings {
        let resolution = &binding["resolution"];
        assert_eq!(
            resolution["status"], "ok",
            "a README binding does not resolve: {binding}"
        );
        let upstream = resolution["upstreams"]
            .as_object()
            .and_then(|u| u.values().next())
            .and_then(Value::as_str)
            .unwrap_or_default();
        let public = binding["public_model"].as_str().unwrap_or_default();
        if !upstream.is_empty() && upstream != public {
            renamed = Some((public.to_owned(), upstream.to_owned()));
        }
    }
    let (public, upstream) = renamed.expect("the README routes a public name to a differently named model");

    // A request for the public name reaches the endpoint as the upstream model: a new
    // child key of the README's master (the walkthrough revoked the others).
    let client = reqwest::Client::new();
    let master = vars.get("MASTER").expect("the README sets MASTER");
    let key: Value = client
        .post(format!("{api}/v1/tokens"))
        .bearer_auth(master)
        .json(&json!({ "name": "readme-test" }))
        .send()
        .await
        .expect("issue a key")
        .json()
        .await
        .expect("json");
    let key = key["key"].as_str().expect("a key");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client
            .post(format!("{api}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({ "model": public, "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .expect("chat");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 200 {
            assert_eq!(body["choices"][0]["message"]["content"], "hello from the mock");
            break;
        }
        // The snapshot may take a moment to reach the balancer.
        assert!(Instant::now() < deadline, "{public}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [upstream.as_str()],
        "what the upstream was asked for"
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
