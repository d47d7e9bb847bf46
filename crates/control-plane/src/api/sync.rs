use axum::Json;
use axum::extract::State;

use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::sync::SyncReport;

/// Rebuilds the whole config bus from the database.
#[utoipa::path(post, path = "/admin/sync", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = SyncReport), (status = "4XX", body = ErrorEnvelope), (status = 503, body = ErrorEnvelope)))]
pub async fn full_sync(_: AdminAuth, State(state): State<AppState>) -> ApiResult<Json<SyncReport>> {
    state.sync.full_sync().await.map(Json).map_err(|e| {
        tracing::warn!(error = %e, "full sync failed");
        ApiError::unavailable(
            "bus_unavailable",
            "the config bus could not be written; retry later",
        )
    })
}
