//! Bad input on what balancers report (`/internal/logs`, `/internal/stats/flush`,
//! `/internal/apikey-stats/flush`, `/internal/apikey-bans`) and on the log listings: a 4xx
//! in the error envelope, never a 500, and nothing stored — no log record, no usage, no
//! ban. (Single log records that cannot be stored are dropped without failing their
//! batch: `log_pipeline.rs`.) A valid report of each kind is then taken, so the refusals were not blanket ones.

use ez_config::Config;
use ez_contract::time::now_unix;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, TestApp};
use crate::probe_support::{Auth, Body, Probe, Row, admin, bearer, raw_json, send};

both_backends!(
    internal_auth_is_enforced,
    bad_reports_change_nothing,
    bad_log_queries_are_400
);

const STATS_TOKEN: &str = "stats-token-0123456789abcdef";
const LOGS: &str = "POST /internal/logs";
const KEYS: &str = "POST /internal/stats/flush";
const CREDS: &str = "POST /internal/apikey-stats/flush";
const BANS: &str = "POST /internal/apikey-bans";

async fn spawn(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDatabase::create(backend).await;
    let bus = test_bus(backend).await;
    TestApp::start_with(db, bus, configure).await
}

async fn with_token(backend: Backend) -> TestApp {
    spawn(backend, |c| {
        c.internal.stats_token = Some(ez_contract::SecretToken::from_plaintext(STATS_TOKEN));
    })
    .await
}

fn internal() -> Auth {
    Auth::Header("x-internal-token", STATS_TOKEN.to_owned())
}

/// A master with a child key, a credential with `auto_ban` and one without.
struct Fixture {
    mk: String,
    key: String,
    key_id: i64,
    cred: i64,
    manual: i64,
}

async fn fixture(app: &TestApp) -> Fixture {
    let body = json!({ "name": "openai-main", "type": "openai", "models": ["gpt-4o"] });
    let g = app
        .admin_post("/admin/provider-groups", body)
        .await
        .expect(201)
        .id();
    let body = json!({ "group_id": g, "api_key": "sk-upstream-fixture-0001" });
    let cred = app.admin_post("/admin/api-keys", body).await.expect(201).id();
    let body = json!({ "group_id": g, "api_key": "sk-upstream-fixture-0002", "auto_ban": false });
    let manual = app.admin_post("/admin/api-keys", body).await.expect(201).id();
    let (_, mk) = app.create_master(json!({ "name": "acme" })).await;
    let (key_id, key) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    Fixture {
        mk,
        key,
        key_id,
        cred,
        manual,
    }
}

fn record() -> Value {
    json!({
        "request_id": "req-1", "master_id": 1, "key_id": 1, "namespace": "default",
        "public_model": "gpt-4o", "endpoint": "/v1/chat/completions", "status_code": 200,
        "latency_ms": 12, "stream": false, "created_at": now_unix(),
    })
}

/// `base` with the fields of `patch` set (a `null` removes one).
fn with(base: &Value, patch: Value) -> Value {
    let mut out = base.clone();
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            out.as_object_mut().expect("object").remove(k);
        } else {
            out[k] = v.clone();
        }
    }
    out
}

fn items(item: Value) -> Value {
    json!({ "items": [item] })
}

fn valid_bodies(f: &Fixture) -> Vec<(&'static str, Value)> {
    let hash = ez_contract::token::digest(&f.key);
    vec![
        (LOGS, items(record())),
        (
            KEYS,
            items(
                json!({ "token_hash": hash, "requests": 3, "tokens": 100, "last_accessed_at": now_unix() }),
            ),
        ),
        (
            CREDS,
            items(json!({ "api_key_id": f.cred, "requests": 5, "success_requests": 4 })),
        ),
        (
            BANS,
            json!({ "api_key_id": f.cred, "ban_until": now_unix() + 600, "reason": "upstream 401" }),
        ),
    ]
}

/// Stored log records, usage totals, credentials and the bus.
async fn snapshot(app: &TestApp, f: &Fixture) -> Value {
    let logs = app.admin_get("/admin/logs?page_size=500").await.expect(200).body;
    let mut creds = Vec::new();
    for id in [f.cred, f.manual] {
        let body = app
            .admin_get(&format!("/admin/api-keys/{id}"))
            .await
            .expect(200)
            .body;
        let usage = app
            .state
            .store
            .credential_usage(id)
            .await
            .expect("credential usage");
        creds.push(json!({ "credential": body, "usage": [usage.0, usage.1] }));
    }
    let usage = app.state.store.key_usage(f.key_id).await.expect("key usage");
    json!({
        "logs": logs, "credentials": creds, "key_usage": [usage.0, usage.1],
        "bus": app.bus_snapshot().await,
    })
}

