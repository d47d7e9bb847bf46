//! The ingress (SPEC §6): authenticate → rate limit → resolve → pick a credential →
//! forward, failing over to another credential on connect errors, timeouts, 5xx, 429 and
//! refused credentials (always before the first byte reaches the client), banning
//! credentials with `auto_ban` that the upstream refuses, and streaming the answer back
//! chunk by chunk while its usage is recorded.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ez_contract::provider::ProviderType;
use ez_contract::report::{LogRecord, clean_copy, limits as report_limits};
use ez_contract::routing::ProviderSnapshot;
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};
use ez_contract::time::now_unix;
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::auth;
use crate::bans::{BanPolicy, LocalBans};
use crate::body::{ObservedBody, Trace};
use crate::cache::SnapshotCache;
use crate::error::ProxyError;
use crate::failover::{all_cooling, note_window, refusal_words, refused};
use crate::formats::{self, Translation};
use crate::rate::RateLimiter;
use crate::refusal::{Cause, Verdict};
use crate::renewal::Renewals;
use crate::report::Reporter;
use crate::response_headers;
use crate::route::{self, RouteError};
use crate::snapshot::Snapshot;
use crate::upstream::{self, Ingress};
use crate::upstream_answer::{Classified, classify};
use crate::upstream_failure::UpstreamFailure;

/// Limits and deadlines of the proxy (configuration section `balancer`).
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Credentials tried per request (the first one included).
    pub max_attempts: usize,
    pub connect_timeout: Duration,
    /// From sending the request to the upstream's response headers.
    pub first_byte_timeout: Duration,
    /// Longest silence between two chunks of the answer.
    pub idle_timeout: Duration,
    /// Whole request, arrival to last byte.
    pub total_timeout: Duration,
    /// How long an auto-banned credential rests.
    pub ban_duration: Duration,
    /// Ambiguous refusals within `ban_window` that ban a credential.
    pub ban_threshold: u32,
    pub ban_window: Duration,
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed for the client address.
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for ProxySettings {
    fn default() -> ProxySettings {
        ProxySettings {
            max_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(600),
            ban_duration: Duration::from_secs(600),
            ban_threshold: 3,
            ban_window: Duration::from_secs(60),
            max_body_bytes: 10 * 1024 * 1024,
            trusted_proxies: Vec::new(),
        }
    }
}

impl ProxySettings {
    /// From the `balancer` section (deadlines, attempts, bans) and `server` (body limit,
    /// trusted proxies).
    pub fn from_config(config: &ez_config::Config) -> ProxySettings {
        let b = &config.balancer;
        ProxySettings {
            max_attempts: b.max_failover_attempts,
            connect_timeout: b.connect_timeout,
            first_byte_timeout: b.first_byte_timeout,
            idle_timeout: b.idle_timeout,
            total_timeout: b.total_timeout,
            ban_duration: b.ban_duration,
            ban_threshold: b.ban_threshold,
            ban_window: b.ban_window,
            max_body_bytes: config.server.max_body_bytes,
            trusted_proxies: config.server.trusted_proxies.clone(),
        }
    }
}

#[derive(Clone)]
pub struct BalancerState {
    pub cache: Arc<SnapshotCache>,
    pub reporter: Arc<Reporter>,
    http: reqwest::Client,
    pub(crate) settings: Arc<ProxySettings>,
    pub(crate) bans: Arc<BanPolicy>,
    /// Credentials whose usage window an upstream announced exhausted, until it resets:
    /// skipped at once here, before the control plane syncs `cooling_until` to all.
    pub(crate) cooling: Arc<LocalBans>,
    rate: Arc<RateLimiter>,
    renewals: Arc<Renewals>,
}

