//! Round-trip properties of the request translators: a request translated to another
//! format and back keeps its meaning.
//!
//! 1. For each format, `decode(encode(ir))` is `normalise(ir)` for every generated IR
//!    request, the normalisation being that format's short list of [`Norm`]s: what its
//!    wire request cannot keep apart, nothing more.
//! 2. A wire request of format X (X's encoding of a generated request) read by X's
//!    decoder, translated to Y and read back, is what X's decoder read, normalised by Y;
//!    written in X again and read back, it is that, normalised by X too.
//!
//! Wire requests go through their JSON text, as on the wire. The generator ([`request`])
//! stays within what the formats can carry; what one of them has no field for ([`Unsaid`])
//! is left out of the requests it is given. A new format is one entry in [`FORMATS`].

use std::collections::HashMap;

use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{Map, Value, json};

use super::ir::{Effort, Image, Message, Part, Request, Role, Tool, ToolChoice};
use super::{Refusal, anthropic, gemini, openai_chat, openai_responses};

/// A wire format's request translators.
struct WireFormat {
    name: &'static str,
    encode: fn(&Request) -> Result<Value, Refusal>,
    /// `stream` is the URL's, for the formats that say it there.
    decode: fn(&Map<String, Value>, bool) -> Result<Request, Refusal>,
    /// What a trip through the format may change, applied in order.
    normalise: &'static [Norm],
    /// What the format cannot say: left out of the requests it is given.
    unsaid: &'static [Unsaid],
}

const MODEL: &str = "m";

const FORMATS: [WireFormat; 4] = [
    WireFormat {
        name: "openai_chat",
        encode: |ir| Ok(openai_chat::encode_request(ir, MODEL)),
        decode: |wire, _| openai_chat::decode_request(wire),
        normalise: &[
            Norm::JoinSystem,
            Norm::ResultsApart,
            Norm::MarkFailedResults("[error] "),
            Norm::TextThenCalls,
            Norm::NoToolSettingsWithoutTools,
            Norm::StreamUsageIsStream,
        ],
        unsaid: &[],
    },
    WireFormat {
        name: "anthropic",
        encode: |ir| {
            anthropic::refusals(ir)?;
            Ok(anthropic::encode_request(ir, MODEL))
        },
        decode: |wire, _| anthropic::decode_request(wire),
        normalise: &[
            Norm::JoinSystem,
            Norm::MergeTurns,
            Norm::ResultsFirst,
            Norm::SerialCallsOnTheChoice,
            Norm::BudgetInMaxTokens,
            Norm::NoStreamUsage,
        ],
        unsaid: &[Unsaid::SamplingWhileReasoning, Unsaid::ReasoningAfterUnsignedCall],
    },
    WireFormat {
        name: "gemini",
        encode: |ir| gemini::encode_request(ir, MODEL),
        decode: gemini::decode_request,
        normalise: &[
            Norm::JoinSystem,
            Norm::MergeTurns,
            Norm::ResultsInCallOrder,
            Norm::DeriveCallIds,
            Norm::StreamUsageIsStream,
        ],
        unsaid: &[Unsaid::ImageUrls, Unsaid::SerialToolCalls, Unsaid::UserId],
    },
    WireFormat {
        name: "openai_responses",
        encode: |ir| openai_responses::encode_request(ir, MODEL, false),
        decode: |wire, _| openai_responses::decode_request(wire),
        normalise: &[
            Norm::JoinSystem,
            Norm::MergeTurns,
            Norm::MarkFailedResults("Error: "),
            Norm::NoToolSettingsWithoutTools,
            Norm::NoStreamUsage,
        ],
        unsaid: &[Unsaid::StopSequences],
    },
];

/// What a format has no field for: its encoder refuses it (or, for the user id, a hint to
/// the provider's abuse monitoring, leaves it out).
#[derive(Debug, Clone, Copy)]
enum Unsaid {
    StopSequences,
    /// Images given by URL (Gemini fetches none).
    ImageUrls,
    /// `parallel_tool_calls: false`.
    SerialToolCalls,
    UserId,
    /// Anthropic: a temperature (other than 1) or a low `top_p` while reasoning.
    SamplingWhileReasoning,
    /// Anthropic: reasoning in a request that continues a tool call made without signed
    /// thinking (Anthropic refuses it; the encoder leaves it out for that turn).
    ReasoningAfterUnsignedCall,
}

