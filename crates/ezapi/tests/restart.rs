//! A balancer restarted under load loses no log record: on SIGTERM it stops accepting,
//! lets the requests in flight finish, delivers what its reporter holds to the control
//! plane within `server.shutdown_grace`, and exits; a second balancer takes the traffic.
//! Every request that was answered is then stored exactly once — with a report interval
//! far longer than the test, so only the deliveries at shutdown can have stored them —
//! and so is a stream still running when the grace ends (cut then, recorded all the same).
//!
//! Real processes (`ezapi control-plane`, two `ezapi balancer`s) on Redis; the control
//! plane on SQLite, and on PostgreSQL when `EZ_TEST_DATABASE_URL` is set.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ez_control_plane::testing::{Backend, TestDatabase};
use serde_json::json;
use support::{
    CHAT_TIMEOUT, DRIP, MODEL, Proc, STATS_TOKEN, all_logs, configure, redis_available, remove_bus_keys,
    start_mock, temp_dir, wait_until_routable,
};

const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const WORKERS: usize = 6;
const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// Where the load goes, and what it got.
#[derive(Default)]
struct Load {
    target: Mutex<String>,
    stop: AtomicBool,
    /// Request ids answered 200, with whether they streamed.
    answered: Mutex<Vec<String>>,
    /// Requests that got no answer (refused connections while a balancer stops).
    unanswered: AtomicUsize,
    sent: AtomicUsize,
}

