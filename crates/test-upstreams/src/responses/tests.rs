//! Tests of the mock's rules and answers.

use super::*;

fn plain() -> Value {
    json!({ "model": "gpt-5", "input": [{ "role": "user", "content": "Weather in Paris?" }] })
}

fn codex() -> Value {
    json!({ "model": "gpt-5-codex", "instructions": "You are Codex.", "stream": true, "store": false,
        "input": [{ "type": "message", "role": "user",
            "content": [{ "type": "input_text", "text": "Weather in Paris?" }] }] })
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut().unwrap().remove(key);
    body
}

/// `plain()` with `items` after its user message.
fn then(items: Value) -> Value {
    let mut input = plain()["input"].as_array().unwrap().clone();
    input.extend(items.as_array().unwrap().iter().cloned());
    with(plain(), "input", json!(input))
}

fn tools() -> Value {
    json!([{ "type": "function", "name": "weather", "parameters": { "type": "object" } }])
}

fn call() -> Value {
    json!({ "type": "function_call", "call_id": CALL_ID, "name": "weather", "arguments": ARGUMENTS })
}

fn result() -> Value {
    json!({ "type": "function_call_output", "call_id": CALL_ID, "output": "18°C, sunny" })
}

#[test]
fn valid_requests_pass_and_get_answers() {
    let round_trip = with(then(json!([call(), result()])), "tools", tools());
    for body in [plain(), with(plain(), "input", json!("Hi")), round_trip.clone()] {
        assert_eq!(broken_rule(&body, Flavour::Platform), None, "{body}");
    }
    assert_eq!(broken_rule(&codex(), Flavour::Codex), None);
    let text = &answer(&plain())["output"][0];
    assert_eq!(text["content"][0]["text"], REPLY_PIECES.concat());
    assert_eq!([&text["type"], &text["role"]], ["message", "assistant"]);
    let done = answer(&with(plain(), "tools", tools()));
    let called = &done["output"][0];
    assert_eq!([&called["type"], &called["call_id"]], ["function_call", CALL_ID]);
    assert_eq!([&called["name"], &called["arguments"]], ["weather", ARGUMENTS]);
    let usage = &done["usage"];
    assert_eq!(usage["total_tokens"], INPUT_TOKENS + OUTPUT_TOKENS);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], CACHED_TOKENS);
    let reasoning = json!({ "effort": "medium", "summary": "auto" });
    let reasoned = answer(&with(with(codex(), "tools", tools()), "reasoning", reasoning));
    assert_eq!(reasoned["output"][0]["summary"][0]["text"], SUMMARY);
    assert_eq!(reasoned["output"][1]["type"], "function_call");
    let after = answer(&round_trip);
    assert_eq!(after["output"][0]["content"][0]["text"], "Result: 18°C, sunny");
    assert_eq!([&after["status"], &after["model"]], ["completed", "gpt-5"]);
    let cut = answer(&with(plain(), "max_output_tokens", json!(5)));
    assert_eq!(cut["status"], "incomplete");
    assert_eq!(cut["incomplete_details"]["reason"], "max_output_tokens");
}

