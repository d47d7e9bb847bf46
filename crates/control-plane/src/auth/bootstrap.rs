//! First-start secrets: the admin token (only its digest is stored) and the JWT signing
//! secret (persisted so restarts and other CPs keep sessions valid). Both live in the
//! database's `settings` table, shared by every CP of a deployment.

use ez_config::AuthConfig;
use ez_contract::SecretToken;
use ez_contract::token::digest;
use rand::Rng;
use rand::distributions::Alphanumeric;

use super::{Authenticator, JwtKeys};
use crate::store::{Store, StoreResult};

const ADMIN_DIGEST_SETTING: &str = "admin_token_digest";
const JWT_SECRET_SETTING: &str = "jwt_secret";
/// Prefix of generated admin tokens. Changing it breaks no stored state (only digests are
/// stored) but documentation and operators recognise tokens by it.
const ADMIN_TOKEN_PREFIX: &str = "eza-";

pub struct Bootstrapped {
    pub authenticator: Authenticator,
    /// Set only on the first start without a configured admin token: the plaintext, to be
    /// printed once.
    pub generated_admin_token: Option<SecretToken>,
}

fn random_secret(len: usize) -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub async fn bootstrap(store: &Store, auth: &AuthConfig) -> StoreResult<Bootstrapped> {
    let mut generated_admin_token = None;
    let admin_digest = match &auth.admin_token {
        Some(token) => token.digest(),
        None => match store.get_setting(ADMIN_DIGEST_SETTING).await? {
            Some(stored) => stored,
            None => {
                let token = SecretToken::from_plaintext(format!("{ADMIN_TOKEN_PREFIX}{}", random_secret(40)));
                let (stored, ours) = store.init_setting(ADMIN_DIGEST_SETTING, &token.digest()).await?;
                if ours {
                    generated_admin_token = Some(token);
                }
                stored
            }
        },
    };
    let jwt_secret = match &auth.jwt_secret {
        Some(secret) => secret.expose().to_owned(),
        None => match store.get_setting(JWT_SECRET_SETTING).await? {
            Some(stored) => stored,
            None => {
                store
                    .init_setting(JWT_SECRET_SETTING, &random_secret(64))
                    .await?
                    .0
            }
        },
    };
    debug_assert_eq!(admin_digest.len(), digest("").len());
    Ok(Bootstrapped {
        authenticator: Authenticator::new(admin_digest, JwtKeys::new(jwt_secret.as_bytes()), auth.jwt_ttl),
        generated_admin_token,
    })
}
