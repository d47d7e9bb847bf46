//! The optional active probe of credentials (a provider group's `health_check`; off by
//! default). Every `health_check.interval`, each credential of a probed group that is
//! `auto_disabled` or banned right now is tried with a request that proves it works and
//! costs no quota:
//! - API-key credentials (`on` or `metered`): the provider's model list — `GET
//!   {base}/models` (OpenAI and compatible), `GET {base}/v1/models` (Anthropic),
//!   `GET {base}/v1beta/models` (Gemini API);
//! - subscription credentials and Vertex service-account keys (`metered` only: their
//!   accounts are metered, so they are probed only when the operator asks): a token
//!   grant at their token endpoint (`token_refresh`), whose new token is kept.
//!
//! A credential that works again becomes `active` with its ban lifted, synced to every
//! balancer — unless it changed while it was probed (an operator's change stands); one
//! that does not stays as it is. Types without such a probe (`azure`, a `vertex` access
//! token, `vertex-express`), `manual_disabled` credentials and credentials banned for an
//! exhausted quota (which a model list cannot see) are never probed. Each run takes up to
//! 500 candidates and the next one goes on after the last, so all get their turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use ez_config::{HealthCheckConfig, TokenRefreshConfig};
use ez_contract::provider::ProviderType;
use ez_contract::time::now_unix;
use futures_util::StreamExt;

use crate::routing::effective_base_url;
use crate::scheduler::Job;
use crate::state::AppState;
use crate::store::{ApiKey, ProviderGroup};
use crate::sync::RoutingChange;
use crate::token_refresh::{self, TokenRefresh};

/// Credentials probed per run.
const BATCH: i64 = 500;
/// Probes at once.
const CONCURRENCY: usize = 8;

/// What one credential's probe came to (the `outcome` label of `ezapi_health_probes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// It works again: active, ban lifted.
    Recovered,
    /// It still does not work.
    Failed,
    /// Not probed: no free probe for its type, or its group's `health_check` does not
    /// cover it.
    Skipped,
}

impl Probe {
    fn label(self) -> &'static str {
        match self {
            Probe::Recovered => "recovered",
            Probe::Failed => "failed",
            Probe::Skipped => "skipped",
        }
    }
}

pub struct HealthProbe {
    state: AppState,
    config: HealthCheckConfig,
    refresh: Arc<TokenRefresh>,
    http: reqwest::Client,
    /// The last credential id probed: each run goes on from there, so every candidate
    /// gets its turn however many there are.
    cursor: AtomicI64,
}

impl HealthProbe {
    pub fn new(state: AppState, config: HealthCheckConfig, tokens: TokenRefreshConfig) -> Arc<HealthProbe> {
        let http = reqwest::Client::builder()
            // A redirect would carry the credential elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        let refresh = TokenRefresh::new(state.clone(), tokens);
        Arc::new(HealthProbe {
            state,
            config,
            refresh,
            http,
            cursor: AtomicI64::new(0),
        })
    }

    /// Probes every credential due now; returns each one's outcome.
    pub async fn probe_due(&self) -> anyhow::Result<Vec<(i64, Probe)>> {
        let after = self.cursor.load(Ordering::Relaxed);
        let due = self
            .state
            .store
            .probe_candidates(now_unix(), after, BATCH)
            .await?;
        let last = due.last().map(|(_, key)| key.id);
        // A short batch reached the end: the next run starts over.
        let next = if due.len() < BATCH as usize {
            0
        } else {
            last.unwrap_or(0)
        };
        self.cursor.store(next, Ordering::Relaxed);
        let outcomes = futures_util::stream::iter(due)
            .map(|(group, key)| async move {
                let id = key.id;
                (id, self.probe(&group, &key).await)
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut done = Vec::with_capacity(outcomes.len());
        for (id, outcome) in outcomes {
            let outcome = outcome.unwrap_or_else(|e| {
                tracing::warn!(credential = id, error = %e, "health probe: storing the result failed");
                Probe::Failed
            });
            metrics::counter!(crate::metrics::HEALTH_PROBES, "outcome" => outcome.label()).increment(1);
            done.push((id, outcome));
        }
        Ok(done)
    }

    async fn probe(&self, group: &ProviderGroup, key: &ApiKey) -> anyhow::Result<Probe> {
        let Ok(kind) = group.provider_type.parse::<ProviderType>() else {
            return Ok(Probe::Skipped);
        };
        let store = &self.state.store;
        // The revision the re-enabling is conditional on: what was probed.
        let revision = if token_refresh::refreshable(kind, key) {
            if group.health_check != "metered" {
                return Ok(Probe::Skipped);
            }
            if !self.refresh.grant_now(key.id).await? {
                return Ok(Probe::Failed);
            }
            // The grant stored its token (a new revision); anything else since is not ours.
            let granted = store.get_api_key(key.id).await?;
            if granted.status == "manual_disabled" {
                return Ok(Probe::Skipped);
            }
            granted.revision
        } else {
            let Some(request) = model_list(&self.http, kind, &effective_base_url(group), key) else {
                return Ok(Probe::Skipped);
            };
            if !request.send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(Probe::Failed);
            }
            key.revision
        };
        if !store.reenable_credential(key.id, revision).await? {
            // Changed while it was probed: the change stands.
            return Ok(Probe::Skipped);
        }
        let change = RoutingChange {
            credentials: vec![key.id],
            ..RoutingChange::default()
        };
        self.state.sync.routing_changed(change).await;
        tracing::info!(credential = key.id, group = %group.name, "health probe: the credential works again; re-enabled");
        Ok(Probe::Recovered)
    }
}

/// The free model-list request of an API-key credential, when its type has one.
fn model_list(
    http: &reqwest::Client,
    kind: ProviderType,
    base: &str,
    key: &ApiKey,
) -> Option<reqwest::RequestBuilder> {
    let base = base.trim_end_matches('/');
    let secret = key.api_key.expose();
    if secret.is_empty() {
        return None;
    }
    let versioned = |version: &str| {
        if base.ends_with("/v1") || base.ends_with("/v1beta") {
            format!("{base}/models")
        } else {
            format!("{base}/{version}/models")
        }
    };
    Some(match kind {
        ProviderType::OpenAi | ProviderType::Compatible => {
            http.get(format!("{base}/models")).bearer_auth(secret)
        }
        ProviderType::Anthropic | ProviderType::Claude => http
            .get(versioned("v1"))
            .header("x-api-key", secret)
            .header("anthropic-version", "2023-06-01"),
        ProviderType::Gemini | ProviderType::Google | ProviderType::AiStudio => {
            http.get(versioned("v1beta")).header("x-goog-api-key", secret)
        }
        _ => return None,
    })
}

#[async_trait]
impl Job for HealthProbe {
    fn name(&self) -> &'static str {
        "health_probe"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    async fn run_once(&self) -> anyhow::Result<()> {
        self.probe_due().await.map(drop)
    }
}
