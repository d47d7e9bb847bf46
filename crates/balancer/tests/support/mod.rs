//! The harness shared by the balancer's end-to-end tests: a control plane and the
//! balancer in one process (as in `ezapi serve`), configured through the admin API, in
//! front of a mock upstream that answers like OpenAI and Anthropic (JSON and SSE) and
//! misbehaves on request; plus an upstream that resets every connection.

#![allow(dead_code, reason = "each test binary uses its own part of the harness")]

pub mod resp_proxy;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use ez_balancer::{BalancerState, ProxySettings, Reporter, SnapshotCache};
use ez_config::Config;
use ez_control_plane::ControlPlane;
use ez_control_plane::store::Store;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

pub const ADMIN: &str = "balancer-test-admin-token-0123";

/// The credential a request presented upstream: the bearer token, else `x-api-key`.
fn credential(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("authorization")
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v))
        .or_else(|| header("x-api-key"))
        .or_else(|| header("api-key"))
        .unwrap_or_default()
        .to_owned()
}

/// The last four characters of a credential: how the mock signs its answers.
fn signature(credential: &str) -> String {
    let chars: Vec<char> = credential.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub credential: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Clone, Default)]
struct MockState {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Answers the mock was still streaming when the balancer hung up.
    cancelled: Arc<AtomicUsize>,
}

impl MockState {
    fn note(&self, uri: &Uri, headers: &HeaderMap, body: &Value) -> String {
        let credential = credential(headers);
        self.seen.lock().unwrap().push(Seen {
            path: uri.path().to_owned(),
            query: uri.query().unwrap_or_default().to_owned(),
            credential: credential.clone(),
            headers: headers.clone(),
            body: body.clone(),
        });
        credential
    }
}

/// Counts, when dropped, an answer the balancer abandoned (forgotten when the answer
/// ends normally).
struct CancelGuard {
    cancelled: Arc<AtomicUsize>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.cancelled.fetch_add(1, Ordering::SeqCst);
    }
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn sse_response(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .unwrap()
}

fn chunk(model: &str, content: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({ "object": "chat.completion.chunk", "model": model, "choices": [{ "delta": { "content": content } }] })
    )
}

/// The misbehaviours, chosen by the credential's suffix; `None` means answer normally.
///
/// - `dead`: 500 · `deny`: 401 · `quota`: 429 `insufficient_quota`
/// - `busy`: 429 rate limit (`Retry-After: 20`) · `lazy`: 429 whose body never ends
/// - `slow`: the answer comes after 10 s
/// - `cut`: a stream that breaks after its first event · `stal`: a stream that goes
///   silent after its first event · `drip`: a stream of one event every 100 ms for 30 s
/// - `f403`: 403 that names no cause
///   · `u401`: 401 that names no cause (a restricted key missing a scope)
///   · `a401`: Anthropic `authentication_error` · `hdrs`: a normal chat answer with
///   account headers (`set-cookie`, `openai-organization`, `x-ratelimit-*`…)
///
/// Whatever the credential, a request for more than 10,000 `max_tokens` gets a 402 tied
/// to `max_tokens` (an account with little credit left, as OpenRouter answers).
async fn misbehave(state: &MockState, credential: &str, body: &Value) -> Option<Response> {
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if let Some(response) = refuse(credential, body) {
        return Some(response);
    }
    if credential.ends_with("dead") {
        return Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "error": { "message": "boom" } }),
        ));
    }
    if credential.ends_with("deny") {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            json!({ "error": { "message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key" } }),
        ));
    }
    if credential.ends_with("quota") {
        return Some(error(
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "error": { "message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "code": "insufficient_quota" } }),
        ));
    }
    if credential.ends_with("busy") {
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "error": { "message": "Rate limit reached for requests", "type": "requests", "code": "rate_limit_exceeded" } }),
        );
        response
            .headers_mut()
            .insert("retry-after", "20".parse().unwrap());
        return Some(response);
    }
    if credential.ends_with("lazy") {
        let never = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, std::io::Error>(Bytes::from_static(b"{}"))
        });
        return Some(
            Response::builder()
                .status(StatusCode::TOO_MANY_REQUESTS)
                .header("content-type", "application/json")
                .body(Body::from_stream(never))
                .unwrap(),
        );
    }
    if credential.ends_with("slow") {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    if credential.ends_with("cut") {
        let first = chunk(&model, "hel");
        let stream = futures_util::stream::unfold(0u8, move |step| {
            let first = first.clone();
            async move {
                match step {
                    0 => Some((Ok(Bytes::from(first)), 1)),
                    // A pause lets the first event leave before the connection breaks.
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Err(std::io::Error::other("upstream cut")), 2))
                    }
                    _ => None,
                }
            }
        });
        return Some(sse_response(Body::from_stream(stream)));
    }
    if credential.ends_with("stal") {
        let first = chunk(&model, "hel");
        let stream = futures_util::stream::unfold(0u8, move |step| {
            let first = first.clone();
            async move {
                if step == 0 {
                    return Some((Ok::<_, std::io::Error>(Bytes::from(first)), 1));
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
                None
            }
        });
        return Some(sse_response(Body::from_stream(stream)));
    }
    if credential.ends_with("drip") {
        let guard = CancelGuard {
            cancelled: state.cancelled.clone(),
        };
        let stream = futures_util::stream::unfold((0u32, guard), move |(i, guard)| {
            let event = chunk(&model, "hel");
            async move {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if i >= 300 {
                    // Streamed to the end: not a cancellation.
                    std::mem::forget(guard);
                    return None;
                }
                Some((Ok::<_, std::io::Error>(Bytes::from(event)), (i + 1, guard)))
            }
        });
        return Some(sse_response(Body::from_stream(stream)));
    }
    None
}

