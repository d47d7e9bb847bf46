//! Bad input on the routing-configuration endpoints (provider groups, upstream
//! credentials, the preset/custom shortcuts, bindings, the model registry, the sync
//! outbox): a 4xx in the error envelope, never a 500, nothing changes, and no upstream
//! secret the request carried comes back.
//!
//! Each test builds a small routing configuration ([`Fixture`]), takes a
//! [`routing_snapshot`] (the API's view of masters, keys, namespaces, groups,
//! credentials, bindings, models and outbox, plus the `auth:*`, `config:providers`,
//! `config:bindings` and `meta:models` hashes of the bus), sends tables of bad requests
//! through a [`Probe`] — which records every wrong answer instead of stopping at the first —
//! and checks that the snapshot is unchanged and that no response body and no log line
//! carries one of the upstream secrets the requests sent.
//!
//! Rows are written `("METHOD /path", credential, body, status, "code")`; the tables are
//! exempt from rustfmt so that one request stays one line.

use std::collections::BTreeMap;

use ez_contract::bus_keys;
use ez_contract::time::now_unix;
use ez_control_plane::auth::jwt::{Claims, JwtKeys, Role};
use ez_control_plane::testing::Backend;
use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, TestApp, captured_logs};
use crate::probe_support::*;

both_backends!(
    unknown_provider_type_is_422,
    malformed_json_changes_nothing,
    wrong_content_type_is_415,
    wrong_types_and_unknown_fields_are_400,
    provider_group_rules_are_enforced,
    api_key_rules_are_enforced,
    shortcut_rules_are_enforced,
    binding_rules_are_enforced,
    model_override_rules_are_enforced,
    bad_pagination_filters_and_ids_are_rejected,
    missing_and_wrong_credentials_are_401,
    wrong_role_is_403,
    oversized_bodies_wrong_methods_and_routes,
    new_endpoints_are_documented,
    concurrent_duplicates_are_409,
);

// ---------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------

/// Upstream secrets sent in requests that must fail: none may come back in a response
/// body or reach a log line.
const UPSTREAM_KEY: &str = "sk-upstream-SECRET-0123456789";
const ACCESS_TOKEN: &str = "at-upstream-ACCESS-0123456789";
const REFRESH_TOKEN: &str = "rt-upstream-REFRESH-0123456789";
const SENT_SECRETS: [&str; 3] = [UPSTREAM_KEY, ACCESS_TOKEN, REFRESH_TOKEN];

/// The fixture's stored upstream secrets: on the bus (the data plane needs them), masked
/// in every response, never in a log line.
const FIXTURE_KEY: &str = "sk-fixture-KEEP-abcdef0123456789";
const FIXTURE_ACCESS: &str = "at-fixture-KEEP-abcdef0123456789";
const FIXTURE_REFRESH: &str = "rt-fixture-KEEP-abcdef0123456789";
const FIXTURE_SECRETS: [&str; 3] = [FIXTURE_KEY, FIXTURE_ACCESS, FIXTURE_REFRESH];

// ---------------------------------------------------------------------------------------
// Request plumbing
// ---------------------------------------------------------------------------------------

/// `base` with the fields of `patch` set (a `null` in `patch` sets `null`).
fn with(base: &Value, patch: &Value) -> Value {
    let mut out = base.clone();
    for (k, v) in patch.as_object().expect("patch is an object") {
        out[k.as_str()] = v.clone();
    }
    out
}

/// `base` without `field`.
fn without(base: &Value, field: &str) -> Value {
    let mut out = base.clone();
    out.as_object_mut().expect("object").remove(field);
    out
}

impl Probe<'_> {
    /// Fails the test with every wrong answer, if the state differs from `before`, if
    /// any response body carried an upstream secret (sent or stored), or if a log line or
    /// an admin list did.
    async fn finish_routing(self, before: &Value) {
        let after = routing_snapshot(self.app).await;
        let secrets: Vec<&str> = SENT_SECRETS.iter().chain(&FIXTURE_SECRETS).copied().collect();
        let mut failures = self.problems(before, &after, &secrets);
        let listed = after["api"].to_string();
        let logs = captured_logs();
        for secret in &secrets {
            if listed.contains(secret) {
                failures.push(format!("an admin list shows the upstream secret {secret:?}"));
            }
            if let Some(line) = logs.lines().find(|l| l.contains(secret)) {
                failures.push(format!(
                    "a log line carries the upstream secret {secret:?}: {}",
                    shorten(line)
                ));
            }
        }
        self.assert_none(&failures);
    }
}

/// A routing hash of the bus as a sorted map.
async fn bus_hash(app: &TestApp, key: &str) -> BTreeMap<String, String> {
    app.state
        .bus
        .hash_get_all(key)
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"))
        .into_iter()
        .collect()
}

/// Everything a rejected request could change: `state_snapshot()` (masters, keys,
/// namespaces, `auth:*`), the admin lists of the routing configuration, and the routing
/// hashes of the bus (the meta hashes by checksum: their version stamps are per write).
async fn routing_snapshot(app: &TestApp) -> Value {
    let mut api = serde_json::Map::new();
    for (name, path) in [
        ("groups", "/admin/provider-groups?page_size=500"),
        ("api_keys", "/admin/api-keys?page_size=500"),
        ("bindings", "/admin/bindings?page_size=500"),
        ("models", "/admin/models?page_size=500"),
        ("outbox", "/admin/sync/outbox?page_size=500"),
    ] {
        api.insert(name.to_owned(), app.admin_get(path).await.expect(200).body);
    }
    let mut meta = serde_json::Map::new();
    for key in [
        bus_keys::PROVIDERS_META,
        bus_keys::BINDINGS_META,
        bus_keys::MODELS_META,
    ] {
        let checksum = bus_hash(app, key).await.remove("checksum");
        meta.insert(key.to_owned(), json!(checksum));
    }
    json!({
        "state": app.state_snapshot().await,
        "api": api,
        "routing": {
            "providers": bus_hash(app, bus_keys::PROVIDERS).await,
            "bindings": bus_hash(app, bus_keys::BINDINGS).await,
            "models": bus_hash(app, bus_keys::MODELS).await,
            "meta": meta,
        },
    })
}

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

/// A small routing configuration and a tenant.
struct Fixture {
    /// `openai-main` (openai, models gpt-4o and gpt-4o-mini), bound twice.
    g: i64,
    /// `claude-sub` (claude-code, OAuth credentials).
    sub: i64,
    /// `spare` (compatible, no bindings: deletable).
    spare: i64,
    /// The api-key credential of `g`.
    k: i64,
    /// The OAuth credential of `sub`.
    sk: i64,
    /// `default.gpt-4o` → `g`.
    b: i64,
    /// `default.gpt-4o-mini` → `g`.
    b2: i64,
    /// A master key and one of its child keys (wrong roles for /admin).
    mk: String,
    key: String,
}

async fn created(app: &TestApp, path: &str, body: Value) -> i64 {
    app.admin_post(path, body).await.expect(201).id()
}

async fn fixture(app: &TestApp) -> Fixture {
    let groups = "/admin/provider-groups";
    let body = json!({ "name": "openai-main", "type": "openai", "models": ["gpt-4o", "gpt-4o-mini"] });
    let g = created(app, groups, body).await;
    let body = json!({ "name": "claude-sub", "type": "claude-code", "models": ["claude-sonnet-4-5"] });
    let sub = created(app, groups, body).await;
    let body = json!({
        "name": "spare", "type": "compatible", "base_url": "http://127.0.0.1:9/v1", "models": ["local-model"]
    });
    let spare = created(app, groups, body).await;
    let body = json!({ "group_id": g, "api_key": FIXTURE_KEY });
    let k = created(app, "/admin/api-keys", body).await;
    let body = json!({ "group_id": sub, "access_token": FIXTURE_ACCESS, "refresh_token": FIXTURE_REFRESH });
    let sk = created(app, "/admin/api-keys", body).await;
    let body = json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": g });
    let b = created(app, "/admin/bindings", body).await;
    let body = json!({ "namespace": "default", "public_model": "gpt-4o-mini", "group_id": g });
    let b2 = created(app, "/admin/bindings", body).await;
    let body = json!({ "name": "my-model", "kind": "chat", "context_window": 8192 });
    app.admin_post("/admin/models", body).await.expect(201);
    let (_, mk) = app.create_master(json!({ "name": "acme" })).await;
    let (_, key) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    Fixture {
        g,
        sub,
        spare,
        k,
        sk,
        b,
        b2,
        mk,
        key,
    }
}

/// Valid bodies of the creating endpoints (each one would succeed on the fixture).
fn group_body() -> Value {
    json!({ "name": "fresh", "type": "openai" })
}

fn api_key_body(group: i64) -> Value {
    json!({ "group_id": group, "api_key": UPSTREAM_KEY })
}

fn preset_body() -> Value {
    json!({ "preset": "anthropic", "api_keys": [UPSTREAM_KEY] })
}

fn custom_body() -> Value {
    json!({ "name": "fresh-custom", "base_url": "http://127.0.0.1:9/v1", "api_keys": [UPSTREAM_KEY] })
}

fn binding_body(group: i64) -> Value {
    json!({ "namespace": "default", "public_model": "fresh-model", "group_id": group })
}

fn model_body() -> Value {
    json!({ "name": "fresh-model", "kind": "chat" })
}

