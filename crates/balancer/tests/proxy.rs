//! The data plane end to end: a control plane and the balancer in one process (as in
//! `ezapi serve`), configured through the admin API, forwarding to a mock upstream that
//! answers like OpenAI (JSON and SSE). Each test runs on SQLite + memory and on
//! PostgreSQL + Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use ez_balancer::proxy::ProxySettings;
use ez_balancer::{BalancerState, SnapshotCache};
use ez_config::Config;
use ez_control_plane::ControlPlane;
use ez_control_plane::store::Store;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::{Value, json};

const ADMIN: &str = "balancer-test-admin-token-0123";

/// A mock OpenAI: the credential's last characters decide its behaviour (`dead` → 500,
/// `slow` → no answer in time); `stream: true` gets SSE.
async fn mock_chat(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if auth.ends_with("dead") {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": { "message": "boom" } })),
        )
            .into_response();
    }
    if auth.ends_with("slow") {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let who = auth
        .chars()
        .rev()
        .take(4)
        .collect::<String>()
        .chars()
        .rev()
        .collect::<String>();
    if body["stream"] == json!(true) {
        let chunks = [
            format!(
                "data: {}\n\n",
                json!({ "object": "chat.completion.chunk", "model": model, "choices": [{ "delta": { "content": "hel" } }] })
            ),
            format!(
                "data: {}\n\n",
                json!({ "object": "chat.completion.chunk", "model": model, "choices": [{ "delta": { "content": "lo" } }] })
            ),
            "data: [DONE]\n\n".to_owned(),
        ];
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        return Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream))
            .unwrap();
    }
    Json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": format!("hello via {who}") }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 }
    }))
    .into_response()
}

async fn mock_embeddings(Json(body): Json<Value>) -> Json<Value> {
    Json(
        json!({ "object": "list", "model": body["model"], "data": [{ "object": "embedding", "index": 0, "embedding": [0.1, 0.2] }] }),
    )
}

async fn start_mock() -> String {
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(mock_chat))
        .route("/v1/embeddings", post(mock_embeddings));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

struct Gateway {
    base: String,
    upstream: String,
    client: reqwest::Client,
    cache: Arc<SnapshotCache>,
    _db: TestDatabase,
}

impl Gateway {
    async fn start(backend: Backend) -> Gateway {
        let db = TestDatabase::create(backend).await;
        let bus = test_bus(backend).await;
        let mut config = Config::defaults();
        config.auth.admin_token = Some(ez_contract::SecretToken::from_plaintext(ADMIN));
        let store = Store::connect(&db.url, db.kind.clone(), 5).await.unwrap();
        store.migrate().await.unwrap();
        let cp = ControlPlane::build(&config, store, bus.clone()).await.unwrap();
        let cache = SnapshotCache::new(bus);
        let settings = ProxySettings {
            first_byte_timeout: Duration::from_secs(2),
            ..ProxySettings::default()
        };
        let state = BalancerState::new(cache.clone(), settings).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = cp.router_with(ez_balancer::router(state));
        tokio::spawn(ez_control_plane::serve(listener, app, std::future::pending()));
        Gateway {
            base,
            upstream: start_mock().await,
            client: reqwest::Client::new(),
            cache,
            _db: db,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    async fn admin(&self, path: &str, body: Value) -> Value {
        let (status, body, text) = self.call(reqwest::Method::POST, path, ADMIN, Some(body)).await;
        assert!(status == 200 || status == 201, "{path}: {status} {text}");
        body
    }

    /// A custom group on the mock with `keys`, the route `public` (→ `upstream_model`),
    /// and a child key; returns the child key.
    async fn setup(&self, keys: &[&str], public: &str, upstream_model: &str) -> String {
        let setup = self
            .admin(
                "/admin/providers/custom",
                json!({ "name": "mock", "base_url": self.upstream, "api_keys": keys, "models": [upstream_model, "text-embedding-3-small"] }),
            )
            .await;
        let group = setup["group"]["id"].as_i64().unwrap();
        self.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": public, "group_id": group, "selector_value": upstream_model }),
        )
        .await;
        self.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": "text-embedding-3-small", "group_id": group }),
        )
        .await;
        let master = self.admin("/admin/masters", json!({ "name": "acme" })).await;
        let key = self
            .call(
                reqwest::Method::POST,
                "/v1/tokens",
                master["master_key"].as_str().unwrap(),
                Some(json!({})),
            )
            .await
            .1;
        self.cache.refresh().await.unwrap();
        key["key"].as_str().unwrap().to_owned()
    }

