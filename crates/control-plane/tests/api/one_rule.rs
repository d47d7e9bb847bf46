//! One rule per field: the same raw values sent through the API and through import have
//! the same outcome (accepted or refused) and, when accepted, are stored the same way.
//! Every entity the import knows is covered; the stored value is read back from the
//! export of each instance.

use ez_contract::time::now_unix;
use ez_control_plane::testing::Backend;
use serde_json::{Map, Value, json};

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    api_and_import_apply_the_same_rules,
    a_restored_key_may_have_expired_but_a_client_cannot_set_a_past_expiry,
);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Namespace,
    Master,
    Key,
    Group,
    Credential,
    Binding,
    Model,
}

impl Kind {
    /// The list of the export document that holds this kind.
    fn list(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Master => "masters",
            Kind::Key => "keys",
            Kind::Group => "provider_groups",
            Kind::Credential => "api_keys",
            Kind::Binding => "bindings",
            Kind::Model => "models",
        }
    }
}

/// A kind, the field whose stored value is compared, and the raw values sent (over a
/// valid base).
type Case = (Kind, &'static str, Value);

fn cases() -> Vec<Case> {
    use Kind::*;
    vec![
        // Namespaces.
        (Namespace, "name", json!({ "name": " ns-lead" })),
        (Namespace, "name", json!({ "name": "ns-trail " })),
        (Namespace, "name", json!({ "name": "ns.dot" })),
        (Namespace, "description", json!({ "description": "  padded  " })),
        (Namespace, "description", json!({ "description": "bell\u{7}" })),
        // Masters.
        (Master, "name", json!({ "name": "  spaced master " })),
        (Master, "name", json!({ "name": "" })),
        (Master, "group", json!({ "group": " gold" })),
        (Master, "group", json!({ "group": "gold.plated" })),
        (Master, "namespaces", json!({ "namespaces": [" default"] })),
        (
            Master,
            "namespaces",
            json!({ "namespaces": ["default", "default", "team-a"] }),
        ),
        (
            Master,
            "namespaces",
            json!({ "namespaces": ["default", "no-such-ns"] }),
        ),
        (
            Master,
            "default_namespace",
            json!({ "default_namespace": " team-a", "namespaces": ["team-a"] }),
        ),
        (
            Master,
            "namespaces",
            json!({ "default_namespace": "team-a", "namespaces": ["default"] }),
        ),
        (Master, "max_child_keys", json!({ "max_child_keys": -1 })),
        // Child keys of master "acme".
        (Key, "name", json!({ "name": " k-lead " })),
        (Key, "name", json!({ "name": "bell\u{7}" })),
        (Key, "namespaces", json!({ "namespaces": [" team-a", "default"] })),
        (Key, "namespaces", json!({ "namespaces": ["default", "default"] })),
        (Key, "namespaces", json!({ "namespaces": ["default", "team-b"] })),
        (
            Key,
            "allow_ips",
            json!({ "allow_ips": ["10.1.2.3", "10.9.9.9/8"] }),
        ),
        (Key, "deny_ips", json!({ "deny_ips": ["300.1.1.1"] })),
        (Key, "expires_at", json!({ "expires_at": 9_999_999_999_999_i64 })),
        (Key, "qps", json!({ "qps": -1 })),
        // Provider groups.
        (Group, "name", json!({ "name": " g-lead" })),
        (Group, "type", json!({ "type": " OpenAI " })),
        (
            Group,
            "models",
            json!({ "models": [" gpt-4o", "gpt-4o", "o4-mini"] }),
        ),
        (
            Group,
            "static_headers",
            json!({ "static_headers": { "Authorization": "****abcd" } }),
        ),
        (
            Group,
            "static_headers",
            json!({ "static_headers": { "X-Trace": "  v " } }),
        ),
        (
            Group,
            "base_url",
            json!({ "type": "compatible", "base_url": " http://vllm:8000/v1/ " }),
        ),
        // Credentials of group "g".
        (Credential, "api_key", json!({ "api_key": " sk-padded-0001 " })),
        (Credential, "api_key", json!({ "api_key": "sk inner space" })),
        (Credential, "weight", json!({ "weight": 0 })),
        (Credential, "status", json!({ "status": " manual_disabled" })),
        // Bindings to group "g".
        (Binding, "namespace", json!({ "namespace": " default" })),
        (
            Binding,
            "public_model",
            json!({ "public_model": " padded-model " }),
        ),
        (Binding, "namespace", json!({ "namespace": "no-such-ns" })),
        (
            Binding,
            "selector_value",
            json!({ "selector_type": "regex", "selector_value": "(" }),
        ),
        // Model overrides.
        (Model, "name", json!({ "name": " model-lead" })),
        (Model, "name", json!({ "name": "two words" })),
    ]
}

/// A valid entity of `kind` for case `i`, as the API takes it and as a document has it.
fn bases(kind: Kind, i: usize, group_id: i64) -> (Value, Value) {
    let name = format!("case-{i}");
    match kind {
        Kind::Namespace => (
            json!({ "name": name }),
            json!({ "name": name, "description": "", "status": "active" }),
        ),
        Kind::Master => {
            let common = json!({
                "name": name, "group": "default", "max_child_keys": 5, "global_qps": 0,
                "default_namespace": "default", "namespaces": ["default"],
            });
            let doc = with(
                &common,
                &json!({ "status": "active", "epoch": 1, "token_digest": format!("{:064x}", i + 1), "token_prefix": "ezm-test" }),
            );
            (common, doc)
        }
        Kind::Key => {
            let common = json!({
                "name": name, "default_namespace": "default", "namespaces": ["default"],
                "allow_ips": [], "deny_ips": [], "expires_at": null, "qps": null,
            });
            let doc = with(
                &common,
                &json!({
                    "master": "acme", "token_digest": format!("{:064x}", 1000 + i), "token_prefix": "sk-ez-test",
                    "status": "active", "issued_at_epoch": 1, "issued_by": "admin",
                }),
            );
            (common, doc)
        }
        Kind::Group => {
            let common = json!({
                "name": name, "type": "openai", "base_url": "", "models": ["gpt-4o"], "status": "active",
                "static_headers": {}, "headers_profile": "", "route_group": "default",
            });
            let doc = with(&common, &json!({ "google_project": "", "google_location": "" }));
            (common, doc)
        }
        Kind::Credential => {
            let common = json!({
                "api_key": format!("sk-case-{i:04}"), "weight": 1, "status": "active", "auto_ban": true,
                "ban_reason": "", "ban_until": null, "expires_at": null, "models": [],
            });
            let api = with(&common, &json!({ "group_id": group_id }));
            let doc = with(
                &common,
                &json!({ "group": "g", "fingerprint": format!("{:016x}", 5000 + i), "account_id": "", "project_id": "" }),
            );
            (api, doc)
        }
        Kind::Binding => {
            let common = json!({
                "namespace": "default", "public_model": name, "weight": 1,
                "selector_type": "exact", "selector_value": "", "status": "active",
            });
            let api = with(&common, &json!({ "group_id": group_id }));
            let doc = with(&common, &json!({ "group": "g" }));
            (api, doc)
        }
        Kind::Model => (
            json!({ "name": name, "context_window": 1000 }),
            json!({ "name": name, "override": { "context_window": 1000 } }),
        ),
    }
}

/// `base` with the fields of `over` replaced.
fn with(base: &Value, over: &Value) -> Value {
    let mut out: Map<String, Value> = base.as_object().cloned().unwrap_or_default();
    for (k, v) in over.as_object().into_iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

fn api_path(kind: Kind, master_id: i64) -> String {
    match kind {
        Kind::Namespace => "/admin/namespaces".into(),
        Kind::Master => "/admin/masters".into(),
        Kind::Key => format!("/admin/masters/{master_id}/keys"),
        Kind::Group => "/admin/provider-groups".into(),
        Kind::Credential => "/admin/api-keys".into(),
        Kind::Binding => "/admin/bindings".into(),
        Kind::Model => "/admin/models".into(),
    }
}

async fn export(app: &TestApp) -> Value {
    app.admin_get("/admin/export?include_secrets=true")
        .await
        .expect(200)
        .body
}

/// The value of `field` in the one entry of `list` that `after` has and `before` lacks.
fn stored(before: &Value, after: &Value, list: &str, field: &str) -> Value {
    let old = before[list].as_array().cloned().unwrap_or_default();
    let new: Vec<&Value> = after[list]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| !old.contains(e))
        .collect();
    assert_eq!(new.len(), 1, "one new {list} entry expected: {new:?}");
    new[0][field].clone()
}

/// Namespaces `team-a`, group `g` with a credential, master `acme`: the same in both.
async fn prepare(app: &TestApp) -> (i64, i64) {
    app.create_namespace("team-a").await;
    let group = app
        .admin_post(
            "/admin/providers/custom",
            json!({ "name": "g", "base_url": "http://upstream.local/v1", "api_keys": ["sk-base-0001"] }),
        )
        .await
        .expect(201);
    let group_id = group.body["group"]["id"].as_i64().unwrap();
    let (master_id, _) = app
        .create_master(json!({ "name": "acme", "max_child_keys": 100, "namespaces": ["default", "team-a"] }))
        .await;
    (group_id, master_id)
}

/// Accepted with the stored value of the field, or refused.
type Outcome = Result<Value, u16>;

async fn api_and_import_apply_the_same_rules(backend: Backend) {
    let api = TestApp::spawn(backend).await;
    let imp = TestApp::spawn(backend).await;
    let (api_group, api_master) = prepare(&api).await;
    prepare(&imp).await;

    let mut disagreements = Vec::new();
    for (i, (kind, field, raw)) in cases().into_iter().enumerate() {
        let (api_base, doc_base) = bases(kind, i, api_group);

        let before = export(&api).await;
        let resp = api
            .admin_post(&api_path(kind, api_master), with(&api_base, &raw))
            .await;
        let through_api: Outcome = match resp.status {
            200 | 201 => Ok(stored(&before, &export(&api).await, kind.list(), field)),
            status => {
                assert!((400..500).contains(&status), "case {i}: {}", resp.text);
                Err(status)
            }
        };

        let before = export(&imp).await;
        let mut doc = json!({ "format": "ezapi-config", "version": 1 });
        doc[kind.list()] = json!([with(&doc_base, &raw)]);
        let resp = imp.admin_post("/admin/import", doc).await;
        let through_import: Outcome = match resp.status {
            200 => Ok(stored(&before, &export(&imp).await, kind.list(), field)),
            status => {
                assert_eq!(status, 422, "case {i}: {}", resp.text);
                Err(status)
            }
        };

        let same = match (&through_api, &through_import) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            disagreements.push(format!(
                "{kind:?} {field} = {raw}: API {through_api:?}, import {through_import:?}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "API and import disagree:\n{}",
        disagreements.join("\n")
    );
}

/// The one intended difference: a backup restores a key that has expired meanwhile (it
/// is refused with `key_expired`), while a client may only set a future expiry.
async fn a_restored_key_may_have_expired_but_a_client_cannot_set_a_past_expiry(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_id) = prepare(&app).await;
    let past = now_unix() - 60;
    app.admin_post(
        &format!("/admin/masters/{master_id}/keys"),
        json!({ "name": "late", "expires_at": past }),
    )
    .await
    .expect_error(422, "expires_in_past");

    let (_, doc_base) = bases(Kind::Key, 1, 0);
    let doc = json!({
        "format": "ezapi-config", "version": 1,
        "keys": [with(&doc_base, &json!({ "name": "restored", "expires_at": past }))],
    });
    app.admin_post("/admin/import", doc).await.expect(200);
    let keys = app
        .admin_get(&format!("/admin/masters/{master_id}/keys"))
        .await
        .expect(200)
        .body;
    let restored = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "restored")
        .cloned()
        .unwrap();
    assert_eq!(restored["expires_at"], past);
}
