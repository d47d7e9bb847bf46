//! The life of masters and keys as `GET /v1/whoami` sees it, and the bus behind it.

use std::time::Duration;

use ez_bus::BusWrite;
use ez_contract::bus_keys;
use ez_contract::time::now_unix;
use ez_control_plane::store::KeyWrite;
use ez_control_plane::testing::{Backend, test_bus};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, TestApp};

both_backends!(
    walkthrough_create_issue_whoami_revoke,
    epoch_bump_rejects_older_keys_and_accepts_new_ones,
    suspended_master_rejects_its_keys,
    expired_key_is_rejected,
    ip_allow_and_deny_lists,
    deleting_a_master_revokes_its_keys,
    whoami_validates_from_the_bus_first,
    bus_entries_follow_every_change,
    full_sync_repairs_the_bus,
    restart_keeps_every_master_and_key,
);

async fn walkthrough_create_issue_whoami_revoke(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app.create_master(json!({ "name": "acme" })).await;
    assert!(
        master_key.starts_with("ezm-") && master_key.len() == 44,
        "{master_key}"
    );

    let (key_id, key) = app.issue_key(&master_key, json!({ "name": "ci" })).await;
    assert!(key.starts_with("sk-ez-") && key.len() == 46, "{key}");

    let me = app.whoami(&key).await.expect(200).body;
    assert_eq!(me["type"], "key");
    assert_eq!(me["id"], key_id);
    assert_eq!(me["master_id"], master_id);
    assert_eq!(me["status"], "active");
    assert_eq!(me["issued_by"], "master");
    assert_eq!(me["namespaces"], json!(["default"]));
    assert_eq!(me["default_namespace"], "default");
    assert_eq!(me["allow_ips"], json!([]));
    assert_eq!(me["deny_ips"], json!([]));
    assert_eq!(me["expires_at"], Value::Null);
    assert!(me.get("key").is_none(), "the plaintext key is never shown again");

    let master = app.whoami(&master_key).await.expect(200).body;
    assert_eq!(master["type"], "master");
    assert_eq!(master["id"], master_id);
    assert_eq!(app.whoami(ADMIN_TOKEN).await.expect(200).body["type"], "admin");

    let revoked = app
        .delete(&format!("/v1/tokens/{key_id}"), &master_key)
        .await
        .expect(200)
        .body;
    assert_eq!(revoked["status"], "revoked");
    app.whoami(&key).await.expect_error(401, "key_revoked");
}

async fn epoch_bump_rejects_older_keys_and_accepts_new_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (_, old_key) = app.issue_key(&master_key, json!({})).await;
    let (_, admin_issued) = {
        let resp = app
            .admin_post(&format!("/admin/masters/{master_id}/keys"), json!({}))
            .await
            .expect(201);
        assert_eq!(resp.body["issued_by"], "admin");
        (resp.id(), resp.str("key"))
    };
    let jwt = app.post_login(json!({ "master_key": master_key })).await;
    app.get("/v1/tokens", &jwt).await.expect(200);

    let bumped = app
        .admin_post(&format!("/admin/masters/{master_id}/revoke-keys"), json!({}))
        .await
        .expect(200);
    assert_eq!(bumped.body["epoch"], 2);

    app.whoami(&old_key).await.expect_error(401, "key_revoked");
    app.whoami(&admin_issued).await.expect_error(401, "key_revoked");
    app.get("/v1/tokens", &jwt)
        .await
        .expect_error(401, "token_revoked");

    let (_, new_key) = app.issue_key(&master_key, json!({})).await;
    let me = app.whoami(&new_key).await.expect(200).body;
    assert_eq!(me["issued_at_epoch"], 2);
    // The master key itself survives the bump; a fresh session works.
    let jwt = app.post_login(json!({ "master_key": master_key })).await;
    app.get("/v1/tokens", &jwt).await.expect(200);
}

async fn suspended_master_rejects_its_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (_, key) = app.issue_key(&master_key, json!({})).await;

    app.admin_put(
        &format!("/admin/masters/{master_id}"),
        json!({ "status": "suspended" }),
    )
    .await
    .expect(200);
    app.whoami(&key).await.expect_error(401, "master_suspended");
    app.get("/v1/tokens", &master_key)
        .await
        .expect_error(403, "master_suspended");

    app.admin_put(
        &format!("/admin/masters/{master_id}"),
        json!({ "status": "active" }),
    )
    .await
    .expect(200);
    app.whoami(&key).await.expect(200);
}

