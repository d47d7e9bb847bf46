//! Reasoning signatures: each provider's signature goes back to that provider — through
//! clients of other formats, tagged `ez:<family>:` on the way — and never to another
//! provider, which would refuse it; Gemini 3's signed function calls, and the documented
//! validator-skipping signature for calls that come without one.

use serde_json::{Map, Value, json};

use super::ir::{Event, Part, Signature};
use super::sse::SseReader;
use super::{
    Format, StreamDecoder, StreamEncoder, anthropic, gemini, openai_chat, openai_responses as responses,
};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

fn events(decoder: &mut dyn StreamDecoder, stream: &str) -> Vec<Event> {
    let mut events = Vec::new();
    SseReader::default().feed_with(stream.as_bytes(), |name, data| {
        decoder.decode(name, data, &mut events)
    });
    events
}

#[test]
fn anthropic_thinking_reaches_a_responses_client_and_comes_back_signed() {
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm.\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCkYI\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":5}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let decoded = events(&mut anthropic::EventDecoder::default(), stream);
    assert!(decoded.contains(&Event::Signature(Signature::new(Format::Messages, "EqQBCkYI"))));
    let mut encoder = responses::EventEncoder::new(1);
    let mut out = Vec::new();
    for event in decoded {
        encoder.encode(event, &mut out);
    }
    let text = String::from_utf8(out).unwrap();
    let done = text
        .split("\n\n")
        .filter_map(|e| e.split_once("data: "))
        .map(|(_, d)| serde_json::from_str::<Value>(d).unwrap())
        .find(|d| d["type"] == "response.output_item.done" && d["item"]["type"] == "reasoning")
        .expect("a reasoning item");
    assert_eq!(done["item"]["encrypted_content"], "ez:anthropic:EqQBCkYI");

    // Sent back: Anthropic gets its own signature; OpenAI gets no reasoning item.
    let again = responses::decode_request(&object(json!({ "model": "m", "input": [
        { "role": "user", "content": "hi" },
        { "type": "reasoning", "summary": [{ "type": "summary_text", "text": "Hmm." }], "encrypted_content": "ez:anthropic:EqQBCkYI" },
        { "role": "assistant", "content": "Hello." },
        { "role": "user", "content": "again" },
    ] })))
    .unwrap();
    let to_anthropic = anthropic::encode_request(&again, "claude");
    assert_eq!(
        to_anthropic["messages"][1]["content"][0],
        json!({ "type": "thinking", "thinking": "Hmm.", "signature": "EqQBCkYI" })
    );
    let to_openai = responses::encode_request(&again, "gpt-5", false).unwrap();
    assert!(
        to_openai["input"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["type"] != "reasoning"),
        "{to_openai}"
    );
    let to_gemini = gemini::encode_request(&again, "gemini-2.5-pro").unwrap();
    assert!(!to_gemini.to_string().contains("EqQBCkYI"), "{to_gemini}");
}

#[test]
fn gemini_signed_calls_go_back_to_gemini_through_an_anthropic_client() {
    let answer = json!({ "candidates": [{ "content": { "role": "model", "parts": [
        { "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "CiQB0e2K" },
    ] }, "finishReason": "STOP" }], "modelVersion": "gemini-3-pro-preview" });
    let response = gemini::decode_response(&answer).unwrap();
    let for_claude = anthropic::encode_response(&response);
    assert_eq!(for_claude["content"][0]["type"], "thinking");
    assert_eq!(for_claude["content"][0]["signature"], "ez:gemini:CiQB0e2K");
    assert_eq!(for_claude["content"][1]["type"], "tool_use");

    // Claude Code sends the blocks back as it got them, with the call's result.
    let history = anthropic::decode_request(&object(json!({ "model": "m", "max_tokens": 100, "messages": [
        { "role": "user", "content": "Weather?" },
        { "role": "assistant", "content": for_claude["content"] },
        { "role": "user", "content": [{ "type": "tool_result", "tool_use_id": for_claude["content"][1]["id"], "content": "18C" }] },
    ] })))
    .unwrap();
    let to_gemini = gemini::encode_request(&history, "gemini-3-pro-preview").unwrap();
    assert_eq!(
        to_gemini["contents"][1]["parts"],
        json!([{ "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": "CiQB0e2K" }])
    );
    // Never to Anthropic: the block is dropped there.
    let to_anthropic = anthropic::encode_request(&history, "claude");
    assert_eq!(to_anthropic["messages"][1]["content"][0]["type"], "tool_use");
}

#[test]
fn a_gemini_client_keeps_its_signatures_and_gemini_3_calls_without_one_skip_validation() {
    let request = gemini::decode_request(
        &object(json!({ "contents": [
            { "role": "user", "parts": [{ "text": "Weather?" }] },
            { "role": "model", "parts": [{ "functionCall": { "name": "weather", "args": {} }, "thoughtSignature": "Sig1" }] },
            { "role": "user", "parts": [{ "functionResponse": { "name": "weather", "response": { "content": "18C" } } }] },
        ] })),
        false,
    )
    .unwrap();
    assert_eq!(
        request.messages[1].parts[0],
        Part::Thinking {
            text: String::new(),
            signature: Some(Signature::new(Format::Gemini, "Sig1"))
        }
    );
    let echoed = gemini::encode_request(&request, "gemini-3-flash").unwrap();
    assert_eq!(echoed["contents"][1]["parts"][0]["thoughtSignature"], "Sig1");

    // A Chat client keeps no signatures: Gemini 3 gets the documented skip signature on
    // each turn's first call; older models get none.
    let chat = openai_chat::decode_request(&object(json!({ "model": "m", "messages": [
        { "role": "user", "content": "Weather?" },
        { "role": "assistant", "content": null, "tool_calls": [
            { "id": "a", "type": "function", "function": { "name": "weather", "arguments": "{}" } },
            { "id": "b", "type": "function", "function": { "name": "weather", "arguments": "{}" } }] },
        { "role": "tool", "tool_call_id": "a", "content": "18C" },
        { "role": "tool", "tool_call_id": "b", "content": "19C" },
    ] })))
    .unwrap();
    let three = gemini::encode_request(&chat, "gemini-3-pro-preview").unwrap();
    let calls = &three["contents"][1]["parts"];
    assert_eq!(calls[0]["thoughtSignature"], "skip_thought_signature_validator");
    assert!(
        calls[1].get("thoughtSignature").is_none(),
        "only the first call of a turn is signed"
    );
    let older = gemini::encode_request(&chat, "gemini-2.5-flash").unwrap();
    assert!(!older.to_string().contains("thoughtSignature"));
}

#[test]
fn signatures_read_back_by_their_tag() {
    let anthropic_made = Signature::new(Format::Messages, "abc");
    assert_eq!(anthropic_made.shown_to(Format::Messages), "abc");
    assert_eq!(anthropic_made.shown_to(Format::Gemini), "ez:anthropic:abc");
    assert_eq!(
        Signature::read("ez:anthropic:abc", Format::Gemini),
        anthropic_made
    );
    assert_eq!(
        Signature::read("abc", Format::Gemini),
        Signature::new(Format::Gemini, "abc")
    );
    assert_eq!(anthropic_made.for_family(Format::Gemini), None);
}
