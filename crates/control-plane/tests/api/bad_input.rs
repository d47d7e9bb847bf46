//! Bad input on every endpoint: a 4xx in the error envelope, never a 500, and nothing
//! changes.
//!
//! Each test builds a little state, takes `state_snapshot()`, sends a table of bad
//! requests through a [`Probe`] (which records every wrong answer instead of stopping at
//! the first, so one run lists them all), then checks that the snapshot is unchanged and
//! that no error body carries a secret the test created.

use reqwest::Method;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, Resp, TestApp};
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

/// The credential a request presents.
#[derive(Clone, Debug)]
enum Auth {
    None,
    Bearer(String),
    /// A raw header (`authorization: Basic …`, `x-api-key: …`).
    Header(&'static str, String),
}

fn bearer(token: &str) -> Auth {
    Auth::Bearer(token.to_owned())
}

fn admin() -> Auth {
    bearer(ADMIN_TOKEN)
}

/// The body a request carries.
#[derive(Clone, Debug)]
enum Body {
    None,
    Json(Value),
    /// Raw bytes with an optional content type (`None`: no Content-Type header).
    Raw(Option<&'static str>, String),
}

fn raw_json(text: &str) -> Body {
    Body::Raw(Some("application/json"), text.to_owned())
}

async fn send(app: &TestApp, method: Method, path: &str, auth: &Auth, body: &Body) -> Resp {
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    req = match auth {
        Auth::None => req,
        Auth::Bearer(token) => req.header("authorization", format!("Bearer {token}")),
        Auth::Header(name, value) => req.header(*name, value.as_str()),
    };
    req = match body {
        Body::None => req,
        Body::Json(value) => req.json(value),
        Body::Raw(content_type, text) => {
            let req = match content_type {
                Some(ct) => req.header("content-type", *ct),
                None => req,
            };
            req.body(text.clone())
        }
    };
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        body,
        text,
    }
}

/// Sends requests and collects every answer that is not the expected error envelope.
struct Probe<'a> {
    app: &'a TestApp,
    failures: Vec<String>,
    bodies: Vec<String>,
    sent: usize,
}

