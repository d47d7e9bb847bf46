//! Request counters and latency histograms, labelled by matched route (never the raw
//! path, which would explode cardinality).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The balancer's upstream latencies (`ezapi_upstream_*_seconds`): a model takes seconds
/// to a minute or more before its first byte.
const UPSTREAM_LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
];

/// Installs the process-wide Prometheus recorder once and returns its handle, with the
/// descriptions of the control plane's families (`crate::metrics`). A data plane in the
/// process describes its own when it starts; it must start after this.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // A full name or prefix matcher wins over a suffix matcher.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Prefix("ezapi_upstream_".into()),
                        UPSTREAM_LATENCY_BUCKETS,
                    )
                })
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Fails only if another recorder is installed (embedding); ours then stays
            // local and /metrics shows only what it recorded.
            let _ = metrics::set_global_recorder(recorder);
            crate::metrics::describe();
            handle
        })
        .clone()
}

pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    // A fixed label set: any token is a valid method, and a label per arbitrary method
    // would let clients grow the metrics without bound.
    let method = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!(crate::metrics::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(crate::metrics::HTTP_REQUEST_DURATION, &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Keeps the recorder's histograms bounded between scrapes (the exporter only drains
/// them when rendered otherwise).
pub struct MetricsUpkeep {
    pub handle: PrometheusHandle,
}

#[async_trait::async_trait]
impl crate::scheduler::Job for MetricsUpkeep {
    fn name(&self) -> &'static str {
        "metrics_upkeep"
    }

    fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }

    async fn run_once(&self) -> anyhow::Result<()> {
        self.handle.run_upkeep();
        Ok(())
    }
}
