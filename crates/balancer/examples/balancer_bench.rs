//! End-to-end load benchmark of the balancer (issue 4): a fast mock OpenAI upstream, the
//! balancer in front of it with 100,000 child keys in its snapshot, and a load generator
//! that calls the mock directly and through the balancer, non-streaming and streaming, at
//! several concurrencies — in one run. See docs/benchmarks.md.
//!
//!     cargo run --release -p ez-balancer --example balancer_bench [-- OPTIONS]
//!
//! The mock upstream, the balancer and the load generator are three OS processes (this
//! binary re-executed with `--role`), so the balancer's resident memory can be read from
//! `/proc/<pid>/status` and each process's CPU time from `/proc/<pid>/stat`. They share
//! the machine's cores, as they would on a small host.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ez_balancer::sink::HttpSink;
use ez_balancer::{BalancerState, ProxySettings, Reporter, SnapshotCache};
use ez_bus::{BusWrite, ConfigBus, MemoryBus, RedisBus};
use ez_contract::bus_keys;
use ez_contract::routing::{BindingSnapshot, CandidateSnapshot, ModelSnapshot, ProviderSnapshot, checksum};
use ez_contract::snapshot::{KeyStatus, MasterSnapshot, MasterStatus, TokenSnapshot};
use ez_contract::time::{now_unix, now_unix_nanos};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The allocator `ezapi` runs with, so the balancer process is measured as deployed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
balancer_bench: load benchmark of the balancer against a mock upstream (docs/benchmarks.md)

usage: cargo run --release -p ez-balancer --example balancer_bench -- [OPTIONS]

  --duration-secs N    measured seconds per scenario (default 4)
  --warmup-secs N      unmeasured seconds before each scenario (default 1)
  --concurrency LIST   comma-separated client concurrencies (default 1,32)
  --keys N             child keys in the balancer's snapshot (default 100000)
  --bus redis|memory   where the balancer loads its snapshot from (default: redis when
                       reachable at --redis-url, else memory)
  --redis-url URL      default $EZ_TEST_REDIS_URL, else redis://127.0.0.1:6379
  --client-threads N   worker threads of the load generator (default 2)
  --reconcile-secs N   the balancer's full snapshot reload interval (default: the
                       configuration's balancer.reconcile_interval)
  --bare               serve the balancer's router without the control plane's
                       middleware (request id, metrics, panic catcher, body limit)
  --json               print one JSON document instead of tables";

/// The child key the load generator presents; the other keys only fill the snapshot.
const BENCH_KEY: &str = "sk-ez-benchbenchbenchbenchbenchbenchbenchbench";
const UPSTREAM_KEY: &str = "sk-upstream-bench-0000";
const PUBLIC_MODEL: &str = "gpt-bench";
const UPSTREAM_MODEL: &str = "gpt-bench-upstream";
const MASTERS: i64 = 10;
const CREDENTIALS: i64 = 4;
const BINDINGS: usize = 10;
/// Writes per bus batch when filling the bus (as the control plane's full sync batches).
const FILL_BATCH: usize = 1000;

const CHAT_BODY: &[u8] = br#"{"model":"gpt-bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":16}"#;
const CHAT_BODY_STREAM: &[u8] = br#"{"model":"gpt-bench","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello."}],"max_tokens":16,"stream":true}"#;

