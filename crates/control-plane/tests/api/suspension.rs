//! Who suspended a child key is recorded (`suspended_by`); an admin's suspension sticks:
//! the master can neither lift it nor make it its own. Export and import carry it.

use ez_control_plane::testing::Backend;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    an_admins_suspension_sticks,
    a_masters_own_suspension_is_its_to_lift,
    suspended_by_travels_with_export_and_import,
);

async fn an_admins_suspension_sticks(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (id, key) = app.issue_key(&master_key, json!({ "name": "ci" })).await;
    let admin_path = format!("/admin/keys/{id}");
    let master_path = format!("/v1/tokens/{id}");
    assert_eq!(
        app.get(&master_path, &master_key).await.expect(200).body["suspended_by"],
        Value::Null
    );

    let suspended = app
        .admin_put(&admin_path, json!({ "status": "suspended" }))
        .await
        .expect(200)
        .body;
    assert_eq!(suspended["suspended_by"], "admin");
    assert_eq!(
        app.get(&master_path, &master_key).await.expect(200).body["suspended_by"],
        "admin",
        "the master sees who suspended its key"
    );
    app.whoami(&key).await.expect_error(401, "key_disabled");

    // The master cannot lift it, alone or with other changes (nothing is applied).
    for body in [
        json!({ "status": "active" }),
        json!({ "status": "active", "name": "sneaky" }),
    ] {
        app.put(&master_path, &master_key, body)
            .await
            .expect_error(403, "suspended_by_admin");
    }
    // Suspending it again does not make the suspension the master's.
    let again = app
        .put(
            &master_path,
            &master_key,
            json!({ "status": "suspended", "name": "ci-paused" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (again["name"].as_str(), again["suspended_by"].as_str()),
        (Some("ci-paused"), Some("admin"))
    );
    let seen = app.admin_get(&admin_path).await.expect(200).body;
    assert_eq!(
        (seen["status"].as_str(), seen["suspended_by"].as_str()),
        (Some("suspended"), Some("admin"))
    );
    app.whoami(&key).await.expect_error(401, "key_disabled");

    // The admin lifts it.
    let lifted = app
        .admin_put(&admin_path, json!({ "status": "active" }))
        .await
        .expect(200)
        .body;
    assert_eq!(
        (lifted["status"].as_str(), &lifted["suspended_by"]),
        (Some("active"), &Value::Null)
    );
    app.whoami(&key).await.expect(200);
}

async fn a_masters_own_suspension_is_its_to_lift(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (id, key) = app.issue_key(&master_key, json!({ "name": "ci" })).await;
    let admin_path = format!("/admin/keys/{id}");
    let master_path = format!("/v1/tokens/{id}");

    let own = app
        .put(&master_path, &master_key, json!({ "status": "suspended" }))
        .await
        .expect(200)
        .body;
    assert_eq!(own["suspended_by"], "master");
    // An admin editing something else leaves it the master's.
    let renamed = app
        .admin_put(&admin_path, json!({ "name": "renamed" }))
        .await
        .expect(200)
        .body;
    assert_eq!(renamed["suspended_by"], "master");
    app.put(&master_path, &master_key, json!({ "status": "active" }))
        .await
        .expect(200);
    app.whoami(&key).await.expect(200);

    // An admin who suspends a key the master suspended makes it stick.
    app.put(&master_path, &master_key, json!({ "status": "suspended" }))
        .await
        .expect(200);
    let taken = app
        .admin_put(&admin_path, json!({ "status": "suspended" }))
        .await
        .expect(200)
        .body;
    assert_eq!(taken["suspended_by"], "admin");
    app.put(&master_path, &master_key, json!({ "status": "active" }))
        .await
        .expect_error(403, "suspended_by_admin");
    // Revoking is still the master's right; a revoked key has no suspension.
    let revoked = app.delete(&master_path, &master_key).await.expect(200).body;
    assert_eq!(
        (revoked["status"].as_str(), &revoked["suspended_by"]),
        (Some("revoked"), &Value::Null)
    );
}

async fn suspended_by_travels_with_export_and_import(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    let (_, master_key) = a.create_master(json!({ "name": "acme" })).await;
    let (by_admin, _) = a.issue_key(&master_key, json!({ "name": "by-admin" })).await;
    let (by_master, _) = a.issue_key(&master_key, json!({ "name": "by-master" })).await;
    a.admin_put(
        &format!("/admin/keys/{by_admin}"),
        json!({ "status": "suspended" }),
    )
    .await
    .expect(200);
    a.put(
        &format!("/v1/tokens/{by_master}"),
        &master_key,
        json!({ "status": "suspended" }),
    )
    .await
    .expect(200);
    let doc = a.admin_get("/admin/export").await.expect(200).body;
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys[0]["name"], "by-admin");
    assert_eq!(
        (&keys[0]["suspended_by"], &keys[1]["suspended_by"]),
        (&json!("admin"), &json!("master"))
    );

    let b = TestApp::spawn(backend).await;
    b.admin_post("/admin/import", doc.clone()).await.expect(200);
    assert_eq!(b.admin_get("/admin/export").await.expect(200).body, doc);
    // The restored admin suspension still sticks for the master.
    let masters = b.admin_get("/admin/masters").await.expect(200).body;
    let acme = masters["items"][0]["id"].as_i64().unwrap();
    let restored = b
        .admin_get(&format!("/admin/masters/{acme}/keys"))
        .await
        .expect(200)
        .body;
    let id = restored["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "by-admin")
        .map(|k| k["id"].as_i64().unwrap())
        .unwrap();
    b.put(
        &format!("/v1/tokens/{id}"),
        &master_key,
        json!({ "status": "active" }),
    )
    .await
    .expect_error(403, "suspended_by_admin");

    // A document from before the field existed: a suspension of unknown origin is an
    // admin's; an author given for a key that is not suspended is refused.
    let mut old = doc.clone();
    old["masters"][0]["name"] = json!("legacy");
    old["masters"][0]["token_digest"] = json!("1".repeat(64));
    for (i, k) in old["keys"].as_array_mut().unwrap().iter_mut().enumerate() {
        k["master"] = json!("legacy");
        k["token_digest"] = json!(format!("{:064x}", 77 + i));
        k.as_object_mut().unwrap().remove("suspended_by");
    }
    let mut inconsistent = old.clone();
    inconsistent["keys"][0]["status"] = json!("active");
    inconsistent["keys"][0]["suspended_by"] = json!("admin");
    b.admin_post("/admin/import", inconsistent)
        .await
        .expect_error(422, "invalid_import");
    b.admin_post("/admin/import", old).await.expect(200);
    let legacy = b.admin_get("/admin/export").await.expect(200).body;
    let legacy_keys: Vec<&Value> = legacy["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["master"] == "legacy")
        .collect();
    assert!(legacy_keys.len() == 2 && legacy_keys.iter().all(|k| k["suspended_by"] == "admin"));
}
