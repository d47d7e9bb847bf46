//! The CPU cost of translation, in one run: a 2 KB Chat Completions request and its
//! answer handled the way the balancer handles them for an OpenAI upstream (parse, rewrite
//! `model`, serialise; the answer passes through untouched) and for an Anthropic upstream
//! (parse, decode, encode the request; decode and encode the answer, JSON or a 20-event
//! stream). Prints microseconds per request for each path and the difference.
//! See docs/benchmarks.md.
//!
//!     cargo run --release -p ez-balancer --example translation_bench

use std::hint::black_box;
use std::time::Instant;

use ez_balancer::formats::anthropic::{self, EventDecoder};
use ez_balancer::formats::openai_chat::{self, ChunkEncoder};
use ez_balancer::formats::sse::SseReader;
use ez_balancer::formats::{StreamDecoder, StreamEncoder};
use serde_json::{Map, Value, json};

const ROUNDS: usize = 15;
const PER_ROUND: usize = 5_000;

/// A Chat Completions request of about 2 KB: a system prompt, a few turns, one tool.
fn request() -> Vec<u8> {
    let turn = "Summarise the attached incident report in three bullet points, keeping the timeline. ";
    let body = json!({
        "model": "claude-sonnet",
        "messages": [
            { "role": "system", "content": "You are a careful assistant for an operations team. Answer briefly and cite times." },
            { "role": "user", "content": turn.repeat(9) },
            { "role": "assistant", "content": "Here is the summary you asked for, with the timeline kept intact and times cited." },
            { "role": "user", "content": turn.repeat(8) },
        ],
        "tools": [{ "type": "function", "function": { "name": "lookup_incident", "description": "Fetch an incident by id",
            "parameters": { "type": "object", "properties": { "id": { "type": "string" } }, "required": ["id"] } } }],
        "temperature": 0.3,
        "max_tokens": 512,
        "stream": false,
    });
    serde_json::to_vec(&body).expect("json")
}

fn anthropic_answer() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
        "content": [{ "type": "text", "text": "- 09:12 alert fired\n- 09:20 rollback started\n- 09:41 service restored" }],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": { "input_tokens": 480, "output_tokens": 31, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0 }
    }))
    .expect("json")
}

/// 20 events: start, a text block of 16 deltas, its stop, the final delta and stop.
fn anthropic_stream() -> Vec<u8> {
    let mut events = vec![format!(
        "event: message_start\ndata: {}\n\n",
        json!({ "type": "message_start", "message": { "id": "msg_1", "model": "claude-sonnet-4", "content": [], "usage": { "input_tokens": 480, "output_tokens": 1 } } })
    )];
    events.push(format!(
        "event: content_block_start\ndata: {}\n\n",
        json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } })
    ));
    for i in 0..16 {
        events.push(format!(
            "event: content_block_delta\ndata: {}\n\n",
            json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": format!("word{i} ") } })
        ));
    }
    events.push("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n".into());
    events.push(format!(
        "event: message_delta\ndata: {}\n\n",
        json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 31 } })
    ));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
    events.concat().into_bytes()
}

/// What the balancer does to a request for an upstream of the client's own format.
fn pass_through(request: &[u8]) -> Vec<u8> {
    let mut document: Map<String, Value> = serde_json::from_slice(request).expect("object");
    document.insert("model".into(), Value::String("gpt-4o-2024-08-06".into()));
    serde_json::to_vec(&document).expect("json")
}

fn translate_request(request: &[u8]) -> Vec<u8> {
    let document: Map<String, Value> = serde_json::from_slice(request).expect("object");
    let ir = openai_chat::decode_request(&document).expect("translatable");
    serde_json::to_vec(&anthropic::encode_request(&ir, "claude-sonnet-4")).expect("json")
}

fn translate_answer(answer: &[u8]) -> Vec<u8> {
    let value: Value = serde_json::from_slice(answer).expect("json");
    let response = anthropic::decode_response(&value).expect("an answer");
    serde_json::to_vec(&openai_chat::encode_response(&response, 1)).expect("json")
}

fn translate_stream(stream: &[u8]) -> usize {
    let mut reader = SseReader::default();
    let mut decoder = EventDecoder::default();
    let mut encoder = ChunkEncoder::new(1, true);
    let mut events = Vec::new();
    let mut out = Vec::new();
    // As the network delivers it: a few events per chunk.
    for chunk in stream.chunks(512) {
        reader.feed_with(chunk, |name, data| decoder.decode(name, data, &mut events));
        for event in events.drain(..) {
            encoder.encode(event, &mut out);
        }
    }
    out.len()
}

/// Microseconds one call of each of `paths` takes, as the median over rounds; the paths
/// take turns within each round, so a slower stretch of the machine weighs on all alike.
fn measure<const N: usize>(paths: &mut [&mut dyn FnMut(); N]) -> [f64; N] {
    let mut rounds = vec![[0.0; N]; ROUNDS];
    for round in &mut rounds {
        for (k, path) in paths.iter_mut().enumerate() {
            let started = Instant::now();
            for _ in 0..PER_ROUND {
                path();
            }
            round[k] = started.elapsed().as_secs_f64() * 1e6 / PER_ROUND as f64;
        }
    }
    std::array::from_fn(|k| {
        let mut times: Vec<f64> = rounds.iter().map(|r| r[k]).collect();
        times.sort_by(f64::total_cmp);
        times[ROUNDS / 2]
    })
}

fn main() {
    let request = request();
    let answer = anthropic_answer();
    let stream = anthropic_stream();
    println!(
        "request {} B, answer {} B, stream {} B ({ROUNDS} rounds of {PER_ROUND}, median)",
        request.len(),
        answer.len(),
        stream.len()
    );
    let mut plain = || {
        black_box(pass_through(black_box(&request)));
    };
    let mut translated = || {
        black_box(translate_request(black_box(&request)));
        black_box(translate_answer(black_box(&answer)));
    };
    let mut streamed = || {
        black_box(translate_request(black_box(&request)));
        black_box(translate_stream(black_box(&stream)));
    };
    let mut request_alone = || {
        black_box(translate_request(black_box(&request)));
    };
    let mut stream_alone = || {
        black_box(translate_stream(black_box(&stream)));
    };
    let [plain, translated, streamed, request_alone, stream_alone] = measure(&mut [
        &mut plain,
        &mut translated,
        &mut streamed,
        &mut request_alone,
        &mut stream_alone,
    ]);
    println!("| path | µs per request | added by translation |");
    println!("| --- | ---: | ---: |");
    println!("| OpenAI upstream (request parsed, model rewritten; answer passed through) | {plain:.2} | – |");
    println!(
        "| Anthropic upstream, JSON answer (request and answer translated) | {translated:.2} | {:.2} |",
        translated - plain
    );
    println!(
        "| Anthropic upstream, 20-event stream (request and every event translated) | {streamed:.2} | {:.2} |",
        streamed - plain
    );
    println!(
        "\nof which: the request translated {request_alone:.2} µs, the 20-event stream {stream_alone:.2} µs"
    );
}
