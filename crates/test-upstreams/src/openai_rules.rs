//! OpenAI's request-validation errors, shared by the mocks of OpenAI's APIs (Chat
//! Completions, Responses): a broken rule with the `message`, `param` and `code` OpenAI
//! answers, and the checks most rules are made of.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A broken rule in OpenAI's words: the error's `message`, `param` and `code`.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) message: String,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<&'static str>,
    /// Answered in the Codex backend's `{"detail": …}` shape.
    pub(crate) detail: bool,
}

impl Rule {
    /// `param` and `code` may be empty (null in the answer).
    pub(crate) fn new(message: impl Into<String>, param: &str, code: &'static str) -> Rule {
        let message = message.into();
        let param = Some(param.to_owned()).filter(|p| !p.is_empty());
        let code = Some(code).filter(|c| !c.is_empty());
        Rule {
            message,
            param,
            code,
            detail: false,
        }
    }

    pub(crate) fn respond(self, status: StatusCode) -> Response {
        if self.detail {
            return (status, Json(json!({ "detail": self.message }))).into_response();
        }
        let error = json!({ "error": { "message": self.message, "type": "invalid_request_error",
            "param": self.param, "code": self.code } });
        (status, Json(error)).into_response()
    }
}

pub(crate) fn missing(param: &str) -> Rule {
    let message = format!("Missing required parameter: '{param}'.");
    Rule::new(message, param, "missing_required_parameter")
}

pub(crate) fn invalid_type(param: &str, expected: &str, got: &Value) -> Rule {
    let got = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let message = format!("Invalid type for '{param}': expected {expected}, but got {got} instead.");
    Rule::new(message, param, "invalid_type")
}

pub(crate) fn invalid_value(param: &str, got: &str, supported: &[&str]) -> Rule {
    let quoted: Vec<String> = supported.iter().map(|s| format!("'{s}'")).collect();
    let supported = match quoted.as_slice() {
        [one] => one.clone(),
        [first, second] => format!("{first} and {second}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
        [] => String::new(),
    };
    let message = format!("Invalid value: '{got}'. Supported values are: {supported}.");
    Rule::new(message, param, "invalid_value")
}

/// `value[key]` (at `at`, e.g. `input[2].` or `messages[2].`) is present and passes `ok`.
pub(crate) fn need(
    value: &Value,
    key: &str,
    at: &str,
    expected: &str,
    ok: fn(&Value) -> bool,
) -> Result<(), Rule> {
    match &value[key] {
        Value::Null => Err(missing(&format!("{at}{key}"))),
        field if !ok(field) => Err(invalid_type(&format!("{at}{key}"), expected, field)),
        _ => Ok(()),
    }
}

pub(crate) fn need_string<'a>(value: &'a Value, key: &str, at: &str) -> Result<&'a str, Rule> {
    need(value, key, at, "a string", Value::is_string)?;
    Ok(value[key].as_str().unwrap_or_default())
}