/// `ir` without what one of `formats` cannot say.
fn said_by(ir: &Request, formats: &[&WireFormat]) -> Request {
    let mut ir = ir.clone();
    for unsaid in formats.iter().flat_map(|f| f.unsaid) {
        match unsaid {
            Unsaid::StopSequences => ir.stop.clear(),
            Unsaid::ImageUrls => {
                for message in &mut ir.messages {
                    message.parts.retain(|p| !matches!(p, Part::Image(Image::Url(_))));
                }
                ir.messages.retain(|m| !m.parts.is_empty());
            }
            Unsaid::SerialToolCalls => ir.parallel_tool_calls = true,
            Unsaid::UserId => ir.user = None,
            Unsaid::SamplingWhileReasoning if ir.reasoning.is_some() => {
                ir.temperature = None;
                ir.top_p = None;
            }
            Unsaid::SamplingWhileReasoning => {}
            Unsaid::ReasoningAfterUnsignedCall => {
                let last = ir.messages.iter().rev().find(|m| m.role == Role::Assistant);
                if last.is_some_and(|m| m.parts.iter().any(|p| matches!(p, Part::ToolCall { .. }))) {
                    ir.reasoning = None;
                }
            }
        }
    }
    ir
}

/// What a trip through a format may change: each is something the format has no way to
/// say otherwise, and none changes what the answer should be.
#[derive(Debug, Clone, Copy)]
enum Norm {
    /// One system field: the instructions are joined by a blank line.
    JoinSystem,
    /// Consecutive turns of one role are one turn (Anthropic and Gemini alternate roles;
    /// Responses items of one role in a row read as one turn).
    MergeTurns,
    /// Tool results lead their user turn (Anthropic requires it).
    ResultsFirst,
    /// Chat: each tool result is a `tool` message of its own, ahead of the rest of its
    /// user turn.
    ResultsApart,
    /// A tool result has no failure flag: a failed one's text is marked with this.
    MarkFailedResults(&'static str),
    /// Chat: an assistant message is one text (its parts joined), then its calls.
    TextThenCalls,
    /// Gemini has no call ids: calls are numbered `call_<n>_<name>` through the
    /// conversation, and each result names the call it answers.
    DeriveCallIds,
    /// Gemini pairs results with calls by name and order: a turn's results are sent in the
    /// order of their calls (each keeps its call; their order in the turn says nothing).
    ResultsInCallOrder,
    /// Without tools, a tool choice and serial calls mean nothing and are not sent (OpenAI
    /// refuses a choice without tools).
    NoToolSettingsWithoutTools,
    /// Anthropic says serial calls on the tool choice (`disable_parallel_tool_use`):
    /// without a choice, on the default `auto` when there are tools and not at all when
    /// there are none; `none` makes no call to serialise.
    SerialCallsOnTheChoice,
    /// Anthropic requires `max_tokens` (4096 when unset) and counts the thinking budget
    /// in it: the encoder adds the budget, keeping the client's room for the answer.
    BudgetInMaxTokens,
    /// Whether the client asked for stream usage: Chat's encoder always asks for it in a
    /// stream, Gemini always streams it.
    StreamUsageIsStream,
    /// Anthropic and Responses requests cannot ask for stream usage (it always comes).
    NoStreamUsage,
}

impl Norm {
    fn apply(self, ir: &mut Request) {
        let messages = std::mem::take(&mut ir.messages);
        ir.messages = match self {
            Norm::JoinSystem => {
                if !ir.system.is_empty() {
                    ir.system = vec![ir.system.join("\n\n")];
                }
                messages
            }
            Norm::MergeTurns => merge_turns(messages),
            Norm::ResultsFirst => messages
                .into_iter()
                .map(|mut m| {
                    m.parts.sort_by_key(|p| !matches!(p, Part::ToolResult { .. }));
                    m
                })
                .collect(),
            Norm::ResultsApart => results_apart(messages),
            Norm::MarkFailedResults(mark) => mark_failed_results(messages, mark),
            Norm::TextThenCalls => messages.into_iter().filter_map(text_then_calls).collect(),
            Norm::DeriveCallIds => derive_call_ids(messages),
            Norm::ResultsInCallOrder => results_in_call_order(messages),
            Norm::NoToolSettingsWithoutTools => {
                if ir.tools.is_empty() {
                    ir.tool_choice = None;
                    ir.parallel_tool_calls = true;
                }
                messages
            }
            Norm::SerialCallsOnTheChoice => {
                serial_calls_on_the_choice(ir);
                messages
            }
            Norm::BudgetInMaxTokens => {
                let budget = ir.reasoning.map_or(0, thinking_budget);
                ir.max_tokens = Some(ir.max_tokens.unwrap_or(anthropic::DEFAULT_MAX_TOKENS) + budget);
                messages
            }
            Norm::StreamUsageIsStream => {
                ir.stream_usage = ir.stream;
                messages
            }
            Norm::NoStreamUsage => {
                ir.stream_usage = false;
                messages
            }
        };
    }
}

/// Anthropic's thinking budget for each effort (`anthropic/upstream.rs`).
fn thinking_budget(effort: Effort) -> u64 {
    match effort {
        Effort::Low => 1024,
        Effort::Medium => 8192,
        Effort::High => 24_576,
    }
}

fn serial_calls_on_the_choice(ir: &mut Request) {
    if ir.parallel_tool_calls {
        return;
    }
    match ir.tool_choice {
        None if ir.tools.is_empty() => ir.parallel_tool_calls = true,
        None => ir.tool_choice = Some(ToolChoice::Auto),
        Some(ToolChoice::None) => ir.parallel_tool_calls = true,
        Some(_) => {}
    }
}

fn merge_turns(messages: Vec<Message>) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for message in messages.into_iter().filter(|m| !m.parts.is_empty()) {
        match out.last_mut() {
            Some(last) if last.role == message.role => last.parts.extend(message.parts),
            _ => out.push(message),
        }
    }
    out
}