async fn expired_key_is_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let expires_at = now_unix() + 3600;
    let (key_id, key) = app
        .issue_key(&master_key, json!({ "expires_at": expires_at }))
        .await;
    assert_eq!(app.whoami(&key).await.expect(200).body["expires_at"], expires_at);

    // Let the hour pass: the API refuses past expiry times, so move it in the store and
    // push the change to the bus, as time would.
    let store = &app.state.store;
    let mut write = KeyWrite::from(&store.get_key(key_id).await.unwrap());
    write.expires_at = Some(now_unix() - 1);
    store.update_key(key_id, &write).await.unwrap();
    app.state.sync.key_changed(key_id).await;
    app.whoami(&key).await.expect_error(401, "key_expired");

    // Clearing the expiry revives it.
    app.put(
        &format!("/v1/tokens/{key_id}"),
        &master_key,
        json!({ "expires_at": null }),
    )
    .await
    .expect(200);
    app.whoami(&key).await.expect(200);
}

async fn ip_allow_and_deny_lists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app.create_master(json!({ "name": "acme" })).await;

    let (_, outside_allow) = app
        .issue_key(&master_key, json!({ "allow_ips": ["10.0.0.0/8"] }))
        .await;
    app.whoami(&outside_allow).await.expect_error(401, "ip_denied");

    let (_, denied) = app
        .issue_key(&master_key, json!({ "deny_ips": ["127.0.0.0/8"] }))
        .await;
    app.whoami(&denied).await.expect_error(401, "ip_denied");

    let (allowed_id, allowed) = app
        .issue_key(&master_key, json!({ "allow_ips": ["127.0.0.1", "10.0.0.0/8"] }))
        .await;
    let me = app.whoami(&allowed).await.expect(200).body;
    assert_eq!(me["allow_ips"], json!(["127.0.0.1/32", "10.0.0.0/8"]));

    // Adding a deny rule takes effect at once.
    app.put(
        &format!("/v1/tokens/{allowed_id}"),
        &master_key,
        json!({ "deny_ips": ["127.0.0.1"] }),
    )
    .await
    .expect(200);
    app.whoami(&allowed).await.expect_error(401, "ip_denied");
}

async fn deleting_a_master_revokes_its_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (_, k1) = app.issue_key(&master_key, json!({})).await;
    let (_, k2) = app.issue_key(&master_key, json!({})).await;
    let (_, other_master) = app.create_master(json!({ "name": "other" })).await;
    let (_, other_key) = app.issue_key(&other_master, json!({})).await;

    let deleted = app
        .admin_delete(&format!("/admin/masters/{master_id}"))
        .await
        .expect(200)
        .body;
    assert_eq!(deleted["status"], "suspended");
    app.whoami(&k1).await.expect_error(401, "key_revoked");
    app.whoami(&k2).await.expect_error(401, "key_revoked");
    let keys = app
        .admin_get(&format!("/admin/masters/{master_id}/keys"))
        .await
        .expect(200)
        .body;
    assert!(
        keys["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["status"] == "revoked")
    );
    app.post("/v1/tokens", &master_key, json!({}))
        .await
        .expect_error(403, "master_suspended");
    // Nobody else is touched.
    app.whoami(&other_key).await.expect(200);
}

async fn whoami_validates_from_the_bus_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (_, key) = app.issue_key(&master_key, json!({})).await;
    let token_key = bus_keys::token(&ez_contract::token::digest(&key));

    // The bus says suspended while the database says active: the bus decides, as it
    // does for the balancer.
    app.state
        .bus
        .apply(vec![BusWrite::SetFields {
            key: token_key.clone(),
            fields: vec![("status".into(), "suspended".into())],
        }])
        .await
        .unwrap();
    app.whoami(&key).await.expect_error(401, "key_disabled");

    // Without a bus entry the database decides.
    app.state
        .bus
        .apply(vec![BusWrite::Delete { key: token_key }])
        .await
        .unwrap();
    app.whoami(&key).await.expect(200);
    // An unknown key is unknown to both.
    app.whoami("sk-ez-0000000000000000000000000000000000000000")
        .await
        .expect_error(401, "key_not_found");
}

