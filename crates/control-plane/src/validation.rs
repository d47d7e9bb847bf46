//! Field rules: the building blocks of the entity specs in `crate::spec`, each written
//! once. Every rule returns the value as it is stored (trimmed, normalised).

use ez_contract::SecretToken;
use ez_contract::time::now_unix;

use crate::spec::{SpecError, SpecResult};

pub const MAX_NAME_LEN: usize = 128;
pub const MAX_LIST_LEN: usize = 256;
pub const MAX_MODELS: usize = 2000;
pub const MAX_MODEL_NAME: usize = 256;
const MAX_SECRET: usize = 16 * 1024;
/// Keys may not be set to expire more than this far ahead (100 years).
const MAX_EXPIRY_AHEAD_SECS: i64 = 100 * 365 * 24 * 3600;
/// 9999-12-31T23:59:59Z: the last second a Unix time field may name.
const MAX_UNIX_TIME: i64 = 253_402_300_799;

/// A display name: trimmed, 1–128 characters, no control characters.
pub fn display_name(field: &'static str, value: &str) -> SpecResult<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(SpecError::invalid(field, "must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(SpecError::invalid(
            field,
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(SpecError::invalid(field, "must not contain control characters"));
    }
    Ok(value.to_owned())
}

/// An identifier that appears in routing (namespaces, groups): 1–64 of `[A-Za-z0-9_-]`.
/// No dots: `namespace.model` is how clients address a namespace.
pub fn identifier(field: &'static str, value: &str) -> SpecResult<String> {
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(SpecError::invalid(
            field,
            format!("{value:?} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"),
        ));
    }
    Ok(value.to_owned())
}

