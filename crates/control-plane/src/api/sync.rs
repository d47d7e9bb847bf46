use axum::Json;
use axum::extract::State;

use super::{ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::store::{OutboxEntry, OutboxStatus};
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OutboxQuery {
    /// `pending`, `done` or `dead`; all when absent.
    pub status: Option<OutboxStatus>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Bus writes that failed and their retry state, newest first.
#[utoipa::path(get, path = "/admin/sync/outbox", tag = "admin", security(("bearer" = [])),
    params(OutboxQuery),
    responses((status = 200, body = Page<OutboxEntry>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_outbox(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<OutboxQuery>,
) -> ApiResult<Json<Page<OutboxEntry>>> {
    let page = PageQuery {
        page: query.page,
        page_size: query.page_size,
    }
    .validate()?;
    let (items, total) = state.store.list_outbox(query.status, page).await?;
    Ok(Json(Page::new(items, total, page)))
}
