//! The credentials' use at a glance (`GET /admin/apikey-stats/summary`): totals over every
//! credential a filter matches, and the credentials that fail most.

use serde::Serialize;
use utoipa::ToSchema;

use super::credential_health::{RequestCounts, non_empty};
use crate::store::{CredentialStats, cooling_in_force};

/// Items a summary lists unless asked otherwise, and at most.
pub const DEFAULT_ITEMS: usize = 100;
pub const MAX_ITEMS: usize = 1_000;

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyStatsSummary {
    /// Credentials the filter matches (all of them count in the totals, whatever `limit`).
    pub credentials: i64,
    pub by_status: StatusCounts,
    /// Credentials balancers skip now because a usage window is exhausted.
    pub cooling: i64,
    #[serde(flatten)]
    pub requests: RequestCounts,
    /// The credentials with the most failed requests first (then by id), at most `limit`.
    pub items: Vec<ApiKeyStatsItem>,
}

/// Credentials per status.
#[derive(Debug, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusCounts {
    pub active: i64,
    pub auto_disabled: i64,
    pub manual_disabled: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyStatsItem {
    pub id: i64,
    pub group_id: i64,
    /// The provider group's name.
    pub group: String,
    /// `active`, `auto_disabled` or `manual_disabled`.
    pub status: String,
    #[serde(flatten)]
    pub requests: RequestCounts,
    /// Unix seconds of the newest reported attempt.
    pub last_used_at: Option<i64>,
    /// The newest failure's cause as the gateway words it.
    pub last_error: Option<String>,
    /// Unix seconds until which balancers skip the credential; null unless in the future.
    pub cooling_until: Option<i64>,
}

/// Sums `credentials` up at `now` and lists the first `limit` of them by failures.
pub fn summarize(credentials: Vec<CredentialStats>, now: i64, limit: usize) -> ApiKeyStatsSummary {
    let mut by_status = StatusCounts::default();
    let mut requests = RequestCounts::default();
    let mut cooling = 0;
    let mut items = Vec::with_capacity(credentials.len());
    for c in credentials {
        match c.status.as_str() {
            "active" => by_status.active += 1,
            "auto_disabled" => by_status.auto_disabled += 1,
            "manual_disabled" => by_status.manual_disabled += 1,
            _ => {}
        }
        let cooling_until = cooling_in_force(c.cooling_until, now);
        cooling += i64::from(cooling_until.is_some());
        let counts = RequestCounts::new(c.requests, c.successes);
        requests = requests.plus(counts);
        items.push(ApiKeyStatsItem {
            id: c.id,
            group_id: c.group_id,
            group: c.group,
            status: c.status,
            requests: counts,
            last_used_at: c.last_used_at,
            last_error: non_empty(&c.last_error),
            cooling_until,
        });
    }
    let matched = i64::try_from(items.len()).unwrap_or(i64::MAX);
    items.sort_by(|a, b| {
        b.requests
            .failure_requests
            .cmp(&a.requests.failure_requests)
            .then(a.id.cmp(&b.id))
    });
    items.truncate(limit);
    ApiKeyStatsSummary {
        credentials: matched,
        by_status,
        cooling,
        requests,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(
        id: i64,
        status: &str,
        requests: i64,
        successes: i64,
        cooling_until: Option<i64>,
    ) -> CredentialStats {
        CredentialStats {
            id,
            group_id: 1,
            group: "g".into(),
            status: status.into(),
            requests,
            successes,
            last_used_at: None,
            last_error: String::new(),
            cooling_until,
        }
    }

    #[test]
    fn totals_cover_every_credential_and_items_the_worst_first() {
        let summary = summarize(
            vec![
                credential(1, "active", 10, 9, None),
                credential(2, "auto_disabled", 4, 0, Some(200)),
                credential(3, "active", 0, 0, Some(100)),
                credential(4, "manual_disabled", 6, 2, None),
            ],
            100,
            2,
        );
        assert_eq!(summary.credentials, 4);
        assert_eq!(
            summary.by_status,
            StatusCounts {
                active: 2,
                auto_disabled: 1,
                manual_disabled: 1
            }
        );
        assert_eq!(summary.cooling, 1, "a cooling that ended does not count");
        assert_eq!(summary.requests, RequestCounts::new(20, 11));
        let ids: Vec<i64> = summary.items.iter().map(|i| i.id).collect();
        assert_eq!(ids, [2, 4], "four failures each, then by id; cut to the limit");
        assert_eq!(summary.items[0].cooling_until, Some(200));
        assert_eq!(summary.items[0].requests.success_rate, Some(0.0));
    }
}
