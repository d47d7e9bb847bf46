//! Usage that cannot be dodged by hanging up: a client that goes away mid-stream is
//! charged for what the upstream reported before (Anthropic's `message_start`) plus an
//! estimate of the rest (the prompt's text, the deltas streamed), marked
//! `usage_estimated`; key totals and realtime counters carry the same numbers. Each test
//! runs on SQLite + memory and on PostgreSQL + Redis.

mod support;

use std::time::{Duration, Instant};

use ez_control_plane::testing::Backend;
use serde_json::{Value, json};
use support::{Gateway, Tenant, both_backends};

both_backends!(
    an_openai_stream_abandoned_mid_way_is_charged_an_estimate,
    an_anthropic_stream_abandoned_after_message_start_keeps_its_input_tokens,
    a_stream_that_completes_is_charged_exactly,
);

async fn tenant(gw: &Gateway) -> Tenant {
    gw.add_tenant("acme", json!({}), json!({})).await
}

/// Sends `body` to `path` as a stream, reads chunks until `events` SSE events arrived,
/// then hangs up.
async fn read_then_hang_up(gw: &Gateway, key: &str, path: &str, body: Value, events: usize) {
    let mut resp = gw
        .client
        .post(format!("{}{path}", gw.base))
        .bearer_auth(key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut seen = String::new();
    while seen.matches("\n\n").count() < events {
        let chunk = resp.chunk().await.unwrap().expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(resp);
}

fn tokens(log: &Value) -> (i64, i64) {
    (
        log["input_tokens"].as_i64().unwrap(),
        log["output_tokens"].as_i64().unwrap(),
    )
}

/// The key's stored totals and the master's realtime counters equal the log record's.
async fn assert_totals_match(gw: &Gateway, t: &Tenant, log: &Value) {
    let (input, output) = tokens(log);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        gw.deliver_reports().await;
        let (requests, total) = gw.cp.state.store.key_usage(t.key_id).await.unwrap();
        let realtime = gw.get(&format!("/admin/masters/{}/realtime", t.master_id)).await;
        if requests == 1 && total == input + output && realtime["tokens"] == input + output {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "key totals ({requests}, {total}) and realtime {realtime} never matched the record {log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn an_openai_stream_abandoned_mid_way_is_charged_an_estimate(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_route("drip", &gw.upstream, &[("sk-upstream-drip", 1)], "fast", 1)
        .await;
    let t = tenant(&gw).await;
    // 400 bytes of prompt text: about 100 tokens.
    let prompt = "p".repeat(400);
    let body =
        json!({ "model": "fast", "stream": true, "messages": [{ "role": "user", "content": prompt }] });
    read_then_hang_up(&gw, &t.key, "/v1/chat/completions", body, 5).await;

    let logs = gw.wait_for_logs(1).await;
    let log = &logs[0];
    assert_eq!(log["status_code"], 499, "{log}");
    assert_eq!(log["usage_estimated"], true, "{log}");
    let (input, output) = tokens(log);
    assert!((100..=110).contains(&input), "the prompt's estimate: {log}");
    // At least the five deltas of "hel" the client read (15 bytes, 4 tokens).
    assert!(output >= 4, "the streamed deltas' estimate: {log}");
    assert_totals_match(&gw, &t, log).await;
}

async fn an_anthropic_stream_abandoned_after_message_start_keeps_its_input_tokens(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_anthropic_route("sk-ant-drip", "claude").await;
    let t = tenant(&gw).await;
    let body = json!({ "model": "claude", "max_tokens": 100, "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    // message_start and four deltas of 8 bytes.
    read_then_hang_up(&gw, &t.key, "/v1/messages", body, 5).await;

    let logs = gw.wait_for_logs(1).await;
    let log = &logs[0];
    assert_eq!(log["status_code"], 499, "{log}");
    assert_eq!(log["usage_estimated"], true, "{log}");
    let (input, output) = tokens(log);
    assert_eq!(input, 11, "message_start's input tokens are kept: {log}");
    assert!(output >= 8, "four deltas of 8 bytes: {log}");
    assert_totals_match(&gw, &t, log).await;
}

async fn a_stream_that_completes_is_charged_exactly(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let key = gw.setup(&["sk-upstream-0001"], "gpt-4o", "gpt-4o").await;
    let (status, _, text) = gw.chat(&key, "gpt-4o", true).await;
    assert_eq!(status, 200, "{text}");
    let logs = gw.wait_for_logs(1).await;
    assert_eq!(tokens(&logs[0]), (7, 2), "{:?}", logs[0]);
    assert_eq!(logs[0]["usage_estimated"], false);
}
