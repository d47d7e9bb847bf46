//! The fault matrix of the data plane: every way a request can fail, upstream or at the
//! door, proven end to end with the status, the `error.code` of the OpenAI error shape,
//! and the side effect (log record, ban, counters, what the upstream saw). Each test
//! runs on SQLite + memory and on PostgreSQL + Redis.
//!
//! Credentials pick the mock's behaviour by their suffix (see `support::misbehave`);
//! weights of 100 (or more) to 1 make the faulty credential the balancer's first pick
//! almost surely, so a failover really happens.

mod support;

use std::time::{Duration, Instant};

use ez_balancer::{ProxySettings, Reporter, SnapshotCache};
use ez_contract::time::now_unix;
use ez_control_plane::testing::Backend;
use serde_json::{Value, json};
use support::{Gateway, ResetUpstream, SilentUpstream, Tenant, both_backends, sse_events};

const FIRST_BYTE: Duration = Duration::from_millis(700);
const IDLE: Duration = Duration::from_millis(700);
const ATTEMPTS: usize = 3;
const BAN: Duration = Duration::from_secs(600);

fn settings() -> ProxySettings {
    ProxySettings {
        max_attempts: ATTEMPTS,
        connect_timeout: Duration::from_secs(1),
        first_byte_timeout: FIRST_BYTE,
        idle_timeout: IDLE,
        total_timeout: Duration::from_secs(30),
        ban_duration: BAN,
        ..ProxySettings::default()
    }
}

async fn start(backend: Backend) -> Gateway {
    Gateway::start_with(backend, settings()).await
}

/// A master and a key with default access.
async fn tenant(gw: &Gateway) -> Tenant {
    gw.add_tenant("acme", json!({}), json!({})).await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// Asserts the OpenAI error shape and returns `(status, code)` for a compact compare.
fn error_of(status: u16, body: &Value) -> (u16, &str) {
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty())
            && error["type"].is_string()
            && error.get("param").is_some(),
        "not the OpenAI error shape: {body}"
    );
    (status, code(body))
}

/// The one record whose `status_code` is `status`.
fn record_with_status(logs: &[Value], status: u16) -> &Value {
    let found: Vec<&Value> = logs.iter().filter(|l| l["status_code"] == status).collect();
    assert_eq!(found.len(), 1, "one record with status {status}: {logs:#?}");
    found[0]
}

fn tokens(log: &Value) -> (i64, i64) {
    (
        log["input_tokens"].as_i64().unwrap(),
        log["output_tokens"].as_i64().unwrap(),
    )
}

/// Asserts the admin API and a fresh balancer's snapshot (the bus alone) both show no
/// ban on `id`.
async fn assert_not_banned(gw: &Gateway, id: i64) {
    let credential = gw.credential(id).await;
    assert!(credential["ban_until"].is_null(), "{credential}");
    let fresh = SnapshotCache::new(gw.cache.bus().clone());
    fresh.refresh().await.unwrap();
    assert_eq!(fresh.snapshot().providers[&id].ban_until, 0);
}

/// Asserts `id` is banned for the configured duration with a reason containing
/// `reason`: persisted (admin API) and synced to the bus (a fresh balancer's snapshot).
async fn assert_banned(gw: &Gateway, id: i64, reason: &str) {
    let now = now_unix();
    let ban = i64::try_from(BAN.as_secs()).unwrap();
    let credential = gw.credential(id).await;
    let until = credential["ban_until"].as_i64().unwrap_or(0);
    assert!(
        until > now + ban - 30 && until <= now + ban,
        "banned for the configured duration: {credential}"
    );
    assert!(
        credential["ban_reason"].as_str().unwrap().contains(reason),
        "{credential}"
    );
    let fresh = SnapshotCache::new(gw.cache.bus().clone());
    fresh.refresh().await.unwrap();
    let snapshot = fresh.snapshot();
    assert_eq!(snapshot.providers[&id].ban_until, until);
    assert!(snapshot.providers[&id].ban_reason.contains(reason));
}

both_backends!(
    upstream_500_fails_over_and_alone_is_a_502,
    upstream_429_fails_over_without_a_ban_and_alone_is_a_429,
    upstream_timeout_fails_over_and_alone_is_a_504_in_time,
    connection_reset_fails_over_and_alone_is_a_502,
    upstream_401_bans_the_credential_everywhere,
    upstream_401_without_auto_ban_fails_over_without_a_ban,
    exhausted_quota_bans_the_credential,
    stream_cut_after_the_first_byte_ends_with_an_error_event,
    stream_gone_silent_ends_with_an_idle_timeout_event,
    client_disconnect_mid_stream_is_logged_and_cancels_the_upstream,
    a_banned_credential_is_skipped,
    a_suspended_master_locks_its_keys_out,
    revoked_and_disabled_keys_are_refused,
    an_expired_key_is_refused,
    ip_rules_are_enforced,
    models_outside_the_keys_namespaces_are_not_reachable,
    rate_limit_refusals_are_logged_and_counted_on_the_bus,
    rate_limit_refusals_add_up_across_balancers_reporting_apart,
    messages_reach_anthropic_providers_with_their_auth,
    embeddings_for_an_anthropic_only_model_are_unsupported,
    azure_groups_use_deployment_urls_or_the_v1_api,
    responses_pass_through_to_openai_groups,
    a_429_whose_body_never_ends_fails_over_in_time,
    a_closed_port_is_named_in_the_log_record_but_not_to_the_client,
    an_unresolvable_host_is_a_dns_failure,
    a_connect_timeout_is_told_from_a_slow_answer,
);