const COMPLETION: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1764201600,"model":"gpt-bench-upstream","choices":[{"index":0,"message":{"role":"assistant","content":"Hello."},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":2,"total_tokens":21}}"#;
const STREAM_CHUNKS: [&str; 5] = [
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764201600,\"model\":\"gpt-bench-upstream\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764201600,\"model\":\"gpt-bench-upstream\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764201600,\"model\":\"gpt-bench-upstream\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\".\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1764201600,\"model\":\"gpt-bench-upstream\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":19,\"completion_tokens\":2,\"total_tokens\":21}}\n\n",
    "data: [DONE]\n\n",
];

/// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ) on every
/// mainstream architecture.
const TICKS_PER_SEC: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BusChoice {
    Auto,
    Redis,
    Memory,
}

#[derive(Clone)]
struct Options {
    role: String,
    duration: Duration,
    warmup: Duration,
    concurrency: Vec<usize>,
    keys: usize,
    bus: BusChoice,
    redis_url: String,
    client_threads: usize,
    json: bool,
    /// Overrides `balancer.reconcile_interval`.
    reconcile: Option<Duration>,
    /// Serves the balancer's router alone, without the control plane's middleware.
    bare: bool,
    /// Internal (roles): the mock upstream's and control plane's base URLs, the bus key
    /// prefix.
    upstream: String,
    control_plane: String,
    prefix: String,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        role: "bench".into(),
        duration: Duration::from_secs(4),
        warmup: Duration::from_secs(1),
        concurrency: vec![1, 32],
        keys: 100_000,
        bus: BusChoice::Auto,
        redis_url: std::env::var("EZ_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        client_threads: 2,
        json: false,
        reconcile: None,
        bare: false,
        upstream: String::new(),
        control_plane: String::new(),
        prefix: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--json" {
            o.json = true;
            continue;
        }
        if flag == "--bare" {
            o.bare = true;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        const VALUED: [&str; 12] = [
            "--role",
            "--duration-secs",
            "--warmup-secs",
            "--keys",
            "--client-threads",
            "--concurrency",
            "--bus",
            "--redis-url",
            "--reconcile-secs",
            "--upstream",
            "--control-plane",
            "--prefix",
        ];
        if !VALUED.contains(&flag.as_str()) {
            return Err(format!("unknown option {flag}"));
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<u64>().map_err(|_| format!("{flag}: not a number: {v}"));
        match flag.as_str() {
            "--role" => o.role = value,
            "--duration-secs" => o.duration = Duration::from_secs(number(&value)?),
            "--warmup-secs" => o.warmup = Duration::from_secs(number(&value)?),
            "--keys" => o.keys = number(&value)?.max(1) as usize,
            "--client-threads" => o.client_threads = number(&value)?.max(1) as usize,
            "--concurrency" => {
                o.concurrency = value
                    .split(',')
                    .map(|c| number(c.trim()).map(|n| n.max(1) as usize))
                    .collect::<Result<_, _>>()?;
            }
            "--bus" => {
                o.bus = match value.as_str() {
                    "redis" => BusChoice::Redis,
                    "memory" => BusChoice::Memory,
                    other => return Err(format!("--bus: expected redis or memory, got {other}")),
                }
            }
            "--redis-url" => o.redis_url = value,
            "--reconcile-secs" => o.reconcile = Some(Duration::from_secs(number(&value)?.max(1))),
            "--upstream" => o.upstream = value,
            "--control-plane" => o.control_plane = value,
            "--prefix" => o.prefix = value,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let result = match options.role.as_str() {
        "upstream" => serve_role(&options, |_| async { Ok(upstream_app()) }),
        "control-plane" => serve_role(&options, |_| async { Ok(control_plane_app()) }),
        "balancer" => serve_role(&options, balancer_app),
        "bench" => bench(&options),
        other => Err(format!("unknown role {other}")),
    };
    if let Err(e) = result {
        eprintln!("balancer_bench ({}): {e}", options.role);
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------
// Roles: the mock upstream and the balancer, each in its own process.

/// What a role serves.
struct RoleApp {
    router: axum::Router,
    /// `name=value` facts announced on the ready line.
    facts: Vec<(&'static str, String)>,
    /// The balancer's snapshot cache, for the `refresh` command.
    cache: Option<Arc<SnapshotCache>>,
    /// Keeps the balancer's background tasks (snapshot updater, reporter) running.
    _stop: Option<watch::Sender<bool>>,
}

impl RoleApp {
    fn plain(router: axum::Router) -> RoleApp {
        RoleApp {
            router,
            facts: Vec::new(),
            cache: None,
            _stop: None,
        }
    }
}

/// Serves what `build` makes on a free port, prints `ready addr=… k=v…` on stdout, then
/// serves until the parent closes our stdin (so a killed benchmark leaves no process
/// behind). A `refresh` line on stdin reloads the balancer's snapshot and answers
/// `refreshed ms=…`.
fn serve_role<F, Fut>(options: &Options, build: F) -> Result<(), String>
where
    F: FnOnce(Arc<Options>) -> Fut,
    Fut: Future<Output = Result<RoleApp, String>>,
{
    let options = Arc::new(options.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let app = build(options).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let mut line = format!("ready addr={addr}");
        for (k, v) in &app.facts {
            line.push_str(&format!(" {k}={v}"));
        }
        println!("{line}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;

        let (commands_tx, mut commands) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if commands_tx.blocking_send(line).is_err() {
                    break;
                }
            }
            std::process::exit(0);
        });
        let cache = app.cache.clone();
        tokio::spawn(async move {
            while let Some(command) = commands.recv().await {
                if let (Some(cache), "refresh") = (cache.as_ref(), command.trim()) {
                    let started = Instant::now();
                    let outcome = cache.refresh().await;
                    println!(
                        "refreshed ms={:.0} ok={}",
                        started.elapsed().as_secs_f64() * 1000.0,
                        outcome.is_ok()
                    );
                    let _ = std::io::stdout().flush();
                }
            }
        });
        // How `ezapi` serves its routers (with the client address for the balancer).
        ez_control_plane::serve(listener, app.router, std::future::pending())
            .await
            .map_err(|e| e.to_string())
    })
}

/// The mock OpenAI: a fixed chat.completion (with usage), or a short SSE stream when the
/// body asks for one. No JSON parsing and no sleeps, so it costs as little as possible.
fn upstream_app() -> RoleApp {
    async fn chat(body: Bytes) -> Response {
        if body
            .windows(b"\"stream\":true".len())
            .any(|w| w == b"\"stream\":true")
        {
            let chunks = STREAM_CHUNKS.map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c.as_bytes())));
            let mut response = Response::new(Body::from_stream(futures_util::stream::iter(chunks)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/event-stream"),
            );
            return response;
        }
        ([(header::CONTENT_TYPE, "application/json")], COMPLETION).into_response()
    }
    RoleApp::plain(axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)))
}

/// The control plane's `/internal/*` report endpoints, accepting and discarding whatever
/// the balancer's reporter ships (logs, usage, bans).
fn control_plane_app() -> RoleApp {
    async fn accept(_body: Bytes) -> StatusCode {
        StatusCode::OK
    }
    RoleApp::plain(axum::Router::new().route("/internal/{*report}", axum::routing::post(accept)))
}

/// The balancer as `ezapi balancer` runs it (`serve_balancer` and `start_data_plane` in
/// crates/ezapi/src/main.rs), built through the crates' public API: the configuration's
/// defaults, the snapshot loaded from the bus and kept current (refresh events +
/// reconcile), reports shipped to the (mock) control plane every report interval, the
/// stand-alone routes behind the control plane's middleware stack. The bus is Redis filled
/// by the parent (`--prefix`), or a memory bus this process fills itself (as in `ezapi
/// serve`, where the bus lives in the same process). Not set up: a tracing subscriber, so
/// the request span costs less than with `ezapi`'s log output on.
async fn balancer_app(options: Arc<Options>) -> Result<RoleApp, String> {
    let config = ez_config::Config::defaults();
    let b = &config.balancer;
    let reconcile = options.reconcile.unwrap_or(b.reconcile_interval);
    let bus: Arc<dyn ConfigBus> = if options.bus == BusChoice::Redis {
        Arc::new(
            RedisBus::connect(&options.redis_url, options.prefix.clone())
                .await
                .map_err(|e| e.to_string())?,
        )
    } else {
        let bus = MemoryBus::new();
        fill_bus(&bus, &options.upstream, options.keys).await?;
        Arc::new(bus)
    };
    // As `ezapi balancer`: the recorder before the snapshot, whose load takes the
    // per-group metric handles.
    let metrics = (!options.bare).then(ez_control_plane::middleware::install_recorder);
    let rss_before_load_kb = proc_status(std::process::id()).rss_kb;
    let started = Instant::now();
    let cache = SnapshotCache::new(bus.clone());
    cache.refresh().await.map_err(|e| e.to_string())?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    let tokens = cache.snapshot().tokens.len();

    let (stop, stopped) = watch::channel(false);
    cache.spawn_updater(reconcile, stopped.clone());
    let sink = HttpSink::new(&options.control_plane, None).map_err(|e| e.to_string())?;
    let reporter = Reporter::new(Arc::new(sink), bus, b.report_buffer);
    reporter.spawn(b.report_interval, stopped);
    let settings = ProxySettings::from_config(&config);
    let state = BalancerState::new(cache.clone(), settings, reporter).map_err(|e| e.to_string())?;
    let router = if let Some(metrics) = metrics {
        let app = ez_balancer::proxy::standalone_router(state).route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        );
        ez_control_plane::middleware::apply(app, config.server.max_body_bytes)
    } else {
        ez_balancer::router(state)
    };
    Ok(RoleApp {
        router,
        facts: vec![
            ("tokens", tokens.to_string()),
            ("load_ms", format!("{load_ms:.0}")),
            ("rss_before_load_kb", rss_before_load_kb.to_string()),
            ("reconcile_secs", reconcile.as_secs().to_string()),
            ("report_secs", b.report_interval.as_secs().to_string()),
        ],
        cache: Some(cache),
        _stop: Some(stop),
    })
}