/// The refusals and account headers of [`misbehave`], in recorded provider shapes.
fn refuse(credential: &str, body: &Value) -> Option<Response> {
    let model = body["model"].as_str().unwrap_or_default();
    if body["max_tokens"].as_i64().is_some_and(|n| n > 10_000) {
        return Some(error(
            StatusCode::PAYMENT_REQUIRED,
            json!({ "error": { "message": "This request requires more credits, or fewer max_tokens. You requested up to 100000 tokens, but can only afford 2000.", "type": "insufficient_credits", "param": "max_tokens", "code": "insufficient_credits" } }),
        ));
    }
    if credential.ends_with("f403") {
        return Some(error(
            StatusCode::FORBIDDEN,
            json!({ "error": { "message": "Forbidden", "type": "invalid_request_error", "param": null, "code": null } }),
        ));
    }
    if credential.ends_with("u401") {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            json!({ "error": { "message": "You have insufficient permissions for this operation. Missing scopes: model.request.", "type": "invalid_request_error", "param": null, "code": null } }),
        ));
    }
    if credential.ends_with("a401") {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            json!({ "type": "error", "error": { "type": "authentication_error", "message": "invalid x-api-key" } }),
        ));
    }
    if credential.ends_with("hdrs") {
        let mut response = Json(json!({
            "id": "chatcmpl-h",
            "object": "chat.completion",
            "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": "hello with headers" }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 }
        }))
        .into_response();
        for (name, value) in [
            ("set-cookie", "__cf_bm=upstream-session; path=/; HttpOnly"),
            ("openai-organization", "org-upstream-account"),
            ("openai-project", "proj_upstream"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-tokens", "149990"),
            ("x-request-id", "req_upstream_123"),
            ("retry-after", "3"),
        ] {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return Some(response);
    }
    None
}