impl BalancerState {
    pub fn new(
        cache: Arc<SnapshotCache>,
        settings: ProxySettings,
        reporter: Arc<Reporter>,
    ) -> Result<BalancerState, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // A redirect would carry the credential and static headers to another host,
            // or fetch another resource for the tenant: a 3xx is an upstream failure.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        crate::metrics::describe();
        let bans = BanPolicy::new(
            settings.ban_duration,
            settings.ban_threshold,
            settings.ban_window,
            reporter.clone(),
        );
        let renewals = Renewals::new(reporter.sink().clone(), cache.clone());
        Ok(BalancerState {
            cache,
            reporter,
            http,
            settings: Arc::new(settings),
            bans: Arc::new(bans),
            cooling: Arc::new(LocalBans::default()),
            rate: Arc::new(RateLimiter::default()),
            renewals: Arc::new(renewals),
        })
    }
}

/// The data-plane routes.
pub fn router(state: BalancerState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1beta/models", get(crate::models::list_gemini))
        .route(
            "/v1beta/models/{*target}",
            post(crate::gemini_route::generate).get(crate::models::get_gemini),
        )
        // google-genai calls `/v1/...` when given a base URL of its own.
        .route(
            "/v1/models/{*target}",
            post(crate::gemini_route::generate).get(crate::models::get_model),
        )
        .route("/v1/models", get(crate::models::list))
        .with_state(state)
}

/// `GET /health` of a stand-alone balancer: ready once a snapshot is loaded, with its age
/// and size, and the report buffer; 503 until then.
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
        },
        "reports": {
            "buffered_logs": state.reporter.buffered(),
            "dropped_logs": state.reporter.dropped(),
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
    forward(&state, Ingress::ChatCompletions, req).await
}

async fn completions(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, Ingress::Completions, req).await
}

async fn embeddings(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, Ingress::Embeddings, req).await
}

async fn responses(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, Ingress::Responses, req).await
}

async fn messages(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, Ingress::Messages, req).await
}

/// Passed through to Anthropic upstreams only: other families count differently, and a
/// guess would be worse than the clear 400 the route answers.
async fn count_tokens(State(state): State<BalancerState>, req: Request) -> Response {
    forward(&state, Ingress::CountTokens, req).await
}

pub(crate) fn client_ip(parts: &axum::http::request::Parts, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    ez_contract::client_ip::client_ip(peer, &parts.headers, trusted)
}

/// SPEC §6 step 3: the master's `global_qps` and the key's `qps` (0 = unlimited), counted
/// in per-second windows on the bus so every balancer shares them; one round trip. When
/// the bus cannot count, this balancer counts alone (`rate`): limits hold, per balancer.
async fn rate_limit(
    state: &BalancerState,
    token: &TokenSnapshot,
    master: Option<&MasterSnapshot>,
) -> Result<(), ProxyError> {
    let second = now_unix();
    let master = master.filter(|m| m.global_qps > 0);
    let key_limited = token.qps > 0;
    if master.is_none() && !key_limited {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(2);
    if let Some(m) = master {
        keys.push(ez_contract::bus_keys::rate_master(m.id, second));
    }
    if key_limited {
        keys.push(ez_contract::bus_keys::rate_key(token.key_id, second));
    }
    let counts = state.rate.count(state.cache.bus().as_ref(), &keys, second).await;
    let mut counts = counts.into_iter();
    let mut refused = None;
    if let Some(m) = master {
        let count = counts.next().unwrap_or(0);
        let over = count > m.global_qps;
        state.reporter.note_rate(m.id, count, m.global_qps, over);
        if over {
            refused = Some(("master", m.global_qps));
        }
    }
    if key_limited && refused.is_none() && counts.next().unwrap_or(0) > token.qps {
        refused = Some(("key", token.qps));
    }
    match refused {
        None => Ok(()),
        Some((scope, limit)) => {
            let mut e = ProxyError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("the {scope} rate limit of {limit} requests per second is exceeded"),
            );
            e.retry_after = Some(1);
            Err(e)
        }
    }
}

