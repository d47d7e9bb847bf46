//! The upstream side of Anthropic Messages: the request encoded from the IR for an
//! Anthropic upstream, its answer and its stream events decoded into the IR.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::formats::ir::{
    Effort, Event, Finish, Image, Message, Part, Request, Response, Role, Signature, ToolChoice, Usage,
};
use crate::formats::{Format, StreamDecoder};

/// Anthropic requires `max_tokens`; this is used when the client set none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// The thinking budget of each effort (Anthropic needs at least 1,024).
fn budget(effort: Effort) -> u64 {
    match effort {
        Effort::Low => 1024,
        Effort::Medium => 8192,
        Effort::High => 24_576,
    }
}

fn block(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text(text) if text.is_empty() => return None,
        Part::Text(text) => json!({ "type": "text", "text": text }),
        Part::Image(Image::Url(url)) => json!({ "type": "image", "source": { "type": "url", "url": url } }),
        Part::Image(Image::Base64 { media_type, data }) => json!({
            "type": "image", "source": { "type": "base64", "media_type": media_type, "data": data }
        }),
        Part::ToolCall { id, name, arguments } => {
            json!({ "type": "tool_use", "id": id, "name": name, "input": arguments })
        }
        Part::ToolResult {
            call_id,
            content,
            is_error,
        } => {
            let mut result = json!({ "type": "tool_result", "tool_use_id": call_id, "content": content });
            if *is_error {
                result["is_error"] = Value::Bool(true);
            }
            result
        }
        // Only reasoning Anthropic signed can go back to Anthropic.
        Part::Thinking { text, signature } => {
            let signature = signature.as_ref()?.for_family(Format::Messages)?;
            json!({ "type": "thinking", "thinking": text, "signature": signature })
        }
    })
}

/// Consecutive turns of one role become one message (Anthropic wants the roles to
/// alternate); tool results lead their user turn, as Anthropic requires.
fn messages(list: &[Message]) -> Vec<Value> {
    let mut out: Vec<(Role, Vec<Value>)> = Vec::with_capacity(list.len());
    for message in list {
        let blocks = message.parts.iter().filter_map(block);
        match out.last_mut() {
            Some((role, content)) if *role == message.role => content.extend(blocks),
            _ => out.push((message.role, blocks.collect())),
        }
    }
    out.into_iter()
        .filter(|(_, content)| !content.is_empty())
        .map(|(role, mut content)| {
            content.sort_by_key(|b| b["type"] != "tool_result");
            let role = match role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({ "role": role, "content": content })
        })
        .collect()
}

/// Encodes `request` for an Anthropic upstream serving `model`.
/// What Anthropic refuses in a request it could otherwise be sent: a JSON output mode;
/// with thinking on, a temperature other than 1 or a `top_p` below 0.95.
pub fn refusals(request: &Request) -> Result<(), crate::formats::Refusal> {
    if let Some(output) = &request.output {
        return Err(crate::formats::refuse(
            output.param,
            "Anthropic's Messages API has no JSON output mode: ask for JSON in the prompt, or use a route to OpenAI or Gemini",
        ));
    }
    if request.reasoning.is_none() {
        return Ok(());
    }
    if request.temperature.is_some_and(|t| t != 1.0) {
        return Err(crate::formats::refuse(
            "temperature",
            "Anthropic takes no temperature but 1 while reasoning: leave it out or drop the reasoning effort",
        ));
    }
    if request.top_p.is_some_and(|p| p < 0.95) {
        return Err(crate::formats::refuse(
            "top_p",
            "Anthropic takes top_p from 0.95 to 1 while reasoning",
        ));
    }
    Ok(())
}

/// Whether Anthropic would take thinking for this conversation: with thinking on, the last
/// assistant turn, when it called tools, must open with its signed thinking — which a
/// client of another format (Chat) could not keep.
fn thinking_fits(messages: &[Message]) -> bool {
    let Some(last) = messages.iter().rev().find(|m| m.role == Role::Assistant) else {
        return true;
    };
    let called = last.parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    let signed = matches!(
        last.parts.first(),
        Some(Part::Thinking { signature: Some(s), .. }) if s.family == Format::Messages
    );
    !called || signed
}

