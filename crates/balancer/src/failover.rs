//! What a failed attempt leaves behind before the request fails over: the credential's
//! ban (when the refusal blames it), its usage window and cooling (`quota.rs`), the words
//! of its `last_error`, and the error the client gets when no credential does better.

use axum::http::StatusCode;
use ez_contract::report::QuotaWindow;
use ez_contract::routing::ProviderSnapshot;
use ez_contract::time::now_unix;

use crate::error::ProxyError;
use crate::metrics::GroupMetrics;
use crate::proxy::BalancerState;
use crate::refusal::{Cause, Verdict};

/// A usage window an upstream announced for credential `id`: reported, and, when it is
/// exhausted, the credential cools here at once.
pub(crate) fn note_window(state: &BalancerState, id: i64, window: QuotaWindow) {
    if let Some(until) = window.cooling_until {
        state.cooling.ban(id, until, now_unix());
        tracing::info!(credential = id, window = %window.name, until, "usage window exhausted; the credential cools until it resets");
    }
    state.reporter.note_window(id, window);
}

/// A refusal as a credential's `last_error`: status and marker, never upstream text.
pub(crate) fn refusal_words(verdict: &Verdict) -> String {
    match verdict {
        Verdict::BanNow(refusal) | Verdict::Suspect(refusal) => refusal.reason(),
        Verdict::FailOver(cause) => cause.client_error(None).message,
        Verdict::Answer => String::new(),
    }
}

/// Every credential of the route is cooling (their usage windows are exhausted): the
/// client may come back when the first one resets.
pub(crate) fn all_cooling(ends: i64) -> ProxyError {
    let mut e = ProxyError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "upstream_quota_cooling",
        "every upstream credential of this model has used up its usage window; retry after the reset",
    );
    e.retry_after = Some(u64::try_from(ends - now_unix()).unwrap_or(1).max(1));
    e
}

/// A credential's refusal: banned when the verdict says so, logged, and the error the
/// client gets if no other credential does better.
pub(crate) fn refused(
    state: &BalancerState,
    provider: &ProviderSnapshot,
    verdict: &Verdict,
    retry_after: Option<u64>,
    group: Option<&GroupMetrics>,
) -> ProxyError {
    let (cause, status) = match verdict {
        Verdict::FailOver(cause) => (*cause, None),
        Verdict::BanNow(refusal) | Verdict::Suspect(refusal) => (refusal.cause, Some(refusal.status)),
        // Never produced for a refusal: an answer is passed on.
        Verdict::Answer => (Cause::ServerError, None),
    };
    let banned = state.bans.apply(provider, verdict).map(|r| r.reason());
    if let (Some(_), Some(group)) = (&banned, group) {
        group.banned();
    }
    tracing::warn!(
        credential = provider.id,
        group = crate::metrics::group_name(provider),
        ?cause,
        upstream_status = status,
        banned = banned.as_deref(),
        "upstream refused; failing over"
    );
    cause.client_error(retry_after)
}