/// One request, start to end: every authenticated request leaves one log record.
pub(crate) async fn forward(state: &BalancerState, ingress: Ingress, req: Request) -> Response {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + state.settings.total_timeout;
    let snapshot = state.cache.snapshot();
    let (parts, body) = req.into_parts();
    let ip = client_ip(&parts, &state.settings.trusted_proxies);
    let (token, hash) = match auth::authenticate(&snapshot, &parts, ip) {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let request_id = parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map_or_else(generate_request_id, |id| {
            clean_copy(id, report_limits::REQUEST_ID)
        });
    let record = LogRecord {
        request_id,
        master_id: token.master_id,
        key_id: token.key_id,
        namespace: token.default_namespace.clone(),
        endpoint: ingress.route().to_owned(),
        client_ip: ip.map(|ip| ip.to_string()),
        created_at: now_unix(),
        ..LogRecord::default()
    };
    let mut trace = Trace::new(state.reporter.clone(), started, record, hash);
    let attempt = async {
        rate_limit(state, token, snapshot.masters.get(&token.master_id)).await?;
        let in_path = parts.extensions.get::<crate::gemini_route::PathModel>();
        let request = ClientRequest::read(state, body, in_path, &mut trace).await?;
        send(
            state, &snapshot, token, ingress, &parts, request, &mut trace, deadline,
        )
        .await
    };
    match attempt.await {
        Ok((upstream, strip_usage_chunk, translation)) => {
            respond(state, upstream, strip_usage_chunk, translation, trace, deadline)
        }
        Err(e) => {
            trace.finish(e.status.as_u16(), Some((e.code, e.message.clone())));
            e.into_response()
        }
    }
}

fn generate_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Why the request body could not be read: too large (413), or it did not arrive — the
/// listener's `server.body_read_timeout` passed, or the client stopped sending (408; the
/// listener answers a timed-out body with its own 408 envelope, the record says the same).
fn body_read_error(e: axum::Error) -> ProxyError {
    let inner = e.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*inner);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return ProxyError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large",
            );
        }
        source = e.source();
    }
    ProxyError::new(
        StatusCode::REQUEST_TIMEOUT,
        "body_read_timeout",
        "the request body did not arrive in time",
    )
}

/// The client's body, parsed once: the document is needed anyway to rewrite `model`.
struct ClientRequest {
    document: Map<String, Value>,
    model: String,
    stream: bool,
}

impl ClientRequest {
    /// `in_path`: the model and stream flag of a route that carries them in its URL
    /// (Gemini's); otherwise both come from the body.
    async fn read(
        state: &BalancerState,
        body: Body,
        in_path: Option<&crate::gemini_route::PathModel>,
        trace: &mut Trace,
    ) -> Result<ClientRequest, ProxyError> {
        let bytes = axum::body::to_bytes(body, state.settings.max_body_bytes)
            .await
            .map_err(body_read_error)?;
        let document: Map<String, Value> = serde_json::from_slice(&bytes).map_err(|_| {
            ProxyError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a JSON object",
            )
        })?;
        let model = match (in_path, document.get("model")) {
            (Some(path), _) => path.model.clone(),
            (None, Some(Value::String(model))) if !model.is_empty() && model.len() <= 256 => model.clone(),
            _ => {
                return Err(ProxyError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "the body needs a \"model\" string",
                ));
            }
        };
        let stream = in_path.map_or_else(
            || document.get("stream") == Some(&Value::Bool(true)),
            |p| p.stream,
        );
        trace.record.public_model = model.clone();
        trace.record.stream = stream;
        if stream {
            trace.prompt_tokens = crate::estimate::prompt_tokens(&document);
        }
        Ok(ClientRequest {
            document,
            model,
            stream,
        })
    }

    /// Asks an OpenAI upstream for the usage chunk of a stream when the client did not;
    /// returns whether that chunk must be kept from the client.
    fn request_stream_usage(&mut self, ingress: Ingress) -> bool {
        if !self.stream || !ingress.supports_stream_usage_option() {
            return false;
        }
        let options = self
            .document
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(options) = options else {
            return false;
        };
        if options.get("include_usage") == Some(&Value::Bool(true)) {
            return false;
        }
        options.insert("include_usage".into(), Value::Bool(true));
        true
    }
}

