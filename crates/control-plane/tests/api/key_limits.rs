//! `max_child_keys` counts the keys that can still authenticate: not revoked, issued at or
//! after the master's epoch, not expired (suspended keys count: they can be re-activated).
//! Keys that can never authenticate again hold nothing: no slot, no namespace.

use ez_contract::time::now_unix;
use ez_control_plane::store::KeyWrite;
use ez_control_plane::testing::Backend;
use serde_json::json;

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    revoking_every_key_frees_every_slot_even_under_concurrency,
    expired_keys_take_no_slot_and_renewing_one_needs_a_free_slot,
    suspended_keys_keep_their_slot,
    dead_keys_hold_no_namespace_and_export_import_agrees,
);

async fn revoking_every_key_frees_every_slot_even_under_concurrency(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app
        .create_master(json!({ "name": "acme", "max_child_keys": 3 }))
        .await;
    let mut old = Vec::new();
    for i in 0..3 {
        old.push(
            app.issue_key(&master_key, json!({ "name": format!("old-{i}") }))
                .await
                .1,
        );
    }
    app.post("/v1/tokens", &master_key, json!({ "name": "one-too-many" }))
        .await
        .expect_error(409, "limit_reached");

    app.admin_post(&format!("/admin/masters/{master_id}/revoke-keys"), json!({}))
        .await
        .expect(200);
    for key in &old {
        app.whoami(key).await.expect_error(401, "key_revoked");
    }

    // The README promises keys issued after "revoke every key" work: max_child_keys of
    // them, and no more, also when requested at once.
    let attempts =
        (0..10).map(|i| app.post("/v1/tokens", &master_key, json!({ "name": format!("new-{i}") })));
    let results = futures_util::future::join_all(attempts).await;
    let created: Vec<_> = results.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        3,
        "exactly max_child_keys succeed: {:?}",
        results
            .iter()
            .map(|r| (r.status, r.text.as_str()))
            .collect::<Vec<_>>()
    );
    for r in results.iter().filter(|r| r.status != 201) {
        assert_eq!(r.body["error"]["code"], "limit_reached", "{}", r.text);
    }
    for r in created {
        app.whoami(&r.str("key")).await.expect(200);
    }
}

/// Moves a key's expiry into the past in the store, as time would, and tells the bus.
async fn expire(app: &TestApp, key_id: i64) {
    let store = &app.state.store;
    let mut write = KeyWrite::from(&store.get_key(key_id).await.unwrap());
    write.expires_at = Some(now_unix() - 1);
    store.update_key(key_id, &write).await.unwrap();
    app.state.sync.key_changed(key_id).await;
}

async fn expired_keys_take_no_slot_and_renewing_one_needs_a_free_slot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app
        .create_master(json!({ "name": "acme", "max_child_keys": 2 }))
        .await;
    let (short_id, short) = app
        .issue_key(
            &master_key,
            json!({ "name": "short", "expires_at": now_unix() + 3600 }),
        )
        .await;
    app.issue_key(&master_key, json!({ "name": "long" })).await;
    app.post("/v1/tokens", &master_key, json!({}))
        .await
        .expect_error(409, "limit_reached");

    expire(&app, short_id).await;
    app.whoami(&short).await.expect_error(401, "key_expired");
    let (replacement_id, _) = app.issue_key(&master_key, json!({ "name": "replacement" })).await;

    // Renewing the expired key would make three keys that authenticate.
    let path = format!("/v1/tokens/{short_id}");
    for body in [
        json!({ "expires_at": null }),
        json!({ "expires_at": now_unix() + 60 }),
    ] {
        app.put(&path, &master_key, body)
            .await
            .expect_error(409, "limit_reached");
    }
    app.whoami(&short).await.expect_error(401, "key_expired");
    // Other changes of an expired key are not a renewal.
    app.put(&path, &master_key, json!({ "name": "short-renamed" }))
        .await
        .expect(200);

    app.delete(&format!("/v1/tokens/{replacement_id}"), &master_key)
        .await
        .expect(200);
    app.put(&path, &master_key, json!({ "expires_at": null }))
        .await
        .expect(200);
    app.whoami(&short).await.expect(200);
}

async fn suspended_keys_keep_their_slot(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app
        .create_master(json!({ "name": "acme", "max_child_keys": 1 }))
        .await;
    let (id, _) = app.issue_key(&master_key, json!({ "name": "paused" })).await;
    app.put(
        &format!("/v1/tokens/{id}"),
        &master_key,
        json!({ "status": "suspended" }),
    )
    .await
    .expect(200);
    app.post("/v1/tokens", &master_key, json!({}))
        .await
        .expect_error(409, "limit_reached");
}

async fn dead_keys_hold_no_namespace_and_export_import_agrees(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let team = app.create_namespace("team-a").await;
    let (master_id, master_key) = app
        .create_master(json!({ "name": "acme", "namespaces": ["default", "team-a"] }))
        .await;
    let (dead_id, _) = app
        .issue_key(
            &master_key,
            json!({ "name": "team-key", "namespaces": ["team-a"] }),
        )
        .await;
    // While the key can authenticate, it holds the namespace.
    app.admin_put(
        &format!("/admin/masters/{master_id}/access"),
        json!({ "namespaces": ["default"] }),
    )
    .await
    .expect_error(409, "keys_outside_namespaces");

    app.admin_post(&format!("/admin/masters/{master_id}/revoke-keys"), json!({}))
        .await
        .expect(200);
    app.admin_put(
        &format!("/admin/masters/{master_id}/access"),
        json!({ "namespaces": ["default"] }),
    )
    .await
    .expect(200);
    let dead = app
        .admin_get(&format!("/admin/keys/{dead_id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(
        dead["namespaces"],
        json!(["team-a"]),
        "a dead key's namespaces are a record"
    );
    app.admin_delete(&format!("/admin/namespaces/{team}"))
        .await
        .expect(204);
    app.issue_key(&master_key, json!({ "name": "fresh" })).await;

    // A backup of this state restores elsewhere, dead key included.
    let doc = app
        .admin_get("/admin/export?include_secrets=true")
        .await
        .expect(200)
        .body;
    let other = TestApp::spawn(backend).await;
    other.admin_post("/admin/import", doc.clone()).await.expect(200);
    assert_eq!(
        other
            .admin_get("/admin/export?include_secrets=true")
            .await
            .expect(200)
            .body,
        doc
    );
}
