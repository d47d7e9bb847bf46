//! A mock Anthropic Messages upstream that checks every request against the API's
//! documented rules — the credential and version headers, `max_tokens`, roles that
//! alternate starting with the user, no `system` role inside `messages`, known block
//! types, every `tool_use` answered by a `tool_result` at the start of the next user turn
//! and no result without its call, tools with an object `input_schema` — and answers in
//! the recorded shapes of real answers (JSON, or the SSE event grammar with `ping`s).
//!
//! Answers: the conversation's last user turn holds tool results → a text answer built
//! from them; the request offers tools → a text block and a `tool_use` of the first tool
//! (`{"city": "Paris"}`); otherwise [`REPLY_PIECES`].

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const REPLY_PIECES: [&str; 3] = ["Hello", " from", " Claude."];
pub const INPUT_TOKENS: u64 = 21;
pub const OUTPUT_TOKENS: u64 = 7;
pub const TOOL_USE_ID: &str = "toolu_01A09q90qw90lq917835lq9";

/// What the mock received and whether it was valid: (body, the rule it broke).
pub type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;

#[derive(Clone)]
struct Mock {
    seen: Seen,
    key: String,
}

/// Serves `POST /v1/messages` for the credential `key`; returns its origin
/// (`http://127.0.0.1:PORT`, Anthropic's base URL has no `/v1`).
pub async fn start(key: &str, seen: Seen) -> String {
    let app = axum::Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .with_state(Mock {
            seen,
            key: key.to_owned(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    origin
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({ "type": "error", "error": { "type": kind, "message": message } });
    (status, Json(body)).into_response()
}

fn blocks(content: &Value) -> Vec<Value> {
    match content {
        Value::String(text) => vec![json!({ "type": "text", "text": text })],
        Value::Array(blocks) => blocks.clone(),
        _ => Vec::new(),
    }
}

/// The first rule `body` breaks, in Anthropic's words where it has them.
fn broken_rule(body: &Value) -> Option<String> {
    if !body["model"].is_string() {
        return Some("model: Field required".into());
    }
    if body["max_tokens"].as_u64().is_none_or(|n| n == 0) {
        return Some("max_tokens: Field required".into());
    }
    let messages = body["messages"].as_array().filter(|m| !m.is_empty());
    let Some(messages) = messages else {
        return Some("messages: at least one message is required".into());
    };
    if body["thinking"]["type"] == "enabled"
        && let Some(last) = messages.iter().rev().find(|m| m["role"] == "assistant")
    {
        let content = blocks(&last["content"]);
        let called = content.iter().any(|b| b["type"] == "tool_use");
        if called && content.first().is_none_or(|b| b["type"] != "thinking") {
            return Some(
                "messages: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block".into(),
            );
        }
    }
    let mut open_calls: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message["role"].as_str().unwrap_or_default();
        let expected = if i % 2 == 0 { "user" } else { "assistant" };
        if role == "system" {
            return Some(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
        if role != expected {
            return Some(format!(
                "messages: roles must alternate between \"user\" and \"assistant\", starting with \"user\" (messages.{i})"
            ));
        }
        let content = blocks(&message["content"]);
        if content.is_empty() {
            return Some(format!("messages.{i}: all messages must have non-empty content"));
        }
        let mut answered = Vec::new();
        let mut results_done = false;
        for block in &content {
            match (role, block["type"].as_str()) {
                (_, Some("text")) if block["text"].as_str().is_some_and(|t| !t.is_empty()) => {
                    results_done = true
                }
                (_, Some("text")) => {
                    return Some(format!("messages.{i}: text content blocks must be non-empty"));
                }
                ("user", Some("image")) => results_done = true,
                ("user", Some("tool_result")) => {
                    if results_done {
                        return Some(format!(
                            "messages.{i}: tool_result blocks must come first in the user turn"
                        ));
                    }
                    let id = block["tool_use_id"].as_str().unwrap_or_default().to_owned();
                    if !open_calls.contains(&id) {
                        return Some(format!(
                            "messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: {id}"
                        ));
                    }
                    answered.push(id);
                }
                ("assistant", Some("tool_use")) => {
                    if !block["input"].is_object() || !block["id"].is_string() {
                        return Some(format!("messages.{i}: tool_use needs an id and an object input"));
                    }
                }
                ("assistant", Some("thinking")) if block["signature"].is_string() => {}
                (_, other) => {
                    return Some(format!(
                        "messages.{i}: unexpected block type {other:?} in a {role} turn"
                    ));
                }
            }
        }
        if role == "user" {
            if let Some(missing) = open_calls.iter().find(|id| !answered.contains(id)) {
                return Some(format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {missing}"
                ));
            }
            open_calls.clear();
        } else {
            open_calls = content
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str().map(str::to_owned))
                .collect();
        }
    }
    if !open_calls.is_empty() {
        return Some("the conversation ends with unanswered tool_use blocks".into());
    }
    for (i, tool) in body["tools"].as_array().into_iter().flatten().enumerate() {
        if !tool["name"].is_string() || tool["input_schema"]["type"] != "object" {
            return Some(format!(
                "tools.{i}: a name and an object input_schema are required"
            ));
        }
    }
    if let Some(choice) = body.get("tool_choice")
        && !matches!(choice["type"].as_str(), Some("auto" | "any" | "tool" | "none"))
    {
        return Some("tool_choice.type: must be auto, any, tool or none".into());
    }
    if body["temperature"]
        .as_f64()
        .is_some_and(|t| !(0.0..=1.0).contains(&t))
    {
        return Some("temperature: must be between 0 and 1".into());
    }
    None
}

/// The answer's content blocks for this conversation.
fn answer(body: &Value) -> (Vec<Value>, &'static str) {
    let last = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    let results: Vec<String> = blocks(&last["content"])
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| match &b["content"] {
            Value::String(s) => s.clone(),
            other => blocks(other).iter().filter_map(|t| t["text"].as_str()).collect(),
        })
        .collect();
    if !results.is_empty() {
        let text = format!("It is {} in Paris.", results.join(", "));
        return (vec![json!({ "type": "text", "text": text })], "end_turn");
    }
    if let Some(tool) = body["tools"].as_array().and_then(|t| t.first()) {
        return (
            vec![
                json!({ "type": "text", "text": "Let me check." }),
                json!({ "type": "tool_use", "id": TOOL_USE_ID, "name": tool["name"], "input": { "city": "Paris" } }),
            ],
            "tool_use",
        );
    }
    (
        vec![json!({ "type": "text", "text": REPLY_PIECES.concat() })],
        "end_turn",
    )
}

/// `POST /v1/messages/count_tokens`: the conversation's rules (no `max_tokens`, no
/// generation settings), answered with [`INPUT_TOKENS`].
async fn count_tokens(State(mock): State<Mock>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let allowed = [
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "mcp_servers",
    ];
    let stray = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())).cloned());
    let rule = if header("x-api-key") != Some(mock.key.as_str()) {
        Some("invalid x-api-key".to_owned())
    } else if let Some(field) = stray {
        Some(format!("{field}: Extra inputs are not permitted"))
    } else {
        let mut as_generation = body.clone();
        as_generation["max_tokens"] = json!(1);
        broken_rule(&as_generation)
    };
    mock.seen.lock().unwrap().push((body.clone(), rule.clone()));
    match rule {
        Some(rule) if rule == "invalid x-api-key" => {
            error(StatusCode::UNAUTHORIZED, "authentication_error", &rule)
        }
        Some(rule) => error(StatusCode::BAD_REQUEST, "invalid_request_error", &rule),
        None => Json(json!({ "input_tokens": INPUT_TOKENS })).into_response(),
    }
}

