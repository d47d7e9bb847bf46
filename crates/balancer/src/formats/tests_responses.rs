//! Table tests of the OpenAI Responses pieces: a Codex-style request decoded, refusals
//! naming the field, the request encoded for OpenAI and for the Codex backend, answers
//! and recorded stream events decoded, the client's stream grammar, and a Codex stream
//! collected into one answer for a client that did not stream.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::body::TranslatedBody;
use super::ir::{Effort, Event, Finish, Image, Part, Role, ToolChoice, Usage};
use super::{Format, StreamDecoder, StreamEncoder, Translation, openai_responses as responses};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

#[test]
fn a_responses_request_becomes_the_ir() {
    let request = responses::decode_request(&object(json!({
        "model": "gpt-5",
        "instructions": "Be brief.",
        "input": [
            { "role": "developer", "content": "Use tools." },
            { "type": "message", "role": "user", "content": [
                { "type": "input_text", "text": "Weather in Paris?" },
                { "type": "input_image", "image_url": "data:image/png;base64,iVBOR" },
            ] },
            { "type": "reasoning", "id": "rs_1", "summary": [{ "type": "summary_text", "text": "Look it up." }], "encrypted_content": "gAAA" },
            { "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}" },
            { "type": "function_call_output", "call_id": "call_1", "output": "18C" },
            { "role": "user", "content": "Thanks" },
        ],
        "tools": [{ "type": "function", "name": "weather", "parameters": { "type": "object" } }],
        "tool_choice": { "type": "function", "name": "weather" },
        "parallel_tool_calls": false,
        "reasoning": { "effort": "high", "summary": "auto" },
        "max_output_tokens": 500,
        "store": false,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "session-1",
        "stream": true,
    })))
    .expect("translatable");
    assert_eq!(request.system, ["Be brief.", "Use tools."]);
    assert_eq!(request.messages.len(), 3);
    assert_eq!(request.messages[0].role, Role::User);
    assert_eq!(
        request.messages[0].parts[1],
        Part::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: "iVBOR".into()
        })
    );
    assert_eq!(
        request.messages[1].parts,
        [
            Part::Thinking {
                text: "Look it up.".into(),
                signature: Some(super::ir::Signature::new(Format::Responses, "gAAA"))
            },
            Part::ToolCall {
                id: "call_1".into(),
                name: "weather".into(),
                arguments: json!({ "city": "Paris" })
            },
        ]
    );
    assert_eq!(
        request.messages[2].parts,
        [
            Part::ToolResult {
                call_id: "call_1".into(),
                content: "18C".into(),
                is_error: false
            },
            Part::Text("Thanks".into()),
        ]
    );
    assert_eq!(request.tool_choice, Some(ToolChoice::Named("weather".into())));
    assert!(!request.parallel_tool_calls);
    assert_eq!(
        (request.reasoning, request.max_tokens, request.stream),
        (Some(Effort::High), Some(500), true)
    );
}

#[test]
fn what_the_ir_cannot_carry_is_refused_by_name() {
    let cases = [
        (
            json!({ "previous_response_id": "resp_1" }),
            "previous_response_id",
        ),
        (json!({ "store": true }), "store"),
        (json!({ "tools": [{ "type": "web_search" }] }), "tools[0].type"),
        (
            json!({ "text": { "format": { "type": "json_schema", "schema": {} } } }),
            "text.format.name",
        ),
        (
            json!({ "include": ["message.output_text.logprobs"] }),
            "include[0]",
        ),
        (json!({ "background": true }), "background"),
        (
            json!({ "input": [{ "role": "user", "content": [{ "type": "input_file", "file_id": "f" }] }] }),
            "input[0].content[0]",
        ),
        (
            json!({ "input": [{ "type": "item_reference", "id": "msg_1" }] }),
            "input[0].type",
        ),
        (
            json!({ "input": [{ "type": "function_call", "call_id": "c", "name": "f", "arguments": "{oops" }] }),
            "input[0].arguments",
        ),
    ];
    for (extra, param) in cases {
        let mut document = object(json!({ "model": "m", "input": "hi" }));
        document.extend(object(extra));
        let refusal = responses::decode_request(&document).expect_err(param);
        assert_eq!(refusal.param, param);
    }
    // Defaults mean nothing: accepted.
    let neutral = object(
        json!({ "model": "m", "input": "hi", "store": false, "truncation": "disabled",
        "previous_response_id": null, "text": { "format": { "type": "text" } }, "metadata": {} }),
    );
    assert!(responses::decode_request(&neutral).is_ok());
}

