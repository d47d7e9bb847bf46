//! The report pipeline under abuse: client-controlled text cannot bloat the buffer, a
//! batch the control plane refuses is split until the bad record is isolated (the good
//! ones are stored), and usage of more keys than one report may carry goes in pieces.
//! Each test runs on SQLite + memory and on PostgreSQL + Redis.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ez_balancer::Reporter;
use ez_balancer::report::Outcome;
use ez_contract::report::{
    CredentialBan, CredentialUsageBatch, KeyUsageBatch, LogBatch, LogRecord, MAX_BATCH_ITEMS, RefreshOutcome,
    RefreshRequest, ReportError, ReportSink,
};
use ez_control_plane::testing::Backend;
use serde_json::json;
use support::{Gateway, both_backends};

both_backends!(
    huge_client_headers_do_not_bloat_the_buffer_while_the_control_plane_is_away,
    a_refused_record_is_isolated_and_the_rest_of_its_batch_stored,
    usage_of_more_keys_than_one_report_holds_goes_in_pieces,
);

/// The control plane behind a switch: away while `down`; refusing (like a 4xx) any log
/// batch holding a record of model `poison`, and any usage report over the item limit.
struct Switch {
    inner: Arc<dyn ReportSink>,
    down: AtomicBool,
    log_calls: AtomicUsize,
    key_items: AtomicUsize,
}

impl Switch {
    fn new(inner: Arc<dyn ReportSink>) -> Arc<Switch> {
        Arc::new(Switch {
            inner,
            down: AtomicBool::new(false),
            log_calls: AtomicUsize::new(0),
            key_items: AtomicUsize::new(0),
        })
    }

    fn check(&self) -> Result<(), ReportError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(ReportError::Unavailable("switched off".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl ReportSink for Switch {
    async fn logs(&self, batch: &LogBatch) -> Result<(), ReportError> {
        self.check()?;
        self.log_calls.fetch_add(1, Ordering::SeqCst);
        if batch.items.iter().any(|r| r.public_model == "poison") {
            return Err(ReportError::Rejected("400 invalid record".into()));
        }
        self.inner.logs(batch).await
    }

    async fn key_usage(&self, batch: &KeyUsageBatch) -> Result<(), ReportError> {
        self.check()?;
        if batch.items.len() > MAX_BATCH_ITEMS {
            return Err(ReportError::Rejected("400 too many items".into()));
        }
        self.key_items.fetch_add(batch.items.len(), Ordering::SeqCst);
        self.inner.key_usage(batch).await
    }

    async fn credential_usage(&self, batch: &CredentialUsageBatch) -> Result<(), ReportError> {
        self.check()?;
        self.inner.credential_usage(batch).await
    }

    async fn ban(&self, ban: &CredentialBan) -> Result<(), ReportError> {
        self.check()?;
        self.inner.ban(ban).await
    }

    async fn refresh(&self, id: i64, request: &RefreshRequest) -> Result<RefreshOutcome, ReportError> {
        self.check()?;
        self.inner.refresh(id, request).await
    }
}

/// A balancer (its own port) reporting through `switch`.
async fn balancer_behind(gw: &Gateway, switch: &Arc<Switch>) -> (String, Arc<Reporter>) {
    let reporter = Reporter::new(switch.clone(), gw.cache.bus().clone(), 100_000);
    (gw.balancer(reporter.clone()).await, reporter)
}

async fn huge_client_headers_do_not_bloat_the_buffer_while_the_control_plane_is_away(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-0001"], "gpt-4o", "gpt-4o").await;
    let switch = Switch::new(gw.cp.report_sink());
    switch.down.store(true, Ordering::SeqCst);
    let (base, reporter) = balancer_behind(&gw, &switch).await;
    // Just below hyper's header buffer (larger headers are refused with 431 before any handler).
    let namespace = "n".repeat(300 * 1024);
    const N: usize = 50;
    for _ in 0..N {
        let resp = gw
            .client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-ez-namespace", &namespace)
            .header("x-request-id", "r".repeat(10_000))
            .json(&json!({ "model": "gpt-4o\u{0}\u{7}", "messages": [] }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let text = resp.text().await.unwrap();
        assert!(
            text.len() < 2_000,
            "the refusal echoes a bounded excerpt: {} bytes",
            text.len()
        );
    }
    assert_eq!(reporter.buffered(), N);
    // 15 MB of headers went in; a few hundred bytes per record are held.
    assert!(
        reporter.buffered_bytes() <= N * 2_048,
        "{} bytes buffered for {N} records",
        reporter.buffered_bytes()
    );

    switch.down.store(false, Ordering::SeqCst);
    reporter.flush(Duration::from_secs(1)).await;
    let logs = gw.wait_for_logs(N).await;
    for log in &logs {
        assert_eq!(log["status_code"], 403);
        assert_eq!(log["public_model"], "gpt-4o", "control characters removed: {log}");
        assert!(log["request_id"].as_str().unwrap().len() <= 128, "{log}");
        assert!(log["error_message"].as_str().unwrap().len() <= 1_000, "{log}");
    }
}

fn outcome(i: usize, model: &str) -> Outcome {
    Outcome {
        record: LogRecord {
            request_id: format!("req-{i}"),
            master_id: 1,
            key_id: 1,
            namespace: "default".into(),
            public_model: model.into(),
            endpoint: "/v1/chat/completions".into(),
            status_code: 200,
            created_at: 1_700_000_000,
            ..LogRecord::default()
        },
        token_hash: [(i % 251) as u8; 32],
    }
}

async fn a_refused_record_is_isolated_and_the_rest_of_its_batch_stored(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let switch = Switch::new(gw.cp.report_sink());
    let reporter = Reporter::new(switch.clone(), gw.cache.bus().clone(), 100_000);
    for i in 0..999 {
        reporter.record(outcome(i, if i == 500 { "poison" } else { "gpt-4o" }));
    }
    reporter.flush(Duration::from_secs(1)).await;
    assert_eq!(reporter.buffered(), 0);
    assert_eq!(reporter.refused(), 1);
    assert_eq!(reporter.dropped(), 0);
    let (status, body, text) = gw
        .call(
            reqwest::Method::GET,
            "/admin/logs?page_size=1",
            support::ADMIN,
            None,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(body["total"], 998, "every good record of the batch is stored");
    // Isolating one bad record out of 999 takes a handful of round trips, not 999.
    assert!(switch.log_calls.load(Ordering::SeqCst) <= 25);
}

async fn usage_of_more_keys_than_one_report_holds_goes_in_pieces(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let switch = Switch::new(gw.cp.report_sink());
    let reporter = Reporter::new(switch.clone(), gw.cache.bus().clone(), 100_000);
    let keys = MAX_BATCH_ITEMS + 500;
    for i in 0..keys {
        let mut o = outcome(i, "gpt-4o");
        o.token_hash = [0; 32];
        o.token_hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
        reporter.record(o);
    }
    reporter.flush(Duration::from_secs(1)).await;
    assert_eq!(switch.key_items.load(Ordering::SeqCst), keys);
    assert_eq!(reporter.refused(), 0);
}
