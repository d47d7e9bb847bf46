//! The client side of OpenAI Chat Completions: the client's request decoded into the IR,
//! the answer and its stream chunks encoded from it.

use serde_json::{Map, Value, json};

use crate::formats::function_tools::{self, Layout};
use crate::formats::ir::{
    Effort, Event, Finish, Image, JsonOutput, JsonSchema, Message, Part, Request, Response, Role, Usage,
};
use crate::formats::{Refusal, StreamEncoder, data, joined_text, neutral, number, refuse};

/// Request fields this decoder reads; any other field set to a value that means
/// something is refused rather than dropped.
const KNOWN: [&str; 16] = [
    "response_format",
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "user",
    "n",
];

fn text_of(value: &Value, param: &str) -> Result<String, Refusal> {
    joined_text(value, param, "only text parts are supported here")
}

fn content_parts(value: &Value, param: &str) -> Result<Vec<Part>, Refusal> {
    let parts = match value {
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Null => return Ok(Vec::new()),
        Value::Array(parts) => parts,
        _ => return Err(refuse(param, "must be a string or an array of parts")),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{param}[{j}]");
        match part["type"].as_str() {
            Some("text") => out.push(Part::Text(
                part["text"]
                    .as_str()
                    .ok_or_else(|| refuse(&at, "a text part needs text"))?
                    .to_owned(),
            )),
            Some("image_url") => {
                let url = part["image_url"]["url"]
                    .as_str()
                    .ok_or_else(|| refuse(&at, "an image_url part needs image_url.url"))?;
                out.push(Part::Image(image(url)));
            }
            Some(other) => {
                return Err(refuse(
                    at,
                    &format!("parts of type {other:?} cannot be translated"),
                ));
            }
            None => return Err(refuse(at, "a part needs a type")),
        }
    }
    Ok(out)
}

/// `data:image/png;base64,…` is inline data; anything else a URL the target fetches.
fn image(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((media_type, data)) = rest.split_once(";base64,")
    {
        return Image::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        };
    }
    Image::Url(url.to_owned())
}

fn tool_calls(calls: &Value, param: &str) -> Result<Vec<Part>, Refusal> {
    let Some(calls) = calls.as_array() else {
        return Ok(Vec::new());
    };
    calls
        .iter()
        .enumerate()
        .map(|(j, call)| {
            let at = format!("{param}[{j}]");
            let function = &call["function"];
            let name = function["name"]
                .as_str()
                .ok_or_else(|| refuse(&at, "needs function.name"))?;
            let raw = function["arguments"].as_str().unwrap_or("{}");
            let arguments: Value = if raw.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(raw)
                    .map_err(|_| refuse(format!("{at}.function.arguments"), "is not valid JSON"))?
            };
            Ok(Part::ToolCall {
                id: call["id"].as_str().unwrap_or_default().to_owned(),
                name: name.to_owned(),
                arguments,
            })
        })
        .collect()
}

fn messages(list: &Value, system: &mut Vec<String>) -> Result<Vec<Message>, Refusal> {
    let list = list
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| refuse("messages", "must be a non-empty array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, message) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let content = &message["content"];
        let (role, parts) = match message["role"].as_str() {
            Some("system" | "developer") => {
                system.push(text_of(content, &format!("{at}.content"))?);
                continue;
            }
            Some("user") => (Role::User, content_parts(content, &format!("{at}.content"))?),
            Some("assistant") => {
                let mut parts = content_parts(content, &format!("{at}.content"))?;
                parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
                parts.extend(tool_calls(&message["tool_calls"], &format!("{at}.tool_calls"))?);
                (Role::Assistant, parts)
            }
            Some("tool") => {
                let call_id = message["tool_call_id"]
                    .as_str()
                    .ok_or_else(|| refuse(format!("{at}.tool_call_id"), "is required"))?;
                let part = Part::ToolResult {
                    call_id: call_id.to_owned(),
                    content: text_of(content, &format!("{at}.content"))?,
                    is_error: false,
                };
                (Role::User, vec![part])
            }
            Some(other) => {
                return Err(refuse(
                    format!("{at}.role"),
                    &format!("{other:?} cannot be translated"),
                ));
            }
            None => return Err(refuse(format!("{at}.role"), "is required")),
        };
        out.push(Message { role, parts });
    }
    Ok(out)
}

