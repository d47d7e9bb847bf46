//! A mock OpenAI Chat Completions upstream (`POST /v1/chat/completions`, with
//! `POST /v1/embeddings`) that checks every request against the API's documented rules: the
//! bearer key; a `model`; a non-empty `messages` list of messages with a known role (the
//! deprecated `function` role is refused) sending the content that role may send — user
//! `text`, `image_url`, `input_audio` and `file` parts, system, developer and tool `text`,
//! assistant text or `tool_calls` of `function`s with string `arguments`; every `tool`
//! message answering a call of the assistant message right before it (only tool messages in
//! between) and every call answered before the next other message; non-empty `tools` of
//! `function`s with a name and object `parameters`; a `tool_choice` only with `tools` and
//! naming an offered one; `max_tokens` or `max_completion_tokens`, not both, positive; and
//! `stream_options` only with `stream: true`. Embeddings need a `model`, an `input` string or
//! list and a known `encoding_format`. Broken rules are answered 400 in OpenAI's error shape
//! (`{"error": {"message", "type", "param", "code"}}`), a wrong key 401 `invalid_api_key`,
//! and recorded in [`Seen`].
//!
//! Answers, in the recorded shapes of real ones (a `chat.completion`, or
//! `chat.completion.chunk`s — role first, the deltas, the finish reason, a usage chunk when
//! `stream_options.include_usage` asks, `data: [DONE]`): the conversation ends with tool
//! messages → `Result: ` and their contents; the request offers tools and `tool_choice` is
//! not `"none"` → a call ([`CALL_ID`]) of the first tool, or of the one `tool_choice` names,
//! with `{"city":"Paris"}`; otherwise [`REPLY_PIECES`]. Embeddings: input `i` gets
//! [`EMBEDDING`] followed by `i`, as floats or, with `"encoding_format": "base64"`, as the
//! base64 of little-endian `f32`s.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use crate::openai_rules::{Rule, invalid_type, invalid_value, need, need_string};

/// The plain answer, piece by piece when streamed.
pub const REPLY_PIECES: [&str; 5] = ["Hello", " from", " the", " mock", " upstream."];
/// The prompt tokens of every answer.
pub const PROMPT_TOKENS: u64 = 9;
/// The embedding of input number `i` is `EMBEDDING` followed by `i`; every value is exact
/// in `f32`, so the base64 form decodes to the same numbers.
pub const EMBEDDING: [f32; 3] = [0.25, -0.5, 1.0];
/// The id of the tool call the mock makes.
pub const CALL_ID: &str = "call_Rk2wLxPq8mN4vB7cT1yZ0sHd";

const COMPLETION_ID: &str = "chatcmpl-mock0001";
const CREATED: u64 = 1_735_689_600;
const FINGERPRINT: &str = "fp_mock";
const ARGUMENTS: &str = r#"{"city":"Paris"}"#;
/// The completion tokens of a tool call, or of a text built from tool results.
const OTHER_TOKENS: u64 = 7;
const EMBEDDING_TOKENS: u64 = 4;

