//! A mock Gemini API (`generateContent`, `streamGenerateContent?alt=sse`) that checks
//! every request — the credential, non-empty `contents` with roles `user` and `model`,
//! every `functionResponse` naming a function called earlier, with an object `response` —
//! and answers in the shapes of real answers: a text in two parts; with tools, a
//! `functionCall` of `weather` for Paris; after a function response, a text built from it.
//! Streams send one chunk per part (CRLF-separated, as Google's servers do), the last with
//! the finish reason and the final usage.
//!
//! It serves the layouts of every Google upstream: the Gemini API
//! (`/v1beta/models/{model}:…`, key in `x-goog-api-key`), Vertex AI
//! (`/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:…`, a
//! bearer [`ACCESS_TOKEN`]), Vertex express mode (`/v1/publishers/google/models/{model}:…`,
//! the key) and the Code Assist API of the Gemini CLI and Antigravity subscriptions
//! (`/v1internal:…`, the bearer token, the request in `{"model", "project", "request"}` —
//! a `project` is required — and every answer in `{"response": …}`).

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
/// The OAuth access token Vertex AI and Code Assist accept.
pub const ACCESS_TOKEN: &str = "ya29.mock-google-access-token";
/// The thought signature on the mock's function calls; Gemini 3 models (a model name
/// starting `gemini-3`) refuse a model turn whose first call comes back without it (or
/// without the validator-skipping signature Google documents).
pub const SIGNATURE: &str = "CiQB0e2Kb7mock-thought-signature";
const SKIP_VALIDATOR: &str = "skip_thought_signature_validator";

/// What the mock saw: (path and query, body, the rule it broke).
pub type Seen = Arc<Mutex<Vec<(String, Value, Option<String>)>>>;

/// How a layout authenticates.
#[derive(Clone, Copy)]
enum Auth {
    ApiKey,
    Bearer,
}

impl Auth {
    fn ok(self, headers: &HeaderMap) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Auth::ApiKey => header("x-goog-api-key") == Some(KEY),
            Auth::Bearer => header("authorization") == Some(&format!("Bearer {ACCESS_TOKEN}")),
        }
    }
}

