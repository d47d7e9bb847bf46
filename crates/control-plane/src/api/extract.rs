//! Request extractors whose rejections use the API's error envelope.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use crate::error::{ApiError, ApiResult};
use crate::store::PageRequest;

/// A JSON object body. Malformed JSON, a body that is not an object, wrong types and a
/// wrong content type become 4xx envelopes.
pub struct ApiJson<T>(pub T);

fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "request body is too large",
                )
            } else {
                ApiError::bad_request("invalid_body", "the request body could not be read")
            }
        })?;
        parse_object(&bytes).map(ApiJson)
    }
}

/// Parses `bytes` as a JSON object into `T`. serde would also build a struct from an
/// array of its fields in declaration order; an API body must name its fields.
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(_) => ApiError::bad_request("invalid_body", "request body must be a JSON object"),
            Err(_) => ApiError::bad_request("invalid_json", "request body is not valid JSON"),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde_json reports some type errors (an enum given a non-string) as syntax
        // errors; whether the document itself is valid JSON decides the code.
        if serde_json::from_slice::<serde_json::Value>(bytes).is_err() {
            ApiError::bad_request("invalid_json", "request body is not valid JSON")
        } else {
            ApiError::bad_request(
                "invalid_body",
                format!(
                    "request body does not match the schema: {}",
                    redact(&e.to_string())
                ),
            )
        }
    })
}

/// Path parameters; a non-numeric id becomes a 400 envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters; a malformed value becomes a 400 envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-based page number (default 1).
    pub page: Option<i64>,
    /// Items per page, 1–500 (default 50).
    pub page_size: Option<i64>,
}

impl PageQuery {
    pub fn validate(&self) -> ApiResult<PageRequest> {
        let page = self.page.unwrap_or(1);
        let page_size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if page < 1 || page > i64::from(i32::MAX) {
            return Err(ApiError::bad_request("invalid_query", "page must be >= 1"));
        }
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("page_size must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Ok(PageRequest { page, page_size })
    }
}

/// serde quotes the offending value (`invalid type: string "…"`); a client that put a
/// secret in the wrong field must not get it back in an error, which may end up in logs.
fn redact(message: &str) -> String {
    static QUOTED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = QUOTED.get_or_init(|| {
        regex::Regex::new(r#"(string|variant) ("(?:[^"\\]|\\.)*"|`[^`]*`)"#).expect("constant regex")
    });
    re.replace_all(message, "$1 (value not shown)").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[expect(dead_code, reason = "fields exist to be deserialised")]
    struct Body {
        name: String,
        n: Option<i64>,
    }

    fn code(bytes: &str) -> String {
        parse_object::<Body>(bytes.as_bytes())
            .unwrap_err()
            .code
            .into_owned()
    }

    #[test]
    fn values_are_not_echoed_in_errors() {
        let err = parse_object::<Body>(br#"{"name": "a", "n": "sk-secret-value"}"#).unwrap_err();
        assert!(!err.message.contains("sk-secret-value"), "{}", err.message);
        assert!(err.message.contains("expected i64"), "{}", err.message);
        let err = parse_object::<Body>(br#"{"name": "a", "n": "sk-\"quoted\"-value"}"#).unwrap_err();
        assert!(!err.message.contains("quoted"), "{}", err.message);
        assert_eq!(
            redact("unknown variant `sk-x`, expected one of"),
            "unknown variant (value not shown), expected one of"
        );
    }

    #[test]
    fn only_objects_are_bodies() {
        assert!(parse_object::<Body>(br#" {"name": "a"} "#).is_ok());
        assert_eq!(code(r#"["a", 1]"#), "invalid_body");
        assert_eq!(code("null"), "invalid_body");
        assert_eq!(code(""), "invalid_json");
        assert_eq!(code(r#"{"name": "#), "invalid_json");
        assert_eq!(code(r#"{"name": 1}"#), "invalid_body");
        assert_eq!(code(r#"{"name": "a", "x": 1}"#), "invalid_body");
        assert_eq!(code(r#"{"name": "a"} trailing"#), "invalid_json");
    }
}
