//! Bad input on every endpoint: a 4xx in the error envelope, never a 500, and nothing
//! changes.
//!
//! Each test builds a little state, takes `state_snapshot()`, sends tables of bad requests
//! through a [`Probe`] — which records every wrong answer instead of stopping at the first,
//! so one run lists them all — then checks that the snapshot (masters, keys, namespaces,
//! bus) is unchanged and that no error body carries a secret the test created.
//!
//! Rows are written `("METHOD /path", credential, body, status, "code")`; the tables are
//! exempt from rustfmt so that one request stays one line.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, TestApp};
use crate::probe_support::*;
use ez_contract::time::now_unix;
use ez_control_plane::auth::jwt::{Claims, JwtKeys, Role};
use ez_control_plane::testing::Backend;

both_backends!(
    malformed_json_changes_nothing,
    wrong_content_type_is_415,
    wrong_types_and_unknown_fields_are_400,
    negative_and_huge_numbers_are_rejected,
    invalid_fields_are_400,
    bad_pagination_and_path_params_are_400,
    unknown_ids_are_404,
    another_tenants_keys_are_invisible,
    missing_and_wrong_credentials_are_401,
    wrong_role_is_403,
    namespace_rules_are_enforced,
    conflicts_and_limits_are_409,
    oversized_bodies_unknown_routes_and_methods,
);

// ---------------------------------------------------------------------------------------
// Request plumbing
// ---------------------------------------------------------------------------------------

impl Probe<'_> {
    /// Fails the test with every wrong answer, if the state differs from `before`, and
    /// if any error body carried one of `secrets`.
    async fn finish(self, before: &Value, secrets: &[&str]) {
        let after = self.app.state_snapshot().await;
        self.assert_none(&self.problems(before, &after, secrets));
        assert_eq!(&after, before);
    }
}

/// A well-formed token that no master or key has: `prefix` + 40 base62 characters.
fn unknown_token(prefix: &str) -> String {
    format!("{prefix}{}", "Zq7x".repeat(10))
}

fn claims(role: Role, master_id: Option<i64>, binding: &str, exp: i64) -> Claims {
    Claims {
        sub: master_id.map_or("admin".into(), |id| format!("master:{id}")),
        role,
        master_id,
        epoch: master_id.map(|_| 1),
        binding: binding.to_owned(),
        iat: now_unix() - 10,
        exp,
    }
}

/// Logs in with `body` and returns the session JWT.
async fn login(app: &TestApp, body: Value) -> String {
    send(app, "POST /auth/login", &Auth::None, &Body::Json(body))
        .await
        .expect(200)
        .str("token")
}

/// The usual fixture: `(master id, master key, key id, key, unused namespace id)`.
async fn setup(app: &TestApp) -> (i64, String, i64, String, i64) {
    let (m, mk) = app.create_master(json!({ "name": "acme" })).await;
    let (k, key) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    let ns = app.create_namespace("spare").await;
    (m, mk, k, key, ns)
}

/// Every endpoint that reads a JSON body, with a valid body and credential for it.
#[rustfmt::skip]
fn body_endpoints(m: i64, k: i64, ns: i64, mk: &str) -> Vec<(String, Auth, Value)> {
    vec![
        ("POST /auth/login".into(), Auth::None, json!({ "admin_token": ADMIN_TOKEN })),
        ("POST /admin/namespaces".into(), admin(), json!({ "name": "fresh" })),
        (format!("PUT /admin/namespaces/{ns}"), admin(), json!({ "description": "d" })),
        ("POST /admin/masters".into(), admin(), json!({ "name": "fresh" })),
        (format!("PUT /admin/masters/{m}"), admin(), json!({ "global_qps": 3 })),
        (format!("PUT /admin/masters/{m}/access"), admin(), json!({ "namespaces": ["default"] })),
        (format!("POST /admin/masters/{m}/keys"), admin(), json!({ "name": "fresh" })),
        (format!("PUT /admin/keys/{k}"), admin(), json!({ "name": "renamed" })),
        (format!("PUT /admin/keys/{k}/access"), admin(), json!({ "namespaces": ["default"] })),
        ("POST /v1/tokens".into(), bearer(mk), json!({ "name": "fresh" })),
        (format!("PUT /v1/tokens/{k}"), bearer(mk), json!({ "name": "renamed" })),
    ]
}

/// Every authenticated endpoint, with a valid body for it (`Value::Null`: none).
#[rustfmt::skip]
fn all_endpoints(m: i64, k: i64, ns: i64) -> Vec<(String, Value)> {
    vec![
        ("POST /admin/namespaces".into(), json!({ "name": "fresh" })),
        ("GET /admin/namespaces".into(), Value::Null),
        (format!("GET /admin/namespaces/{ns}"), Value::Null),
        (format!("PUT /admin/namespaces/{ns}"), json!({ "description": "d" })),
        (format!("DELETE /admin/namespaces/{ns}"), Value::Null),
        ("POST /admin/masters".into(), json!({ "name": "fresh" })),
        ("GET /admin/masters".into(), Value::Null),
        (format!("GET /admin/masters/{m}"), Value::Null),
        (format!("PUT /admin/masters/{m}"), json!({ "global_qps": 9 })),
        (format!("DELETE /admin/masters/{m}"), Value::Null),
        (format!("POST /admin/masters/{m}/rotate"), Value::Null),
        (format!("POST /admin/masters/{m}/revoke-keys"), Value::Null),
        (format!("PUT /admin/masters/{m}/access"), json!({ "namespaces": ["default"] })),
        (format!("POST /admin/masters/{m}/keys"), json!({ "name": "fresh" })),
        (format!("GET /admin/masters/{m}/keys"), Value::Null),
        (format!("GET /admin/keys/{k}"), Value::Null),
        (format!("PUT /admin/keys/{k}"), json!({ "name": "renamed" })),
        (format!("DELETE /admin/keys/{k}"), Value::Null),
        (format!("PUT /admin/keys/{k}/access"), json!({ "namespaces": ["default"] })),
        ("POST /admin/sync".into(), Value::Null),
        ("POST /v1/tokens".into(), json!({ "name": "fresh" })),
        ("GET /v1/tokens".into(), Value::Null),
        (format!("GET /v1/tokens/{k}"), Value::Null),
        (format!("PUT /v1/tokens/{k}"), json!({ "name": "renamed" })),
        (format!("DELETE /v1/tokens/{k}"), Value::Null),
        ("GET /v1/whoami".into(), Value::Null),
    ]
}

