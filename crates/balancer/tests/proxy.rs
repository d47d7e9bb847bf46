//! The data plane end to end: a control plane and the balancer in one process (as in
//! `ezapi serve`), configured through the admin API, forwarding to a mock upstream that
//! answers like OpenAI (JSON and SSE). Each test runs on SQLite + memory and on
//! PostgreSQL + Redis. The harness is in `support/`; the fault matrix in `faults.rs`.

mod support;

use std::time::{Duration, Instant};

use ez_balancer::SnapshotCache;
use ez_control_plane::testing::Backend;
use serde_json::{Value, json};
use support::{ADMIN, Gateway, both_backends, sse_events};

both_backends!(
    usage_and_logs_are_recorded,
    refused_credentials_are_banned_and_the_ban_persisted,
    chat_completions_reach_the_bound_upstream_model,
    streams_pass_through_chunk_by_chunk,
    failing_credentials_fail_over_before_the_first_byte,
    keys_and_models_are_checked_from_the_snapshot,
    model_listing_shows_only_reachable_routes,
    a_route_that_resolves_to_nothing_names_its_problem,
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

async fn a_route_that_resolves_to_nothing_names_its_problem(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    // A public name that is not the group's model: the binding is accepted, and resolves
    // to nothing.
    let vllm = gw
        .admin(
            "/admin/providers/custom",
            json!({ "name": "vllm", "base_url": gw.upstream, "api_keys": ["sk-upstream-llama"], "models": ["llama-3.3-70b-instruct"] }),
        )
        .await;
    let group = vllm["group"]["id"].as_i64().unwrap();
    let credential = vllm["api_keys"][0]["id"].as_i64().unwrap();
    let binding = gw
        .admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": "llama", "group_id": group }),
        )
        .await;
    let binding_id = binding["id"].as_i64().unwrap();
    gw.cache.refresh().await.unwrap();

    let (status, body, text) = gw.chat(&key, "llama", false).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(body["error"]["code"], "route_not_configured", "{text}");
    let message = body["error"]["message"].as_str().unwrap();
    for words in [
        "model `llama` in namespace `default` has no upstream",
        "no model of group `vllm` equals `llama`",
        "set `selector_value`",
        &format!("see GET /admin/bindings/{binding_id}"),
    ] {
        assert!(message.contains(words), "{words:?} not in {message:?}");
    }
    assert!(!message.contains("sk-upstream"), "a credential leaked: {message}");
    assert!(!message.contains("unhealthy"), "{message}");
    assert_eq!(gw.mock.hits("sk-upstream-llama"), 0);
    assert_eq!(
        gw.model_ids(&key).await,
        vec!["fast", "text-embedding-3-small"],
        "a route that cannot serve is not listed"
    );
    let logs = gw.wait_for_logs(1).await;
    let record = logs.iter().find(|l| l["public_model"] == "llama").unwrap();
    assert_eq!(record["error_code"], "route_not_configured");

    // The fix the problem names makes the route serve, and listed.
    gw.put(
        &format!("/admin/bindings/{binding_id}"),
        json!({ "selector_value": "llama-3.3-70b-instruct" }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    let (status, body, text) = gw.chat(&key, "llama", false).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["model"], "llama-3.3-70b-instruct");
    assert_eq!(
        gw.model_ids(&key).await,
        vec!["fast", "llama", "text-embedding-3-small"]
    );

    // Every credential banned is not a configuration problem: still no_upstream, still
    // listed (a ban ends by itself).
    gw.put(
        &format!("/admin/api-keys/{credential}"),
        json!({ "ban_until": 4_102_444_800_i64, "ban_reason": "test" }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    let (status, body, text) = gw.chat(&key, "llama", false).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("no_upstream")),
        "{text}"
    );
    assert!(gw.model_ids(&key).await.contains(&"llama".to_owned()));

    // A disabled binding is named as such.
    gw.put(
        &format!("/admin/bindings/{binding_id}"),
        json!({ "status": "disabled" }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    let (status, body, text) = gw.chat(&key, "llama", false).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(body["error"]["code"], "route_not_configured");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the binding is disabled"),
        "{text}"
    );
    assert!(!gw.model_ids(&key).await.contains(&"llama".to_owned()));
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

async fn usage_and_logs_are_recorded(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-good1"], "fast", "gpt-4o-mini").await;
    let (status, _, text) = gw.chat(&key, "fast", false).await;
    assert_eq!(status, 200, "{text}");
    // A stream whose client did not ask for usage: the balancer asks for it and keeps
    // the extra chunk to itself.
    let (status, _, text) = gw.chat(&key, "fast", true).await;
    assert_eq!(status, 200);
    let events = sse_events(&text);
    assert_eq!(events.len(), 3, "no usage chunk reaches the client: {text}");
    assert!(!text.contains("\"usage\""), "{text}");
    // A client that asked for it gets it.
    let body = json!({ "model": "fast", "messages": [], "stream": true, "stream_options": { "include_usage": true } });
    let (status, _, text) = gw
        .call(reqwest::Method::POST, "/v1/chat/completions", &key, Some(body))
        .await;
    assert_eq!(status, 200);
    assert_eq!(sse_events(&text).len(), 4, "{text}");
    assert!(text.contains("\"prompt_tokens\":7"), "{text}");
    // A request refused before any upstream is logged too.
    let (status, _, _) = gw.chat(&key, "no-such-model", false).await;
    assert_eq!(status, 404);

    gw.deliver_reports().await;
    let logs = gw.logs("").await;
    assert_eq!(logs.len(), 4, "{logs:#?}");
    let not_found = &logs[0];
    assert_eq!(not_found["status_code"], 404);
    assert_eq!(not_found["error_code"], "model_not_found");
    assert_eq!(not_found["public_model"], "no-such-model");
    let plain = logs
        .iter()
        .find(|l| l["stream"] == json!(false) && l["status_code"] == 200)
        .unwrap();
    assert_eq!(
        (plain["input_tokens"].as_i64(), plain["output_tokens"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(plain["public_model"], "fast");
    assert_eq!(plain["upstream_model"], "gpt-4o-mini");
    assert_eq!(plain["namespace"], "default");
    assert_eq!(plain["endpoint"], "/v1/chat/completions");
    assert_eq!(
        plain["upstream_format"], "openai_chat",
        "passed through, not translated"
    );
    assert!(plain["api_key_id"].as_i64().is_some() && plain["group_id"].as_i64().is_some());
    assert_eq!(plain["client_ip"], "127.0.0.1");
    assert_eq!(plain["request_id"].as_str().unwrap().len(), 32);
    let streamed: Vec<&Value> = logs.iter().filter(|l| l["stream"] == json!(true)).collect();
    assert_eq!(streamed.len(), 2);
    for log in streamed {
        assert_eq!(log["status_code"], 200);
        assert_eq!(
            (log["input_tokens"].as_i64(), log["output_tokens"].as_i64()),
            (Some(7), Some(2))
        );
        assert!(log["first_token_ms"].as_i64().is_some(), "{log}");
        assert!(log["error_code"].is_null(), "{log}");
    }
    // Filters.
    assert_eq!(gw.logs("?status=error").await.len(), 1);
    assert_eq!(gw.logs("?status=200&model=fast").await.len(), 3);

    // Usage totals: in the database (through the internal endpoints' service) and as
    // realtime counters on the bus.
    let master_id = logs[0]["master_id"].as_i64().unwrap();
    let key_id = logs[0]["key_id"].as_i64().unwrap();
    let (requests, tokens) = gw.cp.state.store.key_usage(key_id).await.unwrap();
    assert_eq!((requests, tokens), (4, 5 + 9 + 9));
    let key_row = gw.cp.state.store.get_key(key_id).await.unwrap();
    assert!(key_row.last_used_at.is_some());
    let (status, realtime, _) = gw
        .call(
            reqwest::Method::GET,
            &format!("/admin/masters/{master_id}/realtime"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(realtime["requests"], 4);
    assert_eq!(realtime["tokens"], 23);
    let (_, master, _) = gw
        .call(
            reqwest::Method::GET,
            &format!("/admin/masters/{master_id}"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(master["realtime"]["requests"], 4, "{master}");
    let (_, system, _) = gw
        .call(reqwest::Method::GET, "/admin/realtime", ADMIN, None)
        .await;
    assert_eq!(system["requests"], 4);
    assert_eq!(system["masters"], 1);

    // A master sees only its own logs.
    let other = gw.admin("/admin/masters", json!({ "name": "other" })).await;
    let other_key = other["master_key"].as_str().unwrap();
    let (status, own, _) = gw.call(reqwest::Method::GET, "/v1/logs", other_key, None).await;
    assert_eq!(status, 200);
    assert_eq!(own["total"], 0);
    let (_, own_rt, _) = gw
        .call(reqwest::Method::GET, "/v1/realtime", other_key, None)
        .await;
    assert_eq!(own_rt["requests"], 0);
}

async fn refused_credentials_are_banned_and_the_ban_persisted(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw
        .setup(
            &["sk-upstream-deny", "sk-upstream-quota", "sk-upstream-good"],
            "fast",
            "gpt-4o-mini",
        )
        .await;
    let (_, credentials, _) = gw
        .call(reqwest::Method::GET, "/admin/api-keys", ADMIN, None)
        .await;
    let id_of = |suffix: &str| {
        credentials["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["api_key"].as_str().unwrap().ends_with(suffix))
            .map(|c| c["id"].as_i64().unwrap())
            .unwrap()
    };
    let (deny, quota) = (id_of("deny"), id_of("uota"));
    // Every request succeeds on the good credential, whatever was tried first; the
    // refused ones are banned here at once, so they are tried at most once each. (Each
    // is picked first with probability ≥ 1/3 until banned: 30 requests miss one with
    // probability < 1e-5.)
    for _ in 0..30 {
        let (status, body, text) = gw.chat(&key, "fast", false).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(body["choices"][0]["message"]["content"], "hello via good");
    }
    gw.deliver_reports().await;
    let logs = gw.logs("?page_size=100").await;
    assert_eq!(logs.len(), 30);
    let used: Vec<i64> = logs.iter().map(|l| l["api_key_id"].as_i64().unwrap()).collect();
    assert!(
        !used.contains(&deny) && !used.contains(&quota),
        "logs name the credential that answered"
    );

    // Persisted by the control plane and synced to the bus.
    let now = ez_contract::time::now_unix();
    for (id, reason) in [(deny, "upstream 401"), (quota, "quota exhausted (upstream 429)")] {
        let (_, credential, _) = gw
            .call(
                reqwest::Method::GET,
                &format!("/admin/api-keys/{id}"),
                ADMIN,
                None,
            )
            .await;
        let until = credential["ban_until"].as_i64().unwrap_or(0);
        assert!(
            until > now + 60,
            "banned for the configured duration: {credential}"
        );
        assert!(
            credential["ban_reason"].as_str().unwrap().contains(reason),
            "{credential}"
        );
    }
    // A fresh balancer learns the bans from the bus alone.
    let fresh = SnapshotCache::new(gw.cache.bus().clone());
    fresh.refresh().await.unwrap();
    let snapshot = fresh.snapshot();
    assert!(snapshot.providers[&deny].ban_until > now);
    assert!(snapshot.providers[&quota].ban_until > now);

    // A credential without auto_ban is failed over but not banned.
    gw.call(
        reqwest::Method::PUT,
        &format!("/admin/api-keys/{deny}"),
        ADMIN,
        Some(json!({ "auto_ban": false, "ban_until": null })),
    )
    .await;
    let (status, body, text) = gw
        .call(
            reqwest::Method::POST,
            "/internal/apikey-bans",
            ADMIN,
            Some(json!({ "api_key_id": deny, "ban_until": now + 60, "reason": "x" })),
        )
        .await;
    assert_eq!(status, 401, "internal endpoints need the stats token: {text}");
    assert_eq!(body["error"]["code"], "internal_api_disabled");
}
