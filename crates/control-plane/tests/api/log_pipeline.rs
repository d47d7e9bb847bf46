//! The log pipeline under bad data: one record that cannot be stored never holds back
//! the others (it is repaired, or dropped and counted in `/metrics`), a value the database
//! refuses drops only its record, the in-process sink answers by error kind, and every
//! log listing filter answers 400 on values no record can have — never 500.

use ez_contract::report::{LogBatch, LogRecord, ReportError, ReportSink, limits};
use ez_contract::time::now_unix;
use ez_control_plane::store::{LogFilter, PageRequest, Store};
use ez_control_plane::testing::{Backend, TestDatabase};
use ez_control_plane::usage::InProcessReports;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Resp, TestApp};

both_backends!(
    one_bad_record_does_not_hold_back_its_batch,
    a_value_the_database_refuses_drops_only_its_record,
    the_in_process_sink_answers_by_error_kind,
    every_log_filter_refuses_values_no_record_has
);

const STATS_TOKEN: &str = "stats-token-log-pipeline-0123";

async fn spawn(backend: Backend) -> TestApp {
    TestApp::with_stats_token(backend, STATS_TOKEN).await
}

fn record(request_id: &str) -> Value {
    json!({
        "request_id": request_id, "master_id": 1, "key_id": 1, "namespace": "default",
        "public_model": "gpt-4o", "endpoint": "/v1/chat/completions", "status_code": 200,
        "latency_ms": 12, "stream": true, "created_at": now_unix(),
    })
}

fn with(mut base: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().expect("object") {
        base[k] = v.clone();
    }
    base
}

async fn post_logs(app: &TestApp, items: Vec<Value>) -> Resp {
    let resp = app
        .client
        .post(format!("{}/internal/logs", app.base))
        .header("x-internal-token", STATS_TOKEN)
        .json(&json!({ "items": items }))
        .send()
        .await
        .expect("request sent");
    crate::helpers::into_resp(resp).await
}

/// The value of `ezapi_log_records_rejected_total{reason}` (0 before its first use).
/// The recorder is global to the test process, so tests compare before and after.
async fn rejected_metric(app: &TestApp, reason: &str) -> u64 {
    let resp = app
        .request(reqwest::Method::GET, "/metrics", None, None)
        .await
        .expect(200);
    let prefix = format!("ezapi_log_records_rejected_total{{reason=\"{reason}\"}} ");
    resp.text
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("counter value"))
}

async fn stored(app: &TestApp) -> Vec<Value> {
    let logs = app.admin_get("/admin/logs?page_size=500").await.expect(200).body;
    logs["items"].as_array().expect("items").clone()
}

