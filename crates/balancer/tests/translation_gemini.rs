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