/// Every endpoint that reads a JSON body, with a valid body for it.
fn body_endpoints(f: &Fixture) -> Vec<(String, Value)> {
    vec![
        ("POST /admin/provider-groups".into(), group_body()),
        (
            format!("PUT /admin/provider-groups/{}", f.g),
            json!({ "status": "disabled" }),
        ),
        ("POST /admin/api-keys".into(), api_key_body(f.g)),
        (
            format!("PUT /admin/api-keys/{}", f.k),
            json!({ "api_key": UPSTREAM_KEY }),
        ),
        ("POST /admin/providers/preset".into(), preset_body()),
        ("POST /admin/providers/custom".into(), custom_body()),
        ("POST /admin/bindings".into(), binding_body(f.g)),
        (format!("PUT /admin/bindings/{}", f.b), json!({ "weight": 5 })),
        ("POST /admin/models".into(), model_body()),
        (
            "PUT /admin/models/my-model".into(),
            json!({ "kind": "embedding" }),
        ),
    ]
}

/// Every new endpoint, with a valid body (`Value::Null`: none); each would succeed with
/// the admin credential.
fn all_endpoints(f: &Fixture) -> Vec<(String, Value)> {
    let mut out = body_endpoints(f);
    out.extend([
        ("GET /admin/provider-groups".into(), Value::Null),
        (format!("GET /admin/provider-groups/{}", f.g), Value::Null),
        (format!("DELETE /admin/provider-groups/{}", f.spare), Value::Null),
        ("GET /admin/api-keys".into(), Value::Null),
        (format!("GET /admin/api-keys/{}", f.k), Value::Null),
        (format!("DELETE /admin/api-keys/{}", f.k), Value::Null),
        ("GET /admin/bindings".into(), Value::Null),
        (format!("GET /admin/bindings/{}", f.b), Value::Null),
        (format!("DELETE /admin/bindings/{}", f.b), Value::Null),
        ("GET /admin/models".into(), Value::Null),
        ("DELETE /admin/models/my-model".into(), Value::Null),
        ("GET /admin/sync/outbox".into(), Value::Null),
    ]);
    out
}

// ---------------------------------------------------------------------------------------
// Malformed bodies
// ---------------------------------------------------------------------------------------

async fn unknown_provider_type_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.state_snapshot().await;
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "g", "type": "openai2" }),
    )
    .await
    .expect_error(422, "unknown_provider_type");
    assert_eq!(app.state_snapshot().await, before);
}

/// Bodies that are not JSON, derived from a valid one: `(text, acceptable codes)`.
fn broken_json(valid: &Value) -> Vec<(String, &'static [&'static str])> {
    const SYNTAX: &[&str] = &["invalid_json"];
    const NOT_AN_OBJECT: &[&str] = &["invalid_body"];
    // Nesting bombs: rejected early or by the recursion limit, never a stack overflow.
    const DEEP: &[&str] = &["invalid_json", "invalid_body"];
    let text = valid.to_string();
    let key = valid.as_object().and_then(|o| o.keys().next()).expect("a field");
    let open = &text[..text.len() - 1];
    vec![
        (open.to_owned(), SYNTAX),
        (text[..text.len() / 2].to_owned(), SYNTAX),
        (format!("{{\"{key}\": "), SYNTAX),
        (format!("{open},}}"), SYNTAX),
        (format!("{text} trailing"), SYNTAX),
        (format!("{text}{text}"), SYNTAX),
        (format!("{{{key}: 1}}"), SYNTAX),
        (format!("{{'{key}': 1}}"), SYNTAX),
        (format!("{{\"{key}\": NaN}}"), SYNTAX),
        (format!("{{\"{key}\": Infinity}}"), SYNTAX),
        (format!("{{\"{key}\": \"\\ud800\"}}"), SYNTAX),
        (format!("{{\"{key}\": \"a\u{1}b\"}}"), SYNTAX),
        (format!("{{\"api_key\": \"{UPSTREAM_KEY}"), SYNTAX),
        (format!("\u{feff}{text}"), SYNTAX),
        (String::new(), SYNTAX),
        ("   ".into(), SYNTAX),
        ("not json".into(), SYNTAX),
        ("null".into(), NOT_AN_OBJECT),
        ("42".into(), NOT_AN_OBJECT),
        ("true".into(), NOT_AN_OBJECT),
        (format!("\"{UPSTREAM_KEY}\""), NOT_AN_OBJECT),
        ("[]".into(), NOT_AN_OBJECT),
        (format!("[{text}]"), NOT_AN_OBJECT),
        ("[".repeat(100_000) + &"]".repeat(100_000), DEEP),
        (format!("{{\"{key}\":{}", "[".repeat(100_000)), DEEP),
        ("{\"a\":".repeat(50_000) + "1" + &"}".repeat(50_000), DEEP),
    ]
}

