//! Credential health and usage windows: what balancers report about a credential (last
//! use, last error, the newest usage window) shows in its view; an exhausted window's
//! cooling reaches the routing snapshot — and leaves it when the window has room again —
//! without being a ban; bad reports store nothing; and `GET /admin/apikey-stats/summary`
//! sums the credentials up, from the totals or from the request log.

use ez_contract::bus_keys;
use ez_contract::report::{CredentialUsage, CredentialUsageBatch, QuotaWindow, ReportError, ReportSink};
use ez_contract::time::now_unix;
use ez_control_plane::testing::Backend;
use ez_control_plane::usage::InProcessReports;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Resp, TestApp};

both_backends!(
    reports_show_in_the_credential_view,
    cooling_reaches_the_snapshot_and_is_no_ban,
    an_older_window_never_replaces_a_newer_one,
    bad_health_reports_store_nothing,
    summary_sums_up_every_credential,
    summary_counts_the_log_from_since,
    summary_refuses_bad_filters,
);

const STATS_TOKEN: &str = "stats-token-credential-health-01";

async fn spawn(backend: Backend) -> TestApp {
    TestApp::with_stats_token(backend, STATS_TOKEN).await
}

async fn internal_post(app: &TestApp, path: &str, body: Value) -> Resp {
    let resp = app
        .client
        .post(format!("{}{path}", app.base))
        .header("x-internal-token", STATS_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    crate::helpers::into_resp(resp).await
}

async fn flush(app: &TestApp, items: Vec<Value>) -> Resp {
    internal_post(app, "/internal/apikey-stats/flush", json!({ "items": items })).await
}

async fn create_group(app: &TestApp, name: &str) -> i64 {
    let body = json!({ "name": name, "type": "openai", "models": ["gpt-4o"] });
    app.admin_post("/admin/provider-groups", body)
        .await
        .expect(201)
        .id()
}

async fn create_credential(app: &TestApp, group: i64, secret: &str) -> i64 {
    let body = json!({ "group_id": group, "api_key": secret });
    app.admin_post("/admin/api-keys", body).await.expect(201).id()
}

async fn credential(app: &TestApp, id: i64) -> Value {
    app.admin_get(&format!("/admin/api-keys/{id}"))
        .await
        .expect(200)
        .body
}

async fn provider_entry(app: &TestApp, id: i64) -> Value {
    let raw = app
        .state
        .bus
        .hash_get(bus_keys::PROVIDERS, &id.to_string())
        .await
        .expect("bus field")
        .unwrap_or_else(|| panic!("no config:providers entry for {id}"));
    serde_json::from_str(&raw).expect("provider entry is JSON")
}

fn usage(id: i64, requests: i64, success: i64) -> Value {
    json!({ "api_key_id": id, "requests": requests, "success_requests": success })
}

/// `base` with the fields of `patch` set.
fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().expect("object") {
        base[k] = v.clone();
    }
    base
}

fn window(name: &str, observed_at: i64, cooling_until: Option<i64>) -> Value {
    let mut w = json!({ "name": name, "used_percent": 42.5, "resets_at": observed_at + 3_600, "observed_at": observed_at });
    if let Some(t) = cooling_until {
        w["cooling_until"] = json!(t);
    }
    w
}