/// A mock OpenAI chat endpoint; `stream: true` gets SSE (with the usage chunk when
/// `stream_options.include_usage` asks for it). A request offering tools whose last
/// message is the user's gets a call of the first tool ([`tool_call`]).
async fn mock_chat(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let credential = state.note(&uri, &headers, &body);
    if let Some(response) = misbehave(&state, &credential, &body).await {
        return response;
    }
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let who = signature(&credential);
    let last_role = body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["role"].clone());
    if let Some(tool) = body["tools"][0]["function"]["name"].as_str()
        && last_role == Some(json!("user"))
    {
        return tool_call(&model, tool, body["stream"] == json!(true));
    }
    if body["stream"] == json!(true) {
        let mut chunks = vec![chunk(&model, "hel"), chunk(&model, "lo")];
        if body["stream_options"]["include_usage"] == json!(true) {
            chunks.push(format!(
                "data: {}\n\n",
                json!({ "object": "chat.completion.chunk", "model": model, "choices": [], "usage": { "prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9 } })
            ));
        }
        chunks.push("data: [DONE]\n\n".to_owned());
        let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
        return sse_response(Body::from_stream(stream));
    }
    Json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": format!("hello via {who}") }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5 }
    }))
    .into_response()
}

/// A call of `tool` with `{"city":"Paris"}`, in OpenAI's recorded shapes: the arguments
/// streamed in two pieces after the call's id and name, then the finish reason, the usage
/// chunk and `[DONE]`.
fn tool_call(model: &str, tool: &str, stream: bool) -> Response {
    let usage = json!({ "prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29 });
    if !stream {
        return Json(json!({
            "id": "chatcmpl-t", "object": "chat.completion", "model": model,
            "choices": [{ "index": 0, "finish_reason": "tool_calls", "message": { "role": "assistant", "content": null,
                "tool_calls": [{ "id": "call_1", "type": "function", "function": { "name": tool, "arguments": "{\"city\":\"Paris\"}" } }] } }],
            "usage": usage,
        }))
        .into_response();
    }
    let event = |choices: Value| {
        format!(
            "data: {}\n\n",
            json!({ "id": "chatcmpl-t", "object": "chat.completion.chunk", "model": model, "choices": choices })
        )
    };
    let delta =
        |delta: Value, finish: Value| event(json!([{ "index": 0, "delta": delta, "finish_reason": finish }]));
    let chunks = vec![
        delta(json!({ "role": "assistant", "content": null }), Value::Null),
        delta(
            json!({ "tool_calls": [{ "index": 0, "id": "call_1", "type": "function", "function": { "name": tool, "arguments": "" } }] }),
            Value::Null,
        ),
        delta(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "{\"city\":" } }] }),
            Value::Null,
        ),
        delta(
            json!({ "tool_calls": [{ "index": 0, "function": { "arguments": "\"Paris\"}" } }] }),
            Value::Null,
        ),
        delta(json!({}), json!("tool_calls")),
        format!(
            "data: {}\n\n",
            json!({ "id": "chatcmpl-t", "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage })
        ),
        "data: [DONE]\n\n".to_owned(),
    ];
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    sse_response(Body::from_stream(stream))
}

async fn mock_embeddings(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    state.note(&uri, &headers, &body);
    Json(
        json!({ "object": "list", "model": body["model"], "data": [{ "object": "embedding", "index": 0, "embedding": [0.1, 0.2] }] }),
    )
}

/// A mock OpenAI Responses endpoint (JSON only).
async fn mock_responses(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let credential = state.note(&uri, &headers, &body);
    if let Some(response) = misbehave(&state, &credential, &body).await {
        return response;
    }
    Json(json!({
        "id": "resp_1",
        "object": "response",
        "status": "completed",
        "model": body["model"],
        "output": [{ "type": "message", "role": "assistant", "content": [{ "type": "output_text", "text": format!("hello via {}", signature(&credential)) }] }],
        "usage": { "input_tokens": 5, "output_tokens": 4, "total_tokens": 9 }
    }))
    .into_response()
}

