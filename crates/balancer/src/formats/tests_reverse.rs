//! Table tests of the Anthropic Messages ⇄ IR ⇄ OpenAI Chat pieces (Anthropic clients,
//! OpenAI upstreams): a Claude Code request, refusals naming the field, answers with tool
//! calls, a streamed tool call, errors; and round trips through both formats.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::body::TranslatedBody;
use super::ir::{Effort, Event, Finish, Part, Request, Role, ToolChoice, Usage};
use super::openai_chat::ChunkDecoder;
use super::{Format, StreamDecoder, StreamEncoder, Translation, anthropic, openai_chat};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

fn to_chat(messages_request: Value) -> Value {
    let request = anthropic::decode_request(&object(messages_request)).expect("translatable");
    openai_chat::encode_request(&request, "gpt-x")
}

#[test]
fn a_claude_code_request_becomes_chat_messages() {
    let body = to_chat(json!({
        "model": "m",
        "max_tokens": 32000,
        "stream": true,
        "system": [
            { "type": "text", "text": "You are Claude Code." },
            { "type": "text", "text": "Be concise.", "cache_control": { "type": "ephemeral" } },
        ],
        "messages": [
            { "role": "user", "content": [
                { "type": "text", "text": "What is in these?" },
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
                { "type": "image", "source": { "type": "url", "url": "https://example.com/map.png" } },
            ] },
            { "role": "assistant", "content": [
                { "type": "thinking", "thinking": "Need to look.", "signature": "sig" },
                { "type": "text", "text": "Looking." },
                { "type": "tool_use", "id": "toolu_1", "name": "read", "input": { "path": "a.rs" } },
                { "type": "tool_use", "id": "toolu_2", "name": "read", "input": { "path": "b.rs" } },
            ] },
            { "role": "user", "content": [
                { "type": "text", "text": "Also check c.rs." },
                { "type": "tool_result", "tool_use_id": "toolu_1", "content": "fn a() {}" },
                { "type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                  "content": [{ "type": "text", "text": "no such file" }], "cache_control": { "type": "ephemeral" } },
            ] },
        ],
        "tools": [{ "name": "read", "description": "Reads a file",
            "input_schema": { "type": "object", "properties": { "path": { "type": "string" } } },
            "cache_control": { "type": "ephemeral" } }],
        "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
        "metadata": { "user_id": "user_abc" },
        "thinking": { "type": "enabled", "budget_tokens": 10000 },
        "temperature": 1,
        "stop_sequences": ["END"],
    }));
    assert_eq!(
        body,
        json!({
            "model": "gpt-x",
            "messages": [
                { "role": "system", "content": "You are Claude Code.\n\nBe concise." },
                { "role": "user", "content": [
                    { "type": "text", "text": "What is in these?" },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
                    { "type": "image_url", "image_url": { "url": "https://example.com/map.png" } },
                ] },
                // The thinking block cannot go back to OpenAI.
                { "role": "assistant", "content": "Looking.", "tool_calls": [
                    { "id": "toolu_1", "type": "function", "function": { "name": "read", "arguments": "{\"path\":\"a.rs\"}" } },
                    { "id": "toolu_2", "type": "function", "function": { "name": "read", "arguments": "{\"path\":\"b.rs\"}" } },
                ] },
                // Results first, right after the calls; then the rest of the turn.
                { "role": "tool", "tool_call_id": "toolu_1", "content": "fn a() {}" },
                { "role": "tool", "tool_call_id": "toolu_2", "content": "[error] no such file" },
                { "role": "user", "content": "Also check c.rs." },
            ],
            "tools": [{ "type": "function", "function": { "name": "read", "description": "Reads a file",
                "parameters": { "type": "object", "properties": { "path": { "type": "string" } } } } }],
            "parallel_tool_calls": false,
            "tool_choice": "required",
            "max_tokens": 32000,
            "temperature": 1.0,
            "stop": ["END"],
            "stream": true,
            "stream_options": { "include_usage": true },
            "reasoning_effort": "medium",
            "user": "user_abc",
        })
    );
}

#[test]
fn choices_and_budgets_map_to_their_chat_forms() {
    let cases = [
        (json!({ "type": "auto" }), json!("auto"), None),
        (json!({ "type": "none" }), json!("none"), None),
        (
            json!({ "type": "tool", "name": "f" }),
            json!({ "type": "function", "function": { "name": "f" } }),
            None,
        ),
        (
            json!({ "type": "auto", "disable_parallel_tool_use": true }),
            json!("auto"),
            Some(false),
        ),
        (Value::Null, Value::Null, None),
    ];
    for (choice, chat_choice, parallel) in cases {
        let mut request = json!({ "model": "m", "max_tokens": 10, "messages": [{ "role": "user", "content": "x" }],
            "tools": [{ "name": "f" }] });
        if !choice.is_null() {
            request["tool_choice"] = choice.clone();
        }
        let body = to_chat(request);
        assert_eq!(
            body.get("tool_choice").cloned().unwrap_or(Value::Null),
            chat_choice,
            "{choice}"
        );
        assert_eq!(
            body.get("parallel_tool_calls").and_then(Value::as_bool),
            parallel,
            "{choice}"
        );
        // A tool without a schema gets an empty object schema.
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            json!({ "type": "object", "properties": {} })
        );
        assert!(body.get("stream_options").is_none(), "not a stream");
    }
    for (budget, effort) in [
        (1024, Effort::Low),
        (2048, Effort::Low),
        (2049, Effort::Medium),
        (12_288, Effort::Medium),
        (12_289, Effort::High),
        (31_999, Effort::High),
    ] {
        let request = anthropic::decode_request(&object(json!({ "model": "m", "max_tokens": 32000,
            "messages": [{ "role": "user", "content": "x" }],
            "thinking": { "type": "enabled", "budget_tokens": budget } })))
        .unwrap();
        assert_eq!(request.reasoning, Some(effort), "{budget}");
    }
    let disabled = anthropic::decode_request(&object(json!({ "model": "m", "max_tokens": 1,
        "messages": [{ "role": "user", "content": "x" }], "thinking": { "type": "disabled" } })))
    .unwrap();
    assert_eq!(disabled.reasoning, None);
}

