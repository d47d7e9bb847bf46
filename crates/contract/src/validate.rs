//! The one child-key validation function (SPEC §4).
//!
//! The balancer calls it on every request and the CP's `GET /v1/whoami` calls it too, so
//! the two can never disagree about whether a key is usable.

use std::net::IpAddr;

use crate::snapshot::{KeyStatus, MasterSnapshot, MasterStatus, TokenSnapshot};

/// Why a child key was refused. Each reason has its own stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRejection {
    NotFound,
    Disabled,
    MasterSuspended,
    Revoked,
    Expired,
    IpDenied,
}

impl KeyRejection {
    /// The `error.code` clients see.
    pub fn code(self) -> &'static str {
        match self {
            KeyRejection::NotFound => "key_not_found",
            KeyRejection::Disabled => "key_disabled",
            KeyRejection::MasterSuspended => "master_suspended",
            KeyRejection::Revoked => "key_revoked",
            KeyRejection::Expired => "key_expired",
            KeyRejection::IpDenied => "ip_denied",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            KeyRejection::NotFound => "the API key is not valid",
            KeyRejection::Disabled => "the API key is disabled",
            KeyRejection::MasterSuspended => "the account that owns this API key is suspended",
            KeyRejection::Revoked => "the API key has been revoked",
            KeyRejection::Expired => "the API key has expired",
            KeyRejection::IpDenied => "requests from this IP address are not allowed for this API key",
        }
    }
}

/// Decides whether a child key may be used now, from `client_ip`.
///
/// `token` and `master` are what the snapshot holds for the presented key (absent when
/// unknown). A key whose `allow_ips` is non-empty is refused when the client IP is unknown:
/// an allow list fails closed.
pub fn validate_key(
    token: Option<&TokenSnapshot>,
    master: Option<&MasterSnapshot>,
    client_ip: Option<IpAddr>,
    now_unix: i64,
) -> Result<(), KeyRejection> {
    let token = token.ok_or(KeyRejection::NotFound)?;
    match token.status {
        KeyStatus::Active => {}
        KeyStatus::Suspended => return Err(KeyRejection::Disabled),
        KeyStatus::Revoked => return Err(KeyRejection::Revoked),
    }
    let master = master
        .filter(|m| m.id == token.master_id)
        .ok_or(KeyRejection::MasterSuspended)?;
    if master.status != MasterStatus::Active {
        return Err(KeyRejection::MasterSuspended);
    }
    if token.issued_at_epoch < master.epoch {
        return Err(KeyRejection::Revoked);
    }
    if token.expires_at.is_some_and(|at| now_unix >= at) {
        return Err(KeyRejection::Expired);
    }
    if let Some(ip) = client_ip {
        let ip = canonical(ip);
        if token.deny_ips.iter().any(|net| net.contains(&ip)) {
            return Err(KeyRejection::IpDenied);
        }
        if !token.allow_ips.is_empty() && !token.allow_ips.iter().any(|net| net.contains(&ip)) {
            return Err(KeyRejection::IpDenied);
        }
    } else if !token.allow_ips.is_empty() {
        return Err(KeyRejection::IpDenied);
    }
    Ok(())
}