async fn malformed_json_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    for (route, valid) in body_endpoints(&f) {
        for (text, codes) in broken_json(&valid) {
            probe.check(&route, &admin(), &raw_json(&text), 400, codes).await;
        }
    }

    // A JSON array holding the fields in declaration order is not an object either,
    // although serde's derived `Deserialize` would build the struct from it.
    let g = f.g;
    #[rustfmt::skip]
    let positional: Vec<(String, String)> = vec![
        ("POST /admin/provider-groups".into(), r#"["fresh", "openai"]"#.into()),
        ("POST /admin/api-keys".into(), format!(r#"[{g}, "{UPSTREAM_KEY}"]"#)),
        ("POST /admin/providers/preset".into(), format!(r#"["openai", ["{UPSTREAM_KEY}"]]"#)),
        ("POST /admin/providers/custom".into(), format!(r#"["c", "http://127.0.0.1:9/v1", ["{UPSTREAM_KEY}"]]"#)),
        ("POST /admin/bindings".into(), format!(r#"["default", "fresh-model", {g}]"#)),
        ("POST /admin/models".into(), r#"["fresh-model"]"#.into()),
        (format!("PUT /admin/bindings/{}", f.b), r#"["default"]"#.into()),
    ];
    for (route, text) in positional {
        probe
            .check(&route, &admin(), &raw_json(&text), 400, &["invalid_body"])
            .await;
    }

    probe.finish_routing(&before).await;
}

async fn wrong_content_type_is_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    let types = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("json"),
        Some("application/jsonp"),
    ];
    for (route, valid) in body_endpoints(&f) {
        for content_type in types {
            let body = Body::Raw(content_type, valid.to_string());
            probe
                .check(&route, &admin(), &body, 415, &["unsupported_media_type"])
                .await;
        }
        // No body at all on an endpoint that needs one.
        probe
            .check(&route, &admin(), &Body::None, 415, &["unsupported_media_type"])
            .await;
    }

    probe.finish_routing(&before).await;
}

// ---------------------------------------------------------------------------------------
// Schema: wrong JSON types, missing and unknown fields
// ---------------------------------------------------------------------------------------

/// The JSON type a field expects.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Float,
    Bool,
    StrList,
    IntList,
    StrMap,
}

/// Values of the wrong JSON type for a field of `kind`.
fn wrong_values(kind: Kind) -> Vec<Value> {
    match kind {
        Kind::Str => vec![json!(1), json!(true), json!(["x"]), json!({ "v": "x" })],
        Kind::Int => vec![json!("1"), json!(true), json!(1.5), json!([1]), json!({ "v": 1 })],
        Kind::Float => vec![json!("1.0"), json!(true), json!([1.0]), json!({})],
        Kind::Bool => vec![json!("true"), json!(1), json!([true]), json!({})],
        Kind::StrList => vec![
            json!("x"),
            json!(1),
            json!({ "a": "x" }),
            json!([1]),
            json!([null]),
            json!([["x"]]),
        ],
        Kind::IntList => vec![
            json!("1"),
            json!(1),
            json!([1.5]),
            json!(["1"]),
            json!([null]),
            json!({ "a": 1 }),
        ],
        Kind::StrMap => vec![
            json!("x"),
            json!(["a"]),
            json!({ "a": 1 }),
            json!({ "a": null }),
            json!({ "a": ["x"] }),
        ],
    }
}

/// One endpoint's schema: a valid body, its required fields and every field's type.
struct Schema {
    route: String,
    base: Value,
    required: &'static [&'static str],
    fields: Vec<(&'static str, Kind)>,
    /// Fields it does not have (read-only or misspelt), with a value.
    unknown: Vec<(&'static str, Value)>,
}

fn schemas(f: &Fixture) -> Vec<Schema> {
    use Kind::*;
    let group_fields = vec![
        ("name", Str),
        ("type", Str),
        ("base_url", Str),
        ("google_project", Str),
        ("google_location", Str),
        ("models", StrList),
        ("status", Str),
        ("static_headers", StrMap),
        ("headers_profile", Str),
        ("route_group", Str),
    ];
    let group_unknown = vec![
        ("id", json!(1)),
        ("created_at", json!(1)),
        ("provider_type", json!("openai")),
        ("Name", json!("fresh")),
        ("api_key", json!(UPSTREAM_KEY)),
        ("api_keys", json!([UPSTREAM_KEY])),
    ];
    let key_fields = vec![
        ("group_id", Int),
        ("api_key", Str),
        ("weight", Int),
        ("status", Str),
        ("auto_ban", Bool),
        ("ban_reason", Str),
        ("ban_until", Int),
        ("access_token", Str),
        ("refresh_token", Str),
        ("expires_at", Int),
        ("account_id", Str),
        ("project_id", Str),
        ("models", StrList),
    ];
    let key_unknown = vec![
        ("id", json!(1)),
        ("updated_at", json!(1)),
        ("apiKey", json!(UPSTREAM_KEY)),
        ("key", json!(UPSTREAM_KEY)),
        ("token", json!(ACCESS_TOKEN)),
        ("secret", json!(REFRESH_TOKEN)),
        ("group", json!("openai-main")),
    ];
    let binding_fields = vec![
        ("namespace", Str),
        ("public_model", Str),
        ("group_id", Int),
        ("weight", Int),
        ("selector_type", Str),
        ("selector_value", Str),
        ("status", Str),
    ];
    let binding_unknown = vec![
        ("id", json!(1)),
        ("group", json!("openai-main")),
        ("model", json!("gpt-4o")),
        ("resolution", json!({})),
        ("upstreams", json!({ "1": "gpt-4o" })),
    ];
    let model_fields = vec![
        ("provider", Str),
        ("kind", Str),
        ("context_window", Int),
        ("max_output_tokens", Int),
        ("supports_vision", Bool),
        ("supports_functions", Bool),
        ("supports_tool_choice", Bool),
        ("supports_fim", Bool),
        ("supports_reasoning", Bool),
        ("supports_json_output", Bool),
        ("input_price_per_mtok", Float),
        ("output_price_per_mtok", Float),
        ("embedding_dimensions", Int),
    ];
    let model_unknown = vec![
        ("aliases", json!(["m"])),
        ("source", json!("admin")),
        ("served_by", json!([])),
        ("override", json!({})),
        ("contextWindow", json!(8)),
    ];
    let mut model_create_fields = vec![("name", Str)];
    model_create_fields.extend(model_fields.iter().copied());
    let shortcut_unknown = vec![
        ("type", json!("openai")),
        ("api_key", json!(UPSTREAM_KEY)),
        ("keys", json!([UPSTREAM_KEY])),
        ("id", json!(1)),
    ];
    vec![
        Schema {
            route: "POST /admin/provider-groups".into(),
            base: group_body(),
            required: &["name", "type"],
            fields: group_fields.clone(),
            unknown: group_unknown.clone(),
        },
        Schema {
            route: format!("PUT /admin/provider-groups/{}", f.g),
            base: json!({ "status": "active" }),
            required: &[],
            fields: group_fields,
            unknown: group_unknown,
        },
        Schema {
            route: "POST /admin/api-keys".into(),
            base: api_key_body(f.g),
            required: &["group_id"],
            fields: key_fields.clone(),
            unknown: key_unknown.clone(),
        },
        Schema {
            route: format!("PUT /admin/api-keys/{}", f.k),
            base: json!({ "api_key": UPSTREAM_KEY }),
            required: &[],
            fields: key_fields,
            unknown: key_unknown,
        },
        Schema {
            route: "POST /admin/providers/preset".into(),
            base: preset_body(),
            required: &["preset", "api_keys"],
            fields: vec![
                ("preset", Str),
                ("api_keys", StrList),
                ("name", Str),
                ("models", StrList),
                ("weights", IntList),
                ("route_group", Str),
            ],
            unknown: shortcut_unknown.clone(),
        },
        Schema {
            route: "POST /admin/providers/custom".into(),
            base: custom_body(),
            required: &["name", "base_url", "api_keys"],
            fields: vec![
                ("name", Str),
                ("base_url", Str),
                ("api_keys", StrList),
                ("models", StrList),
                ("weights", IntList),
                ("static_headers", StrMap),
                ("route_group", Str),
            ],
            unknown: shortcut_unknown,
        },
        Schema {
            route: "POST /admin/bindings".into(),
            base: binding_body(f.g),
            required: &["namespace", "public_model", "group_id"],
            fields: binding_fields.clone(),
            unknown: binding_unknown.clone(),
        },
        Schema {
            route: format!("PUT /admin/bindings/{}", f.b),
            base: json!({ "weight": 2 }),
            required: &[],
            fields: binding_fields,
            unknown: binding_unknown,
        },
        Schema {
            route: "POST /admin/models".into(),
            base: model_body(),
            required: &["name"],
            fields: model_create_fields,
            unknown: model_unknown.clone(),
        },
        Schema {
            route: "PUT /admin/models/my-model".into(),
            base: json!({ "kind": "embedding" }),
            required: &[],
            fields: model_fields,
            unknown: model_unknown,
        },
    ]
}

async fn wrong_types_and_unknown_fields_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    for schema in schemas(&f) {
        let Schema {
            route,
            base,
            required,
            fields,
            unknown,
        } = schema;
        // Every field given a value of the wrong JSON type.
        for (field, kind) in fields {
            for value in wrong_values(kind) {
                let body = with(&base, &json!({ field: value }));
                probe.json(&route, &admin(), body, 400, "invalid_body").await;
            }
        }
        // Required fields missing or null.
        for field in required {
            let body = without(&base, field);
            probe.json(&route, &admin(), body, 400, "invalid_body").await;
            let body = with(&base, &json!({ *field: null }));
            probe.json(&route, &admin(), body, 400, "invalid_body").await;
        }
        if !required.is_empty() {
            probe.json(&route, &admin(), json!({}), 400, "invalid_body").await;
        }
        // Unknown, read-only and misspelt fields.
        for (field, value) in unknown {
            let body = with(&base, &json!({ field: value }));
            probe.json(&route, &admin(), body, 400, "invalid_body").await;
        }
        // A field given twice.
        let text = base.to_string();
        let (first, value) = base.as_object().and_then(|o| o.iter().next()).expect("a field");
        let twice = format!("{},\"{first}\":{value}}}", &text[..text.len() - 1]);
        probe
            .check(&route, &admin(), &raw_json(&twice), 400, &["invalid_body"])
            .await;
    }

    // Secrets given in the wrong shape: rejected, and never echoed back (serde's messages
    // quote string values it did not expect).
    let (g, sub, k) = (f.g, f.sub, f.k);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("POST /admin/providers/preset".into(), admin(), json!({ "preset": "openai", "api_keys": UPSTREAM_KEY }), 400, "invalid_body"),
        ("POST /admin/providers/custom".into(), admin(), json!({ "name": "c", "base_url": "http://127.0.0.1:9/v1", "api_keys": UPSTREAM_KEY }), 400, "invalid_body"),
        ("POST /admin/providers/preset".into(), admin(), json!({ "preset": "openai", "api_keys": { "main": UPSTREAM_KEY } }), 400, "invalid_body"),
        ("POST /admin/providers/preset".into(), admin(), json!({ "preset": "openai", "api_keys": [[UPSTREAM_KEY]] }), 400, "invalid_body"),
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": g, "api_key": [UPSTREAM_KEY] }), 400, "invalid_body"),
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": g, "api_key": { "value": UPSTREAM_KEY } }), 400, "invalid_body"),
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": g.to_string(), "api_key": UPSTREAM_KEY }), 400, "invalid_body"),
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": sub, "access_token": [ACCESS_TOKEN], "refresh_token": REFRESH_TOKEN }), 400, "invalid_body"),
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": sub, "access_token": ACCESS_TOKEN, "refresh_token": { "t": REFRESH_TOKEN } }), 400, "invalid_body"),
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": g, "api_key": UPSTREAM_KEY, "weight": "heavy" }), 400, "invalid_body"),
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": g, "api_key": UPSTREAM_KEY, "status": true }), 400, "invalid_body"),
        (format!("PUT /admin/api-keys/{k}"), admin(), json!({ "api_key": UPSTREAM_KEY, "ban_until": "tomorrow" }), 400, "invalid_body"),
        (format!("PUT /admin/api-keys/{k}"), admin(), json!({ "api_key": UPSTREAM_KEY, "expires_at": "never" }), 400, "invalid_body"),
        (format!("PUT /admin/api-keys/{k}"), admin(), json!({ "api_key": UPSTREAM_KEY, "apikey": UPSTREAM_KEY }), 400, "invalid_body"),
        ("POST /admin/provider-groups".into(), admin(), json!({ "name": "fresh", "type": "openai", "static_headers": { "authorization": ["Bearer", UPSTREAM_KEY] } }), 400, "invalid_body"),
    ];
    probe.rows(rows).await;

    probe.finish_routing(&before).await;
}

// ---------------------------------------------------------------------------------------
// Field rules (providers.rs)
// ---------------------------------------------------------------------------------------

/// A patch that fails, the status and the code.
type Rule = (Value, u16, &'static str);

/// Expands rules into rows: on a create route as `base` + patch, and on an update
/// route as `update_base` + patch.
fn expand(rules: &[Rule], create: &str, base: &Value, update: &str, update_base: &Value) -> Vec<Row> {
    let mut rows = Vec::new();
    for (patch, status, code) in rules {
        rows.push((create.to_owned(), admin(), with(base, patch), *status, *code));
        rows.push((
            update.to_owned(),
            admin(),
            with(update_base, patch),
            *status,
            *code,
        ));
    }
    rows
}

fn many_models(n: usize) -> Value {
    json!((0..n).map(|i| format!("model-{i}")).collect::<Vec<_>>())
}

fn many_headers(n: usize) -> Value {
    let map: serde_json::Map<String, Value> = (0..n).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    Value::Object(map)
}

async fn provider_group_rules_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    const TYPE: &str = "unknown_provider_type";
    const FIELD: &str = "invalid_field";
    let long_url = format!("https://{}.example.com", "a".repeat(2050));
    #[rustfmt::skip]
    let rules: Vec<Rule> = vec![
        // Provider types (SPEC §8): trimmed, lower-cased, `_` read as `-`; others 422.
        (json!({ "type": "openai2" }), 422, TYPE),
        (json!({ "type": "" }), 422, TYPE),
        (json!({ "type": "   " }), 422, TYPE),
        (json!({ "type": "open ai" }), 422, TYPE),
        (json!({ "type": "openai-compatible" }), 422, TYPE),
        (json!({ "type": "custom" }), 422, TYPE),
        (json!({ "type": "claude code" }), 422, TYPE),
        (json!({ "type": "vertex.express" }), 422, TYPE),
        // No official endpoint: base_url required.
        (json!({ "type": "compatible" }), 422, "base_url_required"),
        (json!({ "type": "compatible", "base_url": "" }), 422, "base_url_required"),
        (json!({ "type": "azure", "base_url": "   " }), 422, "base_url_required"),
        (json!({ "type": "AZURE" }), 422, "base_url_required"),
        // Vertex needs google_project.
        (json!({ "type": "vertex" }), 422, "google_project_required"),
        (json!({ "type": "Vertex", "google_project": "   " }), 422, "google_project_required"),
        (json!({ "type": "vertex", "google_location": "us-central1" }), 422, "google_project_required"),
        // Malformed endpoints.
        (json!({ "base_url": "ftp://example.com" }), 400, FIELD),
        (json!({ "base_url": "api.openai.com/v1" }), 400, FIELD),
        (json!({ "base_url": "https://" }), 400, FIELD),
        (json!({ "base_url": "http://" }), 400, FIELD),
        (json!({ "base_url": "//example.com/v1" }), 400, FIELD),
        (json!({ "base_url": "https://exa mple.com" }), 400, FIELD),
        (json!({ "base_url": "https://example.com/\u{0}" }), 400, FIELD),
        (json!({ "base_url": "https://a\tb.example.com" }), 400, FIELD),
        (json!({ "base_url": "javascript:alert(1)" }), 400, FIELD),
        (json!({ "base_url": long_url }), 400, FIELD),
        (json!({ "type": "compatible", "base_url": "localhost:8000" }), 400, FIELD),
        // Names and routing groups: identifiers.
        (json!({ "name": "" }), 400, FIELD),
        (json!({ "name": "   " }), 400, FIELD),
        (json!({ "name": "team.a" }), 400, FIELD),
        (json!({ "name": "a b" }), 400, FIELD),
        (json!({ "name": "a/b" }), 400, FIELD),
        (json!({ "name": "équipe" }), 400, FIELD),
        (json!({ "name": "a\u{0}" }), 400, FIELD),
        (json!({ "name": "x".repeat(65) }), 400, FIELD),
        (json!({ "route_group": "" }), 400, FIELD),
        (json!({ "route_group": "a.b" }), 400, FIELD),
        (json!({ "route_group": "a b" }), 400, FIELD),
        // Google fields.
        (json!({ "google_project": "p".repeat(129) }), 400, FIELD),
        (json!({ "google_project": "p\u{1}" }), 400, FIELD),
        (json!({ "google_location": "l".repeat(65) }), 400, FIELD),
        (json!({ "google_location": "us\ncentral1" }), 400, FIELD),
        // Model lists.
        (json!({ "models": ["gpt 4o"] }), 400, FIELD),
        (json!({ "models": [""] }), 400, FIELD),
        (json!({ "models": ["   "] }), 400, FIELD),
        (json!({ "models": ["gpt-4o", "gpt\n4"] }), 400, FIELD),
        (json!({ "models": ["gpt-4o", "\u{0}"] }), 400, FIELD),
        (json!({ "models": ["m".repeat(257)] }), 400, FIELD),
        (json!({ "models": many_models(2001) }), 400, FIELD),
        // Statuses and header profiles.
        (json!({ "status": "enabled" }), 400, FIELD),
        (json!({ "status": "ACTIVE" }), 400, FIELD),
        (json!({ "status": "" }), 400, FIELD),
        (json!({ "status": "deleted" }), 400, FIELD),
        (json!({ "status": "auto_disabled" }), 400, FIELD),
        (json!({ "headers_profile": "curl" }), 400, FIELD),
        (json!({ "headers_profile": "chrome" }), 400, FIELD),
        (json!({ "headers_profile": "claude-code-v2" }), 400, FIELD),
        // Static headers: the connection's own headers are reserved; names are tokens;
        // values have no control characters (no header injection).
        (json!({ "static_headers": { "Host": "evil.example.com" } }), 400, FIELD),
        (json!({ "static_headers": { "content-length": "1" } }), 400, FIELD),
        (json!({ "static_headers": { "Transfer-Encoding": "chunked" } }), 400, FIELD),
        (json!({ "static_headers": { "Connection": "close" } }), 400, FIELD),
        (json!({ "static_headers": { "keep-alive": "1" } }), 400, FIELD),
        (json!({ "static_headers": { "Upgrade": "h2c" } }), 400, FIELD),
        (json!({ "static_headers": { "TE": "trailers" } }), 400, FIELD),
        (json!({ "static_headers": { "trailer": "x" } }), 400, FIELD),
        (json!({ "static_headers": { "bad header": "x" } }), 400, FIELD),
        (json!({ "static_headers": { "": "x" } }), 400, FIELD),
        (json!({ "static_headers": { "x:y": "z" } }), 400, FIELD),
        (json!({ "static_headers": { "x-é": "1" } }), 400, FIELD),
        (json!({ "static_headers": { "x-a\u{0}b": "1" } }), 400, FIELD),
        (json!({ "static_headers": { "x(y)": "1" } }), 400, FIELD),
        (json!({ "static_headers": { "h".repeat(129): "1" } }), 400, FIELD),
        (json!({ "static_headers": { "x-a": "a\r\nInjected: 1" } }), 400, FIELD),
        (json!({ "static_headers": { "x-a": "a\nb" } }), 400, FIELD),
        (json!({ "static_headers": { "x-a": "a\u{0}" } }), 400, FIELD),
        (json!({ "static_headers": { "x-a": "\u{7f}" } }), 400, FIELD),
        (json!({ "static_headers": { "x-a": "v".repeat(8193) } }), 400, FIELD),
        (json!({ "static_headers": many_headers(65) }), 400, FIELD),
    ];
    let create = "POST /admin/provider-groups";
    let update = format!("PUT /admin/provider-groups/{}", f.g);
    probe
        .rows(expand(&rules, create, &group_body(), &update, &json!({})))
        .await;

    // The spare group (compatible): clearing its endpoint leaves none.
    let spare = format!("PUT /admin/provider-groups/{}", f.spare);
    let (g, sub) = (f.g, f.sub);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        (spare.clone(), admin(), json!({ "base_url": "" }), 422, "base_url_required"),
        (spare.clone(), admin(), json!({ "base_url": "  " }), 422, "base_url_required"),
        (spare.clone(), admin(), json!({ "type": "azure", "base_url": "" }), 422, "base_url_required"),
        (spare, admin(), json!({ "type": "vertex", "base_url": "https://x.example.com" }), 422, "google_project_required"),
        (format!("PUT /admin/provider-groups/{sub}"), admin(), json!({ "type": "not-a-cli" }), 422, TYPE),
        // Duplicate names (unique, after trimming).
        (create.into(), admin(), json!({ "name": "spare", "type": "openai" }), 409, "conflict"),
        (create.into(), admin(), json!({ "name": " spare ", "type": "anthropic" }), 409, "conflict"),
        (create.into(), admin(), json!({ "name": "openai-main", "type": "compatible", "base_url": "http://127.0.0.1:9/v1" }), 409, "conflict"),
        (update.clone(), admin(), json!({ "name": "spare" }), 409, "conflict"),
        (format!("PUT /admin/provider-groups/{sub}"), admin(), json!({ "name": "openai-main " }), 409, "conflict"),
        // A group some binding uses cannot go.
        (format!("DELETE /admin/provider-groups/{g}"), admin(), Value::Null, 409, "group_in_use"),
    ];
    probe.rows(rows).await;

    // A type change must not strand the group's credentials: an api-key credential in a
    // subscription group, or an OAuth-only credential in an api-key group, is refused when
    // written directly (and when moved between groups), so it is refused this way too.
    const STRANDED: &[&str] = &["oauth_token_required", "api_key_required"];
    #[rustfmt::skip]
    let type_changes: Vec<(String, Value)> = vec![
        (update.clone(), json!({ "type": "claude-code" })),
        (update.clone(), json!({ "type": "codex" })),
        (update.clone(), json!({ "type": "gemini_cli" })),
        (format!("PUT /admin/provider-groups/{sub}"), json!({ "type": "openai" })),
        (format!("PUT /admin/provider-groups/{sub}"), json!({ "type": "anthropic" })),
        (format!("PUT /admin/provider-groups/{sub}"), json!({ "type": "compatible", "base_url": "http://127.0.0.1:9/v1" })),
    ];
    for (route, body) in &type_changes {
        probe
            .check(route, &admin(), &Body::Json(body.clone()), 422, STRANDED)
            .await;
    }

    probe.finish_routing(&before).await;
}

async fn api_key_rules_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    const FIELD: &str = "invalid_field";
    let now = now_unix();
    let huge = "x".repeat(16 * 1024 + 1);
    #[rustfmt::skip]
    let rules: Vec<Rule> = vec![
        // Weights: 1..=1_000_000.
        (json!({ "weight": 0 }), 400, FIELD),
        (json!({ "weight": -1 }), 400, FIELD),
        (json!({ "weight": 1_000_001 }), 400, FIELD),
        (json!({ "weight": i64::MIN }), 400, FIELD),
        (json!({ "weight": i64::MAX }), 400, FIELD),
        // Ban and expiry times: Unix seconds, year 0..=9999.
        (json!({ "ban_until": -1 }), 400, FIELD),
        (json!({ "ban_until": i64::MIN }), 400, FIELD),
        (json!({ "ban_until": 253_402_300_800_i64 }), 400, FIELD),
        (json!({ "ban_until": now * 1000 }), 400, FIELD),
        (json!({ "ban_until": i64::MAX }), 400, FIELD),
        (json!({ "expires_at": -1 }), 400, FIELD),
        (json!({ "expires_at": now * 1_000_000 }), 400, FIELD),
        (json!({ "expires_at": i64::MAX }), 400, FIELD),
        // Statuses.
        (json!({ "status": "banned" }), 400, FIELD),
        (json!({ "status": "disabled" }), 400, FIELD),
        (json!({ "status": "revoked" }), 400, FIELD),
        (json!({ "status": "ACTIVE" }), 400, FIELD),
        (json!({ "status": "" }), 400, FIELD),
        // Free text and ids.
        (json!({ "ban_reason": "r".repeat(513) }), 400, FIELD),
        (json!({ "ban_reason": "a\u{0}b" }), 400, FIELD),
        (json!({ "ban_reason": "line\nbreak" }), 400, FIELD),
        (json!({ "account_id": "a".repeat(257) }), 400, FIELD),
        (json!({ "account_id": "a\u{1}" }), 400, FIELD),
        (json!({ "project_id": "p".repeat(257) }), 400, FIELD),
        (json!({ "project_id": "p\u{7}" }), 400, FIELD),
        (json!({ "models": ["gpt 4o"] }), 400, FIELD),
        (json!({ "models": [""] }), 400, FIELD),
        (json!({ "models": many_models(2001) }), 400, FIELD),
        // Credentials with whitespace or control characters, or oversize.
        (json!({ "api_key": "sk-upstream SECRET-0123456789" }), 400, FIELD),
        (json!({ "api_key": "sk-upstream-SECRET\t0123456789" }), 400, FIELD),
        (json!({ "api_key": "sk-upstream-SECRET\n0123456789" }), 400, FIELD),
        (json!({ "api_key": "sk-upstream-SECRET-0123456789\u{0}" }), 400, FIELD),
        (json!({ "api_key": huge }), 400, FIELD),
        (json!({ "access_token": "at-upstream ACCESS-0123456789" }), 400, FIELD),
        (json!({ "access_token": huge }), 400, FIELD),
        (json!({ "refresh_token": "rt-upstream-REFRESH\r\n0123456789" }), 400, FIELD),
        (json!({ "refresh_token": "rt-upstream-REFRESH\u{1}0123456789" }), 400, FIELD),
        // An openai credential needs api_key.
        (json!({ "api_key": "" }), 422, "api_key_required"),
        (json!({ "api_key": "   " }), 422, "api_key_required"),
        // The group must exist.
        (json!({ "group_id": 999_999 }), 422, "group_not_found"),
        (json!({ "group_id": 0 }), 422, "group_not_found"),
        (json!({ "group_id": -1 }), 422, "group_not_found"),
        (json!({ "group_id": i64::MAX }), 422, "group_not_found"),
        // A subscription group needs OAuth tokens, not an api key.
        (json!({ "group_id": f.sub }), 422, "oauth_token_required"),
    ];
    let create = "POST /admin/api-keys";
    let update = format!("PUT /admin/api-keys/{}", f.k);
    let update_base = json!({ "api_key": UPSTREAM_KEY });
    probe
        .rows(expand(&rules, create, &api_key_body(f.g), &update, &update_base))
        .await;

    let (g, sub, sk) = (f.g, f.sub, f.sk);
    let oauth = format!("PUT /admin/api-keys/{sk}");
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        (create.into(), admin(), json!({ "group_id": g }), 422, "api_key_required"),
        (create.into(), admin(), json!({ "group_id": g, "access_token": ACCESS_TOKEN, "refresh_token": REFRESH_TOKEN }), 422, "api_key_required"),
        (create.into(), admin(), json!({ "group_id": sub }), 422, "oauth_token_required"),
        (create.into(), admin(), json!({ "group_id": sub, "api_key": UPSTREAM_KEY, "access_token": "", "refresh_token": "  " }), 422, "oauth_token_required"),
        (create.into(), admin(), json!({ "group_id": sub, "access_token": ACCESS_TOKEN, "weight": 0 }), 400, FIELD),
        (create.into(), admin(), json!({ "group_id": sub, "refresh_token": REFRESH_TOKEN, "expires_at": -5 }), 400, FIELD),
        (create.into(), admin(), json!({ "group_id": sub, "access_token": "at-upstream\tACCESS", "refresh_token": REFRESH_TOKEN }), 400, FIELD),
        (oauth.clone(), admin(), json!({ "access_token": "", "refresh_token": "" }), 422, "oauth_token_required"),
        (oauth.clone(), admin(), json!({ "api_key": UPSTREAM_KEY, "access_token": " ", "refresh_token": "" }), 422, "oauth_token_required"),
        (oauth.clone(), admin(), json!({ "access_token": ACCESS_TOKEN, "weight": -3 }), 400, FIELD),
        (oauth.clone(), admin(), json!({ "refresh_token": REFRESH_TOKEN, "ban_until": -1 }), 400, FIELD),
        (oauth.clone(), admin(), json!({ "access_token": ACCESS_TOKEN, "group_id": g }), 422, "api_key_required"),
        (oauth, admin(), json!({ "refresh_token": REFRESH_TOKEN, "group_id": 424_242 }), 422, "group_not_found"),
    ];
    probe.rows(rows).await;

    probe.finish_routing(&before).await;
}

async fn shortcut_rules_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let _f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    const FIELD: &str = "invalid_field";
    let many_keys: Vec<String> = (0..101).map(|i| format!("{UPSTREAM_KEY}-{i}")).collect();
    let huge = "x".repeat(16 * 1024 + 1);
    #[rustfmt::skip]
    let key_rules: Vec<Rule> = vec![
        (json!({ "api_keys": [] }), 400, FIELD),
        (json!({ "api_keys": many_keys }), 400, FIELD),
        (json!({ "api_keys": [""] }), 400, FIELD),
        (json!({ "api_keys": ["   "] }), 400, FIELD),
        (json!({ "api_keys": [UPSTREAM_KEY, ""] }), 400, FIELD),
        (json!({ "api_keys": ["sk-upstream SECRET-0123456789"] }), 400, FIELD),
        (json!({ "api_keys": [UPSTREAM_KEY, "sk-upstream-SECRET\n0123456789"] }), 400, FIELD),
        (json!({ "api_keys": ["sk-upstream-SECRET-0123456789\u{0}"] }), 400, FIELD),
        (json!({ "api_keys": [huge] }), 400, FIELD),
        (json!({ "weights": [1, 2] }), 400, FIELD),
        (json!({ "weights": [] }), 400, FIELD),
        (json!({ "api_keys": [UPSTREAM_KEY, ACCESS_TOKEN], "weights": [1] }), 400, FIELD),
        (json!({ "weights": [0] }), 400, FIELD),
        (json!({ "weights": [-1] }), 400, FIELD),
        (json!({ "weights": [1_000_001] }), 400, FIELD),
        (json!({ "api_keys": [UPSTREAM_KEY, ACCESS_TOKEN], "weights": [1, 0] }), 400, FIELD),
        (json!({ "models": ["gpt 4o"] }), 400, FIELD),
        (json!({ "models": [""] }), 400, FIELD),
        (json!({ "models": many_models(2001) }), 400, FIELD),
        (json!({ "name": "" }), 400, FIELD),
        (json!({ "name": "team.a" }), 400, FIELD),
        (json!({ "name": "x".repeat(65) }), 400, FIELD),
        (json!({ "route_group": "a b" }), 400, FIELD),
        // Names are unique.
        (json!({ "name": "spare" }), 409, "conflict"),
        (json!({ "name": "openai-main" }), 409, "conflict"),
    ];
    let preset = "POST /admin/providers/preset";
    let custom = "POST /admin/providers/custom";
    probe
        .rows(expand(&key_rules, preset, &preset_body(), custom, &custom_body()))
        .await;

    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // Only the official presets.
        (preset.into(), admin(), json!({ "preset": "mistral", "api_keys": [UPSTREAM_KEY] }), 422, "unknown_preset"),
        (preset.into(), admin(), json!({ "preset": "", "api_keys": [UPSTREAM_KEY] }), 422, "unknown_preset"),
        (preset.into(), admin(), json!({ "preset": "open ai", "api_keys": [UPSTREAM_KEY] }), 422, "unknown_preset"),
        (preset.into(), admin(), json!({ "preset": "compatible", "api_keys": [UPSTREAM_KEY] }), 422, "unknown_preset"),
        (preset.into(), admin(), json!({ "preset": "claude-code", "api_keys": [UPSTREAM_KEY] }), 422, "unknown_preset"),
        (preset.into(), admin(), json!({ "preset": "azure", "api_keys": [UPSTREAM_KEY] }), 422, "unknown_preset"),
        // Custom endpoints: required and well-formed.
        (custom.into(), admin(), json!({ "name": "c1", "base_url": "", "api_keys": [UPSTREAM_KEY] }), 422, "base_url_required"),
        (custom.into(), admin(), json!({ "name": "c1", "base_url": "   ", "api_keys": [UPSTREAM_KEY] }), 422, "base_url_required"),
        (custom.into(), admin(), json!({ "name": "c1", "base_url": "ftp://x.example.com", "api_keys": [UPSTREAM_KEY] }), 400, FIELD),
        (custom.into(), admin(), json!({ "name": "c1", "base_url": "not a url", "api_keys": [UPSTREAM_KEY] }), 400, FIELD),
        (custom.into(), admin(), json!({ "name": "c1", "base_url": "localhost:8000/v1", "api_keys": [UPSTREAM_KEY] }), 400, FIELD),
        (custom.into(), admin(), with(&custom_body(), &json!({ "static_headers": { "Host": "x" } })), 400, FIELD),
        (custom.into(), admin(), with(&custom_body(), &json!({ "static_headers": { "x-a": "a\r\nb: c" } })), 400, FIELD),
        (custom.into(), admin(), with(&custom_body(), &json!({ "static_headers": { "bad name": "x" } })), 400, FIELD),
        (custom.into(), admin(), with(&custom_body(), &json!({ "static_headers": many_headers(65) })), 400, FIELD),
    ];
    probe.rows(rows).await;

    probe.finish_routing(&before).await;
}

async fn binding_rules_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    const FIELD: &str = "invalid_field";
    const SELECTOR: &str = "invalid_selector";
    let regex = |pattern: &str| json!({ "selector_type": "regex", "selector_value": pattern });
    #[rustfmt::skip]
    let rules: Vec<Rule> = vec![
        // Namespaces: identifiers that exist.
        (json!({ "namespace": "nope" }), 422, "namespace_not_found"),
        (json!({ "namespace": "Default" }), 422, "namespace_not_found"),
        (json!({ "namespace": "team.a" }), 400, FIELD),
        (json!({ "namespace": "" }), 400, FIELD),
        (json!({ "namespace": "a b" }), 400, FIELD),
        (json!({ "namespace": "n".repeat(65) }), 400, FIELD),
        // Public model names.
        (json!({ "public_model": "" }), 400, FIELD),
        (json!({ "public_model": "   " }), 400, FIELD),
        (json!({ "public_model": "gpt 4o" }), 400, FIELD),
        (json!({ "public_model": "gpt-4o\u{0}" }), 400, FIELD),
        (json!({ "public_model": "m".repeat(257) }), 400, FIELD),
        // Weights.
        (json!({ "weight": 0 }), 400, FIELD),
        (json!({ "weight": -5 }), 400, FIELD),
        (json!({ "weight": 1_000_001 }), 400, FIELD),
        (json!({ "weight": i64::MAX }), 400, FIELD),
        // Selectors.
        (json!({ "selector_type": "glob" }), 400, FIELD),
        (json!({ "selector_type": "" }), 400, FIELD),
        (json!({ "selector_type": "REGEX" }), 400, FIELD),
        (json!({ "selector_type": "normalize-exact" }), 400, FIELD),
        (json!({ "selector_value": "s".repeat(513) }), 400, FIELD),
        (json!({ "selector_value": "gpt\u{0}" }), 400, FIELD),
        (regex("gpt-4("), 422, SELECTOR),
        (regex("["), 422, SELECTOR),
        (regex("(?P<x"), 422, SELECTOR),
        (regex("\\p{Unknown}"), 422, SELECTOR),
        (regex("a{4294967296}"), 422, SELECTOR),
        (regex("((a{1000}){1000}){1000}"), 422, SELECTOR),
        (json!({ "selector_type": "regex", "public_model": "gpt(" }), 422, SELECTOR),
        // Statuses.
        (json!({ "status": "enabled" }), 400, FIELD),
        (json!({ "status": "" }), 400, FIELD),
        // The group must exist.
        (json!({ "group_id": 999_999 }), 422, "group_not_found"),
        (json!({ "group_id": 0 }), 422, "group_not_found"),
        (json!({ "group_id": -7 }), 422, "group_not_found"),
    ];
    let create = "POST /admin/bindings";
    let update = format!("PUT /admin/bindings/{}", f.b);
    probe
        .rows(expand(&rules, create, &binding_body(f.g), &update, &json!({})))
        .await;

    // (namespace, public model, group) is unique.
    let (g, spare) = (f.g, f.spare);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        (create.into(), admin(), json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": g }), 409, "conflict"),
        (create.into(), admin(), json!({ "namespace": " default ", "public_model": " gpt-4o ", "group_id": g, "weight": 3 }), 409, "conflict"),
        (format!("PUT /admin/bindings/{}", f.b2), admin(), json!({ "public_model": "gpt-4o" }), 409, "conflict"),
        (format!("PUT /admin/bindings/{}", f.b2), admin(), json!({ "public_model": "gpt-4o", "group_id": g, "weight": 9 }), 409, "conflict"),
        // Moving a binding to a group that does not exist, or to a namespace that does not.
        (format!("PUT /admin/bindings/{}", f.b2), admin(), json!({ "group_id": spare + 1000 }), 422, "group_not_found"),
        (format!("PUT /admin/bindings/{}", f.b2), admin(), json!({ "namespace": "elsewhere" }), 422, "namespace_not_found"),
    ];
    probe.rows(rows).await;

    probe.finish_routing(&before).await;
}

