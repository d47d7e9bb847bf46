//! The listeners of the real `ezapi serve` binary under slow, idle and too many clients,
//! and the separate internal listener.
//!
//! - Hundreds of connections that send a partial head, stall their body, send nothing or
//!   sit idle after an answer are held while `/health`, an admin request and an HTTP/2
//!   request keep answering; the server then closes each of them after its timeout
//!   (`server.header_read_timeout`, `server.body_read_timeout` with a 408,
//!   `server.keep_alive_idle`), lowered through configuration so this runs in seconds.
//! - At `server.max_connections` (set, or lowered to fit a low open-file limit) further
//!   connections are closed at once and counted; `/health` answers again as soon as the
//!   slow connections time out.
//! - `server.internal_listen` takes `/internal/*` off the public listener;
//!   `internal.allow_anonymous` is announced at start.
//!
//! Every test runs on SQLite + memory bus, and on PostgreSQL + Redis when
//! `EZ_TEST_DATABASE_URL` / `EZ_TEST_REDIS_URL` are set.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ez_control_plane::testing::{Backend, TestDatabase};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_ezapi");
const ADMIN: &str = "listener-test-admin-token-0123456789";
const STATS_TOKEN: &str = "listener-test-stats-token-0123456789";
const HEADER_READ: Duration = Duration::from_secs(4);
const BODY_READ: Duration = Duration::from_secs(4);
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Allowed difference between a configured timeout and the moment the test sees the
/// connection end (clock of the test vs the server's, scheduling on a busy machine).
const EARLY: Duration = Duration::from_millis(50);
const LATE: Duration = Duration::from_secs(6);
/// Slower than this and `/health` did not "keep answering" (a request that waited for
/// the slow connections would take `HEADER_READ`; the margin is for a busy machine).
const PROMPT: Duration = Duration::from_secs(2);
const TEST_DEADLINE: Duration = Duration::from_secs(120);

macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use ez_control_plane::testing::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite_memory() {
                    super::within_deadline(super::$name(Backend::Embedded)).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_redis() {
                    if Backend::Real.available() {
                        super::within_deadline(super::$name(Backend::Real)).await;
                    }
                }
            }
        )+
    };
}

both_backends!(
    slow_and_idle_clients_are_held_then_closed,
    long_answers_are_not_cut,
    the_connection_cap_refuses_the_excess,
    a_low_open_file_limit_lowers_the_cap,
    internal_routes_move_to_their_own_listener,
    anonymous_internal_access_is_announced,
);

async fn within_deadline(test: impl std::future::Future<Output = ()>) {
    if tokio::time::timeout(TEST_DEADLINE, test).await.is_err() {
        panic!("test did not finish within {TEST_DEADLINE:?}");
    }
}

// ---- the process ----

/// A running `ezapi serve`, its stderr (JSON log lines) collected; killed on drop.
struct Server {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addr: String,
    internal_addr: Option<String>,
    dir: PathBuf,
    _db: Option<TestDatabase>,
}

impl Server {
    /// `ezapi serve` with `env`; under `ulimit -n open_files` when given.
    async fn start(backend: Backend, env: &[(&str, String)], open_files: Option<u32>) -> Server {
        Server::start_command("serve", backend, env, open_files).await
    }

