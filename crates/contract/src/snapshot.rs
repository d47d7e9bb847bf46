//! Snapshot types written by the CP to the bus and read by the DP.
//!
//! Each entity is a Redis hash of string fields so that one entity is updated in O(1).
//! Encoding: integers in decimal, lists as JSON arrays, an absent optional value as the
//! empty string. `version` is Unix nanoseconds, `updated_at` Unix seconds.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// Status of a child key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    Suspended,
    Revoked,
}

/// Status of a master (tenant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MasterStatus {
    Active,
    Suspended,
}

macro_rules! string_enum {
    ($ty:ty { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown value {other:?}, expected one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(KeyStatus { Active => "active", Suspended => "suspended", Revoked => "revoked" });
string_enum!(MasterStatus { Active => "active", Suspended => "suspended" });

/// `auth:token:{sha256}` — everything the DP needs to authenticate one child key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSnapshot {
    pub key_id: i64,
    pub master_id: i64,
    pub issued_at_epoch: i64,
    pub status: KeyStatus,
    pub group: String,
    pub namespaces: Vec<String>,
    pub default_namespace: String,
    pub allow_ips: Vec<IpNet>,
    pub deny_ips: Vec<IpNet>,
    pub expires_at: Option<i64>,
    /// Requests per second for this key; 0 = unlimited.
    pub qps: i64,
    pub version: i64,
    pub updated_at: i64,
}

/// `auth:master:{id}` — the master state every key validation consults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterSnapshot {
    pub id: i64,
    pub status: MasterStatus,
    pub epoch: i64,
    pub group: String,
    /// Requests per second across all the master's keys; 0 = unlimited.
    pub global_qps: i64,
    pub namespaces: Vec<String>,
    pub default_namespace: String,
    pub version: i64,
    pub updated_at: i64,
}

type Fields = Vec<(String, String)>;

fn json_list<T: ToString>(items: &[T]) -> String {
    let strings: Vec<String> = items.iter().map(ToString::to_string).collect();
    serde_json::to_string(&strings).unwrap_or_else(|_| "[]".to_owned())
}

struct Reader<'a>(&'a HashMap<String, String>);

impl Reader<'_> {
    fn raw(&self, field: &'static str) -> Result<&str, SnapshotError> {
        self.0
            .get(field)
            .map(String::as_str)
            .ok_or(SnapshotError::Missing(field))
    }

    fn parse<T: FromStr>(&self, field: &'static str) -> Result<T, SnapshotError>
    where
        T::Err: fmt::Display,
    {
        self.raw(field)?
            .parse()
            .map_err(|e: T::Err| SnapshotError::Invalid {
                field,
                reason: e.to_string(),
            })
    }

    fn optional_i64(&self, field: &'static str) -> Result<Option<i64>, SnapshotError> {
        match self.0.get(field).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(_) => self.parse(field).map(Some),
        }
    }

    fn list<T: FromStr>(&self, field: &'static str) -> Result<Vec<T>, SnapshotError>
    where
        T::Err: fmt::Display,
    {
        let strings: Vec<String> =
            serde_json::from_str(self.raw(field)?).map_err(|e| SnapshotError::Invalid {
                field,
                reason: e.to_string(),
            })?;
        strings
            .iter()
            .map(|s| {
                s.parse().map_err(|e: T::Err| SnapshotError::Invalid {
                    field,
                    reason: e.to_string(),
                })
            })
            .collect()
    }
}

impl TokenSnapshot {
    pub fn to_fields(&self) -> Fields {
        vec![
            ("key_id".into(), self.key_id.to_string()),
            ("master_id".into(), self.master_id.to_string()),
            ("issued_at_epoch".into(), self.issued_at_epoch.to_string()),
            ("status".into(), self.status.to_string()),
            ("group".into(), self.group.clone()),
            ("namespaces".into(), json_list(&self.namespaces)),
            ("default_namespace".into(), self.default_namespace.clone()),
            ("allow_ips".into(), json_list(&self.allow_ips)),
            ("deny_ips".into(), json_list(&self.deny_ips)),
            (
                "expires_at".into(),
                self.expires_at.map(|t| t.to_string()).unwrap_or_default(),
            ),
            ("qps".into(), self.qps.to_string()),
            ("version".into(), self.version.to_string()),
            ("updated_at".into(), self.updated_at.to_string()),
        ]
    }