    /// Another balancer process on the same bus (its own snapshot cache and port).
    async fn second_balancer(&self) -> String {
        let cache = SnapshotCache::new(self.cache.bus().clone());
        cache.refresh().await.unwrap();
        let state = BalancerState::new(cache, ProxySettings::default()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(ez_control_plane::serve(
            listener,
            ez_balancer::router(state),
            std::future::pending(),
        ));
        base
    }

    async fn chat(&self, key: &str, model: &str, stream: bool) -> (u16, Value, String) {
        let body =
            json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }], "stream": stream });
        self.call(reqwest::Method::POST, "/v1/chat/completions", key, Some(body))
            .await
    }
}

macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use ez_control_plane::testing::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite_memory() {
                    tokio::time::timeout(std::time::Duration::from_secs(120), super::$name(Backend::Embedded))
                        .await
                        .expect("test finished in time");
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_redis() {
                    if Backend::Real.available() {
                        tokio::time::timeout(std::time::Duration::from_secs(120), super::$name(Backend::Real))
                            .await
                            .expect("test finished in time");
                    }
                }
            }
        )+
    };
}

both_backends!(
    chat_completions_reach_the_bound_upstream_model,
    streams_pass_through_chunk_by_chunk,
    failing_credentials_fail_over_before_the_first_byte,
    keys_and_models_are_checked_from_the_snapshot,
    model_listing_shows_only_reachable_routes,
    the_snapshot_follows_refresh_events,
    rate_limits_hold_across_two_balancers,
);

async fn chat_completions_reach_the_bound_upstream_model(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    let (status, body, text) = gw.chat(&key, "fast", false).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        body["model"], "gpt-4o-mini",
        "the public name is rewritten to the upstream model"
    );
    assert_eq!(
        body["choices"][0]["message"]["content"], "hello via ood1",
        "the credential's key was sent"
    );
    assert_eq!(body["usage"]["total_tokens"], 5);
    let (status, body, _) = gw
        .call(
            reqwest::Method::POST,
            "/v1/embeddings",
            &key,
            Some(json!({ "model": "text-embedding-3-small", "input": "x" })),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["embedding"], json!([0.1, 0.2]));
}

