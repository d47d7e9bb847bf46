//! Upstream credentials. Secrets are masked to their last 4 characters in every response.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::credential_import::{ImportReport, ImportRequest};
use crate::error::{ApiResult, ErrorEnvelope};
use crate::providers::{self, ApiKeyView, CreateApiKeyRequest, UpdateApiKeyRequest};
use crate::spec::CREDENTIAL_STATUSES;
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApiKeyQuery {
    pub group_id: Option<i64>,
    /// `active`, `auto_disabled` or `manual_disabled`.
    pub status: Option<String>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

/// Adds a credential to a provider group.
#[utoipa::path(post, path = "/admin/api-keys", tag = "admin", security(("bearer" = [])),
    request_body = CreateApiKeyRequest,
    responses((status = 201, body = ApiKeyView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_api_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<(StatusCode, Json<ApiKeyView>)> {
    let key = providers::create_api_key(&state, req).await?;
    Ok((StatusCode::CREATED, Json(ApiKeyView::from(&key))))
}

/// Lists credentials, optionally of one group and/or status.
#[utoipa::path(get, path = "/admin/api-keys", tag = "admin", security(("bearer" = [])),
    params(ApiKeyQuery),
    responses((status = 200, body = Page<ApiKeyView>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_api_keys(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ApiKeyQuery>,
) -> ApiResult<Json<Page<ApiKeyView>>> {
    let page = PageQuery {
        page: query.page,
        page_size: query.page_size,
    }
    .validate()?;
    if let Some(status) = &query.status
        && !CREDENTIAL_STATUSES.contains(&status.as_str())
    {
        return Err(crate::error::ApiError::bad_request(
            "invalid_query",
            format!("status must be one of: {}", CREDENTIAL_STATUSES.join(", ")),
        ));
    }
    let (items, total) = state
        .store
        .list_api_keys(query.group_id, query.status.as_deref(), page)
        .await?;
    Ok(Json(Page::new(
        items.iter().map(ApiKeyView::from).collect(),
        total,
        page,
    )))
}

/// Gets one credential.
#[utoipa::path(get, path = "/admin/api-keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 200, body = ApiKeyView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn get_api_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<ApiKeyView>> {
    Ok(Json(ApiKeyView::from(&state.store.get_api_key(id).await?)))
}

/// Updates a credential (absent fields keep their value; `ban_until: null` lifts a ban).
#[utoipa::path(put, path = "/admin/api-keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)), request_body = UpdateApiKeyRequest,
    responses((status = 200, body = ApiKeyView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_api_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateApiKeyRequest>,
) -> ApiResult<Json<ApiKeyView>> {
    Ok(Json(ApiKeyView::from(
        &providers::update_api_key(&state, id, req).await?,
    )))
}

/// Deletes a credential.
#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "admin", security(("bearer" = [])),
    params(("id" = i64, Path)),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_api_key(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<StatusCode> {
    providers::delete_api_key(&state, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Imports OAuth credential files (Claude Code `.credentials.json`, Codex `auth.json`,
/// Gemini CLI `oauth_creds.json`, Antigravity's, CLIProxyAPI's per-account files) into a
/// subscription group: a report per file — created, updated (same account) or refused
/// with the reason. A refused file writes nothing.
#[utoipa::path(post, path = "/admin/api-keys/import", tag = "admin", security(("bearer" = [])),
    request_body = ImportRequest,
    responses((status = 200, body = ImportReport), (status = "4XX", body = ErrorEnvelope)))]
pub async fn import_api_keys(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ImportRequest>,
) -> ApiResult<Json<ImportReport>> {
    Ok(Json(crate::credential_import::import(&state, req).await?))
}
