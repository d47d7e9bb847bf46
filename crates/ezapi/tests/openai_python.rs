//! The official Python clients against a real `ezapi serve` with a child key, on mock
//! upstreams of the four families (`ez-test-upstreams`, each checking every request
//! against its provider's rules): OpenAI Chat (with embeddings), Anthropic Messages,
//! Gemini and a Codex subscription (OpenAI Responses). `openai` checks chat completions
//! (plain, streamed with and without `stream_options.include_usage`, tool-call round
//! trips), the Responses API, embeddings (base64 and float), model listing and the error
//! classes; `google-genai` and `anthropic` check plain, streamed and tool-call round trips.
//! Every client reaches every family: as is where the formats match, translated elsewhere.
//!
//! Needs a Python with `openai` (and `google-genai`, `anthropic`) installed, named by `EZ_TEST_PYTHON`
//! (`.ci/run` builds one in `target/ci-venv`). Without it the test is skipped, except
//! under CI, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ez_test_upstreams::responses::Flavour;
use ez_test_upstreams::{
    anthropic as mock_anthropic, gemini as mock_gemini, openai_chat as mock_openai,
    responses as mock_responses,
};
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
/// The public name of the Codex route, the model it resolves to, and the subscription's
/// access token.
const CODEX_MODEL: &str = "codex";
const CODEX_UPSTREAM_MODEL: &str = "gpt-5-codex";
const CODEX_TOKEN: &str = "codex-access-token-1";
const TEST_DEADLINE: Duration = Duration::from_secs(120);

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
async fn configure(server: &Server, mocks: &Mocks) -> String {
    let (upstream, anthropic, gemini) = (&mocks.openai, &mocks.anthropic, &mocks.gemini);
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
    let codex = admin_post(
        "/admin/provider-groups",
        json!({ "name": "mock-codex", "type": "codex", "base_url": mocks.codex, "headers_profile": "codex",
                "models": [CODEX_UPSTREAM_MODEL] }),
    )
    .await;
    admin_post(
        "/admin/api-keys",
        json!({ "group_id": codex["id"], "access_token": CODEX_TOKEN, "account_id": "acct-python" }),
    )
    .await;
    admin_post(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": CODEX_MODEL, "group_id": codex["id"],
                "selector_value": CODEX_UPSTREAM_MODEL }),
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
            && [
                CHAT_MODEL,
                EMBEDDING_MODEL,
                CLAUDE_MODEL,
                GEMINI_MODEL,
                CODEX_MODEL,
            ]
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

/// The four mock upstreams and what each has seen.
struct Mocks {
    openai: String,
    openai_seen: mock_openai::Seen,
    anthropic: String,
    anthropic_seen: mock_anthropic::Seen,
    gemini: String,
    gemini_seen: mock_gemini::Seen,
    codex: String,
    codex_seen: mock_responses::Seen,
}

/// Requests each family's mock received: (OpenAI chat completions, Anthropic, Gemini, Codex).
type Counts = (usize, usize, usize, usize);

impl Mocks {
    async fn start() -> Mocks {
        let openai_seen = mock_openai::Seen::default();
        let anthropic_seen = mock_anthropic::Seen::default();
        let codex_seen = mock_responses::Seen::default();
        let (gemini, gemini_seen) = mock_gemini::start().await;
        Mocks {
            openai: mock_openai::start(UPSTREAM_KEY, openai_seen.clone()).await,
            anthropic: mock_anthropic::start(ANTHROPIC_KEY, anthropic_seen.clone()).await,
            codex: mock_responses::start(CODEX_TOKEN, Flavour::Codex, codex_seen.clone()).await,
            openai_seen,
            anthropic_seen,
            gemini,
            gemini_seen,
            codex_seen,
        }
    }