/// Encodes `request` for Anthropic (after [`refusals`]). Reasoning is left out of a
/// request that continues a tool call without its signed thinking (Anthropic refuses
/// thinking then); it comes back on the next turn.
pub fn encode_request(request: &Request, model: &str) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    let mut max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(effort) = request.reasoning.filter(|_| thinking_fits(&request.messages)) {
        let budget = budget(effort);
        // The budget is part of max_tokens: keep the client's room for the answer.
        max_tokens += budget;
        body.insert(
            "thinking".into(),
            json!({ "type": "enabled", "budget_tokens": budget }),
        );
    }
    body.insert("max_tokens".into(), json!(max_tokens));
    if !request.system.is_empty() {
        body.insert("system".into(), json!(request.system.join("\n\n")));
    }
    body.insert("messages".into(), Value::Array(messages(&request.messages)));
    if !request.tools.is_empty() {
        let tools = request
            .tools
            .iter()
            .map(|t| {
                let mut tool = json!({ "name": t.name, "input_schema": t.parameters });
                if let Some(d) = &t.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let mut choice = match &request.tool_choice {
        None if request.parallel_tool_calls || request.tools.is_empty() => None,
        None | Some(ToolChoice::Auto) => Some(json!({ "type": "auto" })),
        Some(ToolChoice::None) => Some(json!({ "type": "none" })),
        Some(ToolChoice::Required) => Some(json!({ "type": "any" })),
        Some(ToolChoice::Named(name)) => Some(json!({ "type": "tool", "name": name })),
    };
    if let Some(choice) = &mut choice
        && !request.parallel_tool_calls
        && choice["type"] != "none"
    {
        choice["disable_parallel_tool_use"] = Value::Bool(true);
    }
    if let Some(choice) = choice {
        body.insert("tool_choice".into(), choice);
    }
    if !request.stop.is_empty() {
        body.insert("stop_sequences".into(), json!(request.stop));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if request.stream {
        body.insert("stream".into(), Value::Bool(true));
    }
    if let Some(user) = &request.user {
        body.insert("metadata".into(), json!({ "user_id": user }));
    }
    Value::Object(body)
}

fn finish(stop_reason: Option<&str>) -> Finish {
    match stop_reason {
        Some("max_tokens") => Finish::Length,
        Some("tool_use") => Finish::ToolCalls,
        Some("refusal") => Finish::ContentFilter,
        _ => Finish::Stop,
    }
}

fn count(usage: &Value, name: &str) -> u64 {
    usage[name].as_u64().unwrap_or(0)
}

fn usage(u: &Value) -> Usage {
    Usage {
        input: count(u, "input_tokens"),
        output: count(u, "output_tokens"),
        cache_read: count(u, "cache_read_input_tokens"),
        cache_write: count(u, "cache_creation_input_tokens"),
        reasoning: 0,
    }
}

/// Decodes a whole Messages answer; `None` when it is not one.
pub fn decode_response(body: &Value) -> Option<Response> {
    let content = body["content"].as_array()?;
    let parts = content
        .iter()
        .filter_map(|b| match b["type"].as_str()? {
            "text" => Some(Part::Text(b["text"].as_str()?.to_owned())),
            "tool_use" => Some(Part::ToolCall {
                id: b["id"].as_str()?.to_owned(),
                name: b["name"].as_str()?.to_owned(),
                arguments: b["input"].clone(),
            }),
            "thinking" => Some(Part::Thinking {
                text: b["thinking"].as_str()?.to_owned(),
                signature: b["signature"]
                    .as_str()
                    .map(|s| Signature::new(Format::Messages, s)),
            }),
            _ => None,
        })
        .collect();
    Some(Response {
        id: body["id"].as_str().unwrap_or_default().to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        parts,
        finish: finish(body["stop_reason"].as_str()),
        usage: usage(&body["usage"]),
    })
}

/// An Anthropic error body's code and message (`{"type":"error","error":{"type","message"}}`).
pub fn decode_error(body: &Value) -> Option<(String, String)> {
    let error = body.get("error")?;
    // Anthropic names the kind in `type`; the gateway's own envelope has a `code`.
    let code = error["code"]
        .as_str()
        .or_else(|| error["type"].as_str())
        .unwrap_or("upstream_error");
    let message = error["message"].as_str().unwrap_or("the upstream failed");
    Some((code.to_owned(), message.to_owned()))
}

/// One Anthropic stream event, read in one pass without building a JSON tree: every
/// event kind's fields side by side (serde's tagged enums would buffer the event first),
/// strings borrowed from the event's text unless they hold escapes.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    index: u64,
    #[serde(borrow)]
    message: Option<WireMessage<'a>>,
    #[serde(borrow)]
    content_block: Option<WireBlock<'a>>,
    /// A block's delta, or the message's (`stop_reason`).
    #[serde(borrow)]
    delta: Option<WireDelta<'a>>,
    usage: Option<Value>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct WireMessage<'a> {
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    model: Cow<'a, str>,
    #[serde(default)]
    usage: Value,
}

#[derive(Deserialize)]
struct WireBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    text: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(borrow)]
    signature: Option<Cow<'a, str>>,
    #[serde(borrow)]
    stop_reason: Option<Cow<'a, str>>,
}