#[test]
fn what_openai_cannot_express_is_refused_naming_the_field() {
    let user = json!([{ "role": "user", "content": "x" }]);
    let cases = [
        (json!({ "top_k": 40 }), "top_k"),
        (
            json!({ "tools": [{ "type": "web_search_20250305", "name": "web_search" }] }),
            "tools[0].type",
        ),
        (
            json!({ "tools": [{ "name": "f" }, { "type": "bash_20250124", "name": "bash" }] }),
            "tools[1].type",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "document", "source": { "type": "text", "data": "x" } }] }] }),
            "messages[0].content[0].type",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "t",
                "content": [{ "type": "text", "text": "ok" }, { "type": "image", "source": { "type": "url", "url": "u" } }] }] }] }),
            "messages[0].content[0].content[1]",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": [{ "type": "image", "source": { "type": "file", "file_id": "f" } }] }] }),
            "messages[0].content[0].source.type",
        ),
        (
            json!({ "messages": [{ "role": "system", "content": "x" }] }),
            "messages[0].role",
        ),
        (json!({ "messages": [] }), "messages"),
        (
            json!({ "system": [{ "type": "image", "source": {} }] }),
            "system[0]",
        ),
        (
            json!({ "tool_choice": { "type": "sometimes" } }),
            "tool_choice.type",
        ),
        (json!({ "thinking": { "type": "adaptive" } }), "thinking.type"),
        (json!({ "container": "c_1" }), "container"),
        (
            json!({ "mcp_servers": [{ "type": "url", "url": "u" }] }),
            "mcp_servers",
        ),
        (json!({ "metadata": { "tenant": "t" } }), "metadata.tenant"),
        (json!({ "stop_sequences": "END" }), "stop_sequences"),
    ];
    for (patch, param) in cases {
        let mut body = json!({ "model": "m", "max_tokens": 10, "messages": user });
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        let refusal = anthropic::decode_request(&object(body)).expect_err(param);
        assert_eq!(refusal.param, param);
        assert!(refusal.message.starts_with(param), "{}", refusal.message);
    }
    // Neutral values and cache markers are no reason to refuse.
    let request = anthropic::decode_request(&object(
        json!({ "model": "m", "max_tokens": 10, "messages": user,
        "top_k": null, "container": null, "stream": false, "metadata": {},
        "system": [{ "type": "text", "text": "s", "cache_control": { "type": "ephemeral", "ttl": "1h" } }] }),
    ))
    .unwrap();
    assert_eq!(request.system, ["s"]);
}

