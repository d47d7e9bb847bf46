//! Resolution (SPEC §6 steps 4–5): which route a request names, which bound group serves
//! it, which credential to use. Pure functions over the snapshot.
//!
//! Routing groups: a master (and so each of its keys) belongs to a `group`; each bound
//! provider group carries a `route_group`. A candidate is eligible for a caller when its
//! `route_group` is empty or equals the caller's group; a route without an eligible
//! candidate does not exist for that caller (404 `model_not_found`, and absent from
//! `/v1/models`).
//!
//! A route whose eligible candidates resolve to no credential (the control plane wrote
//! why in each candidate) is a configuration problem, told apart from one whose
//! credentials are all banned or failing: the first answers 503 `route_not_configured`
//! naming the problem and is not listed by `/v1/models`; the second answers 503
//! `no_upstream` and stays listed (bans end by themselves).

use std::collections::HashMap;
use std::fmt;

use ez_contract::routing::{BindingSnapshot, CandidateSnapshot, ProviderSnapshot, route_key};
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};
use rand::Rng;

use crate::snapshot::Snapshot;

#[derive(Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The namespace named by the header is not one the key may use.
    NamespaceNotAllowed(String),
    /// No binding for `namespace.public_model`.
    ModelNotFound(String),
    /// The route exists for the caller, but none of its candidates resolves to a
    /// credential.
    NotConfigured(NotConfigured),
}

/// Why a route serves no request: what the client is told.
#[derive(Debug, PartialEq, Eq)]
pub struct NotConfigured {
    pub namespace: String,
    pub public_model: String,
    /// The binding to look at; 0 when the entry predates binding ids.
    pub binding_id: i64,
    /// The control plane's explanation, at most [`PROBLEM_CHARS`] characters.
    pub problem: String,
}

/// How much of the control plane's explanation a client sees: enough for the first
/// problem, never a whole list of a group's models.
pub const PROBLEM_CHARS: usize = 300;

impl fmt::Display for NotConfigured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model `{}` in namespace `{}` has no upstream: {}; see GET /admin/bindings",
            self.public_model, self.namespace, self.problem
        )?;
        if self.binding_id > 0 {
            write!(f, "/{}", self.binding_id)?;
        }
        Ok(())
    }
}

/// Whether `candidate` can be picked at all: its binding is active and its selector
/// resolved to at least one credential. Bans are not considered.
fn resolved(candidate: &CandidateSnapshot) -> bool {
    candidate.status == "active" && !candidate.upstreams.is_empty()
}

/// Why `candidate` routes nothing, from what the control plane wrote into it.
pub fn candidate_problem(candidate: &CandidateSnapshot) -> &str {
    if candidate.status != "active" {
        "the binding is disabled; set its status to active"
    } else if !candidate.error_detail.is_empty() {
        &candidate.error_detail
    } else if !candidate.error.is_empty() {
        &candidate.error
    } else {
        "the binding resolves to no credential"
    }
}

/// Whether `binding` has a candidate for a caller of routing group `group` that resolved
/// to a credential: what `/v1/models` lists.
pub fn serves(binding: &BindingSnapshot, group: &str) -> bool {
    binding
        .candidates
        .iter()
        .any(|c| eligible(c, group) && resolved(c))
}

/// Why `binding` serves no caller of `group`, when it does not: the first active
/// candidate's problem (a disabled binding is deliberate, so it is named only when every
/// candidate is disabled).
pub fn not_configured(binding: &BindingSnapshot, group: &str) -> Option<NotConfigured> {
    if serves(binding, group) {
        return None;
    }
    let mut eligible_candidates = binding.candidates.iter().filter(|c| eligible(c, group));
    let candidate = eligible_candidates
        .clone()
        .find(|c| c.status == "active")
        .or_else(|| eligible_candidates.next())?;
    Some(NotConfigured {
        namespace: binding.namespace.clone(),
        public_model: binding.public_model.clone(),
        binding_id: candidate.binding_id,
        problem: bounded(candidate_problem(candidate), PROBLEM_CHARS),
    })
}

/// `text` cut to `chars` characters, marked with `…` when cut.
fn bounded(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The routes of `loaded` that an active binding's candidate leaves without a credential,
/// each with its first such candidate, except those whose candidates are unchanged from
/// `previous`.
pub fn newly_unresolved<'a>(
    previous: &'a HashMap<String, BindingSnapshot>,
    loaded: &'a HashMap<String, BindingSnapshot>,
) -> impl Iterator<Item = (&'a str, &'a BindingSnapshot, &'a CandidateSnapshot)> {
    loaded.iter().filter_map(|(route, binding)| {
        let candidate = binding
            .candidates
            .iter()
            .find(|c| c.status == "active" && c.upstreams.is_empty())?;
        let unchanged = previous
            .get(route)
            .is_some_and(|p| p.candidates == binding.candidates);
        (!unchanged).then_some((route.as_str(), binding, candidate))
    })
}

