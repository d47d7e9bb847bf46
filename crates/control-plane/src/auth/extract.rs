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
            Credential::ChildKey(key) => Err(child_key_refused(state, &key, Needed::Admin).await),
            Credential::Master(_) => Err(ApiError::forbidden(
                "admin_required",
                "this is a master credential; /admin routes need the admin token (or an admin \
                 session); a master manages its own child keys under /v1/tokens",
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
            Credential::ChildKey(key) => Err(child_key_refused(state, &key, Needed::Master).await),
            Credential::Admin => Err(ApiError::forbidden(
                "master_required",
                "this is the admin credential; this route needs a master key (ezm-…) or a \
                 master session; the admin manages masters' keys under /admin/keys",
            )),
        }
    }
}

/// The credential a refused route needs.
#[derive(Clone, Copy)]
enum Needed {
    Admin,
    Master,
}

/// A child key is never enough for the admin or master API: 403 for a key that exists,
/// saying which credential the route needs; 401 for one that does not (an unknown
/// credential is a bad credential).
async fn child_key_refused(state: &AppState, key: &SecretToken, needed: Needed) -> ApiError {
    let (code, message) = match needed {
        Needed::Admin => (
            "admin_required",
            "this is a child key (sk-ez-…), which is for model routes such as \
             /v1/chat/completions; /admin routes need the admin token (or an admin session)",
        ),
        Needed::Master => (
            "master_required",
            "this is a child key (sk-ez-…), which is for model routes such as \
             /v1/chat/completions; this route needs the master key (ezm-…) or a master session",
        ),
    };
    match state.store.find_key_by_digest(&key.digest()).await {
        Ok(Some(_)) => ApiError::forbidden(code, message),
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
