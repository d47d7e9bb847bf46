//! The upstream side of OpenAI Responses: the IR encoded as a Responses request (for
//! OpenAI's API or the Codex backend of a ChatGPT subscription), the answer and its
//! stream events decoded back.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::formats::ir::{
    Effort, Event, Finish, Image, Part, Request, Response, Role, Signature, ToolChoice, Usage, tool_arguments,
};
use crate::formats::{Format, Refusal, StreamDecoder, refuse};

fn effort(effort: Effort) -> &'static str {
    match effort {
        Effort::Low => "low",
        Effort::Medium => "medium",
        Effort::High => "high",
    }
}

fn image_url(image: &Image) -> String {
    match image {
        Image::Url(url) => url.clone(),
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

/// The conversation as `input` items: user parts as one message (tool results as
/// `function_call_output` items), assistant text as `output_text` messages and calls as
/// `function_call` items; reasoning of earlier turns as `reasoning` items when OpenAI
/// signed it (`encrypted_content`), else left out (another provider's cannot be read).
fn input(request: &Request) -> Vec<Value> {
    let mut items = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        let mut content = Vec::new();
        let flush = |content: &mut Vec<Value>, items: &mut Vec<Value>| {
            if !content.is_empty() {
                let role = if message.role == Role::User {
                    "user"
                } else {
                    "assistant"
                };
                items.push(json!({ "type": "message", "role": role, "content": std::mem::take(content) }));
            }
        };
        for part in &message.parts {
            match (message.role, part) {
                (Role::User, Part::Text(text)) => content.push(json!({ "type": "input_text", "text": text })),
                (Role::Assistant, Part::Text(text)) => {
                    content.push(json!({ "type": "output_text", "text": text }));
                }
                (Role::User, Part::Image(image)) => {
                    content.push(json!({ "type": "input_image", "image_url": image_url(image) }));
                }
                (
                    _,
                    Part::ToolResult {
                        call_id,
                        content: text,
                        is_error,
                    },
                ) => {
                    flush(&mut content, &mut items);
                    let output = if *is_error {
                        format!("Error: {text}")
                    } else {
                        text.clone()
                    };
                    items.push(
                        json!({ "type": "function_call_output", "call_id": call_id, "output": output }),
                    );
                }
                (_, Part::ToolCall { id, name, arguments }) => {
                    flush(&mut content, &mut items);
                    let arguments = match arguments {
                        Value::String(raw) => raw.clone(),
                        other => other.to_string(),
                    };
                    items.push(json!({ "type": "function_call", "call_id": id, "name": name, "arguments": arguments }));
                }
                (_, Part::Thinking { text, signature }) => {
                    if let Some(encrypted) = signature.as_ref().and_then(|s| s.for_family(Format::Responses))
                    {
                        flush(&mut content, &mut items);
                        let summary: Vec<Value> = if text.is_empty() {
                            Vec::new()
                        } else {
                            vec![json!({ "type": "summary_text", "text": text })]
                        };
                        items.push(json!({ "type": "reasoning", "summary": summary, "encrypted_content": encrypted }));
                    }
                }
                (Role::Assistant, Part::Image(_)) => {}
            }
        }
        flush(&mut content, &mut items);
    }
    items
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Named(name) => json!({ "type": "function", "name": name }),
    }
}

/// What the Codex backend refuses: a token cap, sampling settings, stop sequences.
fn codex_refusals(request: &Request) -> Result<(), Refusal> {
    let why = "the Codex backend does not take it";
    if request.temperature.is_some_and(|t| t != 1.0) {
        return Err(refuse("temperature", why));
    }
    if request.top_p.is_some_and(|p| p != 1.0) {
        return Err(refuse("top_p", why));
    }
    if !request.stop.is_empty() {
        return Err(refuse("stop", why));
    }
    Ok(())
}

