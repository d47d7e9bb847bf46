//! Tests of the mock's rules and answers.

use super::*;

fn plain() -> Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "Say hello." }] })
}

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

fn without(mut body: Value, key: &str) -> Value {
    body.as_object_mut().unwrap().remove(key);
    body
}

/// `plain()` with `messages` after its user message.
fn then(messages: Value) -> Value {
    let mut all = plain()["messages"].as_array().unwrap().clone();
    all.extend(messages.as_array().unwrap().iter().cloned());
    with(plain(), "messages", json!(all))
}

fn tools() -> Value {
    json!([{ "type": "function", "function": { "name": "weather",
        "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }])
}

fn offered_tools() -> Value {
    with(plain(), "tools", tools())
}

fn call(id: &str) -> Value {
    json!({ "id": id, "type": "function", "function": { "name": "weather", "arguments": ARGUMENTS } })
}

fn asks(ids: &[&str]) -> Value {
    let calls: Vec<Value> = ids.iter().map(|id| call(id)).collect();
    json!({ "role": "assistant", "content": null, "tool_calls": calls })
}

fn answers(id: &str, content: Value) -> Value {
    json!({ "role": "tool", "tool_call_id": id, "content": content })
}

/// The chunks of a streamed answer (`[DONE]` checked and dropped).
fn chunks(body: &Value) -> Vec<Value> {
    let events = events(&with(body.clone(), "stream", json!(true)));
    assert_eq!(events.last().unwrap(), "data: [DONE]\n\n");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap().trim_end()).unwrap())
        .collect();
    for chunk in &chunks {
        assert_eq!(
            [&chunk["id"], &chunk["object"]],
            [COMPLETION_ID, "chat.completion.chunk"]
        );
        assert_eq!(chunk["system_fingerprint"], FINGERPRINT);
    }
    chunks
}

fn deltas_of(chunks: &[Value]) -> Vec<&Value> {
    chunks
        .iter()
        .filter_map(|c| c["choices"].as_array()?.first())
        .map(|c| &c["delta"])
        .collect()
}

#[test]
fn plain_answers_are_the_old_mocks() {
    assert_eq!(broken_rule(&plain()), None);
    let usage = json!({ "prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 } });
    let expected = json!({ "id": "chatcmpl-mock0001", "object": "chat.completion", "created": 1_735_689_600,
        "model": "gpt-4o-mini", "system_fingerprint": "fp_mock",
        "choices": [{ "index": 0, "logprobs": null, "finish_reason": "stop",
            "message": { "role": "assistant", "content": "Hello from the mock upstream.", "refusal": null } }],
        "usage": usage, "service_tier": "default" });
    assert_eq!(completion(&plain()), expected);

    let plain_chunks = chunks(&plain());
    assert_eq!(plain_chunks.len(), 1 + 5 + 1);
    assert!(plain_chunks.iter().all(|c| c.get("usage").is_none()));
    let deltas = deltas_of(&plain_chunks);
    assert_eq!(
        *deltas[0],
        json!({ "role": "assistant", "content": "", "refusal": null })
    );
    let pieces: Vec<&str> = deltas.iter().filter_map(|d| d["content"].as_str()).collect();
    assert_eq!(pieces[1..], REPLY_PIECES);
    let last = &plain_chunks[6]["choices"][0];
    assert_eq!(json!([last["delta"], last["finish_reason"]]), json!([{}, "stop"]));

    let options = json!({ "include_usage": true });
    let counted = chunks(&with(plain(), "stream_options", options));
    assert_eq!(counted.len(), 1 + 5 + 1 + 1);
    let (last, rest) = counted.split_last().unwrap();
    assert!(
        rest.iter()
            .all(|c| c["usage"].is_null() && c.get("usage").is_some())
    );
    assert_eq!(json!([last["choices"], last["usage"]]), json!([[], usage]));
}

#[test]
fn tools_get_a_call_and_results_a_text() {
    let offered = with(plain(), "tools", tools());
    assert_eq!(broken_rule(&offered), None);
    let called = completion(&offered);
    let message = &called["choices"][0]["message"];
    assert_eq!(called["choices"][0]["finish_reason"], "tool_calls");
    assert!(message["content"].is_null());
    assert_eq!(message["tool_calls"], json!([call(CALL_ID)]));
    assert_eq!(called["usage"]["prompt_tokens"], PROMPT_TOKENS);

    let streamed = chunks(&offered);
    let deltas = deltas_of(&streamed);
    assert_eq!(deltas[0]["role"], "assistant");
    let head = &deltas[1]["tool_calls"][0];
    assert_eq!(
        *head,
        json!({ "index": 0, "id": CALL_ID, "type": "function",
        "function": { "name": "weather", "arguments": "" } })
    );
    let pieces: Vec<&str> = deltas[2..]
        .iter()
        .filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(pieces, [r#"{"city":"#, r#""Paris"}"#]);
    let finish = &streamed.last().unwrap()["choices"][0];
    assert_eq!(
        json!([finish["delta"], finish["finish_reason"]]),
        json!([{}, "tool_calls"])
    );

    let none = with(offered.clone(), "tool_choice", json!("none"));
    assert_eq!(reply_text(&none), REPLY_PIECES.concat());
    let mut two = tools();
    two.as_array_mut()
        .unwrap()
        .push(json!({ "type": "function", "function": { "name": "clock" } }));
    let chosen = json!({ "type": "function", "function": { "name": "clock" } });
    let forced = with(with(plain(), "tools", two), "tool_choice", chosen);
    assert_eq!(broken_rule(&forced), None);
    assert_eq!(
        completion(&forced)["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "clock"
    );

    let parts = json!([{ "type": "text", "text": "sunny" }]);
    let round_trip = with(
        then(json!([
            asks(&[CALL_ID, "call_2"]),
            answers(CALL_ID, json!("18°C")),
            answers("call_2", parts)
        ])),
        "tools",
        tools(),
    );
    assert_eq!(broken_rule(&round_trip), None);
    assert_eq!(reply_text(&round_trip), "Result: 18°C, sunny");
    let done = completion(&round_trip);
    assert_eq!(done["choices"][0]["finish_reason"], "stop");
    assert_eq!(done["usage"]["completion_tokens"], OTHER_TOKENS);
    let streamed = chunks(&round_trip);
    assert_eq!(deltas_of(&streamed)[1]["content"], "Result: 18°C, sunny");
}

fn reply_text(body: &Value) -> String {
    let answer = completion(body);
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn valid_shapes_pass() {
    let parts = json!([{ "type": "text", "text": "What is this?" },
        { "type": "image_url", "image_url": { "url": "data:image/png;base64,AAAA", "detail": "low" } },
        { "type": "input_audio", "input_audio": { "data": "AAAA", "format": "wav" } },
        { "type": "file", "file": { "file_id": "file-1" } }]);
    let bodies = [
        then(json!([{ "role": "user", "content": parts }])),
        with(
            plain(),
            "messages",
            json!([{ "role": "system", "content": "Be brief." },
            { "role": "developer", "content": [{ "type": "text", "text": "Be kind." }] },
            { "role": "user", "content": "Hi" }, { "role": "assistant", "content": "Hello!" },
            { "role": "user", "content": "Bye" }]),
        ),
        then(json!([{ "role": "assistant", "content": [{ "type": "refusal", "refusal": "No." }] }])),
        with(
            with(offered_tools(), "max_completion_tokens", json!(64)),
            "tool_choice",
            json!("required"),
        ),
        with(
            with(plain(), "stream", json!(true)),
            "stream_options",
            json!({ "include_usage": true }),
        ),
    ];
    for body in bodies {
        assert_eq!(broken_rule(&body), None, "{body}");
    }
}

#[test]
fn each_rule_is_caught() {
    let user = |content: Value| then(json!([{ "role": "user", "content": content }]));
    let offered = |choice: Value| with(with(plain(), "tools", tools()), "tool_choice", choice);
    let tool = |tool: Value| with(plain(), "tools", json!([tool]));
    let mut object_arguments = asks(&[CALL_ID]);
    object_arguments["tool_calls"][0]["function"]["arguments"] = json!({ "city": "Paris" });
    let mut untyped = asks(&[CALL_ID]);
    untyped["tool_calls"][0].as_object_mut().unwrap().remove("type");
    let late =
        json!([asks(&[CALL_ID]), { "role": "user", "content": "Well?" }, answers(CALL_ID, json!("x"))]);
    #[rustfmt::skip]
    let cases = [
        (without(plain(), "model"), "you must provide a model parameter"),
        (with(plain(), "model", json!(4)), "Invalid type for 'model': expected a string, but got an integer instead."),
        (without(plain(), "messages"), "'messages' is a required property"),
        (with(plain(), "messages", json!([])),
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead."),
        (then(json!([{ "role": "function", "name": "weather", "content": "x" }])),
            "Invalid value: 'function'. Supported values are: 'system', 'developer', 'user', 'assistant', and 'tool'."),
        (then(json!([{ "content": "x" }])), "Missing required parameter: 'messages[1].role'."),
        (then(json!(["hi"])), "Invalid type for 'messages[1]': expected an object, but got a string instead."),
        (then(json!([{ "role": "user" }])), "Invalid value for 'content': expected a string, got null."),
        (user(json!(3)),
            "Invalid type for 'messages[1].content': expected one of a string or array of objects, but got an integer instead."),
        (user(json!([{ "type": "input_text", "text": "x" }])),
            "Invalid value: 'input_text'. Supported values are: 'text', 'image_url', 'input_audio', and 'file'."),
        (user(json!([{ "type": "text", "text": 1 }])),
            "Invalid type for 'messages[1].content[0].text': expected a string, but got an integer instead."),
        (user(json!([{ "type": "image_url", "image_url": "https://x/y.png" }])),
            "Invalid type for 'messages[1].content[0].image_url': expected an object, but got a string instead."),
        (user(json!([{ "type": "image_url", "image_url": {} }])),
            "Missing required parameter: 'messages[1].content[0].image_url.url'."),
        (user(json!([{ "type": "input_audio", "input_audio": { "data": "AAAA" } }])),
            "Missing required parameter: 'messages[1].content[0].input_audio.format'."),
        (user(json!([{ "type": "file" }])), "Missing required parameter: 'messages[1].content[0].file'."),
        (then(json!([{ "role": "system", "content": [{ "type": "image_url", "image_url": { "url": "u" } }] }])),
            "Invalid value: 'image_url'. Supported values are: 'text'."),
        (then(json!([{ "role": "assistant", "content": null }])),
            "Invalid value for 'content': expected a string, got null."),
        (then(json!([{ "role": "assistant", "tool_calls": [] }])),
            "Invalid 'messages[1].tool_calls': empty array. Expected an array with minimum length 1, but got an empty array instead."),
        (then(json!([object_arguments, answers(CALL_ID, json!("x"))])),
            "Invalid type for 'messages[1].tool_calls[0].function.arguments': expected a string, but got an object instead."),
        (then(json!([untyped, answers(CALL_ID, json!("x"))])),
            "Missing required parameter: 'messages[1].tool_calls[0].type'."),
        (then(json!([asks(&[CALL_ID]), { "role": "tool", "content": "x" }])),
            "Missing required parameter: 'messages[2].tool_call_id'."),
        (then(json!([answers(CALL_ID, json!("x"))])),
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."),
        (then(json!([asks(&[CALL_ID]), answers("call_other", json!("x"))])),
            "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'."),
        (then(late),
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. \
             The following tool_call_ids did not have response messages: call_Rk2wLxPq8mN4vB7cT1yZ0sHd"),
        (then(json!([asks(&["call_1", "call_2", "call_3"]), answers("call_2", json!("x"))])),
            "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. \
             The following tool_call_ids did not have response messages: call_1, call_3"),
        (with(plain(), "tools", json!([])),
            "Invalid 'tools': empty array. Expected an array with minimum length 1, but got an empty array instead."),
        (tool(json!({ "type": "web_search" })), "Invalid value: 'web_search'. Supported values are: 'function'."),
        (tool(json!({ "type": "function", "name": "weather" })), "Missing required parameter: 'tools[0].function'."),
        (tool(json!({ "type": "function", "function": { "parameters": {} } })),
            "Missing required parameter: 'tools[0].function.name'."),
        (tool(json!({ "type": "function", "function": { "name": "weather", "parameters": "{}" } })),
            "Invalid type for 'tools[0].function.parameters': expected an object, but got a string instead."),
        (with(plain(), "tool_choice", json!("auto")),
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified."),
        (with(plain(), "parallel_tool_calls", json!(false)),
            "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed when 'tools' are specified."),
        (offered(json!("any")), "Invalid value: 'any'. Supported values are: 'none', 'auto', and 'required'."),
        (offered(json!({ "type": "function", "name": "weather" })),
            "Missing required parameter: 'tool_choice.function'."),
        (offered(json!({ "type": "function", "function": { "name": "clock" } })),
            "Tool choice 'clock' not found in 'tools' parameter."),
        (with(with(plain(), "max_tokens", json!(64)), "max_completion_tokens", json!(64)),
            "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported."),
        (with(plain(), "max_tokens", json!(0)),
            "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead."),
        (with(plain(), "max_completion_tokens", json!(-5)),
            "Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got -5 instead."),
        (with(plain(), "max_tokens", json!(1.5)),
            "Invalid type for 'max_tokens': expected an integer, but got a decimal instead."),
        (with(plain(), "stream_options", json!({ "include_usage": true })),
            "The 'stream_options' parameter is only allowed when 'stream' is enabled."),
    ];
    for (body, message) in cases {
        assert_eq!(broken_rule(&body).as_deref(), Some(message), "{body}");
    }
    let rule = check(&with(plain(), "max_tokens", json!(0))).unwrap_err();
    assert_eq!(rule.param.as_deref(), Some("max_tokens"));
    assert_eq!(rule.code, Some("integer_below_min_value"));
    let rule = check(&then(json!([answers(CALL_ID, json!("x"))]))).unwrap_err();
    assert_eq!(
        (rule.param.as_deref(), rule.code),
        (Some("messages.[1].role"), None)
    );
}

#[test]
fn embeddings_are_floats_or_base64() {
    assert_eq!(
        [base64(b"Man"), base64(b"Ma"), base64(b"M"), base64(b"")],
        ["TWFu", "TWE=", "TQ==", ""]
    );
    let body = json!({ "model": "text-embedding-3-small", "input": ["first", "second"],
        "encoding_format": "base64" });
    let answer = embeddings_answer(&body, check_embeddings(&body).unwrap());
    let vectors: Vec<&Value> = answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["embedding"])
        .collect();
    assert_eq!(vectors, ["AACAPgAAAL8AAIA/AAAAAA==", "AACAPgAAAL8AAIA/AACAPw=="]);
    assert_eq!(
        json!([answer["object"], answer["model"], answer["data"][1]["index"]]),
        json!(["list", "text-embedding-3-small", 1])
    );
    assert_eq!(answer["usage"], json!({ "prompt_tokens": 4, "total_tokens": 4 }));
    let body = json!({ "model": "text-embedding-3-small", "input": "one", "encoding_format": "float" });
    let answer = embeddings_answer(&body, check_embeddings(&body).unwrap());
    assert_eq!(
        answer["data"],
        json!([{ "object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0, 0.0] }])
    );
    let message = |body: Value| check_embeddings(&body).unwrap_err().message;
    assert_eq!(message(json!({ "model": "m" })), "'input' is a required property");
    assert_eq!(
        message(json!({ "input": "x" })),
        "you must provide a model parameter"
    );
    assert_eq!(
        message(json!({ "model": "m", "input": "x", "encoding_format": "int8" })),
        "Invalid value: 'int8'. Supported values are: 'float' and 'base64'."
    );
}

/// A raw HTTP/1.1 POST of `body` to `base` + `path` with the bearer `key`.
async fn post(base: &str, path: &str, key: &str, body: &Value) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (origin, prefix) = base.trim_start_matches("http://").split_once('/').unwrap();
    let body = body.to_string();
    let request = format!(
        "POST /{prefix}{path} HTTP/1.1\r\nhost: {origin}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(origin).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// `answer` has the HTTP `status` and contains each of `needles`.
fn expect(answer: &str, status: &str, needles: &[&str]) {
    assert!(answer.starts_with(&format!("HTTP/1.1 {status}")), "{answer}");
    for needle in needles {
        assert!(answer.contains(needle), "{needle} not in {answer}");
    }
}

#[tokio::test]
async fn the_server_checks_keys_and_answers() {
    let seen = Seen::default();
    let base = start("sk-upstream-1", seen.clone()).await;
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/v1"),
        "{base}"
    );
    let chat = "/chat/completions";
    let json = post(&base, chat, "sk-upstream-1", &plain()).await;
    expect(&json, "200", &[r#""object":"chat.completion""#]);
    let stream = with(plain(), "stream", json!(true));
    let sse = post(&base, chat, "sk-upstream-1", &stream).await;
    expect(
        &sse,
        "200",
        &[
            "text/event-stream",
            r#""content":" upstream.""#,
            "data: [DONE]\n\n",
        ],
    );
    let bad = post(&base, chat, "sk-other-key-1", &plain()).await;
    expect(&bad, "401", &[r#""code":"invalid_api_key""#]);
    let refused = post(&base, chat, "sk-upstream-1", &without(plain(), "messages")).await;
    let message = r#""message":"'messages' is a required property""#;
    expect(&refused, "400", &[message, r#""type":"invalid_request_error""#]);
    let vectors = json!({ "model": "text-embedding-3-small", "input": "one" });
    let embedded = post(&base, "/embeddings", "sk-upstream-1", &vectors).await;
    expect(&embedded, "200", &["[0.25,-0.5,1.0,0.0]"]);
    let broke = ["Incorrect API key provided", "'messages' is a required property"];
    assert_eq!(broken(&seen), broke);
    let paths: Vec<&str> = seen.lock().unwrap().iter().map(|(path, _, _)| *path).collect();
    assert_eq!(paths, [chat, chat, chat, chat, "/embeddings"]);
}
