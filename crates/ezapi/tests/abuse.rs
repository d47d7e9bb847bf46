//! Two tenants share one upstream credential on a real `ezapi serve`. Tenant A attacks:
//! models with control characters (NUL included), headers of hundreds of kilobytes,
//! streams abandoned mid-way, requests that make the upstream answer 402 for a request
//! parameter, and hundreds of connections that send half a request head and wait. Tenant
//! B works meanwhile: every one of B's requests must succeed, every one of B's log
//! records must arrive, and the shared credential must not be banned.
//!
//! Runs on SQLite + memory, and on PostgreSQL + Redis when `EZ_TEST_DATABASE_URL` and
//! `EZ_TEST_REDIS_URL` are set.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ez_control_plane::testing::{Backend, TestDatabase};
use serde_json::{Value, json};
use support::{ADMIN, DRIP, MODEL, Proc, REPLY_PIECES, all_logs, call, configure, start_mock, temp_dir};
use tokio::io::AsyncWriteExt;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);
const SLOW_CONNECTIONS: usize = 300;
const B_REQUESTS: usize = 120;
const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// What tenant A sent, by kind.
#[derive(Debug, Default)]
struct Attacks {
    poisoned_models: usize,
    huge_headers: usize,
    abandoned_streams: usize,
    payment_required: usize,
    slow_connections: usize,
}

async fn poisoned_models(client: &reqwest::Client, base: &str, key: &str) -> usize {
    let models = [
        "gpt-4o-mini\u{0}",
        "\u{0}\u{0}\u{0}",
        "gpt\r\nX-Injected: 1",
        "model\u{7f}\u{1b}[31m",
    ];
    let mut sent = 0;
    for round in 0..10 {
        for model in models {
            let (status, body) = call(
                client,
                format!("{base}/v1/chat/completions"),
                key,
                Some(json!({ "model": model, "messages": [{ "role": "user", "content": format!("poison {round}") }] })),
            )
            .await;
            assert_eq!(status, 404, "{body}");
            sent += 1;
        }
    }
    sent
}

async fn huge_headers(client: &reqwest::Client, base: &str, key: &str) -> usize {
    // Under the server's header buffer (about 400 KB), so each reaches the proxy.
    let namespace = "n".repeat(380 * 1024);
    for _ in 0..20 {
        let resp = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .header("x-ez-namespace", &namespace)
            .json(&json!({ "model": MODEL, "messages": [] }))
            .send()
            .await
            .expect("a huge header is answered");
        assert_eq!(resp.status(), 403);
        let text = resp.text().await.expect("body");
        assert!(text.len() < 2_000, "the refusal echoes a bounded excerpt");
    }
    20
}

async fn abandoned_streams(client: &reqwest::Client, base: &str, key: &str) -> usize {
    for _ in 0..20 {
        let mut resp = client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(
                &json!({ "model": MODEL, "stream": true, "messages": [{ "role": "user", "content": DRIP }] }),
            )
            .send()
            .await
            .expect("a stream starts");
        assert_eq!(resp.status(), 200);
        resp.chunk().await.expect("a first chunk").expect("more to come");
        drop(resp);
    }
    20
}

async fn payment_required(client: &reqwest::Client, base: &str, key: &str) -> usize {
    for _ in 0..30 {
        let (status, body) = call(
            client,
            format!("{base}/v1/chat/completions"),
            key,
            Some(json!({ "model": MODEL, "max_tokens": 200_000, "messages": [{ "role": "user", "content": "hi" }] })),
        )
        .await;
        assert_eq!(status, 402, "the request's fault goes to its sender: {body}");
    }
    30
}

/// Opens connections that send half a request head, and holds them until the server
/// closes them; returns how many it opened.
async fn slow_connections(addr: &str) -> usize {
    let mut held = Vec::with_capacity(SLOW_CONNECTIONS);
    for _ in 0..SLOW_CONNECTIONS {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
            .await
            .expect("half a head");
        held.push(stream);
    }
    let closed = futures_util::future::join_all(held.into_iter().map(|mut stream| async move {
        let mut buf = [0u8; 1024];
        tokio::time::timeout(
            HEADER_READ_TIMEOUT * 3,
            tokio::io::AsyncReadExt::read(&mut stream, &mut buf),
        )
        .await
        .is_ok()
    }))
    .await;
    let closed = closed.into_iter().filter(|c| *c).count();
    assert_eq!(
        closed, SLOW_CONNECTIONS,
        "the server closes slow heads after its timeout"
    );
    SLOW_CONNECTIONS
}