    fn counts(&self) -> Counts {
        let chats = self
            .openai_seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, _, _)| *path == "/chat/completions")
            .count();
        (
            chats,
            self.anthropic_seen.lock().unwrap().len(),
            self.gemini_seen.lock().unwrap().len(),
            self.codex_seen.lock().unwrap().len(),
        )
    }

    /// Every request any mock received kept its provider's rules.
    fn assert_valid(&self) {
        let openai = mock_openai::broken(&self.openai_seen);
        assert!(
            openai.is_empty(),
            "requests that broke OpenAI's rules: {openai:?}"
        );
        let anthropic: Vec<String> = self
            .anthropic_seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, rule)| rule.clone())
            .collect();
        assert!(
            anthropic.is_empty(),
            "requests that broke Anthropic's rules: {anthropic:?}"
        );
        let gemini = mock_gemini::broken(&self.gemini_seen);
        assert!(
            gemini.is_empty(),
            "requests that broke Gemini's rules: {gemini:?}"
        );
        let codex = mock_responses::broken(&self.codex_seen);
        assert!(
            codex.is_empty(),
            "requests that broke the Codex backend's rules: {codex:?}"
        );
    }

    /// Runs one client's checks and asserts how many requests each family received.
    async fn run(&self, python: &str, script: &str, env: &[(&str, String)], expected: Counts, what: &str) {
        let before = self.counts();
        run_checks(python, script, env).await;
        let after = self.counts();
        let delta = (
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3,
        );
        assert_eq!(
            delta, expected,
            "{script}: requests per family (OpenAI, Anthropic, Gemini, Codex): {what}"
        );
        self.assert_valid();
    }
}

async fn official_client_works_through_the_gateway(python: String) {
    let mocks = Mocks::start().await;
    let dir = temp_dir();
    let server = Server::start(&dir);
    let key = configure(&server, &mocks).await;

    mocks
        .run(
            &python,
            "openai_client_check.py",
            &[("OPENAI_BASE_URL", server.url("/v1")), ("OPENAI_API_KEY", key.clone())],
            (9, 9, 8, 8),
            "chat: 3 + tools 2 + responses 4 | chat 5 + responses 4 | chat 4 + responses 4 | chat 4 + responses 4",
        )
        .await;
    // Only routable requests reached the OpenAI upstream, each with its upstream model.
    let openai_seen = mocks.openai_seen.lock().unwrap().clone();
    assert!(
        openai_seen
            .iter()
            .all(|(path, body, _)| *path == "/embeddings" || body["model"] == CHAT_MODEL),
        "{openai_seen:?}"
    );
    let embeddings = openai_seen.iter().filter(|(p, _, _)| *p == "/embeddings").count();
    assert_eq!(embeddings, 2, "base64 and float: {openai_seen:?}");
    assert!(
        mocks
            .anthropic_seen
            .lock()
            .unwrap()
            .iter()
            .all(|(b, _)| b["model"] == CLAUDE_UPSTREAM_MODEL)
    );
    assert!(
        mocks
            .codex_seen
            .lock()
            .unwrap()
            .iter()
            .all(|(b, _)| b["model"] == CODEX_UPSTREAM_MODEL)
    );

    // Plain, stream, call and result on each family, and a token count on Anthropic and
    // Gemini.
    let expected = (4, 5, 5, 4);
    for (module, script, env) in [
        (
            "google.genai",
            "genai_client_check.py",
            [
                ("GEMINI_BASE_URL", server.url("")),
                ("GEMINI_API_KEY", key.clone()),
            ],
        ),
        (
            "anthropic",
            "anthropic_client_check.py",
            [
                ("ANTHROPIC_BASE_URL", server.url("")),
                ("ANTHROPIC_API_KEY", key.clone()),
            ],
        ),
    ] {
        if has_module(&python, module).await {
            mocks
                .run(
                    &python,
                    script,
                    &env,
                    expected,
                    "plain, stream, call, result on each family",
                )
                .await;
        } else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{python} lacks {module}: CI must run its checks (.ci/run installs it)"
            );
            eprintln!("skipped the {module} checks: {python} lacks {module}");
        }
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
