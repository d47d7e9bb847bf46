//! One contract suite, run against every `ConfigBus` implementation.
//!
//! The memory bus always runs; the Redis bus runs when `EZ_TEST_REDIS_URL` is set (CI sets
//! it). Each Redis test uses its own key prefix, so tests run in parallel on one server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ez_bus::{BusWrite, ConfigBus, MemoryBus, RedisBus};
use futures_util::StreamExt;
use rand::Rng;

fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    fields(pairs).into_iter().collect()
}

async fn redis_bus() -> Option<Arc<dyn ConfigBus>> {
    let url = match std::env::var("EZ_TEST_REDIS_URL") {
        Ok(url) => url,
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("EZ_TEST_REDIS_URL must be set in CI so the Redis bus is tested")
        }
        Err(_) => {
            eprintln!("EZ_TEST_REDIS_URL not set: Redis bus contract tests skipped");
            return None;
        }
    };
    let prefix = format!("test:{:016x}:", rand::thread_rng().r#gen::<u64>());
    Some(Arc::new(
        RedisBus::connect(&url, prefix)
            .await
            .expect("connect to test Redis"),
    ))
}

macro_rules! contract_tests {
    ($($name:ident),+ $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(ez_bus::MemoryBus::new())).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(bus) = super::redis_bus().await {
                        super::$name(bus).await;
                    }
                }
            )+
        }
    };
}

contract_tests!(
    replace_hash_overwrites_every_field,
    set_fields_merges_and_delete_fields_removes,
    delete_removes_the_key,
    batches_apply_in_order,
    keys_with_prefix_lists_only_matching_keys,
    keys_with_prefix_treats_glob_characters_literally,
    published_messages_reach_subscribers,
    ping_answers,
    counters_count_and_expire,
    values_increment_set_and_read_back,
    many_hashes_are_read_in_order,
);

async fn replace_hash_overwrites_every_field(bus: Arc<dyn ConfigBus>) {
    bus.apply(vec![BusWrite::ReplaceHash {
        key: "h".into(),
        fields: fields(&[("a", "1"), ("b", "2")]),
    }])
    .await
    .unwrap();
    assert_eq!(
        bus.hash_get_all("h").await.unwrap(),
        map(&[("a", "1"), ("b", "2")])
    );
    bus.apply(vec![BusWrite::ReplaceHash {
        key: "h".into(),
        fields: fields(&[("c", "3")]),
    }])
    .await
    .unwrap();
    assert_eq!(bus.hash_get_all("h").await.unwrap(), map(&[("c", "3")]));
    assert_eq!(bus.hash_get("h", "c").await.unwrap().as_deref(), Some("3"));
    assert_eq!(bus.hash_get("h", "a").await.unwrap(), None);
    bus.apply(vec![BusWrite::ReplaceHash {
        key: "h".into(),
        fields: vec![],
    }])
    .await
    .unwrap();
    assert!(bus.hash_get_all("h").await.unwrap().is_empty());
}

async fn set_fields_merges_and_delete_fields_removes(bus: Arc<dyn ConfigBus>) {
    bus.apply(vec![BusWrite::SetFields {
        key: "h".into(),
        fields: fields(&[("a", "1")]),
    }])
    .await
    .unwrap();
    bus.apply(vec![BusWrite::SetFields {
        key: "h".into(),
        fields: fields(&[("b", "2"), ("a", "x")]),
    }])
    .await
    .unwrap();
    assert_eq!(
        bus.hash_get_all("h").await.unwrap(),
        map(&[("a", "x"), ("b", "2")])
    );
    bus.apply(vec![BusWrite::DeleteFields {
        key: "h".into(),
        fields: vec!["a".into(), "zz".into()],
    }])
    .await
    .unwrap();
    assert_eq!(bus.hash_get_all("h").await.unwrap(), map(&[("b", "2")]));
    bus.apply(vec![BusWrite::DeleteFields {
        key: "h".into(),
        fields: vec!["b".into()],
    }])
    .await
    .unwrap();
    assert!(
        bus.keys_with_prefix("h").await.unwrap().is_empty(),
        "an emptied hash disappears"
    );
}

