//! The upstream credentials' use at a glance.

use axum::Json;
use axum::extract::State;
use ez_contract::time::now_unix;
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiQuery;
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, ErrorEnvelope};
use crate::spec::CREDENTIAL_STATUSES;
use crate::state::AppState;
use crate::store::CredentialStatsFilter;
use crate::usage::apikey_stats::{self, ApiKeyStatsSummary, DEFAULT_ITEMS, MAX_ITEMS};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyStatsQuery {
    /// Only this provider group's credentials.
    pub group_id: Option<i64>,
    /// Only credentials of this status: `active`, `auto_disabled` or `manual_disabled`.
    pub status: Option<String>,
    /// Unix seconds: count the requests of the request log at or after this instant
    /// instead of the cumulative totals.
    pub since: Option<i64>,
    /// Most items listed, 1–1000 (default 100); the totals cover every credential.
    pub limit: Option<i64>,
}

impl ApiKeyStatsQuery {
    fn validate(self) -> ApiResult<(CredentialStatsFilter, usize)> {
        let bad = |message: String| ApiError::bad_request("invalid_query", message);
        if self.group_id.is_some_and(|id| id < 1) {
            return Err(bad("group_id must be a provider group id (≥ 1)".into()));
        }
        if let Some(status) = &self.status
            && !CREDENTIAL_STATUSES.contains(&status.as_str())
        {
            return Err(bad(format!(
                "status must be one of: {}",
                CREDENTIAL_STATUSES.join(", ")
            )));
        }
        if self.since.is_some_and(|t| t < 0) {
            return Err(bad("since is Unix seconds".into()));
        }
        let limit = match self.limit {
            None => DEFAULT_ITEMS,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (1..=MAX_ITEMS).contains(n))
                .ok_or_else(|| bad(format!("limit must be between 1 and {MAX_ITEMS}")))?,
        };
        let filter = CredentialStatsFilter {
            group_id: self.group_id,
            status: self.status,
            since: self.since,
        };
        Ok((filter, limit))
    }
}

/// Sums up the upstream credentials' use: how many there are per status and cooling now
/// (a usage window is exhausted), their requests, successes and failures, and the
/// credentials with the most failures first (then by id), at most `limit`.
///
/// Without `since` the counts are the cumulative totals balancers report. With `since`
/// they come from the request log (`GET /admin/logs`): its records naming the credential
/// (`api_key_id`) created at or after `since`, a success being a status below 400
/// without an error code (a stream cut after its 200 carries one), as the balancers'
/// totals count it. Records deleted by log retention are not counted.
#[utoipa::path(get, path = "/admin/apikey-stats/summary", tag = "admin", security(("bearer" = [])),
    params(ApiKeyStatsQuery),
    responses((status = 200, body = ApiKeyStatsSummary), (status = "4XX", body = ErrorEnvelope)))]
pub async fn summarize_api_keys(
    _: AdminAuth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ApiKeyStatsQuery>,
) -> ApiResult<Json<ApiKeyStatsSummary>> {
    let (filter, limit) = query.validate()?;
    let credentials = state.store.credential_stats(&filter).await?;
    Ok(Json(apikey_stats::summarize(credentials, now_unix(), limit)))
}