/// Tries credentials until one answers (or the attempts run out); returns the upstream
/// response and whether to strip the usage chunk the balancer asked for.
#[expect(clippy::too_many_arguments, reason = "the request's parts, each needed here")]
async fn send(
    state: &BalancerState,
    snapshot: &Snapshot,
    token: &TokenSnapshot,
    ingress: Ingress,
    parts: &axum::http::request::Parts,
    mut request: ClientRequest,
    trace: &mut Trace,
    deadline: tokio::time::Instant,
) -> Result<(reqwest::Response, bool, Option<Translation>), ProxyError> {
    let header_namespace = parts.headers.get("x-ez-namespace").and_then(|v| v.to_str().ok());
    let (namespace, public_model) =
        route::split_model(&request.model, token, header_namespace).map_err(route_error)?;
    trace.record.namespace = namespace.to_owned();
    trace.record.public_model = public_model.to_owned();
    let group = route::caller_group(token, &snapshot.masters);
    let binding = route::binding(snapshot, namespace, public_model, group).map_err(route_error)?;
    let speaks = |p: &ProviderSnapshot| {
        upstream::provider_type(p).is_some_and(|t| ingress.served_by(t) || formats::translates(ingress, t))
    };
    if !route::serves_format(snapshot, binding, group, &speaks) {
        return Err(ProxyError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_endpoint",
            format!(
                "model {:?} is served by providers that do not speak {}",
                request.model,
                ingress.route()
            ),
        ));
    }
    let strip_usage_chunk = request.request_stream_usage(ingress);

    let mut tried = HashSet::new();
    let mut last_error = ProxyError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_upstream",
        "no healthy upstream serves this model now",
    );
    // Whether the last attempt failed (a success returns): the next pick fails over.
    let mut failed_attempt = false;
    // A credential whose refused access token was just renewed: tried again once, from
    // the snapshot holding the new token, before failing over.
    let mut retry: Option<(Arc<Snapshot>, i64, String)> = None;
    let mut attempts = 0;
    // The soonest end of a cooling that kept a credential out (`i64::MAX`: none did).
    let cooling_ends = std::cell::Cell::new(i64::MAX);
    loop {
        let held = retry.take();
        let (provider, upstream_model) = match &held {
            Some((fresh, id, model)) => match fresh.providers.get(id) {
                Some(provider) => (provider, model.clone()),
                None => continue,
            },
            None => {
                if attempts >= state.settings.max_attempts.max(1) {
                    break;
                }
                attempts += 1;
                let Some(pick) = pick_next(state, snapshot, binding, group, &tried, &speaks, &cooling_ends)
                else {
                    break;
                };
                if std::mem::take(&mut failed_attempt)
                    && let Some(group) = &trace.upstream
                {
                    group.failed_over();
                }
                tried.insert(pick.credential_id);
                let Some(provider) = snapshot.providers.get(&pick.credential_id) else {
                    continue;
                };
                (provider, pick.upstream_model)
            }
        };
        let Some(kind) = upstream::provider_type(provider) else {
            continue;
        };
        trace.upstream = snapshot.upstream_metrics.get(&provider.group_id).cloned();
        trace.upstream_failure = None;
        failed_attempt = true;
        trace.record.upstream_model.clone_from(&upstream_model);
        trace.record.group_id = Some(provider.group_id);
        trace.record.api_key_id = Some(provider.id);
        let attempt = attempt_body(
            ingress,
            provider,
            kind,
            &mut request,
            upstream_model,
            strip_usage_chunk,
        )?;
        attempt.format.clone_into(&mut trace.record.upstream_format);
        let (url, payload, translation) = (attempt.url, attempt.body, attempt.translation);
        let outgoing = state
            .http
            .post(url)
            .headers(upstream::headers(provider, kind, &parts.headers))
            .header(header::CONTENT_TYPE, "application/json")
            .body(payload);
        let wait = state
            .settings
            .first_byte_timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let sent = Instant::now();
        let response = match tokio::time::timeout(wait, outgoing.send()).await {
            Err(_) => {
                let failure = UpstreamFailure::timed_out(provider, wait);
                state
                    .reporter
                    .note_failed_attempt(provider.id, &failure.to_string());
                last_error = failure.report(provider, trace);
                continue;
            }
            Ok(Err(e)) => {
                let failure = UpstreamFailure::from_error(provider, e);
                state
                    .reporter
                    .note_failed_attempt(provider.id, &failure.to_string());
                last_error = failure.report(provider, trace);
                continue;
            }
            Ok(Ok(response)) => response,
        };
        if let Some(group) = &trace.upstream {
            group.answered(response.status().as_u16(), sent.elapsed());
        }
        let read_by = deadline.min(tokio::time::Instant::now() + state.settings.idle_timeout);
        match classify(response, read_by).await {
            Classified::Pass(response) => {
                state.bans.answered(provider.id);
                if kind.is_subscription()
                    && let Some(window) = crate::quota::from_headers(response.headers(), now_unix())
                {
                    note_window(state, provider.id, window);
                }
                // A translated stream is the upstream's own: nothing in it to strip.
                let strip = strip_usage_chunk && translation.is_none();
                return Ok((response, strip, translation));
            }
            Classified::Refused {
                verdict,
                retry_after,
                window,
            } => {
                if let Some(window) = window {
                    note_window(state, provider.id, window);
                }
                // A refused access token of an account that can get another: once per
                // credential and request, retried with the new token.
                let renewable =
                    held.is_none() && verdict.status() == Some(401) && Renewals::applies(provider, kind);
                if renewable && let Some(fresh) = state.renewals.renew(provider).await {
                    let model = trace.record.upstream_model.clone();
                    retry = Some((fresh, provider.id, model));
                    continue;
                }
                // No new token (yet): the account is not to blame for that — fail over
                // without a ban (a revoked one is disabled by the control plane).
                let verdict = if renewable {
                    Verdict::FailOver(Cause::Credential)
                } else {
                    verdict
                };
                state
                    .reporter
                    .note_failed_attempt(provider.id, &refusal_words(&verdict));
                last_error = refused(state, provider, &verdict, retry_after, trace.upstream.as_deref());
            }
        }
    }
    if tried.is_empty() && cooling_ends.get() != i64::MAX {
        return Err(all_cooling(cooling_ends.get()));
    }
    Err(last_error)
}

