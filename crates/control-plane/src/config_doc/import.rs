//! The import: every entity of the document built into the spec the API builds for it,
//! checked against the rest of the document and the database, and planned; then written
//! in one transaction ([`super::apply`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;

use ez_contract::SecretToken;
use ez_contract::provider::ProviderType;
use ez_contract::snapshot::KeyStatus;

use super::apply;
use super::{
    ApiKeyDoc, BindingDoc, ConfigDocument, ConflictPolicy, FORMAT, GroupDoc, ImportAction, ImportChange,
    ImportError, ImportReport, KeyDoc, MasterDoc, ModelDoc, NamespaceDoc, VERSION, fingerprint,
};
use crate::models::ModelOverride;
use crate::spec::{BindingSpec, CredentialSpec, GroupSpec, KeySpec, MasterSpec, NamespaceSpec, StoredToken};
use crate::state::AppState;
use crate::store::{
    ApiKey, ApiKeyWrite, Binding, BindingWrite, GroupWrite, Key, KeyImport, KeyWrite, Master, MasterImport,
    MasterWrite, Namespace, PageRequest, ProviderGroup, Store, StoreResult,
};
use crate::validation;

/// Imports `doc`; with `dry_run`, only reports what would change.
pub async fn import(
    state: &AppState,
    doc: ConfigDocument,
    policy: ConflictPolicy,
    dry_run: bool,
) -> Result<ImportReport, ImportError> {
    if doc.format != FORMAT || doc.version != VERSION {
        return Err(ImportError::UnsupportedFormat);
    }
    let existing = Existing::load(&state.store).await?;
    let (plan, changes) = Checker::new(&existing, policy).check(&doc)?;
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for c in &changes {
        *counts
            .entry(c.kind.to_owned())
            .or_default()
            .entry(c.action.as_str().to_owned())
            .or_default() += 1;
    }
    let report = ImportReport {
        dry_run,
        policy,
        counts,
        changes,
    };
    if !dry_run {
        apply::apply(state, plan).await?;
    }
    Ok(report)
}

/// What the database holds already, by natural key.
struct Existing {
    namespaces: HashMap<String, Namespace>,
    groups: HashMap<String, ProviderGroup>,
    /// By (group name, fingerprint).
    credentials: HashMap<(String, String), ApiKey>,
    /// By (namespace, public model, group name).
    bindings: HashMap<(String, String, String), Binding>,
    models: HashMap<String, ModelOverride>,
    masters: HashMap<String, Master>,
    /// By (master name, key name).
    keys: HashMap<(String, String), Key>,
}

impl Existing {
    async fn load(store: &Store) -> StoreResult<Existing> {
        let (namespaces, _) = store
            .list_namespaces(PageRequest {
                page: 1,
                page_size: 100_000,
            })
            .await?;
        let groups: HashMap<String, ProviderGroup> = store
            .all_groups()
            .await?
            .into_iter()
            .map(|g| (g.name.clone(), g))
            .collect();
        let group_name: HashMap<i64, String> = groups.values().map(|g| (g.id, g.name.clone())).collect();
        let credentials = store
            .all_api_keys()
            .await?
            .into_iter()
            .filter_map(|k| Some(((group_name.get(&k.group_id)?.clone(), fingerprint(&k)), k)))
            .collect();
        let bindings = store
            .all_bindings()
            .await?
            .into_iter()
            .filter_map(|b| {
                let group = group_name.get(&b.group_id)?.clone();
                Some(((b.namespace.clone(), b.public_model.clone(), group), b))
            })
            .collect();
        let masters: HashMap<String, Master> = store
            .all_masters()
            .await?
            .into_iter()
            .map(|m| (m.name.clone(), m))
            .collect();
        let master_name: HashMap<i64, String> = masters.values().map(|m| (m.id, m.name.clone())).collect();
        let keys = store
            .all_keys()
            .await?
            .into_iter()
            .filter_map(|k| Some(((master_name.get(&k.master_id)?.clone(), k.name.clone()), k)))
            .collect();
        Ok(Existing {
            namespaces: namespaces.into_iter().map(|n| (n.name.clone(), n)).collect(),
            groups,
            credentials,
            bindings,
            models: store.model_overrides().await?,
            masters,
            keys,
        })
    }
}

