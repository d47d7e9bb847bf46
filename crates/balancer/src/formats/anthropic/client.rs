//! The client side of Anthropic Messages (`POST /v1/messages`, as Claude Code sends it):
//! the client's request decoded into the IR, the answer and its event stream encoded from
//! it. The only upstream this serves today speaks OpenAI Chat Completions.
//!
//! What the decoder refuses is named in a 400; two things are deliberately not refused:
//! - `cache_control` markers (on system blocks, content blocks and tools) are ignored:
//!   OpenAI caches prompt prefixes by itself, so the marker's purpose is served without
//!   it, and Claude Code sends one on every request;
//! - thinking blocks of earlier assistant turns are kept in the IR but cannot be sent
//!   back to an OpenAI upstream, whose Chat format has no field for them.
//!
//! On the way back, OpenAI does not say which stop sequence ended an answer, so such an
//! answer ends with `end_turn` (and `stop_sequence: null`); and OpenAI reports a stream's
//! usage last, so `message_start` carries zeros and `message_delta` the real counts.

use serde_json::{Map, Value, json};

use crate::formats::ir::{
    Effort, Event, Finish, Image, Message, Part, Request, Response, Role, Signature, Tool, ToolChoice, Usage,
};
use crate::formats::{Format, Refusal, StreamEncoder, joined_text, neutral, number, refuse};

/// Request fields this decoder reads; any other field set to a value that means
/// something is refused rather than dropped.
const KNOWN: [&str; 13] = [
    "model",
    "messages",
    "system",
    "max_tokens",
    "stop_sequences",
    "temperature",
    "top_p",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
    "thinking",
    "top_k",
];

/// The reasoning effort of a thinking budget.
fn effort(budget_tokens: u64) -> Effort {
    match budget_tokens {
        0..=2048 => Effort::Low,
        2049..=12_288 => Effort::Medium,
        _ => Effort::High,
    }
}

/// `system`: a string or text blocks (their `cache_control` ignored, see the module doc).
fn system(value: &Value) -> Result<Vec<String>, Refusal> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(
                |(i, block)| match (block["type"].as_str(), block["text"].as_str()) {
                    (Some("text"), Some(text)) => Ok(text.to_owned()),
                    _ => Err(refuse(format!("system[{i}]"), "only text blocks are supported")),
                },
            )
            .collect(),
        _ => Err(refuse("system", "must be a string or an array of text blocks")),
    }
}

fn image(source: &Value, at: &str) -> Result<Image, Refusal> {
    match source["type"].as_str() {
        Some("base64") => match (source["media_type"].as_str(), source["data"].as_str()) {
            (Some(media_type), Some(data)) => Ok(Image::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            }),
            _ => Err(refuse(
                format!("{at}.source"),
                "a base64 image needs media_type and data",
            )),
        },
        Some("url") => source["url"]
            .as_str()
            .map(|url| Image::Url(url.to_owned()))
            .ok_or_else(|| refuse(format!("{at}.source.url"), "is required")),
        _ => Err(refuse(
            format!("{at}.source.type"),
            "only base64 and url images can be translated",
        )),
    }
}

/// A tool result's content: a string or text blocks.
fn result_text(value: &Value, at: &str) -> Result<String, Refusal> {
    joined_text(value, at, "only text can be translated in a tool result")
}

fn block(block: &Value, at: &str) -> Result<Option<Part>, Refusal> {
    let text = |field: &str| {
        block[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| refuse(format!("{at}.{field}"), "is required"))
    };
    Ok(Some(match block["type"].as_str() {
        Some("text") => Part::Text(text("text")?),
        Some("image") => Part::Image(image(&block["source"], at)?),
        Some("tool_use") => Part::ToolCall {
            id: text("id")?,
            name: text("name")?,
            arguments: match &block["input"] {
                Value::Null => json!({}),
                input => input.clone(),
            },
        },
        Some("tool_result") => Part::ToolResult {
            call_id: text("tool_use_id")?,
            content: result_text(&block["content"], &format!("{at}.content"))?,
            is_error: block["is_error"] == Value::Bool(true),
        },
        Some("thinking") => Part::Thinking {
            text: text("thinking")?,
            signature: block["signature"]
                .as_str()
                .map(|s| Signature::read(s, Format::Messages)),
        },
        // Encrypted reasoning only Anthropic can read: nothing to carry elsewhere.
        Some("redacted_thinking") => return Ok(None),
        Some(other) => {
            return Err(refuse(
                format!("{at}.type"),
                &format!("blocks of type {other:?} cannot be translated"),
            ));
        }
        None => return Err(refuse(format!("{at}.type"), "is required")),
    }))
}

