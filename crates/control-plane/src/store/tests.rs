//! Store contract tests: the same assertions on SQLite and on PostgreSQL.

use ez_contract::snapshot::{KeyStatus, MasterStatus};

use super::*;
use crate::testing::{Backend, TestDatabase};

async fn store(backend: Backend) -> Option<(Store, TestDatabase)> {
    if !backend.available() {
        return None;
    }
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, db.kind.clone(), 4)
        .await
        .expect("connect");
    let applied = store.migrate().await.expect("migrate");
    assert!(applied >= 2, "a fresh database gets every migration");
    assert_eq!(applied, store.known_migrations());
    assert_eq!(
        store.migrate().await.expect("migrate again"),
        0,
        "migrations are idempotent"
    );
    Some((store, db))
}

macro_rules! on_both {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                use crate::testing::Backend;

                #[tokio::test]
                async fn sqlite() {
                    super::within_deadline(super::$name(Backend::Embedded)).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::within_deadline(super::$name(Backend::Real)).await;
                }
            }
        )+
    };
}

on_both!(
    default_namespace_exists_from_the_first_migration,
    settings_are_written_once,
    masters_round_trip_and_names_are_unique,
    keys_respect_the_limit_and_stamp_the_epoch,
    revoked_keys_stay_revoked,
    deleting_a_master_revokes_its_keys,
    updates_from_a_stale_read_are_refused,
);

async fn within_deadline(test: impl std::future::Future<Output = ()>) {
    let deadline = std::time::Duration::from_secs(60);
    if tokio::time::timeout(deadline, test).await.is_err() {
        panic!("store test did not finish within {deadline:?}");
    }
}

fn new_master(name: &str, digest: &str) -> NewMaster {
    NewMaster {
        name: name.into(),
        group: "default".into(),
        max_child_keys: 2,
        global_qps: 0,
        default_namespace: "default".into(),
        namespaces: vec!["default".into()],
        token_digest: digest.into(),
        token_prefix: "ezm-abcd".into(),
    }
}

fn new_key(master_id: i64, name: &str, digest: &str) -> NewKey {
    NewKey {
        master_id,
        name: name.into(),
        token_digest: digest.into(),
        token_prefix: "sk-ez-abcd".into(),
        issued_by: IssuedBy::Master,
        default_namespace: "default".into(),
        namespaces: vec!["default".into()],
        allow_ips: vec!["10.0.0.0/8".into()],
        deny_ips: vec![],
        expires_at: Some(4_000_000_000),
        qps: None,
    }
}

const PAGE: PageRequest = PageRequest {
    page: 1,
    page_size: 50,
};

async fn default_namespace_exists_from_the_first_migration(backend: Backend) {
    let Some((store, _db)) = store(backend).await else {
        return;
    };
    let (namespaces, total) = store.list_namespaces(PAGE).await.unwrap();
    assert_eq!(total, 1);
    assert_eq!(namespaces[0].name, "default");
    assert_eq!(
        store
            .missing_namespaces(&["default".into(), "x".into()])
            .await
            .unwrap(),
        vec!["x".to_string()]
    );
}

async fn settings_are_written_once(backend: Backend) {
    let Some((store, _db)) = store(backend).await else {
        return;
    };
    assert_eq!(store.get_setting("s").await.unwrap(), None);
    assert_eq!(
        store.init_setting("s", "first").await.unwrap(),
        ("first".to_string(), true)
    );
    assert_eq!(
        store.init_setting("s", "second").await.unwrap(),
        ("first".to_string(), false)
    );
    assert_eq!(store.get_setting("s").await.unwrap().as_deref(), Some("first"));
}

