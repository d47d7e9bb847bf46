//! Subscription credentials that stay alive under traffic: a Claude Code account behind a
//! mock that is both its token endpoint and its Messages API, and that accepts only the
//! access tokens it issued, until they expire. A 401 mid-traffic is met by one refresh
//! and a retry; a revoked refresh token disables the credential and routing moves on; a
//! token about to expire is refreshed by the scheduled job with no failed request; and
//! two control planes plus two balancers racing on 50 credentials refresh each once.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ez_balancer::{ProxySettings, Reporter};
use ez_contract::time::now_unix;
use ez_control_plane::testing::{Backend, test_bus};
use ez_control_plane::token_refresh::TokenRefresh;
use serde_json::{Value, json};
use support::{Gateway, both_backends};

const MODEL: &str = "claude-sonnet-4-5";

/// The provider side: tokens it accepts (→ Unix second they expire), token grants.
#[derive(Clone, Default)]
struct Provider {
    valid: Arc<Mutex<HashMap<String, i64>>>,
    grants: Arc<AtomicUsize>,
    /// Bearer tokens the Messages API saw, in order.
    seen: Arc<Mutex<Vec<String>>>,
    /// Tokens whose 5-hour window is used up (→ Unix second it resets).
    exhausted: Arc<Mutex<HashMap<String, i64>>>,
}

impl Provider {
    fn accept(&self, token: &str, expires_at: i64) {
        self.valid.lock().unwrap().insert(token.to_owned(), expires_at);
    }

    /// The provider stops accepting `token` (revoked, or expired early).
    fn reject(&self, token: &str) {
        self.valid.lock().unwrap().remove(token);
    }

    /// `token`'s 5-hour window is used up until `resets_at`.
    fn exhaust(&self, token: &str, resets_at: i64) {
        self.exhausted.lock().unwrap().insert(token.to_owned(), resets_at);
    }

    /// Notes the bearer token of a request; it, and whether it is valid and unexpired.
    fn present(&self, headers: &HeaderMap) -> (String, bool) {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned();
        self.seen.lock().unwrap().push(bearer.clone());
        let valid = self
            .valid
            .lock()
            .unwrap()
            .get(&bearer)
            .is_some_and(|expires| *expires > now_unix());
        (bearer, valid)
    }

    fn grants(&self) -> usize {
        self.grants.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Claude's token endpoint: `rt-good…` → a new access token valid for an hour (and a
/// rotated refresh token); `rt-revoked` → `invalid_grant`. Slow enough for races to meet.
async fn token(State(p): State<Provider>, Json(body): Json<Value>) -> Response {
    let n = p.grants.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(150)).await;
    match body["refresh_token"].as_str().unwrap_or_default() {
        rt if rt.starts_with("rt-good") => {
            let access = format!("at-new-{n}");
            p.accept(&access, now_unix() + 3600);
            Json(json!({ "token_type": "Bearer", "access_token": access, "refresh_token": format!("{rt}-r"), "expires_in": 3600 }))
                .into_response()
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": "Refresh token not found or invalid" })),
        )
            .into_response(),
    }
}

/// The Messages API: an answer for a valid, unexpired bearer token; Anthropic's 401
/// otherwise.
async fn messages(State(p): State<Provider>, headers: HeaderMap) -> Response {
    let (bearer, valid) = p.present(&headers);
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "type": "error", "error": { "type": "authentication_error", "message": "OAuth token has expired." } })),
        )
            .into_response();
    }
    let resets = p.exhausted.lock().unwrap().get(&bearer).copied();
    let (status, utilization, reset) = match resets {
        Some(at) if at > now_unix() => ("rejected", "1.0", at),
        _ => ("allowed", "0.25", now_unix() + 3600),
    };
    let unified = [
        ("anthropic-ratelimit-unified-status", status.to_owned()),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour".to_owned(),
        ),
        (
            "anthropic-ratelimit-unified-5h-utilization",
            utilization.to_owned(),
        ),
        ("anthropic-ratelimit-unified-5h-reset", reset.to_string()),
    ];
    if status == "rejected" {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            unified,
            Json(json!({ "type": "error", "error": { "type": "rate_limit_error", "message": "This request would exceed your account's rate limit." } })),
        )
            .into_response();
    }
    (
        unified,
        Json(json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": MODEL,
            "content": [{ "type": "text", "text": "hello" }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": 3, "output_tokens": 1 }
        })),
    )
        .into_response()
}