/// Tenant B's requests, four at a time, during the attack; returns their ids.
async fn tenant_b(client: &reqwest::Client, base: &str, key: &str) -> (Vec<String>, Duration) {
    let mut ids = Vec::new();
    let mut slowest = Duration::ZERO;
    for batch in 0..B_REQUESTS / 4 {
        let answers = futures_util::future::join_all((0..4).map(|j| {
            let id = format!("tenant-b-{batch}-{j}");
            let stream = j % 2 == 1;
            async move {
                let started = Instant::now();
                let resp = client
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(key)
                    .header("x-request-id", &id)
                    .json(&json!({ "model": MODEL, "stream": stream, "messages": [{ "role": "user", "content": "hello" }] }))
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{id}: no answer: {e}"));
                let status = resp.status();
                let body = resp.text().await.unwrap_or_else(|e| panic!("{id}: {e}"));
                (id, stream, status, body, started.elapsed())
            }
        }))
        .await;
        for (id, stream, status, body, took) in answers {
            assert_eq!(status, 200, "{id}: {body}");
            if stream {
                assert!(
                    body.contains("[DONE]") && body.contains(REPLY_PIECES[0]),
                    "{id}: {body}"
                );
            } else {
                let answer: Value = serde_json::from_str(&body).expect("JSON");
                assert_eq!(answer["choices"][0]["message"]["content"], REPLY_PIECES.concat());
            }
            slowest = slowest.max(took);
            ids.push(id);
        }
    }
    (ids, slowest)
}

