//! A simple load run against an in-process control plane: child-key creation and
//! `GET /v1/whoami` latency, on SQLite + memory bus and, when `EZ_TEST_DATABASE_URL` and
//! `EZ_TEST_REDIS_URL` are set, on PostgreSQL + Redis — in one run.
//!
//!     cargo run --release -p ez-control-plane --example cp_load [-- REQUESTS]
//!
//! The client runs in the same process on the same 2 cores, so figures are a floor on
//! what the server can do, not a ceiling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ez_config::Config;
use ez_control_plane::ControlPlane;
use ez_control_plane::store::Store;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::{Value, json};

const ADMIN: &str = "load-test-admin-token-0123456789";

struct Stats {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn line(&mut self, what: &str, concurrency: usize) -> String {
        self.latencies.sort();
        let pct = |p: f64| {
            let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
            self.latencies[idx].as_secs_f64() * 1000.0
        };
        format!(
            "| {what} | {concurrency} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            self.latencies.len(),
            self.latencies.len() as f64 / self.elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            self.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        )
    }
}

/// Runs `total` requests with `concurrency` workers; `make` builds request number i.
async fn run<F>(total: usize, concurrency: usize, make: F) -> Stats
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (make, next) = (make.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                let resp = make(i).send().await.expect("request");
                let status = resp.status();
                let _ = resp.bytes().await;
                assert!(status.is_success(), "request {i} failed with {status}");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for w in workers {
        latencies.extend(w.await.expect("worker"));
    }
    Stats {
        latencies,
        elapsed: started.elapsed(),
    }
}

async fn scenario(backend: Backend, requests: usize) -> Vec<String> {
    let db = TestDatabase::create(backend).await;
    let bus = test_bus(backend).await;
    let mut config = Config::defaults();
    config.auth.admin_token = Some(ez_contract::SecretToken::from_plaintext(ADMIN));
    let store = Store::connect(&db.url, db.kind.clone(), 10)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let cp = ControlPlane::build(&config, store, bus).await.expect("build");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(ez_control_plane::serve(
        listener,
        cp.router(),
        std::future::pending(),
    ));
    let client = reqwest::Client::new();

    let master: Value = client
        .post(format!("{base}/admin/masters"))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "load", "max_child_keys": 1_000_000 }))
        .send()
        .await
        .expect("create master")
        .json()
        .await
        .expect("json");
    let master_key = master["master_key"].as_str().expect("master_key").to_owned();
    let label = match backend {
        Backend::Embedded => "SQLite + memory",
        Backend::Real => "PostgreSQL + Redis",
    };
    let mut lines = Vec::new();
    for concurrency in [1, 8] {
        let (c, b, k) = (client.clone(), base.clone(), master_key.clone());
        let mut stats = run(requests / 2, concurrency, move |i| {
            c.post(format!("{b}/v1/tokens"))
                .bearer_auth(&k)
                .json(&json!({ "name": format!("k-{concurrency}-{i}") }))
        })
        .await;
        lines.push(stats.line(&format!("{label}: POST /v1/tokens"), concurrency));
    }
    let key: Value = client
        .post(format!("{base}/v1/tokens"))
        .bearer_auth(&master_key)
        .json(&json!({ "name": "whoami" }))
        .send()
        .await
        .expect("issue key")
        .json()
        .await
        .expect("json");
    let key = key["key"].as_str().expect("key").to_owned();
    for concurrency in [1, 16] {
        let (c, b, k) = (client.clone(), base.clone(), key.clone());
        let mut stats = run(requests, concurrency, move |_| {
            c.get(format!("{b}/v1/whoami")).bearer_auth(&k)
        })
        .await;
        lines.push(stats.line(&format!("{label}: GET /v1/whoami (key)"), concurrency));
    }
    lines
}

#[tokio::main]
async fn main() {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    println!("| operation | concurrency | requests | req/s | p50 ms | p99 ms | max ms |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for backend in [Backend::Embedded, Backend::Real] {
        if backend.available() {
            for line in scenario(backend, requests).await {
                println!("{line}");
            }
        }
    }
}
