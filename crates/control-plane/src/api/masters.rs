use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::store::Master;
use crate::tenants::{self, CreateMasterRequest, MasterWithKey, UpdateAccessRequest, UpdateMasterRequest};

/// Creates a master; the response carries `master_key`, shown this once.
#[utoipa::path(post, path = "/admin/masters", tag = "admin", security(("bearer" = [])),
    request_body = CreateMasterRequest,
    responses((status = 201, body = MasterWithKey), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_master(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateMasterRequest>,
) -> ApiResult<(StatusCode, Json<MasterWithKey>)> {
    Ok((
        StatusCode::CREATED,
        Json(tenants::create_master(&state, req).await?),
    ))
}

/// Lists masters.
#[utoipa::path(get, path = "/admin/masters", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<Master>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_masters(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Master>>> {
    let page = query.validate()?;
    let (items, total) = state.store.list_masters(page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// A master with its realtime stats.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct MasterDetail {
    #[serde(flatten)]
    pub master: Master,
    /// From the balancers' counters on the bus; `null` when the bus does not answer.
    pub realtime: Option<crate::usage::RealtimeStats>,
}

/// Gets one master, with its realtime stats.
#[utoipa::path(get, path = "/admin/masters/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = MasterDetail), (status = "4XX", body = ErrorEnvelope)))]
pub async fn get_master(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<MasterDetail>> {
    let master = state.store.get_master(id).await?;
    let realtime = crate::usage::master_realtime(&state, id).await.ok();
    Ok(Json(MasterDetail { master, realtime }))
}

/// Updates name, group, status, `max_child_keys` or `global_qps`.
#[utoipa::path(put, path = "/admin/masters/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateMasterRequest,
    responses((status = 200, body = Master), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_master(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateMasterRequest>,
) -> ApiResult<Json<Master>> {
    Ok(Json(tenants::update_master(&state, id, req).await?))
}

/// Deletes a master: it is suspended and all its keys are revoked (records are kept).
#[utoipa::path(delete, path = "/admin/masters/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Master), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_master(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Master>> {
    Ok(Json(tenants::delete_master(&state, id).await?))
}

/// Issues a new master key (returned once); the old one stops working at once.
#[utoipa::path(post, path = "/admin/masters/{id}/rotate", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = MasterWithKey), (status = "4XX", body = ErrorEnvelope)))]
pub async fn rotate_master(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<MasterWithKey>> {
    Ok(Json(tenants::rotate_master(&state, id).await?))
}

/// Bumps the master's epoch: every child key issued before is rejected from now on.
#[utoipa::path(post, path = "/admin/masters/{id}/revoke-keys", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Master), (status = "4XX", body = ErrorEnvelope)))]
pub async fn revoke_master_keys(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Master>> {
    Ok(Json(tenants::revoke_master_keys(&state, id).await?))
}

/// Sets the master's namespaces; `propagate` narrows its keys to stay a subset.
#[utoipa::path(put, path = "/admin/masters/{id}/access", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateAccessRequest,
    responses((status = 200, body = Master), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_master_access(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateAccessRequest>,
) -> ApiResult<Json<Master>> {
    Ok(Json(tenants::update_master_access(&state, id, req).await?))
}
