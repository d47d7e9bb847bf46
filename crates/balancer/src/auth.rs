//! Who is calling the data plane: the client key from wherever the client's SDK puts it,
//! validated against the snapshot with the shared validation function. A credential of
//! another kind (master key, admin token, session) is told which kind it needs.

use std::net::IpAddr;

use axum::http::{HeaderMap, StatusCode, header};
use ez_contract::TokenKind;
use ez_contract::snapshot::TokenSnapshot;
use ez_contract::time::now_unix;
use ez_contract::token::digest_bytes;
use ez_contract::validate_key;

use crate::error::ProxyError;
use crate::snapshot::{Snapshot, TokenKey};

/// The client key: `Authorization: Bearer`, `x-api-key`, `x-goog-api-key` or `?key=`.
pub fn client_key<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| headers.get("x-goog-api-key").and_then(|v| v.to_str().ok()))
        .or_else(|| query?.split('&').find_map(|pair| pair.strip_prefix("key=")))
        .map(str::trim)
        .filter(|k| !k.is_empty())
}

/// Authenticates the request's key against the snapshot with the shared validation
/// function; returns the key's entry and digest.
pub fn authenticate<'s>(
    snapshot: &'s Snapshot,
    parts: &axum::http::request::Parts,
    ip: Option<IpAddr>,
) -> Result<(&'s TokenSnapshot, TokenKey), ProxyError> {
    let key = client_key(&parts.headers, parts.uri.query()).ok_or_else(|| {
        ProxyError::new(
            StatusCode::UNAUTHORIZED,
            "missing_api_key",
            "send an API key as Authorization: Bearer <key>",
        )
    })?;
    let hash = digest_bytes(key);
    let token = snapshot.tokens.get(&hash).map(|t| &**t);
    let master = token.and_then(|t| snapshot.masters.get(&t.master_id));
    if token.is_none()
        && let Some(refusal) = wrong_kind(key)
    {
        return Err(refusal);
    }
    validate_key(token, master, ip, now_unix())?;
    let token = token.ok_or_else(|| {
        ProxyError::new(
            StatusCode::UNAUTHORIZED,
            "key_not_found",
            "the API key is not valid",
        )
    })?;
    Ok((token, hash))
}

/// An unknown credential shaped like one of ez-api's other kinds (a master key, the
/// generated admin token, a session JWT): the caller holds the wrong kind, so say which
/// one the data plane needs. Judged by shape alone; it reveals nothing about the key.
fn wrong_kind(key: &str) -> Option<ProxyError> {
    let held = if TokenKind::of(key) == Some(TokenKind::Master) {
        "a master key (ezm-…)"
    } else if key.starts_with("eza-") {
        "the admin token"
    } else if key.starts_with("eyJ") && key.matches('.').count() == 2 {
        "a session token"
    } else {
        return None;
    };
    Some(ProxyError::new(
        StatusCode::UNAUTHORIZED,
        "child_key_required",
        format!(
            "this is {held}; model routes need a child key (sk-ez-…): a master creates one \
             with POST /v1/tokens"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn client_keys_come_from_any_supported_place() {
        let mut h = HeaderMap::new();
        assert_eq!(client_key(&h, Some("key=sk-q")), Some("sk-q"));
        h.insert("x-goog-api-key", HeaderValue::from_static("sk-g"));
        assert_eq!(client_key(&h, None), Some("sk-g"));
        h.insert("x-api-key", HeaderValue::from_static("sk-a"));
        assert_eq!(client_key(&h, None), Some("sk-a"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer sk-b"));
        assert_eq!(client_key(&h, None), Some("sk-b"));
        assert_eq!(client_key(&HeaderMap::new(), Some("other=1")), None);
    }

    #[test]
    fn credentials_of_another_kind_are_told_what_is_needed() {
        let master = format!("ezm-{}", "a".repeat(40));
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln";
        for (key, held) in [
            (master.as_str(), "a master key"),
            ("eza-0123456789", "the admin token"),
            (jwt, "a session token"),
        ] {
            let e = wrong_kind(key).expect(key);
            assert_eq!(
                (e.status, e.code),
                (StatusCode::UNAUTHORIZED, "child_key_required")
            );
            assert!(e.message.contains(held), "{}", e.message);
            assert!(e.message.contains("sk-ez-"), "{}", e.message);
            assert!(!e.message.contains(key), "the key is echoed: {}", e.message);
        }
        for key in ["sk-ez-unknown", "ezm-short", "random", "eyJonly.one"] {
            assert!(wrong_kind(key).is_none(), "{key}");
        }
    }
}
