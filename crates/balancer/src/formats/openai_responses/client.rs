//! The client side of OpenAI Responses: the client's request decoded into the IR, the
//! answer and its stream events encoded from it.

use serde_json::{Map, Value, json};

use crate::formats::function_tools::{self, Layout};
use crate::formats::ir::{
    Effort, Event, Finish, Image, JsonOutput, JsonSchema, Message, Part, Request, Response, Role, Signature,
    Usage,
};
use crate::formats::{Format, Refusal, StreamEncoder, neutral, number, refuse};

/// Request fields this decoder reads; any other field set to a value that means
/// something is refused rather than dropped.
const KNOWN: [&str; 17] = [
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning",
    "user",
    "store",
    "include",
    "text",
    // A cache-routing hint: no other provider has one, and leaving it out changes no answer.
    "prompt_cache_key",
    "truncation",
];

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

/// The parts of a message's `content`: a string, or `input_text` / `input_image` /
/// `output_text` parts.
fn content(value: &Value, at: &str) -> Result<Vec<Part>, Refusal> {
    let parts = match value {
        Value::String(s) => return Ok(vec![Part::Text(s.clone())]),
        Value::Array(parts) => parts,
        _ => return Err(refuse(at, "must be a string or an array of parts")),
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let at = format!("{at}[{j}]");
        match part["type"].as_str() {
            Some("input_text" | "output_text") => out.push(Part::Text(
                part["text"]
                    .as_str()
                    .ok_or_else(|| refuse(&at, "a text part needs text"))?
                    .to_owned(),
            )),
            Some("input_image") => {
                let url = part["image_url"]
                    .as_str()
                    .ok_or_else(|| refuse(&at, "only images given by image_url can be translated"))?;
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

/// Text of a `function_call_output`'s `output`: a string or `input_text` parts.
fn output_text(value: &Value, at: &str) -> Result<String, Refusal> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for (k, part) in parts.iter().enumerate() {
                match (part["type"].as_str(), part["text"].as_str()) {
                    (Some("input_text" | "output_text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(refuse(
                            format!("{at}[{k}]"),
                            "only text outputs can be translated",
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err(refuse(at, "must be a string or an array of text parts")),
    }
}

/// Appends `part` to the conversation: consecutive items of one role are one message.
fn push(messages: &mut Vec<Message>, role: Role, part: Part) {
    match messages.last_mut() {
        Some(last) if last.role == role => last.parts.push(part),
        _ => messages.push(Message {
            role,
            parts: vec![part],
        }),
    }
}

/// One `input` item into the conversation (or the system prompt).
fn item(
    item: &Value,
    at: &str,
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), Refusal> {
    let kind = item["type"].as_str().unwrap_or("message");
    match kind {
        "message" => {
            let parts = content(&item["content"], &format!("{at}.content"))?;
            let role = match item["role"].as_str() {
                Some("system" | "developer") => {
                    let mut text = String::new();
                    for part in parts {
                        match part {
                            Part::Text(t) => text.push_str(&t),
                            _ => {
                                return Err(refuse(
                                    format!("{at}.content"),
                                    "system messages hold text only",
                                ));
                            }
                        }
                    }
                    system.push(text);
                    return Ok(());
                }
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                _ => {
                    return Err(refuse(
                        format!("{at}.role"),
                        "must be user, assistant, system or developer",
                    ));
                }
            };
            for part in parts {
                push(messages, role, part);
            }
        }
        "function_call" => {
            let name = item["name"]
                .as_str()
                .ok_or_else(|| refuse(format!("{at}.name"), "is required"))?;
            let raw = item["arguments"].as_str().unwrap_or("{}");
            let arguments = if raw.trim().is_empty() {
                json!({})
            } else {
                serde_json::from_str(raw)
                    .map_err(|_| refuse(format!("{at}.arguments"), "is not valid JSON"))?
            };
            let id = item["call_id"]
                .as_str()
                .ok_or_else(|| refuse(format!("{at}.call_id"), "is required"))?;
            let call = Part::ToolCall {
                id: id.to_owned(),
                name: name.to_owned(),
                arguments,
            };
            push(messages, Role::Assistant, call);
        }
        "function_call_output" => {
            let call_id = item["call_id"]
                .as_str()
                .ok_or_else(|| refuse(format!("{at}.call_id"), "is required"))?;
            let result = Part::ToolResult {
                call_id: call_id.to_owned(),
                content: output_text(&item["output"], &format!("{at}.output"))?,
                is_error: false,
            };
            push(messages, Role::User, result);
        }
        "reasoning" => {
            let thinking = Part::Thinking {
                text: super::summary_text(item),
                signature: item["encrypted_content"]
                    .as_str()
                    .map(|s| Signature::read(s, Format::Responses)),
            };
            push(messages, Role::Assistant, thinking);
        }
        other => {
            return Err(refuse(
                format!("{at}.type"),
                &format!("items of type {other:?} cannot be translated"),
            ));
        }
    }
    Ok(())
}

fn input(value: &Value, system: &mut Vec<String>) -> Result<Vec<Message>, Refusal> {
    let mut messages = Vec::new();
    match value {
        Value::String(text) => messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text(text.clone())],
        }),
        Value::Array(items) if !items.is_empty() => {
            for (i, it) in items.iter().enumerate() {
                item(it, &format!("input[{i}]"), system, &mut messages)?;
            }
        }
        _ => return Err(refuse("input", "must be a string or a non-empty array of items")),
    }
    Ok(messages)
}

fn reasoning(value: Option<&Value>) -> Result<Option<Effort>, Refusal> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    match value["effort"].as_str() {
        None => Ok(None),
        Some("minimal" | "low") => Ok(Some(Effort::Low)),
        Some("medium") => Ok(Some(Effort::Medium)),
        Some("high") => Ok(Some(Effort::High)),
        Some(_) => Err(refuse("reasoning.effort", "must be minimal, low, medium or high")),
    }
}

/// Fields with a meaning the IR cannot carry: refused unless at their default.
fn check_options(document: &Map<String, Value>) -> Result<(), Refusal> {
    for (name, value) in document {
        if !KNOWN.contains(&name.as_str()) && !neutral(name, value) {
            return Err(refuse(
                name.as_str(),
                "cannot be translated for this model's provider",
            ));
        }
    }
    if document.contains_key("previous_response_id") && !document["previous_response_id"].is_null() {
        return Err(refuse(
            "previous_response_id",
            "the gateway keeps no conversation state: send the whole conversation in input",
        ));
    }
    if document.get("store") == Some(&Value::Bool(true)) {
        return Err(refuse(
            "store",
            "a translated response cannot be stored: set store to false",
        ));
    }
    if let Some(verbosity) = document.get("text").and_then(|t| t.get("verbosity"))
        && !verbosity.is_null()
    {
        return Err(refuse(
            "text.verbosity",
            "cannot be translated for this model's provider",
        ));
    }
    if let Some(include) = document.get("include").and_then(Value::as_array)
        && let Some(k) = include.iter().position(|v| v != "reasoning.encrypted_content")
    {
        return Err(refuse(
            format!("include[{k}]"),
            "only reasoning.encrypted_content can be included",
        ));
    }
    if let Some(t) = document.get("truncation").and_then(Value::as_str)
        && t != "disabled"
    {
        return Err(refuse("truncation", "only disabled can be translated"));
    }
    Ok(())
}

/// `text.format`: text (nothing asked), a JSON object, or JSON matching a schema.
fn output(document: &Map<String, Value>) -> Result<Option<JsonOutput>, Refusal> {
    let Some(format) = document
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
    else {
        return Ok(None);
    };
    let schema = match format["type"].as_str() {
        Some("text") => return Ok(None),
        Some("json_object") => None,
        Some("json_schema") => Some(JsonSchema {
            name: format["name"]
                .as_str()
                .ok_or_else(|| refuse("text.format.name", "is required"))?
                .to_owned(),
            schema: format.get("schema").cloned().unwrap_or_else(|| json!({})),
            strict: format["strict"] == Value::Bool(true),
        }),
        _ => {
            return Err(refuse(
                "text.format.type",
                "must be text, json_object or json_schema",
            ));
        }
    };
    Ok(Some(JsonOutput {
        param: "text.format",
        schema,
    }))
}

/// Decodes a Responses request. Refuses, naming the field, what the IR cannot carry
/// (stored conversations, built-in tools, structured output…).
pub fn decode_request(document: &Map<String, Value>) -> Result<Request, Refusal> {
    check_options(document)?;
    let mut system = Vec::new();
    if let Some(instructions) = document.get("instructions").filter(|v| !v.is_null()) {
        let text = instructions
            .as_str()
            .ok_or_else(|| refuse("instructions", "must be a string"))?;
        system.push(text.to_owned());
    }
    let messages = input(document.get("input").unwrap_or(&Value::Null), &mut system)?;
    let max_tokens = match document.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| refuse("max_output_tokens", "must be a positive integer"))?,
        ),
    };
    let stream = document.get("stream") == Some(&Value::Bool(true));
    Ok(Request {
        system,
        messages,
        tools: function_tools::tools(document.get("tools").unwrap_or(&Value::Null), Layout::Flat)?,
        tool_choice: function_tools::tool_choice(
            document.get("tool_choice").unwrap_or(&Value::Null),
            Layout::Flat,
        )?,
        parallel_tool_calls: document.get("parallel_tool_calls") != Some(&Value::Bool(false)),
        max_tokens,
        temperature: number(document, "temperature")?,
        top_p: number(document, "top_p")?,
        stop: Vec::new(),
        stream,
        stream_usage: false,
        reasoning: reasoning(document.get("reasoning"))?,
        user: document.get("user").and_then(Value::as_str).map(str::to_owned),
        output: output(document)?,
    })
}

fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt(),
        "input_tokens_details": { "cached_tokens": u.cache_read },
        "output_tokens": u.output,
        "output_tokens_details": { "reasoning_tokens": u.reasoning },
        "total_tokens": u.prompt() + u.output,
    })
}

/// `completed`, or `incomplete` with its reason.
fn status(finish: Finish) -> (&'static str, Value) {
    match finish {
        Finish::Length => ("incomplete", json!({ "reason": "max_output_tokens" })),
        Finish::ContentFilter => ("incomplete", json!({ "reason": "content_filter" })),
        Finish::Stop | Finish::ToolCalls => ("completed", Value::Null),
    }
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "status": status, "role": "assistant",
        "content": [{ "type": "output_text", "text": text, "annotations": [] }],
    })
}

fn call_item(call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "id": format!("fc_{call_id}"), "type": "function_call", "status": status,
        "call_id": call_id, "name": name, "arguments": arguments,
    })
}

fn reasoning_item(id: &str, text: &str, signature: Option<&str>) -> Value {
    let mut item = json!({
        "id": id, "type": "reasoning",
        "summary": [{ "type": "summary_text", "text": text }],
    });
    if let Some(signature) = signature {
        item["encrypted_content"] = Value::String(signature.to_owned());
    }
    item
}

fn response_object(id: &str, model: &str, created: i64, status: &str, output: Vec<Value>) -> Value {
    json!({
        "id": id, "object": "response", "created_at": created, "status": status,
        "model": model, "output": output, "error": null, "incomplete_details": null,
        "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "store": false,
    })
}

fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_owned()
    } else {
        format!("resp_{id}")
    }
}

/// Encodes a whole answer as a `response` object.
pub fn encode_response(response: &Response, created: i64) -> Value {
    let id = response_id(&response.id);
    let mut output = Vec::with_capacity(response.parts.len());
    for (k, part) in response.parts.iter().enumerate() {
        match part {
            Part::Text(text) => output.push(message_item(&format!("msg_{k}_{id}"), text, "completed")),
            Part::Thinking { text, signature } => {
                let signature = signature.as_ref().map(|s| s.shown_to(Format::Responses));
                output.push(reasoning_item(
                    &format!("rs_{k}_{id}"),
                    text,
                    signature.as_deref(),
                ));
            }
            Part::ToolCall { id, name, arguments } => {
                let arguments = match arguments {
                    Value::String(raw) => raw.clone(),
                    other => other.to_string(),
                };
                output.push(call_item(id, name, &arguments, "completed"));
            }
            Part::Image(_) | Part::ToolResult { .. } => {}
        }
    }
    let (status, incomplete) = status(response.finish);
    let mut value = response_object(&id, &response.model, created, status, output);
    value["incomplete_details"] = incomplete;
    value["usage"] = usage(&response.usage);
    value
}

/// The output item being streamed.
enum Open {
    None,
    Message {
        text: String,
    },
    Reasoning {
        text: String,
        signature: Option<Signature>,
    },
}