/// The endpoints that take a `{id}`, with a valid body, as templates over `{id}`.
#[rustfmt::skip]
const ID_ENDPOINTS: [(&str, &str, &str); 18] = [
    // (route, body, code when the id does not exist)
    ("GET /admin/namespaces/{id}", "", "namespace_not_found"),
    ("PUT /admin/namespaces/{id}", r#"{"description":"d"}"#, "namespace_not_found"),
    ("DELETE /admin/namespaces/{id}", "", "namespace_not_found"),
    ("GET /admin/masters/{id}", "", "master_not_found"),
    ("PUT /admin/masters/{id}", r#"{"global_qps":1}"#, "master_not_found"),
    ("DELETE /admin/masters/{id}", "", "master_not_found"),
    ("POST /admin/masters/{id}/rotate", "", "master_not_found"),
    ("POST /admin/masters/{id}/revoke-keys", "", "master_not_found"),
    ("PUT /admin/masters/{id}/access", r#"{"namespaces":["default"]}"#, "master_not_found"),
    ("POST /admin/masters/{id}/keys", "{}", "master_not_found"),
    ("GET /admin/masters/{id}/keys", "", "master_not_found"),
    ("GET /admin/keys/{id}", "", "key_not_found"),
    ("PUT /admin/keys/{id}", r#"{"name":"x"}"#, "key_not_found"),
    ("DELETE /admin/keys/{id}", "", "key_not_found"),
    ("PUT /admin/keys/{id}/access", r#"{"namespaces":["default"]}"#, "key_not_found"),
    ("GET /v1/tokens/{id}", "", "key_not_found"),
    ("PUT /v1/tokens/{id}", r#"{"name":"x"}"#, "key_not_found"),
    ("DELETE /v1/tokens/{id}", "", "key_not_found"),
];

/// `ID_ENDPOINTS` with `{id}` replaced: (route, credential, body, not-found code).
fn id_endpoints(id: &str, mk: &str) -> Vec<(String, Auth, Value, &'static str)> {
    ID_ENDPOINTS
        .iter()
        .map(|(template, body, code)| {
            let auth = if template.contains("/v1/") {
                bearer(mk)
            } else {
                admin()
            };
            let body = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(body).expect("valid body")
            };
            (template.replace("{id}", id), auth, body, *code)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Malformed bodies
// ---------------------------------------------------------------------------------------

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
        (format!("{{\"{key}\": \"\\ud800\"}}"), SYNTAX),
        (format!("{{\"{key}\": \"a\u{1}b\"}}"), SYNTAX),
        (format!("\u{feff}{text}"), SYNTAX),
        (String::new(), SYNTAX),
        ("   ".into(), SYNTAX),
        ("not json".into(), SYNTAX),
        ("null".into(), NOT_AN_OBJECT),
        ("42".into(), NOT_AN_OBJECT),
        ("true".into(), NOT_AN_OBJECT),
        ("\"text\"".into(), NOT_AN_OBJECT),
        ("[]".into(), NOT_AN_OBJECT),
        ("[\"x\"]".into(), NOT_AN_OBJECT),
        ("[".repeat(100_000) + &"]".repeat(100_000), DEEP),
        (format!("{{\"{key}\":{}", "[".repeat(100_000)), DEEP),
        ("{\"a\":".repeat(50_000) + "1" + &"}".repeat(50_000), DEEP),
    ]
}

async fn malformed_json_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    for (route, auth, valid) in body_endpoints(m, k, ns, &mk) {
        for (text, codes) in broken_json(&valid) {
            probe.check(&route, &auth, &raw_json(&text), 400, codes).await;
        }
    }

    // A JSON array holding the fields in declaration order is not an object either,
    // although serde's derived `Deserialize` would build the struct from it.
    let login = format!("[\"{ADMIN_TOKEN}\", null]");
    #[rustfmt::skip]
    let positional: Vec<(String, Auth, &str)> = vec![
        ("POST /auth/login".into(), Auth::None, &login),
        ("POST /admin/namespaces".into(), admin(), r#"["fresh", "", null]"#),
        ("POST /admin/masters".into(), admin(), r#"["fresh", null, null, null, null, null]"#),
        (format!("PUT /admin/masters/{m}"), admin(), r#"["renamed", null, null, null, null]"#),
        (format!("PUT /admin/keys/{k}"), admin(), r#"["renamed", null, null, null, null, null, null, null]"#),
        ("POST /v1/tokens".into(), bearer(&mk), r#"["fresh", null, null, null, null, null, null]"#),
    ];
    for (route, auth, text) in positional {
        probe
            .check(&route, &auth, &raw_json(text), 400, &["invalid_body"])
            .await;
    }

    probe.finish(&before, &[&mk, &key]).await;
}

async fn wrong_content_type_is_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = setup(&app).await;
    let before = app.state_snapshot().await;
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
    for (route, auth, valid) in body_endpoints(m, k, ns, &mk) {
        for content_type in types {
            let body = Body::Raw(content_type, valid.to_string());
            probe
                .check(&route, &auth, &body, 415, &["unsupported_media_type"])
                .await;
        }
        // No body at all on an endpoint that needs one.
        probe
            .check(&route, &auth, &Body::None, 415, &["unsupported_media_type"])
            .await;
    }

    probe.finish(&before, &[&mk, &key]).await;
}

// ---------------------------------------------------------------------------------------
// Schema and field rules
// ---------------------------------------------------------------------------------------

async fn wrong_types_and_unknown_fields_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    // Missing required fields, wrong JSON types (string for number, number for string,
    // object or scalar for list, non-string enum values), unknown enum variants, unknown
    // and read-only fields.
    #[rustfmt::skip]
    let cases: Vec<(String, Auth, Vec<Value>)> = vec![
        ("POST /auth/login".into(), Auth::None, vec![
            json!({}),
            json!({ "admin_token": null, "master_key": null }),
            json!({ "admin_token": ADMIN_TOKEN, "master_key": mk }),
            json!({ "admin_token": 5 }),
            json!({ "admin_token": [ADMIN_TOKEN] }),
            json!({ "master_key": { "key": mk } }),
            json!({ "admin_token": ADMIN_TOKEN, "remember_me": true }),
            json!({ "username": "admin", "password": "admin" }),
        ]),
        ("POST /admin/namespaces".into(), admin(), vec![
            json!({}),
            json!({ "name": null }),
            json!({ "name": 7 }),
            json!({ "name": ["fresh"] }),
            json!({ "name": { "value": "fresh" } }),
            json!({ "name": "fresh", "description": 5 }),
            json!({ "name": "fresh", "status": "archived" }),
            json!({ "name": "fresh", "status": true }),
            json!({ "name": "fresh", "id": 99 }),
            json!({ "name": "fresh", "Name": "fresh" }),
        ]),
        (format!("PUT /admin/namespaces/{ns}"), admin(), vec![
            json!({ "name": false }),
            json!({ "description": ["d"] }),
            json!({ "status": "deleted" }),
            json!({ "status": 1 }),
            json!({ "created_at": 1 }),
        ]),
        ("POST /admin/masters".into(), admin(), vec![
            json!({}),
            json!({ "group": "default" }),
            json!({ "name": 5 }),
            json!({ "name": null }),
            json!({ "name": ["fresh"] }),
            json!({ "name": "fresh", "group": 7 }),
            json!({ "name": "fresh", "max_child_keys": "5" }),
            json!({ "name": "fresh", "max_child_keys": true }),
            json!({ "name": "fresh", "global_qps": "10" }),
            json!({ "name": "fresh", "global_qps": [10] }),
            json!({ "name": "fresh", "namespaces": "default" }),
            json!({ "name": "fresh", "namespaces": { "default": true } }),
            json!({ "name": "fresh", "namespaces": [1, 2] }),
            json!({ "name": "fresh", "namespaces": [null] }),
            json!({ "name": "fresh", "default_namespace": ["default"] }),
            json!({ "name": "fresh", "status": "active" }),
            json!({ "name": "fresh", "epoch": 9 }),
            json!({ "name": "fresh", "master_key": "ezm-chosen" }),
            json!({ "name": "fresh", "token_digest": "00" }),
            json!({ "name": "fresh", "id": 1 }),
        ]),
        (format!("PUT /admin/masters/{m}"), admin(), vec![
            json!({ "name": 1 }),
            json!({ "status": "deleted" }),
            json!({ "status": "ACTIVE" }),
            json!({ "status": 0 }),
            json!({ "status": ["active"] }),
            json!({ "max_child_keys": "9" }),
            json!({ "global_qps": { "limit": 1 } }),
            json!({ "namespaces": ["default"] }),
            json!({ "epoch": 7 }),
            json!({ "token_prefix": "ezm-" }),
        ]),
        (format!("PUT /admin/masters/{m}/access"), admin(), vec![
            json!({ "namespaces": "default" }),
            json!({ "namespaces": [["default"]] }),
            json!({ "default_namespace": 1 }),
            json!({ "propagate": "yes" }),
            json!({ "propagate": 1 }),
            json!({ "namespaces": ["default"], "status": "active" }),
        ]),
        (format!("PUT /admin/keys/{k}/access"), admin(), vec![
            json!({ "namespaces": "default" }),
            json!({ "default_namespace": 5 }),
            json!({ "propagate": true }),
            json!({ "status": "active" }),
        ]),
    ];
    #[rustfmt::skip]
    let key_create = vec![
        json!({ "name": 1 }),
        json!({ "allow_ips": "10.0.0.0/8" }),
        json!({ "allow_ips": [10] }),
        json!({ "deny_ips": { "net": "10.0.0.0/8" } }),
        json!({ "expires_at": "tomorrow" }),
        json!({ "expires_at": true }),
        json!({ "qps": "10" }),
        json!({ "qps": [1] }),
        json!({ "namespaces": "default" }),
        json!({ "default_namespace": ["default"] }),
        json!({ "master_id": m }),
        json!({ "issued_by": "admin" }),
        json!({ "status": "active" }),
        json!({ "key": "sk-ez-chosen" }),
    ];
    #[rustfmt::skip]
    let key_update = vec![
        json!({ "name": ["x"] }),
        json!({ "status": "deleted" }),
        json!({ "status": true }),
        json!({ "status": { "value": "active" } }),
        json!({ "qps": "1" }),
        json!({ "expires_at": "never" }),
        json!({ "allow_ips": "0.0.0.0/0" }),
        json!({ "master_id": m + 1 }),
        json!({ "issued_at_epoch": 99 }),
        json!({ "token_digest": "00" }),
    ];
    let mut cases = cases;
    cases.push(("POST /v1/tokens".into(), bearer(&mk), key_create.clone()));
    cases.push((format!("POST /admin/masters/{m}/keys"), admin(), key_create));
    cases.push((format!("PUT /v1/tokens/{k}"), bearer(&mk), key_update.clone()));
    cases.push((format!("PUT /admin/keys/{k}"), admin(), key_update));
    for (route, auth, bodies) in cases {
        for body in bodies {
            probe.json(&route, &auth, body, 400, "invalid_body").await;
        }
    }
    // A field given twice.
    for (route, auth, text) in [
        (
            "POST /admin/masters".to_owned(),
            admin(),
            r#"{"name":"a1","name":"a2"}"#,
        ),
        (format!("PUT /v1/tokens/{k}"), bearer(&mk), r#"{"qps":1,"qps":2}"#),
    ] {
        probe
            .check(&route, &auth, &raw_json(text), 400, &["invalid_body"])
            .await;
    }

    probe.finish(&before, &[&mk, &key]).await;
}

async fn negative_and_huge_numbers_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, _) = setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let now = now_unix();

    // (route, credential, other fields the body needs, numeric fields)
    #[rustfmt::skip]
    let numeric: Vec<(String, Auth, &str, &[&str])> = vec![
        ("POST /admin/masters".into(), admin(), r#""name":"fresh","#, &["max_child_keys", "global_qps"]),
        (format!("PUT /admin/masters/{m}"), admin(), "", &["max_child_keys", "global_qps"]),
        ("POST /v1/tokens".into(), bearer(&mk), "", &["qps", "expires_at"]),
        (format!("POST /admin/masters/{m}/keys"), admin(), "", &["qps", "expires_at"]),
        (format!("PUT /v1/tokens/{k}"), bearer(&mk), "", &["qps", "expires_at"]),
        (format!("PUT /admin/keys/{k}"), admin(), "", &["qps", "expires_at"]),
    ];
    // Not an i64 at all: 400 invalid_body.
    let not_i64 = [
        "1e30",
        "-1e30",
        "1.5",
        "-0.5",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "100000000000000000000000000000000000000000",
    ];
    for (route, auth, prefix, fields) in &numeric {
        for field in *fields {
            for n in not_i64 {
                let text = format!("{{{prefix}\"{field}\":{n}}}");
                probe
                    .check(route, auth, &raw_json(&text), 400, &["invalid_body"])
                    .await;
            }
            // Beyond even f64: serde_json calls it a syntax error.
            let text = format!("{{{prefix}\"{field}\":1e400}}");
            let codes = ["invalid_json", "invalid_body"];
            probe.check(route, auth, &raw_json(&text), 400, &codes).await;
        }
    }

    // Negative limits: 400 invalid_field.
    for n in [-1, -1000, i64::MIN] {
        for field in ["max_child_keys", "global_qps"] {
            let mut create = json!({ "name": "fresh" });
            create[field] = json!(n);
            let (path, body) = (format!("PUT /admin/masters/{m}"), json!({ field: n }));
            let rows: Vec<Row> = vec![
                (
                    "POST /admin/masters".into(),
                    admin(),
                    create,
                    400,
                    "invalid_field",
                ),
                (path, admin(), body, 400, "invalid_field"),
            ];
            probe.rows(rows).await;
        }
        for (route, auth, _, _) in &numeric[2..] {
            let body = json!({ "qps": n });
            probe.json(route, auth, body, 400, "invalid_field").await;
        }
    }

    // Expiry: in the past → 422 expires_in_past; absurdly far ahead → 400 invalid_field.
    for (at, status, code) in [
        (now - 3600, 422, "expires_in_past"),
        (now, 422, "expires_in_past"),
        (1, 422, "expires_in_past"),
        (0, 422, "expires_in_past"),
        (-1, 422, "expires_in_past"),
        (i64::MIN, 422, "expires_in_past"),
        (i64::MAX, 400, "invalid_field"),
        // Milliseconds instead of seconds: tens of thousands of years ahead.
        (now * 1000, 400, "invalid_field"),
    ] {
        for (route, auth, _, _) in &numeric[2..] {
            let body = json!({ "expires_at": at });
            probe.json(route, auth, body, status, code).await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;
}

async fn invalid_fields_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    // Display names (masters, keys): trimmed, 1–128 characters, no control characters.
    let bad_names = [
        json!(""),
        json!("   "),
        json!("n".repeat(129)),
        json!("a\nb"),
        json!("a\u{0}b"),
        json!("tab\there"),
        json!("\u{7f}"),
    ];
    for name in &bad_names {
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("POST /admin/masters".into(), admin(), json!({ "name": name }), 400, "invalid_field"),
            (format!("PUT /admin/masters/{m}"), admin(), json!({ "name": name }), 400, "invalid_field"),
            ("POST /v1/tokens".into(), mka.clone(), json!({ "name": name }), 400, "invalid_field"),
            (format!("POST /admin/masters/{m}/keys"), admin(), json!({ "name": name }), 400, "invalid_field"),
            (format!("PUT /v1/tokens/{k}"), mka.clone(), json!({ "name": name }), 400, "invalid_field"),
            (format!("PUT /admin/keys/{k}"), admin(), json!({ "name": name }), 400, "invalid_field"),
        ];
        probe.rows(rows).await;
    }

    // Identifiers (namespace names, groups, namespace lists): 1–64 of [A-Za-z0-9_-], so
    // no dots (`namespace.model` addresses a namespace).
    let bad_identifiers = [
        json!(""),
        json!("team.a"),
        json!("a b"),
        json!("a/b"),
        json!("équipe"),
        json!("a\u{0}"),
        json!("x".repeat(65)),
    ];
    let access_routes = [
        (format!("PUT /admin/masters/{m}/access"), admin()),
        ("POST /v1/tokens".to_owned(), mka.clone()),
        (format!("POST /admin/masters/{m}/keys"), admin()),
        (format!("PUT /v1/tokens/{k}"), mka.clone()),
        (format!("PUT /admin/keys/{k}"), admin()),
        (format!("PUT /admin/keys/{k}/access"), admin()),
    ];
    for id in &bad_identifiers {
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("POST /admin/namespaces".into(), admin(), json!({ "name": id }), 400, "invalid_field"),
            (format!("PUT /admin/namespaces/{ns}"), admin(), json!({ "name": id }), 400, "invalid_field"),
            ("POST /admin/masters".into(), admin(), json!({ "name": "fresh", "group": id }), 400, "invalid_field"),
            (format!("PUT /admin/masters/{m}"), admin(), json!({ "group": id }), 400, "invalid_field"),
            ("POST /admin/masters".into(), admin(), json!({ "name": "fresh", "namespaces": [id] }), 400, "invalid_field"),
            ("POST /admin/masters".into(), admin(), json!({ "name": "fresh", "default_namespace": id }), 400, "invalid_field"),
        ];
        probe.rows(rows).await;
        for (route, auth) in &access_routes {
            for body in [json!({ "namespaces": [id] }), json!({ "default_namespace": id })] {
                probe.json(route, auth, body, 400, "invalid_field").await;
            }
        }
    }
    // Empty and over-long (257 entries) namespace lists.
    let too_many: Vec<String> = (0..257).map(|i| format!("ns-{i}")).collect();
    for list in [json!([]), json!(too_many)] {
        let body = json!({ "name": "fresh", "namespaces": list });
        probe
            .json("POST /admin/masters", &admin(), body, 400, "invalid_field")
            .await;
        for (route, auth) in &access_routes {
            let body = json!({ "namespaces": list });
            probe.json(route, auth, body, 400, "invalid_field").await;
        }
    }
    // Namespace descriptions: at most 1024 characters.
    let long = "d".repeat(1025);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("POST /admin/namespaces".into(), admin(), json!({ "name": "fresh", "description": long }), 400, "invalid_field"),
        (format!("PUT /admin/namespaces/{ns}"), admin(), json!({ "description": long }), 400, "invalid_field"),
    ];
    probe.rows(rows).await;

    // IP lists: addresses or CIDRs, at most 256 entries.
    let bad_nets = [
        "300.1.1.1",
        "10.0.0.0/33",
        "::1/129",
        "not-an-ip",
        "",
        "10.0.0.1/8/8",
        "10.0.0.0/-1",
        "10.0.0",
        "1.2.3.4\u{0}",
    ];
    let too_many: Vec<String> = (0..257)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    for (route, auth) in &access_routes[1..5] {
        for field in ["allow_ips", "deny_ips"] {
            for net in bad_nets {
                let body = json!({ field: ["10.0.0.0/8", net] });
                probe.json(route, auth, body, 400, "invalid_field").await;
            }
            let body = json!({ field: too_many });
            probe.json(route, auth, body, 400, "invalid_field").await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;

    // A NUL character in a free-text field is stored as sent or refused with a 400 (and
    // then changes nothing); it must never reach the database as a 500 (PostgreSQL
    // refuses NUL in TEXT).
    let mut failures = Vec::new();
    for (route, body) in [
        (
            "POST /admin/namespaces".to_owned(),
            json!({ "name": "nul-desc", "description": "a\u{0}b" }),
        ),
        (
            format!("PUT /admin/namespaces/{ns}"),
            json!({ "description": "c\u{0}d" }),
        ),
    ] {
        let before = app.state_snapshot().await;
        let expected = body["description"].clone();
        let resp = send(&app, &route, &admin(), &Body::Json(body)).await;
        let error = &resp.body["error"];
        match resp.status {
            200 | 201 => {
                let url = format!("/admin/namespaces/{}", resp.id());
                let stored = app.admin_get(&url).await.expect(200);
                if stored.body["description"] != expected {
                    failures.push(format!("{route}: stored {}", stored.text));
                }
            }
            400 if error["code"] == "invalid_field" && error["message"].is_string() => {
                if app.state_snapshot().await != before {
                    failures.push(format!("{route}: refused, but the state changed"));
                }
            }
            status => failures.push(format!("{route}: {status} {}", resp.text)),
        }
    }
    assert!(
        failures.is_empty(),
        "a NUL in a namespace description:\n  {}",
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// Queries, paths and ids
// ---------------------------------------------------------------------------------------

async fn bad_pagination_and_path_params_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, _, key, _) = setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    let lists = [
        ("GET /admin/namespaces".to_owned(), admin()),
        ("GET /admin/masters".to_owned(), admin()),
        (format!("GET /admin/masters/{m}/keys"), admin()),
        ("GET /v1/tokens".to_owned(), bearer(&mk)),
    ];
    let queries = [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1.5",
        "page=",
        "page=2147483648",
        "page=99999999999999999999",
        "page=1&page=2",
        "page=%00",
        "page_size=0",
        "page_size=-5",
        "page_size=501",
        "page_size=1000",
        "page_size=abc",
        "page_size=",
        "page_size=1e3",
        "page_size=99999999999999999999",
        "page=1&page_size=0",
    ];
    for (list, auth) in &lists {
        for query in queries {
            let route = format!("{list}?{query}");
            probe
                .check(&route, auth, &Body::None, 400, &["invalid_query"])
                .await;
        }
        // The largest page allowed answers 200 with no items, not a 500.
        let route = format!("{list}?page=2147483647&page_size=500");
        let resp = send(&app, &route, auth, &Body::None).await.expect(200);
        assert_eq!(resp.body["items"], json!([]), "{route}");
    }

    for id in [
        "abc",
        "1.5",
        "1e3",
        "0x10",
        "99999999999999999999",
        "%20",
        "%00",
        "-",
        "1%2F2",
        "null",
    ] {
        for (route, auth, body, _) in id_endpoints(id, &mk) {
            probe.json(&route, &auth, body, 400, "invalid_path").await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;
}

async fn unknown_ids_are_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, mk, _, key, _) = setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    for id in [999_999, 0, -1, i64::MAX, i64::MIN] {
        for (route, auth, body, code) in id_endpoints(&id.to_string(), &mk) {
            probe.json(&route, &auth, body, 404, code).await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;
}

// ---------------------------------------------------------------------------------------
// Tenancy and credentials
// ---------------------------------------------------------------------------------------

async fn another_tenants_keys_are_invisible(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, mk_a) = app.create_master(json!({ "name": "tenant-a" })).await;
    let (b, mk_b) = app.create_master(json!({ "name": "tenant-b" })).await;
    let (ka, key_a) = app.issue_key(&mk_a, json!({ "name": "a-key" })).await;
    let (kb, key_b) = app.issue_key(&mk_b, json!({ "name": "b-key" })).await;
    let jwt_b = login(&app, json!({ "master_key": mk_b })).await;
    let a_key_before = app.admin_get(&format!("/admin/keys/{ka}")).await.expect(200);
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    let path = format!("/v1/tokens/{ka}");
    for auth in [bearer(&mk_b), bearer(&jwt_b)] {
        let get = format!("GET {path}");
        probe.json(&get, &auth, Value::Null, 404, "key_not_found").await;
        for body in [
            json!({ "name": "stolen" }),
            json!({ "status": "revoked" }),
            json!({ "status": "suspended" }),
            json!({ "qps": 1 }),
            json!({ "allow_ips": ["203.0.113.7"] }),
            json!({ "namespaces": ["default"] }),
            json!({ "expires_at": now_unix() + 3600 }),
            json!({ "expires_at": null }),
        ] {
            let put = format!("PUT {path}");
            probe.json(&put, &auth, body, 404, "key_not_found").await;
        }
        let delete = format!("DELETE {path}");
        probe
            .json(&delete, &auth, Value::Null, 404, "key_not_found")
            .await;
        // Its own list shows exactly its own key.
        let list = send(&app, "GET /v1/tokens", &auth, &Body::None).await.expect(200);
        assert_eq!(list.body["total"], 1, "{}", list.text);
        assert_eq!(list.body["items"][0]["id"], kb, "{}", list.text);
    }
    let list = app
        .admin_get(&format!("/admin/masters/{b}/keys"))
        .await
        .expect(200);
    assert_eq!(list.body["total"], 1, "{}", list.text);
    assert_eq!(list.body["items"][0]["id"], kb, "{}", list.text);

    // The other tenant's key is untouched and still works.
    let a_key_after = app.admin_get(&format!("/admin/keys/{ka}")).await.expect(200);
    assert_eq!(a_key_after.body, a_key_before.body);
    let who = app.whoami(&key_a).await.expect(200);
    assert_eq!(who.body["type"], "key");
    assert_eq!(who.body["status"], "active");
    probe
        .finish(&before, &[&mk_a, &mk_b, &key_a, &key_b, &jwt_b])
        .await;
}

async fn missing_and_wrong_credentials_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = setup(&app).await;
    let master_jwt = login(&app, json!({ "master_key": mk })).await;
    // Child keys that exist but do not validate (SPEC §4), for whoami.
    let (revoked, revoked_key) = app.issue_key(&mk, json!({ "name": "revoked" })).await;
    app.delete(&format!("/v1/tokens/{revoked}"), &mk)
        .await
        .expect(200);
    let (paused, paused_key) = app.issue_key(&mk, json!({ "name": "paused" })).await;
    let body = json!({ "status": "suspended" });
    app.put(&format!("/v1/tokens/{paused}"), &mk, body)
        .await
        .expect(200);
    let body = json!({ "name": "fenced", "allow_ips": ["203.0.113.0/24"] });
    let (_, fenced_key) = app.issue_key(&mk, body).await;
    let (m2, mk2) = app.create_master(json!({ "name": "suspended" })).await;
    let (_, orphan_key) = app.issue_key(&mk2, json!({})).await;
    let body = json!({ "status": "suspended" });
    app.admin_put(&format!("/admin/masters/{m2}"), body)
        .await
        .expect(200);
    let (m3, mk3) = app.create_master(json!({ "name": "bumped" })).await;
    let (_, old_key) = app.issue_key(&mk3, json!({})).await;
    let url = format!("/admin/masters/{m3}/revoke-keys");
    app.admin_post(&url, json!({})).await.expect(200);

    // Session tokens: signed with another secret, tampered, expired, stale.
    let now = now_unix();
    let real = app.state.auth.jwt();
    let other = JwtKeys::new(b"another-secret-another-secret-another-secret-0123456789");
    let admin_binding = app.state.auth.admin_binding().to_owned();
    let issue = |keys: &JwtKeys, claims: Claims| keys.issue(&claims).expect("jwt");
    let unbound = "0000000000000000";
    let forged_admin = issue(&other, claims(Role::Admin, None, &admin_binding, now + 3600));
    let forged_master = issue(&other, claims(Role::Master, Some(m), unbound, now + 3600));
    let expired_admin = issue(real, claims(Role::Admin, None, &admin_binding, now - 3600));
    let stale_admin = issue(real, claims(Role::Admin, None, "ffffffffffffffff", now + 3600));
    let ghost_master = issue(real, claims(Role::Master, Some(999_999), unbound, now + 3600));
    let mut no_id = claims(Role::Master, Some(m), unbound, now + 3600);
    no_id.master_id = None;
    let master_without_id = issue(real, no_id);
    let tampered = {
        let mut parts: Vec<String> = master_jwt.split('.').map(str::to_owned).collect();
        let last = parts[1].pop().expect("payload");
        parts[1].push(if last == 'A' { 'B' } else { 'A' });
        parts.join(".")
    };
    let before = app.state_snapshot().await;
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
        (bearer(&"A".repeat(16 * 1024)), INVALID),
        (bearer(&unknown_token("ezm-")), INVALID),
        (bearer(&mk[..mk.len() - 1]), INVALID),
        (bearer("ezm-"), INVALID),
        (bearer("sk-ez-"), INVALID),
        (bearer("a.b.c"), INVALID),
        (bearer(&forged_admin), INVALID),
        (bearer(&forged_master), INVALID),
        (bearer(&tampered), INVALID),
        (bearer(&ghost_master), INVALID),
        (bearer(&master_without_id), INVALID),
        (bearer(&expired_admin), &["token_expired"]),
        (bearer(&stale_admin), &["token_revoked"]),
        (Auth::Header("x-api-key", "not-a-token".into()), INVALID),
        (Auth::Header("x-goog-api-key", unknown_token("ezm-")), INVALID),
        // A well-formed child key that does not exist is no credential either (whoami
        // names the validation failure, `key_not_found`).
        (bearer(&unknown_token("sk-ez-")), &["invalid_credentials", "key_not_found"]),
    ];
    let endpoints = all_endpoints(m, k, ns);
    for (auth, codes) in &cases {
        for (route, body) in &endpoints {
            let body = Body::from_value(body);
            probe.check(route, auth, &body, 401, codes).await;
        }
    }

    // whoami names why a child key is refused.
    for (key, code) in [
        (&revoked_key, "key_revoked"),
        (&paused_key, "key_disabled"),
        (&fenced_key, "ip_denied"),
        (&orphan_key, "master_suspended"),
        (&old_key, "key_revoked"),
    ] {
        let auth = bearer(key);
        probe.json("GET /v1/whoami", &auth, Value::Null, 401, code).await;
    }

    // Logging in with a wrong credential.
    for body in [
        json!({ "admin_token": "wrong" }),
        json!({ "admin_token": "" }),
        json!({ "admin_token": mk }),
        json!({ "admin_token": master_jwt }),
        json!({ "master_key": unknown_token("ezm-") }),
        json!({ "master_key": "garbage" }),
        json!({ "master_key": "" }),
        json!({ "master_key": key }),
        json!({ "master_key": ADMIN_TOKEN }),
        json!({ "master_key": master_jwt }),
    ] {
        let route = "POST /auth/login";
        probe.json(route, &Auth::None, body, 401, INVALID[0]).await;
    }

    #[rustfmt::skip]
    let secrets: &[&str] = &[
        &mk, &mk2, &mk3, &key, &master_jwt, &revoked_key, &paused_key, &fenced_key,
        &orphan_key, &old_key, ADMIN_TOKEN,
    ];
    probe.finish(&before, secrets).await;
}

async fn wrong_role_is_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = setup(&app).await;
    let master_jwt = login(&app, json!({ "master_key": mk })).await;
    let admin_jwt = login(&app, json!({ "admin_token": ADMIN_TOKEN })).await;
    // A suspended master, with a session opened before the suspension.
    let (paused, paused_mk) = app.create_master(json!({ "name": "paused" })).await;
    let (paused_k, paused_key) = app.issue_key(&paused_mk, json!({ "name": "pk" })).await;
    let paused_jwt = login(&app, json!({ "master_key": paused_mk })).await;
    let body = json!({ "status": "suspended" });
    app.admin_put(&format!("/admin/masters/{paused}"), body)
        .await
        .expect(200);
    // A rotated master: the old key and the old session are dead.
    let (rotated, old_mk) = app.create_master(json!({ "name": "rotated" })).await;
    let old_jwt = login(&app, json!({ "master_key": old_mk })).await;
    let url = format!("/admin/masters/{rotated}/rotate");
    let new_mk = app
        .admin_post(&url, json!({}))
        .await
        .expect(200)
        .str("master_key");
    // A master whose keys were revoked by an epoch bump: its earlier session is dead too.
    let (bumped, bumped_mk) = app.create_master(json!({ "name": "bumped" })).await;
    let bumped_jwt = login(&app, json!({ "master_key": bumped_mk })).await;
    let url = format!("/admin/masters/{bumped}/revoke-keys");
    app.admin_post(&url, json!({})).await.expect(200);
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    let endpoints = all_endpoints(m, k, ns);
    let on = |prefix: &str| -> Vec<(String, Value)> {
        let prefix = format!(" {prefix}");
        endpoints
            .iter()
            .filter(|(r, _)| r.contains(&prefix))
            .cloned()
            .collect()
    };
    let (admin_endpoints, master_endpoints) = (on("/admin"), on("/v1/tokens"));

    // Masters and child keys on /admin/*.
    for auth in [
        bearer(&mk),
        bearer(&master_jwt),
        Auth::Header("x-api-key", mk.clone()),
        bearer(&key),
    ] {
        for (route, body) in &admin_endpoints {
            let body = Body::from_value(body);
            probe.check(route, &auth, &body, 403, &["admin_required"]).await;
        }
    }
    // The admin and child keys on /v1/tokens*.
    for auth in [admin(), bearer(&admin_jwt), bearer(&key), bearer(&paused_key)] {
        for (route, body) in &master_endpoints {
            let body = Body::from_value(body);
            probe.check(route, &auth, &body, 403, &["master_required"]).await;
        }
    }
    // A suspended master, by key or by an earlier session.
    #[rustfmt::skip]
    let paused_routes: Vec<(String, Value)> = vec![
        ("POST /v1/tokens".into(), json!({ "name": "fresh" })),
        ("GET /v1/tokens".into(), Value::Null),
        (format!("GET /v1/tokens/{paused_k}"), Value::Null),
        (format!("PUT /v1/tokens/{paused_k}"), json!({ "status": "active" })),
        (format!("DELETE /v1/tokens/{paused_k}"), Value::Null),
    ];
    for auth in [bearer(&paused_mk), bearer(&paused_jwt)] {
        for (route, body) in &paused_routes {
            let body = Body::from_value(body);
            probe.check(route, &auth, &body, 403, &["master_suspended"]).await;
        }
    }
    let body = json!({ "master_key": paused_mk });
    probe
        .json("POST /auth/login", &Auth::None, body, 403, "master_suspended")
        .await;
    // The dead credentials of a rotated master and dead sessions after an epoch bump.
    for (auth, code) in [
        (bearer(&old_mk), "invalid_credentials"),
        (bearer(&old_jwt), "token_revoked"),
        (bearer(&bumped_jwt), "token_revoked"),
    ] {
        for (route, body) in &master_endpoints {
            let body = Body::from_value(body);
            probe.check(route, &auth, &body, 401, &[code]).await;
        }
    }
    let body = json!({ "master_key": old_mk });
    probe
        .json("POST /auth/login", &Auth::None, body, 401, "invalid_credentials")
        .await;

    #[rustfmt::skip]
    let secrets: &[&str] = &[
        &mk, &key, &master_jwt, &admin_jwt, &paused_mk, &paused_key, &paused_jwt,
        &old_mk, &old_jwt, &new_mk, &bumped_mk, &bumped_jwt, ADMIN_TOKEN,
    ];
    probe.finish(&before, secrets).await;
}

// ---------------------------------------------------------------------------------------
// Business rules
// ---------------------------------------------------------------------------------------

async fn namespace_rules_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let namespaces = app.admin_get("/admin/namespaces").await.expect(200).body;
    let default = namespaces["items"]
        .as_array()
        .and_then(|items| items.iter().find(|n| n["name"] == "default"))
        .and_then(|n| n["id"].as_i64())
        .expect("the default namespace exists");
    let team_a = app.create_namespace("team-a").await;
    let team_b = app.create_namespace("team-b").await;
    let body = json!({ "name": "acme", "namespaces": ["default", "team-a"] });
    let (m, mk) = app.create_master(body).await;
    let (k, key) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // Unknown namespaces.
        ("POST /admin/masters".into(), admin(), json!({ "name": "x", "namespaces": ["nope"] }), 422, "namespace_not_found"),
        ("POST /admin/masters".into(), admin(), json!({ "name": "x", "default_namespace": "nope" }), 422, "namespace_not_found"),
        (format!("PUT /admin/masters/{m}/access"), admin(), json!({ "namespaces": ["default", "nope"] }), 422, "namespace_not_found"),
        (format!("PUT /admin/masters/{m}/access"), admin(), json!({ "default_namespace": "nope" }), 422, "namespace_not_found"),
        ("POST /v1/tokens".into(), mka.clone(), json!({ "namespaces": ["nope"] }), 422, "namespace_not_found"),
        (format!("POST /admin/masters/{m}/keys"), admin(), json!({ "default_namespace": "nope" }), 422, "namespace_not_found"),
        (format!("PUT /v1/tokens/{k}"), mka.clone(), json!({ "namespaces": ["nope"] }), 422, "namespace_not_found"),
        (format!("PUT /admin/keys/{k}/access"), admin(), json!({ "namespaces": ["nope"] }), 422, "namespace_not_found"),
        // A key's namespaces must be a subset of its master's.
        ("POST /v1/tokens".into(), mka.clone(), json!({ "namespaces": ["team-b"] }), 422, "namespace_not_allowed"),
        ("POST /v1/tokens".into(), mka.clone(), json!({ "default_namespace": "team-b" }), 422, "namespace_not_allowed"),
        (format!("POST /admin/masters/{m}/keys"), admin(), json!({ "namespaces": ["default", "team-b"] }), 422, "namespace_not_allowed"),
        (format!("PUT /v1/tokens/{k}"), mka.clone(), json!({ "namespaces": ["team-b"] }), 422, "namespace_not_allowed"),
        (format!("PUT /admin/keys/{k}"), admin(), json!({ "default_namespace": "team-b" }), 422, "namespace_not_allowed"),
        (format!("PUT /admin/keys/{k}/access"), admin(), json!({ "namespaces": ["team-a", "team-b"] }), 422, "namespace_not_allowed"),
        // The default namespace must be one of the list.
        ("POST /admin/masters".into(), admin(), json!({ "name": "x", "default_namespace": "team-b", "namespaces": ["team-a"] }), 422, "default_namespace_not_in_namespaces"),
        (format!("PUT /admin/masters/{m}/access"), admin(), json!({ "default_namespace": "default", "namespaces": ["team-a"] }), 422, "default_namespace_not_in_namespaces"),
        ("POST /v1/tokens".into(), mka.clone(), json!({ "default_namespace": "default", "namespaces": ["team-a"] }), 422, "default_namespace_not_in_namespaces"),
        (format!("PUT /admin/keys/{k}/access"), admin(), json!({ "default_namespace": "team-a", "namespaces": ["default"] }), 422, "default_namespace_not_in_namespaces"),
        // Narrowing a master below its keys needs `propagate`.
        (format!("PUT /admin/masters/{m}/access"), admin(), json!({ "default_namespace": "team-a", "namespaces": ["team-a"] }), 409, "keys_outside_namespaces"),
        // Namespaces in use can be neither deleted nor renamed; names are unique.
        (format!("DELETE /admin/namespaces/{default}"), admin(), Value::Null, 409, "namespace_in_use"),
        (format!("DELETE /admin/namespaces/{team_a}"), admin(), Value::Null, 409, "namespace_in_use"),
        (format!("PUT /admin/namespaces/{team_a}"), admin(), json!({ "name": "team-z" }), 409, "namespace_in_use"),
        (format!("PUT /admin/namespaces/{default}"), admin(), json!({ "name": "standard" }), 409, "namespace_in_use"),
        ("POST /admin/namespaces".into(), admin(), json!({ "name": "team-a" }), 409, "conflict"),
        ("POST /admin/namespaces".into(), admin(), json!({ "name": " default " }), 409, "conflict"),
        (format!("PUT /admin/namespaces/{team_b}"), admin(), json!({ "name": "team-a" }), 409, "conflict"),
    ];
    probe.rows(rows).await;
    probe.finish(&before, &[&mk, &key]).await;

    // "In use" means named by a master or a key, exactly: `team_a` differs from the
    // `team-a` in use only by a character that SQL LIKE reads as a wildcard.
    let lookalike = app.create_namespace("team_a").await;
    let resp = app.admin_delete(&format!("/admin/namespaces/{lookalike}")).await;
    assert_eq!(
        resp.status, 204,
        "deleting the unused namespace team_a while team-a is in use: {}",
        resp.text
    );
}

async fn conflicts_and_limits_are_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, mk) = app.create_master(json!({ "name": "acme" })).await;
    let (other, _) = app.create_master(json!({ "name": "globex" })).await;
    let (_, key1) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    let (k2, key2) = app.issue_key(&mk, json!({ "name": "k2" })).await;
    let (revoked, revoked_key) = app.issue_key(&mk, json!({ "name": "gone" })).await;
    app.delete(&format!("/v1/tokens/{revoked}"), &mk)
        .await
        .expect(200);
    let body = json!({ "name": "small", "max_child_keys": 1 });
    let (small, small_mk) = app.create_master(body).await;
    let (_, small_key) = app.issue_key(&small_mk, json!({})).await;
    let body = json!({ "name": "zero", "max_child_keys": 0 });
    let (zero, zero_mk) = app.create_master(body).await;
    let (paused, paused_mk) = app.create_master(json!({ "name": "paused" })).await;
    let body = json!({ "status": "suspended" });
    app.admin_put(&format!("/admin/masters/{paused}"), body)
        .await
        .expect(200);
    let (deleted, deleted_mk) = app.create_master(json!({ "name": "deleted" })).await;
    let (deleted_k, deleted_key) = app.issue_key(&deleted_mk, json!({})).await;
    app.admin_delete(&format!("/admin/masters/{deleted}"))
        .await
        .expect(200);
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // Unique names.
        ("POST /admin/masters".into(), admin(), json!({ "name": "acme" }), 409, "conflict"),
        ("POST /admin/masters".into(), admin(), json!({ "name": "  acme  " }), 409, "conflict"),
        (format!("PUT /admin/masters/{other}"), admin(), json!({ "name": "acme" }), 409, "conflict"),
        ("POST /v1/tokens".into(), mka.clone(), json!({ "name": "k1" }), 409, "conflict"),
        (format!("PUT /v1/tokens/{k2}"), mka.clone(), json!({ "name": "k1" }), 409, "conflict"),
        (format!("PUT /admin/keys/{k2}"), admin(), json!({ "name": " k1 " }), 409, "conflict"),
        // max_child_keys.
        ("POST /v1/tokens".into(), bearer(&small_mk), json!({}), 409, "limit_reached"),
        (format!("POST /admin/masters/{small}/keys"), admin(), json!({}), 409, "limit_reached"),
        ("POST /v1/tokens".into(), bearer(&zero_mk), json!({ "name": "first" }), 409, "limit_reached"),
        (format!("POST /admin/masters/{zero}/keys"), admin(), json!({}), 409, "limit_reached"),
        // A revoked key is final.
        (format!("PUT /admin/keys/{revoked}"), admin(), json!({ "name": "back" }), 409, "key_revoked"),
        (format!("PUT /admin/keys/{revoked}"), admin(), json!({ "status": "active" }), 409, "key_revoked"),
        (format!("PUT /admin/keys/{revoked}"), admin(), json!({ "status": "suspended" }), 409, "key_revoked"),
        (format!("PUT /admin/keys/{revoked}/access"), admin(), json!({ "namespaces": ["default"] }), 409, "key_revoked"),
        (format!("PUT /v1/tokens/{revoked}"), mka.clone(), json!({ "status": "active" }), 409, "key_revoked"),
        (format!("PUT /v1/tokens/{revoked}"), mka.clone(), json!({ "qps": 5 }), 409, "key_revoked"),
        (format!("PUT /admin/keys/{deleted_k}"), admin(), json!({ "status": "active" }), 409, "key_revoked"),
        // No new keys for a suspended or deleted master.
        (format!("POST /admin/masters/{paused}/keys"), admin(), json!({}), 409, "master_suspended"),
        (format!("POST /admin/masters/{deleted}/keys"), admin(), json!({}), 409, "master_suspended"),
    ];
    probe.rows(rows).await;
    // Revoking a revoked key again is a no-op: 200, and no change.
    app.delete(&format!("/v1/tokens/{revoked}"), &mk)
        .await
        .expect(200);
    app.admin_delete(&format!("/admin/keys/{revoked}"))
        .await
        .expect(200);

    #[rustfmt::skip]
    let secrets: &[&str] = &[
        &mk, &key1, &key2, &revoked_key, &small_mk, &small_key, &zero_mk, &paused_mk,
        &deleted_mk, &deleted_key,
    ];
    probe.finish(&before, secrets).await;
}

// ---------------------------------------------------------------------------------------
// Transport: body size, routes, methods
// ---------------------------------------------------------------------------------------

async fn oversized_bodies_unknown_routes_and_methods(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, _) = setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    // Over the 10 MiB limit: 413, whatever the body holds.
    let huge_name = format!("{{\"name\":\"{}\"}}", "a".repeat(11 * 1024 * 1024));
    let huge_garbage = "x".repeat(10 * 1024 * 1024 + 1);
    for (route, auth) in [
        ("POST /admin/masters".to_owned(), admin()),
        ("POST /auth/login".to_owned(), Auth::None),
        (format!("PUT /v1/tokens/{k}"), mka.clone()),
        (format!("POST /admin/masters/{m}/keys"), admin()),
    ] {
        for text in [&huge_name, &huge_garbage] {
            let (status, body) = send_oversized(&app, &route, &auth, text).await;
            assert_eq!(status, 413, "{route}: {body}");
            let body: Value = serde_json::from_str(&body).expect("an error envelope");
            assert_eq!(body["error"]["code"], "payload_too_large", "{route}");
        }
    }
    // Just under the limit: an ordinary validation error.
    let big_name = format!("{{\"name\":\"{}\"}}", "a".repeat(9 * 1024 * 1024));
    probe
        .check(
            "POST /admin/masters",
            &admin(),
            &raw_json(&big_name),
            400,
            &["invalid_field"],
        )
        .await;

    // Unknown routes, with and without credentials.
    for path in [
        "/admin/nope",
        "/nope",
        "/admin/masters/",
        "/admin/masters/1/explode",
        "/v1/tokens/1/extra",
        "/v2/tokens",
        "/admin//masters",
        "/admin/keys",
        "/v1/tokens/",
        "/%00",
    ] {
        for auth in [admin(), mka.clone(), Auth::None] {
            let route = format!("GET {path}");
            probe
                .check(&route, &auth, &Body::None, 404, &["route_not_found"])
                .await;
        }
    }
    // Wrong methods on existing routes.
    for route in [
        "PATCH /admin/masters".to_owned(),
        "DELETE /admin/masters".to_owned(),
        "PUT /admin/masters".to_owned(),
        format!("POST /admin/masters/{m}"),
        format!("PATCH /admin/masters/{m}"),
        format!("GET /admin/masters/{m}/rotate"),
        format!("DELETE /admin/masters/{m}/revoke-keys"),
        format!("GET /admin/masters/{m}/access"),
        format!("DELETE /admin/masters/{m}/keys"),
        format!("POST /admin/keys/{k}"),
        format!("POST /admin/keys/{k}/access"),
        "DELETE /admin/namespaces".to_owned(),
        "POST /admin/namespaces/1".to_owned(),
        "GET /admin/sync".to_owned(),
        "GET /auth/login".to_owned(),
        "PUT /auth/login".to_owned(),
        "POST /v1/whoami".to_owned(),
        "DELETE /v1/tokens".to_owned(),
        format!("PATCH /v1/tokens/{k}"),
        format!("POST /v1/tokens/{k}"),
    ] {
        for auth in [admin(), mka.clone(), Auth::None] {
            let body = raw_json(r#"{"name":"x"}"#);
            probe
                .check(&route, &auth, &body, 405, &["method_not_allowed"])
                .await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;
}

/// Sends an oversized body the way a careful client does: headers first with `Expect:
/// 100-continue`, the body only if the server asks for it. The server must refuse from
/// `Content-Length` alone, so the body is never uploaded. Returns (status, body).
async fn send_oversized(app: &TestApp, route_: &str, auth: &Auth, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (method, path) = route(route_);
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let auth_header = match auth {
        Auth::None => String::new(),
        Auth::Bearer(token) => format!("authorization: Bearer {token}\r\n"),
        Auth::Header(name, value) => format!("{name}: {value}\r\n"),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\n{auth_header}content-type: application/json\r\n\
         content-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
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
