//! Token formats, generation and hashing.
//!
//! Only the SHA-256 digest of a token is ever stored; the plaintext exists once, in the
//! response that created it.

use std::fmt;

use rand::Rng;
use rand::distributions::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of master keys. Changing it breaks every master key ever issued.
pub const MASTER_KEY_PREFIX: &str = "ezm-";
/// Prefix of child keys. Changing it breaks every child key ever issued.
pub const CHILD_KEY_PREFIX: &str = "sk-ez-";
/// Number of base62 characters after the prefix (≈ 238 bits of entropy).
pub const TOKEN_SECRET_LEN: usize = 40;
/// How many characters after the prefix are kept in `token_prefix` for display.
const DISPLAY_SECRET_CHARS: usize = 4;

/// The kinds of token ez-api issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Master,
    Child,
}

impl TokenKind {
    pub fn prefix(self) -> &'static str {
        match self {
            TokenKind::Master => MASTER_KEY_PREFIX,
            TokenKind::Child => CHILD_KEY_PREFIX,
        }
    }

    /// Classifies a presented credential by its shape alone (prefix, length, alphabet).
    pub fn of(token: &str) -> Option<TokenKind> {
        [TokenKind::Master, TokenKind::Child]
            .into_iter()
            .find(|kind| has_shape(token, kind.prefix()))
    }
}

fn has_shape(token: &str, prefix: &str) -> bool {
    token.strip_prefix(prefix).is_some_and(|secret| {
        secret.len() == TOKEN_SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// A plaintext secret. Its `Debug` and `Display` never show the value, so it cannot leak
/// into a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretToken(String);

impl SecretToken {
    /// Generates a new token of `kind` from the operating system's CSPRNG.
    pub fn generate(kind: TokenKind) -> SecretToken {
        let secret: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(TOKEN_SECRET_LEN)
            .map(char::from)
            .collect();
        SecretToken(format!("{}{secret}", kind.prefix()))
    }

    /// Wraps a secret that came from outside (configuration, a request).
    pub fn from_plaintext(value: impl Into<String>) -> SecretToken {
        SecretToken(value.into())
    }

    /// The plaintext; call only where the secret must leave the process (a response that
    /// returns it once, an outgoing request header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn digest(&self) -> String {
        digest(&self.0)
    }

    /// The last 4 characters behind `****`, how upstream secrets are shown; empty
    /// stays empty, and a secret of 8 characters or fewer shows nothing of itself.
    pub fn masked(&self) -> String {
        let len = self.0.chars().count();
        match len {
            0 => String::new(),
            1..=8 => "****".to_owned(),
            _ => format!("****{}", self.0.chars().skip(len - 4).collect::<String>()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first characters (prefix plus a few), safe to store and show.
    pub fn display_prefix(&self) -> String {
        let kind_len = TokenKind::of(&self.0).map_or(0, |k| k.prefix().len());
        self.0.chars().take(kind_len + DISPLAY_SECRET_CHARS).collect()
    }
}

impl fmt::Debug for SecretToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretToken(<redacted>)")
    }
}

/// SHA-256 of `value`, lower-case hex: the only form in which a token is stored.
pub fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// SHA-256 of `value` as raw bytes (what the balancer looks keys up by: no allocation).
pub fn digest_bytes(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// Compares two secrets (or digests) in constant time with respect to their contents.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_fixed_format() {
        for kind in [TokenKind::Master, TokenKind::Child] {
            let token = SecretToken::generate(kind);
            let value = token.expose();
            assert!(value.starts_with(kind.prefix()));
            assert_eq!(value.len(), kind.prefix().len() + TOKEN_SECRET_LEN);
            assert_eq!(TokenKind::of(value), Some(kind));
        }
        assert!(
            SecretToken::generate(TokenKind::Master)
                .expose()
                .starts_with("ezm-")
        );
        assert!(
            SecretToken::generate(TokenKind::Child)
                .expose()
                .starts_with("sk-ez-")
        );
    }

    #[test]
    fn tokens_are_unique() {
        let a = SecretToken::generate(TokenKind::Child);
        let b = SecretToken::generate(TokenKind::Child);
        assert_ne!(a, b);
    }

    #[test]
    fn shape_detection_rejects_near_misses() {
        let good = SecretToken::generate(TokenKind::Child);
        assert_eq!(TokenKind::of(good.expose()), Some(TokenKind::Child));
        assert_eq!(TokenKind::of(&good.expose()[..good.expose().len() - 1]), None);
        assert_eq!(TokenKind::of(&format!("{}x", good.expose())), None);
        assert_eq!(TokenKind::of(&format!("sk-ez-{}", "!".repeat(40))), None);
        assert_eq!(TokenKind::of(""), None);
    }

    #[test]
    fn digest_is_lowercase_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = SecretToken::generate(TokenKind::Master);
        let shown = format!("{token:?}");
        assert!(!shown.contains(&token.expose()[4..]));
    }

    #[test]
    fn display_prefix_keeps_four_secret_chars() {
        let token = SecretToken::generate(TokenKind::Child);
        assert_eq!(token.display_prefix().len(), "sk-ez-".len() + 4);
        assert!(token.expose().starts_with(&token.display_prefix()));
    }

    #[test]
    fn masking_keeps_only_the_last_four() {
        assert_eq!(
            SecretToken::from_plaintext("sk-abcdefghijklmnop").masked(),
            "****mnop"
        );
        assert_eq!(SecretToken::from_plaintext("short").masked(), "****");
        assert_eq!(SecretToken::from_plaintext("").masked(), "");
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