async fn reports_show_in_the_credential_view(backend: Backend) {
    let app = spawn(backend).await;
    let group = create_group(&app, "health-view").await;
    let id = create_credential(&app, group, "sk-health-view-0001").await;
    let fresh = credential(&app, id).await;
    for (field, expected) in [
        ("total_requests", json!(0)),
        ("success_requests", json!(0)),
        ("failure_requests", json!(0)),
        ("success_rate", Value::Null),
        ("last_used_at", Value::Null),
        ("last_error", Value::Null),
        ("last_error_at", Value::Null),
        ("quota", Value::Null),
    ] {
        assert_eq!(fresh[field], expected, "{field} of a fresh credential: {fresh}");
    }

    let now = now_unix();
    let item = with(
        usage(id, 4, 3),
        json!({ "last_used_at": now - 5, "last_error": "upstream 429: rate_limit_error", "window": window("5h", now - 5, None) }),
    );
    let accepted = flush(&app, vec![item]).await.expect(200);
    assert_eq!(accepted.body["accepted"], 1, "{}", accepted.text);
    let after = now_unix();
    let view = credential(&app, id).await;
    assert_eq!(
        (
            &view["total_requests"],
            &view["success_requests"],
            &view["failure_requests"]
        ),
        (&json!(4), &json!(3), &json!(1)),
        "{view}"
    );
    assert_eq!(view["success_rate"], json!(0.75));
    assert_eq!(view["last_used_at"], now - 5);
    assert_eq!(view["last_error"], "upstream 429: rate_limit_error");
    let error_at = view["last_error_at"].as_i64().expect("last_error_at");
    assert!(
        (now..=after).contains(&error_at),
        "stamped when received: {error_at}"
    );
    assert_eq!(
        view["quota"],
        json!({ "window": "5h", "used_percent": 42.5, "resets_at": now - 5 + 3_600, "cooling_until": null, "observed_at": now - 5 })
    );

    // An older last use does not move it back; a report without an error keeps the last.
    flush(
        &app,
        vec![with(usage(id, 4, 4), json!({ "last_used_at": now - 100 }))],
    )
    .await
    .expect(200);
    let view = credential(&app, id).await;
    assert_eq!(
        (&view["total_requests"], &view["success_requests"]),
        (&json!(8), &json!(7))
    );
    assert_eq!(view["success_rate"], json!(0.875));
    assert_eq!(view["last_used_at"], now - 5);
    assert_eq!(view["last_error"], "upstream 429: rate_limit_error");
    assert_eq!(view["last_error_at"], error_at);

    // The list shows the same.
    let list = app
        .admin_get(&format!("/admin/api-keys?group_id={group}"))
        .await
        .expect(200)
        .body;
    let listed = &list["items"][0];
    for field in [
        "total_requests",
        "success_rate",
        "last_used_at",
        "last_error",
        "quota",
    ] {
        assert_eq!(listed[field], view[field], "{field}");
    }
}

async fn cooling_reaches_the_snapshot_and_is_no_ban(backend: Backend) {
    let app = spawn(backend).await;
    let group = create_group(&app, "health-cooling").await;
    let id = create_credential(&app, group, "sk-health-cooling-0001").await;
    let other = create_credential(&app, group, "sk-health-cooling-0002").await;
    assert_eq!(provider_entry(&app, id).await["cooling_until"], 0);

    // A report that changes no cooling writes nothing to the bus.
    let meta_before = app
        .state
        .bus
        .hash_get_all(bus_keys::PROVIDERS_META)
        .await
        .expect("meta");
    let now = now_unix();
    flush(
        &app,
        vec![with(
            usage(id, 1, 1),
            json!({ "window": window("5h", now - 60, None) }),
        )],
    )
    .await
    .expect(200);
    let meta_after = app
        .state
        .bus
        .hash_get_all(bus_keys::PROVIDERS_META)
        .await
        .expect("meta");
    assert_eq!(meta_before, meta_after, "no sync without a cooling change");

    let until = now + 600;
    let item = with(
        usage(id, 1, 0),
        json!({ "window": window("5h", now - 30, Some(until)) }),
    );
    flush(&app, vec![item, usage(other, 1, 1)]).await.expect(200);
    let entry = provider_entry(&app, id).await;
    assert_eq!(entry["cooling_until"], until, "{entry}");
    assert_eq!(
        (&entry["ban_until"], &entry["ban_reason"], &entry["status"]),
        (&json!(0), &json!(""), &json!("active"))
    );
    assert_eq!(provider_entry(&app, other).await["cooling_until"], 0);
    let view = credential(&app, id).await;
    assert_eq!(view["quota"]["cooling_until"], until);
    assert_eq!(
        (&view["status"], &view["ban_until"], &view["ban_reason"]),
        (&json!("active"), &Value::Null, &json!(""))
    );

    // Cooling bumps no revision: an admin update computed before it goes through, and
    // leaves it in place.
    app.admin_put(&format!("/admin/api-keys/{id}"), json!({ "weight": 3 }))
        .await
        .expect(200);
    let entry = provider_entry(&app, id).await;
    assert_eq!(
        (&entry["cooling_until"], &entry["weight"]),
        (&json!(until), &json!(3))
    );

    // A newer window with room takes the credential back.
    flush(
        &app,
        vec![with(
            usage(id, 1, 1),
            json!({ "window": window("5h", now, None) }),
        )],
    )
    .await
    .expect(200);
    assert_eq!(provider_entry(&app, id).await["cooling_until"], 0);
    let view = credential(&app, id).await;
    assert_eq!(view["quota"]["cooling_until"], Value::Null);
    assert_eq!(view["status"], "active");
    assert_eq!(
        app.desired_bus().await,
        app.bus_snapshot().await,
        "the bus matches a full sync"
    );
}