async fn model_override_rules_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let _f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    const FIELD: &str = "invalid_field";
    #[rustfmt::skip]
    let rules: Vec<Rule> = vec![
        (json!({ "kind": "magic" }), 400, FIELD),
        (json!({ "kind": "" }), 400, FIELD),
        (json!({ "kind": "CHAT" }), 400, FIELD),
        (json!({ "kind": "chat " }), 400, FIELD),
        (json!({ "context_window": 0 }), 400, FIELD),
        (json!({ "context_window": -1 }), 400, FIELD),
        (json!({ "context_window": i64::MIN }), 400, FIELD),
        (json!({ "max_output_tokens": -5 }), 400, FIELD),
        (json!({ "max_output_tokens": 0 }), 400, FIELD),
        (json!({ "embedding_dimensions": 0 }), 400, FIELD),
        (json!({ "embedding_dimensions": -1536 }), 400, FIELD),
        (json!({ "input_price_per_mtok": -1.0 }), 400, FIELD),
        (json!({ "input_price_per_mtok": -0.000_001 }), 400, FIELD),
        (json!({ "output_price_per_mtok": -3 }), 400, FIELD),
        (json!({ "output_price_per_mtok": -1e300 }), 400, FIELD),
    ];
    let create = "POST /admin/models";
    let update = "PUT /admin/models/my-model";
    probe
        .rows(expand(&rules, create, &model_body(), update, &json!({})))
        .await;

    // Prices that are not finite numbers are not JSON numbers at all.
    for route in [create, update] {
        for price in ["NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e400"] {
            for field in ["input_price_per_mtok", "output_price_per_mtok"] {
                let text = format!("{{\"name\":\"fresh-model\",\"{field}\":{price}}}");
                let text = if route == update {
                    format!("{{\"{field}\":{price}}}")
                } else {
                    text
                };
                probe
                    .check(route, &admin(), &raw_json(&text), 400, &["invalid_json"])
                    .await;
            }
        }
        for price in ["NaN", "Infinity", "-1", "free"] {
            let body = json!({ "input_price_per_mtok": price });
            let body = if route == create {
                with(&model_body(), &body)
            } else {
                body
            };
            probe.json(route, &admin(), body, 400, "invalid_body").await;
        }
    }

    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // Model names.
        (create.into(), admin(), json!({ "name": "" }), 400, FIELD),
        (create.into(), admin(), json!({ "name": "   " }), 400, FIELD),
        (create.into(), admin(), json!({ "name": "gpt 4o" }), 400, FIELD),
        (create.into(), admin(), json!({ "name": "gpt\u{1}" }), 400, FIELD),
        (create.into(), admin(), json!({ "name": "m".repeat(257) }), 400, FIELD),
        ("PUT /admin/models/gpt%204o".into(), admin(), json!({ "kind": "chat" }), 400, FIELD),
        ("PUT /admin/models/%20".into(), admin(), json!({ "kind": "chat" }), 400, FIELD),
        ("PUT /admin/models/gpt%00x".into(), admin(), json!({ "kind": "chat" }), 400, FIELD),
        ("PUT /admin/models/gpt%0A4".into(), admin(), json!({ "kind": "chat" }), 400, FIELD),
        (format!("PUT /admin/models/{}", "m".repeat(257)), admin(), json!({ "kind": "chat" }), 400, FIELD),
        ("PUT /admin/models/%FF".into(), admin(), json!({ "kind": "chat" }), 400, "invalid_path"),
        ("DELETE /admin/models/%FF".into(), admin(), Value::Null, 400, "invalid_path"),
        // Creating twice is a conflict (PUT replaces).
        (create.into(), admin(), json!({ "name": "my-model" }), 409, "conflict"),
        (create.into(), admin(), json!({ "name": " my-model ", "kind": "embedding" }), 409, "conflict"),
        // Deleting an override that does not exist.
        ("DELETE /admin/models/no-such-model".into(), admin(), Value::Null, 404, "model_override_not_found"),
        ("DELETE /admin/models/gpt-4o".into(), admin(), Value::Null, 404, "model_override_not_found"),
        ("DELETE /admin/models/fresh-model".into(), admin(), Value::Null, 404, "model_override_not_found"),
    ];
    probe.rows(rows).await;

    probe.finish_routing(&before).await;
}