/// The next credential to try for the route: not tried yet, not banned, not cooling,
/// speaking the client's format (`speaks`). Notes in `cooling_ends` the soonest end of a
/// cooling that kept one out.
fn pick_next(
    state: &BalancerState,
    snapshot: &Snapshot,
    binding: &ez_contract::routing::BindingSnapshot,
    group: &str,
    tried: &HashSet<i64>,
    speaks: &impl Fn(&ProviderSnapshot) -> bool,
    cooling_ends: &std::cell::Cell<i64>,
) -> Option<route::Pick> {
    let now = now_unix();
    let mut rng = rand::thread_rng();
    route::pick(snapshot, binding, group, now, &mut rng, |id, p| {
        if tried.contains(&id) || state.bans.is_banned(id, now) || !speaks(p) {
            return false;
        }
        let cooling = p.cooling_until.max(state.cooling.until(id));
        if cooling > now {
            cooling_ends.set(cooling_ends.get().min(cooling));
            return false;
        }
        true
    })
}

/// What one attempt sends, and how its answer reaches the client.
struct AttemptBody {
    url: String,
    body: Vec<u8>,
    /// The upstream format's name, for the log record.
    format: &'static str,
    translation: Option<Translation>,
}

/// The client's request for `model` on `provider` (of type `kind`): passed through when
/// the upstream speaks the client's format (the model rewritten, or in the URL for
/// Gemini; the Codex backend's rules applied), else translated (`formats`).
fn attempt_body(
    ingress: Ingress,
    provider: &ProviderSnapshot,
    kind: ProviderType,
    request: &mut ClientRequest,
    model: String,
    strip_usage_chunk: bool,
) -> Result<AttemptBody, ProxyError> {
    let encoded = |body: Result<Vec<u8>, serde_json::Error>| {
        body.map_err(|_| {
            ProxyError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body could not be re-encoded",
            )
        })
    };
    let passed = |url: String, body: Vec<u8>, translation| AttemptBody {
        url,
        body,
        format: ingress.format(),
        translation,
    };
    if ingress == Ingress::Gemini && ingress.served_by(kind) {
        let url = formats::gemini::endpoint::url(provider, kind, &model, request.stream);
        return Ok(passed(url, encoded(serde_json::to_vec(&request.document))?, None));
    }
    if ingress == Ingress::GeminiCountTokens && ingress.served_by(kind) {
        let url = formats::gemini::endpoint::count_url(provider, kind, &model);
        return Ok(passed(url, encoded(serde_json::to_vec(&request.document))?, None));
    }
    if ingress == Ingress::Responses && kind == ProviderType::Codex {
        let (document, collect) = formats::codex_pass_through(&request.document, &model)?;
        let url = upstream::url(provider, ingress, &model);
        return Ok(passed(url, encoded(serde_json::to_vec(&document))?, collect));
    }
    if ingress.served_by(kind) {
        let url = upstream::url(provider, ingress, &model);
        request.document.insert("model".into(), Value::String(model));
        return Ok(passed(url, encoded(serde_json::to_vec(&request.document))?, None));
    }
    let (body, translation) =
        formats::request(ingress, provider, kind, &request.document, &model, request.stream)?;
    let translation = translation.without_usage_chunk(strip_usage_chunk);
    let (url, format) = formats::target(provider, kind, &model, translation);
    Ok(AttemptBody {
        url,
        body: encoded(serde_json::to_vec(&body))?,
        format,
        translation: Some(translation),
    })
}

