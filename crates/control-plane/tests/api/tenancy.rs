//! Tenancy rules: isolation between masters, key limits, namespaces and their subsets.

use ez_contract::bus_keys;
use ez_control_plane::testing::Backend;
use serde_json::json;

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    a_master_sees_only_its_own_keys,
    max_child_keys_is_enforced_even_under_concurrency,
    key_namespaces_stay_a_subset_of_the_master,
    access_change_with_and_without_propagate,
    namespaces_in_use_cannot_be_deleted_or_renamed,
    rotation_retires_the_old_master_key,
    admin_manages_keys_on_behalf_of_a_master,
);

async fn a_master_sees_only_its_own_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, alice) = app.create_master(json!({ "name": "alice" })).await;
    let (_, bob) = app.create_master(json!({ "name": "bob" })).await;
    let (alice_key_id, _) = app.issue_key(&alice, json!({ "name": "a1" })).await;
    let (bob_key_id, bob_key) = app.issue_key(&bob, json!({ "name": "b1" })).await;

    let list = app.get("/v1/tokens", &alice).await.expect(200).body;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0]["id"], alice_key_id);
    assert_eq!(list["page"], 1);
    assert_eq!(list["page_size"], 50);

    let path = format!("/v1/tokens/{bob_key_id}");
    app.get(&path, &alice).await.expect_error(404, "key_not_found");
    app.put(&path, &alice, json!({ "status": "suspended" }))
        .await
        .expect_error(404, "key_not_found");
    app.delete(&path, &alice).await.expect_error(404, "key_not_found");
    // Bob's key is untouched and still works.
    assert_eq!(app.get(&path, &bob).await.expect(200).body["status"], "active");
    app.whoami(&bob_key).await.expect(200);
    // Names are unique per master only.
    app.issue_key(&alice, json!({ "name": "b1" })).await;
    app.post("/v1/tokens", &alice, json!({ "name": "b1" }))
        .await
        .expect_error(409, "conflict");
}

async fn max_child_keys_is_enforced_even_under_concurrency(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app
        .create_master(json!({ "name": "acme", "max_child_keys": 3 }))
        .await;

    let attempts = (0..10).map(|i| app.post("/v1/tokens", &master_key, json!({ "name": format!("k{i}") })));
    let results = futures_util::future::join_all(attempts).await;
    let created: Vec<_> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        3,
        "exactly max_child_keys succeed: {:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != 201) {
        assert_eq!(r.status, 409, "{}", r.text);
        assert_eq!(r.body["error"]["code"], "limit_reached");
    }
    assert_eq!(
        app.get("/v1/tokens", &master_key).await.expect(200).body["total"],
        3
    );

    // A revoked key frees its slot.
    let id = created[0].id();
    app.delete(&format!("/v1/tokens/{id}"), &master_key)
        .await
        .expect(200);
    app.issue_key(&master_key, json!({ "name": "replacement" })).await;
    app.post("/v1/tokens", &master_key, json!({}))
        .await
        .expect_error(409, "limit_reached");
}

async fn key_namespaces_stay_a_subset_of_the_master(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_namespace("team-a").await;
    app.create_namespace("team-b").await;
    let (_, master_key) = app
        .create_master(
            json!({ "name": "acme", "namespaces": ["default", "team-a"], "default_namespace": "team-a" }),
        )
        .await;

    let (_, inherited) = app.issue_key(&master_key, json!({})).await;
    let me = app.whoami(&inherited).await.expect(200).body;
    assert_eq!(me["namespaces"], json!(["default", "team-a"]));
    assert_eq!(me["default_namespace"], "team-a");

    let (key_id, narrow) = app
        .issue_key(&master_key, json!({ "namespaces": ["default"] }))
        .await;
    assert_eq!(
        app.whoami(&narrow).await.expect(200).body["default_namespace"],
        "default"
    );

    app.post("/v1/tokens", &master_key, json!({ "namespaces": ["team-b"] }))
        .await
        .expect_error(422, "namespace_not_allowed");
    app.post("/v1/tokens", &master_key, json!({ "namespaces": ["nope"] }))
        .await
        .expect_error(422, "namespace_not_found");
    app.put(
        &format!("/v1/tokens/{key_id}"),
        &master_key,
        json!({ "namespaces": ["team-b"] }),
    )
    .await
    .expect_error(422, "namespace_not_allowed");
    app.put(
        &format!("/admin/keys/{key_id}/access"),
        crate::helpers::ADMIN_TOKEN,
        json!({ "namespaces": ["team-a"] }),
    )
    .await
    .expect(200);
    let me = app.whoami(&narrow).await.expect(200).body;
    assert_eq!(me["namespaces"], json!(["team-a"]));
    assert_eq!(me["default_namespace"], "team-a");
}

