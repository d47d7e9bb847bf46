//! A token as a backup carries it: its digest and display prefix, never the token.

use super::{SpecError, SpecResult};
use crate::validation;

/// The SHA-256 digest (64 lower-case hex characters) and display prefix of a master or
/// child key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    digest: String,
    prefix: String,
}

impl StoredToken {
    pub fn new(digest: &str, prefix: &str) -> SpecResult<StoredToken> {
        let is_digest = digest.len() == 64
            && digest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_digest {
            return Err(SpecError::invalid(
                "token_digest",
                "must be 64 lower-case hex characters",
            ));
        }
        Ok(StoredToken {
            digest: digest.to_owned(),
            prefix: validation::display_name("token_prefix", prefix)?,
        })
    }

    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// An epoch carried by a backup: epochs start at 1.
pub(super) fn epoch(field: &'static str, value: i64) -> SpecResult<i64> {
    if value < 1 {
        return Err(SpecError::invalid(field, "must be >= 1"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_lower_case_hex() {
        let digest = "a".repeat(64);
        assert!(StoredToken::new(&digest, "ezm-abcd").is_ok());
        assert!(StoredToken::new(&"A".repeat(64), "ezm-abcd").is_err());
        assert!(StoredToken::new("abc", "ezm-abcd").is_err());
        assert_eq!(StoredToken::new(&digest, " p ").unwrap().prefix(), "p");
        assert!(epoch("epoch", 0).is_err() && epoch("epoch", 1).is_ok());
    }
}