/// The upstream's answer as the client's: status, the allow-listed headers
/// (`response_headers.rs`), and the body observed on its way (usage, first token, deadlines, log record).
fn respond(
    state: &BalancerState,
    upstream: reqwest::Response,
    strip_usage_chunk: bool,
    translation: Option<Translation>,
    trace: Trace,
    deadline: tokio::time::Instant,
) -> Response {
    let status = upstream.status();
    let mut headers = response_headers::forwarded(upstream.headers());
    let sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let body = ObservedBody::new(
        upstream,
        sse,
        strip_usage_chunk,
        trace,
        state.settings.idle_timeout,
        deadline,
    );
    let body = match translation {
        None => Body::from_stream(body),
        Some(translation) => {
            let streamed = translation.stream && status.is_success();
            let content_type = if streamed {
                "text/event-stream"
            } else {
                "application/json"
            };
            headers.insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            headers.remove(header::CONTENT_ENCODING);
            Body::from_stream(formats::body::TranslatedBody::new(
                body,
                status.as_u16(),
                translation,
                now_unix(),
            ))
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn route_error(e: RouteError) -> ProxyError {
    match e {
        RouteError::NamespaceNotAllowed(ns) => ProxyError::new(
            StatusCode::FORBIDDEN,
            "namespace_not_allowed",
            // The header is the client's: echo a bounded excerpt of it.
            format!(
                "this key may not use namespace {:?}",
                clean_copy(&ns, report_limits::NAMESPACE)
            ),
        ),
        RouteError::ModelNotFound(route) => ProxyError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("no model {route:?} is available to this key"),
        ),
        RouteError::NotConfigured(why) => ProxyError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "route_not_configured",
            why.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[tokio::test]
    async fn body_read_errors_are_told_apart() {
        let big = Body::from(vec![0u8; 100]);
        let e = axum::body::to_bytes(big, 10).await.unwrap_err();
        assert_eq!(body_read_error(e).status, StatusCode::PAYLOAD_TOO_LARGE);
        let stalled = Body::from_stream(futures_util::stream::once(async {
            Err::<bytes::Bytes, _>(std::io::Error::other("the body read deadline passed"))
        }));
        let e = axum::body::to_bytes(stalled, 10).await.unwrap_err();
        let e = body_read_error(e);
        assert_eq!(
            (e.status, e.code),
            (StatusCode::REQUEST_TIMEOUT, "body_read_timeout")
        );
    }
}
