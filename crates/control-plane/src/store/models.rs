//! Rows of the CP database, as the API shows them (SPEC §3). Times are Unix seconds.

use ez_contract::snapshot::{KeyStatus, MasterStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceStatus {
    Active,
    Disabled,
}

impl NamespaceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceStatus::Active => "active",
            NamespaceStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<NamespaceStatus> {
        match s {
            "active" => Some(NamespaceStatus::Active),
            "disabled" => Some(NamespaceStatus::Disabled),
            _ => None,
        }
    }
}

/// Who issued a child key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IssuedBy {
    Master,
    Admin,
}

impl IssuedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            IssuedBy::Master => "master",
            IssuedBy::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<IssuedBy> {
        match s {
            "master" => Some(IssuedBy::Master),
            "admin" => Some(IssuedBy::Admin),
            _ => None,
        }
    }
}

/// Who suspended a child key. An admin's suspension sticks: a master cannot lift it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuspendedBy {
    Master,
    Admin,
}

impl SuspendedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspendedBy::Master => "master",
            SuspendedBy::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<SuspendedBy> {
        match s {
            "master" => Some(SuspendedBy::Master),
            "admin" => Some(SuspendedBy::Admin),
            _ => None,
        }
    }
}

/// A named routing space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Namespace {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub status: NamespaceStatus,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A tenant. The master key itself is never stored; `token_digest` is its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Master {
    pub id: i64,
    pub name: String,
    pub group: String,
    #[schema(value_type = String, example = "active")]
    pub status: MasterStatus,
    pub max_child_keys: i64,
    pub global_qps: i64,
    pub epoch: i64,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub token_digest: String,
    pub token_prefix: String,
    /// Bumped by every update (optimistic concurrency); not part of the API.
    #[serde(skip)]
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A child API key of a master. The key itself is never stored; `token_digest` is its
/// SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Key {
    pub id: i64,
    pub master_id: i64,
    pub name: String,
    pub token_digest: String,
    pub token_prefix: String,
    #[schema(value_type = String, example = "active")]
    pub status: KeyStatus,
    /// Who suspended the key (`admin` or `master`); `null` unless it is suspended.
    pub suspended_by: Option<SuspendedBy>,
    pub issued_at_epoch: i64,
    pub issued_by: IssuedBy,
    pub default_namespace: String,
    pub namespaces: Vec<String>,
    pub allow_ips: Vec<String>,
    pub deny_ips: Vec<String>,
    pub expires_at: Option<i64>,
    pub qps: Option<i64>,
    pub last_used_at: Option<i64>,
    /// Bumped by every update (optimistic concurrency); not part of the API.
    #[serde(skip)]
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Key {
    /// Whether the key can never authenticate again: revoked, or issued before its
    /// master's current epoch (epochs only rise).
    pub fn is_dead(&self, master_epoch: i64) -> bool {
        self.status == KeyStatus::Revoked || self.issued_at_epoch < master_epoch
    }

    /// Whether the key takes one of its master's `max_child_keys` slots: it is not dead
    /// and not expired. Suspended keys count (they can be re-activated). The store's
    /// `LIVE_KEY` condition is the same rule in SQL, where the limit is enforced.
    pub fn takes_a_slot(&self, master_epoch: i64, now: i64) -> bool {
        !self.is_dead(master_epoch) && self.expires_at.is_none_or(|t| t > now)
    }
}
