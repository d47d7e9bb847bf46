//! Namespaces: creation, renaming and deletion, with the rules that need the database
//! (a namespace in use cannot be renamed or deleted). Field rules are
//! [`NamespaceSpec`]'s, shared with configuration import.

use crate::spec::{NamespaceSpec, SpecError};
use crate::state::AppState;
use crate::store::{Namespace, NamespaceStatus, StoreError};

/// Why a namespace change is refused; `crate::error` maps each to HTTP.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error(transparent)]
    Invalid(#[from] SpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "cannot {action} namespace {name:?}: used by {masters} master(s), {keys} key(s) and {bindings} binding(s)"
    )]
    InUse {
        action: &'static str,
        name: String,
        masters: i64,
        keys: i64,
        bindings: i64,
    },
}

pub type NamespaceResult<T> = Result<T, NamespaceError>;

/// Refuses to `action` (rename, delete) a namespace that masters, keys that can still
/// authenticate, or bindings name.
async fn ensure_unused(state: &AppState, name: &str, action: &'static str) -> NamespaceResult<()> {
    let (masters, keys) = state.store.namespace_usage(name).await?;
    let bindings = state.store.bindings_in_namespace(name).await?;
    if masters + keys + bindings > 0 {
        return Err(NamespaceError::InUse {
            action,
            name: name.to_owned(),
            masters,
            keys,
            bindings,
        });
    }
    Ok(())
}

pub async fn create_namespace(
    state: &AppState,
    name: &str,
    description: &str,
    status: Option<NamespaceStatus>,
) -> NamespaceResult<Namespace> {
    let spec = NamespaceSpec::new(name, description, status.unwrap_or(NamespaceStatus::Active))?;
    Ok(state
        .store
        .create_namespace(&spec.name, &spec.description, spec.status)
        .await?)
}

/// Changes a namespace; absent values keep theirs.
pub async fn update_namespace(
    state: &AppState,
    id: i64,
    name: Option<&str>,
    description: Option<&str>,
    status: Option<NamespaceStatus>,
) -> NamespaceResult<Namespace> {
    let current = state.store.get_namespace(id).await?;
    let spec = NamespaceSpec::new(
        name.unwrap_or(&current.name),
        description.unwrap_or(&current.description),
        status.unwrap_or(current.status),
    )?;
    if spec.name != current.name {
        ensure_unused(state, &current.name, "rename").await?;
    }
    Ok(state
        .store
        .update_namespace(id, &spec.name, &spec.description, spec.status)
        .await?)
}

pub async fn delete_namespace(state: &AppState, id: i64) -> NamespaceResult<()> {
    let current = state.store.get_namespace(id).await?;
    ensure_unused(state, &current.name, "delete").await?;
    state.store.delete_namespace(id).await?;
    Ok(())
}