// ---------------------------------------------------------------------------------------
// Queries and path parameters
// ---------------------------------------------------------------------------------------

async fn bad_pagination_filters_and_ids_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    const QUERY: &str = "invalid_query";
    let lists = [
        "/admin/provider-groups",
        "/admin/api-keys",
        "/admin/bindings",
        "/admin/models",
        "/admin/sync/outbox",
    ];
    let paging = [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1.5",
        "page=",
        "page=2147483648",
        "page=99999999999999999999",
        "page_size=0",
        "page_size=-1",
        "page_size=501",
        "page_size=1000",
        "page_size=abc",
        "page_size=1e3",
        "page_size=99999999999999999999",
        "page=1&page=2",
    ];
    for list in lists {
        for query in paging {
            let route = format!("GET {list}?{query}");
            probe.json(&route, &admin(), Value::Null, 400, QUERY).await;
        }
    }
    #[rustfmt::skip]
    let filters = [
        "/admin/api-keys?status=bogus",
        "/admin/api-keys?status=ACTIVE",
        "/admin/api-keys?status=revoked",
        "/admin/api-keys?status=",
        "/admin/api-keys?group_id=abc",
        "/admin/api-keys?group_id=1.5",
        "/admin/api-keys?group_id=99999999999999999999",
        "/admin/api-keys?group_id=1&status=bogus",
        "/admin/sync/outbox?status=bogus",
        "/admin/sync/outbox?status=PENDING",
        "/admin/sync/outbox?status=1",
        "/admin/sync/outbox?status=",
        "/admin/models?all=maybe",
        "/admin/models?all=2",
    ];
    for path in filters {
        let route = format!("GET {path}");
        probe.json(&route, &admin(), Value::Null, 400, QUERY).await;
    }

    // `{id}` routes: ids that are not i64 → 400; ids that do not exist → 404.
    #[rustfmt::skip]
    let id_routes: Vec<(&str, &str, Value, &str)> = vec![
        ("GET", "/admin/provider-groups", Value::Null, "provider_group_not_found"),
        ("PUT", "/admin/provider-groups", json!({ "status": "disabled" }), "provider_group_not_found"),
        ("DELETE", "/admin/provider-groups", Value::Null, "provider_group_not_found"),
        ("GET", "/admin/api-keys", Value::Null, "api_key_not_found"),
        ("PUT", "/admin/api-keys", json!({ "weight": 2, "api_key": UPSTREAM_KEY }), "api_key_not_found"),
        ("DELETE", "/admin/api-keys", Value::Null, "api_key_not_found"),
        ("GET", "/admin/bindings", Value::Null, "binding_not_found"),
        ("PUT", "/admin/bindings", json!({ "weight": 2 }), "binding_not_found"),
        ("DELETE", "/admin/bindings", Value::Null, "binding_not_found"),
    ];
    let not_ids = [
        "abc",
        "1.5",
        "1e3",
        "0x10",
        "%20",
        "1%00",
        "99999999999999999999",
        "-9223372036854775809",
        "null",
        "sk-abc",
    ];
    let unknown = [
        "0".to_owned(),
        "-1".to_owned(),
        "999999".to_owned(),
        i64::MAX.to_string(),
        i64::MIN.to_string(),
        (f.g.max(f.k).max(f.b2) + 100).to_string(),
    ];
    for (method, base, body, code) in &id_routes {
        for id in not_ids {
            let route = format!("{method} {base}/{id}");
            probe
                .json(&route, &admin(), body.clone(), 400, "invalid_path")
                .await;
        }
        for id in &unknown {
            let route = format!("{method} {base}/{id}");
            probe.json(&route, &admin(), body.clone(), 404, code).await;
        }
    }

    probe.finish_routing(&before).await;
}

