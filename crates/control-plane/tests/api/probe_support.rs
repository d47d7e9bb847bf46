//! Request plumbing shared by the bad-input suites: how a probe names its credential and
//! body, sends the request and describes it in a failure message.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, into_resp};

/// The credential a request presents.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    None,
    Bearer(String),
    /// A raw header (`authorization: Basic …`, `x-api-key: …`).
    Header(&'static str, String),
}

pub(crate) fn bearer(token: &str) -> Auth {
    Auth::Bearer(token.to_owned())
}

pub(crate) fn admin() -> Auth {
    bearer(ADMIN_TOKEN)
}

/// The body a request carries.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    None,
    Json(Value),
    /// Raw text with an optional content type (`None`: no Content-Type header).
    Raw(Option<&'static str>, String),
}

impl Body {
    /// `Value::Null` stands for "no body".
    pub(crate) fn from_value(value: &Value) -> Body {
        if value.is_null() {
            Body::None
        } else {
            Body::Json(value.clone())
        }
    }
}

pub(crate) fn raw_json(text: &str) -> Body {
    Body::Raw(Some("application/json"), text.to_owned())
}

/// One bad request and the answer it must get.
pub(crate) type Row = (String, Auth, Value, u16, &'static str);

/// `"PUT /admin/keys/3"` → (PUT, "/admin/keys/3").
pub(crate) fn route(route: &str) -> (Method, &str) {
    let (method, path) = route.split_once(' ').expect("route is \"METHOD /path\"");
    (Method::from_bytes(method.as_bytes()).expect("method"), path)
}

pub(crate) async fn send(app: &TestApp, route_: &str, auth: &Auth, body: &Body) -> Resp {
    let (method, path) = route(route_);
    let mut req = app.client.request(method, format!("{}{path}", app.base));
    req = match auth {
        Auth::None => req,
        Auth::Bearer(token) => req.header("authorization", format!("Bearer {token}")),
        Auth::Header(name, value) => req.header(*name, value.as_str()),
    };
    req = match body {
        Body::None => req,
        Body::Json(value) => req.json(value),
        Body::Raw(Some(content_type), text) => req.header("content-type", *content_type).body(text.clone()),
        Body::Raw(None, text) => req.body(text.clone()),
    };
    into_resp(req.send().await.expect("request sent")).await
}

pub(crate) fn shorten(text: &str) -> String {
    if text.len() <= 300 {
        return text.to_owned();
    }
    let mut end = 300;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

pub(crate) fn describe(auth: &Auth, body: &Body) -> String {
    let hide = |t: &str| match t.char_indices().nth(12) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    };
    let auth = match auth {
        Auth::None => "no credential".to_owned(),
        Auth::Bearer(t) => format!("Bearer {}", hide(t)),
        Auth::Header(name, value) => format!("{name}: {}", hide(value)),
    };
    let body = match body {
        Body::None => "no body".to_owned(),
        Body::Json(v) => shorten(&v.to_string()),
        Body::Raw(ct, text) => format!("{ct:?} {:?}", shorten(text)),
    };
    format!("{auth}, {body}")
}

/// Where two JSON values differ (at most 20 places).
pub(crate) fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    if out.len() >= 20 {
        return;
    }
    let null = Value::Null;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (l, r) = (x.get(key).unwrap_or(&null), y.get(key).unwrap_or(&null));
                diff(l, r, format!("{path}/{key}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let (l, r) = (x.get(i).unwrap_or(&null), y.get(i).unwrap_or(&null));
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

/// Sends bad requests and collects every answer that is not the expected error envelope.
pub(crate) struct Probe<'a> {
    pub(crate) app: &'a TestApp,
    pub(crate) failures: Vec<String>,
    /// (request, response body) of every request sent.
    pub(crate) bodies: Vec<(String, String)>,
    pub(crate) sent: usize,
}

impl<'a> Probe<'a> {
    pub(crate) fn new(app: &'a TestApp) -> Probe<'a> {
        Probe {
            app,
            failures: Vec::new(),
            bodies: Vec::new(),
            sent: 0,
        }
    }

    /// Sends one request and checks: no 5xx, the status, the error code (one of
    /// `codes`), the envelope (non-empty `message` and `type`), an `X-Request-ID`.
    pub(crate) async fn check(
        &mut self,
        route: &str,
        auth: &Auth,
        body: &Body,
        status: u16,
        codes: &[&str],
    ) -> Resp {
        let resp = send(self.app, route, auth, body).await;
        self.sent += 1;
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
        if error["message"].as_str().is_none_or(str::is_empty) {
            problems.push("no error.message".to_owned());
        }
        if error["type"].as_str().is_none_or(str::is_empty) {
            problems.push("no error.type".to_owned());
        }
        if !resp.headers.contains_key("x-request-id") {
            problems.push("no X-Request-ID header".to_owned());
        }
        if !problems.is_empty() {
            self.failures.push(format!(
                "{route} ({}): {} — got {}",
                describe(auth, body),
                problems.join(", "),
                shorten(&resp.text)
            ));
        }
        self.bodies
            .push((format!("{route} ({})", describe(auth, body)), resp.text.clone()));
        resp
    }

    /// `check` with one expected code and a JSON body (`Value::Null`: none).
    pub(crate) async fn json(&mut self, route: &str, auth: &Auth, body: Value, status: u16, code: &str) {
        self.check(route, auth, &Body::from_value(&body), status, &[code])
            .await;
    }

    pub(crate) async fn rows(&mut self, rows: Vec<Row>) {
        for (route, auth, body, status, code) in rows {
            self.json(&route, &auth, body, status, code).await;
        }
    }

    /// Every problem found: wrong answers, a state that differs from `before`, and
    /// response bodies carrying one of `secrets`.
    pub(crate) fn problems(&self, before: &Value, after: &Value, secrets: &[&str]) -> Vec<String> {
        let mut failures = self.failures.clone();
        if after != before {
            let mut changes = Vec::new();
            diff(before, after, String::new(), &mut changes);
            failures.push(format!(
                "the rejected requests changed the state:\n      {}",
                changes.join("\n      ")
            ));
        }
        for secret in secrets {
            for (request, body) in self.bodies.iter().filter(|(_, b)| b.contains(secret)) {
                failures.push(format!(
                    "a response carries a secret ({}…): {request} → {}",
                    &secret[..secret.len().min(8)],
                    shorten(body)
                ));
            }
        }
        failures
    }

    /// Fails the test with `failures`, if any.
    pub(crate) fn assert_none(&self, failures: &[String]) {
        assert!(
            failures.is_empty(),
            "{} problem(s) with {} bad requests:\n  {}",
            failures.len(),
            self.sent,
            failures.join("\n  ")
        );
    }
}
