//! Importing the OAuth credential files that the official tools (Claude Code, Codex,
//! Gemini CLI, Antigravity) and CLIProxyAPI write into a subscription group: each file is
//! recognised (`files`), checked against the group's type, matched with the credential
//! of the same account when the group has one (updated, not duplicated) and stored through
//! the same path as `POST /admin/api-keys` — with a report per file. A file that cannot be
//! read, or belongs to another provider, is refused with its reason and writes nothing.

pub mod files;

use ez_contract::provider::ProviderType;
use ez_contract::report::clean_copy;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::providers::{self, CreateApiKeyRequest, ProviderError, ProviderResult, UpdateApiKeyRequest};
use crate::state::AppState;
use crate::store::ApiKey;
use files::ImportedCredential;

/// At most this many files per import, each at most `MAX_FILE` bytes.
pub const MAX_FILES: usize = 1000;
pub const MAX_FILE: usize = 64 * 1024;
const MAX_NAME: usize = 256;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The subscription group (`claude-code`, `codex`, `gemini-cli` or `antigravity`).
    pub group_id: i64,
    pub files: Vec<ImportFile>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportFile {
    /// The file's name, for the report.
    pub name: String,
    /// The file's text.
    pub content: String,
}

ez_contract::debug_redacting!(ImportFile { name } secret { content });

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Updated,
    Refused,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileReport {
    pub name: String,
    pub outcome: Outcome,
    /// What the file was recognised as.
    pub source: Option<&'static str>,
    pub credential_id: Option<i64>,
    /// The account it belongs to (id or e-mail), when the file says.
    pub account: Option<String>,
    /// Why it was refused.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportReport {
    pub created: usize,
    pub updated: usize,
    pub refused: usize,
    pub files: Vec<FileReport>,
}

fn refused(name: String, reason: impl Into<String>) -> FileReport {
    FileReport {
        name,
        outcome: Outcome::Refused,
        source: None,
        credential_id: None,
        account: None,
        reason: Some(reason.into()),
    }
}

/// The credential of the group that `imported` is another copy of: the same account,
/// or (files without an account id) the same refresh token.
fn same_account<'a>(existing: &'a [ApiKey], imported: &ImportedCredential) -> Option<&'a ApiKey> {
    existing.iter().find(|key| {
        if imported.account_id.is_empty() {
            !imported.refresh_token.is_empty() && key.refresh_token.expose() == imported.refresh_token
        } else {
            key.account_id == imported.account_id
        }
    })
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// Stores one read credential in the group: updates the account's credential when the
/// group has one, else creates it.
async fn store(
    state: &AppState,
    group_id: i64,
    existing: &mut Vec<ApiKey>,
    imported: &ImportedCredential,
) -> ProviderResult<(Outcome, ApiKey)> {
    if let Some(key) = same_account(existing, imported) {
        let update = UpdateApiKeyRequest {
            access_token: non_empty(&imported.access_token),
            refresh_token: non_empty(&imported.refresh_token),
            expires_at: imported.expires_at.map(Some),
            account_id: non_empty(&imported.account_id),
            project_id: non_empty(&imported.project_id),
            ..UpdateApiKeyRequest::default()
        };
        let id = key.id;
        let key = providers::update_api_key(state, id, update).await?;
        if let Some(slot) = existing.iter_mut().find(|k| k.id == id) {
            *slot = key.clone();
        }
        return Ok((Outcome::Updated, key));
    }
    let create = CreateApiKeyRequest {
        group_id,
        api_key: None,
        weight: None,
        status: None,
        auto_ban: None,
        ban_reason: None,
        ban_until: None,
        access_token: non_empty(&imported.access_token),
        refresh_token: non_empty(&imported.refresh_token),
        expires_at: imported.expires_at,
        account_id: non_empty(&imported.account_id),
        project_id: non_empty(&imported.project_id),
        models: None,
    };
    let key = providers::create_api_key(state, create).await?;
    existing.push(key.clone());
    Ok((Outcome::Created, key))
}

/// Imports `req.files` into the group; every file gets a report line.
pub async fn import(state: &AppState, req: ImportRequest) -> ProviderResult<ImportReport> {
    let group = match state.store.get_group(req.group_id).await {
        Ok(group) => group,
        Err(crate::store::StoreError::NotFound(_)) => return Err(ProviderError::GroupNotFound(req.group_id)),
        Err(e) => return Err(e.into()),
    };
    let kind: Option<ProviderType> = group.provider_type.parse().ok();
    if !kind.is_some_and(ProviderType::is_subscription) {
        return Err(ProviderError::NotSubscription(group.provider_type));
    }
    if req.files.len() > MAX_FILES {
        return Err(ProviderError::TooManyFiles(MAX_FILES));
    }
    let mut existing = state.store.api_keys_of_group(group.id).await?;
    let mut report = ImportReport {
        created: 0,
        updated: 0,
        refused: 0,
        files: Vec::with_capacity(req.files.len()),
    };
    for file in req.files {
        let name = clean_copy(&file.name, MAX_NAME);
        let line = if file.content.len() > MAX_FILE {
            refused(name, format!("larger than {MAX_FILE} bytes"))
        } else {
            match files::read(file.content.as_bytes()) {
                Err(reason) => refused(name, reason),
                Ok(imported) if Some(imported.kind) != kind => refused(
                    name,
                    format!(
                        "a {} credential ({}) cannot go into a {} group",
                        imported.kind.as_str(),
                        imported.source,
                        group.provider_type
                    ),
                ),
                Ok(imported) => match store(state, group.id, &mut existing, &imported).await {
                    Ok((outcome, key)) => FileReport {
                        name,
                        outcome,
                        source: Some(imported.source),
                        credential_id: Some(key.id),
                        account: non_empty(&imported.account_id).or_else(|| non_empty(&imported.email)),
                        reason: None,
                    },
                    Err(ProviderError::Invalid(e)) => refused(name, e.to_string()),
                    Err(e) => return Err(e),
                },
            }
        };
        match line.outcome {
            Outcome::Created => report.created += 1,
            Outcome::Updated => report.updated += 1,
            Outcome::Refused => report.refused += 1,
        }
        report.files.push(line);
    }
    Ok(report)
}
