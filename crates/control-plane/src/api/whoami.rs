use axum::Json;
use axum::extract::State;
use axum::http::request::Parts;
use ez_contract::snapshot::{MasterSnapshot, TokenSnapshot};
use ez_contract::time::now_unix;
use ez_contract::{KeyRejection, bus_keys, validate_key};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{AnyCredential, Credential};
use crate::client_ip::{client_ip, peer_ip};
use crate::error::{ApiResult, ErrorEnvelope};
use crate::state::AppState;
use crate::store::{Key, Master};
use crate::sync::{master_snapshot, token_snapshot};

#[derive(Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WhoAmI {
    Admin,
    Master(Master),
    Key(Key),
}

/// What the presented credential is. Child keys are validated exactly as the balancer
/// validates them: from the bus snapshot first, with the shared validation function;
/// an invalid key is a 401 whose `error.code` names the reason.
#[utoipa::path(get, path = "/v1/whoami", tag = "public", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorEnvelope)))]
pub async fn whoami(
    AnyCredential(credential): AnyCredential,
    State(state): State<AppState>,
    parts: Parts,
) -> ApiResult<Json<WhoAmI>> {
    let token = match credential {
        Credential::Admin => return Ok(Json(WhoAmI::Admin)),
        Credential::Master(master) => return Ok(Json(WhoAmI::Master(master))),
        Credential::ChildKey(token) => token,
    };
    let digest = token.digest();
    let ip = client_ip(peer_ip(&parts), &parts.headers, &state.trusted_proxies);
    let now = now_unix();
    match from_bus(&state, &digest).await {
        Some((key, master)) => validate_key(Some(&key), master.as_ref(), ip, now)?,
        None => {
            let (key, master) = from_database(&state, &digest).await?;
            validate_key(key.as_ref(), master.as_ref(), ip, now)?;
        }
    }
    let key = state
        .store
        .find_key_by_digest(&digest)
        .await?
        .ok_or(KeyRejection::NotFound)?;
    Ok(Json(WhoAmI::Key(key)))
}

/// The key's snapshot as the balancer would see it; `None` when the bus has no entry or
/// cannot be read (then the database decides).
async fn from_bus(state: &AppState, digest: &str) -> Option<(TokenSnapshot, Option<MasterSnapshot>)> {
    let fields = match state.bus.hash_get_all(&bus_keys::token(digest)).await {
        Ok(fields) if !fields.is_empty() => fields,
        Ok(_) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "whoami: bus unreadable, validating from the database");
            return None;
        }
    };
    let token = TokenSnapshot::from_fields(&fields)
        .inspect_err(|e| tracing::warn!(error = %e, "whoami: malformed token snapshot on the bus"))
        .ok()?;
    let master_fields = state
        .bus
        .hash_get_all(&bus_keys::master(token.master_id))
        .await
        .ok()?;
    let master = if master_fields.is_empty() {
        None
    } else {
        Some(MasterSnapshot::from_fields(&master_fields).ok()?)
    };
    Some((token, master))
}

async fn from_database(
    state: &AppState,
    digest: &str,
) -> ApiResult<(Option<TokenSnapshot>, Option<MasterSnapshot>)> {
    let Some(key) = state.store.find_key_by_digest(digest).await? else {
        return Ok((None, None));
    };
    let master = state.store.get_master(key.master_id).await?;
    Ok((
        Some(token_snapshot(&key, &master, 0, 0)),
        Some(master_snapshot(&master, 0, 0)),
    ))
}
