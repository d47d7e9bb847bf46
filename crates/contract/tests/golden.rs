//! Golden files pin the bus shapes (docs/contract.md): field names, encodings, units.
//! A change here is a change of the CP↔DP contract and must be deliberate.

use std::collections::HashMap;

use ez_contract::snapshot::{KeyStatus, MasterStatus};
use ez_contract::{MasterSnapshot, TokenSnapshot};

fn golden(name: &str) -> HashMap<String, String> {
    let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("golden file")).expect("golden JSON")
}

#[test]
fn token_snapshot_matches_its_golden_file() {
    let snapshot = TokenSnapshot {
        key_id: 9,
        master_id: 3,
        issued_at_epoch: 2,
        status: KeyStatus::Active,
        group: "default".into(),
        namespaces: vec!["default".into(), "team-a".into()],
        default_namespace: "default".into(),
        allow_ips: vec!["10.0.0.0/8".parse().unwrap()],
        deny_ips: vec!["10.1.0.0/16".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
        expires_at: Some(1_900_000_000),
        qps: 5,
        version: 1_734_464_000_123_456_789,
        updated_at: 1_734_464_000,
    };
    let expected = golden("auth_token.json");
    let written: HashMap<String, String> = snapshot.to_fields().into_iter().collect();
    assert_eq!(written, expected);
    assert_eq!(TokenSnapshot::from_fields(&expected).unwrap(), snapshot);
}

#[test]
fn master_snapshot_matches_its_golden_file() {
    let snapshot = MasterSnapshot {
        id: 3,
        status: MasterStatus::Active,
        epoch: 2,
        group: "default".into(),
        global_qps: 100,
        namespaces: vec!["default".into()],
        default_namespace: "default".into(),
        version: 1_734_464_000_123_456_789,
        updated_at: 1_734_464_000,
    };
    let expected = golden("auth_master.json");
    let written: HashMap<String, String> = snapshot.to_fields().into_iter().collect();
    assert_eq!(written, expected);
    assert_eq!(MasterSnapshot::from_fields(&expected).unwrap(), snapshot);
}

#[test]
fn bus_key_names_are_fixed() {
    assert_eq!(ez_contract::bus_keys::token("ab12"), "auth:token:ab12");
    assert_eq!(ez_contract::bus_keys::master(7), "auth:master:7");
    assert_eq!(ez_contract::bus_keys::REFRESH_CHANNEL, "dp:config:refresh");
}
