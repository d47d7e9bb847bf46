//! What the balancer does with upstream answers, end to end: which refusals ban a
//! credential (at once, after repeats, never), redirects that are never followed, and
//! the upstream headers a client may see. Each test that runs a gateway runs on
//! SQLite + memory and on PostgreSQL + Redis.

mod support;

use std::time::Duration;

use axum::http::StatusCode;
use ez_balancer::ProxySettings;
use ez_balancer::sink::HttpSink;
use ez_contract::report::{LogBatch, ReportError, ReportSink};
use ez_contract::time::now_unix;
use ez_control_plane::testing::Backend;
use serde_json::{Value, json};
use support::{Gateway, MockUpstream, RedirectUpstream, Tenant, both_backends};

const BAN: Duration = Duration::from_secs(600);

fn settings() -> ProxySettings {
    ProxySettings {
        max_attempts: 3,
        connect_timeout: Duration::from_secs(1),
        first_byte_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(30),
        ban_duration: BAN,
        ban_threshold: 3,
        ban_window: Duration::from_secs(60),
        ..ProxySettings::default()
    }
}

async fn start(backend: Backend) -> Gateway {
    Gateway::start_with(backend, settings()).await
}

async fn tenant(gw: &Gateway, name: &str) -> Tenant {
    gw.add_tenant(name, json!({}), json!({})).await
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// `ban_until` of credential `id` in the admin API (persisted) and in a fresh
/// balancer's snapshot (synced to the bus), after the reports were delivered.
async fn bans_of(gw: &Gateway, id: i64) -> (Option<i64>, i64, String) {
    gw.deliver_reports().await;
    let credential = gw.credential(id).await;
    let fresh = ez_balancer::SnapshotCache::new(gw.cache.bus().clone());
    fresh.refresh().await.unwrap();
    let snapshot = fresh.snapshot();
    (
        credential["ban_until"].as_i64(),
        snapshot.providers[&id].ban_until,
        credential["ban_reason"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn assert_not_banned(gw: &Gateway, id: i64) {
    let (persisted, synced, _) = bans_of(gw, id).await;
    assert_eq!((persisted, synced), (None, 0), "credential {id} is not banned");
}

async fn assert_banned(gw: &Gateway, id: i64, reason: &str) {
    let (persisted, synced, why) = bans_of(gw, id).await;
    let until = persisted.unwrap_or_else(|| panic!("credential {id} is banned"));
    let ban = i64::try_from(BAN.as_secs()).unwrap();
    let now = now_unix();
    assert!(
        until > now + ban - 30 && until <= now + ban,
        "for the configured duration"
    );
    assert_eq!(synced, until, "synced to the bus");
    assert!(why.contains(reason), "reason {why:?} names {reason:?}");
}

both_backends!(
    a_402_tied_to_a_request_parameter_goes_to_the_client_and_bans_nothing,
    invalid_keys_ban_at_once_while_a_401_naming_no_cause_does_not,
    an_ambiguous_403_bans_only_on_the_third_within_the_window,
    redirects_are_never_followed,
    only_allow_listed_upstream_headers_reach_the_client,
);

async fn a_402_tied_to_a_request_parameter_goes_to_the_client_and_bans_nothing(backend: Backend) {
    let gw = start(backend).await;
    let route = gw
        .add_route(
            "shared",
            &gw.upstream,
            &[("sk-upstream-good", 1), ("sk-upstream-also", 1)],
            "fast",
            1,
        )
        .await;
    let a = tenant(&gw, "tenant-a").await;
    let b = tenant(&gw, "tenant-b").await;
    let greedy =
        json!({ "model": "fast", "max_tokens": 100_000, "messages": [{ "role": "user", "content": "hi" }] });
    for round in 1..=5 {
        let (status, body, text) = gw
            .call(
                reqwest::Method::POST,
                "/v1/chat/completions",
                &a.key,
                Some(greedy.clone()),
            )
            .await;
        assert_eq!(status, 402, "the upstream's refusal, as it sent it: {text}");
        assert_eq!(body["error"]["param"], "max_tokens", "{text}");
        assert_eq!(code(&body), "insufficient_credits");
        assert_eq!(
            gw.mock.requests().len(),
            round,
            "a request-level refusal is not retried on another credential"
        );
    }
    // Tenant B is served by the same credentials all along.
    for _ in 0..6 {
        let (status, body, text) = gw.chat(&b.key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert!(body["choices"][0]["message"]["content"].is_string());
    }
    let served: Vec<String> = gw
        .mock
        .requests()
        .iter()
        .skip(5)
        .map(|s| s.credential.clone())
        .collect();
    assert_eq!(served.len(), 6, "one attempt each: {served:?}");

    let logs = gw.wait_for_logs(11).await;
    assert_eq!(logs.iter().filter(|l| l["status_code"] == 402).count(), 5);
    for id in route.credentials {
        assert_not_banned(&gw, id).await;
    }
}

async fn invalid_keys_ban_at_once_while_a_401_naming_no_cause_does_not(backend: Backend) {
    let gw = start(backend).await;
    let invalid = gw
        .add_route("invalid", &gw.upstream, &[("sk-upstream-deny", 1)], "invalid", 1)
        .await;
    let scoped = gw
        .add_route("scoped", &gw.upstream, &[("sk-upstream-u401", 1)], "scoped", 1)
        .await;
    let t = tenant(&gw, "acme").await;

    let (status, body, _) = gw.chat(&t.key, "invalid", false).await;
    assert_eq!((status, code(&body)), (502, "upstream_auth_failed"));
    let (status, body, _) = gw.chat(&t.key, "invalid", false).await;
    assert_eq!(
        (status, code(&body)),
        (503, "no_upstream"),
        "invalid_api_key banned at once"
    );
    assert_eq!(gw.mock.hits("sk-upstream-deny"), 1);

    for round in 1..=2 {
        let (status, body, _) = gw.chat(&t.key, "scoped", false).await;
        assert_eq!((status, code(&body)), (502, "upstream_auth_failed"));
        assert_eq!(gw.mock.hits("sk-upstream-u401"), round, "not banned: tried again");
    }

    assert_banned(&gw, invalid.credentials[0], "upstream 401: invalid_api_key").await;
    assert_not_banned(&gw, scoped.credentials[0]).await;

    // Anthropic's `authentication_error` is as unmistakable.
    let credential = gw.add_anthropic_route("sk-ant-upstream-a401", "haiku").await;
    let message =
        json!({ "model": "haiku", "max_tokens": 16, "messages": [{ "role": "user", "content": "hi" }] });
    for expected in [(502, "upstream_auth_failed"), (503, "no_upstream")] {
        let (status, body, _) = gw
            .call(
                reqwest::Method::POST,
                "/v1/messages",
                &t.key,
                Some(message.clone()),
            )
            .await;
        assert_eq!((status, code(&body)), expected);
    }
    assert_eq!(gw.mock.hits("sk-ant-upstream-a401"), 1);
    assert_banned(&gw, credential, "upstream 401: authentication_error").await;
}

async fn an_ambiguous_403_bans_only_on_the_third_within_the_window(backend: Backend) {
    let gw = start(backend).await;
    let refused = gw
        .add_route(
            "forbidden",
            &gw.upstream,
            &[("sk-upstream-f403", 1)],
            "forbidden",
            1,
        )
        .await;
    let t = tenant(&gw, "acme").await;
    for round in 1..=2 {
        let (status, body, _) = gw.chat(&t.key, "forbidden", false).await;
        assert_eq!((status, code(&body)), (502, "upstream_auth_failed"));
        assert_eq!(gw.mock.hits("sk-upstream-f403"), round);
        assert_not_banned(&gw, refused.credentials[0]).await;
    }
    let (status, body, _) = gw.chat(&t.key, "forbidden", false).await;
    assert_eq!((status, code(&body)), (502, "upstream_auth_failed"));
    assert_eq!(gw.mock.hits("sk-upstream-f403"), 3);
    let (status, body, _) = gw.chat(&t.key, "forbidden", false).await;
    assert_eq!(
        (status, code(&body)),
        (503, "no_upstream"),
        "banned on the third refusal"
    );
    assert_eq!(gw.mock.hits("sk-upstream-f403"), 3);
    assert_banned(&gw, refused.credentials[0], "upstream 403").await;
}

async fn redirects_are_never_followed(backend: Backend) {
    let gw = start(backend).await;
    // Where the redirects point: another host that must never be contacted.
    let elsewhere = MockUpstream::start().await;
    let target = format!("{}/chat/completions", elsewhere.base);
    let temporary = RedirectUpstream::start(StatusCode::TEMPORARY_REDIRECT, target.clone()).await;
    let found = RedirectUpstream::start(StatusCode::FOUND, target).await;

    let hop = gw
        .add_route("hop", &temporary.base, &[("sk-upstream-hop", 1)], "fast", 100)
        .await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let only307 = gw
        .add_route(
            "only307",
            &temporary.base,
            &[("sk-upstream-307", 1)],
            "only307",
            1,
        )
        .await;
    let only302 = gw
        .add_route("only302", &found.base, &[("sk-upstream-302", 1)], "only302", 1)
        .await;
    let t = tenant(&gw, "acme").await;

    for _ in 0..5 {
        let (status, body, text) = gw.chat(&t.key, "fast", false).await;
        assert_eq!(status, 200, "failed over to the good credential: {text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    assert!(temporary.hits() >= 1, "the redirecting credential was tried");
    for route in ["only307", "only302"] {
        let (status, body, text) = gw.chat(&t.key, route, false).await;
        assert_eq!((status, code(&body)), (502, "upstream_redirect"), "{text}");
    }
    assert_eq!(found.hits(), 1);
    assert!(
        elsewhere.requests().is_empty(),
        "no request (nor its credential) reached the redirect's target"
    );
    // A redirect says nothing against the credential.
    for id in [hop.credentials[0], only307.credentials[0], only302.credentials[0]] {
        assert_not_banned(&gw, id).await;
    }
}

/// The balancer → control plane client does not follow redirects either (it carries
/// `X-Internal-Token`); a redirect keeps the reports for a later try.
#[tokio::test]
async fn the_report_sink_does_not_follow_redirects() {
    let elsewhere = MockUpstream::start().await;
    let redirect = RedirectUpstream::start(
        StatusCode::TEMPORARY_REDIRECT,
        format!("{}/chat/completions", elsewhere.base),
    )
    .await;
    let sink = HttpSink::new(&redirect.base, Some("internal-token-0123456789".into())).unwrap();
    let result = sink.logs(&LogBatch::default()).await;
    assert!(
        matches!(result, Err(ReportError::Unavailable(_))),
        "kept for a retry: {result:?}"
    );
    assert_eq!(redirect.hits(), 1);
    assert!(elsewhere.requests().is_empty(), "the token went nowhere else");
}

async fn only_allow_listed_upstream_headers_reach_the_client(backend: Backend) {
    let gw = start(backend).await;
    gw.add_route("account", &gw.upstream, &[("sk-upstream-hdrs", 1)], "fast", 1)
        .await;
    let t = tenant(&gw, "acme").await;
    let resp = gw
        .client
        .post(format!("{}/v1/chat/completions", gw.base))
        .bearer_auth(&t.key)
        .header("x-request-id", "client-request-7")
        .json(&json!({ "model": "fast", "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "hello with headers");

    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["retry-after"], "3");
    assert_eq!(headers["x-upstream-request-id"], "req_upstream_123");
    assert_eq!(
        headers["x-request-id"], "client-request-7",
        "the gateway's own request id is not replaced by the upstream's"
    );
    for name in [
        "set-cookie",
        "openai-organization",
        "openai-project",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-tokens",
    ] {
        assert!(!headers.contains_key(name), "{name} leaked: {headers:?}");
    }
}