/// Turns IR events into Responses stream events (`response.created`, `output_item.*`,
/// `output_text.delta`, `function_call_arguments.delta`, … `response.completed`), each
/// with its `sequence_number`; the finished items are kept for the final response.
pub struct EventEncoder {
    created: i64,
    id: String,
    model: String,
    sequence: u64,
    output: Vec<Value>,
    open: Open,
    /// For each tool call (by stream index), its output index and arguments so far.
    calls: Vec<(usize, String)>,
    finish: Option<Finish>,
    usage: Usage,
    failed: bool,
}

impl EventEncoder {
    pub fn new(created: i64) -> EventEncoder {
        EventEncoder {
            created,
            id: String::new(),
            model: String::new(),
            sequence: 0,
            output: Vec::new(),
            open: Open::None,
            calls: Vec::new(),
            finish: None,
            usage: Usage::default(),
            failed: false,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut value: Value) {
        value["type"] = Value::String(kind.to_owned());
        value["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
        crate::formats::data(out, &value);
    }

    fn item_id(&self, prefix: &str, index: usize) -> String {
        format!("{prefix}_{index}_{}", self.id)
    }

    /// Closes the open message or reasoning item, if any.
    fn close(&mut self, out: &mut Vec<u8>) {
        let index = self.output.len();
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Message { text } => {
                let item_id = self.item_id("msg", index);
                let part = json!({ "type": "output_text", "text": text, "annotations": [] });
                let at = json!({ "item_id": item_id, "output_index": index, "content_index": 0 });
                let mut done = at.clone();
                done["text"] = Value::String(text.clone());
                self.emit(out, "response.output_text.done", done);
                let mut part_done = at;
                part_done["part"] = part;
                self.emit(out, "response.content_part.done", part_done);
                let item = message_item(&item_id, &text, "completed");
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({ "output_index": index, "item": item.clone() }),
                );
                self.output.push(item);
            }
            Open::Reasoning { text, signature } => {
                let item_id = self.item_id("rs", index);
                let at = json!({ "item_id": item_id, "output_index": index, "summary_index": 0 });
                let mut done = at.clone();
                done["text"] = Value::String(text.clone());
                self.emit(out, "response.reasoning_summary_text.done", done);
                let mut part_done = at;
                part_done["part"] = json!({ "type": "summary_text", "text": text });
                self.emit(out, "response.reasoning_summary_part.done", part_done);
                let signature = signature.map(|s| s.shown_to(Format::Responses));
                let item = reasoning_item(&item_id, &text, signature.as_deref());
                self.emit(
                    out,
                    "response.output_item.done",
                    json!({ "output_index": index, "item": item.clone() }),
                );
                self.output.push(item);
            }
        }
    }

