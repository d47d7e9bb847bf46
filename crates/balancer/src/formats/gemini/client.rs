//! The client side of Gemini `generateContent` (as `google-genai` sends it): the request
//! decoded into the IR, the answer and its `alt=sse` stream encoded from it.
//!
//! A `functionResponse` names its function, not a call: it answers the earliest call of
//! that name not answered yet, and the ids the IR needs are made up in the same way the
//! upstream side numbers Gemini's calls.

use serde_json::{Map, Value, json};

use super::upstream::call_id;
use crate::formats::ir::{
    Effort, Event, Finish, Image, JsonOutput, JsonSchema, Message, Part, Request, Response, Role, Signature,
    Tool, ToolChoice, Usage,
};
use crate::formats::{Format, Refusal, StreamEncoder, data, neutral, refuse};

/// Request fields this decoder reads; others with a meaningful value are refused.
const KNOWN: [&str; 6] = [
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "model",
];

/// `generationConfig` fields this decoder reads.
const KNOWN_CONFIG: [&str; 9] = [
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "maxOutputTokens",
    "temperature",
    "topP",
    "stopSequences",
    "thinkingConfig",
    "candidateCount",
];

fn text_parts(value: &Value, at: &str) -> Result<Vec<String>, Refusal> {
    value["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(k, p)| {
            p["text"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| refuse(format!("{at}.parts[{k}]"), "only text can be translated here"))
        })
        .collect()
}

/// Calls made so far and not answered yet: (name, id), oldest first.
#[derive(Default)]
struct OpenCalls {
    calls: Vec<(String, String)>,
    made: usize,
}

impl OpenCalls {
    fn call(&mut self, name: &str) -> String {
        let id = call_id(self.made, name);
        self.made += 1;
        self.calls.push((name.to_owned(), id.clone()));
        id
    }

    fn answer(&mut self, name: &str) -> Option<String> {
        let at = self.calls.iter().position(|(n, _)| n == name)?;
        Some(self.calls.remove(at).1)
    }
}

fn part(p: &Value, at: &str, open: &mut OpenCalls) -> Result<Part, Refusal> {
    if let Some(text) = p["text"].as_str() {
        return Ok(if p["thought"] == true {
            Part::Thinking {
                text: text.to_owned(),
                signature: None,
            }
        } else {
            Part::Text(text.to_owned())
        });
    }
    if let Some(inline) = p.get("inlineData") {
        return Ok(Part::Image(Image::Base64 {
            media_type: inline["mimeType"]
                .as_str()
                .unwrap_or("application/octet-stream")
                .to_owned(),
            data: inline["data"].as_str().unwrap_or_default().to_owned(),
        }));
    }
    if let Some(call) = p.get("functionCall") {
        let name = call["name"]
            .as_str()
            .ok_or_else(|| refuse(format!("{at}.functionCall.name"), "is required"))?;
        return Ok(Part::ToolCall {
            id: open.call(name),
            name: name.to_owned(),
            arguments: call.get("args").cloned().unwrap_or_else(|| json!({})),
        });
    }
    if let Some(response) = p.get("functionResponse") {
        let name = response["name"].as_str().unwrap_or_default();
        let call_id = open.answer(name).ok_or_else(|| {
            refuse(
                format!("{at}.functionResponse"),
                &format!("answers no call of {name:?}"),
            )
        })?;
        let body = &response["response"];
        // A result is `{"content"}` or `{"output"}`; a failure `{"error"}` (Google's convention).
        let content = match body
            .get("content")
            .or_else(|| body.get("output"))
            .or_else(|| body.get("error"))
        {
            Some(Value::String(text)) => text.clone(),
            _ => body.to_string(),
        };
        return Ok(Part::ToolResult {
            call_id,
            content,
            is_error: body.get("error").is_some(),
        });
    }
    Err(refuse(
        at,
        "only text, inlineData, functionCall and functionResponse parts can be translated",
    ))
}

fn tools(value: &Value) -> Result<Vec<Tool>, Refusal> {
    let mut out = Vec::new();
    for (i, tool) in value.as_array().into_iter().flatten().enumerate() {
        for key in tool.as_object().into_iter().flatten().map(|(k, _)| k) {
            if key != "functionDeclarations" {
                return Err(refuse(
                    format!("tools[{i}].{key}"),
                    "only function declarations can be translated",
                ));
            }
        }
        for declaration in tool["functionDeclarations"].as_array().into_iter().flatten() {
            let name = declaration["name"]
                .as_str()
                .ok_or_else(|| refuse(format!("tools[{i}]"), "a function needs a name"))?;
            let parameters = declaration
                .get("parameters")
                .or_else(|| declaration.get("parametersJsonSchema"))
                .cloned()
                .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
            out.push(Tool {
                name: name.to_owned(),
                description: declaration["description"].as_str().map(str::to_owned),
                parameters: lower_types(parameters),
            });
        }
    }
    Ok(out)
}

