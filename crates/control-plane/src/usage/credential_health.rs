//! A credential's use and health as the API shows them: in every credential view
//! (`GET /admin/api-keys…`) and in the stats summary.

use serde::Serialize;
use utoipa::ToSchema;

use crate::store::{ApiKey, cooling_in_force};

/// Requests of a credential split by outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct RequestCounts {
    pub total_requests: i64,
    pub success_requests: i64,
    pub failure_requests: i64,
    /// `success_requests / total_requests` (0–1); null while there are no requests.
    pub success_rate: Option<f64>,
}

impl RequestCounts {
    pub fn new(total: i64, success: i64) -> RequestCounts {
        let success = success.clamp(0, total.max(0));
        RequestCounts {
            total_requests: total,
            success_requests: success,
            failure_requests: total - success,
            success_rate: (total > 0).then(|| success as f64 / total as f64),
        }
    }

    /// Both counts added up, saturating.
    pub fn plus(self, other: RequestCounts) -> RequestCounts {
        RequestCounts::new(
            self.total_requests.saturating_add(other.total_requests),
            self.success_requests.saturating_add(other.success_requests),
        )
    }
}

impl Default for RequestCounts {
    fn default() -> RequestCounts {
        RequestCounts::new(0, 0)
    }
}

/// What balancers reported about a credential.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialHealthView {
    /// Cumulative, as balancers reported them.
    #[serde(flatten)]
    pub requests: RequestCounts,
    /// Unix seconds of the newest reported attempt.
    pub last_used_at: Option<i64>,
    /// The newest failure's cause as the gateway words it (`upstream 401:
    /// authentication_error`, `connection refused`; never upstream text).
    pub last_error: Option<String>,
    /// Unix seconds the control plane received `last_error`.
    pub last_error_at: Option<i64>,
    /// The newest usage window an upstream announced; null until one is.
    pub quota: Option<QuotaView>,
}

/// A credential's newest usage window.
#[derive(Debug, Serialize, ToSchema)]
pub struct QuotaView {
    /// The provider's name of the window (`5h`, `7d`, `primary`, …).
    pub window: String,
    /// Percent used (0–100), when the provider says it.
    pub used_percent: Option<f64>,
    /// Unix seconds the window resets, when known.
    pub resets_at: Option<i64>,
    /// Unix seconds until which balancers skip the credential (the window is exhausted);
    /// shown only while it is in the future, null when the window has room. Not a ban: the
    /// credential comes back by itself.
    pub cooling_until: Option<i64>,
    /// Unix seconds a balancer saw the window.
    pub observed_at: i64,
}

/// `None` for an empty text.
pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

impl CredentialHealthView {
    pub fn of(key: &ApiKey, now: i64) -> CredentialHealthView {
        let health = &key.health;
        CredentialHealthView {
            requests: RequestCounts::new(health.request_count, health.success_count),
            last_used_at: health.last_used_at,
            last_error: non_empty(&health.last_error),
            last_error_at: health.last_error_at,
            quota: health.quota.as_ref().map(|w| QuotaView {
                window: w.name.clone(),
                used_percent: w.used_percent,
                resets_at: w.resets_at,
                cooling_until: cooling_in_force(key.cooling_until, now),
                observed_at: w.observed_at,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_split_by_outcome() {
        assert_eq!(
            RequestCounts::new(0, 0),
            RequestCounts {
                total_requests: 0,
                success_requests: 0,
                failure_requests: 0,
                success_rate: None
            }
        );
        let c = RequestCounts::new(8, 6);
        assert_eq!((c.failure_requests, c.success_rate), (2, Some(0.75)));
        // Totals saturate independently; successes never exceed the requests shown.
        assert_eq!(RequestCounts::new(5, 9).failure_requests, 0);
        let sum = RequestCounts::new(i64::MAX, 1).plus(RequestCounts::new(1, 1));
        assert_eq!((sum.total_requests, sum.success_requests), (i64::MAX, 2));
    }
}