fn messages(list: &Value) -> Result<Vec<Message>, Refusal> {
    let list = list
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| refuse("messages", "must be a non-empty array"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, message) in list.iter().enumerate() {
        let at = format!("messages[{i}]");
        let role = match message["role"].as_str() {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some(other) => {
                return Err(refuse(
                    format!("{at}.role"),
                    &format!("{other:?} is not a Messages role"),
                ));
            }
            None => return Err(refuse(format!("{at}.role"), "is required")),
        };
        let parts = match &message["content"] {
            Value::String(s) => vec![Part::Text(s.clone())],
            Value::Array(blocks) => {
                let mut parts = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    parts.extend(block(b, &format!("{at}.content[{j}]"))?);
                }
                parts
            }
            _ => {
                return Err(refuse(
                    format!("{at}.content"),
                    "must be a string or an array of blocks",
                ));
            }
        };
        out.push(Message { role, parts });
    }
    Ok(out)
}

fn tools(list: &Value) -> Result<Vec<Tool>, Refusal> {
    let Some(list) = list.as_array() else {
        return Ok(Vec::new());
    };
    list.iter()
        .enumerate()
        .map(|(i, tool)| {
            let at = format!("tools[{i}]");
            // Server tools (web search, code execution, computer use…) run at Anthropic.
            if !matches!(tool["type"].as_str(), None | Some("custom")) {
                return Err(refuse(
                    format!("{at}.type"),
                    "only custom tools can be translated",
                ));
            }
            let name = tool["name"]
                .as_str()
                .ok_or_else(|| refuse(format!("{at}.name"), "is required"))?;
            Ok(Tool {
                name: name.to_owned(),
                description: tool["description"].as_str().map(str::to_owned),
                parameters: match &tool["input_schema"] {
                    Value::Null => json!({ "type": "object", "properties": {} }),
                    schema => schema.clone(),
                },
            })
        })
        .collect()
}

/// The choice, and whether several calls may come in one answer.
fn tool_choice(value: &Value) -> Result<(Option<ToolChoice>, bool), Refusal> {
    if value.is_null() {
        return Ok((None, true));
    }
    let choice = match value["type"].as_str() {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => ToolChoice::Named(
            value["name"]
                .as_str()
                .ok_or_else(|| refuse("tool_choice.name", "is required"))?
                .to_owned(),
        ),
        _ => {
            return Err(refuse("tool_choice.type", "must be auto, any, tool or none"));
        }
    };
    Ok((
        Some(choice),
        value["disable_parallel_tool_use"] != Value::Bool(true),
    ))
}

fn reasoning(thinking: Option<&Value>) -> Result<Option<Effort>, Refusal> {
    let Some(thinking) = thinking.filter(|t| !t.is_null()) else {
        return Ok(None);
    };
    match thinking["type"].as_str() {
        Some("disabled") => Ok(None),
        Some("enabled") => thinking["budget_tokens"]
            .as_u64()
            .map(|budget| Some(effort(budget)))
            .ok_or_else(|| refuse("thinking.budget_tokens", "must be a positive integer")),
        _ => Err(refuse("thinking.type", "must be enabled or disabled")),
    }
}