    /// `ezapi <subcommand>` (`serve`, `control-plane` or `balancer`); `env` comes last,
    /// so it may override the defaults set here (such as the Redis key prefix).
    async fn start_command(
        subcommand: &str,
        backend: Backend,
        env: &[(&str, String)],
        open_files: Option<u32>,
    ) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "ezapi-listeners-{}-{:016x}",
            std::process::id(),
            random()
        ));
        std::fs::create_dir_all(&dir).expect("create the temp dir");
        let mut cmd = match open_files {
            Some(n) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" {subcommand}"))
                    .arg(BIN);
                cmd
            }
            None => {
                let mut cmd = Command::new(BIN);
                cmd.arg(subcommand);
                cmd
            }
        };
        cmd.current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("EZ_SERVER__DATA_DIR", dir.join("data"))
            .env("EZ_SERVER__LISTEN", "127.0.0.1:0")
            .env("EZ_SERVER__BALANCER_LISTEN", "127.0.0.1:0")
            .env("EZ_LOG__FORMAT", "json")
            .env("EZ_AUTH__ADMIN_TOKEN", ADMIN)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let db = match backend {
            Backend::Embedded => None,
            Backend::Real => {
                let db = TestDatabase::create(backend).await;
                cmd.env("EZ_DATABASE__URL", &db.url)
                    .env(
                        "EZ_REDIS__URL",
                        std::env::var("EZ_TEST_REDIS_URL").expect("EZ_TEST_REDIS_URL"),
                    )
                    .env("EZ_REDIS__KEY_PREFIX", format!("ez-listeners-{:016x}:", random()));
                Some(db)
            }
        };
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
        let mut server = Server {
            child,
            log,
            addr: String::new(),
            internal_addr: None,
            dir,
            _db: db,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.addr.is_empty() {
            for entry in server.entries() {
                match entry["fields"]["message"].as_str() {
                    Some("ezapi listening" | "ezapi balancer listening") => {
                        server.addr = entry["fields"]["addr"].as_str().unwrap().to_owned()
                    }
                    Some("ezapi internal listening") => {
                        server.internal_addr = Some(entry["fields"]["addr"].as_str().unwrap().to_owned());
                    }
                    _ => {}
                }
            }
            if let Some(status) = server.child.try_wait().expect("try_wait") {
                panic!("ezapi exited early ({status}):\n{}", server.tail());
            }
            assert!(
                Instant::now() < deadline,
                "ezapi did not start:\n{}",
                server.tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn entries(&self) -> Vec<Value> {
        let log = self.log.lock().unwrap();
        log.iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    fn tail(&self) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(40)..].join("\n")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM; the exit status and how long the process took to stop.
    async fn terminate(self) -> (ExitStatus, Duration) {
        self.send_sigterm();
        self.wait_for_exit().await
    }

    fn send_sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// The exit status and how long it took to come.
    async fn wait_for_exit(mut self) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(60), "ezapi did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- last log lines of ezapi ---\n{}", self.tail());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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

fn timeouts_env() -> Vec<(&'static str, String)> {
    vec![
        (
            "EZ_SERVER__HEADER_READ_TIMEOUT",
            format!("{}ms", HEADER_READ.as_millis()),
        ),
        (
            "EZ_SERVER__BODY_READ_TIMEOUT",
            format!("{}ms", BODY_READ.as_millis()),
        ),
        (
            "EZ_SERVER__KEEP_ALIVE_IDLE",
            format!("{}ms", KEEP_ALIVE.as_millis()),
        ),
    ]
}

// ---- HTTP over fresh connections ----

/// A client that opens a new connection for every request, so each probe also goes
/// through `accept` and the connection cap.
fn fresh_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
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

async fn metrics(client: &reqwest::Client, server: &Server) -> String {
    let resp = client.get(server.url("/metrics")).send().await.expect("metrics");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("metrics text")
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `/metrics` until no connection but the probe's own is open, so a test starts
/// from a known number of free slots. With a pooling `client` that connection stays
/// open (and holds one slot) afterwards.
async fn wait_until_quiet(client: &reqwest::Client, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = metric(
            &metrics(client, server).await,
            "ezapi_http_connections_open",
            &["listener=\"public\""],
        );
        if open <= 1.0 {
            return;
        }
        assert!(Instant::now() < deadline, "{open} connections stay open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- slow clients on raw sockets ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slow {
    /// Connects and sends nothing.
    Silent,
    /// Half a request head.
    PartialHead,
    /// A control-plane JSON request whose body stops after a few bytes.
    StalledBody,
    /// A balancer request (valid child key) whose body stops after a few bytes.
    StalledProxyBody,
    /// One complete request and its answer, then nothing.
    IdleAfterAnswer,
    /// The HTTP/2 preface and SETTINGS, then no stream.
    Http2Preface,
}

/// A slow connection.
struct Held {
    kind: Slow,
    stream: TcpStream,
    /// Taken before connecting: no server-side timer of this connection can have
    /// started earlier, so the time to its end is at least the timeout.
    since: Instant,
}

/// How a connection ended, seen from the client.
#[derive(Debug)]
struct Ended {
    kind: Slow,
    after: Duration,
    received: String,
}

async fn open(addr: &str, kind: Slow, key: &str) -> Held {
    let since = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = match kind {
        Slow::Silent => String::new(),
        Slow::PartialHead => "GET /health HTTP/1.1\r\nHost: ezapi\r\nX-Slow: ".to_owned(),
        Slow::StalledBody => format!(
            "POST /admin/namespaces HTTP/1.1\r\nHost: ezapi\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\": \"sl"
        ),
        Slow::StalledProxyBody => format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: ezapi\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"model\": \"gp"
        ),
        Slow::IdleAfterAnswer => "GET /health HTTP/1.1\r\nHost: ezapi\r\n\r\n".to_owned(),
        Slow::Http2Preface => String::new(),
    };
    stream.write_all(request.as_bytes()).await.expect("write");
    if kind == Slow::Http2Preface {
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        stream.write_all(&preface).await.expect("write the preface");
    }
    if kind == Slow::IdleAfterAnswer {
        let answer = read_one_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    Held { kind, stream, since }
}

/// Reads one HTTP/1.1 answer with a `Content-Length` body.
async fn read_one_answer(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read the answer");
        assert!(n > 0, "closed before the answer was complete");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + length {
                return text.into_owned();
            }
        }
    }
}

/// Waits for the server to close `held` (EOF or reset); panics if it stays open for
/// longer than `limit`.
async fn until_closed(mut held: Held, limit: Duration) -> Ended {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        loop {
            match held.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    if tokio::time::timeout(limit, read_all).await.is_err() {
        panic!("a {:?} connection is still open after {limit:?}", held.kind);
    }
    Ended {
        kind: held.kind,
        after: held.since.elapsed(),
        received: String::from_utf8_lossy(&received).into_owned(),
    }
}

/// A master and a child key, created on `admin`; returns the key and its id once
/// the balancer `proxy` knows it (its answer to an empty body is then 400, not 401).
async fn child_key(client: &reqwest::Client, admin: &Server, proxy: &Server) -> (String, i64) {
    let server = admin;
    let (status, master) = call(
        client,
        reqwest::Method::POST,
        server.url("/admin/masters"),
        ADMIN,
        Some(json!({ "name": format!("slow-{:x}", random()) })),
    )
    .await;
    assert_eq!(status, 201, "{master}");
    let (status, key) = call(
        client,
        reqwest::Method::POST,
        server.url("/v1/tokens"),
        master["master_key"].as_str().unwrap(),
        Some(json!({ "name": "slow" })),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let (key, key_id) = (
        key["key"].as_str().unwrap().to_owned(),
        key["id"].as_i64().unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = call(
            client,
            reqwest::Method::POST,
            proxy.url("/v1/chat/completions"),
            &key,
            Some(json!({})),
        )
        .await;
        if status == 400 {
            return (key, key_id);
        }
        assert!(
            Instant::now() < deadline,
            "the balancer never knew the key: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that each connection ended after its own timeout, and how; returns the
/// closing times per kind.
fn check_endings(ended: &[Ended]) -> String {
    let mut report = Vec::new();
    for kind in [
        Slow::Silent,
        Slow::PartialHead,
        Slow::StalledBody,
        Slow::StalledProxyBody,
        Slow::IdleAfterAnswer,
        Slow::Http2Preface,
    ] {
        let of_kind: Vec<&Ended> = ended.iter().filter(|e| e.kind == kind).collect();
        if of_kind.is_empty() {
            continue;
        }
        let timeout = match kind {
            Slow::Silent | Slow::PartialHead | Slow::Http2Preface => HEADER_READ,
            Slow::StalledBody | Slow::StalledProxyBody => BODY_READ,
            Slow::IdleAfterAnswer => KEEP_ALIVE,
        };
        for e in &of_kind {
            assert!(
                e.after + EARLY >= timeout && e.after <= timeout + LATE,
                "{kind:?} closed after {:?}, its timeout is {timeout:?}",
                e.after
            );
            match kind {
                Slow::StalledBody | Slow::StalledProxyBody => {
                    assert!(e.received.starts_with("HTTP/1.1 408"), "{kind:?}: {}", e.received);
                    assert!(e.received.contains("\"body_read_timeout\""), "{}", e.received);
                    assert!(e.received.to_ascii_lowercase().contains("connection: close"));
                }
                Slow::Silent | Slow::PartialHead | Slow::IdleAfterAnswer => {
                    assert_eq!(e.received, "", "{kind:?} gets nothing more");
                }
                // The server's SETTINGS and its acknowledgement of ours.
                Slow::Http2Preface => {}
            }
        }
        let min = of_kind.iter().map(|e| e.after).min().unwrap_or_default();
        let max = of_kind.iter().map(|e| e.after).max().unwrap_or_default();
        report.push(format!(
            "{kind:?}×{}: closed after {min:.2?}–{max:.2?}",
            of_kind.len()
        ));
    }
    report.join("; ")
}

// ---- the tests ----

const SLOW_MIX: [(Slow, usize); 6] = [
    (Slow::Silent, 100),
    (Slow::PartialHead, 100),
    (Slow::StalledBody, 100),
    (Slow::StalledProxyBody, 80),
    (Slow::IdleAfterAnswer, 100),
    (Slow::Http2Preface, 40),
];

/// ≥ 500 slow connections at once: `/health`, an admin request and an HTTP/2 request
/// keep answering promptly; then every slow connection is closed by the server after
/// its own timeout, stalled bodies with a 408.
async fn slow_and_idle_clients_are_held_then_closed(backend: Backend) {
    ez_control_plane::listener::raise_open_file_limit();
    let server = Server::start(backend, &timeouts_env(), None).await;
    let client = fresh_client();
    let (key, _) = child_key(&client, &server, &server).await;
    let total: usize = SLOW_MIX.iter().map(|(_, n)| n).sum();
    assert!(total >= 500);

    let opening = SLOW_MIX
        .iter()
        .flat_map(|&(kind, n)| std::iter::repeat_n(kind, n))
        .map(|kind| open(&server.addr, kind, &key));
    let held = futures_util::future::join_all(opening).await;
    let first_opened = held.iter().map(|h| h.since).min().expect("connections");

    // Normal requests while every slow connection is held.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .pool_max_idle_per_host(0)
        .build()
        .expect("h2 client");
    let mut slowest = Duration::ZERO;
    for round in 0..5 {
        for (client, path, token) in [
            (&client, "/health", ""),
            (&client, "/admin/namespaces", ADMIN),
            (&h2, "/health", ""),
        ] {
            let started = Instant::now();
            let (status, body) = call(client, reqwest::Method::GET, server.url(path), token, None).await;
            let took = started.elapsed();
            assert_eq!(status, 200, "{path} (round {round}): {body}");
            assert!(
                took < PROMPT,
                "{path} took {took:?} with {total} slow connections held"
            );
            slowest = slowest.max(took);
        }
        if round == 0 {
            // Every slow connection is accepted and held (a busy machine may take a
            // moment to accept them all, but well before the first one times out).
            let mut open = 0.0;
            while first_opened.elapsed() < HEADER_READ - Duration::from_millis(500) {
                open = metric(
                    &metrics(&client, &server).await,
                    "ezapi_http_connections_open",
                    &["listener=\"public\""],
                );
                if open >= total as f64 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(
                open >= total as f64,
                "the server holds {open} connections, not the {total} slow ones"
            );
        }
    }
    let probing = first_opened.elapsed();
    assert!(
        probing < HEADER_READ,
        "the probes ({probing:?}) must run while the slow connections are held"
    );

    let ended = futures_util::future::join_all(
        held.into_iter()
            .map(|h| until_closed(h, KEEP_ALIVE.max(BODY_READ).max(HEADER_READ) + LATE)),
    )
    .await;
    let report = check_endings(&ended);
    eprintln!("{total} slow connections; slowest probe {slowest:.2?} ({backend:?}); {report}");

    let text = metrics(&client, &server).await;
    let timed_out = |waiting_for: &str| {
        metric(
            &text,
            "ezapi_http_connections_timed_out_total",
            &[&format!("waiting_for=\"{waiting_for}\"")],
        )
    };
    assert!(timed_out("header_read") >= 240.0, "{text}");
    assert!(timed_out("keep_alive_idle") >= 100.0, "{text}");
    assert!(
        metric(&text, "ezapi_http_requests_total", &["status=\"408\""]) >= 180.0,
        "{text}"
    );
    wait_until_quiet(&client, &server).await;

    // Shutdown does not wait for connections without a request in flight.
    let mut quiet = Vec::new();
    for kind in [Slow::Silent, Slow::IdleAfterAnswer] {
        for _ in 0..25 {
            quiet.push(open(&server.addr, kind, &key).await);
        }
    }
    let (status, took) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        took < HEADER_READ,
        "shutdown took {took:?}: it waited for connections without a request"
    );
}

/// Fills the cap (one kept-alive connection, the rest silent ones), then opens `extra`
/// silent connections more: those are closed at once. A `/health` on a new connection is
/// refused while the cap is reached and answers again once the silent connections time
/// out.
async fn fill_the_cap(server: &Server, cap: usize, extra: usize) {
    let kept_alive = reqwest::Client::new();
    wait_until_quiet(&kept_alive, server).await;
    let mut held = Vec::new();
    for _ in 0..cap - 1 + extra {
        held.push(open(&server.addr, Slow::Silent, "").await);
    }
    let filled = held[0].since;
    let refused = held.split_off(cap - 1);
    // Closed at once: well before the held ones' header timeout.
    let at_once = HEADER_READ - Duration::from_secs(1);
    for ended in futures_util::future::join_all(refused.into_iter().map(|h| until_closed(h, at_once))).await {
        assert_eq!(ended.received, "", "a refused connection gets nothing");
    }
    let client = fresh_client();
    let while_full = client.get(server.url("/health")).send().await;
    assert!(
        while_full.is_err(),
        "at the cap a new connection is closed: {while_full:?}"
    );
    let recovered = loop {
        let attempt = Instant::now();
        let error = match client.get(server.url("/health")).send().await {
            Ok(resp) => {
                assert_eq!(resp.status(), 200);
                break filled.elapsed();
            }
            Err(e) => e,
        };
        assert!(
            filled.elapsed() < HEADER_READ + 3 * LATE,
            "/health does not answer again after the slow connections' timeout (last attempt: {error:?} after {:?})",
            attempt.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        recovered + EARLY >= HEADER_READ,
        "slots freed before the timeout: {recovered:?}"
    );
    eprintln!("cap {cap}, {extra} refused; /health answered again after {recovered:.2?}");
    drop(held);
    let text = metrics(&client, server).await;
    let refusals = metric(
        &text,
        "ezapi_http_connections_refused_total",
        &["listener=\"public\""],
    );
    assert!(
        refusals >= (extra + 1) as f64,
        "{refusals} refusals counted: {text}"
    );
    assert_eq!(
        metric(&text, "ezapi_http_accept_errors_total", &[]),
        0.0,
        "the process never ran out of file descriptors: {text}"
    );
}

async fn the_connection_cap_refuses_the_excess(backend: Backend) {
    ez_control_plane::listener::raise_open_file_limit();
    let mut env = timeouts_env();
    env.push(("EZ_SERVER__MAX_CONNECTIONS", "40".to_owned()));
    let server = Server::start(backend, &env, None).await;
    fill_the_cap(&server, 40, 20).await;
}

/// The case: 300 slow connections against a process limited to 256 open files.
/// The cap is lowered to half the limit (with a warning naming the option), so the
/// process keeps descriptors for itself and `/health` answers once slots free.
async fn a_low_open_file_limit_lowers_the_cap(backend: Backend) {
    ez_control_plane::listener::raise_open_file_limit();
    let server = Server::start(backend, &timeouts_env(), Some(256)).await;
    let warning = server
        .entries()
        .into_iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("server.max_connections is more than the open-file limit"))
        })
        .unwrap_or_else(|| panic!("no warning about server.max_connections:\n{}", server.tail()));
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["fields"]["using"], 128, "{warning}");
    assert_eq!(warning["fields"]["configured"], 10_000, "{warning}");
    // 127 silent connections and the test's kept-alive one fill the cap; 173 more.
    fill_the_cap(&server, 128, 300 - 127).await;
}

async fn internal_routes_move_to_their_own_listener(backend: Backend) {
    let env = [
        ("EZ_SERVER__INTERNAL_LISTEN", "127.0.0.1:0".to_owned()),
        ("EZ_INTERNAL__STATS_TOKEN", STATS_TOKEN.to_owned()),
    ];
    let server = Server::start(backend, &env, None).await;
    let internal = server
        .internal_addr
        .clone()
        .expect("the internal listener's address is logged");
    assert_ne!(internal, server.addr);
    let client = reqwest::Client::new();
    let request_id = format!("internal-{:x}", random());
    let batch = json!({ "items": [{
        "request_id": request_id, "master_id": 1, "key_id": 1, "namespace": "default",
        "public_model": "gpt-4o", "endpoint": "/v1/chat/completions", "status_code": 200,
        "latency_ms": 12, "stream": false, "created_at": ez_contract::time::now_unix(),
    }]});
    let post = |base: &str, token: Option<&str>| {
        let mut req = client.post(format!("http://{base}/internal/logs")).json(&batch);
        if let Some(token) = token {
            req = req.header("x-internal-token", token);
        }
        req.send()
    };

    let public = post(&server.addr, Some(STATS_TOKEN)).await.expect("public");
    assert_eq!(public.status(), 404, "/internal/* is not on the public listener");
    let body: Value = public.json().await.unwrap();
    assert_eq!(body["error"]["code"], "route_not_found", "{body}");

    let anonymous = post(&internal, None).await.expect("internal");
    assert_eq!(
        anonymous.status(),
        401,
        "the internal listener still needs the token"
    );
    let accepted = post(&internal, Some(STATS_TOKEN)).await.expect("internal");
    assert_eq!(accepted.status(), 202);
    assert!(accepted.headers().contains_key("x-request-id"), "same middleware");
    let body: Value = accepted.json().await.unwrap();
    assert_eq!(body["accepted"], 1, "{body}");

    let (status, logs) = call(
        &client,
        reqwest::Method::GET,
        server.url("/admin/logs"),
        ADMIN,
        None,
    )
    .await;
    assert_eq!(status, 200, "{logs}");
    assert!(
        logs["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["request_id"] == request_id.as_str()),
        "the record sent to the internal listener is stored: {logs}"
    );
    let health = client
        .get(format!("http://{internal}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        health.status(),
        404,
        "the internal listener serves /internal/* only"
    );
    let (status, _) = call(&client, reqwest::Method::GET, server.url("/health"), "", None).await;
    assert_eq!(status, 200);
    let (status, took) = server.terminate().await;
    assert!(status.success(), "{status} after {took:?}");
}

/// A mock OpenAI upstream streaming `STREAM_CHUNKS` chunks `STREAM_GAP` apart (one
/// chunk when the request's `user` is `quick`); returns its `/v1` base URL.
async fn start_slow_upstream() -> String {
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::response::Response {
        let chunks = if body["user"] == "quick" { 1 } else { STREAM_CHUNKS };
        let events = futures_util::stream::unfold(0, move |i| async move {
            if i > chunks {
                return None;
            }
            if i == chunks {
                return Some((Ok::<_, std::io::Error>("data: [DONE]\n\n".to_owned()), i + 1));
            }
            if i > 0 {
                tokio::time::sleep(STREAM_GAP).await;
            }
            let chunk = json!({
                "id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 1_735_689_600,
                "model": "slow-upstream",
                "choices": [{ "index": 0, "delta": { "content": format!("part{i} ") }, "finish_reason": null }],
            });
            Some((Ok(format!("data: {chunk}\n\n")), i + 1))
        });
        axum::response::Response::builder()
            .header("content-type", "text/event-stream")
            .body(axum::body::Body::from_stream(events))
            .expect("a static response")
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the mock");
    let base = format!("http://{}/v1", listener.local_addr().expect("mock address"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

const STREAM_CHUNKS: usize = 10;
const STREAM_GAP: Duration = Duration::from_millis(400);

/// An answer streamed for longer than every listener timeout together reaches the client
/// whole: the deadlines bound reading requests and idling, never writing an answer.
async fn long_answers_are_not_cut(backend: Backend) {
    let short = Duration::from_secs(1);
    let env: Vec<(&str, String)> = [
        "EZ_SERVER__HEADER_READ_TIMEOUT",
        "EZ_SERVER__BODY_READ_TIMEOUT",
        "EZ_SERVER__KEEP_ALIVE_IDLE",
    ]
    .into_iter()
    .map(|var| (var, "1s".to_owned()))
    .collect();
    let server = Server::start(backend, &env, None).await;
    let upstream = start_slow_upstream().await;
    let client = reqwest::Client::new();
    let (status, setup) = call(
        &client,
        reqwest::Method::POST,
        server.url("/admin/providers/custom"),
        ADMIN,
        Some(json!({ "name": "slow", "base_url": upstream, "api_keys": ["sk-upstream-slow"], "models": ["slow-model"] })),
    )
    .await;
    assert_eq!(status, 201, "{setup}");
    let (status, binding) = call(
        &client,
        reqwest::Method::POST,
        server.url("/admin/bindings"),
        ADMIN,
        Some(
            json!({ "namespace": "default", "public_model": "slow-model", "group_id": setup["group"]["id"] }),
        ),
    )
    .await;
    assert_eq!(status, 201, "{binding}");
    let (key, _) = child_key(&client, &server, &server).await;
    let stream = |user: &str| {
        client
            .post(server.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({ "model": "slow-model", "stream": true, "user": user,
                "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while stream("quick").await.expect("request").status() != 200 {
        assert!(Instant::now() < deadline, "the route never became usable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    let resp = stream("slow").await.expect("request");
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.expect("the whole stream");
    let took = started.elapsed();
    assert!(
        took > 3 * short,
        "the stream ran {took:?}, longer than the timeouts together"
    );
    for i in 0..STREAM_CHUNKS {
        assert!(body.contains(&format!("part{i} ")), "chunk {i} missing: {body}");
    }
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    eprintln!("a {took:.2?} stream passed listeners with 1 s timeouts");

    // Shutdown lets a stream in flight finish (within `server.shutdown_grace`, 30 s).
    let mut resp = stream("slow").await.expect("request");
    assert_eq!(resp.status(), 200);
    let mut body =
        String::from_utf8_lossy(&resp.chunk().await.expect("read").expect("a first chunk")).into_owned();
    server.send_sigterm();
    while let Some(chunk) = resp.chunk().await.expect("the stream goes on during shutdown") {
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let (status, took) = server.wait_for_exit().await;
    assert!(status.success(), "{status} after {took:?}");
}

/// The split deployment applies the same limits: `ezapi control-plane` with `/internal/*`
/// on its own listener, and `ezapi balancer` reporting there. Needs Redis, so it runs
/// only on PostgreSQL + Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_processes_apply_the_same_limits() {
    if Backend::Real.available() {
        within_deadline(split_processes(Backend::Real)).await;
    }
}

async fn split_processes(backend: Backend) {
    let prefix = format!("ez-listeners-split-{:016x}:", random());
    let mut cp_env = timeouts_env();
    cp_env.extend([
        ("EZ_SERVER__INTERNAL_LISTEN", "127.0.0.1:0".to_owned()),
        ("EZ_INTERNAL__STATS_TOKEN", STATS_TOKEN.to_owned()),
        ("EZ_REDIS__KEY_PREFIX", prefix.clone()),
    ]);
    let cp = Server::start_command("control-plane", backend, &cp_env, None).await;
    let internal = cp.internal_addr.clone().expect("the internal listener");
    let mut lb_env = timeouts_env();
    lb_env.extend([
        ("EZ_INTERNAL__CONTROL_PLANE_URL", format!("http://{internal}")),
        ("EZ_INTERNAL__STATS_TOKEN", STATS_TOKEN.to_owned()),
        ("EZ_REDIS__KEY_PREFIX", prefix),
        ("EZ_BALANCER__REPORT_INTERVAL", "200ms".to_owned()),
    ]);
    let lb = Server::start_command("balancer", backend, &lb_env, None).await;
    let client = fresh_client();
    let (key, key_id) = child_key(&client, &cp, &lb).await;

    let mut opening = Vec::new();
    for (server, kinds) in [
        (&cp, [Slow::Silent, Slow::PartialHead, Slow::StalledBody]),
        (&lb, [Slow::Silent, Slow::PartialHead, Slow::StalledProxyBody]),
    ] {
        for kind in kinds {
            for _ in 0..20 {
                opening.push(open(&server.addr, kind, &key));
            }
        }
    }
    let held = futures_util::future::join_all(opening).await;
    for server in [&cp, &lb] {
        let (status, body) = call(&client, reqwest::Method::GET, server.url("/health"), "", None).await;
        assert_eq!(status, 200, "{body}");
    }
    let ended = futures_util::future::join_all(
        held.into_iter()
            .map(|h| until_closed(h, BODY_READ.max(HEADER_READ) + LATE)),
    )
    .await;
    eprintln!("split: {}", check_endings(&ended));

    // The balancer's reports reach the control plane through the internal listener.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, logs) = call(
            &client,
            reqwest::Method::GET,
            cp.url(&format!("/admin/logs?key_id={key_id}")),
            ADMIN,
            None,
        )
        .await;
        assert_eq!(status, 200, "{logs}");
        if logs["total"].as_i64().unwrap_or(0) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no log record arrived: {logs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = client
        .post(cp.url("/internal/logs"))
        .header("x-internal-token", STATS_TOKEN)
        .json(&json!({ "items": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "not on the control plane's public listener");
    for server in [lb, cp] {
        let (status, took) = server.terminate().await;
        assert!(status.success(), "{status} after {took:?}");
    }
}

async fn anonymous_internal_access_is_announced(backend: Backend) {
    let warnings = |server: &Server| -> Vec<Value> {
        server
            .entries()
            .into_iter()
            .filter(|e| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("internal.allow_anonymous"))
            })
            .collect()
    };

    let server = Server::start(backend, &[], None).await;
    assert!(warnings(&server).is_empty(), "nothing to say by default");
    drop(server);

    let server = Server::start(
        backend,
        &[("EZ_INTERNAL__ALLOW_ANONYMOUS", "true".to_owned())],
        None,
    )
    .await;
    let found = warnings(&server);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["level"], "WARN");
    let message = found[0]["fields"]["message"].as_str().unwrap();
    for needle in [
        "X-Internal-Token",
        "anyone",
        "internal.stats_token",
        "server.internal_listen",
    ] {
        assert!(message.contains(needle), "the warning names {needle}: {message}");
    }
    // And it is true: anyone may write logs.
    let client = reqwest::Client::new();
    let resp = client
        .post(server.url("/internal/logs"))
        .json(&json!({ "items": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    drop(server);

    let server = Server::start(
        backend,
        &[
            ("EZ_INTERNAL__ALLOW_ANONYMOUS", "true".to_owned()),
            ("EZ_INTERNAL__STATS_TOKEN", STATS_TOKEN.to_owned()),
        ],
        None,
    )
    .await;
    let found = warnings(&server);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0]["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("no effect"),
        "{found:?}"
    );
}