/// The first `generateContent` rule `body` breaks.
fn broken_rule(body: &Value) -> Option<String> {
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

/// Gemini 3's rule: the first function call of each model turn carries the signature it
/// was answered with.
fn unsigned_call(body: &Value) -> Option<String> {
    for (i, content) in body["contents"].as_array()?.iter().enumerate() {
        let first_call = content["parts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p.get("functionCall").is_some());
        if let Some(call) = first_call
            && !matches!(
                call["thoughtSignature"].as_str(),
                Some(SIGNATURE | SKIP_VALIDATOR)
            )
        {
            return Some(format!(
                "Function call is missing a thought_signature in functionCall parts (contents[{i}])"
            ));
        }
    }
    None
}

async fn generate(
    State(seen): State<Seen>,
    Path(rest): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    answer(&seen, Auth::ApiKey, false, rest, query, &headers, body.0)
}

async fn vertex(
    State(seen): State<Seen>,
    Path((project, location, rest)): Path<(String, String, String)>,
    query: RawQuery,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let target = format!("projects/{project}/locations/{location}/publishers/google/models/{rest}");
    answer(&seen, Auth::Bearer, false, target, query, &headers, body.0)
}

async fn vertex_express(
    State(seen): State<Seen>,
    Path(rest): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    answer(
        &seen,
        Auth::ApiKey,
        false,
        format!("publishers/google/models/{rest}"),
        query,
        &headers,
        body.0,
    )
}

async fn code_assist(
    State(seen): State<Seen>,
    Path(method): Path<String>,
    query: RawQuery,
    headers: HeaderMap,
    body: Json<Value>,
) -> Response {
    let envelope = body.0;
    let wrapped =
        envelope["project"].as_str().is_some_and(|p| !p.is_empty()) && envelope["model"].is_string();
    if !method.starts_with("v1internal:") || !wrapped {
        let rule = "Code Assist needs model and project around the request".to_owned();
        seen.lock().unwrap().push((method, envelope, Some(rule.clone())));
        let error = json!({ "error": { "code": 400, "message": rule, "status": "INVALID_ARGUMENT" } });
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let target = format!(
        "{method}|{}|{}",
        envelope["model"].as_str().unwrap_or_default(),
        envelope["project"].as_str().unwrap_or_default()
    );
    answer(
        &seen,
        Auth::Bearer,
        true,
        target,
        query,
        &headers,
        envelope["request"].clone(),
    )
}

/// Checks and answers one `generateContent` call; `wrap` puts each answer in Code
/// Assist's `{"response": …}`.
fn answer(
    seen: &Seen,
    auth: Auth,
    wrap: bool,
    target: String,
    RawQuery(query): RawQuery,
    headers: &HeaderMap,
    body: Value,
) -> Response {
    if target.contains(":countTokens") {
        return count(seen, auth, target, headers, body);
    }
    let rule = if !auth.ok(headers) {
        Some("API key not valid".to_owned())
    } else if body["contents"].as_array().is_none_or(Vec::is_empty) {
        Some("contents is required".to_owned())
    } else if target.contains("gemini-3") {
        broken_rule(&body).or_else(|| unsigned_call(&body))
    } else {
        broken_rule(&body)
    };
    let target = format!("{target}?{}", query.unwrap_or_default());
    seen.lock()
        .unwrap()
        .push((target.clone(), body.clone(), rule.clone()));
    if let Some(rule) = rule {
        let error = json!({ "error": { "code": 400, "message": rule, "status": "INVALID_ARGUMENT" } });
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let envelope = move |value: Value| {
        if wrap {
            json!({ "response": value, "traceId": "trace-1" })
        } else {
            value
        }
    };
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
        (None, true) => vec![
            json!({ "functionCall": { "name": "weather", "args": { "city": "Paris" } }, "thoughtSignature": SIGNATURE }),
        ],
        (None, false) => vec![json!({ "text": "Hello" }), json!({ "text": " from Gemini." })],
    };
    let usage = json!({ "promptTokenCount": PROMPT_TOKENS, "candidatesTokenCount": OUTPUT_TOKENS,
        "totalTokenCount": PROMPT_TOKENS + OUTPUT_TOKENS });
    if !target.contains(":streamGenerateContent") {
        return Json(envelope(json!({
            "candidates": [{ "content": { "role": "model", "parts": parts }, "finishReason": "STOP", "index": 0 }],
            "usageMetadata": usage, "modelVersion": MODEL, "responseId": "gem-1",
        })))
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
            Ok(format!("data: {}\r\n\r\n", envelope(chunk)))
        })
        .collect();
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("a static response")
}

/// `:countTokens`: the conversation (`contents`, or a whole `generateContentRequest`
/// naming its model as `models/…`) under the same rules, answered with [`PROMPT_TOKENS`].
fn count(seen: &Seen, auth: Auth, target: String, headers: &HeaderMap, body: Value) -> Response {
    let conversation = body.get("generateContentRequest").unwrap_or(&body);
    let rule = if !auth.ok(headers) {
        Some("API key not valid".to_owned())
    } else if conversation["contents"].as_array().is_none_or(Vec::is_empty) {
        Some("contents is required".to_owned())
    } else if body.get("generateContentRequest").is_some()
        && !conversation["model"]
            .as_str()
            .is_some_and(|m| m.starts_with("models/"))
    {
        Some("generateContentRequest.model must be models/{model}".to_owned())
    } else {
        broken_rule(conversation)
    };
    seen.lock().unwrap().push((target, body.clone(), rule.clone()));
    if let Some(rule) = rule {
        let error = json!({ "error": { "code": 400, "message": rule, "status": "INVALID_ARGUMENT" } });
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    Json(json!({ "totalTokens": PROMPT_TOKENS, "promptTokensDetails": [{ "modality": "TEXT", "tokenCount": PROMPT_TOKENS }] }))
        .into_response()
}

/// Starts the mock; returns its origin (the base URL of every layout) and what it saw.
pub async fn start() -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route("/v1beta/models/{*rest}", axum::routing::post(generate))
        .route(
            "/v1/projects/{project}/locations/{location}/publishers/google/models/{*rest}",
            axum::routing::post(vertex),
        )
        .route(
            "/v1/publishers/google/models/{*rest}",
            axum::routing::post(vertex_express),
        )
        .route("/{*method}", axum::routing::post(code_assist))
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
