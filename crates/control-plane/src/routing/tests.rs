use std::collections::{BTreeMap, HashMap};

use ez_contract::SecretToken;

use super::*;

fn group(id: i64, models: &[&str]) -> ProviderGroup {
    ProviderGroup {
        id,
        name: format!("g{id}"),
        provider_type: "openai".into(),
        base_url: String::new(),
        google_project: String::new(),
        google_location: String::new(),
        models: models.iter().map(|m| m.to_string()).collect(),
        status: ACTIVE.into(),
        static_headers: BTreeMap::new(),
        headers_profile: String::new(),
        route_group: "default".into(),
        health_check: "off".into(),
        created_at: 0,
        updated_at: 0,
    }
}

fn key(id: i64, group_id: i64) -> ApiKey {
    ApiKey {
        id,
        group_id,
        api_key: SecretToken::from_plaintext(format!("sk-upstream-{id}")),
        weight: 1,
        status: ACTIVE.into(),
        auto_ban: true,
        ban_reason: String::new(),
        ban_until: None,
        access_token: SecretToken::from_plaintext(""),
        refresh_token: SecretToken::from_plaintext(""),
        expires_at: None,
        account_id: String::new(),
        project_id: String::new(),
        models: vec![],
        revision: 0,
        created_at: 0,
        updated_at: 0,
        cooling_until: None,
        health: Default::default(),
    }
}

fn binding(id: i64, group_id: i64, selector_type: &str, selector_value: &str, weight: i64) -> Binding {
    Binding {
        id,
        namespace: "default".into(),
        public_model: "gpt-4o".into(),
        group_id,
        weight,
        selector_type: selector_type.into(),
        selector_value: selector_value.into(),
        status: ACTIVE.into(),
        created_at: 0,
        updated_at: 0,
    }
}

