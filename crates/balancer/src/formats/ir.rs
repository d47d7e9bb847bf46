//! The internal representation every wire format is translated through: a conversation
//! request, its answer and the events of its stream. Each format has a decoder (wire →
//! IR) and an encoder (IR → wire), so N formats need N pairs of pieces, not N×N
//! translators (`docs/formats.md`).

use serde_json::Value;

use super::Format;

/// A conversation request, whatever format it came in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// System instructions, in order.
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    /// `false` when the client forbade several tool calls in one answer.
    pub parallel_tool_calls: bool,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// Whether the client asked for usage in its stream (OpenAI `include_usage`).
    pub stream_usage: bool,
    pub reasoning: Option<Effort>,
    /// An end-user id for the provider's abuse monitoring.
    pub user: Option<String>,
    /// The answer must be JSON (structured output).
    pub output: Option<JsonOutput>,
}

/// A JSON answer: any JSON object, or one matching a schema.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonOutput {
    /// The client's field that asked for it (named when a target cannot do it).
    pub param: &'static str,
    pub schema: Option<JsonSchema>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JsonSchema {
    pub name: String,
    /// JSON Schema of the answer.
    pub schema: Value,
    /// Whether the provider must follow the schema exactly.
    pub strict: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
    /// A call the assistant made; `arguments` is the JSON object as the model wrote it.
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
    /// The result of a call, sent back by the client.
    ToolResult {
        call_id: String,
        content: String,
        is_error: bool,
    },
    /// The model's reasoning, with the provider's signature when it has one (needed to
    /// send it back to the same provider). An empty text with a signature signs the part
    /// that follows (Gemini signs function calls).
    Thinking {
        text: String,
        signature: Option<Signature>,
    },
}

/// A provider's signature of the model's reasoning, and the family that made it: only
/// that family can check it, so it goes back to that family alone. A client of another
/// family sees it tagged `ez:<family>:`, so it is known again when the client sends it
/// back — and never reaches a provider that would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub family: Format,
    pub value: String,
}

impl Signature {
    pub fn new(family: Format, value: impl Into<String>) -> Signature {
        Signature {
            family,
            value: value.into(),
        }
    }

    fn tag(family: Format) -> &'static str {
        match family {
            Format::Chat => "ez:openai_chat:",
            Format::Responses => "ez:openai:",
            Format::Messages => "ez:anthropic:",
            Format::Gemini => "ez:gemini:",
        }
    }

    /// As a client speaking `client` gets it.
    pub fn shown_to(&self, client: Format) -> String {
        if client == self.family {
            self.value.clone()
        } else {
            format!("{}{}", Self::tag(self.family), self.value)
        }
    }

    /// A signature a client speaking `client` sent back.
    pub fn read(raw: &str, client: Format) -> Signature {
        for family in [Format::Responses, Format::Messages, Format::Gemini, Format::Chat] {
            if let Some(value) = raw.strip_prefix(Self::tag(family)) {
                return Signature::new(family, value);
            }
        }
        Signature::new(client, raw)
    }

    /// The provider's text, when `family` made it.
    pub fn for_family(&self, family: Format) -> Option<&str> {
        (self.family == family).then_some(self.value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    Url(String),
    Base64 { media_type: String, data: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called.
    Required,
    Named(String),
}

/// How hard the model should think (OpenAI `reasoning_effort`; a budget elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effort {
    Low,
    Medium,
    High,
}

/// A whole (non-streamed) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: String,
    pub model: String,
    pub parts: Vec<Part>,
    pub finish: Finish,
    pub usage: Usage,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

/// Token counts. `input` excludes the cached parts, which are counted apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl Usage {
    /// Everything the prompt cost, cached or not (OpenAI's `prompt_tokens`).
    pub fn prompt(&self) -> u64 {
        self.input + self.cache_read + self.cache_write
    }
}

/// One step of a streamed answer. Tool calls are numbered from 0 in the order they
/// start, whatever else the answer holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Start {
        id: String,
        model: String,
    },
    Text(String),
    Thinking(String),
    /// The provider's signature of the reasoning just streamed, or of the part that
    /// follows (needed to send it back).
    Signature(Signature),
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    ToolArguments {
        index: usize,
        delta: String,
    },
    Finish(Finish),
    Usage(Usage),
    /// The upstream failed mid-answer.
    Error {
        code: String,
        message: String,
    },
    /// The answer is complete.
    End,
}

/// A whole answer put together from stream events (for a client that asked for one from
/// an upstream that only streams).
#[derive(Debug, Default)]
pub struct Collector {
    id: String,
    model: String,
    parts: Vec<Part>,
    /// Where each tool call (by its stream index) is in `parts`, with its arguments so far.
    calls: Vec<(usize, String)>,
    finish: Option<Finish>,
    usage: Usage,
    error: Option<(String, String)>,
}

impl Collector {
    pub fn push(&mut self, event: Event) {
        match event {
            Event::Start { id, model } => {
                self.id = id;
                self.model = model;
            }
            Event::Text(delta) => match self.parts.last_mut() {
                Some(Part::Text(text)) => text.push_str(&delta),
                _ => self.parts.push(Part::Text(delta)),
            },
            Event::Thinking(delta) => match self.parts.last_mut() {
                Some(Part::Thinking { text, .. }) => text.push_str(&delta),
                _ => self.parts.push(Part::Thinking {
                    text: delta,
                    signature: None,
                }),
            },
            Event::Signature(signed) => match self.parts.last_mut() {
                Some(Part::Thinking { signature, .. }) if signature.is_none() => *signature = Some(signed),
                _ => self.parts.push(Part::Thinking {
                    text: String::new(),
                    signature: Some(signed),
                }),
            },
            Event::ToolCallStart { index, id, name } => {
                if index == self.calls.len() {
                    self.calls.push((self.parts.len(), String::new()));
                    self.parts.push(Part::ToolCall {
                        id,
                        name,
                        arguments: Value::Null,
                    });
                }
            }
            Event::ToolArguments { index, delta } => {
                if let Some((_, arguments)) = self.calls.get_mut(index) {
                    arguments.push_str(&delta);
                }
            }
            Event::Finish(finish) => self.finish = Some(finish),
            Event::Usage(usage) => self.usage = usage,
            Event::Error { code, message } => self.error = Some((code, message)),
            Event::End => {}
        }
    }

    /// The answer, or the error (code, message) that ended it.
    pub fn finish(mut self) -> Result<Response, (String, String)> {
        if let Some(error) = self.error {
            return Err(error);
        }
        for (at, raw) in std::mem::take(&mut self.calls) {
            if let Some(Part::ToolCall { arguments, .. }) = self.parts.get_mut(at) {
                *arguments = tool_arguments(&raw);
            }
        }
        let has_calls = self.parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
        let finish = self.finish.unwrap_or(if has_calls {
            Finish::ToolCalls
        } else {
            Finish::Stop
        });
        Ok(Response {
            id: self.id,
            model: self.model,
            parts: self.parts,
            finish,
            usage: self.usage,
        })
    }
}

/// Arguments as the model wrote them: parsed when they are JSON, else kept as a string.
pub fn tool_arguments(raw: &str) -> Value {
    if raw.trim().is_empty() {
        return Value::Object(serde_json::Map::new());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}
