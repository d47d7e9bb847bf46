//! The model registry: built-in catalogue, admin overrides, and which groups serve what.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiJson, ApiPath, ApiQuery, Page, PageQuery};
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::models::{Catalog, InfoSource, ModelInfo, ModelOverride, describe};
use crate::state::AppState;
use crate::sync::RoutingChange;

#[derive(Debug, Serialize, ToSchema)]
pub struct ServedBy {
    pub group_id: i64,
    pub group: String,
    #[serde(rename = "type")]
    pub provider_type: String,
    /// How many of the group's credentials serve the model.
    pub credentials: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelView {
    #[serde(flatten)]
    pub info: ModelInfo,
    pub source: InfoSource,
    /// The admin override in force, if any.
    #[serde(rename = "override")]
    pub override_: Option<ModelOverride>,
    pub served_by: Vec<ServedBy>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ModelQuery {
    /// Also list catalogue models no group serves.
    #[serde(default)]
    pub all: bool,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateModelRequest {
    pub name: String,
    pub provider: Option<String>,
    pub kind: Option<String>,
    pub context_window: Option<i64>,
    pub max_output_tokens: Option<i64>,
    pub supports_vision: Option<bool>,
    pub supports_functions: Option<bool>,
    pub supports_tool_choice: Option<bool>,
    pub supports_fim: Option<bool>,
    pub supports_reasoning: Option<bool>,
    pub supports_json_output: Option<bool>,
    pub input_price_per_mtok: Option<f64>,
    pub output_price_per_mtok: Option<f64>,
    pub embedding_dimensions: Option<i64>,
}

fn model_name(name: &str) -> ApiResult<String> {
    Ok(crate::validation::model_name("name", name)?)
}

fn checked(value: ModelOverride) -> ApiResult<ModelOverride> {
    match value.problem() {
        Some(problem) => Err(ApiError::invalid_field("model", problem)),
        None => Ok(value),
    }
}

async fn view_of(state: &AppState, name: &str) -> ApiResult<ModelView> {
    let overrides = state.store.model_overrides().await?;
    let mut views = aggregate(state, &overrides, &[name.to_owned()], false).await?;
    views
        .pop()
        .ok_or_else(|| ApiError::internal("model view missing"))
}

/// One view per model that a group serves or an override names (plus the whole
/// catalogue with `all`), or per name in `only` when given.
async fn aggregate(
    state: &AppState,
    overrides: &HashMap<String, ModelOverride>,
    only: &[String],
    all: bool,
) -> ApiResult<Vec<ModelView>> {
    let groups = state.store.all_groups().await?;
    let keys = state.store.all_api_keys().await?;
    // model → group id → credentials serving it
    let mut served: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
    for key in &keys {
        let Some(group) = groups.iter().find(|g| g.id == key.group_id) else {
            continue;
        };
        for model in crate::routing::served_models(group, key) {
            *served
                .entry(model.clone())
                .or_default()
                .entry(group.id)
                .or_default() += 1;
        }
    }
    for group in &groups {
        for model in &group.models {
            served
                .entry(model.clone())
                .or_default()
                .entry(group.id)
                .or_default();
        }
    }
    let mut names: Vec<String> = if only.is_empty() {
        let mut names: Vec<String> = served.keys().cloned().collect();
        names.extend(overrides.keys().cloned());
        if all {
            names.extend(Catalog::builtin().models.iter().map(|m| m.name.clone()));
        }
        names
    } else {
        only.to_vec()
    };
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|name| {
            let (info, source) = describe(&name, overrides);
            let served_by = served
                .get(&name)
                .map(|by_group| {
                    by_group
                        .iter()
                        .filter_map(|(gid, credentials)| {
                            let group = groups.iter().find(|g| g.id == *gid)?;
                            Some(ServedBy {
                                group_id: group.id,
                                group: group.name.clone(),
                                provider_type: group.provider_type.clone(),
                                credentials: *credentials,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            ModelView {
                override_: overrides.get(&name).cloned(),
                info,
                source,
                served_by,
            }
        })
        .collect())
}

/// Models served by the provider groups (and overridden ones), with capabilities and the
/// groups that serve each.
#[utoipa::path(get, path = "/admin/models", tag = "admin", security(("bearer" = [])),
    params(ModelQuery),
    responses((status = 200, body = Page<ModelView>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn list_models(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ModelQuery>,
) -> ApiResult<Json<Page<ModelView>>> {
    let page = PageQuery {
        page: query.page,
        page_size: query.page_size,
    }
    .validate()?;
    let overrides = state.store.model_overrides().await?;
    let views = aggregate(&state, &overrides, &[], query.all).await?;
    let total = i64::try_from(views.len()).unwrap_or(i64::MAX);
    let start = usize::try_from((page.page - 1) * page.page_size).unwrap_or(usize::MAX);
    let items = views
        .into_iter()
        .skip(start)
        .take(usize::try_from(page.page_size).unwrap_or(0))
        .collect();
    Ok(Json(Page::new(items, total, page)))
}

/// Adds metadata for a model (an override of the catalogue, or a model it lacks).
#[utoipa::path(post, path = "/admin/models", tag = "admin", security(("bearer" = [])),
    request_body = CreateModelRequest,
    responses((status = 201, body = ModelView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn create_model(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateModelRequest>,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    let name = model_name(&req.name)?;
    let value = checked(ModelOverride {
        provider: req.provider,
        kind: req.kind,
        context_window: req.context_window,
        max_output_tokens: req.max_output_tokens,
        supports_vision: req.supports_vision,
        supports_functions: req.supports_functions,
        supports_tool_choice: req.supports_tool_choice,
        supports_fim: req.supports_fim,
        supports_reasoning: req.supports_reasoning,
        supports_json_output: req.supports_json_output,
        input_price_per_mtok: req.input_price_per_mtok,
        output_price_per_mtok: req.output_price_per_mtok,
        embedding_dimensions: req.embedding_dimensions,
    })?;
    state.store.create_model_override(&name, &value).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            all_models: true,
            ..Default::default()
        })
        .await;
    Ok((StatusCode::CREATED, Json(view_of(&state, &name).await?)))
}

/// Sets (creates or replaces) the metadata override of a model.
#[utoipa::path(put, path = "/admin/models/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path, description = "Model name; URL-encode a `/` as %2F")),
    request_body = ModelOverride,
    responses((status = 200, body = ModelView), (status = "4XX", body = ErrorEnvelope)))]
pub async fn update_model(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(value): ApiJson<ModelOverride>,
) -> ApiResult<Json<ModelView>> {
    let name = model_name(&name)?;
    state.store.put_model_override(&name, &checked(value)?).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            all_models: true,
            ..Default::default()
        })
        .await;
    Ok(Json(view_of(&state, &name).await?))
}

/// Removes the metadata override of a model (the catalogue's values apply again).
#[utoipa::path(delete, path = "/admin/models/{name}", tag = "admin", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = "4XX", body = ErrorEnvelope)))]
pub async fn delete_model(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.store.delete_model_override(&name).await?;
    state
        .sync
        .routing_changed(RoutingChange {
            all_models: true,
            ..Default::default()
        })
        .await;
    Ok(StatusCode::NO_CONTENT)
}