fn upstreams(pairs: &[(i64, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(id, m)| (id.to_string(), m.to_string()))
        .collect()
}

#[test]
fn candidate_resolution_table() {
    let g = group(1, &["gpt-4o", "gpt-4o-mini", "openai/GPT-4.1"]);
    let mut own_models = key(12, 1);
    own_models.models = vec!["gpt-4o-2024-08-06".into()];
    let mut disabled = key(13, 1);
    disabled.status = "manual_disabled".into();
    let keys = vec![key(11, 1), own_models, disabled];

    let cases: Vec<(&str, Binding, &str, BTreeMap<String, String>)> = vec![
        (
            "exact on the public model",
            binding(1, 1, "exact", "", 1),
            "ok",
            upstreams(&[(11, "gpt-4o")]),
        ),
        (
            "regex resolves per credential (own model list)",
            binding(1, 1, "regex", "^gpt-4o", 1),
            "config_error",
            upstreams(&[(12, "gpt-4o-2024-08-06")]),
        ),
        (
            "regex with one hit",
            binding(1, 1, "regex", "mini", 1),
            "ok",
            upstreams(&[(11, "gpt-4o-mini")]),
        ),
        (
            "normalize_exact",
            binding(1, 1, "normalize_exact", "gpt-4.1", 1),
            "ok",
            upstreams(&[(11, "openai/GPT-4.1")]),
        ),
        (
            "nothing matches",
            binding(1, 1, "exact", "claude", 1),
            "no_provider",
            upstreams(&[]),
        ),
        (
            "invalid regex",
            binding(1, 1, "regex", "gpt-(", 1),
            "config_error",
            upstreams(&[]),
        ),
        (
            "unknown selector type",
            binding(1, 1, "fuzzy", "", 1),
            "config_error",
            upstreams(&[]),
        ),
    ];
    for (name, b, status, expected) in cases {
        let r = resolve_candidate(&b, Some(&g), &keys);
        // "ok" with problems is reported as ok: some credentials route.
        let expected_status = if expected.is_empty() { status } else { "ok" };
        assert_eq!(r.status, expected_status, "case: {name}: {r:?}");
        assert_eq!(r.upstreams, expected, "case: {name}");
        if status == "config_error" {
            assert!(
                !r.problems.is_empty(),
                "case {name}: a config error explains itself"
            );
        }
        assert!(
            !r.upstreams.contains_key("13"),
            "case {name}: disabled credentials never route"
        );
    }
}

#[test]
fn weighted_candidates_and_routes_that_resolve_to_nothing() {
    let groups: HashMap<i64, ProviderGroup> = [
        (1, group(1, &["gpt-4o"])),
        (2, group(2, &["gpt-4o"])),
        (3, group(3, &["llama"])),
    ]
    .into();
    let mut disabled_group = group(4, &["gpt-4o"]);
    disabled_group.status = "disabled".into();
    let mut groups = groups;
    groups.insert(4, disabled_group);
    let keys: HashMap<i64, Vec<ApiKey>> = [
        (1, vec![key(10, 1), key(11, 1)]),
        (2, vec![key(20, 2)]),
        (3, vec![key(30, 3)]),
        (4, vec![key(40, 4)]),
    ]
    .into();

    let (b1, b2, b3, b4) = (
        binding(1, 1, "exact", "", 3),
        binding(2, 2, "exact", "", 1),
        binding(3, 3, "exact", "", 5),
        binding(4, 4, "exact", "", 1),
    );
    let snap = binding_snapshot(&[&b1, &b2, &b3, &b4], &groups, &keys, 42).unwrap();
    assert_eq!(snap.namespace, "default");
    assert_eq!(snap.public_model, "gpt-4o");
    assert_eq!(snap.status, "active");
    assert_eq!(snap.updated_at, 42);
    let weights: Vec<i64> = snap.candidates.iter().map(|c| c.weight).collect();
    assert_eq!(
        weights,
        vec![3, 1, 5, 1],
        "each bound group is a weighted candidate"
    );
    assert_eq!(
        snap.candidates[0].upstreams,
        upstreams(&[(10, "gpt-4o"), (11, "gpt-4o")])
    );
    assert_eq!(snap.candidates[1].upstreams, upstreams(&[(20, "gpt-4o")]));
    assert_eq!(snap.candidates[2].error, "no_provider");
    assert!(snap.candidates[2].upstreams.is_empty());
    assert_eq!(
        snap.candidates[3].error, "no_provider",
        "a disabled group routes nothing"
    );
    assert!(snap.candidates[3].error_detail.contains("disabled"));

    // A route whose every candidate resolves to nothing is still written, with errors.
    let only_broken = binding(5, 3, "exact", "", 1);
    let snap = binding_snapshot(&[&only_broken], &groups, &keys, 42).unwrap();
    assert_eq!(snap.candidates.len(), 1);
    assert_eq!(snap.candidates[0].error, "no_provider");

    // A disabled binding keeps its candidate but routes nothing.
    let mut off = binding(6, 1, "exact", "", 1);
    off.status = "disabled".into();
    let snap = binding_snapshot(&[&off], &groups, &keys, 42).unwrap();
    assert_eq!(snap.status, "disabled");
    assert!(snap.candidates[0].upstreams.is_empty());

    assert!(binding_snapshot(&[], &groups, &keys, 42).is_none());
}

#[test]
fn provider_snapshots_use_the_official_endpoint_and_name_group_hash_id() {
    let mut g = group(7, &["m"]);
    g.name = "pg1".into();
    g.route_group = "vip".into();
    let k = key(42, 7);
    let snap = provider_snapshot(&g, &k);
    assert_eq!(snap.name, "pg1#42");
    assert_eq!(snap.base_url, "https://api.openai.com/v1");
    assert_eq!(snap.group, "vip");
    assert_eq!(snap.group_id, 7);
    assert_eq!(snap.api_key, "sk-upstream-42");
    assert_eq!(snap.status, "active");
    g.status = "disabled".into();
    assert_eq!(provider_snapshot(&g, &k).status, "manual_disabled");
}

#[test]
fn provider_snapshots_carry_the_cooling_apart_from_the_ban() {
    let g = group(7, &["m"]);
    let mut k = key(42, 7);
    assert_eq!(provider_snapshot(&g, &k).cooling_until, 0, "not cooling");
    k.cooling_until = Some(1_900_000_000);
    let snap = provider_snapshot(&g, &k);
    assert_eq!(snap.cooling_until, 1_900_000_000);
    assert_eq!(
        (snap.ban_until, snap.status.as_str()),
        (0, "active"),
        "cooling is no ban"
    );
}

/// Name, group, credentials, binding, expected status, words the problems must contain.
type CauseCase<'a> = (
    &'a str,
    Option<&'a ProviderGroup>,
    Vec<ApiKey>,
    Binding,
    &'a str,
    &'a [&'a str],
);

