use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiResult, ErrorEnvelope};
use crate::providers::{self, CreateGroupRequest, UpdateGroupRequest};
use crate::state::AppState;
use crate::store::ProviderGroup;

/// Creates a provider group.
#[utoipa::path(post, path = "/admin/provider-groups", tag = "admin", security(("bearer" = [])),
    request_body = CreateGroupRequest,
    responses((status = 201, body = ProviderGroup), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_provider_group(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateGroupRequest>,
) -> ApiResult<(StatusCode, Json<ProviderGroup>)> {
    Ok((
        StatusCode::CREATED,
        Json(providers::group_view(providers::create_group(&state, req).await?)),
    ))
}

/// Lists provider groups.
#[utoipa::path(get, path = "/admin/provider-groups", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<ProviderGroup>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_provider_groups(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<ProviderGroup>>> {
    let page = query.validate()?;
    let (items, total) = state.store.list_groups(page).await?;
    Ok(Json(Page::new(
        items.into_iter().map(providers::group_view).collect(),
        total,
        page,
    )))
}

/// Gets one provider group.
#[utoipa::path(get, path = "/admin/provider-groups/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ProviderGroup), (status = "4XX", body = ErrorEnvelope)))]
pub async fn get_provider_group(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ProviderGroup>> {
    Ok(Json(providers::group_view(state.store.get_group(id).await?)))
}

/// Updates a provider group; its credentials and routes are rewritten on the bus.
#[utoipa::path(put, path = "/admin/provider-groups/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateGroupRequest,
    responses((status = 200, body = ProviderGroup), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_provider_group(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateGroupRequest>,
) -> ApiResult<Json<ProviderGroup>> {
    Ok(Json(providers::group_view(
        providers::update_group(&state, id, req).await?,
    )))
}

/// Deletes a provider group and its credentials; 409 while a binding uses it.
#[utoipa::path(delete, path = "/admin/provider-groups/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_provider_group(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    providers::delete_group(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
