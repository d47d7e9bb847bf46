//! Table tests of the OpenAI Chat ⇄ IR ⇄ Anthropic Messages pieces: requests with tools,
//! images and results; answers with tool calls and thinking; a streamed tool call.

use ez_contract::provider::ProviderType;
use serde_json::{Map, Value, json};

use super::anthropic::{self, EventDecoder};
use super::ir::{Effort, Event, Finish, Part};
use super::openai_chat::{self, ChunkEncoder};
use super::{StreamDecoder, StreamEncoder};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

fn to_anthropic(chat: Value) -> Value {
    let request = openai_chat::decode_request(&object(chat)).expect("translatable");
    anthropic::encode_request(&request, "claude-x")
}

#[test]
fn a_tool_round_trip_becomes_alternating_anthropic_turns() {
    let body = to_anthropic(json!({
        "model": "m",
        "messages": [
            { "role": "system", "content": "You are terse." },
            { "role": "user", "content": [
                { "type": "text", "text": "Weather in Paris and Rome?" },
                { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } },
                { "type": "image_url", "image_url": { "url": "https://example.com/map.png" } },
            ] },
            { "role": "assistant", "content": "", "tool_calls": [
                { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                { "id": "call_2", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Rome\"}" } },
            ] },
            { "role": "tool", "tool_call_id": "call_1", "content": "18C" },
            { "role": "tool", "tool_call_id": "call_2", "content": "24C" },
            { "role": "user", "content": "Which is warmer?" },
        ],
        "tools": [{ "type": "function", "function": { "name": "weather", "description": "Current weather",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "max_completion_tokens": 300,
        "user": "u-42",
    }));
    assert_eq!(
        body,
        json!({
            "model": "claude-x",
            "max_tokens": 300,
            "system": "You are terse.",
            "messages": [
                { "role": "user", "content": [
                    { "type": "text", "text": "Weather in Paris and Rome?" },
                    { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" } },
                    { "type": "image", "source": { "type": "url", "url": "https://example.com/map.png" } },
                ] },
                { "role": "assistant", "content": [
                    { "type": "tool_use", "id": "call_1", "name": "weather", "input": { "city": "Paris" } },
                    { "type": "tool_use", "id": "call_2", "name": "weather", "input": { "city": "Rome" } },
                ] },
                // Both results and the next question are one user turn, results first.
                { "role": "user", "content": [
                    { "type": "tool_result", "tool_use_id": "call_1", "content": "18C" },
                    { "type": "tool_result", "tool_use_id": "call_2", "content": "24C" },
                    { "type": "text", "text": "Which is warmer?" },
                ] },
            ],
            "tools": [{ "name": "weather", "description": "Current weather",
                "input_schema": { "type": "object", "properties": { "city": { "type": "string" } } } }],
            "tool_choice": { "type": "any", "disable_parallel_tool_use": true },
            "metadata": { "user_id": "u-42" },
        })
    );
}

#[test]
fn choices_limits_and_reasoning_map_to_their_anthropic_forms() {
    let cases = [
        (json!({ "tool_choice": "auto" }), json!({ "type": "auto" })),
        (json!({ "tool_choice": "none" }), json!({ "type": "none" })),
        (
            json!({ "tool_choice": { "type": "function", "function": { "name": "f" } } }),
            json!({ "type": "tool", "name": "f" }),
        ),
        (
            json!({ "parallel_tool_calls": false }),
            json!({ "type": "auto", "disable_parallel_tool_use": true }),
        ),
        (json!({}), Value::Null),
    ];
    for (patch, choice) in cases {
        let mut chat = json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }],
            "tools": [{ "type": "function", "function": { "name": "f" } }] });
        for (k, v) in patch.as_object().unwrap() {
            chat[k] = v.clone();
        }
        let body = to_anthropic(chat);
        assert_eq!(
            body.get("tool_choice").cloned().unwrap_or(Value::Null),
            choice,
            "{patch}"
        );
        // A tool without parameters gets an empty object schema (Anthropic requires one).
        assert_eq!(
            body["tools"][0]["input_schema"],
            json!({ "type": "object", "properties": {} })
        );
    }
    let thinking = to_anthropic(
        json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }],
        "reasoning_effort": "medium", "max_tokens": 1000 }),
    );
    assert_eq!(
        thinking["thinking"],
        json!({ "type": "enabled", "budget_tokens": 8192 })
    );
    assert_eq!(
        thinking["max_tokens"], 9192,
        "the budget comes on top of the answer's room"
    );
    let request = openai_chat::decode_request(&object(json!({ "model": "m",
        "messages": [{ "role": "user", "content": "x" }], "reasoning_effort": "high" })))
    .unwrap();
    assert_eq!(request.reasoning, Some(Effort::High));
}