#[test]
fn every_unresolved_candidate_says_why_and_how_to_fix_it() {
    let mut vllm = group(1, &["llama-3.3-70b-instruct"]);
    vllm.name = "vllm".into();
    let mut disabled_group = vllm.clone();
    disabled_group.status = "disabled".into();
    let mut no_models = vllm.clone();
    no_models.models = vec![];
    let mut off = key(11, 1);
    off.status = "manual_disabled".into();
    let mut banned_by_admin = key(12, 1);
    banned_by_admin.status = "auto_disabled".into();
    let mut twins = vllm.clone();
    twins.models = vec!["a/Llama".into(), "b/llama".into()];

    let llama = |selector_type: &str, value: &str| Binding {
        public_model: "llama".into(),
        ..binding(7, 1, selector_type, value, 1)
    };
    let cases: Vec<CauseCase> = vec![
        (
            "the group does not exist",
            None,
            vec![key(11, 1)],
            llama("exact", ""),
            "config_error",
            &["provider group 1 does not exist"],
        ),
        (
            "an unknown selector type",
            Some(&vllm),
            vec![key(11, 1)],
            llama("fuzzy", ""),
            "config_error",
            &["fuzzy", "exact, regex or normalize_exact"],
        ),
        (
            "the group is disabled",
            Some(&disabled_group),
            vec![key(11, 1)],
            llama("exact", "llama-3.3-70b-instruct"),
            "no_provider",
            &["`vllm` is disabled", "PUT /admin/provider-groups/1"],
        ),
        (
            "the group has no credentials",
            Some(&vllm),
            vec![key(20, 2)],
            llama("exact", "llama-3.3-70b-instruct"),
            "no_provider",
            &["`vllm` has no credentials", "POST /admin/api-keys"],
        ),
        (
            "no credential is active",
            Some(&vllm),
            vec![off.clone(), banned_by_admin.clone()],
            llama("exact", "llama-3.3-70b-instruct"),
            "no_provider",
            &[
                "none of the 2 credentials",
                "auto_disabled, manual_disabled",
                "PUT /admin/api-keys/",
            ],
        ),
        (
            "the group lists no models",
            Some(&no_models),
            vec![key(11, 1)],
            llama("exact", ""),
            "no_provider",
            &["`vllm` lists no models", "`models`"],
        ),
        (
            "exact misses",
            Some(&vllm),
            vec![key(11, 1)],
            llama("exact", ""),
            "no_provider",
            &[
                "no model of group `vllm` equals `llama`",
                "set `selector_value`",
                "`normalize_exact` or `regex`",
                "its models: llama-3.3-70b-instruct",
            ],
        ),
        (
            "normalize_exact misses",
            Some(&vllm),
            vec![key(11, 1)],
            llama("normalize_exact", ""),
            "no_provider",
            &["equals `llama` once lower-cased", "llama-3.3-70b-instruct"],
        ),
        (
            "regex misses",
            Some(&vllm),
            vec![key(11, 1)],
            llama("regex", "^mistral"),
            "no_provider",
            &["matches the regex `^mistral`", "llama-3.3-70b-instruct"],
        ),
        (
            "several models match",
            Some(&twins),
            vec![key(11, 1)],
            llama("normalize_exact", ""),
            "config_error",
            &["credential 11", "several models", "a/Llama, b/llama"],
        ),
        (
            "the regex is invalid",
            Some(&vllm),
            vec![key(11, 1)],
            llama("regex", "llama-("),
            "config_error",
            &[
                "invalid regex `llama-(`",
                "fix `selector_value`",
                "unclosed group",
            ],
        ),
    ];
    for (name, group, keys, binding, status, words) in cases {
        let r = resolve_candidate(&binding, group, &keys);
        assert_eq!(r.status, status, "case {name}: {r:?}");
        assert!(r.upstreams.is_empty(), "case {name}: {r:?}");
        let problems = r.problems.join("\n");
        for word in words {
            assert!(
                problems.contains(word),
                "case {name}: {word:?} not in {problems:?}"
            );
        }
    }
}