/// Logs, once per change, each route that a candidate of an active binding leaves
/// without a credential: called when a routing part is loaded, with the entries it
/// replaces, so a periodic reload of an unchanged route stays quiet and a request never
/// logs it.
pub fn warn_unresolved(
    previous: &HashMap<String, BindingSnapshot>,
    loaded: &HashMap<String, BindingSnapshot>,
) {
    for (route, binding, candidate) in newly_unresolved(previous, loaded) {
        tracing::warn!(
            route,
            binding_id = candidate.binding_id,
            group_id = candidate.group_id,
            serving = binding.candidates.iter().any(resolved),
            problem = bounded(candidate_problem(candidate), PROBLEM_CHARS),
            "a binding of this route resolves to no upstream credential"
        );
    }
}

/// The (namespace, public model) a request names: `X-EZ-Namespace` when given (it must be
/// one of the key's), else a `namespace.` prefix the key may use (`gpt-4.1` stays a model
/// name), else the key's default namespace.
pub fn split_model<'a>(
    model: &'a str,
    key: &'a TokenSnapshot,
    header_namespace: Option<&'a str>,
) -> Result<(&'a str, &'a str), RouteError> {
    if let Some(ns) = header_namespace {
        if !key.namespaces.iter().any(|n| n == ns) {
            return Err(RouteError::NamespaceNotAllowed(ns.to_owned()));
        }
        return Ok((ns, model));
    }
    if let Some((prefix, rest)) = model.split_once('.')
        && !rest.is_empty()
        && key.namespaces.iter().any(|n| n == prefix)
    {
        return Ok((prefix, rest));
    }
    Ok((key.default_namespace.as_str(), model))
}

/// The caller's routing group: the key's, else its master's. (The control plane writes
/// the master's group into each of its keys' entries — keys have no group of their own —
/// so the master is looked up only for an entry without one.)
pub fn caller_group<'a>(key: &'a TokenSnapshot, masters: &'a HashMap<i64, MasterSnapshot>) -> &'a str {
    if key.group.is_empty() {
        masters.get(&key.master_id).map_or("", |m| m.group.as_str())
    } else {
        key.group.as_str()
    }
}

/// Whether `candidate` may serve a caller of routing group `group` (a string compare,
/// no allocation).
pub fn eligible(candidate: &CandidateSnapshot, group: &str) -> bool {
    candidate.route_group.is_empty() || candidate.route_group == group
}

/// Whether `binding` has a candidate for a caller of routing group `group`.
pub fn reachable(binding: &BindingSnapshot, group: &str) -> bool {
    binding.candidates.iter().any(|c| eligible(c, group))
}

/// The binding of `namespace.public_model`, if it has a candidate for `group`; a route
/// reserved for other groups is not found, like one that does not exist. A route whose
/// candidates for `group` resolve to no credential is [`RouteError::NotConfigured`].
pub fn binding<'s>(
    snapshot: &'s Snapshot,
    namespace: &str,
    public_model: &str,
    group: &str,
) -> Result<&'s BindingSnapshot, RouteError> {
    let key = route_key(namespace, public_model);
    match snapshot.bindings.get(&key) {
        Some(binding) if reachable(binding, group) => match not_configured(binding, group) {
            None => Ok(binding),
            Some(why) => Err(RouteError::NotConfigured(why)),
        },
        _ => Err(RouteError::ModelNotFound(key)),
    }
}

/// Whether a credential of the binding's candidates eligible for `group` speaks the
/// request's format. A binding with no credential at all is "no upstream", not a format
/// mismatch (true).
pub fn serves_format(
    snapshot: &Snapshot,
    binding: &BindingSnapshot,
    group: &str,
    speaks: &impl Fn(&ProviderSnapshot) -> bool,
) -> bool {
    let mut any = false;
    for candidate in binding.candidates.iter().filter(|c| eligible(c, group)) {
        for id in candidate.upstreams.keys() {
            let provider = id.parse().ok().and_then(|id: i64| snapshot.providers.get(&id));
            match provider {
                Some(p) if speaks(p) => return true,
                Some(_) => any = true,
                None => {}
            }
        }
    }
    !any
}

/// A credential usable now: active and not banned.
pub fn usable(provider: &ProviderSnapshot, now: i64) -> bool {
    provider.status == "active" && provider.ban_until <= now
}

