//! Cross-cutting behaviour: health, metrics, request ids, OpenAPI, sessions, secrets.

use std::collections::BTreeSet;

use ez_control_plane::testing::Backend;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, TestApp, captured_logs};

both_backends!(
    health_reports_database_and_bus,
    request_ids_are_kept_or_generated,
    metrics_are_prometheus_text,
    login_issues_sessions_for_admin_and_masters,
    secrets_never_reach_logs_or_errors,
);

async fn health_reports_database_and_bus(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let resp = app
        .request(reqwest::Method::GET, "/health", None, None)
        .await
        .expect(200);
    assert_eq!(resp.body["status"], "ok");
    assert_eq!(resp.body["database"]["status"], "ok");
    assert_eq!(resp.body["bus"]["status"], "ok");
    let (db, bus) = match backend {
        Backend::Embedded => ("sqlite", "memory"),
        Backend::Real => ("postgres", "redis"),
    };
    assert_eq!(resp.body["database"]["kind"], db);
    assert_eq!(resp.body["bus"]["kind"], bus);

    // With the database gone, health says so with a 503.
    app.state.store.close().await;
    let resp = app
        .request(reqwest::Method::GET, "/health", None, None)
        .await
        .expect(503);
    assert_eq!(resp.body["database"]["status"], "down");
    assert_eq!(resp.body["status"], "degraded");
}

async fn request_ids_are_kept_or_generated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let send = |id: Option<&'static str>, path: &'static str| {
        let mut req = app.client.get(format!("{}{path}", app.base));
        if let Some(id) = id {
            req = req.header("x-request-id", id);
        }
        req.send()
    };
    let is_generated = |v: &str| {
        v.len() == 32
            && v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };

    let resp = send(Some("client-id-123"), "/health").await.unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-id-123");
    let resp = send(Some("bad id with spaces"), "/health").await.unwrap();
    assert!(is_generated(resp.headers()["x-request-id"].to_str().unwrap()));
    let resp = send(None, "/admin/masters").await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(is_generated(resp.headers()["x-request-id"].to_str().unwrap()));
    let resp = send(None, "/no/such/route").await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(is_generated(resp.headers()["x-request-id"].to_str().unwrap()));
    let a = send(None, "/health").await.unwrap();
    let b = send(None, "/health").await.unwrap();
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
}

