//! Mock provider upstreams shared by the balancer's and the binary's tests. Each checks
//! every request against the provider's documented rules (headers, required fields,
//! roles, tool-call pairing), records what it saw and whether it was valid, and answers in
//! the shapes of real answers, SSE included. `responses` plays OpenAI's Responses API, on the
//! platform or behind Codex subscriptions (the ChatGPT backend); `openai_chat` plays OpenAI's
//! Chat Completions API, with embeddings.

pub mod anthropic;
pub mod gemini;
pub mod openai_chat;
mod openai_rules;
pub mod responses;