// ---------------------------------------------------------------------------------------
// The snapshot: what a control plane's full sync would write for this configuration.

/// Writes `keys` child keys (the benchmark's key among them) spread over a few masters,
/// `CREDENTIALS` credentials on the mock, `BINDINGS` routes to them, the routing metas with
/// their checksums and the `meta:sync` marker — the shapes of `ez_control_plane::sync`.
async fn fill_bus(bus: &dyn ConfigBus, upstream: &str, keys: usize) -> Result<(), String> {
    let now = now_unix();
    let version = now_unix_nanos();
    let mut writes = Vec::with_capacity(keys + 16);
    for id in 1..=MASTERS {
        let master = MasterSnapshot {
            id,
            status: MasterStatus::Active,
            epoch: 0,
            group: "default".into(),
            global_qps: 0,
            namespaces: vec!["default".into()],
            default_namespace: "default".into(),
            version,
            updated_at: now,
        };
        writes.push(BusWrite::ReplaceHash {
            key: bus_keys::master(id),
            fields: master.to_fields(),
        });
    }
    for i in 0..keys {
        let key_id = i as i64 + 1;
        let plaintext = if i == 0 {
            BENCH_KEY.to_owned()
        } else {
            format!("sk-ez-filler{i:034}")
        };
        let token = TokenSnapshot {
            key_id,
            master_id: key_id % MASTERS + 1,
            issued_at_epoch: 0,
            status: KeyStatus::Active,
            group: "default".into(),
            namespaces: vec!["default".into()],
            default_namespace: "default".into(),
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            expires_at: None,
            qps: 0,
            version,
            updated_at: now,
        };
        writes.push(BusWrite::ReplaceHash {
            key: bus_keys::token(&ez_contract::token::digest(&plaintext)),
            fields: token.to_fields(),
        });
    }

    let providers: Vec<(String, String)> = (1..=CREDENTIALS)
        .map(|id| {
            let provider = ProviderSnapshot {
                id,
                name: format!("mock#{id}"),
                provider_type: "openai".into(),
                base_url: upstream.to_owned(),
                api_key: UPSTREAM_KEY.into(),
                google_project: String::new(),
                google_location: String::new(),
                group_id: 1,
                group: "default".into(),
                models: vec![UPSTREAM_MODEL.into()],
                status: "active".into(),
                auto_ban: true,
                weight: 1,
                ban_until: 0,
                ban_reason: String::new(),
                cooling_until: 0,
                access_token: String::new(),
                refresh_token: String::new(),
                expires_at: 0,
                account_id: String::new(),
                project_id: String::new(),
                static_headers: BTreeMap::new(),
                headers_profile: String::new(),
            };
            (id.to_string(), to_json(&provider))
        })
        .collect();
    let mut bindings = Vec::new();
    let mut models = Vec::new();
    for n in 0..BINDINGS {
        let public_model = if n == 0 {
            PUBLIC_MODEL.to_owned()
        } else {
            format!("{PUBLIC_MODEL}-{n}")
        };
        let binding = BindingSnapshot {
            namespace: "default".into(),
            public_model: public_model.clone(),
            status: "active".into(),
            updated_at: now,
            candidates: vec![CandidateSnapshot {
                binding_id: 1,
                group_id: 1,
                route_group: "default".into(),
                weight: 1,
                selector_type: "exact".into(),
                selector_value: UPSTREAM_MODEL.into(),
                status: "active".into(),
                error: String::new(),
                error_detail: String::new(),
                upstreams: (1..=CREDENTIALS)
                    .map(|id| (id.to_string(), UPSTREAM_MODEL.to_owned()))
                    .collect(),
            }],
        };
        let field = ez_contract::routing::route_key("default", &public_model);
        let model = ModelSnapshot {
            name: field.clone(),
            kind: "chat".into(),
            context_window: 0,
            supports_vision: false,
            supports_functions: false,
            supports_tool_choice: false,
            supports_fim: false,
            supports_reasoning: false,
            supports_json_output: false,
            max_output_tokens: 0,
            input_price_per_mtok: None,
            output_price_per_mtok: None,
        };
        bindings.push((field.clone(), to_json(&binding)));
        models.push((field, to_json(&model)));
    }
    for (hash, meta, fields) in [
        (bus_keys::PROVIDERS, bus_keys::PROVIDERS_META, providers),
        (bus_keys::BINDINGS, bus_keys::BINDINGS_META, bindings),
        (bus_keys::MODELS, bus_keys::MODELS_META, models),
    ] {
        let sum = checksum(fields.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        writes.push(BusWrite::ReplaceHash {
            key: hash.to_owned(),
            fields,
        });
        writes.push(BusWrite::ReplaceHash {
            key: meta.to_owned(),
            fields: vec![
                ("version".into(), version.to_string()),
                ("updated_at".into(), now.to_string()),
                ("checksum".into(), sum),
            ],
        });
    }
    writes.push(BusWrite::ReplaceHash {
        key: bus_keys::SYNC_SENTINEL.to_owned(),
        fields: vec![
            ("version".into(), version.to_string()),
            ("updated_at".into(), now.to_string()),
        ],
    });
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        let batch: Vec<BusWrite> = writes.by_ref().take(FILL_BATCH).collect();
        bus.apply(batch)
            .await
            .map_err(|e| format!("filling the bus: {e}"))?;
    }
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// /proc readings.

#[derive(Debug, Clone, Copy, Default)]
struct ProcStatus {
    rss_kb: u64,
    /// Peak resident set size since the process started.
    hwm_kb: u64,
}

fn proc_status(pid: u32) -> ProcStatus {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .unwrap_or(0)
    };
    ProcStatus {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
    }
}

