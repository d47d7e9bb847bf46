//! The ez-api control plane (SPEC §1): owns the database, serves the admin, master and
//! internal APIs, and keeps the config bus in step with the database.
//!
//! Start-up order (SPEC §9): open the database → migrations → bootstrap secrets → full
//! bus sync → listeners.

pub mod api;
pub mod auth;
pub mod client_ip;
pub mod config_doc;
pub mod credential_import;
pub mod error;
pub mod health_probe;
pub mod listener;
pub mod masking;
pub mod metrics;
pub mod middleware;
pub mod models;
pub mod namespaces;
pub mod providers;
pub mod routing;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod store;
pub mod sync;
pub mod tenants;
pub mod testing;
pub mod token_refresh;
pub mod usage;
pub mod validation;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use ez_bus::{ConfigBus, MemoryBus, RedisBus};
use ez_config::{Config, DatabaseKind};
use ez_contract::SecretToken;
use tokio::net::TcpListener;

use crate::scheduler::Scheduler;
use crate::state::AppState;
use crate::store::Store;
use crate::sync::BusSync;

/// Opens the database named by the configuration (creating the data dir for SQLite) and
/// applies pending migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    if config.database.kind == DatabaseKind::Sqlite {
        store::sqlite_files::prepare_data_dir(&config.server.data_dir)
            .with_context(|| format!("creating data dir {}", config.server.data_dir.display()))?;
    }
    let store = Store::connect(
        &config.database.url,
        config.database.kind.clone(),
        config.database.max_connections,
    )
    .await
    .context("connecting to the database (database.url)")?;
    let applied = store.migrate().await.context("applying database migrations")?;
    if applied > 0 {
        tracing::info!(applied, "database migrations applied");
    }
    Ok(store)
}

/// Connects the bus: Redis when `redis.url` is set, else the in-process memory bus.
pub async fn open_bus(config: &Config) -> anyhow::Result<Arc<dyn ConfigBus>> {
    Ok(match &config.redis.url {
        Some(url) => {
            let bus = RedisBus::connect(url, config.redis.key_prefix.clone())
                .await
                .context("configuring Redis (redis.url)")?;
            match bus.check_server().await.context("checking Redis (redis.url)")? {
                Some(version) => tracing::info!(%version, "Redis (redis.url) answers"),
                None => tracing::error!("Redis (redis.url) is not reachable; starting with a degraded bus"),
            }
            Arc::new(bus)
        }
        None => Arc::new(MemoryBus::new()),
    })
}

/// A control plane ready to serve.
pub struct ControlPlane {
    pub state: AppState,
    /// The admin token generated on this first start, to be shown once.
    pub generated_admin_token: Option<SecretToken>,
    request_limits: middleware::RequestLimits,
    /// `server.internal_listen` is set: `/internal/*` leaves the public router.
    separate_internal: bool,
    outbox: ez_config::SyncOutboxConfig,
    model_refresh: std::time::Duration,
    log_writer: ez_config::LogWriterConfig,
    token_refresh: ez_config::TokenRefreshConfig,
    health_check: ez_config::HealthCheckConfig,
}