async fn an_older_window_never_replaces_a_newer_one(backend: Backend) {
    let app = spawn(backend).await;
    let group = create_group(&app, "health-order").await;
    let id = create_credential(&app, group, "sk-health-order-0001").await;
    let now = now_unix();
    let newer = json!({ "name": "7d", "used_percent": 80.0, "observed_at": now - 10 });
    flush(&app, vec![with(usage(id, 1, 1), json!({ "window": newer }))])
        .await
        .expect(200);
    let older = window("5h", now - 100, Some(now + 600));
    flush(&app, vec![with(usage(id, 1, 0), json!({ "window": older }))])
        .await
        .expect(200);
    let view = credential(&app, id).await;
    assert_eq!(
        view["quota"],
        json!({ "window": "7d", "used_percent": 80.0, "resets_at": null, "cooling_until": null, "observed_at": now - 10 })
    );
    assert_eq!(
        view["total_requests"], 2,
        "the counts of the report are taken all the same"
    );
    assert_eq!(provider_entry(&app, id).await["cooling_until"], 0);

    // Within one batch too: the later item is the older observation.
    let batch = vec![
        with(
            usage(id, 0, 0),
            json!({ "window": window("5h", now - 5, Some(now + 900)) }),
        ),
        with(usage(id, 0, 0), json!({ "window": window("5h", now - 8, None) })),
    ];
    flush(&app, batch).await.expect(200);
    assert_eq!(provider_entry(&app, id).await["cooling_until"], now + 900);
}

async fn bad_health_reports_store_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let group = create_group(&app, "health-bad").await;
    let id = create_credential(&app, group, "sk-health-bad-0001").await;
    let before = (credential(&app, id).await, app.bus_snapshot().await);
    let now = now_unix();
    let bad_windows = [
        json!({ "name": "", "observed_at": now }),
        json!({ "name": "x".repeat(33), "observed_at": now }),
        json!({ "name": "5h\u{0}", "observed_at": now }),
        json!({ "name": "5h", "used_percent": 100.5, "observed_at": now }),
        json!({ "name": "5h", "used_percent": -0.5, "observed_at": now }),
        json!({ "name": "5h", "resets_at": -1, "observed_at": now }),
        json!({ "name": "5h", "cooling_until": -1, "observed_at": now }),
        json!({ "name": "5h", "cooling_until": now + 9 * 86_400, "observed_at": now }),
        json!({ "name": "5h", "observed_at": -1 }),
    ];
    let mut bad_items: Vec<Value> = bad_windows
        .into_iter()
        .map(|w| with(usage(id, 1, 1), json!({ "window": w })))
        .collect();
    bad_items.extend([
        with(usage(id, 1, 1), json!({ "last_error": "" })),
        with(usage(id, 1, 1), json!({ "last_error": "e".repeat(257) })),
        with(usage(id, 1, 1), json!({ "last_error": "upstream\n401" })),
        with(usage(id, 1, 1), json!({ "last_used_at": -1 })),
    ]);
    let good = with(
        usage(id, 1, 1),
        json!({ "last_error": "connection refused", "window": window("5h", now, Some(now + 600)) }),
    );
    for bad in bad_items {
        // The good item comes first: the whole batch is refused, not just the bad item.
        let resp = flush(&app, vec![good.clone(), bad.clone()]).await;
        assert!(
            (400..500).contains(&resp.status),
            "{bad}: {} {}",
            resp.status,
            resp.text
        );
        assert_eq!(
            resp.body["error"]["code"], "invalid_field",
            "{bad}: {}",
            resp.text
        );
    }
    assert_eq!(
        (credential(&app, id).await, app.bus_snapshot().await),
        before,
        "nothing stored"
    );

    // In process, a value JSON cannot carry is refused the same way.
    let sink = InProcessReports {
        state: app.state.clone(),
    };
    let batch = CredentialUsageBatch {
        items: vec![CredentialUsage {
            api_key_id: id,
            requests: 1,
            success_requests: 1,
            last_used_at: now,
            last_error: None,
            window: Some(QuotaWindow {
                name: "5h".into(),
                used_percent: Some(f64::NAN),
                resets_at: None,
                cooling_until: None,
                observed_at: now,
            }),
        }],
    };
    let refused = sink.credential_usage(&batch).await;
    assert!(matches!(refused, Err(ReportError::Rejected(_))), "{refused:?}");
    assert_eq!(credential(&app, id).await, before.0);

    // The limits themselves are taken.
    let edge = with(
        usage(id, 1, 1),
        json!({ "last_error": "e".repeat(256), "window": { "name": "w".repeat(32), "used_percent": 100.0, "cooling_until": now + 8 * 86_400, "observed_at": now } }),
    );
    flush(&app, vec![edge]).await.expect(200);
    assert_eq!(
        credential(&app, id).await["quota"]["cooling_until"],
        now + 8 * 86_400
    );
}