/// User + system CPU seconds the process has used so far (all its threads).
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces;
    // utime and stime are fields 14 and 15 of the line.
    let rest = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / TICKS_PER_SEC
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------
// The load generator and the report.

/// A process this run started; killed (by its own pid) when dropped.
struct RoleProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    facts: HashMap<String, String>,
}

impl RoleProcess {
    fn spawn<S: AsRef<str>>(args: &[S]) -> Result<RoleProcess, String> {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {args:?}: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut process = RoleProcess {
            child,
            stdin,
            stdout,
            facts: HashMap::new(),
        };
        let line = process.read_line()?;
        let facts = line
            .strip_prefix("ready ")
            .ok_or_else(|| format!("{args:?} did not start: {line:?}"))?;
        process.facts = facts
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(process)
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        Ok(line.trim().to_owned())
    }

    fn fact(&self, name: &str) -> &str {
        self.facts.get(name).map_or("", String::as_str)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reloads the balancer's whole snapshot, as a refresh event or the reconcile does.
    fn refresh(&mut self) -> Result<String, String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "refresh").map_err(|e| e.to_string())?;
        stdin.flush().map_err(|e| e.to_string())?;
        self.read_line()
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a scenario sends its requests.
#[derive(Clone)]
struct Target {
    url: String,
    key: &'static str,
    body: &'static [u8],
    stream: bool,
}

struct Sample {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    /// CPU seconds used during the measured window: load generator, balancer, mock
    /// upstream, mock control plane.
    cpu: [f64; 4],
}

impl Sample {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[idx].as_secs_f64() * 1000.0
    }