/// Encodes a request for `model`. `codex`: the ChatGPT backend, which streams only,
/// stores nothing, requires `instructions` and takes no token cap (the subscription sets
/// it) — its answer is collected when the client wanted it whole.
pub fn encode_request(request: &Request, model: &str, codex: bool) -> Result<Value, Refusal> {
    if !request.stop.is_empty() && !codex {
        return Err(refuse("stop", "the Responses API has no stop sequences"));
    }
    if codex {
        codex_refusals(request)?;
    }
    let mut body = json!({
        "model": model,
        "input": input(request),
        "stream": request.stream || codex,
        "store": false,
    });
    if !request.system.is_empty() || codex {
        body["instructions"] = Value::String(request.system.join("\n\n"));
    }
    if !request.tools.is_empty() {
        let tools: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({ "type": "function", "name": t.name, "description": t.description, "parameters": t.parameters }))
            .collect();
        body["tools"] = Value::Array(tools);
        body["parallel_tool_calls"] = Value::Bool(request.parallel_tool_calls);
    }
    if let Some(choice) = request.tool_choice.as_ref().filter(|_| !request.tools.is_empty()) {
        body["tool_choice"] = tool_choice(choice);
    }
    if let Some(output) = &request.output {
        let format = match &output.schema {
            None => json!({ "type": "json_object" }),
            Some(s) => {
                json!({ "type": "json_schema", "name": s.name, "schema": s.schema, "strict": s.strict })
            }
        };
        body["text"] = json!({ "format": format });
    }
    if let Some(e) = request.reasoning {
        body["reasoning"] = json!({ "effort": effort(e), "summary": "auto" });
        body["include"] = json!(["reasoning.encrypted_content"]);
    }
    if !codex {
        if let Some(max) = request.max_tokens {
            body["max_output_tokens"] = max.into();
        }
        if let Some(t) = request.temperature {
            body["temperature"] = t.into();
        }
        if let Some(p) = request.top_p {
            body["top_p"] = p.into();
        }
        if let Some(user) = &request.user {
            body["user"] = Value::String(user.clone());
        }
    }
    Ok(body)
}

fn count(value: &Value) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn usage(u: &Value) -> Usage {
    let cached = count(&u["input_tokens_details"]["cached_tokens"]);
    Usage {
        input: count(&u["input_tokens"]).saturating_sub(cached),
        output: count(&u["output_tokens"]),
        cache_read: cached,
        cache_write: 0,
        reasoning: count(&u["output_tokens_details"]["reasoning_tokens"]),
    }
}

fn finish(response: &Value, has_calls: bool) -> Finish {
    match response["incomplete_details"]["reason"].as_str() {
        Some("max_output_tokens") => Finish::Length,
        Some("content_filter") => Finish::ContentFilter,
        _ if has_calls => Finish::ToolCalls,
        _ => Finish::Stop,
    }
}

/// Decodes a `response` object (`None` when the body is not one).
pub fn decode_response(body: &Value) -> Option<Response> {
    if body["object"] != "response" {
        return None;
    }
    let mut parts = Vec::new();
    for item in body["output"].as_array()? {
        match item["type"].as_str() {
            Some("message") => {
                let text: String = item["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["text"].as_str().or_else(|| c["refusal"].as_str()))
                    .collect();
                parts.push(Part::Text(text));
            }
            Some("function_call") => parts.push(Part::ToolCall {
                id: item["call_id"].as_str().unwrap_or_default().to_owned(),
                name: item["name"].as_str().unwrap_or_default().to_owned(),
                arguments: tool_arguments(item["arguments"].as_str().unwrap_or_default()),
            }),
            Some("reasoning") => parts.push(Part::Thinking {
                text: super::summary_text(item),
                signature: item["encrypted_content"]
                    .as_str()
                    .map(|s| Signature::new(Format::Responses, s)),
            }),
            _ => {}
        }
    }
    let has_calls = parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    Some(Response {
        id: body["id"].as_str().unwrap_or_default().to_owned(),
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        parts,
        finish: finish(body, has_calls),
        usage: usage(&body["usage"]),
    })
}

/// An error body's code and message: OpenAI's `{"error": {…}}`, or the Codex backend's
/// `{"detail": "…"}`.
pub fn decode_error(body: &Value) -> Option<(String, String)> {
    if let Some(detail) = body["detail"].as_str() {
        return Some(("upstream_error".into(), detail.to_owned()));
    }
    let error = body.get("error").filter(|e| e.is_object())?;
    let code = error["code"]
        .as_str()
        .or_else(|| error["type"].as_str())
        .unwrap_or("upstream_error");
    let message = error["message"].as_str().unwrap_or("the upstream failed");
    Some((code.to_owned(), message.to_owned()))
}

/// One Responses stream event, read in one pass: every event kind's fields side by side
/// (serde's tagged enums would buffer each event, whole responses included, first); the
/// parts of the response snapshot nobody reads are skipped, not built.
#[derive(Deserialize)]
struct WireEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    output_index: u64,
    #[serde(borrow)]
    delta: Option<Cow<'a, str>>,
    item: Option<WireItem>,
    response: Option<WireResponse>,
    code: Option<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct WireItem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    call_id: String,
    #[serde(default)]
    name: String,
    encrypted_content: Option<String>,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    incomplete_details: Value,
    #[serde(default)]
    usage: Value,
    #[serde(default)]
    error: Value,
}

