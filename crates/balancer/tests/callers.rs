//! Who the caller is, end to end: its routing group (which candidates of a route it
//! reaches) and its IP address behind trusted proxies (what `allow_ips` checks). Each
//! test runs on SQLite + memory and on PostgreSQL + Redis.

mod support;

use ez_balancer::ProxySettings;
use ez_control_plane::testing::Backend;
use serde_json::{Value, json};
use support::{Gateway, both_backends};

both_backends!(
    routing_groups_send_each_master_to_its_own_upstream,
    forwarded_for_entries_a_client_wrote_never_choose_its_ip,
    the_wrong_kind_of_credential_is_told_what_to_send,
);

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// A custom group on the mock in routing group `route_group`, with one credential
/// (`key`), bound to `default.shared`.
async fn grouped_route(gw: &Gateway, name: &str, route_group: &str, key: &str) {
    let setup = gw
        .admin(
            "/admin/providers/custom",
            json!({ "name": name, "base_url": gw.upstream, "api_keys": [key], "models": ["gpt-4o-mini"], "route_group": route_group }),
        )
        .await;
    assert_eq!(setup["group"]["route_group"], route_group, "{setup}");
    gw.admin(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "shared", "group_id": setup["group"]["id"], "selector_value": "gpt-4o-mini" }),
    )
    .await;
}

/// Asserts `key`'s requests for `shared` are all answered by the credential signed `via`.
async fn assert_served_by(gw: &Gateway, key: &str, via: &str) {
    for _ in 0..8 {
        let (status, body, text) = gw.chat(key, "shared", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("hello via {via}")
        );
    }
}

