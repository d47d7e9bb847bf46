//! The OpenAI-compatible ingress: authenticate → resolve → pick a credential → forward,
//! failing over to another credential on connect errors, timeouts, 5xx and 429 (always
//! before the first byte reaches the client), and streaming the answer chunk by chunk.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};
use ez_contract::time::now_unix;
use ez_contract::token::digest;
use ez_contract::validate_key;

use crate::cache::SnapshotCache;
use crate::error::ProxyError;
use crate::route::{self, RouteError};
use crate::snapshot::Snapshot;

/// Limits and deadlines of the proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Credentials tried per request (the first one included).
    pub max_attempts: usize,
    pub connect_timeout: Duration,
    /// From sending the request to the upstream's response headers.
    pub first_byte_timeout: Duration,
    pub max_body_bytes: usize,
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            max_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

#[derive(Clone)]
pub struct BalancerState {
    pub cache: Arc<SnapshotCache>,
    http: reqwest::Client,
    settings: Arc<ProxySettings>,
}

impl BalancerState {
    pub fn new(cache: Arc<SnapshotCache>, settings: ProxySettings) -> Result<BalancerState, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()?;
        Ok(BalancerState {
            cache,
            http,
            settings: Arc::new(settings),
        })
    }
}

/// The data-plane routes (OpenAI format).
pub fn router(state: BalancerState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(list_models))
        .with_state(state)
}

/// `GET /health` of a stand-alone balancer: ready once a snapshot is loaded, with its age
/// and size; 503 until then.
pub async fn health(State(state): State<BalancerState>) -> Response {
    let snapshot = state.cache.snapshot();
    let ready = state.cache.is_ready();
    let body = serde_json::json!({
        "status": if ready { "ok" } else { "starting" },
        "snapshot": {
            "ready": ready,
            "age_seconds": if ready { now_unix() - snapshot.loaded_at } else { -1 },
            "tokens": snapshot.tokens.len(),
            "masters": snapshot.masters.len(),
            "providers": snapshot.providers.len(),
            "bindings": snapshot.bindings.len(),
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// The routes of a stand-alone balancer (`ezapi balancer`): the data plane plus `/health`.
pub fn standalone_router(state: BalancerState) -> Router {
    router(state.clone()).merge(Router::new().route("/health", get(health)).with_state(state))
}

async fn chat_completions(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, "/chat/completions", req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, "/completions", req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn embeddings(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, "/embeddings", req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// The client key: `Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or `?key=`.
fn client_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| query?.split('&').find_map(|pair| pair.strip_prefix("key=")))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Authenticates the request's key against the snapshot with the shared validation
/// function.
fn authenticate<'s>(
    snapshot: &'s Snapshot,
    parts: &axum::http::request::Parts,
) -> Result<&'s TokenSnapshot, ProxyError> {
    let key = client_key(&parts.headers, parts.uri.query()).ok_or_else(|| {
        ProxyError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "send an API key as Authorization: Bearer <key>",
        )
    })?;
    let token = snapshot.tokens.get(&digest(key));
    let master = token.and_then(|t| snapshot.masters.get(&t.master_id));
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    validate_key(token, master, ip, now_unix())?;
    token.ok_or_else(|| {
        ProxyError::new(
            StatusCode::UNAUTHORIZED,
            "key_not_found",
            "the API key is not valid",
        )
    })
}

/// How long a one-second window's counter lives (a little past its second).
const RATE_WINDOW_TTL_MS: u64 = 2_000;

/// SPEC §6 step 3: the master's `global_qps` and the key's `qps` (0 = unlimited), counted
/// in per-second windows on the bus so every balancer shares them; one round trip. When
/// the bus cannot count, requests pass (an outage of the bus must not stop traffic).
async fn rate_limit(
    state: &BalancerState,
    token: &TokenSnapshot,
    master: Option<&MasterSnapshot>,
) -> Result<(), ProxyError> {
    let second = now_unix();
    let mut windows = Vec::with_capacity(2);
    if let Some(m) = master.filter(|m| m.global_qps > 0) {
        windows.push((
            ez_contract::bus_keys::rate_master(m.id, second),
            m.global_qps,
            "master",
        ));
    }
    if token.qps > 0 {
        windows.push((
            ez_contract::bus_keys::rate_key(token.key_id, second),
            token.qps,
            "key",
        ));
    }
    if windows.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = windows.iter().map(|(k, _, _)| k.clone()).collect();
    match state.cache.bus().count(&keys, RATE_WINDOW_TTL_MS).await {
        Ok(counts) => {
            if let Some((_, limit, scope)) = windows
                .iter()
                .zip(&counts)
                .find(|((_, limit, _), count)| **count > *limit)
                .map(|(w, _)| w)
            {
                let mut e = ProxyError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("the {scope} rate limit of {limit} requests per second is exceeded"),
                );
                e.retry_after = Some(1);
                return Err(e);
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "rate counters unavailable; letting the request through");
            Ok(())
        }
    }
}

async fn forward(state: &BalancerState, endpoint: &str, req: Request) -> Result<Response, ProxyError> {
    let snapshot = state.cache.snapshot();
    let (parts, body) = req.into_parts();
    let token = authenticate(&snapshot, &parts)?;
    rate_limit(state, token, snapshot.masters.get(&token.master_id)).await?;
    let bytes = axum::body::to_bytes(body, state.settings.max_body_bytes)
        .await
        .map_err(|_| {
            ProxyError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            )
        })?;
    // One parse: the document is needed anyway to rewrite `model` for the upstream.
    let mut document: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| {
            ProxyError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON object",
            )
        })?;
    let model = match document.get("model") {
        Some(serde_json::Value::String(model)) if !model.is_empty() => model.clone(),
        _ => {
            return Err(ProxyError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body needs a \"model\" string",
            ));
        }
    };
    let header_namespace = parts.headers.get("x-ez-namespace").and_then(|v| v.to_str().ok());
    let (namespace, public_model) =
        route::split_model(&model, token, header_namespace).map_err(route_error)?;
    let binding = route::binding(&snapshot, namespace, public_model).map_err(route_error)?;

    let mut tried = HashSet::new();
    let mut last_error = ProxyError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_upstream",
        "no healthy upstream serves this model now",
    );
    for _ in 0..state.settings.max_attempts.max(1) {
        let pick = {
            let mut rng = rand::thread_rng();
            route::pick(&snapshot, binding, &tried, now_unix(), &mut rng)
        };
        let Some(pick) = pick else { break };
        tried.insert(pick.credential_id);
        let Some(provider) = snapshot.providers.get(&pick.credential_id) else {
            continue;
        };
        document.insert(
            "model".into(),
            serde_json::Value::String(pick.upstream_model.clone()),
        );
        let payload = serde_json::to_vec(&document).unwrap_or_default();
        let url = format!("{}{endpoint}", provider.base_url.trim_end_matches('/'));
        let mut request = state
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(payload);
        request = if provider.provider_type == "azure" {
            request.header("api-key", &provider.api_key)
        } else {
            request.bearer_auth(&provider.api_key)
        };
        for (name, value) in &provider.static_headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
            {
                request = request.header(name, value);
            }
        }
        match tokio::time::timeout(state.settings.first_byte_timeout, request.send()).await {
            Err(_) => {
                tracing::warn!(
                    credential = pick.credential_id,
                    "upstream timed out before the first byte; failing over"
                );
                last_error = ProxyError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "upstream_timeout",
                    "the upstream did not answer in time",
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(credential = pick.credential_id, error = %e.without_url(), "upstream unreachable; failing over");
                last_error = ProxyError::new(
                    StatusCode::BAD_GATEWAY,
                    "upstream_unreachable",
                    "the upstream could not be reached",
                );
            }
            Ok(Ok(response))
                if response.status().is_server_error()
                    || response.status() == StatusCode::TOO_MANY_REQUESTS =>
            {
                tracing::warn!(credential = pick.credential_id, status = %response.status(), "upstream refused; failing over");
                last_error = if response.status() == StatusCode::TOO_MANY_REQUESTS {
                    ProxyError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "upstream_rate_limited",
                        "the upstream is rate limiting",
                    )
                } else {
                    ProxyError::new(StatusCode::BAD_GATEWAY, "upstream_error", "the upstream failed")
                };
            }
            Ok(Ok(response)) => return Ok(passthrough(response)),
        }
    }
    Err(last_error)
}

