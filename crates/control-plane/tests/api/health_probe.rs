//! The active probe of a group's credentials (`health_check`): disabled or banned API-key
//! credentials that answer the free model list again are re-enabled with their ban
//! lifted; those that still fail, `manual_disabled` ones and groups with the probe off
//! are left alone; subscription credentials are probed (a token grant) only when the
//! group says `metered`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ez_contract::time::now_unix;
use ez_control_plane::health_probe::{HealthProbe, Probe};
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(working_credentials_come_back_broken_ones_stay);

#[derive(Clone, Default)]
struct Upstream {
    model_lists: Arc<AtomicUsize>,
    grants: Arc<AtomicUsize>,
}

/// `GET /v1/models`: 200 for keys `sk-good…`, 401 otherwise.
async fn models(State(u): State<Upstream>, headers: HeaderMap) -> Response {
    u.model_lists.fetch_add(1, Ordering::SeqCst);
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if key.starts_with("Bearer sk-good") {
        Json(json!({ "object": "list", "data": [{ "id": "gpt-4o-mini", "object": "model" }] }))
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": { "message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key" } })),
        )
            .into_response()
    }
}

/// Claude's token endpoint: a token for any refresh token.
async fn token(State(u): State<Upstream>) -> Response {
    let n = u.grants.fetch_add(1, Ordering::SeqCst) + 1;
    Json(json!({ "access_token": format!("at-probe-{n}"), "expires_in": 3600 })).into_response()
}

async fn start() -> (String, Upstream) {
    let u = Upstream::default();
    let app = axum::Router::new()
        .route("/v1/models", axum::routing::get(models))
        .route("/v1/oauth/token", axum::routing::post(token))
        .with_state(u.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, u)
}

async fn group(app: &TestApp, body: Value) -> i64 {
    app.admin_post("/admin/provider-groups", body)
        .await
        .expect(201)
        .id()
}

/// A credential of `group` (fields of `body`), then put in `state` (fields of `change`).
async fn credential(app: &TestApp, group: i64, mut body: Value, change: Value) -> i64 {
    body["group_id"] = group.into();
    let id = app.admin_post("/admin/api-keys", body).await.expect(201).id();
    app.admin_put(&format!("/admin/api-keys/{id}"), change)
        .await
        .expect(200);
    id
}

