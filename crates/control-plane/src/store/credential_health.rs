//! What balancers report about a credential: its use totals, its last use and failure,
//! and the newest usage window an upstream announced, with the cooling that comes with an
//! exhausted one. Written by usage reports only (never by admin writes); read into every
//! [`super::ApiKey`].

use ez_contract::report::{CredentialUsage, QuotaWindow};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::usage::SATURATED;
use super::{Store, StoreResult};

/// A credential's use and health as balancers reported them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CredentialHealth {
    /// Requests reported for the credential (saturating total).
    pub request_count: i64,
    /// Of those, the ones that succeeded.
    pub success_count: i64,
    /// Unix seconds of the newest reported attempt.
    pub last_used_at: Option<i64>,
    /// The newest failure's cause as the gateway words it; empty = none reported.
    pub last_error: String,
    /// Unix seconds the control plane received `last_error`.
    pub last_error_at: Option<i64>,
    /// The newest usage window reported; `None` until one is.
    pub quota: Option<StoredWindow>,
}

/// The newest usage window of a credential (its cooling is `ApiKey::cooling_until`: routing
/// state, written to the snapshot).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredWindow {
    pub name: String,
    /// Percent of the window used (0–100), when the provider said it.
    pub used_percent: Option<f64>,
    /// Unix seconds the window resets, when known.
    pub resets_at: Option<i64>,
    /// Unix seconds the balancer saw it; orders the reports.
    pub observed_at: i64,
}

/// What a batch of credential reports changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialUsageOutcome {
    /// Reports whose credential exists; those of a credential deleted meanwhile are
    /// skipped.
    pub updated: u64,
    /// Credentials whose cooling started, moved or ended: their routing entries must be
    /// rewritten so every balancer skips them, or takes them back.
    pub cooling_changed: Vec<i64>,
}

/// The health part of a credential row (the columns are in `KEY_COLUMNS`).
pub(super) fn health_from_row(row: &AnyRow) -> StoreResult<CredentialHealth> {
    let window: String = row.try_get("quota_window")?;
    let observed_at: Option<i64> = row.try_get("quota_observed_at")?;
    let quota = match observed_at {
        Some(observed_at) if !window.is_empty() => Some(StoredWindow {
            name: window,
            used_percent: row.try_get("quota_used_percent")?,
            resets_at: row.try_get("quota_resets_at")?,
            observed_at,
        }),
        _ => None,
    };
    Ok(CredentialHealth {
        request_count: row.try_get("request_count")?,
        success_count: row.try_get("success_count")?,
        last_used_at: row.try_get("last_used_at")?,
        last_error: row.try_get("last_error")?,
        last_error_at: row.try_get("last_error_at")?,
        quota,
    })
}

/// `until` when it is still ahead of `now`: a cooling in the past holds nothing back.
pub fn cooling_in_force(until: Option<i64>, now: i64) -> Option<i64> {
    until.filter(|t| *t > now)
}

impl Store {
    /// Takes a batch of credential reports in one transaction: adds the counts to the
    /// totals, moves `last_used_at` forward, keeps the newest failure (stamped `now`) and
    /// the usage window unless a newer one is stored (an equal `observed_at` is taken: the
    /// later report wins a tie). Returns the credentials whose cooling in force changed.
    ///
    /// Cooling is not a ban and, unlike [`Store::ban_credential`], bumps neither
    /// `revision` nor `updated_at`: the revision guards admin writes computed from a stale
    /// read, and an admin write never carries these columns (`write_api_key` leaves them
    /// alone), so no stale write can undo a cooling; the bus sync does not read the
    /// revision either. Bumping it on every report would make admin updates of busy
    /// credentials fail with conflicts for no reason.
    pub async fn add_credential_usage(
        &self,
        items: &[CredentialUsage],
        now: i64,
    ) -> StoreResult<CredentialUsageOutcome> {
        if items.is_empty() {
            return Ok(CredentialUsageOutcome::default());
        }
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let mut outcome = CredentialUsageOutcome::default();
            for item in items {
                let Some(before) = add_use(&mut tx, item, now).await? else {
                    continue;
                };
                outcome.updated += 1;
                let Some(window) = &item.window else {
                    continue;
                };
                if before
                    .observed_at
                    .is_some_and(|stored| stored > window.observed_at)
                {
                    continue;
                }
                take_window(&mut tx, item.api_key_id, window).await?;
                let changed = cooling_in_force(before.cooling_until, now)
                    != cooling_in_force(window.cooling_until, now);
                if changed && !outcome.cooling_changed.contains(&item.api_key_id) {
                    outcome.cooling_changed.push(item.api_key_id);
                }
            }
            Ok(outcome)
        }
        .await;
        self.finish(tx, result).await
    }
}

/// The window columns of a credential before a report touched them.
struct WindowBefore {
    cooling_until: Option<i64>,
    observed_at: Option<i64>,
}

/// Adds one report's counts, last use and failure; `None` when the credential is gone.
/// The update also locks the row (PostgreSQL) until the window is written.
async fn add_use(
    conn: &mut AnyConnection,
    item: &CredentialUsage,
    now: i64,
) -> StoreResult<Option<WindowBefore>> {
    let last_used = (item.last_used_at > 0).then_some(item.last_used_at);
    let row = sqlx::query(
        "UPDATE api_keys SET request_count = CASE WHEN request_count > $4 - $1 THEN $4 ELSE request_count + $1 END, \
         success_count = CASE WHEN success_count > $4 - $2 THEN $4 ELSE success_count + $2 END, \
         last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $5 THEN $5 ELSE last_used_at END, \
         last_error = COALESCE($6, last_error), \
         last_error_at = CASE WHEN $6 IS NULL THEN last_error_at ELSE $7 END \
         WHERE id = $3 RETURNING cooling_until, quota_observed_at",
    )
    .bind(item.requests)
    .bind(item.success_requests)
    .bind(item.api_key_id)
    .bind(SATURATED)
    .bind(last_used)
    .bind(item.last_error.as_deref())
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(WindowBefore {
            cooling_until: row.try_get("cooling_until")?,
            observed_at: row.try_get("quota_observed_at")?,
        })
    })
    .transpose()
}

async fn take_window(conn: &mut AnyConnection, id: i64, window: &QuotaWindow) -> StoreResult<()> {
    sqlx::query(
        "UPDATE api_keys SET quota_window = $2, quota_used_percent = $3, quota_resets_at = $4, \
         cooling_until = $5, quota_observed_at = $6 WHERE id = $1",
    )
    .bind(id)
    .bind(window.name.as_str())
    .bind(window.used_percent)
    .bind(window.resets_at)
    .bind(window.cooling_until)
    .bind(window.observed_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_future_cooling_is_in_force() {
        assert_eq!(cooling_in_force(None, 100), None);
        assert_eq!(cooling_in_force(Some(100), 100), None);
        assert_eq!(cooling_in_force(Some(99), 100), None);
        assert_eq!(cooling_in_force(Some(101), 100), Some(101));
    }
}