fn results_apart(messages: Vec<Message>) -> Vec<Message> {
    let mut out = Vec::with_capacity(messages.len());
    for message in messages {
        if message.role == Role::Assistant {
            out.push(message);
            continue;
        }
        let (results, rest): (Vec<Part>, Vec<Part>) = message
            .parts
            .into_iter()
            .partition(|p| matches!(p, Part::ToolResult { .. }));
        for result in results {
            out.push(Message {
                role: Role::User,
                parts: vec![result],
            });
        }
        if !rest.is_empty() {
            out.push(Message {
                role: Role::User,
                parts: rest,
            });
        }
    }
    out
}

fn mark_failed_results(mut messages: Vec<Message>, mark: &str) -> Vec<Message> {
    for part in messages.iter_mut().flat_map(|m| &mut m.parts) {
        if let Part::ToolResult {
            content, is_error, ..
        } = part
            && *is_error
        {
            *content = format!("{mark}{content}");
            *is_error = false;
        }
    }
    messages
}

fn text_then_calls(message: Message) -> Option<Message> {
    if message.role == Role::User {
        return Some(message);
    }
    let text: String = message
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    let mut parts: Vec<Part> = Some(text)
        .filter(|t| !t.is_empty())
        .map(Part::Text)
        .into_iter()
        .collect();
    parts.extend(
        message
            .parts
            .into_iter()
            .filter(|p| matches!(p, Part::ToolCall { .. })),
    );
    (!parts.is_empty()).then_some(Message {
        role: Role::Assistant,
        parts,
    })
}

fn derive_call_ids(mut messages: Vec<Message>) -> Vec<Message> {
    let mut ids = HashMap::new();
    let mut made = 0;
    for part in messages.iter_mut().flat_map(|m| &mut m.parts) {
        match part {
            Part::ToolCall { id, name, .. } => {
                let derived = format!("call_{made}_{name}");
                made += 1;
                ids.insert(std::mem::replace(id, derived.clone()), derived);
            }
            Part::ToolResult { call_id, .. } => {
                if let Some(derived) = ids.get(call_id) {
                    call_id.clone_from(derived);
                }
            }
            _ => {}
        }
    }
    messages
}

