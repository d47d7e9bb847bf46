//! The upstream side of Gemini `generateContent`: the request encoded for a Gemini API-key
//! upstream, its answer and the chunks of `streamGenerateContent?alt=sse` decoded.
//!
//! Gemini names function results by the function's name, not by a call id: a result is
//! matched to its call through the conversation (the assistant turn that made the call
//! carries both). Gemini gives calls no ids of its own, so answers number them
//! (`call_<n>_<name>`) and the client sends those back.

use serde_json::{Map, Value, json};

use crate::formats::ir::{
    Effort, Event, Finish, Image, Part, Request, Response, Role, Signature, ToolChoice, Usage,
};
use crate::formats::{Format, Refusal, StreamDecoder};

pub(super) fn budget(effort: Effort) -> u64 {
    match effort {
        Effort::Low => 1024,
        Effort::Medium => 8192,
        Effort::High => 24_576,
    }
}

fn refuse(param: &str, why: &str) -> Refusal {
    Refusal {
        param: param.to_owned(),
        message: format!("{param}: {why}"),
    }
}

/// The name of the function each call id belongs to, from the conversation's calls.
fn call_names(request: &Request) -> Vec<(&str, &str)> {
    request
        .messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolCall { id, name, .. } => Some((id.as_str(), name.as_str())),
            _ => None,
        })
        .collect()
}

/// Gemini 3 refuses a model turn whose first function call is unsigned; a conversation
/// that began elsewhere (or with a client that keeps no signatures) has none, so that call
/// gets the validator-skipping signature Google documents for such histories.
fn sign_first_call(parts: &mut [Value], model: &str) {
    const SKIP_VALIDATOR: &str = "skip_thought_signature_validator";
    if !model.starts_with("gemini-3") {
        return;
    }
    if let Some(call) = parts.iter_mut().find(|p| p.get("functionCall").is_some())
        && call.get("thoughtSignature").is_none()
    {
        call["thoughtSignature"] = json!(SKIP_VALIDATOR);
    }
}

/// A turn's parts with its tool results in the order of their calls: Gemini pairs a
/// result with a call by the function's name and the order of the answers, not by id.
fn in_call_order<'a>(parts: &[&'a Part], names: &[(&str, &str)]) -> Vec<&'a Part> {
    let position = |p: &Part| match p {
        Part::ToolResult { call_id, .. } => names.iter().position(|(id, _)| id == call_id),
        _ => None,
    };
    let mut results: Vec<&Part> = parts.iter().copied().filter(|p| position(p).is_some()).collect();
    results.sort_by_key(|p| position(p));
    let mut results = results.into_iter();
    // Each result keeps its place among the other parts; the results take turns in call order.
    parts
        .iter()
        .map(|p| {
            if position(p).is_some() {
                results.next().unwrap_or(p)
            } else {
                p
            }
        })
        .collect()
}

fn part(p: &Part, names: &[(&str, &str)]) -> Result<Option<Value>, Refusal> {
    Ok(Some(match p {
        Part::Text(text) if text.is_empty() => return Ok(None),
        Part::Text(text) => json!({ "text": text }),
        Part::Image(Image::Base64 { media_type, data }) => {
            json!({ "inlineData": { "mimeType": media_type, "data": data } })
        }
        Part::Image(Image::Url(_)) => {
            return Err(refuse(
                "image_url",
                "Gemini takes images as inline data: send a data: URL (the gateway fetches nothing)",
            ));
        }
        Part::ToolCall { name, arguments, .. } => {
            json!({ "functionCall": { "name": name, "args": arguments } })
        }
        Part::ToolResult {
            call_id,
            content,
            is_error,
        } => {
            let name = names
                .iter()
                .find(|(id, _)| id == call_id)
                .map(|(_, name)| *name)
                .ok_or_else(|| {
                    refuse(
                        "tool_call_id",
                        &format!("{call_id:?} answers no call of this conversation"),
                    )
                })?;
            // Google's convention for a failed call: the text under `error`.
            let response = if *is_error {
                json!({ "error": content })
            } else {
                json!({ "content": content })
            };
            json!({ "functionResponse": { "name": name, "response": response } })
        }
        // Thoughts go back only signed (`encode_request`).
        Part::Thinking { .. } => return Ok(None),
    }))
}

