//! The ez-api data plane ("balancer", SPEC §1, §6): authenticates client keys from the
//! config-bus snapshot, resolves the model to a bound provider group, picks a credential
//! and forwards the request, streaming the answer back. It never touches the database.

pub mod auth;
pub mod azure;
pub mod bans;
pub mod body;
pub mod cache;
pub mod delivery;
pub mod error;
pub mod estimate;
pub mod failover;
pub mod formats;
pub mod gemini_route;
pub mod metrics;
pub mod models;
pub mod proxy;
pub mod quota;
pub mod rate;
pub mod refusal;
pub mod renewal;
pub mod report;
pub mod response_headers;
pub mod route;
pub mod sink;
pub mod snapshot;
pub mod upstream;
pub mod upstream_answer;
pub mod upstream_failure;
pub mod usage;

pub use cache::SnapshotCache;
pub use proxy::{BalancerState, ProxySettings, router};
pub use report::Reporter;
