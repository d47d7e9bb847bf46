//! The contract between the control plane (CP) and the data plane (DP).
//!
//! Everything both sides must agree on lives here, so the two can never drift apart:
//! token formats and hashing, the names of config-bus keys, the snapshot types the CP
//! writes and the DP reads, and the one child-key validation function (SPEC §4).

pub mod bus_keys;
pub mod client_ip;
pub mod error;
pub mod provider;
pub mod redact;
pub mod report;
pub mod routing;
pub mod selector;
pub mod snapshot;
pub mod time;
pub mod token;
pub mod validate;

pub use snapshot::{MasterSnapshot, SnapshotError, TokenSnapshot};
pub use token::{SecretToken, TokenKind};
pub use validate::{KeyRejection, validate_key};