/// What the mock received and whether it was valid: (path: `/chat/completions` or
/// `/embeddings`, body, the rule it broke).
pub type Seen = Arc<Mutex<Vec<(&'static str, Value, Option<String>)>>>;

#[derive(Clone)]
struct Mock {
    seen: Seen,
    key: String,
}

/// Serves `POST /v1/chat/completions` and `POST /v1/embeddings` for the bearer `key`;
/// returns the base URL a provider group would be configured with,
/// `http://127.0.0.1:PORT/v1`.
pub async fn start(key: &str, seen: Seen) -> String {
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .with_state(Mock {
            seen,
            key: key.to_owned(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}/v1", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

/// The rules the requests broke, one per broken request.
pub fn broken(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, _, rule)| rule.clone())
        .collect()
}

fn no_model() -> Rule {
    Rule::new("you must provide a model parameter", "", "")
}

fn empty_array(param: &str) -> Rule {
    let message = format!(
        "Invalid '{param}': empty array. Expected an array with minimum length 1, \
         but got an empty array instead."
    );
    Rule::new(message, param, "empty_array")
}

/// The first rule a chat completions `body` breaks (the key aside), in OpenAI's words, as
/// [`Seen`] records it: lets a test check a body without sending it.
pub fn broken_rule(body: &Value) -> Option<String> {
    check(body).err().map(|rule| rule.message)
}

/// The Chat Completions API's rules for a request body.
fn check(body: &Value) -> Result<(), Rule> {
    match &body["model"] {
        Value::String(_) => {}
        Value::Null => return Err(no_model()),
        other => return Err(invalid_type("model", "a string", other)),
    }
    match &body["messages"] {
        Value::Null => {
            let message = "'messages' is a required property";
            return Err(Rule::new(message, "", "missing_required_parameter"));
        }
        Value::Array(messages) if messages.is_empty() => return Err(empty_array("messages")),
        Value::Array(messages) => check_messages(messages)?,
        other => return Err(invalid_type("messages", "an array", other)),
    }
    check_tools(body)?;
    check_max_tokens(body)?;
    if !body["stream_options"].is_null() && body["stream"] != true {
        let message = "The 'stream_options' parameter is only allowed when 'stream' is enabled.";
        return Err(Rule::new(message, "stream_options", ""));
    }
    Ok(())
}

/// The messages one by one, then the pairing: the `tool` messages right after an assistant
/// message with `tool_calls` answer each of its calls, and nothing else.
fn check_messages(messages: &[Value]) -> Result<(), Rule> {
    // The last assistant message with tool calls while only tool messages followed it:
    // (its index, its calls not answered yet).
    let mut open: Option<(usize, Vec<&str>)> = None;
    for (i, message) in messages.iter().enumerate() {
        let role = check_message(i, message)?;
        if role == "tool" {
            let id = message["tool_call_id"].as_str().unwrap_or_default();
            match open.as_mut() {
                Some((_, calls)) if calls.contains(&id) => calls.retain(|call| *call != id),
                _ => {
                    let message = "Invalid parameter: messages with role 'tool' must be a response \
                                   to a preceeding message with 'tool_calls'.";
                    return Err(Rule::new(message, &format!("messages.[{i}].role"), ""));
                }
            }
            continue;
        }
        unanswered(open.take())?;
        if let Some(calls) = message["tool_calls"].as_array().filter(|_| role == "assistant") {
            open = Some((i, calls.iter().filter_map(|call| call["id"].as_str()).collect()));
        }
    }
    unanswered(open)
}

/// Refuses an assistant message (at index `i`) whose calls are not all answered.
fn unanswered(open: Option<(usize, Vec<&str>)>) -> Result<(), Rule> {
    match open {
        Some((i, calls)) if !calls.is_empty() => {
            let message = format!(
                "An assistant message with 'tool_calls' must be followed by tool messages responding \
                 to each 'tool_call_id'. The following tool_call_ids did not have response messages: {}",
                calls.join(", ")
            );
            Err(Rule::new(message, &format!("messages.[{i}].role"), ""))
        }
        _ => Ok(()),
    }
}

/// Message `i` on its own: a known role, the content that role may send, its tool calls or
/// the call it answers. Returns its role.
fn check_message(i: usize, message: &Value) -> Result<&str, Rule> {
    if !message.is_object() {
        return Err(invalid_type(&format!("messages[{i}]"), "an object", message));
    }
    let at = format!("messages[{i}].");
    let role = need_string(message, "role", &at)?;
    let allowed: &[&str] = match role {
        "user" => &["text", "image_url", "input_audio", "file"],
        "system" | "developer" | "tool" => &["text"],
        "assistant" => &["text", "refusal"],
        other => {
            let roles = ["system", "developer", "user", "assistant", "tool"];
            return Err(invalid_value(&format!("{at}role"), other, &roles));
        }
    };
    if role == "tool" {
        need_string(message, "tool_call_id", &at)?;
    }
    let calls = role == "assistant" && check_tool_calls(message, &at)?;
    if message["content"].is_null() && !calls {
        let message = "Invalid value for 'content': expected a string, got null.";
        return Err(Rule::new(message, &format!("messages.[{i}].content"), ""));
    }
    check_content(&message["content"], &format!("{at}content"), allowed).map(|()| role)
}

/// `content` (at `param`): absent, a string, or a non-empty list of parts of the `allowed` types.
fn check_content(content: &Value, param: &str, allowed: &[&str]) -> Result<(), Rule> {
    let parts = match content {
        Value::Null | Value::String(_) => return Ok(()),
        Value::Array(parts) if parts.is_empty() => return Err(empty_array(param)),
        Value::Array(parts) => parts,
        other => return Err(invalid_type(param, "one of a string or array of objects", other)),
    };
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{param}[{j}].");
        match need_string(part, "type", &at)? {
            kind if !allowed.contains(&kind) => {
                return Err(invalid_value(&format!("{at}type"), kind, allowed));
            }
            "text" => {
                need_string(part, "text", &at)?;
            }
            "refusal" => {
                need_string(part, "refusal", &at)?;
            }
            "image_url" => {
                need(part, "image_url", &at, "an object", Value::is_object)?;
                need_string(&part["image_url"], "url", &format!("{at}image_url."))?;
            }
            "input_audio" => {
                need(part, "input_audio", &at, "an object", Value::is_object)?;
                let audio = format!("{at}input_audio.");
                need_string(&part["input_audio"], "data", &audio)?;
                need_string(&part["input_audio"], "format", &audio)?;
            }
            _ => need(part, "file", &at, "an object", Value::is_object)?,
        }
    }
    Ok(())
}

/// An assistant message's `tool_calls`, if any: whether it has them.
fn check_tool_calls(message: &Value, at: &str) -> Result<bool, Rule> {
    let calls = match &message["tool_calls"] {
        Value::Null => return Ok(false),
        Value::Array(calls) if calls.is_empty() => return Err(empty_array(&format!("{at}tool_calls"))),
        Value::Array(calls) => calls,
        other => return Err(invalid_type(&format!("{at}tool_calls"), "an array", other)),
    };
    for (j, call) in calls.iter().enumerate() {
        let at = format!("{at}tool_calls[{j}].");
        need_string(call, "id", &at)?;
        let kind = need_string(call, "type", &at)?;
        if kind != "function" {
            return Err(invalid_value(&format!("{at}type"), kind, &["function"]));
        }
        need(call, "function", &at, "an object", Value::is_object)?;
        let at = format!("{at}function.");
        need_string(&call["function"], "name", &at)?;
        need_string(&call["function"], "arguments", &at)?;
    }
    Ok(true)
}

/// `tools` are named functions with object parameters; `tool_choice` and
/// `parallel_tool_calls` come with them.
fn check_tools(body: &Value) -> Result<(), Rule> {
    let tools = match &body["tools"] {
        Value::Null => None,
        Value::Array(tools) if tools.is_empty() => return Err(empty_array("tools")),
        Value::Array(tools) => Some(tools),
        other => return Err(invalid_type("tools", "an array", other)),
    };
    let mut names = Vec::new();
    for (i, tool) in tools.into_iter().flatten().enumerate() {
        let at = format!("tools[{i}].");
        let kind = need_string(tool, "type", &at)?;
        if kind != "function" {
            return Err(invalid_value(&format!("{at}type"), kind, &["function"]));
        }
        need(tool, "function", &at, "an object", Value::is_object)?;
        let at = format!("{at}function.");
        names.push(need_string(&tool["function"], "name", &at)?);
        let parameters = &tool["function"]["parameters"];
        if !matches!(parameters, Value::Null | Value::Object(_)) {
            return Err(invalid_type(&format!("{at}parameters"), "an object", parameters));
        }
    }
    if tools.is_none() && !body["parallel_tool_calls"].is_null() {
        let message = "Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed \
                       when 'tools' are specified.";
        return Err(Rule::new(message, "parallel_tool_calls", ""));
    }
    check_tool_choice(&body["tool_choice"], tools.is_some(), &names)
}

/// `tool_choice`: only with tools, a mode or a function among the offered `names`.
fn check_tool_choice(choice: &Value, offered: bool, names: &[&str]) -> Result<(), Rule> {
    if choice.is_null() {
        return Ok(());
    }
    if !offered {
        let message =
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.";
        return Err(Rule::new(message, "tool_choice", ""));
    }
    let modes = ["none", "auto", "required"];
    match choice {
        Value::String(mode) if modes.contains(&mode.as_str()) => Ok(()),
        Value::String(mode) => Err(invalid_value("tool_choice", mode, &modes)),
        Value::Object(_) => {
            let kind = need_string(choice, "type", "tool_choice.")?;
            if kind != "function" {
                return Err(invalid_value("tool_choice.type", kind, &["function"]));
            }
            need(choice, "function", "tool_choice.", "an object", Value::is_object)?;
            let name = need_string(&choice["function"], "name", "tool_choice.function.")?;
            if names.contains(&name) {
                return Ok(());
            }
            let message = format!("Tool choice '{name}' not found in 'tools' parameter.");
            Err(Rule::new(message, "tool_choice", ""))
        }
        other => Err(invalid_type("tool_choice", "one of a string or object", other)),
    }
}

/// `max_tokens` and `max_completion_tokens`: positive integers, not both.
fn check_max_tokens(body: &Value) -> Result<(), Rule> {
    if !body["max_tokens"].is_null() && !body["max_completion_tokens"].is_null() {
        let message = "Setting 'max_tokens' and 'max_completion_tokens' at the same time is not supported.";
        return Err(Rule::new(message, "max_tokens", "invalid_parameter_combination"));
    }
    for key in ["max_tokens", "max_completion_tokens"] {
        match &body[key] {
            Value::Null => {}
            Value::Number(n) if n.as_u64().is_some_and(|n| n >= 1) => {}
            Value::Number(n) if !n.is_f64() => {
                let message = format!(
                    "Invalid '{key}': integer below minimum value. Expected a value >= 1, but got {n} instead."
                );
                return Err(Rule::new(message, key, "integer_below_min_value"));
            }
            other => return Err(invalid_type(key, "an integer", other)),
        }
    }
    Ok(())
}

/// The embeddings rules: a `model`, an `input` string or list, a known `encoding_format`.
/// Returns the number of inputs.
fn check_embeddings(body: &Value) -> Result<usize, Rule> {
    match &body["model"] {
        Value::String(_) => {}
        Value::Null => return Err(no_model()),
        other => return Err(invalid_type("model", "a string", other)),
    }
    let inputs = match &body["input"] {
        Value::String(_) => 1,
        Value::Array(items) => items.len(),
        _ => {
            let message = "'input' is a required property";
            return Err(Rule::new(message, "", "missing_required_parameter"));
        }
    };
    match &body["encoding_format"] {
        Value::Null => Ok(inputs),
        Value::String(format) if format == "float" || format == "base64" => Ok(inputs),
        Value::String(format) => Err(invalid_value("encoding_format", format, &["float", "base64"])),
        other => Err(invalid_type("encoding_format", "a string", other)),
    }
}

/// What the mock answers: a text, or a call of the named tool.
enum Reply {
    Text(String),
    Call(String),
}

impl Reply {
    fn completion_tokens(&self) -> u64 {
        match self {
            Reply::Text(text) if *text == REPLY_PIECES.concat() => REPLY_PIECES.len() as u64,
            _ => OTHER_TOKENS,
        }
    }
}

/// The text of a message's content: a string, or the texts of its parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        parts => parts
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|part| part["text"].as_str())
            .collect(),
    }
}

