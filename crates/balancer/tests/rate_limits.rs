//! Rate limits that hold on every supported Redis and without one: a Redis 6 server
//! (emulated by a proxy that answers as 6.2 does) counts the shared windows, a Redis
//! older than the minimum is refused at start, and a bus that goes away leaves each
//! balancer counting alone — never letting everything through. These run on PostgreSQL +
//! Redis (the memory bus cannot fail).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ez_balancer::ProxySettings;
use ez_bus::{ConfigBus, RedisBus};
use ez_control_plane::testing::Backend;
use serde_json::json;
use support::resp_proxy::{self, RespProxy};
use support::{Gateway, Tenant};

fn prefix() -> String {
    format!("ez-test:rate:{:016x}:", rand::random::<u64>())
}

async fn bus_via(proxy: &RespProxy) -> Arc<RedisBus> {
    Arc::new(RedisBus::connect(&proxy.url, prefix()).await.unwrap())
}

/// A master limited to one request per second, and its key.
async fn limited_tenant(gw: &Gateway) -> Tenant {
    gw.setup(&["sk-upstream-0001"], "gpt-4o", "gpt-4o").await;
    gw.add_tenant("limited", json!({ "global_qps": 1 }), json!({}))
        .await
}

/// Three requests at once span at most two one-second windows, so with a limit of one
/// per second at least one is refused; all answer quickly.
async fn assert_limited(gw: &Gateway, t: &Tenant) {
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(gw.chat(&t.key, "gpt-4o", false).await.0);
    }
    assert!(statuses.contains(&429), "the limit of 1/s held: {statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "limits never stall requests: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_on_redis_6() {
    if !Backend::Real.available() {
        return;
    }
    let proxy = RespProxy::start(resp_proxy::redis6).await;
    let bus = bus_via(&proxy).await;
    assert_eq!(bus.check_server().await.unwrap().as_deref(), Some("6.2.14"));
    let gw = Gateway::start_on(Backend::Real, ProxySettings::default(), bus.clone()).await;
    let t = limited_tenant(&gw).await;
    assert_limited(&gw, &t).await;
    // Counted in the shared windows on the bus, not by this balancer alone.
    let windows = bus.keys_with_prefix("rate:master:").await.unwrap();
    assert!(!windows.is_empty(), "no shared rate window on the bus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_older_than_the_minimum_is_refused() {
    if !Backend::Real.available() {
        return;
    }
    let proxy = RespProxy::start(resp_proxy::redis5).await;
    let error = bus_via(&proxy)
        .await
        .check_server()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("5.0.14") && error.contains("6.0"), "{error}");
    // A Redis that does not answer is not refused: the bus starts degraded.
    proxy.cut();
    assert_eq!(bus_via(&proxy).await.check_server().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_hold_while_the_bus_is_down() {
    if !Backend::Real.available() {
        return;
    }
    let proxy = RespProxy::start(resp_proxy::passthrough).await;
    let gw = Gateway::start_on(Backend::Real, ProxySettings::default(), bus_via(&proxy).await).await;
    let t = limited_tenant(&gw).await;
    assert_limited(&gw, &t).await;
    // The bus goes away; the balancer keeps its snapshot and counts the windows alone.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_limited(&gw, &t).await;
    let (_, _, metrics) = gw.call(reqwest::Method::GET, "/metrics", "", None).await;
    let local = metrics
        .lines()
        .find(|l| l.starts_with("ezapi_balancer_rate_limit_local_total"))
        .unwrap_or_else(|| panic!("the local windows are counted in /metrics:\n{metrics}"));
    assert!(!local.ends_with(" 0"), "{local}");
}