    /// CPU microseconds per request of each process.
    fn cpu_us_per_request(&self) -> [f64; 4] {
        self.cpu.map(|secs| secs * 1e6 / self.requests.max(1) as f64)
    }

    /// CPU microseconds per request of all the processes together.
    fn total_cpu_us_per_request(&self) -> f64 {
        self.cpu_us_per_request().iter().sum()
    }
}

/// A full response was received and looks right (for streams: through `[DONE]`).
async fn one_request(client: &reqwest::Client, target: &Target) -> bool {
    let sent = client
        .post(&target.url)
        .header(header::AUTHORIZATION, format!("Bearer {}", target.key))
        .header(header::CONTENT_TYPE, "application/json")
        .body(target.body)
        .send()
        .await;
    let Ok(response) = sent else { return false };
    if response.status() != StatusCode::OK {
        return false;
    }
    match response.bytes().await {
        Ok(body) if target.stream => body.ends_with(b"data: [DONE]\n\n"),
        Ok(body) => body.windows(b"\"usage\"".len()).any(|w| w == b"\"usage\""),
        Err(_) => false,
    }
}

/// `concurrency` workers send requests back to back for `duration`, each timing its
/// requests from send to the last byte of the body.
async fn load(client: &reqwest::Client, target: &Target, concurrency: usize, duration: Duration) -> Sample {
    let started = Instant::now();
    let deadline = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut errors = 0;
                loop {
                    let sent_at = Instant::now();
                    if sent_at >= deadline {
                        break;
                    }
                    if one_request(&client, &target).await {
                        latencies.push(sent_at.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((l, e)) = worker.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Sample {
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
        cpu: [0.0; 4],
    }
}

struct Row {
    path: &'static str,
    stream: bool,
    concurrency: usize,
    sample: Sample,
}

fn bench(options: &Options) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let log = |message: &str| {
        if !options.json {
            eprintln!("· {message}");
        }
    };

    let load_average = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let upstream = RoleProcess::spawn(&["--role", "upstream"])?;
    let upstream_base = format!("http://{}/v1", upstream.fact("addr"));
    let control_plane = RoleProcess::spawn(&["--role", "control-plane"])?;
    let control_plane_base = format!("http://{}", control_plane.fact("addr"));
    log(&format!(
        "mock upstream at {upstream_base} (pid {}), mock control plane at {control_plane_base} (pid {})",
        upstream.pid(),
        control_plane.pid()
    ));

    let redis = match options.bus {
        BusChoice::Memory => None,
        BusChoice::Auto | BusChoice::Redis => {
            let prefix = format!("ez-bench:{}:", std::process::id());
            let reachable = runtime.block_on(async {
                let bus = RedisBus::connect(&options.redis_url, prefix.clone()).await.ok()?;
                tokio::time::timeout(Duration::from_secs(2), bus.ping())
                    .await
                    .ok()?
                    .ok()?;
                Some(bus)
            });
            match reachable {
                Some(bus) => Some((bus, prefix)),
                None if options.bus == BusChoice::Redis => {
                    return Err(format!("Redis is not reachable at {}", options.redis_url));
                }
                None => None,
            }
        }
    };
    let keys = options.keys.to_string();
    let balancer_args = |bus: &'static str, prefix: &str| -> Vec<String> {
        let mut args = [
            "--role",
            "balancer",
            "--bus",
            bus,
            "--redis-url",
            &options.redis_url,
            "--prefix",
            prefix,
            "--upstream",
            &upstream_base,
            "--control-plane",
            &control_plane_base,
            "--keys",
            &keys,
        ]
        .map(str::to_owned)
        .to_vec();
        if let Some(reconcile) = options.reconcile {
            args.extend(["--reconcile-secs".to_owned(), reconcile.as_secs().to_string()]);
        }
        if options.bare {
            args.push("--bare".to_owned());
        }
        args
    };

    let (bus_label, mut balancer) = match &redis {
        Some((bus, prefix)) => {
            let started = Instant::now();
            runtime.block_on(fill_bus(bus, &upstream_base, options.keys))?;
            log(&format!(
                "filled Redis ({}, prefix {prefix}) with {} keys in {:.1} s",
                options.redis_url,
                options.keys,
                started.elapsed().as_secs_f64()
            ));
            let args = balancer_args("redis", prefix);
            ("redis", RoleProcess::spawn(&args)?)
        }
        None => {
            let args = balancer_args("memory", "");
            ("memory", RoleProcess::spawn(&args)?)
        }
    };
    let balancer_url = format!("http://{}/v1/chat/completions", balancer.fact("addr"));
    let after_load = proc_status(balancer.pid());
    log(&format!(
        "balancer at {} (pid {}, {} bus): {} keys loaded in {} ms, RSS {:.1} MB",
        balancer.fact("addr"),
        balancer.pid(),
        bus_label,
        balancer.fact("tokens"),
        balancer.fact("load_ms"),
        mb(after_load.rss_kb)
    ));
    if balancer.fact("tokens") != keys {
        return Err(format!(
            "the balancer loaded {} keys, expected {keys}",
            balancer.fact("tokens")
        ));
    }

    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(300))
        .build()
        .map_err(|e| e.to_string())?;
    let targets = |stream: bool| {
        let body = if stream { CHAT_BODY_STREAM } else { CHAT_BODY };
        [
            (
                "direct",
                Target {
                    url: format!("{upstream_base}/chat/completions"),
                    key: UPSTREAM_KEY,
                    body,
                    stream,
                },
            ),
            (
                "balancer",
                Target {
                    url: balancer_url.clone(),
                    key: BENCH_KEY,
                    body,
                    stream,
                },
            ),
        ]
    };
    for stream in [false, true] {
        for (path, target) in targets(stream) {
            if !runtime.block_on(one_request(&client, &target)) {
                return Err(format!(
                    "a {path} request (stream: {stream}) did not answer 200 with a full body"
                ));
            }
        }
    }

    let pids = [
        std::process::id(),
        balancer.pid(),
        upstream.pid(),
        control_plane.pid(),
    ];
    let mut rows = Vec::new();
    for &concurrency in &options.concurrency {
        for stream in [false, true] {
            for (path, target) in targets(stream) {
                log(&format!("{path}, stream {stream}, concurrency {concurrency}"));
                runtime.block_on(load(&client, &target, concurrency, options.warmup));
                let cpu_before = pids.map(cpu_secs);
                let mut sample = runtime.block_on(load(&client, &target, concurrency, options.duration));
                let cpu_after = pids.map(cpu_secs);
                for i in 0..pids.len() {
                    sample.cpu[i] = cpu_after[i] - cpu_before[i];
                }
                rows.push(Row {
                    path,
                    stream,
                    concurrency,
                    sample,
                });
            }
        }
    }
    let after_run = proc_status(balancer.pid());
    let balancer_reconcile = balancer.fact("reconcile_secs").to_owned();
    let refreshed = balancer.refresh()?;
    let after_reload = proc_status(balancer.pid());
    log(&format!("second snapshot load: {refreshed}"));
    drop(balancer);

    // The `ezapi serve` topology: the memory bus holds its own copy of every entry in the
    // balancer's process. Only its memory is measured.
    let embedded = if redis.is_some() {
        let args = balancer_args("memory", "");
        let process = RoleProcess::spawn(&args)?;
        let status = proc_status(process.pid());
        Some((
            process.fact("rss_before_load_kb").parse::<u64>().unwrap_or(0),
            status,
        ))
    } else {
        None
    };
    if let Some((bus, _)) = &redis {
        runtime.block_on(async {
            let keys = bus.keys_with_prefix("").await.unwrap_or_default();
            let deletes: Vec<BusWrite> = keys.into_iter().map(|key| BusWrite::Delete { key }).collect();
            for batch in deletes.chunks(FILL_BATCH) {
                let _ = bus.apply(batch.to_vec()).await;
            }
        });
    }
    drop(upstream);
    drop(control_plane);

    let memory = Memory {
        bus: bus_label,
        reconcile_secs: balancer_reconcile,
        load_average,
        keys: options.keys,
        after_load,
        after_run,
        after_reload,
        embedded,
    };
    if options.json {
        println!("{}", report_json(options, &rows, &memory));
    } else {
        print_tables(options, &rows, &memory);
    }
    Ok(())
}

