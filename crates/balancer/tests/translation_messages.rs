//! Anthropic Messages clients (Claude Code's shape) served by an OpenAI-compatible
//! upstream, end to end: the request arrives in Chat Completions' shape (system first,
//! a stream asking for its usage chunk, the credential as a bearer token), the answer —
//! plain or streamed — comes back as Anthropic's, usage is recorded from the upstream's
//! own numbers, upstream errors reach the client in Anthropic's error shape, and what
//! OpenAI cannot express is refused before anything is sent.

mod support;

use serde_json::{Value, json};
use support::{Gateway, both_backends, sse_events};

both_backends!(
    a_messages_request_is_answered_by_an_openai_upstream,
    a_streamed_messages_request_is_translated_event_by_event,
    what_openai_cannot_express_is_refused_before_sending,
    an_upstream_error_reaches_the_client_in_anthropic_shape,
    a_tool_call_and_its_result_cross_both_ways,
    token_counting_passes_through_to_anthropic_only,
);

async fn messages(gw: &Gateway, key: &str, body: Value) -> (u16, String) {
    let headers = [("x-api-key", key), ("anthropic-version", "2023-06-01")];
    gw.post_checked("/v1/messages", &headers, body).await
}

async fn a_messages_request_is_answered_by_an_openai_upstream(backend: ez_control_plane::testing::Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "sonnet", 1)
        .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let (status, text) = messages(
        &gw,
        &t.key,
        json!({
            "model": "sonnet",
            "max_tokens": 1024,
            "system": [{ "type": "text", "text": "Be brief.", "cache_control": { "type": "ephemeral" } }],
            "messages": [{ "role": "user", "content": "hi" }],
            "stop_sequences": ["END"],
            "metadata": { "user_id": "user_1" },
        }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({
            "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [{ "type": "text", "text": "hello via good" }],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": { "input_tokens": 3, "output_tokens": 2, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0 },
        })
    );

    let seen = gw.mock.requests();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.credential, "sk-upstream-good");
    assert!(
        sent.headers.get("x-api-key").is_none(),
        "the client's key stays here"
    );
    assert_eq!(
        sent.body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": "hi" },
            ],
            "max_tokens": 1024,
            "stop": ["END"],
            "user": "user_1",
        })
    );

    let logs = gw.wait_for_logs(1).await;
    assert_eq!(logs[0]["status_code"], 200);
    assert_eq!(
        (
            logs[0]["input_tokens"].as_i64(),
            logs[0]["output_tokens"].as_i64()
        ),
        (Some(3), Some(2))
    );
    assert_eq!(logs[0]["endpoint"], "/v1/messages");
}

/// `(event name, data)` of each event of an Anthropic stream.
fn anthropic_events(text: &str) -> Vec<(&str, Value)> {
    sse_events(text)
        .into_iter()
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("an event line and a data line");
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (name.strip_prefix("event: ").unwrap(), data)
        })
        .collect()
}

async fn a_streamed_messages_request_is_translated_event_by_event(
    backend: ez_control_plane::testing::Backend,
) {
    let gw = Gateway::start(backend).await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "sonnet", 1)
        .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let (status, text) = messages(
        &gw,
        &t.key,
        json!({ "model": "sonnet", "max_tokens": 64, "stream": true,
            "messages": [{ "role": "user", "content": "hi" }] }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let events = anthropic_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ],
        "{text}"
    );
    for (name, data) in &events {
        assert_eq!(data["type"], *name);
    }
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"), "{start}");
    assert_eq!(start["model"], "gpt-4o-mini");
    assert_eq!(start["content"], json!([]));
    assert_eq!(
        events[1].1,
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } })
    );
    assert_eq!(
        events[3].1,
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "lo" } })
    );
    assert_eq!(
        events[5].1,
        json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn", "stop_sequence": null },
            "usage": { "input_tokens": 7, "output_tokens": 2, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0 } })
    );

    // The balancer asked for the usage chunk the Anthropic client cannot ask for.
    let sent = &gw.mock.requests()[0].body;
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({ "include_usage": true }));

    let logs = gw.wait_for_logs(1).await;
    let record = &logs[0];
    assert_eq!(
        (record["input_tokens"].as_i64(), record["output_tokens"].as_i64()),
        (Some(7), Some(2))
    );
    assert_eq!(record["stream"], true);
    assert_eq!(record["usage_estimated"], false);
    assert_eq!(record["endpoint"], "/v1/messages");
}

async fn what_openai_cannot_express_is_refused_before_sending(backend: ez_control_plane::testing::Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "sonnet", 1)
        .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let user = json!([{ "role": "user", "content": "hi" }]);
    let cases = [
        (json!({ "top_k": 5 }), "top_k"),
        (
            json!({ "tools": [{ "type": "web_search_20250305", "name": "web_search", "max_uses": 5 }] }),
            "tools[0].type",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "document", "source": { "type": "url", "url": "https://example.com/a.pdf" } }] }] }),
            "messages[0].content[0].type",
        ),
        (json!({ "container": "container_1" }), "container"),
    ];
    let refused = cases.len();
    for (patch, param) in cases {
        let mut body = json!({ "model": "sonnet", "max_tokens": 16, "messages": user });
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, text) = messages(&gw, &t.key, body).await;
        assert_eq!(status, 400, "{param}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["code"], "unsupported_parameter", "{text}");
        assert_eq!(error["error"]["param"], param, "{text}");
        assert!(
            error["error"]["message"].as_str().unwrap().starts_with(param),
            "{text}"
        );
    }
    assert!(
        gw.mock.requests().is_empty(),
        "refused requests never reach the upstream"
    );
    let logs = gw.wait_for_logs(refused).await;
    for record in &logs {
        assert_eq!(record["status_code"], 400);
        assert_eq!(record["error_code"], "unsupported_parameter");
    }
}

