//! The OpenAI Responses family, end to end. Responses clients served by an Anthropic
//! upstream (plain, streamed in the Responses event grammar, a tool call's round trip);
//! Chat Completions and Anthropic clients served by a Codex subscription, whose backend
//! only streams (a client that wanted one answer gets the stream collected); a stateful
//! request (`previous_response_id`) refused unless the upstream itself speaks Responses;
//! usage recorded from each upstream's own numbers. The mocks (`ez-test-upstreams`) check
//! every request against their provider's rules.

mod support;

use ez_control_plane::testing::Backend;
use ez_test_upstreams::anthropic as mock_anthropic;
use ez_test_upstreams::responses::{self as mock_responses, Flavour};
use serde_json::{Value, json};
use support::{Gateway, both_backends, sse_events};

both_backends!(
    a_responses_client_is_served_by_anthropic,
    chat_and_anthropic_clients_are_served_by_codex,
    a_stored_conversation_is_refused_unless_the_upstream_keeps_it,
    a_responses_client_reaches_codex_in_its_own_format,
    a_responses_client_is_served_by_an_openai_compatible_server_through_chat,
);

const CLAUDE_KEY: &str = "sk-ant-upstream-7";
const CODEX_TOKEN: &str = "codex-access-token-1";
const TOOLS: &str = "weather";

fn weather_tool() -> Value {
    json!({ "type": "function", "name": TOOLS, "description": "Weather of a city",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } })
}

/// `(event name, data)` of each event of a named-event stream.
fn named_events(text: &str) -> Vec<(&str, Value)> {
    sse_events(text)
        .into_iter()
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("an event line and a data line");
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            (name.strip_prefix("event: ").unwrap(), data)
        })
        .collect()
}

async fn a_responses_client_is_served_by_anthropic(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let seen = mock_anthropic::Seen::default();
    let origin = mock_anthropic::start(CLAUDE_KEY, seen.clone()).await;
    gw.bind(
        "anthropic",
        &origin,
        json!({}),
        json!({ "api_key": CLAUDE_KEY }),
        "claude",
        "claude-sonnet-4-5",
    )
    .await;
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let bearer = format!("Bearer {key}");
    let auth = [("authorization", bearer.as_str())];

    let (status, text) = gw
        .post_checked(
            "/v1/responses",
            &auth,
            json!({ "model": "claude", "instructions": "Be brief.", "input": "hi" }),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let plain: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plain["object"], "response");
    assert_eq!(plain["status"], "completed");
    assert_eq!(
        plain["output"][0]["content"][0]["text"],
        mock_anthropic::REPLY_PIECES.concat()
    );
    assert_eq!(plain["usage"]["output_tokens"], mock_anthropic::OUTPUT_TOKENS);
    let sent = &seen.lock().unwrap()[0].0.clone();
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["model"], "claude-sonnet-4-5");

    let (status, text) = gw
        .post_checked(
            "/v1/responses",
            &auth,
            json!({ "model": "claude", "input": "hi", "stream": true }),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    let events = named_events(&text);
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events.last().unwrap().0, "response.completed");
    let deltas: String = events
        .iter()
        .filter(|(n, _)| *n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, mock_anthropic::REPLY_PIECES.concat());
    for (k, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], k);
    }

    // The call, then its result: the call comes back as a function_call item, and the
    // result goes to Anthropic as a tool_result answering its tool_use.
    let ask = json!({ "model": "claude", "input": "Weather in Paris?", "tools": [weather_tool()] });
    let (status, text) = gw.post_checked("/v1/responses", &auth, ask).await;
    assert_eq!(status, 200, "{text}");
    let called: Value = serde_json::from_str(&text).unwrap();
    let call = called["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call")
        .expect("a function call")
        .clone();
    assert_eq!(call["call_id"], mock_anthropic::TOOL_USE_ID);
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().unwrap()).unwrap(),
        json!({ "city": "Paris" })
    );
    let answer = json!({ "model": "claude", "tools": [weather_tool()], "input": [
        { "role": "user", "content": "Weather in Paris?" },
        { "type": "function_call", "call_id": call["call_id"], "name": TOOLS, "arguments": call["arguments"] },
        { "type": "function_call_output", "call_id": call["call_id"], "output": "18C and sunny" },
    ] });
    let (status, text) = gw.post_checked("/v1/responses", &auth, answer).await;
    assert_eq!(status, 200, "{text}");
    let done: Value = serde_json::from_str(&text).unwrap();
    assert!(
        done["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("18C and sunny"),
        "{done}"
    );
    let broken: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, b)| b.clone())
        .collect();
    assert!(
        broken.is_empty(),
        "requests that broke Anthropic's rules: {broken:?}"
    );

    let logs = gw.wait_for_logs(4).await;
    assert!(
        logs.iter()
            .all(|l| l["endpoint"] == "/v1/responses" && l["upstream_format"] == "anthropic_messages")
    );
    assert!(
        logs.iter()
            .all(|l| l["input_tokens"] == mock_anthropic::INPUT_TOKENS)
    );
}

