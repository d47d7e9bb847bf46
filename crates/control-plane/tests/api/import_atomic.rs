//! An import is one transaction: when the write of its last entity fails, the database
//! is exactly as before, and the bus too. The failure is real: a trigger the test creates
//! makes the database refuse to insert a child key named `boom` (keys are written last).

use ez_config::DatabaseKind;
use ez_contract::time::now_unix;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::{Value, json};

use crate::both_backends;
use crate::bus_outage::{SwitchableBus, retry_job};
use crate::helpers::TestApp;

both_backends!(
    a_failure_at_the_last_entity_changes_nothing,
    an_overwrite_that_fails_half_way_changes_nothing,
    a_committed_import_reaches_the_bus_through_the_outbox,
);

/// Makes inserting a child key named `boom` fail, on either engine.
async fn inject_failure(app: &TestApp) {
    let statements: &[&str] = match app.state.store.kind() {
        DatabaseKind::Sqlite => &[
            "CREATE TRIGGER ez_test_fail BEFORE INSERT ON child_keys WHEN NEW.name = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
        DatabaseKind::Postgres => &[
            "CREATE FUNCTION ez_test_fail() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$",
            "CREATE TRIGGER ez_test_fail BEFORE INSERT ON child_keys FOR EACH ROW \
             WHEN (NEW.name = 'boom') EXECUTE FUNCTION ez_test_fail()",
        ],
    };
    run_sql(app, statements).await;
}

async fn remove_failure(app: &TestApp) {
    let statement = match app.state.store.kind() {
        DatabaseKind::Sqlite => "DROP TRIGGER ez_test_fail",
        DatabaseKind::Postgres => "DROP TRIGGER ez_test_fail ON child_keys",
    };
    run_sql(app, &[statement]).await;
}

async fn run_sql(app: &TestApp, statements: &[&str]) {
    let pool = sqlx::AnyPool::connect(app.database_url())
        .await
        .expect("connect to the test database");
    for statement in statements {
        sqlx::raw_sql(statement).execute(&pool).await.expect("test SQL");
    }
    pool.close().await;
}

/// Every kind of entity.
async fn populate(app: &TestApp) {
    app.create_namespace("team-a").await;
    let openai = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": "openai", "api_keys": ["sk-up-aaaa0001", "sk-up-bbbb0002"] }),
        )
        .await
        .expect(201);
    let group_id = openai.body["group"]["id"].as_i64().unwrap();
    app.admin_post(
        "/admin/bindings",
        json!({ "namespace": "team-a", "public_model": "gpt-4o", "group_id": group_id }),
    )
    .await
    .expect(201);
    app.admin_put("/admin/models/gpt-4o", json!({ "context_window": 64000 }))
        .await
        .expect(200);
    let (_, master_key) = app
        .create_master(json!({ "name": "acme", "namespaces": ["default", "team-a"] }))
        .await;
    app.issue_key(&master_key, json!({ "name": "ci", "namespaces": ["team-a"] }))
        .await;
}

async fn export(app: &TestApp) -> Value {
    app.admin_get("/admin/export?include_secrets=true")
        .await
        .expect(200)
        .body
}

/// `doc` with one more key of master `acme`, named `boom`, at the very end.
fn with_boom(doc: &Value) -> Value {
    let mut doc = doc.clone();
    let mut boom = doc["keys"][0].clone();
    boom["name"] = json!("boom");
    boom["token_digest"] = json!("b".repeat(64));
    doc["keys"].as_array_mut().unwrap().push(boom);
    doc
}