async fn delete_removes_the_key(bus: Arc<dyn ConfigBus>) {
    bus.apply(vec![BusWrite::SetFields {
        key: "gone".into(),
        fields: fields(&[("a", "1")]),
    }])
    .await
    .unwrap();
    bus.apply(vec![
        BusWrite::Delete { key: "gone".into() },
        BusWrite::Delete { key: "never".into() },
    ])
    .await
    .unwrap();
    assert!(bus.hash_get_all("gone").await.unwrap().is_empty());
    assert_eq!(bus.hash_get("gone", "a").await.unwrap(), None);
}

async fn batches_apply_in_order(bus: Arc<dyn ConfigBus>) {
    bus.apply(vec![
        BusWrite::ReplaceHash {
            key: "o".into(),
            fields: fields(&[("a", "1")]),
        },
        BusWrite::Delete { key: "o".into() },
        BusWrite::SetFields {
            key: "o".into(),
            fields: fields(&[("b", "2")]),
        },
        BusWrite::ReplaceHash {
            key: "p".into(),
            fields: fields(&[("c", "3")]),
        },
    ])
    .await
    .unwrap();
    assert_eq!(bus.hash_get_all("o").await.unwrap(), map(&[("b", "2")]));
    assert_eq!(bus.hash_get_all("p").await.unwrap(), map(&[("c", "3")]));
    bus.apply(vec![]).await.unwrap();
}

async fn keys_with_prefix_lists_only_matching_keys(bus: Arc<dyn ConfigBus>) {
    let mut writes = Vec::new();
    for i in 0..1500 {
        writes.push(BusWrite::SetFields {
            key: format!("auth:token:{i}"),
            fields: fields(&[("v", "1")]),
        });
    }
    writes.push(BusWrite::SetFields {
        key: "auth:master:1".into(),
        fields: fields(&[("v", "1")]),
    });
    bus.apply(writes).await.unwrap();
    let mut keys = bus.keys_with_prefix("auth:token:").await.unwrap();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1500);
    assert!(keys.iter().all(|k| k.starts_with("auth:token:")));
    assert_eq!(
        bus.keys_with_prefix("auth:master:").await.unwrap(),
        vec!["auth:master:1".to_string()]
    );
    assert!(bus.keys_with_prefix("nothing:").await.unwrap().is_empty());
}