/// The answer to a valid request.
fn reply(body: &Value) -> Reply {
    let messages = body["messages"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut results: Vec<String> = messages
        .iter()
        .rev()
        .take_while(|message| message["role"] == "tool")
        .map(|message| content_text(&message["content"]))
        .collect();
    results.reverse();
    if !results.is_empty() {
        return Reply::Text(format!("Result: {}", results.join(", ")));
    }
    let choice = &body["tool_choice"];
    let first = body["tools"].as_array().and_then(|tools| tools.first());
    match (first, choice["function"]["name"].as_str()) {
        (Some(_), _) if choice == "none" => Reply::Text(REPLY_PIECES.concat()),
        (Some(_), Some(chosen)) => Reply::Call(chosen.to_owned()),
        (Some(tool), None) => Reply::Call(tool["function"]["name"].as_str().unwrap_or_default().to_owned()),
        (None, _) => Reply::Text(REPLY_PIECES.concat()),
    }
}

fn usage(completion: u64) -> Value {
    json!({
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": { "cached_tokens": 0, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    })
}

/// The `chat.completion` answering `body`.
fn completion(body: &Value) -> Value {
    let reply = reply(body);
    let (message, finish) = match &reply {
        Reply::Text(text) => (
            json!({ "role": "assistant", "content": text, "refusal": null }),
            "stop",
        ),
        Reply::Call(name) => (
            json!({ "role": "assistant", "content": null, "refusal": null, "tool_calls": [{
                "id": CALL_ID, "type": "function", "function": { "name": name, "arguments": ARGUMENTS } }] }),
            "tool_calls",
        ),
    };
    json!({
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": body["model"].as_str().unwrap_or_default(),
        "system_fingerprint": FINGERPRINT,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish }],
        "usage": usage(reply.completion_tokens()),
        "service_tier": "default"
    })
}

/// The deltas of the streamed answer, before its finish chunk; and its finish reason.
fn deltas(reply: &Reply) -> (Vec<Value>, &'static str) {
    match reply {
        Reply::Text(text) => {
            let pieces = if *text == REPLY_PIECES.concat() {
                REPLY_PIECES.to_vec()
            } else {
                vec![text.as_str()]
            };
            let mut deltas = vec![json!({ "role": "assistant", "content": "", "refusal": null })];
            deltas.extend(pieces.into_iter().map(|piece| json!({ "content": piece })));
            (deltas, "stop")
        }
        Reply::Call(name) => {
            let (head, tail) = ARGUMENTS.split_at(ARGUMENTS.len() / 2);
            let arguments =
                |piece: &str| json!({ "tool_calls": [{ "index": 0, "function": { "arguments": piece } }] });
            let deltas = vec![
                json!({ "role": "assistant", "content": null, "refusal": null }),
                json!({ "tool_calls": [{ "index": 0, "id": CALL_ID, "type": "function",
                    "function": { "name": name, "arguments": "" } }] }),
                arguments(head),
                arguments(tail),
            ];
            (deltas, "tool_calls")
        }
    }
}

/// The SSE events of the streamed answer to `body`, `data: [DONE]` last. With
/// `stream_options.include_usage` every chunk has a `usage`, null but on the last one (the
/// usage chunk, without choices).
fn events(body: &Value) -> Vec<String> {
    let include_usage = body["stream_options"]["include_usage"] == true;
    let model = body["model"].as_str().unwrap_or_default();
    let chunk = |choices: Value, usage: Value| {
        let mut chunk = json!({ "id": COMPLETION_ID, "object": "chat.completion.chunk", "created": CREATED,
            "model": model, "system_fingerprint": FINGERPRINT, "choices": choices });
        if include_usage {
            chunk["usage"] = usage;
        }
        format!("data: {chunk}\n\n")
    };
    let choice = |delta: Value, finish: Value| json!([{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }]);
    let reply = reply(body);
    let (deltas, finish) = deltas(&reply);
    let mut events: Vec<String> = deltas
        .into_iter()
        .map(|delta| chunk(choice(delta, Value::Null), Value::Null))
        .collect();
    events.push(chunk(choice(json!({}), json!(finish)), Value::Null));
    if include_usage {
        events.push(chunk(json!([]), usage(reply.completion_tokens())));
    }
    events.push("data: [DONE]\n\n".to_owned());
    events
}

/// Standard base64 (with padding) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut encoded = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let bits = group
            .iter()
            .enumerate()
            .fold(0u32, |bits, (i, byte)| bits | (u32::from(*byte) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= group.len() {
                encoded.push(char::from(ALPHABET[((bits >> (18 - 6 * i)) & 63) as usize]));
            } else {
                encoded.push('=');
            }
        }
    }
    encoded
}

