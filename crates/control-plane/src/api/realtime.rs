//! Realtime stats from the counters balancers keep on the bus.

use axum::Json;
use axum::extract::State;

use super::ApiPath;
use crate::auth::{AdminAuth, MasterAuth};
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::usage::{self, RealtimeStats, SystemRealtime};

/// One master's realtime stats.
#[utoipa::path(get, path = "/admin/masters/{id}/realtime", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = RealtimeStats), (status = "4XX", body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn master_realtime(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<RealtimeStats>> {
    state.store.get_master(id).await?;
    Ok(Json(usage::master_realtime(&state, id).await?))
}

/// The calling master's realtime stats.
#[utoipa::path(get, path = "/v1/realtime", tag = "master", security(("bearer" = [])),
    responses((status = 200, body = RealtimeStats), (status = "4XX", body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn own_realtime(
    MasterAuth(master): MasterAuth,
    State(state): State<AppState>,
) -> ApiResult<Json<RealtimeStats>> {
    Ok(Json(usage::master_realtime(&state, master.id).await?))
}

/// Realtime stats summed over every master.
#[utoipa::path(get, path = "/admin/realtime", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = SystemRealtime), (status = "4XX", body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn system_realtime(_: AdminAuth, State(state): State<AppState>) -> ApiResult<Json<SystemRealtime>> {
    Ok(Json(usage::system_realtime(&state).await?))
}
