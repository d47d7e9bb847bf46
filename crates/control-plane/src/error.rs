//! The one API error type and its JSON envelope (SPEC §5):
//! `{"error": {"code": "snake_case", "message": "…", "type": "…"}}`, and the one place
//! where the services' domain errors become HTTP statuses and codes.
//!
//! 5xx bodies are generic; the cause is logged (inside the request's span, so with its
//! request id) and never sent to the client.

use std::borrow::Cow;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ez_contract::KeyRejection;

use crate::config_doc::ImportError;
use crate::namespaces::NamespaceError;
use crate::providers::ProviderError;
use crate::spec::SpecError;
use crate::store::StoreError;
use crate::tenants::TenantError;
use crate::usage::IngestError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub message: String,
    /// The request field at fault (`error.param`), when there is one.
    pub param: Option<&'static str>,
}

/// The error envelope of both planes (`ez_contract::error`, `docs/errors.md`).
pub use ez_contract::error::ErrorEnvelope;

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            param: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 400 `invalid_field`: one field has a value outside its rules.
    pub fn invalid_field(field: &'static str, reason: impl std::fmt::Display) -> ApiError {
        ApiError::bad_request("invalid_field", format!("{field}: {reason}")).with_param(field)
    }

    /// Names the request field at fault (`error.param`).
    pub fn with_param(mut self, field: &'static str) -> ApiError {
        self.param = Some(field);
        self
    }

    /// 422: well-formed but inconsistent with the current configuration.
    pub fn unprocessable(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn unauthorized(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("{}_not_found", what.replace(' ', "_")),
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, code, message)
    }

    /// 500 with a generic body; `cause` goes to the log only.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal server error",
        )
    }

    pub fn unavailable(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    pub fn body(&self) -> ErrorEnvelope {
        ErrorEnvelope::new(self.status.as_u16(), self.code.as_ref(), self.message.as_str())
            .with_param(self.param)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::Conflict(message) => ApiError::conflict("conflict", message),
            StoreError::LimitReached(message) => ApiError::conflict("limit_reached", message),
            StoreError::Database(sqlx::Error::PoolTimedOut) => {
                ApiError::unavailable("database_unavailable", "the database is not reachable right now")
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<SpecError> for ApiError {
    fn from(err: SpecError) -> ApiError {
        let (status, code) = spec_status(&err);
        let param = match &err {
            SpecError::InvalidField { field, .. } => Some(*field),
            _ => None,
        };
        ApiError {
            param,
            ..ApiError::new(status, code, err.to_string())
        }
    }
}

/// 400 `invalid_field` for a value outside its field's rules; 422 with its own code for
/// a rule between fields or about the provider type.
fn spec_status(err: &SpecError) -> (StatusCode, &'static str) {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    match err {
        SpecError::InvalidField { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
        SpecError::ExpiresInPast { .. } => (unprocessable, "expires_in_past"),
        SpecError::UnknownProviderType(_) => (unprocessable, "unknown_provider_type"),
        SpecError::BaseUrlRequired(_) => (unprocessable, "base_url_required"),
        SpecError::GoogleProjectRequired(_) => (unprocessable, "google_project_required"),
        SpecError::OauthTokenRequired(_) => (unprocessable, "oauth_token_required"),
        SpecError::ApiKeyRequired(_) => (unprocessable, "api_key_required"),
        SpecError::InvalidSelector(_) => (unprocessable, "invalid_selector"),
        SpecError::DefaultNamespaceNotInNamespaces(_) => {
            (unprocessable, "default_namespace_not_in_namespaces")
        }
        SpecError::NamespacesNotAllowed(_) => (unprocessable, "namespace_not_allowed"),
    }
}

impl From<TenantError> for ApiError {
    fn from(err: TenantError) -> ApiError {
        let message = err.to_string();
        match err {
            TenantError::Invalid(e) => e.into(),
            TenantError::Store(e) => e.into(),
            TenantError::UnknownNamespaces(_) => ApiError::unprocessable("namespace_not_found", message),
            TenantError::MasterSuspended => ApiError::conflict("master_suspended", message),
            TenantError::KeysOutsideNamespaces(_) => ApiError::conflict("keys_outside_namespaces", message),
            TenantError::KeyRevoked => ApiError::conflict("key_revoked", message),
            TenantError::SuspendedByAdmin => ApiError::forbidden("suspended_by_admin", message),
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(err: ProviderError) -> ApiError {
        let message = err.to_string();
        match err {
            ProviderError::Invalid(e) => e.into(),
            ProviderError::Store(e) => e.into(),
            ProviderError::GroupNotFound(_) => ApiError::unprocessable("group_not_found", message),
            ProviderError::GroupInUse(_) => ApiError::conflict("group_in_use", message),
            ProviderError::UnknownNamespace(_) => ApiError::unprocessable("namespace_not_found", message),
            ProviderError::CredentialUnfit { source, .. } => {
                let (status, code) = spec_status(&source);
                ApiError::new(status, code, message)
            }
            ProviderError::UnknownPreset => ApiError::unprocessable("unknown_preset", message),
            ProviderError::CorruptType(_) => ApiError::internal(message),
            ProviderError::NotSubscription(_) => ApiError::unprocessable("not_a_subscription_group", message),
            ProviderError::TooManyFiles(_) => ApiError::bad_request("too_many_files", message),
        }
    }
}

impl From<NamespaceError> for ApiError {
    fn from(err: NamespaceError) -> ApiError {
        let message = err.to_string();
        match err {
            NamespaceError::Invalid(e) => e.into(),
            NamespaceError::Store(e) => e.into(),
            NamespaceError::InUse { .. } => ApiError::conflict("namespace_in_use", message),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(err: ImportError) -> ApiError {
        let message = err.to_string();
        match err {
            ImportError::UnsupportedFormat => ApiError::unprocessable("unsupported_format", message),
            ImportError::Invalid(_) => ApiError::unprocessable("invalid_import", message),
            ImportError::Store(e) => e.into(),
        }
    }
}

impl From<crate::token_refresh::RefreshError> for ApiError {
    fn from(err: crate::token_refresh::RefreshError) -> ApiError {
        use crate::token_refresh::RefreshError;
        match err {
            RefreshError::InvalidFingerprint => {
                ApiError::invalid_field("token_fingerprint", "must be 16 lower-case hex digits")
            }
            RefreshError::NotFound => ApiError::not_found("api key"),
            RefreshError::Unavailable(cause) => {
                tracing::error!(error = %cause, "a token refresh could not be carried out");
                ApiError::unavailable(
                    "refresh_unavailable",
                    "the refresh cannot be carried out now; retry later",
                )
            }
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> ApiError {
        match err {
            IngestError::Invalid { field, reason } => ApiError::invalid_field(field, reason),
            IngestError::NotFound(what) => ApiError::not_found(what),
            IngestError::AutoBanDisabled => ApiError::conflict(
                "auto_ban_disabled",
                "this credential does not allow automatic bans",
            ),
            IngestError::Busy => ApiError::unavailable(
                "log_writer_busy",
                "too many log records are being written; retry later",
            ),
            IngestError::Refused(cause) => {
                tracing::warn!(error = %cause, "the database refused a report");
                ApiError::unprocessable(
                    "report_refused",
                    "the database refused a value of this report; sending it again cannot help",
                )
            }
            IngestError::Unavailable(cause) => {
                tracing::error!(error = %cause, "a report could not be stored");
                ApiError::unavailable(
                    "store_unavailable",
                    "the report cannot be stored now; retry later",
                )
            }
        }
    }
}

impl From<KeyRejection> for ApiError {
    fn from(rejection: KeyRejection) -> ApiError {
        ApiError::unauthorized(rejection.code(), rejection.message())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::bad_request(
            "invalid_path",
            format!("invalid path parameter: {}", rejection.body_text()),
        )
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::bad_request(
            "invalid_query",
            format!("invalid query parameter: {}", rejection.body_text()),
        )
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
