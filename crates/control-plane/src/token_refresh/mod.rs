//! The scheduled refresh of subscription credentials' OAuth access tokens (`token_refresh`
//! in the configuration): every `interval`, each active `claude-code`, `codex`,
//! `gemini-cli` and `antigravity` credential whose token expires within `refresh_before`
//! is refreshed at its provider's token endpoint (`oauth`), and each `vertex` credential
//! holding a service-account key gets a new access token for it (`service_account`), at
//! most `max_concurrency` at once. A lease in the database makes it one refresh per credential however many control
//! planes share the database; the credential is re-read inside the lease, so a loser
//! never refreshes what a winner just did. The new access token — and a rotated refresh
//! token, in the same write — is stored and synced to the bus like any credential change.
//! A revoked refresh token (`invalid_grant`) marks the credential `auto_disabled` with the
//! reason; a transient failure keeps the working token and retries with backoff.

pub mod oauth;
pub mod service_account;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ez_config::TokenRefreshConfig;
use ez_contract::provider::ProviderType;
use ez_contract::report::{RefreshOutcome, RefreshRequest, token_fingerprint};
use ez_contract::time::now_unix;
use futures_util::StreamExt;

use crate::providers::{self, UpdateApiKeyRequest};
use crate::scheduler::Job;
use crate::state::AppState;
use crate::store::{ApiKey, StoreError};
use crate::sync::RoutingChange;

/// How long a refresh may hold its lease (the token endpoint's timeout and the write).
const LEASE: i64 = 60;
/// Credentials looked at per run.
const BATCH: i64 = 1000;
/// The longest wait between retries after transient failures.
const MAX_BACKOFF: i64 = 15 * 60;
/// How long a refresh asked for by a balancer waits for another holder of the lease.
const WAIT_FOR_HOLDER: Duration = Duration::from_secs(10);
const HOLDER_POLL: Duration = Duration::from_millis(200);

/// What one credential's refresh came to (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Refreshed,
    /// Another control plane holds the lease, or refreshed it meanwhile.
    Skipped,
    Revoked,
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Refreshed => "refreshed",
            Outcome::Skipped => "skipped",
            Outcome::Revoked => "revoked",
            Outcome::Failed => "failed",
        }
    }
}

/// Whether `key` (of a `kind` group) gets its access tokens from the token refresh: a
/// subscription with a refresh token, or a Vertex service-account key.
pub fn refreshable(kind: ProviderType, key: &ApiKey) -> bool {
    (kind.is_subscription() && !key.refresh_token.expose().is_empty())
        || (kind == ProviderType::Vertex && service_account::is_service_account(key.api_key.expose()))
}

/// Why a balancer's refresh request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("token_fingerprint must be 16 lower-case hex digits")]
    InvalidFingerprint,
    #[error("api key not found")]
    NotFound,
    /// The database or the bus failed: ask again later.
    #[error("the refresh could not be carried out: {0}")]
    Unavailable(String),
}

/// `POST /internal/apikeys/{id}/refresh` (and its in-process twin in `ezapi serve`).
pub async fn on_request(
    state: &AppState,
    id: i64,
    request: &RefreshRequest,
) -> Result<RefreshOutcome, RefreshError> {
    let fingerprint = request.token_fingerprint.as_str();
    if fingerprint.len() != 16
        || !fingerprint
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(RefreshError::InvalidFingerprint);
    }
    match state.store.get_api_key(id).await {
        Ok(_) => {}
        Err(StoreError::NotFound(_)) => return Err(RefreshError::NotFound),
        Err(e) => return Err(RefreshError::Unavailable(e.to_string())),
    }
    // Carried out to the end even when the asker hangs up: a grant whose rotated refresh
    // token were not stored would leave the account with a dead one.
    let refresh = TokenRefresh::new(state.clone(), (*state.token_refresh).clone());
    let fingerprint = fingerprint.to_owned();
    tokio::spawn(async move { refresh.refresh_now(id, &fingerprint).await })
        .await
        .map_err(|e| RefreshError::Unavailable(e.to_string()))?
        .map_err(|e| RefreshError::Unavailable(e.to_string()))
}