    pub fn from_fields(fields: &HashMap<String, String>) -> Result<TokenSnapshot, SnapshotError> {
        let r = Reader(fields);
        Ok(TokenSnapshot {
            key_id: r.parse("key_id")?,
            master_id: r.parse("master_id")?,
            issued_at_epoch: r.parse("issued_at_epoch")?,
            status: r.parse("status")?,
            group: r.raw("group")?.to_owned(),
            namespaces: r.list("namespaces")?,
            default_namespace: r.raw("default_namespace")?.to_owned(),
            allow_ips: r.list("allow_ips")?,
            deny_ips: r.list("deny_ips")?,
            expires_at: r.optional_i64("expires_at")?,
            qps: r.parse("qps")?,
            version: r.parse("version")?,
            updated_at: r.parse("updated_at")?,
        })
    }
}

impl MasterSnapshot {
    pub fn to_fields(&self) -> Fields {
        vec![
            ("id".into(), self.id.to_string()),
            ("status".into(), self.status.to_string()),
            ("epoch".into(), self.epoch.to_string()),
            ("group".into(), self.group.clone()),
            ("global_qps".into(), self.global_qps.to_string()),
            ("namespaces".into(), json_list(&self.namespaces)),
            ("default_namespace".into(), self.default_namespace.clone()),
            ("version".into(), self.version.to_string()),
            ("updated_at".into(), self.updated_at.to_string()),
        ]
    }

    pub fn from_fields(fields: &HashMap<String, String>) -> Result<MasterSnapshot, SnapshotError> {
        let r = Reader(fields);
        Ok(MasterSnapshot {
            id: r.parse("id")?,
            status: r.parse("status")?,
            epoch: r.parse("epoch")?,
            group: r.raw("group")?.to_owned(),
            global_qps: r.parse("global_qps")?,
            namespaces: r.list("namespaces")?,
            default_namespace: r.raw("default_namespace")?.to_owned(),
            version: r.parse("version")?,
            updated_at: r.parse("updated_at")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> TokenSnapshot {
        TokenSnapshot {
            key_id: 9,
            master_id: 3,
            issued_at_epoch: 2,
            status: KeyStatus::Active,
            group: "default".into(),
            namespaces: vec!["default".into(), "team-a".into()],
            default_namespace: "default".into(),
            allow_ips: vec!["10.0.0.0/8".parse().unwrap()],
            deny_ips: vec!["10.1.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()],
            expires_at: Some(1_900_000_000),
            qps: 5,
            version: 1_734_464_000_123_456_789,
            updated_at: 1_734_464_000,
        }
    }

    #[test]
    fn token_round_trips_through_hash_fields() {
        let t = token();
        let map: HashMap<_, _> = t.to_fields().into_iter().collect();
        assert_eq!(map["namespaces"], r#"["default","team-a"]"#);
        assert_eq!(map["deny_ips"], r#"["10.1.0.0/16","::1/128"]"#);
        assert_eq!(TokenSnapshot::from_fields(&map), Ok(t.clone()));

        let no_expiry = TokenSnapshot {
            expires_at: None,
            ..t
        };
        let map: HashMap<_, _> = no_expiry.to_fields().into_iter().collect();
        assert_eq!(map["expires_at"], "");
        assert_eq!(TokenSnapshot::from_fields(&map), Ok(no_expiry));
    }

    #[test]
    fn master_round_trips_through_hash_fields() {
        let m = MasterSnapshot {
            id: 3,
            status: MasterStatus::Suspended,
            epoch: 4,
            group: "vip".into(),
            global_qps: 0,
            namespaces: vec!["default".into()],
            default_namespace: "default".into(),
            version: 1,
            updated_at: 2,
        };
        let map: HashMap<_, _> = m.to_fields().into_iter().collect();
        assert_eq!(MasterSnapshot::from_fields(&map), Ok(m));
    }

    #[test]
    fn malformed_fields_are_reported_by_name() {
        let mut map: HashMap<_, _> = token().to_fields().into_iter().collect();
        map.insert("status".into(), "weird".into());
        assert!(matches!(
            TokenSnapshot::from_fields(&map),
            Err(SnapshotError::Invalid { field: "status", .. })
        ));
        map.remove("status");
        assert_eq!(
            TokenSnapshot::from_fields(&map),
            Err(SnapshotError::Missing("status"))
        );
        let mut map: HashMap<_, _> = token().to_fields().into_iter().collect();
        map.insert("allow_ips".into(), r#"["not-a-cidr"]"#.into());
        assert!(matches!(
            TokenSnapshot::from_fields(&map),
            Err(SnapshotError::Invalid {
                field: "allow_ips",
                ..
            })
        ));
    }
}