/// Decodes a Messages request. Refuses, naming the field, what an OpenAI upstream cannot
/// be asked (`top_k`, server tools, documents, unknown fields with a value).
pub fn decode_request(document: &Map<String, Value>) -> Result<Request, Refusal> {
    for (name, value) in document {
        if !KNOWN.contains(&name.as_str()) && !neutral(name, value) {
            return Err(refuse(
                name.as_str(),
                "cannot be translated for this model's provider",
            ));
        }
    }
    if document.get("top_k").is_some_and(|v| !v.is_null()) {
        return Err(refuse("top_k", "OpenAI models have no top_k sampling"));
    }
    let metadata = document.get("metadata").unwrap_or(&Value::Null);
    if let Some((name, _)) = metadata
        .as_object()
        .into_iter()
        .flatten()
        .find(|(name, value)| *name != "user_id" && !neutral(name, value))
    {
        return Err(refuse(
            format!("metadata.{name}"),
            "cannot be translated for this model's provider",
        ));
    }
    let max_tokens = match document.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| refuse("max_tokens", "must be a positive integer"))?,
        ),
    };
    let stop = match document.get("stop_sequences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| refuse("stop_sequences", "must hold strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(refuse("stop_sequences", "must be an array of strings")),
    };
    let (tool_choice, parallel_tool_calls) =
        tool_choice(document.get("tool_choice").unwrap_or(&Value::Null))?;
    Ok(Request {
        system: system(document.get("system").unwrap_or(&Value::Null))?,
        messages: messages(document.get("messages").unwrap_or(&Value::Null))?,
        tools: tools(document.get("tools").unwrap_or(&Value::Null))?,
        tool_choice,
        parallel_tool_calls,
        max_tokens,
        temperature: number(document, "temperature")?,
        top_p: number(document, "top_p")?,
        stop,
        stream: document.get("stream") == Some(&Value::Bool(true)),
        stream_usage: false,
        reasoning: reasoning(document.get("thinking"))?,
        user: metadata["user_id"].as_str().map(str::to_owned),
        output: None,
    })
}

fn stop_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    }
}

fn usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "output_tokens": u.output,
        "cache_read_input_tokens": u.cache_read,
        "cache_creation_input_tokens": u.cache_write,
    })
}

/// Anthropic's message ids start with `msg_`.
fn message_id(id: &str) -> String {
    if id.is_empty() {
        format!("msg_{:024x}", rand::random::<u128>() >> 32)
    } else {
        format!("msg_{id}")
    }
}

/// A tool call's input as an object: arguments that were not JSON are kept under `raw`
/// rather than lost.
fn tool_input(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(raw) => json!({ "raw": raw }),
        other => json!({ "value": other }),
    }
}