/// Encodes `request` as a `generateContent` body (the model goes in the URL).
pub fn encode_request(request: &Request, model: &str) -> Result<Value, Refusal> {
    if !request.parallel_tool_calls && !request.tools.is_empty() {
        return Err(refuse(
            "parallel_tool_calls",
            "Gemini cannot be limited to one tool call per answer",
        ));
    }
    let names = call_names(request);
    // Gemini alternates roles: consecutive turns of one role are one content.
    let mut turns: Vec<(Role, Vec<&Part>)> = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        match turns.last_mut() {
            Some((role, parts)) if *role == message.role => parts.extend(&message.parts),
            _ => turns.push((message.role, message.parts.iter().collect())),
        }
    }
    let mut contents = Vec::with_capacity(turns.len());
    for (role, parts) in turns {
        let mut wire = Vec::with_capacity(parts.len());
        let mut pending = None;
        for p in in_call_order(&parts, &names) {
            if let Part::Thinking { text, signature } = p {
                // Only Gemini's own signatures go back to Gemini.
                let signature = signature.as_ref().and_then(|s| s.for_family(Format::Gemini));
                match signature {
                    Some(signature) if text.is_empty() => pending = Some(signature),
                    Some(signature) => {
                        wire.push(json!({ "text": text, "thought": true, "thoughtSignature": signature }))
                    }
                    None => {}
                }
                continue;
            }
            if let Some(mut p) = part(p, &names)? {
                if let Some(signature) = pending.take() {
                    p["thoughtSignature"] = json!(signature);
                }
                wire.push(p);
            }
        }
        if let Some(signature) = pending {
            // A signature of nothing that followed: on an empty thought, as Code Assist sends it.
            wire.push(json!({ "text": "", "thought": true, "thoughtSignature": signature }));
        }
        if role == Role::Assistant {
            sign_first_call(&mut wire, model);
        }
        if !wire.is_empty() {
            let role = if role == Role::User { "user" } else { "model" };
            contents.push(json!({ "role": role, "parts": wire }));
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !request.system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({ "parts": [{ "text": request.system.join("\n\n") }] }),
        );
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({ "name": t.name, "parameters": t.parameters });
                if let Some(description) = &t.description {
                    d["description"] = json!(description);
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{ "functionDeclarations": declarations }]));
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::Auto => json!({ "mode": "AUTO" }),
            ToolChoice::None => json!({ "mode": "NONE" }),
            ToolChoice::Required => json!({ "mode": "ANY" }),
            ToolChoice::Named(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
        };
        body.insert("toolConfig".into(), json!({ "functionCallingConfig": config }));
    }
    let mut generation = Map::new();
    if let Some(max) = request.max_tokens {
        generation.insert("maxOutputTokens".into(), json!(max));
    }
    if let Some(t) = request.temperature {
        generation.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        generation.insert("topP".into(), json!(p));
    }
    if !request.stop.is_empty() {
        generation.insert("stopSequences".into(), json!(request.stop));
    }
    if let Some(output) = &request.output {
        generation.insert("responseMimeType".into(), json!("application/json"));
        if let Some(s) = &output.schema {
            generation.insert("responseJsonSchema".into(), s.schema.clone());
        }
    }
    if let Some(effort) = request.reasoning {
        generation.insert(
            "thinkingConfig".into(),
            json!({ "thinkingBudget": budget(effort), "includeThoughts": true }),
        );
    }
    if !generation.is_empty() {
        body.insert("generationConfig".into(), Value::Object(generation));
    }
    Ok(Value::Object(body))
}

pub(super) fn finish(reason: &str, called: bool) -> Finish {
    match reason {
        "MAX_TOKENS" => Finish::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            Finish::ContentFilter
        }
        _ if called => Finish::ToolCalls,
        _ => Finish::Stop,
    }
}

