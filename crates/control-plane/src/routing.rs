//! Builds the routing snapshot from database rows (SPEC §7): provider entries per
//! credential and pre-resolved binding entries. Pure functions; `sync.rs` decides what
//! to build and writes it.

use std::collections::{BTreeMap, HashMap};

use ez_contract::provider::ProviderType;
use ez_contract::routing::{BindingSnapshot, CandidateSnapshot, ProviderSnapshot, candidate_error};
use ez_contract::selector::{self, Resolution, SelectorType};
use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{ApiKey, Binding, ProviderGroup};

pub const ACTIVE: &str = "active";

/// The endpoint a group's credentials call: its own `base_url`, else the official one.
pub fn effective_base_url(group: &ProviderGroup) -> String {
    if !group.base_url.is_empty() {
        return group.base_url.clone();
    }
    group
        .provider_type
        .parse::<ProviderType>()
        .ok()
        .and_then(ProviderType::official_base_url)
        .unwrap_or_default()
        .to_owned()
}

pub fn provider_snapshot(group: &ProviderGroup, key: &ApiKey) -> ProviderSnapshot {
    ProviderSnapshot {
        id: key.id,
        name: format!("{}#{}", group.name, key.id),
        provider_type: group.provider_type.clone(),
        base_url: effective_base_url(group),
        api_key: key.api_key.expose().to_owned(),
        google_project: group.google_project.clone(),
        google_location: group.google_location.clone(),
        group_id: group.id,
        group: group.route_group.clone(),
        models: served_models(group, key).to_vec(),
        // A credential of a disabled group is not routable whatever its own status.
        status: if group.status == ACTIVE {
            key.status.clone()
        } else {
            "manual_disabled".to_owned()
        },
        auto_ban: key.auto_ban,
        weight: key.weight,
        ban_until: key.ban_until.unwrap_or(0),
        ban_reason: key.ban_reason.clone(),
        access_token: key.access_token.expose().to_owned(),
        refresh_token: key.refresh_token.expose().to_owned(),
        expires_at: key.expires_at.unwrap_or(0),
        account_id: key.account_id.clone(),
        project_id: key.project_id.clone(),
        static_headers: group.static_headers.clone(),
        headers_profile: group.headers_profile.clone(),
    }
}

/// The models a credential serves: its own list, else its group's.
pub fn served_models<'a>(group: &'a ProviderGroup, key: &'a ApiKey) -> &'a [String] {
    if key.models.is_empty() {
        &group.models
    } else {
        &key.models
    }
}

/// Whether a credential may be routed to (bans are time-bound and checked by the data
/// plane against `ban_until` at pick time).
pub fn is_routable(group: &ProviderGroup, key: &ApiKey) -> bool {
    group.status == ACTIVE && key.status == ACTIVE
}

/// How one candidate resolved, for the binding's GET and the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CandidateResolution {
    pub group_id: i64,
    /// `ok`, `no_provider` or `config_error`.
    pub status: String,
    /// Credential id → upstream model.
    pub upstreams: BTreeMap<String, String>,
    /// Why credentials were left out (ambiguous selector, invalid regex, …).
    pub problems: Vec<String>,
}

/// Resolves one binding against the routable credentials of its group.
pub fn resolve_candidate(
    binding: &Binding,
    group: Option<&ProviderGroup>,
    keys: &[ApiKey],
) -> CandidateResolution {
    let mut upstreams = BTreeMap::new();
    let mut problems = Vec::new();
    let mut config_error = false;
    let Some(group) = group else {
        return CandidateResolution {
            group_id: binding.group_id,
            status: candidate_error::CONFIG_ERROR.to_owned(),
            upstreams,
            problems: vec![format!("provider group {} does not exist", binding.group_id)],
        };
    };
    let kind = match binding.selector_type.parse::<SelectorType>() {
        Ok(kind) => kind,
        Err(e) => {
            return CandidateResolution {
                group_id: binding.group_id,
                status: candidate_error::CONFIG_ERROR.to_owned(),
                upstreams,
                problems: vec![e],
            };
        }
    };
    for key in keys
        .iter()
        .filter(|k| k.group_id == group.id && is_routable(group, k))
    {
        match selector::resolve(
            kind,
            &binding.selector_value,
            &binding.public_model,
            served_models(group, key),
        ) {
            Resolution::Model(model) => {
                upstreams.insert(key.id.to_string(), model);
            }
            Resolution::NoMatch => {}
            Resolution::Ambiguous(models) => {
                config_error = true;
                problems.push(format!(
                    "credential {}: selector matches several models: {}",
                    key.id,
                    models.join(", ")
                ));
            }
            Resolution::InvalidRegex(e) => {
                config_error = true;
                problems.push(format!("invalid regex: {e}"));
                break;
            }
        }
    }
    let status = if !upstreams.is_empty() {
        "ok"
    } else if config_error {
        candidate_error::CONFIG_ERROR
    } else {
        if group.status != ACTIVE {
            problems.push(format!("provider group {} is {}", group.id, group.status));
        }
        candidate_error::NO_PROVIDER
    };
    CandidateResolution {
        group_id: binding.group_id,
        status: status.to_owned(),
        upstreams,
        problems,
    }
}

/// The snapshot of one route from all its bindings (`bindings` share namespace and public
/// model). Disabled bindings are kept as candidates with status `disabled` and no
/// upstreams, so the data plane sees why nothing routes.
pub fn binding_snapshot(
    bindings: &[&Binding],
    groups: &HashMap<i64, ProviderGroup>,
    keys_by_group: &HashMap<i64, Vec<ApiKey>>,
    now: i64,
) -> Option<BindingSnapshot> {
    let first = bindings.first()?;
    let candidates: Vec<CandidateSnapshot> = bindings
        .iter()
        .map(|b| {
            let group = groups.get(&b.group_id);
            let keys = keys_by_group.get(&b.group_id).map_or(&[][..], Vec::as_slice);
            let resolution = resolve_candidate(b, group, keys);
            let routes = b.status == ACTIVE && resolution.status == "ok";
            CandidateSnapshot {
                group_id: b.group_id,
                route_group: group.map(|g| g.route_group.clone()).unwrap_or_default(),
                weight: b.weight,
                selector_type: b.selector_type.clone(),
                selector_value: b.selector_value.clone(),
                status: b.status.clone(),
                error: if resolution.status == "ok" {
                    String::new()
                } else {
                    resolution.status.clone()
                },
                error_detail: resolution.problems.join("; "),
                upstreams: if routes {
                    resolution.upstreams
                } else {
                    BTreeMap::new()
                },
            }
        })
        .collect();
    let status = if bindings.iter().any(|b| b.status == ACTIVE) {
        ACTIVE
    } else {
        "disabled"
    };
    Some(BindingSnapshot {
        namespace: first.namespace.clone(),
        public_model: first.public_model.clone(),
        status: status.to_owned(),
        updated_at: now,
        candidates,
    })
}

#[cfg(test)]
mod tests;
