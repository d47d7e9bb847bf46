//! Gemini `generateContent` ⇄ IR. `upstream` speaks to a Gemini API-key upstream (request
//! encoded, answer and stream decoded); `client` serves a Gemini client such as
//! `google-genai` (request decoded, answer and stream encoded); `endpoint` places a request
//! on each Google upstream (Gemini API, Vertex AI, Code Assist).
//!
//! Gemini names function results by the function's name, not by a call id, and gives
//! calls no ids of its own: answers number them (`call_<n>_<name>`), and a result is
//! matched to its call through the conversation.

mod client;
pub mod endpoint;
mod upstream;

pub use client::{ChunkEncoder, decode_request, encode_error, encode_response};
pub use upstream::{ChunkDecoder, decode_error, decode_response, encode_request};
