//! An upstream credential (API key or OAuth account) of a provider group.

use ez_contract::provider::ProviderType;

use ez_contract::SecretToken;

use super::{SpecError, SpecResult, read_only_spec};
use crate::store::ApiKeyWrite;
use crate::token_refresh::service_account::{ServiceAccountKey, is_service_account};
use crate::validation;

pub const CREDENTIAL_STATUSES: &[&str] = &["active", "auto_disabled", "manual_disabled"];

/// A credential whose values follow the rules for a group of its type: secrets without
/// whitespace, an API key (or, for subscription types, an OAuth token), a weight, a
/// known status, times as Unix seconds, model names.
#[derive(Debug, Clone)]
pub struct CredentialSpec(ApiKeyWrite);
read_only_spec!(CredentialSpec => ApiKeyWrite);

impl CredentialSpec {
    pub fn new(mut w: ApiKeyWrite, kind: ProviderType) -> SpecResult<CredentialSpec> {
        if kind == ProviderType::Vertex && is_service_account(w.api_key.expose()) {
            // A service-account key file: kept compact (no whitespace outside strings);
            // its access tokens come from the token refresh.
            let key = ServiceAccountKey::parse(w.api_key.expose())
                .map_err(|why| SpecError::invalid("api_key", why))?;
            w.api_key = SecretToken::from_plaintext(key.compact());
            if w.account_id.is_empty() {
                w.account_id = key.client_email;
            }
        }
        w.api_key = validation::secret("api_key", &w.api_key)?;
        w.access_token = validation::secret("access_token", &w.access_token)?;
        w.refresh_token = validation::secret("refresh_token", &w.refresh_token)?;
        if kind.is_subscription() {
            if w.access_token.is_empty() && w.refresh_token.is_empty() {
                return Err(SpecError::OauthTokenRequired(kind));
            }
        } else if w.api_key.is_empty() {
            return Err(SpecError::ApiKeyRequired(kind));
        }
        w.weight = validation::weight(w.weight)?;
        w.status = validation::one_of("status", &w.status, CREDENTIAL_STATUSES)?;
        w.ban_reason = validation::text("ban_reason", &w.ban_reason, 512)?;
        w.ban_until = w
            .ban_until
            .map(|t| validation::unix_time("ban_until", t))
            .transpose()?;
        w.expires_at = w
            .expires_at
            .map(|t| validation::unix_time("expires_at", t))
            .transpose()?;
        w.account_id = validation::text("account_id", &w.account_id, 256)?;
        w.project_id = validation::text("project_id", &w.project_id, 256)?;
        w.models = validation::model_list("models", &w.models)?;
        Ok(CredentialSpec(w))
    }

    /// The same credential in group `group_id` (which must be of the type it was checked
    /// for).
    pub fn in_group(mut self, group_id: i64) -> CredentialSpec {
        self.0.group_id = group_id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(api_key: &str) -> ApiKeyWrite {
        let none = || SecretToken::from_plaintext("");
        ApiKeyWrite {
            group_id: 1,
            api_key: SecretToken::from_plaintext(api_key),
            weight: 1,
            status: " active".into(),
            auto_ban: true,
            ban_reason: String::new(),
            ban_until: None,
            access_token: none(),
            refresh_token: none(),
            expires_at: None,
            account_id: String::new(),
            project_id: String::new(),
            models: vec![],
            revision: 0,
        }
    }

    #[test]
    fn secrets_by_type() {
        let c = CredentialSpec::new(write(" sk-1 "), ProviderType::OpenAi).unwrap();
        assert_eq!((c.api_key.expose(), c.status.as_str()), ("sk-1", "active"));
        assert_eq!(
            CredentialSpec::new(write(""), ProviderType::OpenAi).unwrap_err(),
            SpecError::ApiKeyRequired(ProviderType::OpenAi)
        );
        assert_eq!(
            CredentialSpec::new(write("sk-1"), ProviderType::ClaudeCode).unwrap_err(),
            SpecError::OauthTokenRequired(ProviderType::ClaudeCode)
        );
        assert_eq!(
            CredentialSpec::new(write("sk-1"), ProviderType::OpenAi)
                .unwrap()
                .in_group(7)
                .group_id,
            7
        );
    }
}