/// A second master and its child key; returns (master id, key).
async fn tenant(client: &reqwest::Client, base: &str, name: &str) -> (i64, String) {
    let (status, master) = call(
        client,
        format!("{base}/admin/masters"),
        ADMIN,
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, 201, "{master}");
    let (status, key) = call(
        client,
        format!("{base}/admin/masters/{}/keys", master["id"]),
        ADMIN,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    (
        master["id"].as_i64().expect("id"),
        key["key"].as_str().expect("key").to_owned(),
    )
}

/// Waits until the data plane's snapshot knows `key` (`GET /v1/models`, which is not
/// logged, answers 200).
async fn wait_until_known(client: &reqwest::Client, base: &str, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = call(client, format!("{base}/v1/models"), key, None).await;
        if status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the key never became known: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn abuse(backend: Backend) {
    let dir = temp_dir();
    let (upstream, _) = start_mock().await;
    let mut env = vec![
        ("EZ_SERVER__LISTEN", "127.0.0.1:0".to_owned()),
        ("EZ_SERVER__DATA_DIR", dir.join("data").display().to_string()),
        ("EZ_AUTH__ADMIN_TOKEN", ADMIN.to_owned()),
        (
            "EZ_SERVER__HEADER_READ_TIMEOUT",
            format!("{}s", HEADER_READ_TIMEOUT.as_secs()),
        ),
        ("EZ_BALANCER__REPORT_INTERVAL", "200ms".to_owned()),
    ];
    let db = match backend {
        Backend::Real => {
            let db = TestDatabase::create(Backend::Real).await;
            env.push(("EZ_DATABASE__URL", db.url.clone()));
            env.push((
                "EZ_REDIS__URL",
                std::env::var("EZ_TEST_REDIS_URL").expect("EZ_TEST_REDIS_URL"),
            ));
            env.push((
                "EZ_REDIS__KEY_PREFIX",
                format!("test:abuse-{:016x}:", support::random()),
            ));
            Some(db)
        }
        Backend::Embedded => None,
    };
    let server = Proc::start("ezapi serve", "serve", &dir, &env).await;
    let base = server.url("");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    // `configure` binds the model to the mock with one credential and gives tenant B.
    let key_b = configure(&client, &server, &upstream).await;
    let (_, key_a) = tenant(&client, &base, "tenant-a").await;
    for key in [&key_a, &key_b] {
        wait_until_known(&client, &base, key).await;
    }
    let (_, whoami) = call(&client, format!("{base}/v1/whoami"), &key_b, None).await;
    let master_b = whoami["master_id"].as_i64().expect("master_id");
    let (_, credentials) = call(&client, format!("{base}/admin/api-keys"), ADMIN, None).await;
    let credential = credentials["items"][0]["id"]
        .as_i64()
        .expect("the shared credential");

    let attacker = {
        let (client, base, key_a, addr) = (client.clone(), base.clone(), key_a.clone(), server.addr.clone());
        tokio::spawn(async move {
            let slow = tokio::spawn(async move { slow_connections(&addr).await });
            let mut attacks = Attacks {
                poisoned_models: poisoned_models(&client, &base, &key_a).await,
                huge_headers: huge_headers(&client, &base, &key_a).await,
                abandoned_streams: abandoned_streams(&client, &base, &key_a).await,
                payment_required: payment_required(&client, &base, &key_a).await,
                slow_connections: 0,
            };
            attacks.slow_connections = slow.await.expect("slow connections");
            attacks
        })
    };
    let (b_ids, slowest) = tenant_b(&client, &base, &key_b).await;
    let attacks = attacker.await.expect("the attack ran");

    // Every one of B's records arrives, and every one of A's (slow heads name no key and
    // are not logged), A's stored cleaned.
    let wanted: HashSet<&str> = b_ids.iter().map(String::as_str).collect();
    let a_requests =
        attacks.poisoned_models + attacks.huge_headers + attacks.abandoned_streams + attacks.payment_required;
    let deadline = Instant::now() + Duration::from_secs(20);
    let items = loop {
        let (items, _) = all_logs(&client, &base).await.expect("logs");
        let arrived = items
            .iter()
            .filter(|r| {
                r["master_id"] == master_b && wanted.contains(r["request_id"].as_str().unwrap_or_default())
            })
            .count();
        let of_a = items.iter().filter(|r| r["master_id"] != master_b).count();
        if arrived == wanted.len() && of_a == a_requests {
            break items;
        }
        assert!(
            Instant::now() < deadline,
            "{arrived} of {} of B's records and {of_a} of A's {a_requests} arrived",
            wanted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let of_b = items.iter().filter(|r| r["master_id"] == master_b).count();
    let of_a: Vec<&Value> = items.iter().filter(|r| r["master_id"] != master_b).collect();
    let poisoned = of_a.iter().filter(|r| r["status_code"] == 404).count();
    for record in &of_a {
        let text = record.to_string();
        assert!(
            !text.contains("\\u0000") && !text.contains("\\r\\n"),
            "stored cleaned: {text}"
        );
        assert!(text.len() < 4_096, "stored bounded: {} bytes", text.len());
    }
    let banned = call(
        &client,
        format!("{base}/admin/api-keys/{credential}"),
        ADMIN,
        None,
    )
    .await
    .1;
    assert!(
        banned["ban_until"].is_null(),
        "the shared credential is not banned: {banned}"
    );
    eprintln!(
        "[{backend:?}] tenant A sent {attacks:?}; tenant B: {} requests, all 200 (slowest {slowest:?}), {} of its \
         records stored; tenant A's records stored: {} ({poisoned} with poisoned models); credential not banned",
        b_ids.len(),
        of_b,
        of_a.len(),
    );
    assert!(
        poisoned >= attacks.poisoned_models,
        "A's poisoned requests are logged, cleaned"
    );

    drop(server);
    drop(db);
    let _ = std::fs::remove_dir_all(dir);
}

async fn run(backend: Backend) {
    tokio::time::timeout(TEST_DEADLINE, abuse(backend))
        .await
        .expect("the abuse test did not finish in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenant_cannot_hurt_another_sqlite_memory() {
    run(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_tenant_cannot_hurt_another_postgres_redis() {
    if Backend::Real.available() && support::env_set("EZ_TEST_REDIS_URL") {
        run(Backend::Real).await;
    }
}
