//! Anthropic Messages ⇄ IR. `upstream` speaks to an Anthropic upstream (request encoded,
//! answer and stream decoded); `client` serves an Anthropic client (request decoded,
//! answer and stream encoded).

mod client;
mod upstream;

pub use client::{EventEncoder, decode_request, encode_error, encode_response};
pub use upstream::{
    DEFAULT_MAX_TOKENS, EventDecoder, decode_error, decode_response, encode_request, refusals,
};