async fn bus_entries_follow_every_change(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut refresh = app.state.bus.subscribe(bus_keys::REFRESH_CHANNEL).await.unwrap();
    let ns = "team-a";
    app.create_namespace(ns).await;
    let (master_id, master_key) = app
        .create_master(
            json!({ "name": "acme", "group": "vip", "global_qps": 7, "namespaces": ["default", ns] }),
        )
        .await;

    let event = tokio::time::timeout(Duration::from_secs(5), refresh.next())
        .await
        .expect("refresh event")
        .unwrap();
    let event: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(event["resource"], "master");
    assert!(
        event["version"].as_i64().unwrap() > 1_000_000_000_000_000_000,
        "version is in ns: {event}"
    );
    assert!(
        event["timestamp"].as_i64().unwrap() < 10_000_000_000,
        "timestamp is in s: {event}"
    );

    let master = app
        .state
        .bus
        .hash_get_all(&bus_keys::master(master_id))
        .await
        .unwrap();
    assert_eq!(master["status"], "active");
    assert_eq!(master["epoch"], "1");
    assert_eq!(master["group"], "vip");
    assert_eq!(master["global_qps"], "7");
    assert_eq!(master["namespaces"], r#"["default","team-a"]"#);
    assert_eq!(master["default_namespace"], "default");
    assert!(master["version"].parse::<i64>().unwrap() > 1_000_000_000_000_000_000);
    assert!((master["updated_at"].parse::<i64>().unwrap() - now_unix()).abs() < 60);

    let (key_id, key) = app
        .issue_key(&master_key, json!({ "namespaces": [ns], "qps": 3, "allow_ips": ["10.0.0.0/8"], "expires_at": now_unix() + 60 }))
        .await;
    let token_key = bus_keys::token(&ez_contract::token::digest(&key));
    let token = app.state.bus.hash_get_all(&token_key).await.unwrap();
    assert_eq!(token["master_id"], master_id.to_string());
    assert_eq!(token["key_id"], key_id.to_string());
    assert_eq!(token["issued_at_epoch"], "1");
    assert_eq!(token["status"], "active");
    assert_eq!(token["group"], "vip");
    assert_eq!(token["namespaces"], r#"["team-a"]"#);
    assert_eq!(token["default_namespace"], ns);
    assert_eq!(token["allow_ips"], r#"["10.0.0.0/8"]"#);
    assert_eq!(token["deny_ips"], "[]");
    assert_eq!(token["qps"], "3");
    assert!(token["expires_at"].parse::<i64>().is_ok());

    // A master change that keys carry (group) rewrites the key entries too.
    app.admin_put(&format!("/admin/masters/{master_id}"), json!({ "group": "gold" }))
        .await
        .expect(200);
    assert_eq!(
        app.state
            .bus
            .hash_get(&token_key, "group")
            .await
            .unwrap()
            .as_deref(),
        Some("gold")
    );
    app.admin_post(&format!("/admin/masters/{master_id}/revoke-keys"), json!({}))
        .await
        .expect(200);
    assert_eq!(
        app.state
            .bus
            .hash_get(&bus_keys::master(master_id), "epoch")
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );
    app.put(
        &format!("/v1/tokens/{key_id}"),
        &master_key,
        json!({ "status": "suspended" }),
    )
    .await
    .expect(200);
    assert_eq!(
        app.state
            .bus
            .hash_get(&token_key, "status")
            .await
            .unwrap()
            .as_deref(),
        Some("suspended")
    );
}

async fn full_sync_repairs_the_bus(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (_, key) = app.issue_key(&master_key, json!({})).await;
    let expected = app.bus_snapshot().await;
    assert_eq!(expected.len(), 2, "one master and one key entry: {expected:?}");

    let bus = &app.state.bus;
    bus.apply(vec![
        BusWrite::Delete {
            key: bus_keys::master(master_id),
        },
        BusWrite::Delete {
            key: bus_keys::token(&ez_contract::token::digest(&key)),
        },
        BusWrite::ReplaceHash {
            key: bus_keys::token("stale"),
            fields: vec![("status".into(), "active".into())],
        },
    ])
    .await
    .unwrap();

    let report = app.admin_post("/admin/sync", json!({})).await.expect(200).body;
    assert_eq!(report["masters"], 1);
    assert_eq!(report["keys"], 1);
    assert_eq!(report["removed"], 1);
    assert_eq!(app.bus_snapshot().await, expected);
    app.whoami(&key).await.expect(200);
    app.post("/admin/sync", &master_key, json!({}))
        .await
        .expect_error(403, "admin_required");
}

async fn restart_keeps_every_master_and_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_namespace("team-a").await;
    let (master_id, master_key) = app
        .create_master(json!({ "name": "acme", "namespaces": ["default", "team-a"] }))
        .await;
    let (_, before_bump) = app
        .issue_key(&master_key, json!({ "namespaces": ["team-a"] }))
        .await;
    let (revoked_id, revoked) = app.issue_key(&master_key, json!({})).await;
    app.delete(&format!("/v1/tokens/{revoked_id}"), &master_key)
        .await
        .expect(200);
    app.admin_post(&format!("/admin/masters/{master_id}/revoke-keys"), json!({}))
        .await
        .expect(200);
    let (_, key) = app
        .issue_key(
            &master_key,
            json!({ "name": "after-bump", "namespaces": ["team-a"] }),
        )
        .await;
    let before = app.state_snapshot().await;
    let db = app.shutdown().await;

    // A new process with a new, empty bus (memory bus, or a new Redis prefix): the
    // start-up sync rebuilds it from the database.
    let app = TestApp::start(db, test_bus(backend).await).await;
    assert_eq!(app.state_snapshot().await, before);
    assert_eq!(
        app.whoami(&key).await.expect(200).body["namespaces"],
        json!(["team-a"])
    );
    app.whoami(&before_bump).await.expect_error(401, "key_revoked");
    app.whoami(&revoked).await.expect_error(401, "key_revoked");
    assert_eq!(
        app.get("/v1/tokens", &master_key).await.expect(200).body["total"],
        3
    );
}