/// A mock Anthropic Messages endpoint: JSON, or SSE with `message_start` (input tokens)
/// and `message_delta` (the final output tokens).
async fn mock_messages(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let credential = state.note(&uri, &headers, &body);
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    if credential.ends_with("drip") && body["stream"] == json!(true) {
        return anthropic_drip(&model);
    }
    if let Some(response) = misbehave(&state, &credential, &body).await {
        return response;
    }
    if body["stream"] == json!(true) {
        let events = [
            (
                "message_start",
                json!({ "type": "message_start", "message": { "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "usage": { "input_tokens": 11, "output_tokens": 1 } } }),
            ),
            (
                "content_block_start",
                json!({ "type": "content_block_start", "index": 0, "content_block": { "type": "text", "text": "" } }),
            ),
            (
                "content_block_delta",
                json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "hello" } }),
            ),
            (
                "content_block_stop",
                json!({ "type": "content_block_stop", "index": 0 }),
            ),
            (
                "message_delta",
                json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": 6 } }),
            ),
            ("message_stop", json!({ "type": "message_stop" })),
        ];
        let chunks: Vec<Result<String, std::io::Error>> = events
            .iter()
            .map(|(name, data)| Ok(format!("event: {name}\ndata: {data}\n\n")))
            .collect();
        return sse_response(Body::from_stream(futures_util::stream::iter(chunks)));
    }
    Json(json!({
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{ "type": "text", "text": format!("hello via {}", signature(&credential)) }],
        "stop_reason": "end_turn",
        "usage": { "input_tokens": 12, "output_tokens": 4 }
    }))
    .into_response()
}

/// Anthropic's token counting: `{"input_tokens"}`, 14 for any request with messages.
async fn mock_count_tokens(
    State(state): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    state.note(&uri, &headers, &body);
    if body["messages"].as_array().is_none_or(Vec::is_empty) {
        return error(
            StatusCode::BAD_REQUEST,
            json!({ "type": "error", "error": { "type": "invalid_request_error", "message": "messages: Field required" } }),
        );
    }
    Json(json!({ "input_tokens": 14 })).into_response()
}

/// An Anthropic stream that reports its input tokens in `message_start`, then sends a
/// text delta every 100 ms for 30 s (its final usage would come last).
fn anthropic_drip(model: &str) -> Response {
    let start = json!({ "type": "message_start", "message": { "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "usage": { "input_tokens": 11, "output_tokens": 1 } } });
    let delta = json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": "abcdefgh" } });
    let stream = futures_util::stream::unfold(0u32, move |i| {
        let event = if i == 0 {
            format!("event: message_start\ndata: {start}\n\n")
        } else {
            format!("event: content_block_delta\ndata: {delta}\n\n")
        };
        async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (i < 300).then_some((Ok::<_, std::io::Error>(event), i + 1))
        }
    });
    sse_response(Body::from_stream(stream))
}

/// The mock upstream: OpenAI routes under `{origin}/v1` (its OpenAI base URL is
/// `base`), Anthropic's `/v1/messages` under `origin`.
pub struct MockUpstream {
    pub base: String,
    pub origin: String,
    state: MockState,
}

impl MockUpstream {
    pub async fn start() -> MockUpstream {
        let state = MockState::default();
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(mock_chat))
            // Azure OpenAI: deployment URLs and the v1 API.
            .route(
                "/openai/deployments/{deployment}/chat/completions",
                post(mock_chat),
            )
            .route("/openai/v1/chat/completions", post(mock_chat))
            .route("/v1/embeddings", post(mock_embeddings))
            .route("/v1/responses", post(mock_responses))
            .route("/v1/messages", post(mock_messages))
            .route("/v1/messages/count_tokens", post(mock_count_tokens))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockUpstream {
            base: format!("{origin}/v1"),
            origin,
            state,
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// How many requests presented `credential`.
    pub fn hits(&self, credential: &str) -> usize {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.credential == credential)
            .count()
    }

    /// Streamed answers abandoned by the balancer before their end.
    pub fn cancelled(&self) -> usize {
        self.state.cancelled.load(Ordering::SeqCst)
    }
}

/// An upstream that accepts connections, reads the request and resets the connection
/// without answering (`SO_LINGER` 0: the client gets ECONNRESET).
pub struct ResetUpstream {
    pub base: String,
    accepted: Arc<AtomicUsize>,
}

impl ResetUpstream {
    pub async fn start() -> ResetUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 8192];
                    let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await;
                    let _ = stream.set_zero_linger();
                    drop(stream);
                });
            }
        });
        ResetUpstream { base, accepted }
    }

    /// Connections accepted (and reset) so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An upstream whose accept queue is full and never drained: a new connection gets no
