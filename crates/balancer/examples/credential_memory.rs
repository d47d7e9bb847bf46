//! Resident memory of a gateway holding many subscription credentials (issue 11): the
//! control plane on an embedded SQLite file and the in-memory bus, and a balancer's
//! snapshot cache on that bus, in one process as in `ezapi serve`. See
//! docs/benchmarks.md.
//!
//!     cargo run --release -p ez-balancer --example credential_memory [-- OPTIONS]
//!
//! Phases, with the process's resident memory (`VmRSS`) read after each:
//! 1. start-up, snapshot loaded while the configuration is empty;
//! 2. one `claude-code` group, one binding to it, and N credentials with OAuth fields
//!    (written through the store in one go, then one routing sync of the group — as
//!    `create_setup` does), snapshot reloaded;
//! 3. R rounds of token-refresh churn: every credential gets a new access token, refresh
//!    token and expiry through `providers::update_api_key`, the path the control plane's
//!    token refresh job takes (database write, then the credential's provider entry and
//!    its group's routes rewritten on the bus); then the snapshot is reloaded, whole and
//!    its routing part alone.
//!
//! The figure is the whole process — control plane, SQLite's page cache, the in-memory
//! bus's copy of every entry (JSON text) and the balancer's decoded snapshot — as one
//! `ezapi serve` would hold them. To tell the shares apart it also prints the bytes the
//! Rust heap holds live (what the program has allocated and not freed; RSS minus that is
//! SQLite's C heap, code, and memory the allocators keep mapped), the bus's payload, and
//! what decoding the snapshot added to the live heap.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ez_balancer::SnapshotCache;
use ez_balancer::snapshot::Part;
use ez_config::Config;
use ez_contract::SecretToken;
use ez_contract::bus_keys;
use ez_contract::provider::ProviderType;
use ez_contract::time::now_unix;
use ez_control_plane::ControlPlane;
use ez_control_plane::providers::{self, CreateBindingRequest, CreateGroupRequest, UpdateApiKeyRequest};
use ez_control_plane::spec::CredentialSpec;
use ez_control_plane::store::{ApiKeyWrite, Store};
use ez_control_plane::sync::RoutingChange;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use rand::Rng;
use rand::distributions::Alphanumeric;

