//! Provider groups and their credentials (API keys / OAuth accounts).

use std::collections::BTreeMap;

use ez_contract::SecretToken;
use ez_contract::time::now_unix;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::credential_health::{CredentialHealth, health_from_row};
use super::{PageRequest, Store, StoreError, StoreResult, count, json_list, parse_list};

const GROUP_COLUMNS: &str = "id, name, type, base_url, google_project, google_location, models, status, \
     static_headers, headers_profile, route_group, health_check, created_at, updated_at";
const KEY_COLUMNS: &str = "id, group_id, api_key, weight, status, auto_ban, ban_reason, ban_until, access_token, \
     refresh_token, expires_at, account_id, project_id, models, revision, created_at, updated_at, cooling_until, \
     request_count, success_count, last_used_at, last_error, last_error_at, quota_window, quota_used_percent, \
     quota_resets_at, quota_observed_at";

/// Shared upstream configuration of a set of credentials. `Debug` masks the URL and the
/// header values (see `redacted_group_debug!`).
#[derive(Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ProviderGroup {
    pub id: i64,
    pub name: String,
    /// Canonical provider type (SPEC §8).
    #[serde(rename = "type")]
    pub provider_type: String,
    /// Empty = the type's official endpoint.
    pub base_url: String,
    pub google_project: String,
    pub google_location: String,
    /// Upstream model names the group serves.
    pub models: Vec<String>,
    /// `active` or `disabled`.
    pub status: String,
    pub static_headers: BTreeMap<String, String>,
    pub headers_profile: String,
    /// Routing group the credentials belong to (default `default`).
    pub route_group: String,
    /// The active probe of the credentials: `off`, `on` or `metered` (`health_probe`).
    pub health_check: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// The writable fields of a group, validated by the providers service. `Debug` masks the
/// URL and the header values.
#[derive(Clone)]
pub struct GroupWrite {
    pub name: String,
    pub provider_type: String,
    pub base_url: String,
    pub google_project: String,
    pub google_location: String,
    pub models: Vec<String>,
    pub status: String,
    pub static_headers: BTreeMap<String, String>,
    pub headers_profile: String,
    pub route_group: String,
    pub health_check: String,
}

/// `Debug` of a group type: `base_url` may carry credentials (userinfo, query) and static
/// headers may be credentials, so neither is printed as is.
macro_rules! redacted_group_debug {
    ($ty:ident { $($field:ident),* }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field))*
                    .field("base_url", &ez_contract::redact::MaskedUrl(&self.base_url))
                    .field("static_headers", &ez_contract::redact::RedactedHeaders(&self.static_headers))
                    .finish_non_exhaustive()
            }
        }
    };
}

redacted_group_debug!(ProviderGroup {
    id,
    name,
    provider_type,
    google_project,
    google_location,
    models,
    status,
    headers_profile,
    route_group,
    health_check,
    created_at,
    updated_at
});
redacted_group_debug!(GroupWrite {
    name,
    provider_type,
    google_project,
    google_location,
    models,
    status,
    headers_profile,
    route_group,
    health_check
});

impl From<&ProviderGroup> for GroupWrite {
    fn from(g: &ProviderGroup) -> GroupWrite {
        GroupWrite {
            name: g.name.clone(),
            provider_type: g.provider_type.clone(),
            base_url: g.base_url.clone(),
            google_project: g.google_project.clone(),
            google_location: g.google_location.clone(),
            models: g.models.clone(),
            status: g.status.clone(),
            static_headers: g.static_headers.clone(),
            headers_profile: g.headers_profile.clone(),
            route_group: g.route_group.clone(),
            health_check: g.health_check.clone(),
        }
    }
}

/// One upstream credential. Secrets are [`SecretToken`]s: never printed by `Debug`, and
/// shown by the API only masked.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKey {
    pub id: i64,
    pub group_id: i64,
    pub api_key: SecretToken,
    pub weight: i64,
    /// `active`, `auto_disabled` or `manual_disabled`.
    pub status: String,
    pub auto_ban: bool,
    pub ban_reason: String,
    pub ban_until: Option<i64>,
    pub access_token: SecretToken,
    pub refresh_token: SecretToken,
    pub expires_at: Option<i64>,
    pub account_id: String,
    pub project_id: String,
    /// Models this credential serves; empty = the group's.
    pub models: Vec<String>,
    /// Bumped by every update (optimistic concurrency).
    pub revision: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// Unix seconds until which an exhausted usage window keeps the credential out of
    /// routing: routing state reported by balancers, not a ban (no admin write sets it).
    pub cooling_until: Option<i64>,
    /// What balancers reported about its use.
    pub health: CredentialHealth,
}