// ---------------------------------------------------------------------------------------
// Credentials and roles
// ---------------------------------------------------------------------------------------

/// A well-formed token that no master or key has: `prefix` + 40 base62 characters.
fn unknown_token(prefix: &str) -> String {
    format!("{prefix}{}", "Zq7x".repeat(10))
}

fn admin_claims(binding: &str, exp: i64) -> Claims {
    Claims {
        sub: "admin".into(),
        role: Role::Admin,
        master_id: None,
        epoch: None,
        binding: binding.to_owned(),
        iat: now_unix() - 10,
        exp,
    }
}

async fn missing_and_wrong_credentials_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let now = now_unix();
    let binding = app.state.auth.admin_binding().to_owned();
    let other = JwtKeys::new(b"another-secret-another-secret-another-secret-0123456789");
    let forged_admin = other.issue(&admin_claims(&binding, now + 3600)).expect("jwt");
    let expired_admin = app
        .state
        .auth
        .jwt()
        .issue(&admin_claims(&binding, now - 3600))
        .expect("jwt");
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    const MISSING: &[&str] = &["missing_credentials"];
    const INVALID: &[&str] = &["invalid_credentials"];
    #[rustfmt::skip]
    let cases: Vec<(Auth, &[&str])> = vec![
        (Auth::None, MISSING),
        (Auth::Header("authorization", "Bearer".into()), MISSING),
        (Auth::Header("authorization", "Bearer    ".into()), MISSING),
        (Auth::Header("authorization", format!("Basic {ADMIN_TOKEN}")), MISSING),
        (Auth::Header("authorization", ADMIN_TOKEN.into()), MISSING),
        (bearer("not-a-token"), INVALID),
        (bearer(&format!("{ADMIN_TOKEN}x")), INVALID),
        (bearer(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]), INVALID),
        (bearer(&"A".repeat(16 * 1024)), INVALID),
        (bearer(&unknown_token("ezm-")), INVALID),
        (bearer(&unknown_token("sk-ez-")), &["invalid_credentials", "key_not_found"]),
        // An upstream key is no gateway credential.
        (bearer(UPSTREAM_KEY), INVALID),
        (bearer(FIXTURE_KEY), INVALID),
        (bearer("a.b.c"), INVALID),
        (bearer(&forged_admin), INVALID),
        (bearer(&expired_admin), &["token_expired"]),
        (Auth::Header("x-api-key", "not-a-token".into()), INVALID),
    ];
    let endpoints = all_endpoints(&f);
    for (auth, codes) in &cases {
        for (route, body) in &endpoints {
            probe
                .check(route, auth, &Body::from_value(body), 401, codes)
                .await;
        }
    }
    // The credential is checked before the body, the path and the query are looked at.
    #[rustfmt::skip]
    let unchecked: Vec<(&str, Body)> = vec![
        ("POST /admin/provider-groups", raw_json("{\"name\":")),
        ("POST /admin/api-keys", Body::Raw(Some("text/plain"), UPSTREAM_KEY.into())),
        ("POST /admin/providers/preset", Body::Json(json!({ "preset": "nope", "api_keys": UPSTREAM_KEY }))),
        ("PUT /admin/api-keys/abc", Body::Json(json!({ "api_key": UPSTREAM_KEY }))),
        ("GET /admin/api-keys?status=bogus", Body::None),
        ("GET /admin/sync/outbox?page=0", Body::None),
        ("DELETE /admin/models/no-such-model", Body::None),
    ];
    for (route, body) in &unchecked {
        probe.check(route, &Auth::None, body, 401, MISSING).await;
        probe.check(route, &bearer("wrong"), body, 401, INVALID).await;
    }

    probe.finish_routing(&before).await;
}