fn sample() -> super::ir::Request {
    responses::decode_request(&object(json!({
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            { "role": "user", "content": "Weather?" },
            { "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}" },
            { "type": "function_call_output", "call_id": "call_1", "output": "sunny" },
        ],
        "max_output_tokens": 300,
    })))
    .expect("translatable")
}

#[test]
fn requests_are_encoded_for_openai_and_for_the_codex_backend() {
    let platform = responses::encode_request(&sample(), "gpt-5", false).unwrap();
    assert_eq!(platform["max_output_tokens"], 300);
    assert_eq!(
        (&platform["stream"], &platform["store"]),
        (&json!(false), &json!(false))
    );
    assert_eq!(
        platform["input"],
        json!([
            { "type": "message", "role": "user", "content": [{ "type": "input_text", "text": "Weather?" }] },
            { "type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{}" },
            { "type": "function_call_output", "call_id": "call_1", "output": "sunny" },
        ])
    );
    let codex = responses::encode_request(&sample(), "gpt-5-codex", true).unwrap();
    assert_eq!((&codex["stream"], &codex["store"]), (&json!(true), &json!(false)));
    assert_eq!(codex["instructions"], "Be brief.");
    assert!(
        codex.get("max_output_tokens").is_none(),
        "the Codex backend refuses a cap"
    );
    let mut hot = sample();
    hot.temperature = Some(0.2);
    assert_eq!(
        responses::encode_request(&hot, "m", true).unwrap_err().param,
        "temperature"
    );
    let mut stops = sample();
    stops.stop = vec!["END".into()];
    assert_eq!(
        responses::encode_request(&stops, "m", false).unwrap_err().param,
        "stop"
    );
    let mut bare = sample();
    bare.system.clear();
    assert_eq!(
        responses::encode_request(&bare, "m", true).unwrap()["instructions"],
        ""
    );
}

#[test]
fn answers_and_errors_are_decoded() {
    let answer = json!({
        "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5",
        "output": [
            { "type": "reasoning", "id": "rs_1", "summary": [{ "type": "summary_text", "text": "Think." }], "encrypted_content": "gAAA" },
            { "type": "message", "role": "assistant", "content": [{ "type": "output_text", "text": "Calling.", "annotations": [] }] },
            { "type": "function_call", "call_id": "call_9", "name": "weather", "arguments": "{\"city\":\"Paris\"}" },
        ],
        "usage": { "input_tokens": 19, "input_tokens_details": { "cached_tokens": 4 }, "output_tokens": 6,
            "output_tokens_details": { "reasoning_tokens": 2 }, "total_tokens": 25 },
    });
    let response = responses::decode_response(&answer).unwrap();
    assert_eq!(response.finish, Finish::ToolCalls);
    assert_eq!(
        response.usage,
        Usage {
            input: 15,
            output: 6,
            cache_read: 4,
            cache_write: 0,
            reasoning: 2
        }
    );
    assert_eq!(response.parts.len(), 3);
    let mut cut = answer.clone();
    cut["status"] = "incomplete".into();
    cut["incomplete_details"] = json!({ "reason": "max_output_tokens" });
    assert_eq!(responses::decode_response(&cut).unwrap().finish, Finish::Length);
    assert_eq!(
        responses::decode_error(&json!({ "detail": "Stream must be set to true" })),
        Some(("upstream_error".into(), "Stream must be set to true".into()))
    );
    assert_eq!(
        responses::decode_error(
            &json!({ "error": { "message": "slow down", "type": "requests", "code": "rate_limit_exceeded" } })
        ),
        Some(("rate_limit_exceeded".into(), "slow down".into()))
    );
    // Encoding the IR answer gives the client the same items back.
    let encoded = responses::encode_response(&response, 7);
    assert_eq!(encoded["output"][2]["call_id"], "call_9");
    assert_eq!(encoded["output"][1]["content"][0]["text"], "Calling.");
    assert_eq!(encoded["usage"]["input_tokens"], 19);
    assert_eq!(responses::decode_response(&encoded).unwrap(), response);
}

