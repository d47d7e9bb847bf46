//! Defences found in review: secret header values, metrics cardinality, outbox merges,
//! the watchdog's repair of dead entries.

use std::time::Duration;

use ez_contract::bus_keys;
use ez_control_plane::scheduler::Job;
use ez_control_plane::sync::BusWatchdog;
use ez_control_plane::testing::Backend;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    credential_header_values_are_masked_and_survive_round_trips,
    a_failure_merged_during_a_retry_is_not_lost,
    the_watchdog_repairs_dead_entries_once_the_bus_answers,
);

const HEADER_SECRET: &str = "hdr-secret-0123456789";

async fn credential_header_values_are_masked_and_survive_round_trips(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let created = app
        .admin_post(
            "/admin/providers/custom",
            json!({
                "name": "proxy", "base_url": "http://upstream.local/v1", "api_keys": ["sk-up-000000001"],
                "static_headers": { "X-Api-Key": HEADER_SECRET, "x-team": "blue" }
            }),
        )
        .await
        .expect(201);
    assert!(!created.text.contains(HEADER_SECRET), "{}", created.text);
    let group = &created.body["group"];
    assert_eq!(group["static_headers"]["x-api-key"], "****6789");
    assert_eq!(group["static_headers"]["x-team"], "blue");
    let id = group["id"].as_i64().unwrap();
    let fetched = app
        .admin_get(&format!("/admin/provider-groups/{id}"))
        .await
        .expect(200);
    assert!(!fetched.text.contains(HEADER_SECRET));
    let listed = app.admin_get("/admin/provider-groups").await.expect(200);
    assert!(!listed.text.contains(HEADER_SECRET));

    // A client that PUTs back what it read keeps the real value.
    let mut headers = fetched.body["static_headers"].clone();
    headers["x-team"] = json!("green");
    app.admin_put(
        &format!("/admin/provider-groups/{id}"),
        json!({ "static_headers": headers }),
    )
    .await
    .expect(200);
    let providers = app.state.bus.hash_get_all(bus_keys::PROVIDERS).await.unwrap();
    let entry: Value = serde_json::from_str(providers.values().next().unwrap()).unwrap();
    assert_eq!(
        entry["static_headers"]["x-api-key"], HEADER_SECRET,
        "the data plane gets the real value"
    );
    assert_eq!(entry["static_headers"]["x-team"], "green");
    // A masked value that matches nothing is refused, not stored.
    app.admin_put(
        &format!("/admin/provider-groups/{id}"),
        json!({ "static_headers": { "x-api-key": "****9999" } }),
    )
    .await
    .expect_error(400, "invalid_field");

    // Exports without secrets mask it; re-importing here restores it; elsewhere it is refused.
    let doc = app.admin_get("/admin/export").await.expect(200).body;
    assert!(!doc.to_string().contains(HEADER_SECRET));
    let with_secrets = app
        .admin_get("/admin/export?include_secrets=true")
        .await
        .expect(200)
        .body;
    app.admin_post("/admin/import?policy=overwrite", doc.clone())
        .await
        .expect(200);
    assert_eq!(
        app.admin_get("/admin/export?include_secrets=true")
            .await
            .expect(200)
            .body,
        with_secrets
    );
    let other = TestApp::spawn(backend).await;
    let mut no_keys = doc.clone();
    no_keys["api_keys"] = json!([]);
    other
        .admin_post("/admin/import", no_keys)
        .await
        .expect_error(422, "invalid_import");
}

async fn a_failure_merged_during_a_retry_is_not_lost(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let store = &app.state.store;
    store
        .record_outbox("master", "1", "upsert", "first failure")
        .await
        .unwrap();
    let seen = store.due_outbox(i64::MAX, 10).await.unwrap().remove(0);
    // A new failure of the same resource merges into the entry while a retry runs.
    store
        .record_outbox("master", "1", "upsert", "second failure")
        .await
        .unwrap();
    store.outbox_done(&seen).await.unwrap();
    let open = store.open_outbox().await.unwrap();
    assert_eq!(open.len(), 1, "the newer failure stays pending");
    assert_eq!(open[0].last_error, "second failure");
    assert_eq!(
        store.settle_outbox(&[seen]).await.unwrap(),
        0,
        "an outdated settle changes nothing"
    );
    assert_eq!(store.settle_outbox(&open).await.unwrap(), 1);
    assert!(store.open_outbox().await.unwrap().is_empty());
}

async fn the_watchdog_repairs_dead_entries_once_the_bus_answers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (master_id, _) = app.create_master(json!({ "name": "acme" })).await;
    // A change the bus never got and whose retries ran out.
    app.state
        .bus
        .apply(vec![ez_bus::BusWrite::Delete {
            key: bus_keys::master(master_id),
        }])
        .await
        .unwrap();
    let store = &app.state.store;
    store
        .record_outbox("master", &master_id.to_string(), "upsert", "bus down")
        .await
        .unwrap();
    let entry = store.due_outbox(i64::MAX, 10).await.unwrap().remove(0);
    store
        .outbox_retry_failed(&entry, 0, "bus down", true)
        .await
        .unwrap();

    let watchdog = BusWatchdog {
        sync: app.state.sync.clone(),
        every: Duration::from_secs(10),
    };
    watchdog.run_once().await.unwrap();
    assert!(
        store.open_outbox().await.unwrap().is_empty(),
        "the dead entry is settled"
    );
    assert_eq!(
        app.bus_snapshot().await,
        app.desired_bus().await,
        "and its change is on the bus"
    );
}

#[tokio::test]
async fn metrics_labels_stay_bounded() {
    let app = TestApp::spawn(Backend::Embedded).await;
    for method in ["FOO", "BAR", "X-CUSTOM"] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        app.request(m, "/health", None, None).await;
    }
    let text = app
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await
        .expect(200)
        .text;
    assert!(text.contains(r#"method="OTHER""#), "{text}");
    assert!(!text.contains(r#"method="FOO""#) && !text.contains(r#"method="X-CUSTOM""#));
}
