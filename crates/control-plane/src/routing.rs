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

/// What balancers get of a credential's key: the key itself, except a Vertex
/// service-account key, which stays here (balancers present the access tokens the token
/// refresh gets for it) and is published as a marker that says what it is.
fn snapshot_key(group: &ProviderGroup, key: &ApiKey) -> String {
    let secret = key.api_key.expose();
    if group.provider_type == ProviderType::Vertex.as_str()
        && ez_contract::provider::is_service_account_key(secret)
    {
        return SERVICE_ACCOUNT_MARKER.to_owned();
    }
    secret.to_owned()
}

/// The `api_key` of a Vertex service-account credential in the snapshot.
pub const SERVICE_ACCOUNT_MARKER: &str = r#"{"type":"service_account"}"#;

pub fn provider_snapshot(group: &ProviderGroup, key: &ApiKey) -> ProviderSnapshot {
    ProviderSnapshot {
        id: key.id,
        name: format!("{}#{}", group.name, key.id),
        provider_type: group.provider_type.clone(),
        base_url: effective_base_url(group),
        api_key: snapshot_key(group, key),
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
        cooling_until: key.cooling_until.unwrap_or(0),
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
    /// Why nothing, or not every credential, resolved, and how to fix it. Never empty
    /// when `status` is not `ok`.
    pub problems: Vec<String>,
}

impl CandidateResolution {
    fn failed(group_id: i64, status: &str, problem: String) -> CandidateResolution {
        CandidateResolution {
            group_id,
            status: status.to_owned(),
            upstreams: BTreeMap::new(),
            problems: vec![problem],
        }
    }
}

/// Names listed in a problem; a group can serve hundreds of models.
const LISTED_NAMES: usize = 20;

/// `a, b, c`, or the first [`LISTED_NAMES`] and `(and N more)`.
fn listed(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(LISTED_NAMES)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LISTED_NAMES {
        text.push_str(&format!(" (and {} more)", names.len() - LISTED_NAMES));
    }
    text
}

/// Why no model of `group` matched the selector, and what to change.
fn selector_miss(kind: SelectorType, wanted: &str, group: &ProviderGroup, models: &[String]) -> String {
    let name = &group.name;
    let miss = match kind {
        SelectorType::Exact => format!(
            "no model of group `{name}` equals `{wanted}`; set `selector_value` to one of its models, \
             or use `selector_type` `normalize_exact` or `regex`"
        ),
        SelectorType::NormalizeExact => format!(
            "no model of group `{name}` equals `{wanted}` once lower-cased and stripped of any \
             `vendor/` prefix; set `selector_value` to one of its models, or use `selector_type` `regex`"
        ),
        SelectorType::Regex => format!(
            "no model of group `{name}` matches the regex `{wanted}`; change `selector_value`, \
             or use `selector_type` `exact` with one of its models"
        ),
    };
    format!("{miss}; its models: {}", listed(models))
}

/// Resolves one binding against the routable credentials of its group. Whenever the
/// status is not `ok`, `problems` says why and what to change: the group is missing or
/// disabled, it has no (active) credential, no models, or the selector matches none,
/// several or is invalid.
pub fn resolve_candidate(
    binding: &Binding,
    group: Option<&ProviderGroup>,
    keys: &[ApiKey],
) -> CandidateResolution {
    let gid = binding.group_id;
    let config_error = |problem| CandidateResolution::failed(gid, candidate_error::CONFIG_ERROR, problem);
    let no_provider = |problem| CandidateResolution::failed(gid, candidate_error::NO_PROVIDER, problem);
    let Some(group) = group else {
        return config_error(format!(
            "provider group {gid} does not exist; bind the route to an existing group"
        ));
    };
    let kind = match binding.selector_type.parse::<SelectorType>() {
        Ok(kind) => kind,
        Err(e) => return config_error(e),
    };
    if group.status != ACTIVE {
        return no_provider(format!(
            "provider group `{}` is {}; set its status to active (PUT /admin/provider-groups/{gid})",
            group.name, group.status
        ));
    }
    let own: Vec<&ApiKey> = keys.iter().filter(|k| k.group_id == group.id).collect();
    if own.is_empty() {
        return no_provider(format!(
            "provider group `{}` has no credentials; add one (POST /admin/api-keys with \"group_id\": {gid})",
            group.name
        ));
    }
    let routable: Vec<&ApiKey> = own.iter().copied().filter(|k| is_routable(group, k)).collect();
    if routable.is_empty() {
        let mut statuses: Vec<String> = own.iter().map(|k| k.status.clone()).collect();
        statuses.sort();
        statuses.dedup();
        return no_provider(format!(
            "none of the {} credentials of provider group `{}` is active ({}); set one's status to \
             active (PUT /admin/api-keys/{})",
            own.len(),
            group.name,
            statuses.join(", "),
            own[0].id
        ));
    }

    let mut upstreams = BTreeMap::new();
    let mut problems = Vec::new();
    let mut invalid = false;
    // Every model the routable credentials serve, first seen first: what a miss lists.
    let mut served: Vec<String> = Vec::new();
    for key in routable {
        let models = served_models(group, key);
        for model in models {
            if !served.contains(model) {
                served.push(model.clone());
            }
        }
        match selector::resolve(kind, &binding.selector_value, &binding.public_model, models) {
            Resolution::Model(model) => {
                upstreams.insert(key.id.to_string(), model);
            }
            Resolution::NoMatch => {}
            Resolution::Ambiguous(models) => {
                invalid = true;
                problems.push(format!(
                    "credential {}: selector matches several models: {}; make it match one \
                     (`exact`, or an anchored regex such as `^name$`)",
                    key.id,
                    listed(&models)
                ));
            }
            Resolution::InvalidRegex(e) => {
                invalid = true;
                let wanted = selector::wanted(&binding.selector_value, &binding.public_model);
                problems.push(format!("invalid regex `{wanted}` (fix `selector_value`): {e}"));
                break;
            }
        }
    }
    let status = if !upstreams.is_empty() {
        "ok"
    } else if invalid {
        candidate_error::CONFIG_ERROR
    } else {
        problems.push(if served.is_empty() {
            format!(
                "provider group `{}` lists no models, nor do its active credentials; set its \
                 `models` (PUT /admin/provider-groups/{gid})",
                group.name
            )
        } else {
            let wanted = selector::wanted(&binding.selector_value, &binding.public_model);
            selector_miss(kind, wanted, group, &served)
        });
        candidate_error::NO_PROVIDER
    };
    CandidateResolution {
        group_id: gid,
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
                binding_id: b.id,
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
