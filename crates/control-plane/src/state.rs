use std::sync::Arc;

use ez_bus::ConfigBus;
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::auth::Authenticator;
use crate::store::Store;
use crate::sync::BusSync;
use crate::usage::LogWriter;

/// Everything a handler may need, built once at start-up and passed explicitly.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub bus: Arc<dyn ConfigBus>,
    pub sync: BusSync,
    pub auth: Arc<Authenticator>,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Arc<[IpNet]>,
    pub metrics: PrometheusHandle,
    pub log_writer: Arc<LogWriter>,
    pub internal: Arc<InternalAccess>,
    /// `token_refresh`: also what a balancer's refresh request (`/internal/apikeys/{id}/refresh`) uses.
    pub token_refresh: Arc<ez_config::TokenRefreshConfig>,
}

/// Who may call `/internal/*`: the holder of `internal.stats_token`; anyone when no token
/// is configured and `internal.allow_anonymous` is set; nobody otherwise.
#[derive(Debug, Clone, Default)]
pub struct InternalAccess {
    pub stats_token: Option<ez_contract::SecretToken>,
    pub allow_anonymous: bool,
}