async fn chat_and_anthropic_clients_are_served_by_codex(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let seen = mock_responses::Seen::default();
    let base = mock_responses::start(CODEX_TOKEN, Flavour::Codex, seen.clone()).await;
    let credential = json!({ "access_token": CODEX_TOKEN, "refresh_token": "rt-1", "account_id": "acct-9" });
    gw.bind(
        "codex",
        &base,
        json!({ "headers_profile": "codex" }),
        credential,
        "codex",
        "gpt-5-codex",
    )
    .await;
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let bearer = format!("Bearer {key}");
    let auth = [("authorization", bearer.as_str())];
    let reply = mock_responses::REPLY_PIECES.concat();

    // One answer wanted: the backend's stream is collected into a chat.completion.
    let chat = json!({ "model": "codex", "max_tokens": 300, "messages": [
        { "role": "system", "content": "Be brief." }, { "role": "user", "content": "hi" }] });
    let (status, text) = gw.post_checked("/v1/chat/completions", &auth, chat).await;
    assert_eq!(status, 200, "{text}");
    let plain: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plain["object"], "chat.completion");
    assert_eq!(plain["choices"][0]["message"]["content"], reply);
    assert_eq!(plain["usage"]["prompt_tokens"], mock_responses::INPUT_TOKENS);
    assert_eq!(
        plain["usage"]["prompt_tokens_details"]["cached_tokens"],
        mock_responses::CACHED_TOKENS
    );
    {
        let seen = seen.lock().unwrap();
        let sent = &seen[0].0;
        assert_eq!((&sent["stream"], &sent["store"]), (&json!(true), &json!(false)));
        assert_eq!(sent["instructions"], "Be brief.");
        assert!(sent.get("max_output_tokens").is_none());
    }

    // Streamed, with a tool: Chat chunks carrying the call.
    let chat = json!({ "model": "codex", "stream": true, "messages": [{ "role": "user", "content": "Weather?" }],
        "tools": [{ "type": "function", "function": { "name": TOOLS, "parameters": { "type": "object" } } }] });
    let (status, text) = gw.post_checked("/v1/chat/completions", &auth, chat).await;
    assert_eq!(status, 200, "{text}");
    let chunks: Vec<Value> = sse_events(&text)
        .into_iter()
        .filter_map(|e| e.strip_prefix("data: ").filter(|d| *d != "[DONE]"))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].as_str())
        .expect("a tool call");
    assert_eq!(call, mock_responses::CALL_ID);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
    assert!(text.ends_with("data: [DONE]\n\n"));

    // An Anthropic client (Claude Code's shape), streamed, then its tool result.
    let anthropic = [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01")];
    let ask = json!({ "model": "codex", "max_tokens": 1024, "stream": true,
        "messages": [{ "role": "user", "content": "hi" }] });
    let (status, text) = gw.post_checked("/v1/messages", &anthropic, ask).await;
    assert_eq!(status, 200, "{text}");
    let events = named_events(&text);
    assert_eq!(events.first().unwrap().0, "message_start");
    assert_eq!(events.last().unwrap().0, "message_stop");
    let result = json!({ "model": "codex", "max_tokens": 1024, "messages": [
        { "role": "user", "content": "Weather?" },
        { "role": "assistant", "content": [{ "type": "tool_use", "id": "toolu_1", "name": TOOLS, "input": { "city": "Paris" } }] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "toolu_1", "content": "18C" }] }] });
    let (status, text) = gw.post_checked("/v1/messages", &anthropic, result).await;
    assert_eq!(status, 200, "{text}");
    let done: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(done["content"][0]["text"], "Result: 18C");
    assert_eq!(
        done["usage"]["cache_read_input_tokens"],
        mock_responses::CACHED_TOKENS
    );

    // A setting the backend refuses is refused here, naming it; nothing is sent.
    let before = seen.lock().unwrap().len();
    let hot =
        json!({ "model": "codex", "temperature": 0.2, "messages": [{ "role": "user", "content": "hi" }] });
    let (status, text) = gw.post_checked("/v1/chat/completions", &auth, hot).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["param"],
        "temperature"
    );
    assert_eq!(seen.lock().unwrap().len(), before);
    let broken = mock_responses::broken(&seen);
    assert!(
        broken.is_empty(),
        "requests that broke the Codex backend's rules: {broken:?}"
    );

    let logs = gw.wait_for_logs(4).await;
    let ok: Vec<&Value> = logs.iter().filter(|l| l["status_code"] == 200).collect();
    assert_eq!(ok.len(), 4);
    for log in ok {
        assert_eq!(log["upstream_format"], "openai_responses");
        assert_eq!(log["input_tokens"], mock_responses::INPUT_TOKENS, "{log}");
        assert_eq!(log["output_tokens"], mock_responses::OUTPUT_TOKENS, "{log}");
    }
}

