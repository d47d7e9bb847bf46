use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::providers::{self, BindingView, CreateBindingRequest, UpdateBindingRequest};
use crate::state::AppState;

async fn view(state: &AppState, binding: crate::store::Binding) -> ApiResult<BindingView> {
    providers::binding_views(state, vec![binding])
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("binding view missing"))
}

/// Binds a public model in a namespace to a provider group. Several bindings of one
/// (namespace, public model) are weighted candidates.
#[utoipa::path(post, path = "/admin/bindings", tag = "admin", security(("bearer" = [])),
    request_body = CreateBindingRequest,
    responses((status = 201, body = BindingView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_binding(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateBindingRequest>,
) -> ApiResult<(StatusCode, Json<BindingView>)> {
    let binding = providers::create_binding(&state, req).await?;
    Ok((StatusCode::CREATED, Json(view(&state, binding).await?)))
}

/// Lists bindings with their current resolution.
#[utoipa::path(get, path = "/admin/bindings", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<BindingView>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_bindings(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<BindingView>>> {
    let page = query.validate()?;
    let (items, total) = state.store.list_bindings(page).await?;
    Ok(Json(Page::new(
        providers::binding_views(&state, items).await?,
        total,
        page,
    )))
}

/// Gets one binding and how its selector resolves (errors included).
#[utoipa::path(get, path = "/admin/bindings/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = BindingView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn get_binding(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<BindingView>> {
    let binding = state.store.get_binding(id).await?;
    Ok(Json(view(&state, binding).await?))
}

/// Updates a binding.
#[utoipa::path(put, path = "/admin/bindings/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateBindingRequest,
    responses((status = 200, body = BindingView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_binding(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateBindingRequest>,
) -> ApiResult<Json<BindingView>> {
    let binding = providers::update_binding(&state, id, req).await?;
    Ok(Json(view(&state, binding).await?))
}

/// Deletes a binding.
#[utoipa::path(delete, path = "/admin/bindings/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_binding(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    providers::delete_binding(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
