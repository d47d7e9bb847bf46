//! Who is calling (SPEC §4): admin token or admin JWT, master key or master JWT, child
//! key. Only SHA-256 digests of tokens are stored and compared, in constant time.

pub mod bootstrap;
mod extract;
pub mod jwt;

use std::time::Duration;

use axum::http::HeaderMap;
use ez_contract::token::{constant_time_eq, digest};
use ez_contract::{SecretToken, TokenKind};

pub use extract::{AdminAuth, AnyCredential, InternalAuth, MasterAuth};
pub use jwt::{JwtError, JwtKeys, Role};

use crate::error::ApiError;
use crate::store::{Master, Store};

/// Verifies admin credentials and issues/verifies JWTs.
pub struct Authenticator {
    admin_digest: String,
    jwt: JwtKeys,
    jwt_ttl: Duration,
}

/// A presented credential, classified by its shape.
#[derive(Debug)]
pub enum Credential {
    Admin,
    Master(Master),
    /// A child key; validated by whoever needs it (the whoami endpoint, the balancer).
    ChildKey(SecretToken),
}

impl Authenticator {
    pub fn new(admin_digest: String, jwt: JwtKeys, jwt_ttl: Duration) -> Authenticator {
        Authenticator {
            admin_digest,
            jwt,
            jwt_ttl,
        }
    }

    pub fn jwt_ttl(&self) -> Duration {
        self.jwt_ttl
    }

    pub fn is_admin_token(&self, presented: &str) -> bool {
        constant_time_eq(&digest(presented), &self.admin_digest)
    }

    /// First 16 hex characters of the admin token's digest, bound into admin JWTs so
    /// that changing the admin token ends every admin session.
    pub fn admin_binding(&self) -> &str {
        &self.admin_digest[..16]
    }

    pub fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }

    /// Resolves the bearer credential of a request.
    pub async fn authenticate(&self, store: &Store, headers: &HeaderMap) -> Result<Credential, ApiError> {
        let presented = presented_token(headers).ok_or_else(|| {
            ApiError::unauthorized(
                "missing_credentials",
                "send a credential as Authorization: Bearer <token>",
            )
        })?;
        match TokenKind::of(presented) {
            Some(TokenKind::Child) => {
                return Ok(Credential::ChildKey(SecretToken::from_plaintext(presented)));
            }
            Some(TokenKind::Master) => {
                let wanted = digest(presented);
                return match store.find_master_by_digest(&wanted).await? {
                    Some(master) if constant_time_eq(&master.token_digest, &wanted) => {
                        Ok(Credential::Master(master))
                    }
                    _ => Err(invalid_credentials()),
                };
            }
            None => {}
        }
        if self.is_admin_token(presented) {
            return Ok(Credential::Admin);
        }
        if presented.matches('.').count() == 2 {
            return self.authenticate_jwt(store, presented).await;
        }
        Err(invalid_credentials())
    }

    async fn authenticate_jwt(&self, store: &Store, token: &str) -> Result<Credential, ApiError> {
        let claims = self.jwt.verify(token).map_err(|e| match e {
            JwtError::Expired => {
                ApiError::unauthorized("token_expired", "the session token has expired; log in again")
            }
            _ => invalid_credentials(),
        })?;
        match claims.role {
            Role::Admin if constant_time_eq(&claims.binding, self.admin_binding()) => Ok(Credential::Admin),
            Role::Admin => Err(revoked_session()),
            Role::Master => {
                let id = claims.master_id.ok_or_else(invalid_credentials)?;
                let master = match store.get_master(id).await {
                    Ok(m) => m,
                    Err(crate::store::StoreError::NotFound(_)) => return Err(invalid_credentials()),
                    Err(e) => return Err(e.into()),
                };
                let bound = master
                    .token_digest
                    .get(..16)
                    .is_some_and(|d| constant_time_eq(d, &claims.binding));
                if claims.epoch != Some(master.epoch) || !bound {
                    return Err(revoked_session());
                }
                Ok(Credential::Master(master))
            }
        }
    }
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("invalid_credentials", "the credential is not valid")
}

fn revoked_session() -> ApiError {
    ApiError::unauthorized(
        "token_revoked",
        "the session token has been revoked; log in again",
    )
}

/// The token a client presented: `Authorization: Bearer`, else `x-api-key` /
/// `x-goog-api-key` (the headers Anthropic and Gemini clients use).
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    ["x-api-key", "x-goog-api-key"]
        .iter()
        .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn bearer_and_provider_headers_are_read() {
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "bearer   abc ")])),
            Some("abc")
        );
        assert_eq!(presented_token(&headers(&[("x-api-key", "k1")])), Some("k1"));
        assert_eq!(presented_token(&headers(&[("x-goog-api-key", "k2")])), Some("k2"));
        // Authorization wins over the others, and a non-bearer scheme is no credential.
        assert_eq!(
            presented_token(&headers(&[("authorization", "Bearer a"), ("x-api-key", "b")])),
            Some("a")
        );
        assert_eq!(
            presented_token(&headers(&[("authorization", "Basic dXNlcg==")])),
            None
        );
        assert_eq!(presented_token(&headers(&[("authorization", "Bearer")])), None);
        assert_eq!(presented_token(&headers(&[("x-api-key", "  ")])), None);
        assert_eq!(presented_token(&HeaderMap::new()), None);
    }
}
