//! Token counts the balancer estimates itself, for answers whose usage block never
//! arrived (a client that went away mid-stream, a stream the upstream cut, an upstream
//! that does not report usage): usage that cannot be dodged by hanging up.
//!
//! The rule is the usual rough one — about four bytes of text per token — applied to the
//! text a request sends and to the text deltas a stream carried. Records holding such
//! counts say so (`usage_estimated`).

use memchr::memmem;
use serde_json::{Map, Value};

const BYTES_PER_TOKEN: i64 = 4;

/// Fields whose values are not prompt text: binary payloads (base64 images, audio,
/// files), links to them, and the request's own settings.
const NOT_TEXT: [&str; 6] = ["data", "image_url", "url", "file_data", "model", "b64_json"];

/// Tokens of the text a request carries: every string of its document except binary
/// payloads and links (`data`, `image_url`, …) and `data:` URLs.
pub fn prompt_tokens(document: &Map<String, Value>) -> i64 {
    let bytes: usize = document
        .iter()
        .filter(|(key, _)| !NOT_TEXT.contains(&key.as_str()))
        .map(|(_, value)| text_bytes(value, 0))
        .sum();
    tokens_of(bytes)
}

/// Deep enough for any real message structure; deeper nesting is not counted.
const MAX_DEPTH: usize = 16;

fn text_bytes(value: &Value, depth: usize) -> usize {
    if depth > MAX_DEPTH {
        return 0;
    }
    match value {
        Value::String(s) if s.starts_with("data:") => 0,
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(|v| text_bytes(v, depth + 1)).sum(),
        Value::Object(fields) => fields
            .iter()
            .filter(|(key, _)| !NOT_TEXT.contains(&key.as_str()))
            .map(|(_, v)| text_bytes(v, depth + 1))
            .sum(),
        _ => 0,
    }
}

fn tokens_of(bytes: usize) -> i64 {
    let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    bytes.saturating_add(BYTES_PER_TOKEN - 1) / BYTES_PER_TOKEN
}

/// The JSON keys whose string values are generated text in the stream events of each
/// format: OpenAI chat/completions (`content`, `text`, tool call `arguments`, reasoning),
/// Responses (`delta`), Anthropic (`text`, `partial_json`, `thinking`).
const DELTA_KEYS: [&[u8]; 7] = [
    b"\"content\":",
    b"\"text\":",
    b"\"arguments\":",
    b"\"delta\":",
    b"\"partial_json\":",
    b"\"thinking\":",
    b"\"reasoning_content\":",
];

/// Counts the bytes of generated text in the stream events that pass, without parsing
/// them: a search for each text key and a scan to the closing quote.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeltaMeter {
    bytes: usize,
}

impl DeltaMeter {
    /// Takes one whole SSE event.
    pub fn observe(&mut self, event: &[u8]) {
        for key in DELTA_KEYS {
            let mut from = 0;
            while let Some(at) = memmem::find(&event[from..], key) {
                let mut start = from + at + key.len();
                // Python servers write `"key": "value"`.
                while event.get(start).is_some_and(u8::is_ascii_whitespace) {
                    start += 1;
                }
                if event.get(start) != Some(&b'"') {
                    // Not a string (`"delta":{…}`, `"content":[]`).
                    from = start;
                    continue;
                }
                start += 1;
                let len = string_len(&event[start..]);
                self.bytes += len;
                from = start + len;
            }
        }
    }

    /// The output tokens the text seen so far is worth.
    pub fn tokens(&self) -> i64 {
        tokens_of(self.bytes)
    }
}

/// Length of a JSON string's body up to its closing (unescaped) quote, or to the end.
fn string_len(bytes: &[u8]) -> usize {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn doc(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test documents are objects"),
        }
    }

    #[test]
    fn prompts_count_their_text_not_their_images() {
        let text = "x".repeat(400);
        let plain = doc(json!({ "model": "gpt-4o", "messages": [{ "role": "user", "content": text }] }));
        // "user" (4 bytes) + 400 bytes of text.
        assert_eq!(prompt_tokens(&plain), 101);
        let image = "A".repeat(100_000);
        let with_image = doc(json!({
            "model": "gpt-4o",
            "messages": [{ "role": "user", "content": [
                { "type": "text", "text": text },
                { "type": "image_url", "image_url": { "url": format!("data:image/png;base64,{image}") } }
            ] }],
        }));
        let anthropic_image = doc(json!({
            "messages": [{ "role": "user", "content": [
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": image } }
            ] }],
        }));
        assert!(prompt_tokens(&with_image) < 120, "{}", prompt_tokens(&with_image));
        assert!(prompt_tokens(&anthropic_image) < 20);
    }

    #[test]
    fn deltas_of_every_format_are_metered() {
        let mut m = DeltaMeter::default();
        m.observe(br#"data: {"choices":[{"delta":{"content":"Hello, wo"}}]}"#);
        m.observe(br#"data: {"choices":[{"delta":{"content":"rld \"quoted\""}}]}"#);
        assert_eq!(m.bytes, 9 + 14);
        let mut a = DeltaMeter::default();
        a.observe(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"abcd\"}}\n\n");
        a.observe(br#"data: {"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"{\"q\":1}"}}"#);
        assert_eq!(a.bytes, 4 + 9);
        let mut r = DeltaMeter::default();
        r.observe(br#"data: {"type":"response.output_text.delta","delta":"12345678"}"#);
        assert_eq!(r.tokens(), 2);
        let mut tools = DeltaMeter::default();
        tools.observe(
            br#"data: {"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"a\""}}]}}]}"#,
        );
        assert_eq!(tools.bytes, 6);
        let mut spaced = DeltaMeter::default();
        spaced.observe(br#"data: {"choices": [{"delta": {"content": "abcdef"}}]}"#);
        assert_eq!(spaced.bytes, 6);
        // A string cut at the end of the event counts what there is.
        let mut cut = DeltaMeter::default();
        cut.observe(br#"data: {"text":"abc"#);
        assert_eq!(cut.bytes, 3);
    }
}