async fn messages(State(mock): State<Mock>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let rule = if header("x-api-key") != Some(mock.key.as_str()) {
        Some("invalid x-api-key".to_owned())
    } else if header("anthropic-version").is_none() {
        Some("anthropic-version: header is required".to_owned())
    } else {
        broken_rule(&body)
    };
    mock.seen.lock().unwrap().push((body.clone(), rule.clone()));
    if let Some(rule) = rule {
        return match rule.as_str() {
            "invalid x-api-key" => error(StatusCode::UNAUTHORIZED, "authentication_error", &rule),
            _ => error(StatusCode::BAD_REQUEST, "invalid_request_error", &rule),
        };
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let (content, stop_reason) = answer(&body);
    if body["stream"] != json!(true) {
        return Json(json!({
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": { "input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0 }
        }))
        .into_response();
    }
    let mut events = vec![
        (
            "message_start",
            json!({ "type": "message_start", "message": {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": INPUT_TOKENS, "output_tokens": 1 } } }),
        ),
        ("ping", json!({ "type": "ping" })),
    ];
    for (index, block) in content.iter().enumerate() {
        let (start, deltas): (Value, Vec<Value>) = if block["type"] == "tool_use" {
            let input = block["input"].to_string();
            let (a, b) = input.split_at(input.len() / 2);
            (
                json!({ "type": "tool_use", "id": block["id"], "name": block["name"], "input": {} }),
                vec![
                    json!({ "type": "input_json_delta", "partial_json": a }),
                    json!({ "type": "input_json_delta", "partial_json": b }),
                ],
            )
        } else if block["text"] == REPLY_PIECES.concat() {
            let pieces = REPLY_PIECES
                .iter()
                .map(|p| json!({ "type": "text_delta", "text": p }))
                .collect();
            (json!({ "type": "text", "text": "" }), pieces)
        } else {
            (
                json!({ "type": "text", "text": "" }),
                vec![json!({ "type": "text_delta", "text": block["text"] })],
            )
        };
        events.push((
            "content_block_start",
            json!({ "type": "content_block_start", "index": index, "content_block": start }),
        ));
        for delta in deltas {
            events.push((
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            ));
        }
        events.push((
            "content_block_stop",
            json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    events.push(("message_delta", json!({ "type": "message_delta",
        "delta": { "stop_reason": stop_reason, "stop_sequence": null }, "usage": { "output_tokens": OUTPUT_TOKENS } })));
    events.push(("message_stop", json!({ "type": "message_stop" })));
    let chunks: Vec<Result<String, std::io::Error>> = events
        .into_iter()
        .map(|(name, data)| Ok(format!("event: {name}\ndata: {data}\n\n")))
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("a static response")
}