    fn text(&mut self, out: &mut Vec<u8>, delta: String) {
        if !matches!(self.open, Open::Message { .. }) {
            self.close(out);
            let index = self.output.len();
            let item_id = self.item_id("msg", index);
            let item = json!({ "id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": [] });
            self.emit(
                out,
                "response.output_item.added",
                json!({ "output_index": index, "item": item }),
            );
            let part = json!({ "type": "output_text", "text": "", "annotations": [] });
            self.emit(
                out,
                "response.content_part.added",
                json!({ "item_id": item_id, "output_index": index, "content_index": 0, "part": part }),
            );
            self.open = Open::Message { text: String::new() };
        }
        let index = self.output.len();
        let item_id = self.item_id("msg", index);
        self.emit(
            out,
            "response.output_text.delta",
            json!({ "item_id": item_id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": [] }),
        );
        if let Open::Message { text } = &mut self.open {
            text.push_str(&delta);
        }
    }

    fn thinking(&mut self, out: &mut Vec<u8>, delta: String) {
        if !matches!(self.open, Open::Reasoning { .. }) {
            self.close(out);
            let index = self.output.len();
            let item_id = self.item_id("rs", index);
            let item = json!({ "id": item_id, "type": "reasoning", "summary": [] });
            self.emit(
                out,
                "response.output_item.added",
                json!({ "output_index": index, "item": item }),
            );
            let part = json!({ "type": "summary_text", "text": "" });
            self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({ "item_id": item_id, "output_index": index, "summary_index": 0, "part": part }),
            );
            self.open = Open::Reasoning {
                text: String::new(),
                signature: None,
            };
        }
        let index = self.output.len();
        let item_id = self.item_id("rs", index);
        self.emit(
            out,
            "response.reasoning_summary_text.delta",
            json!({ "item_id": item_id, "output_index": index, "summary_index": 0, "delta": delta }),
        );
        if let Open::Reasoning { text, .. } = &mut self.open {
            text.push_str(&delta);
        }
    }

    fn call_start(&mut self, out: &mut Vec<u8>, index: usize, id: String, name: String) {
        self.close(out);
        if index != self.calls.len() {
            return;
        }
        let at = self.output.len();
        let item = call_item(&id, &name, "", "in_progress");
        self.emit(
            out,
            "response.output_item.added",
            json!({ "output_index": at, "item": item.clone() }),
        );
        // The item's place is taken now; its arguments arrive later.
        self.output.push(item);
        self.calls.push((at, String::new()));
    }

    fn arguments(&mut self, out: &mut Vec<u8>, index: usize, delta: String) {
        let Some((at, arguments)) = self.calls.get_mut(index) else {
            return;
        };
        arguments.push_str(&delta);
        let at = *at;
        let item_id = self.output[at]["id"].clone();
        self.emit(
            out,
            "response.function_call_arguments.delta",
            json!({ "item_id": item_id, "output_index": at, "delta": delta }),
        );
    }

    /// Closes every item and sends the final response.
    fn end(&mut self, out: &mut Vec<u8>) {
        self.close(out);
        for (at, arguments) in std::mem::take(&mut self.calls) {
            let item = &mut self.output[at];
            item["arguments"] = Value::String(arguments.clone());
            item["status"] = "completed".into();
            let item_id = item["id"].clone();
            let item = item.clone();
            self.emit(
                out,
                "response.function_call_arguments.done",
                json!({ "item_id": item_id, "output_index": at, "arguments": arguments }),
            );
            self.emit(
                out,
                "response.output_item.done",
                json!({ "output_index": at, "item": item }),
            );
        }
        let (status, incomplete) = status(self.finish.unwrap_or(Finish::Stop));
        let output = std::mem::take(&mut self.output);
        let mut response = response_object(&self.id, &self.model, self.created, status, output);
        response["incomplete_details"] = incomplete;
        response["usage"] = usage(&self.usage);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.emit(out, kind, json!({ "response": response }));
    }
}

impl StreamEncoder for EventEncoder {
    fn encode(&mut self, event: Event, out: &mut Vec<u8>) {
        match event {
            Event::Start { id, model } => {
                self.id = response_id(&id);
                self.model = model;
                let response =
                    response_object(&self.id, &self.model, self.created, "in_progress", Vec::new());
                self.emit(out, "response.created", json!({ "response": response.clone() }));
                self.emit(out, "response.in_progress", json!({ "response": response }));
            }
            Event::Text(delta) => self.text(out, delta),
            Event::Thinking(delta) => self.thinking(out, delta),
            Event::Signature(signed) => {
                if !matches!(self.open, Open::Reasoning { signature: None, .. }) {
                    // A signature of its own (Gemini signs calls): an item to carry it.
                    self.close(out);
                    self.thinking(out, String::new());
                }
                if let Open::Reasoning { signature, .. } = &mut self.open {
                    *signature = Some(signed);
                }
            }
            Event::ToolCallStart { index, id, name } => self.call_start(out, index, id, name),
            Event::ToolArguments { index, delta } => self.arguments(out, index, delta),
            Event::Finish(finish) => self.finish = Some(finish),
            Event::Usage(usage) => self.usage = usage,
            Event::Error { code, message } => {
                self.failed = true;
                self.emit(
                    out,
                    "error",
                    json!({ "code": code, "message": message, "param": null }),
                );
            }
            Event::End if self.failed => {}
            Event::End => self.end(out),
        }
    }
}
