//! A mock OpenAI Responses API upstream — the platform's `POST /v1/responses`, or the
//! ChatGPT backend behind Codex subscriptions (`POST /backend-api/codex/responses`) — that
//! checks every request against the API's documented rules: the bearer key, a `model`, an
//! `input` that is a string or a non-empty list of known items (messages with a known role
//! sending the part types that role may send, `function_call`s whose `arguments` are JSON,
//! every `function_call_output` answering an earlier call and every call answered,
//! `reasoning` items with a `summary`), `function` tools with a name and object
//! `parameters`, a `tool_choice` naming an offered tool, `max_output_tokens` of at least 16,
//! and no `previous_response_id` (this mock stores nothing). The Codex flavour adds the
//! backend's own rules — `stream: true`, `store: false`, `instructions` required, no
//! `max_output_tokens`, `temperature` or `top_p` — refused in its `{"detail": …}` shape.
//!
//! Answers, in the recorded shapes of real ones (JSON, or the SSE event grammar numbered by
//! `sequence_number`, without a `[DONE]` line): the input ends with function outputs → a
//! text built from them; the request offers tools → a `function_call` of the first tool
//! (`{"city":"Paris"}`), after a `reasoning` item when reasoning was asked for; otherwise
//! [`REPLY_PIECES`].

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::openai_rules::{Rule, invalid_type, invalid_value, missing, need, need_string};

pub const REPLY_PIECES: [&str; 3] = ["Hello", " from", " Codex."];
pub const INPUT_TOKENS: u64 = 19;
pub const CACHED_TOKENS: u64 = 4;
pub const OUTPUT_TOKENS: u64 = 6;
pub const REASONING_TOKENS: u64 = 2;
pub const CALL_ID: &str = "call_4XHzMoP4bAzUVaYKsJv2P9Qe";

const RESPONSE_ID: &str = "resp_68af4030592c8193b3a3d2e0e1a8e4a40a3e8b1a2c9d7f31";
const MESSAGE_ID: &str = "msg_68af40310f3c8193a5d1c7e2b4f6a8c00a3e8b1a2c9d7f31";
const FUNCTION_CALL_ID: &str = "fc_68af4031a2e48193b7c5e9d1f3a2b4c60a3e8b1a2c9d7f31";
const REASONING_ID: &str = "rs_68af4030b8f08193a1b2c3d4e5f6a7b80a3e8b1a2c9d7f31";
const ARGUMENTS: &str = r#"{"city":"Paris"}"#;
const SUMMARY: &str = "**Checking the weather**\n\nThe user asks about Paris, so I call the tool.";

/// What the mock received and whether it was valid: (body, the rule it broke).
pub type Seen = Arc<Mutex<Vec<(Value, Option<String>)>>>;

/// Which upstream the mock plays: OpenAI's platform API or the ChatGPT backend of Codex.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Flavour {
    Platform,
    Codex,
}

#[derive(Clone)]
struct Mock {
    seen: Seen,
    key: String,
    flavour: Flavour,
}

/// Serves the flavour's endpoint for the credential `key`; returns the base URL a
/// provider group would be configured with: Platform → `http://127.0.0.1:PORT/v1`
/// (`POST /v1/responses`), Codex → `http://127.0.0.1:PORT/backend-api/codex`
/// (`POST /backend-api/codex/responses`).
pub async fn start(key: &str, flavour: Flavour, seen: Seen) -> String {
    let base = match flavour {
        Flavour::Platform => "/v1",
        Flavour::Codex => "/backend-api/codex",
    };
    let app = axum::Router::new()
        .route(&format!("{base}/responses"), post(responses))
        .with_state(Mock {
            seen,
            key: key.to_owned(),
            flavour,
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://{}{base}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    origin
}

/// The rules the requests broke, one per broken request.
pub fn broken(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, rule)| rule.clone())
        .collect()
}

/// The first rule `body` breaks (the key aside), in the words of the flavour's upstream, as
/// [`Seen`] records it: lets a test check a body without sending it.
pub fn broken_rule(body: &Value, flavour: Flavour) -> Option<String> {
    check(body, flavour).err().map(|rule| rule.message)
}