async fn access_change_with_and_without_propagate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_namespace("team-a").await;
    let (master_id, master_key) = app
        .create_master(json!({ "name": "acme", "namespaces": ["default", "team-a"] }))
        .await;
    let (_, wide) = app
        .issue_key(&master_key, json!({ "namespaces": ["default", "team-a"] }))
        .await;
    let (_, only_default) = app
        .issue_key(&master_key, json!({ "namespaces": ["default"] }))
        .await;
    let path = format!("/admin/masters/{master_id}/access");

    let before = app.state_snapshot().await;
    app.admin_put(&path, json!({ "namespaces": ["team-a"] }))
        .await
        .expect_error(409, "keys_outside_namespaces");
    assert_eq!(
        app.state_snapshot().await,
        before,
        "a refused change changes nothing"
    );

    let master = app
        .admin_put(&path, json!({ "namespaces": ["team-a"], "propagate": true }))
        .await
        .expect(200)
        .body;
    assert_eq!(master["namespaces"], json!(["team-a"]));
    assert_eq!(master["default_namespace"], "team-a");
    let me = app.whoami(&wide).await.expect(200).body;
    assert_eq!(me["namespaces"], json!(["team-a"]));
    assert_eq!(me["default_namespace"], "team-a");
    let me = app.whoami(&only_default).await.expect(200).body;
    assert_eq!(
        me["namespaces"],
        json!(["team-a"]),
        "a key left with nothing gets the master's default"
    );
    // The bus follows.
    let snapshot = app
        .state
        .bus
        .hash_get_all(&bus_keys::token(&ez_contract::token::digest(&wide)))
        .await
        .unwrap();
    assert_eq!(snapshot["namespaces"], r#"["team-a"]"#);
    let master_snapshot = app
        .state
        .bus
        .hash_get_all(&bus_keys::master(master_id))
        .await
        .unwrap();
    assert_eq!(master_snapshot["namespaces"], r#"["team-a"]"#);

    app.admin_put(
        &path,
        json!({ "namespaces": ["team-a"], "default_namespace": "default" }),
    )
    .await
    .expect_error(422, "default_namespace_not_in_namespaces");
}

async fn namespaces_in_use_cannot_be_deleted_or_renamed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let team = app.create_namespace("team-a").await;
    let spare = app.create_namespace("spare").await;
    app.admin_post("/admin/namespaces", json!({ "name": "team-a" }))
        .await
        .expect_error(409, "conflict");
    let (master_id, _) = app
        .create_master(json!({ "name": "acme", "namespaces": ["default", "team-a"] }))
        .await;

    app.admin_delete(&format!("/admin/namespaces/{team}"))
        .await
        .expect_error(409, "namespace_in_use");
    app.admin_put(&format!("/admin/namespaces/{team}"), json!({ "name": "team-b" }))
        .await
        .expect_error(409, "namespace_in_use");
    let updated = app
        .admin_put(
            &format!("/admin/namespaces/{team}"),
            json!({ "description": "Team A" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(updated["description"], "Team A");

    app.admin_delete(&format!("/admin/namespaces/{spare}"))
        .await
        .expect(204);
    app.admin_get(&format!("/admin/namespaces/{spare}"))
        .await
        .expect_error(404, "namespace_not_found");

    app.admin_put(
        &format!("/admin/masters/{master_id}/access"),
        json!({ "namespaces": ["default"] }),
    )
    .await
    .expect(200);
    app.admin_delete(&format!("/admin/namespaces/{team}"))
        .await
        .expect(204);
    let list = app.admin_get("/admin/namespaces").await.expect(200).body;
    assert_eq!(list["total"], 1, "only default is left: {list}");
    assert_eq!(list["items"][0]["name"], "default");
}

async fn rotation_retires_the_old_master_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, old) = app.create_master(json!({ "name": "acme" })).await;
    let (_, key) = app.issue_key(&old, json!({})).await;
    let old_jwt = app.post_login(json!({ "master_key": old })).await;

    let rotated = app
        .admin_post(&format!("/admin/masters/{master_id}/rotate"), json!({}))
        .await
        .expect(200);
    let new = rotated.str("master_key");
    assert_ne!(new, old);
    assert!(new.starts_with(&rotated.str("token_prefix")));

    app.get("/v1/tokens", &old)
        .await
        .expect_error(401, "invalid_credentials");
    app.get("/v1/tokens", &old_jwt)
        .await
        .expect_error(401, "token_revoked");
    app.get("/v1/tokens", &new).await.expect(200);
    // Child keys are not affected by a rotation.
    app.whoami(&key).await.expect(200);
}

async fn admin_manages_keys_on_behalf_of_a_master(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let created = app
        .admin_post(
            &format!("/admin/masters/{master_id}/keys"),
            json!({ "name": "ops", "qps": 5 }),
        )
        .await
        .expect(201);
    let key_id = created.id();
    assert_eq!(created.body["issued_by"], "admin");
    assert_eq!(created.body["qps"], 5);

    let listed = app
        .admin_get(&format!("/admin/masters/{master_id}/keys"))
        .await
        .expect(200)
        .body;
    assert_eq!(listed["total"], 1);
    // The master sees admin-issued keys as its own.
    assert_eq!(
        app.get(&format!("/v1/tokens/{key_id}"), &master_key)
            .await
            .expect(200)
            .body["name"],
        "ops"
    );

    let updated = app
        .admin_put(
            &format!("/admin/keys/{key_id}"),
            json!({ "name": "ops-2", "qps": null, "status": "suspended" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(updated["name"], "ops-2");
    assert_eq!(updated["qps"], serde_json::Value::Null);
    app.whoami(&created.str("key"))
        .await
        .expect_error(401, "key_disabled");

    assert_eq!(
        app.admin_delete(&format!("/admin/keys/{key_id}"))
            .await
            .expect(200)
            .body["status"],
        "revoked"
    );
    app.admin_put(&format!("/admin/keys/{key_id}"), json!({ "status": "active" }))
        .await
        .expect_error(409, "key_revoked");
    app.whoami(&created.str("key"))
        .await
        .expect_error(401, "key_revoked");
}