fn usage(meta: &Value) -> Usage {
    let count = |name: &str| meta[name].as_u64().unwrap_or(0);
    let cached = count("cachedContentTokenCount");
    Usage {
        input: count("promptTokenCount").saturating_sub(cached),
        output: count("candidatesTokenCount") + count("thoughtsTokenCount"),
        cache_read: cached,
        cache_write: 0,
        reasoning: count("thoughtsTokenCount"),
    }
}

pub(super) fn call_id(index: usize, name: &str) -> String {
    format!("call_{index}_{name}")
}

/// Decodes a whole `generateContent` answer; `None` when it is not one.
pub fn decode_response(body: &Value) -> Option<Response> {
    let body = super::endpoint::unwrap(body);
    let candidate = body["candidates"].get(0)?;
    let mut parts = Vec::new();
    let mut calls = 0;
    for p in candidate["content"]["parts"].as_array().into_iter().flatten() {
        let signature = p["thoughtSignature"]
            .as_str()
            .map(|s| Signature::new(Format::Gemini, s));
        if let Some(signature) = signature.clone().filter(|_| p["thought"] != true) {
            // A signed call or text: the signature travels just before it.
            parts.push(Part::Thinking {
                text: String::new(),
                signature: Some(signature),
            });
        }
        if let Some(call) = p.get("functionCall") {
            let name = call["name"].as_str().unwrap_or_default();
            parts.push(Part::ToolCall {
                id: call["id"]
                    .as_str()
                    .map_or_else(|| call_id(calls, name), str::to_owned),
                name: name.to_owned(),
                arguments: call.get("args").cloned().unwrap_or_else(|| json!({})),
            });
            calls += 1;
        } else if let Some(text) = p["text"].as_str() {
            if p["thought"] == true {
                parts.push(Part::Thinking {
                    text: text.to_owned(),
                    signature,
                });
            } else if let Some(Part::Text(previous)) = parts.last_mut() {
                // Gemini cuts one text into several parts at will: keep it whole.
                previous.push_str(text);
            } else {
                parts.push(Part::Text(text.to_owned()));
            }
        }
    }
    Some(Response {
        id: body["responseId"].as_str().unwrap_or("gemini").to_owned(),
        model: body["modelVersion"].as_str().unwrap_or_default().to_owned(),
        parts,
        finish: finish(candidate["finishReason"].as_str().unwrap_or("STOP"), calls > 0),
        usage: usage(&body["usageMetadata"]),
    })
}

/// A Gemini error body's code and message (`{"error": {"code", "message", "status"}}`).
pub fn decode_error(body: &Value) -> Option<(String, String)> {
    let body = super::endpoint::unwrap(body);
    let error = body.get("error")?;
    let code = error["status"]
        .as_str()
        .unwrap_or("upstream_error")
        .to_ascii_lowercase();
    let message = error["message"]
        .as_str()
        .unwrap_or("the upstream failed")
        .to_owned();
    Some((code, message))
}

/// Reads the chunks of a Gemini stream (each a partial `generateContent` answer) into IR
/// events. Gemini has no end event: the stream ends after the chunk with a finish
/// reason, so [`ChunkDecoder::close`] ends the answer when the upstream does.
#[derive(Default)]
pub struct ChunkDecoder {
    started: bool,
    calls: usize,
    finish: Option<String>,
    usage: Usage,
    ended: bool,
}

