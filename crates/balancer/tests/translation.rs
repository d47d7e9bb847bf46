//! OpenAI Chat Completions clients served by an Anthropic Messages upstream, end to end:
//! the request arrives in Anthropic's shape (system hoisted, `max_tokens` set, the
//! credential as `x-api-key`), the answer — plain or streamed — comes back as Chat
//! Completions, usage is recorded from the upstream's own numbers, and what Anthropic
//! cannot express is refused before anything is sent.

mod support;

use serde_json::{Value, json};
use support::{Gateway, both_backends, sse_events};

both_backends!(
    a_chat_request_is_answered_by_an_anthropic_upstream,
    a_streamed_chat_request_is_translated_event_by_event,
    what_anthropic_cannot_express_is_refused_before_sending,
    a_failing_openai_credential_fails_over_to_an_anthropic_one,
    the_model_list_comes_in_the_shape_of_the_clients_sdk,
    reasoning_with_tools_keeps_to_anthropics_thinking_rule,
);

const UPSTREAM_MODEL: &str = "claude-3-5-haiku-20241022";

async fn chat(gw: &Gateway, key: &str, body: Value) -> (u16, String) {
    let bearer = format!("Bearer {key}");
    gw.post_checked("/v1/chat/completions", &[("authorization", &bearer)], body)
        .await
}

async fn a_chat_request_is_answered_by_an_anthropic_upstream(backend: ez_control_plane::testing::Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_anthropic_route("sk-ant-upstream", "claude").await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let (status, text) = chat(
        &gw,
        &t.key,
        json!({
            "model": "claude",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": "hi" },
            ],
            "temperature": 0.2,
            "stop": "END",
        }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], UPSTREAM_MODEL);
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        choice["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("hello via"),
        "{body}"
    );
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    assert_eq!(body["usage"]["completion_tokens"], 4);
    assert_eq!(body["usage"]["total_tokens"], 16);

    let seen = gw.mock.requests();
    assert_eq!(seen.len(), 1);
    let sent = &seen[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.credential, "sk-ant-upstream");
    assert!(sent.headers.get("anthropic-version").is_some());
    assert!(
        sent.headers.get("authorization").is_none(),
        "the client's key stays here"
    );
    assert_eq!(
        sent.body,
        json!({
            "model": UPSTREAM_MODEL,
            "max_tokens": 4096,
            "system": "Be brief.",
            "messages": [{ "role": "user", "content": [{ "type": "text", "text": "hi" }] }],
            "temperature": 0.2,
            "stop_sequences": ["END"],
        })
    );

    let logs = gw.wait_for_logs(1).await;
    assert_eq!(logs[0]["status_code"], 200);
    assert_eq!(
        (
            logs[0]["input_tokens"].as_i64(),
            logs[0]["output_tokens"].as_i64()
        ),
        (Some(12), Some(4))
    );
    assert_eq!(logs[0]["endpoint"], "/v1/chat/completions");
    assert_eq!(logs[0]["upstream_format"], "anthropic_messages");
}

fn chunks(text: &str) -> Vec<Value> {
    let events = sse_events(text);
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data lines only")).unwrap())
        .collect()
}

async fn a_streamed_chat_request_is_translated_event_by_event(backend: ez_control_plane::testing::Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_anthropic_route("sk-ant-upstream", "claude").await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let request = |usage: bool| {
        json!({
            "model": "claude", "stream": true, "stream_options": { "include_usage": usage },
            "messages": [{ "role": "user", "content": "hi" }],
        })
    };

    let (status, text) = chat(&gw, &t.key, request(true)).await;
    assert_eq!(status, 200, "{text}");
    let chunks_seen = chunks(&text);
    let deltas: Vec<&Value> = chunks_seen.iter().map(|c| &c["choices"][0]["delta"]).collect();
    assert_eq!(deltas[0], &json!({ "role": "assistant", "content": "" }));
    assert_eq!(deltas[1], &json!({ "content": "hello" }));
    assert_eq!(chunks_seen[2]["choices"][0]["finish_reason"], "stop");
    let last = chunks_seen.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        (
            last["usage"]["prompt_tokens"].as_u64(),
            last["usage"]["completion_tokens"].as_u64()
        ),
        (Some(11), Some(6))
    );
    assert_eq!(chunks_seen.len(), 4, "{text}");
    for chunk in &chunks_seen {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], "chatcmpl-msg_1");
        assert_eq!(chunk["model"], UPSTREAM_MODEL);
    }
    assert_eq!(gw.mock.requests()[0].body["stream"], true);

    // Without include_usage the client gets no usage chunk, and the record still has it.
    let (status, text) = chat(&gw, &t.key, request(false)).await;
    assert_eq!(status, 200, "{text}");
    let plain = chunks(&text);
    assert_eq!(plain.len(), 3, "{text}");
    assert!(plain.iter().all(|c| c.get("usage").is_none()), "{text}");

    let logs = gw.wait_for_logs(2).await;
    for record in &logs {
        assert_eq!(
            (record["input_tokens"].as_i64(), record["output_tokens"].as_i64()),
            (Some(11), Some(6))
        );
        assert_eq!(record["stream"], true);
        assert_eq!(record["usage_estimated"], false);
    }
}