async fn routing_groups_send_each_master_to_its_own_upstream(backend: Backend) {
    let gw = Gateway::start(backend).await;
    grouped_route(&gw, "group-a", "a", "sk-upstream-aaaa").await;
    grouped_route(&gw, "group-b", "b", "sk-upstream-bbbb").await;
    gw.add_route("open", &gw.upstream, &[("sk-upstream-good", 1)], "everyone", 1)
        .await;
    let a = gw
        .add_tenant("tenant-a", json!({ "group": "a" }), json!({}))
        .await;
    let b = gw
        .add_tenant("tenant-b", json!({ "group": "b" }), json!({}))
        .await;
    let c = gw
        .add_tenant("tenant-c", json!({ "group": "c" }), json!({}))
        .await;

    assert_served_by(&gw, &a.key, "aaaa").await;
    assert_served_by(&gw, &b.key, "bbbb").await;
    let (status, body, text) = gw.chat(&c.key, "shared", false).await;
    assert_eq!((status, code(&body)), (404, "model_not_found"), "{text}");
    assert_eq!(gw.mock.hits("sk-upstream-aaaa"), 8);
    assert_eq!(gw.mock.hits("sk-upstream-bbbb"), 8);

    // The model list shows only routes with a candidate for the caller's group.
    assert_eq!(gw.model_ids(&a.key).await, ["shared"]);
    assert_eq!(gw.model_ids(&c.key).await, Vec::<String>::new());

    // A route of the default routing group serves masters of that group only.
    let d = gw.add_tenant("tenant-d", json!({}), json!({})).await;
    let (status, body, text) = gw.chat(&d.key, "everyone", false).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    assert_eq!(gw.model_ids(&d.key).await, ["everyone"]);
    let (status, body, _) = gw.chat(&a.key, "everyone", false).await;
    assert_eq!((status, code(&body)), (404, "model_not_found"));

    // Keys have no group of their own: they follow their master's.
    gw.put(
        &format!("/admin/masters/{}", a.master_id),
        json!({ "group": "b" }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    assert_served_by(&gw, &a.key, "bbbb").await;
    assert_eq!(gw.mock.hits("sk-upstream-aaaa"), 8);

    let logs = gw.wait_for_logs(27).await;
    let refused: Vec<&Value> = logs.iter().filter(|l| l["status_code"] == 404).collect();
    assert_eq!(refused.len(), 2, "{logs:#?}");
    assert!(refused.iter().all(|l| l["error_code"] == "model_not_found"));
}

async fn forwarded_for_entries_a_client_wrote_never_choose_its_ip(backend: Backend) {
    let settings = ProxySettings {
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        ..ProxySettings::default()
    };
    let gw = Gateway::start_with(backend, settings).await;
    gw.add_route("good", &gw.upstream, &[("sk-upstream-good", 1)], "fast", 1)
        .await;
    let t = gw
        .add_tenant("acme", json!({}), json!({ "allow_ips": ["1.2.3.4"] }))
        .await;
    let chat = |xff: &'static str| {
        gw.client
            .post(format!("{}/v1/chat/completions", gw.base))
            .bearer_auth(&t.key)
            .header("x-forwarded-for", xff)
            .json(&json!({ "model": "fast", "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    // Through the trusted proxy (the test client on 127.0.0.1), as proxies write it.
    for xff in [
        "1.2.3.4",
        "9.9.9.9, 1.2.3.4",
        "9.9.9.9, 1.2.3.4:51234",
        "1.2.3.4, 127.0.0.2",
    ] {
        let resp = chat(xff).await.unwrap();
        assert_eq!(resp.status(), 200, "X-Forwarded-For: {xff}");
    }
    // An unreadable entry stops the walk: what the client wrote left of it never counts.
    for xff in ["1.2.3.4, garbage", "1.2.3.4, unknown", "1.2.3.4,", "5.6.7.8:80"] {
        let resp = chat(xff).await.unwrap();
        assert_eq!(resp.status(), 401, "X-Forwarded-For: {xff}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(code(&body), "ip_denied", "X-Forwarded-For: {xff}");
    }
}

/// A master key or a session token on a model route is told that model routes take a
/// child key, and a child key on a master route the other way round; both planes answer
/// in the one error envelope (`code`, `message`, `type`, `param`).
async fn the_wrong_kind_of_credential_is_told_what_to_send(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.setup(&["sk-upstream-good"], "gpt-4o", "gpt-4o-mini").await;
    let tenant = gw.add_tenant("tenant", json!({}), json!({})).await;
    let (_, login, text) = gw
        .call(
            reqwest::Method::POST,
            "/auth/login",
            "",
            Some(json!({ "master_key": tenant.master_key })),
        )
        .await;
    let session = login["token"].as_str().unwrap_or_else(|| panic!("{text}"));

    let fields = |body: &Value| -> Vec<String> {
        let mut keys: Vec<String> = body["error"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let envelope = ["code", "message", "param", "type"];
    for (credential, held) in [
        (tenant.master_key.as_str(), "master key"),
        (session, "session token"),
    ] {
        let (status, body, text) = gw.chat(credential, "gpt-4o", false).await;
        assert_eq!((status, code(&body)), (401, "child_key_required"), "{text}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(held) && message.contains("sk-ez-"), "{message}");
        assert!(message.contains("POST /v1/tokens"), "{message}");
        assert_eq!(fields(&body), envelope, "{text}");
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    // The child key itself still works, and is refused on a master route with words.
    let (status, _, text) = gw.chat(&tenant.key, "gpt-4o", false).await;
    assert_eq!(status, 200, "{text}");
    let (status, body, text) = gw
        .call(reqwest::Method::GET, "/v1/tokens", &tenant.key, None)
        .await;
    assert_eq!((status, code(&body)), (403, "master_required"), "{text}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("master key (ezm-"),
        "{text}"
    );
    assert_eq!(fields(&body), envelope, "the control plane's shape: {text}");
    // A field error names its field on the control plane, as OpenAI's `param` does.
    let (status, body, text) = gw
        .call(
            reqwest::Method::POST,
            "/v1/tokens",
            &tenant.master_key,
            Some(json!({ "name": "x".repeat(500) })),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "invalid_field"), "{text}");
    assert_eq!(body["error"]["param"], "name", "{text}");
}