/// The writable fields of a credential.
#[derive(Debug, Clone)]
pub struct ApiKeyWrite {
    pub group_id: i64,
    pub api_key: SecretToken,
    pub weight: i64,
    pub status: String,
    pub auto_ban: bool,
    pub ban_reason: String,
    pub ban_until: Option<i64>,
    pub access_token: SecretToken,
    pub refresh_token: SecretToken,
    pub expires_at: Option<i64>,
    pub account_id: String,
    pub project_id: String,
    pub models: Vec<String>,
    /// The revision the change was computed from (ignored on create).
    pub revision: i64,
}

impl From<&ApiKey> for ApiKeyWrite {
    fn from(k: &ApiKey) -> ApiKeyWrite {
        ApiKeyWrite {
            group_id: k.group_id,
            api_key: k.api_key.clone(),
            weight: k.weight,
            status: k.status.clone(),
            auto_ban: k.auto_ban,
            ban_reason: k.ban_reason.clone(),
            ban_until: k.ban_until,
            access_token: k.access_token.clone(),
            refresh_token: k.refresh_token.clone(),
            expires_at: k.expires_at,
            account_id: k.account_id.clone(),
            project_id: k.project_id.clone(),
            models: k.models.clone(),
            revision: k.revision,
        }
    }
}

