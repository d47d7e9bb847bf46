//! Realtime figures from the counters balancers keep on the bus.

use ez_contract::bus_keys::{self, MasterCounter};
use ez_contract::time::now_unix;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// A rate entry older than this is stale: nobody is sending.
const RATE_FRESH_SECS: i64 = 5;

/// Realtime figures of one master, from the counters balancers keep on the bus.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RealtimeStats {
    /// Requests since the counters started.
    pub requests: i64,
    /// Input + output tokens since the counters started.
    pub tokens: i64,
    /// Requests in the most recent second (0 when nothing was sent for a few seconds).
    pub qps: i64,
    /// The master's `global_qps` (0 = unlimited).
    pub limit: i64,
    /// Requests refused by the master's rate limit, by every balancer, since the
    /// counters started.
    pub blocked: i64,
    /// Unix seconds of the newest rate report; 0 when none.
    pub updated_at: i64,
}

/// Realtime figures of the whole system.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SystemRealtime {
    pub requests: i64,
    pub tokens: i64,
    pub qps: i64,
    pub blocked: i64,
    /// Masters with traffic in the last few seconds.
    pub active_masters: i64,
    /// Masters that have counters at all.
    pub masters: i64,
}

fn parse_i64(value: Option<&String>) -> i64 {
    value.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A master's realtime stats; a bus that cannot answer is a 503.
pub async fn master_realtime(state: &AppState, master_id: i64) -> ApiResult<RealtimeStats> {
    let bus_error = |e: ez_bus::BusError| {
        tracing::warn!(error = %e, "realtime stats unavailable");
        ApiError::unavailable(
            "bus_unavailable",
            "realtime stats are unavailable: the bus does not answer",
        )
    };
    let counters = state
        .bus
        .get_values(&[
            bus_keys::master_stats(master_id, MasterCounter::Requests),
            bus_keys::master_stats(master_id, MasterCounter::Tokens),
        ])
        .await
        .map_err(bus_error)?;
    let rate = state
        .bus
        .hash_get_all(&bus_keys::master_rate(master_id))
        .await
        .map_err(bus_error)?;
    let updated_at = parse_i64(rate.get("updated_at"));
    let fresh = now_unix() - updated_at <= RATE_FRESH_SECS;
    Ok(RealtimeStats {
        requests: parse_i64(counters[0].as_ref()),
        tokens: parse_i64(counters[1].as_ref()),
        qps: if fresh { parse_i64(rate.get("qps")) } else { 0 },
        limit: parse_i64(rate.get("limit")),
        blocked: parse_i64(rate.get("blocked")),
        updated_at,
    })
}

/// Sums every master's realtime stats.
pub async fn system_realtime(state: &AppState) -> ApiResult<SystemRealtime> {
    let keys = state
        .bus
        .keys_with_prefix(bus_keys::MASTER_STATS_PREFIX)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "realtime stats unavailable");
            ApiError::unavailable(
                "bus_unavailable",
                "realtime stats are unavailable: the bus does not answer",
            )
        })?;
    let mut ids: Vec<i64> = keys
        .iter()
        .filter_map(|k| {
            k.strip_prefix(bus_keys::MASTER_STATS_PREFIX)?
                .split(':')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut total = SystemRealtime {
        masters: ids.len() as i64,
        ..SystemRealtime::default()
    };
    for id in ids {
        let stats = master_realtime(state, id).await?;
        total.requests += stats.requests;
        total.tokens += stats.tokens;
        total.qps += stats.qps;
        total.blocked += stats.blocked;
        if stats.qps > 0 {
            total.active_masters += 1;
        }
    }
    Ok(total)
}