async fn masters_round_trip_and_names_are_unique(backend: Backend) {
    let Some((store, _db)) = store(backend).await else {
        return;
    };
    let m = store.create_master(&new_master("acme", "d1")).await.unwrap();
    assert_eq!(
        (m.status, m.epoch, m.max_child_keys),
        (MasterStatus::Active, 1, 2)
    );
    assert_eq!(store.get_master(m.id).await.unwrap(), m);
    assert_eq!(store.find_master_by_digest("d1").await.unwrap(), Some(m.clone()));
    assert_eq!(store.find_master_by_digest("nope").await.unwrap(), None);
    assert!(matches!(
        store.create_master(&new_master("acme", "d2")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.create_master(&new_master("other", "d1")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.get_master(m.id + 100).await,
        Err(StoreError::NotFound("master"))
    ));

    let bumped = store.bump_master_epoch(m.id).await.unwrap();
    assert_eq!(bumped.epoch, 2);
    // An update computed before the bump is refused; one computed after keeps it.
    let mut stale = MasterWrite::from(&m);
    stale.global_qps = 9;
    assert!(matches!(
        store.update_master(m.id, &stale).await,
        Err(StoreError::Conflict(_))
    ));
    let mut write = MasterWrite::from(&bumped);
    write.global_qps = 9;
    let updated = store.update_master(m.id, &write).await.unwrap();
    assert_eq!((updated.epoch, updated.global_qps), (2, 9));
}

async fn keys_respect_the_limit_and_stamp_the_epoch(backend: Backend) {
    let Some((store, _db)) = store(backend).await else {
        return;
    };
    let m = store.create_master(&new_master("acme", "m1")).await.unwrap();
    store.bump_master_epoch(m.id).await.unwrap();
    let k1 = store.create_key(&new_key(m.id, "a", "k1")).await.unwrap();
    assert_eq!(k1.issued_at_epoch, 2, "stamped with the master's current epoch");
    assert_eq!(k1.allow_ips, vec!["10.0.0.0/8".to_string()]);
    assert_eq!(k1.expires_at, Some(4_000_000_000));
    assert_eq!(store.find_key_by_digest("k1").await.unwrap(), Some(k1.clone()));
    assert!(matches!(
        store.create_key(&new_key(m.id, "a", "k2")).await,
        Err(StoreError::Conflict(_))
    ));
    store.create_key(&new_key(m.id, "b", "k2")).await.unwrap();
    assert!(matches!(
        store.create_key(&new_key(m.id, "c", "k3")).await,
        Err(StoreError::LimitReached(_))
    ));
    assert!(matches!(
        store.create_key(&new_key(m.id + 9, "c", "k3")).await,
        Err(StoreError::NotFound("master"))
    ));
    let (keys, total) = store
        .list_keys(
            m.id,
            PageRequest {
                page: 2,
                page_size: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!((keys.len(), total, keys[0].name.as_str()), (1, 2, "b"));
}

async fn revoked_keys_stay_revoked(backend: Backend) {
    let Some((store, _db)) = store(backend).await else {
        return;
    };
    let m = store.create_master(&new_master("acme", "m1")).await.unwrap();
    let k = store.create_key(&new_key(m.id, "a", "k1")).await.unwrap();
    let mut write = KeyWrite::from(&k);
    write.status = KeyStatus::Revoked;
    store.update_key(k.id, &write).await.unwrap();
    write.status = KeyStatus::Active;
    assert!(matches!(
        store.update_key(k.id, &write).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.get_key(k.id).await.unwrap().status, KeyStatus::Revoked);
    // A revoked key frees its slot.
    store.create_key(&new_key(m.id, "b", "k2")).await.unwrap();
    store.create_key(&new_key(m.id, "c", "k3")).await.unwrap();
}

async fn updates_from_a_stale_read_are_refused(backend: Backend) {
    let Some((store, _db)) = store(backend).await else {
        return;
    };
    let m = store.create_master(&new_master("acme", "m1")).await.unwrap();
    let stale = MasterWrite::from(&m);
    // A concurrent delete suspends the master after `stale` was read …
    store.delete_master(m.id).await.unwrap();
    // … so the update computed from the old row must not revive it.
    assert!(matches!(
        store.update_master(m.id, &stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_master(m.id).await.unwrap().status,
        MasterStatus::Suspended
    );

    let m2 = store.create_master(&new_master("other", "m2")).await.unwrap();
    let k = store.create_key(&new_key(m2.id, "a", "k1")).await.unwrap();
    let mut stale = KeyWrite::from(&k);
    let mut suspend = KeyWrite::from(&k);
    suspend.status = KeyStatus::Suspended;
    store.update_key(k.id, &suspend).await.unwrap();
    stale.name = "renamed".into();
    assert!(matches!(
        store.update_key(k.id, &stale).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_key(k.id).await.unwrap().status,
        KeyStatus::Suspended,
        "the suspension is not lost"
    );
    // Reading again and retrying works.
    let mut fresh = KeyWrite::from(&store.get_key(k.id).await.unwrap());
    fresh.name = "renamed".into();
    store.update_key(k.id, &fresh).await.unwrap();
}

async fn deleting_a_master_revokes_its_keys(backend: Backend) {
    let Some((store, _db)) = store(backend).await else {
        return;
    };
    let m = store.create_master(&new_master("acme", "m1")).await.unwrap();
    store.create_key(&new_key(m.id, "a", "k1")).await.unwrap();
    let (master, keys) = store.delete_master(m.id).await.unwrap();
    assert_eq!(master.status, MasterStatus::Suspended);
    assert!(keys.iter().all(|k| k.status == KeyStatus::Revoked) && keys.len() == 1);
    assert_eq!(store.all_keys().await.unwrap(), keys);
    assert_eq!(
        store.namespace_usage("default").await.unwrap(),
        (1, 0),
        "revoked keys do not count as usage"
    );
}