async fn upstream_500_fails_over_and_alone_is_a_502(backend: Backend) {
    let gw = start(backend).await;
    let mixed = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-dead", 100), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let broken = gw
        .add_route("broken", &gw.upstream, &[("sk-upstream-2-dead", 1)], "broken", 1)
        .await;
    let t = tenant(&gw).await;
    for _ in 0..3 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert!(gw.mock.hits("sk-upstream-dead") >= 1, "the 500 was tried first");

    let (status, body, _) = gw.chat(&t.key, "broken", false).await;
    assert_eq!(error_of(status, &body), (502, "upstream_error"));
    assert_eq!(body["error"]["type"], "upstream_error");

    let logs = gw.wait_for_logs(4).await;
    assert_eq!(logs.len(), 4);
    let failed = record_with_status(&logs, 502);
    assert_eq!(failed["error_code"], "upstream_error");
    assert_eq!(failed["api_key_id"], broken.credentials[0]);
    assert_eq!(failed["key_id"], t.key_id);
    assert_eq!(tokens(failed), (0, 0));
    for ok in logs.iter().filter(|l| l["status_code"] == 200) {
        assert_eq!(
            ok["api_key_id"], mixed.credentials[1],
            "the credential that answered"
        );
        assert!(ok["error_code"].is_null(), "{ok}");
        assert_eq!(tokens(ok), (3, 2));
    }
    // A server error says nothing about the credential: no ban.
    assert_not_banned(&gw, mixed.credentials[0]).await;
    assert_not_banned(&gw, broken.credentials[0]).await;
}