/// One entity's planned write.
pub(super) struct Step<T> {
    pub action: ImportAction,
    /// The id of the entity an update overwrites.
    pub id: Option<i64>,
    pub item: T,
}

pub(super) struct MasterStep {
    pub spec: MasterSpec,
    pub record: MasterImport,
}

pub(super) struct KeyStep {
    pub master: String,
    pub spec: KeySpec,
    /// Its `master_id` is set when the master's id is known.
    pub record: KeyImport,
    /// A revoked key stays revoked: an update of it is not written.
    pub revoked_here: bool,
}

/// Every write of an import, in dependency order.
#[derive(Default)]
pub(super) struct Plan {
    pub namespaces: Vec<Step<NamespaceSpec>>,
    pub groups: Vec<Step<GroupSpec>>,
    /// (group name, credential)
    pub credentials: Vec<Step<(String, CredentialSpec)>>,
    /// (group name, binding)
    pub bindings: Vec<Step<(String, BindingSpec)>>,
    pub models: Vec<Step<(String, ModelOverride)>>,
    pub masters: Vec<Step<MasterStep>>,
    pub keys: Vec<Step<KeyStep>>,
    /// Ids of the groups and masters there are before the import, by name.
    pub group_ids: HashMap<String, i64>,
    pub master_ids: HashMap<String, i64>,
}

/// Namespaces a master's keys may use after the import, and its epoch.
struct MasterScope {
    namespaces: Vec<String>,
    epoch: i64,
}

/// Checks a document entity by entity, collecting every problem instead of stopping at
/// the first, and plans the valid ones.
struct Checker<'a> {
    existing: &'a Existing,
    policy: ConflictPolicy,
    problems: Vec<String>,
    seen: HashSet<(&'static str, String)>,
    changes: Vec<ImportChange>,
    /// Namespaces there will be: the document's and the database's.
    namespace_names: HashSet<String>,
    group_kinds: HashMap<String, ProviderType>,
    masters: HashMap<String, MasterScope>,
    /// Which master holds a key digest, and which key (`master/name`) a key digest.
    master_digests: HashMap<String, String>,
    key_digests: HashMap<String, String>,
}