#[test]
fn each_platform_rule_is_caught() {
    let user = |content: Value| then(json!([{ "role": "user", "content": content }]));
    let offered = |choice: Value| with(with(plain(), "tools", tools()), "tool_choice", choice);
    let tool = |tool: Value| with(plain(), "tools", json!([tool]));
    let mut bad_call = call();
    bad_call["arguments"] = json!("{");
    let mut bad_output = result();
    bad_output["output"] = json!(3);
    #[rustfmt::skip]
    let cases = [
        (without(plain(), "model"), "Missing required parameter: 'model'."),
        (with(plain(), "model", json!("")),
            "Invalid 'model': empty string. Expected a string with minimum length 1, but got an empty string instead."),
        (with(plain(), "input", json!([])),
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead."),
        (with(plain(), "input", json!({})),
            "Invalid type for 'input': expected one of a string or array of input items, but got an object instead."),
        (then(json!([{ "role": "tool", "content": "x" }])),
            "Invalid value: 'tool'. Supported values are: 'assistant', 'system', 'developer', and 'user'."),
        (then(json!([{ "role": "user" }])), "Missing required parameter: 'input[1].content'."),
        (user(json!([{ "type": "output_text", "text": "x" }])),
            "Invalid value: 'output_text'. Supported values are: 'input_text', 'input_image', and 'input_file'."),
        (then(json!([{ "role": "assistant", "content": [{ "type": "input_text", "text": "x" }] }])),
            "Invalid value: 'input_text'. Supported values are: 'output_text' and 'refusal'."),
        (user(json!([{ "type": "input_text", "text": 1 }])),
            "Invalid type for 'input[1].content[0].text': expected a string, but got an integer instead."),
        (user(json!([{ "type": "input_image", "detail": "auto" }])),
            "Missing required parameter: 'input[1].content[0].image_url'."),
        (then(json!([without(call(), "call_id")])), "Missing required parameter: 'input[1].call_id'."),
        (then(json!([bad_call])), "Invalid 'input[1].arguments': the arguments must be valid JSON."),
        (then(json!([result()])),
            "No tool call found for function call output with call_id call_4XHzMoP4bAzUVaYKsJv2P9Qe."),
        (then(json!([call(), bad_output])),
            "Invalid type for 'input[2].output': expected one of a string or array of input content parts, \
             but got an integer instead."),
        (then(json!([call()])), "No tool output found for function call call_4XHzMoP4bAzUVaYKsJv2P9Qe."),
        (then(json!([{ "type": "reasoning", "id": "rs_1" }])), "Missing required parameter: 'input[1].summary'."),
        (then(json!([{ "type": "item_reference", "id": "msg_1" }])),
            "Invalid value: 'item_reference'. Supported values are: 'message', 'function_call', \
             'function_call_output', and 'reasoning'."),
        (with(plain(), "instructions", json!(["Be brief."])),
            "Invalid type for 'instructions': expected a string, but got an array instead."),
        (tool(json!({ "type": "web_search" })), "Invalid value: 'web_search'. Supported values are: 'function'."),
        (tool(json!({ "type": "function", "function": { "name": "weather" } })),
            "Missing required parameter: 'tools[0].name'."),
        (tool(json!({ "type": "function", "name": "weather", "parameters": "{}" })),
            "Invalid type for 'tools[0].parameters': expected an object, but got a string instead."),
        (offered(json!("any")), "Invalid value: 'any'. Supported values are: 'none', 'auto', and 'required'."),
        (offered(json!({ "type": "function", "name": "clock" })),
            "Tool choice 'clock' not found in 'tools' parameter."),
        (with(plain(), "max_output_tokens", json!(8)),
            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= 16, but got 8 instead."),
        (with(plain(), "previous_response_id", json!("resp_1")), "Previous response with id 'resp_1' not found."),
    ];
    for (body, message) in cases {
        assert_eq!(
            broken_rule(&body, Flavour::Platform).as_deref(),
            Some(message),
            "{body}"
        );
    }
    let rule = api_rule(&with(plain(), "previous_response_id", json!("resp_1"))).unwrap_err();
    assert_eq!(rule.param.as_deref(), Some("previous_response_id"));
    assert_eq!(rule.code, Some("previous_response_not_found"));
}

#[test]
fn each_codex_rule_is_caught() {
    #[rustfmt::skip]
    let cases = [
        (with(codex(), "stream", json!(false)), "Stream must be set to true"),
        (without(codex(), "store"), "Store must be set to false"),
        (with(codex(), "store", json!(true)), "Store must be set to false"),
        (without(codex(), "instructions"), "Instructions are required"),
        (with(codex(), "max_output_tokens", json!(64)), "Unsupported parameter: max_output_tokens"),
        (with(codex(), "temperature", json!(0.2)), "Unsupported parameter: temperature"),
        (with(codex(), "top_p", json!(0.9)), "Unsupported parameter: top_p"),
        (with(codex(), "input", json!([])),
            "Invalid 'input': empty array. Expected an array with minimum length 1, but got an empty array instead."),
    ];
    for (body, message) in cases {
        assert_eq!(
            broken_rule(&body, Flavour::Codex).as_deref(),
            Some(message),
            "{body}"
        );
    }
}

/// The events of the answer to `body`, checked for numbering and framing.
fn stream(body: &Value) -> Vec<Value> {
    let events = events(&answer(body));
    for (number, event) in events.iter().enumerate() {
        assert_eq!(event["sequence_number"], number, "{event}");
    }
    let created = &events[0]["response"];
    assert_eq!(
        [&events[0]["type"], &events[1]["type"]],
        ["response.created", "response.in_progress"]
    );
    assert_eq!(
        json!([created["status"], created["output"]]),
        json!(["in_progress", []])
    );
    assert_eq!(events.last().unwrap()["type"], "response.completed");
    events
}

fn joined(events: &[Value], kind: &str) -> String {
    let deltas = events.iter().filter(|e| e["type"] == kind);
    deltas.filter_map(|e| e["delta"].as_str()).collect()
}

#[test]
fn streams_follow_the_event_grammar() {
    let events = stream(&with(plain(), "stream", json!(true)));
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    #[rustfmt::skip]
    let expected = ["response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"];
    assert_eq!(kinds, expected);
    let completed = &events.last().unwrap()["response"];
    let text = &completed["output"][0]["content"][0]["text"];
    assert_eq!(joined(&events, "response.output_text.delta"), *text);
    assert_eq!(completed["usage"]["output_tokens"], OUTPUT_TOKENS);
    assert_eq!(
        json!([events[2]["item"]["status"], events[2]["item"]["content"]]),
        json!(["in_progress", []])
    );

    let reasoning = json!({ "effort": "low", "summary": "auto" });
    let events = stream(&with(with(codex(), "tools", tools()), "reasoning", reasoning));
    assert_eq!(
        joined(&events, "response.function_call_arguments.delta"),
        ARGUMENTS
    );
    assert_eq!(joined(&events, "response.reasoning_summary_text.delta"), SUMMARY);
    let added: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "response.output_item.added")
        .collect();
    assert_eq!(
        [&added[0]["item"]["type"], &added[1]["item"]["type"]],
        ["reasoning", "function_call"]
    );
    assert_eq!(
        json!([added[1]["output_index"], added[1]["item"]["arguments"]]),
        json!([1, ""])
    );
}

/// A raw HTTP/1.1 POST of `body` to `base`'s `/responses` with the bearer `key`.
async fn post(base: &str, key: &str, body: &Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, path) = base.trim_start_matches("http://").split_once('/').unwrap();
    let body = body.to_string();
    let request = format!(
        "POST /{path}/responses HTTP/1.1\r\nhost: {origin}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(origin).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn servers_check_keys_and_answer() {
    let seen = Seen::default();
    let codex_base = start("sk-codex", Flavour::Codex, seen.clone()).await;
    assert!(codex_base.ends_with("/backend-api/codex"), "{codex_base}");
    let good = post(&codex_base, "sk-codex", &codex()).await;
    assert!(
        good.starts_with("HTTP/1.1 200") && good.contains("text/event-stream"),
        "{good}"
    );
    assert!(good.contains("event: response.completed\ndata: ") && !good.contains("[DONE]"));
    let bad = post(&codex_base, "sk-other", &codex()).await;
    assert!(
        bad.starts_with("HTTP/1.1 401") && bad.contains("invalid_api_key"),
        "{bad}"
    );
    let refused = post(&codex_base, "sk-codex", &plain()).await;
    assert!(
        refused.contains(r#"{"detail":"Stream must be set to true"}"#),
        "{refused}"
    );
    assert_eq!(
        broken(&seen),
        ["Incorrect API key provided", "Stream must be set to true"]
    );

    let platform = start("sk-platform", Flavour::Platform, Seen::default()).await;
    assert!(platform.starts_with("http://127.0.0.1:") && platform.ends_with("/v1"));
    let json = post(&platform, "sk-platform", &plain()).await;
    assert!(
        json.starts_with("HTTP/1.1 200") && json.contains(r#""object":"response""#),
        "{json}"
    );
    let refused = post(&platform, "sk-platform", &then(json!([call()]))).await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(refused.contains(r#""type":"invalid_request_error""#) && refused.contains(r#""param":"input""#));
}