/// A recorded stream: reasoning, text, one function call, completion.
const STREAM: &str = concat!(
    "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_7\",\"object\":\"response\",\"model\":\"gpt-5\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
    "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"id\":\"rs_1\",\"type\":\"reasoning\",\"summary\":[]}}\n\n",
    "event: response.reasoning_summary_text.delta\ndata: {\"type\":\"response.reasoning_summary_text.delta\",\"sequence_number\":2,\"item_id\":\"rs_1\",\"output_index\":0,\"summary_index\":0,\"delta\":\"Hmm.\"}\n\n",
    "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":3,\"output_index\":1,\"item\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[]}}\n\n",
    "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":4,\"item_id\":\"msg_1\",\"output_index\":1,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
    "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":5,\"output_index\":2,\"item\":{\"id\":\"fc_1\",\"type\":\"function_call\",\"call_id\":\"call_1\",\"name\":\"weather\",\"arguments\":\"\"}}\n\n",
    "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":6,\"item_id\":\"fc_1\",\"output_index\":2,\"delta\":\"{\\\"city\\\":\"}\n\n",
    "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":7,\"item_id\":\"fc_1\",\"output_index\":2,\"delta\":\"\\\"Paris\\\"}\"}\n\n",
    "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":8,\"response\":{\"id\":\"resp_7\",\"object\":\"response\",\"model\":\"gpt-5\",\"status\":\"completed\",\"output\":[],\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":0},\"output_tokens\":5,\"output_tokens_details\":{\"reasoning_tokens\":1}}}}\n\n",
);

fn decode_stream(text: &str) -> Vec<Event> {
    let mut decoder = responses::EventDecoder::default();
    let mut events = Vec::new();
    let mut reader = super::sse::SseReader::default();
    reader.feed_with(text.as_bytes(), |name, data| {
        decoder.decode(name, data, &mut events)
    });
    assert!(decoder.ended());
    events
}