fn normalise(format: &WireFormat, mut ir: Request) -> Request {
    for norm in format.normalise {
        norm.apply(&mut ir);
    }
    ir
}

/// `ir` encoded in `format`, sent as JSON text and decoded.
fn through(format: &WireFormat, ir: &Request) -> Result<Request, TestCaseError> {
    let refused =
        |side: &str, r: Refusal| TestCaseError::fail(format!("{} {side}: {}", format.name, r.message));
    let wire = (format.encode)(ir).map_err(|r| refused("encoder", r))?;
    let wire: Map<String, Value> =
        serde_json::from_str(&wire.to_string()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    (format.decode)(&wire, ir.stream).map_err(|r| refused("decoder", r))
}

/// Property 1: each format gives back what it was given, normalised.
fn each_format_keeps(ir: &Request) -> Result<(), TestCaseError> {
    for format in &FORMATS {
        let ir = said_by(ir, &[format]);
        let back = through(format, &ir)?;
        prop_assert_eq!(back, normalise(format, ir), "through {}", format.name);
    }
    Ok(())
}

/// Property 2: a wire request of each format survives a trip through each other format.
fn other_formats_keep(ir: &Request) -> Result<(), TestCaseError> {
    for x in &FORMATS {
        for y in FORMATS.iter().filter(|y| y.name != x.name) {
            let read = through(x, &said_by(ir, &[x, y]))?;
            let via_y = through(y, &read)?;
            let expected = normalise(y, read.clone());
            prop_assert_eq!(&via_y, &expected, "{} read, through {}", x.name, y.name);
            let back = through(x, &via_y)?;
            prop_assert_eq!(
                back,
                normalise(x, expected),
                "{} → {} → {}",
                x.name,
                y.name,
                x.name
            );
        }
    }
    Ok(())
}

// ---- The generator ----

/// Which generated requests a property gets. Each `false` leaves out requests that some
/// format did not keep (see the properties of their own below).
#[derive(Debug, Clone, Copy)]
struct Domain {
    /// Tool results flagged as failures.
    failed_results: bool,
    /// Tool results in another order than their calls.
    results_out_of_order: bool,
}

/// What every format keeps today.
const KEPT: Domain = Domain {
    failed_results: false,
    results_out_of_order: false,
};

const TOOL_NAMES: [&str; 4] = ["get_weather", "search", "f", "read-file"];
const MEDIA_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// Printable and non-empty, quotes, backslashes and some non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    "[ -~àéß中文🙂]{1,16}"
}

fn user_part() -> impl Strategy<Value = Part> {
    let image = (select(MEDIA_TYPES.to_vec()), "[A-Za-z0-9+/]{4,24}={0,2}").prop_map(|(media_type, data)| {
        Part::Image(Image::Base64 {
            media_type: media_type.to_owned(),
            data,
        })
    });
    let url =
        "[a-z0-9]{1,8}".prop_map(|name| Part::Image(Image::Url(format!("https://example.com/{name}.png"))));
    prop_oneof![6 => text().prop_map(Part::Text), 2 => image, 1 => url]
}

/// A JSON object of strings, integers, quarter numbers, booleans, nulls and a level or
/// two of arrays and objects.
fn arguments() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        text().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-400i32..400).prop_map(|q| Value::from(f64::from(q) / 4.0)),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
    ];
    let value = leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..3).prop_map(Value::Array),
            btree_map("[a-z_]{1,6}", inner, 0..3).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    btree_map("[a-z_]{1,8}", value, 0..4).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// An object schema with typed, maybe described properties, the first one required.
fn schema() -> impl Strategy<Value = Value> {
    let types = select(vec!["string", "integer", "number", "boolean"]);
    btree_map("[a-z_]{1,8}", (types, option::of(text())), 0..4).prop_map(|properties| {
        let required: Vec<&String> = properties.keys().take(1).collect();
        let properties: Map<String, Value> = properties
            .iter()
            .map(|(name, (kind, description))| {
                let mut property = json!({ "type": kind });
                if let Some(description) = description {
                    property["description"] = json!(description);
                }
                (name.clone(), property)
            })
            .collect();
        json!({ "type": "object", "properties": properties, "required": required })
    })
}

