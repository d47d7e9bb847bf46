//! What storing log records costs: RECORDS records (default 50,000) in batches of BATCH
//! (default 1,000) through the control plane's `LogWriter` with ROWS rows per statement
//! (`log_writer.batch_size`, default 16), one batch after another, on SQLite and, when
//! `EZ_TEST_DATABASE_URL` is set, on PostgreSQL — in one run. Prints records per second
//! for each. Results: `docs/measurements.md`.
//!
//!     cargo run --release -p ez-control-plane --example log_write_bench [-- RECORDS BATCH ROWS]

use std::time::Instant;

use ez_contract::report::LogRecord;
use ez_contract::time::now_unix;
use ez_control_plane::store::Store;
use ez_control_plane::testing::{Backend, TestDatabase};
use ez_control_plane::usage::LogWriter;

/// Records that look like real traffic: distinct ids, a few models, some errors.
fn records(n: usize) -> Vec<LogRecord> {
    let now = now_unix();
    (0..n)
        .map(|i| LogRecord {
            request_id: format!("req-{i:016x}"),
            master_id: (i % 50) as i64 + 1,
            key_id: (i % 500) as i64 + 1,
            namespace: "default".into(),
            public_model: ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4"][i % 3].into(),
            upstream_model: "gpt-4o-2024-08-06".into(),
            group_id: Some((i % 10) as i64 + 1),
            api_key_id: Some((i % 40) as i64 + 1),
            endpoint: "/v1/chat/completions".into(),
            upstream_format: "openai_chat".into(),
            status_code: if i % 20 == 0 { 429 } else { 200 },
            error_code: (i % 20 == 0).then(|| "rate_limited".into()),
            error_message: (i % 20 == 0).then(|| "upstream rate limit reached".into()),
            latency_ms: (i % 900) as i64 + 100,
            first_token_ms: Some((i % 300) as i64 + 20),
            input_tokens: (i % 2_000) as i64,
            output_tokens: (i % 700) as i64,
            usage_estimated: i % 50 == 0,
            client_ip: Some("10.1.2.3".into()),
            stream: i % 2 == 0,
            created_at: now,
        })
        .collect()
}

async fn run(backend: Backend, label: &str, total: usize, batch: usize, rows: usize) {
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, db.kind.clone(), 5)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let writer = LogWriter::new(store.clone(), 50_000, rows);
    let all = records(total);
    let started = Instant::now();
    for chunk in all.chunks(batch) {
        writer.write(chunk).await.expect("write batch");
    }
    let elapsed = started.elapsed();
    println!(
        "{label}: {total} records in batches of {batch}, {rows} rows per statement: {:.2} s, {:.0} records/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    store.close().await;
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("RECORDS and BATCH are numbers"))
        .collect();
    let total = args.first().copied().unwrap_or(50_000);
    let batch = args.get(1).copied().unwrap_or(1_000).max(1);
    let rows = args.get(2).copied().unwrap_or(16).max(1);
    run(Backend::Embedded, "SQLite", total, batch, rows).await;
    if std::env::var_os("EZ_TEST_DATABASE_URL").is_some() {
        run(Backend::Real, "PostgreSQL", total, batch, rows).await;
    } else {
        println!("PostgreSQL: skipped (EZ_TEST_DATABASE_URL not set)");
    }
}