/// The upstream's answer as the client's: status, end-to-end headers, and the body
/// streamed chunk by chunk (dropping it, e.g. on client disconnect, cancels the upstream).
fn passthrough(upstream: reqwest::Response) -> Response {
    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        let hop_by_hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "upgrade"
                | "te"
                | "trailer"
        );
        if !hop_by_hop {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut response = Response::new(Body::from_stream(upstream.bytes_stream()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn route_error(e: RouteError) -> ProxyError {
    match e {
        RouteError::NamespaceNotAllowed(ns) => ProxyError::new(
            StatusCode::FORBIDDEN,
            "namespace_not_allowed",
            format!("this key may not use namespace {ns:?}"),
        ),
        RouteError::ModelNotFound(route) => ProxyError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("no model {route:?} is available to this key"),
        ),
    }
}

/// The models the key's namespaces reach, in the OpenAI list shape. Models of the key's
/// default namespace are listed by their plain name, others as `namespace.model`.
async fn list_models(State(state): State<BalancerState>, req: Request) -> Response {
    let snapshot = state.cache.snapshot();
    let (parts, _) = req.into_parts();
    let token = match authenticate(&snapshot, &parts) {
        Ok(token) => token,
        Err(e) => return e.into_response(),
    };
    let mut ids: Vec<String> = snapshot
        .bindings
        .values()
        .filter(|b| b.status == "active" && token.namespaces.contains(&b.namespace))
        .map(|b| {
            if b.namespace == token.default_namespace {
                b.public_model.clone()
            } else {
                format!("{}.{}", b.namespace, b.public_model)
            }
        })
        .collect();
    ids.sort();
    let data: Vec<serde_json::Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({ "id": id, "object": "model", "created": 0, "owned_by": "ez-api" }))
        .collect();
    axum::Json(serde_json::json!({ "object": "list", "data": data })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_keys_come_from_any_supported_place() {
        let mut h = HeaderMap::new();
        assert_eq!(client_key(&h, Some("key=sk-q")), Some("sk-q"));
        h.insert("x-goog-api-key", HeaderValue::from_static("sk-g"));
        assert_eq!(client_key(&h, None), Some("sk-g"));
        h.insert("x-api-key", HeaderValue::from_static("sk-a"));
        assert_eq!(client_key(&h, None), Some("sk-a"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-b"));
        assert_eq!(client_key(&h, None), Some("sk-b"));
        assert_eq!(client_key(&HeaderMap::new(), Some("other=1")), None);
    }
}
