//! Session tokens (HS256 JWTs) issued by `POST /auth/login`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Master,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub master_id: Option<i64>,
    /// The master's revocation epoch at login: bumping it ends the session.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub epoch: Option<i64>,
    /// First 16 hex chars of the credential's digest: rotating the credential ends the
    /// session.
    pub binding: String,
    pub iat: i64,
    pub exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &[u8]) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(&self, claims: &Claims) -> Result<String, JwtError> {
        encode(&Header::new(Algorithm::HS256), claims, &self.encoding).map_err(|_| JwtError::Invalid)
    }

    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => JwtError::Expired,
                _ => JwtError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: "master:1".into(),
            role: Role::Master,
            master_id: Some(1),
            epoch: Some(3),
            binding: "0123456789abcdef".into(),
            iat: 0,
            exp,
        }
    }

    #[test]
    fn issued_tokens_verify_and_keep_their_claims() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let token = keys.issue(&claims(ez_contract::time::now_unix() + 60)).unwrap();
        let back = keys.verify(&token).unwrap();
        assert_eq!(back.role, Role::Master);
        assert_eq!(back.epoch, Some(3));
        assert_eq!(back.master_id, Some(1));
    }

    #[test]
    fn expired_and_foreign_tokens_are_rejected() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef");
        let expired = keys.issue(&claims(ez_contract::time::now_unix() - 120)).unwrap();
        assert!(matches!(keys.verify(&expired), Err(JwtError::Expired)));
        let other = JwtKeys::new(b"another-secret-another-secret-xx");
        let foreign = other.issue(&claims(ez_contract::time::now_unix() + 60)).unwrap();
        assert!(matches!(keys.verify(&foreign), Err(JwtError::Invalid)));
        assert!(matches!(keys.verify("a.b.c"), Err(JwtError::Invalid)));
    }
}