async fn internal_auth_is_enforced(backend: Backend) {
    let app = with_token(backend).await;
    let f = fixture(&app).await;
    let before = snapshot(&app, &f).await;
    let mut probe = Probe::new(&app);
    let (missing, invalid) = (&["missing_internal_token"][..], &["invalid_internal_token"][..]);
    for (route, body) in valid_bodies(&f) {
        let body = Body::Json(body);
        probe.check(route, &Auth::None, &body, 401, missing).await;
        probe.check(route, &admin(), &body, 401, missing).await;
        probe
            .check(route, &bearer(STATS_TOKEN), &body, 401, missing)
            .await;
        probe.check(route, &bearer(&f.mk), &body, 401, missing).await;
        let wrong = Auth::Header("x-internal-token", "wrong-token".into());
        probe.check(route, &wrong, &body, 401, invalid).await;
        let admin_as_internal = Auth::Header("x-internal-token", ADMIN_TOKEN.into());
        probe.check(route, &admin_as_internal, &body, 401, invalid).await;
        let empty = Auth::Header("x-internal-token", String::new());
        probe.check(route, &empty, &body, 401, invalid).await;
        // The token is checked before the body is read.
        probe
            .check(route, &Auth::None, &raw_json("{\"items\":"), 401, missing)
            .await;
    }
    let after = snapshot(&app, &f).await;
    probe.assert_none(&probe.problems(&before, &after, &[STATS_TOKEN]));

    // No token configured: the internal API is off, whatever the caller sends.
    let off = spawn(backend, |_| {}).await;
    let f = fixture(&off).await;
    let before = snapshot(&off, &f).await;
    let mut probe = Probe::new(&off);
    for (route, body) in valid_bodies(&f) {
        let body = Body::Json(body);
        for auth in [Auth::None, internal(), admin()] {
            probe
                .check(route, &auth, &body, 401, &["internal_api_disabled"])
                .await;
        }
    }
    let after = snapshot(&off, &f).await;
    probe.assert_none(&probe.problems(&before, &after, &[]));

    // No token but `allow_anonymous`: taken without a header.
    let open = spawn(backend, |c| c.internal.allow_anonymous = true).await;
    let f = fixture(&open).await;
    for (route, body) in valid_bodies(&f) {
        let resp = send(&open, route, &Auth::None, &Body::Json(body)).await;
        let status = if route == LOGS { 202 } else { 200 };
        assert_eq!(resp.status, status, "{route} anonymously: {}", resp.text);
    }
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

async fn bad_reports_change_nothing(backend: Backend) {
    let app = with_token(backend).await;
    let f = fixture(&app).await;
    let before = snapshot(&app, &f).await;
    let mut probe = Probe::new(&app);
    let auth = internal();

    // Bodies that are not a report at all.
    for route in [LOGS, KEYS, CREDS, BANS] {
        probe
            .check(route, &auth, &raw_json("{\"items\":"), 400, &["invalid_json"])
            .await;
        probe
            .check(route, &auth, &raw_json(""), 400, &["invalid_json"])
            .await;
        for text in ["[]", "null", "\"items\"", "42"] {
            probe
                .check(route, &auth, &raw_json(text), 400, &["invalid_body"])
                .await;
        }
        let body = Body::Raw(Some("text/plain"), "{\"items\":[]}".into());
        probe
            .check(route, &auth, &body, 415, &["unsupported_media_type"])
            .await;
        probe.json(route, &auth, json!({}), 400, "invalid_body").await;
        probe
            .json(
                route,
                &auth,
                json!({ "items": [], "extra": 1 }),
                400,
                "invalid_body",
            )
            .await;
        probe
            .json(route, &auth, json!({ "items": {} }), 400, "invalid_body")
            .await;
    }

    let r = record();
    let (hash, now) = (ez_contract::token::digest(&f.key), now_unix());
    let ku = json!({ "token_hash": hash, "requests": 1, "tokens": 1, "last_accessed_at": now });
    let cu = json!({ "api_key_id": f.cred, "requests": 2, "success_requests": 1 });
    let ban = json!({ "api_key_id": f.cred, "ban_until": now + 600, "reason": "upstream 401" });
    let l = |patch: Value| (LOGS.to_owned(), internal(), items(with(&r, patch)));
    let k = |patch: Value| (KEYS.to_owned(), internal(), items(with(&ku, patch)));
    let c = |patch: Value| (CREDS.to_owned(), internal(), items(with(&cu, patch)));
    let b = |patch: Value| (BANS.to_owned(), internal(), with(&ban, patch));
    let many = |item: &Value| json!({ "items": vec![item.clone(); 10_001] });
    let bad_field = |(route, auth, body): (String, Auth, Value), code: &'static str| -> Row {
        let status = match code {
            "api_key_not_found" => 404,
            "auto_ban_disabled" => 409,
            _ => 400,
        };
        (route, auth, body, status, code)
    };
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // Unknown log-record fields are ignored (a newer balancer's): `log_pipeline.rs`.
        bad_field(l(json!({ "status_code": "200" })), "invalid_body"),
        bad_field(l(json!({ "master_id": "1" })), "invalid_body"),
        bad_field(l(json!({ "stream": null })), "invalid_body"),
        bad_field(l(json!({ "status_code": -1 })), "invalid_body"),
        bad_field(l(json!({ "status_code": 70_000 })), "invalid_body"),
        // A log record whose values cannot be stored is dropped alone (its batch is
        // taken) and over-long text is cut: see `log_pipeline.rs`.
        (LOGS.into(), internal(), many(&r), 400, "invalid_field"),
        bad_field(k(json!({ "token_hash": &hash[..63] })), "invalid_field"),
        bad_field(k(json!({ "token_hash": format!("{hash}0") })), "invalid_field"),
        bad_field(k(json!({ "token_hash": "g".repeat(64) })), "invalid_field"),
        bad_field(k(json!({ "token_hash": "" })), "invalid_field"),
        bad_field(k(json!({ "requests": -1 })), "invalid_field"),
        bad_field(k(json!({ "tokens": -1 })), "invalid_field"),
        bad_field(k(json!({ "last_accessed_at": -1 })), "invalid_field"),
        bad_field(k(json!({ "requests": "1" })), "invalid_body"),
        bad_field(k(json!({ "requests": 1.5 })), "invalid_body"),
        bad_field(k(json!({ "tokens": 1e20 })), "invalid_body"),
        bad_field(k(json!({ "key_id": f.key_id })), "invalid_body"),
        (KEYS.into(), internal(), json!({ "items": [ku.clone(), with(&ku, json!({ "requests": -1 }))] }), 400, "invalid_field"),
        (KEYS.into(), internal(), many(&ku), 400, "invalid_field"),
        bad_field(c(json!({ "success_requests": 3 })), "invalid_field"),
        bad_field(c(json!({ "requests": -1, "success_requests": -2 })), "invalid_field"),
        bad_field(c(json!({ "success_requests": -1 })), "invalid_field"),
        bad_field(c(json!({ "api_key_id": "1" })), "invalid_body"),
        bad_field(c(json!({ "failed": 1 })), "invalid_body"),
        (CREDS.into(), internal(), json!({ "items": [cu.clone(), with(&cu, json!({ "success_requests": 9 }))] }), 400, "invalid_field"),
        (CREDS.into(), internal(), many(&cu), 400, "invalid_field"),
        bad_field(b(json!({ "ban_until": now - 10 })), "invalid_field"),
        bad_field(b(json!({ "ban_until": 0 })), "invalid_field"),
        bad_field(b(json!({ "ban_until": -1 })), "invalid_field"),
        bad_field(b(json!({ "ban_until": now + 31 * 86_400 })), "invalid_field"),
        bad_field(b(json!({ "ban_until": i64::MAX })), "invalid_field"),
        bad_field(b(json!({ "reason": long(301) })), "invalid_field"),
        bad_field(b(json!({ "reason": "upstream\u{0}401" })), "invalid_field"),
        bad_field(b(json!({ "reason": null })), "invalid_body"),
        bad_field(b(json!({ "ban_until": "soon" })), "invalid_body"),
        bad_field(b(json!({ "group_id": 1 })), "invalid_body"),
        bad_field(b(json!({ "api_key_id": 999_999 })), "api_key_not_found"),
        bad_field(b(json!({ "api_key_id": -1 })), "api_key_not_found"),
        bad_field(b(json!({ "api_key_id": f.manual })), "auto_ban_disabled"),
    ];
    probe.rows(rows).await;
    let after = snapshot(&app, &f).await;
    probe.assert_none(&probe.problems(&before, &after, &[]));

    // Valid reports are taken and show.
    let total = before["logs"]["total"].as_i64().expect("total");
    let batch =
        json!({ "items": [r.clone(), with(&r, json!({ "request_id": "req-2", "status_code": 429 }))] });
    let resp = send(&app, LOGS, &auth, &Body::Json(batch)).await.expect(202);
    assert_eq!(resp.body, json!({ "accepted": 2, "rejected": 0 }));
    let logs = app.admin_get("/admin/logs?status=429").await.expect(200).body;
    assert_eq!(logs["total"], 1, "{logs}");
    assert_eq!(logs["items"][0]["request_id"], "req-2", "{logs}");
    let logs = app.admin_get("/admin/logs").await.expect(200).body;
    assert_eq!(logs["total"].as_i64(), Some(total + 2), "{logs}");
    let resp = send(&app, KEYS, &auth, &Body::Json(items(ku.clone())))
        .await
        .expect(200);
    assert_eq!(resp.body, json!({ "accepted": 1 }));
    assert_eq!(app.state.store.key_usage(f.key_id).await.expect("usage"), (1, 1));
    let resp = send(&app, CREDS, &auth, &Body::Json(items(cu))).await.expect(200);
    assert_eq!(resp.body, json!({ "accepted": 1 }));
    assert_eq!(
        app.state.store.credential_usage(f.cred).await.expect("usage"),
        (2, 1)
    );
    send(&app, BANS, &auth, &Body::Json(ban)).await.expect(200);
    let cred = app
        .admin_get(&format!("/admin/api-keys/{}", f.cred))
        .await
        .expect(200)
        .body;
    assert_eq!(cred["ban_until"].as_i64(), Some(now + 600), "{cred}");

    // Totals that would overflow are refused, not a server error.
    let huge = items(with(&ku, json!({ "requests": i64::MAX, "tokens": i64::MAX })));
    let first = send(&app, KEYS, &auth, &Body::Json(huge.clone())).await;
    let second = send(&app, KEYS, &auth, &Body::Json(huge)).await;
    for resp in [first, second] {
        assert!(resp.status < 500, "i64::MAX usage: {} {}", resp.status, resp.text);
    }
}

