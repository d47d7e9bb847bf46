//! OpenAI Chat Completions clients served by a Gemini API-key upstream, end to end: the
//! request arrives as `generateContent` (model in the URL, key in `x-goog-api-key`,
//! system as `systemInstruction`, results named after their calls), answers — plain and
//! streamed with `alt=sse` — come back as Chat Completions, a tool call makes the round
//! trip, and usage is recorded from Gemini's `usageMetadata`.

mod support;

use ez_control_plane::testing::Backend;
use ez_test_upstreams::gemini::{self, KEY, MODEL, Seen};
use serde_json::{Value, json};
use support::{Gateway, both_backends, sse_events};

both_backends!(
    plain_and_streamed_answers_come_back_as_chat_completions,
    a_tool_call_makes_the_round_trip_through_gemini,
    an_anthropic_client_is_served_by_gemini,
    a_gemini_client_reaches_gemini_as_is_and_openai_through_translation,
);

/// A `gemini` group on the mock with one key, bound as `default.gem`; a tenant's key.
async fn setup(gw: &Gateway, origin: &str) -> String {
    let group = gw
        .admin(
            "/admin/provider-groups",
            json!({ "name": "gemini", "type": "gemini", "base_url": origin, "models": [MODEL] }),
        )
        .await;
    gw.admin(
        "/admin/api-keys",
        json!({ "group_id": group["id"], "api_key": KEY }),
    )
    .await;
    gw.admin(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "gem", "group_id": group["id"], "selector_value": MODEL }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    gw.add_tenant("acme", json!({}), json!({})).await.key
}

async fn chat(gw: &Gateway, key: &str, body: Value) -> (u16, String) {
    let bearer = format!("Bearer {key}");
    gw.post_checked("/v1/chat/completions", &[("authorization", &bearer)], body)
        .await
}

fn assert_valid(seen: &Seen) {
    let broken = gemini::broken(seen);
    assert!(
        broken.is_empty(),
        "requests that broke Gemini's rules: {broken:?}"
    );
}

async fn plain_and_streamed_answers_come_back_as_chat_completions(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let (origin, seen) = gemini::start().await;
    let key = setup(&gw, &origin).await;
    let messages = json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "hi" }]);

    let (status, text) = chat(
        &gw,
        &key,
        json!({ "model": "gem", "messages": messages, "max_tokens": 50 }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from Gemini.");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        (
            body["usage"]["prompt_tokens"].as_u64(),
            body["usage"]["completion_tokens"].as_u64()
        ),
        (Some(17), Some(5))
    );

    let (status, text) = chat(
        &gw,
        &key,
        json!({ "model": "gem", "messages": messages, "stream": true, "stream_options": { "include_usage": true } }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let events = sse_events(&text);
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let text_out: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text_out, "Hello from Gemini.");
    assert_eq!(chunks.last().unwrap()["usage"]["prompt_tokens"], 17);

    let seen_now = seen.lock().unwrap().clone();
    assert_eq!(seen_now[0].0, format!("{MODEL}:generateContent?"));
    assert_eq!(seen_now[1].0, format!("{MODEL}:streamGenerateContent?alt=sse"));
    assert_eq!(
        seen_now[0].1["systemInstruction"],
        json!({ "parts": [{ "text": "Be brief." }] })
    );
    assert_eq!(
        seen_now[0].1["generationConfig"],
        json!({ "maxOutputTokens": 50 })
    );
    assert_valid(&seen);

    let logs = gw.wait_for_logs(2).await;
    for record in &logs {
        assert_eq!(record["upstream_format"], "gemini_generate_content", "{record}");
        assert_eq!(
            (record["input_tokens"].as_i64(), record["output_tokens"].as_i64()),
            (Some(17), Some(5)),
            "{record}"
        );
    }
}

