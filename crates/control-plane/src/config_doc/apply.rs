//! Writing a planned import: every write in one database transaction, so a failure at
//! any entity leaves the database as it was; the bus follows after the commit.

use std::collections::HashMap;

use super::import::{KeyStep, MasterStep, Plan, Step};
use super::{ImportAction, ImportError};
use crate::spec::{BindingSpec, CredentialSpec, GroupSpec};
use crate::state::AppState;
use crate::store::{ImportTx, KeyImport, StoreError, StoreResult};
use crate::sync::SyncTarget;

/// What an import wrote, for the bus.
#[derive(Debug, Default)]
struct Touched {
    masters: Vec<i64>,
    groups: Vec<i64>,
    routes: Vec<(String, String)>,
    models: bool,
}

impl Touched {
    /// The bus entries to rewrite: a master with its keys, a group with its credentials
    /// and routes, a route with its model entry, every model entry.
    fn targets(mut self) -> Vec<SyncTarget> {
        self.masters.sort_unstable();
        self.masters.dedup();
        self.groups.sort_unstable();
        self.groups.dedup();
        self.routes.sort();
        self.routes.dedup();
        let mut targets: Vec<SyncTarget> = self.masters.into_iter().map(SyncTarget::Master).collect();
        targets.extend(self.groups.into_iter().map(SyncTarget::Group));
        targets.extend(
            self.routes
                .into_iter()
                .map(|(ns, model)| SyncTarget::Route(ns, model)),
        );
        if self.models {
            targets.push(SyncTarget::Models);
        }
        targets
    }
}

/// Writes `plan` in one transaction, then brings the bus up to date.
pub(super) async fn apply(state: &AppState, plan: Plan) -> Result<(), ImportError> {
    let mut tx = state.store.begin_import().await?;
    let touched = match write(&mut tx, plan).await {
        Ok(touched) => {
            tx.commit().await?;
            touched
        }
        Err(e) => {
            tx.rollback().await;
            return Err(e.into());
        }
    };
    sync_bus(state, touched).await;
    Ok(())
}

/// The bus after a committed import: one full rebuild (cheaper than a write per entity);
/// when the bus refuses it, every touched entry waits in the sync outbox, as after any
/// failed bus write, and is retried from the database.
async fn sync_bus(state: &AppState, touched: Touched) {
    let Err(e) = state.sync.full_sync().await else {
        return;
    };
    metrics::counter!(crate::metrics::BUS_SYNC_FAILURES).increment(1);
    tracing::warn!(error = %e, "bus sync after import failed; the changes wait in the sync outbox");
    for target in touched.targets() {
        let recorded = state
            .store
            .record_outbox(target.resource(), &target.resource_id(), "upsert", &e.to_string())
            .await;
        if let Err(store_error) = recorded {
            // Both the bus and the database refused: only a full sync can repair this.
            tracing::error!(error = %store_error, "could not record the failed bus write in the outbox");
        }
    }
}

/// The id of the group or master named `name`.
fn id_of(ids: &HashMap<String, i64>, name: &str, what: &'static str) -> StoreResult<i64> {
    ids.get(name).copied().ok_or(StoreError::NotFound(what))
}

async fn write(tx: &mut ImportTx, plan: Plan) -> StoreResult<Touched> {
    let mut touched = Touched::default();
    let Plan {
        namespaces,
        groups,
        credentials,
        bindings,
        models,
        masters,
        keys,
        group_ids,
        master_ids,
    } = plan;
    for step in namespaces {
        let ns = step.item;
        match (step.action, step.id) {
            (ImportAction::Create, _) => {
                drop(tx.create_namespace(&ns.name, &ns.description, ns.status).await?)
            }
            (ImportAction::Update, Some(id)) => {
                drop(
                    tx.update_namespace(id, &ns.name, &ns.description, ns.status)
                        .await?,
                );
            }
            _ => {}
        }
    }
    let group_ids = write_groups(tx, groups, group_ids, &mut touched).await?;
    write_credentials(tx, credentials, &group_ids, &mut touched).await?;
    write_bindings(tx, bindings, &group_ids, &mut touched).await?;
    for step in models {
        if step.action != ImportAction::Skip {
            let (name, value) = step.item;
            tx.put_model_override(&name, &value).await?;
            touched.models = true;
        }
    }
    let master_ids = write_masters(tx, masters, master_ids, &mut touched).await?;
    write_keys(tx, keys, &master_ids, &mut touched).await?;
    Ok(touched)
}