async fn bad_log_queries_are_400(backend: Backend) {
    let app = with_token(backend).await;
    let f = fixture(&app).await;
    let (other, _) = app.create_master(json!({ "name": "other" })).await;
    let before = snapshot(&app, &f).await;
    let mut probe = Probe::new(&app);
    let long_model = format!("model={}", long(301));
    #[rustfmt::skip]
    let queries = [
        "status=abc", "status=99", "status=700", "status=", "status=2OO", "since=-1", "until=-1",
        "since=abc", "page=0", "page=-1", "page_size=0", "page_size=1000", "page=99999999999999999999",
        "bogus=1", "key_id=abc", "master_id=1.5", &long_model,
    ];
    for (path, auth) in [("/admin/logs", admin()), ("/v1/logs", bearer(&f.mk))] {
        for query in queries {
            let route = format!("GET {path}?{query}");
            probe
                .check(&route, &auth, &Body::None, 400, &["invalid_query"])
                .await;
        }
    }
    let route = format!("GET /v1/logs?master_id={other}");
    probe
        .check(&route, &bearer(&f.mk), &Body::None, 400, &["invalid_query"])
        .await;
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("GET /v1/logs".into(), bearer(&f.key), Value::Null, 403, "master_required"),
        ("GET /v1/logs".into(), admin(), Value::Null, 403, "master_required"),
        ("GET /v1/logs".into(), Auth::None, Value::Null, 401, "missing_credentials"),
        ("GET /v1/logs".into(), internal(), Value::Null, 401, "missing_credentials"),
        ("GET /v1/logs".into(), bearer("sk-not-a-key"), Value::Null, 401, "invalid_credentials"),
        ("GET /admin/logs".into(), bearer(&f.key), Value::Null, 403, "admin_required"),
        ("GET /admin/logs".into(), bearer(&f.mk), Value::Null, 403, "admin_required"),
        ("GET /admin/logs".into(), Auth::None, Value::Null, 401, "missing_credentials"),
        ("GET /admin/logs".into(), bearer(STATS_TOKEN), Value::Null, 401, "invalid_credentials"),
        ("GET /admin/masters/999999/realtime".into(), admin(), Value::Null, 404, "master_not_found"),
        ("GET /admin/masters/abc/realtime".into(), admin(), Value::Null, 400, "invalid_path"),
        (format!("GET /admin/masters/{other}/realtime"), bearer(&f.mk), Value::Null, 403, "admin_required"),
        ("GET /admin/realtime".into(), bearer(&f.mk), Value::Null, 403, "admin_required"),
        ("GET /v1/realtime".into(), bearer(&f.key), Value::Null, 403, "master_required"),
    ];
    probe.rows(rows).await;
    let after = snapshot(&app, &f).await;
    probe.assert_none(&probe.problems(&before, &after, &[]));
    // The same listings with good queries answer.
    app.admin_get("/admin/logs?status=error&since=0&page=1&page_size=500&master_id=1")
        .await
        .expect(200);
    app.get("/v1/logs?status=success&model=gpt-4o", &f.mk)
        .await
        .expect(200);
    app.admin_get(&format!("/admin/masters/{other}/realtime"))
        .await
        .expect(200);
}