async fn a_tool_call_makes_the_round_trip_through_gemini(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let (origin, seen) = gemini::start().await;
    let key = setup(&gw, &origin).await;
    let tools = json!([{ "type": "function", "function": { "name": "weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }]);
    let question = json!({ "role": "user", "content": "Weather in Paris?" });

    let (status, text) = chat(
        &gw,
        &key,
        json!({ "model": "gem", "messages": [question], "tools": tools }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    let message = &first["choices"][0]["message"];
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let call = &message["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({ "city": "Paris" })
    );

    let history = json!([
        question,
        { "role": "assistant", "content": null, "tool_calls": [call] },
        { "role": "tool", "tool_call_id": call["id"], "content": "18C" },
    ]);
    let (status, text) = chat(
        &gw,
        &key,
        json!({ "model": "gem", "messages": history, "tools": tools }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let last: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(last["choices"][0]["message"]["content"], "It is 18C.");

    // The streamed call carries the whole arguments in one delta, as Gemini sends them.
    let (status, text) = chat(
        &gw,
        &key,
        json!({ "model": "gem", "messages": [question], "tools": tools, "stream": true }),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains(r#""finish_reason":"tool_calls""#), "{text}");
    assert!(text.contains(r#""name":"weather""#), "{text}");
    assert_valid(&seen);
    let sent = seen.lock().unwrap();
    assert_eq!(
        sent[1].1["contents"][2],
        json!({ "role": "user", "parts": [{ "functionResponse": { "name": "weather", "response": { "content": "18C" } } }] })
    );
}

async fn messages(gw: &Gateway, key: &str, body: Value) -> (u16, String) {
    let headers = [("x-api-key", key), ("anthropic-version", "2023-06-01")];
    gw.post_checked("/v1/messages", &headers, body).await
}

/// An Anthropic client (Claude Code's shape) on the same Gemini route: the answer in
/// Messages form, the stream in Anthropic's event grammar, a tool call and its result.
async fn an_anthropic_client_is_served_by_gemini(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let (origin, seen) = gemini::start().await;
    let key = setup(&gw, &origin).await;
    let base = json!({ "model": "gem", "max_tokens": 64, "system": [{ "type": "text", "text": "Be brief.",
        "cache_control": { "type": "ephemeral" } }], "messages": [{ "role": "user", "content": "hi" }] });

    let (status, text) = messages(&gw, &key, base.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(
        answer["content"],
        json!([{ "type": "text", "text": "Hello from Gemini." }])
    );
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(
        (
            answer["usage"]["input_tokens"].as_u64(),
            answer["usage"]["output_tokens"].as_u64()
        ),
        (Some(17), Some(5))
    );

    let mut streamed = base.clone();
    streamed["stream"] = json!(true);
    let (status, text) = messages(&gw, &key, streamed).await;
    assert_eq!(status, 200, "{text}");
    let names: Vec<&str> = sse_events(&text)
        .iter()
        .filter_map(|e| e.lines().next()?.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"), "{text}");
    assert_eq!(names.last(), Some(&"message_stop"), "{text}");
    assert!(
        names.contains(&"content_block_delta") && names.contains(&"message_delta"),
        "{text}"
    );
    assert!(text.contains(r#""stop_reason":"end_turn""#), "{text}");

    let tools = json!([{ "name": "weather", "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } } }]);
    let mut ask = base.clone();
    ask["tools"] = tools.clone();
    let (status, text) = messages(&gw, &key, ask).await;
    assert_eq!(status, 200, "{text}");
    let call: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(call["stop_reason"], "tool_use", "{text}");
    let tool_use = call["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    assert_eq!(tool_use["input"], json!({ "city": "Paris" }));
    let mut follow = base.clone();
    follow["tools"] = tools;
    follow["messages"] = json!([
        { "role": "user", "content": "hi" },
        { "role": "assistant", "content": [tool_use] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": tool_use["id"], "content": "18C" }] },
    ]);
    let (status, text) = messages(&gw, &key, follow).await;
    assert_eq!(status, 200, "{text}");
    let last: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(last["content"][0]["text"], "It is 18C.", "{text}");
    assert_valid(&seen);
    let logs = gw.wait_for_logs(4).await;
    assert!(
        logs.iter()
            .all(|r| r["endpoint"] == "/v1/messages" && r["upstream_format"] == "gemini_generate_content")
    );
}

async fn generate(gw: &Gateway, key: &str, target: &str, body: Value) -> (u16, String) {
    let resp = gw
        .client
        .post(format!("{}/v1beta/models/{target}", gw.base))
        .header("x-goog-api-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// A Gemini client (`google-genai`'s paths and key header): on a Gemini route the request
/// passes through with the route's model in the URL; on an OpenAI-compatible route it is
/// translated both ways, plain and streamed, and a function call comes back whole.
async fn a_gemini_client_reaches_gemini_as_is_and_openai_through_translation(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let (origin, seen) = gemini::start().await;
    let key = setup(&gw, &origin).await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "gpt", 1)
        .await;
    let body = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }],
        "systemInstruction": { "parts": [{ "text": "Be brief." }] }, "generationConfig": { "maxOutputTokens": 40 } });

    // As is: the body untouched, the model in the URL.
    let (status, text) = generate(&gw, &key, "gem:generateContent", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["candidates"][0]["content"]["parts"][0]["text"], "Hello");
    let (status, text) = generate(&gw, &key, "gem:streamGenerateContent?alt=sse", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("from Gemini."), "{text}");
    {
        let sent = seen.lock().unwrap();
        assert_eq!(sent[0].0, format!("{MODEL}:generateContent?"));
        assert_eq!(sent[0].1, body, "passed through unchanged");
        assert_eq!(sent[1].0, format!("{MODEL}:streamGenerateContent?alt=sse"));
    }
    assert_valid(&seen);

    // Translated for an OpenAI-compatible upstream.
    let (status, text) = generate(&gw, &key, "gpt:generateContent", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let candidate = &answer["candidates"][0];
    assert_eq!(candidate["finishReason"], "STOP", "{text}");
    assert!(
        candidate["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("hello via"),
        "{text}"
    );
    assert_eq!(answer["usageMetadata"]["promptTokenCount"], 3, "{text}");
    let chat = gw.mock.requests();
    assert_eq!(chat[0].path, "/v1/chat/completions");
    assert_eq!(
        chat[0].body["messages"][0],
        json!({ "role": "system", "content": "Be brief." })
    );
    assert_eq!(chat[0].body["max_tokens"], 40);

    let (status, text) = generate(&gw, &key, "gpt:streamGenerateContent?alt=sse", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let chunks: Vec<Value> = sse_events(&text)
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data lines")).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["candidates"][0]["content"]["parts"][0]["text"].as_str())
        .collect();
    assert!(streamed.starts_with("hello"), "{text}");
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP", "{text}");
    assert!(
        last["usageMetadata"]["totalTokenCount"].as_u64().unwrap() > 0,
        "{text}"
    );

    // A method the gateway does not serve, and a stream without alt=sse.
    let (status, _) = generate(&gw, &key, "gem:embedContent", body.clone()).await;
    assert_eq!(status, 404);
    let (status, text) = generate(&gw, &key, "gem:streamGenerateContent", body).await;
    assert_eq!(status, 400, "{text}");
    let logs = gw.wait_for_logs(4).await;
    let upstream: Vec<&str> = logs
        .iter()
        .filter_map(|r| r["upstream_format"].as_str())
        .collect();
    assert!(
        upstream.contains(&"gemini_generate_content") && upstream.contains(&"openai_chat"),
        "{upstream:?}"
    );
}