async fn a_failure_at_the_last_entity_changes_nothing(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    populate(&a).await;
    let doc = with_boom(&export(&a).await);

    let b = TestApp::spawn(backend).await;
    inject_failure(&b).await;
    let before = export(&b).await;
    let bus_before = b.bus_snapshot().await;
    b.admin_post("/admin/import", doc.clone())
        .await
        .expect_error(500, "internal_error");
    assert_eq!(export(&b).await, before, "the database is as before");
    assert_eq!(b.bus_snapshot().await, bus_before, "the bus is as before");
    // Nothing is left locked: the next write goes through.
    b.create_namespace("after-failure").await;

    // Without the injected failure the same document imports whole: the failure came
    // after every other entity had been written.
    remove_failure(&b).await;
    let report = b.admin_post("/admin/import", doc.clone()).await.expect(200).body;
    for kind in [
        "namespace",
        "provider_group",
        "api_key",
        "binding",
        "model",
        "master",
    ] {
        assert_eq!(
            report["counts"][kind]["create"],
            1 + u64::from(kind == "api_key"),
            "{kind}: {report}"
        );
    }
    assert_eq!(report["counts"]["key"]["create"], 2);
    let mut expected = doc["keys"].as_array().unwrap().clone();
    expected.sort_by_key(|k| k["name"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        export(&b).await["keys"],
        json!(expected),
        "exports list keys by name"
    );
    assert_eq!(b.bus_snapshot().await, b.desired_bus().await);
}

async fn an_overwrite_that_fails_half_way_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    populate(&app).await;
    let current = export(&app).await;
    // Updates of every kind, a new namespace, and the failing key last.
    let mut doc = with_boom(&current);
    doc["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "late-ns", "description": "", "status": "active" }));
    doc["namespaces"][0]["description"] = json!("changed");
    doc["provider_groups"][0]["models"] = json!(["gpt-4o"]);
    doc["api_keys"][0]["weight"] = json!(9);
    doc["bindings"][0]["weight"] = json!(5);
    doc["models"][0]["override"]["context_window"] = json!(1000);
    doc["masters"][0]["global_qps"] = json!(77);
    doc["keys"][0]["qps"] = json!(3);

    inject_failure(&app).await;
    let bus_before = app.bus_snapshot().await;
    app.admin_post("/admin/import?policy=overwrite", doc.clone())
        .await
        .expect_error(500, "internal_error");
    assert_eq!(export(&app).await, current, "every update was undone");
    assert_eq!(app.bus_snapshot().await, bus_before);

    remove_failure(&app).await;
    app.admin_post("/admin/import?policy=overwrite", doc.clone())
        .await
        .expect(200);
    let after = export(&app).await;
    assert_eq!(after["masters"][0]["global_qps"], 77);
    assert_eq!(after["api_keys"][0]["weight"], 9);
    assert_eq!(app.bus_snapshot().await, app.desired_bus().await);
}

/// The bus is written after the commit; when it is down, the import still succeeds and
/// every entry it touched waits in the sync outbox until the bus answers again.
async fn a_committed_import_reaches_the_bus_through_the_outbox(backend: Backend) {
    let a = TestApp::spawn(backend).await;
    populate(&a).await;
    let doc = export(&a).await;

    let bus = SwitchableBus::new(test_bus(backend).await);
    let b = TestApp::start(TestDatabase::create(backend).await, bus.clone()).await;
    bus.set_up(false);
    b.admin_post("/admin/import", doc.clone()).await.expect(200);
    assert_eq!(export(&b).await, doc, "the database has the import");

    let master = b.admin_get("/admin/masters").await.expect(200).body["items"][0]["id"].clone();
    let group = b.admin_get("/admin/provider-groups").await.expect(200).body["items"][0]["id"].clone();
    let pending = b
        .admin_get("/admin/sync/outbox?status=pending")
        .await
        .expect(200)
        .body;
    let mut resources: Vec<String> = pending["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["resource"].as_str().unwrap(),
                e["resource_id"].as_str().unwrap()
            )
        })
        .collect();
    resources.sort();
    assert_eq!(
        resources,
        vec![
            "binding:team-a.gpt-4o".to_owned(),
            format!("master:{master}"),
            "models:all".to_owned(),
            format!("provider_group:{group}"),
        ]
    );

    bus.set_up(true);
    let retried = retry_job(&b, 10)
        .run_at(now_unix() + 3600)
        .await
        .expect("retry pass");
    assert_eq!(retried, 4);
    assert_eq!(b.bus_snapshot().await, b.desired_bus().await);
}