/// `response_format`: text (nothing asked), a JSON object, or JSON matching a schema.
fn output(value: Option<&Value>) -> Result<Option<JsonOutput>, Refusal> {
    let Some(format) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let schema = match format["type"].as_str() {
        Some("text") => return Ok(None),
        Some("json_object") => None,
        Some("json_schema") => {
            let spec = &format["json_schema"];
            let name = spec["name"]
                .as_str()
                .ok_or_else(|| refuse("response_format.json_schema.name", "is required"))?;
            Some(JsonSchema {
                name: name.to_owned(),
                schema: spec.get("schema").cloned().unwrap_or_else(|| json!({})),
                strict: spec["strict"] == Value::Bool(true),
            })
        }
        _ => {
            return Err(refuse(
                "response_format.type",
                "must be text, json_object or json_schema",
            ));
        }
    };
    Ok(Some(JsonOutput {
        param: "response_format",
        schema,
    }))
}

/// Decodes a Chat Completions request. Refuses, naming the field, what the IR cannot
/// carry (several choices, log probabilities, penalties, a response format, audio…).
pub fn decode_request(document: &Map<String, Value>) -> Result<Request, Refusal> {
    for (name, value) in document {
        if !KNOWN.contains(&name.as_str()) && !neutral(name, value) {
            return Err(refuse(
                name.as_str(),
                "cannot be translated for this model's provider",
            ));
        }
    }
    if let Some(n) = document.get("n")
        && !neutral("n", n)
    {
        return Err(refuse("n", "only one choice can be translated"));
    }
    let mut system = Vec::new();
    let messages = messages(document.get("messages").unwrap_or(&Value::Null), &mut system)?;
    let max_tokens = match document
        .get("max_completion_tokens")
        .or_else(|| document.get("max_tokens"))
    {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| refuse("max_tokens", "must be a positive integer"))?,
        ),
    };
    let stop = match document.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| refuse("stop", "must hold strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(refuse("stop", "must be a string or an array of strings")),
    };
    let reasoning = match document.get("reasoning_effort").and_then(Value::as_str) {
        None => None,
        Some("low" | "minimal") => Some(Effort::Low),
        Some("medium") => Some(Effort::Medium),
        Some("high") => Some(Effort::High),
        Some(_) => return Err(refuse("reasoning_effort", "must be low, medium or high")),
    };
    let stream = document.get("stream") == Some(&Value::Bool(true));
    Ok(Request {
        system,
        messages,
        tools: function_tools::tools(document.get("tools").unwrap_or(&Value::Null), Layout::Nested)?,
        tool_choice: function_tools::tool_choice(
            document.get("tool_choice").unwrap_or(&Value::Null),
            Layout::Nested,
        )?,
        parallel_tool_calls: document.get("parallel_tool_calls") != Some(&Value::Bool(false)),
        max_tokens,
        temperature: number(document, "temperature")?,
        top_p: number(document, "top_p")?,
        stop,
        stream,
        stream_usage: stream && document["stream_options"]["include_usage"] == Value::Bool(true),
        reasoning,
        user: document.get("user").and_then(Value::as_str).map(str::to_owned),
        output: output(document.get("response_format"))?,
    })
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
    }
}

fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt(),
        "completion_tokens": u.output,
        "total_tokens": u.prompt() + u.output,
        "prompt_tokens_details": { "cached_tokens": u.cache_read },
        "completion_tokens_details": { "reasoning_tokens": u.reasoning },
    })
}

/// Encodes a whole answer as a `chat.completion`.
pub fn encode_response(response: &Response, created: i64) -> Value {
    let mut text = String::new();
    let mut thinking = String::new();
    let mut calls = Vec::new();
    for part in &response.parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::Thinking { text: t, .. } => thinking.push_str(t),
            Part::ToolCall { id, name, arguments } => calls.push(json!({
                "id": id, "type": "function",
                "function": { "name": name, "arguments": arguments.to_string() },
            })),
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::String(text) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    if !thinking.is_empty() {
        message["reasoning_content"] = Value::String(thinking);
    }
    json!({
        "id": format!("chatcmpl-{}", response.id),
        "object": "chat.completion",
        "created": created,
        "model": response.model,
        "choices": [{ "index": 0, "message": message, "finish_reason": finish_reason(response.finish), "logprobs": null }],
        "usage": usage(&response.usage),
    })
}