/// Reads Anthropic stream events (`message_start`, `content_block_*`, `message_delta`,
/// `message_stop`, `error`) into IR events, keeping which content block is which tool call.
#[derive(Default)]
pub struct EventDecoder {
    /// For each Anthropic content-block index, the tool-call index it carries.
    tool_blocks: Vec<(u64, usize)>,
    tool_calls: usize,
    usage: Usage,
    ended: bool,
}

impl EventDecoder {
    fn tool_index(&self, block: u64) -> Option<usize> {
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == block)
            .map(|(_, i)| *i)
    }

    fn block_delta(&mut self, index: u64, delta: WireDelta, out: &mut Vec<Event>) {
        match delta.kind.as_ref() {
            "text_delta" => out.extend(delta.text.map(|t| Event::Text(t.into_owned()))),
            "thinking_delta" => out.extend(delta.thinking.map(|t| Event::Thinking(t.into_owned()))),
            "signature_delta" => {
                if let Some(signature) = delta.signature {
                    out.push(Event::Signature(Signature::new(Format::Messages, signature)));
                }
            }
            "input_json_delta" => {
                if let (Some(call), Some(partial)) = (self.tool_index(index), delta.partial_json) {
                    out.push(Event::ToolArguments {
                        index: call,
                        delta: partial.into_owned(),
                    });
                }
            }
            _ => {}
        }
    }

    fn fail(&mut self, error: &Value, out: &mut Vec<Event>) {
        let (code, message) = decode_error(&json!({ "error": error }))
            .unwrap_or_else(|| ("upstream_error".into(), "the upstream failed".into()));
        out.push(Event::Error { code, message });
        self.ended = true;
        out.push(Event::End);
    }

    fn end(&mut self, out: &mut Vec<Event>) {
        if !self.ended {
            self.ended = true;
            out.push(Event::Usage(self.usage));
            out.push(Event::End);
        }
    }
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, name: &str, data: &str, out: &mut Vec<Event>) {
        let event = match serde_json::from_str::<WireEvent>(data) {
            Ok(event) => event,
            // The gateway's own error event (`{"error": {…}}`) has no `type`.
            Err(_) if name == "error" => match serde_json::from_str::<Value>(data) {
                Ok(value) => return self.fail(&value["error"], out),
                Err(_) => return,
            },
            Err(_) => return,
        };
        match event.kind.as_ref() {
            "message_start" => {
                let Some(message) = event.message else { return };
                self.usage = usage(&message.usage);
                out.push(Event::Start {
                    id: message.id.into_owned(),
                    model: message.model.into_owned(),
                });
            }
            "content_block_start" => {
                let Some(block) = event.content_block else { return };
                match block.kind.as_ref() {
                    "tool_use" => {
                        let call = self.tool_calls;
                        self.tool_calls += 1;
                        self.tool_blocks.push((event.index, call));
                        out.push(Event::ToolCallStart {
                            index: call,
                            id: block.id.into_owned(),
                            name: block.name.into_owned(),
                        });
                    }
                    "text" if !block.text.is_empty() => out.push(Event::Text(block.text.into_owned())),
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = event.delta else { return };
                self.block_delta(event.index, delta, out);
            }
            "message_delta" => {
                if let Some(later) = event.usage.as_ref().filter(|u| u.is_object()) {
                    let later = usage(later);
                    self.usage.output = self.usage.output.max(later.output);
                    self.usage.input = self.usage.input.max(later.input);
                    self.usage.cache_read = self.usage.cache_read.max(later.cache_read);
                    self.usage.cache_write = self.usage.cache_write.max(later.cache_write);
                }
                if let Some(reason) = event.delta.and_then(|d| d.stop_reason) {
                    out.push(Event::Finish(finish(Some(&reason))));
                }
            }
            "message_stop" => self.end(out),
            "error" => self.fail(event.error.as_ref().unwrap_or(&Value::Null), out),
            _ => {}
        }
    }

    fn ended(&self) -> bool {
        self.ended
    }
}