async fn wrong_role_is_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let master_jwt = app.post_login(json!({ "master_key": f.mk })).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    // A master (by key, by session, by x-api-key) and a child key are not the admin.
    let callers = [
        bearer(&f.mk),
        bearer(&master_jwt),
        Auth::Header("x-api-key", f.mk.clone()),
        bearer(&f.key),
        Auth::Header("x-api-key", f.key.clone()),
    ];
    for auth in &callers {
        for (route, body) in all_endpoints(&f) {
            let body = Body::from_value(&body);
            probe.check(&route, auth, &body, 403, &["admin_required"]).await;
        }
        // Before the body or the path is looked at.
        let body = raw_json("{\"name\":");
        let route = "POST /admin/provider-groups";
        probe.check(route, auth, &body, 403, &["admin_required"]).await;
        let body = Body::Json(json!({ "weight": 0 }));
        let route = "PUT /admin/bindings/abc";
        probe.check(route, auth, &body, 403, &["admin_required"]).await;
    }

    probe.finish_routing(&before).await;
}

// ---------------------------------------------------------------------------------------
// Oversized bodies, wrong methods, unknown routes
// ---------------------------------------------------------------------------------------

/// Sends only the headers of an oversized body, with `Expect: 100-continue`: the server
/// must refuse from `Content-Length` alone. Returns (status, body).
async fn send_oversized(app: &TestApp, route_: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (method, path) = route(route_);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {len}\r\nexpect: 100-continue\r\n\
         connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write headers");
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut response),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "{route_}: reading the answer failed: {read:?}"
    );
    let text = String::from_utf8_lossy(&response).into_owned();
    assert!(
        !text.starts_with("HTTP/1.1 100"),
        "{route_}: the server asked for an oversized body"
    );
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{route_}: no HTTP status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn oversized_bodies_wrong_methods_and_routes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut probe = Probe::new(&app);

    // Over the 10 MiB limit: 413, refused before the body is read.
    for (route, _) in body_endpoints(&f) {
        let (status, body) = send_oversized(&app, &route, 10 * 1024 * 1024 + 1).await;
        assert_eq!(status, 413, "{route}: {body}");
        let body: Value = serde_json::from_str(&body).expect("an error envelope");
        assert_eq!(body["error"]["code"], "payload_too_large", "{route}");
    }
    // Just under it: an ordinary validation error that does not repeat the secret.
    let big_secret = format!("{UPSTREAM_KEY}{}", "S".repeat(9 * 1024 * 1024));
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("POST /admin/api-keys".into(), admin(), json!({ "group_id": f.g, "api_key": big_secret }), 400, "invalid_field"),
        (format!("PUT /admin/api-keys/{}", f.sk), admin(), json!({ "access_token": big_secret }), 400, "invalid_field"),
        ("POST /admin/providers/preset".into(), admin(), json!({ "preset": "openai", "api_keys": [big_secret] }), 400, "invalid_field"),
        ("POST /admin/provider-groups".into(), admin(), with(&group_body(), &json!({ "models": many_models(300_000) })), 400, "invalid_field"),
    ];
    probe.rows(rows).await;

    // Wrong methods on the new routes.
    let (g, k, b) = (f.g, f.k, f.b);
    #[rustfmt::skip]
    let wrong_methods = [
        "PATCH /admin/provider-groups".to_owned(),
        "DELETE /admin/provider-groups".to_owned(),
        "PUT /admin/provider-groups".to_owned(),
        format!("POST /admin/provider-groups/{g}"),
        format!("PATCH /admin/provider-groups/{g}"),
        "DELETE /admin/api-keys".to_owned(),
        "PUT /admin/api-keys".to_owned(),
        format!("POST /admin/api-keys/{k}"),
        format!("PATCH /admin/api-keys/{k}"),
        "GET /admin/providers/preset".to_owned(),
        "PUT /admin/providers/preset".to_owned(),
        "DELETE /admin/providers/custom".to_owned(),
        "GET /admin/providers/custom".to_owned(),
        "DELETE /admin/bindings".to_owned(),
        format!("POST /admin/bindings/{b}"),
        format!("PATCH /admin/bindings/{b}"),
        "PUT /admin/models".to_owned(),
        "DELETE /admin/models".to_owned(),
        "GET /admin/models/my-model".to_owned(),
        "POST /admin/models/my-model".to_owned(),
        "POST /admin/sync/outbox".to_owned(),
        "DELETE /admin/sync/outbox".to_owned(),
    ];
    for route in &wrong_methods {
        for auth in [admin(), bearer(&f.mk), Auth::None] {
            let body = Body::Json(json!({ "api_key": UPSTREAM_KEY }));
            probe
                .check(route, &auth, &body, 405, &["method_not_allowed"])
                .await;
        }
    }
    // Routes that do not exist.
    #[rustfmt::skip]
    let unknown = [
        format!("GET /admin/provider-groups/{g}/keys"),
        format!("POST /admin/provider-groups/{g}/api-keys"),
        "GET /admin/providers".to_owned(),
        "POST /admin/providers/preset/openai".to_owned(),
        "POST /admin/providers/openai".to_owned(),
        format!("POST /admin/api-keys/{k}/rotate"),
        format!("GET /admin/bindings/{b}/resolve"),
        "PUT /admin/models/a/b".to_owned(),
        "GET /admin/sync/outbox/1".to_owned(),
        "GET /admin/provider_groups".to_owned(),
        "GET /admin/apikeys".to_owned(),
    ];
    for route in &unknown {
        for auth in [admin(), Auth::None] {
            let body = Body::Json(json!({ "api_key": UPSTREAM_KEY }));
            probe.check(route, &auth, &body, 404, &["route_not_found"]).await;
        }
    }

    probe.finish_routing(&before).await;
}