async fn what_anthropic_cannot_express_is_refused_before_sending(
    backend: ez_control_plane::testing::Backend,
) {
    let gw = Gateway::start(backend).await;
    gw.add_anthropic_route("sk-ant-upstream", "claude").await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let user = json!([{ "role": "user", "content": "hi" }]);
    let cases = [
        (json!({ "n": 2 }), "n"),
        (json!({ "logprobs": true }), "logprobs"),
        (
            json!({ "response_format": { "type": "json_object" } }),
            "response_format",
        ),
        (json!({ "presence_penalty": 0.5 }), "presence_penalty"),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "input_audio", "input_audio": { "data": "AAAA", "format": "wav" } }] }] }),
            "messages[0].content[0]",
        ),
        (
            json!({ "messages": [{ "role": "assistant", "content": null, "tool_calls": [{ "id": "c1", "type": "function", "function": { "name": "f", "arguments": "{not json" } }] }] }),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (patch, param) in cases {
        let mut body = json!({ "model": "claude", "messages": user });
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, text) = chat(&gw, &t.key, body).await;
        assert_eq!(status, 400, "{param}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["error"]["code"], "unsupported_parameter", "{text}");
        assert_eq!(error["error"]["param"], param, "{text}");
        assert!(
            error["error"]["message"].as_str().unwrap().starts_with(param),
            "{text}"
        );
    }
    // Neutral values of the same fields are no reason to refuse.
    let (status, text) = chat(
        &gw,
        &t.key,
        json!({ "model": "claude", "messages": user, "n": 1, "logprobs": false, "presence_penalty": 0 }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        gw.mock.requests().len(),
        1,
        "refused requests never reach the upstream"
    );
}

/// One route, two families: an OpenAI-compatible credential that fails (500) and is
/// almost always tried first (weight 100 to 1), and an Anthropic one. Each request fails
/// over inside itself — before the first byte — and is answered through translation.
async fn a_failing_openai_credential_fails_over_to_an_anthropic_one(
    backend: ez_control_plane::testing::Backend,
) {
    let gw = Gateway::start(backend).await;
    gw.add_route(
        "openai-side",
        &gw.upstream,
        &[("sk-openai-dead", 1)],
        "mixed",
        100,
    )
    .await;
    let anthropic = gw.add_anthropic_route("sk-ant-upstream", "mixed").await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    for stream in [false, true] {
        for _ in 0..3 {
            let (status, text) = chat(
                &gw,
                &t.key,
                json!({ "model": "mixed", "stream": stream, "messages": [{ "role": "user", "content": "hi" }] }),
            )
            .await;
            assert_eq!(status, 200, "{text}");
            assert!(text.contains("hello"), "{text}");
        }
    }
    let seen = gw.mock.requests();
    let to_openai = seen
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .count();
    let to_anthropic = seen.iter().filter(|r| r.path == "/v1/messages").count();
    assert_eq!(
        to_anthropic, 6,
        "every request was answered by the Anthropic credential"
    );
    assert!(
        to_openai >= 1,
        "the heavier OpenAI candidate was tried first at least once"
    );
    let logs = gw.wait_for_logs(6).await;
    for record in &logs {
        assert_eq!(record["status_code"], 200);
        assert_eq!(record["api_key_id"], anthropic, "{record}");
        assert_eq!(record["upstream_format"], "anthropic_messages", "{record}");
        let usage = (record["input_tokens"].as_i64(), record["output_tokens"].as_i64());
        let expected = if record["stream"] == true {
            (Some(11), Some(6))
        } else {
            (Some(12), Some(4))
        };
        assert_eq!(usage, expected, "{record}");
    }
}

/// `GET /v1/models` with `anthropic-version` (every Anthropic SDK sends it) answers in
/// Anthropic's page shape; without, in OpenAI's list shape.
async fn the_model_list_comes_in_the_shape_of_the_clients_sdk(backend: ez_control_plane::testing::Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_anthropic_route("sk-ant-upstream", "claude").await;
    gw.add_route("openai-side", &gw.upstream, &[("sk-upstream-good", 1)], "gpt", 1)
        .await;
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let list = |anthropic: bool| {
        let mut req = gw
            .client
            .get(format!("{}/v1/models", gw.base))
            .header("x-api-key", &t.key);
        if anthropic {
            req = req.header("anthropic-version", "2023-06-01");
        }
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()
        }
    };
    let anthropic = list(true).await;
    assert_eq!(anthropic["has_more"], false, "{anthropic}");
    assert_eq!(
        (&anthropic["first_id"], &anthropic["last_id"]),
        (&json!("claude"), &json!("gpt"))
    );
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert!(anthropic.get("object").is_none(), "{anthropic}");
    let openai = list(false).await;
    assert_eq!(openai["object"], "list");
    let ids: Vec<&str> = openai["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude", "gpt"]);

    // Gemini's list and one model, under /v1beta and (with a Google-style key) /v1.
    let get = |path: String, header: &'static str| {
        let req = gw.client.get(format!("{}{path}", gw.base)).header(header, &t.key);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, gemini) = get("/v1beta/models".into(), "x-goog-api-key").await;
    assert_eq!(status, 200);
    assert_eq!(gemini["models"][0]["name"], "models/claude", "{gemini}");
    assert_eq!(
        gemini["models"][1]["supportedGenerationMethods"],
        json!(["generateContent", "streamGenerateContent", "countTokens"])
    );
    let (_, same) = get("/v1/models".into(), "x-goog-api-key").await;
    assert_eq!(same, gemini);
    let (status, one) = get("/v1beta/models/models/gpt".into(), "x-goog-api-key").await;
    assert_eq!((status, &one["name"]), (200, &json!("models/gpt")));
    let (status, one) = get("/v1/models/gpt".into(), "authorization").await;
    assert_eq!(
        status, 401,
        "a bare key in authorization is no bearer token: {one}"
    );
    let bearer = gw
        .client
        .get(format!("{}/v1/models/gpt", gw.base))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    let one: Value = bearer.json().await.unwrap();
    assert_eq!((&one["id"], &one["object"]), (&json!("gpt"), &json!("model")));
    let (status, missing) = get("/v1beta/models/nope".into(), "x-goog-api-key").await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (404, &json!("model_not_found"))
    );
}