fn json_map(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

fn group_from_row(row: &AnyRow) -> StoreResult<ProviderGroup> {
    let models: String = row.try_get("models")?;
    let headers: String = row.try_get("static_headers")?;
    Ok(ProviderGroup {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        provider_type: row.try_get("type")?,
        base_url: row.try_get("base_url")?,
        google_project: row.try_get("google_project")?,
        google_location: row.try_get("google_location")?,
        models: parse_list("provider_groups.models", &models)?,
        status: row.try_get("status")?,
        static_headers: serde_json::from_str(&headers)
            .map_err(|e| StoreError::Corrupt(format!("provider_groups.static_headers: {e}")))?,
        headers_profile: row.try_get("headers_profile")?,
        route_group: row.try_get("route_group")?,
        health_check: row.try_get("health_check")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> StoreResult<ApiKey> {
    let models: String = row.try_get("models")?;
    let secret = |column: &str| -> StoreResult<SecretToken> {
        Ok(SecretToken::from_plaintext(row.try_get::<String, _>(column)?))
    };
    Ok(ApiKey {
        id: row.try_get("id")?,
        group_id: row.try_get("group_id")?,
        api_key: secret("api_key")?,
        weight: row.try_get("weight")?,
        status: row.try_get("status")?,
        auto_ban: row.try_get::<i64, _>("auto_ban")? != 0,
        ban_reason: row.try_get("ban_reason")?,
        ban_until: row.try_get("ban_until")?,
        access_token: secret("access_token")?,
        refresh_token: secret("refresh_token")?,
        expires_at: row.try_get("expires_at")?,
        account_id: row.try_get("account_id")?,
        project_id: row.try_get("project_id")?,
        models: parse_list("api_keys.models", &models)?,
        revision: row.try_get("revision")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        cooling_until: row.try_get("cooling_until")?,
        health: health_from_row(row)?,
    })
}

impl Store {
    pub async fn create_group(&self, w: &GroupWrite) -> StoreResult<ProviderGroup> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        insert_group(&mut conn, w).await
    }

    pub async fn update_group(&self, id: i64, w: &GroupWrite) -> StoreResult<ProviderGroup> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        write_group(&mut conn, id, w).await
    }

    pub async fn get_group(&self, id: i64) -> StoreResult<ProviderGroup> {
        let row = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM provider_groups WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound("provider group"))?;
        group_from_row(&row)
    }

    pub async fn list_groups(&self, page: PageRequest) -> StoreResult<(Vec<ProviderGroup>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM provider_groups ORDER BY id LIMIT $1 OFFSET $2"
        ))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let total = count(
            &sqlx::query("SELECT COUNT(*) FROM provider_groups")
                .fetch_one(&self.pool)
                .await?,
        )?;
        Ok((
            rows.iter().map(group_from_row).collect::<StoreResult<_>>()?,
            total,
        ))
    }

    pub async fn all_groups(&self) -> StoreResult<Vec<ProviderGroup>> {
        let rows = sqlx::query(&format!(
            "SELECT {GROUP_COLUMNS} FROM provider_groups ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(group_from_row).collect()
    }

    /// Deletes a group and its credentials; refused while a binding uses it. Returns the
    /// ids of the deleted credentials.
    pub async fn delete_group(&self, id: i64) -> StoreResult<Vec<i64>> {
        let _permit = self.write_permit().await;
        let mut tx = self.begin_write().await?;
        let result = async {
            let bindings = count(
                &sqlx::query("SELECT COUNT(*) FROM bindings WHERE group_id = $1")
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?,
            )?;
            if bindings > 0 {
                return Err(StoreError::Conflict(format!(
                    "provider group {id} is used by {bindings} binding(s); delete or move them first"
                )));
            }
            let rows = sqlx::query("SELECT id FROM api_keys WHERE group_id = $1")
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
            let key_ids: Vec<i64> = rows.iter().map(|r| r.try_get(0)).collect::<Result<_, _>>()?;
            sqlx::query("DELETE FROM api_keys WHERE group_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM provider_groups WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Err(StoreError::NotFound("provider group"));
            }
            Ok(key_ids)
        }
        .await;
        self.finish(tx, result).await
    }

    pub async fn create_api_key(&self, w: &ApiKeyWrite) -> StoreResult<ApiKey> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        insert_api_key(&mut conn, w).await
    }

    pub async fn update_api_key(&self, id: i64, w: &ApiKeyWrite) -> StoreResult<ApiKey> {
        let _permit = self.write_permit().await;
        let mut conn = self.pool.acquire().await?;
        write_api_key(&mut conn, id, w).await
    }

    pub async fn get_api_key(&self, id: i64) -> StoreResult<ApiKey> {
        let row = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound("api key"))?;
        key_from_row(&row)
    }

    /// Credentials, optionally of one group and/or one status.
    pub async fn list_api_keys(
        &self,
        group_id: Option<i64>,
        status: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<(Vec<ApiKey>, i64)> {
        let mut conditions = Vec::new();
        if group_id.is_some() {
            conditions.push(format!("group_id = ${}", conditions.len() + 1));
        }
        if status.is_some() {
            conditions.push(format!("status = ${}", conditions.len() + 1));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conditions.join(" AND "))
        };
        let n = conditions.len();
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys{filter} ORDER BY id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let count_sql = format!("SELECT COUNT(*) FROM api_keys{filter}");
        let mut query = sqlx::query(&sql);
        let mut count_query = sqlx::query(&count_sql);
        if let Some(group_id) = group_id {
            query = query.bind(group_id);
            count_query = count_query.bind(group_id);
        }
        if let Some(status) = status {
            query = query.bind(status.to_owned());
            count_query = count_query.bind(status.to_owned());
        }
        let rows = query
            .bind(page.page_size)
            .bind(page.offset())
            .fetch_all(&self.pool)
            .await?;
        let total = count(&count_query.fetch_one(&self.pool).await?)?;
        Ok((rows.iter().map(key_from_row).collect::<StoreResult<_>>()?, total))
    }

    pub async fn api_keys_of_group(&self, group_id: i64) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE group_id = $1 ORDER BY id"
        ))
        .bind(group_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn all_api_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    pub async fn delete_api_key(&self, id: i64) -> StoreResult<()> {
        let _permit = self.write_permit().await;
        let deleted = sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound("api key"));
        }
        Ok(())
    }
}