// ---------------------------------------------------------------------------------------
// OpenAPI
// ---------------------------------------------------------------------------------------

async fn new_endpoints_are_documented(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = routing_snapshot(&app).await;
    let doc = app
        .request(Method::GET, "/openapi.json", None, None)
        .await
        .expect(200)
        .body;
    #[rustfmt::skip]
    let operations: &[(&str, &[&str])] = &[
        ("/admin/provider-groups", &["post", "get"]),
        ("/admin/provider-groups/{id}", &["get", "put", "delete"]),
        ("/admin/api-keys", &["post", "get"]),
        ("/admin/api-keys/{id}", &["get", "put", "delete"]),
        ("/admin/providers/preset", &["post"]),
        ("/admin/providers/custom", &["post"]),
        ("/admin/bindings", &["post", "get"]),
        ("/admin/bindings/{id}", &["get", "put", "delete"]),
        ("/admin/models", &["get", "post"]),
        ("/admin/models/{name}", &["put", "delete"]),
        ("/admin/sync/outbox", &["get"]),
    ];
    let mut missing = Vec::new();
    for (path, methods) in operations {
        for method in *methods {
            let op = &doc["paths"][*path][*method];
            if !op.is_object() {
                missing.push(format!("{} {path}: not documented", method.to_uppercase()));
                continue;
            }
            let responses = op["responses"].as_object().cloned().unwrap_or_default();
            if !responses.keys().any(|s| s.starts_with('4')) {
                missing.push(format!("{} {path}: no 4xx response", method.to_uppercase()));
            }
            if matches!(*method, "post" | "put") && !op["requestBody"].is_object() {
                missing.push(format!("{} {path}: no request body", method.to_uppercase()));
            }
        }
    }
    for (path, param) in [
        ("/admin/api-keys", "group_id"),
        ("/admin/api-keys", "status"),
        ("/admin/api-keys", "page_size"),
        ("/admin/models", "all"),
        ("/admin/models", "page"),
        ("/admin/sync/outbox", "status"),
        ("/admin/sync/outbox", "page_size"),
    ] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !params.iter().any(|p| p["name"] == param) {
            missing.push(format!("GET {path}: query parameter {param} not documented"));
        }
    }
    assert!(missing.is_empty(), "OpenAPI gaps:\n  {}", missing.join("\n  "));
    assert_eq!(routing_snapshot(&app).await, before);
}

// ---------------------------------------------------------------------------------------
// Duplicates sent at once
// ---------------------------------------------------------------------------------------

async fn concurrent_duplicates_are_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = fixture(&app).await;
    let before = routing_snapshot(&app).await;
    let mut failures = Vec::new();

    // The same new group, binding and model created by eight requests at once: one 201,
    // seven 409 — and a refused request does not overwrite the one that won.
    let kinds = ["chat", "embedding"];
    #[rustfmt::skip]
    let races: Vec<(&str, Vec<Value>)> = vec![
        ("POST /admin/provider-groups", (0..8).map(|i| json!({ "name": "racer", "type": "openai", "models": [format!("m{i}")] })).collect()),
        ("POST /admin/bindings", (0..8).map(|i| json!({ "namespace": "default", "public_model": "racer-model", "group_id": f.g, "weight": i + 1 })).collect()),
        ("POST /admin/models", (0..8).map(|i| json!({ "name": "racer-model", "kind": kinds[i % 2], "context_window": 1000 + i })).collect()),
    ];
    let auth = admin();
    for (route, bodies) in races {
        let requests: Vec<Body> = bodies.iter().map(|b| Body::Json(b.clone())).collect();
        let sends = requests.iter().map(|body| send(&app, route, &auth, body));
        let answers = futures_util::future::join_all(sends).await;
        let mut created = Vec::new();
        for (body, resp) in bodies.iter().zip(&answers) {
            match resp.status {
                201 => created.push(resp.body.clone()),
                409 if resp.body["error"]["code"] == "conflict" => {}
                _ => failures.push(format!("{route} {body}: {} {}", resp.status, shorten(&resp.text))),
            }
        }
        if created.len() != 1 {
            failures.push(format!(
                "{route}: {} of 8 identical creations answered 201 (expected one, and 409 for the others)",
                created.len()
            ));
        }
        // What is stored is what the winner was told.
        if let [winner] = created.as_slice() {
            let (stored, told) = match route {
                "POST /admin/models" => {
                    let list = app
                        .admin_get("/admin/models?page_size=500")
                        .await
                        .expect(200)
                        .body;
                    let items = list["items"].as_array().cloned().unwrap_or_default();
                    let model = items.into_iter().find(|m| m["name"] == "racer-model");
                    (
                        model.unwrap_or_default()["override"].clone(),
                        winner["override"].clone(),
                    )
                }
                "POST /admin/bindings" => {
                    let path = format!("/admin/bindings/{}", winner["id"]);
                    (app.admin_get(&path).await.expect(200).body, winner.clone())
                }
                _ => {
                    let path = format!("/admin/provider-groups/{}", winner["id"]);
                    (app.admin_get(&path).await.expect(200).body, winner.clone())
                }
            };
            if stored != told {
                failures.push(format!("{route}: stored {stored} but answered {told}"));
            }
        }
    }

    // Remove what the races created; everything else is as before.
    let bindings = app
        .admin_get("/admin/bindings?page_size=500")
        .await
        .expect(200)
        .body;
    for item in bindings["items"].as_array().expect("items") {
        if item["public_model"] == "racer-model" {
            app.admin_delete(&format!("/admin/bindings/{}", item["id"]))
                .await
                .expect(204);
        }
    }
    let groups = app
        .admin_get("/admin/provider-groups?page_size=500")
        .await
        .expect(200)
        .body;
    for item in groups["items"].as_array().expect("items") {
        if item["name"] == "racer" {
            app.admin_delete(&format!("/admin/provider-groups/{}", item["id"]))
                .await
                .expect(204);
        }
    }
    app.admin_delete("/admin/models/racer-model").await.expect(204);
    let after = routing_snapshot(&app).await;
    if after != before {
        let mut changes = Vec::new();
        diff(&before, &after, String::new(), &mut changes);
        failures.push(format!("left behind:\n      {}", changes.join("\n      ")));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n  "));
}