async fn one_bad_record_does_not_hold_back_its_batch(backend: Backend) {
    let app = spawn(backend).await;
    let status_before = rejected_metric(&app, "invalid_status").await;
    let negative_before = rejected_metric(&app, "negative_value").await;
    let long_model = "m".repeat(limits::MODEL + 100);
    let batch = vec![
        record("good-1"),
        // A client's model name with a NUL: PostgreSQL refuses NUL in text. Repaired.
        with(
            record("nul-model"),
            json!({ "public_model": "gpt\u{0}-4o\u{1b}" }),
        ),
        with(record("bad-status"), json!({ "status_code": 700 })),
        with(record("negative"), json!({ "latency_ms": -5 })),
        with(record("long-model"), json!({ "public_model": long_model })),
        with(
            record("estimated"),
            json!({ "usage_estimated": true, "output_tokens": 42 }),
        ),
        record("good-2"),
        // A newer balancer's field: ignored, the record stored.
        with(record("newer"), json!({ "a_field_of_tomorrow": [1, 2] })),
    ];
    let resp = post_logs(&app, batch).await.expect(202);
    assert_eq!(resp.body, json!({ "accepted": 6, "rejected": 2 }));

    let items = stored(&app).await;
    let by_id = |id: &str| {
        items
            .iter()
            .find(|r| r["request_id"] == id)
            .unwrap_or_else(|| panic!("{id} not stored: {items:?}"))
            .clone()
    };
    assert_eq!(items.len(), 6, "{items:?}");
    assert!(by_id("newer").get("a_field_of_tomorrow").is_none());
    assert_eq!(by_id("nul-model")["public_model"], "gpt-4o");
    assert_eq!(
        by_id("long-model")["public_model"].as_str().map(str::len),
        Some(limits::MODEL)
    );
    assert_eq!(by_id("estimated")["usage_estimated"], true);
    assert_eq!(by_id("good-1")["usage_estimated"], false);
    for id in ["bad-status", "negative"] {
        assert!(items.iter().all(|r| r["request_id"] != id), "{id} stored");
    }
    // The repaired record is found by its repaired name.
    let found = app.admin_get("/admin/logs?model=gpt-4o").await.expect(200).body;
    assert_eq!(found["total"], 5, "{found}");
    let own = app.admin_get("/admin/logs?master_id=1").await.expect(200).body;
    assert!(own["items"][0]["usage_estimated"].is_boolean(), "{own}");

    assert!(rejected_metric(&app, "invalid_status").await > status_before);
    assert!(rejected_metric(&app, "negative_value").await > negative_before);

    // A batch of nothing but bad records is still delivered (2xx): resending cannot help.
    let resp = post_logs(&app, vec![with(record("x"), json!({ "status_code": 42 }))])
        .await
        .expect(202);
    assert_eq!(resp.body, json!({ "accepted": 0, "rejected": 1 }));
    // Later records of everyone flow as before.
    post_logs(&app, vec![record("after")]).await.expect(202);
    assert_eq!(stored(&app).await.len(), 7);
}

fn plain(request_id: &str, model: &str) -> LogRecord {
    LogRecord {
        request_id: request_id.into(),
        master_id: 1,
        key_id: 1,
        namespace: "default".into(),
        public_model: model.into(),
        endpoint: "/v1/chat/completions".into(),
        status_code: 200,
        created_at: now_unix(),
        ..LogRecord::default()
    }
}

/// Below the API's checks: the store itself, given a value the database refuses, stores
/// the rest of the batch and counts the refused record — whatever the statement chunking.
async fn a_value_the_database_refuses_drops_only_its_record(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, db.kind.clone(), 2)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    // A poison value both engines refuse, standing for any value a future bug lets
    // through: a constraint violation (SQLite has no ADD CONSTRAINT; a trigger raises the
    // same SQLITE_CONSTRAINT).
    let poison_rule = match backend {
        Backend::Embedded => {
            "CREATE TRIGGER poison BEFORE INSERT ON log_records WHEN NEW.public_model = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poison'); END"
        }
        Backend::Real => "ALTER TABLE log_records ADD CONSTRAINT poison CHECK (public_model <> 'poison')",
    };
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&db.url)
        .await
        .expect("raw connection");
    sqlx::query(poison_rule)
        .execute(&mut conn)
        .await
        .expect("poison rule");

    for rows_per_statement in [1, 2, 500] {
        let mut batch: Vec<LogRecord> = (0..5)
            .map(|i| plain(&format!("r{rows_per_statement}-{i}"), "gpt-4o"))
            .collect();
        batch[2].public_model = "poison".into();
        if backend == Backend::Real {
            // The real thing: NUL in text, unsanitised (PostgreSQL: SQLSTATE 22021).
            batch[4].public_model = "gpt\u{0}-4o".into();
        }
        let outcome = store
            .insert_logs(&batch, rows_per_statement)
            .await
            .expect("the batch is stored without its poison");
        let refused = if backend == Backend::Real { 2 } else { 1 };
        assert_eq!(
            outcome.refused, refused,
            "rows_per_statement {rows_per_statement}"
        );
        assert_eq!(
            outcome.stored,
            5 - refused,
            "rows_per_statement {rows_per_statement}"
        );
    }
    let page = PageRequest {
        page: 1,
        page_size: 100,
    };
    let (logs, total) = store.list_logs(&LogFilter::default(), page).await.expect("list");
    let expected = if backend == Backend::Real { 9 } else { 12 };
    assert_eq!(total, expected);
    assert!(logs.iter().all(|l| l.public_model == "gpt-4o"), "{logs:?}");

    // A database that is gone is not a refused value: the batch stays retryable.
    store.close().await;
    let err = store
        .insert_logs(&[plain("late", "gpt-4o")], 500)
        .await
        .expect_err("closed pool");
    assert!(!err.is_refused_value(&db.kind), "{err}");
}