#[test]
fn untranslatable_requests_name_the_field() {
    let cases = [
        (json!({ "messages": [] }), "messages"),
        (
            json!({ "messages": [{ "role": "function", "name": "f", "content": "x" }] }),
            "messages[0].role",
        ),
        (
            json!({ "messages": [{ "role": "tool", "content": "x" }] }),
            "messages[0].tool_call_id",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }], "tools": [{ "type": "custom", "custom": {} }] }),
            "tools[0].type",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }], "tool_choice": "sometimes" }),
            "tool_choice",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }], "stop": 5 }),
            "stop",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }], "reasoning_effort": "extreme" }),
            "reasoning_effort",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }], "store": true }),
            "store",
        ),
        (
            json!({ "messages": [{ "role": "user", "content": "x" }], "audio": { "voice": "alloy" } }),
            "audio",
        ),
    ];
    for (body, param) in cases {
        let mut body = object(body);
        body.insert("model".into(), json!("m"));
        let refusal = openai_chat::decode_request(&body).expect_err(param);
        assert_eq!(refusal.param, param);
    }
    // Reasoning on Anthropic fixes the sampling: a temperature is refused, 1 is fine.
    let thinking = |extra: Value| {
        let mut body = object(
            json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }], "reasoning_effort": "low" }),
        );
        body.extend(object(extra));
        super::request(
            crate::upstream::Ingress::ChatCompletions,
            &provider(),
            ProviderType::Anthropic,
            &body,
            "claude-x",
            false,
        )
    };
    assert_eq!(
        thinking(json!({ "temperature": 0.2 })).unwrap_err().param,
        "temperature"
    );
    assert_eq!(thinking(json!({ "top_p": 0.5 })).unwrap_err().param, "top_p");
    assert!(thinking(json!({ "temperature": 1.0, "top_p": 0.97 })).is_ok());
}

fn provider() -> ez_contract::routing::ProviderSnapshot {
    ez_contract::routing::ProviderSnapshot {
        provider_type: "anthropic".into(),
        base_url: "https://api.anthropic.com".into(),
        ..Default::default()
    }
}

#[test]
fn an_anthropic_answer_becomes_a_chat_completion() {
    let answer = json!({
        "id": "msg_9", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            { "type": "thinking", "thinking": "Paris is cooler.", "signature": "sig" },
            { "type": "text", "text": "Checking." },
            { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } },
        ],
        "stop_reason": "tool_use",
        "usage": { "input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5 },
    });
    let response = anthropic::decode_response(&answer).expect("an answer");
    assert_eq!(response.finish, Finish::ToolCalls);
    assert!(
        matches!(&response.parts[0], Part::Thinking { signature: Some(s), .. } if s.value == "sig" && s.family == super::Format::Messages)
    );
    let chat = openai_chat::encode_response(&response, 1_700_000_000);
    assert_eq!(
        chat,
        json!({
            "id": "chatcmpl-msg_9", "object": "chat.completion", "created": 1_700_000_000, "model": "claude-x",
            "choices": [{ "index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {
                "role": "assistant", "content": "Checking.", "reasoning_content": "Paris is cooler.",
                "tool_calls": [{ "id": "toolu_1", "type": "function",
                    "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } }],
            } }],
            "usage": { "prompt_tokens": 115, "completion_tokens": 20, "total_tokens": 135,
                "prompt_tokens_details": { "cached_tokens": 100 },
                "completion_tokens_details": { "reasoning_tokens": 0 } },
        })
    );
    let stops = [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ];
    for (anthropic_reason, chat_reason) in stops {
        let mut answer = answer.clone();
        answer["stop_reason"] = json!(anthropic_reason);
        let chat = openai_chat::encode_response(&anthropic::decode_response(&answer).unwrap(), 0);
        assert_eq!(chat["choices"][0]["finish_reason"], chat_reason);
    }
}

/// A recorded-shape Anthropic stream with text, then two tool calls with argument deltas.
fn tool_stream() -> Vec<(&'static str, Value)> {
    vec![
        (
            "message_start",
            json!({ "type": "message_start", "message": { "id": "msg_s", "model": "claude-x", "content": [], "usage": { "input_tokens": 30, "output_tokens": 1 } } }),
        ),
        (
            "content_block_start",
            json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
        ),
        ("ping", json!({ "type": "ping" })),
        (
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "Let me check." } }),
        ),
        (
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": 0 }),
        ),
        (
            "content_block_start",
            json!({ "type": "content_block_start", "index": 1, "content_block": { "type": "tool_use", "id": "toolu_a", "name": "weather", "input": {} } }),
        ),
        (
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta", "partial_json": "{\"city\":" } }),
        ),
        (
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 1, "delta": { "type": "input_json_delta", "partial_json": "\"Paris\"}" } }),
        ),
        (
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": 1 }),
        ),
        (
            "content_block_start",
            json!({ "type": "content_block_start", "index": 2, "content_block": { "type": "tool_use", "id": "toolu_b", "name": "weather", "input": {} } }),
        ),
        (
            "content_block_delta",
            json!({ "type": "content_block_delta", "index": 2, "delta": { "type": "input_json_delta", "partial_json": "{\"city\":\"Rome\"}" } }),
        ),
        (
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": 2 }),
        ),
        (
            "message_delta",
            json!({ "type": "message_delta", "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 57 } }),
        ),
        ("message_stop", json!({ "type": "message_stop" })),
    ]
}

