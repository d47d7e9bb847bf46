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

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ez_control_plane::testing::{Backend, TestDatabase};
use serde_json::{Value, json};
use support::*;

const WRONG_STATS_TOKEN: &str = "not-the-stats-token-9876543210";
/// `balancer.report_interval` of the balancers under test.
const REPORT_INTERVAL: Duration = Duration::from_millis(200);
/// The slowest a request may be while the control plane is away: far below the report
/// client's timeouts (3 s connect, 15 s total), so a request that waited on a delivery
/// would show.
const MAX_LATENCY: Duration = Duration::from_millis(500);
const TEST_DEADLINE: Duration = Duration::from_secs(120);

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
    // The per-group counters count from the first request: the recorder is installed
    // before the first snapshot load, which takes their handles.
    let metrics = scrape(&client, &balancer).await;
    let answered = r#"ezapi_upstream_requests_total{group="mock-openai",status_class="2xx"} "#;
    assert!(
        metrics
            .lines()
            .any(|l| l.strip_prefix(answered).is_some_and(|n| n != "0")),
        "{metrics}"
    );
    // Its histograms are drained between scrapes by its own upkeep job (every 5 s).
    let upkeep = r#"ezapi_job_runs_total{job="metrics_upkeep",outcome="ok"} "#;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let metrics = scrape(&client, &balancer).await;
        if metrics.lines().any(|l| l.starts_with(upkeep)) {
            break;
        }
        assert!(Instant::now() < deadline, "no upkeep run:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

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

/// The text of `proc`'s `/metrics`.
async fn scrape(client: &reqwest::Client, proc: &Proc) -> String {
    let resp = client
        .get(proc.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    resp.text().await.expect("metrics text")
}