/// Turns IR events into `chat.completion.chunk` SSE lines. The part every chunk repeats
/// (id, object, created, model) is written once, when the stream starts; a text delta
/// then costs one escaped string.
pub struct ChunkEncoder {
    /// `{"id":…,"object":"chat.completion.chunk","created":…,"model":…,`
    head: Vec<u8>,
    created: i64,
    include_usage: bool,
    usage: Usage,
    failed: bool,
}

impl ChunkEncoder {
    pub fn new(created: i64, include_usage: bool) -> ChunkEncoder {
        let mut encoder = ChunkEncoder {
            head: Vec::new(),
            created,
            include_usage,
            usage: Usage::default(),
            failed: false,
        };
        encoder.set_head("", "");
        encoder
    }

    fn set_head(&mut self, id: &str, model: &str) {
        self.head.clear();
        self.head.extend_from_slice(b"{\"id\":");
        let _ = serde_json::to_writer(&mut self.head, id);
        self.head
            .extend_from_slice(b",\"object\":\"chat.completion.chunk\",\"created\":");
        self.head.extend_from_slice(self.created.to_string().as_bytes());
        self.head.extend_from_slice(b",\"model\":");
        let _ = serde_json::to_writer(&mut self.head, model);
        self.head.push(b',');
    }

    /// One chunk with one choice: `delta` writes the delta object.
    fn chunk(&self, out: &mut Vec<u8>, finish: Option<Finish>, delta: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&self.head);
        out.extend_from_slice(b"\"choices\":[{\"index\":0,\"delta\":");
        delta(out);
        out.extend_from_slice(b",\"finish_reason\":");
        match finish {
            Some(finish) => {
                out.push(b'"');
                out.extend_from_slice(finish_reason(finish).as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"logprobs\":null}]}\n\n");
    }

    /// `{"<field>":<text as a JSON string>}`
    fn text_delta(&self, out: &mut Vec<u8>, field: &str, text: &str) {
        self.chunk(out, None, |out| {
            out.extend_from_slice(b"{\"");
            out.extend_from_slice(field.as_bytes());
            out.extend_from_slice(b"\":");
            let _ = serde_json::to_writer(&mut *out, text);
            out.push(b'}');
        });
    }

    fn value_delta(&self, out: &mut Vec<u8>, delta: &Value) {
        self.chunk(out, None, |out| {
            let _ = serde_json::to_writer(&mut *out, delta);
        });
    }
}

impl StreamEncoder for ChunkEncoder {
    fn encode(&mut self, event: Event, out: &mut Vec<u8>) {
        match event {
            Event::Start { id, model } => {
                self.set_head(&format!("chatcmpl-{id}"), &model);
                self.value_delta(out, &json!({ "role": "assistant", "content": "" }));
            }
            Event::Text(text) => self.text_delta(out, "content", &text),
            Event::Thinking(text) => self.text_delta(out, "reasoning_content", &text),
            // Chat has no place for a reasoning signature.
            Event::Signature(_) => {}
            Event::ToolCallStart { index, id, name } => self.value_delta(
                out,
                &json!({ "tool_calls": [{ "index": index, "id": id, "type": "function",
                    "function": { "name": name, "arguments": "" } }] }),
            ),
            Event::ToolArguments { index, delta } => self.value_delta(
                out,
                &json!({ "tool_calls": [{ "index": index, "function": { "arguments": delta } }] }),
            ),
            Event::Finish(finish) => self.chunk(out, Some(finish), |out| out.extend_from_slice(b"{}")),
            Event::Usage(usage) => self.usage = usage,
            Event::Error { code, message } => {
                self.failed = true;
                let error = ez_contract::error::ErrorEnvelope::new(502, code, message);
                out.extend_from_slice(b"event: error\n");
                data(out, &serde_json::to_value(error).unwrap_or_default());
            }
            Event::End if self.failed => {}
            Event::End => {
                if self.include_usage {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&self.head);
                    out.extend_from_slice(b"\"choices\":[],\"usage\":");
                    let _ = serde_json::to_writer(&mut *out, &usage(&self.usage));
                    out.extend_from_slice(b"}\n\n");
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
        }
    }
}