#[test]
fn a_streamed_tool_call_keeps_its_indices_and_arguments() {
    let mut decoder = EventDecoder::default();
    let mut events = Vec::new();
    for (name, data) in tool_stream() {
        decoder.decode(name, &data.to_string(), &mut events);
    }
    assert!(decoder.ended());
    assert_eq!(
        events[1..],
        [
            Event::Text("Let me check.".into()),
            Event::ToolCallStart {
                index: 0,
                id: "toolu_a".into(),
                name: "weather".into()
            },
            Event::ToolArguments {
                index: 0,
                delta: "{\"city\":".into()
            },
            Event::ToolArguments {
                index: 0,
                delta: "\"Paris\"}".into()
            },
            Event::ToolCallStart {
                index: 1,
                id: "toolu_b".into(),
                name: "weather".into()
            },
            Event::ToolArguments {
                index: 1,
                delta: "{\"city\":\"Rome\"}".into()
            },
            Event::Finish(Finish::ToolCalls),
            Event::Usage(super::ir::Usage {
                input: 30,
                output: 57,
                ..Default::default()
            }),
            Event::End,
        ]
    );

    let mut encoder = ChunkEncoder::new(7, true);
    let mut out = Vec::new();
    for event in events {
        encoder.encode(event, &mut out);
    }
    let text = String::from_utf8(out).unwrap();
    let chunks: Vec<&str> = text.split("\n\n").filter(|c| !c.is_empty()).collect();
    assert_eq!(chunks.last(), Some(&"data: [DONE]"));
    let chunks: Vec<Value> = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str(c.strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let deltas: Vec<Value> = chunks.iter().map(|c| c["choices"][0]["delta"].clone()).collect();
    assert_eq!(
        deltas[2]["tool_calls"][0],
        json!({ "index": 0, "id": "toolu_a", "type": "function", "function": { "name": "weather", "arguments": "" } })
    );
    assert_eq!(
        deltas[4]["tool_calls"][0],
        json!({ "index": 0, "function": { "arguments": "\"Paris\"}" } })
    );
    assert_eq!(deltas[5]["tool_calls"][0]["index"], 1);
    assert_eq!(chunks[7]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[8]["usage"]["prompt_tokens"], 30);
    assert_eq!(chunks[8]["usage"]["completion_tokens"], 57);
}

#[test]
fn an_upstream_error_mid_stream_ends_it_without_done() {
    let mut decoder = EventDecoder::default();
    let mut events = Vec::new();
    let (name, start) = &tool_stream()[0];
    decoder.decode(name, &start.to_string(), &mut events);
    let error = json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } });
    decoder.decode("error", &error.to_string(), &mut events);
    let mut encoder = ChunkEncoder::new(0, true);
    let mut out = Vec::new();
    for event in events {
        encoder.encode(event, &mut out);
    }
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(
            "event: error\ndata: {\"error\":{\"code\":\"overloaded_error\",\"message\":\"Overloaded\""
        ),
        "{text}"
    );
    assert!(!text.contains("[DONE]"), "{text}");
}

#[test]
fn openais_own_models_get_max_completion_tokens() {
    let messages =
        object(json!({ "model": "m", "max_tokens": 300, "messages": [{ "role": "user", "content": "hi" }] }));
    let to = |t| {
        super::request(
            crate::upstream::Ingress::Messages,
            &provider(),
            t,
            &messages,
            "gpt-5",
            false,
        )
        .unwrap()
        .0
    };
    let openai = to(ProviderType::OpenAi);
    assert_eq!(
        (openai["max_completion_tokens"].as_u64(), openai.get("max_tokens")),
        (Some(300), None)
    );
    assert_eq!(to(ProviderType::Azure)["max_completion_tokens"], 300);
    let compatible = to(ProviderType::Compatible);
    assert_eq!(
        (
            compatible["max_tokens"].as_u64(),
            compatible.get("max_completion_tokens")
        ),
        (Some(300), None)
    );
}