/// The Codex backend's rules (answered as `{"detail": …}`), then the API's.
fn check(body: &Value, flavour: Flavour) -> Result<(), Rule> {
    if let Some(message) = codex_rule(body, flavour) {
        return Err(Rule {
            message,
            param: None,
            code: None,
            detail: true,
        });
    }
    api_rule(body)
}

/// The ChatGPT backend's own rules, checked before the API's (Codex flavour only).
fn codex_rule(body: &Value, flavour: Flavour) -> Option<String> {
    if flavour != Flavour::Codex {
        return None;
    }
    if body["stream"] != true {
        return Some("Stream must be set to true".into());
    }
    if body["store"] != false {
        return Some("Store must be set to false".into());
    }
    if !body["instructions"].is_string() {
        return Some("Instructions are required".into());
    }
    ["max_output_tokens", "temperature", "top_p"]
        .into_iter()
        .find(|key| body.get(key).is_some())
        .map(|key| format!("Unsupported parameter: {key}"))
}

/// The Responses API's rules for a request body.
fn api_rule(body: &Value) -> Result<(), Rule> {
    if need_string(body, "model", "")?.is_empty() {
        let message = "Invalid 'model': empty string. Expected a string with minimum length 1, \
                       but got an empty string instead.";
        return Err(Rule::new(message, "model", "empty_string"));
    }
    match &body["input"] {
        Value::String(_) => {}
        Value::Array(items) if items.is_empty() => {
            let message = "Invalid 'input': empty array. Expected an array with minimum length 1, \
                           but got an empty array instead.";
            return Err(Rule::new(message, "input", "empty_array"));
        }
        Value::Array(items) => check_input(items)?,
        Value::Null => return Err(missing("input")),
        other => {
            let expected = "one of a string or array of input items";
            return Err(invalid_type("input", expected, other));
        }
    }
    if !matches!(body["instructions"], Value::Null | Value::String(_)) {
        return Err(invalid_type("instructions", "a string", &body["instructions"]));
    }
    if let Some(id) = body["previous_response_id"].as_str() {
        let message = format!("Previous response with id '{id}' not found.");
        let code = "previous_response_not_found";
        return Err(Rule::new(message, "previous_response_id", code));
    }
    check_tools(body)?;
    match &body["max_output_tokens"] {
        Value::Null => Ok(()),
        Value::Number(n) if n.as_u64().is_some_and(|n| n >= 16) => Ok(()),
        Value::Number(n) if !n.is_f64() => {
            let message = format!(
                "Invalid 'max_output_tokens': integer below minimum value. \
                 Expected a value >= 16, but got {n} instead."
            );
            Err(Rule::new(message, "max_output_tokens", "integer_below_min_value"))
        }
        other => Err(invalid_type("max_output_tokens", "an integer", other)),
    }
}

/// The input items: known types, and function calls and their outputs paired.
fn check_input(items: &[Value]) -> Result<(), Rule> {
    let mut calls: Vec<&str> = Vec::new();
    let mut answered: Vec<&str> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{i}].");
        match item["type"].as_str() {
            None | Some("message") => check_message(item, &at)?,
            Some("function_call") => {
                let id = need_string(item, "call_id", &at)?;
                need_string(item, "name", &at)?;
                let arguments = need_string(item, "arguments", &at)?;
                if serde_json::from_str::<Value>(arguments).is_err() {
                    let message =
                        format!("Invalid 'input[{i}].arguments': the arguments must be valid JSON.");
                    return Err(Rule::new(message, &format!("{at}arguments"), "invalid_value"));
                }
                calls.push(id);
            }
            Some("function_call_output") => {
                let id = need_string(item, "call_id", &at)?;
                if !calls.contains(&id) {
                    let message = format!("No tool call found for function call output with call_id {id}.");
                    return Err(Rule::new(message, "input", ""));
                }
                let expected = "one of a string or array of input content parts";
                need(item, "output", &at, expected, |o| o.is_string() || o.is_array())?;
                answered.push(id);
            }
            Some("reasoning") => need(item, "summary", &at, "an array", Value::is_array)?,
            Some(other) => {
                let known = ["message", "function_call", "function_call_output", "reasoning"];
                return Err(invalid_value(&format!("{at}type"), other, &known));
            }
        }
    }
    match calls.iter().find(|id| !answered.contains(id)) {
        Some(id) => {
            let message = format!("No tool output found for function call {id}.");
            Err(Rule::new(message, "input", ""))
        }
        None => Ok(()),
    }
}