#[test]
fn a_chat_completion_becomes_an_anthropic_message() {
    let answer = json!({
        "id": "chatcmpl-9", "object": "chat.completion", "created": 1, "model": "gpt-x",
        "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.", "reasoning_content": "Two files.",
            "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "read", "arguments": "{\"path\":\"a.rs\"}" } },
                { "id": "call_2", "type": "function", "function": { "name": "read", "arguments": "{\"path\":" } },
            ],
        } }],
        "usage": { "prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
            "prompt_tokens_details": { "cached_tokens": 100 }, "completion_tokens_details": { "reasoning_tokens": 12 } },
    });
    let response = openai_chat::decode_response(&answer).expect("an answer");
    assert_eq!(
        response.usage,
        Usage {
            input: 20,
            output: 30,
            cache_read: 100,
            cache_write: 0,
            reasoning: 12
        }
    );
    assert_eq!(
        response.parts[3],
        Part::ToolCall {
            id: "call_2".into(),
            name: "read".into(),
            arguments: json!("{\"path\":"),
        },
        "arguments that are not JSON are kept as written"
    );
    assert_eq!(
        anthropic::encode_response(&response),
        json!({
            "id": "msg_chatcmpl-9", "type": "message", "role": "assistant", "model": "gpt-x",
            "content": [
                { "type": "thinking", "thinking": "Two files.", "signature": "" },
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "call_1", "name": "read", "input": { "path": "a.rs" } },
                { "type": "tool_use", "id": "call_2", "name": "read", "input": { "raw": "{\"path\":" } },
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": { "input_tokens": 20, "output_tokens": 30, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 0 },
        })
    );
    for (chat_reason, anthropic_reason) in [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ] {
        let mut answer = answer.clone();
        answer["choices"][0]["finish_reason"] = json!(chat_reason);
        let message = anthropic::encode_response(&openai_chat::decode_response(&answer).unwrap());
        assert_eq!(message["stop_reason"], anthropic_reason);
    }
    assert!(openai_chat::decode_response(&json!({ "error": { "message": "x" } })).is_none());
}

#[test]
fn openai_errors_reach_anthropic_clients_in_anthropic_shape() {
    let cases = [
        (
            429,
            json!({ "error": { "message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded" } }),
            "rate_limit_error",
        ),
        (
            400,
            json!({ "error": { "message": "Bad tools", "type": "invalid_request_error", "param": "tools", "code": null } }),
            "invalid_request_error",
        ),
        (
            401,
            json!({ "error": { "message": "Incorrect API key", "type": "invalid_request_error", "code": "invalid_api_key" } }),
            "invalid_request_error",
        ),
        (
            404,
            json!({ "error": { "message": "No such model", "type": "not_found", "code": "model_not_found" } }),
            "not_found_error",
        ),
        (500, json!({ "error": { "message": "boom" } }), "api_error"),
    ];
    for (status, body, kind) in cases {
        let (code, message) = openai_chat::decode_error(&body).expect("an error");
        assert_eq!(
            anthropic::encode_error(status, &code, &message),
            json!({ "type": "error", "error": { "type": kind, "message": body["error"]["message"] } }),
            "{body}"
        );
    }
}

