use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::store::{Namespace, NamespaceStatus};
use crate::validation;

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

const MAX_DESCRIPTION: usize = 1024;

fn description(value: &str) -> ApiResult<String> {
    if value.chars().count() > MAX_DESCRIPTION {
        return Err(ApiError::invalid_field(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters"),
        ));
    }
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(ApiError::invalid_field(
            "description",
            "must not contain control characters",
        ));
    }
    Ok(value.trim().to_owned())
}

async fn ensure_unused(state: &AppState, name: &str, action: &str) -> ApiResult<()> {
    let (masters, keys) = state.store.namespace_usage(name).await?;
    let bindings = state.store.bindings_in_namespace(name).await?;
    if masters + keys + bindings > 0 {
        return Err(ApiError::conflict(
            "namespace_in_use",
            format!(
                "cannot {action} namespace {name:?}: used by {masters} master(s), {keys} key(s) and {bindings} binding(s)"
            ),
        ));
    }
    Ok(())
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
    let name = validation::identifier("name", &req.name)?;
    let description = description(&req.description)?;
    let ns = state
        .store
        .create_namespace(&name, &description, req.status.unwrap_or(NamespaceStatus::Active))
        .await?;
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
    let current = state.store.get_namespace(id).await?;
    let name = match &req.name {
        Some(name) => validation::identifier("name", name)?,
        None => current.name.clone(),
    };
    if name != current.name {
        ensure_unused(&state, &current.name, "rename").await?;
    }
    let description = match &req.description {
        Some(d) => description(d)?,
        None => current.description.clone(),
    };
    let ns = state
        .store
        .update_namespace(id, &name, &description, req.status.unwrap_or(current.status))
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
    let current = state.store.get_namespace(id).await?;
    ensure_unused(&state, &current.name, "delete").await?;
    state.store.delete_namespace(id).await?;
    Ok(StatusCode::NO_CONTENT)
}