impl ControlPlane {
    /// Bootstraps secrets and performs the start-up full sync. A bus that cannot be
    /// written is logged, not fatal: the database stays the source of truth and
    /// `POST /admin/sync` rebuilds the bus later.
    pub async fn build(
        config: &Config,
        store: Store,
        bus: Arc<dyn ConfigBus>,
    ) -> anyhow::Result<ControlPlane> {
        let boot = auth::bootstrap::bootstrap(&store, &config.auth)
            .await
            .context("bootstrapping admin token and JWT secret")?;
        let sync = BusSync::new(bus.clone(), store.clone());
        if let Err(e) = sync.full_sync().await {
            tracing::error!(error = %e, "start-up bus sync failed; serving anyway, retry with POST /admin/sync");
        }
        let log_writer = Arc::new(usage::LogWriter::new(
            store.clone(),
            config.log_writer.queue_capacity,
            config.log_writer.batch_size,
        ));
        let state = AppState {
            store,
            bus,
            sync,
            auth: Arc::new(boot.authenticator),
            trusted_proxies: config.server.trusted_proxies.clone().into(),
            metrics: middleware::install_recorder(),
            log_writer,
            internal: Arc::new(state::InternalAccess {
                stats_token: config.internal.stats_token.clone(),
                allow_anonymous: config.internal.allow_anonymous,
            }),
            token_refresh: Arc::new(config.token_refresh.clone()),
        };
        Ok(ControlPlane {
            state,
            generated_admin_token: boot.generated_admin_token,
            request_limits: middleware::RequestLimits::from_config(&config.server),
            separate_internal: config.server.internal_listen.is_some(),
            outbox: config.sync_outbox.clone(),
            model_refresh: config.model_registry.refresh_every,
            log_writer: config.log_writer.clone(),
            token_refresh: config.token_refresh.clone(),
            health_check: config.health_check.clone(),
        })
    }

    /// Every periodic job of the control plane, ready to start (SPEC §9: after the
    /// start-up sync, before the listeners).
    pub fn scheduler(&self) -> Scheduler {
        let mut scheduler = Scheduler::new();
        scheduler.add(Arc::new(sync::OutboxRetry {
            sync: self.state.sync.clone(),
            store: self.state.store.clone(),
            every: self.outbox.interval,
            batch_size: self.outbox.batch_size,
            max_retries: self.outbox.max_retries,
        }));
        scheduler.add(Arc::new(sync::ModelRegistryRefresh {
            sync: self.state.sync.clone(),
            every: self.model_refresh,
        }));
        scheduler.add(Arc::new(middleware::MetricsUpkeep {
            handle: self.state.metrics.clone(),
        }));
        scheduler.add(Arc::new(sync::BusWatchdog {
            sync: self.state.sync.clone(),
            every: self.outbox.bus_check_interval,
        }));
        scheduler.add(Arc::new(usage::LogRetention {
            store: self.state.store.clone(),
            days: self.log_writer.retention_days,
        }));
        if self.token_refresh.enabled {
            scheduler.add(token_refresh::TokenRefresh::new(
                self.state.clone(),
                self.token_refresh.clone(),
            ));
        }
        scheduler.add(health_probe::HealthProbe::new(
            self.state.clone(),
            self.health_check.clone(),
            self.token_refresh.clone(),
        ));
        scheduler
    }

    /// The control plane as the report sink of a balancer in the same process.
    pub fn report_sink(&self) -> Arc<dyn ez_contract::report::ReportSink> {
        Arc::new(usage::InProcessReports {
            state: self.state.clone(),
        })
    }

    /// The complete HTTP application: routes, fallbacks and middleware.
    pub fn router(&self) -> Router {
        self.router_with(Router::new())
    }

    /// The application with `extra` routes (the balancer's, in `ezapi serve`) mounted
    /// beside the control plane's, under the same middleware. Without `/internal/*`
    /// when `server.internal_listen` is set (they are then in [`Self::internal_router`]).
    pub fn router_with(&self, extra: Router) -> Router {
        let routes = if self.separate_internal {
            api::public_router()
        } else {
            api::router().0
        };
        self.finish(routes.with_state(self.state.clone()).merge(extra))
    }

    /// `/internal/*` alone, under the same middleware, when `server.internal_listen` is
    /// set; `None` when those routes are part of [`Self::router`].
    pub fn internal_router(&self) -> Option<Router> {
        self.separate_internal
            .then(|| self.finish(api::internal_router().with_state(self.state.clone())))
    }

    fn finish(&self, routes: Router) -> Router {
        let routes = routes
            .fallback(api::not_found)
            .method_not_allowed_fallback(api::method_not_allowed);
        middleware::apply_with(routes, self.request_limits)
    }
}

/// Serves `app` on `listener` with the default listener limits until `shutdown`
/// resolves, then drains in-flight requests; see [`listener::serve_with`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener::serve_with(listener, app, listener::ListenerSettings::default(), shutdown).await
}