/// Gemini's schemas may write types in capitals (`OBJECT`); JSON Schema wants them lower.
fn lower_types(mut schema: Value) -> Value {
    match &mut schema {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "type"
                    && let Value::String(t) = value
                {
                    *t = t.to_ascii_lowercase();
                } else {
                    *value = lower_types(std::mem::take(value));
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                *item = lower_types(std::mem::take(item));
            }
        }
        _ => {}
    }
    schema
}

fn tool_choice(value: &Value) -> Result<Option<ToolChoice>, Refusal> {
    let config = &value["functionCallingConfig"];
    let allowed: Vec<&str> = config["allowedFunctionNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    Ok(match config["mode"].as_str() {
        None | Some("MODE_UNSPECIFIED") => None,
        Some("AUTO") => Some(ToolChoice::Auto),
        Some("NONE") => Some(ToolChoice::None),
        Some("ANY") if allowed.len() == 1 => Some(ToolChoice::Named(allowed[0].to_owned())),
        Some("ANY") if allowed.is_empty() => Some(ToolChoice::Required),
        Some("ANY") => {
            return Err(refuse(
                "toolConfig.functionCallingConfig.allowedFunctionNames",
                "several names cannot be translated",
            ));
        }
        Some(_) => {
            return Err(refuse(
                "toolConfig.functionCallingConfig.mode",
                "must be AUTO, ANY or NONE",
            ));
        }
    })
}

/// `responseMimeType: application/json`, with `responseJsonSchema` (JSON Schema) or
/// `responseSchema` (Gemini's schema, types in capitals) when the answer has a shape.
fn output(config: &Value) -> Result<Option<JsonOutput>, Refusal> {
    match config["responseMimeType"].as_str() {
        None | Some("text/plain") => {
            if config.get("responseSchema").is_some() || config.get("responseJsonSchema").is_some() {
                return Err(refuse(
                    "generationConfig.responseMimeType",
                    "a schema needs application/json",
                ));
            }
            return Ok(None);
        }
        Some("application/json") => {}
        Some(_) => {
            return Err(refuse(
                "generationConfig.responseMimeType",
                "only text/plain and application/json can be translated",
            ));
        }
    }
    let schema = match (config.get("responseJsonSchema"), config.get("responseSchema")) {
        (Some(schema), _) => Some(schema.clone()),
        (None, Some(schema)) => Some(lower_types(schema.clone())),
        (None, None) => None,
    };
    Ok(Some(JsonOutput {
        param: "generationConfig.responseMimeType",
        schema: schema.map(|schema| JsonSchema {
            name: "response".into(),
            schema,
            strict: true,
        }),
    }))
}

