//! OpenAI Responses ⇄ IR. `upstream` speaks to a Responses upstream (request encoded,
//! answer and stream decoded; the Codex backend's rules included); `client` serves a
//! Responses client (request decoded, answer and stream encoded). The gateway keeps no
//! conversation state, so `previous_response_id` is refused when translating.

mod client;
mod upstream;

pub use client::{EventEncoder, decode_request, encode_response};
pub use upstream::{EventDecoder, decode_error, decode_response, encode_request};

/// A reasoning item's summary texts, joined by a blank line.
fn summary_text(item: &serde_json::Value) -> String {
    item["summary"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        })
        .unwrap_or_default()
}
