//! The export: the whole configuration as one document.

use std::collections::HashMap;

use ez_contract::SecretToken;

use super::{
    ApiKeyDoc, BindingDoc, ConfigDocument, FORMAT, GroupDoc, KeyDoc, MasterDoc, ModelDoc, NamespaceDoc,
    VERSION, fingerprint,
};
use crate::providers;
use crate::store::{ApiKey, Binding, Key, Master, Namespace, PageRequest, ProviderGroup, Store, StoreResult};

/// The whole configuration, sorted by natural keys so two exports of equal
/// configurations are equal documents.
pub async fn export(store: &Store, include_secrets: bool) -> StoreResult<ConfigDocument> {
    let groups = store.all_groups().await?;
    let group_names: HashMap<i64, &str> = groups.iter().map(|g| (g.id, g.name.as_str())).collect();
    let masters = store.all_masters().await?;
    let master_names: HashMap<i64, &str> = masters.iter().map(|m| (m.id, m.name.as_str())).collect();
    let mut doc = ConfigDocument {
        format: FORMAT.to_owned(),
        version: VERSION,
        namespaces: all_namespaces(store)
            .await?
            .into_iter()
            .map(namespace_doc)
            .collect(),
        provider_groups: groups.iter().map(|g| group_doc(g, include_secrets)).collect(),
        api_keys: store
            .all_api_keys()
            .await?
            .iter()
            .filter_map(|k| Some(api_key_doc(k, group_names.get(&k.group_id)?, include_secrets)))
            .collect(),
        bindings: store
            .all_bindings()
            .await?
            .into_iter()
            .filter_map(|b| Some(binding_doc(group_names.get(&b.group_id)?, b)))
            .collect(),
        models: store
            .model_overrides()
            .await?
            .into_iter()
            .map(|(name, override_)| ModelDoc { name, override_ })
            .collect(),
        masters: masters.iter().map(master_doc).collect(),
        keys: store
            .all_keys()
            .await?
            .into_iter()
            .filter_map(|k| Some(key_doc(master_names.get(&k.master_id)?, k)))
            .collect(),
    };
    sort(&mut doc);
    Ok(doc)
}

async fn all_namespaces(store: &Store) -> StoreResult<Vec<Namespace>> {
    const PAGE_SIZE: i64 = 500;
    let mut namespaces = Vec::new();
    let mut page = 1;
    loop {
        let (items, total) = store
            .list_namespaces(PageRequest {
                page,
                page_size: PAGE_SIZE,
            })
            .await?;
        let done = items.is_empty() || page * PAGE_SIZE >= total;
        namespaces.extend(items);
        if done {
            return Ok(namespaces);
        }
        page += 1;
    }
}

fn sort(doc: &mut ConfigDocument) {
    doc.namespaces.sort_by(|a, b| a.name.cmp(&b.name));
    doc.provider_groups.sort_by(|a, b| a.name.cmp(&b.name));
    doc.api_keys
        .sort_by(|a, b| (&a.group, &a.fingerprint).cmp(&(&b.group, &b.fingerprint)));
    doc.bindings.sort_by(|a, b| {
        (&a.namespace, &a.public_model, &a.group).cmp(&(&b.namespace, &b.public_model, &b.group))
    });
    doc.models.sort_by(|a, b| a.name.cmp(&b.name));
    doc.masters.sort_by(|a, b| a.name.cmp(&b.name));
    doc.keys
        .sort_by(|a, b| (&a.master, &a.name).cmp(&(&b.master, &b.name)));
}

fn namespace_doc(n: Namespace) -> NamespaceDoc {
    NamespaceDoc {
        name: n.name,
        description: n.description,
        status: n.status,
    }
}

/// Credential header values and credentials in the URL are masked unless secrets are
/// included.
fn group_doc(g: &ProviderGroup, include_secrets: bool) -> GroupDoc {
    GroupDoc {
        name: g.name.clone(),
        provider_type: g.provider_type.clone(),
        base_url: if include_secrets {
            g.base_url.clone()
        } else {
            crate::masking::masked_base_url(&g.base_url)
        },
        google_project: g.google_project.clone(),
        google_location: g.google_location.clone(),
        models: g.models.clone(),
        status: g.status.clone(),
        static_headers: if include_secrets {
            g.static_headers.clone()
        } else {
            providers::masked_headers(&g.static_headers)
        },
        headers_profile: g.headers_profile.clone(),
        route_group: g.route_group.clone(),
        health_check: g.health_check.clone(),
    }
}

/// Secrets are left out unless included; the fingerprint identifies the credential.
fn api_key_doc(k: &ApiKey, group: &str, include_secrets: bool) -> ApiKeyDoc {
    let secret = |s: &SecretToken| (include_secrets && !s.is_empty()).then(|| s.expose().to_owned());
    ApiKeyDoc {
        group: group.to_owned(),
        fingerprint: fingerprint(k),
        api_key: secret(&k.api_key),
        access_token: secret(&k.access_token),
        refresh_token: secret(&k.refresh_token),
        weight: k.weight,
        status: k.status.clone(),
        auto_ban: k.auto_ban,
        ban_reason: k.ban_reason.clone(),
        ban_until: k.ban_until,
        expires_at: k.expires_at,
        account_id: k.account_id.clone(),
        project_id: k.project_id.clone(),
        models: k.models.clone(),
    }
}

fn binding_doc(group: &str, b: Binding) -> BindingDoc {
    BindingDoc {
        group: group.to_owned(),
        namespace: b.namespace,
        public_model: b.public_model,
        weight: b.weight,
        selector_type: b.selector_type,
        selector_value: b.selector_value,
        status: b.status,
    }
}

fn master_doc(m: &Master) -> MasterDoc {
    MasterDoc {
        name: m.name.clone(),
        group: m.group.clone(),
        status: m.status,
        max_child_keys: m.max_child_keys,
        global_qps: m.global_qps,
        epoch: m.epoch,
        default_namespace: m.default_namespace.clone(),
        namespaces: m.namespaces.clone(),
        token_digest: m.token_digest.clone(),
        token_prefix: m.token_prefix.clone(),
    }
}

fn key_doc(master: &str, k: Key) -> KeyDoc {
    KeyDoc {
        master: master.to_owned(),
        name: k.name,
        token_digest: k.token_digest,
        token_prefix: k.token_prefix,
        status: k.status,
        suspended_by: k.suspended_by,
        issued_at_epoch: k.issued_at_epoch,
        issued_by: k.issued_by,
        default_namespace: k.default_namespace,
        namespaces: k.namespaces,
        allow_ips: k.allow_ips,
        deny_ips: k.deny_ips,
        expires_at: k.expires_at,
        qps: k.qps,
    }
}