/// Decodes a `generateContent` request; `stream` comes from the method in the URL.
pub fn decode_request(document: &Map<String, Value>, stream: bool) -> Result<Request, Refusal> {
    for (name, value) in document {
        if !KNOWN.contains(&name.as_str()) && !neutral(name, value) {
            return Err(refuse(
                name.as_str(),
                "cannot be translated for this model's provider",
            ));
        }
    }
    let config = document.get("generationConfig").cloned().unwrap_or(Value::Null);
    for (name, value) in config.as_object().into_iter().flatten() {
        if !KNOWN_CONFIG.contains(&name.as_str()) && !neutral(name, value) {
            return Err(refuse(
                format!("generationConfig.{name}"),
                "cannot be translated for this model's provider",
            ));
        }
    }
    if config["candidateCount"].as_u64().is_some_and(|n| n > 1) {
        return Err(refuse(
            "generationConfig.candidateCount",
            "only one candidate can be translated",
        ));
    }
    let contents = document
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refuse("contents", "must be a non-empty array"))?;
    let mut open = OpenCalls::default();
    let mut messages = Vec::with_capacity(contents.len());
    for (i, content) in contents.iter().enumerate() {
        let role = match content["role"].as_str() {
            None | Some("user") => Role::User,
            Some("model") => Role::Assistant,
            Some(_) => return Err(refuse(format!("contents[{i}].role"), "must be user or model")),
        };
        let mut parts = Vec::new();
        for (k, p) in content["parts"].as_array().into_iter().flatten().enumerate() {
            let mut decoded = part(p, &format!("contents[{i}].parts[{k}]"), &mut open)?;
            if let Some(signed) = p["thoughtSignature"].as_str() {
                let signed = Signature::read(signed, Format::Gemini);
                match &mut decoded {
                    Part::Thinking { signature, .. } => *signature = Some(signed),
                    // A signed call or text: the signature travels just before it.
                    _ => parts.push(Part::Thinking {
                        text: String::new(),
                        signature: Some(signed),
                    }),
                }
            }
            parts.push(decoded);
        }
        messages.push(Message { role, parts });
    }
    let system = match document.get("systemInstruction") {
        None | Some(Value::Null) => Vec::new(),
        Some(instruction) => text_parts(instruction, "systemInstruction")?,
    };
    let reasoning = match config["thinkingConfig"]["thinkingBudget"].as_i64() {
        None | Some(0) => None,
        // -1 is "dynamic" (the model decides): the most room.
        Some(b) if !(0..=12_288).contains(&b) => Some(Effort::High),
        Some(b) if b > 2048 => Some(Effort::Medium),
        Some(_) => Some(Effort::Low),
    };
    let stop = config["stopSequences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| refuse("generationConfig.stopSequences", "must hold strings"))
        })
        .collect::<Result<_, _>>()?;
    Ok(Request {
        system,
        messages,
        tools: tools(document.get("tools").unwrap_or(&Value::Null))?,
        tool_choice: tool_choice(document.get("toolConfig").unwrap_or(&Value::Null))?,
        parallel_tool_calls: true,
        max_tokens: config["maxOutputTokens"].as_u64(),
        temperature: config["temperature"].as_f64(),
        top_p: config["topP"].as_f64(),
        stop,
        stream,
        stream_usage: stream,
        reasoning,
        user: None,
        output: output(&config)?,
    })
}

fn finish_reason(finish: Finish) -> &'static str {
    match finish {
        Finish::Stop | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::ContentFilter => "SAFETY",
    }
}

fn usage_metadata(u: &Usage) -> Value {
    let mut meta = json!({
        "promptTokenCount": u.prompt(),
        "candidatesTokenCount": u.output.saturating_sub(u.reasoning),
        "totalTokenCount": u.prompt() + u.output,
    });
    if u.cache_read > 0 {
        meta["cachedContentTokenCount"] = json!(u.cache_read);
    }
    if u.reasoning > 0 {
        meta["thoughtsTokenCount"] = json!(u.reasoning);
    }
    meta
}

fn out_part(part: &Part) -> Option<Value> {
    Some(match part {
        Part::Text(text) => json!({ "text": text }),
        Part::Thinking { text, signature } => {
            let mut thought = json!({ "text": text, "thought": true });
            if let Some(signature) = signature {
                thought["thoughtSignature"] = json!(signature.shown_to(Format::Gemini));
            }
            thought
        }
        Part::ToolCall { name, arguments, .. } => {
            json!({ "functionCall": { "name": name, "args": arguments } })
        }
        Part::Image(_) | Part::ToolResult { .. } => return None,
    })
}

/// Encodes a whole answer as a `GenerateContentResponse`.
pub fn encode_response(response: &Response) -> Value {
    let mut parts: Vec<Value> = Vec::with_capacity(response.parts.len());
    let mut pending = None;
    for part in &response.parts {
        match part {
            // A signature of the part that follows goes on that part, as Gemini sends it.
            Part::Thinking {
                text,
                signature: Some(signature),
            } if text.is_empty() => pending = Some(signature.shown_to(Format::Gemini)),
            part => {
                if let Some(mut wire) = out_part(part) {
                    if let Some(signature) = pending.take() {
                        wire["thoughtSignature"] = json!(signature);
                    }
                    parts.push(wire);
                }
            }
        }
    }
    json!({
        "candidates": [{ "content": { "role": "model", "parts": parts },
            "finishReason": finish_reason(response.finish), "index": 0 }],
        "usageMetadata": usage_metadata(&response.usage),
        "modelVersion": response.model,
        "responseId": response.id,
    })
}

/// An error in Gemini's shape: `{"error": {"code", "message", "status"}}`.
pub fn encode_error(status: u16, message: &str) -> Value {
    let name = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    };
    json!({ "error": { "code": status, "message": message, "status": name } })
}

