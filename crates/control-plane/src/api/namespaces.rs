use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiResult, ErrorEnvelope};
use crate::namespaces;
use crate::state::AppState;
use crate::store::{Namespace, NamespaceStatus};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespaceRequest {
    /// 1–64 of `[A-Za-z0-9_-]`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub status: Option<NamespaceStatus>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNamespaceRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    pub status: Option<NamespaceStatus>,
}

/// Creates a namespace.
#[utoipa::path(post, path = "/admin/namespaces", tag = "admin", security(("bearer" = [])),
    request_body = CreateNamespaceRequest,
    responses((status = 201, body = Namespace), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_namespace(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateNamespaceRequest>,
) -> ApiResult<(StatusCode, Json<Namespace>)> {
    let ns = namespaces::create_namespace(&state, &req.name, &req.description, req.status).await?;
    Ok((StatusCode::CREATED, Json(ns)))
}

/// Lists namespaces.
#[utoipa::path(get, path = "/admin/namespaces", tag = "admin", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<Namespace>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_namespaces(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Namespace>>> {
    let page = query.validate()?;
    let (items, total) = state.store.list_namespaces(page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// Gets one namespace.
#[utoipa::path(get, path = "/admin/namespaces/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Namespace), (status = "4XX", body = ErrorEnvelope)))]
pub async fn get_namespace(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Namespace>> {
    Ok(Json(state.store.get_namespace(id).await?))
}

/// Updates a namespace. Renaming one that is in use is refused (409).
#[utoipa::path(put, path = "/admin/namespaces/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateNamespaceRequest,
    responses((status = 200, body = Namespace), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_namespace(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateNamespaceRequest>,
) -> ApiResult<Json<Namespace>> {
    let ns = namespaces::update_namespace(
        &state,
        id,
        req.name.as_deref(),
        req.description.as_deref(),
        req.status,
    )
    .await?;
    Ok(Json(ns))
}

/// Deletes a namespace; 409 while a master or key still uses it.
#[utoipa::path(delete, path = "/admin/namespaces/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_namespace(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    namespaces::delete_namespace(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
