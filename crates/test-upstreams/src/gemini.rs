//! A mock Gemini API (`generateContent`, `streamGenerateContent?alt=sse`) that checks
//! every request — the `x-goog-api-key`, non-empty `contents` with roles `user` and
//! `model`, every `functionResponse` naming a function called earlier, with an object
//! `response` — and answers in the shapes of real answers: a text in two parts; with
//! tools, a `functionCall` of `weather` for Paris; after a function response, a text
//! built from it. Streams send one chunk per part (CRLF-separated, as Google's servers
//! do), the last with the finish reason and the final usage.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const KEY: &str = "AIza-gemini-upstream-0001";
pub const MODEL: &str = "gemini-2.5-flash";
pub const REPLY: &str = "Hello from Gemini.";
pub const PROMPT_TOKENS: u64 = 17;
pub const OUTPUT_TOKENS: u64 = 5;

/// What the mock saw: (path and query, body, the rule it broke).
pub type Seen = Arc<Mutex<Vec<(String, Value, Option<String>)>>>;

/// The first `generateContent` rule `body` breaks.
fn broken_rule(headers: &HeaderMap, body: &Value) -> Option<String> {
    if headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()) != Some(KEY) {
        return Some("API key not valid".into());
    }
    let contents = body["contents"].as_array().filter(|c| !c.is_empty())?;
    let mut called: Vec<String> = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        if !matches!(content["role"].as_str(), Some("user" | "model")) {
            return Some(format!("contents[{i}].role must be user or model"));
        }
        for part in content["parts"].as_array().into_iter().flatten() {
            if let Some(call) = part.get("functionCall") {
                called.push(call["name"].as_str().unwrap_or_default().to_owned());
            }
            if let Some(response) = part.get("functionResponse") {
                let name = response["name"].as_str().unwrap_or_default();
                if !called.iter().any(|c| c == name) || !response["response"].is_object() {
                    return Some(format!("contents[{i}]: functionResponse {name} answers no call"));
                }
            }
        }
    }
    None
}

async fn generate(
    State(seen): State<Seen>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let rule = if body["contents"].as_array().is_none_or(Vec::is_empty) {
        Some("contents is required".to_owned())
    } else {
        broken_rule(&headers, &body)
    };
    let target = format!("{rest}?{}", query.unwrap_or_default());
    seen.lock()
        .unwrap()
        .push((target.clone(), body.clone(), rule.clone()));
    if let Some(rule) = rule {
        let error = json!({ "error": { "code": 400, "message": rule, "status": "INVALID_ARGUMENT" } });
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let last = body["contents"]
        .as_array()
        .and_then(|c| c.last())
        .cloned()
        .unwrap_or_default();
    let result = last["parts"][0]["functionResponse"]["response"]["content"]
        .as_str()
        .map(str::to_owned);
    let parts: Vec<Value> = match (result, body["tools"].is_array()) {
        (Some(result), _) => vec![json!({ "text": format!("It is {result}.") })],
        (None, true) => vec![json!({ "functionCall": { "name": "weather", "args": { "city": "Paris" } } })],
        (None, false) => vec![json!({ "text": "Hello" }), json!({ "text": " from Gemini." })],
    };
    let usage = json!({ "promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
        "totalTokenCount": PROMPT_TOKENS + OUTPUT_TOKENS });
    if !target.contains(":streamGenerateContent") {
        return Json(json!({
            "candidates": [{ "content": { "role": "model", "parts": parts }, "finishReason": "STOP", "index": 0 }],
            "usageMetadata": usage, "modelVersion": MODEL, "responseId": "gem-1",
        }))
        .into_response();
    }
    // One chunk per part; the last carries the finish reason and the final usage.
    let count = parts.len();
    let chunks: Vec<Result<String, std::io::Error>> = parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            let mut chunk = json!({ "candidates": [{ "content": { "role": "model", "parts": [part] }, "index": 0 }],
                "modelVersion": MODEL, "responseId": "gem-1", "usageMetadata": { "promptTokenCount": PROMPT_TOKENS } });
            if i + 1 == count {
                chunk["candidates"][0]["finishReason"] = json!("STOP");
                chunk["usageMetadata"] = usage.clone();
            }
            Ok(format!("data: {chunk}\r\n\r\n"))
        })
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("a static response")
}

/// Starts the mock; returns its origin (a Gemini base URL) and what it saw.
pub async fn start() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/v1beta/models/{*rest}", axum::routing::post(generate))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (origin, seen)
}

/// The rules the requests broke, one per broken request.
pub fn broken(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .filter_map(|(_, _, rule)| rule.clone())
        .collect()
}