fn chunk(value: Value) -> String {
    value.to_string()
}

/// A recorded-shape OpenAI stream: text, then two tool calls whose arguments come in
/// pieces, the finish reason, the usage chunk and `[DONE]`.
fn tool_chunks() -> Vec<String> {
    let base = |delta: Value, finish: Value| {
        chunk(
            json!({ "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x",
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }] }),
        )
    };
    vec![
        base(
            json!({ "role": "assistant", "content": "", "refusal": null }),
            Value::Null,
        ),
        base(json!({ "content": "Let me check." }), Value::Null),
        base(
            json!({ "tool_calls": [{ "index": 0, "id": "call_a", "type": "function", "function": { "name": "read", "arguments": "" } }] }),
            Value::Null,
        ),
        base(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"path\":" } }] }),
            Value::Null,
        ),
        base(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "\"a.rs\"}" } }] }),
            Value::Null,
        ),
        base(
            json!({ "tool_calls": [{ "index": 1, "id": "call_b", "type": "function", "function": { "name": "read", "arguments": "{\"path\":\"b.rs\"}" } }] }),
            Value::Null,
        ),
        base(json!({}), json!("tool_calls")),
        chunk(
            json!({ "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x", "choices": [],
            "usage": { "prompt_tokens": 50, "completion_tokens": 21, "total_tokens": 71, "prompt_tokens_details": { "cached_tokens": 10 } } }),
        ),
        "[DONE]".to_owned(),
    ]
}

fn encode_all(events: Vec<Event>) -> Vec<(String, Value)> {
    let mut encoder = anthropic::EventEncoder::default();
    let mut out = Vec::new();
    for event in events {
        encoder.encode(event, &mut out);
    }
    parse_events(&String::from_utf8(out).unwrap())
}

/// `(event name, data)` of each Anthropic SSE event; asserts the name matches the type.
fn parse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').expect("an event line and a data line");
            let name = name.strip_prefix("event: ").expect("an event name").to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").expect("data")).unwrap();
            assert_eq!(data["type"], name.as_str(), "{e}");
            (name, data)
        })
        .collect()
}

#[test]
fn a_streamed_tool_call_becomes_anthropic_blocks() {
    let mut decoder = ChunkDecoder::default();
    let mut events = Vec::new();
    for data in tool_chunks() {
        decoder.decode("", &data, &mut events);
    }
    assert!(decoder.ended());
    let usage = Usage {
        input: 40,
        output: 21,
        cache_read: 10,
        ..Usage::default()
    };
    assert_eq!(
        events,
        [
            Event::Start {
                id: "chatcmpl-s".into(),
                model: "gpt-x".into()
            },
            Event::Text("Let me check.".into()),
            Event::ToolCallStart {
                index: 0,
                id: "call_a".into(),
                name: "read".into()
            },
            Event::ToolArguments {
                index: 0,
                delta: "{\"path\":".into()
            },
            Event::ToolArguments {
                index: 0,
                delta: "\"a.rs\"}".into()
            },
            Event::ToolCallStart {
                index: 1,
                id: "call_b".into(),
                name: "read".into()
            },
            Event::ToolArguments {
                index: 1,
                delta: "{\"path\":\"b.rs\"}".into()
            },
            Event::Finish(Finish::ToolCalls),
            Event::Usage(usage),
            Event::End,
        ]
    );

    let sent = encode_all(events);
    let expected = [
        json!({ "type": "message_start", "message": { "id": "msg_chatcmpl-s", "type": "message", "role": "assistant",
            "model": "gpt-x", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": 0, "output_tokens": 0 } } }),
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "Let me check." } }),
        json!({ "type": "content_block_stop", "index": 0 }),
        json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "tool_use", "id": "call_a", "name": "read", "input": {} } }),
        json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta", "partial_json": "{\"path\":" } }),
        json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta", "partial_json": "\"a.rs\"}" } }),
        json!({ "type": "content_block_stop", "index": 1 }),
        json!({ "type": "content_block_start", "index": 2, "content_block": { "type": "tool_use", "id": "call_b", "name": "read", "input": {} } }),
        json!({ "type": "content_block_delta", "index": 2, "delta": { "type": "input_json_delta", "partial_json": "{\"path\":\"b.rs\"}" } }),
        json!({ "type": "content_block_stop", "index": 2 }),
        json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use", "stop_sequence": null },
            "usage": { "input_tokens": 40, "output_tokens": 21, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0 } }),
        json!({ "type": "message_stop" }),
    ];
    let data: Vec<&Value> = sent.iter().map(|(_, d)| d).collect();
    assert_eq!(data, expected.iter().collect::<Vec<_>>());
}