/// With thinking on, Anthropic refuses to continue a tool call whose turn does not open
/// with its signed thinking — which a Chat client cannot keep: the continuation is sent
/// without thinking (the mock enforces the rule), the next question with it again.
async fn reasoning_with_tools_keeps_to_anthropics_thinking_rule(backend: ez_control_plane::testing::Backend) {
    use ez_test_upstreams::anthropic as mock;
    let gw = Gateway::start(backend).await;
    let seen = mock::Seen::default();
    let origin = mock::start("sk-ant-think", seen.clone()).await;
    let group = gw
        .admin(
            "/admin/provider-groups",
            json!({ "name": "claude", "type": "anthropic", "base_url": origin, "models": [UPSTREAM_MODEL] }),
        )
        .await;
    gw.admin(
        "/admin/api-keys",
        json!({ "group_id": group["id"], "api_key": "sk-ant-think" }),
    )
    .await;
    gw.admin(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "claude", "group_id": group["id"], "selector_value": UPSTREAM_MODEL }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    let t = gw.add_tenant("acme", json!({}), json!({})).await;
    let tools = json!([{ "type": "function", "function": { "name": "weather", "parameters": { "type": "object" } } }]);
    let ask = json!({ "model": "claude", "reasoning_effort": "low", "tools": tools,
        "messages": [{ "role": "user", "content": "Weather?" }] });
    let (status, text) = chat(&gw, &t.key, ask).await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    let message = first["choices"][0]["message"].clone();
    let follow = json!({ "model": "claude", "reasoning_effort": "low", "tools": tools, "messages": [
        { "role": "user", "content": "Weather?" }, message,
        { "role": "tool", "tool_call_id": message["tool_calls"][0]["id"], "content": "18C" }] });
    let (status, text) = chat(&gw, &t.key, follow).await;
    assert_eq!(status, 200, "{text}");
    let sent: Vec<Value> = seen.lock().unwrap().iter().map(|(b, _)| b.clone()).collect();
    assert_eq!(sent[0]["thinking"]["type"], "enabled");
    assert!(sent[1].get("thinking").is_none(), "{}", sent[1]);
    let broken: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, r)| r.clone())
        .collect();
    assert!(broken.is_empty(), "requests Anthropic refused: {broken:?}");
}