fn shorten(text: &str) -> String {
    if text.len() <= 300 {
        return text.to_owned();
    }
    let mut end = 300;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl<'a> Probe<'a> {
    fn new(app: &'a TestApp) -> Probe<'a> {
        Probe {
            app,
            failures: Vec::new(),
            bodies: Vec::new(),
            sent: 0,
        }
    }

    /// Sends one request and checks: the status, the error code (one of `codes`), the
    /// envelope (`code`, non-empty `message` and `type`), no 5xx, an `X-Request-ID`.
    async fn expect_any(
        &mut self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: &Body,
        status: u16,
        codes: &[&str],
    ) -> Resp {
        let resp = send(self.app, method.clone(), path, auth, body).await;
        self.sent += 1;
        let what = format!(
            "{method} {path} (auth {}, body {})",
            describe_auth(auth),
            describe_body(body)
        );
        let error = &resp.body["error"];
        let mut problems = Vec::new();
        if resp.status >= 500 {
            problems.push("a server error".to_owned());
        }
        if resp.status != status {
            problems.push(format!("status {} instead of {status}", resp.status));
        }
        if !codes.iter().any(|c| error["code"] == *c) {
            problems.push(format!("code {} instead of {codes:?}", error["code"]));
        }
        if !error["message"].as_str().is_some_and(|m| !m.is_empty()) {
            problems.push("no error.message".to_owned());
        }
        if !error["type"].as_str().is_some_and(|t| !t.is_empty()) {
            problems.push("no error.type".to_owned());
        }
        if !resp.headers.contains_key("x-request-id") {
            problems.push("no X-Request-ID header".to_owned());
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "{what}: {} — body: {}",
                problems.join(", "),
                shorten(&resp.text)
            ));
        }
        self.bodies.push(resp.text.clone());
        resp
    }

    async fn expect(
        &mut self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: &Body,
        status: u16,
        code: &str,
    ) -> Resp {
        self.expect_any(method, path, auth, body, status, &[code])
            .await
    }

    /// `expect` with a JSON body (or none for `Value::Null`).
    async fn json(
        &mut self,
        method: Method,
        path: &str,
        auth: &Auth,
        body: Value,
        status: u16,
        code: &str,
    ) -> Resp {
        let body = if body.is_null() {
            Body::None
        } else {
            Body::Json(body)
        };
        self.expect(method, path, auth, &body, status, code).await
    }

    /// Fails the test with every wrong answer, if the state differs from `before`
    /// (masters, keys, namespaces, bus), and if any error body carried a secret.
    async fn finish(self, before: &Value, secrets: &[&str]) {
        let mut failures = self.failures;
        let after = self.app.state_snapshot().await;
        if &after != before {
            let mut changes = Vec::new();
            diff(before, &after, String::new(), &mut changes);
            failures.push(format!(
                "the rejected requests changed the state:\n      {}",
                changes.join("\n      ")
            ));
        }
        for secret in secrets {
            for body in &self.bodies {
                if body.contains(secret) {
                    failures.push(format!(
                        "an error body contains a secret ({}…): {}",
                        &secret[..8],
                        shorten(body)
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} problem(s) with {} bad requests:\n  {}",
            failures.len(),
            self.sent,
            failures.join("\n  ")
        );
        assert_eq!(&after, before);
    }
}

/// The paths where two JSON values differ (at most 20).
fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    if out.len() >= 20 {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (l, r) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                diff(l, r, format!("{path}/{key}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let (l, r) = (
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                );
                diff(l, r, format!("{path}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!(
            "{path}: {} -> {}",
            shorten(&a.to_string()),
            shorten(&b.to_string())
        )),
        _ => {}
    }
}

fn describe_auth(auth: &Auth) -> String {
    let hide = |t: &str| {
        if t.len() > 12 {
            format!("{}…", &t[..12])
        } else {
            t.to_owned()
        }
    };
    match auth {
        Auth::None => "none".to_owned(),
        Auth::Bearer(t) => format!("Bearer {}", hide(t)),
        Auth::Header(name, value) => format!("{name}: {}", hide(value)),
    }
}

fn describe_body(body: &Body) -> String {
    match body {
        Body::None => "none".to_owned(),
        Body::Json(v) => shorten(&v.to_string()),
        Body::Raw(ct, text) => format!("{ct:?} {:?}", shorten(text)),
    }
}

/// A well-formed token that no master or key has: `prefix` + 40 base62 characters.
fn unknown_token(prefix: &str) -> String {
    format!("{prefix}{}", "Zq7x".repeat(10))
}

fn claims(
    role: Role,
    master_id: Option<i64>,
    epoch: Option<i64>,
    binding: &str,
    exp: i64,
) -> Claims {
    Claims {
        sub: match master_id {
            Some(id) => format!("master:{id}"),
            None => "admin".into(),
        },
        role,
        master_id,
        epoch,
        binding: binding.to_owned(),
        iat: now_unix() - 10,
        exp,
    }
}

/// Logs in with `body` and returns the session JWT.
async fn login(app: &TestApp, body: Value) -> String {
    send(
        app,
        Method::POST,
        "/auth/login",
        &Auth::None,
        &Body::Json(body),
    )
    .await
    .expect(200)
    .str("token")
}

/// The body-taking endpoints, with a valid body for each, as `(method, path, auth, body)`.
/// `m` is a master id, `k` a live key of it, `ns` an unused namespace id, `mk` the
/// master's key.
fn body_endpoints(m: i64, k: i64, ns: i64, mk: &str) -> Vec<(Method, String, Auth, Value)> {
    vec![
        (
            Method::POST,
            "/auth/login".into(),
            Auth::None,
            json!({ "admin_token": ADMIN_TOKEN }),
        ),
        (
            Method::POST,
            "/admin/namespaces".into(),
            admin(),
            json!({ "name": "fresh" }),
        ),
        (
            Method::PUT,
            format!("/admin/namespaces/{ns}"),
            admin(),
            json!({ "description": "d" }),
        ),
        (
            Method::POST,
            "/admin/masters".into(),
            admin(),
            json!({ "name": "fresh" }),
        ),
        (
            Method::PUT,
            format!("/admin/masters/{m}"),
            admin(),
            json!({ "global_qps": 3 }),
        ),
        (
            Method::PUT,
            format!("/admin/masters/{m}/access"),
            admin(),
            json!({ "namespaces": ["default"] }),
        ),
        (
            Method::POST,
            format!("/admin/masters/{m}/keys"),
            admin(),
            json!({ "name": "fresh" }),
        ),
        (
            Method::PUT,
            format!("/admin/keys/{k}"),
            admin(),
            json!({ "name": "renamed" }),
        ),
        (
            Method::PUT,
            format!("/admin/keys/{k}/access"),
            admin(),
            json!({ "namespaces": ["default"] }),
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            bearer(mk),
            json!({ "name": "fresh" }),
        ),
        (
            Method::PUT,
            format!("/v1/tokens/{k}"),
            bearer(mk),
            json!({ "name": "renamed" }),
        ),
    ]
}

/// A master with one key and an unused namespace: `(master id, master key, key id, key,
/// namespace id)`.
async fn basic_setup(app: &TestApp) -> (i64, String, i64, String, i64) {
    let (m, mk) = app.create_master(json!({ "name": "acme" })).await;
    let (k, key) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    let ns = app.create_namespace("spare").await;
    (m, mk, k, key, ns)
}

// ---------------------------------------------------------------------------------------
// Malformed bodies
// ---------------------------------------------------------------------------------------

async fn malformed_json_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    // (body, status, acceptable codes)
    let bodies: Vec<(String, u16, &[&str])> = vec![
        ("{\"name\": ".into(), 400, &["invalid_json"]),
        ("{\"name\": \"x\"".into(), 400, &["invalid_json"]),
        ("".into(), 400, &["invalid_json"]),
        ("   ".into(), 400, &["invalid_json"]),
        ("not json".into(), 400, &["invalid_json"]),
        ("{name: \"x\"}".into(), 400, &["invalid_json"]),
        ("{'name': 'x'}".into(), 400, &["invalid_json"]),
        ("{\"name\": \"x\",}".into(), 400, &["invalid_json"]),
        ("{\"name\": \"x\"} trailing".into(), 400, &["invalid_json"]),
        (
            "{\"name\": \"x\"}{\"name\": \"y\"}".into(),
            400,
            &["invalid_json"],
        ),
        ("{\"name\": \"\\ud800\"}".into(), 400, &["invalid_json"]),
        ("{\"name\": \"\u{1}\"}".into(), 400, &["invalid_json"]),
        ("{\"name\": NaN}".into(), 400, &["invalid_json"]),
        ("\u{feff}{\"name\": \"x\"}".into(), 400, &["invalid_json"]),
        // Valid JSON that is not an object.
        ("null".into(), 400, &["invalid_body"]),
        ("42".into(), 400, &["invalid_body"]),
        ("true".into(), 400, &["invalid_body"]),
        ("\"name\"".into(), 400, &["invalid_body"]),
        ("[]".into(), 400, &["invalid_body"]),
        ("[\"x\"]".into(), 400, &["invalid_body"]),
        // Nesting bombs: rejected, never a stack overflow.
        (deep, 400, &["invalid_json", "invalid_body"]),
        (deep_object, 400, &["invalid_json", "invalid_body"]),
    ];
    for (method, path, auth, _) in body_endpoints(m, k, ns, &mk) {
        for (text, status, codes) in &bodies {
            probe
                .expect_any(
                    method.clone(),
                    &path,
                    &auth,
                    &raw_json(text),
                    *status,
                    codes,
                )
                .await;
        }
    }

    // A JSON array in the positional order of the struct's fields is not an object
    // either; serde would happily build the struct from it.
    let positional_login = format!("[\"{ADMIN_TOKEN}\", null]");
    let positional: Vec<(Method, String, Auth, &str)> = vec![
        (
            Method::POST,
            "/admin/masters".into(),
            admin(),
            "[\"fresh\", null, null, null, null, null]",
        ),
        (
            Method::POST,
            "/admin/namespaces".into(),
            admin(),
            "[\"fresh\", \"\", null]",
        ),
        (
            Method::POST,
            "/v1/tokens".into(),
            bearer(&mk),
            "[\"fresh\", null, null, null, null, null, null]",
        ),
        (
            Method::PUT,
            format!("/admin/masters/{m}"),
            admin(),
            "[\"renamed\", null, null, null, null]",
        ),
        (
            Method::POST,
            "/auth/login".into(),
            Auth::None,
            &positional_login,
        ),
    ];
    for (method, path, auth, text) in positional {
        probe
            .expect(method, &path, &auth, &raw_json(text), 400, "invalid_body")
            .await;
    }

    probe.finish(&before, &[&mk, &key]).await;
}

async fn wrong_content_type_is_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    let types: [Option<&'static str>; 6] = [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        Some("json"),
    ];
    for (method, path, auth, body) in body_endpoints(m, k, ns, &mk) {
        for ct in types {
            let raw = Body::Raw(ct, body.to_string());
            probe
                .expect(
                    method.clone(),
                    &path,
                    &auth,
                    &raw,
                    415,
                    "unsupported_media_type",
                )
                .await;
        }
        // No body at all on an endpoint that needs one.
        probe
            .expect(
                method.clone(),
                &path,
                &auth,
                &Body::None,
                415,
                "unsupported_media_type",
            )
            .await;
    }

    probe.finish(&before, &[&mk, &key]).await;
}

// ---------------------------------------------------------------------------------------
// Schema and field rules
// ---------------------------------------------------------------------------------------

async fn wrong_types_and_unknown_fields_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    let mut cases: Vec<(Method, String, Auth, Value)> = Vec::new();
    let mut add = |method: &Method, path: &str, auth: &Auth, bodies: Vec<Value>| {
        for body in bodies {
            cases.push((method.clone(), path.to_owned(), auth.clone(), body));
        }
    };
    add(
        &Method::POST,
        "/auth/login",
        &Auth::None,
        vec![
            json!({}),
            json!({ "admin_token": ADMIN_TOKEN, "master_key": mk }),
            json!({ "admin_token": 5 }),
            json!({ "admin_token": [ADMIN_TOKEN] }),
            json!({ "master_key": { "key": mk } }),
            json!({ "admin_token": ADMIN_TOKEN, "remember_me": true }),
            json!({ "username": "admin", "password": "admin" }),
            json!({ "admin_token": null, "master_key": null }),
        ],
    );
    add(
        &Method::POST,
        "/admin/namespaces",
        &admin(),
        vec![
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
        ],
    );
    add(
        &Method::PUT,
        &format!("/admin/namespaces/{ns}"),
        &admin(),
        vec![
            json!({ "name": false }),
            json!({ "description": ["d"] }),
            json!({ "status": "deleted" }),
            json!({ "created_at": 1 }),
        ],
    );
    add(
        &Method::POST,
        "/admin/masters",
        &admin(),
        vec![
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
        ],
    );
    add(
        &Method::PUT,
        &format!("/admin/masters/{m}"),
        &admin(),
        vec![
            json!({ "name": 1 }),
            json!({ "status": "deleted" }),
            json!({ "status": "ACTIVE" }),
            json!({ "status": 0 }),
            json!({ "max_child_keys": "9" }),
            json!({ "global_qps": { "limit": 1 } }),
            json!({ "namespaces": ["default"] }),
            json!({ "epoch": 7 }),
            json!({ "token_prefix": "ezm-" }),
        ],
    );
    add(
        &Method::PUT,
        &format!("/admin/masters/{m}/access"),
        &admin(),
        vec![
            json!({ "namespaces": "default" }),
            json!({ "namespaces": [["default"]] }),
            json!({ "default_namespace": 1 }),
            json!({ "propagate": "yes" }),
            json!({ "propagate": 1 }),
            json!({ "namespaces": ["default"], "status": "active" }),
        ],
    );
    let key_create_bodies = vec![
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
    add(&Method::POST, "/v1/tokens", &mka, key_create_bodies.clone());
    add(
        &Method::POST,
        &format!("/admin/masters/{m}/keys"),
        &admin(),
        key_create_bodies,
    );
    let key_update_bodies = vec![
        json!({ "name": ["x"] }),
        json!({ "status": "deleted" }),
        json!({ "status": true }),
        json!({ "qps": "1" }),
        json!({ "expires_at": "never" }),
        json!({ "allow_ips": "0.0.0.0/0" }),
        json!({ "master_id": m + 1 }),
        json!({ "issued_at_epoch": 99 }),
        json!({ "token_digest": "00" }),
    ];
    add(
        &Method::PUT,
        &format!("/v1/tokens/{k}"),
        &mka,
        key_update_bodies.clone(),
    );
    add(
        &Method::PUT,
        &format!("/admin/keys/{k}"),
        &admin(),
        key_update_bodies,
    );
    add(
        &Method::PUT,
        &format!("/admin/keys/{k}/access"),
        &admin(),
        vec![
            json!({ "namespaces": "default" }),
            json!({ "default_namespace": 5 }),
            json!({ "propagate": true }),
            json!({ "status": "active" }),
        ],
    );
    for (method, path, auth, body) in cases {
        probe
            .json(method, &path, &auth, body, 400, "invalid_body")
            .await;
    }
    // A field given twice.
    for (method, path, auth, text) in [
        (
            Method::POST,
            "/admin/masters".to_owned(),
            admin(),
            "{\"name\":\"a1\",\"name\":\"a2\"}",
        ),
        (
            Method::PUT,
            format!("/v1/tokens/{k}"),
            mka.clone(),
            "{\"qps\":1,\"qps\":2}",
        ),
    ] {
        probe
            .expect(method, &path, &auth, &raw_json(text), 400, "invalid_body")
            .await;
    }

    probe.finish(&before, &[&mk, &key]).await;
}

async fn negative_and_huge_numbers_are_rejected(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, _) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);
    let now = now_unix();

    // Numbers that are not an i64: 400 invalid_body, for every numeric field.
    let not_i64 = [
        "1e30",
        "-1e30",
        "1.5",
        "9223372036854775808",
        "-9223372036854775809",
        "18446744073709551616",
        "100000000000000000000000000000000000000000",
    ];
    let mut numeric: Vec<(Method, String, Auth, &str, &str)> = Vec::new();
    for field in ["max_child_keys", "global_qps"] {
        numeric.push((
            Method::POST,
            "/admin/masters".into(),
            admin(),
            field,
            "\"name\":\"fresh\",",
        ));
        numeric.push((
            Method::PUT,
            format!("/admin/masters/{m}"),
            admin(),
            field,
            "",
        ));
    }
    for field in ["qps", "expires_at"] {
        numeric.push((Method::POST, "/v1/tokens".into(), mka.clone(), field, ""));
        numeric.push((
            Method::POST,
            format!("/admin/masters/{m}/keys"),
            admin(),
            field,
            "",
        ));
        numeric.push((
            Method::PUT,
            format!("/v1/tokens/{k}"),
            mka.clone(),
            field,
            "",
        ));
        numeric.push((Method::PUT, format!("/admin/keys/{k}"), admin(), field, ""));
    }
    for (method, path, auth, field, prefix) in &numeric {
        for n in not_i64 {
            let text = format!("{{{prefix}\"{field}\":{n}}}");
            probe
                .expect(
                    method.clone(),
                    path,
                    auth,
                    &raw_json(&text),
                    400,
                    "invalid_body",
                )
                .await;
        }
        // Out of even f64's range: serde_json calls it a syntax error.
        let text = format!("{{{prefix}\"{field}\":1e400}}");
        probe
            .expect_any(
                method.clone(),
                path,
                auth,
                &raw_json(&text),
                400,
                &["invalid_json", "invalid_body"],
            )
            .await;
    }

    // Negative limits: 400 invalid_field.
    for n in [-1, -1000, i64::MIN] {
        for field in ["max_child_keys", "global_qps"] {
            let mut create = json!({ "name": "fresh" });
            create[field] = json!(n);
            probe
                .json(
                    Method::POST,
                    "/admin/masters",
                    &admin(),
                    create,
                    400,
                    "invalid_field",
                )
                .await;
            probe
                .json(
                    Method::PUT,
                    &format!("/admin/masters/{m}"),
                    &admin(),
                    json!({ field: n }),
                    400,
                    "invalid_field",
                )
                .await;
        }
        for (method, path, auth) in [
            (Method::POST, "/v1/tokens".to_owned(), mka.clone()),
            (Method::POST, format!("/admin/masters/{m}/keys"), admin()),
            (Method::PUT, format!("/v1/tokens/{k}"), mka.clone()),
            (Method::PUT, format!("/admin/keys/{k}"), admin()),
        ] {
            probe
                .json(
                    method,
                    &path,
                    &auth,
                    json!({ "qps": n }),
                    400,
                    "invalid_field",
                )
                .await;
        }
    }

    // Expiry times: in the past → 422 expires_in_past; absurdly far → 400 invalid_field.
    for (at, status, code) in [
        (now - 3600, 422, "expires_in_past"),
        (now, 422, "expires_in_past"),
        (1, 422, "expires_in_past"),
        (0, 422, "expires_in_past"),
        (-1, 422, "expires_in_past"),
        (i64::MIN, 422, "expires_in_past"),
        (i64::MAX, 400, "invalid_field"),
        // Milliseconds instead of seconds: thousands of years ahead.
        (now * 1000, 400, "invalid_field"),
    ] {
        for (method, path, auth) in [
            (Method::POST, "/v1/tokens".to_owned(), mka.clone()),
            (Method::POST, format!("/admin/masters/{m}/keys"), admin()),
            (Method::PUT, format!("/v1/tokens/{k}"), mka.clone()),
            (Method::PUT, format!("/admin/keys/{k}"), admin()),
        ] {
            probe
                .json(
                    method,
                    &path,
                    &auth,
                    json!({ "expires_at": at }),
                    status,
                    code,
                )
                .await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;
}

async fn invalid_fields_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    let long_name = "n".repeat(129);
    let bad_names = [
        json!(""),
        json!("   "),
        json!(long_name),
        json!("a\nb"),
        json!("a\u{0}b"),
        json!("tab\there"),
        json!("\u{7f}"),
    ];
    let bad_identifiers = [
        json!(""),
        json!("team.a"),
        json!("a b"),
        json!("a/b"),
        json!("équipe"),
        json!("a\u{0}"),
        json!("x".repeat(65)),
    ];
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
    let too_many_nets: Vec<String> = (0..257)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let too_many_namespaces: Vec<String> = (0..257).map(|i| format!("ns-{i}")).collect();

    // Display names of masters and keys.
    for name in &bad_names {
        probe
            .json(
                Method::POST,
                "/admin/masters",
                &admin(),
                json!({ "name": name }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::PUT,
                &format!("/admin/masters/{m}"),
                &admin(),
                json!({ "name": name }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::POST,
                "/v1/tokens",
                &mka,
                json!({ "name": name }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::POST,
                &format!("/admin/masters/{m}/keys"),
                &admin(),
                json!({ "name": name }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::PUT,
                &format!("/v1/tokens/{k}"),
                &mka,
                json!({ "name": name }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::PUT,
                &format!("/admin/keys/{k}"),
                &admin(),
                json!({ "name": name }),
                400,
                "invalid_field",
            )
            .await;
    }

    // Identifiers: namespace names, groups, namespace lists (no dots: `ns.model`).
    for id in &bad_identifiers {
        probe
            .json(
                Method::POST,
                "/admin/namespaces",
                &admin(),
                json!({ "name": id }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::PUT,
                &format!("/admin/namespaces/{ns}"),
                &admin(),
                json!({ "name": id }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::POST,
                "/admin/masters",
                &admin(),
                json!({ "name": "fresh", "group": id }),
                400,
                "invalid_field",
            )
            .await;
        probe
            .json(
                Method::PUT,
                &format!("/admin/masters/{m}"),
                &admin(),
                json!({ "group": id }),
                400,
                "invalid_field",
            )
            .await;
        let lists = [
            json!({ "namespaces": [id] }),
            json!({ "default_namespace": id }),
        ];
        for list in &lists {
            let mut create = list.clone();
            create["name"] = json!("fresh");
            probe
                .json(
                    Method::POST,
                    "/admin/masters",
                    &admin(),
                    create,
                    400,
                    "invalid_field",
                )
                .await;
            for (method, path, auth) in [
                (Method::PUT, format!("/admin/masters/{m}/access"), admin()),
                (Method::POST, "/v1/tokens".to_owned(), mka.clone()),
                (Method::POST, format!("/admin/masters/{m}/keys"), admin()),
                (Method::PUT, format!("/v1/tokens/{k}"), mka.clone()),
                (Method::PUT, format!("/admin/keys/{k}"), admin()),
                (Method::PUT, format!("/admin/keys/{k}/access"), admin()),
            ] {
                probe
                    .json(method, &path, &auth, list.clone(), 400, "invalid_field")
                    .await;
            }
        }
    }
    // Empty and over-long namespace lists.
    for list in [json!([]), json!(too_many_namespaces)] {
        probe
            .json(
                Method::POST,
                "/admin/masters",
                &admin(),
                json!({ "name": "fresh", "namespaces": list }),
                400,
                "invalid_field",
            )
            .await;
        for (method, path, auth) in [
            (Method::PUT, format!("/admin/masters/{m}/access"), admin()),
            (Method::POST, "/v1/tokens".to_owned(), mka.clone()),
            (Method::PUT, format!("/v1/tokens/{k}"), mka.clone()),
            (Method::PUT, format!("/admin/keys/{k}/access"), admin()),
        ] {
            probe
                .json(
                    method,
                    &path,
                    &auth,
                    json!({ "namespaces": list }),
                    400,
                    "invalid_field",
                )
                .await;
        }
    }
    // Namespace descriptions longer than 1024 characters.
    let long_description = "d".repeat(1025);
    probe
        .json(
            Method::POST,
            "/admin/namespaces",
            &admin(),
            json!({ "name": "fresh", "description": long_description }),
            400,
            "invalid_field",
        )
        .await;
    probe
        .json(
            Method::PUT,
            &format!("/admin/namespaces/{ns}"),
            &admin(),
            json!({ "description": long_description }),
            400,
            "invalid_field",
        )
        .await;

    // IP lists: each entry must be an address or a CIDR; at most 256 entries.
    for (method, path, auth) in [
        (Method::POST, "/v1/tokens".to_owned(), mka.clone()),
        (Method::POST, format!("/admin/masters/{m}/keys"), admin()),
        (Method::PUT, format!("/v1/tokens/{k}"), mka.clone()),
        (Method::PUT, format!("/admin/keys/{k}"), admin()),
    ] {
        for field in ["allow_ips", "deny_ips"] {
            for net in bad_nets {
                probe
                    .json(
                        method.clone(),
                        &path,
                        &auth,
                        json!({ field: ["10.0.0.0/8", net] }),
                        400,
                        "invalid_field",
                    )
                    .await;
            }
            probe
                .json(
                    method.clone(),
                    &path,
                    &auth,
                    json!({ field: too_many_nets }),
                    400,
                    "invalid_field",
                )
                .await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;

    // A NUL character in a free-text field is either stored as sent or refused with a
    // 400; it must never reach the database as a 500 (PostgreSQL rejects NUL in TEXT).
    for (method, path, body) in [
        (
            Method::POST,
            "/admin/namespaces".to_owned(),
            json!({ "name": "nul-desc", "description": "a\u{0}b" }),
        ),
        (
            Method::PUT,
            format!("/admin/namespaces/{ns}"),
            json!({ "description": "c\u{0}d" }),
        ),
    ] {
        let before = app.state_snapshot().await;
        let expected = body["description"].clone();
        let resp = send(&app, method.clone(), &path, &admin(), &Body::Json(body)).await;
        if resp.status == 200 || resp.status == 201 {
            let stored = app
                .admin_get(&format!("/admin/namespaces/{}", resp.id()))
                .await
                .expect(200);
            assert_eq!(stored.body["description"], expected, "{method} {path}");
        } else {
            assert!(
                resp.status < 500,
                "{method} {path} with a NUL in the description: {} {}",
                resp.status,
                resp.text
            );
            resp.expect_error(400, "invalid_field");
            assert_eq!(
                app.state_snapshot().await,
                before,
                "{method} {path} with a NUL description"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Queries, paths and ids
// ---------------------------------------------------------------------------------------

async fn bad_pagination_and_path_params_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    let lists = [
        ("/admin/namespaces".to_owned(), admin()),
        ("/admin/masters".to_owned(), admin()),
        (format!("/admin/masters/{m}/keys"), admin()),
        ("/v1/tokens".to_owned(), mka.clone()),
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
        "page_size=0",
        "page_size=-5",
        "page_size=501",
        "page_size=1000",
        "page_size=abc",
        "page_size=",
        "page_size=1e3",
        "page_size=99999999999999999999",
        "page=1&page_size=0",
        "page=%00",
    ];
    for (path, auth) in &lists {
        for query in queries {
            probe
                .expect(
                    Method::GET,
                    &format!("{path}?{query}"),
                    auth,
                    &Body::None,
                    400,
                    "invalid_query",
                )
                .await;
        }
        // The extremes that are allowed answer 200 with an empty page, not a 500.
        let resp = send(
            &app,
            Method::GET,
            &format!("{path}?page=2147483647&page_size=500"),
            auth,
            &Body::None,
        )
        .await;
        assert_eq!(resp.status, 200, "GET {path} last page: {}", resp.text);
        assert_eq!(resp.body["items"], json!([]), "GET {path} last page");
    }

    let bad_ids = [
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
    ];
    for id in bad_ids {
        let endpoints: Vec<(Method, String, Auth, Value)> = vec![
            (
                Method::GET,
                format!("/admin/namespaces/{id}"),
                admin(),
                Value::Null,
            ),
            (
                Method::PUT,
                format!("/admin/namespaces/{id}"),
                admin(),
                json!({ "description": "d" }),
            ),
            (
                Method::DELETE,
                format!("/admin/namespaces/{id}"),
                admin(),
                Value::Null,
            ),
            (
                Method::GET,
                format!("/admin/masters/{id}"),
                admin(),
                Value::Null,
            ),
            (
                Method::PUT,
                format!("/admin/masters/{id}"),
                admin(),
                json!({ "global_qps": 1 }),
            ),
            (
                Method::DELETE,
                format!("/admin/masters/{id}"),
                admin(),
                Value::Null,
            ),
            (
                Method::POST,
                format!("/admin/masters/{id}/rotate"),
                admin(),
                Value::Null,
            ),
            (
                Method::POST,
                format!("/admin/masters/{id}/revoke-keys"),
                admin(),
                Value::Null,
            ),
            (
                Method::PUT,
                format!("/admin/masters/{id}/access"),
                admin(),
                json!({ "namespaces": ["default"] }),
            ),
            (
                Method::POST,
                format!("/admin/masters/{id}/keys"),
                admin(),
                json!({}),
            ),
            (
                Method::GET,
                format!("/admin/masters/{id}/keys"),
                admin(),
                Value::Null,
            ),
            (
                Method::GET,
                format!("/admin/keys/{id}"),
                admin(),
                Value::Null,
            ),
            (
                Method::PUT,
                format!("/admin/keys/{id}"),
                admin(),
                json!({ "name": "x" }),
            ),
            (
                Method::DELETE,
                format!("/admin/keys/{id}"),
                admin(),
                Value::Null,
            ),
            (
                Method::PUT,
                format!("/admin/keys/{id}/access"),
                admin(),
                json!({ "namespaces": ["default"] }),
            ),
            (
                Method::GET,
                format!("/v1/tokens/{id}"),
                mka.clone(),
                Value::Null,
            ),
            (
                Method::PUT,
                format!("/v1/tokens/{id}"),
                mka.clone(),
                json!({ "name": "x" }),
            ),
            (
                Method::DELETE,
                format!("/v1/tokens/{id}"),
                mka.clone(),
                Value::Null,
            ),
        ];
        for (method, path, auth, body) in endpoints {
            probe
                .json(method, &path, &auth, body, 400, "invalid_path")
                .await;
        }
    }
    let _ = (k, ns);

    probe.finish(&before, &[&mk, &key]).await;
}

async fn unknown_ids_are_404(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, mk, _, key, _) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    for id in [999_999, 0, -1, i64::MAX, i64::MIN] {
        let endpoints: Vec<(Method, String, Auth, Value, &str)> = vec![
            (
                Method::GET,
                format!("/admin/namespaces/{id}"),
                admin(),
                Value::Null,
                "namespace_not_found",
            ),
            (
                Method::PUT,
                format!("/admin/namespaces/{id}"),
                admin(),
                json!({ "description": "d" }),
                "namespace_not_found",
            ),
            (
                Method::DELETE,
                format!("/admin/namespaces/{id}"),
                admin(),
                Value::Null,
                "namespace_not_found",
            ),
            (
                Method::GET,
                format!("/admin/masters/{id}"),
                admin(),
                Value::Null,
                "master_not_found",
            ),
            (
                Method::PUT,
                format!("/admin/masters/{id}"),
                admin(),
                json!({ "global_qps": 1 }),
                "master_not_found",
            ),
            (
                Method::DELETE,
                format!("/admin/masters/{id}"),
                admin(),
                Value::Null,
                "master_not_found",
            ),
            (
                Method::POST,
                format!("/admin/masters/{id}/rotate"),
                admin(),
                Value::Null,
                "master_not_found",
            ),
            (
                Method::POST,
                format!("/admin/masters/{id}/revoke-keys"),
                admin(),
                Value::Null,
                "master_not_found",
            ),
            (
                Method::PUT,
                format!("/admin/masters/{id}/access"),
                admin(),
                json!({ "namespaces": ["default"] }),
                "master_not_found",
            ),
            (
                Method::POST,
                format!("/admin/masters/{id}/keys"),
                admin(),
                json!({}),
                "master_not_found",
            ),
            (
                Method::GET,
                format!("/admin/masters/{id}/keys"),
                admin(),
                Value::Null,
                "master_not_found",
            ),
            (
                Method::GET,
                format!("/admin/keys/{id}"),
                admin(),
                Value::Null,
                "key_not_found",
            ),
            (
                Method::PUT,
                format!("/admin/keys/{id}"),
                admin(),
                json!({ "name": "x" }),
                "key_not_found",
            ),
            (
                Method::DELETE,
                format!("/admin/keys/{id}"),
                admin(),
                Value::Null,
                "key_not_found",
            ),
            (
                Method::PUT,
                format!("/admin/keys/{id}/access"),
                admin(),
                json!({ "namespaces": ["default"] }),
                "key_not_found",
            ),
            (
                Method::GET,
                format!("/v1/tokens/{id}"),
                mka.clone(),
                Value::Null,
                "key_not_found",
            ),
            (
                Method::PUT,
                format!("/v1/tokens/{id}"),
                mka.clone(),
                json!({ "name": "x" }),
                "key_not_found",
            ),
            (
                Method::DELETE,
                format!("/v1/tokens/{id}"),
                mka.clone(),
                Value::Null,
                "key_not_found",
            ),
        ];
        for (method, path, auth, body, code) in endpoints {
            probe.json(method, &path, &auth, body, 404, code).await;
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
    let a_key_before = app
        .admin_get(&format!("/admin/keys/{ka}"))
        .await
        .expect(200)
        .body;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    for auth in [bearer(&mk_b), bearer(&jwt_b)] {
        let path = format!("/v1/tokens/{ka}");
        probe
            .json(Method::GET, &path, &auth, Value::Null, 404, "key_not_found")
            .await;
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
            probe
                .json(Method::PUT, &path, &auth, body, 404, "key_not_found")
                .await;
        }
        probe
            .json(
                Method::DELETE,
                &path,
                &auth,
                Value::Null,
                404,
                "key_not_found",
            )
            .await;
        // Its own list does not show the other tenant's key.
        let list = send(&app, Method::GET, "/v1/tokens", &auth, &Body::None)
            .await
            .expect(200);
        let ids: Vec<i64> = list.body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|k| k["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![kb], "master b sees exactly its own keys");
    }
    // The admin key listing of one master does not leak the other's keys either.
    let list = app
        .admin_get(&format!("/admin/masters/{b}/keys"))
        .await
        .expect(200);
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["id"], kb);

    assert_eq!(
        app.admin_get(&format!("/admin/keys/{ka}"))
            .await
            .expect(200)
            .body,
        a_key_before
    );
    let who = app.whoami(&key_a).await.expect(200);
    assert_eq!(who.body["type"], "key");
    assert_eq!(who.body["status"], "active");
    probe
        .finish(&before, &[&mk_a, &mk_b, &key_a, &key_b, &jwt_b])
        .await;
}

/// Every authenticated endpoint with a valid request for it.
fn all_endpoints(m: i64, k: i64, ns: i64) -> Vec<(Method, String, Value)> {
    vec![
        (
            Method::POST,
            "/admin/namespaces".into(),
            json!({ "name": "fresh" }),
        ),
        (Method::GET, "/admin/namespaces".into(), Value::Null),
        (Method::GET, format!("/admin/namespaces/{ns}"), Value::Null),
        (
            Method::PUT,
            format!("/admin/namespaces/{ns}"),
            json!({ "description": "d" }),
        ),
        (
            Method::DELETE,
            format!("/admin/namespaces/{ns}"),
            Value::Null,
        ),
        (
            Method::POST,
            "/admin/masters".into(),
            json!({ "name": "fresh" }),
        ),
        (Method::GET, "/admin/masters".into(), Value::Null),
        (Method::GET, format!("/admin/masters/{m}"), Value::Null),
        (
            Method::PUT,
            format!("/admin/masters/{m}"),
            json!({ "global_qps": 9 }),
        ),
        (Method::DELETE, format!("/admin/masters/{m}"), Value::Null),
        (
            Method::POST,
            format!("/admin/masters/{m}/rotate"),
            Value::Null,
        ),
        (
            Method::POST,
            format!("/admin/masters/{m}/revoke-keys"),
            Value::Null,
        ),
        (
            Method::PUT,
            format!("/admin/masters/{m}/access"),
            json!({ "namespaces": ["default"] }),
        ),
        (
            Method::POST,
            format!("/admin/masters/{m}/keys"),
            json!({ "name": "fresh" }),
        ),
        (Method::GET, format!("/admin/masters/{m}/keys"), Value::Null),
        (Method::GET, format!("/admin/keys/{k}"), Value::Null),
        (
            Method::PUT,
            format!("/admin/keys/{k}"),
            json!({ "name": "renamed" }),
        ),
        (Method::DELETE, format!("/admin/keys/{k}"), Value::Null),
        (
            Method::PUT,
            format!("/admin/keys/{k}/access"),
            json!({ "namespaces": ["default"] }),
        ),
        (Method::POST, "/admin/sync".into(), Value::Null),
        (
            Method::POST,
            "/v1/tokens".into(),
            json!({ "name": "fresh" }),
        ),
        (Method::GET, "/v1/tokens".into(), Value::Null),
        (Method::GET, format!("/v1/tokens/{k}"), Value::Null),
        (
            Method::PUT,
            format!("/v1/tokens/{k}"),
            json!({ "name": "renamed" }),
        ),
        (Method::DELETE, format!("/v1/tokens/{k}"), Value::Null),
        (Method::GET, "/v1/whoami".into(), Value::Null),
    ]
}

async fn missing_and_wrong_credentials_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = basic_setup(&app).await;
    let master_jwt = login(&app, json!({ "master_key": mk })).await;
    let now = now_unix();
    let real = app.state.auth.jwt();
    let other = JwtKeys::new(b"another-secret-another-secret-another-secret-0123456789");
    let admin_binding = app.state.auth.admin_binding().to_owned();
    let forged_admin = other
        .issue(&claims(Role::Admin, None, None, &admin_binding, now + 3600))
        .unwrap();
    let forged_master = other
        .issue(&claims(
            Role::Master,
            Some(m),
            Some(1),
            "0000000000000000",
            now + 3600,
        ))
        .unwrap();
    let expired_admin = real
        .issue(&claims(Role::Admin, None, None, &admin_binding, now - 3600))
        .unwrap();
    let stale_admin = real
        .issue(&claims(
            Role::Admin,
            None,
            None,
            "ffffffffffffffff",
            now + 3600,
        ))
        .unwrap();
    let ghost_master = real
        .issue(&claims(
            Role::Master,
            Some(999_999),
            Some(1),
            "0000000000000000",
            now + 3600,
        ))
        .unwrap();
    let master_without_id = real
        .issue(&claims(
            Role::Master,
            None,
            Some(1),
            "0000000000000000",
            now + 3600,
        ))
        .unwrap();
    // A tampered session: the master's own JWT with its payload's last character changed.
    let tampered = {
        let mut parts: Vec<String> = master_jwt.split('.').map(str::to_owned).collect();
        let last = parts[1].pop().unwrap();
        parts[1].push(if last == 'A' { 'B' } else { 'A' });
        parts.join(".")
    };
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    const INVALID: &str = "invalid_credentials";
    let cases: Vec<(Auth, &[&str])> = vec![
        (Auth::None, &["missing_credentials"]),
        (
            Auth::Header("authorization", "Bearer".into()),
            &["missing_credentials"],
        ),
        (
            Auth::Header("authorization", "Bearer    ".into()),
            &["missing_credentials"],
        ),
        (
            Auth::Header("authorization", format!("Basic {ADMIN_TOKEN}")),
            &["missing_credentials"],
        ),
        (
            Auth::Header("authorization", ADMIN_TOKEN.into()),
            &["missing_credentials"],
        ),
        (bearer("not-a-token"), &[INVALID]),
        (bearer(&format!("{ADMIN_TOKEN}x")), &[INVALID]),
        (bearer(&"A".repeat(16 * 1024)), &[INVALID]),
        (bearer(&unknown_token("ezm-")), &[INVALID]),
        (bearer(&mk[..mk.len() - 1]), &[INVALID]),
        (bearer("ezm-"), &[INVALID]),
        (bearer("sk-ez-"), &[INVALID]),
        (bearer("a.b.c"), &[INVALID]),
        (bearer(&forged_admin), &[INVALID]),
        (bearer(&forged_master), &[INVALID]),
        (bearer(&tampered), &[INVALID]),
        (bearer(&ghost_master), &[INVALID]),
        (bearer(&master_without_id), &[INVALID]),
        (bearer(&expired_admin), &["token_expired"]),
        (bearer(&stale_admin), &["token_revoked"]),
        (Auth::Header("x-api-key", "not-a-token".into()), &[INVALID]),
        (
            Auth::Header("x-goog-api-key", unknown_token("ezm-")),
            &[INVALID],
        ),
    ];
    let endpoints = all_endpoints(m, k, ns);
    for (auth, codes) in &cases {
        for (method, path, body) in &endpoints {
            let body = if body.is_null() {
                Body::None
            } else {
                Body::Json(body.clone())
            };
            probe
                .expect_any(method.clone(), path, auth, &body, 401, codes)
                .await;
        }
    }
    // A well-formed child key that does not exist is not a credential either: 401 on
    // every endpoint (whoami names the validation failure, `key_not_found`).
    let ghost_key = bearer(&unknown_token("sk-ez-"));
    for (method, path, body) in &endpoints {
        let body = if body.is_null() {
            Body::None
        } else {
            Body::Json(body.clone())
        };
        probe
            .expect_any(
                method.clone(),
                path,
                &ghost_key,
                &body,
                401,
                &[INVALID, "key_not_found"],
            )
            .await;
    }

    // Login with a wrong credential.
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
        probe
            .json(Method::POST, "/auth/login", &Auth::None, body, 401, INVALID)
            .await;
    }

    probe
        .finish(&before, &[&mk, &key, &master_jwt, ADMIN_TOKEN])
        .await;
}

async fn wrong_role_is_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, ns) = basic_setup(&app).await;
    let master_jwt = login(&app, json!({ "master_key": mk })).await;
    let admin_jwt = login(&app, json!({ "admin_token": ADMIN_TOKEN })).await;
    // A suspended master, with a session opened before the suspension.
    let (paused, paused_key) = app.create_master(json!({ "name": "paused" })).await;
    let (paused_k, paused_child) = app.issue_key(&paused_key, json!({ "name": "pk" })).await;
    let paused_jwt = login(&app, json!({ "master_key": paused_key })).await;
    app.admin_put(
        &format!("/admin/masters/{paused}"),
        json!({ "status": "suspended" }),
    )
    .await
    .expect(200);
    // A rotated master: the old key and the old session are dead.
    let (rotated, old_key) = app.create_master(json!({ "name": "rotated" })).await;
    let old_jwt = login(&app, json!({ "master_key": old_key })).await;
    let new_key = app
        .admin_post(&format!("/admin/masters/{rotated}/rotate"), json!({}))
        .await;
    let new_key = new_key.expect(200).str("master_key");
    // A master whose keys were revoked by an epoch bump: its earlier session is dead.
    let (bumped, bumped_key) = app.create_master(json!({ "name": "bumped" })).await;
    let bumped_jwt = login(&app, json!({ "master_key": bumped_key })).await;
    app.admin_post(&format!("/admin/masters/{bumped}/revoke-keys"), json!({}))
        .await
        .expect(200);
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);

    let endpoints = all_endpoints(m, k, ns);
    let admin_endpoints: Vec<_> = endpoints
        .iter()
        .filter(|(_, p, _)| p.starts_with("/admin"))
        .collect();
    let master_endpoints: Vec<_> = endpoints
        .iter()
        .filter(|(_, p, _)| p.starts_with("/v1/tokens"))
        .collect();
    let body_of = |v: &Value| {
        if v.is_null() {
            Body::None
        } else {
            Body::Json(v.clone())
        }
    };

    // Masters and child keys on /admin/*.
    for auth in [
        bearer(&mk),
        bearer(&master_jwt),
        bearer(&key),
        Auth::Header("x-api-key", mk.clone()),
    ] {
        for (method, path, body) in &admin_endpoints {
            probe
                .expect(
                    method.clone(),
                    path,
                    &auth,
                    &body_of(body),
                    403,
                    "admin_required",
                )
                .await;
        }
    }
    // The admin and child keys on /v1/tokens*.
    for auth in [
        admin(),
        bearer(&admin_jwt),
        bearer(&key),
        bearer(&paused_child),
    ] {
        for (method, path, body) in &master_endpoints {
            probe
                .expect(
                    method.clone(),
                    path,
                    &auth,
                    &body_of(body),
                    403,
                    "master_required",
                )
                .await;
        }
    }
    // A suspended master, by key or by an earlier session.
    let paused_paths: Vec<(Method, String, Value)> = vec![
        (
            Method::POST,
            "/v1/tokens".into(),
            json!({ "name": "fresh" }),
        ),
        (Method::GET, "/v1/tokens".into(), Value::Null),
        (Method::GET, format!("/v1/tokens/{paused_k}"), Value::Null),
        (
            Method::PUT,
            format!("/v1/tokens/{paused_k}"),
            json!({ "status": "active" }),
        ),
        (
            Method::DELETE,
            format!("/v1/tokens/{paused_k}"),
            Value::Null,
        ),
    ];
    for auth in [bearer(&paused_key), bearer(&paused_jwt)] {
        for (method, path, body) in &paused_paths {
            probe
                .expect(
                    method.clone(),
                    path,
                    &auth,
                    &body_of(body),
                    403,
                    "master_suspended",
                )
                .await;
        }
    }
    probe
        .json(
            Method::POST,
            "/auth/login",
            &Auth::None,
            json!({ "master_key": paused_key }),
            403,
            "master_suspended",
        )
        .await;
    // Dead credentials of a rotated master and dead sessions after an epoch bump.
    for (auth, code) in [
        (bearer(&old_key), "invalid_credentials"),
        (bearer(&old_jwt), "token_revoked"),
        (bearer(&bumped_jwt), "token_revoked"),
    ] {
        for (method, path, body) in &master_endpoints {
            probe
                .expect(method.clone(), path, &auth, &body_of(body), 401, code)
                .await;
        }
    }
    probe
        .json(
            Method::POST,
            "/auth/login",
            &Auth::None,
            json!({ "master_key": old_key }),
            401,
            "invalid_credentials",
        )
        .await;

    probe
        .finish(
            &before,
            &[
                &mk,
                &key,
                &master_jwt,
                &admin_jwt,
                &paused_key,
                &paused_child,
                &paused_jwt,
                &old_key,
                &new_key,
                &bumped_key,
                ADMIN_TOKEN,
            ],
        )
        .await;
}

// ---------------------------------------------------------------------------------------
// Business rules
// ---------------------------------------------------------------------------------------

async fn namespace_rules_are_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let default_id = app.admin_get("/admin/namespaces").await.expect(200).body["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|n| n["name"] == "default")
        .and_then(|n| n["id"].as_i64())
        .expect("the default namespace exists");
    let team_a = app.create_namespace("team-a").await;
    let team_b = app.create_namespace("team-b").await;
    let (m, mk) = app
        .create_master(json!({ "name": "acme", "namespaces": ["default", "team-a"] }))
        .await;
    let (k, key) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    // A second master whose keys are narrower than it.
    let key_only = app.create_namespace("key-only").await;
    let (_, mk2) = app
        .create_master(json!({ "name": "wide", "namespaces": ["default", "key-only"] }))
        .await;
    let (_, key2) = app
        .issue_key(&mk2, json!({ "namespaces": ["key-only"] }))
        .await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);
    let post = Method::POST;
    let put = Method::PUT;

    let cases: Vec<(Method, String, Auth, Value, u16, &str)> = vec![
        // Unknown namespaces.
        (
            post.clone(),
            "/admin/masters".into(),
            admin(),
            json!({ "name": "x", "namespaces": ["nope"] }),
            422,
            "namespace_not_found",
        ),
        (
            post.clone(),
            "/admin/masters".into(),
            admin(),
            json!({ "name": "x", "default_namespace": "nope" }),
            422,
            "namespace_not_found",
        ),
        (
            put.clone(),
            format!("/admin/masters/{m}/access"),
            admin(),
            json!({ "namespaces": ["default", "nope"] }),
            422,
            "namespace_not_found",
        ),
        (
            put.clone(),
            format!("/admin/masters/{m}/access"),
            admin(),
            json!({ "default_namespace": "nope" }),
            422,
            "namespace_not_found",
        ),
        (
            post.clone(),
            "/v1/tokens".into(),
            mka.clone(),
            json!({ "namespaces": ["nope"] }),
            422,
            "namespace_not_found",
        ),
        (
            post.clone(),
            format!("/admin/masters/{m}/keys"),
            admin(),
            json!({ "default_namespace": "nope" }),
            422,
            "namespace_not_found",
        ),
        (
            put.clone(),
            format!("/v1/tokens/{k}"),
            mka.clone(),
            json!({ "namespaces": ["nope"] }),
            422,
            "namespace_not_found",
        ),
        (
            put.clone(),
            format!("/admin/keys/{k}/access"),
            admin(),
            json!({ "namespaces": ["nope"] }),
            422,
            "namespace_not_found",
        ),
        // A key's namespaces must be a subset of its master's.
        (
            post.clone(),
            "/v1/tokens".into(),
            mka.clone(),
            json!({ "namespaces": ["team-b"] }),
            422,
            "namespace_not_allowed",
        ),
        (
            post.clone(),
            "/v1/tokens".into(),
            mka.clone(),
            json!({ "default_namespace": "team-b" }),
            422,
            "namespace_not_allowed",
        ),
        (
            post.clone(),
            format!("/admin/masters/{m}/keys"),
            admin(),
            json!({ "namespaces": ["default", "team-b"] }),
            422,
            "namespace_not_allowed",
        ),
        (
            put.clone(),
            format!("/v1/tokens/{k}"),
            mka.clone(),
            json!({ "namespaces": ["team-b"] }),
            422,
            "namespace_not_allowed",
        ),
        (
            put.clone(),
            format!("/admin/keys/{k}"),
            admin(),
            json!({ "default_namespace": "team-b" }),
            422,
            "namespace_not_allowed",
        ),
        (
            put.clone(),
            format!("/admin/keys/{k}/access"),
            admin(),
            json!({ "namespaces": ["team-a", "team-b"] }),
            422,
            "namespace_not_allowed",
        ),
        // The default namespace must be one of the list.
        (
            post.clone(),
            "/admin/masters".into(),
            admin(),
            json!({ "name": "x", "default_namespace": "team-b", "namespaces": ["team-a"] }),
            422,
            "default_namespace_not_in_namespaces",
        ),
        (
            put.clone(),
            format!("/admin/masters/{m}/access"),
            admin(),
            json!({ "default_namespace": "default", "namespaces": ["team-a"] }),
            422,
            "default_namespace_not_in_namespaces",
        ),
        (
            post.clone(),
            "/v1/tokens".into(),
            mka.clone(),
            json!({ "default_namespace": "default", "namespaces": ["team-a"] }),
            422,
            "default_namespace_not_in_namespaces",
        ),
        (
            put.clone(),
            format!("/admin/keys/{k}/access"),
            admin(),
            json!({ "default_namespace": "team-a", "namespaces": ["default"] }),
            422,
            "default_namespace_not_in_namespaces",
        ),
        // Narrowing a master below its keys needs `propagate`.
        (
            put.clone(),
            format!("/admin/masters/{m}/access"),
            admin(),
            json!({ "default_namespace": "team-a", "namespaces": ["team-a"] }),
            409,
            "keys_outside_namespaces",
        ),
        // Namespaces in use cannot be deleted or renamed; names are unique.
        (
            Method::DELETE,
            format!("/admin/namespaces/{default_id}"),
            admin(),
            Value::Null,
            409,
            "namespace_in_use",
        ),
        (
            Method::DELETE,
            format!("/admin/namespaces/{team_a}"),
            admin(),
            Value::Null,
            409,
            "namespace_in_use",
        ),
        (
            Method::DELETE,
            format!("/admin/namespaces/{key_only}"),
            admin(),
            Value::Null,
            409,
            "namespace_in_use",
        ),
        (
            put.clone(),
            format!("/admin/namespaces/{team_a}"),
            admin(),
            json!({ "name": "team-z" }),
            409,
            "namespace_in_use",
        ),
        (
            put.clone(),
            format!("/admin/namespaces/{default_id}"),
            admin(),
            json!({ "name": "standard" }),
            409,
            "namespace_in_use",
        ),
        (
            post.clone(),
            "/admin/namespaces".into(),
            admin(),
            json!({ "name": "team-a" }),
            409,
            "conflict",
        ),
        (
            post.clone(),
            "/admin/namespaces".into(),
            admin(),
            json!({ "name": " default " }),
            409,
            "conflict",
        ),
        (
            put.clone(),
            format!("/admin/namespaces/{team_b}"),
            admin(),
            json!({ "name": "team-a" }),
            409,
            "conflict",
        ),
    ];
    for (method, path, auth, body, status, code) in cases {
        probe.json(method, &path, &auth, body, status, code).await;
    }
    probe.finish(&before, &[&mk, &mk2, &key, &key2]).await;

    // "In use" means named by a master or key: a namespace whose name differs only in a
    // character LIKE treats as a wildcard (`_`) is not in use and deletes.
    let lookalike = app.create_namespace("team_a").await;
    let resp = app
        .admin_delete(&format!("/admin/namespaces/{lookalike}"))
        .await;
    assert_eq!(
        resp.status, 204,
        "deleting the unused namespace team_a while team-a is in use: {}",
        resp.text
    );
    let lookalike = app.create_namespace("key_only").await;
    let resp = app
        .admin_put(
            &format!("/admin/namespaces/{lookalike}"),
            json!({ "name": "key_only2" }),
        )
        .await;
    assert_eq!(
        resp.status, 200,
        "renaming the unused namespace key_only while key-only is in use: {}",
        resp.text
    );
}

async fn conflicts_and_limits_are_409(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, mk) = app.create_master(json!({ "name": "acme" })).await;
    let (other, _) = app.create_master(json!({ "name": "globex" })).await;
    let (k1, key1) = app.issue_key(&mk, json!({ "name": "k1" })).await;
    let (k2, key2) = app.issue_key(&mk, json!({ "name": "k2" })).await;
    let (revoked, revoked_key) = app.issue_key(&mk, json!({ "name": "gone" })).await;
    app.delete(&format!("/v1/tokens/{revoked}"), &mk)
        .await
        .expect(200);
    let (small, small_mk) = app
        .create_master(json!({ "name": "small", "max_child_keys": 1 }))
        .await;
    let (_, small_key) = app.issue_key(&small_mk, json!({})).await;
    let (zero, zero_mk) = app
        .create_master(json!({ "name": "zero", "max_child_keys": 0 }))
        .await;
    let (paused, paused_mk) = app.create_master(json!({ "name": "paused" })).await;
    app.admin_put(
        &format!("/admin/masters/{paused}"),
        json!({ "status": "suspended" }),
    )
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
    let (post, put) = (Method::POST, Method::PUT);

    let cases: Vec<(Method, String, Auth, Value, u16, &str)> = vec![
        // Unique names.
        (
            post.clone(),
            "/admin/masters".into(),
            admin(),
            json!({ "name": "acme" }),
            409,
            "conflict",
        ),
        (
            post.clone(),
            "/admin/masters".into(),
            admin(),
            json!({ "name": "  acme  " }),
            409,
            "conflict",
        ),
        (
            put.clone(),
            format!("/admin/masters/{other}"),
            admin(),
            json!({ "name": "acme" }),
            409,
            "conflict",
        ),
        (
            post.clone(),
            "/v1/tokens".into(),
            mka.clone(),
            json!({ "name": "k1" }),
            409,
            "conflict",
        ),
        (
            put.clone(),
            format!("/v1/tokens/{k2}"),
            mka.clone(),
            json!({ "name": "k1" }),
            409,
            "conflict",
        ),
        (
            put.clone(),
            format!("/admin/keys/{k2}"),
            admin(),
            json!({ "name": " k1 " }),
            409,
            "conflict",
        ),
        // max_child_keys.
        (
            post.clone(),
            "/v1/tokens".into(),
            bearer(&small_mk),
            json!({}),
            409,
            "limit_reached",
        ),
        (
            post.clone(),
            format!("/admin/masters/{small}/keys"),
            admin(),
            json!({}),
            409,
            "limit_reached",
        ),
        (
            post.clone(),
            "/v1/tokens".into(),
            bearer(&zero_mk),
            json!({ "name": "first" }),
            409,
            "limit_reached",
        ),
        (
            post.clone(),
            format!("/admin/masters/{zero}/keys"),
            admin(),
            json!({}),
            409,
            "limit_reached",
        ),
        // A revoked key is final.
        (
            put.clone(),
            format!("/admin/keys/{revoked}"),
            admin(),
            json!({ "name": "back" }),
            409,
            "key_revoked",
        ),
        (
            put.clone(),
            format!("/admin/keys/{revoked}"),
            admin(),
            json!({ "status": "active" }),
            409,
            "key_revoked",
        ),
        (
            put.clone(),
            format!("/admin/keys/{revoked}"),
            admin(),
            json!({ "status": "suspended" }),
            409,
            "key_revoked",
        ),
        (
            put.clone(),
            format!("/admin/keys/{revoked}/access"),
            admin(),
            json!({ "namespaces": ["default"] }),
            409,
            "key_revoked",
        ),
        (
            put.clone(),
            format!("/v1/tokens/{revoked}"),
            mka.clone(),
            json!({ "status": "active" }),
            409,
            "key_revoked",
        ),
        (
            put.clone(),
            format!("/v1/tokens/{revoked}"),
            mka.clone(),
            json!({ "qps": 5 }),
            409,
            "key_revoked",
        ),
        (
            put.clone(),
            format!("/admin/keys/{deleted_k}"),
            admin(),
            json!({ "status": "active" }),
            409,
            "key_revoked",
        ),
        // No keys for a suspended or deleted master.
        (
            post.clone(),
            format!("/admin/masters/{paused}/keys"),
            admin(),
            json!({}),
            409,
            "master_suspended",
        ),
        (
            post.clone(),
            format!("/admin/masters/{deleted}/keys"),
            admin(),
            json!({}),
            409,
            "master_suspended",
        ),
    ];
    for (method, path, auth, body, status, code) in cases {
        probe.json(method, &path, &auth, body, status, code).await;
    }
    // Revoking a revoked key again is a no-op, not an error and not a change.
    app.delete(&format!("/v1/tokens/{revoked}"), &mk)
        .await
        .expect(200);
    app.admin_delete(&format!("/admin/keys/{revoked}"))
        .await
        .expect(200);

    let _ = k1;
    probe
        .finish(
            &before,
            &[
                &mk,
                &key1,
                &key2,
                &revoked_key,
                &small_mk,
                &small_key,
                &zero_mk,
                &paused_mk,
                &deleted_mk,
                &deleted_key,
            ],
        )
        .await;
}

// ---------------------------------------------------------------------------------------
// Transport: body size, routes, methods
// ---------------------------------------------------------------------------------------

async fn oversized_bodies_unknown_routes_and_methods(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (m, mk, k, key, _) = basic_setup(&app).await;
    let before = app.state_snapshot().await;
    let mut probe = Probe::new(&app);
    let mka = bearer(&mk);

    // Over the 10 MiB limit: 413, whatever the body holds.
    let huge_name = format!("{{\"name\":\"{}\"}}", "a".repeat(11 * 1024 * 1024));
    let huge_garbage = "x".repeat(10 * 1024 * 1024 + 1);
    for (method, path, auth) in [
        (Method::POST, "/admin/masters".to_owned(), admin()),
        (Method::POST, "/auth/login".to_owned(), Auth::None),
        (Method::PUT, format!("/v1/tokens/{k}"), mka.clone()),
        (Method::POST, format!("/admin/masters/{m}/keys"), admin()),
    ] {
        for text in [&huge_name, &huge_garbage] {
            probe
                .expect(
                    method.clone(),
                    &path,
                    &auth,
                    &raw_json(text),
                    413,
                    "payload_too_large",
                )
                .await;
        }
    }
    // Just under the limit: an ordinary validation error.
    let big_name = format!("{{\"name\":\"{}\"}}", "a".repeat(9 * 1024 * 1024));
    probe
        .expect(
            Method::POST,
            "/admin/masters",
            &admin(),
            &raw_json(&big_name),
            400,
            "invalid_field",
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
            probe
                .expect(
                    Method::GET,
                    path,
                    &auth,
                    &Body::None,
                    404,
                    "route_not_found",
                )
                .await;
        }
    }
    // Wrong methods on existing routes.
    for (method, path) in [
        (Method::PATCH, "/admin/masters".to_owned()),
        (Method::DELETE, "/admin/masters".to_owned()),
        (Method::PUT, "/admin/masters".to_owned()),
        (Method::POST, format!("/admin/masters/{m}")),
        (Method::PATCH, format!("/admin/masters/{m}")),
        (Method::GET, format!("/admin/masters/{m}/rotate")),
        (Method::DELETE, format!("/admin/masters/{m}/revoke-keys")),
        (Method::GET, format!("/admin/masters/{m}/access")),
        (Method::DELETE, format!("/admin/masters/{m}/keys")),
        (Method::POST, format!("/admin/keys/{k}")),
        (Method::POST, format!("/admin/keys/{k}/access")),
        (Method::DELETE, "/admin/namespaces".to_owned()),
        (Method::POST, "/admin/namespaces/1".to_owned()),
        (Method::GET, "/admin/sync".to_owned()),
        (Method::GET, "/auth/login".to_owned()),
        (Method::PUT, "/auth/login".to_owned()),
        (Method::POST, "/v1/whoami".to_owned()),
        (Method::DELETE, "/v1/tokens".to_owned()),
        (Method::PATCH, format!("/v1/tokens/{k}")),
        (Method::POST, format!("/v1/tokens/{k}")),
    ] {
        for auth in [admin(), mka.clone(), Auth::None] {
            probe
                .expect(
                    method.clone(),
                    &path,
                    &auth,
                    &raw_json("{\"name\":\"x\"}"),
                    405,
                    "method_not_allowed",
                )
                .await;
        }
    }

    probe.finish(&before, &[&mk, &key]).await;
}