async fn streams_pass_through_chunk_by_chunk(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&key)
        .json(&json!({ "model": "fast", "messages": [], "stream": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(events[0].contains("\"hel\"") && events[1].contains("\"lo\""));
    assert_eq!(events[2], "data: [DONE]");
}

async fn failing_credentials_fail_over_before_the_first_byte(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw
        .setup(
            &["sk-upstream-dead", "sk-upstream-slow", "sk-upstream-good"],
            "fast",
            "gpt-4o-mini",
        )
        .await;
    for _ in 0..6 {
        let started = Instant::now();
        let (status, body, text) = gw.chat(&key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
        assert!(started.elapsed() < Duration::from_secs(8));
    }

    // When every credential fails, the client gets a clear upstream error.
    let only_dead = Gateway::start(backend).await;
    let key = only_dead
        .setup(&["sk-upstream-dead"], "fast", "gpt-4o-mini")
        .await;
    let (status, body, _) = only_dead.chat(&key, "fast", false).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_error");
    assert_eq!(body["error"]["type"], "upstream_error");
}

async fn keys_and_models_are_checked_from_the_snapshot(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    let (status, body, _) = gw.chat(&key, "no-such-model", false).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (status, body, _) = gw
        .chat("sk-ez-0000000000000000000000000000000000000000", "fast", false)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("key_not_found"))
    );
    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .json(&json!({ "model": "fast" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, body, _) = gw
        .call(
            reqwest::Method::POST,
            "/v1/chat/completions",
            &key,
            Some(json!({ "messages": [] })),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    // The key also works as x-api-key (Anthropic clients).
    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .header("x-api-key", &key)
        .json(&json!({ "model": "fast", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Revoking every key of the master takes effect once the snapshot has it.
    let masters = gw
        .call(reqwest::Method::GET, "/admin/masters", ADMIN, None)
        .await
        .1;
    let master_id = masters["items"][0]["id"].as_i64().unwrap();
    gw.admin(&format!("/admin/masters/{master_id}/revoke-keys"), json!({}))
        .await;
    gw.cache.refresh().await.unwrap();
    let (status, body, _) = gw.chat(&key, "fast", false).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("key_revoked"))
    );
}

async fn model_listing_shows_only_reachable_routes(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    gw.admin("/admin/namespaces", json!({ "name": "hidden" })).await;
    let groups = gw
        .call(reqwest::Method::GET, "/admin/provider-groups", ADMIN, None)
        .await
        .1;
    let group = groups["items"][0]["id"].as_i64().unwrap();
    gw.admin("/admin/bindings", json!({ "namespace": "hidden", "public_model": "secret-model", "group_id": group, "selector_value": "gpt-4o-mini" }))
        .await;
    gw.cache.refresh().await.unwrap();
    let (status, body, _) = gw.call(reqwest::Method::GET, "/v1/models", &key, None).await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["fast", "text-embedding-3-small"],
        "another namespace's route is not listed"
    );
}

async fn the_snapshot_follows_refresh_events(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let updater = gw.cache.spawn_updater(Duration::from_secs(30), stopped);
    let groups = gw
        .call(reqwest::Method::GET, "/admin/provider-groups", ADMIN, None)
        .await
        .1;
    let group = groups["items"][0]["id"].as_i64().unwrap();
    // Let the updater subscribe, then change the configuration through the admin API.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.admin("/admin/bindings", json!({ "namespace": "default", "public_model": "late", "group_id": group, "selector_value": "gpt-4o-mini" }))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, _) = gw.chat(&key, "late", false).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new route never reached the balancer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    updater.await.unwrap();
}

/// Sends `n` chat requests alternating between two balancers; returns the 429 responses'
/// (Retry-After, error code) and how many succeeded.
async fn alternate(gw: &Gateway, other: &str, key: &str, n: usize) -> (Vec<(String, String)>, usize, usize) {
    let started = Instant::now();
    let mut limited = Vec::new();
    let mut ok = 0;
    for i in 0..n {
        let base = if i % 2 == 0 { gw.base.as_str() } else { other };
        let resp = gw
            .client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({ "model": "fast", "messages": [] }))
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                let retry = resp
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let body: Value = resp.json().await.unwrap();
                limited.push((
                    retry,
                    body["error"]["code"].as_str().unwrap_or_default().to_owned(),
                ));
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // How many one-second windows the requests can have touched.
    let windows = started.elapsed().as_secs() as usize + 2;
    (limited, ok, windows)
}

async fn rate_limits_hold_across_two_balancers(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    let masters = gw
        .call(reqwest::Method::GET, "/admin/masters", ADMIN, None)
        .await
        .1;
    let master_id = masters["items"][0]["id"].as_i64().unwrap();
    let keys = gw
        .call(
            reqwest::Method::GET,
            &format!("/admin/masters/{master_id}/keys"),
            ADMIN,
            None,
        )
        .await
        .1;
    let key_id = keys["items"][0]["id"].as_i64().unwrap();

    // Key limit: 2 per second, shared by two balancers. Eight requests span at most two
    // one-second windows, so at most four pass.
    let (status, _, text) = gw
        .call(
            reqwest::Method::PUT,
            &format!("/admin/keys/{key_id}"),
            ADMIN,
            Some(json!({ "qps": 2 })),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    gw.cache.refresh().await.unwrap();
    let other = gw.second_balancer().await;
    let (limited, ok, windows) = alternate(&gw, &other, &key, 8).await;
    assert!(
        ok >= 2 && ok <= 2 * windows,
        "2 per window pass, {ok} did in {windows} windows"
    );
    assert!(
        windows > 4 || !limited.is_empty(),
        "the limit holds across balancers"
    );
    assert_eq!(limited.len(), 8 - ok);
    assert!(
        limited
            .iter()
            .all(|(retry, code)| retry == "1" && code == "rate_limited"),
        "{limited:?}"
    );

    // Master limit: 1 per second across all its keys.
    gw.call(
        reqwest::Method::PUT,
        &format!("/admin/keys/{key_id}"),
        ADMIN,
        Some(json!({ "qps": null })),
    )
    .await;
    let (status, _, _) = gw
        .call(
            reqwest::Method::PUT,
            &format!("/admin/masters/{master_id}"),
            ADMIN,
            Some(json!({ "global_qps": 1 })),
        )
        .await;
    assert_eq!(status, 200);
    gw.cache.refresh().await.unwrap();
    let other = gw.second_balancer().await;
    let (limited, ok, windows) = alternate(&gw, &other, &key, 6).await;
    assert!(
        ok >= 1 && ok <= windows,
        "one per second passes, {ok} did in {windows} windows"
    );
    assert!(windows > 6 || !limited.is_empty());
    assert_eq!(limited.len(), 6 - ok);
}