struct Fleet {
    group_a: i64,
    group_b: i64,
    /// In group A: active; group A: auto_disabled; group B: active.
    creds: [i64; 3],
}

/// Two groups, three credentials, and reports: c0 10 requests / 9 successes, c1 5 / 1
/// cooling, c2 3 / 3.
async fn fleet(app: &TestApp) -> Fleet {
    let group_a = create_group(app, "summary-a").await;
    let group_b = create_group(app, "summary-b").await;
    let c0 = create_credential(app, group_a, "sk-summary-0000").await;
    let c1 = create_credential(app, group_a, "sk-summary-0001").await;
    let c2 = create_credential(app, group_b, "sk-summary-0002").await;
    app.admin_put(
        &format!("/admin/api-keys/{c1}"),
        json!({ "status": "auto_disabled" }),
    )
    .await
    .expect(200);
    let now = now_unix();
    let items = vec![
        with(
            usage(c0, 10, 9),
            json!({ "last_used_at": now, "last_error": "upstream 500" }),
        ),
        with(
            usage(c1, 5, 1),
            json!({ "window": window("5h", now, Some(now + 600)) }),
        ),
        usage(c2, 3, 3),
    ];
    flush(app, items).await.expect(200);
    Fleet {
        group_a,
        group_b,
        creds: [c0, c1, c2],
    }
}