/// A list of identifiers, de-duplicated in order.
pub fn identifier_list(field: &'static str, values: &[String]) -> SpecResult<Vec<String>> {
    if values.len() > MAX_LIST_LEN {
        return Err(SpecError::invalid(
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
pub fn cidr_list(field: &'static str, values: &[String]) -> SpecResult<Vec<String>> {
    if values.len() > MAX_LIST_LEN {
        return Err(SpecError::invalid(
            field,
            format!("at most {MAX_LIST_LEN} entries"),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(values.len());
    for value in values {
        let net = ez_config::parse_net(value).map_err(|reason| SpecError::invalid(field, reason))?;
        let net = net.to_string();
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

pub fn non_negative(field: &'static str, value: i64) -> SpecResult<i64> {
    if value < 0 {
        return Err(SpecError::invalid(field, "must be >= 0"));
    }
    Ok(value)
}

/// A key's expiry in Unix seconds, at most 100 years ahead. It may lie in the past (a
/// restored key that has expired meanwhile); [`future_time`] is the rule for a client
/// setting one.
pub fn expiry(field: &'static str, value: i64) -> SpecResult<i64> {
    if value > now_unix() + MAX_EXPIRY_AHEAD_SECS || value < 0 {
        return Err(SpecError::invalid(
            field,
            "is out of range (Unix seconds, at most 100 years ahead)",
        ));
    }
    Ok(value)
}

/// An expiry a client sets: a Unix time in seconds that lies in the future.
pub fn future_time(field: &'static str, value: i64) -> SpecResult<i64> {
    if value <= now_unix() {
        return Err(SpecError::ExpiresInPast { field });
    }
    expiry(field, value)
}

/// Any point in time as Unix seconds (year 9999 at most).
pub fn unix_time(field: &'static str, value: i64) -> SpecResult<i64> {
    if !(0..=MAX_UNIX_TIME).contains(&value) {
        return Err(SpecError::invalid(field, "must be Unix seconds"));
    }
    Ok(value)
}

/// Free text: at most `max` characters, no control characters; stored trimmed.
pub fn text(field: &'static str, value: &str, max: usize) -> SpecResult<String> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(SpecError::invalid(
            field,
            format!("must be at most {max} characters without control characters"),
        ));
    }
    Ok(value.trim().to_owned())
}

/// A relative weight: 1 to 1,000,000.
pub fn weight(value: i64) -> SpecResult<i64> {
    if !(1..=1_000_000).contains(&value) {
        return Err(SpecError::invalid("weight", "must be between 1 and 1000000"));
    }
    Ok(value)
}

/// One of a fixed set of words (trimmed).
pub fn one_of(field: &'static str, value: &str, allowed: &[&str]) -> SpecResult<String> {
    let value = value.trim();
    if allowed.contains(&value) {
        Ok(value.to_owned())
    } else {
        Err(SpecError::invalid(
            field,
            format!("must be one of: {}", allowed.join(", ")),
        ))
    }
}

/// A model name (upstream or public): trimmed, 1–256 characters, no whitespace.
pub fn model_name(field: &'static str, value: &str) -> SpecResult<String> {
    let m = value.trim();
    if m.is_empty() || m.len() > MAX_MODEL_NAME || m.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(SpecError::invalid(field, format!("{m:?} is not a model name")));
    }
    Ok(m.to_owned())
}

/// Model names, de-duplicated in order.
pub fn model_list(field: &'static str, models: &[String]) -> SpecResult<Vec<String>> {
    if models.len() > MAX_MODELS {
        return Err(SpecError::invalid(field, format!("at most {MAX_MODELS} models")));
    }
    let mut out: Vec<String> = Vec::with_capacity(models.len());
    for m in models {
        let m = model_name(field, m)?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// An upstream secret (API key, OAuth token): trimmed, no whitespace or control
/// characters inside. Empty means "none".
pub fn secret(field: &'static str, value: &SecretToken) -> SpecResult<SecretToken> {
    let value = value.expose().trim();
    if value.len() > MAX_SECRET || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        // The message never repeats the value.
        return Err(SpecError::invalid(field, "is not a valid credential"));
    }
    Ok(SecretToken::from_plaintext(value))
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
        assert_eq!(identifier("ns", " team ").unwrap(), "team");
        assert!(identifier("ns", "team.a").is_err());
        assert!(identifier("ns", "a b").is_err());
        assert!(identifier("ns", "").is_err());
        assert!(identifier("ns", &"x".repeat(65)).is_err());
    }

    #[test]
    fn lists_are_normalised_and_deduplicated() {
        let ns = identifier_list("namespaces", &["a".into(), "b".into(), " a".into()]).unwrap();
        assert_eq!(ns, vec!["a", "b"]);
        let ips = cidr_list(
            "allow_ips",
            &["10.1.2.3".into(), "10.1.2.3/32".into(), "10.9.9.9/8".into()],
        )
        .unwrap();
        assert_eq!(ips, vec!["10.1.2.3/32", "10.0.0.0/8"]);
        assert!(cidr_list("allow_ips", &["300.1.1.1".into()]).is_err());
        let models = model_list("models", &[" gpt-4o".into(), "gpt-4o".into()]).unwrap();
        assert_eq!(models, vec!["gpt-4o"]);
        assert!(model_list("models", &["gpt 4o".into()]).is_err());
    }

    #[test]
    fn numbers_and_times() {
        assert!(non_negative("qps", -1).is_err());
        assert_eq!(non_negative("qps", 0).unwrap(), 0);
        assert_eq!(
            future_time("expires_at", 1),
            Err(SpecError::ExpiresInPast { field: "expires_at" })
        );
        assert!(future_time("expires_at", now_unix() + 60).is_ok());
        assert!(future_time("expires_at", i64::MAX).is_err());
        assert_eq!(
            expiry("expires_at", 1).unwrap(),
            1,
            "a past expiry is a valid value"
        );
        assert!(expiry("expires_at", i64::MAX).is_err());
        assert!(unix_time("ban_until", -1).is_err());
        assert!(weight(0).is_err() && weight(1).is_ok());
    }

    #[test]
    fn display_names_and_secrets() {
        assert_eq!(display_name("name", "  acme  ").unwrap(), "acme");
        assert!(display_name("name", "   ").is_err());
        assert!(display_name("name", "a\nb").is_err());
        let s = secret("api_key", &SecretToken::from_plaintext(" sk-1 ")).unwrap();
        assert_eq!(s.expose(), "sk-1");
        let err = secret("api_key", &SecretToken::from_plaintext("sk 1")).unwrap_err();
        assert!(!err.to_string().contains("sk 1"));
    }
}
