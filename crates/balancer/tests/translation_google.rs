//! Every Google upstream layout, end to end, on a mock that checks each one's path,
//! credential and envelope: Vertex AI (project and regional location in the path, a
//! bearer access token), Vertex express mode (an API key), and the Code Assist API behind
//! the Gemini CLI and Antigravity subscriptions (`/v1internal:…`, the request wrapped with
//! the model and the credential's project, answers unwrapped). OpenAI Chat and Anthropic
//! clients reach each through translation, Gemini clients as is (Vertex) or with the
//! envelope put on and taken off (Code Assist); usage is recorded from each answer.

mod support;

use ez_control_plane::testing::Backend;
use ez_test_upstreams::gemini::{self, ACCESS_TOKEN, KEY, MODEL, Seen};
use serde_json::{Value, json};
use support::{Gateway, both_backends, sse_events};

both_backends!(every_google_layout_is_reached_by_every_client);

fn targets(seen: &Seen, from: usize) -> Vec<String> {
    seen.lock().unwrap()[from..]
        .iter()
        .map(|(t, _, _)| t.clone())
        .collect()
}

async fn every_google_layout_is_reached_by_every_client(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let (origin, seen) = gemini::start().await;
    let vertex = json!({ "google_project": "proj-v", "google_location": "europe-west4" });
    gw.bind(
        "vertex",
        &origin,
        vertex,
        json!({ "api_key": ACCESS_TOKEN }),
        "vertex",
        MODEL,
    )
    .await;
    gw.bind(
        "vertex-express",
        &origin,
        json!({}),
        json!({ "api_key": KEY }),
        "express",
        MODEL,
    )
    .await;
    let oauth = json!({ "access_token": ACCESS_TOKEN, "project_id": "cloud-proj-7" });
    let cli = json!({ "headers_profile": "gemini-cli" });
    gw.bind("gemini-cli", &origin, cli, oauth.clone(), "cli", MODEL)
        .await;
    gw.bind("antigravity", &origin, json!({}), oauth, "agy", MODEL)
        .await;
    gw.cache.refresh().await.unwrap();
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let bearer = format!("Bearer {key}");
    let openai = [("authorization", bearer.as_str())];
    let anthropic = [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01")];
    let google = [("x-goog-api-key", key.as_str())];
    let cases = [
        (
            "vertex",
            format!(
                "projects/proj-v/locations/europe-west4/publishers/google/models/{MODEL}:generateContent"
            ),
        ),
        (
            "express",
            format!("publishers/google/models/{MODEL}:generateContent"),
        ),
        ("cli", format!("v1internal:generateContent|{MODEL}|cloud-proj-7")),
        ("agy", format!("v1internal:generateContent|{MODEL}|cloud-proj-7")),
    ];
    for (public, path) in &cases {
        let from = seen.lock().unwrap().len();
        let chat = json!({ "model": public, "messages": [{ "role": "user", "content": "hi" }] });
        let (status, text) = gw.post_checked("/v1/chat/completions", &openai, chat).await;
        assert_eq!(status, 200, "{public}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            body["choices"][0]["message"]["content"],
            gemini::REPLY,
            "{public}"
        );
        assert_eq!(body["usage"]["prompt_tokens"], gemini::PROMPT_TOKENS, "{public}");

        let streamed = json!({ "model": public, "max_tokens": 64, "stream": true,
            "messages": [{ "role": "user", "content": "hi" }] });
        let (status, text) = gw.post_checked("/v1/messages", &anthropic, streamed).await;
        assert_eq!(status, 200, "{public}: {text}");
        let deltas: String = sse_events(&text)
            .iter()
            .filter_map(|e| e.split_once("data: "))
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter_map(|d| d["delta"]["text"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(deltas, gemini::REPLY, "{public}: {text}");

        let native = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
        let url = format!("/v1beta/models/{public}:generateContent");
        let (status, text) = gw.post_checked(&url, &google, native).await;
        assert_eq!(status, 200, "{public}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(
            body.get("response").is_none(),
            "the envelope is taken off: {body}"
        );
        assert_eq!(
            body["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .map(|t| t.starts_with("Hello")),
            Some(true)
        );
        assert_eq!(body["usageMetadata"]["promptTokenCount"], gemini::PROMPT_TOKENS);

        let reached = targets(&seen, from);
        assert_eq!(reached.len(), 3, "{public}: {reached:?}");
        let streamed_path = path.replace(":generateContent", ":streamGenerateContent");
        assert!(reached[0].starts_with(path.as_str()), "{public}: {reached:?}");
        assert!(reached[2].starts_with(path.as_str()), "{public}: {reached:?}");
        assert!(
            reached[1].starts_with(&streamed_path) && reached[1].contains("alt=sse"),
            "{public}: {reached:?}"
        );
    }
    let broken = gemini::broken(&seen);
    assert!(
        broken.is_empty(),
        "requests that broke a Google upstream's rules: {broken:?}"
    );
    let logs = gw.wait_for_logs(12).await;
    assert!(
        logs.iter()
            .all(|l| l["status_code"] == 200 && l["upstream_format"] == "gemini_generate_content")
    );
    assert!(
        logs.iter().all(|l| l["input_tokens"] == gemini::PROMPT_TOKENS),
        "{logs:?}"
    );
}

both_backends!(gemini_3_calls_keep_their_signatures_for_every_client);

/// Gemini 3 refuses a call sent back without its thought signature: a Gemini client's
/// comes back as it went, an Anthropic client's rides on a thinking block, and a Chat
/// client (which keeps none) gets the documented validator-skipping signature.
async fn gemini_3_calls_keep_their_signatures_for_every_client(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let (origin, seen) = gemini::start().await;
    let group =
        json!({ "name": "g3", "type": "gemini", "base_url": origin, "models": ["gemini-3-pro-preview"] });
    let group = gw.admin("/admin/provider-groups", group).await;
    gw.admin(
        "/admin/api-keys",
        json!({ "group_id": group["id"], "api_key": KEY }),
    )
    .await;
    gw.admin(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "g3", "group_id": group["id"], "selector_value": "gemini-3-pro-preview" }),
    )
    .await;
    gw.cache.refresh().await.unwrap();
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let weather = json!({ "name": "weather", "description": "Weather", "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } });

    // Chat.
    let bearer = format!("Bearer {key}");
    let openai = [("authorization", bearer.as_str())];
    let tools = json!([{ "type": "function", "function": weather }]);
    let ask =
        json!({ "model": "g3", "messages": [{ "role": "user", "content": "Weather?" }], "tools": tools });
    let (status, text) = gw.post_checked("/v1/chat/completions", &openai, ask).await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    let message = &first["choices"][0]["message"];
    let call_id = message["tool_calls"][0]["id"].clone();
    let answer = json!({ "model": "g3", "tools": tools, "messages": [
        { "role": "user", "content": "Weather?" }, message,
        { "role": "tool", "tool_call_id": call_id, "content": "18C" }] });
    let (status, text) = gw.post_checked("/v1/chat/completions", &openai, answer).await;
    assert_eq!(status, 200, "{text}");

    // Anthropic.
    let anthropic = [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01")];
    let tools =
        json!([{ "name": "weather", "description": "Weather", "input_schema": weather["parameters"] }]);
    let ask = json!({ "model": "g3", "max_tokens": 100, "tools": tools, "messages": [{ "role": "user", "content": "Weather?" }] });
    let (status, text) = gw.post_checked("/v1/messages", &anthropic, ask).await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        first["content"][0]["signature"],
        format!("ez:gemini:{}", gemini::SIGNATURE)
    );
    let tool_use = first["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    let answer = json!({ "model": "g3", "max_tokens": 100, "tools": tools, "messages": [
        { "role": "user", "content": "Weather?" },
        { "role": "assistant", "content": first["content"] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": tool_use["id"], "content": "18C" }] }] });
    let (status, text) = gw.post_checked("/v1/messages", &anthropic, answer).await;
    assert_eq!(status, 200, "{text}");

    // Gemini, as is.
    let google = [("x-goog-api-key", key.as_str())];
    let tools = json!([{ "functionDeclarations": [weather] }]);
    let question = json!({ "role": "user", "parts": [{ "text": "Weather?" }] });
    let (status, text) = gw
        .post_checked(
            "/v1beta/models/g3:generateContent",
            &google,
            json!({ "contents": [question], "tools": tools }),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&text).unwrap();
    let model_turn = first["candidates"][0]["content"].clone();
    assert_eq!(model_turn["parts"][0]["thoughtSignature"], gemini::SIGNATURE);
    let result = json!({ "role": "user", "parts": [{ "functionResponse": { "name": "weather", "response": { "content": "18C" } } }] });
    let (status, text) = gw
        .post_checked(
            "/v1beta/models/g3:generateContent",
            &google,
            json!({ "contents": [question, model_turn, result], "tools": tools }),
        )
        .await;
    assert_eq!(status, 200, "{text}");

    let broken = gemini::broken(&seen);
    assert!(broken.is_empty(), "requests Gemini 3 refused: {broken:?}");
    let sent: Vec<Value> = seen.lock().unwrap().iter().map(|(_, b, _)| b.clone()).collect();
    assert_eq!(
        sent[1]["contents"][1]["parts"][0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert_eq!(
        sent[3]["contents"][1]["parts"][0]["thoughtSignature"],
        gemini::SIGNATURE
    );
    assert_eq!(
        sent[5]["contents"][1]["parts"][0]["thoughtSignature"],
        gemini::SIGNATURE
    );
}