async fn upstream_429_fails_over_without_a_ban_and_alone_is_a_429(backend: Backend) {
    let gw = start(backend).await;
    let mixed = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-busy", 100), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let throttled = gw
        .add_route(
            "throttled",
            &gw.upstream,
            &[("sk-upstream-2-busy", 1)],
            "throttled",
            1,
        )
        .await;
    let t = tenant(&gw).await;
    for _ in 0..5 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert!(
        gw.mock.hits("sk-upstream-busy") >= 2,
        "a throttled credential is not banned, not even locally: tried again"
    );

    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&t.key)
        .json(&json!({ "model": "throttled", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["retry-after"],
        "20",
        "the upstream's Retry-After reaches the client"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_of(429, &body), (429, "upstream_rate_limited"));
    assert_eq!(body["error"]["type"], "rate_limit_error");

    let logs = gw.wait_for_logs(6).await;
    let limited = record_with_status(&logs, 429);
    assert_eq!(limited["error_code"], "upstream_rate_limited");
    assert_eq!(limited["api_key_id"], throttled.credentials[0]);
    assert_not_banned(&gw, mixed.credentials[0]).await;
    assert_not_banned(&gw, throttled.credentials[0]).await;
}

async fn upstream_timeout_fails_over_and_alone_is_a_504_in_time(backend: Backend) {
    let gw = start(backend).await;
    let mixed = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-slow", 100), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let stuck = gw
        .add_route(
            "stuck",
            &gw.upstream,
            &[
                ("sk-upstream-1-slow", 1),
                ("sk-upstream-2-slow", 1),
                ("sk-upstream-3-slow", 1),
            ],
            "stuck",
            1,
        )
        .await;
    let t = tenant(&gw).await;
    for _ in 0..2 {
        let started = Instant::now();
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
        assert!(started.elapsed() < FIRST_BYTE + Duration::from_secs(2));
    }
    assert!(gw.mock.hits("sk-upstream-slow") >= 1);

    // Every attempt waits the first-byte deadline, no longer; each on another credential.
    let started = Instant::now();
    let (status, body, _) = gw.chat(&t.key, "stuck", false).await;
    let elapsed = started.elapsed();
    assert_eq!(error_of(status, &body), (504, "upstream_timeout"));
    let budget = FIRST_BYTE * ATTEMPTS as u32;
    assert!(
        elapsed >= budget && elapsed < budget + Duration::from_millis(1500),
        "{ATTEMPTS} attempts of {FIRST_BYTE:?} took {elapsed:?}"
    );
    for credential in ["sk-upstream-1-slow", "sk-upstream-2-slow", "sk-upstream-3-slow"] {
        assert_eq!(gw.mock.hits(credential), 1, "{credential}");
    }

    let logs = gw.wait_for_logs(3).await;
    let timed_out = record_with_status(&logs, 504);
    assert_eq!(timed_out["error_code"], "upstream_timeout");
    assert!(
        stuck
            .credentials
            .contains(&timed_out["api_key_id"].as_i64().unwrap())
    );
    assert!(timed_out["latency_ms"].as_i64().unwrap() >= budget.as_millis() as i64);
    let upstream_host = gw.upstream.trim_start_matches("http://").trim_end_matches("/v1");
    assert_eq!(
        timed_out["error_message"].as_str(),
        Some(format!("the upstream did not answer in time; no response in time at {upstream_host}").as_str()),
        "{timed_out}"
    );
    assert_not_banned(&gw, mixed.credentials[0]).await;
}

async fn connection_reset_fails_over_and_alone_is_a_502(backend: Backend) {
    let gw = start(backend).await;
    let reset = ResetUpstream::start().await;
    gw.add_route("reset", &reset.base, &[("sk-upstream-rst1", 1)], "fast", 100)
        .await;
    let good = gw
        .add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let alone = gw
        .add_route("reset-only", &reset.base, &[("sk-upstream-rst2", 1)], "broken", 1)
        .await;
    let t = tenant(&gw).await;
    for _ in 0..3 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert!(reset.accepted() >= 1, "the resetting upstream was tried first");

    let before = reset.accepted();
    let (status, body, _) = gw.chat(&t.key, "broken", false).await;
    assert_eq!(error_of(status, &body), (502, "upstream_unreachable"));
    assert!(reset.accepted() > before);

    let logs = gw.wait_for_logs(4).await;
    let failed = record_with_status(&logs, 502);
    assert_eq!(failed["error_code"], "upstream_unreachable");
    assert_eq!(failed["api_key_id"], alone.credentials[0]);
    assert!(
        logs.iter()
            .filter(|l| l["status_code"] == 200)
            .all(|l| l["api_key_id"] == good.credentials[0])
    );
}

async fn upstream_401_bans_the_credential_everywhere(backend: Backend) {
    let gw = start(backend).await;
    let mixed = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-deny", 100), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let locked = gw
        .add_route("locked", &gw.upstream, &[("sk-upstream-2-deny", 1)], "locked", 1)
        .await;
    let t = tenant(&gw).await;
    for _ in 0..5 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert_eq!(
        gw.mock.hits("sk-upstream-deny"),
        1,
        "banned on this balancer at once"
    );
    let (status, body, _) = gw.chat(&t.key, "locked", false).await;
    assert_eq!(error_of(status, &body), (502, "upstream_auth_failed"));

    let logs = gw.wait_for_logs(6).await;
    let failed = record_with_status(&logs, 502);
    assert_eq!(failed["error_code"], "upstream_auth_failed");
    assert_eq!(failed["api_key_id"], locked.credentials[0]);
    assert!(
        logs.iter()
            .filter(|l| l["status_code"] == 200)
            .all(|l| l["api_key_id"] == mixed.credentials[1])
    );
    // wait_for_logs delivered the bans too: persisted and on the bus.
    assert_banned(&gw, mixed.credentials[0], "upstream 401").await;
    assert_banned(&gw, locked.credentials[0], "upstream 401").await;

    // Another balancer, knowing only the bus, never tries the banned credential.
    let second = gw.second_balancer().await;
    for _ in 0..20 {
        let (status, body) = gw.chat_at(&second, &t.key, "fast").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert_eq!(gw.mock.hits("sk-upstream-deny"), 1);
    let (status, body) = gw.chat_at(&second, &t.key, "locked").await;
    assert_eq!(
        error_of(status, &body),
        (503, "no_upstream"),
        "every credential banned"
    );
    assert_eq!(gw.mock.hits("sk-upstream-2-deny"), 1);
}

async fn upstream_401_without_auto_ban_fails_over_without_a_ban(backend: Backend) {
    let gw = start(backend).await;
    let mixed = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-deny", 100), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let locked = gw
        .add_route("locked", &gw.upstream, &[("sk-upstream-2-deny", 1)], "locked", 1)
        .await;
    for id in [mixed.credentials[0], locked.credentials[0]] {
        let updated = gw
            .put(&format!("/admin/api-keys/{id}"), json!({ "auto_ban": false }))
            .await;
        assert_eq!(updated["auto_ban"], false);
    }
    gw.cache.refresh().await.unwrap();
    let t = tenant(&gw).await;
    for _ in 0..5 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert!(
        gw.mock.hits("sk-upstream-deny") >= 2,
        "not banned locally either: tried again"
    );
    for _ in 0..2 {
        let (status, body, _) = gw.chat(&t.key, "locked", false).await;
        assert_eq!(error_of(status, &body), (502, "upstream_auth_failed"));
    }
    assert_eq!(gw.mock.hits("sk-upstream-2-deny"), 2);

    let logs = gw.wait_for_logs(7).await;
    assert_eq!(
        logs.iter()
            .filter(|l| l["error_code"] == "upstream_auth_failed")
            .count(),
        2
    );
    assert_not_banned(&gw, mixed.credentials[0]).await;
    assert_not_banned(&gw, locked.credentials[0]).await;
}

async fn exhausted_quota_bans_the_credential(backend: Backend) {
    let gw = start(backend).await;
    let mixed = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-quota", 100), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let empty = gw
        .add_route("empty", &gw.upstream, &[("sk-upstream-2-quota", 1)], "empty", 1)
        .await;
    let t = tenant(&gw).await;
    for _ in 0..5 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert_eq!(gw.mock.hits("sk-upstream-quota"), 1);
    let (status, body, _) = gw.chat(&t.key, "empty", false).await;
    assert_eq!(error_of(status, &body), (502, "upstream_quota_exhausted"));

    let logs = gw.wait_for_logs(6).await;
    assert_eq!(
        record_with_status(&logs, 502)["error_code"],
        "upstream_quota_exhausted"
    );
    assert_banned(&gw, mixed.credentials[0], "quota").await;
    assert_banned(&gw, empty.credentials[0], "quota").await;
}

async fn stream_cut_after_the_first_byte_ends_with_an_error_event(backend: Backend) {
    let gw = start(backend).await;
    // The good credential is there to show there is no failover after the first byte.
    let route = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-cut", 1_000_000), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let t = tenant(&gw).await;
    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&t.key)
        .json(&json!({ "model": "fast", "messages": [], "stream": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp
        .text()
        .await
        .expect("the client's stream ends cleanly, with an error event");
    let events = sse_events(&text);
    assert_eq!(events.len(), 2, "{text}");
    assert!(
        events[0].starts_with("data: ") && events[0].contains("\"hel\""),
        "{text}"
    );
    let error = events[1]
        .strip_prefix("event: error\ndata: ")
        .unwrap_or_else(|| panic!("an error event: {text}"));
    let error: Value = serde_json::from_str(error).unwrap();
    assert_eq!(error_of(200, &error), (200, "upstream_stream_error"));
    assert!(!text.contains("[DONE]"), "no silent success: {text}");
    assert_eq!(
        gw.mock.hits("sk-upstream-good"),
        0,
        "no failover after the first byte"
    );

    let logs = gw.wait_for_logs(1).await;
    let log = &logs[0];
    assert_eq!(log["status_code"], 200, "the status the client got");
    assert_eq!(log["error_code"], "upstream_stream_error");
    assert_eq!(log["api_key_id"], route.credentials[0]);
    assert_eq!(log["stream"], true);
    assert!(log["first_token_ms"].as_i64().is_some(), "{log}");
}

async fn stream_gone_silent_ends_with_an_idle_timeout_event(backend: Backend) {
    let gw = start(backend).await;
    let route = gw
        .add_route("silent", &gw.upstream, &[("sk-upstream-stal", 1)], "fast", 1)
        .await;
    let t = tenant(&gw).await;
    let started = Instant::now();
    let (status, _, text) = gw.chat(&t.key, "fast", true).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    let events = sse_events(&text);
    assert_eq!(events.len(), 2, "{text}");
    assert!(events[0].contains("\"hel\""), "{text}");
    let error: Value = serde_json::from_str(events[1].strip_prefix("event: error\ndata: ").unwrap()).unwrap();
    assert_eq!(code(&error), "upstream_idle_timeout");
    assert!(!text.contains("[DONE]"));
    assert!(
        elapsed >= IDLE && elapsed < IDLE + Duration::from_secs(2),
        "ended by the idle deadline: {elapsed:?}"
    );

    let logs = gw.wait_for_logs(1).await;
    assert_eq!(logs[0]["error_code"], "upstream_idle_timeout");
    assert_eq!(logs[0]["api_key_id"], route.credentials[0]);
}

async fn client_disconnect_mid_stream_is_logged_and_cancels_the_upstream(backend: Backend) {
    let gw = start(backend).await;
    let route = gw
        .add_route("drip", &gw.upstream, &[("sk-upstream-drip", 1)], "fast", 1)
        .await;
    let t = tenant(&gw).await;
    let mut resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&t.key)
        .json(&json!({ "model": "fast", "messages": [], "stream": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).contains("\"hel\""));
    drop(resp);

    let logs = gw.wait_for_logs(1).await;
    let log = &logs[0];
    assert_eq!(log["status_code"], 499, "{log}");
    assert_eq!(log["error_code"], "client_closed");
    assert_eq!(log["api_key_id"], route.credentials[0]);
    assert_eq!(log["stream"], true);
    // The balancer hung up on the upstream too.
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.mock.cancelled() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream answer was never cancelled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_banned_credential_is_skipped(backend: Backend) {
    let gw = start(backend).await;
    let route = gw
        .add_route(
            "mixed",
            &gw.upstream,
            &[("sk-upstream-held", 1000), ("sk-upstream-good", 1)],
            "fast",
            1,
        )
        .await;
    let (held, good) = (route.credentials[0], route.credentials[1]);
    let until = now_unix() + 600;
    let banned = gw
        .put(
            &format!("/admin/api-keys/{held}"),
            json!({ "ban_until": until, "ban_reason": "manual" }),
        )
        .await;
    assert_eq!(banned["ban_until"], until);
    gw.cache.refresh().await.unwrap();
    let t = tenant(&gw).await;
    for _ in 0..20 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert_eq!(gw.mock.hits("sk-upstream-held"), 0, "never reached");
    let logs = gw.wait_for_logs(20).await;
    assert_eq!(logs.len(), 20);
    assert!(logs.iter().all(|l| l["api_key_id"] == good), "{logs:#?}");

    // Lifting the ban puts it back in rotation.
    gw.put(&format!("/admin/api-keys/{held}"), json!({ "ban_until": null }))
        .await;
    gw.cache.refresh().await.unwrap();
    for _ in 0..3 {
        let (status, _, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
    }
    assert!(gw.mock.hits("sk-upstream-held") >= 1);
}

/// Asserts `key` is refused with 401 `code` by the balancer and by whoami alike, and that
/// nothing reached the upstream.
async fn assert_refused(gw: &Gateway, key: &str, code: &str) {
    let before = gw.mock.requests().len();
    let (status, body, _) = gw.chat(key, "fast", false).await;
    assert_eq!(error_of(status, &body), (401, code));
    assert_eq!(body["error"]["type"], "authentication_error");
    let (status, body) = gw.whoami(key).await;
    assert_eq!(
        (status, self::code(&body)),
        (401, code),
        "whoami agrees with the balancer"
    );
    assert_eq!(gw.mock.requests().len(), before, "nothing forwarded");
}

/// Requests refused at the door are not logged (there is no request to account yet):
/// only the `ok` successful ones are.
async fn assert_only_successes_logged(gw: &Gateway, ok: usize) {
    let logs = gw.wait_for_logs(ok).await;
    assert_eq!(logs.len(), ok, "{logs:#?}");
    assert!(logs.iter().all(|l| l["status_code"] == 200));
}

async fn a_suspended_master_locks_its_keys_out(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let t = tenant(&gw).await;
    let (status, _, text) = gw.chat(&t.key, "fast", false).await;
    assert_eq!(status, 200, "{text}");

    let master = gw
        .put(
            &format!("/admin/masters/{}", t.master_id),
            json!({ "status": "suspended" }),
        )
        .await;
    assert_eq!(master["status"], "suspended");
    gw.cache.refresh().await.unwrap();
    assert_refused(&gw, &t.key, "master_suspended").await;

    gw.put(
        &format!("/admin/masters/{}", t.master_id),
        json!({ "status": "active" }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    let (status, _, text) = gw.chat(&t.key, "fast", false).await;
    assert_eq!(status, 200, "reactivated: {text}");
    assert_only_successes_logged(&gw, 2).await;
}

async fn revoked_and_disabled_keys_are_refused(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let t = tenant(&gw).await;
    let (other_id, other) = gw.add_key(&t, json!({})).await;
    for key in [&t.key, &other] {
        let (status, _, text) = gw.chat(key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
    }

    let revoked = gw.delete(&format!("/admin/keys/{}", t.key_id)).await;
    assert_eq!(revoked["status"], "revoked");
    let disabled = gw
        .put(
            &format!("/admin/keys/{other_id}"),
            json!({ "status": "suspended" }),
        )
        .await;
    assert_eq!(disabled["status"], "suspended");
    gw.cache.refresh().await.unwrap();
    assert_refused(&gw, &t.key, "key_revoked").await;
    assert_refused(&gw, &other, "key_disabled").await;
    assert_only_successes_logged(&gw, 2).await;
}

async fn an_expired_key_is_refused(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    // Expiry must be in the future when set; two seconds ahead, then wait it out.
    let expires_at = now_unix() + 2;
    let t = gw
        .add_tenant("acme", json!({}), json!({ "expires_at": expires_at }))
        .await;
    let deadline = Instant::now() + Duration::from_secs(6);
    let mut ok = 0;
    loop {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        if status == 200 {
            ok += 1;
            assert!(now_unix() <= expires_at, "served after expiry");
        } else {
            assert_eq!(error_of(status, &body), (401, "key_expired"), "{text}");
            assert!(now_unix() >= expires_at, "refused before expiry");
            break;
        }
        assert!(Instant::now() < deadline, "the key never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_refused(&gw, &t.key, "key_expired").await;
    assert_only_successes_logged(&gw, ok).await;
}

async fn ip_rules_are_enforced(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let t = gw
        .add_tenant("acme", json!({}), json!({ "deny_ips": ["127.0.0.1/32"] }))
        .await;
    assert_refused(&gw, &t.key, "ip_denied").await;
    let (_, elsewhere) = gw.add_key(&t, json!({ "allow_ips": ["10.0.0.0/8"] })).await;
    assert_refused(&gw, &elsewhere, "ip_denied").await;
    let (_, here) = gw
        .add_key(&t, json!({ "allow_ips": ["10.0.0.0/8", "127.0.0.1"] }))
        .await;
    let (status, _, text) = gw.chat(&here, "fast", false).await;
    assert_eq!(status, 200, "an allowed address passes: {text}");
    assert_only_successes_logged(&gw, 1).await;
}

async fn models_outside_the_keys_namespaces_are_not_reachable(backend: Backend) {
    let gw = start(backend).await;
    let route = gw
        .add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    gw.admin("/admin/namespaces", json!({ "name": "other" })).await;
    gw.admin(
        "/admin/bindings",
        json!({ "namespace": "other", "public_model": "model", "group_id": route.group_id, "selector_value": "gpt-4o-mini" }),
    )
    .await;
    let t = gw
        .add_tenant(
            "acme",
            json!({ "namespaces": ["default", "other"] }),
            json!({ "namespaces": ["default"] }),
        )
        .await;

    let (status, body, _) = gw.chat(&t.key, "other.model", false).await;
    assert_eq!(error_of(status, &body), (404, "model_not_found"));
    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&t.key)
        .header("x-ez-namespace", "other")
        .json(&json!({ "model": "model", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_of(403, &body), (403, "namespace_not_allowed"));
    assert_eq!(body["error"]["type"], "permission_error");
    assert_eq!(gw.mock.requests().len(), 0, "nothing forwarded");

    // A key of the same master allowed into `other` reaches it both ways.
    let (_, both) = gw
        .add_key(&t, json!({ "namespaces": ["default", "other"] }))
        .await;
    let (status, _, text) = gw.chat(&both, "other.model", false).await;
    assert_eq!(status, 200, "{text}");
    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&both)
        .header("x-ez-namespace", "other")
        .json(&json!({ "model": "model", "messages": [] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let logs = gw.wait_for_logs(4).await;
    let not_found = record_with_status(&logs, 404);
    assert_eq!(not_found["error_code"], "model_not_found");
    assert_eq!(not_found["public_model"], "other.model");
    assert_eq!(not_found["namespace"], "default");
    assert!(not_found["api_key_id"].is_null());
    let forbidden = record_with_status(&logs, 403);
    assert_eq!(forbidden["error_code"], "namespace_not_allowed");
    assert!(forbidden["api_key_id"].is_null());
    let served: Vec<&Value> = logs.iter().filter(|l| l["status_code"] == 200).collect();
    assert_eq!(served.len(), 2);
    assert!(
        served
            .iter()
            .all(|l| l["namespace"] == "other" && l["public_model"] == "model")
    );
}

async fn rate_limit_refusals_are_logged_and_counted_on_the_bus(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let t = gw.add_tenant("acme", json!({ "global_qps": 1 }), json!({})).await;
    let second = gw.second_balancer().await;
    // One request per second across both balancers: alternating, the third request at
    // the latest is refused, whatever second boundary falls in between.
    let (mut ok, mut limited) = (0, 0);
    for i in 0..12 {
        let base = if i % 2 == 0 {
            gw.base.clone()
        } else {
            second.clone()
        };
        let (status, body) = gw.chat_at(&base, &t.key, "fast").await;
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(error_of(status, &body), (429, "rate_limited"));
                limited += 1;
                if limited == 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(limited, 3, "{ok} passed");

    let logs = gw.wait_for_logs(ok + limited).await;
    assert_eq!(logs.len(), ok + limited);
    let refused: Vec<&Value> = logs.iter().filter(|l| l["status_code"] == 429).collect();
    assert_eq!(refused.len(), limited);
    for log in refused {
        assert_eq!(log["error_code"], "rate_limited");
        assert_eq!(log["key_id"], t.key_id);
        assert!(log["api_key_id"].is_null(), "refused before any upstream: {log}");
    }
    // wait_for_logs flushed the reporter: the realtime rate is on the bus.
    let rate = gw
        .cache
        .bus()
        .hash_get_all(&ez_contract::bus_keys::master_rate(t.master_id))
        .await
        .unwrap();
    assert_eq!(rate.get("limit").map(String::as_str), Some("1"), "{rate:?}");
    assert_eq!(
        rate.get("blocked").map(String::as_str),
        Some(limited.to_string().as_str()),
        "{rate:?}"
    );
    let realtime = gw.get(&format!("/admin/masters/{}/realtime", t.master_id)).await;
    assert_eq!(realtime["limit"], 1, "{realtime}");
    assert_eq!(realtime["blocked"], limited, "{realtime}");
}

/// Two balancers each with its own reporter (as two processes): the realtime `blocked`
/// figure is the refusals of both.
async fn rate_limit_refusals_add_up_across_balancers_reporting_apart(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let t = gw.add_tenant("acme", json!({ "global_qps": 1 }), json!({})).await;
    let reporter = Reporter::new(gw.cp.report_sink(), gw.cache.bus().clone(), 1_000);
    let second = gw.balancer(reporter.clone()).await;
    let mut limited = [0usize; 2];
    for i in 0..20 {
        let base = if i % 2 == 0 { &gw.base } else { &second };
        let (status, body) = gw.chat_at(base, &t.key, "fast").await;
        match status {
            200 => {}
            429 => limited[i % 2] += 1,
            other => panic!("unexpected {other}: {body}"),
        }
        if limited.iter().all(|n| *n >= 2) {
            break;
        }
    }
    assert!(limited.iter().all(|n| *n >= 2), "{limited:?}");
    gw.reporter.flush(Duration::from_secs(1)).await;
    reporter.flush(Duration::from_secs(1)).await;
    let rate = gw
        .cache
        .bus()
        .hash_get_all(&ez_contract::bus_keys::master_rate(t.master_id))
        .await
        .unwrap();
    let total = limited[0] + limited[1];
    assert_eq!(
        rate.get("blocked").map(String::as_str),
        Some(total.to_string().as_str()),
        "refused {limited:?}: {rate:?}"
    );
}

async fn anthropic_route(gw: &Gateway) -> i64 {
    gw.add_anthropic_route("sk-ant-upstream-good", "haiku").await
}

async fn messages_reach_anthropic_providers_with_their_auth(backend: Backend) {
    let gw = start(backend).await;
    let credential = anthropic_route(&gw).await;
    let t = tenant(&gw).await;
    let request = |stream: bool| json!({ "model": "haiku", "max_tokens": 16, "stream": stream, "messages": [{ "role": "user", "content": "hi" }] });

    // An Anthropic client: its key as x-api-key, no anthropic-version of its own.
    let resp = gw
        .client
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &t.key)
        .json(&request(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "hello via good");
    assert_eq!(body["model"], "claude-3-5-haiku-20241022");

    let resp = gw
        .client
        .post(format!("{}/v1/messages", gw.base))
        .header("x-api-key", &t.key)
        .header("anthropic-version", "2023-01-01")
        .json(&request(true))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await.unwrap();
    let events = sse_events(&text);
    assert_eq!(events.len(), 6, "passed through whole: {text}");
    assert!(events[0].starts_with("event: message_start\n"));
    assert!(events[5].starts_with("event: message_stop\n"));

    let seen = gw.mock.requests();
    assert_eq!(seen.len(), 2);
    for (s, version) in seen.iter().zip(["2023-06-01", "2023-01-01"]) {
        assert_eq!(s.path, "/v1/messages");
        assert_eq!(s.headers["x-api-key"], "sk-ant-upstream-good");
        assert_eq!(s.headers["anthropic-version"], version);
        assert!(
            !s.headers.contains_key("authorization"),
            "the client's key stays here"
        );
        assert_eq!(s.body["model"], "claude-3-5-haiku-20241022");
    }
    assert!(
        seen[1].body.get("stream_options").is_none(),
        "no OpenAI option added to an Anthropic request"
    );

    let logs = gw.wait_for_logs(2).await;
    for log in &logs {
        assert_eq!(log["status_code"], 200);
        assert_eq!(log["endpoint"], "/v1/messages");
        assert_eq!(log["api_key_id"], credential);
        assert!(log["error_code"].is_null(), "{log}");
    }
    let json_log = logs.iter().find(|l| l["stream"] == false).unwrap();
    assert_eq!(tokens(json_log), (12, 4));
    let stream_log = logs.iter().find(|l| l["stream"] == true).unwrap();
    assert_eq!(
        tokens(stream_log),
        (11, 6),
        "input from message_start, output from message_delta"
    );
}

/// Azure: deployment URLs with the base URL's `api-version`, the route's upstream model
/// naming the deployment; the v1 API without one; the key as `api-key` either way.
async fn azure_groups_use_deployment_urls_or_the_v1_api(backend: Backend) {
    let gw = start(backend).await;
    let origin = gw.mock.origin.clone();
    for (public, base_url) in [
        ("classic", format!("{origin}?api-version=2024-10-21")),
        ("v1", format!("{origin}/openai/v1")),
    ] {
        let group = gw
            .admin(
                "/admin/provider-groups",
                json!({ "name": public, "type": "azure", "base_url": base_url, "models": ["gpt-4o-prod"] }),
            )
            .await;
        gw.admin(
            "/admin/api-keys",
            json!({ "group_id": group["id"], "api_key": "azure-key-0001" }),
        )
        .await;
        gw.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": public, "group_id": group["id"], "selector_value": "gpt-4o-prod" }),
        )
        .await;
    }
    gw.cache.refresh().await.unwrap();
    let t = tenant(&gw).await;
    for public in ["classic", "v1"] {
        let (status, _, text) = gw
            .call(
                reqwest::Method::POST,
                "/v1/chat/completions",
                &t.key,
                Some(json!({ "model": public, "messages": [{ "role": "user", "content": "hi" }] })),
            )
            .await;
        assert_eq!(status, 200, "{public}: {text}");
    }
    let seen = gw.mock.requests();
    assert_eq!(seen[0].path, "/openai/deployments/gpt-4o-prod/chat/completions");
    assert_eq!(seen[0].query, "api-version=2024-10-21");
    assert_eq!(seen[1].path, "/openai/v1/chat/completions");
    assert_eq!(seen[1].query, "");
    assert!(
        seen.iter()
            .all(|s| s.headers["api-key"] == "azure-key-0001" && s.headers.get("authorization").is_none())
    );
}

async fn embeddings_for_an_anthropic_only_model_are_unsupported(backend: Backend) {
    let gw = start(backend).await;
    gw.add_anthropic_route("sk-ant-upstream", "claude").await;
    let t = tenant(&gw).await;
    let resp = gw
        .client
        .post(format!("{}/v1/embeddings", gw.base))
        .bearer_auth(&t.key)
        .json(&json!({ "model": "claude", "input": "hi" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(error_of(400, &body), (400, "unsupported_endpoint"));
    assert_eq!(gw.mock.requests().len(), 0);

    let logs = gw.wait_for_logs(1).await;
    assert_eq!(logs[0]["status_code"], 400);
    assert_eq!(logs[0]["error_code"], "unsupported_endpoint");
    assert_eq!(logs[0]["endpoint"], "/v1/embeddings");
}

async fn responses_pass_through_to_openai_groups(backend: Backend) {
    let gw = start(backend).await;
    // An `openai` group: OpenAI's API has Responses (an OpenAI-compatible server gets
    // Chat Completions, translated).
    let group = gw
        .admin(
            "/admin/provider-groups",
            json!({ "name": "good", "type": "openai", "base_url": gw.upstream, "models": ["gpt-4o-mini"] }),
        )
        .await;
    let credential = gw
        .admin(
            "/admin/api-keys",
            json!({ "group_id": group["id"], "api_key": "sk-upstream-good" }),
        )
        .await;
    gw.admin(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "fast", "group_id": group["id"], "selector_value": "gpt-4o-mini" }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    let t = tenant(&gw).await;
    let (status, body, text) = gw
        .call(
            reqwest::Method::POST,
            "/v1/responses",
            &t.key,
            Some(json!({ "model": "fast", "input": "hi" })),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["object"], "response");
    assert_eq!(body["model"], "gpt-4o-mini");
    let seen = gw.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/responses", "the base URL + /responses");
    assert_eq!(seen[0].headers["authorization"], "Bearer sk-upstream-good");
    assert_eq!(seen[0].body, json!({ "model": "gpt-4o-mini", "input": "hi" }));

    let logs = gw.wait_for_logs(1).await;
    assert_eq!(logs[0]["endpoint"], "/v1/responses");
    assert_eq!(logs[0]["api_key_id"], credential["id"]);
    assert_eq!(tokens(&logs[0]), (5, 4));
}

/// A 429 whose body never arrives must not hold the request past the deadlines that
/// bound an upstream's silence (first byte, idle gap).
async fn a_429_whose_body_never_ends_fails_over_in_time(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route(
        "mixed",
        &gw.upstream,
        &[("sk-upstream-lazy", 1_000_000), ("sk-upstream-good", 1)],
        "fast",
        1,
    )
    .await;
    let t = tenant(&gw).await;
    let started = Instant::now();
    let (status, body, text) = gw.chat(&t.key, "fast", false).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    assert_eq!(gw.mock.hits("sk-upstream-lazy"), 1);
    assert!(
        elapsed < FIRST_BYTE.max(IDLE) + Duration::from_secs(2),
        "failed over after {elapsed:?}"
    );
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The one failed request of `gw` to `model`: asserts the client saw `status` and `code`
/// with a message naming `cause` and nothing of `hidden`, and returns its log record.
async fn failed_record(
    gw: &Gateway,
    key: &str,
    model: &str,
    expected: (u16, &str),
    cause: &str,
    hidden: &str,
) -> Value {
    let (status, body, _) = gw.chat(key, model, false).await;
    assert_eq!(error_of(status, &body), expected);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(cause), "the client is told the cause: {message}");
    assert!(
        !message.contains(hidden),
        "the client is not told where the upstream is: {message}"
    );
    let logs = gw.wait_for_logs(1).await;
    record_with_status(&logs, status).clone()
}

async fn a_closed_port_is_named_in_the_log_record_but_not_to_the_client(backend: Backend) {
    let gw = start(backend).await;
    let port = closed_port();
    // Secrets in the URL's userinfo and query, and the credential itself, stay out.
    let base = format!("http://proxy-user:url-secret-0001@127.0.0.1:{port}/v1?sig=url-secret-0002");
    let route = gw
        .add_route("closed", &base, &[("sk-upstream-closed-0003", 1)], "closed", 1)
        .await;
    let t = tenant(&gw).await;
    let host = format!("127.0.0.1:{port}");
    let record = failed_record(
        &gw,
        &t.key,
        "closed",
        (502, "upstream_unreachable"),
        "connection refused",
        &host,
    )
    .await;
    assert_eq!(record["error_code"], "upstream_unreachable");
    assert_eq!(record["api_key_id"], route.credentials[0]);
    assert_eq!(
        record["error_message"].as_str(),
        Some(
            format!("the upstream could not be reached (connection refused); connection refused at {host}")
                .as_str()
        ),
        "{record}"
    );
    let shown = record.to_string();
    for secret in ["url-secret", "sk-upstream-closed", "proxy-user", "sig="] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

async fn an_unresolvable_host_is_a_dns_failure(backend: Backend) {
    let gw = start(backend).await;
    // `.invalid` never resolves (RFC 6761).
    gw.add_route(
        "nowhere",
        "http://nonexistent.invalid/v1",
        &[("sk-upstream-dns", 1)],
        "nowhere",
        1,
    )
    .await;
    let t = tenant(&gw).await;
    let record = failed_record(
        &gw,
        &t.key,
        "nowhere",
        (502, "upstream_unreachable"),
        "DNS resolution failed",
        "nonexistent",
    )
    .await;
    assert_eq!(
        record["error_message"].as_str(),
        Some(
            "the upstream could not be reached (DNS resolution failed); DNS resolution failed at nonexistent.invalid:80"
        ),
        "{record}"
    );
}

async fn a_connect_timeout_is_told_from_a_slow_answer(backend: Backend) {
    const CONNECT: Duration = Duration::from_millis(300);
    let gw = Gateway::start_with(
        backend,
        ProxySettings {
            connect_timeout: CONNECT,
            first_byte_timeout: Duration::from_secs(5),
            ..settings()
        },
    )
    .await;
    let silent = SilentUpstream::start().await;
    gw.add_route("silent", &silent.base, &[("sk-upstream-silent", 1)], "silent", 1)
        .await;
    let t = tenant(&gw).await;
    let host = silent.base.trim_start_matches("http://").trim_end_matches("/v1");
    let started = Instant::now();
    let record = failed_record(
        &gw,
        &t.key,
        "silent",
        (504, "upstream_timeout"),
        "connect timeout",
        host,
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the connect deadline ended it"
    );
    assert_eq!(
        record["error_message"].as_str(),
        Some(
            format!("the upstream could not be reached in time (connect timeout); connect timeout at {host}")
                .as_str()
        ),
        "{record}"
    );
}
