//! A subscription credential's access token refused mid-traffic (a 401): the balancer
//! asks the control plane for a new token now and retries the request once with it
//! before failing over. One ask per refused token on this balancer — requests that meet
//! the same 401 meanwhile wait for it — and the control plane's lease makes it one
//! refresh per credential across balancers and control planes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ez_contract::provider::ProviderType;
use ez_contract::report::{RefreshOutcome, RefreshRequest, ReportSink, token_fingerprint};
use ez_contract::routing::ProviderSnapshot;
use tokio::sync::OnceCell;

use crate::cache::SnapshotCache;
use crate::snapshot::{Part, Snapshot};

/// The longest wait for the control plane's answer: it may wait for another holder of
/// the credential's lease (10 s), then for the token endpoint (20 s), then store.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(40);

/// Asks in flight: (credential id, fingerprint of the refused token) → the shared answer.
type InFlight = HashMap<(i64, String), Arc<OnceCell<bool>>>;

pub struct Renewals {
    sink: Arc<dyn ReportSink>,
    cache: Arc<SnapshotCache>,
    in_flight: Mutex<InFlight>,
}

impl Renewals {
    pub fn new(sink: Arc<dyn ReportSink>, cache: Arc<SnapshotCache>) -> Renewals {
        Renewals {
            sink,
            cache,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a 401 of `provider` is worth a new token: a subscription credential that
    /// has a refresh token, or a Vertex service-account key.
    pub fn applies(provider: &ProviderSnapshot, kind: ProviderType) -> bool {
        (kind.is_subscription() && !provider.refresh_token.is_empty())
            || crate::upstream::holds_service_account(provider, kind)
    }

    /// Gets `provider` a token other than the refused one: the snapshot that holds it
    /// (the caller retries with the credential from there), or `None`.
    pub async fn renew(&self, provider: &ProviderSnapshot) -> Option<Arc<Snapshot>> {
        let refused = token_fingerprint(&provider.access_token);
        // A request that set out with the old token: the new one may be here already.
        if let Some(fresh) = self.holds_another(provider.id, &refused) {
            return Some(fresh);
        }
        let key = (provider.id, refused);
        let cell = self
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        // Whoever leaves first (done, or cancelled with its request) clears the entry;
        // later askers find the new token in the snapshot.
        let _clear = ClearOnDrop {
            in_flight: &self.in_flight,
            key: &key,
            cell: &cell,
        };
        let renewed = *cell.get_or_init(|| self.ask(provider.id, &key.1)).await;
        if renewed {
            self.holds_another(provider.id, &key.1)
        } else {
            None
        }
    }

    /// The snapshot in force, when it holds credential `id` with a token other than the
    /// refused one.
    fn holds_another(&self, id: i64, refused: &str) -> Option<Arc<Snapshot>> {
        let snapshot = self.cache.snapshot();
        let renewed = snapshot
            .providers
            .get(&id)
            .is_some_and(|p| token_fingerprint(&p.access_token) != refused);
        renewed.then_some(snapshot)
    }

    async fn ask(&self, id: i64, fingerprint: &str) -> bool {
        let request = RefreshRequest {
            token_fingerprint: fingerprint.to_owned(),
        };
        let outcome = match tokio::time::timeout(ASK_TIMEOUT, self.sink.refresh(id, &request)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => {
                tracing::warn!(credential = id, error = %e, "asking for a new access token failed; failing over");
                return false;
            }
            Err(_) => {
                tracing::warn!(credential = id, "no new access token in time; failing over");
                return false;
            }
        };
        tracing::info!(
            credential = id,
            ?outcome,
            "access token refused by the upstream; refresh asked"
        );
        // The control plane synced its outcome to the bus before answering: read it now
        // rather than when the refresh event arrives (a revoked credential leaves routing).
        if outcome != RefreshOutcome::NotRefreshable
            && let Err(e) = self.cache.refresh_part(Part::Routing).await
        {
            tracing::warn!(credential = id, error = %e, "reloading the snapshot after a refresh failed");
            return false;
        }
        outcome.renewed()
    }
}

/// Removes an ask's entry when its first waiter leaves, unless a newer ask took the slot.
struct ClearOnDrop<'a> {
    in_flight: &'a Mutex<InFlight>,
    key: &'a (i64, String),
    cell: &'a Arc<OnceCell<bool>>,
}

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        if in_flight.get(self.key).is_some_and(|c| Arc::ptr_eq(c, self.cell)) {
            in_flight.remove(self.key);
        }
    }
}
