//! Credentials this balancer banned itself, effective at once — before the control plane
//! has persisted the ban and the snapshot carries it.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// Credential id → Unix second the ban ends. Read on every pick (a lock-free load),
/// written only when an upstream refuses a credential.
#[derive(Default)]
pub struct LocalBans {
    until: ArcSwap<HashMap<i64, i64>>,
}

impl LocalBans {
    pub fn is_banned(&self, credential_id: i64, now: i64) -> bool {
        let bans = self.until.load();
        !bans.is_empty() && bans.get(&credential_id).is_some_and(|until| *until > now)
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
}
