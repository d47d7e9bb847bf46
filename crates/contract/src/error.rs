//! The one error shape of both planes, documented in `docs/errors.md`:
//!
//! ```json
//! {"error": {"code": "snake_case", "message": "for humans", "type": "invalid_request_error", "param": null}}
//! ```
//!
//! `code` is stable and machine-readable; `message` says what to do and may change;
//! `type` is the error family, derived from the HTTP status alone; `param` names the
//! request field at fault when there is one, else `null` — the shape OpenAI's SDKs read,
//! so a client gets the same envelope from the control plane and the data plane.

use serde::{Deserialize, Serialize};

/// `{"error": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable, machine-readable, snake_case.
    pub code: String,
    /// For humans; may change.
    pub message: String,
    /// The error family, derived from the status (`error_type`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when the error is about one; `null` otherwise.
    pub param: Option<String>,
}

impl ErrorEnvelope {
    pub fn new(status: u16, code: impl Into<String>, message: impl Into<String>) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
                kind: error_type(status).to_owned(),
                param: None,
            },
        }
    }

    pub fn with_param(mut self, param: Option<impl Into<String>>) -> ErrorEnvelope {
        self.error.param = param.map(Into::into);
        self
    }
}

/// The error family of an HTTP status, the same on both planes.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        502 | 504 => "upstream_error",
        // Not only upstreams: a route with no upstream configured, a database down.
        503 => "unavailable_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_always_present() {
        let plain = serde_json::to_value(ErrorEnvelope::new(401, "key_not_found", "no")).unwrap();
        assert_eq!(
            plain,
            serde_json::json!({"error": {"code": "key_not_found", "message": "no",
                "type": "authentication_error", "param": null}})
        );
        let field = ErrorEnvelope::new(400, "invalid_field", "name: too long").with_param(Some("name"));
        assert_eq!(serde_json::to_value(field).unwrap()["error"]["param"], "name");
    }

    #[test]
    fn the_type_follows_the_status() {
        let cases = [
            (400, "invalid_request_error"),
            (413, "invalid_request_error"),
            (409, "conflict_error"),
            (429, "rate_limit_error"),
            (500, "api_error"),
            (502, "upstream_error"),
            (503, "unavailable_error"),
            (504, "upstream_error"),
        ];
        for (status, kind) in cases {
            assert_eq!(error_type(status), kind, "{status}");
        }
    }
}
