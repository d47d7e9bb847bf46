//! `/internal/*`: what balancers report (SPEC §5 "Internal"), authenticated by
//! `X-Internal-Token`.

use axum::Json;
use axum::extract::Path;
use axum::extract::State;
use axum::http::StatusCode;
use ez_contract::report::{
    CredentialBan, CredentialUsageBatch, KeyUsageBatch, LogBatch, RefreshAnswer, RefreshRequest,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiJson;
use crate::auth::InternalAuth;
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::usage;

#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// Items taken (queued or applied).
    pub accepted: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogsAccepted {
    /// Records stored.
    pub accepted: u64,
    /// Records dropped because they cannot be stored (e.g. a status outside 100–599, a
    /// negative count, a value the database refuses); counted in
    /// `ezapi_log_records_rejected_total`. Sending them again cannot help.
    pub rejected: u64,
}

/// A batch of log records. Each record is repaired where it can be (control characters
/// removed, text cut to its limit) and dropped where it cannot; the rest is stored before
/// the answer. 503 only when nothing can be stored now: send the batch again later.
#[utoipa::path(post, path = "/internal/logs", tag = "internal", security(("internal_token" = [])),
    request_body = LogBatch,
    responses((status = 202, body = LogsAccepted), (status = "4XX", body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn ingest_logs(
    _: InternalAuth,
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<LogBatch>,
) -> ApiResult<(StatusCode, Json<LogsAccepted>)> {
    let outcome = usage::ingest_logs(&state, batch).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(LogsAccepted {
            accepted: outcome.stored as u64,
            rejected: outcome.rejected as u64,
        }),
    ))
}

/// Usage per child key since the sender's last flush: added to the keys' totals;
/// `last_used_at` moves forward.
#[utoipa::path(post, path = "/internal/stats/flush", tag = "internal", security(("internal_token" = [])),
    request_body = KeyUsageBatch,
    responses((status = 200, body = Accepted), (status = "4XX", body = ErrorEnvelope)))]
pub async fn flush_key_usage(
    _: InternalAuth,
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<KeyUsageBatch>,
) -> ApiResult<Json<Accepted>> {
    let accepted = usage::ingest_key_usage(&state, batch).await?;
    Ok(Json(Accepted { accepted }))
}

/// Use per upstream credential since the sender's last flush.
#[utoipa::path(post, path = "/internal/apikey-stats/flush", tag = "internal", security(("internal_token" = [])),
    request_body = CredentialUsageBatch,
    responses((status = 200, body = Accepted), (status = "4XX", body = ErrorEnvelope)))]
pub async fn flush_credential_usage(
    _: InternalAuth,
    State(state): State<AppState>,
    ApiJson(batch): ApiJson<CredentialUsageBatch>,
) -> ApiResult<Json<Accepted>> {
    let accepted = usage::ingest_credential_usage(&state, batch).await?;
    Ok(Json(Accepted { accepted }))
}

/// A balancer banned a credential with `auto_ban`: the ban is stored (a longer one in
/// place is kept) and synced to every balancer. 409 when the credential does not allow
/// automatic bans.
#[utoipa::path(post, path = "/internal/apikey-bans", tag = "internal", security(("internal_token" = [])),
    request_body = CredentialBan,
    responses((status = 200, body = Accepted), (status = "4XX", body = ErrorEnvelope)))]
pub async fn ban_credential(
    _: InternalAuth,
    State(state): State<AppState>,
    ApiJson(ban): ApiJson<CredentialBan>,
) -> ApiResult<Json<Accepted>> {
    usage::ban_credential(&state, ban).await?;
    Ok(Json(Accepted { accepted: 1 }))
}

/// A balancer met a 401 with a subscription credential's access token: refresh it now.
/// Single flight: one refresh per credential however many balancers and control planes
/// ask (a lease in the database); when the stored token is no longer the refused one
/// (`token_fingerprint`), it is used as is (`current`). Answers once the new token is
/// stored and synced to the bus.
#[utoipa::path(post, path = "/internal/apikeys/{id}/refresh", tag = "internal", security(("internal_token" = [])),
    params(("id" = i64, Path, description = "Credential id")),
    request_body = RefreshRequest,
    responses((status = 200, body = RefreshAnswer), (status = "4XX", body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn refresh_credential(
    _: InternalAuth,
    State(state): State<AppState>,
    Path(id): Path<i64>,
    ApiJson(request): ApiJson<RefreshRequest>,
) -> ApiResult<Json<RefreshAnswer>> {
    let outcome = crate::token_refresh::on_request(&state, id, &request).await?;
    Ok(Json(RefreshAnswer { outcome }))
}
