//! Vertex AI service-account keys: the JSON key file Google issues for a service account
//! is a `vertex` credential's `api_key`; the token refresh signs a JWT with its private key
//! (RS256, the OAuth 2.0 JWT bearer grant) and exchanges it at Google's token endpoint
//! (`token_refresh.google_token_url`) for an access token of the `cloud-platform` scope,
//! which balancers then present. The key never leaves the control plane's refresh.

use ez_config::TokenRefreshConfig;
use ez_contract::time::now_unix;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::oauth::{self, Failure, Tokens};

const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The longest lifetime Google grants an assertion.
const ASSERTION_LIFETIME: i64 = 3600;

/// The parts of a service-account key file the exchange needs (the rest is dropped).
/// `Debug` leaves the private key out.
#[derive(Clone, Serialize, Deserialize)]
pub struct ServiceAccountKey {
    #[serde(rename = "type")]
    pub kind: String,
    pub client_email: String,
    /// A PEM private key as the file has it; stored as the bare base64 of its PKCS#8
    /// form (no armor lines, no line breaks: a credential holds no whitespace).
    pub private_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub private_key_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project_id: String,
}

pub use ez_contract::provider::is_service_account_key as is_service_account;

impl std::fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("project_id", &self.project_id)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

impl ServiceAccountKey {
    /// Reads a key file, checking that it is a service account's with a usable RSA
    /// private key; the reason when not (never quoting the key).
    pub fn parse(text: &str) -> Result<ServiceAccountKey, String> {
        let key: ServiceAccountKey = serde_json::from_str(text).map_err(|_| {
            "not a service-account key file (JSON with type, client_email, private_key)".to_owned()
        })?;
        if key.kind != "service_account" {
            // The client's text, echoed bounded.
            let kind = ez_contract::report::clean_copy(&key.kind, 64);
            return Err(format!(
                "the key file's type is {kind:?}, not \"service_account\""
            ));
        }
        if key.client_email.is_empty()
            || key.client_email.len() > 256
            || key.client_email.chars().any(char::is_whitespace)
        {
            return Err("the key file's client_email is missing or malformed".to_owned());
        }
        let private = private_key(&key.private_key)
            .ok_or_else(|| "the key file's private_key is not an RSA private key in PEM".to_owned())?;
        Ok(ServiceAccountKey {
            private_key: private.base64,
            ..key
        })
    }

    /// The key as stored: compact JSON of the fields above, without whitespace.
    pub fn compact(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The signed assertion for `audience` (the token endpoint), valid from `now`.
    fn assertion(&self, audience: &str, now: i64) -> Result<String, Failure> {
        #[derive(Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: i64,
            exp: i64,
        }
        let claims = Claims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: audience,
            iat: now,
            exp: now + ASSERTION_LIFETIME,
        };
        let mut header = Header::new(Algorithm::RS256);
        if !self.private_key_id.is_empty() {
            header.kid = Some(self.private_key_id.clone());
        }
        let key = private_key(&self.private_key)
            .map(|k| k.signing)
            .ok_or_else(|| Failure::Revoked("the service-account private key cannot sign".into()))?;
        jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|_| Failure::Revoked("the service-account private key cannot sign".into()))
    }
}

/// A private key: its signing form, and the bare base64 of its PKCS#8 form.
struct PrivateKey {
    signing: EncodingKey,
    base64: String,
}

/// Reads an RSA private key: PEM (PKCS#8, as Google issues them, or PKCS#1), or the bare
/// base64 of PKCS#8 that [`ServiceAccountKey::compact`] stores.
fn private_key(text: &str) -> Option<PrivateKey> {
    use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
    use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
    let pem = if text.contains("-----BEGIN") {
        text.to_owned()
    } else {
        let lines: Vec<&str> = text
            .as_bytes()
            .chunks(64)
            .filter_map(|line| std::str::from_utf8(line).ok())
            .collect();
        format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        )
    };
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(&pem))
        .ok()?;
    let pkcs1 = key.to_pkcs1_der().ok()?;
    let pkcs8 = key.to_pkcs8_pem(LineEnding::LF).ok()?;
    let base64 = pkcs8
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect::<String>();
    Some(PrivateKey {
        signing: EncodingKey::from_rsa_der(pkcs1.as_bytes()),
        base64,
    })
}

