//! The data plane's errors, in the envelope both planes share
//! (`ez_contract::error::ErrorEnvelope`, `docs/errors.md`):
//! `{"error": {"code", "message", "type", "param"}}` — the shape OpenAI's SDKs read.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ez_contract::KeyRejection;
use ez_contract::error::ErrorEnvelope;

#[derive(Debug)]
pub struct ProxyError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// The request field at fault (`error.param`).
    pub param: Option<String>,
}

impl ProxyError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ProxyError {
        ProxyError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            param: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ProxyError {
        self.param = Some(param.into());
        self
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope::new(self.status.as_u16(), self.code, self.message).with_param(self.param);
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<KeyRejection> for ProxyError {
    fn from(rejection: KeyRejection) -> ProxyError {
        ProxyError::new(StatusCode::UNAUTHORIZED, rejection.code(), rejection.message())
    }
}
