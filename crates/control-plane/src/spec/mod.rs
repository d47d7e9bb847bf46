//! Validated specifications, one per entity. A spec's constructor is the only place the
//! rules of its entity's fields live: the HTTP handlers (through the `tenants`,
//! `providers` and `namespaces` services) and configuration import build the same specs
//! from raw values, so the two cannot disagree about what is valid or how a value is
//! stored (trimmed, de-duplicated, normalised).
//!
//! A spec cannot be built any other way (its field is private) and cannot be changed once
//! built; it dereferences to the store's write type, which is what the store takes.
//! Rules that need the database (does a namespace exist, is a name taken) are the
//! services' and the importer's; rules about one entity's own values are here.

mod access;
mod binding;
mod credential;
mod group;
mod key;
mod master;
mod namespace;
mod token;

use ez_contract::provider::ProviderType;

pub use access::AccessSpec;
pub use binding::{BINDING_STATUSES, BindingSpec};
pub use credential::{CREDENTIAL_STATUSES, CredentialSpec};
pub use group::{GROUP_STATUSES, GroupSpec, HEADERS_PROFILES};
pub use key::KeySpec;
pub use master::MasterSpec;
pub use namespace::{NamespaceFields, NamespaceSpec};
pub use token::StoredToken;

/// Why a value breaks its entity's rules. `crate::error` maps each variant to its HTTP
/// status and code; configuration import reports the messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// One field has a value outside its rules (400 `invalid_field`).
    #[error("{field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("{field} must be a future Unix time in seconds")]
    ExpiresInPast { field: &'static str },
    #[error("{0}")]
    UnknownProviderType(String),
    #[error("provider type {0} has no official endpoint; base_url is required")]
    BaseUrlRequired(ProviderType),
    #[error("provider type {0} needs google_project")]
    GoogleProjectRequired(ProviderType),
    #[error("{0} credentials need access_token or refresh_token")]
    OauthTokenRequired(ProviderType),
    #[error("{0} credentials need api_key")]
    ApiKeyRequired(ProviderType),
    #[error("selector_value is not a valid regex: {0}")]
    InvalidSelector(String),
    #[error("default_namespace {0:?} must be one of namespaces")]
    DefaultNamespaceNotInNamespaces(String),
    #[error("namespace(s) not allowed for this master: {}", .0.join(", "))]
    NamespacesNotAllowed(Vec<String>),
}

impl SpecError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> SpecError {
        SpecError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

pub type SpecResult<T> = Result<T, SpecError>;

/// Makes `$spec` a read-only view of `$inner`: constructible only in its module,
/// dereferencing to the write type the store takes.
macro_rules! read_only_spec {
    ($spec:ident => $inner:ty) => {
        impl std::ops::Deref for $spec {
            type Target = $inner;

            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl $spec {
            /// The validated values, for the store.
            pub fn into_inner(self) -> $inner {
                self.0
            }
        }
    };
}
use read_only_spec;