#[test]
fn a_miss_lists_at_most_twenty_models() {
    let names: Vec<String> = (0..30).map(|i| format!("model-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = group(1, &refs);
    let r = resolve_candidate(&binding(1, 1, "exact", "", 1), Some(&g), &[key(11, 1)]);
    assert_eq!(r.status, "no_provider");
    let problem = &r.problems[0];
    assert!(
        problem.contains("model-00") && problem.contains("model-19"),
        "{problem}"
    );
    assert!(!problem.contains("model-20"), "{problem}");
    assert!(problem.contains("(and 10 more)"), "{problem}");
}

/// Whatever the group, its credentials and the selector: a candidate is `ok` exactly when
/// it has upstreams, and explains itself whenever it is not.
#[test]
fn problems_are_never_empty_when_a_candidate_is_not_ok() {
    let model_lists: [&[&str]; 4] = [
        &[],
        &["gpt-4o"],
        &["gpt-4o", "gpt-4o-mini", "openai/GPT-4o"],
        &["llama-3.3-70b-instruct"],
    ];
    let key_sets = |gid: i64| -> Vec<Vec<ApiKey>> {
        let mut off = key(12, gid);
        off.status = "manual_disabled".into();
        let mut own = key(13, gid);
        own.models = vec!["gpt-4o-2024-08-06".into(), "gpt-4o".into()];
        vec![
            vec![],
            vec![off.clone()],
            vec![key(11, gid)],
            vec![key(11, gid), own, off],
        ]
    };
    let selectors = [
        ("exact", ""),
        ("exact", "gpt-4o"),
        ("exact", "GPT-4O"),
        ("regex", ""),
        ("regex", "^gpt-4o"),
        ("regex", "^gpt-4o$"),
        ("regex", "gpt-("),
        ("normalize_exact", ""),
        ("normalize_exact", "vendor/GPT-4O"),
        ("fuzzy", ""),
    ];
    let mut checked = 0;
    for models in model_lists {
        for group_status in [ACTIVE, "disabled"] {
            let mut g = group(1, models);
            g.status = group_status.into();
            for keys in key_sets(1) {
                for (kind, value) in selectors {
                    for g in [Some(&g), None] {
                        let r = resolve_candidate(&binding(1, 1, kind, value, 1), g, &keys);
                        let case = format!("{models:?} {group_status} {} keys {kind} {value:?}", keys.len());
                        assert_eq!(r.status == "ok", !r.upstreams.is_empty(), "{case}: {r:?}");
                        if r.status != "ok" {
                            assert!(!r.problems.is_empty(), "{case}: {r:?}");
                            assert!(r.problems.iter().all(|p| !p.trim().is_empty()), "{case}: {r:?}");
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 4 * 2 * 4 * 10 * 2);
}