async fn an_upstream_error_reaches_the_client_in_anthropic_shape(
    backend: ez_control_plane::testing::Backend,
) {
    let gw = Gateway::start(backend).await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "sonnet", 1)
        .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    // The mock answers more than 10,000 max_tokens with a 402 tied to max_tokens.
    for stream in [false, true] {
        let (status, text) = messages(
            &gw,
            &t.key,
            json!({ "model": "sonnet", "max_tokens": 20000, "stream": stream,
                "messages": [{ "role": "user", "content": "hi" }] }),
        )
        .await;
        assert_eq!(status, 402, "{text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["type"], "error", "{text}");
        assert_eq!(error["error"]["type"], "billing_error", "{text}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("fewer max_tokens"),
            "{text}"
        );
    }
}

async fn a_tool_call_and_its_result_cross_both_ways(backend: ez_control_plane::testing::Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "sonnet", 1)
        .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let tools = json!([{ "name": "weather", "description": "Current weather",
        "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } } }]);
    let ask = json!({ "role": "user", "content": "Weather in Paris?" });

    let (status, text) = messages(
        &gw,
        &t.key,
        json!({ "model": "sonnet", "max_tokens": 64, "stream": true, "tools": tools, "messages": [ask] }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let events = anthropic_events(&text);
    let data: Vec<&Value> = events.iter().skip(1).map(|(_, d)| d).collect();
    assert_eq!(
        data,
        [
            &json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "tool_use", "id": "call_1", "name": "weather", "input": {} } }),
            &json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": "{\"city\":" } }),
            &json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "input_json_delta", "partial_json": "\"Paris\"}" } }),
            &json!({ "type": "content_block_stop", "index": 0 }),
            &json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use", "stop_sequence": null },
                "usage": { "input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0 } }),
            &json!({ "type": "message_stop" }),
        ],
        "{text}"
    );

    let (status, text) = messages(
        &gw,
        &t.key,
        json!({ "model": "sonnet", "max_tokens": 64, "tools": tools, "messages": [ask] }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["content"],
        json!([{ "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } }])
    );
    assert_eq!(body["stop_reason"], "tool_use");

    // The client sends the result back; the upstream gets it as a tool message.
    let (status, text) = messages(
        &gw,
        &t.key,
        json!({ "model": "sonnet", "max_tokens": 64, "tools": tools, "messages": [
            ask,
            { "role": "assistant", "content": body["content"] },
            { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "call_1", "content": "18C" }] },
        ] }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let sent = &gw.mock.requests()[2].body;
    assert_eq!(
        sent["messages"],
        json!([
            { "role": "user", "content": "Weather in Paris?" },
            { "role": "assistant", "content": null, "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
            ] },
            { "role": "tool", "tool_call_id": "call_1", "content": "18C" },
        ])
    );
    let logs = gw.wait_for_logs(3).await;
    let tokens: Vec<(Option<i64>, Option<i64>)> = logs
        .iter()
        .map(|r| (r["input_tokens"].as_i64(), r["output_tokens"].as_i64()))
        .collect();
    assert_eq!(
        tokens,
        [(Some(3), Some(2)), (Some(20), Some(9)), (Some(20), Some(9))]
    );
}

/// `POST /v1/messages/count_tokens` (Claude Code asks it often) goes to an Anthropic
/// upstream as is, with the route's model and the upstream's credential; a route served
/// only by another family answers 400 `unsupported_endpoint`, never a guess.
async fn token_counting_passes_through_to_anthropic_only(backend: ez_control_plane::testing::Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_anthropic_route("sk-ant-upstream", "claude").await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "sonnet", 1)
        .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let body = |model: &str| json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] });

    let (status, text) = gw
        .post_checked(
            "/v1/messages/count_tokens",
            &[("x-api-key", &t.key), ("anthropic-version", "2023-06-01")],
            body("claude"),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({ "input_tokens": 14 })
    );
    let seen = gw.mock.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/messages/count_tokens");
    assert_eq!(seen[0].credential, "sk-ant-upstream");
    assert_eq!(seen[0].body["model"], "claude-3-5-haiku-20241022");

    let (status, text) = gw
        .post_checked(
            "/v1/messages/count_tokens",
            &[("x-api-key", &t.key)],
            body("sonnet"),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unsupported_endpoint"), "{text}");
    assert_eq!(
        gw.mock.requests().len(),
        1,
        "nothing was sent for the OpenAI-only route"
    );
    let logs = gw.wait_for_logs(2).await;
    assert!(
        logs.iter().all(|r| r["endpoint"] == "/v1/messages/count_tokens"),
        "{logs:?}"
    );
}
