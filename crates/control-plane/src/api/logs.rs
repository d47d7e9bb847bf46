//! Request logs: every master's for the admin, its own for a master.

use axum::Json;
use axum::extract::State;
use ez_contract::report::limits;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiQuery, Page, PageQuery};
use crate::auth::{AdminAuth, MasterAuth};
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::store::{LogFilter, PageRequest, StatusFilter, StoredLog};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only this master's requests (admin only; a master sees its own).
    #[serde(alias = "master")]
    pub master_id: Option<i64>,
    /// Only this child key's requests.
    #[serde(alias = "key")]
    pub key_id: Option<i64>,
    /// Only this public model.
    pub model: Option<String>,
    /// An HTTP status (`429`), or `success` (< 400) or `error` (≥ 400).
    pub status: Option<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    pub page: Option<i64>,
    pub page_size: Option<i64>,
}

fn status_filter(status: Option<&str>) -> ApiResult<Option<StatusFilter>> {
    let Some(status) = status else {
        return Ok(None);
    };
    if status.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "status must not contain control characters",
        ));
    }
    match status.trim() {
        "success" => Ok(Some(StatusFilter::Success)),
        "error" => Ok(Some(StatusFilter::Error)),
        code => match code.parse::<i64>() {
            Ok(code) if (100..=599).contains(&code) => Ok(Some(StatusFilter::Code(code))),
            _ => Err(ApiError::bad_request(
                "invalid_query",
                "status must be an HTTP status, `success` or `error`",
            )),
        },
    }
}

fn time_range(since: Option<i64>, until: Option<i64>) -> ApiResult<()> {
    if since.is_some_and(|t| t < 0) || until.is_some_and(|t| t < 0) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "since and until are Unix seconds",
        ));
    }
    Ok(())
}

/// A text filter as stored records can hold it: no control characters (PostgreSQL
/// refuses NUL outright; stored records have none, see `LogRecord::sanitise`) and at
/// most the stored length — anything else could never match, so it is a mistake.
fn text_filter(name: &str, value: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.chars().any(char::is_control) => Err(ApiError::bad_request(
            "invalid_query",
            format!("{name} must not contain control characters"),
        )),
        Some(v) if v.len() > max => Err(ApiError::bad_request(
            "invalid_query",
            format!("{name} is longer than {max} bytes"),
        )),
        Some(v) if v.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

impl LogQuery {
    /// The page and filter; `own` pins the master (a master's own logs).
    fn validate(self, own: Option<i64>) -> ApiResult<(PageRequest, LogFilter)> {
        let page = PageQuery {
            page: self.page,
            page_size: self.page_size,
        }
        .validate()?;
        time_range(self.since, self.until)?;
        if own.is_some() && self.master_id.is_some_and(|id| Some(id) != own) {
            return Err(ApiError::bad_request(
                "invalid_query",
                "a master lists only its own logs; leave master_id out",
            ));
        }
        let filter = LogFilter {
            master_id: own.or(self.master_id),
            key_id: self.key_id,
            model: text_filter("model", self.model, limits::MODEL)?,
            status: status_filter(self.status.as_deref())?,
            since: self.since,
            until: self.until,
        };
        Ok((page, filter))
    }
}

/// Request logs of every master, newest first.
#[utoipa::path(get, path = "/admin/logs", tag = "admin", security(("bearer" = [])),
    params(LogQuery),
    responses((status = 200, body = Page<StoredLog>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn admin_logs(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Json<Page<StoredLog>>> {
    let (page, filter) = query.validate(None)?;
    let (items, total) = state.store.list_logs(&filter, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// The master's own request logs, newest first.
#[utoipa::path(get, path = "/v1/logs", tag = "master", security(("bearer" = [])),
    params(LogQuery),
    responses((status = 200, body = Page<StoredLog>), (status = "4XX", body = ErrorEnvelope)))]
pub async fn master_logs(
    MasterAuth(master): MasterAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<LogQuery>,
) -> ApiResult<Json<Page<StoredLog>>> {
    let (page, filter) = query.validate(Some(master.id))?;
    let (items, total) = state.store.list_logs(&filter, page).await?;
    Ok(Json(Page::new(items, total, page)))
}
