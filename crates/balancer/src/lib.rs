//! The ez-api data plane ("balancer", SPEC §1, §6): authenticates client keys from the
//! config-bus snapshot, resolves the model to a bound provider group, picks a credential
//! and forwards the request, streaming the answer back. It never touches the database.

pub mod cache;
pub mod error;
pub mod proxy;
pub mod route;
pub mod snapshot;

pub use cache::SnapshotCache;
pub use proxy::{BalancerState, router};