pub struct TokenRefresh {
    pub state: AppState,
    pub config: TokenRefreshConfig,
    http: reqwest::Client,
}

impl TokenRefresh {
    pub fn new(state: AppState, config: TokenRefreshConfig) -> Arc<TokenRefresh> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Arc::new(TokenRefresh { state, config, http })
    }

    /// Refreshes every credential due now; returns each one's outcome.
    pub async fn refresh_due(&self) -> anyhow::Result<Vec<(i64, Outcome)>> {
        let now = now_unix();
        let due_by = now + self.config.refresh_before.as_secs() as i64;
        let due = self.state.store.due_refreshes(now, due_by, BATCH).await?;
        let outcomes = futures_util::stream::iter(due)
            .map(|(id, failures)| async move { (id, self.refresh_one(id, failures).await) })
            .buffer_unordered(self.config.max_concurrency)
            .collect::<Vec<_>>()
            .await;
        let mut done = Vec::with_capacity(outcomes.len());
        for (id, outcome) in outcomes {
            let outcome = match outcome {
                Ok(outcome) => outcome,
                Err(e) => {
                    tracing::warn!(credential = id, error = %e, "token refresh: storing the result failed");
                    Outcome::Failed
                }
            };
            done.push((id, outcome));
        }
        Ok(done)
    }

    async fn refresh_one(&self, id: i64, failures: i64) -> anyhow::Result<Outcome> {
        let store = &self.state.store;
        let now = now_unix();
        if !store.take_refresh_lease(id, now, now + LEASE).await? {
            return Ok(Outcome::Skipped);
        }
        // Inside the lease: what another control plane may have stored meanwhile.
        let key = store.get_api_key(id).await?;
        let group = store.get_group(key.group_id).await?;
        let due_by = now + self.config.refresh_before.as_secs() as i64;
        let kind: Option<ProviderType> = group.provider_type.parse().ok();
        let (Some(kind), true) = (kind, key.expires_at.is_none_or(|t| t < due_by)) else {
            store.end_refresh_lease(id, 0, 0).await?;
            return Ok(Outcome::Skipped);
        };
        self.renew(id, kind, &key, failures).await
    }

    /// Refreshes credential `id` now because an upstream refused the access token with
    /// fingerprint `refused` (a balancer's request): single flight with the scheduled job
    /// and other control planes through the same lease. When the stored token is already
    /// another one, or becomes one while another holder refreshes it, that one is used.
    pub async fn refresh_now(&self, id: i64, refused: &str) -> anyhow::Result<RefreshOutcome> {
        let store = &self.state.store;
        let waited_until = tokio::time::Instant::now() + WAIT_FOR_HOLDER;
        loop {
            let key = store.get_api_key(id).await?;
            let group = store.get_group(key.group_id).await?;
            let kind = group.provider_type.parse::<ProviderType>().ok();
            let Some(kind) = kind.filter(|k| self.config.enabled && refreshable(*k, &key)) else {
                return Ok(RefreshOutcome::NotRefreshable);
            };
            if key.status != "active" {
                return Ok(RefreshOutcome::Revoked);
            }
            if token_fingerprint(key.access_token.expose()) != refused {
                return Ok(self.current(id).await);
            }
            let now = now_unix();
            if store.take_refresh_lease(id, now, now + LEASE).await? {
                // Inside the lease: re-read, the holder before may have just stored one.
                let key = store.get_api_key(id).await?;
                if token_fingerprint(key.access_token.expose()) != refused {
                    store.end_refresh_lease(id, 0, 0).await?;
                    return Ok(self.current(id).await);
                }
                return Ok(match self.renew(id, kind, &key, 0).await? {
                    Outcome::Refreshed => RefreshOutcome::Refreshed,
                    Outcome::Revoked => RefreshOutcome::Revoked,
                    Outcome::Failed | Outcome::Skipped => RefreshOutcome::Failed,
                });
            }
            // Another refresh holds it (or a transient failure's backoff does): wait for
            // its token, a while.
            if tokio::time::Instant::now() >= waited_until {
                return Ok(RefreshOutcome::Failed);
            }
            tokio::time::sleep(HOLDER_POLL).await;
        }
    }

    /// A token grant for credential `id` now, whatever its expiry (the health probe's
    /// proof that a subscription or service-account credential works): whether it gave a
    /// token (stored, as any refresh). False when another refresh holds the credential.
    pub async fn grant_now(&self, id: i64) -> anyhow::Result<bool> {
        let store = &self.state.store;
        let now = now_unix();
        if !store.take_refresh_lease(id, now, now + LEASE).await? {
            return Ok(false);
        }
        let key = store.get_api_key(id).await?;
        let group = store.get_group(key.group_id).await?;
        let Some(kind) = group
            .provider_type
            .parse::<ProviderType>()
            .ok()
            .filter(|k| refreshable(*k, &key))
        else {
            store.end_refresh_lease(id, 0, 0).await?;
            return Ok(false);
        };
        Ok(self.renew(id, kind, &key, 0).await? == Outcome::Refreshed)
    }

    /// The stored token is newer than the refused one. Whoever stored it may not have
    /// synced it to the bus yet (the database is written first): the credential is synced
    /// again, so the asking balancer finds it there once answered.
    async fn current(&self, id: i64) -> RefreshOutcome {
        let change = RoutingChange {
            credentials: vec![id],
            ..RoutingChange::default()
        };
        self.state.sync.routing_changed(change).await;
        RefreshOutcome::Current
    }

    /// One refresh-token grant for `key`, whose lease the caller holds; stores the
    /// outcome and ends the lease.
    async fn renew(
        &self,
        id: i64,
        kind: ProviderType,
        key: &ApiKey,
        failures: i64,
    ) -> anyhow::Result<Outcome> {
        let store = &self.state.store;
        let granted = if kind == ProviderType::Vertex {
            service_account::exchange(&self.http, &self.config, key.api_key.expose()).await
        } else {
            oauth::refresh(&self.http, &self.config, kind, key.refresh_token.expose()).await
        };
        let outcome = match granted {
            Ok(tokens) => {
                let update = UpdateApiKeyRequest {
                    access_token: Some(tokens.access_token),
                    refresh_token: tokens.refresh_token,
                    expires_at: Some(tokens.expires_in.map(|s| now_unix() + s)),
                    ..UpdateApiKeyRequest::default()
                };
                providers::update_api_key(&self.state, id, update).await?;
                store.end_refresh_lease(id, 0, 0).await?;
                tracing::info!(credential = id, provider = kind.as_str(), "token refreshed");
                Outcome::Refreshed
            }
            Err(oauth::Failure::Revoked(why)) => {
                let update = UpdateApiKeyRequest {
                    status: Some("auto_disabled".into()),
                    ban_reason: Some(format!("token refresh refused: {why}")),
                    ..UpdateApiKeyRequest::default()
                };
                providers::update_api_key(&self.state, id, update).await?;
                store.end_refresh_lease(id, 0, 0).await?;
                tracing::warn!(credential = id, provider = kind.as_str(), reason = %why, "token refresh refused; credential disabled");
                Outcome::Revoked
            }
            Err(oauth::Failure::Transient(why)) => {
                let wait = (self.config.interval.as_secs() as i64).max(1) << failures.clamp(0, 10);
                store
                    .end_refresh_lease(id, now_unix() + wait.min(MAX_BACKOFF), failures + 1)
                    .await?;
                tracing::warn!(credential = id, provider = kind.as_str(), reason = %why, retry_in_s = wait.min(MAX_BACKOFF), "token refresh failed; the token in use stays");
                Outcome::Failed
            }
        };
        metrics::counter!(crate::metrics::TOKEN_REFRESHES, "provider" => kind.as_str(), "outcome" => outcome.label())
            .increment(1);
        Ok(outcome)
    }
}

#[async_trait]
impl Job for TokenRefresh {
    fn name(&self) -> &'static str {
        "token_refresh"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    async fn run_once(&self) -> anyhow::Result<()> {
        self.refresh_due().await.map(|_| ())
    }
}