fn tools() -> impl Strategy<Value = Vec<Tool>> {
    let names = subsequence(TOOL_NAMES.to_vec(), 0..=TOOL_NAMES.len());
    let specs = vec((option::of(text()), schema()), TOOL_NAMES.len());
    (names, specs).prop_map(|(names, specs)| {
        names
            .into_iter()
            .zip(specs)
            .map(|(name, (description, parameters))| Tool {
                name: name.to_owned(),
                description,
                parameters,
            })
            .collect()
    })
}

/// A call the assistant makes, and how the user answers it.
#[derive(Debug, Clone)]
struct Call {
    name: &'static str,
    arguments: Value,
    result: String,
    failed: bool,
    /// Where the answer goes among its turn's answers (when the domain lets them move).
    rank: u8,
}

/// One step of a generated conversation (which opens with a user turn).
#[derive(Debug, Clone)]
enum Step {
    User(Vec<Part>),
    /// An assistant turn of text only.
    Says(Vec<String>),
    /// An assistant turn calling tools, maybe after some text, then the user turn that
    /// answers every call, maybe with more to say.
    Calls {
        text: Option<String>,
        calls: Vec<Call>,
        then: Vec<Part>,
        /// Whether the user says `then` before the answers.
        then_first: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    let call = (
        select(TOOL_NAMES.to_vec()),
        arguments(),
        text(),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(name, arguments, result, failed, rank)| Call {
            name,
            arguments,
            result,
            failed,
            rank,
        });
    prop_oneof![
        vec(user_part(), 1..=3).prop_map(Step::User),
        vec(text(), 1..=2).prop_map(Step::Says),
        (
            option::of(text()),
            vec(call, 1..=3),
            vec(user_part(), 0..=2),
            any::<bool>()
        )
            .prop_map(|(text, calls, then, then_first)| Step::Calls {
                text,
                calls,
                then,
                then_first
            }),
    ]
}

fn conversation(first: Vec<Part>, steps: Vec<Step>, domain: Domain) -> Vec<Message> {
    let turn = |role, parts| Message { role, parts };
    let mut messages = vec![turn(Role::User, first)];
    let mut made = 0;
    for step in steps {
        match step {
            Step::User(parts) => messages.push(turn(Role::User, parts)),
            Step::Says(texts) => {
                messages.push(turn(Role::Assistant, texts.into_iter().map(Part::Text).collect()))
            }
            Step::Calls {
                text,
                calls,
                then,
                then_first,
            } => {
                let id = |k: usize| format!("toolu_{:02}", made + k);
                let mut parts: Vec<Part> = text.into_iter().map(Part::Text).collect();
                parts.extend(calls.iter().enumerate().map(|(k, call)| Part::ToolCall {
                    id: id(k),
                    name: call.name.to_owned(),
                    arguments: call.arguments.clone(),
                }));
                messages.push(turn(Role::Assistant, parts));
                let mut answers: Vec<(usize, &Call)> = calls.iter().enumerate().collect();
                if domain.results_out_of_order {
                    answers.sort_by_key(|(_, call)| call.rank);
                }
                let answers = answers.into_iter().map(|(k, call)| Part::ToolResult {
                    call_id: id(k),
                    content: call.result.clone(),
                    is_error: call.failed && domain.failed_results,
                });
                let parts = if then_first {
                    then.into_iter().chain(answers).collect()
                } else {
                    answers.chain(then).collect()
                };
                messages.push(turn(Role::User, parts));
                made += calls.len();
            }
        }
    }
    messages
}

fn tool_choice(choice: Option<(u8, Index)>, tools: &[Tool]) -> Option<ToolChoice> {
    Some(match choice? {
        (0, _) => ToolChoice::Auto,
        (1, _) => ToolChoice::None,
        (2, at) if !tools.is_empty() => ToolChoice::Named(at.get(tools).name.clone()),
        _ => ToolChoice::Required,
    })
}

/// In (0, 1], in hundredths.
fn fraction() -> impl Strategy<Value = f64> {
    (1u32..=100).prop_map(|k| f64::from(k) / 100.0)
}

/// An IR request within what the formats can carry: no reasoning from earlier turns and no
/// empty texts (dropped by design); the conversation opens with a user's text.
fn request(domain: Domain) -> impl Strategy<Value = Request> {
    let conversation_ = (text(), vec(user_part(), 0..=2), vec(step(), 0..6));
    let effort = prop_oneof![Just(Effort::Low), Just(Effort::Medium), Just(Effort::High)];
    let settings = (
        option::of((0u8..4, any::<Index>())),
        option::of(1u64..200_000),
        option::of(fraction()),
        option::of(fraction()),
        vec("[a-zA-Z#]{1,6}", 0..3),
        option::of(effort),
        any::<(bool, bool)>(),
        prop::bool::weighted(0.75),
        option::of("[a-z0-9-]{1,12}"),
    );
    (vec(text(), 0..3), conversation_, tools(), settings).prop_map(
        move |(system, (opening, more, steps), tools, s)| {
            let (choice, max_tokens, temperature, top_p, stop, reasoning, (stream, usage), parallel, user) =
                s;
            let first = std::iter::once(Part::Text(opening)).chain(more).collect();
            Request {
                system,
                messages: conversation(first, steps, domain),
                tool_choice: tool_choice(choice, &tools),
                tools,
                parallel_tool_calls: parallel,
                max_tokens,
                temperature,
                top_p,
                stop,
                stream,
                stream_usage: stream && usage,
                reasoning,
                user,
                output: None,
            }
        },
    )
}

/// Each turn's tool results in the order of their calls, in the slots results held.
fn results_in_call_order(messages: Vec<Message>) -> Vec<Message> {
    let calls: Vec<String> = messages
        .iter()
        .flat_map(|m| &m.parts)
        .filter_map(|p| match p {
            Part::ToolCall { id, .. } => Some(id.clone()),
            _ => None,
        })
        .collect();
    let position = |p: &Part| match p {
        Part::ToolResult { call_id, .. } => calls.iter().position(|id| id == call_id),
        _ => None,
    };
    messages
        .into_iter()
        .map(|mut m| {
            let mut results: Vec<Part> = m
                .parts
                .iter()
                .filter(|p| position(p).is_some())
                .cloned()
                .collect();
            results.sort_by_key(|p| position(p));
            let mut results = results.into_iter();
            for p in &mut m.parts {
                if position(p).is_some() {
                    *p = results.next().expect("as many results");
                }
            }
            m
        })
        .collect()
}

/// `cases` requests a property; a failing one is shrunk and printed, not saved in a file
/// beside the source (known cases are written down as properties of their own below).
fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_request_keeps_its_meaning_through_each_format(ir in request(KEPT)) {
        each_format_keeps(&ir)?;
    }
}

proptest! {
    // Each ordered pair of formats, three trips each: fewer cases, about as long a run.
    #![proptest_config(config(128))]

    #[test]
    fn a_wire_request_keeps_its_meaning_through_each_other_format(ir in request(KEPT)) {
        other_formats_keep(&ir)?;
    }

    /// `[user "a"] [assistant call f] [user result of f, is_error]`: the failure survives
    /// every format (Gemini says it as `{"error": …}`; Chat and Responses mark the text).
    #[test]
    fn failed_tool_results_stay_failed(ir in request(Domain { failed_results: true, ..KEPT })) {
        each_format_keeps(&ir)?;
        other_formats_keep(&ir)?;
    }

    /// `[user "a"] [assistant calls f (id 0), f (id 1)] [user result of 1 "x", result of
    /// 0 "y"]`: each result keeps its call (Gemini, which pairs by name and order, is sent
    /// them in call order).
    #[test]
    fn results_answered_out_of_order_keep_their_calls(
        ir in request(Domain { results_out_of_order: true, ..KEPT })
    ) {
        each_format_keeps(&ir)?;
        other_formats_keep(&ir)?;
    }
}