/// Google's token endpoint for a service account's JWT bearer grant (the signature is
/// checked by the control plane's tests): an access token for an hour.
async fn google_token(State(p): State<Provider>, body: String) -> Response {
    let n = p.grants.fetch_add(1, Ordering::SeqCst) + 1;
    assert!(
        body.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
        "{body}"
    );
    let access = format!("ya29.vertex-{n}");
    p.accept(&access, now_unix() + 3600);
    Json(json!({ "access_token": access, "expires_in": 3599, "token_type": "Bearer" })).into_response()
}

/// Vertex AI's `generateContent`: an answer for a valid bearer token, Google's 401
/// otherwise.
async fn vertex(State(p): State<Provider>, headers: HeaderMap) -> Response {
    let (_, valid) = p.present(&headers);
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": { "code": 401, "status": "UNAUTHENTICATED", "message": "Request had invalid authentication credentials." } })),
        )
            .into_response();
    }
    Json(json!({
        "candidates": [{ "content": { "role": "model", "parts": [{ "text": "hello" }] }, "finishReason": "STOP" }],
        "usageMetadata": { "promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4 }
    }))
    .into_response()
}

/// Starts the provider; returns its origin.
async fn provider() -> (String, Provider) {
    let p = Provider::default();
    let app = axum::Router::new()
        .route("/v1/oauth/token", axum::routing::post(token))
        .route("/google/token", axum::routing::post(google_token))
        .route("/v1/projects/{*rest}", axum::routing::post(vertex))
        .route("/v1/messages", axum::routing::post(messages))
        .with_state(p.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, p)
}

fn settings() -> ProxySettings {
    ProxySettings {
        first_byte_timeout: Duration::from_secs(5),
        ..ProxySettings::default()
    }
}

/// A gateway whose token refresh goes to `origin`, running its scheduled jobs when
/// `scheduled` (the refresh every second).
async fn gateway(backend: Backend, origin: &str) -> Gateway {
    let url = format!("{origin}/v1/oauth/token");
    let google = format!("{origin}/google/token");
    Gateway::start_configured(backend, settings(), test_bus(backend).await, move |config| {
        config.token_refresh.claude_code_token_url = url;
        config.token_refresh.google_token_url = google;
        config.token_refresh.interval = Duration::from_secs(1);
    })
    .await
}