fn ids(summary: &Value) -> Vec<i64> {
    summary["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["id"].as_i64().expect("id"))
        .collect()
}

async fn summary(app: &TestApp, query: &str) -> Value {
    app.admin_get(&format!("/admin/apikey-stats/summary{query}"))
        .await
        .expect(200)
        .body
}

async fn summary_sums_up_every_credential(backend: Backend) {
    let app = spawn(backend).await;
    let empty = summary(&app, "").await;
    assert_eq!(
        (&empty["credentials"], &empty["success_rate"]),
        (&json!(0), &Value::Null)
    );
    let f = fleet(&app).await;
    let [c0, c1, c2] = f.creds;

    let all = summary(&app, "").await;
    assert_eq!(all["credentials"], 3);
    assert_eq!(
        all["by_status"],
        json!({ "active": 2, "auto_disabled": 1, "manual_disabled": 0 })
    );
    assert_eq!(all["cooling"], 1);
    assert_eq!(
        (
            &all["total_requests"],
            &all["success_requests"],
            &all["failure_requests"]
        ),
        (&json!(18), &json!(13), &json!(5))
    );
    assert_eq!(all["success_rate"], json!(13.0 / 18.0));
    assert_eq!(ids(&all), [c1, c0, c2], "most failures first");
    let first = &all["items"][0];
    assert_eq!(
        (
            &first["group_id"],
            &first["group"],
            &first["status"],
            &first["failure_requests"]
        ),
        (
            &json!(f.group_a),
            &json!("summary-a"),
            &json!("auto_disabled"),
            &json!(4)
        )
    );
    assert!(first["cooling_until"].as_i64().is_some(), "{first}");
    assert_eq!(all["items"][1]["last_error"], "upstream 500");
    assert_eq!(all["items"][2]["success_rate"], json!(1.0));

    let a = summary(&app, &format!("?group_id={}", f.group_a)).await;
    assert_eq!((&a["credentials"], &a["total_requests"]), (&json!(2), &json!(15)));
    assert_eq!(ids(&a), [c1, c0]);
    let b = summary(&app, &format!("?group_id={}", f.group_b)).await;
    assert_eq!((ids(&b), &b["cooling"]), (vec![c2], &json!(0)));
    let disabled = summary(&app, "?status=auto_disabled").await;
    assert_eq!(ids(&disabled), [c1]);
    assert_eq!(
        disabled["by_status"],
        json!({ "active": 0, "auto_disabled": 1, "manual_disabled": 0 })
    );
    let both = summary(&app, &format!("?group_id={}&status=active", f.group_a)).await;
    assert_eq!(ids(&both), [c0]);
    let none = summary(&app, "?group_id=999999").await;
    assert_eq!((&none["credentials"], ids(&none)), (&json!(0), vec![]));

    let limited = summary(&app, "?limit=1").await;
    assert_eq!(ids(&limited), [c1], "the list is cut");
    assert_eq!(
        (&limited["credentials"], &limited["total_requests"]),
        (&json!(3), &json!(18)),
        "not the totals"
    );
}

async fn summary_counts_the_log_from_since(backend: Backend) {
    let app = spawn(backend).await;
    let f = fleet(&app).await;
    let [c0, c1, c2] = f.creds;
    let now = now_unix();
    let record = |n: u32, credential: i64, status: u16, error_code: Option<&str>, created_at: i64| {
        json!({
            "request_id": format!("req-{n}"), "master_id": 1, "key_id": 1, "namespace": "default",
            "public_model": "gpt-4o", "endpoint": "/v1/chat/completions", "status_code": status,
            "latency_ms": 12, "stream": true, "created_at": created_at,
            "group_id": 1, "api_key_id": credential, "error_code": error_code,
        })
    };
    let items = vec![
        record(1, c0, 200, None, now - 10),
        record(2, c0, 502, Some("upstream_error"), now - 10),
        record(3, c0, 200, None, now - 10_000),
        record(4, c2, 200, Some("stream_cut"), now - 50),
        record(5, c2, 200, None, now - 100),
    ];
    let stored = internal_post(&app, "/internal/logs", json!({ "items": items }))
        .await
        .expect(202);
    assert_eq!(stored.body["accepted"], 5, "{}", stored.text);

    let recent = summary(&app, &format!("?since={}", now - 100)).await;
    assert_eq!(recent["credentials"], 3, "every credential, logged or not");
    assert_eq!(
        (
            &recent["total_requests"],
            &recent["success_requests"],
            &recent["failure_requests"]
        ),
        (&json!(4), &json!(2), &json!(2))
    );
    assert_eq!(ids(&recent), [c0, c2, c1], "one failure each, then by id; none");
    let counts = |i: usize| {
        let item = &recent["items"][i];
        (item["total_requests"].clone(), item["success_requests"].clone())
    };
    assert_eq!(
        counts(0),
        (json!(2), json!(1)),
        "since is inclusive; older records are not counted"
    );
    assert_eq!(
        counts(1),
        (json!(2), json!(1)),
        "a stream cut after its 200 is a failure"
    );
    assert_eq!(counts(2), (json!(0), json!(0)));
    assert_eq!(recent["items"][2]["success_rate"], Value::Null);
    assert_eq!(recent["cooling"], 1, "cooling is now, whatever since");

    let narrowed = summary(&app, &format!("?since={}&group_id={}", now - 20_000, f.group_a)).await;
    assert_eq!(
        (&narrowed["total_requests"], ids(&narrowed)),
        (&json!(3), vec![c0, c1])
    );
}

async fn summary_refuses_bad_filters(backend: Backend) {
    let app = spawn(backend).await;
    for query in [
        "group_id=abc",
        "group_id=0",
        "group_id=-3",
        "status=banned",
        "status=",
        "since=-1",
        "since=yesterday",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "page=2",
    ] {
        app.admin_get(&format!("/admin/apikey-stats/summary?{query}"))
            .await
            .expect_error(400, "invalid_query");
    }
    let resp = app
        .request(reqwest::Method::GET, "/admin/apikey-stats/summary", None, None)
        .await;
    assert_eq!(resp.status, 401, "{}", resp.text);
    let limit = summary(&app, "?limit=1000").await;
    assert_eq!(limit["items"], json!([]));
}
