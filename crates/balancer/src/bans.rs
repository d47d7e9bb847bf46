//! Auto-bans: credentials this balancer banned itself, effective at once — before the
//! control plane has persisted the ban and the snapshot carries it — and the count of
//! ambiguous refusals that leads to a ban.
//!
//! An unmistakable refusal (an invalid key) bans at once. An ambiguous one (a 401/403
//! that names no cause, see `refusal.rs`) bans only when `balancer.ban_threshold` of
//! them come within `balancer.ban_window`, counted per balancer; an answer of the
//! credential in between clears the count, since a credential that just worked is not
//! broken (a restricted key refused on one endpoint keeps serving the others).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ez_contract::report::CredentialBan;
use ez_contract::routing::ProviderSnapshot;
use ez_contract::time::now_unix;

use crate::refusal::{Refusal, Verdict};
use crate::report::Reporter;

/// Credential id → Unix second the ban ends. Read on every pick (a lock-free load),
/// written only when a credential is banned.
#[derive(Default)]
pub struct LocalBans {
    until: ArcSwap<HashMap<i64, i64>>,
}

impl LocalBans {
    pub fn is_banned(&self, credential_id: i64, now: i64) -> bool {
        let bans = self.until.load();
        !bans.is_empty() && bans.get(&credential_id).is_some_and(|until| *until > now)
    }

    /// The Unix second `credential_id`'s ban ends (0: none known).
    pub fn until(&self, credential_id: i64) -> i64 {
        let bans = self.until.load();
        if bans.is_empty() {
            return 0;
        }
        bans.get(&credential_id).copied().unwrap_or(0)
    }

    /// Bans `credential_id` until `until` (a longer ban in place is kept); ended bans
    /// are forgotten on the way.
    pub fn ban(&self, credential_id: i64, until: i64, now: i64) {
        self.until.rcu(|current| {
            let mut next: HashMap<i64, i64> = current
                .iter()
                .filter(|(_, u)| **u > now)
                .map(|(k, v)| (*k, *v))
                .collect();
            let entry = next.entry(credential_id).or_insert(until);
            *entry = (*entry).max(until);
            Arc::new(next)
        });
    }
}

/// Ambiguous refusals per credential within a sliding window.
pub struct Suspicions {
    threshold: usize,
    window: Duration,
    seen: Mutex<HashMap<i64, VecDeque<Instant>>>,
    /// Credentials with a count, so an answer skips the lock when there are none (the
    /// common case).
    tracked: AtomicUsize,
}

impl Suspicions {
    pub fn new(threshold: u32, window: Duration) -> Suspicions {
        Suspicions {
            threshold: usize::try_from(threshold).unwrap_or(usize::MAX).max(1),
            window,
            seen: Mutex::new(HashMap::new()),
            tracked: AtomicUsize::new(0),
        }
    }

    /// Counts one ambiguous refusal of `credential_id` at `now`; true when it reaches
    /// the threshold within the window (the count then starts over).
    pub fn record(&self, credential_id: i64, now: Instant) -> bool {
        // The map holds only timestamps: a panic elsewhere cannot leave it inconsistent.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let times = seen.entry(credential_id).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        times.push_back(now);
        let reached = times.len() >= self.threshold;
        if reached {
            seen.remove(&credential_id);
        }
        // Entries of credentials that stopped refusing are dropped on the way.
        seen.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.saturating_duration_since(*t) < self.window)
        });
        self.tracked.store(seen.len(), Ordering::Relaxed);
        reached
    }

    /// `credential_id` answered: its count starts over.
    pub fn clear(&self, credential_id: i64) {
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.remove(&credential_id).is_some() {
            self.tracked.store(seen.len(), Ordering::Relaxed);
        }
    }
}

/// The auto-ban policy of one balancer: local bans, the count of ambiguous refusals,
/// and the report of each ban to the control plane (which persists it and syncs it to
/// every balancer).
pub struct BanPolicy {
    local: LocalBans,
    suspicions: Suspicions,
    duration: Duration,
    reporter: Arc<Reporter>,
}

impl BanPolicy {
    pub fn new(duration: Duration, threshold: u32, window: Duration, reporter: Arc<Reporter>) -> BanPolicy {
        BanPolicy {
            local: LocalBans::default(),
            suspicions: Suspicions::new(threshold, window),
            duration,
            reporter,
        }
    }

    pub fn is_banned(&self, credential_id: i64, now: i64) -> bool {
        self.local.is_banned(credential_id, now)
    }

    /// The credential produced an answer (a success or the request's own error).
    pub fn answered(&self, credential_id: i64) {
        self.suspicions.clear(credential_id);
    }

    /// Applies `verdict` to `provider`; returns the refusal it banned the credential
    /// for, if it did. Credentials without `auto_ban` are never banned.
    pub fn apply<'v>(&self, provider: &ProviderSnapshot, verdict: &'v Verdict) -> Option<&'v Refusal> {
        if !provider.auto_ban {
            return None;
        }
        let refusal = match verdict {
            Verdict::BanNow(refusal) => refusal,
            Verdict::Suspect(refusal) if self.suspicions.record(provider.id, Instant::now()) => refusal,
            _ => return None,
        };
        self.ban(provider.id, refusal.reason());
        Some(refusal)
    }

    fn ban(&self, credential_id: i64, reason: String) {
        let now = now_unix();
        let until = now + i64::try_from(self.duration.as_secs()).unwrap_or(i64::MAX / 2);
        self.local.ban(credential_id, until, now);
        self.reporter.ban(CredentialBan {
            api_key_id: credential_id,
            ban_until: until,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_hold_until_they_end() {
        let bans = LocalBans::default();
        assert!(!bans.is_banned(1, 100));
        bans.ban(1, 200, 100);
        bans.ban(1, 150, 100);
        assert!(bans.is_banned(1, 199));
        assert!(!bans.is_banned(1, 200));
        assert!(!bans.is_banned(2, 100));
        bans.ban(2, 300, 250);
        assert!(!bans.is_banned(1, 250));
        assert!(bans.is_banned(2, 250));
    }

    #[test]
    fn suspicions_ban_on_the_threshold_within_the_window() {
        let s = Suspicions::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        assert!(!s.record(1, at(0)));
        assert!(!s.record(1, at(10)));
        assert!(!s.record(2, at(11)), "counted per credential");
        assert!(s.record(1, at(20)), "the third within 60 s");
        assert!(!s.record(1, at(21)), "the count starts over after a ban");

        // Spread wider than the window: the oldest fall out.
        let s = Suspicions::new(3, Duration::from_secs(60));
        assert!(!s.record(1, at(0)));
        assert!(!s.record(1, at(40)));
        assert!(!s.record(1, at(70)), "the one at 0 s is out of the window");
        assert!(s.record(1, at(90)));
    }

    #[test]
    fn an_answer_clears_the_count() {
        let s = Suspicions::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(!s.record(1, t0));
        assert!(!s.record(2, t0));
        s.clear(1);
        assert!(
            !s.record(1, t0 + Duration::from_secs(1)),
            "counted from zero again"
        );
        assert!(
            s.record(2, t0 + Duration::from_secs(1)),
            "others keep their count"
        );
        s.clear(3);

        let once = Suspicions::new(1, Duration::from_secs(60));
        assert!(once.record(1, t0), "a threshold of 1 bans at the first");
    }
}