/// The embeddings answer for `inputs` inputs, as floats or base64.
fn embeddings_answer(body: &Value, inputs: usize) -> Value {
    let as_base64 = body["encoding_format"] == "base64";
    let data: Vec<Value> = (0..inputs)
        .map(|index| {
            let mut vector = EMBEDDING.to_vec();
            vector.push(index as f32);
            let embedding = if as_base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64(&bytes))
            } else {
                json!(vector)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": { "prompt_tokens": EMBEDDING_TOKENS, "total_tokens": EMBEDDING_TOKENS }
    })
}

/// OpenAI's answer to a wrong key: the presented one, masked.
fn wrong_key(token: Option<&str>) -> Rule {
    let token = token.unwrap_or_default();
    let shown: String = match token.len() {
        0..=8 => "*".repeat(token.len()),
        n => format!("{}{}{}", &token[..3], "*".repeat(n - 7), &token[n - 4..]),
    };
    let message = format!(
        "Incorrect API key provided: {shown}. You can find your API key at \
         https://platform.openai.com/account/api-keys."
    );
    Rule::new(message, "", "invalid_api_key")
}

impl Mock {
    /// Records the request with the rule it broke, if any (a wrong key as "Incorrect API key
    /// provided"); returns what `check` found, or the refusal to answer.
    fn admit<T>(
        &self,
        path: &'static str,
        headers: &HeaderMap,
        body: &Value,
        check: fn(&Value) -> Result<T, Rule>,
    ) -> Result<T, (Rule, StatusCode)> {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let (verdict, rule) = if token == Some(self.key.as_str()) {
            let verdict = check(body).map_err(|rule| (rule, StatusCode::BAD_REQUEST));
            let rule = verdict.as_ref().err().map(|(rule, _)| rule.message.clone());
            (verdict, rule)
        } else {
            let refusal = (wrong_key(token), StatusCode::UNAUTHORIZED);
            (Err(refusal), Some("Incorrect API key provided".to_owned()))
        };
        self.seen.lock().unwrap().push((path, body.clone(), rule));
        verdict
    }
}

async fn chat(State(mock): State<Mock>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err((rule, status)) = mock.admit("/chat/completions", &headers, &body, check) {
        return rule.respond(status);
    }
    if body["stream"] != true {
        return Json(completion(&body)).into_response();
    }
    let events = events(&body).into_iter().map(Ok::<_, std::io::Error>);
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(futures_util::stream::iter(events)))
        .expect("a static response")
}

async fn embeddings(State(mock): State<Mock>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    match mock.admit("/embeddings", &headers, &body, check_embeddings) {
        Ok(inputs) => Json(embeddings_answer(&body, inputs)).into_response(),
        Err((rule, status)) => rule.respond(status),
    }
}

#[cfg(test)]
mod tests;
