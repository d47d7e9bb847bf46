use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiJson, ApiQuery};
use crate::auth::AdminAuth;
use crate::config_doc::{self, ConfigDocument, ConflictPolicy, ImportReport};
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// Include upstream secrets (api keys, OAuth tokens). Off by default.
    #[serde(default)]
    pub include_secrets: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// What to do with entities that exist already: `skip` (default) or `overwrite`.
    pub policy: Option<ConflictPolicy>,
    /// Only report what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// The whole configuration as one JSON document.
#[utoipa::path(get, path = "/admin/export", tag = "admin", security(("bearer" = [])),
    params(ExportQuery),
    responses((status = 200, body = ConfigDocument), (status = "4XX", body = ErrorEnvelope)))]
pub async fn export_config(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> ApiResult<Json<ConfigDocument>> {
    if query.include_secrets {
        tracing::info!("configuration exported with upstream secrets");
    }
    Ok(Json(
        config_doc::export(&state.store, query.include_secrets).await?,
    ))
}

/// Imports a configuration document (idempotent). The whole document is validated first:
/// a malformed or inconsistent one is refused (422) and changes nothing.
#[utoipa::path(post, path = "/admin/import", tag = "admin", security(("bearer" = [])),
    params(ImportQuery), request_body = ConfigDocument,
    responses((status = 200, body = ImportReport), (status = "4XX", body = ErrorEnvelope)))]
pub async fn import_config(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ImportQuery>,
    ApiJson(doc): ApiJson<ConfigDocument>,
) -> ApiResult<Json<ImportReport>> {
    let policy = query.policy.unwrap_or(ConflictPolicy::Skip);
    Ok(Json(
        config_doc::import(&state, doc, policy, query.dry_run).await?,
    ))
}