/// Turns IR events into `alt=sse` chunks: text and thoughts as they come, function calls
/// whole (Gemini sends a call in one piece) with the finish reason and the usage last.
#[derive(Default)]
pub struct ChunkEncoder {
    id: String,
    model: String,
    calls: Vec<(String, String)>,
    finish: Option<Finish>,
    usage: Usage,
    failed: bool,
}

impl ChunkEncoder {
    fn chunk(&self, out: &mut Vec<u8>, parts: Vec<Value>, last: bool) {
        let mut candidate = json!({ "content": { "role": "model", "parts": parts }, "index": 0 });
        let mut chunk = json!({ "modelVersion": self.model, "responseId": self.id });
        if last {
            candidate["finishReason"] = json!(finish_reason(self.finish.unwrap_or(Finish::Stop)));
            chunk["usageMetadata"] = usage_metadata(&self.usage);
        }
        chunk["candidates"] = json!([candidate]);
        data(out, &chunk);
    }
}

impl StreamEncoder for ChunkEncoder {
    fn encode(&mut self, event: Event, out: &mut Vec<u8>) {
        match event {
            Event::Start { id, model } => {
                self.id = id;
                self.model = model;
            }
            Event::Text(text) => self.chunk(out, vec![json!({ "text": text })], false),
            Event::Thinking(text) => self.chunk(out, vec![json!({ "text": text, "thought": true })], false),
            Event::Signature(signature) => {
                let part = json!({ "text": "", "thought": true, "thoughtSignature": signature.shown_to(Format::Gemini) });
                self.chunk(out, vec![part], false);
            }
            Event::ToolCallStart { index, name, .. } => {
                if self.calls.len() <= index {
                    self.calls.resize(index + 1, (String::new(), String::new()));
                }
                self.calls[index].0 = name;
            }
            Event::ToolArguments { index, delta } => {
                if let Some(call) = self.calls.get_mut(index) {
                    call.1.push_str(&delta);
                }
            }
            Event::Finish(finish) => self.finish = Some(finish),
            Event::Usage(usage) => self.usage = usage,
            Event::Error { message, .. } => {
                self.failed = true;
                data(out, &encode_error(502, &message));
            }
            Event::End if self.failed => {}
            Event::End => {
                let parts = std::mem::take(&mut self.calls)
                    .into_iter()
                    .map(|(name, args)| {
                        let args: Value = serde_json::from_str(&args).unwrap_or_else(|_| json!({}));
                        json!({ "functionCall": { "name": name, "args": args } })
                    })
                    .collect();
                self.chunk(out, parts, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(body: Value) -> Result<Request, Refusal> {
        decode_request(body.as_object().unwrap(), false)
    }

    #[test]
    fn a_function_response_answers_the_earliest_open_call_of_its_name() {
        let request = decode(json!({
            "systemInstruction": { "parts": [{ "text": "Be terse." }] },
            "contents": [
                { "role": "user", "parts": [{ "text": "Paris and Rome?" }, { "inlineData": { "mimeType": "image/png", "data": "iVBO" } }] },
                { "role": "model", "parts": [
                    { "functionCall": { "name": "weather", "args": { "city": "Paris" } } },
                    { "functionCall": { "name": "weather", "args": { "city": "Rome" } } },
                ] },
                { "role": "user", "parts": [
                    { "functionResponse": { "name": "weather", "response": { "content": "18C" } } },
                    { "functionResponse": { "name": "weather", "response": { "temp": 24 } } },
                ] },
            ],
            "tools": [{ "functionDeclarations": [{ "name": "weather", "parameters": { "type": "OBJECT", "properties": { "city": { "type": "STRING" } } } }] }],
            "toolConfig": { "functionCallingConfig": { "mode": "ANY", "allowedFunctionNames": ["weather"] } },
            "generationConfig": { "maxOutputTokens": 99, "temperature": 0.1, "stopSequences": ["END"], "thinkingConfig": { "thinkingBudget": 4096 } },
        }))
        .unwrap();
        assert_eq!(request.system, ["Be terse."]);
        assert_eq!(
            request.messages[2].parts,
            [
                Part::ToolResult {
                    call_id: "call_0_weather".into(),
                    content: "18C".into(),
                    is_error: false
                },
                Part::ToolResult {
                    call_id: "call_1_weather".into(),
                    content: "{\"temp\":24}".into(),
                    is_error: false
                },
            ]
        );
        assert!(matches!(&request.messages[1].parts[1], Part::ToolCall { id, .. } if id == "call_1_weather"));
        assert_eq!(
            request.tools[0].parameters,
            json!({ "type": "object", "properties": { "city": { "type": "string" } } })
        );
        assert_eq!(request.tool_choice, Some(ToolChoice::Named("weather".into())));
        assert_eq!(
            (request.max_tokens, request.reasoning),
            (Some(99), Some(Effort::Medium))
        );
        assert_eq!(request.stop, ["END"]);
    }

    #[test]
    fn what_other_providers_cannot_take_is_refused() {
        let user = json!([{ "role": "user", "parts": [{ "text": "x" }] }]);
        let cases = [
            (
                json!({ "contents": user, "safetySettings": [{ "category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE" }] }),
                "safetySettings",
            ),
            (
                json!({ "contents": user, "generationConfig": { "responseMimeType": "text/x.enum" } }),
                "generationConfig.responseMimeType",
            ),
            (
                json!({ "contents": user, "generationConfig": { "candidateCount": 2 } }),
                "generationConfig.candidateCount",
            ),
            (
                json!({ "contents": [{ "role": "user", "parts": [{ "fileData": { "fileUri": "gs://b/f" } }] }] }),
                "contents[0].parts[0]",
            ),
            (
                json!({ "contents": [{ "role": "user", "parts": [{ "functionResponse": { "name": "f", "response": {} } }] }] }),
                "contents[0].parts[0].functionResponse",
            ),
            (
                json!({ "contents": user, "tools": [{ "googleSearch": {} }] }),
                "tools[0].googleSearch",
            ),
            (json!({ "contents": [] }), "contents"),
        ];
        for (body, param) in cases {
            assert_eq!(decode(body).unwrap_err().param, param);
        }
        // Neutral values are no reason to refuse.
        assert!(
            decode(
                json!({ "contents": user, "generationConfig": { "candidateCount": 1 }, "safetySettings": [] })
            )
            .is_ok()
        );
    }

    #[test]
    fn answers_and_streams_come_out_in_gemini_shape() {
        let response = Response {
            id: "r".into(),
            model: "m".into(),
            parts: vec![
                Part::Text("Hi".into()),
                Part::ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: json!({ "a": 1 }),
                },
            ],
            finish: Finish::ToolCalls,
            usage: Usage {
                input: 5,
                output: 7,
                cache_read: 2,
                cache_write: 0,
                reasoning: 3,
            },
        };
        assert_eq!(
            encode_response(&response),
            json!({
                "candidates": [{ "content": { "role": "model", "parts": [{ "text": "Hi" }, { "functionCall": { "name": "f", "args": { "a": 1 } } }] },
                    "finishReason": "STOP", "index": 0 }],
                "usageMetadata": { "promptTokenCount": 7, "candidatesTokenCount": 4, "totalTokenCount": 14, "cachedContentTokenCount": 2, "thoughtsTokenCount": 3 },
                "modelVersion": "m", "responseId": "r",
            })
        );
        let mut encoder = ChunkEncoder::default();
        let mut out = Vec::new();
        for event in [
            Event::Start {
                id: "r".into(),
                model: "m".into(),
            },
            Event::Text("Hel".into()),
            Event::ToolCallStart {
                index: 0,
                id: "c".into(),
                name: "f".into(),
            },
            Event::ToolArguments {
                index: 0,
                delta: "{\"a\":".into(),
            },
            Event::ToolArguments {
                index: 0,
                delta: "1}".into(),
            },
            Event::Finish(Finish::ToolCalls),
            Event::Usage(Usage {
                input: 5,
                output: 2,
                ..Usage::default()
            }),
            Event::End,
        ] {
            encoder.encode(event, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let chunks: Vec<Value> = text
            .split("\n\n")
            .filter(|c| !c.is_empty())
            .map(|c| serde_json::from_str(c.strip_prefix("data: ").unwrap()).unwrap())
            .collect();
        assert_eq!(chunks.len(), 2, "{text}");
        assert_eq!(chunks[0]["candidates"][0]["content"]["parts"][0]["text"], "Hel");
        assert_eq!(
            chunks[1]["candidates"][0]["content"]["parts"][0],
            json!({ "functionCall": { "name": "f", "args": { "a": 1 } } })
        );
        assert_eq!(chunks[1]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[1]["usageMetadata"]["promptTokenCount"], 5);
        assert_eq!(
            encode_error(429, "slow down")["error"]["status"],
            "RESOURCE_EXHAUSTED"
        );
    }
}