impl Load {
    async fn worker(self: Arc<Self>, client: reqwest::Client, key: String, worker: usize) {
        for i in 0.. {
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            let id = format!("load-{worker}-{i}");
            let target = self.target.lock().unwrap().clone();
            self.sent.fetch_add(1, Ordering::SeqCst);
            let stream = i % 2 == 1;
            let sent = client
                .post(format!("{target}/v1/chat/completions"))
                .bearer_auth(&key)
                .header("x-request-id", &id)
                .json(&json!({ "model": MODEL, "stream": stream, "messages": [{ "role": "user", "content": "hi" }] }))
                .timeout(CHAT_TIMEOUT)
                .send()
                .await;
            let answered = match sent {
                Ok(resp) if resp.status() == 200 => resp
                    .text()
                    .await
                    .is_ok_and(|body| !stream || body.contains("[DONE]")),
                _ => false,
            };
            if answered {
                self.answered.lock().unwrap().push(id);
            } else {
                self.unanswered.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Waits for a process told to stop at `since` to exit; returns how long it took.
async fn exited(proc: &mut Proc, since: Instant) -> Duration {
    loop {
        if let Some(status) = proc.child.try_wait().expect("try_wait") {
            assert!(
                status.success(),
                "{} exited with {status}:\n{}",
                proc.name,
                proc.tail()
            );
            return since.elapsed();
        }
        assert!(
            since.elapsed() < SHUTDOWN_GRACE + Duration::from_secs(5),
            "{} did not stop within the grace:\n{}",
            proc.name,
            proc.tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn restart_under_load(database_url: Option<String>) {
    let db = if database_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let redis = std::env::var("EZ_TEST_REDIS_URL").expect("EZ_TEST_REDIS_URL");
    let dir = temp_dir();
    let prefix = format!("test:restart-{:016x}:", support::random());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (upstream, _) = start_mock().await;
    let common = vec![
        ("EZ_REDIS__URL", redis.clone()),
        ("EZ_REDIS__KEY_PREFIX", prefix.clone()),
        ("EZ_SERVER__DATA_DIR", dir.join("data").display().to_string()),
        ("EZ_INTERNAL__STATS_TOKEN", STATS_TOKEN.to_owned()),
    ];
    let mut cp_env = common.clone();
    cp_env.push(("EZ_SERVER__LISTEN", "127.0.0.1:0".to_owned()));
    cp_env.push(("EZ_AUTH__ADMIN_TOKEN", support::ADMIN.to_owned()));
    if let Some(url) = &database_url {
        cp_env.push(("EZ_DATABASE__URL", url.clone()));
    }
    let cp = Proc::start("control plane", "control-plane", &dir, &cp_env).await;
    let mut balancer_env = common;
    balancer_env.extend([
        ("EZ_SERVER__BALANCER_LISTEN", "127.0.0.1:0".to_owned()),
        ("EZ_INTERNAL__CONTROL_PLANE_URL", cp.url("")),
        // Nothing is delivered on the interval during the test: only at shutdown.
        ("EZ_BALANCER__REPORT_INTERVAL", "10m".to_owned()),
        ("EZ_BALANCER__RECONCILE_INTERVAL", "1s".to_owned()),
        (
            "EZ_SERVER__SHUTDOWN_GRACE",
            format!("{}s", SHUTDOWN_GRACE.as_secs()),
        ),
    ]);
    let key = configure(&client, &cp, &upstream).await;
    let mut first = Proc::start("first balancer", "balancer", &dir, &balancer_env).await;
    wait_until_routable(&client, &first, &key).await;
    let second = Proc::start("second balancer", "balancer", &dir, &balancer_env).await;
    wait_until_routable(&client, &second, &key).await;

    let load = Arc::new(Load::default());
    *load.target.lock().unwrap() = first.url("");
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(load.clone().worker(client.clone(), key.clone(), w)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before_stop = load.answered.lock().unwrap().len();
    assert!(before_stop > 0, "the load is flowing");

    // A stream longer than the grace is in flight too: it is cut when the grace ends,
    // and its record must still be delivered.
    let mut long = client
        .post(first.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-request-id", "long-stream")
        .json(&json!({ "model": MODEL, "stream": true, "messages": [{ "role": "user", "content": DRIP }] }))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the long stream starts");
    assert_eq!(long.status(), 200);
    long.chunk()
        .await
        .expect("a first chunk")
        .expect("the stream goes on");
    let long = tokio::spawn(async move { while let Ok(Some(_)) = long.chunk().await {} });

    // The first balancer stops while requests are in flight; the load moves on.
    first.signal("-TERM");
    let since = Instant::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    *load.target.lock().unwrap() = second.url("");
    let stopping = exited(&mut first, since).await;
    long.await.expect("the long stream ended");
    assert!(
        stopping >= SHUTDOWN_GRACE,
        "the long stream held the first balancer for its grace"
    );
    assert!(
        first.tail().contains("every log record was delivered"),
        "the first balancer says it delivered its records:\n{}",
        first.tail()
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.expect("load worker");
    }
    let mut second = second;
    second.signal("-TERM");
    let second_stopping = exited(&mut second, Instant::now()).await;

    let answered = load.answered.lock().unwrap().clone();
    let (items, total) = all_logs(&client, &cp.url("")).await.expect("logs");
    let mut stored: HashMap<&str, usize> = HashMap::new();
    for record in &items {
        *stored
            .entry(record["request_id"].as_str().unwrap_or_default())
            .or_default() += 1;
    }
    let missing: Vec<&String> = answered
        .iter()
        .filter(|id| !stored.contains_key(id.as_str()))
        .collect();
    // (Both balancers' warm-up requests are named `warmup-0`: only the load counts.)
    let twice: Vec<_> = stored
        .iter()
        .filter(|(id, n)| id.starts_with("load-") && **n > 1)
        .collect();
    eprintln!(
        "[{db}] {} requests sent, {} answered, {} not answered while a balancer stopped; {total} records stored; \
         first balancer stopped in {stopping:?}, second in {second_stopping:?}",
        load.sent.load(Ordering::SeqCst),
        answered.len(),
        load.unanswered.load(Ordering::SeqCst),
    );
    assert!(
        missing.is_empty(),
        "{} answered requests have no record: {missing:?}",
        missing.len()
    );
    assert!(twice.is_empty(), "records stored twice: {twice:?}");
    assert_eq!(
        stored.get("long-stream"),
        Some(&1),
        "the stream cut at the end of the grace is recorded"
    );
    assert!(answered.len() > before_stop, "the second balancer took the load");

    drop(cp);
    remove_bus_keys(&redis, &prefix).await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn run(database_url: Option<String>) {
    tokio::time::timeout(TEST_DEADLINE, restart_under_load(database_url))
        .await
        .expect("the restart test did not finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balancer_restarted_under_load_loses_no_record_sqlite() {
    if redis_available() {
        run(None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_balancer_restarted_under_load_loses_no_record_postgres() {
    if !redis_available() || !support::env_set("EZ_TEST_DATABASE_URL") {
        return;
    }
    let db = TestDatabase::create(Backend::Real).await;
    run(Some(db.url.clone())).await;
    drop(db);
}
