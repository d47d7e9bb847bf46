//! OpenAI Chat Completions ⇄ IR. `client` serves a Chat client (request decoded, answer
//! and stream chunks encoded); `upstream` speaks to an OpenAI-format upstream (request
//! encoded, answer and stream chunks decoded).

mod client;
mod upstream;

pub use client::{ChunkEncoder, decode_request, encode_response};
pub use upstream::{ChunkDecoder, decode_error, decode_response, encode_request};