/// The chosen upstream: credential and the model to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub credential_id: i64,
    pub upstream_model: String,
}

fn weighted<T>(items: &[(T, i64)], rng: &mut impl Rng) -> Option<usize> {
    let total: i64 = items.iter().map(|(_, w)| (*w).max(1)).sum();
    if total <= 0 {
        return None;
    }
    let mut roll = rng.gen_range(0..total);
    for (i, (_, w)) in items.iter().enumerate() {
        let w = (*w).max(1);
        if roll < w {
            return Some(i);
        }
        roll -= w;
    }
    None
}

/// A usable upstream of a candidate: (credential id, upstream model) and its weight.
type Weighted = ((i64, String), i64);

/// Picks a candidate group eligible for the caller's routing `group` by weight, then one
/// of its usable credentials by weight, among those `accept` lets through (not tried yet,
/// not banned locally, speaking the request's format).
pub fn pick(
    snapshot: &Snapshot,
    binding: &BindingSnapshot,
    group: &str,
    now: i64,
    rng: &mut impl Rng,
    accept: impl Fn(i64, &ProviderSnapshot) -> bool,
) -> Option<Pick> {
    let usable_upstreams = |c: &CandidateSnapshot| -> Vec<Weighted> {
        c.upstreams
            .iter()
            .filter_map(|(id, model)| {
                let id: i64 = id.parse().ok()?;
                let provider = snapshot.providers.get(&id)?;
                (usable(provider, now) && accept(id, provider))
                    .then(|| ((id, model.clone()), provider.weight))
            })
            .collect()
    };
    let candidates: Vec<(Vec<Weighted>, i64)> = binding
        .candidates
        .iter()
        .filter(|c| c.status == "active" && eligible(c, group))
        .map(|c| (usable_upstreams(c), c.weight))
        .filter(|(ups, _)| !ups.is_empty())
        .collect();
    let chosen = weighted(&candidates, rng)?;
    let upstreams = &candidates[chosen].0;
    let (credential_id, upstream_model) = upstreams[weighted(upstreams, rng)?].0.clone();
    Some(Pick {
        credential_id,
        upstream_model,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use ez_contract::snapshot::{KeyStatus, MasterStatus};
    use rand::SeedableRng;

    use super::*;

    fn key(namespaces: &[&str]) -> TokenSnapshot {
        TokenSnapshot {
            key_id: 1,
            master_id: 1,
            issued_at_epoch: 1,
            status: KeyStatus::Active,
            group: "default".into(),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            default_namespace: namespaces[0].into(),
            allow_ips: vec![],
            deny_ips: vec![],
            expires_at: None,
            qps: 0,
            version: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn model_names_and_namespaces() {
        let k = key(&["default", "team"]);
        assert_eq!(split_model("gpt-4o", &k, None), Ok(("default", "gpt-4o")));
        assert_eq!(split_model("team.gpt-4o", &k, None), Ok(("team", "gpt-4o")));
        assert_eq!(
            split_model("gpt-4.1", &k, None),
            Ok(("default", "gpt-4.1")),
            "a dot in a model name stays"
        );
        assert_eq!(
            split_model("other.gpt-4o", &k, None),
            Ok(("default", "other.gpt-4o")),
            "not the key's namespace"
        );
        assert_eq!(split_model("gpt-4o", &k, Some("team")), Ok(("team", "gpt-4o")));
        assert_eq!(
            split_model("gpt-4o", &k, Some("other")),
            Err(RouteError::NamespaceNotAllowed("other".into()))
        );
    }

    fn provider(id: i64, weight: i64, status: &str, ban_until: i64) -> ProviderSnapshot {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": format!("g#{id}"), "type": "openai", "base_url": "http://x", "api_key": "k",
            "google_project": "", "google_location": "", "group_id": 1, "group": "default", "models": ["m"],
            "status": status, "auto_ban": true, "weight": weight, "ban_until": ban_until, "ban_reason": "",
            "access_token": "", "refresh_token": "", "expires_at": 0, "account_id": "", "project_id": "",
            "static_headers": {}, "headers_profile": ""
        }))
        .unwrap()
    }

    fn candidate(weight: i64, ids: &[i64]) -> CandidateSnapshot {
        CandidateSnapshot {
            binding_id: 1,
            group_id: 1,
            route_group: "default".into(),
            weight,
            selector_type: "exact".into(),
            selector_value: String::new(),
            status: "active".into(),
            error: String::new(),
            error_detail: String::new(),
            upstreams: ids
                .iter()
                .map(|id| (id.to_string(), format!("m{id}")))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn picks_follow_weights_and_skip_unusable_credentials() {
        let snapshot = Snapshot {
            providers: std::sync::Arc::new(HashMap::from([
                (1, provider(1, 3, "active", 0)),
                (2, provider(2, 1, "active", 0)),
                (3, provider(3, 1, "auto_disabled", 0)),
                (4, provider(4, 1, "active", i64::MAX)),
            ])),
            ..Snapshot::default()
        };
        let binding = BindingSnapshot {
            namespace: "default".into(),
            public_model: "m".into(),
            status: "active".into(),
            updated_at: 0,
            candidates: vec![candidate(1, &[1, 2, 3, 4])],
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = HashMap::new();
        for _ in 0..4000 {
            let p = pick(&snapshot, &binding, "default", 100, &mut rng, |_, _| true).unwrap();
            *counts.entry(p.credential_id).or_insert(0) += 1;
        }
        assert!(
            !counts.contains_key(&3) && !counts.contains_key(&4),
            "disabled and banned are skipped: {counts:?}"
        );
        let ratio = f64::from(counts[&1]) / f64::from(counts[&2]);
        assert!((2.5..3.5).contains(&ratio), "weights 3:1, got {counts:?}");
        let tried = HashSet::from([1, 2]);
        assert_eq!(
            pick(&snapshot, &binding, "default", 100, &mut rng, |id, _| !tried
                .contains(&id)),
            None,
            "nothing left after failover"
        );
        assert_eq!(
            pick(&snapshot, &binding, "default", 100, &mut rng, |id, _| id != 1)
                .unwrap()
                .credential_id,
            2
        );
    }

    fn grouped(route_group: &str, ids: &[i64]) -> CandidateSnapshot {
        CandidateSnapshot {
            route_group: route_group.into(),
            ..candidate(1, ids)
        }
    }

    #[test]
    fn routing_groups_decide_which_candidates_a_caller_reaches() {
        let snapshot = Snapshot {
            providers: std::sync::Arc::new(HashMap::from([
                (1, provider(1, 1, "active", 0)),
                (2, provider(2, 1, "active", 0)),
                (3, provider(3, 1, "active", 0)),
            ])),
            bindings: std::sync::Arc::new(HashMap::from([(
                "default.m".to_owned(),
                BindingSnapshot {
                    namespace: "default".into(),
                    public_model: "m".into(),
                    status: "active".into(),
                    updated_at: 0,
                    candidates: vec![grouped("a", &[1]), grouped("b", &[2])],
                },
            )])),
            ..Snapshot::default()
        };
        let binding = &snapshot.bindings["default.m"];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..50 {
            let a = pick(&snapshot, binding, "a", 100, &mut rng, |_, _| true).unwrap();
            assert_eq!(a.credential_id, 1);
            let b = pick(&snapshot, binding, "b", 100, &mut rng, |_, _| true).unwrap();
            assert_eq!(b.credential_id, 2);
        }
        assert_eq!(pick(&snapshot, binding, "c", 100, &mut rng, |_, _| true), None);
        assert!(binding_of(&snapshot, "a").is_ok());
        assert_eq!(
            binding_of(&snapshot, "c"),
            Err(RouteError::ModelNotFound("default.m".into())),
            "a route reserved for other groups does not exist for the caller"
        );
        assert!(!serves_format(&snapshot, binding, "a", &|p| p.id != 1));
        assert!(serves_format(&snapshot, binding, "b", &|p| p.id != 1));

        // An empty route group serves every caller.
        let open = BindingSnapshot {
            candidates: vec![grouped("", &[3])],
            ..binding.clone()
        };
        let p = pick(&snapshot, &open, "c", 100, &mut rng, |_, _| true).unwrap();
        assert_eq!(p.credential_id, 3);
        assert!(reachable(&open, "anything"));
    }

    fn unresolved(route_group: &str, error: &str, detail: &str) -> CandidateSnapshot {
        CandidateSnapshot {
            binding_id: 9,
            error: error.into(),
            error_detail: detail.into(),
            ..grouped(route_group, &[])
        }
    }

    fn route(candidates: Vec<CandidateSnapshot>) -> BindingSnapshot {
        BindingSnapshot {
            namespace: "default".into(),
            public_model: "m".into(),
            status: "active".into(),
            updated_at: 0,
            candidates,
        }
    }

    #[test]
    fn a_route_without_a_resolved_candidate_is_not_configured_for_its_callers() {
        let snapshot = Snapshot {
            providers: std::sync::Arc::new(HashMap::from([(1, provider(1, 1, "active", i64::MAX))])),
            bindings: std::sync::Arc::new(HashMap::from([(
                "default.m".to_owned(),
                route(vec![
                    grouped("a", &[1]),
                    unresolved("b", "no_provider", "no model of group `g` equals `m`"),
                ]),
            )])),
            ..Snapshot::default()
        };
        // Banned is not unconfigured: the pick finds nothing, the route is served.
        let a = binding_of(&snapshot, "a").unwrap();
        assert!(serves(a, "a"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert_eq!(pick(&snapshot, a, "a", 100, &mut rng, |_, _| true), None);

        let Err(RouteError::NotConfigured(why)) = binding_of(&snapshot, "b") else {
            panic!("group b reaches only the unresolved candidate");
        };
        assert_eq!(why.binding_id, 9);
        assert_eq!(
            why.to_string(),
            "model `m` in namespace `default` has no upstream: no model of group `g` equals `m`; \
             see GET /admin/bindings/9"
        );
        assert!(!serves(&snapshot.bindings["default.m"], "b"));
        assert_eq!(
            binding_of(&snapshot, "c"),
            Err(RouteError::ModelNotFound("default.m".into()))
        );
    }

    #[test]
    fn the_problem_told_is_the_active_candidates_bounded() {
        let long = "x".repeat(PROBLEM_CHARS + 50);
        let mut disabled = grouped("", &[1]);
        disabled.status = "disabled".into();
        disabled.binding_id = 3;
        let broken = route(vec![disabled.clone(), unresolved("", "config_error", &long)]);
        let why = not_configured(&broken, "g").unwrap();
        assert_eq!(
            why.binding_id, 9,
            "a disabled binding is deliberate: not the one named"
        );
        assert_eq!(why.problem.chars().count(), PROBLEM_CHARS + 1);
        assert!(why.problem.ends_with('…'));

        let off = route(vec![disabled]);
        let why = not_configured(&off, "g").unwrap();
        assert!(why.problem.contains("disabled"), "{why:?}");
        assert_eq!(why.binding_id, 3);

        // An entry written before candidates carried error details or binding ids.
        let old = route(vec![unresolved("", "no_provider", "")]);
        let why = NotConfigured {
            binding_id: 0,
            ..not_configured(&old, "g").unwrap()
        };
        assert!(
            why.to_string()
                .ends_with("has no upstream: no_provider; see GET /admin/bindings")
        );
    }

    #[test]
    fn an_unresolved_route_is_reported_once_per_change() {
        let broken = route(vec![
            grouped("", &[1]),
            unresolved("", "no_provider", "nothing matches"),
        ]);
        let fine = route(vec![grouped("", &[1])]);
        let mut off = unresolved("", "", "");
        off.status = "disabled".into();
        let disabled = route(vec![off]);
        let loaded = HashMap::from([
            ("default.broken".to_owned(), broken.clone()),
            ("default.fine".to_owned(), fine),
            ("default.off".to_owned(), disabled),
        ]);
        let reported = |previous: &HashMap<String, BindingSnapshot>| -> Vec<String> {
            newly_unresolved(previous, &loaded)
                .map(|(route, _, c)| format!("{route}: {}", candidate_problem(c)))
                .collect()
        };
        assert_eq!(reported(&HashMap::new()), vec!["default.broken: nothing matches"]);
        let mut same = loaded.clone();
        same.get_mut("default.broken").unwrap().updated_at = 99;
        assert!(
            reported(&same).is_empty(),
            "an unchanged route is not reported again"
        );
        let mut changed = loaded.clone();
        changed.get_mut("default.broken").unwrap().candidates[1].error_detail = "before".into();
        assert_eq!(reported(&changed).len(), 1);
    }

    fn binding_of<'s>(snapshot: &'s Snapshot, group: &str) -> Result<&'s BindingSnapshot, RouteError> {
        binding(snapshot, "default", "m", group)
    }

    #[test]
    fn the_callers_group_is_the_keys_else_the_masters() {
        let master = MasterSnapshot {
            id: 1,
            status: MasterStatus::Active,
            epoch: 1,
            group: "vip".into(),
            global_qps: 0,
            namespaces: vec!["default".into()],
            default_namespace: "default".into(),
            version: 0,
            updated_at: 0,
        };
        let masters = HashMap::from([(1, master)]);
        let mut k = key(&["default"]);
        k.group = "a".into();
        assert_eq!(caller_group(&k, &masters), "a");
        k.group = String::new();
        assert_eq!(caller_group(&k, &masters), "vip");
        assert_eq!(caller_group(&k, &HashMap::new()), "");
    }
}