async fn metrics_are_prometheus_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.admin_get("/admin/masters").await.expect(200);
    let resp = app
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await
        .expect(200);
    assert!(
        resp.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        resp.text.contains("# TYPE ezapi_http_requests_total counter"),
        "{}",
        resp.text
    );
    assert!(resp.text.contains(r#"route="/admin/masters""#), "{}", resp.text);
    assert!(
        resp.text.contains("ezapi_http_request_duration_seconds_bucket"),
        "{}",
        resp.text
    );
    // Every family shown is one of the control plane's, named `ezapi_…` and described.
    let typed: Vec<&str> = resp
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(typed.contains(&"ezapi_http_requests_total"), "{typed:?}");
    for family in typed {
        assert!(family.starts_with("ezapi_"), "{family}");
        assert!(
            ez_control_plane::metrics::FAMILIES.contains(&family),
            "{family} is not declared in ez_control_plane::metrics"
        );
        assert!(
            resp.text.contains(&format!("# HELP {family} ")),
            "{family} has no description:\n{}",
            resp.text
        );
    }
}

async fn login_issues_sessions_for_admin_and_masters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let login = |body: Value| app.request(reqwest::Method::POST, "/auth/login", None, Some(body));

    let admin = login(json!({ "admin_token": ADMIN_TOKEN })).await.expect(200);
    assert_eq!(admin.body["type"], "admin");
    assert!(admin.body["expires_at"].as_i64().unwrap() > ez_contract::time::now_unix() + 3600);
    let admin_jwt = admin.str("token");
    app.get("/admin/masters", &admin_jwt).await.expect(200);
    assert_eq!(app.whoami(&admin_jwt).await.expect(200).body["type"], "admin");

    let (master_id, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let master_jwt = app.post_login(json!({ "master_key": master_key })).await;
    app.post("/v1/tokens", &master_jwt, json!({})).await.expect(201);
    app.get("/admin/masters", &master_jwt)
        .await
        .expect_error(403, "admin_required");
    assert_eq!(app.whoami(&master_jwt).await.expect(200).body["id"], master_id);

    login(json!({ "admin_token": "wrong-token-wrong-token" }))
        .await
        .expect_error(401, "invalid_credentials");
    login(json!({ "master_key": "ezm-0000000000000000000000000000000000000000" }))
        .await
        .expect_error(401, "invalid_credentials");
    login(json!({ "admin_token": ADMIN_TOKEN, "master_key": master_key }))
        .await
        .expect_error(400, "invalid_body");
    login(json!({})).await.expect_error(400, "invalid_body");

    // A tampered token is refused.
    let mut tampered = master_jwt.clone();
    tampered.pop();
    tampered.push(if master_jwt.ends_with('A') { 'B' } else { 'A' });
    app.get("/v1/tokens", &tampered)
        .await
        .expect_error(401, "invalid_credentials");

    // Suspended masters cannot log in; their sessions stop working.
    app.admin_put(
        &format!("/admin/masters/{master_id}"),
        json!({ "status": "suspended" }),
    )
    .await
    .expect(200);
    login(json!({ "master_key": master_key }))
        .await
        .expect_error(403, "master_suspended");
    app.get("/v1/tokens", &master_jwt)
        .await
        .expect_error(403, "master_suspended");
}

async fn secrets_never_reach_logs_or_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app.create_master(json!({ "name": "secret-test" })).await;
    let (_, key) = app
        .issue_key(&master_key, json!({ "deny_ips": ["127.0.0.1"] }))
        .await;
    let jwt = app.post_login(json!({ "master_key": master_key })).await;
    let rotated = app
        .admin_post(&format!("/admin/masters/{master_id}/rotate"), json!({}))
        .await
        .expect(200)
        .str("master_key");

    // Failing requests that carry the secrets in every place a client might put them.
    let mut bodies = Vec::new();
    bodies.push(app.whoami(&key).await.expect_error(401, "ip_denied").text);
    bodies.push(
        app.get("/v1/tokens", &master_key)
            .await
            .expect_error(401, "invalid_credentials")
            .text,
    );
    bodies.push(
        app.get("/admin/masters", &rotated)
            .await
            .expect_error(403, "admin_required")
            .text,
    );
    bodies.push(
        app.request(
            reqwest::Method::POST,
            "/auth/login",
            None,
            Some(json!({ "master_key": master_key })),
        )
        .await
        .text,
    );
    bodies.push(
        app.raw(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(&rotated),
            "application/json",
            &format!("{{\"name\": \"{key}\""),
        )
        .await
        .text,
    );

    let secrets = [
        master_key.as_str(),
        key.as_str(),
        rotated.as_str(),
        jwt.as_str(),
        ADMIN_TOKEN,
    ];
    for body in &bodies {
        for secret in secrets {
            assert!(!body.contains(secret), "secret in an error body: {body}");
        }
    }
    let logs = captured_logs();
    assert!(
        logs.contains(&format!("master_id={master_id}")),
        "the capture must hold this test's log lines"
    );
    for secret in secrets {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let app = TestApp::spawn(Backend::Embedded).await;
    let doc = app
        .request(reqwest::Method::GET, "/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "OpenAPI 3.1: {}",
        doc["openapi"]
    );

    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} documents responses"
            );
            routes.insert(format!("{} {path}", method.to_uppercase()));
        }
    }
    let golden_path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/openapi_routes.txt");
    let actual = routes.iter().cloned().collect::<Vec<_>>().join("\n") + "\n";
    if std::env::var_os("EZ_UPDATE_GOLDEN").is_some() {
        std::fs::write(golden_path, &actual).unwrap();
    }
    let golden = std::fs::read_to_string(golden_path).expect("golden file (EZ_UPDATE_GOLDEN=1 writes it)");
    assert_eq!(
        actual, golden,
        "the documented routes changed; review and run with EZ_UPDATE_GOLDEN=1"
    );

    // Every documented route exists: it never answers route_not_found or 405.
    for route in &routes {
        let (method, path) = route.split_once(' ').unwrap();
        let path = path.replace("{id}", "1");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = app.request(method, &path, Some(ADMIN_TOKEN), None).await;
        assert_ne!(resp.status, 405, "{route}");
        assert_ne!(resp.body["error"]["code"], "route_not_found", "{route}");
        assert!(resp.status < 500, "{route}: {}", resp.text);
    }
}