async fn keys_with_prefix_treats_glob_characters_literally(bus: Arc<dyn ConfigBus>) {
    bus.apply(vec![
        BusWrite::SetFields {
            key: "a*b:1".into(),
            fields: fields(&[("v", "1")]),
        },
        BusWrite::SetFields {
            key: "axb:1".into(),
            fields: fields(&[("v", "1")]),
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        bus.keys_with_prefix("a*b:").await.unwrap(),
        vec!["a*b:1".to_string()]
    );
}

async fn published_messages_reach_subscribers(bus: Arc<dyn ConfigBus>) {
    let mut first = bus.subscribe("chan").await.unwrap();
    let mut second = bus.subscribe("chan").await.unwrap();
    let mut other = bus.subscribe("other").await.unwrap();
    bus.publish("chan", r#"{"resource":"all"}"#).await.unwrap();
    bus.publish("chan", "second").await.unwrap();
    let deadline = Duration::from_secs(5);
    for sub in [&mut first, &mut second] {
        let got = tokio::time::timeout(deadline, sub.next())
            .await
            .expect("message in time");
        assert_eq!(got.as_deref(), Some(r#"{"resource":"all"}"#));
        let got = tokio::time::timeout(deadline, sub.next())
            .await
            .expect("message in time");
        assert_eq!(got.as_deref(), Some("second"));
    }
    let nothing = tokio::time::timeout(Duration::from_millis(200), other.next()).await;
    assert!(nothing.is_err(), "a message on another channel must not arrive");
    bus.publish("nobody-listens", "x").await.unwrap();
}

async fn ping_answers(bus: Arc<dyn ConfigBus>) {
    bus.ping().await.unwrap();
    assert!(matches!(bus.kind(), "memory" | "redis"));
}

#[tokio::test]
async fn redis_bus_rejects_a_malformed_url() {
    let err = RedisBus::connect("http://nope", "")
        .await
        .err()
        .expect("must fail");
    assert!(err.to_string().contains("configuration"), "{err}");
    let _ = MemoryBus::new();
}

#[tokio::test]
async fn redis_bus_reports_an_unreachable_server_instead_of_hanging() {
    // Port 1 is never a Redis server: the bus is created (lazily) but every operation
    // fails fast with an error.
    let started = std::time::Instant::now();
    let bus = RedisBus::connect("redis://127.0.0.1:1", "")
        .await
        .expect("lazy connect");
    assert!(bus.ping().await.is_err());
    assert!(
        bus.apply(vec![BusWrite::Delete { key: "k".into() }])
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

async fn counters_count_and_expire(bus: Arc<dyn ConfigBus>) {
    let keys = vec!["rate:a".to_string(), "rate:b".to_string()];
    assert_eq!(bus.count(&keys, 300).await.unwrap(), vec![1, 1]);
    assert_eq!(bus.count(&keys, 300).await.unwrap(), vec![2, 2]);
    assert_eq!(bus.count(&keys[..1], 300).await.unwrap(), vec![3]);
    assert!(bus.count(&[], 300).await.unwrap().is_empty());
    // A window ends with its lifetime; the next count starts again at 1.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if bus.count(&keys[1..], 300).await.unwrap() == vec![1] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the counter never expired");
    }
}

async fn values_increment_set_and_read_back(bus: Arc<dyn ConfigBus>) {
    let keys = vec![
        "stats:a:requests".to_string(),
        "stats:a:last".to_string(),
        "stats:missing".to_string(),
    ];
    bus.apply(vec![
        BusWrite::IncrBy {
            key: keys[0].clone(),
            by: 3,
        },
        BusWrite::IncrBy {
            key: keys[0].clone(),
            by: 4,
        },
        BusWrite::SetValue {
            key: keys[1].clone(),
            value: "1700000000".into(),
        },
    ])
    .await
    .unwrap();
    assert_eq!(
        bus.get_values(&keys).await.unwrap(),
        vec![Some("7".to_string()), Some("1700000000".to_string()), None]
    );
    assert!(bus.get_values(&[]).await.unwrap().is_empty());
    let mut listed = bus.keys_with_prefix("stats:a:").await.unwrap();
    listed.sort();
    assert_eq!(listed, vec![keys[1].clone(), keys[0].clone()]);
    bus.apply(vec![BusWrite::Delete { key: keys[0].clone() }])
        .await
        .unwrap();
    assert_eq!(bus.get_values(&keys[..1]).await.unwrap(), vec![None]);

    // Integer fields of a hash add up, beside the other fields.
    let incr = |by| BusWrite::IncrField {
        key: "stats:rate".into(),
        field: "blocked".into(),
        by,
    };
    bus.apply(vec![
        incr(2),
        BusWrite::SetFields {
            key: "stats:rate".into(),
            fields: fields(&[("qps", "5")]),
        },
        incr(3),
    ])
    .await
    .unwrap();
    assert_eq!(
        bus.hash_get_all("stats:rate").await.unwrap(),
        map(&[("blocked", "5"), ("qps", "5")])
    );
}

async fn many_hashes_are_read_in_order(bus: Arc<dyn ConfigBus>) {
    let keys: Vec<String> = (0..2500).map(|i| format!("many:{i}")).collect();
    let writes = keys
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 7 != 0)
        .map(|(i, key)| BusWrite::ReplaceHash {
            key: key.clone(),
            fields: fields(&[("n", &i.to_string())]),
        })
        .collect();
    bus.apply(writes).await.unwrap();
    let read = bus.hash_get_all_many(&keys).await.unwrap();
    assert_eq!(read.len(), keys.len());
    for (i, hash) in read.iter().enumerate() {
        if i % 7 == 0 {
            assert!(hash.is_empty(), "missing keys read as empty hashes");
        } else {
            assert_eq!(hash.get("n"), Some(&i.to_string()));
        }
    }
    assert!(bus.hash_get_all_many(&[]).await.unwrap().is_empty());
}
