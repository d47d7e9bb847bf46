//! The upstream side of OpenAI Chat Completions (types `openai`, `compatible`, `azure`):
//! the request encoded from the IR, the answer and its `chat.completion.chunk` stream
//! decoded into the IR.
//!
//! What OpenAI Chat cannot take back is left out of the request, on purpose:
//! - reasoning from earlier turns (thinking blocks): Chat has no field for it;
//! - an error flag on a tool result: Chat's tool messages have none, so the result's
//!   text is marked instead (`[error] …`), which keeps the meaning for the model.

use serde_json::{Map, Value, json};

use crate::formats::StreamDecoder;
use crate::formats::ir::{
    Effort, Event, Finish, Image, Message, Part, Request, Response, Role, ToolChoice, Usage,
};

/// How a failed tool result reads in a `role: tool` message.
const TOOL_ERROR_MARK: &str = "[error] ";

fn effort(effort: Effort) -> &'static str {
    match effort {
        Effort::Low => "low",
        Effort::Medium => "medium",
        Effort::High => "high",
    }
}

fn user_part(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text(text) => json!({ "type": "text", "text": text }),
        Part::Image(Image::Url(url)) => json!({ "type": "image_url", "image_url": { "url": url } }),
        Part::Image(Image::Base64 { media_type, data }) => {
            json!({ "type": "image_url", "image_url": { "url": format!("data:{media_type};base64,{data}") } })
        }
        Part::ToolCall { .. } | Part::ToolResult { .. } | Part::Thinking { .. } => return None,
    })
}

/// A user turn: its tool results first, one `role: tool` message each (Chat wants them
/// right after the assistant's calls), then the rest as one user message.
fn user_messages(parts: &[Part], out: &mut Vec<Value>) {
    for part in parts {
        if let Part::ToolResult {
            call_id,
            content,
            is_error,
        } = part
        {
            let content = if *is_error {
                format!("{TOOL_ERROR_MARK}{content}")
            } else {
                content.clone()
            };
            out.push(json!({ "role": "tool", "tool_call_id": call_id, "content": content }));
        }
    }
    let content: Vec<Value> = parts.iter().filter_map(user_part).collect();
    match content.as_slice() {
        [] => {}
        // A lone text is sent as a string: every compatible server takes that form.
        [only] if only["type"] == "text" => {
            out.push(json!({ "role": "user", "content": only["text"] }));
        }
        _ => out.push(json!({ "role": "user", "content": content })),
    }
}

fn assistant_message(parts: &[Part]) -> Option<Value> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::ToolCall { id, name, arguments } => calls.push(json!({
                "id": id, "type": "function",
                "function": { "name": name, "arguments": arguments_text(arguments) },
            })),
            // Chat cannot take reasoning back (see the module's doc).
            Part::Thinking { .. } | Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    if text.is_empty() && calls.is_empty() {
        return None;
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Some(message)
}

/// Chat carries arguments as a JSON string; a string in the IR is arguments that were
/// not valid JSON, kept as they came.
fn arguments_text(arguments: &Value) -> String {
    match arguments {
        Value::String(raw) => raw.clone(),
        other => other.to_string(),
    }
}

fn messages(request: &Request) -> Vec<Value> {
    let mut out = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        out.push(json!({ "role": "system", "content": request.system.join("\n\n") }));
    }
    for Message { role, parts } in &request.messages {
        match role {
            Role::User => user_messages(parts, &mut out),
            Role::Assistant => out.extend(assistant_message(parts)),
        }
    }
    out
}