/// The balancer's set-up and memory readings.
struct Memory {
    bus: &'static str,
    reconcile_secs: String,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started: other work on the
    /// machine skews every figure.
    load_average: String,
    keys: usize,
    after_load: ProcStatus,
    after_run: ProcStatus,
    after_reload: ProcStatus,
    /// With the memory bus in the balancer's process: RSS once the bus is filled, and
    /// after the snapshot was loaded from it.
    embedded: Option<(u64, ProcStatus)>,
}

/// For each (mode, concurrency): direct and balancer rows.
fn pairs(rows: &[Row]) -> Vec<(&Row, &Row)> {
    rows.chunks(2)
        .filter_map(|pair| match pair {
            [direct, balancer] => Some((direct, balancer)),
            _ => None,
        })
        .collect()
}

const THROUGHPUT_TARGET: f64 = 0.5;
const ADDED_P50_TARGET_MS: f64 = 0.2;
const RSS_TARGET_MB: f64 = 64.0;

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn mode(stream: bool) -> &'static str {
    if stream { "streaming" } else { "non-streaming" }
}

fn print_tables(options: &Options, rows: &[Row], memory: &Memory) {
    println!(
        "\nbalancer_bench: {} s per scenario after {} s warm-up; load generator with {} threads; {} CPUs; \
         load average {} before the run; balancer: {} bus, reconcile every {} s, {}\n",
        options.duration.as_secs(),
        options.warmup.as_secs(),
        options.client_threads,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory.load_average,
        memory.bus,
        memory.reconcile_secs,
        if options.bare {
            "router only (--bare)"
        } else {
            "with the control plane's middleware"
        },
    );
    println!(
        "| path | mode | concurrency | requests | errors | req/s | p50 ms | p99 ms | CPU µs/req: client | balancer | upstream | CP |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let s = &row.sample;
        let [client, balancer, upstream, control_plane] = s.cpu_us_per_request();
        let (balancer, control_plane) = if row.path == "balancer" {
            (format!("{balancer:.0}"), format!("{control_plane:.0}"))
        } else {
            ("–".to_owned(), "–".to_owned())
        };
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} | {client:.0} | {balancer} | {upstream:.0} | {control_plane} |",
            row.path,
            mode(row.stream),
            row.concurrency,
            s.requests,
            s.errors,
            s.rps(),
            s.percentile_ms(0.50),
            s.percentile_ms(0.99),
        );
    }

    println!(
        "\n| mode | concurrency | throughput balancer/direct | CPU-bound estimate | added p50 ms | added p99 ms |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (direct, balancer) in pairs(rows) {
        let (d, b) = (&direct.sample, &balancer.sample);
        println!(
            "| {} | {} | {:.2} | {:.2} | {:.3} | {:.3} |",
            mode(direct.stream),
            direct.concurrency,
            b.rps() / d.rps(),
            d.total_cpu_us_per_request() / b.total_cpu_us_per_request(),
            b.percentile_ms(0.50) - d.percentile_ms(0.50),
            b.percentile_ms(0.99) - d.percentile_ms(0.99),
        );
    }

    println!(
        "\n| balancer process ({} bus, {} keys) | RSS MB | peak RSS MB |",
        memory.bus, memory.keys
    );
    println!("| --- | --- | --- |");
    for (what, status) in [
        ("after loading the snapshot", memory.after_load),
        ("after the load run", memory.after_run),
        ("after a second full snapshot load", memory.after_reload),
    ] {
        println!("| {what} | {:.1} | {:.1} |", mb(status.rss_kb), mb(status.hwm_kb));
    }
    if let Some((filled_kb, status)) = memory.embedded {
        println!(
            "| memory bus in process (`ezapi serve` topology): bus filled | {:.1} | – |",
            mb(filled_kb)
        );
        println!(
            "| memory bus in process: bus + snapshot loaded | {:.1} | {:.1} |",
            mb(status.rss_kb),
            mb(status.hwm_kb)
        );
    }

    println!("\n| target | measured | verdict |");
    println!("| --- | --- | --- |");
    for (direct, balancer) in pairs(rows) {
        let ratio = balancer.sample.rps() / direct.sample.rps();
        println!(
            "| throughput ≥ {THROUGHPUT_TARGET}× direct ({}, c={}) | {ratio:.2}× | {} |",
            mode(direct.stream),
            direct.concurrency,
            verdict(ratio >= THROUGHPUT_TARGET)
        );
    }
    for (direct, balancer) in pairs(rows).into_iter().filter(|(d, _)| d.concurrency == 1) {
        let added = balancer.sample.percentile_ms(0.5) - direct.sample.percentile_ms(0.5);
        println!(
            "| added p50 < {ADDED_P50_TARGET_MS} ms at c=1 ({}) | {added:.3} ms | {} |",
            mode(direct.stream),
            verdict(added < ADDED_P50_TARGET_MS)
        );
    }
    let rss = mb(memory.after_run.rss_kb.max(memory.after_load.rss_kb));
    println!(
        "| RSS < {RSS_TARGET_MB} MB with {} keys ({} bus) | {rss:.1} MB | {} |",
        memory.keys,
        memory.bus,
        verdict(rss < RSS_TARGET_MB)
    );
    if rows.iter().any(|r| r.sample.errors > 0) {
        println!("\nwarning: some requests failed (see the errors column)");
    }
}