/// Encodes a whole answer as a Messages `message`.
pub fn encode_response(response: &Response) -> Value {
    let content: Vec<Value> = response
        .parts
        .iter()
        .filter_map(|part| match part {
            Part::Text(text) if text.is_empty() => None,
            Part::Text(text) => Some(json!({ "type": "text", "text": text })),
            Part::Thinking { text, signature } => Some(json!({
                "type": "thinking", "thinking": text,
                "signature": signature.as_ref().map(|s| s.shown_to(Format::Messages)).unwrap_or_default(),
            })),
            Part::ToolCall { id, name, arguments } => Some(json!({
                "type": "tool_use", "id": id, "name": name, "input": tool_input(arguments),
            })),
            Part::Image(_) | Part::ToolResult { .. } => None,
        })
        .collect();
    json!({
        "id": message_id(&response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason(response.finish),
        "stop_sequence": null,
        "usage": usage(&response.usage),
    })
}

/// Anthropic's name for an error of this HTTP status (its `error.type`), unless the
/// upstream already used one of Anthropic's names.
fn error_type(status: u16, code: &str) -> &str {
    const ANTHROPIC: [&str; 9] = [
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "overloaded_error",
    ];
    if ANTHROPIC.contains(&code) {
        return code;
    }
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An error in Anthropic's shape (`{"type":"error","error":{"type","message"}}`).
pub fn encode_error(status: u16, code: &str, message: &str) -> Value {
    json!({ "type": "error", "error": { "type": error_type(status, code), "message": message } })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Thinking,
    /// The IR tool-call index.
    Tool(usize),
}

/// Turns IR events into Anthropic's stream grammar: `message_start`, then per content
/// block `content_block_start`/`_delta`/`_stop` (opening a block closes the previous
/// one; blocks are numbered from 0 whatever their kind), then `message_delta` with the
/// stop reason and usage, and `message_stop`.
#[derive(Default)]
pub struct EventEncoder {
    started: bool,
    open: Option<(usize, Block)>,
    /// Blocks opened so far (the next block's index).
    blocks: usize,
    /// For each IR tool call, its block index.
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<Finish>,
    usage: Usage,
    failed: bool,
}

fn event(out: &mut Vec<u8>, name: &str, value: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    crate::formats::data(out, value);
}

impl EventEncoder {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        self.started = true;
        // The prompt's size is only known at the end (OpenAI reports usage last): the
        // final counts come in `message_delta`.
        let message = json!({
            "id": message_id(id), "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": { "input_tokens": 0, "output_tokens": 0 },
        });
        event(
            out,
            "message_start",
            &json!({ "type": "message_start", "message": message }),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({ "type": "content_block_stop", "index": index }),
            );
        }
    }

    /// The index of the open block of kind `kind`, opening it (and closing another) first.
    fn block(&mut self, kind: Block, start: Value, out: &mut Vec<u8>) -> usize {
        if !self.started {
            self.start("", "", out);
        }
        if let Some((index, open)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.blocks;
        self.blocks += 1;
        self.open = Some((index, kind));
        event(
            out,
            "content_block_start",
            &json!({ "type": "content_block_start", "index": index, "content_block": start }),
        );
        index
    }

    fn delta(out: &mut Vec<u8>, index: usize, delta: Value) {
        event(
            out,
            "content_block_delta",
            &json!({ "type": "content_block_delta", "index": index, "delta": delta }),
        );
    }
}

impl StreamEncoder for EventEncoder {
    fn encode(&mut self, e: Event, out: &mut Vec<u8>) {
        if self.failed {
            return;
        }
        match e {
            Event::Start { id, model } => {
                if !self.started {
                    self.start(&id, &model, out);
                }
            }
            Event::Text(text) => {
                let index = self.block(Block::Text, json!({ "type": "text", "text": "" }), out);
                Self::delta(out, index, json!({ "type": "text_delta", "text": text }));
            }
            Event::Thinking(text) => {
                let start = json!({ "type": "thinking", "thinking": "" });
                let index = self.block(Block::Thinking, start, out);
                Self::delta(out, index, json!({ "type": "thinking_delta", "thinking": text }));
            }
            Event::Signature(signature) => {
                let start = json!({ "type": "thinking", "thinking": "" });
                let index = self.block(Block::Thinking, start, out);
                let signature = signature.shown_to(Format::Messages);
                Self::delta(
                    out,
                    index,
                    json!({ "type": "signature_delta", "signature": signature }),
                );
                // A signature ends its block: what follows opens a new one.
                self.close(out);
            }
            Event::ToolCallStart { index, id, name } => {
                let start = json!({ "type": "tool_use", "id": id, "name": name, "input": {} });
                let block = self.block(Block::Tool(index), start, out);
                self.tool_blocks.push((index, block));
            }
            Event::ToolArguments { index, delta } => {
                // Arguments of a call whose block was closed go to that block's index:
                // Anthropic's clients gather deltas by index.
                if let Some((_, block)) = self.tool_blocks.iter().find(|(call, _)| *call == index) {
                    Self::delta(
                        out,
                        *block,
                        json!({ "type": "input_json_delta", "partial_json": delta }),
                    );
                }
            }
            Event::Finish(finish) => self.finish = Some(finish),
            Event::Usage(usage) => self.usage = usage,
            Event::Error { code, message } => {
                self.failed = true;
                event(out, "error", &encode_error(502, &code, &message));
            }
            Event::End => {
                if !self.started {
                    self.start("", "", out);
                }
                self.close(out);
                let delta = json!({
                    "type": "message_delta",
                    "delta": { "stop_reason": stop_reason(self.finish.unwrap_or(Finish::Stop)), "stop_sequence": null },
                    "usage": usage(&self.usage),
                });
                event(out, "message_delta", &delta);
                event(out, "message_stop", &json!({ "type": "message_stop" }));
            }
        }
    }
}
