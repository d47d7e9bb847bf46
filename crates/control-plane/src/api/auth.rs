use axum::Json;
use axum::extract::State;
use ez_contract::snapshot::MasterStatus;
use ez_contract::time::now_unix;
use ez_contract::token::{constant_time_eq, digest};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiJson;
use crate::auth::Role;
use crate::auth::jwt::Claims;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub admin_token: Option<String>,
    pub master_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// A JWT to send as `Authorization: Bearer`.
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// `admin` or `master`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// Exchanges the admin token or a master key for a session JWT.
#[utoipa::path(post, path = "/auth/login", tag = "public",
    request_body = LoginRequest,
    responses(
        (status = 200, body = LoginResponse),
        (status = 400, body = crate::error::ErrorEnvelope),
        (status = 401, body = crate::error::ErrorEnvelope),
        (status = 403, body = crate::error::ErrorEnvelope),
    ))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<LoginResponse>> {
    let now = now_unix();
    let ttl = i64::try_from(state.auth.jwt_ttl().as_secs()).unwrap_or(i64::MAX / 2);
    let (claims, kind) = match (req.admin_token.as_deref(), req.master_key.as_deref()) {
        (Some(token), None) => {
            if !state.auth.is_admin_token(token.trim()) {
                return Err(ApiError::unauthorized(
                    "invalid_credentials",
                    "the credential is not valid",
                ));
            }
            let claims = Claims {
                sub: "admin".into(),
                role: Role::Admin,
                master_id: None,
                epoch: None,
                binding: state.auth.admin_binding().to_owned(),
                iat: now,
                exp: now + ttl,
            };
            (claims, "admin")
        }
        (None, Some(key)) => {
            let wanted = digest(key.trim());
            let master = state
                .store
                .find_master_by_digest(&wanted)
                .await?
                .filter(|m| constant_time_eq(&m.token_digest, &wanted))
                .ok_or_else(|| {
                    ApiError::unauthorized("invalid_credentials", "the credential is not valid")
                })?;
            if master.status != MasterStatus::Active {
                return Err(ApiError::forbidden(
                    "master_suspended",
                    "this master is suspended",
                ));
            }
            let claims = Claims {
                sub: format!("master:{}", master.id),
                role: Role::Master,
                master_id: Some(master.id),
                epoch: Some(master.epoch),
                binding: master.token_digest[..16].to_owned(),
                iat: now,
                exp: now + ttl,
            };
            (claims, "master")
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "send exactly one of admin_token or master_key",
            ));
        }
    };
    let token = state.auth.jwt().issue(&claims).map_err(ApiError::internal)?;
    Ok(Json(LoginResponse {
        token,
        expires_at: claims.exp,
        kind,
    }))
}