#[test]
fn reasoning_then_text_are_two_blocks_and_a_bare_stream_still_ends_well() {
    // A compatible server's shape: reasoning first, no id, no finish reason.
    let chunks = [
        json!({ "choices": [{ "delta": { "reasoning_content": "Hmm." } }] }).to_string(),
        json!({ "choices": [{ "delta": { "reasoning_content": " Yes." } }] }).to_string(),
        json!({ "choices": [{ "delta": { "content": "Yes" } }] }).to_string(),
        "[DONE]".to_owned(),
    ];
    let mut decoder = ChunkDecoder::default();
    let mut events = Vec::new();
    for data in &chunks {
        decoder.decode("", data, &mut events);
    }
    let sent = encode_all(events);
    let names: Vec<&str> = sent.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert!(sent[0].1["message"]["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        sent[1].1["content_block"],
        json!({ "type": "thinking", "thinking": "" })
    );
    assert_eq!(
        sent[3].1["delta"],
        json!({ "type": "thinking_delta", "thinking": " Yes." })
    );
    assert_eq!(sent[5].1["index"], 1);
    assert_eq!(sent[8].1["delta"]["stop_reason"], "end_turn");
}

#[test]
fn azure_prompt_filter_chunk_does_not_start_the_answer() {
    let chunks = [
        json!({ "choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{ "prompt_index": 0, "content_filter_results": {} }] })
        .to_string(),
        json!({ "id": "chatcmpl-z", "model": "gpt-4o", "choices": [{ "index": 0, "delta": { "role": "assistant", "content": "" },
            "content_filter_results": {} }] })
        .to_string(),
    ];
    let mut decoder = ChunkDecoder::default();
    let mut events = Vec::new();
    for data in &chunks {
        decoder.decode("", data, &mut events);
    }
    assert_eq!(
        events,
        [Event::Start {
            id: "chatcmpl-z".into(),
            model: "gpt-4o".into()
        }]
    );
}

#[test]
fn tool_calls_without_an_index_are_told_apart_by_their_id() {
    let call = |id: &str, city: &str| {
        json!({ "choices": [{ "delta": { "tool_calls": [{ "id": id, "type": "function",
            "function": { "name": "weather", "arguments": format!("{{\"city\":\"{city}\"}}") } }] } }] })
        .to_string()
    };
    let mut decoder = ChunkDecoder::default();
    let mut events = Vec::new();
    for data in [call("a", "Paris"), call("b", "Rome")] {
        decoder.decode("", &data, &mut events);
    }
    let starts: Vec<(usize, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::ToolCallStart { index, id, .. } => Some((*index, id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [(0, "a".to_owned()), (1, "b".to_owned())]);
    assert_eq!(
        events.last(),
        Some(&Event::ToolArguments {
            index: 1,
            delta: "{\"city\":\"Rome\"}".into()
        })
    );
}

async fn translate(chunks: Vec<&'static [u8]>, status: u16, stream: bool) -> String {
    let inner = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
    );
    let translation = Translation {
        client: Format::Messages,
        upstream: Format::Chat,
        stream,
        upstream_stream: stream,
        include_usage: false,
        count: false,
    };
    let body = TranslatedBody::new(inner, status, translation, 0);
    let parts: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
    String::from_utf8(parts.concat()).unwrap()
}

#[tokio::test]
async fn the_body_translates_streams_cut_anywhere_errors_and_truncation() {
    let stream: &[u8] = b"data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"delta\":{\"content\":\"hel\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let whole = translate(vec![stream], 200, true).await;
    for cut in [1, 10, 60, stream.len() - 3] {
        let (a, b) = stream.split_at(cut);
        assert_eq!(translate(vec![a, b], 200, true).await, whole, "cut at {cut}");
    }
    let events = parse_events(&whole);
    assert_eq!(events.last().unwrap().0, "message_stop");
    assert_eq!(events[2].1["delta"]["text"], "hel");

    // The upstream stopped without `[DONE]`: an error event, and no message_stop.
    let cut = translate(vec![&stream[..60]], 200, true).await;
    let events = parse_events(&cut);
    assert_eq!(
        events.last().unwrap().1,
        json!({ "type": "error", "error": { "type": "api_error",
            "message": "the upstream's stream ended before the answer was complete" } })
    );
    assert!(events.iter().all(|(n, _)| n != "message_stop"));

    // A refused stream is answered as JSON, in Anthropic's error shape.
    let refused = translate(
        vec![br#"{"error":{"message":"Rate limit reached","type":"requests"}}"#],
        429,
        true,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&refused).unwrap(),
        json!({ "type": "error", "error": { "type": "rate_limit_error", "message": "Rate limit reached" } })
    );
    let plain = translate(
        vec![br#"{"id":"c","model":"g","choices":[{"message":{"content":"hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#],
        200,
        false,
    )
    .await;
    let plain: Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(plain["content"], json!([{ "type": "text", "text": "hi" }]));
    assert_eq!(plain["stop_reason"], "max_tokens");
    assert_eq!(plain["usage"]["input_tokens"], 3);
    let garbled = translate(vec![b"<html>"], 200, false).await;
    assert_eq!(
        serde_json::from_str::<Value>(&garbled).unwrap()["error"]["type"],
        "api_error"
    );
}

#[test]
fn an_error_chunk_mid_stream_ends_it_without_message_stop() {
    let mut decoder = ChunkDecoder::default();
    let mut events = Vec::new();
    decoder.decode("", &tool_chunks()[1], &mut events);
    decoder.decode(
        "",
        r#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
        &mut events,
    );
    assert!(decoder.ended());
    let sent = encode_all(events);
    let names: Vec<&str> = sent.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(sent[3].1["error"]["message"], "The server had an error");
}

/// The meaning a request keeps through any format: consecutive turns of one role are one
/// turn, tool results lead their turn, system parts are one text, an unset tool choice
/// is `auto`, and what only one side has (the stream-usage flag, the room a thinking
/// budget adds to `max_tokens`, Anthropic's required `max_tokens`) is set aside.
fn meaning(mut request: Request) -> Request {
    let mut merged: Vec<super::ir::Message> = Vec::new();
    for message in request.messages {
        match merged.last_mut() {
            Some(last) if last.role == message.role => last.parts.extend(message.parts),
            _ => merged.push(message),
        }
    }
    for message in &mut merged {
        if message.role == Role::User {
            message
                .parts
                .sort_by_key(|p| !matches!(p, Part::ToolResult { .. }));
        }
    }
    request.messages = merged;
    request.system = if request.system.is_empty() {
        Vec::new()
    } else {
        vec![request.system.join("\n\n")]
    };
    request.tool_choice = Some(request.tool_choice.unwrap_or(ToolChoice::Auto));
    if request.tool_choice == Some(ToolChoice::None) || request.tools.is_empty() {
        request.parallel_tool_calls = true;
    }
    request.stream_usage = false;
    if request.reasoning.is_some() || request.max_tokens.is_none() {
        request.max_tokens = None;
    }
    if request.max_tokens == Some(anthropic::DEFAULT_MAX_TOKENS) {
        request.max_tokens = None;
    }
    request
}

fn chat_requests() -> Vec<Value> {
    let user = |text: &str| json!({ "role": "user", "content": text });
    vec![
        json!({ "model": "m", "messages": [user("hi")] }),
        json!({ "model": "m", "messages": [
            { "role": "system", "content": "Be brief." }, { "role": "developer", "content": "Use metric." }, user("hi"),
        ], "temperature": 0.3, "top_p": 0.9, "max_tokens": 100, "stop": ["\n\n", "END"], "user": "u1" }),
        json!({ "model": "m", "stream": true, "stream_options": { "include_usage": true }, "messages": [
            { "role": "user", "content": [
                { "type": "text", "text": "Describe" },
                { "type": "image_url", "image_url": { "url": "data:image/jpeg;base64,/9j/4AAQ" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/a.png" } },
            ] },
        ], "reasoning_effort": "high", "max_completion_tokens": 500 }),
        json!({ "model": "m", "messages": [
            user("Weather in Paris and Rome?"),
            { "role": "assistant", "content": "Checking.", "tool_calls": [
                { "id": "c1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                { "id": "c2", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Rome\",\"units\":[\"C\"]}" } },
            ] },
            { "role": "tool", "tool_call_id": "c1", "content": "18C" },
            { "role": "tool", "tool_call_id": "c2", "content": [{ "type": "text", "text": "24C" }] },
            user("Which is warmer?"),
        ], "tools": [
            { "type": "function", "function": { "name": "weather", "description": "Current weather",
                "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } } },
            { "type": "function", "function": { "name": "noop" } },
        ], "tool_choice": { "type": "function", "function": { "name": "weather" } }, "parallel_tool_calls": false }),
        json!({ "model": "m", "messages": [user("x")], "tools": [{ "type": "function", "function": { "name": "f" } }],
            "tool_choice": "required", "reasoning_effort": "low" }),
        json!({ "model": "m", "messages": [user("x")], "tools": [{ "type": "function", "function": { "name": "f" } }],
            "tool_choice": "none" }),
    ]
}

#[test]
fn chat_requests_keep_their_meaning_through_anthropic_and_back() {
    for chat in chat_requests() {
        let first = openai_chat::decode_request(&object(chat.clone())).expect("translatable");
        let messages_body = anthropic::encode_request(&first, "claude-x");
        let second = anthropic::decode_request(&object(messages_body)).expect("decodable");
        let chat_again = openai_chat::encode_request(&second, "m");
        let third = openai_chat::decode_request(&object(chat_again)).expect("decodable");
        assert_eq!(meaning(second.clone()), meaning(first.clone()), "{chat}");
        assert_eq!(meaning(third), meaning(first), "{chat}");
    }
}

#[test]
fn messages_requests_keep_their_meaning_through_chat_and_back() {
    let requests = [
        json!({ "model": "m", "max_tokens": 64, "system": "Be brief.", "messages": [{ "role": "user", "content": "hi" }],
            "stop_sequences": ["END"], "temperature": 0.5, "metadata": { "user_id": "u" } }),
        json!({ "model": "m", "max_tokens": 64, "stream": true, "messages": [
            { "role": "user", "content": [{ "type": "text", "text": "read a.rs" }] },
            { "role": "assistant", "content": [{ "type": "tool_use", "id": "t1", "name": "read", "input": { "path": "a.rs" } }] },
            { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": "t1", "content": "fn a() {}" }, { "type": "text", "text": "and?" }] },
        ], "tools": [{ "name": "read", "input_schema": { "type": "object" } }], "tool_choice": { "type": "any" } }),
    ];
    for messages_request in requests {
        let first = anthropic::decode_request(&object(messages_request.clone())).unwrap();
        let second = openai_chat::decode_request(&object(openai_chat::encode_request(&first, "m"))).unwrap();
        assert_eq!(meaning(second), meaning(first), "{messages_request}");
    }
}