/// answer to its SYN, so connecting times out.
pub struct SilentUpstream {
    pub base: String,
    _listener: tokio::net::TcpListener,
    _queued: Vec<tokio::net::TcpStream>,
}

impl SilentUpstream {
    pub async fn start() -> SilentUpstream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let listener = socket.listen(0).unwrap();
        // Connections the kernel completes wait in the queue, never accepted, until one
        // attempt hangs: the queue is full.
        let mut queued = Vec::new();
        loop {
            assert!(queued.len() < 64, "the accept queue never filled");
            match tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(stream)) => queued.push(stream),
                Ok(Err(e)) => panic!("connecting to the silent upstream: {e}"),
                Err(_) => break,
            }
        }
        SilentUpstream {
            base: format!("http://{addr}/v1"),
            _listener: listener,
            _queued: queued,
        }
    }
}

/// An upstream that answers every request with `status` and `Location: location`.
pub struct RedirectUpstream {
    pub base: String,
    hits: Arc<AtomicUsize>,
}

impl RedirectUpstream {
    pub async fn start(status: StatusCode, location: String) -> RedirectUpstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let (counter, location) = (counter.clone(), location.clone());
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Response::builder()
                    .status(status)
                    .header("location", location)
                    .body(Body::empty())
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RedirectUpstream { base, hits }
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Credentials of a provider group created by [`Gateway::add_route`], in the order given.
pub struct Route {
    pub group_id: i64,
    pub credentials: Vec<i64>,
}

/// A master and one child key created by [`Gateway::add_tenant`].
pub struct Tenant {
    pub master_id: i64,
    pub master_key: String,
    pub key_id: i64,
    pub key: String,
}

pub struct Gateway {
    pub base: String,
    /// The mock's OpenAI base URL.
    pub upstream: String,
    pub mock: MockUpstream,
    pub client: reqwest::Client,
    pub cache: Arc<SnapshotCache>,
    pub reporter: Arc<Reporter>,
    pub cp: ControlPlane,
    _db: TestDatabase,
}

impl Gateway {
    pub async fn start(backend: Backend) -> Gateway {
        let settings = ProxySettings {
            first_byte_timeout: Duration::from_secs(2),
            ..ProxySettings::default()
        };
        Gateway::start_with(backend, settings).await
    }

    pub async fn start_with(backend: Backend, settings: ProxySettings) -> Gateway {
        Gateway::start_on(backend, settings, test_bus(backend).await).await
    }

    /// A gateway on the database of `backend` and on `bus`.
    pub async fn start_on(
        backend: Backend,
        settings: ProxySettings,
        bus: Arc<dyn ez_bus::ConfigBus>,
    ) -> Gateway {
        Gateway::start_configured(backend, settings, bus, |_| {}).await
    }