impl StreamDecoder for ChunkDecoder {
    fn decode(&mut self, _name: &str, data: &str, out: &mut Vec<Event>) {
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let chunk = super::endpoint::unwrap(&chunk);
        if let Some((code, message)) = decode_error(chunk) {
            out.push(Event::Error { code, message });
            out.push(Event::End);
            self.ended = true;
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: chunk["responseId"].as_str().unwrap_or("gemini").to_owned(),
                model: chunk["modelVersion"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let candidate = &chunk["candidates"][0];
        for p in candidate["content"]["parts"].as_array().into_iter().flatten() {
            let signature = p["thoughtSignature"]
                .as_str()
                .map(|s| Signature::new(Format::Gemini, s));
            let thought = p["thought"] == true;
            if let Some(signature) = signature.clone().filter(|_| !thought) {
                out.push(Event::Signature(signature));
            }
            if let Some(call) = p.get("functionCall") {
                let name = call["name"].as_str().unwrap_or_default();
                let index = self.calls;
                self.calls += 1;
                out.push(Event::ToolCallStart {
                    index,
                    id: call["id"]
                        .as_str()
                        .map_or_else(|| call_id(index, name), str::to_owned),
                    name: name.to_owned(),
                });
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                out.push(Event::ToolArguments {
                    index,
                    delta: args.to_string(),
                });
            } else if let Some(text) = p["text"].as_str().filter(|t| !t.is_empty()) {
                out.push(if thought {
                    Event::Thinking(text.to_owned())
                } else {
                    Event::Text(text.to_owned())
                });
            }
            if let Some(signature) = signature.filter(|_| thought) {
                out.push(Event::Signature(signature));
            }
        }
        if let Some(reason) = candidate["finishReason"].as_str() {
            self.finish = Some(reason.to_owned());
        }
        if chunk["usageMetadata"].is_object() {
            self.usage = usage(&chunk["usageMetadata"]);
        }
    }

    fn ended(&self) -> bool {
        self.ended
    }

    /// The upstream's stream ended: the answer is complete when a finish reason came.
    fn close(&mut self, out: &mut Vec<Event>) -> bool {
        if self.ended {
            return true;
        }
        let Some(reason) = self.finish.take() else {
            return false;
        };
        self.ended = true;
        out.push(Event::Finish(finish(&reason, self.calls > 0)));
        out.push(Event::Usage(self.usage));
        out.push(Event::End);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::openai_chat;

    fn ir(chat: Value) -> Request {
        openai_chat::decode_request(chat.as_object().unwrap()).expect("translatable")
    }

    #[test]
    fn a_tool_round_trip_becomes_gemini_contents() {
        let request = ir(json!({
            "model": "m",
            "messages": [
                { "role": "system", "content": "Be terse." },
                { "role": "user", "content": [
                    { "type": "text", "text": "Weather in Paris?" },
                    { "type": "image_url", "image_url": { "url": "data:image/jpeg;base64,/9j/4AAQ" } },
                ] },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_0_weather", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                ] },
                { "role": "tool", "tool_call_id": "call_0_weather", "content": "18C" },
            ],
            "tools": [{ "type": "function", "function": { "name": "weather", "parameters": { "type": "object" } } }],
            "tool_choice": { "type": "function", "function": { "name": "weather" } },
            "max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "stop": ["END"], "reasoning_effort": "low",
        }));
        assert_eq!(
            encode_request(&request, "gemini-2.5-flash").unwrap(),
            json!({
                "contents": [
                    { "role": "user", "parts": [{ "text": "Weather in Paris?" }, { "inlineData": { "mimeType": "image/jpeg", "data": "/9j/4AAQ" } }] },
                    { "role": "model", "parts": [{ "functionCall": { "name": "weather", "args": { "city": "Paris" } } }] },
                    { "role": "user", "parts": [{ "functionResponse": { "name": "weather", "response": { "content": "18C" } } }] },
                ],
                "systemInstruction": { "parts": [{ "text": "Be terse." }] },
                "tools": [{ "functionDeclarations": [{ "name": "weather", "parameters": { "type": "object" } }] }],
                "toolConfig": { "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["weather"] } },
                "generationConfig": { "maxOutputTokens": 100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"],
                    "thinkingConfig": { "thinkingBudget": 1024, "includeThoughts": true } },
            })
        );
    }

    #[test]
    fn what_gemini_cannot_take_is_refused() {
        let url = ir(json!({ "model": "m", "messages": [{ "role": "user", "content": [
            { "type": "image_url", "image_url": { "url": "https://example.com/a.png" } }] }] }));
        assert_eq!(
            encode_request(&url, "gemini-2.5-flash").unwrap_err().param,
            "image_url"
        );
        let orphan = ir(json!({ "model": "m", "messages": [
            { "role": "user", "content": "x" }, { "role": "tool", "tool_call_id": "nope", "content": "1" }] }));
        assert_eq!(
            encode_request(&orphan, "gemini-2.5-flash").unwrap_err().param,
            "tool_call_id"
        );
        let single = ir(
            json!({ "model": "m", "messages": [{ "role": "user", "content": "x" }],
            "tools": [{ "type": "function", "function": { "name": "f" } }], "parallel_tool_calls": false }),
        );
        assert_eq!(
            encode_request(&single, "gemini-2.5-flash").unwrap_err().param,
            "parallel_tool_calls"
        );
    }

    #[test]
    fn an_answer_with_a_call_and_thoughts_is_decoded() {
        let answer = json!({
            "candidates": [{ "content": { "role": "model", "parts": [
                { "text": "thinking it over", "thought": true },
                { "text": "Checking." },
                { "functionCall": { "name": "weather", "args": { "city": "Paris" } } },
            ] }, "finishReason": "STOP", "index": 0 }],
            "usageMetadata": { "promptTokenCount": 120, "candidatesTokenCount": 9, "thoughtsTokenCount": 30, "cachedContentTokenCount": 100 },
            "modelVersion": "gemini-2.5-flash", "responseId": "resp-1",
        });
        let response = decode_response(&answer).unwrap();
        assert_eq!(response.finish, Finish::ToolCalls);
        assert_eq!(
            response.usage,
            Usage {
                input: 20,
                output: 39,
                cache_read: 100,
                cache_write: 0,
                reasoning: 30
            }
        );
        assert_eq!(
            response.parts[2],
            Part::ToolCall {
                id: "call_0_weather".into(),
                name: "weather".into(),
                arguments: json!({ "city": "Paris" })
            }
        );
        let chat = openai_chat::encode_response(&response, 0);
        assert_eq!(chat["usage"]["prompt_tokens"], 120);
        assert_eq!(
            chat["choices"][0]["message"]["reasoning_content"],
            "thinking it over"
        );
        let cut = json!({ "candidates": [{ "content": { "parts": [{ "text": "a" }] }, "finishReason": "MAX_TOKENS" }] });
        assert_eq!(decode_response(&cut).unwrap().finish, Finish::Length);
    }

    #[test]
    fn a_stream_ends_with_the_upstream_after_its_finish_reason() {
        let chunks = [
            json!({ "candidates": [{ "content": { "role": "model", "parts": [{ "text": "Hel" }] } }], "modelVersion": "gemini-2.5-flash", "responseId": "r1",
                "usageMetadata": { "promptTokenCount": 5 } }),
            json!({ "candidates": [{ "content": { "role": "model", "parts": [{ "text": "lo" }, { "functionCall": { "name": "f", "args": {} } }] }, "finishReason": "STOP" }],
                "usageMetadata": { "promptTokenCount": 5, "candidatesTokenCount": 3, "totalTokenCount": 8 } }),
        ];
        let mut decoder = ChunkDecoder::default();
        let mut events = Vec::new();
        for chunk in &chunks {
            decoder.decode("", &chunk.to_string(), &mut events);
        }
        assert!(decoder.close(&mut events));
        assert_eq!(
            events,
            [
                Event::Start {
                    id: "r1".into(),
                    model: "gemini-2.5-flash".into()
                },
                Event::Text("Hel".into()),
                Event::Text("lo".into()),
                Event::ToolCallStart {
                    index: 0,
                    id: "call_0_f".into(),
                    name: "f".into()
                },
                Event::ToolArguments {
                    index: 0,
                    delta: "{}".into()
                },
                Event::Finish(Finish::ToolCalls),
                Event::Usage(Usage {
                    input: 5,
                    output: 3,
                    ..Usage::default()
                }),
                Event::End,
            ]
        );
        let mut cut = ChunkDecoder::default();
        let mut events = Vec::new();
        cut.decode("", &chunks[0].to_string(), &mut events);
        assert!(!cut.close(&mut events), "no finish reason: the stream was cut");
    }
}