/// IPv4 clients reached through a dual-stack socket show up as `::ffff:a.b.c.d`; match
/// them against IPv4 rules.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn master() -> MasterSnapshot {
        MasterSnapshot {
            id: 1,
            status: MasterStatus::Active,
            epoch: 2,
            group: "default".into(),
            global_qps: 0,
            namespaces: vec!["default".into()],
            default_namespace: "default".into(),
            version: 1,
            updated_at: 1,
        }
    }

    fn token() -> TokenSnapshot {
        TokenSnapshot {
            key_id: 7,
            master_id: 1,
            issued_at_epoch: 2,
            status: KeyStatus::Active,
            group: "default".into(),
            namespaces: vec!["default".into()],
            default_namespace: "default".into(),
            allow_ips: vec![],
            deny_ips: vec![],
            expires_at: None,
            qps: 0,
            version: 1,
            updated_at: 1,
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn nets(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn table_of_every_outcome() {
        struct Case {
            name: &'static str,
            token: Option<TokenSnapshot>,
            master: Option<MasterSnapshot>,
            ip: Option<IpAddr>,
            expect: Result<(), KeyRejection>,
        }
        let cases = vec![
            Case {
                name: "valid",
                token: Some(token()),
                master: Some(master()),
                ip: ip("1.2.3.4"),
                expect: Ok(()),
            },
            Case {
                name: "valid without ip and no allow list",
                token: Some(token()),
                master: Some(master()),
                ip: None,
                expect: Ok(()),
            },
            Case {
                name: "unknown key",
                token: None,
                master: Some(master()),
                ip: ip("1.2.3.4"),
                expect: Err(KeyRejection::NotFound),
            },
            Case {
                name: "suspended key",
                token: Some(TokenSnapshot {
                    status: KeyStatus::Suspended,
                    ..token()
                }),
                master: Some(master()),
                ip: None,
                expect: Err(KeyRejection::Disabled),
            },
            Case {
                name: "revoked key",
                token: Some(TokenSnapshot {
                    status: KeyStatus::Revoked,
                    ..token()
                }),
                master: Some(master()),
                ip: None,
                expect: Err(KeyRejection::Revoked),
            },
            Case {
                name: "suspended master",
                token: Some(token()),
                master: Some(MasterSnapshot {
                    status: MasterStatus::Suspended,
                    ..master()
                }),
                ip: None,
                expect: Err(KeyRejection::MasterSuspended),
            },
            Case {
                name: "missing master",
                token: Some(token()),
                master: None,
                ip: None,
                expect: Err(KeyRejection::MasterSuspended),
            },
            Case {
                name: "another master's snapshot",
                token: Some(token()),
                master: Some(MasterSnapshot { id: 99, ..master() }),
                ip: None,
                expect: Err(KeyRejection::MasterSuspended),
            },
            Case {
                name: "issued before epoch bump",
                token: Some(TokenSnapshot {
                    issued_at_epoch: 1,
                    ..token()
                }),
                master: Some(master()),
                ip: None,
                expect: Err(KeyRejection::Revoked),
            },
            Case {
                name: "issued after epoch bump",
                token: Some(TokenSnapshot {
                    issued_at_epoch: 3,
                    ..token()
                }),
                master: Some(master()),
                ip: None,
                expect: Ok(()),
            },
            Case {
                name: "expired exactly now",
                token: Some(TokenSnapshot {
                    expires_at: Some(NOW),
                    ..token()
                }),
                master: Some(master()),
                ip: None,
                expect: Err(KeyRejection::Expired),
            },
            Case {
                name: "expires later",
                token: Some(TokenSnapshot {
                    expires_at: Some(NOW + 1),
                    ..token()
                }),
                master: Some(master()),
                ip: None,
                expect: Ok(()),
            },
            Case {
                name: "ip in deny list",
                token: Some(TokenSnapshot {
                    deny_ips: nets(&["1.2.3.0/24"]),
                    ..token()
                }),
                master: Some(master()),
                ip: ip("1.2.3.4"),
                expect: Err(KeyRejection::IpDenied),
            },
            Case {
                name: "ip outside deny list",
                token: Some(TokenSnapshot {
                    deny_ips: nets(&["1.2.3.0/24"]),
                    ..token()
                }),
                master: Some(master()),
                ip: ip("1.2.4.4"),
                expect: Ok(()),
            },
            Case {
                name: "ip outside allow list",
                token: Some(TokenSnapshot {
                    allow_ips: nets(&["10.0.0.0/8"]),
                    ..token()
                }),
                master: Some(master()),
                ip: ip("1.2.3.4"),
                expect: Err(KeyRejection::IpDenied),
            },
            Case {
                name: "ip inside allow list",
                token: Some(TokenSnapshot {
                    allow_ips: nets(&["10.0.0.0/8"]),
                    ..token()
                }),
                master: Some(master()),
                ip: ip("10.9.9.9"),
                expect: Ok(()),
            },
            Case {
                name: "deny wins over allow",
                token: Some(TokenSnapshot {
                    allow_ips: nets(&["10.0.0.0/8"]),
                    deny_ips: nets(&["10.9.0.0/16"]),
                    ..token()
                }),
                master: Some(master()),
                ip: ip("10.9.9.9"),
                expect: Err(KeyRejection::IpDenied),
            },
            Case {
                name: "allow list fails closed without ip",
                token: Some(TokenSnapshot {
                    allow_ips: nets(&["10.0.0.0/8"]),
                    ..token()
                }),
                master: Some(master()),
                ip: None,
                expect: Err(KeyRejection::IpDenied),
            },
            Case {
                name: "ipv4-mapped ipv6 matches ipv4 rule",
                token: Some(TokenSnapshot {
                    allow_ips: nets(&["127.0.0.0/8"]),
                    ..token()
                }),
                master: Some(master()),
                ip: ip("::ffff:127.0.0.1"),
                expect: Ok(()),
            },
            Case {
                name: "ipv6 deny",
                token: Some(TokenSnapshot {
                    deny_ips: nets(&["2001:db8::/32"]),
                    ..token()
                }),
                master: Some(master()),
                ip: ip("2001:db8::1"),
                expect: Err(KeyRejection::IpDenied),
            },
        ];
        for case in cases {
            let got = validate_key(case.token.as_ref(), case.master.as_ref(), case.ip, NOW);
            assert_eq!(got, case.expect, "case: {}", case.name);
        }
    }

    #[test]
    fn every_rejection_has_a_distinct_code() {
        let all = [
            KeyRejection::NotFound,
            KeyRejection::Disabled,
            KeyRejection::MasterSuspended,
            KeyRejection::Revoked,
            KeyRejection::Expired,
            KeyRejection::IpDenied,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        assert!(codes.contains("key_not_found") && codes.contains("ip_denied"));
    }
}