/// mimalloc, the allocator `ezapi` runs with, so the process is measured as deployed,
/// counting the bytes held live. SQLite's own allocations (its page cache) go through the
/// C library's malloc and are not counted.
#[global_allocator]
static GLOBAL: Counting = Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed on unchanged to mimalloc, which upholds `GlobalAlloc`'s
// contract; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are mimalloc's preconditions.
        let ptr = unsafe { mimalloc::MiMalloc.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator, that is from mimalloc, with `layout`.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout`; the caller's guarantees for
        // `new_size` are mimalloc's preconditions.
        let new = unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

fn live_kib() -> u64 {
    (LIVE_BYTES.load(Ordering::Relaxed) / 1024) as u64
}

const USAGE: &str = "\
credential_memory: resident memory with many subscription credentials (docs/benchmarks.md)

usage: cargo run --release -p ez-balancer --example credential_memory -- [OPTIONS]

  --credentials N   claude-code credentials in the one group (default 5000)
  --rounds N        rounds of token-refresh churn over every credential (default 10)";

const GROUP: &str = "claude-max-pool";
const NAMESPACE: &str = "default";
const PUBLIC_MODEL: &str = "claude-sonnet-4-5";
const MODELS: [&str; 3] = ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"];
/// Claude Code's OAuth token prefixes; the random tails make tokens of 108 characters.
const ACCESS_PREFIX: &str = "sk-ant-oat01-";
const REFRESH_PREFIX: &str = "sk-ant-ort01-";
const TOKEN_TAIL_CHARS: usize = 95;
/// Claude Code's access tokens live about eight hours.
const TOKEN_LIFETIME_SECS: i64 = 8 * 3600;

struct Options {
    credentials: usize,
    rounds: usize,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        credentials: 5000,
        rounds: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = value
            .parse::<usize>()
            .map_err(|_| format!("{flag}: not a number: {value}"))?;
        match flag.as_str() {
            "--credentials" => o.credentials = number.max(1),
            "--rounds" => o.rounds = number.max(1),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

/// One row of the table.
struct Sample {
    phase: String,
    credentials: usize,
    rss_kib: u64,
    live_kib: u64,
    secs: f64,
}

/// This process's resident set and its peak, in KiB, from `/proc/self/status`.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn random_token(prefix: &str) -> String {
    let tail: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(TOKEN_TAIL_CHARS)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

/// A UUID-shaped account id, as Anthropic's OAuth answers carry.
fn random_account_id() -> String {
    let n: u128 = rand::thread_rng().r#gen();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn random_expiry() -> i64 {
    now_unix() + TOKEN_LIFETIME_SECS - rand::thread_rng().gen_range(0..3600)
}

/// Bytes of JSON the bus holds for the providers and bindings hashes.
async fn bus_payload_bytes(bus: &dyn ez_bus::ConfigBus) -> Result<usize, ez_bus::BusError> {
    let mut bytes = 0;
    for key in [bus_keys::PROVIDERS, bus_keys::BINDINGS] {
        bytes += bus
            .hash_get_all(key)
            .await?
            .iter()
            .map(|(field, value)| field.len() + value.len())
            .sum::<usize>();
    }
    Ok(bytes)
}

/// Reloads the snapshot as the balancer's updater would on a full reconcile, then on a
/// routing event.
async fn reload(cache: &SnapshotCache) -> Result<(), ez_bus::BusError> {
    cache.refresh().await?;
    cache.refresh_part(Part::Routing).await
}

#[tokio::main]
async fn main() {
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
    if let Err(e) = run(&options).await {
        eprintln!("credential_memory: {e}");
        std::process::exit(1);
    }
}

async fn run(options: &Options) -> Result<(), Box<dyn std::error::Error>> {
    let n = options.credentials;
    let mut samples: Vec<Sample> = Vec::new();
    let mut record = |phase: String, credentials: usize, started: Instant| {
        let (rss_kib, _) = memory_kib();
        let live_kib = live_kib();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{phase}: RSS {:.1} MiB, live heap {:.1} MiB, after {secs:.1} s",
            mib(rss_kib),
            mib(live_kib)
        );
        samples.push(Sample {
            phase,
            credentials,
            rss_kib,
            live_kib,
            secs,
        });
    };

    // 1. Start-up on an empty configuration.
    let started = Instant::now();
    let db = TestDatabase::create(Backend::Embedded).await;
    let mut config = Config::defaults();
    config.auth.admin_token = Some(SecretToken::from_plaintext(random_token("admin-")));
    let store = Store::connect(&db.url, db.kind.clone(), config.database.max_connections).await?;
    store.migrate().await?;
    let bus = test_bus(Backend::Embedded).await;
    let cp = ControlPlane::build(&config, store, bus.clone()).await?;
    let state = &cp.state;
    let cache = SnapshotCache::new(bus.clone());
    reload(&cache).await?;
    record("empty".into(), 0, started);

    // 2. One claude-code group bound to a public model, and its credentials.
    let started = Instant::now();
    let group = providers::create_group(
        state,
        CreateGroupRequest {
            name: GROUP.into(),
            provider_type: ProviderType::ClaudeCode.as_str().into(),
            base_url: None,
            google_project: None,
            google_location: None,
            models: Some(MODELS.iter().map(|m| (*m).to_owned()).collect()),
            status: None,
            static_headers: None,
            headers_profile: None,
            route_group: None,
            health_check: None,
        },
    )
    .await?;
    providers::create_binding(
        state,
        CreateBindingRequest {
            namespace: NAMESPACE.into(),
            public_model: PUBLIC_MODEL.into(),
            group_id: group.id,
            weight: None,
            selector_type: None,
            selector_value: None,
            status: None,
        },
    )
    .await?;
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let write = ApiKeyWrite {
            group_id: group.id,
            api_key: SecretToken::from_plaintext(""),
            weight: 1,
            status: "active".into(),
            auto_ban: true,
            ban_reason: String::new(),
            ban_until: None,
            access_token: SecretToken::from_plaintext(random_token(ACCESS_PREFIX)),
            refresh_token: SecretToken::from_plaintext(random_token(REFRESH_PREFIX)),
            expires_at: Some(random_expiry()),
            account_id: random_account_id(),
            project_id: String::new(),
            models: Vec::new(),
            revision: 0,
        };
        let spec = CredentialSpec::new(write, ProviderType::ClaudeCode)?;
        ids.push(state.store.create_api_key(&spec).await?.id);
    }
    state
        .sync
        .routing_changed(RoutingChange {
            groups: vec![group.id],
            ..Default::default()
        })
        .await;
    let live_before_snapshot = live_kib();
    reload(&cache).await?;
    let snapshot_kib = live_kib().saturating_sub(live_before_snapshot);
    check_snapshot(&cache, n, None)?;
    record("loaded".into(), n, started);

    // 3. Token-refresh churn.
    let mut last_access = String::new();
    for round in 1..=options.rounds {
        let started = Instant::now();
        for id in &ids {
            last_access = random_token(ACCESS_PREFIX);
            let update = UpdateApiKeyRequest {
                access_token: Some(last_access.clone()),
                refresh_token: Some(random_token(REFRESH_PREFIX)),
                expires_at: Some(Some(random_expiry())),
                ..UpdateApiKeyRequest::default()
            };
            providers::update_api_key(state, *id, update).await?;
        }
        reload(&cache).await?;
        let last_id = ids.last().copied().unwrap_or_default();
        check_snapshot(&cache, n, Some((last_id, last_access.as_str())))?;
        record(format!("refresh round {round}"), n, started);
    }

    let bus_bytes = bus_payload_bytes(bus.as_ref()).await?;
    let (_, peak_kib) = memory_kib();
    print_report(&samples, n, bus_bytes, snapshot_kib, peak_kib);
    Ok(())
}

/// The snapshot holds every credential, the binding routes to all of them, and (after
/// churn) the last credential carries the token written last.
fn check_snapshot(cache: &SnapshotCache, n: usize, last: Option<(i64, &str)>) -> Result<(), String> {
    let snapshot = cache.snapshot();
    if snapshot.providers.len() != n {
        return Err(format!(
            "the snapshot holds {} credentials, expected {n}",
            snapshot.providers.len()
        ));
    }
    let route = format!("{NAMESPACE}.{PUBLIC_MODEL}");
    let upstreams: usize = snapshot
        .bindings
        .get(&route)
        .map(|b| b.candidates.iter().map(|c| c.upstreams.len()).sum())
        .unwrap_or(0);
    if upstreams != n {
        return Err(format!("{route} routes to {upstreams} credentials, expected {n}"));
    }
    if let Some((id, token)) = last {
        let held = snapshot.providers.get(&id).map(|p| p.access_token.as_str());
        if held != Some(token) {
            return Err(format!("credential {id} does not carry its newest access token"));
        }
    }
    Ok(())
}

fn print_report(samples: &[Sample], n: usize, bus_bytes: usize, snapshot_kib: u64, peak_kib: u64) {
    let empty = samples.first().map_or(0, |s| s.rss_kib);
    println!("| phase | credentials | RSS MiB | vs empty MiB | live heap MiB | phase s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for s in samples {
        println!(
            "| {} | {} | {:.1} | {:+.1} | {:.1} | {:.1} |",
            s.phase,
            s.credentials,
            mib(s.rss_kib),
            mib(s.rss_kib) - mib(empty),
            mib(s.live_kib),
            s.secs
        );
    }
    let loaded = samples.get(1).map_or(empty, |s| s.rss_kib);
    let live_empty = samples.first().map_or(0, |s| s.live_kib);
    let live_loaded = samples.get(1).map_or(live_empty, |s| s.live_kib);
    println!();
    println!(
        "per credential: {:.2} KiB RSS ((RSS loaded - RSS empty) / {n}), {:.2} KiB live heap",
        (loaded as f64 - empty as f64) / n as f64,
        (live_loaded as f64 - live_empty as f64) / n as f64
    );
    let rounds: Vec<&Sample> = samples.iter().skip(2).collect();
    if let (Some(first), Some(last)) = (rounds.first(), rounds.last()) {
        let growth_kib = last.rss_kib as f64 - first.rss_kib as f64;
        let (lowest, highest) = rounds.iter().fold((u64::MAX, 0), |(lo, hi), s| {
            (lo.min(s.rss_kib), hi.max(s.rss_kib))
        });
        println!(
            "churn: {} -> {}: RSS {:+.1} MiB ({:+.1} %), live heap {:+.1} MiB; RSS over the rounds \
             {:.1}-{:.1} MiB",
            first.phase,
            last.phase,
            growth_kib / 1024.0,
            100.0 * growth_kib / first.rss_kib as f64,
            (last.live_kib as f64 - first.live_kib as f64) / 1024.0,
            mib(lowest),
            mib(highest)
        );
        let churn_secs: f64 = rounds.iter().map(|s| s.secs).sum();
        println!(
            "one credential's token refresh (update_api_key, database and bus): {:.2} ms on average",
            1000.0 * churn_secs / (rounds.len() * n) as f64
        );
    }
    println!(
        "bus payload (providers + bindings JSON): {:.1} MiB; snapshot decoded: {:.1} MiB live heap \
         ({:.2} KiB per credential); peak RSS (VmHWM): {:.1} MiB",
        bus_bytes as f64 / (1024.0 * 1024.0),
        mib(snapshot_kib),
        snapshot_kib as f64 / n as f64,
        mib(peak_kib)
    );
    println!(
        "MALLOC_ARENA_MAX={}",
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".into())
    );
}
