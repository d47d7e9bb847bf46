//! Export and import of the whole configuration: an export imported into a fresh
//! instance exports identically; import is idempotent; bad documents change nothing.

use ez_control_plane::testing::Backend;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    export_import_round_trip_is_identical_and_idempotent,
    export_without_secrets_cannot_create_credentials,
    malformed_or_inconsistent_documents_change_nothing,
    dry_run_reports_without_changing,
);

/// A configuration that exercises every kind of entity.
async fn populate(app: &TestApp) -> (String, String) {
    app.create_namespace("team-a").await;
    let openai = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": "openai", "api_keys": ["sk-up-aaaa0001", "sk-up-bbbb0002"], "weights": [3, 1] }),
        )
        .await
        .expect(201)
        .body;
    let openai_id = openai["group"]["id"].as_i64().unwrap();
    let code = app
        .admin_post(
            "/admin/provider-groups",
            json!({ "name": "cc", "type": "claude_code", "models": ["claude-sonnet-4-5"], "headers_profile": "claude-code" }),
        )
        .await
        .expect(201)
        .id();
    app.admin_post(
        "/admin/api-keys",
        json!({ "group_id": code, "refresh_token": "rt-secret-cccc0003", "account_id": "acct-1", "expires_at": 2_000_000_000 }),
    )
    .await
    .expect(201);
    app.admin_post(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": openai_id, "weight": 2 }),
    )
    .await
    .expect(201);
    app.admin_post(
        "/admin/bindings",
        json!({ "namespace": "team-a", "public_model": "smart", "group_id": code, "selector_type": "regex", "selector_value": "sonnet" }),
    )
    .await
    .expect(201);
    app.admin_put("/admin/models/gpt-4o", json!({ "context_window": 64000 }))
        .await
        .expect(200);
    let (master_id, master_key) = app
        .create_master(json!({ "name": "acme", "namespaces": ["default", "team-a"], "global_qps": 50 }))
        .await;
    let (revoked_id, _) = app.issue_key(&master_key, json!({ "name": "old" })).await;
    app.delete(&format!("/v1/tokens/{revoked_id}"), &master_key)
        .await
        .expect(200);
    app.admin_post(&format!("/admin/masters/{master_id}/revoke-keys"), json!({}))
        .await
        .expect(200);
    let (_, key) = app
        .issue_key(
            &master_key,
            json!({ "name": "ci", "namespaces": ["team-a"], "allow_ips": ["127.0.0.1"], "qps": 5 }),
        )
        .await;
    (master_key, key)
}

async fn export(app: &TestApp, secrets: bool) -> Value {
    app.admin_get(&format!("/admin/export?include_secrets={secrets}"))
        .await
        .expect(200)
        .body
}