/// Encodes `request` for an OpenAI-format upstream serving `model`. A stream always asks
/// for the usage chunk, so usage is known whatever the client asked.
pub fn encode_request(request: &Request, model: &str) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("messages".into(), Value::Array(messages(request)));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let mut function = json!({ "name": t.name, "parameters": t.parameters });
                if let Some(d) = &t.description {
                    function["description"] = json!(d);
                }
                json!({ "type": "function", "function": function })
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
        // Chat accepts the flag only next to tools.
        if !request.parallel_tool_calls {
            body.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    // Chat refuses a tool choice without tools; with none, no tool can be called anyway.
    if let Some(choice) = request.tool_choice.as_ref().filter(|_| !request.tools.is_empty()) {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(name) => json!({ "type": "function", "function": { "name": name } }),
        };
        body.insert("tool_choice".into(), choice);
    }
    if let Some(output) = &request.output {
        let format = match &output.schema {
            None => json!({ "type": "json_object" }),
            Some(s) => json!({ "type": "json_schema",
                "json_schema": { "name": s.name, "schema": s.schema, "strict": s.strict } }),
        };
        body.insert("response_format".into(), format);
    }
    if let Some(max) = request.max_tokens {
        body.insert("max_tokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    if request.stream {
        body.insert("stream".into(), Value::Bool(true));
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if let Some(e) = request.reasoning {
        body.insert("reasoning_effort".into(), json!(effort(e)));
    }
    if let Some(user) = &request.user {
        body.insert("user".into(), json!(user));
    }
    Value::Object(body)
}

fn finish(reason: Option<&str>) -> Finish {
    match reason {
        Some("length") => Finish::Length,
        Some("tool_calls" | "function_call") => Finish::ToolCalls,
        Some("content_filter") => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

/// OpenAI counts cached tokens inside `prompt_tokens`; the IR counts them apart.
fn usage(u: &Value) -> Usage {
    let cached = count(&u["prompt_tokens_details"]["cached_tokens"]);
    Usage {
        input: count(&u["prompt_tokens"]).saturating_sub(cached),
        output: count(&u["completion_tokens"]),
        cache_read: cached,
        cache_write: 0,
        reasoning: count(&u["completion_tokens_details"]["reasoning_tokens"]),
    }
}

/// Arguments as the model wrote them: parsed when they are JSON, else kept as a string.
fn arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// Text of a message's `content`: a string, or (some compatible servers) text parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// Decodes a whole `chat.completion`; `None` when it is not one.
pub fn decode_response(body: &Value) -> Option<Response> {
    let choice = body["choices"].as_array()?.first()?;
    let message = &choice["message"];
    let mut parts = Vec::new();
    // DeepSeek and other compatible servers return reasoning beside the content.
    if let Some(thinking) = message["reasoning_content"].as_str().filter(|t| !t.is_empty()) {
        parts.push(Part::Thinking {
            text: thinking.to_owned(),
            signature: None,
        });
    }
    let text = content_text(&message["content"]);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    let mut finish_reason = finish(choice["finish_reason"].as_str());
    if let Some(refusal) = message["refusal"].as_str().filter(|r| !r.is_empty()) {
        parts.push(Part::Text(refusal.to_owned()));
        finish_reason = Finish::ContentFilter;
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let function = &call["function"];
        parts.push(Part::ToolCall {
            id: call["id"].as_str().unwrap_or_default().to_owned(),
            name: function["name"].as_str().unwrap_or_default().to_owned(),
            arguments: arguments(function["arguments"].as_str().unwrap_or_default()),
        });
    }
    Some(Response {
        id: body["id"].as_str().unwrap_or_default().to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        parts,
        finish: finish_reason,
        usage: usage(&body["usage"]),
    })
}

/// An OpenAI error body's code and message (`{"error":{"message","type","code"}}`).
pub fn decode_error(body: &Value) -> Option<(String, String)> {
    let error = body.get("error")?;
    if let Some(message) = error.as_str() {
        return Some(("upstream_error".into(), message.to_owned()));
    }
    let code = error["type"]
        .as_str()
        .or_else(|| error["code"].as_str())
        .unwrap_or("upstream_error");
    let message = error["message"].as_str().unwrap_or("the upstream failed");
    Some((code.to_owned(), message.to_owned()))
}

/// A tool call seen in a stream: Chat's index for it (when the server sent one), its id,
/// and its IR index.
struct ToolCall {
    chat_index: Option<u64>,
    id: String,
    index: usize,
}

/// Reads `chat.completion.chunk` data lines (and the closing `[DONE]`) into IR events,
/// numbering tool calls from 0 in the order they start.
#[derive(Default)]
pub struct ChunkDecoder {
    started: bool,
    tool_calls: Vec<ToolCall>,
    usage: Usage,
    ended: bool,
}

impl ChunkDecoder {
    /// The IR index of the call `delta` continues, if it continues one. Some compatible
    /// servers leave out `index` and send each call whole: then a new id is a new call.
    fn known_call(&self, delta: &Value) -> Option<usize> {
        let id = delta["id"].as_str().filter(|id| !id.is_empty());
        let found = match (delta["index"].as_u64(), id) {
            (Some(chat_index), _) => self.tool_calls.iter().find(|c| c.chat_index == Some(chat_index)),
            (None, Some(id)) => self.tool_calls.iter().find(|c| c.id == id),
            (None, None) => self.tool_calls.last(),
        };
        found.map(|c| c.index)
    }

    fn tool_call(&mut self, delta: &Value, out: &mut Vec<Event>) {
        let index = match self.known_call(delta) {
            Some(index) => index,
            None => {
                let index = self.tool_calls.len();
                let id = delta["id"]
                    .as_str()
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| format!("call_{index}"), str::to_owned);
                self.tool_calls.push(ToolCall {
                    chat_index: delta["index"].as_u64(),
                    id: id.clone(),
                    index,
                });
                out.push(Event::ToolCallStart {
                    index,
                    id,
                    name: delta["function"]["name"].as_str().unwrap_or_default().to_owned(),
                });
                index
            }
        };
        if let Some(arguments) = delta["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
            out.push(Event::ToolArguments {
                index,
                delta: arguments.to_owned(),
            });
        }
    }
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, _name: &str, data: &str, out: &mut Vec<Event>) {
        if self.ended {
            return;
        }
        if data.trim() == "[DONE]" {
            self.ended = true;
            out.push(Event::Usage(self.usage));
            out.push(Event::End);
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        if chunk.get("error").is_some() {
            let (code, message) = decode_error(&chunk)
                .unwrap_or_else(|| ("upstream_error".into(), "the upstream failed".into()));
            self.ended = true;
            out.push(Event::Error { code, message });
            out.push(Event::End);
            return;
        }
        // Azure opens with a chunk of prompt-filter results only: no id, no model, no
        // choice. The answer starts with the next one.
        let no_choice = chunk["choices"].as_array().is_some_and(Vec::is_empty);
        if !self.started && no_choice && !chunk["usage"].is_object() {
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: chunk["id"].as_str().unwrap_or_default().to_owned(),
                model: chunk["model"].as_str().unwrap_or_default().to_owned(),
            });
        }
        if let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) {
            let delta = &choice["delta"];
            for (field, thinking) in [("reasoning_content", true), ("content", false)] {
                if let Some(text) = delta[field].as_str().filter(|t| !t.is_empty()) {
                    out.push(if thinking {
                        Event::Thinking(text.to_owned())
                    } else {
                        Event::Text(text.to_owned())
                    });
                }
            }
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                self.tool_call(call, out);
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                out.push(Event::Finish(finish(Some(reason))));
            }
        }
        if chunk["usage"].is_object() {
            self.usage = usage(&chunk["usage"]);
        }
    }

    fn ended(&self) -> bool {
        self.ended
    }
}