pub(super) async fn insert_group(conn: &mut AnyConnection, w: &GroupWrite) -> StoreResult<ProviderGroup> {
    let row = sqlx::query(&format!(
        "INSERT INTO provider_groups (name, type, base_url, google_project, google_location, models, \
         status, static_headers, headers_profile, route_group, health_check, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING {GROUP_COLUMNS}"
    ))
    .bind(&w.name)
    .bind(&w.provider_type)
    .bind(&w.base_url)
    .bind(&w.google_project)
    .bind(&w.google_location)
    .bind(json_list(&w.models))
    .bind(&w.status)
    .bind(json_map(&w.static_headers))
    .bind(&w.headers_profile)
    .bind(&w.route_group)
    .bind(&w.health_check)
    .bind(now_unix())
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &format!("provider group {:?}", w.name)))?;
    group_from_row(&row)
}

pub(super) async fn write_group(
    conn: &mut AnyConnection,
    id: i64,
    w: &GroupWrite,
) -> StoreResult<ProviderGroup> {
    let row = sqlx::query(&format!(
        "UPDATE provider_groups SET name = $2, type = $3, base_url = $4, google_project = $5, \
         google_location = $6, models = $7, status = $8, static_headers = $9, headers_profile = $10, \
         route_group = $11, health_check = $12, updated_at = $13 WHERE id = $1 RETURNING {GROUP_COLUMNS}"
    ))
    .bind(id)
    .bind(&w.name)
    .bind(&w.provider_type)
    .bind(&w.base_url)
    .bind(&w.google_project)
    .bind(&w.google_location)
    .bind(json_list(&w.models))
    .bind(&w.status)
    .bind(json_map(&w.static_headers))
    .bind(&w.headers_profile)
    .bind(&w.route_group)
    .bind(&w.health_check)
    .bind(now_unix())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| StoreError::or_conflict(e, &format!("provider group {:?}", w.name)))?
    .ok_or(StoreError::NotFound("provider group"))?;
    group_from_row(&row)
}

pub(super) async fn insert_api_key(conn: &mut AnyConnection, w: &ApiKeyWrite) -> StoreResult<ApiKey> {
    let row = sqlx::query(&format!(
        "INSERT INTO api_keys (group_id, api_key, weight, status, auto_ban, ban_reason, ban_until, \
         access_token, refresh_token, expires_at, account_id, project_id, models, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING {KEY_COLUMNS}"
    ))
    .bind(w.group_id)
    .bind(w.api_key.expose())
    .bind(w.weight)
    .bind(&w.status)
    .bind(i64::from(w.auto_ban))
    .bind(&w.ban_reason)
    .bind(w.ban_until)
    .bind(w.access_token.expose())
    .bind(w.refresh_token.expose())
    .bind(w.expires_at)
    .bind(&w.account_id)
    .bind(&w.project_id)
    .bind(json_list(&w.models))
    .bind(now_unix())
    .fetch_one(&mut *conn)
    .await?;
    key_from_row(&row)
}

pub(super) async fn write_api_key(conn: &mut AnyConnection, id: i64, w: &ApiKeyWrite) -> StoreResult<ApiKey> {
    let row = sqlx::query(&format!(
        "UPDATE api_keys SET revision = revision + 1, group_id = $2, api_key = $3, weight = $4, status = $5, auto_ban = $6, \
         ban_reason = $7, ban_until = $8, access_token = $9, refresh_token = $10, expires_at = $11, \
         account_id = $12, project_id = $13, models = $14, updated_at = $15 \
         WHERE id = $1 AND revision = $16 RETURNING {KEY_COLUMNS}"
    ))
    .bind(id)
    .bind(w.group_id)
    .bind(w.api_key.expose())
    .bind(w.weight)
    .bind(&w.status)
    .bind(i64::from(w.auto_ban))
    .bind(&w.ban_reason)
    .bind(w.ban_until)
    .bind(w.access_token.expose())
    .bind(w.refresh_token.expose())
    .bind(w.expires_at)
    .bind(&w.account_id)
    .bind(&w.project_id)
    .bind(json_list(&w.models))
    .bind(now_unix())
    .bind(w.revision)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => key_from_row(&row),
        None => {
            sqlx::query("SELECT id FROM api_keys WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
                .ok_or(StoreError::NotFound("api key"))?;
            Err(StoreError::Conflict(format!(
                "api key {id} changed meanwhile; read it again and retry"
            )))
        }
    }
}