    /// A gateway whose control plane's configuration `configure` adjusts.
    pub async fn start_configured(
        backend: Backend,
        settings: ProxySettings,
        bus: Arc<dyn ez_bus::ConfigBus>,
        configure: impl FnOnce(&mut Config),
    ) -> Gateway {
        let db = TestDatabase::create(backend).await;
        let mut config = Config::defaults();
        config.auth.admin_token = Some(ez_contract::SecretToken::from_plaintext(ADMIN));
        configure(&mut config);
        let store = Store::connect(&db.url, db.kind.clone(), 5).await.unwrap();
        store.migrate().await.unwrap();
        let cp = ControlPlane::build(&config, store, bus.clone()).await.unwrap();
        let cache = SnapshotCache::new(bus.clone());
        let reporter = Reporter::new(cp.report_sink(), bus, 10_000);
        let state = BalancerState::new(cache.clone(), settings, reporter.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = cp.router_with(ez_balancer::router(state));
        tokio::spawn(ez_control_plane::serve(listener, app, std::future::pending()));
        let mock = MockUpstream::start().await;
        Gateway {
            base,
            upstream: mock.base.clone(),
            mock,
            client: reqwest::Client::new(),
            cache,
            reporter,
            cp,
            _db: db,
        }
    }

    /// Another control plane on this gateway's database and bus (as a second instance
    /// of the control plane in production), configured like this one plus `configure`.
    pub async fn second_control_plane(&self, configure: impl FnOnce(&mut Config)) -> ControlPlane {
        let mut config = Config::defaults();
        config.auth.admin_token = Some(ez_contract::SecretToken::from_plaintext(ADMIN));
        configure(&mut config);
        let store = Store::connect(&self._db.url, self._db.kind.clone(), 5)
            .await
            .unwrap();
        ControlPlane::build(&config, store, self.cache.bus().clone())
            .await
            .unwrap()
    }

    /// Ships what the balancer recorded and stores the log records (what the reporter
    /// task and the log writer job do on their intervals).
    pub async fn deliver_reports(&self) {
        self.reporter.flush(Duration::from_secs(1)).await;
    }

    /// The log records the admin sees, newest first.
    pub async fn logs(&self, query: &str) -> Vec<Value> {
        let (status, body, text) = self
            .call(reqwest::Method::GET, &format!("/admin/logs{query}"), ADMIN, None)
            .await;
        assert_eq!(status, 200, "{text}");
        body["items"].as_array().unwrap().clone()
    }

    /// Delivers reports until at least `n` log records are stored (a request is
    /// recorded when its answer ends, which for an abandoned one is a little after the
    /// client left); returns every record, newest first.
    pub async fn wait_for_logs(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.deliver_reports().await;
            let logs = self.logs("?page_size=100").await;
            if logs.len() >= n {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} log records, have {}: {logs:#?}",
                logs.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value, String) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null), text)
    }

    pub async fn admin(&self, path: &str, body: Value) -> Value {
        let (status, body, text) = self.call(reqwest::Method::POST, path, ADMIN, Some(body)).await;
        assert!(status == 200 || status == 201, "{path}: {status} {text}");
        body
    }

    /// `GET` as the admin; asserts 200.
    pub async fn get(&self, path: &str) -> Value {
        let (status, body, text) = self.call(reqwest::Method::GET, path, ADMIN, None).await;
        assert_eq!(status, 200, "{path}: {text}");
        body
    }

    /// `PUT` as the admin; asserts 200.
    pub async fn put(&self, path: &str, body: Value) -> Value {
        let (status, body, text) = self.call(reqwest::Method::PUT, path, ADMIN, Some(body)).await;
        assert_eq!(status, 200, "{path}: {text}");
        body
    }

    /// `DELETE` as the admin; asserts 200.
    pub async fn delete(&self, path: &str) -> Value {
        let (status, body, text) = self.call(reqwest::Method::DELETE, path, ADMIN, None).await;
        assert_eq!(status, 200, "{path}: {text}");
        body
    }

    /// A credential as the admin sees it.
    pub async fn credential(&self, id: i64) -> Value {
        self.get(&format!("/admin/api-keys/{id}")).await
    }

    /// A custom (OpenAI-compatible) group `group` on `base_url` with one credential per
    /// `(key, weight)`, serving `gpt-4o-mini`, bound as `default.{public}` with
    /// `binding_weight`; the balancer's snapshot is refreshed.
    pub async fn add_route(
        &self,
        group: &str,
        base_url: &str,
        keys: &[(&str, i64)],
        public: &str,
        binding_weight: i64,
    ) -> Route {
        let (names, weights): (Vec<&str>, Vec<i64>) = keys.iter().copied().unzip();
        let setup = self
            .admin(
                "/admin/providers/custom",
                json!({ "name": group, "base_url": base_url, "api_keys": names, "weights": weights, "models": ["gpt-4o-mini"] }),
            )
            .await;
        let group_id = setup["group"]["id"].as_i64().unwrap();
        let credentials: Vec<i64> = setup["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_i64().unwrap())
            .collect();
        assert_eq!(credentials.len(), keys.len(), "{setup}");
        self.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": public, "group_id": group_id, "selector_value": "gpt-4o-mini", "weight": binding_weight }),
        )
        .await;
        self.cache.refresh().await.unwrap();
        Route {
            group_id,
            credentials,
        }
    }

