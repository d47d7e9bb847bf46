//! The HTTP API of the control plane. Every route is registered in [`router`] together
//! with its OpenAPI annotation, so `/openapi.json` cannot drift from the code.

mod api_keys;
mod apikey_stats;
mod auth;
mod bindings;
mod config_doc;
mod extract;
mod health;
mod internal;
mod keys;
mod logs;
mod masters;
mod models;
mod namespaces;
mod provider_groups;
mod realtime;
mod shortcuts;
mod sync;
mod tokens;
mod whoami;

use axum::Router;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

pub use extract::{ApiJson, ApiPath, ApiQuery, PageQuery, parse_object as parse_document};

/// A page of a list: `{"items": […], "total": N, "page": P, "page_size": S}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
    pub page: i64,
    pub page_size: i64,
}

impl<T> Page<T> {
    pub fn new(items: Vec<T>, total: i64, req: crate::store::PageRequest) -> Page<T> {
        Page {
            items,
            total,
            page: req.page,
            page_size: req.page_size,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "ez-api control plane", description = "Admin, master and internal API of the ez-api LLM gateway."),
    modifiers(&BearerAuth),
    components(schemas(crate::error::ErrorEnvelope)),
    tags(
        (name = "public", description = "Health, metrics, login"),
        (name = "admin", description = "Administration (admin credential)"),
        (name = "master", description = "A master's own keys, logs and stats (master credential)"),
        (name = "internal", description = "Reports of balancers (X-Internal-Token)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "internal_token",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::new("X-Internal-Token"),
            )),
        );
    }
}

/// All CP routes and the OpenAPI document that describes them.
pub fn router() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(public_routes())
        .merge(internal_routes())
        .split_for_parts()
}

/// Every route but `/internal/*`: what the public listener serves when
/// `server.internal_listen` takes the internal ones elsewhere.
pub fn public_router() -> Router<AppState> {
    public_routes().split_for_parts().0
}

/// `/internal/*` alone, for `server.internal_listen`.
pub fn internal_router() -> Router<AppState> {
    internal_routes().split_for_parts().0
}

fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health::health))
        .routes(routes!(health::metrics))
        .routes(routes!(health::openapi_document))
        .routes(routes!(auth::login))
        .routes(routes!(whoami::whoami))
        .routes(routes!(namespaces::create_namespace, namespaces::list_namespaces))
        .routes(routes!(
            namespaces::get_namespace,
            namespaces::update_namespace,
            namespaces::delete_namespace
        ))
        .routes(routes!(masters::create_master, masters::list_masters))
        .routes(routes!(
            masters::get_master,
            masters::update_master,
            masters::delete_master
        ))
        .routes(routes!(masters::rotate_master))
        .routes(routes!(masters::revoke_master_keys))
        .routes(routes!(masters::update_master_access))
        .routes(routes!(keys::create_master_key, keys::list_master_keys))
        .routes(routes!(keys::get_key, keys::update_key, keys::delete_key))
        .routes(routes!(keys::update_key_access))
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(
            tokens::get_token,
            tokens::update_token,
            tokens::delete_token
        ))
        .routes(routes!(
            provider_groups::create_provider_group,
            provider_groups::list_provider_groups
        ))
        .routes(routes!(
            provider_groups::get_provider_group,
            provider_groups::update_provider_group,
            provider_groups::delete_provider_group
        ))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::import_api_keys))
        .routes(routes!(apikey_stats::summarize_api_keys))
        .routes(routes!(
            api_keys::get_api_key,
            api_keys::update_api_key,
            api_keys::delete_api_key
        ))
        .routes(routes!(shortcuts::create_preset_provider))
        .routes(routes!(shortcuts::create_custom_provider))
        .routes(routes!(bindings::create_binding, bindings::list_bindings))
        .routes(routes!(
            bindings::get_binding,
            bindings::update_binding,
            bindings::delete_binding
        ))
        .routes(routes!(models::list_models, models::create_model))
        .routes(routes!(models::update_model, models::delete_model))
        .routes(routes!(config_doc::export_config))
        .routes(routes!(config_doc::import_config))
        .routes(routes!(sync::full_sync))
        .routes(routes!(sync::list_outbox))
        .routes(routes!(logs::admin_logs))
        .routes(routes!(logs::master_logs))
        .routes(routes!(realtime::master_realtime))
        .routes(routes!(realtime::own_realtime))
        .routes(routes!(realtime::system_realtime))
}

/// What balancers call (`X-Internal-Token`).
fn internal_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(internal::ingest_logs))
        .routes(routes!(internal::flush_key_usage))
        .routes(routes!(internal::flush_credential_usage))
        .routes(routes!(internal::ban_credential))
        .routes(routes!(internal::refresh_credential))
}

pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "route_not_found", "no such endpoint")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// The OpenAPI document as JSON, built once.
pub fn openapi_json() -> &'static str {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        router()
            .1
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    })
}