async fn a_stored_conversation_is_refused_unless_the_upstream_keeps_it(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let claude_seen = mock_anthropic::Seen::default();
    let origin = mock_anthropic::start(CLAUDE_KEY, claude_seen.clone()).await;
    gw.bind(
        "anthropic",
        &origin,
        json!({}),
        json!({ "api_key": CLAUDE_KEY }),
        "claude",
        "claude-sonnet-4-5",
    )
    .await;
    let platform_seen = mock_responses::Seen::default();
    let base = mock_responses::start("sk-openai-1", Flavour::Platform, platform_seen.clone()).await;
    gw.bind(
        "openai",
        &base,
        json!({}),
        json!({ "api_key": "sk-openai-1" }),
        "gpt",
        "gpt-5",
    )
    .await;
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let bearer = format!("Bearer {key}");
    let auth = [("authorization", bearer.as_str())];

    let follow_up =
        |model: &str| json!({ "model": model, "previous_response_id": "resp_1", "input": "and then?" });
    let (status, text) = gw.post_checked("/v1/responses", &auth, follow_up("claude")).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["param"], "previous_response_id");
    assert_eq!(error["error"]["code"], "unsupported_parameter");
    assert!(claude_seen.lock().unwrap().is_empty(), "nothing was sent");

    // OpenAI's own Responses API keeps conversations: the request goes there as it came.
    let (_, text) = gw.post_checked("/v1/responses", &auth, follow_up("gpt")).await;
    let seen = platform_seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{text}");
    assert_eq!(seen[0].0["previous_response_id"], "resp_1");
}

async fn a_responses_client_reaches_codex_in_its_own_format(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let seen = mock_responses::Seen::default();
    let base = mock_responses::start(CODEX_TOKEN, Flavour::Codex, seen.clone()).await;
    gw.bind(
        "codex",
        &base,
        json!({ "headers_profile": "codex" }),
        json!({ "access_token": CODEX_TOKEN }),
        "codex",
        "gpt-5-codex",
    )
    .await;
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let bearer = format!("Bearer {key}");
    let auth = [("authorization", bearer.as_str())];

    // What the openai SDK sends by default (no stream, no store, no instructions, a cap):
    // the backend's rules are met, and its stream comes back as one response.
    let plain = json!({ "model": "codex", "input": "hi", "max_output_tokens": 200 });
    let (status, text) = gw.post_checked("/v1/responses", &auth, plain).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        mock_responses::REPLY_PIECES.concat()
    );
    assert_eq!(answer["usage"]["input_tokens"], mock_responses::INPUT_TOKENS);
    // Codex CLI's own request (streamed, a strict tool the translators would refuse)
    // passes through untouched but for the model.
    let custom = json!({ "model": "codex", "instructions": "You are Codex.", "input": "hi", "stream": true,
        "store": false, "tools": [{ "type": "function", "name": "apply_patch", "strict": true,
            "parameters": { "type": "object", "properties": {}, "additionalProperties": false } }] });
    let (status, text) = gw.post_checked("/v1/responses", &auth, custom).await;
    let names: Vec<&str> = named_events(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        (status, names.last().copied()),
        (200, Some("response.completed")),
        "{text}"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(
            (&seen[0].0["stream"], &seen[0].0["store"]),
            (&json!(true), &json!(false))
        );
        assert_eq!(seen[0].0["model"], "gpt-5-codex");
        assert!(seen[0].0.get("max_output_tokens").is_none());
        assert_eq!(seen[1].0["tools"][0]["strict"], true);
    }
    let broken = mock_responses::broken(&seen);
    assert!(
        broken.is_empty(),
        "requests that broke the Codex backend's rules: {broken:?}"
    );
    let (status, text) = gw
        .post_checked(
            "/v1/responses",
            &auth,
            json!({ "model": "codex", "input": "hi", "temperature": 0.3 }),
        )
        .await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["error"]["param"],
        "temperature"
    );
}

async fn a_responses_client_is_served_by_an_openai_compatible_server_through_chat(backend: Backend) {
    let gw = Gateway::start(backend).await;
    gw.add_route("vllm", &gw.upstream, &[("sk-upstream-good", 1)], "local", 1)
        .await;
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let bearer = format!("Bearer {key}");
    let request = json!({ "model": "local", "instructions": "Be brief.", "input": "hi" });
    let (status, text) = gw
        .post_checked("/v1/responses", &[("authorization", &bearer)], request)
        .await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["output"][0]["content"][0]["text"], "hello via good");
    let seen = gw.mock.requests();
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(
        seen[0].body["messages"],
        json!([{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "hi" }])
    );
    let logs = gw.wait_for_logs(1).await;
    assert_eq!(
        (&logs[0]["endpoint"], &logs[0]["upstream_format"]),
        (&json!("/v1/responses"), &json!("openai_chat"))
    );
}