async fn the_in_process_sink_answers_by_error_kind(backend: Backend) {
    let app = spawn(backend).await;
    let sink = InProcessReports {
        state: app.state.clone(),
    };
    // A batch with records that cannot be stored is delivered: the good ones stored.
    let mut bad_status = plain("bad", "gpt-4o");
    bad_status.status_code = 1;
    let batch = LogBatch {
        items: vec![plain("a", "gpt\u{0}-4o"), bad_status, plain("b", "gpt-4o")],
    };
    sink.logs(&batch).await.expect("delivered");
    assert_eq!(stored(&app).await.len(), 2);
    // Too many records is the sender's mistake: resending cannot help.
    let huge = LogBatch {
        items: vec![plain("c", "gpt-4o"); 10_001],
    };
    assert!(
        matches!(sink.logs(&huge).await, Err(ReportError::Rejected(_))),
        "oversized batch"
    );
    // A database that cannot answer is worth a retry, whatever HTTP would have said.
    app.state.store.close().await;
    let outcome = sink
        .logs(&LogBatch {
            items: vec![plain("d", "gpt-4o")],
        })
        .await;
    assert!(matches!(outcome, Err(ReportError::Unavailable(_))), "{outcome:?}");
}

async fn every_log_filter_refuses_values_no_record_has(backend: Backend) {
    let app = spawn(backend).await;
    post_logs(&app, vec![record("r1")]).await.expect(202);
    let (_, mk) = app.create_master(json!({ "name": "acme" })).await;
    let long_model = format!("model={}", "x".repeat(limits::MODEL + 1));
    #[rustfmt::skip]
    let queries = [
        "model=%00", "model=gpt%00-4o", "model=gpt-4o%0A", "model=%1B%5B31m", "model=%7F",
        "model=%C2%85", &long_model,
        "status=%00", "status=200%00", "status=%00200", "status=200%0A", "status=error%09",
        "master_id=%00", "master_id=1%00", "master_id=99999999999999999999",
        "key_id=%00", "key_id=-99999999999999999999", "key_id=0x10",
        "since=%00", "since=1e3", "since=-1", "until=1%0A", "until=99999999999999999999",
        "page=%00", "page=1.0", "page_size=%00", "page_size=-1",
    ];
    for path in ["/admin/logs", "/v1/logs"] {
        for query in queries {
            let token = if path == "/v1/logs" {
                mk.as_str()
            } else {
                crate::helpers::ADMIN_TOKEN
            };
            let resp = app.get(&format!("{path}?{query}"), token).await;
            assert_eq!(resp.status, 400, "{path}?{query}: {}", resp.text);
            resp.expect_error(400, "invalid_query");
        }
    }
    // Good values still answer.
    let found = app
        .admin_get(&format!("/admin/logs?model={}", "gpt-4o"))
        .await
        .expect(200)
        .body;
    assert_eq!(found["total"], 1, "{found}");
    let longest = format!("/admin/logs?model={}", "x".repeat(limits::MODEL));
    app.admin_get(&longest).await.expect(200);
    app.get("/v1/logs?status=success&since=0&until=99999999999", &mk)
        .await
        .expect(200);
}
