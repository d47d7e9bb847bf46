//! Axum extractors that put the caller's identity into a handler's signature.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ez_contract::SecretToken;
use ez_contract::snapshot::MasterStatus;

use super::Credential;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::Master;

/// The caller is the administrator.
pub struct AdminAuth;

/// The caller is an active master.
pub struct MasterAuth(pub Master);

/// Any credential, unvalidated beyond its own kind (for `GET /v1/whoami`).
pub struct AnyCredential(pub Credential);

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match state.auth.authenticate(&state.store, &parts.headers).await? {
            Credential::Admin => Ok(AdminAuth),
            Credential::ChildKey(key) => Err(child_key_refused(state, &key, "admin_required").await),
            Credential::Master(_) => Err(ApiError::forbidden(
                "admin_required",
                "this endpoint needs the admin credential",
            )),
        }
    }
}

impl FromRequestParts<AppState> for MasterAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match state.auth.authenticate(&state.store, &parts.headers).await? {
            Credential::Master(master) if master.status == MasterStatus::Active => Ok(MasterAuth(master)),
            Credential::Master(_) => Err(ApiError::forbidden(
                "master_suspended",
                "this master is suspended",
            )),
            Credential::ChildKey(key) => Err(child_key_refused(state, &key, "master_required").await),
            Credential::Admin => Err(ApiError::forbidden(
                "master_required",
                "this endpoint needs a master credential",
            )),
        }
    }
}

/// A child key is never enough for the admin or master API: 403 for a key that exists,
/// 401 for one that does not (an unknown credential is a bad credential).
async fn child_key_refused(state: &AppState, key: &SecretToken, code: &'static str) -> ApiError {
    match state.store.find_key_by_digest(&key.digest()).await {
        Ok(Some(_)) => ApiError::forbidden(code, "a child API key cannot be used on this endpoint"),
        Ok(None) => ApiError::unauthorized("invalid_credentials", "the credential is not valid"),
        Err(e) => e.into(),
    }
}

impl FromRequestParts<AppState> for AnyCredential {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .auth
            .authenticate(&state.store, &parts.headers)
            .await
            .map(AnyCredential)
    }
}

/// The caller is a balancer (`/internal/*`): it sent `X-Internal-Token` equal to
/// `internal.stats_token`, or no token is configured and `internal.allow_anonymous` is
/// set.
pub struct InternalAuth;

impl FromRequestParts<AppState> for InternalAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let given = parts
            .headers
            .get("x-internal-token")
            .and_then(|v| v.to_str().ok());
        match (&state.internal.stats_token, given) {
            (Some(token), Some(given))
                if ez_contract::token::constant_time_eq(token.expose(), given.trim()) =>
            {
                Ok(InternalAuth)
            }
            (Some(_), Some(_)) => Err(ApiError::unauthorized(
                "invalid_internal_token",
                "the X-Internal-Token is not valid",
            )),
            (Some(_), None) => Err(ApiError::unauthorized(
                "missing_internal_token",
                "send the stats token as X-Internal-Token",
            )),
            (None, _) if state.internal.allow_anonymous => Ok(InternalAuth),
            (None, _) => Err(ApiError::unauthorized(
                "internal_api_disabled",
                "no internal.stats_token is configured (set it, or internal.allow_anonymous = true)",
            )),
        }
    }
}
