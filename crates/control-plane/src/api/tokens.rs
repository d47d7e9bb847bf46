//! A master's own child keys (`issued_by` = `master`). A master sees and changes only
//! its own keys; another master's key id answers 404.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::MasterAuth;
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::store::{IssuedBy, Key};
use crate::tenants::{self, CreateKeyRequest, KeyWithSecret, UpdateKeyRequest};

/// Issues a child key; the response carries `key`, shown this once.
#[utoipa::path(post, path = "/v1/tokens", tag = "master", security(("bearer" = [])),
    request_body = CreateKeyRequest,
    responses((status = 201, body = KeyWithSecret), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_token(
    MasterAuth(master): MasterAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<KeyWithSecret>)> {
    Ok((
        StatusCode::CREATED,
        Json(tenants::create_key(&state, &master, IssuedBy::Master, req).await?),
    ))
}

/// Lists the master's child keys.
#[utoipa::path(get, path = "/v1/tokens", tag = "master", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<Key>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_tokens(
    MasterAuth(master): MasterAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Key>>> {
    let page = query.validate()?;
    let (items, total) = state.store.list_keys(master.id, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// Gets one of the master's child keys.
#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "master", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Key), (status = "4XX", body = ErrorEnvelope)))]
pub async fn get_token(
    MasterAuth(master): MasterAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Key>> {
    Ok(Json(tenants::get_key(&state, id, Some(&master)).await?))
}

/// Updates one of the master's child keys.
#[utoipa::path(put, path = "/v1/tokens/{id}", tag = "master", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateKeyRequest,
    responses((status = 200, body = Key), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_token(
    MasterAuth(master): MasterAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateKeyRequest>,
) -> ApiResult<Json<Key>> {
    Ok(Json(tenants::update_key(&state, id, Some(&master), req).await?))
}

/// Revokes one of the master's child keys.
#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "master", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = Key), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_token(
    MasterAuth(master): MasterAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Key>> {
    Ok(Json(tenants::revoke_key(&state, id, Some(&master)).await?))
}