/// Reads Responses stream events into IR events, keeping which output item is which
/// tool call.
#[derive(Default)]
pub struct EventDecoder {
    /// For each output index that is a function call, its tool-call index.
    calls: Vec<(u64, usize)>,
    ended: bool,
}

impl EventDecoder {
    fn fail(&mut self, out: &mut Vec<Event>, code: String, message: String) {
        out.push(Event::Error { code, message });
        self.ended = true;
        out.push(Event::End);
    }
}

impl StreamDecoder for EventDecoder {
    fn decode(&mut self, _name: &str, data: &str, out: &mut Vec<Event>) {
        let Ok(event) = serde_json::from_str::<WireEvent>(data) else {
            return;
        };
        match event.kind.as_ref() {
            "response.created" => {
                let Some(response) = event.response else { return };
                out.push(Event::Start {
                    id: response.id,
                    model: response.model,
                });
            }
            "response.output_item.added" => {
                let Some(item) = event.item.filter(|i| i.kind == "function_call") else {
                    return;
                };
                let index = self.calls.len();
                self.calls.push((event.output_index, index));
                out.push(Event::ToolCallStart {
                    index,
                    id: item.call_id,
                    name: item.name,
                });
            }
            "response.output_item.done" => {
                let signature = event
                    .item
                    .filter(|i| i.kind == "reasoning")
                    .and_then(|i| i.encrypted_content);
                if let Some(signature) = signature {
                    out.push(Event::Signature(Signature::new(Format::Responses, signature)));
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                out.extend(event.delta.map(|d| Event::Text(d.into_owned())));
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                out.extend(event.delta.map(|d| Event::Thinking(d.into_owned())));
            }
            "response.function_call_arguments.delta" => {
                let call = self.calls.iter().find(|(o, _)| *o == event.output_index);
                if let (Some(&(_, index)), Some(delta)) = (call, event.delta) {
                    out.push(Event::ToolArguments {
                        index,
                        delta: delta.into_owned(),
                    });
                }
            }
            "response.completed" | "response.incomplete" => {
                let Some(response) = event.response else { return };
                let shape = json!({ "incomplete_details": response.incomplete_details });
                out.push(Event::Finish(finish(&shape, !self.calls.is_empty())));
                out.push(Event::Usage(usage(&response.usage)));
                self.ended = true;
                out.push(Event::End);
            }
            "response.failed" => {
                let error = event.response.map(|r| r.error).unwrap_or_default();
                let code = error["code"].as_str().unwrap_or("upstream_error").to_owned();
                let message = error["message"]
                    .as_str()
                    .unwrap_or("the upstream failed")
                    .to_owned();
                self.fail(out, code, message);
            }
            "error" => self.fail(
                out,
                event.code.unwrap_or_else(|| "upstream_error".into()),
                event.message.unwrap_or_else(|| "the upstream failed".into()),
            ),
            _ => {}
        }
    }

    fn ended(&self) -> bool {
        self.ended
    }
}