    /// A provider group of `kind` at `base_url` (plus the fields of `extra`) serving
    /// `model`, with one credential (the fields of `credential`), bound as
    /// `default.{public}`; the balancer's snapshot is refreshed.
    pub async fn bind(
        &self,
        kind: &str,
        base_url: &str,
        extra: Value,
        credential: Value,
        public: &str,
        model: &str,
    ) {
        let mut group = json!({ "name": public, "type": kind, "base_url": base_url, "models": [model] });
        if let (Some(group), Some(extra)) = (group.as_object_mut(), extra.as_object()) {
            group.extend(extra.clone());
        }
        let group = self.admin("/admin/provider-groups", group).await;
        let mut credential = credential;
        credential["group_id"] = group["id"].clone();
        self.admin("/admin/api-keys", credential).await;
        self.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": public, "group_id": group["id"], "selector_value": model }),
        )
        .await;
        self.cache.refresh().await.unwrap();
    }

    /// An Anthropic group on the mock (base URL without `/v1`, as Anthropic's) with one
    /// credential `api_key`, serving `claude-3-5-haiku-20241022` bound as
    /// `default.{public}`; the balancer's snapshot is refreshed. Returns the credential id.
    pub async fn add_anthropic_route(&self, api_key: &str, public: &str) -> i64 {
        let group = self
            .admin(
                "/admin/provider-groups",
                json!({ "name": "claude", "type": "anthropic", "base_url": self.mock.origin, "models": ["claude-3-5-haiku-20241022"] }),
            )
            .await;
        let group_id = group["id"].as_i64().unwrap();
        let credential = self
            .admin(
                "/admin/api-keys",
                json!({ "group_id": group_id, "api_key": api_key }),
            )
            .await;
        self.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": public, "group_id": group_id, "selector_value": "claude-3-5-haiku-20241022" }),
        )
        .await;
        self.cache.refresh().await.unwrap();
        credential["id"].as_i64().unwrap()
    }

    /// A master (`name` plus the fields of `master`) and a child key issued by the admin
    /// (fields of `key`); the balancer's snapshot is refreshed.
    pub async fn add_tenant(&self, name: &str, master: Value, key: Value) -> Tenant {
        let mut body = json!({ "name": name });
        body.as_object_mut()
            .unwrap()
            .extend(master.as_object().unwrap().clone());
        let master = self.admin("/admin/masters", body).await;
        let master_id = master["id"].as_i64().unwrap();
        let tenant = Tenant {
            master_id,
            master_key: master["master_key"].as_str().unwrap().to_owned(),
            key_id: 0,
            key: String::new(),
        };
        let (key_id, key) = self.add_key(&tenant, key).await;
        Tenant {
            key_id,
            key,
            ..tenant
        }
    }

    /// Another child key of `tenant` (fields of `key`); returns its id and plaintext.
    pub async fn add_key(&self, tenant: &Tenant, key: Value) -> (i64, String) {
        let key = self
            .admin(&format!("/admin/masters/{}/keys", tenant.master_id), key)
            .await;
        self.cache.refresh().await.unwrap();
        (
            key["id"].as_i64().unwrap(),
            key["key"].as_str().unwrap().to_owned(),
        )
    }

    /// A custom group on the mock with `keys`, the route `public` (→ `upstream_model`),
    /// and a child key; returns the child key.
    pub async fn setup(&self, keys: &[&str], public: &str, upstream_model: &str) -> String {
        let setup = self
            .admin(
                "/admin/providers/custom",
                json!({ "name": "mock", "base_url": self.upstream, "api_keys": keys, "models": [upstream_model, "text-embedding-3-small"] }),
            )
            .await;
        let group = setup["group"]["id"].as_i64().unwrap();
        self.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": public, "group_id": group, "selector_value": upstream_model }),
        )
        .await;
        self.admin(
            "/admin/bindings",
            json!({ "namespace": "default", "public_model": "text-embedding-3-small", "group_id": group }),
        )
        .await;
        let master = self.admin("/admin/masters", json!({ "name": "acme" })).await;
        let key = self
            .call(
                reqwest::Method::POST,
                "/v1/tokens",
                master["master_key"].as_str().unwrap(),
                Some(json!({})),
            )
            .await
            .1;
        self.cache.refresh().await.unwrap();
        key["key"].as_str().unwrap().to_owned()
    }

    /// Another balancer process on the same bus (its own snapshot cache and port),
    /// sharing this one's reporter.
    pub async fn second_balancer(&self) -> String {
        self.balancer(self.reporter.clone()).await
    }

    /// Another balancer process on the same bus, reporting through `reporter`; returns
    /// its base URL.
    pub async fn balancer(&self, reporter: Arc<Reporter>) -> String {
        let cache = SnapshotCache::new(self.cache.bus().clone());
        cache.refresh().await.unwrap();
        let state = BalancerState::new(cache, ProxySettings::default(), reporter).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(ez_control_plane::serve(
            listener,
            ez_balancer::router(state),
            std::future::pending(),
        ));
        base
    }

    /// `POST path` with `body` and the client's `headers`; asserts the answer's content
    /// type (SSE for a successful `"stream": true`, else JSON) and returns the status and
    /// the body's text.
    pub async fn post_checked(&self, path: &str, headers: &[(&str, &str)], body: Value) -> (u16, String) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(&body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
        let text = resp.text().await.unwrap();
        if body["stream"] == json!(true) && status == 200 {
            assert!(
                content_type.starts_with("text/event-stream"),
                "{content_type}: {text}"
            );
        } else {
            assert!(
                content_type.starts_with("application/json"),
                "{content_type}: {text}"
            );
        }
        (status, text)
    }

    /// The ids `GET /v1/models` lists for `key`.
    pub async fn model_ids(&self, key: &str) -> Vec<String> {
        let (status, body, text) = self.call(reqwest::Method::GET, "/v1/models", key, None).await;
        assert_eq!(status, 200, "{text}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn chat(&self, key: &str, model: &str, stream: bool) -> (u16, Value, String) {
        let body =
            json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }], "stream": stream });
        self.call(reqwest::Method::POST, "/v1/chat/completions", key, Some(body))
            .await
    }

    /// A chat request to the balancer at `base` (this one or a second one).
    pub async fn chat_at(&self, base: &str, key: &str, model: &str) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v1/whoami` with `key`.
    pub async fn whoami(&self, key: &str) -> (u16, Value) {
        let (status, body, _) = self.call(reqwest::Method::GET, "/v1/whoami", key, None).await;
        (status, body)
    }
}

/// The events of an SSE body.
pub fn sse_events(text: &str) -> Vec<&str> {
    text.split("\n\n").filter(|e| !e.is_empty()).collect()
}

/// Runs each named `async fn(Backend)` as two tests: on SQLite + memory, and on
/// PostgreSQL + Redis when those are configured.
#[allow(unused_macros, reason = "not every test binary runs on both backends")]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use ez_control_plane::testing::Backend;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite_memory() {
                    tokio::time::timeout(std::time::Duration::from_secs(120), super::$name(Backend::Embedded))
                        .await
                        .expect("test finished in time");
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_redis() {
                    if Backend::Real.available() {
                        tokio::time::timeout(std::time::Duration::from_secs(120), super::$name(Backend::Real))
                            .await
                            .expect("test finished in time");
                    }
                }
            }
        )+
    };
}

#[allow(unused_imports, reason = "not every test binary runs on both backends")]
pub(crate) use both_backends;