async fn export_import_round_trip_is_identical_and_idempotent(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let (master_key, key) = populate(&a).await;
    let doc = export(&a, true).await;
    assert_eq!(doc["format"], "ezapi-config");
    assert_eq!(doc["api_keys"].as_array().unwrap().len(), 3);
    assert!(
        doc.to_string().contains("sk-up-aaaa0001"),
        "secrets are exported when asked for"
    );

    let b = TestApp::spawn(backend).await;
    let report = b.admin_post("/admin/import", doc.clone()).await.expect(200).body;
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["counts"]["master"]["create"], 1);
    assert_eq!(report["counts"]["key"]["create"], 2);
    assert_eq!(
        report["counts"]["namespace"]["skip"], 1,
        "default exists everywhere"
    );
    assert_eq!(
        export(&b, true).await,
        doc,
        "the fresh instance exports the same document"
    );

    // The restored instance honours the same keys, revocations included.
    assert_eq!(
        b.whoami(&key).await.expect(200).body["namespaces"],
        json!(["team-a"])
    );
    b.get("/v1/tokens", &master_key).await.expect(200);
    assert_eq!(
        b.bus_snapshot().await,
        b.desired_bus().await,
        "the bus follows the import"
    );
    let routes = b
        .state
        .bus
        .hash_get_all(ez_contract::bus_keys::BINDINGS)
        .await
        .unwrap();
    assert!(routes.contains_key("default.gpt-4o") && routes.contains_key("team-a.smart"));

    // Idempotent: importing again changes nothing, with either policy.
    let again = b
        .admin_post("/admin/import?policy=skip", doc.clone())
        .await
        .expect(200)
        .body;
    assert!(
        again["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] == "skip"),
        "{again}"
    );
    let overwrite = b
        .admin_post("/admin/import?policy=overwrite", doc.clone())
        .await
        .expect(200)
        .body;
    assert!(
        overwrite["changes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["action"] != "create")
    );
    assert_eq!(export(&b, true).await, doc);
}

async fn export_without_secrets_cannot_create_credentials(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    populate(&a).await;
    let doc = export(&a, false).await;
    let text = doc.to_string();
    for secret in ["sk-up-aaaa0001", "sk-up-bbbb0002", "rt-secret-cccc0003"] {
        assert!(
            !text.contains(secret),
            "no upstream secret without include_secrets"
        );
    }
    assert!(
        doc["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["fingerprint"].as_str().is_some_and(|f| f.len() == 16))
    );

    let b = TestApp::spawn(backend).await;
    let before = b.state_snapshot().await;
    let refused = b
        .admin_post("/admin/import", doc.clone())
        .await
        .expect_error(422, "invalid_import");
    assert!(refused.text.contains("include_secrets"), "{}", refused.text);
    assert_eq!(
        b.state_snapshot().await,
        before,
        "a refused import changes nothing"
    );

    // Where the credentials exist, a secret-less document updates them and keeps secrets.
    let mut edited = doc.clone();
    edited["api_keys"][0]["weight"] = json!(7);
    let report = a
        .admin_post("/admin/import?policy=overwrite", edited)
        .await
        .expect(200)
        .body;
    assert_eq!(report["counts"]["api_key"]["update"], 3);
    let after = export(&a, true).await;
    assert_eq!(after["api_keys"][0]["weight"], 7);
    assert!(after.to_string().contains("sk-up-aaaa0001"), "secrets were kept");
}

async fn malformed_or_inconsistent_documents_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    populate(&app).await;
    let doc = export(&app, true).await;
    let before = app.state_snapshot().await;

    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut d = doc.clone();
        f(&mut d);
        d
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "wrong format",
            mutate(&|d| d["format"] = json!("other")),
            422,
            "unsupported_format",
        ),
        (
            "wrong version",
            mutate(&|d| d["version"] = json!(9)),
            422,
            "unsupported_format",
        ),
        (
            "unknown top-level field",
            mutate(&|d| d["extra"] = json!(1)),
            400,
            "invalid_body",
        ),
        ("not an object", json!([1, 2]), 400, "invalid_body"),
        (
            "binding to a group nobody has",
            mutate(&|d| d["bindings"][0]["group"] = json!("ghost")),
            422,
            "invalid_import",
        ),
        (
            "duplicate master",
            mutate(&|d| {
                let m = d["masters"][0].clone();
                d["masters"].as_array_mut().unwrap().push(m);
            }),
            422,
            "invalid_import",
        ),
        (
            "key outside its master's namespaces",
            mutate(&|d| d["keys"][0]["namespaces"] = json!(["nowhere"])),
            422,
            "invalid_import",
        ),
        (
            "malformed digest",
            mutate(&|d| d["masters"][0]["token_digest"] = json!("abc")),
            422,
            "invalid_import",
        ),
        (
            "key of an unknown master",
            mutate(&|d| d["keys"][0]["master"] = json!("nobody")),
            422,
            "invalid_import",
        ),
        (
            "unknown provider type",
            mutate(&|d| d["provider_groups"][0]["type"] = json!("nope")),
            422,
            "invalid_import",
        ),
        (
            "negative weight",
            mutate(&|d| d["api_keys"][0]["weight"] = json!(-1)),
            422,
            "invalid_import",
        ),
        (
            "wrong type",
            mutate(&|d| d["masters"][0]["epoch"] = json!("two")),
            400,
            "invalid_body",
        ),
    ];
    for (name, body, status, code) in cases {
        let resp = app.admin_post("/admin/import?policy=overwrite", body).await;
        assert_eq!(
            (resp.status, resp.body["error"]["code"].as_str()),
            (status, Some(code)),
            "case {name}: {}",
            resp.text
        );
    }
    app.raw(
        reqwest::Method::POST,
        "/admin/import",
        Some(crate::helpers::ADMIN_TOKEN),
        "application/json",
        "{\"format\": ",
    )
    .await
    .expect_error(400, "invalid_json");
    app.admin_post("/admin/import?policy=merge", doc.clone())
        .await
        .expect_error(400, "invalid_query");
    assert_eq!(app.state_snapshot().await, before, "nothing changed");
}

async fn dry_run_reports_without_changing(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    populate(&a).await;
    let doc = export(&a, true).await;
    let b = TestApp::spawn(backend).await;
    let before = b.state_snapshot().await;
    let report = b
        .admin_post("/admin/import?dry_run=true", doc)
        .await
        .expect(200)
        .body;
    assert_eq!(report["dry_run"], true);
    assert_eq!(report["counts"]["provider_group"]["create"], 2);
    assert_eq!(report["counts"]["binding"]["create"], 2);
    assert_eq!(b.state_snapshot().await, before);
}