fn report_json(options: &Options, rows: &[Row], memory: &Memory) -> Value {
    let scenarios: Vec<Value> = rows
        .iter()
        .map(|row| {
            let s = &row.sample;
            let [client, balancer, upstream, control_plane] = s.cpu_us_per_request();
            json!({
                "path": row.path,
                "stream": row.stream,
                "concurrency": row.concurrency,
                "requests": s.requests,
                "errors": s.errors,
                "requests_per_sec": s.rps(),
                "p50_ms": s.percentile_ms(0.50),
                "p99_ms": s.percentile_ms(0.99),
                "cpu_us_per_request": {
                    "client": client,
                    "balancer": balancer,
                    "upstream": upstream,
                    "control_plane": control_plane,
                },
            })
        })
        .collect();
    let ratios: Vec<Value> = pairs(rows)
        .into_iter()
        .map(|(d, b)| {
            json!({
                "stream": d.stream,
                "concurrency": d.concurrency,
                "throughput_ratio": b.sample.rps() / d.sample.rps(),
                "cpu_bound_ratio_estimate": d.sample.total_cpu_us_per_request() / b.sample.total_cpu_us_per_request(),
                "added_p50_ms": b.sample.percentile_ms(0.5) - d.sample.percentile_ms(0.5),
                "added_p99_ms": b.sample.percentile_ms(0.99) - d.sample.percentile_ms(0.99),
            })
        })
        .collect();
    let status = |s: ProcStatus| json!({ "rss_mb": mb(s.rss_kb), "peak_rss_mb": mb(s.hwm_kb) });
    json!({
        "settings": {
            "bus": memory.bus,
            "reconcile_secs": memory.reconcile_secs,
            "bare": options.bare,
            "load_average": memory.load_average,
            "duration_secs": options.duration.as_secs(),
            "warmup_secs": options.warmup.as_secs(),
            "client_threads": options.client_threads,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        },
        "scenarios": scenarios,
        "ratios": ratios,
        "memory": {
            "bus": memory.bus,
            "keys": memory.keys,
            "after_load": status(memory.after_load),
            "after_run": status(memory.after_run),
            "after_reload": status(memory.after_reload),
            "embedded_memory_bus": memory.embedded.map(|(filled_kb, s)| json!({
                "bus_filled_rss_mb": mb(filled_kb),
                "loaded": status(s),
            })),
        },
    })
}