/// A `claude-code` group on `origin` bound as `default.{MODEL}`, with one credential
/// per `(access token, refresh token, expires_at, weight)`; returns their ids.
async fn pool(gw: &Gateway, origin: &str, credentials: &[(&str, &str, i64, i64)]) -> Vec<i64> {
    let group = gw
        .admin(
            "/admin/provider-groups",
            json!({ "name": "max-pool", "type": "claude-code", "base_url": origin, "models": [MODEL], "headers_profile": "claude-code" }),
        )
        .await;
    let mut ids = Vec::new();
    for (access, refresh, expires_at, weight) in credentials {
        let key = gw
            .admin(
                "/admin/api-keys",
                json!({ "group_id": group["id"], "access_token": access, "refresh_token": refresh, "expires_at": expires_at, "weight": weight }),
            )
            .await;
        ids.push(key["id"].as_i64().unwrap());
    }
    gw.admin(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": MODEL, "group_id": group["id"] }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    ids
}

/// One Messages request through the balancer at `base`; its status.
async fn ask(client: &reqwest::Client, base: &str, key: &str) -> u16 {
    client
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .json(&json!({ "model": MODEL, "max_tokens": 16, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn tenant_key(gw: &Gateway) -> String {
    gw.add_tenant("acme", json!({}), json!({})).await.key
}

both_backends!(
    a_refused_token_is_refreshed_once_and_every_request_retried,
    a_revoked_refresh_token_disables_and_routing_moves_on,
    an_expiring_token_is_refreshed_while_requests_flow,
    an_exhausted_window_cools_the_credential_until_it_resets,
    a_vertex_service_account_works_from_its_first_request,
);

async fn a_refused_token_is_refreshed_once_and_every_request_retried(backend: Backend) {
    let (origin, provider) = provider().await;
    let gw = gateway(backend, &origin).await;
    provider.accept("at-0", now_unix() + 3600);
    let ids = pool(&gw, &origin, &[("at-0", "rt-good-a", now_unix() + 3600, 1)]).await;
    let key = tenant_key(&gw).await;
    for _ in 0..3 {
        assert_eq!(ask(&gw.client, &gw.base, &key).await, 200);
    }
    assert_eq!(provider.grants(), 0, "a valid token is not refreshed");

    // The provider drops the token (revoked early): 16 requests meet the 401 at once.
    provider.reject("at-0");
    let statuses = futures_util::future::join_all((0..16).map(|_| ask(&gw.client, &gw.base, &key))).await;
    assert_eq!(
        statuses,
        vec![200; 16],
        "every request retried with the new token"
    );
    assert_eq!(provider.grants(), 1, "one refresh for all of them");
    let seen = provider.seen();
    assert!(seen.iter().filter(|t| *t == "at-0").count() >= 1);
    assert_eq!(seen.last().map(String::as_str), Some("at-new-1"));

    let credential = gw.credential(ids[0]).await;
    assert_eq!(credential["status"], "active", "{credential}");
    assert_eq!(
        credential["ban_until"],
        Value::Null,
        "a renewed token is no ban: {credential}"
    );
    assert!(credential["expires_at"].as_i64().unwrap() > now_unix() + 3000);
    // Later requests go straight to the new token.
    let before = provider.seen().len();
    assert_eq!(ask(&gw.client, &gw.base, &key).await, 200);
    assert_eq!(provider.seen()[before..], ["at-new-1".to_owned()]);
    let logs = gw.wait_for_logs(20).await;
    assert!(
        logs.iter().all(|r| r["status_code"] == 200),
        "no failed request recorded: {logs:#?}"
    );
}

async fn a_revoked_refresh_token_disables_and_routing_moves_on(backend: Backend) {
    let (origin, provider) = provider().await;
    let gw = gateway(backend, &origin).await;
    provider.accept("at-b", now_unix() + 3600);
    let later = now_unix() + 3600;
    // The revoked account is the first pick almost surely.
    let ids = pool(
        &gw,
        &origin,
        &[
            ("at-a", "rt-revoked", later, 1000),
            ("at-b", "rt-good-b", later, 1),
        ],
    )
    .await;
    let key = tenant_key(&gw).await;
    for _ in 0..5 {
        assert_eq!(ask(&gw.client, &gw.base, &key).await, 200);
    }
    assert_eq!(provider.grants(), 1, "the revoked token is asked about once");
    let revoked = gw.credential(ids[0]).await;
    assert_eq!(revoked["status"], "auto_disabled", "{revoked}");
    assert!(
        revoked["ban_reason"].as_str().unwrap().contains("invalid_grant"),
        "{revoked}"
    );
    assert_eq!(gw.credential(ids[1]).await["status"], "active");
    // Routing left it: the last requests all went to the working account.
    let seen = provider.seen();
    assert_eq!(seen.iter().filter(|t| *t == "at-a").count(), 1, "{seen:?}");
    assert!(seen.iter().rev().take(4).all(|t| t == "at-b"), "{seen:?}");
}

async fn an_expiring_token_is_refreshed_while_requests_flow(backend: Backend) {
    let (origin, provider) = provider().await;
    let gw = gateway(backend, &origin).await;
    let expires = now_unix() + 30;
    provider.accept("at-0", expires);
    pool(&gw, &origin, &[("at-0", "rt-good-x", expires, 1)]).await;
    let key = tenant_key(&gw).await;
    // The balancer follows the bus as in production (refresh events).
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    gw.cache.spawn_updater(Duration::from_secs(30), stopped);
    let scheduler = gw.cp.scheduler().start();
    let started = Instant::now();
    let mut statuses = Vec::new();
    // Requests flow until the refreshed token has served a while.
    loop {
        statuses.push(ask(&gw.client, &gw.base, &key).await);
        let renewed = provider.seen().iter().filter(|t| t.starts_with("at-new")).count();
        if renewed >= 5 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no refresh used within 20 s ({} token grants)",
            provider.grants()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scheduler.shutdown().await;
    assert!(now_unix() < expires, "refreshed before the token expired");
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no failed request: {statuses:?}"
    );
    assert_eq!(provider.grants(), 1, "refreshed once, not every interval");
    let seen = provider.seen();
    let first_new = seen.iter().position(|t| t.starts_with("at-new")).unwrap();
    assert!(first_new > 0 && seen[..first_new].iter().all(|t| t == "at-0"));
    assert!(seen[first_new..].iter().all(|t| t == "at-new-1"), "{seen:?}");
}

/// Two control planes and two balancers on PostgreSQL + Redis, 50 credentials whose
/// tokens expire in 30 s and are already refused by the provider: both control planes'
/// scheduled refreshes and both balancers' 401s race; each credential is refreshed
/// exactly once and every request succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_control_planes_and_two_balancers_refresh_each_credential_once() {
    if !Backend::Real.available() {
        return;
    }
    tokio::time::timeout(Duration::from_secs(120), race(Backend::Real))
        .await
        .expect("test finished in time");
}

async fn race(backend: Backend) {
    let (origin, provider) = provider().await;
    let gw = gateway(backend, &origin).await;
    let url = format!("{origin}/v1/oauth/token");
    let second = gw
        .second_control_plane(|config| config.token_refresh.claude_code_token_url = url)
        .await;
    let expires = now_unix() + 30;
    let tokens: Vec<(String, String)> = (0..50)
        .map(|i| (format!("at-old-{i}"), format!("rt-good-{i}")))
        .collect();
    let credentials: Vec<(&str, &str, i64, i64)> = tokens
        .iter()
        .map(|(a, r)| (a.as_str(), r.as_str(), expires, 1))
        .collect();
    pool(&gw, &origin, &credentials).await;
    let key = tenant_key(&gw).await;
    // Balancer 2 reports to control plane 2.
    let reporter = Reporter::new(second.report_sink(), gw.cache.bus().clone(), 10_000);
    let other = gw.balancer(reporter).await;

    let config = |cp: &ez_control_plane::ControlPlane| {
        let mut c = ez_config::Config::defaults().token_refresh;
        c.claude_code_token_url = format!("{origin}/v1/oauth/token");
        TokenRefresh::new(cp.state.clone(), c)
    };
    let (job_a, job_b) = (config(&gw.cp), config(&second));
    let client = gw.client.clone();
    let bases = [gw.base.clone(), other];
    let traffic = futures_util::future::join_all((0..60).map(|i| {
        let (client, base, key) = (client.clone(), bases[i % 2].clone(), key.clone());
        async move { ask(&client, &base, &key).await }
    }));
    let (statuses, a, b) = tokio::join!(traffic, job_a.refresh_due(), job_b.refresh_due());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(statuses, vec![200; 60], "every request succeeded");
    assert_eq!(provider.grants(), 50, "one refresh per credential");
    // Nothing is due any more, on either control plane.
    assert!(job_a.refresh_due().await.unwrap().is_empty());
    assert!(job_b.refresh_due().await.unwrap().is_empty());
    assert!(a.len() + b.len() <= 100, "{a:?} {b:?}");
}

async fn an_exhausted_window_cools_the_credential_until_it_resets(backend: Backend) {
    let (origin, provider) = provider().await;
    let gw = gateway(backend, &origin).await;
    let later = now_unix() + 3600;
    provider.accept("at-full", later);
    provider.accept("at-free", later);
    // The exhausted account is the first pick almost surely.
    let ids = pool(
        &gw,
        &origin,
        &[
            ("at-full", "rt-good-f", later, 1000),
            ("at-free", "rt-good-g", later, 1),
        ],
    )
    .await;
    let key = tenant_key(&gw).await;
    // Its window resets in 10 s: room for what follows on a loaded machine.
    let resets = now_unix() + 10;
    provider.exhaust("at-full", resets);
    for _ in 0..6 {
        assert_eq!(ask(&gw.client, &gw.base, &key).await, 200);
    }
    let seen = provider.seen();
    assert_eq!(
        seen.iter().filter(|t| *t == "at-full").count(),
        1,
        "asked once, then skipped while cooling: {seen:?}"
    );
    // Reported: the control plane shows the window and syncs the cooling to every
    // balancer; no ban, no status change.
    gw.deliver_reports().await;
    let full = gw.credential(ids[0]).await;
    assert_eq!(full["status"], "active", "{full}");
    assert_eq!(full["ban_until"], Value::Null, "{full}");
    assert_eq!(full["quota"]["window"], "5h", "{full}");
    assert_eq!(full["quota"]["cooling_until"], resets, "{full}");
    assert_eq!(full["quota"]["used_percent"], 100.0, "{full}");
    let other = gw.second_balancer().await;
    let before = provider.seen().len();
    for _ in 0..3 {
        assert_eq!(ask(&gw.client, &other, &key).await, 200);
    }
    assert!(
        provider.seen()[before..].iter().all(|t| t == "at-free"),
        "another balancer skips it too"
    );

    // After the reset it comes back by itself.
    tokio::time::sleep(Duration::from_secs((resets - now_unix() + 1).max(0) as u64)).await;
    let before = provider.seen().len();
    for _ in 0..4 {
        assert_eq!(ask(&gw.client, &gw.base, &key).await, 200);
    }
    let after = &provider.seen()[before..];
    assert!(after.iter().any(|t| t == "at-full"), "used again: {after:?}");
    gw.deliver_reports().await;
    let full = gw.credential(ids[0]).await;
    assert_eq!(full["ban_until"], Value::Null, "{full}");
    assert!(
        (full["quota"]["used_percent"].as_f64().unwrap() - 25.0).abs() < 1e-9,
        "the newest window: {full}"
    );

    // Every account of the route cooling: the client is told when to come back.
    provider.exhaust("at-full", now_unix() + 30);
    provider.exhaust("at-free", now_unix() + 30);
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..2).map(|_| ask(&gw.client, &gw.base, &key))).await;
    assert!(statuses.iter().all(|s| *s == 429), "{statuses:?}");
    // Both asked once, then skipped: the next request reaches no upstream.
    let before = provider.seen().len();
    let response = gw
        .client
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &key)
        .json(&json!({ "model": MODEL, "max_tokens": 16, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_quota_cooling", "{body}");
    assert_eq!(provider.seen().len(), before, "no upstream was asked");
}

async fn a_vertex_service_account_works_from_its_first_request(backend: Backend) {
    let (origin, provider) = provider().await;
    let gw = gateway(backend, &origin).await;
    let key_file = include_str!("../../control-plane/tests/fixtures/credentials/vertex_service_account.json");
    gw.bind(
        "vertex",
        &origin,
        json!({ "google_project": "ez-test-project" }),
        json!({ "api_key": key_file }),
        "gemini-vertex",
        "gemini-2.5-pro",
    )
    .await;
    let key = tenant_key(&gw).await;
    let ask = || async {
        gw.client
            .post(format!("{}/v1beta/models/gemini-vertex:generateContent", gw.base))
            .header("x-goog-api-key", &key)
            .json(&json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] }))
            .send()
            .await
            .unwrap()
    };
    // No access token yet (the scheduled exchange has not run): the 401 gets one.
    let first = ask().await;
    assert_eq!(first.status(), 200);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["candidates"][0]["content"]["parts"][0]["text"], "hello");
    assert_eq!(provider.grants(), 1);
    assert_eq!(
        provider.seen(),
        ["", "ya29.vertex-1"],
        "the key file itself is never sent"
    );
    assert_eq!(ask().await.status(), 200);
    assert_eq!(provider.grants(), 1);
    assert_eq!(provider.seen().last().map(String::as_str), Some("ya29.vertex-1"));
}