#[test]
fn a_recorded_stream_is_decoded_into_events() {
    let events = decode_stream(STREAM);
    assert_eq!(
        events,
        [
            Event::Start {
                id: "resp_7".into(),
                model: "gpt-5".into()
            },
            Event::Thinking("Hmm.".into()),
            Event::Text("Hi".into()),
            Event::ToolCallStart {
                index: 0,
                id: "call_1".into(),
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
            Event::Finish(Finish::ToolCalls),
            Event::Usage(Usage {
                input: 10,
                output: 5,
                cache_read: 0,
                cache_write: 0,
                reasoning: 1
            }),
            Event::End,
        ]
    );
}

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
fn the_client_stream_follows_the_responses_grammar() {
    let mut encoder = responses::EventEncoder::new(5);
    let mut out = Vec::new();
    for event in decode_stream(STREAM) {
        encoder.encode(event, &mut out);
    }
    let text = String::from_utf8(out).unwrap();
    let events = parse_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.reasoning_summary_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (k, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], k, "sequence numbers count every event");
    }
    let done = &events.last().unwrap().1["response"];
    assert_eq!(done["output"][1]["content"][0]["text"], "Hi");
    assert_eq!(done["output"][2]["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(done["output"][2]["status"], "completed");
    assert_eq!(done["usage"]["output_tokens_details"]["reasoning_tokens"], 1);
    // The client's stream read back gives the same events.
    assert_eq!(decode_stream(&text), decode_stream(STREAM));
}

#[test]
fn an_upstream_error_mid_stream_ends_the_clients_stream_with_an_error_event() {
    let mut encoder = responses::EventEncoder::new(5);
    let mut out = Vec::new();
    for event in [
        Event::Start {
            id: "x".into(),
            model: "m".into(),
        },
        Event::Text("par".into()),
        Event::Error {
            code: "upstream_stream_error".into(),
            message: "cut".into(),
        },
        Event::End,
    ] {
        encoder.encode(event, &mut out);
    }
    let events = parse_events(&String::from_utf8(out).unwrap());
    let (name, last) = events.last().unwrap();
    assert_eq!(
        (name.as_str(), &last["code"]),
        ("error", &json!("upstream_stream_error"))
    );
    assert!(events.iter().all(|(n, _)| n != "response.completed"));
}

async fn collect(stream: &'static str, client: Format) -> Value {
    let chunks: Vec<Result<Bytes, std::io::Error>> = stream
        .as_bytes()
        .chunks(37)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let translation = Translation {
        client,
        upstream: Format::Responses,
        stream: false,
        upstream_stream: true,
        include_usage: false,
        count: false,
    };
    let body = TranslatedBody::new(futures_util::stream::iter(chunks), 200, translation, 9);
    let parts: Vec<Bytes> = body.map(|c| c.unwrap()).collect().await;
    serde_json::from_slice(&parts.concat()).expect("one JSON answer")
}

#[tokio::test]
async fn a_codex_stream_is_collected_for_a_client_that_wanted_one_answer() {
    let chat = collect(STREAM, Format::Chat).await;
    let message = &chat["choices"][0]["message"];
    assert_eq!(message["content"], "Hi");
    assert_eq!(message["reasoning_content"], "Hmm.");
    assert_eq!(
        message["tool_calls"][0]["function"]["arguments"],
        "{\"city\":\"Paris\"}"
    );
    assert_eq!(chat["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chat["usage"]["completion_tokens"], 5);
    let anthropic = collect(STREAM, Format::Messages).await;
    assert_eq!(anthropic["stop_reason"], "tool_use");
    assert_eq!(anthropic["content"][2]["input"], json!({ "city": "Paris" }));
    // A stream that stops early is an error in the client's shape, not half an answer.
    let cut = collect(&STREAM[..700], Format::Messages).await;
    assert_eq!(cut["type"], "error");
}

/// JSON output: each format's way of asking, carried to each target that can answer in
/// JSON; Anthropic cannot, and the client's own field is named.
#[test]
fn json_output_reaches_every_target_that_has_it() {
    use super::{anthropic, gemini, openai_chat};
    let schema =
        json!({ "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] });
    let chat = openai_chat::decode_request(&object(json!({
        "model": "m", "messages": [{ "role": "user", "content": "Where?" }],
        "response_format": { "type": "json_schema", "json_schema": { "name": "place", "schema": schema, "strict": true } },
    })))
    .unwrap();
    let to_gemini = gemini::encode_request(&chat, "gemini-2.5-flash").unwrap();
    assert_eq!(
        to_gemini["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(to_gemini["generationConfig"]["responseJsonSchema"], schema);
    let to_responses = responses::encode_request(&chat, "gpt-5", false).unwrap();
    assert_eq!(
        to_responses["text"]["format"],
        json!({ "type": "json_schema", "name": "place", "schema": schema, "strict": true })
    );
    assert_eq!(anthropic::refusals(&chat).unwrap_err().param, "response_format");

    // Gemini's schema (types in capitals) becomes JSON Schema for OpenAI.
    let from_gemini = gemini::decode_request(
        &object(
            json!({ "contents": [{ "role": "user", "parts": [{ "text": "Where?" }] }],
            "generationConfig": { "responseMimeType": "application/json",
                "responseSchema": { "type": "OBJECT", "properties": { "city": { "type": "STRING" } } } } }),
        ),
        false,
    )
    .unwrap();
    let to_chat = openai_chat::encode_request(&from_gemini, "gpt-x");
    assert_eq!(to_chat["response_format"]["type"], "json_schema");
    assert_eq!(
        to_chat["response_format"]["json_schema"]["schema"],
        json!({ "type": "object", "properties": { "city": { "type": "string" } } })
    );
    assert_eq!(
        anthropic::refusals(&from_gemini).unwrap_err().param,
        "generationConfig.responseMimeType"
    );

    // Responses' JSON mode becomes Chat's.
    let from_responses = responses::decode_request(&object(json!({
        "model": "m", "input": "Where?", "text": { "format": { "type": "json_object" } } })))
    .unwrap();
    assert_eq!(
        openai_chat::encode_request(&from_responses, "gpt-x")["response_format"],
        json!({ "type": "json_object" })
    );
    assert_eq!(
        anthropic::refusals(&from_responses).unwrap_err().param,
        "text.format"
    );
}