/// Exchanges the service-account key `api_key` for an access token.
pub async fn exchange(
    http: &reqwest::Client,
    config: &TokenRefreshConfig,
    api_key: &str,
) -> Result<Tokens, Failure> {
    let key = ServiceAccountKey::parse(api_key).map_err(Failure::Revoked)?;
    let url = config.google_token_url.clone();
    let assertion = key.assertion(&url, now_unix())?;
    let body = oauth::form(&[("grant_type", GRANT), ("assertion", &assertion)]);
    let tokens = oauth::post(http, url, "application/x-www-form-urlencoded", body).await?;
    // A service account has no refresh token: whatever came is not one to keep.
    Ok(Tokens {
        refresh_token: None,
        ..tokens
    })
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{DecodingKey, Validation};
    use serde_json::Value;

    use super::*;

    const KEY_FILE: &str = include_str!("../../tests/fixtures/credentials/vertex_service_account.json");
    const PUBLIC_KEY: &str = include_str!("../../tests/fixtures/credentials/vertex_service_account.pub.pem");

    #[test]
    fn key_files_are_checked_and_kept_compact() {
        let key = ServiceAccountKey::parse(KEY_FILE).unwrap();
        assert_eq!(
            key.client_email,
            "ez-test@ez-test-project.iam.gserviceaccount.com"
        );
        let compact = key.compact();
        assert!(!compact.chars().any(char::is_whitespace), "{compact}");
        assert!(is_service_account(&compact) && !is_service_account("ya29.token"));
        assert!(
            !key.private_key.contains("PRIVATE KEY"),
            "stored without its armor"
        );
        let again = ServiceAccountKey::parse(&compact).unwrap();
        assert!(
            again.assertion("aud", now_unix()).is_ok(),
            "the stored form signs"
        );
        assert_eq!(
            (again.private_key, again.project_id),
            (key.private_key.clone(), key.project_id.clone())
        );

        let mut wrong: Value = serde_json::from_str(KEY_FILE).unwrap();
        wrong["type"] = "authorized_user".into();
        assert!(
            ServiceAccountKey::parse(&wrong.to_string())
                .unwrap_err()
                .contains("authorized_user")
        );
        wrong["type"] = "service_account".into();
        wrong["private_key"] = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n".into();
        let why = ServiceAccountKey::parse(&wrong.to_string()).unwrap_err();
        assert!(why.contains("private_key") && !why.contains("not a key"), "{why}");
        assert!(ServiceAccountKey::parse("{}").is_err());
        wrong["type"] = "x".repeat(10_000).into();
        assert!(ServiceAccountKey::parse(&wrong.to_string()).unwrap_err().len() < 200);
        let shown = format!("{key:?}");
        assert!(
            !shown.contains(&key.private_key[..40]) && shown.contains("ez-test@"),
            "{shown}"
        );
    }

    #[test]
    fn assertions_are_rs256_jwts_google_verifies() {
        let key = ServiceAccountKey::parse(KEY_FILE).unwrap();
        let now = now_unix();
        let jwt = key.assertion("https://oauth2.googleapis.com/token", now).unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&["https://oauth2.googleapis.com/token"]);
        let public = {
            use rsa::pkcs1::EncodeRsaPublicKey;
            use rsa::pkcs8::DecodePublicKey;
            let key = rsa::RsaPublicKey::from_public_key_pem(PUBLIC_KEY).unwrap();
            DecodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes())
        };
        let decoded = jsonwebtoken::decode::<Value>(&jwt, &public, &validation).unwrap();
        assert_eq!(decoded.header.kid.as_deref(), Some(key.private_key_id.as_str()));
        let claims = decoded.claims;
        assert_eq!(claims["iss"], key.client_email);
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
    }
}
