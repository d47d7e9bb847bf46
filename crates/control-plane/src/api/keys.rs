//! Child keys managed by the admin on behalf of a master (`issued_by` = `admin`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::store::{IssuedBy, Key};
use crate::tenants::{self, CreateKeyRequest, KeyWithSecret, UpdateKeyAccessRequest, UpdateKeyRequest};

/// Issues a child key for a master; the response carries `key`, shown this once.
#[utoipa::path(post, path = "/admin/masters/{id}/keys", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = CreateKeyRequest,
    responses((status = 201, body = KeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_master_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<KeyWithSecret>)> {
    let master = state.store.get_master(id).await?;
    Ok((
        StatusCode::CREATED,
        Json(tenants::create_key(&state, &master, IssuedBy::Admin, req).await?),
    ))
}

/// Lists a master's child keys.
#[utoipa::path(get, path = "/admin/masters/{id}/keys", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path), PageQuery),
    responses((status = 200, body = Page<Key>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_master_keys(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Key>>> {
    let page = query.validate()?;
    state.store.get_master(id).await?;
    let (items, total) = state.store.list_keys(id, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// Gets one child key.
#[utoipa::path(get, path = "/admin/keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Key), (status = "4XX", body = ErrorEnvelope)))]
pub async fn get_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Key>> {
    Ok(Json(tenants::get_key(&state, id, None).await?))
}

/// Updates a child key (name, status, IP lists, expiry, qps, namespaces).
#[utoipa::path(put, path = "/admin/keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateKeyRequest,
    responses((status = 200, body = Key), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateKeyRequest>,
) -> ApiResult<Json<Key>> {
    Ok(Json(tenants::update_key(&state, id, None, req).await?))
}

/// Sets a child key's namespaces (a subset of its master's).
#[utoipa::path(put, path = "/admin/keys/{id}/access", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateKeyAccessRequest,
    responses((status = 200, body = Key), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_key_access(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateKeyAccessRequest>,
) -> ApiResult<Json<Key>> {
    Ok(Json(tenants::update_key_access(&state, id, req).await?))
}

/// Revokes a child key (the record is kept with status `revoked`).
#[utoipa::path(delete, path = "/admin/keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Key), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Key>> {
    Ok(Json(tenants::revoke_key(&state, id, None).await?))
}
