//! Field rules shared by every endpoint, so one rule has one implementation.

use ez_contract::time::now_unix;

use crate::error::ApiError;

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_LIST_LEN: usize = 256;
/// Keys may not be set to expire more than this far ahead (100 years).
const MAX_EXPIRY_AHEAD_SECS: i64 = 100 * 365 * 24 * 3600;

/// A display name: trimmed, 1–128 characters, no control characters.
pub fn display_name(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(value.to_owned())
}

/// An identifier that appears in routing (namespaces, groups): 1–64 of `[A-Za-z0-9_-]`.
/// No dots: `namespace.model` is how clients address a namespace.
pub fn identifier(field: &str, value: &str) -> Result<String, ApiError> {
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(ApiError::invalid_field(
            field,
            format!("{value:?} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"),
        ));
    }
    Ok(value.to_owned())
}

/// A list of identifiers, de-duplicated in order.
pub fn identifier_list(field: &str, values: &[String]) -> Result<Vec<String>, ApiError> {
    if values.len() > MAX_LIST_LEN {
        return Err(ApiError::invalid_field(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let value = identifier(field, value)?;
        if !out.contains(&value) {
            out.push(value);
        }
    }
    Ok(out)
}

/// A list of CIDRs or single addresses, normalised (`10.1.2.3` → `10.1.2.3/32`,
/// `10.1.2.3/8` → `10.0.0.0/8`) and de-duplicated.
pub fn cidr_list(field: &str, values: &[String]) -> Result<Vec<String>, ApiError> {
    if values.len() > MAX_LIST_LEN {
        return Err(ApiError::invalid_field(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let net = ez_config::parse_net(value).map_err(|reason| ApiError::invalid_field(field, reason))?;
        let net = net.to_string();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

pub fn non_negative(field: &str, value: i64) -> Result<i64, ApiError> {
    if value < 0 {
        return Err(ApiError::invalid_field(field, "must be >= 0"));
    }
    Ok(value)
}

/// An expiry time in Unix seconds, which must lie in the future.
pub fn future_time(field: &str, value: i64) -> Result<i64, ApiError> {
    let now = now_unix();
    if value <= now {
        return Err(ApiError::unprocessable(
            "expires_in_past",
            format!("{field} must be a future Unix time in seconds"),
        ));
    }
    if value > now + MAX_EXPIRY_AHEAD_SECS {
        return Err(ApiError::invalid_field(
            field,
            "is too far in the future (Unix seconds expected)",
        ));
    }
    Ok(value)
}

/// For `PATCH`-like bodies: absent → `None`, `null` → `Some(None)`, value → `Some(Some(v))`.
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    serde::Deserialize::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_reject_dots_and_spaces() {
        assert!(identifier("ns", "team-a_1").is_ok());
        assert!(identifier("ns", "team.a").is_err());
        assert!(identifier("ns", "a b").is_err());
        assert!(identifier("ns", "").is_err());
        assert!(identifier("ns", &"x".repeat(65)).is_err());
    }

    #[test]
    fn lists_are_normalised_and_deduplicated() {
        let ns = identifier_list("namespaces", &["a".into(), "b".into(), "a".into()]).unwrap();
        assert_eq!(ns, vec!["a", "b"]);
        let ips = cidr_list(
            "allow_ips",
            &["10.1.2.3".into(), "10.1.2.3/32".into(), "10.9.9.9/8".into()],
        )
        .unwrap();
        assert_eq!(ips, vec!["10.1.2.3/32", "10.0.0.0/8"]);
        assert!(cidr_list("allow_ips", &["300.1.1.1".into()]).is_err());
    }

    #[test]
    fn numbers_and_times() {
        assert!(non_negative("qps", -1).is_err());
        assert_eq!(non_negative("qps", 0).unwrap(), 0);
        assert!(future_time("expires_at", 1).is_err());
        assert!(future_time("expires_at", now_unix() + 60).is_ok());
        assert!(future_time("expires_at", i64::MAX).is_err());
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name("name", "  acme  ").unwrap(), "acme");
        assert!(display_name("name", "   ").is_err());
        assert!(display_name("name", "a\nb").is_err());
    }
}
