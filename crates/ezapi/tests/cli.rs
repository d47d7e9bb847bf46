//! The `ezapi` binary as an operator runs it: first start, restart, signals, errors.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ez_control_plane::testing::{Backend, TestDatabase};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ezapi");

fn ezapi(dir: &Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("EZ_SERVER__DATA_DIR", dir.join("data"))
        .env("EZ_SERVER__LISTEN", "127.0.0.1:0")
        .env("EZ_LOG__FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A running `ezapi serve` with its output lines collected by reader threads.
struct Server {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stdout_seen: Vec<String>,
    /// Log lines up to "ezapi listening".
    stderr_seen: Vec<String>,
    addr: String,
}

fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Server {
    fn start(dir: &Path, env: &[(&str, String)]) -> Server {
        Server::start_with(dir, env, &[])
    }

    /// `ezapi serve ARGS…`.
    fn start_with(dir: &Path, env: &[(&str, String)], args: &[&str]) -> Server {
        let mut child = ezapi(dir, env)
            .arg("serve")
            .args(args)
            .spawn()
            .expect("spawn ezapi");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let mut server = Server {
            child,
            stdout,
            stderr,
            stdout_seen: Vec::new(),
            stderr_seen: Vec::new(),
            addr: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.addr.is_empty() {
            assert!(
                Instant::now() < deadline,
                "ezapi did not report its address in time"
            );
            let Ok(line) = server.stderr.recv_timeout(Duration::from_millis(100)) else {
                assert!(server.child.try_wait().unwrap().is_none(), "ezapi exited early");
                continue;
            };
            server.stderr_seen.push(line.clone());
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if entry["fields"]["message"] == "ezapi listening" {
                server.addr = entry["fields"]["addr"].as_str().unwrap().to_owned();
            }
        }
        // The admin token is printed before the address is logged; give the reader thread
        // a moment to deliver what is already in the pipe.
        while let Ok(line) = server.stdout.recv_timeout(Duration::from_millis(500)) {
            server.stdout_seen.push(line);
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn printed_admin_token(&self) -> Option<String> {
        self.stdout_seen
            .iter()
            .map(|l| l.trim())
            .find(|l| l.starts_with("eza-"))
            .map(str::to_owned)
    }

    /// SIGTERM, then wait: a clean exit within the grace period.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "ezapi did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ezapi-cli-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The README walkthrough against a real `ezapi serve`, restarted in the middle.
async fn walkthrough_survives_restart(backend: Backend) {
    let dir = temp_dir();
    let db = TestDatabase::create(backend).await;
    let mut env = Vec::new();
    if backend == Backend::Real {
        env.push(("EZ_DATABASE__URL", db.url.clone()));
        env.push(("EZ_REDIS__URL", std::env::var("EZ_TEST_REDIS_URL").unwrap()));
        env.push(("EZ_REDIS__KEY_PREFIX", format!("ez-cli-{}:", rand_suffix())));
    }
    let client = reqwest::Client::new();

    let server = Server::start(&dir, &env);
    let admin = server
        .printed_admin_token()
        .expect("first start prints the admin token");
    let (status, health) = call(&client, reqwest::Method::GET, server.url("/health"), "", None).await;
    assert_eq!(status, 200, "{health}");
    let (status, master) = call(
        &client,
        reqwest::Method::POST,
        server.url("/admin/masters"),
        &admin,
        Some(json!({ "name": "acme" })),
    )
    .await;
    assert_eq!(status, 201, "{master}");
    let master_key = master["master_key"].as_str().unwrap().to_owned();
    let (status, key) = call(
        &client,
        reqwest::Method::POST,
        server.url("/v1/tokens"),
        &master_key,
        Some(json!({ "name": "ci" })),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let (key_id, key) = (
        key["id"].as_i64().unwrap(),
        key["key"].as_str().unwrap().to_owned(),
    );
    let (status, _) = call(
        &client,
        reqwest::Method::GET,
        server.url("/v1/whoami"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(server.terminate().success(), "SIGTERM ends ezapi cleanly");

    let server = Server::start(&dir, &env);
    assert_eq!(
        server.printed_admin_token(),
        None,
        "the admin token is printed only once"
    );
    let (status, me) = call(
        &client,
        reqwest::Method::GET,
        server.url("/v1/whoami"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200, "the key survives a restart: {me}");
    assert_eq!(me["id"], key_id);
    let (status, _) = call(
        &client,
        reqwest::Method::GET,
        server.url("/admin/masters"),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        status, 200,
        "the generated admin token still works after a restart"
    );
    let (status, _) = call(
        &client,
        reqwest::Method::DELETE,
        server.url(&format!("/v1/tokens/{key_id}")),
        &master_key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, me) = call(
        &client,
        reqwest::Method::GET,
        server.url("/v1/whoami"),
        &key,
        None,
    )
    .await;
    assert_eq!((status, me["error"]["code"].as_str()), (401, Some("key_revoked")));
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn walkthrough_survives_restart_sqlite_memory() {
    walkthrough_survives_restart(Backend::Embedded).await;
}

#[tokio::test]
async fn walkthrough_survives_restart_postgres_redis() {
    if Backend::Real.available() {
        walkthrough_survives_restart(Backend::Real).await;
    }
}

#[test]
fn invalid_configuration_names_the_option() {
    let dir = temp_dir();
    for (var, value, option) in [
        ("EZ_SERVER__LISTEN", "nowhere", "server.listen"),
        ("EZ_DATABASE__URL", "mysql://db", "database.url"),
        ("EZ_AUTH__JWT_TTL", "forever", "auth.jwt_ttl"),
    ] {
        let out = ezapi(&dir, &[(var, value.to_owned())])
            .arg("serve")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(option), "{var}: {stderr}");
    }
}

/// A first start that cannot listen stops before it generates the admin token, which
/// it could not show in use: the error is said once, with what to change, and the next
/// start (on a free address) still generates and prints a token.
#[test]
fn a_port_in_use_stops_start_up_before_the_admin_token_exists() {
    let dir = temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let in_use = format!("127.0.0.1:{port} is in use");
    // (environment, arguments, the advice expected)
    type Run<'a> = (&'a [(&'a str, String)], &'a [&'a str], &'a str);
    let runs: [Run; 4] = [
        (
            &[
                ("EZ_SERVER__LISTEN", format!("127.0.0.1:{port}")),
                ("EZ_LOG__FORMAT", "console".into()),
            ],
            &[],
            "stop the other process or set EZ_SERVER__LISTEN / --listen",
        ),
        (
            &[("EZ_SERVER__LISTEN", format!("127.0.0.1:{port}"))],
            &[],
            "stop the other process or set EZ_SERVER__LISTEN / --listen",
        ),
        (
            &[("EZ_LOG__FORMAT", "console".into())],
            &["--listen", &format!("localhost:{port}")],
            "stop the other process or set EZ_SERVER__LISTEN / --listen",
        ),
        (
            &[("EZ_SERVER__INTERNAL_LISTEN", format!("127.0.0.1:{port}"))],
            &[],
            "stop the other process or set EZ_SERVER__INTERNAL_LISTEN",
        ),
    ];
    for (env, args, advice) in runs {
        let out = ezapi(&dir, env).arg("serve").args(args).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(1), "{env:?} {args:?}: {stderr}");
        assert_eq!(stderr.matches(&in_use).count(), 1, "said once: {stderr}");
        assert!(stderr.contains(advice), "{stderr}");
        assert!(
            !stdout.contains("eza-") && !stdout.contains("admin token"),
            "no token before the address is ours: {stdout}"
        );
    }
    drop(taken);
    let server = Server::start(&dir, &[]);
    assert!(
        server.printed_admin_token().is_some(),
        "the next start generates and prints the admin token: {:?}",
        server.stdout_seen
    );
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A variable is reported as the operator typed it, with the option meant, and start-up
/// stops before anything is created.
#[test]
fn misspelt_and_go_style_variables_are_named_as_typed() {
    let dir = temp_dir();
    let out = ezapi(&dir, &[("EZ_SERVER__LISTN", "127.0.0.1:0".into())])
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "ezapi: EZ_SERVER__LISTN is not an option; did you mean EZ_SERVER__LISTEN?\n"
    );

    let out = ezapi(
        &dir,
        &[
            ("EZ_REDIS_ADDR", "127.0.0.1:6379".into()),
            ("EZ_PG_DSN", "postgres://ez:pg-pass-0001@db/ez".into()),
            ("EZ_ADMIN_TOKEN", "admin-token-0002-abcdefgh".into()),
            ("EZ_TEST_DATABASE_URL", "postgres://elsewhere".into()),
        ],
    )
    .arg("serve")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "EZ_REDIS_ADDR is the Go ez-api name; set EZ_REDIS__URL=redis://127.0.0.1:6379 instead",
        "EZ_PG_DSN is the Go ez-api name; set EZ_DATABASE__URL to the same URL instead",
        "EZ_ADMIN_TOKEN is the Go ez-api name; set EZ_AUTH__ADMIN_TOKEN instead",
    ] {
        assert!(stderr.contains(line), "{line}\n{stderr}");
    }
    assert!(!stderr.contains("EZ_TEST_DATABASE_URL"), "{stderr}");
    assert!(
        !stderr.contains("pg-pass-0001") && !stderr.contains("admin-token-0002"),
        "{stderr}"
    );
    assert!(!dir.join("data").exists(), "nothing was created");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_listen_address_may_name_the_host_and_the_flag_wins() {
    let dir = temp_dir();
    let client = reqwest::Client::new();
    let server = Server::start(&dir, &[("EZ_SERVER__LISTEN", "localhost:0".into())]);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    let (status, _) = call(&client, reqwest::Method::GET, server.url("/health"), "", None).await;
    assert_eq!(status, 200);
    assert!(server.terminate().success());

    let server = Server::start_with(
        &dir,
        &[("EZ_SERVER__LISTEN", "not-an-address".into())],
        &["--listen", "localhost:0"],
    );
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's recovery of a lost admin token: a configured token is the only one
/// accepted while it is set; once unset, the stored (generated) one is in force again.
#[tokio::test]
async fn a_configured_admin_token_replaces_the_stored_one_while_set() {
    let dir = temp_dir();
    let client = reqwest::Client::new();
    let status = |server: &Server, token: &str| {
        let (client, url, token) = (client.clone(), server.url("/admin/masters"), token.to_owned());
        async move { call(&client, reqwest::Method::GET, url, &token, None).await.0 }
    };
    let server = Server::start(&dir, &[]);
    let generated = server.printed_admin_token().expect("first start prints a token");
    assert!(server.terminate().success());

    let configured = "configured-admin-token-0001";
    let server = Server::start(&dir, &[("EZ_AUTH__ADMIN_TOKEN", configured.into())]);
    assert_eq!(server.printed_admin_token(), None);
    assert_eq!(status(&server, configured).await, 200);
    assert_eq!(status(&server, &generated).await, 401, "not accepted alongside");
    assert!(server.terminate().success());

    let server = Server::start(&dir, &[]);
    assert_eq!(server.printed_admin_token(), None, "the stored digest is kept");
    assert_eq!(status(&server, &generated).await, 200);
    assert_eq!(status(&server, configured).await, 401);
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn serve_help_names_the_default_address_and_the_variables() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for words in [
        "--listen <HOST:PORT>",
        "[default: 127.0.0.1:8080]",
        "EZ_SERVER__LISTEN",
        "EZ_SERVER__DATA_DIR",
        "EZ_DATABASE__URL",
        "EZ_REDIS__URL",
        "EZ_AUTH__ADMIN_TOKEN",
        "EZ_<SECTION>__<OPTION>",
    ] {
        assert!(help.contains(words), "{words}:\n{help}");
    }
}

#[test]
fn control_plane_without_redis_is_a_clear_error() {
    let dir = temp_dir();
    let out = ezapi(&dir, &[]).arg("control-plane").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("redis.url") && stderr.contains("EZ_REDIS__URL"),
        "{stderr}"
    );
}

#[test]
fn migrate_creates_the_database_and_is_idempotent() {
    let dir = temp_dir();
    for _ in 0..2 {
        let out = ezapi(&dir, &[]).arg("migrate").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(dir.join("data/ezapi.db").is_file());
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The data directory and the database (with its WAL side files) are the owner's alone,
/// and so is an export written with `-o`, even over an existing file.
#[cfg(unix)]
#[test]
fn the_data_dir_database_and_exports_are_private() {
    let dir = temp_dir();
    let data = dir.join("data");
    let server = Server::start(&dir, &[]);
    assert_eq!(mode(&data), 0o700, "data dir");
    for file in ["ezapi.db", "ezapi.db-wal", "ezapi.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file} while serving");
    }
    assert!(
        !server
            .stderr_seen
            .iter()
            .any(|l| l.contains("open to other users")),
        "no warning for a private data dir"
    );
    assert!(server.terminate().success());

    let export = dir.join("backup.json");
    std::fs::write(&export, "old").unwrap();
    std::fs::set_permissions(&export, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    for args in [&["export", "-o"][..], &["export", "--include-secrets", "-o"][..]] {
        let out = ezapi(&dir, &[]).args(args).arg(&export).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(mode(&export), 0o600, "{args:?}");
    }
    let fresh = dir.join("fresh.json");
    let out = ezapi(&dir, &[])
        .args(["export", "-o"])
        .arg(&fresh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&fresh), 0o600, "new export");

    // Files an older version left readable are tightened; an operator's open directory
    // is left alone but warned about at start.
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        data.join("ezapi.db"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let server = Server::start(&dir, &[]);
    assert!(
        server
            .stderr_seen
            .iter()
            .any(|l| l.contains("open to other users")),
        "warning about the data dir: {:?}",
        server.stderr_seen
    );
    assert_eq!(mode(&data), 0o755, "the operator's directory is not changed");
    for file in ["ezapi.db", "ezapi.db-wal", "ezapi.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file} after a restart");
    }
    assert!(server.terminate().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_explains_each_command() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "control-plane", "migrate"] {
        assert!(help.contains(command), "{help}");
    }
}

#[tokio::test]
async fn export_and_import_move_a_configuration_between_instances() {
    let (a, b) = (temp_dir(), temp_dir());
    let client = reqwest::Client::new();
    let server = Server::start(&a, &[]);
    let admin = server.printed_admin_token().expect("admin token");
    let (status, _) = call(
        &client,
        reqwest::Method::POST,
        server.url("/admin/providers/preset"),
        &admin,
        Some(json!({ "preset": "anthropic", "api_keys": ["sk-ant-cli-0001"] })),
    )
    .await;
    assert_eq!(status, 201);
    let (status, master) = call(
        &client,
        reqwest::Method::POST,
        server.url("/admin/masters"),
        &admin,
        Some(json!({ "name": "acme" })),
    )
    .await;
    assert_eq!(status, 201);
    let master_key = master["master_key"].as_str().unwrap().to_owned();
    assert!(server.terminate().success());

    let file = a.join("backup.json");
    let out = ezapi(&a, &[])
        .args(["export", "--include-secrets", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exported: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(exported["masters"][0]["name"], "acme");

    let dry = ezapi(&b, &[])
        .arg("import")
        .arg(&file)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let out = ezapi(&b, &[]).arg("import").arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"create\""), "{stdout}");
    let out = ezapi(&b, &[])
        .args(["export", "--include-secrets"])
        .output()
        .unwrap();
    let reexported: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        reexported, exported,
        "the second instance exports the same document"
    );

    // The restored master key works on the second instance.
    let server = Server::start(&b, &[]);
    let (status, _) = call(
        &client,
        reqwest::Method::GET,
        server.url("/v1/tokens"),
        &master_key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(server.terminate().success());

    let bad = a.join("bad.json");
    std::fs::write(
        &bad,
        "{\"format\": \"ezapi-config\", \"version\": 1, \"bindings\": [{}]}",
    )
    .unwrap();
    let out = ezapi(&a, &[]).arg("import").arg(&bad).output().unwrap();
    assert!(!out.status.success(), "a malformed document is refused");
}

#[test]
fn balancer_needs_redis_and_the_control_plane_url() {
    let dir = temp_dir();
    let out = ezapi(&dir, &[]).arg("balancer").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EZ_REDIS__URL"));
    let out = ezapi(&dir, &[("EZ_REDIS__URL", "redis://127.0.0.1:6379".to_owned())])
        .arg("balancer")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EZ_INTERNAL__CONTROL_PLANE_URL"));
}

#[tokio::test]
async fn a_split_balancer_serves_from_the_bus() {
    if !Backend::Real.available() {
        return;
    }
    let dir = temp_dir();
    let env = [
        ("EZ_REDIS__URL", std::env::var("EZ_TEST_REDIS_URL").unwrap()),
        ("EZ_REDIS__KEY_PREFIX", format!("ez-balancer-{}:", rand_suffix())),
        ("EZ_INTERNAL__CONTROL_PLANE_URL", "http://127.0.0.1:9".to_owned()),
        ("EZ_SERVER__BALANCER_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let mut child = ezapi(&dir, &env).arg("balancer").spawn().unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        assert!(Instant::now() < deadline, "the balancer did not start");
        let Ok(line) = stderr.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let Ok(entry) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if entry["fields"]["message"] == "ezapi balancer listening" {
            break entry["fields"]["addr"].as_str().unwrap().to_owned();
        }
    };
    let client = reqwest::Client::new();
    let health: Value = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["snapshot"]["ready"], true);
    let resp = client
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth("sk-ez-0000000000000000000000000000000000000000")
        .json(&json!({ "model": "gpt-4o" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "key_not_found");
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM ends the balancer cleanly");
}

#[tokio::test]
async fn credential_files_import_from_the_command_line() {
    let dir = temp_dir();
    let client = reqwest::Client::new();
    let server = Server::start(&dir, &[]);
    let admin = server.printed_admin_token().expect("admin token");
    let (status, group) = call(
        &client,
        reqwest::Method::POST,
        server.url("/admin/provider-groups"),
        &admin,
        Some(json!({ "name": "codex-pool", "type": "codex", "models": ["gpt-5-codex"] })),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    assert!(server.terminate().success());

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../control-plane/tests/fixtures/credentials");
    let out = ezapi(&dir, &[])
        .args(["credentials", "import", "--group", "codex-pool"])
        .arg(fixtures.join("codex-auth.json"))
        .arg(fixtures.join("claude-code.credentials.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("codex-pool: 1 created, 0 updated, 1 refused"),
        "{stderr}"
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!(report["files"][0]["outcome"], "created");
    assert_eq!(report["files"][1]["outcome"], "refused");

    let unknown = ezapi(&dir, &[])
        .args(["credentials", "import", "--group", "nope"])
        .arg(fixtures.join("codex-auth.json"))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("no provider group") && said.contains("(groups: codex-pool)"),
        "{said}"
    );
}