/// A message item: a known role, and content parts that role may send.
fn check_message(item: &Value, at: &str) -> Result<(), Rule> {
    let allowed: &[&str] = match need_string(item, "role", at)? {
        "user" | "system" | "developer" => &["input_text", "input_image", "input_file"],
        "assistant" => &["output_text", "refusal"],
        role => {
            let roles = ["assistant", "system", "developer", "user"];
            return Err(invalid_value(&format!("{at}role"), role, &roles));
        }
    };
    let expected = "one of a string or array of content parts";
    need(item, "content", at, expected, |c| c.is_string() || c.is_array())?;
    for (j, part) in item["content"].as_array().into_iter().flatten().enumerate() {
        let at = format!("{at}content[{j}].");
        match need_string(part, "type", &at)? {
            kind if !allowed.contains(&kind) => {
                return Err(invalid_value(&format!("{at}type"), kind, allowed));
            }
            "input_text" | "output_text" => {
                need_string(part, "text", &at)?;
            }
            "refusal" => {
                need_string(part, "refusal", &at)?;
            }
            "input_image" if !part["image_url"].is_string() && !part["file_id"].is_string() => {
                return Err(missing(&format!("{at}image_url")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `tools` are named functions with object parameters; `tool_choice` names one of them.
fn check_tools(body: &Value) -> Result<(), Rule> {
    if !matches!(body["tools"], Value::Null | Value::Array(_)) {
        return Err(invalid_type("tools", "an array", &body["tools"]));
    }
    let mut names = Vec::new();
    for (i, tool) in body["tools"].as_array().into_iter().flatten().enumerate() {
        let at = format!("tools[{i}].");
        let kind = need_string(tool, "type", &at)?;
        if kind != "function" {
            return Err(invalid_value(&format!("{at}type"), kind, &["function"]));
        }
        names.push(need_string(tool, "name", &at)?);
        if !matches!(tool["parameters"], Value::Null | Value::Object(_)) {
            let param = format!("{at}parameters");
            return Err(invalid_type(&param, "an object", &tool["parameters"]));
        }
    }
    let choice = &body["tool_choice"];
    match choice {
        Value::Null => Ok(()),
        Value::String(mode) if ["auto", "none", "required"].contains(&mode.as_str()) => Ok(()),
        Value::String(mode) => Err(invalid_value("tool_choice", mode, &["none", "auto", "required"])),
        Value::Object(_) if choice["type"] == "function" => {
            let name = need_string(choice, "name", "tool_choice.")?;
            if names.contains(&name) {
                return Ok(());
            }
            let message = format!("Tool choice '{name}' not found in 'tools' parameter.");
            Err(Rule::new(message, "tool_choice", ""))
        }
        _ => {
            let kind = choice["type"].as_str().unwrap_or_default();
            Err(invalid_value("tool_choice.type", kind, &["function"]))
        }
    }
}

/// The text of a function call's output: a string, or the texts of its parts.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(text) => text.clone(),
        parts => parts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["text"].as_str())
            .collect(),
    }
}

/// The answer's output items (completed) for this request.
fn output(body: &Value) -> Vec<Value> {
    let items = body["input"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut results: Vec<String> = items
        .iter()
        .rev()
        .take_while(|item| item["type"] == "function_call_output")
        .map(|item| output_text(&item["output"]))
        .collect();
    results.reverse();
    let message = |text: String| {
        json!({ "id": MESSAGE_ID, "type": "message", "status": "completed", "role": "assistant",
            "content": [{ "type": "output_text", "text": text, "annotations": [] }] })
    };
    if !results.is_empty() {
        return vec![message(format!("Result: {}", results.join(", ")))];
    }
    let Some(tool) = body["tools"].as_array().and_then(|t| t.first()) else {
        return vec![message(REPLY_PIECES.concat())];
    };
    let mut output = Vec::new();
    if !body["reasoning"].is_null() {
        output.push(json!({ "id": REASONING_ID, "type": "reasoning",
            "summary": [{ "type": "summary_text", "text": SUMMARY }] }));
    }
    let call = json!({ "id": FUNCTION_CALL_ID, "type": "function_call", "status": "completed",
        "call_id": CALL_ID, "name": tool["name"], "arguments": ARGUMENTS });
    output.push(call);
    output
}

/// The whole response object for `body`, as the non-streamed answer and `response.completed`.
/// A `max_output_tokens` under [`OUTPUT_TOKENS`] makes it `incomplete`; the server never gets
/// there (its rules want at least 16), only direct callers do.
fn answer(body: &Value) -> Value {
    let max = body["max_output_tokens"].as_u64();
    let incomplete = max.is_some_and(|n| n < OUTPUT_TOKENS);
    let mut output = output(body);
    for item in output.iter_mut().filter(|item| item.get("status").is_some()) {
        if incomplete {
            item["status"] = json!("incomplete");
        }
    }
    let or = |key: &str, default: Value| body.get(key).filter(|v| !v.is_null()).cloned().unwrap_or(default);
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "id": RESPONSE_ID, "object": "response", "created_at": created_at,
        "status": if incomplete { "incomplete" } else { "completed" }, "error": null,
        "incomplete_details": if incomplete { json!({ "reason": "max_output_tokens" }) } else { json!(null) },
        "instructions": body["instructions"], "max_output_tokens": body["max_output_tokens"],
        "model": body["model"], "output": output,
        "parallel_tool_calls": or("parallel_tool_calls", json!(true)), "previous_response_id": null,
        "reasoning": { "effort": body["reasoning"]["effort"], "summary": body["reasoning"]["summary"] },
        "store": or("store", json!(true)), "temperature": or("temperature", json!(1.0)),
        "text": or("text", json!({ "format": { "type": "text" } })),
        "tool_choice": or("tool_choice", json!("auto")), "tools": or("tools", json!([])),
        "top_p": or("top_p", json!(1.0)), "truncation": or("truncation", json!("disabled")),
        "usage": { "input_tokens": INPUT_TOKENS, "input_tokens_details": { "cached_tokens": CACHED_TOKENS },
            "output_tokens": OUTPUT_TOKENS, "output_tokens_details": { "reasoning_tokens": REASONING_TOKENS },
            "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS },
        "user": body["user"], "metadata": or("metadata", json!({})),
    })
}

/// An event of type `response.{kind}` with the fields of `base` and of `fields`.
fn event(kind: &str, base: &Value, fields: Value) -> Value {
    let mut event = base.clone();
    event["type"] = json!(format!("response.{kind}"));
    if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), fields) {
        event.extend(fields);
    }
    event
}

/// The stream of the finished response `done`, numbered by `sequence_number`.
fn events(done: &Value) -> Vec<Value> {
    let mut snapshot = done.clone();
    snapshot["status"] = json!("in_progress");
    snapshot["output"] = json!([]);
    snapshot["usage"] = Value::Null;
    snapshot["incomplete_details"] = Value::Null;
    let snapshot = json!({ "response": snapshot });
    let mut events = vec![
        event("created", &snapshot, json!({})),
        event("in_progress", &snapshot, json!({})),
    ];
    for (index, item) in done["output"].as_array().into_iter().flatten().enumerate() {
        events.extend(item_events(index, item));
    }
    let last = if done["status"] == "incomplete" {
        "incomplete"
    } else {
        "completed"
    };
    events.push(event(last, &json!({ "response": done }), json!({})));
    for (number, event) in events.iter_mut().enumerate() {
        event["sequence_number"] = json!(number);
    }
    events
}

/// The events of the output item `item` at `index`, from `added` to `done`.
fn item_events(index: usize, item: &Value) -> Vec<Value> {
    let mut added = item.clone();
    if added.get("status").is_some() {
        added["status"] = json!("in_progress");
    }
    let at = json!({ "item_id": item["id"], "output_index": index });
    let middle = match item["type"].as_str() {
        Some("message") => {
            added["content"] = json!([]);
            let at = json!({ "item_id": item["id"], "output_index": index, "content_index": 0 });
            text_events(&at, item)
        }
        Some("function_call") => {
            added["arguments"] = json!("");
            let arguments = item["arguments"].as_str().unwrap_or_default();
            let (head, tail) = arguments.split_at(arguments.len() / 2);
            let kind = "function_call_arguments";
            vec![
                event(&format!("{kind}.delta"), &at, json!({ "delta": head })),
                event(&format!("{kind}.delta"), &at, json!({ "delta": tail })),
                event(&format!("{kind}.done"), &at, json!({ "arguments": arguments })),
            ]
        }
        _ => {
            added["summary"] = json!([]);
            let at = json!({ "item_id": item["id"], "output_index": index, "summary_index": 0 });
            summary_events(&at, item)
        }
    };
    let at = json!({ "output_index": index });
    let mut events = vec![event("output_item.added", &at, json!({ "item": added }))];
    events.extend(middle);
    events.push(event("output_item.done", &at, json!({ "item": item })));
    events
}

/// A message's content part events: one `output_text.delta` per piece of its text.
fn text_events(at: &Value, item: &Value) -> Vec<Value> {
    let text = item["content"][0]["text"].as_str().unwrap_or_default();
    let pieces = if text == REPLY_PIECES.concat() {
        REPLY_PIECES.to_vec()
    } else {
        vec![text]
    };
    let part = |text: &str| json!({ "part": { "type": "output_text", "text": text, "annotations": [] } });
    let mut events = vec![event("content_part.added", at, part(""))];
    for piece in pieces {
        let delta = json!({ "delta": piece, "logprobs": [] });
        events.push(event("output_text.delta", at, delta));
    }
    let done = json!({ "text": text, "logprobs": [] });
    events.push(event("output_text.done", at, done));
    events.push(event("content_part.done", at, part(text)));
    events
}

/// A reasoning item's summary events.
fn summary_events(at: &Value, item: &Value) -> Vec<Value> {
    let text = item["summary"][0]["text"].as_str().unwrap_or_default();
    let part = |text: &str| json!({ "part": { "type": "summary_text", "text": text } });
    vec![
        event("reasoning_summary_part.added", at, part("")),
        event("reasoning_summary_text.delta", at, json!({ "delta": text })),
        event("reasoning_summary_text.done", at, json!({ "text": text })),
        event("reasoning_summary_part.done", at, part(text)),
    ]
}

/// The refusal for this request, if any: (the rule recorded, the answer).
fn refusal(body: &Value, flavour: Flavour, token: Option<&str>, key: &str) -> Option<(String, Response)> {
    if token != Some(key) {
        let token = token.unwrap_or_default();
        let shown: String = match token.len() {
            0..=8 => "*".repeat(token.len()),
            n => format!("{}{}{}", &token[..3], "*".repeat(n - 7), &token[n - 4..]),
        };
        let message = format!(
            "Incorrect API key provided: {shown}. You can find your API key at \
             https://platform.openai.com/account/api-keys."
        );
        let rule = Rule::new(message, "", "invalid_api_key");
        let answer = rule.respond(StatusCode::UNAUTHORIZED);
        return Some(("Incorrect API key provided".into(), answer));
    }
    let rule = check(body, flavour).err()?;
    Some((rule.message.clone(), rule.respond(StatusCode::BAD_REQUEST)))
}

async fn responses(State(mock): State<Mock>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let refused = refusal(&body, mock.flavour, token, &mock.key);
    let rule = refused.as_ref().map(|(rule, _)| rule.clone());
    mock.seen.lock().unwrap().push((body.clone(), rule));
    if let Some((_, answer)) = refused {
        return answer;
    }
    let done = answer(&body);
    if body["stream"] != true {
        return Json(done).into_response();
    }
    let chunks: Vec<Result<String, std::io::Error>> = events(&done)
        .into_iter()
        .map(|event| {
            let kind = event["type"].as_str().unwrap_or_default();
            Ok(format!("event: {kind}\ndata: {event}\n\n"))
        })
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("a static response")
}

#[cfg(test)]
mod tests;
