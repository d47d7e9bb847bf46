//! The internal representation every wire format is translated through: a conversation
//! request, its answer and the events of its stream. Each format has a decoder (wire →
//! IR) and an encoder (IR → wire), so N formats need N pairs of pieces, not N×N
//! translators (`docs/formats.md`).

use serde_json::Value;

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
    /// send it back to the same provider).
    Thinking {
        text: String,
        signature: Option<String>,
    },
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