async fn working_credentials_come_back_broken_ones_stay(backend: Backend) {
    let (origin, upstream) = start().await;
    let db = TestDatabase::create(backend).await;
    let token_url = format!("{origin}/v1/oauth/token");
    let app = TestApp::start_with(db, test_bus(backend).await, move |config| {
        config.token_refresh.claude_code_token_url = token_url;
    })
    .await;
    let disabled = json!({ "status": "auto_disabled", "ban_reason": "token refresh refused" });
    let banned = json!({ "ban_until": now_unix() + 600, "ban_reason": "upstream 401: invalid_api_key" });

    let probed = group(&app, json!({ "name": "probed", "type": "compatible", "base_url": format!("{origin}/v1"), "health_check": "on" })).await;
    let back = credential(&app, probed, json!({ "api_key": "sk-good-1" }), disabled.clone()).await;
    let unbanned = credential(&app, probed, json!({ "api_key": "sk-good-2" }), banned.clone()).await;
    let still_bad = credential(&app, probed, json!({ "api_key": "sk-bad-3" }), disabled.clone()).await;
    let manual = credential(
        &app,
        probed,
        json!({ "api_key": "sk-good-4" }),
        json!({ "status": "manual_disabled" }),
    )
    .await;
    let healthy = credential(&app, probed, json!({ "api_key": "sk-good-5" }), json!({})).await;
    // Banned for its quota: a model list cannot tell whether it came back.
    let broke = json!({ "ban_until": now_unix() + 600, "ban_reason": "quota exhausted (upstream 429): insufficient_quota" });
    let quota = credential(&app, probed, json!({ "api_key": "sk-good-7" }), broke).await;
    let off = group(
        &app,
        json!({ "name": "not-probed", "type": "compatible", "base_url": format!("{origin}/v1") }),
    )
    .await;
    let ignored = credential(&app, off, json!({ "api_key": "sk-good-6" }), disabled.clone()).await;
    let claude = group(
        &app,
        json!({ "name": "claude-pool", "type": "claude-code", "health_check": "on" }),
    )
    .await;
    let account = credential(
        &app,
        claude,
        json!({ "access_token": "at-old", "refresh_token": "rt-1" }),
        disabled.clone(),
    )
    .await;

    let probe = HealthProbe::new(
        app.state.clone(),
        ez_config::Config::defaults().health_check,
        app.state.token_refresh.as_ref().clone(),
    );
    let mut outcomes = probe.probe_due().await.unwrap();
    outcomes.sort_by_key(|(id, _)| *id);
    // The subscription account is metered: not a candidate while the group says `on`.
    let mut expected = vec![
        (back, Probe::Recovered),
        (unbanned, Probe::Recovered),
        (still_bad, Probe::Failed),
    ];
    expected.sort_by_key(|(id, _)| *id);
    assert_eq!(outcomes, expected);
    assert_eq!(
        upstream.model_lists.load(Ordering::SeqCst),
        3,
        "one free request each"
    );
    assert_eq!(
        upstream.grants.load(Ordering::SeqCst),
        0,
        "metered accounts only when asked"
    );

    let view = |id: i64| {
        let app = &app;
        async move {
            app.admin_get(&format!("/admin/api-keys/{id}"))
                .await
                .expect(200)
                .body
        }
    };
    for id in [back, unbanned] {
        let v = view(id).await;
        assert_eq!(
            (v["status"].as_str(), &v["ban_until"], v["ban_reason"].as_str()),
            (Some("active"), &Value::Null, Some("")),
            "{v}"
        );
    }
    assert_eq!(view(still_bad).await["status"], "auto_disabled");
    assert_eq!(view(manual).await["status"], "manual_disabled");
    assert_eq!(view(healthy).await["status"], "active");
    assert!(
        view(quota).await["ban_until"].as_i64().is_some(),
        "a quota ban runs its course"
    );
    assert_eq!(view(ignored).await["status"], "auto_disabled");
    // The snapshot balancers route on has them back.
    let entry = app
        .state
        .bus
        .hash_get(ez_contract::bus_keys::PROVIDERS, &back.to_string())
        .await
        .unwrap()
        .expect("synced");
    assert_eq!(serde_json::from_str::<Value>(&entry).unwrap()["status"], "active");

    // Asked for metered probes too: the subscription gets a token grant and comes back.
    app.admin_put(
        &format!("/admin/provider-groups/{claude}"),
        json!({ "health_check": "metered" }),
    )
    .await
    .expect(200);
    let outcomes = probe.probe_due().await.unwrap();
    assert!(outcomes.contains(&(account, Probe::Recovered)), "{outcomes:?}");
    assert_eq!(upstream.grants.load(Ordering::SeqCst), 1);
    let key = app.state.store.get_api_key(account).await.unwrap();
    assert_eq!(
        (key.status.as_str(), key.access_token.expose()),
        ("active", "at-probe-1")
    );
    // Nothing left to probe but the one that still fails.
    let again = probe.probe_due().await.unwrap();
    assert_eq!(again, vec![(still_bad, Probe::Failed)]);

    // A credential changed while it was probed keeps the change.
    let stale = app.state.store.get_api_key(still_bad).await.unwrap().revision;
    app.admin_put(
        &format!("/admin/api-keys/{still_bad}"),
        json!({ "status": "manual_disabled" }),
    )
    .await
    .expect(200);
    assert!(
        !app.state
            .store
            .reenable_credential(still_bad, stale)
            .await
            .unwrap()
    );
    assert_eq!(view(still_bad).await["status"], "manual_disabled");
    assert!(probe.probe_due().await.unwrap().is_empty());

    // A bad value is refused.
    app.admin_put(
        &format!("/admin/provider-groups/{claude}"),
        json!({ "health_check": "always" }),
    )
    .await
    .expect(400);
}