/// Writes the groups; returns the id of every group by name.
async fn write_groups(
    tx: &mut ImportTx,
    steps: Vec<Step<GroupSpec>>,
    mut ids: HashMap<String, i64>,
    touched: &mut Touched,
) -> StoreResult<HashMap<String, i64>> {
    for step in steps {
        let id = match (step.action, step.id) {
            (ImportAction::Create, _) => tx.create_group(&step.item).await?.id,
            (ImportAction::Update, Some(id)) => tx.update_group(id, &step.item).await?.id,
            _ => continue,
        };
        ids.insert(step.item.name.clone(), id);
        touched.groups.push(id);
    }
    Ok(ids)
}

async fn write_credentials(
    tx: &mut ImportTx,
    steps: Vec<Step<(String, CredentialSpec)>>,
    group_ids: &HashMap<String, i64>,
    touched: &mut Touched,
) -> StoreResult<()> {
    for step in steps {
        let (group, spec) = step.item;
        let group_id = id_of(group_ids, &group, "provider group")?;
        let spec = spec.in_group(group_id);
        match (step.action, step.id) {
            (ImportAction::Create, _) => drop(tx.create_api_key(&spec).await?),
            (ImportAction::Update, Some(id)) => drop(tx.update_api_key(id, &spec).await?),
            _ => continue,
        }
        touched.groups.push(group_id);
    }
    Ok(())
}

async fn write_bindings(
    tx: &mut ImportTx,
    steps: Vec<Step<(String, BindingSpec)>>,
    group_ids: &HashMap<String, i64>,
    touched: &mut Touched,
) -> StoreResult<()> {
    for step in steps {
        let (group, spec) = step.item;
        let spec = spec.in_group(id_of(group_ids, &group, "provider group")?);
        match (step.action, step.id) {
            (ImportAction::Create, _) => drop(tx.create_binding(&spec).await?),
            (ImportAction::Update, Some(id)) => drop(tx.update_binding(id, &spec).await?),
            _ => continue,
        }
        touched
            .routes
            .push((spec.namespace.clone(), spec.public_model.clone()));
    }
    Ok(())
}

/// Writes the masters; returns the id of every master by name.
async fn write_masters(
    tx: &mut ImportTx,
    steps: Vec<Step<MasterStep>>,
    mut ids: HashMap<String, i64>,
    touched: &mut Touched,
) -> StoreResult<HashMap<String, i64>> {
    for step in steps {
        let MasterStep { spec, record } = step.item;
        let id = match (step.action, step.id) {
            (ImportAction::Create, _) => tx.create_master(&record).await?.id,
            (ImportAction::Update, Some(id)) => {
                tx.update_master(
                    id,
                    &spec,
                    record.epoch,
                    &record.token_digest,
                    &record.token_prefix,
                )
                .await?
                .id
            }
            _ => continue,
        };
        ids.insert(spec.name.clone(), id);
        touched.masters.push(id);
    }
    Ok(ids)
}

async fn write_keys(
    tx: &mut ImportTx,
    steps: Vec<Step<KeyStep>>,
    master_ids: &HashMap<String, i64>,
    touched: &mut Touched,
) -> StoreResult<()> {
    for step in steps {
        let key = step.item;
        let master_id = id_of(master_ids, &key.master, "master")?;
        match (step.action, step.id) {
            (ImportAction::Create, _) => {
                let record = KeyImport {
                    master_id,
                    ..key.record
                };
                drop(tx.create_key(&record).await?);
            }
            // A revoked key stays revoked (the store would refuse to revive it anyway).
            (ImportAction::Update, Some(id)) if !key.revoked_here => {
                drop(tx.update_key(id, &key.spec).await?)
            }
            _ => continue,
        }
        touched.masters.push(master_id);
    }
    Ok(())
}
