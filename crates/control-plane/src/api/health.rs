use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct ComponentHealth {
    /// `ok` or `down`.
    pub status: &'static str,
    /// Implementation (`sqlite`, `postgres`, `redis`, `memory`).
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok` when everything answers, `degraded` when the bus does not.
    pub status: &'static str,
    pub database: ComponentHealth,
    pub bus: ComponentHealth,
}

/// Health of the database and the config bus.
#[utoipa::path(get, path = "/health", tag = "public",
    responses(
        (status = 200, description = "Database up (bus may be degraded)", body = HealthReport),
        (status = 503, description = "Database unreachable", body = HealthReport),
    ))]
pub async fn health(State(state): State<AppState>) -> Response {
    let db_kind = match state.store.kind() {
        ez_config::DatabaseKind::Sqlite => "sqlite",
        ez_config::DatabaseKind::Postgres => "postgres",
    };
    let timeout = std::time::Duration::from_secs(3);
    let (db, bus) = tokio::join!(
        tokio::time::timeout(timeout, state.store.ping()),
        tokio::time::timeout(timeout, state.bus.ping()),
    );
    let db_error = match db {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("timed out".to_owned()),
    };
    let bus_error = match bus {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("timed out".to_owned()),
    };
    if let Some(e) = &db_error {
        tracing::warn!(error = %e, "health: database down");
    }
    if let Some(e) = &bus_error {
        tracing::warn!(error = %e, "health: bus down");
    }
    // Errors are reported by kind only: driver messages may carry connection details.
    let report = HealthReport {
        status: if db_error.is_some() || bus_error.is_some() {
            "degraded"
        } else {
            "ok"
        },
        database: ComponentHealth {
            status: if db_error.is_some() { "down" } else { "ok" },
            kind: db_kind,
            error: db_error.map(|_| "unreachable".to_owned()),
        },
        bus: ComponentHealth {
            status: if bus_error.is_some() { "down" } else { "ok" },
            kind: state.bus.kind(),
            error: bus_error.map(|_| "unreachable".to_owned()),
        },
    };
    let status = if report.database.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "public",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
        .into_response()
}

/// This document: OpenAPI 3.1 of every control-plane endpoint.
#[utoipa::path(get, path = "/openapi.json", tag = "public",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi_document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        super::openapi_json(),
    )
        .into_response()
}