impl<'a> Checker<'a> {
    fn new(existing: &'a Existing, policy: ConflictPolicy) -> Checker<'a> {
        Checker {
            existing,
            policy,
            problems: Vec::new(),
            seen: HashSet::new(),
            changes: Vec::new(),
            namespace_names: existing.namespaces.keys().cloned().collect(),
            group_kinds: existing
                .groups
                .values()
                .filter_map(|g| Some((g.name.clone(), g.provider_type.parse().ok()?)))
                .collect(),
            masters: existing
                .masters
                .values()
                .map(|m| {
                    let scope = MasterScope {
                        namespaces: m.namespaces.clone(),
                        epoch: m.epoch,
                    };
                    (m.name.clone(), scope)
                })
                .collect(),
            master_digests: existing
                .masters
                .values()
                .map(|m| (m.token_digest.clone(), m.name.clone()))
                .collect(),
            key_digests: existing
                .keys
                .iter()
                .map(|((m, n), k)| (k.token_digest.clone(), format!("{m}/{n}")))
                .collect(),
        }
    }

    fn check(mut self, doc: &ConfigDocument) -> Result<(Plan, Vec<ImportChange>), ImportError> {
        let mut plan = Plan {
            group_ids: self
                .existing
                .groups
                .values()
                .map(|g| (g.name.clone(), g.id))
                .collect(),
            master_ids: self
                .existing
                .masters
                .values()
                .map(|m| (m.name.clone(), m.id))
                .collect(),
            ..Plan::default()
        };
        for ns in &doc.namespaces {
            if let Some(step) = self.namespace(ns) {
                plan.namespaces.push(step);
            }
        }
        for g in &doc.provider_groups {
            if let Some(step) = self.group(g) {
                plan.groups.push(step);
            }
        }
        for k in &doc.api_keys {
            if let Some(step) = self.credential(k) {
                plan.credentials.push(step);
            }
        }
        for b in &doc.bindings {
            if let Some(step) = self.binding(b) {
                plan.bindings.push(step);
            }
        }
        for m in &doc.models {
            if let Some(step) = self.model(m) {
                plan.models.push(step);
            }
        }
        for m in &doc.masters {
            if let Some(step) = self.master(m) {
                plan.masters.push(step);
            }
        }
        for k in &doc.keys {
            if let Some(step) = self.key(k) {
                plan.keys.push(step);
            }
        }
        if self.problems.is_empty() {
            Ok((plan, self.changes))
        } else {
            Err(ImportError::Invalid(self.problems))
        }
    }

    fn problem(&mut self, context: impl Display, problem: impl Display) {
        self.problems.push(format!("{context}: {problem}"));
    }

    /// Records a problem when `kind` `key` came before in the document.
    fn unique(&mut self, kind: &'static str, key: &str) {
        if !self.seen.insert((kind, key.to_owned())) {
            self.problems.push(format!("{kind} {key:?} appears twice"));
        }
    }

    /// Plans `item`: created when new, else skipped or overwritten as the policy says.
    fn step<T>(&mut self, kind: &'static str, key: String, id: Option<i64>, item: T) -> Step<T> {
        let action = match (id, self.policy) {
            (None, _) => ImportAction::Create,
            (Some(_), ConflictPolicy::Skip) => ImportAction::Skip,
            (Some(_), ConflictPolicy::Overwrite) => ImportAction::Update,
        };
        self.changes.push(ImportChange { kind, key, action });
        Step { action, id, item }
    }

    fn namespace(&mut self, ns: &NamespaceDoc) -> Option<Step<NamespaceSpec>> {
        let spec = NamespaceSpec::new(&ns.name, &ns.description, ns.status)
            .map_err(|e| self.problem(format!("namespace {:?}", ns.name), e))
            .ok()?;
        self.unique("namespace", &spec.name);
        self.namespace_names.insert(spec.name.clone());
        let id = self.existing.namespaces.get(&spec.name).map(|n| n.id);
        Some(self.step("namespace", spec.name.clone(), id, spec))
    }

    fn group(&mut self, g: &GroupDoc) -> Option<Step<GroupSpec>> {
        let context = format!("provider group {:?}", g.name);
        let existing = self.existing;
        // Masked header values are restored from the group of that name, if any.
        let current = validation::identifier("name", &g.name)
            .ok()
            .and_then(|name| existing.groups.get(&name));
        let write = GroupWrite {
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
        };
        let id = current.map(|c| c.id);
        let spec = GroupSpec::new(write, current)
            .map_err(|e| self.problem(&context, e))
            .ok()?;
        self.unique("provider group", &spec.name);
        self.group_kinds.insert(spec.name.clone(), spec.kind());
        Some(self.step("provider_group", spec.name.clone(), id, spec))
    }

    /// A reference to a group by name, read by the rule of group names.
    fn group_ref(&mut self, context: &str, name: &str) -> Option<(String, ProviderType)> {
        let found = validation::identifier("group", name)
            .ok()
            .and_then(|name| Some((self.group_kinds.get(&name).copied()?, name)));
        match found {
            Some((kind, name)) => Some((name, kind)),
            None => {
                self.problem(
                    context,
                    format!("provider group {name:?} is neither in the document nor configured"),
                );
                None
            }
        }
    }

    fn credential(&mut self, k: &ApiKeyDoc) -> Option<Step<(String, CredentialSpec)>> {
        let context = format!("api key {}/{}", k.group, k.fingerprint);
        let (group, kind) = self.group_ref(&context, &k.group)?;
        let natural = format!("{group}/{}", k.fingerprint);
        self.unique("api key", &natural);
        let stored = self.existing;
        let existing = stored.credentials.get(&(group.clone(), k.fingerprint.clone()));
        let has_secret = k.api_key.is_some() || k.access_token.is_some() || k.refresh_token.is_some();
        if !has_secret && existing.is_none() {
            self.problem(
                &context,
                "no secret and no such credential here (export with include_secrets)",
            );
            return None;
        }
        // A secret the document leaves out keeps the stored one.
        let secret = |sent: &Option<String>, stored: Option<&SecretToken>| match sent {
            Some(value) => SecretToken::from_plaintext(value.as_str()),
            None => stored.cloned().unwrap_or_else(|| SecretToken::from_plaintext("")),
        };
        let write = ApiKeyWrite {
            group_id: 0,
            api_key: secret(&k.api_key, existing.map(|e| &e.api_key)),
            weight: k.weight,
            status: k.status.clone(),
            auto_ban: k.auto_ban,
            ban_reason: k.ban_reason.clone(),
            ban_until: k.ban_until,
            access_token: secret(&k.access_token, existing.map(|e| &e.access_token)),
            refresh_token: secret(&k.refresh_token, existing.map(|e| &e.refresh_token)),
            expires_at: k.expires_at,
            account_id: k.account_id.clone(),
            project_id: k.project_id.clone(),
            models: k.models.clone(),
            revision: existing.map_or(0, |e| e.revision),
        };
        let id = existing.map(|e| e.id);
        let spec = CredentialSpec::new(write, kind)
            .map_err(|e| self.problem(&context, e))
            .ok()?;
        Some(self.step("api_key", natural, id, (group, spec)))
    }

    fn binding(&mut self, b: &BindingDoc) -> Option<Step<(String, BindingSpec)>> {
        let context = format!("binding {}.{} → {}", b.namespace, b.public_model, b.group);
        let write = BindingWrite {
            namespace: b.namespace.clone(),
            public_model: b.public_model.clone(),
            group_id: 0,
            weight: b.weight,
            selector_type: b.selector_type.clone(),
            selector_value: b.selector_value.clone(),
            status: b.status.clone(),
        };
        let spec = BindingSpec::new(write).map_err(|e| self.problem(&context, e));
        let group = self.group_ref(&context, &b.group);
        let (spec, (group, _)) = (spec.ok()?, group?);
        if !self.namespace_names.contains(&spec.namespace) {
            self.problem(
                &context,
                format!(
                    "namespace {:?} is neither in the document nor configured",
                    spec.namespace
                ),
            );
            return None;
        }
        let natural = format!("{}.{}/{group}", spec.namespace, spec.public_model);
        self.unique("binding", &natural);
        let id = self
            .existing
            .bindings
            .get(&(spec.namespace.clone(), spec.public_model.clone(), group.clone()))
            .map(|e| e.id);
        Some(self.step("binding", natural, id, (group, spec)))
    }

    fn model(&mut self, m: &ModelDoc) -> Option<Step<(String, ModelOverride)>> {
        let context = format!("model {:?}", m.name);
        let name = validation::model_name("name", &m.name)
            .map_err(|e| self.problem(&context, e))
            .ok()?;
        if let Some(problem) = m.override_.problem() {
            self.problem(&context, problem);
            return None;
        }
        self.unique("model", &name);
        // Overrides have no id: an existing one is overwritten by name.
        let id = self.existing.models.contains_key(&name).then_some(0);
        Some(self.step("model", name.clone(), id, (name, m.override_.clone())))
    }

    fn master(&mut self, m: &MasterDoc) -> Option<Step<MasterStep>> {
        let context = format!("master {:?}", m.name);
        let existing = self.existing;
        let current = validation::display_name("name", &m.name)
            .ok()
            .and_then(|name| existing.masters.get(&name));
        let write = MasterWrite {
            name: m.name.clone(),
            group: m.group.clone(),
            status: m.status,
            max_child_keys: m.max_child_keys,
            global_qps: m.global_qps,
            default_namespace: m.default_namespace.clone(),
            namespaces: m.namespaces.clone(),
            revision: current.map_or(0, |c| c.revision),
        };
        let built = MasterSpec::new(write).and_then(|spec| {
            let token = StoredToken::new(&m.token_digest, &m.token_prefix)?;
            let record = spec.import(m.epoch, &token)?;
            Ok(MasterStep { spec, record })
        });
        let step = built.map_err(|e| self.problem(&context, e)).ok()?;
        let name = step.spec.name.clone();
        self.unique("master", &name);
        for ns in &step.spec.namespaces {
            if !self.namespace_names.contains(ns) {
                self.problem(
                    &context,
                    format!("namespace {ns:?} is neither in the document nor configured"),
                );
            }
        }
        let holder = self
            .master_digests
            .insert(step.record.token_digest.clone(), name.clone())
            .filter(|other| *other != name);
        if let Some(other) = holder {
            self.problem(
                &context,
                format!("its key is already the key of master {other:?}"),
            );
        }
        // A master the import skips keeps its own namespaces and epoch; keys are checked
        // against those. An overwritten one never has its epoch lowered.
        let skipped = current.is_some() && self.policy == ConflictPolicy::Skip;
        if !skipped {
            let epoch = current.map_or(step.record.epoch, |c| c.epoch.max(step.record.epoch));
            let scope = MasterScope {
                namespaces: step.spec.namespaces.clone(),
                epoch,
            };
            self.masters.insert(name.clone(), scope);
        }
        let id = current.map(|c| c.id);
        Some(self.step("master", name, id, step))
    }

    fn key(&mut self, k: &KeyDoc) -> Option<Step<KeyStep>> {
        let context = format!("key {}/{}", k.master, k.name);
        let found = validation::display_name("master", &k.master)
            .ok()
            .and_then(|name| {
                let scope = self.masters.get(&name)?;
                // A key that can never authenticate again is a record: its namespaces
                // need not be among its master's.
                let dead = k.status == KeyStatus::Revoked || k.issued_at_epoch < scope.epoch;
                Some((name, (!dead).then(|| scope.namespaces.clone())))
            });
        let Some((master, allowed)) = found else {
            self.problem(
                &context,
                format!("master {:?} is neither in the document nor configured", k.master),
            );
            return None;
        };
        let existing = self.existing;
        let current = validation::display_name("name", &k.name)
            .ok()
            .and_then(|name| existing.keys.get(&(master.clone(), name)));
        let write = KeyWrite {
            name: k.name.clone(),
            status: k.status,
            suspended_by: k.suspended_by,
            default_namespace: k.default_namespace.clone(),
            namespaces: k.namespaces.clone(),
            allow_ips: k.allow_ips.clone(),
            deny_ips: k.deny_ips.clone(),
            expires_at: k.expires_at,
            qps: k.qps,
            revision: current.map_or(0, |c| c.revision),
        };
        let built = KeySpec::new(write, allowed.as_deref()).and_then(|spec| {
            let token = StoredToken::new(&k.token_digest, &k.token_prefix)?;
            let record = spec.import(0, &token, k.issued_at_epoch, k.issued_by)?;
            Ok((spec, record))
        });
        let (spec, record) = built.map_err(|e| self.problem(&context, e)).ok()?;
        let natural = format!("{master}/{}", spec.name);
        self.unique("key", &natural);
        if current.is_some_and(|c| c.token_digest != record.token_digest) {
            self.problem(&context, "a key of that name exists here with another secret");
        }
        let holder = self
            .key_digests
            .insert(record.token_digest.clone(), natural.clone())
            .filter(|other| *other != natural);
        if let Some(other) = holder {
            self.problem(&context, format!("its digest is already the key {other}"));
        }
        let step = KeyStep {
            master,
            spec,
            record,
            revoked_here: current.is_some_and(|c| c.status == KeyStatus::Revoked),
        };
        Some(self.step("key", natural, current.map(|c| c.id), step))
    }
}
