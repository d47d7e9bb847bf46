//! Provider groups, credentials, bindings and the model registry through the admin API,
//! and the routing snapshot they produce on the bus.

use std::collections::BTreeMap;

use ez_bus::BusWrite;
use ez_contract::bus_keys;
use ez_contract::routing::checksum;
use ez_contract::time::now_unix;
use ez_control_plane::testing::{Backend, test_bus};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{Resp, TestApp, captured_logs};

both_backends!(
    a_preset_creates_a_group_with_masked_keys,
    provider_group_crud_and_validation,
    deleting_a_group_is_refused_while_bound_and_removes_its_credentials,
    credential_crud_masks_secrets_everywhere,
    credential_rules_weights_bans_and_oauth,
    presets_and_custom_providers,
    binding_crud_and_validation,
    weighted_candidates_of_one_route,
    selector_errors_are_shown_never_guessed,
    unresolved_bindings_say_why_and_how_to_fix_it,
    changes_re_resolve_dependent_bindings_incrementally,
    incremental_updates_match_a_full_sync_and_a_restart,
    golden_routing_entries_and_contract_shapes,
    model_registry_aggregation_and_overrides,
    routing_changes_are_announced,
    concurrent_changes_leave_the_bus_consistent,
);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Each routing hash with the meta hash that describes it.
const ROUTING_HASHES: [(&str, &str); 3] = [
    (bus_keys::PROVIDERS, bus_keys::PROVIDERS_META),
    (bus_keys::BINDINGS, bus_keys::BINDINGS_META),
    (bus_keys::MODELS, bus_keys::MODELS_META),
];

/// A far-future instant in Unix seconds (2100-01-01).
const YEAR_2100: i64 = 4_102_444_800;

async fn bus_hash(app: &TestApp, key: &str) -> BTreeMap<String, String> {
    app.state
        .bus
        .hash_get_all(key)
        .await
        .expect("bus hash")
        .into_iter()
        .collect()
}

async fn bus_entry(app: &TestApp, hash: &str, field: &str) -> Option<Value> {
    app.state
        .bus
        .hash_get(hash, field)
        .await
        .expect("bus field")
        .map(|raw| serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{hash}[{field}] is not JSON: {e}")))
}

async fn provider_entry(app: &TestApp, credential: i64) -> Option<Value> {
    bus_entry(app, bus_keys::PROVIDERS, &credential.to_string()).await
}

async fn binding_entry(app: &TestApp, route: &str) -> Option<Value> {
    bus_entry(app, bus_keys::BINDINGS, route).await
}

async fn model_entry(app: &TestApp, route: &str) -> Option<Value> {
    bus_entry(app, bus_keys::MODELS, route).await
}

#[track_caller]
fn must<T>(value: Option<T>, what: &str) -> T {
    value.unwrap_or_else(|| panic!("{what} is missing"))
}

/// The `upstreams` map of the candidate of `group_id` in a binding entry.
fn upstreams_of(entry: &Value, group_id: i64) -> Value {
    let candidate = entry["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| c["group_id"] == group_id)
        .unwrap_or_else(|| panic!("no candidate of group {group_id} in {entry}"));
    candidate["upstreams"].clone()
}

/// Checks every routing meta against the hash it describes (checksum rule, `version` in
/// nanoseconds, `updated_at` in seconds), that every entry is JSON, and that no bus write
/// is waiting in the outbox. Returns the versions by meta key.
async fn check_metas(app: &TestApp) -> BTreeMap<&'static str, i64> {
    let now = now_unix();
    let mut versions = BTreeMap::new();
    for (hash, meta) in ROUTING_HASHES {
        let entries = bus_hash(app, hash).await;
        for (field, raw) in &entries {
            assert!(
                serde_json::from_str::<Value>(raw).is_ok(),
                "{hash}[{field}] is not JSON: {raw}"
            );
        }
        let meta_fields = bus_hash(app, meta).await;
        let expected = checksum(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        assert_eq!(
            meta_fields.get("checksum"),
            Some(&expected),
            "{meta} checksum does not cover the current {hash} entries: {meta_fields:?}"
        );
        let version: i64 = must(meta_fields.get("version"), "meta version")
            .parse()
            .expect("version is an integer");
        assert!(
            version > 1_000_000_000_000_000_000,
            "{meta} version {version} is not Unix nanoseconds"
        );
        let updated_at: i64 = must(meta_fields.get("updated_at"), "meta updated_at")
            .parse()
            .expect("updated_at is an integer");
        assert!(
            (now - 600..=now + 5).contains(&updated_at),
            "{meta} updated_at {updated_at} is not Unix seconds (now {now})"
        );
        versions.insert(meta, version);
    }
    let outbox = app.admin_get("/admin/sync/outbox").await.expect(200);
    assert_eq!(outbox.body["total"], 0, "a bus write failed: {}", outbox.text);
    versions
}

/// The three routing hashes, parsed, without the `updated_at` / `version` stamps.
async fn routing_state(app: &TestApp) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (hash, _) in ROUTING_HASHES {
        let mut parsed = BTreeMap::new();
        for (field, raw) in bus_hash(app, hash).await {
            let mut value: Value = serde_json::from_str(&raw).expect("entry is JSON");
            if let Some(object) = value.as_object_mut() {
                object.remove("updated_at");
                object.remove("version");
            }
            parsed.insert(field, value);
        }
        out.insert(hash.to_owned(), parsed);
    }
    out
}

async fn create_group(app: &TestApp, body: Value) -> Value {
    app.admin_post("/admin/provider-groups", body)
        .await
        .expect(201)
        .body
}

async fn create_key(app: &TestApp, body: Value) -> Value {
    app.admin_post("/admin/api-keys", body).await.expect(201).body
}

async fn bind(app: &TestApp, body: Value) -> Value {
    app.admin_post("/admin/bindings", body).await.expect(201).body
}

fn id_of(value: &Value) -> i64 {
    value["id"].as_i64().unwrap_or_else(|| panic!("no id in {value}"))
}

/// `****` + the last 4 characters.
fn masked(secret: &str) -> String {
    format!("****{}", &secret[secret.len() - 4..])
}

#[track_caller]
fn assert_hides(resp: &Resp, secrets: &[&str]) {
    for secret in secrets {
        assert!(
            !resp.text.contains(secret),
            "a secret appears in a response ({}): {}",
            resp.status,
            resp.text
        );
    }
}

fn assert_logs_hide(secrets: &[&str]) {
    let logs = captured_logs();
    for secret in secrets {
        assert!(!logs.contains(secret), "the secret {secret:?} reached a log line");
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

async fn a_preset_creates_a_group_with_masked_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let setup = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": "openai", "api_keys": ["sk-live-0123456789abcdef"] }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(setup["group"]["type"], "openai");
    assert_eq!(setup["group"]["base_url"], "https://api.openai.com/v1");
    assert_eq!(setup["api_keys"][0]["api_key"], "****cdef");
    assert!(!setup.to_string().contains("sk-live-0123456789abcdef"));
}

async fn provider_group_crud_and_validation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = now_unix();

    // Type normalised, trailing slash trimmed, header names lower-cased.
    let group = create_group(
        &app,
        json!({
            "name": "main",
            "type": " OpenAI ",
            "base_url": "https://proxy.example.com/v1/",
            "models": ["gpt-4o", "gpt-4o-mini"],
            "static_headers": { "X-Team": "core", "OpenAI-Organization": "org-1" },
            "route_group": "premium",
        }),
    )
    .await;
    let gid = id_of(&group);
    assert_eq!(group["name"], "main");
    assert_eq!(group["type"], "openai");
    assert_eq!(group["base_url"], "https://proxy.example.com/v1");
    assert_eq!(group["models"], json!(["gpt-4o", "gpt-4o-mini"]));
    assert_eq!(
        group["static_headers"],
        json!({ "x-team": "core", "openai-organization": "org-1" })
    );
    assert_eq!(group["status"], "active");
    assert_eq!(group["route_group"], "premium");
    assert_eq!(group["headers_profile"], "");
    assert_eq!(group["google_project"], "");
    assert_eq!(group["google_location"], "");
    for field in ["created_at", "updated_at"] {
        let t = group[field].as_i64().expect(field);
        assert!(
            (before - 5..=now_unix() + 5).contains(&t),
            "{field} {t} is not Unix seconds"
        );
    }

    // The Vertex family: location defaults to global; vertex needs a project.
    let express = create_group(&app, json!({ "name": "ve", "type": "vertex_express" })).await;
    assert_eq!(express["type"], "vertex-express");
    assert_eq!(express["google_location"], "global");
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "vx", "type": "VERTEX" }),
    )
    .await
    .expect_error(422, "google_project_required");
    let vertex = create_group(
        &app,
        json!({ "name": "vx", "type": "VERTEX", "google_project": "proj-1" }),
    )
    .await;
    assert_eq!(
        (
            &vertex["type"],
            &vertex["google_project"],
            &vertex["google_location"]
        ),
        (&json!("vertex"), &json!("proj-1"), &json!("global"))
    );
    let located = create_group(
        &app,
        json!({ "name": "vx-eu", "type": "vertex", "google_project": "p", "google_location": "europe-west4" }),
    )
    .await;
    assert_eq!(located["google_location"], "europe-west4");
    let gemini = create_group(&app, json!({ "name": "gem", "type": "Gemini" })).await;
    assert_eq!(
        gemini["google_location"], "",
        "only the Vertex family defaults a location"
    );

    // Types without an official endpoint need base_url; unknown types are refused.
    for kind in ["compatible", "azure", " Azure "] {
        app.admin_post("/admin/provider-groups", json!({ "name": "nourl", "type": kind }))
            .await
            .expect_error(422, "base_url_required");
    }
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "nourl", "type": "compatible", "base_url": "   " }),
    )
    .await
    .expect_error(422, "base_url_required");
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "bad", "type": "openai-ish" }),
    )
    .await
    .expect_error(422, "unknown_provider_type");
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "bad", "type": "openai", "base_url": "ftp://x" }),
    )
    .await
    .expect_error(400, "invalid_field");
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "bad", "type": "openai", "status": "paused" }),
    )
    .await
    .expect_error(400, "invalid_field");
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "bad", "type": "openai", "headers_profile": "netscape" }),
    )
    .await
    .expect_error(400, "invalid_field");
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "main", "type": "openai" }),
    )
    .await
    .expect_error(409, "conflict");

    // Subscription type with its headers profile.
    let sub = create_group(
        &app,
        json!({ "name": "cc", "type": "Claude_Code", "headers_profile": "claude-code" }),
    )
    .await;
    assert_eq!(sub["type"], "claude-code");
    assert_eq!(sub["headers_profile"], "claude-code");

    // Get and list.
    let got = app
        .admin_get(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect(200)
        .body;
    assert_eq!(got, group);
    let list = app
        .admin_get("/admin/provider-groups?page_size=2")
        .await
        .expect(200)
        .body;
    assert_eq!(list["total"], 6);
    assert_eq!((&list["page"], &list["page_size"]), (&json!(1), &json!(2)));
    assert_eq!(list["items"].as_array().expect("items").len(), 2);
    assert_eq!(list["items"][0], group);
    app.admin_get("/admin/provider-groups/999999")
        .await
        .expect_error(404, "provider_group_not_found");

    // A credential carries the group's settings onto the bus.
    let key = create_key(
        &app,
        json!({ "group_id": gid, "api_key": "sk-group-crud-0123456789WXYZ" }),
    )
    .await;
    let kid = id_of(&key);
    let entry = must(provider_entry(&app, kid).await, "provider entry");
    assert_eq!(entry["type"], "openai");
    assert_eq!(entry["base_url"], "https://proxy.example.com/v1");
    assert_eq!(entry["group"], "premium");
    assert_eq!(entry["group_id"], gid);
    assert_eq!(entry["name"], format!("main#{kid}"));
    assert_eq!(
        entry["static_headers"],
        json!({ "x-team": "core", "openai-organization": "org-1" })
    );
    assert_eq!(entry["models"], json!(["gpt-4o", "gpt-4o-mini"]));

    // Update: partial, validated like a create, and pushed to the bus without a sync.
    let updated = app
        .admin_put(
            &format!("/admin/provider-groups/{gid}"),
            json!({
                "name": "main2",
                "type": "Compatible",
                "base_url": "http://10.0.0.1:8000/v1//",
                "models": ["llama-3"],
                "static_headers": { "X-New": "1" },
                "route_group": "cheap",
            }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(updated["type"], "compatible");
    assert_eq!(updated["base_url"], "http://10.0.0.1:8000/v1");
    assert_eq!(updated["static_headers"], json!({ "x-new": "1" }));
    assert_eq!(updated["created_at"], group["created_at"]);
    let entry = must(provider_entry(&app, kid).await, "provider entry");
    assert_eq!(entry["type"], "compatible");
    assert_eq!(entry["name"], format!("main2#{kid}"));
    assert_eq!(entry["base_url"], "http://10.0.0.1:8000/v1");
    assert_eq!(entry["group"], "cheap");
    assert_eq!(entry["models"], json!(["llama-3"]));
    assert_eq!(entry["static_headers"], json!({ "x-new": "1" }));
    app.admin_put(
        &format!("/admin/provider-groups/{gid}"),
        json!({ "base_url": "" }),
    )
    .await
    .expect_error(422, "base_url_required");
    app.admin_put(
        &format!("/admin/provider-groups/{gid}"),
        json!({ "type": "vertex" }),
    )
    .await
    .expect_error(422, "google_project_required");
    app.admin_put(
        &format!("/admin/provider-groups/{}", id_of(&express)),
        json!({ "name": "main2" }),
    )
    .await
    .expect_error(409, "conflict");
    app.admin_put("/admin/provider-groups/999999", json!({ "models": [] }))
        .await
        .expect_error(404, "provider_group_not_found");
    let unchanged = app
        .admin_get(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect(200)
        .body;
    assert_eq!(unchanged, updated, "a refused update changed the group");

    // Status and headers profile.
    let disabled = app
        .admin_put(
            &format!("/admin/provider-groups/{gid}"),
            json!({ "status": "disabled", "headers_profile": "codex" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(disabled["headers_profile"], "codex");
    let entry = must(provider_entry(&app, kid).await, "provider entry");
    assert_eq!(entry["headers_profile"], "codex");
    assert_ne!(
        entry["status"], "active",
        "a disabled group's credential is routable"
    );
    check_metas(&app).await;

    // Delete (no bindings): the credentials go with it.
    app.admin_delete(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect(204);
    app.admin_get(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect_error(404, "provider_group_not_found");
    app.admin_delete(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect_error(404, "provider_group_not_found");
    assert!(provider_entry(&app, kid).await.is_none());
    app.admin_get(&format!("/admin/api-keys/{kid}"))
        .await
        .expect_error(404, "api_key_not_found");
    check_metas(&app).await;
}

async fn deleting_a_group_is_refused_while_bound_and_removes_its_credentials(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let group = create_group(
        &app,
        json!({ "name": "doomed", "type": "openai", "models": ["gpt-4o"] }),
    )
    .await;
    let gid = id_of(&group);
    let k1 = id_of(
        &create_key(
            &app,
            json!({ "group_id": gid, "api_key": "sk-doomed-1-aaaaaaaa1111" }),
        )
        .await,
    );
    let k2 = id_of(
        &create_key(
            &app,
            json!({ "group_id": gid, "api_key": "sk-doomed-2-bbbbbbbb2222" }),
        )
        .await,
    );
    let binding = bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": gid }),
    )
    .await;
    let providers_before = bus_hash(&app, bus_keys::PROVIDERS).await;

    app.admin_delete(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect_error(409, "group_in_use");
    app.admin_get(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect(200);
    assert_eq!(bus_hash(&app, bus_keys::PROVIDERS).await, providers_before);
    assert!(binding_entry(&app, "default.gpt-4o").await.is_some());

    app.admin_delete(&format!("/admin/bindings/{}", id_of(&binding)))
        .await
        .expect(204);
    app.admin_delete(&format!("/admin/provider-groups/{gid}"))
        .await
        .expect(204);
    for kid in [k1, k2] {
        assert!(
            provider_entry(&app, kid).await.is_none(),
            "credential {kid} of a deleted group is still in config:providers"
        );
        app.admin_get(&format!("/admin/api-keys/{kid}"))
            .await
            .expect_error(404, "api_key_not_found");
    }
    let keys = app
        .admin_get(&format!("/admin/api-keys?group_id={gid}"))
        .await
        .expect(200);
    assert_eq!(keys.body["total"], 0);
    assert!(binding_entry(&app, "default.gpt-4o").await.is_none());
    assert!(model_entry(&app, "default.gpt-4o").await.is_none());
    check_metas(&app).await;
}

async fn credential_crud_masks_secrets_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const FIRST: &str = "sk-crud-first-0123456789abQRST";
    const SECOND: &str = "sk-crud-second-9876543210zyUVWX";
    const REJECTED: &str = "sk-crud-rejected-55555555LMNO";
    const BAD: &str = "sk-crud has-a-space-7777HIJK";
    let secrets = [FIRST, SECOND, REJECTED, BAD];
    let mut seen: Vec<Resp> = Vec::new();

    let g1 = id_of(
        &create_group(
            &app,
            json!({ "name": "g1", "type": "openai", "models": ["gpt-4o"] }),
        )
        .await,
    );
    let g2 = id_of(
        &create_group(
            &app,
            json!({ "name": "g2", "type": "compatible", "base_url": "http://h/v1", "models": ["m"] }),
        )
        .await,
    );

    let created = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": g1, "api_key": FIRST, "weight": 5, "models": ["gpt-4o-mini", " gpt-4o-mini "] }),
        )
        .await
        .expect(201);
    let kid = created.id();
    let body = created.body.clone();
    assert_eq!(body["api_key"], masked(FIRST));
    assert_eq!(body["group_id"], g1);
    assert_eq!(body["weight"], 5);
    assert_eq!(body["status"], "active");
    assert_eq!(body["auto_ban"], true);
    assert_eq!(body["ban_until"], Value::Null);
    assert_eq!(body["models"], json!(["gpt-4o-mini"]));
    seen.push(created);

    // The data plane needs the plaintext: the bus has it, the API never does.
    let entry = must(provider_entry(&app, kid).await, "provider entry");
    assert_eq!(entry["api_key"], FIRST);
    assert_eq!(entry["weight"], 5);
    assert_eq!(
        entry["models"],
        json!(["gpt-4o-mini"]),
        "per-credential models win"
    );
    assert_eq!(entry["status"], "active");
    assert_eq!(entry["auto_ban"], true);

    let got = app.admin_get(&format!("/admin/api-keys/{kid}")).await.expect(200);
    assert_eq!(got.body["api_key"], masked(FIRST));
    assert_eq!(got.body, body);
    seen.push(got);

    let other = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": g2, "api_key": SECOND, "status": "manual_disabled", "auto_ban": false }),
        )
        .await
        .expect(201);
    let other_id = other.id();
    assert_eq!(other.body["status"], "manual_disabled");
    assert_eq!(other.body["auto_ban"], false);
    seen.push(other);
    let third = app
        .admin_post("/admin/api-keys", json!({ "group_id": g2, "api_key": FIRST }))
        .await
        .expect(201);
    let third_id = third.id();
    seen.push(third);

    // Lists: masked, filtered by group and status, paginated.
    let all = app.admin_get("/admin/api-keys").await.expect(200);
    assert_eq!(all.body["total"], 3);
    for item in all.body["items"].as_array().expect("items") {
        let shown = item["api_key"].as_str().expect("api_key");
        assert!(shown.starts_with("****") && shown.len() == 8, "{shown}");
    }
    seen.push(all);
    let by_group = app
        .admin_get(&format!("/admin/api-keys?group_id={g2}"))
        .await
        .expect(200);
    assert_eq!(by_group.body["total"], 2);
    let ids: Vec<i64> = by_group.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(ids, vec![other_id, third_id]);
    seen.push(by_group);
    let by_status = app
        .admin_get("/admin/api-keys?status=manual_disabled")
        .await
        .expect(200);
    assert_eq!(by_status.body["total"], 1);
    assert_eq!(by_status.body["items"][0]["id"], other_id);
    seen.push(by_status);
    let both = app
        .admin_get(&format!("/admin/api-keys?group_id={g2}&status=active"))
        .await
        .expect(200);
    assert_eq!(both.body["total"], 1);
    assert_eq!(both.body["items"][0]["id"], third_id);
    seen.push(both);
    let none = app
        .admin_get(&format!("/admin/api-keys?group_id={g1}&status=auto_disabled"))
        .await
        .expect(200);
    assert_eq!(none.body["total"], 0);
    let paged = app
        .admin_get("/admin/api-keys?page=2&page_size=2")
        .await
        .expect(200);
    assert_eq!(paged.body["total"], 3);
    assert_eq!(paged.body["items"].as_array().expect("items").len(), 1);
    seen.push(paged);
    app.admin_get("/admin/api-keys?status=banned")
        .await
        .expect_error(400, "invalid_query");

    // Update: rotate the secret and the weight.
    let updated = app
        .admin_put(
            &format!("/admin/api-keys/{kid}"),
            json!({ "api_key": SECOND, "weight": 2 }),
        )
        .await
        .expect(200);
    assert_eq!(updated.body["api_key"], masked(SECOND));
    assert_eq!(updated.body["weight"], 2);
    assert_eq!(
        updated.body["models"],
        json!(["gpt-4o-mini"]),
        "absent fields are kept"
    );
    seen.push(updated);
    let entry = must(provider_entry(&app, kid).await, "provider entry");
    assert_eq!(entry["api_key"], SECOND);
    assert_eq!(entry["weight"], 2);

    // Errors never repeat a secret.
    let missing_group = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": 999999, "api_key": REJECTED }),
        )
        .await
        .expect_error(422, "group_not_found");
    seen.push(missing_group);
    let bad_secret = app
        .admin_post("/admin/api-keys", json!({ "group_id": g1, "api_key": BAD }))
        .await
        .expect_error(400, "invalid_field");
    seen.push(bad_secret);
    let bad_update = app
        .admin_put(
            &format!("/admin/api-keys/{kid}"),
            json!({ "api_key": REJECTED, "weight": 0 }),
        )
        .await
        .expect_error(400, "invalid_field");
    seen.push(bad_update);
    let wrong_type = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": g1, "api_key": REJECTED, "weight": "heavy" }),
        )
        .await;
    assert!(
        (400..500).contains(&wrong_type.status),
        "{}: {}",
        wrong_type.status,
        wrong_type.text
    );
    seen.push(wrong_type);
    let unknown_field = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": g1, "api_key": REJECTED, "secret": REJECTED }),
        )
        .await;
    assert!(
        (400..500).contains(&unknown_field.status),
        "{}",
        unknown_field.text
    );
    seen.push(unknown_field);
    assert_eq!(
        app.admin_get(&format!("/admin/api-keys/{kid}"))
            .await
            .expect(200)
            .body["api_key"],
        masked(SECOND),
        "a refused update changed the secret"
    );

    // Delete.
    app.admin_delete(&format!("/admin/api-keys/{kid}"))
        .await
        .expect(204);
    app.admin_get(&format!("/admin/api-keys/{kid}"))
        .await
        .expect_error(404, "api_key_not_found");
    app.admin_delete(&format!("/admin/api-keys/{kid}"))
        .await
        .expect_error(404, "api_key_not_found");
    assert!(provider_entry(&app, kid).await.is_none());
    assert!(provider_entry(&app, other_id).await.is_some());

    // Every response, list and error so far, and every log line.
    for resp in &seen {
        assert_hides(resp, &secrets);
    }
    let listing = app.admin_get("/admin/api-keys?page_size=500").await.expect(200);
    assert_hides(&listing, &secrets);
    let groups = app.admin_get("/admin/provider-groups").await.expect(200);
    assert_hides(&groups, &secrets);
    assert_logs_hide(&secrets);
    check_metas(&app).await;
}

async fn credential_rules_weights_bans_and_oauth(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const KEY: &str = "sk-rules-0123456789abcdEFGH";
    const ACCESS: &str = "oauth-access-token-0123456789ACCS";
    const REFRESH: &str = "oauth-refresh-token-0123456789RFSH";
    const ACCESS2: &str = "oauth-access-token-second-9999ACC2";
    let gid = id_of(&create_group(&app, json!({ "name": "plain", "type": "anthropic" })).await);

    // Weight ≥ 1.
    for weight in [0, -3] {
        app.admin_post(
            "/admin/api-keys",
            json!({ "group_id": gid, "api_key": KEY, "weight": weight }),
        )
        .await
        .expect_error(400, "invalid_field");
    }
    app.admin_post("/admin/api-keys", json!({ "group_id": gid }))
        .await
        .expect_error(422, "api_key_required");
    app.admin_post("/admin/api-keys", json!({ "group_id": gid, "api_key": "  " }))
        .await
        .expect_error(422, "api_key_required");
    app.admin_post(
        "/admin/api-keys",
        json!({ "group_id": gid, "api_key": KEY, "status": "banned" }),
    )
    .await
    .expect_error(400, "invalid_field");
    let total = app.admin_get("/admin/api-keys").await.expect(200).body["total"].clone();
    assert_eq!(total, 0, "a refused create left a credential behind");

    let kid = id_of(&create_key(&app, json!({ "group_id": gid, "api_key": KEY })).await);
    assert_eq!(
        app.admin_get(&format!("/admin/api-keys/{kid}"))
            .await
            .expect(200)
            .body["weight"],
        1,
        "weight defaults to 1"
    );
    app.admin_put(&format!("/admin/api-keys/{kid}"), json!({ "weight": 0 }))
        .await
        .expect_error(400, "invalid_field");

    // Ban fields in Unix seconds; `null` lifts the ban.
    let banned = app
        .admin_put(
            &format!("/admin/api-keys/{kid}"),
            json!({ "ban_until": YEAR_2100, "ban_reason": "quota exhausted", "status": "auto_disabled" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(banned["ban_until"], YEAR_2100);
    assert_eq!(banned["ban_reason"], "quota exhausted");
    assert_eq!(banned["status"], "auto_disabled");
    let entry = must(provider_entry(&app, kid).await, "provider entry");
    assert_eq!(entry["ban_until"], YEAR_2100);
    assert_eq!(entry["ban_reason"], "quota exhausted");
    assert_eq!(entry["status"], "auto_disabled");
    app.admin_put(
        &format!("/admin/api-keys/{kid}"),
        json!({ "ban_until": YEAR_2100 * 1000 }),
    )
    .await
    .expect_error(400, "invalid_field");
    let lifted = app
        .admin_put(
            &format!("/admin/api-keys/{kid}"),
            json!({ "ban_until": null, "status": "active" }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(lifted["ban_until"], Value::Null);
    assert_eq!(lifted["status"], "active");
    let entry = must(provider_entry(&app, kid).await, "provider entry");
    assert_eq!(entry["ban_until"], 0);
    assert_eq!(entry["status"], "active");
    let untouched = app
        .admin_put(&format!("/admin/api-keys/{kid}"), json!({ "weight": 4 }))
        .await
        .expect(200)
        .body;
    assert_eq!(
        untouched["ban_reason"], "quota exhausted",
        "absent fields are kept"
    );

    // Subscription types use OAuth tokens, not API keys.
    let sub = create_group(
        &app,
        json!({ "name": "cc", "type": "claude_code", "headers_profile": "claude-code", "models": ["claude-sonnet-4-5"] }),
    )
    .await;
    let sub_id = id_of(&sub);
    let refused = app
        .admin_post("/admin/api-keys", json!({ "group_id": sub_id, "api_key": KEY }))
        .await
        .expect_error(422, "oauth_token_required");
    assert_hides(&refused, &[KEY]);
    let refresh_only = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": sub_id, "refresh_token": REFRESH }),
        )
        .await
        .expect(201);
    assert_eq!(refresh_only.body["refresh_token"], masked(REFRESH));
    assert_eq!(refresh_only.body["access_token"], "");
    assert_hides(&refresh_only, &[REFRESH]);
    let oauth = app
        .admin_post(
            "/admin/api-keys",
            json!({
                "group_id": sub_id,
                "access_token": ACCESS,
                "refresh_token": REFRESH,
                "expires_at": YEAR_2100,
                "account_id": "acct-42",
                "project_id": "proj-42",
            }),
        )
        .await
        .expect(201);
    let oid = oauth.id();
    assert_eq!(oauth.body["access_token"], masked(ACCESS));
    assert_eq!(oauth.body["refresh_token"], masked(REFRESH));
    assert_eq!(oauth.body["expires_at"], YEAR_2100);
    assert_eq!(oauth.body["account_id"], "acct-42");
    assert_eq!(oauth.body["project_id"], "proj-42");
    assert_eq!(oauth.body["api_key"], "");
    let mut shown = vec![oauth];
    shown.push(app.admin_get(&format!("/admin/api-keys/{oid}")).await.expect(200));
    shown.push(
        app.admin_get(&format!("/admin/api-keys?group_id={sub_id}"))
            .await
            .expect(200),
    );
    let rotated = app
        .admin_put(
            &format!("/admin/api-keys/{oid}"),
            json!({ "access_token": ACCESS2, "expires_at": null }),
        )
        .await
        .expect(200);
    assert_eq!(rotated.body["access_token"], masked(ACCESS2));
    assert_eq!(rotated.body["expires_at"], Value::Null);
    shown.push(rotated);
    for resp in &shown {
        assert_hides(resp, &[ACCESS, REFRESH, ACCESS2, KEY]);
    }
    let entry = must(provider_entry(&app, oid).await, "provider entry");
    assert_eq!(entry["type"], "claude-code");
    assert_eq!(entry["access_token"], ACCESS2);
    assert_eq!(entry["refresh_token"], REFRESH);
    assert_eq!(entry["expires_at"], 0);
    assert_eq!(entry["account_id"], "acct-42");
    assert_eq!(entry["project_id"], "proj-42");
    assert_eq!(entry["headers_profile"], "claude-code");
    assert_eq!(entry["base_url"], "https://api.anthropic.com");

    // Moving a credential to a group of the other kind is validated against that group.
    app.admin_put(&format!("/admin/api-keys/{kid}"), json!({ "group_id": sub_id }))
        .await
        .expect_error(422, "oauth_token_required");
    app.admin_put(&format!("/admin/api-keys/{kid}"), json!({ "group_id": 999999 }))
        .await
        .expect_error(422, "group_not_found");
    assert_logs_hide(&[KEY, ACCESS, REFRESH, ACCESS2]);
    check_metas(&app).await;
}

async fn presets_and_custom_providers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const O1: &str = "sk-preset-openai-1-000000001AAA";
    const O2: &str = "sk-preset-openai-2-000000002BBB";
    const A1: &str = "sk-ant-preset-0000000000003CCC";
    const G1: &str = "AIza-preset-gemini-000000004DDD";
    const C1: &str = "sk-custom-vllm-000000000005EEE";
    let secrets = [O1, O2, A1, G1, C1];

    let openai = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": "openai", "api_keys": [O1, O2], "weights": [3, 1] }),
        )
        .await
        .expect(201);
    assert_hides(&openai, &secrets);
    let group = &openai.body["group"];
    assert_eq!(group["name"], "openai");
    assert_eq!(group["type"], "openai");
    let models = group["models"].as_array().expect("models");
    for expected in ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"] {
        assert!(models.contains(&json!(expected)), "{expected} not in {models:?}");
    }
    let keys = openai.body["api_keys"].as_array().expect("api_keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (&keys[0]["api_key"], &keys[0]["weight"]),
        (&json!(masked(O1)), &json!(3))
    );
    assert_eq!(
        (&keys[1]["api_key"], &keys[1]["weight"]),
        (&json!(masked(O2)), &json!(1))
    );
    for (key, secret, weight) in [(&keys[0], O1, 3), (&keys[1], O2, 1)] {
        let entry = must(provider_entry(&app, id_of(key)).await, "provider entry");
        assert_eq!(entry["base_url"], "https://api.openai.com/v1");
        assert_eq!(entry["api_key"], secret);
        assert_eq!(entry["weight"], weight);
        assert_eq!(entry["type"], "openai");
        assert_eq!(entry["group_id"], group["id"]);
        assert_eq!(entry["models"], group["models"]);
    }

    let anthropic = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": " Anthropic ", "api_keys": [A1], "name": "claude-team", "route_group": "vip" }),
        )
        .await
        .expect(201);
    assert_hides(&anthropic, &secrets);
    assert_eq!(anthropic.body["group"]["name"], "claude-team");
    assert_eq!(anthropic.body["group"]["type"], "anthropic");
    assert!(
        anthropic.body["group"]["models"]
            .as_array()
            .expect("models")
            .contains(&json!("claude-sonnet-4-5"))
    );
    let entry = must(
        provider_entry(&app, id_of(&anthropic.body["api_keys"][0])).await,
        "provider entry",
    );
    assert_eq!(entry["base_url"], "https://api.anthropic.com");
    assert_eq!(entry["group"], "vip");
    assert_eq!(entry["weight"], 1);

    let gemini = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": "gemini", "api_keys": [G1], "models": ["gemini-2.5-pro"] }),
        )
        .await
        .expect(201);
    assert_hides(&gemini, &secrets);
    assert_eq!(gemini.body["group"]["type"], "gemini");
    let entry = must(
        provider_entry(&app, id_of(&gemini.body["api_keys"][0])).await,
        "provider entry",
    );
    assert_eq!(entry["base_url"], "https://generativelanguage.googleapis.com");
    assert_eq!(entry["models"], json!(["gemini-2.5-pro"]));

    let custom = app
        .admin_post(
            "/admin/providers/custom",
            json!({
                "name": "vllm",
                "base_url": "http://vllm.internal:8000/v1/",
                "api_keys": [C1],
                "models": ["llama-3.1-8b"],
                "weights": [7],
                "static_headers": { "X-Tenant": "t1" },
            }),
        )
        .await
        .expect(201);
    assert_hides(&custom, &secrets);
    assert_eq!(custom.body["group"]["type"], "compatible");
    assert_eq!(custom.body["group"]["base_url"], "http://vllm.internal:8000/v1");
    assert_eq!(custom.body["api_keys"][0]["api_key"], masked(C1));
    let entry = must(
        provider_entry(&app, id_of(&custom.body["api_keys"][0])).await,
        "provider entry",
    );
    assert_eq!(entry["type"], "compatible");
    assert_eq!(entry["base_url"], "http://vllm.internal:8000/v1");
    assert_eq!(entry["weight"], 7);
    assert_eq!(entry["models"], json!(["llama-3.1-8b"]));
    assert_eq!(entry["static_headers"], json!({ "x-tenant": "t1" }));

    // Refusals create nothing.
    let groups_before = app.admin_get("/admin/provider-groups").await.expect(200).body["total"].clone();
    let keys_before = app.admin_get("/admin/api-keys").await.expect(200).body["total"].clone();
    let refusals = [
        (
            "/admin/providers/preset",
            json!({ "preset": "mistral", "api_keys": [O1] }),
            422,
            "unknown_preset",
        ),
        (
            "/admin/providers/preset",
            json!({ "preset": "openai", "name": "o2", "api_keys": [O1, O2], "weights": [1] }),
            400,
            "invalid_field",
        ),
        (
            "/admin/providers/preset",
            json!({ "preset": "openai", "name": "o3", "api_keys": [O1], "weights": [0] }),
            400,
            "invalid_field",
        ),
        (
            "/admin/providers/preset",
            json!({ "preset": "openai", "name": "o4", "api_keys": [] }),
            400,
            "invalid_field",
        ),
        (
            "/admin/providers/preset",
            json!({ "preset": "openai", "api_keys": [O1] }),
            409,
            "conflict",
        ),
        (
            "/admin/providers/custom",
            json!({ "name": "nourl", "base_url": "", "api_keys": [C1] }),
            422,
            "base_url_required",
        ),
        (
            "/admin/providers/custom",
            json!({ "name": "c2", "base_url": "http://h/v1", "api_keys": [C1, O1], "weights": [1, 2, 3] }),
            400,
            "invalid_field",
        ),
    ];
    for (path, body, status, code) in refusals {
        let resp = app.admin_post(path, body).await.expect_error(status, code);
        assert_hides(&resp, &secrets);
    }
    assert_eq!(
        app.admin_get("/admin/provider-groups").await.expect(200).body["total"],
        groups_before
    );
    assert_eq!(
        app.admin_get("/admin/api-keys").await.expect(200).body["total"],
        keys_before
    );
    assert_logs_hide(&secrets);
    check_metas(&app).await;
}

async fn binding_crud_and_validation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let team_a = app.create_namespace("team-a").await;
    let gid = id_of(
        &create_group(
            &app,
            json!({ "name": "oa", "type": "openai", "models": ["gpt-4o", "gpt-4o-mini"] }),
        )
        .await,
    );
    let kid = id_of(
        &create_key(
            &app,
            json!({ "group_id": gid, "api_key": "sk-bind-crud-00000000KKKK" }),
        )
        .await,
    );
    let k = kid.to_string();

    let created = bind(
        &app,
        json!({ "namespace": "team-a", "public_model": "fast", "group_id": gid, "selector_value": "gpt-4o-mini" }),
    )
    .await;
    let bid = id_of(&created);
    assert_eq!(created["namespace"], "team-a");
    assert_eq!(created["public_model"], "fast");
    assert_eq!(created["group_id"], gid);
    assert_eq!(created["weight"], 1);
    assert_eq!(created["selector_type"], "exact");
    assert_eq!(created["selector_value"], "gpt-4o-mini");
    assert_eq!(created["status"], "active");
    assert!(created["created_at"].is_i64() && created["updated_at"].is_i64());
    assert_eq!(
        created["resolution"],
        json!({ "group_id": gid, "status": "ok", "upstreams": { &k: "gpt-4o-mini" }, "problems": [] })
    );
    let got = app
        .admin_get(&format!("/admin/bindings/{bid}"))
        .await
        .expect(200)
        .body;
    assert_eq!(got, created);
    let list = app.admin_get("/admin/bindings").await.expect(200).body;
    assert_eq!(list["total"], 1);
    assert_eq!(list["items"][0], created);

    let entry = must(binding_entry(&app, "team-a.fast").await, "binding entry");
    assert_eq!(entry["namespace"], "team-a");
    assert_eq!(entry["public_model"], "fast");
    assert_eq!(entry["status"], "active");
    assert_eq!(upstreams_of(&entry, gid), json!({ &k: "gpt-4o-mini" }));
    let model = must(model_entry(&app, "team-a.fast").await, "model entry");
    assert_eq!(model["name"], "team-a.fast");
    assert_eq!(
        model["context_window"], 128000,
        "capabilities of the upstream model"
    );
    assert!(binding_entry(&app, "default.fast").await.is_none());
    app.admin_delete(&format!("/admin/namespaces/{team_a}"))
        .await
        .expect_error(409, "namespace_in_use");

    // Validation.
    let refusals = [
        (
            json!({ "namespace": "nope", "public_model": "x", "group_id": gid }),
            422,
            "namespace_not_found",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "x", "group_id": 999999 }),
            422,
            "group_not_found",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "x", "group_id": gid, "selector_type": "regex", "selector_value": "gpt-(" }),
            422,
            "invalid_selector",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "gpt-(", "group_id": gid, "selector_type": "regex" }),
            422,
            "invalid_selector",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "fast", "group_id": gid }),
            409,
            "conflict",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "x", "group_id": gid, "selector_type": "fuzzy" }),
            400,
            "invalid_field",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "x", "group_id": gid, "weight": 0 }),
            400,
            "invalid_field",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "two words", "group_id": gid }),
            400,
            "invalid_field",
        ),
        (
            json!({ "namespace": "team-a", "public_model": "x", "group_id": gid, "status": "paused" }),
            400,
            "invalid_field",
        ),
    ];
    let bus_before = routing_state(&app).await;
    for (body, status, code) in refusals {
        app.admin_post("/admin/bindings", body)
            .await
            .expect_error(status, code);
    }
    assert_eq!(
        app.admin_get("/admin/bindings").await.expect(200).body["total"],
        1
    );
    assert_eq!(
        routing_state(&app).await,
        bus_before,
        "a refused binding reached the bus"
    );

    // Update: regex selectors are unanchored.
    let updated = put_binding(
        &app,
        bid,
        json!({ "weight": 7, "selector_type": "regex", "selector_value": "4o-mi" }),
    )
    .await;
    assert_eq!(updated["weight"], 7);
    assert_eq!(updated["resolution"]["status"], "ok");
    assert_eq!(updated["resolution"]["upstreams"], json!({ &k: "gpt-4o-mini" }));
    let entry = must(binding_entry(&app, "team-a.fast").await, "binding entry");
    assert_eq!(entry["candidates"][0]["weight"], 7);
    assert_eq!(entry["candidates"][0]["selector_type"], "regex");
    assert_eq!(entry["candidates"][0]["selector_value"], "4o-mi");
    app.admin_put(
        &format!("/admin/bindings/{bid}"),
        json!({ "selector_value": "gpt-(" }),
    )
    .await
    .expect_error(422, "invalid_selector");
    app.admin_put(&format!("/admin/bindings/{bid}"), json!({ "namespace": "nope" }))
        .await
        .expect_error(422, "namespace_not_found");
    app.admin_put(&format!("/admin/bindings/{bid}"), json!({ "group_id": 999999 }))
        .await
        .expect_error(422, "group_not_found");
    app.admin_put("/admin/bindings/999999", json!({ "weight": 2 }))
        .await
        .expect_error(404, "binding_not_found");

    // Renaming the route moves its entries.
    let moved = put_binding(
        &app,
        bid,
        json!({ "public_model": "quick", "namespace": "default" }),
    )
    .await;
    assert_eq!(
        (&moved["namespace"], &moved["public_model"]),
        (&json!("default"), &json!("quick"))
    );
    assert!(binding_entry(&app, "team-a.fast").await.is_none());
    assert!(model_entry(&app, "team-a.fast").await.is_none());
    assert!(binding_entry(&app, "default.quick").await.is_some());
    assert!(model_entry(&app, "default.quick").await.is_some());
    check_metas(&app).await;

    // A disabled binding stays visible on the bus but routes nowhere.
    app.admin_put(&format!("/admin/bindings/{bid}"), json!({ "status": "disabled" }))
        .await
        .expect(200);
    let entry = must(binding_entry(&app, "default.quick").await, "binding entry");
    assert_eq!(entry["status"], "disabled");
    assert_eq!(entry["candidates"][0]["status"], "disabled");
    assert_eq!(entry["candidates"][0]["upstreams"], json!({}));

    // Delete.
    app.admin_delete(&format!("/admin/bindings/{bid}"))
        .await
        .expect(204);
    app.admin_get(&format!("/admin/bindings/{bid}"))
        .await
        .expect_error(404, "binding_not_found");
    app.admin_delete(&format!("/admin/bindings/{bid}"))
        .await
        .expect_error(404, "binding_not_found");
    assert!(binding_entry(&app, "default.quick").await.is_none());
    assert!(model_entry(&app, "default.quick").await.is_none());
    check_metas(&app).await;
}

async fn weighted_candidates_of_one_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let g1 = id_of(
        &create_group(
            &app,
            json!({ "name": "official", "type": "openai", "models": ["gpt-4o", "gpt-4o-mini"], "route_group": "premium" }),
        )
        .await,
    );
    let g2 = id_of(
        &create_group(
            &app,
            json!({ "name": "router", "type": "compatible", "base_url": "https://router.example/api/v1", "models": ["openai/GPT-4o", "meta/llama"] }),
        )
        .await,
    );
    let k1 = id_of(
        &create_key(
            &app,
            json!({ "group_id": g1, "api_key": "sk-weighted-1-0000W001" }),
        )
        .await,
    );
    let k2 = id_of(
        &create_key(
            &app,
            json!({ "group_id": g1, "api_key": "sk-weighted-2-0000W002", "weight": 4 }),
        )
        .await,
    );
    let k3 = id_of(
        &create_key(
            &app,
            json!({ "group_id": g2, "api_key": "sk-weighted-3-0000W003" }),
        )
        .await,
    );

    let b1 = bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": g1, "weight": 3 }),
    )
    .await;
    let b2 = bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": g2, "weight": 1, "selector_type": "normalize_exact" }),
    )
    .await;
    assert_eq!(
        b2["resolution"]["upstreams"],
        json!({ k3.to_string(): "openai/GPT-4o" })
    );

    let bindings = bus_hash(&app, bus_keys::BINDINGS).await;
    assert_eq!(
        bindings.keys().collect::<Vec<_>>(),
        vec!["default.gpt-4o"],
        "one entry per route"
    );
    let entry = must(binding_entry(&app, "default.gpt-4o").await, "binding entry");
    assert_eq!(entry["namespace"], "default");
    assert_eq!(entry["public_model"], "gpt-4o");
    assert_eq!(entry["status"], "active");
    let updated_at = entry["updated_at"].as_i64().expect("updated_at");
    assert!(
        (now_unix() - 600..=now_unix() + 5).contains(&updated_at),
        "seconds: {updated_at}"
    );
    let candidates = entry["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 2);
    assert_eq!(
        candidates[0],
        json!({
            "binding_id": id_of(&b1),
            "group_id": g1,
            "route_group": "premium",
            "weight": 3,
            "selector_type": "exact",
            "selector_value": "",
            "status": "active",
            "error": "",
            "upstreams": { k1.to_string(): "gpt-4o", k2.to_string(): "gpt-4o" },
        })
    );
    assert_eq!(
        candidates[1],
        json!({
            "binding_id": id_of(&b2),
            "group_id": g2,
            "route_group": "default",
            "weight": 1,
            "selector_type": "normalize_exact",
            "selector_value": "",
            "status": "active",
            "error": "",
            "upstreams": { k3.to_string(): "openai/GPT-4o" },
        })
    );
    let model = must(model_entry(&app, "default.gpt-4o").await, "model entry");
    assert_eq!(model["kind"], "chat");
    assert_eq!(model["supports_vision"], true);
    check_metas(&app).await;

    // Removing one candidate keeps the route; removing the last removes its entries.
    app.admin_delete(&format!("/admin/bindings/{}", id_of(&b1)))
        .await
        .expect(204);
    let entry = must(binding_entry(&app, "default.gpt-4o").await, "binding entry");
    assert_eq!(entry["candidates"].as_array().expect("candidates").len(), 1);
    assert_eq!(entry["candidates"][0]["group_id"], g2);
    assert!(model_entry(&app, "default.gpt-4o").await.is_some());
    check_metas(&app).await;
    app.admin_delete(&format!("/admin/bindings/{}", id_of(&b2)))
        .await
        .expect(204);
    assert!(binding_entry(&app, "default.gpt-4o").await.is_none());
    assert!(model_entry(&app, "default.gpt-4o").await.is_none());
    assert!(bus_hash(&app, bus_keys::BINDINGS).await.is_empty());
    assert!(bus_hash(&app, bus_keys::MODELS).await.is_empty());
    check_metas(&app).await;
}

async fn selector_errors_are_shown_never_guessed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let gid = id_of(
        &create_group(
            &app,
            json!({ "name": "oa", "type": "openai", "models": ["gpt-4o", "gpt-4o-mini", "models/GPT-4.1"] }),
        )
        .await,
    );
    let kid = id_of(
        &create_key(
            &app,
            json!({ "group_id": gid, "api_key": "sk-selectors-000000SSSS" }),
        )
        .await,
    );
    let k = kid.to_string();

    // No match: the binding is created and written, with no_provider.
    let missing = bind(
        &app,
        json!({ "namespace": "default", "public_model": "claude-x", "group_id": gid }),
    )
    .await;
    assert_eq!(missing["resolution"]["status"], "no_provider");
    assert_eq!(missing["resolution"]["upstreams"], json!({}));
    let entry = must(
        binding_entry(&app, "default.claude-x").await,
        "an unresolved binding entry (it must be written anyway)",
    );
    assert_eq!(entry["candidates"][0]["error"], "no_provider");
    assert_eq!(entry["candidates"][0]["upstreams"], json!({}));
    assert!(model_entry(&app, "default.claude-x").await.is_some());

    // Exact is case-sensitive: no guessing.
    let case = bind(
        &app,
        json!({ "namespace": "default", "public_model": "GPT-4o", "group_id": gid }),
    )
    .await;
    assert_eq!(case["resolution"]["status"], "no_provider");

    // Ambiguous regex: config_error with the reason, on the GET and on the bus.
    let ambiguous = bind(
        &app,
        json!({ "namespace": "default", "public_model": "fast", "group_id": gid, "selector_type": "regex", "selector_value": "gpt-4o" }),
    )
    .await;
    let got = app
        .admin_get(&format!("/admin/bindings/{}", id_of(&ambiguous)))
        .await
        .expect(200)
        .body;
    assert_eq!(got["resolution"]["status"], "config_error");
    assert_eq!(got["resolution"]["upstreams"], json!({}));
    let problems = got["resolution"]["problems"].to_string();
    assert!(problems.contains("gpt-4o-mini"), "problems: {problems}");
    let entry = must(binding_entry(&app, "default.fast").await, "binding entry");
    let candidate = &entry["candidates"][0];
    assert_eq!(candidate["error"], "config_error");
    assert_eq!(candidate["upstreams"], json!({}));
    let detail = candidate["error_detail"].as_str().expect("error_detail");
    assert!(
        detail.contains("gpt-4o") && detail.contains("gpt-4o-mini"),
        "{detail}"
    );

    // An anchored regex and normalize_exact each hit exactly one model.
    let anchored = bind(
        &app,
        json!({ "namespace": "default", "public_model": "big", "group_id": gid, "selector_type": "regex", "selector_value": "^gpt-4o$" }),
    )
    .await;
    assert_eq!(anchored["resolution"]["upstreams"], json!({ &k: "gpt-4o" }));
    let normalized = bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4.1", "group_id": gid, "selector_type": "normalize_exact" }),
    )
    .await;
    assert_eq!(
        normalized["resolution"]["upstreams"],
        json!({ &k: "models/GPT-4.1" })
    );
    let entry = must(binding_entry(&app, "default.gpt-4.1").await, "binding entry");
    assert_eq!(
        entry["candidates"][0]["upstreams"],
        json!({ &k: "models/GPT-4.1" })
    );
    assert_eq!(entry["candidates"][0]["error"], "");

    // Making the group's list unambiguous resolves the binding, incrementally.
    app.admin_put(
        &format!("/admin/provider-groups/{gid}"),
        json!({ "models": ["gpt-4o", "claude-x"] }),
    )
    .await
    .expect(200);
    let entry = must(binding_entry(&app, "default.fast").await, "binding entry");
    assert_eq!(entry["candidates"][0]["error"], "");
    assert_eq!(entry["candidates"][0]["upstreams"], json!({ &k: "gpt-4o" }));
    let entry = must(binding_entry(&app, "default.claude-x").await, "binding entry");
    assert_eq!(entry["candidates"][0]["upstreams"], json!({ &k: "claude-x" }));
    let entry = must(binding_entry(&app, "default.gpt-4.1").await, "binding entry");
    assert_eq!(entry["candidates"][0]["error"], "no_provider");
    let list = app.admin_get("/admin/bindings").await.expect(200).body;
    let statuses: Vec<(String, String)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|b| {
            (
                b["public_model"].as_str().unwrap_or_default().to_owned(),
                b["resolution"]["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("claude-x".to_owned(), "ok".to_owned()),
            ("GPT-4o".to_owned(), "no_provider".to_owned()),
            ("fast".to_owned(), "ok".to_owned()),
            ("big".to_owned(), "ok".to_owned()),
            ("gpt-4.1".to_owned(), "no_provider".to_owned()),
        ]
    );

    // Per credential: one credential's unique hit routes; another credential's ambiguity
    // leaves it out and is reported, not guessed.
    let mixed = id_of(
        &create_group(
            &app,
            json!({ "name": "mixed", "type": "openai", "models": ["gpt-4o"] }),
        )
        .await,
    );
    let plain = id_of(
        &create_key(
            &app,
            json!({ "group_id": mixed, "api_key": "sk-selectors-plain-00PLN1" }),
        )
        .await,
    );
    let wide = id_of(
        &create_key(
            &app,
            json!({ "group_id": mixed, "api_key": "sk-selectors-wide-000WID1", "models": ["gpt-4o-2024-08-06", "gpt-4o-mini"] }),
        )
        .await,
    );
    let view = bind(
        &app,
        json!({ "namespace": "default", "public_model": "mixed", "group_id": mixed, "selector_type": "regex", "selector_value": "gpt-4o" }),
    )
    .await;
    assert_eq!(
        view["resolution"]["upstreams"],
        json!({ plain.to_string(): "gpt-4o" })
    );
    let problems = view["resolution"]["problems"].to_string();
    assert!(
        problems.contains(&format!("credential {wide}")) && problems.contains("gpt-4o-mini"),
        "the ambiguous credential is not reported: {problems}"
    );
    let entry = must(binding_entry(&app, "default.mixed").await, "binding entry");
    assert_eq!(
        entry["candidates"][0]["upstreams"],
        json!({ plain.to_string(): "gpt-4o" })
    );
    let detail = entry["candidates"][0]["error_detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        detail.contains(&format!("credential {wide}")),
        "error_detail: {detail:?}"
    );

    // normalize_exact with two hits is a configuration error too.
    let twins = id_of(
        &create_group(
            &app,
            json!({ "name": "twins", "type": "compatible", "base_url": "http://t/v1", "models": ["a/GPT-4o", "b/gpt-4o"] }),
        )
        .await,
    );
    create_key(
        &app,
        json!({ "group_id": twins, "api_key": "sk-selectors-twins-00TWN1" }),
    )
    .await;
    let view = bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": twins, "selector_type": "normalize_exact" }),
    )
    .await;
    assert_eq!(view["resolution"]["status"], "config_error");
    let entry = must(binding_entry(&app, "default.gpt-4o").await, "binding entry");
    assert_eq!(entry["candidates"][0]["error"], "config_error");
    assert_eq!(entry["candidates"][0]["upstreams"], json!({}));
    check_metas(&app).await;
}

/// `PUT /admin/bindings/{id}` with `body`; the updated binding.
async fn put_binding(app: &TestApp, id: i64, body: Value) -> Value {
    app.admin_put(&format!("/admin/bindings/{id}"), body)
        .await
        .expect(200)
        .body
}

/// The problems of a binding's resolution as one string, asserting the rule they obey:
/// never empty unless the status is `ok`.
#[track_caller]
fn problems_of(view: &Value) -> String {
    let resolution = &view["resolution"];
    let problems = resolution["problems"].as_array().expect("problems");
    if resolution["status"] != "ok" {
        assert!(!problems.is_empty(), "an unresolved binding is silent: {view}");
    }
    problems
        .iter()
        .map(|p| p.as_str().expect("a problem is a string"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[track_caller]
fn assert_mentions(text: &str, words: &[&str]) {
    for word in words {
        assert!(text.contains(word), "{word:?} not in {text:?}");
    }
}

async fn unresolved_bindings_say_why_and_how_to_fix_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // A public name that is not the upstream model's: created, with the reason and the fix
    // on the answer, the GET and the bus entry.
    let vllm = app
        .admin_post(
            "/admin/providers/custom",
            json!({ "name": "vllm", "base_url": "http://vllm:8000/v1", "api_keys": ["token-0000VLLM"], "models": ["llama-3.3-70b-instruct"] }),
        )
        .await
        .expect(201)
        .body;
    let vllm_id = id_of(&vllm["group"]);
    let created = bind(
        &app,
        json!({ "namespace": "default", "public_model": "llama", "group_id": vllm_id }),
    )
    .await;
    let bid = id_of(&created);
    assert_eq!(created["resolution"]["status"], "no_provider");
    let miss = [
        "no model of group `vllm` equals `llama`",
        "set `selector_value`",
        "`normalize_exact` or `regex`",
        "its models: llama-3.3-70b-instruct",
    ];
    assert_mentions(&problems_of(&created), &miss);
    let got = app
        .admin_get(&format!("/admin/bindings/{bid}"))
        .await
        .expect(200)
        .body;
    assert_eq!(got, created);
    let entry = must(binding_entry(&app, "default.llama").await, "binding entry");
    let candidate = &entry["candidates"][0];
    assert_eq!(candidate["error"], "no_provider");
    assert_eq!(candidate["binding_id"], bid);
    assert_mentions(candidate["error_detail"].as_str().expect("error_detail"), &miss);

    // The other selector types miss with their own words.
    let regex = put_binding(
        &app,
        bid,
        json!({ "selector_type": "regex", "selector_value": "^mistral" }),
    )
    .await;
    assert_mentions(
        &problems_of(&regex),
        &["matches the regex `^mistral`", "llama-3.3-70b-instruct"],
    );
    let normalized = put_binding(
        &app,
        bid,
        json!({ "selector_type": "normalize_exact", "selector_value": "" }),
    )
    .await;
    assert_mentions(
        &problems_of(&normalized),
        &["equals `llama` once lower-cased", "llama-3.3-70b-instruct"],
    );

    // The fix the problem names resolves it, and the problems go.
    let fixed = put_binding(
        &app,
        bid,
        json!({ "selector_type": "exact", "selector_value": "llama-3.3-70b-instruct" }),
    )
    .await;
    assert_eq!(fixed["resolution"]["status"], "ok");
    assert_eq!(fixed["resolution"]["problems"], json!([]));
    let entry = must(binding_entry(&app, "default.llama").await, "binding entry");
    assert_eq!(entry["candidates"][0]["error"], "");
    assert!(entry["candidates"][0].get("error_detail").is_none(), "{entry}");

    // A group without credentials, then with none active.
    let bare = id_of(
        &create_group(
            &app,
            json!({ "name": "bare", "type": "compatible", "base_url": "http://bare/v1", "models": ["m1"] }),
        )
        .await,
    );
    let bare_binding = bind(
        &app,
        json!({ "namespace": "default", "public_model": "m1", "group_id": bare }),
    )
    .await;
    assert_eq!(bare_binding["resolution"]["status"], "no_provider");
    assert_mentions(
        &problems_of(&bare_binding),
        &["`bare` has no credentials", "POST /admin/api-keys"],
    );
    let off = id_of(
        &create_key(
            &app,
            json!({ "group_id": bare, "api_key": "sk-problems-off-0000OFF1", "status": "manual_disabled" }),
        )
        .await,
    );
    let view = app
        .admin_get(&format!("/admin/bindings/{}", id_of(&bare_binding)))
        .await
        .expect(200)
        .body;
    assert_mentions(
        &problems_of(&view),
        &[
            "none of the 1 credentials of provider group `bare` is active",
            "manual_disabled",
            &format!("PUT /admin/api-keys/{off}"),
        ],
    );

    // A group that lists no models.
    let empty = id_of(
        &create_group(
            &app,
            json!({ "name": "empty", "type": "compatible", "base_url": "http://empty/v1", "models": [] }),
        )
        .await,
    );
    create_key(
        &app,
        json!({ "group_id": empty, "api_key": "sk-problems-empty-000EMP1" }),
    )
    .await;
    let view = bind(
        &app,
        json!({ "namespace": "default", "public_model": "anything", "group_id": empty }),
    )
    .await;
    assert_eq!(view["resolution"]["status"], "no_provider");
    assert_mentions(&problems_of(&view), &["`empty` lists no models", "`models`"]);

    // A disabled group.
    app.admin_put(
        &format!("/admin/provider-groups/{vllm_id}"),
        json!({ "status": "disabled" }),
    )
    .await
    .expect(200);
    let view = app
        .admin_get(&format!("/admin/bindings/{bid}"))
        .await
        .expect(200)
        .body;
    assert_eq!(view["resolution"]["status"], "no_provider");
    assert_mentions(
        &problems_of(&view),
        &[
            "`vllm` is disabled",
            &format!("PUT /admin/provider-groups/{vllm_id}"),
        ],
    );
    let entry = must(binding_entry(&app, "default.llama").await, "binding entry");
    assert_mentions(
        entry["candidates"][0]["error_detail"]
            .as_str()
            .expect("error_detail"),
        &["`vllm` is disabled"],
    );

    // Several hits.
    let twins = id_of(
        &create_group(
            &app,
            json!({ "name": "twins", "type": "compatible", "base_url": "http://t/v1", "models": ["a/Llama", "b/llama"] }),
        )
        .await,
    );
    create_key(
        &app,
        json!({ "group_id": twins, "api_key": "sk-problems-twins-00TWN2" }),
    )
    .await;
    let view = bind(
        &app,
        json!({ "namespace": "default", "public_model": "llama", "group_id": twins, "selector_type": "normalize_exact" }),
    )
    .await;
    assert_eq!(view["resolution"]["status"], "config_error");
    assert_mentions(
        &problems_of(&view),
        &["several models: a/Llama, b/llama", "make it match one"],
    );

    // The rule holds for every binding listed.
    let list = app
        .admin_get("/admin/bindings?page_size=100")
        .await
        .expect(200)
        .body;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    for item in items {
        problems_of(item);
    }
    check_metas(&app).await;
}

async fn changes_re_resolve_dependent_bindings_incrementally(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let gid = id_of(
        &create_group(
            &app,
            json!({ "name": "oa", "type": "openai", "models": ["gpt-4o"] }),
        )
        .await,
    );
    let k1 = id_of(
        &create_key(
            &app,
            json!({ "group_id": gid, "api_key": "sk-incr-1-00000000I001" }),
        )
        .await,
    );
    let k2 = id_of(
        &create_key(
            &app,
            json!({ "group_id": gid, "api_key": "sk-incr-2-00000000I002" }),
        )
        .await,
    );
    let mut versions = check_metas(&app).await;
    let binding = bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": gid }),
    )
    .await;
    let bid = id_of(&binding);
    let (s1, s2) = (k1.to_string(), k2.to_string());
    let route = "default.gpt-4o";

    // After each change: the expected upstreams and error on the bus, the same on the
    // binding's GET, metas consistent and every touched version newer.
    macro_rules! expect_route {
        ($upstreams:expr, $error:expr) => {{
            let entry = must(binding_entry(&app, route).await, "binding entry");
            assert_eq!(upstreams_of(&entry, gid), $upstreams, "bus upstreams");
            assert_eq!(entry["candidates"][0]["error"], $error, "bus error");
            let view = app
                .admin_get(&format!("/admin/bindings/{bid}"))
                .await
                .expect(200)
                .body;
            assert_eq!(view["resolution"]["upstreams"], $upstreams, "GET upstreams");
            let now = check_metas(&app).await;
            assert!(
                now[bus_keys::BINDINGS_META] > versions[bus_keys::BINDINGS_META],
                "meta:bindings_meta version did not change"
            );
            versions = now;
        }};
    }
    expect_route!(json!({ &s1: "gpt-4o", &s2: "gpt-4o" }), "");

    // A disabled credential leaves the upstreams but stays on the bus, marked.
    app.admin_put(
        &format!("/admin/api-keys/{k2}"),
        json!({ "status": "manual_disabled" }),
    )
    .await
    .expect(200);
    expect_route!(json!({ &s1: "gpt-4o" }), "");
    assert_eq!(
        must(provider_entry(&app, k2).await, "provider entry")["status"],
        "manual_disabled"
    );

    // A credential's own models.
    app.admin_put(
        &format!("/admin/api-keys/{k1}"),
        json!({ "models": ["gpt-4o-mini"] }),
    )
    .await
    .expect(200);
    expect_route!(json!({}), "no_provider");
    assert_eq!(
        must(provider_entry(&app, k1).await, "provider entry")["models"],
        json!(["gpt-4o-mini"])
    );
    app.admin_put(&format!("/admin/api-keys/{k2}"), json!({ "status": "active" }))
        .await
        .expect(200);
    expect_route!(json!({ &s2: "gpt-4o" }), "");

    // The group's models.
    app.admin_put(
        &format!("/admin/provider-groups/{gid}"),
        json!({ "models": ["gpt-4o-mini"] }),
    )
    .await
    .expect(200);
    expect_route!(json!({}), "no_provider");
    assert_eq!(
        must(provider_entry(&app, k2).await, "provider entry")["models"],
        json!(["gpt-4o-mini"])
    );
    app.admin_put(
        &format!("/admin/provider-groups/{gid}"),
        json!({ "models": ["gpt-4o-mini", "gpt-4o"] }),
    )
    .await
    .expect(200);
    expect_route!(json!({ &s2: "gpt-4o" }), "");

    // A disabled group routes nowhere, and says why.
    app.admin_put(
        &format!("/admin/provider-groups/{gid}"),
        json!({ "status": "disabled" }),
    )
    .await
    .expect(200);
    expect_route!(json!({}), "no_provider");
    let view = app
        .admin_get(&format!("/admin/bindings/{bid}"))
        .await
        .expect(200)
        .body;
    assert!(
        view["resolution"]["problems"].to_string().contains("disabled"),
        "{}",
        view["resolution"]
    );
    for kid in [k1, k2] {
        assert_ne!(
            must(provider_entry(&app, kid).await, "provider entry")["status"],
            "active"
        );
    }
    app.admin_put(
        &format!("/admin/provider-groups/{gid}"),
        json!({ "status": "active" }),
    )
    .await
    .expect(200);
    expect_route!(json!({ &s2: "gpt-4o" }), "");
    assert_eq!(
        must(provider_entry(&app, k2).await, "provider entry")["status"],
        "active",
        "a re-enabled group's credential keeps its own status"
    );

    // A new credential joins, one moved to another group leaves, a deleted one leaves.
    let k3 = id_of(
        &create_key(
            &app,
            json!({ "group_id": gid, "api_key": "sk-incr-3-00000000I003" }),
        )
        .await,
    );
    let s3 = k3.to_string();
    expect_route!(json!({ &s2: "gpt-4o", &s3: "gpt-4o" }), "");
    let other = id_of(
        &create_group(
            &app,
            json!({ "name": "other", "type": "compatible", "base_url": "http://o/v1", "models": ["gpt-4o"] }),
        )
        .await,
    );
    app.admin_put(&format!("/admin/api-keys/{k3}"), json!({ "group_id": other }))
        .await
        .expect(200);
    expect_route!(json!({ &s2: "gpt-4o" }), "");
    assert_eq!(
        must(provider_entry(&app, k3).await, "provider entry")["group_id"],
        other
    );
    app.admin_delete(&format!("/admin/api-keys/{k2}"))
        .await
        .expect(204);
    expect_route!(json!({}), "no_provider");
    assert!(provider_entry(&app, k2).await.is_none());

    // Re-pointing the binding to the other group.
    app.admin_put(&format!("/admin/bindings/{bid}"), json!({ "group_id": other }))
        .await
        .expect(200);
    let entry = must(binding_entry(&app, route).await, "binding entry");
    assert_eq!(upstreams_of(&entry, other), json!({ &s3: "gpt-4o" }));
    assert_eq!(entry["candidates"].as_array().expect("candidates").len(), 1);
    let last = check_metas(&app).await;
    assert!(last[bus_keys::BINDINGS_META] > versions[bus_keys::BINDINGS_META]);
}

async fn incremental_updates_match_a_full_sync_and_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_namespace("team-a").await;
    let openai = app
        .admin_post(
            "/admin/providers/preset",
            json!({ "preset": "openai", "api_keys": ["sk-sync-1-0000000S001", "sk-sync-2-0000000S002"], "weights": [2, 5] }),
        )
        .await
        .expect(201)
        .body;
    let oid = id_of(&openai["group"]);
    let custom = app
        .admin_post(
            "/admin/providers/custom",
            json!({ "name": "local", "base_url": "http://127.0.0.1:9/v1", "api_keys": ["sk-sync-3-0000000S003"], "models": ["gpt-4o", "llama"] }),
        )
        .await
        .expect(201)
        .body;
    let cid = id_of(&custom["group"]);
    let sub = id_of(
        &create_group(
            &app,
            json!({ "name": "cc", "type": "claude-code", "headers_profile": "claude-code", "models": ["claude-sonnet-4-5"] }),
        )
        .await,
    );
    let cc_credential = create_key(
        &app,
        json!({ "group_id": sub, "access_token": "at-sync-000000000T001", "refresh_token": "rt-sync-0000000R001", "expires_at": YEAR_2100 }),
    )
    .await;
    let disabled = create_key(
        &app,
        json!({ "group_id": cid, "api_key": "sk-sync-4-0000000S004", "status": "manual_disabled", "ban_until": YEAR_2100 }),
    )
    .await;
    for body in [
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": oid, "weight": 3 }),
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": cid }),
        json!({ "namespace": "team-a", "public_model": "claude", "group_id": sub, "selector_value": "claude-sonnet-4-5" }),
        json!({ "namespace": "team-a", "public_model": "missing", "group_id": oid }),
        json!({ "namespace": "team-a", "public_model": "any", "group_id": oid, "selector_type": "regex", "selector_value": "gpt" }),
        json!({ "namespace": "default", "public_model": "off", "group_id": cid, "selector_value": "llama", "status": "disabled" }),
    ] {
        bind(&app, body).await;
    }
    app.admin_post(
        "/admin/models",
        json!({ "name": "llama", "context_window": 8192 }),
    )
    .await
    .expect(201);
    app.admin_put(
        &format!("/admin/api-keys/{}", id_of(&disabled)),
        json!({ "weight": 9 }),
    )
    .await
    .expect(200);

    let versions = check_metas(&app).await;
    let incremental = routing_state(&app).await;
    assert_eq!(incremental[bus_keys::PROVIDERS].len(), 5);
    assert_eq!(incremental[bus_keys::BINDINGS].len(), 5);
    assert_eq!(incremental[bus_keys::MODELS].len(), 5);

    let report = app.admin_post("/admin/sync", json!({})).await.expect(200).body;
    assert_eq!(report["providers"], 5);
    assert_eq!(report["bindings"], 5);
    let synced = routing_state(&app).await;
    for (hash, _) in ROUTING_HASHES {
        assert_eq!(
            synced[hash], incremental[hash],
            "{hash}: a full sync differs from the incremental updates"
        );
    }
    let after = check_metas(&app).await;
    for (meta, version) in &after {
        assert!(*version > versions[meta], "{meta} version did not change on sync");
    }

    // Only the affected entries are rewritten: entries of other groups and routes keep
    // what the bus holds (here: planted markers) until a full sync repairs them.
    let cc_key = id_of(&cc_credential).to_string();
    let marker = r#"{"marker":true}"#.to_owned();
    let plant = |fields: &[&str]| -> Vec<(String, String)> {
        fields.iter().map(|f| ((*f).to_owned(), marker.clone())).collect()
    };
    app.state
        .bus
        .apply(vec![
            BusWrite::SetFields {
                key: bus_keys::PROVIDERS.to_owned(),
                fields: plant(&[&cc_key, "999999"]),
            },
            BusWrite::SetFields {
                key: bus_keys::BINDINGS.to_owned(),
                fields: plant(&["team-a.claude", "default.stale"]),
            },
            BusWrite::SetFields {
                key: bus_keys::MODELS.to_owned(),
                fields: plant(&["team-a.claude", "default.stale"]),
            },
        ])
        .await
        .expect("plant markers");
    let first_openai = id_of(&openai["api_keys"][0]);
    app.admin_put(&format!("/admin/api-keys/{first_openai}"), json!({ "weight": 8 }))
        .await
        .expect(200);
    assert_eq!(
        must(provider_entry(&app, first_openai).await, "provider entry")["weight"],
        8
    );
    let marker_value = json!({ "marker": true });
    assert_eq!(
        bus_entry(&app, bus_keys::PROVIDERS, &cc_key).await,
        Some(marker_value.clone()),
        "a change to one group rewrote another group's credential entry"
    );
    assert_eq!(
        binding_entry(&app, "team-a.claude").await,
        Some(marker_value.clone()),
        "a change to one group rewrote an unrelated route"
    );
    assert_eq!(model_entry(&app, "team-a.claude").await, Some(marker_value));
    check_metas(&app).await;
    let mut expected = synced.clone();
    must(
        must(expected.get_mut(bus_keys::PROVIDERS), "providers").get_mut(&first_openai.to_string()),
        "provider entry",
    )["weight"] = json!(8);
    app.admin_post("/admin/sync", json!({})).await.expect(200);
    assert_eq!(
        routing_state(&app).await,
        expected,
        "a full sync did not repair the planted entries and remove the stale ones"
    );
    check_metas(&app).await;

    // Start-up rebuilds the same snapshot onto an empty bus.
    let db = app.shutdown().await;
    let app = TestApp::start(db, test_bus(backend).await).await;
    let restarted = routing_state(&app).await;
    for (hash, _) in ROUTING_HASHES {
        assert_eq!(
            restarted[hash], expected[hash],
            "{hash}: start-up differs from the incremental updates"
        );
    }
    check_metas(&app).await;
    let models_meta = bus_hash(&app, bus_keys::MODELS_META).await;
    for field in ["version", "updated_at", "source", "checksum"] {
        assert!(
            models_meta.get(field).is_some_and(|v| !v.is_empty()),
            "meta:models_meta lacks {field}: {models_meta:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Golden files
// ---------------------------------------------------------------------------------------

const GOLDEN_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/");
const SHARED_CONTRACT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/contract/");

fn updating_golden() -> bool {
    std::env::var_os("EZ_UPDATE_GOLDEN").is_some()
}

/// Compares `actual` with `tests/golden/{name}` structurally; `EZ_UPDATE_GOLDEN=1`
/// rewrites the file instead.
fn assert_golden(name: &str, actual: &Value) {
    let path = format!("{GOLDEN_DIR}{name}");
    if updating_golden() {
        let text = serde_json::to_string_pretty(actual).expect("serialise") + "\n";
        std::fs::write(&path, text).expect("write golden file");
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e} (EZ_UPDATE_GOLDEN=1 writes it)"));
    let golden: Value = serde_json::from_str(&text).expect("golden file is JSON");
    assert_eq!(
        actual, &golden,
        "{name} changed; review and run with EZ_UPDATE_GOLDEN=1"
    );
}

/// The reference shape `shared/contract/{name}`, pinned by a copy in `tests/golden/` so
/// the check also runs where the shared directory is absent; when both exist they must
/// agree.
fn contract_reference(name: &str) -> Value {
    let copy_path = format!("{GOLDEN_DIR}routing_contract_{name}");
    let shared_path = format!("{SHARED_CONTRACT_DIR}{name}");
    let shared: Option<Value> = std::fs::read_to_string(&shared_path)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("shared contract file is JSON"));
    if updating_golden()
        && let Some(shared) = &shared
    {
        let text = serde_json::to_string_pretty(shared).expect("serialise") + "\n";
        std::fs::write(&copy_path, text).expect("write contract copy");
        return shared.clone();
    }
    let copy: Value = serde_json::from_str(
        &std::fs::read_to_string(&copy_path)
            .unwrap_or_else(|e| panic!("{copy_path}: {e} (EZ_UPDATE_GOLDEN=1 writes it)")),
    )
    .expect("contract copy is JSON");
    if let Some(shared) = shared {
        assert_eq!(
            copy, shared,
            "{copy_path} is out of date with {shared_path}; run with EZ_UPDATE_GOLDEN=1"
        );
    }
    copy
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[track_caller]
fn assert_shape_agrees(reference: &Value, ours: &Value, what: &str) {
    for (field, expected) in reference.as_object().expect("reference is an object") {
        let actual = ours
            .get(field)
            .unwrap_or_else(|| panic!("{what} lacks the contract field {field:?}: {ours}"));
        assert_eq!(
            json_type(actual),
            json_type(expected),
            "{what}.{field} has type {} where the contract has {}",
            json_type(actual),
            json_type(expected)
        );
    }
}

#[track_caller]
fn replace(value: &mut Value, field: &str, expected: &Value, placeholder: &str) {
    let slot = value
        .get_mut(field)
        .unwrap_or_else(|| panic!("no {field} to replace"));
    assert_eq!(&*slot, expected, "{field}");
    *slot = json!(placeholder);
}

async fn golden_routing_entries_and_contract_shapes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    const SECRET: &str = "sk-golden-0123456789GOLD";
    let group = create_group(
        &app,
        json!({
            "name": "golden-openai",
            "type": "openai",
            "models": ["gpt-4o", "gpt-4o-mini"],
            "static_headers": { "X-Team": "gold" },
            "route_group": "premium",
        }),
    )
    .await;
    let gid = id_of(&group);
    let key = create_key(
        &app,
        json!({ "group_id": gid, "api_key": SECRET, "weight": 2, "ban_reason": "none", "ban_until": YEAR_2100 }),
    )
    .await;
    let kid = id_of(&key);
    let other = id_of(
        &create_group(
            &app,
            json!({ "name": "golden-router", "type": "compatible", "base_url": "https://router.example/v1", "models": ["gpt-4o-a", "gpt-4o-b"] }),
        )
        .await,
    );
    let other_key = id_of(
        &create_key(
            &app,
            json!({ "group_id": other, "api_key": "sk-golden-other-00000OTHR" }),
        )
        .await,
    );
    let first_binding = id_of(
        &bind(
            &app,
            json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": gid, "weight": 3 }),
        )
        .await,
    );
    let other_binding = id_of(
        &bind(
            &app,
            json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": other, "selector_type": "regex", "selector_value": "gpt-4o" }),
        )
        .await,
    );

    // config:providers
    let provider = must(provider_entry(&app, kid).await, "provider entry");
    assert_shape_agrees(
        &contract_reference("provider_snapshot.json"),
        &provider,
        "config:providers entry",
    );
    let mut normalized = provider.clone();
    replace(&mut normalized, "id", &json!(kid), "<credential_id>");
    replace(
        &mut normalized,
        "name",
        &json!(format!("golden-openai#{kid}")),
        "golden-openai#<credential_id>",
    );
    replace(&mut normalized, "group_id", &json!(gid), "<group_id>");
    replace(&mut normalized, "api_key", &json!(SECRET), "<api_key>");
    assert_golden("routing_provider_entry.json", &normalized);

    // config:bindings
    let binding = must(binding_entry(&app, "default.gpt-4o").await, "binding entry");
    let mut normalized = binding.clone();
    let updated_at = binding["updated_at"].clone();
    assert!(updated_at.is_i64(), "updated_at: {updated_at}");
    replace(&mut normalized, "updated_at", &updated_at, "<unix_seconds>");
    let candidates = normalized["candidates"].as_array_mut().expect("candidates");
    replace(
        &mut candidates[0],
        "binding_id",
        &json!(first_binding),
        "<binding_id>",
    );
    replace(&mut candidates[0], "group_id", &json!(gid), "<group_id>");
    assert_eq!(candidates[0]["upstreams"], json!({ kid.to_string(): "gpt-4o" }));
    candidates[0]["upstreams"] = json!({ "<credential_id>": "gpt-4o" });
    replace(
        &mut candidates[1],
        "binding_id",
        &json!(other_binding),
        "<other_binding_id>",
    );
    replace(&mut candidates[1], "group_id", &json!(other), "<other_group_id>");
    let detail = candidates[1]["error_detail"]
        .as_str()
        .expect("error_detail of the ambiguous candidate")
        .replace(
            &format!("credential {other_key}"),
            "credential <other_credential_id>",
        );
    candidates[1]["error_detail"] = json!(detail);
    assert_golden("routing_binding_entry.json", &normalized);

    // meta:models
    let model = must(model_entry(&app, "default.gpt-4o").await, "model entry");
    assert_shape_agrees(
        &contract_reference("model_snapshot.json"),
        &model,
        "meta:models entry",
    );
    assert_golden("routing_model_entry.json", &model);

    // The candidate shape SPEC §7 names, field by field.
    for field in [
        "group_id",
        "route_group",
        "weight",
        "selector_type",
        "selector_value",
        "status",
        "error",
        "upstreams",
    ] {
        assert!(
            binding["candidates"][0].get(field).is_some(),
            "candidate lacks {field}"
        );
    }
    for field in [
        "weight",
        "ban_until",
        "ban_reason",
        "access_token",
        "refresh_token",
        "expires_at",
        "account_id",
        "project_id",
        "static_headers",
        "headers_profile",
    ] {
        assert!(provider.get(field).is_some(), "provider entry lacks {field}");
    }
    check_metas(&app).await;
}

// ---------------------------------------------------------------------------------------
// Model registry
// ---------------------------------------------------------------------------------------

fn find_model<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["name"] == name)
}

async fn model_registry_aggregation_and_overrides(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let g1 = id_of(
        &create_group(
            &app,
            json!({ "name": "oa", "type": "openai", "models": ["gpt-4o", "gpt-4o-mini"] }),
        )
        .await,
    );
    let g2 = id_of(
        &create_group(
            &app,
            json!({ "name": "mirror", "type": "compatible", "base_url": "http://m/v1", "models": ["gpt-4o", "house-llm"] }),
        )
        .await,
    );
    create_key(
        &app,
        json!({ "group_id": g1, "api_key": "sk-models-1-000000M001" }),
    )
    .await;
    create_key(
        &app,
        json!({ "group_id": g1, "api_key": "sk-models-2-000000M002", "models": ["gpt-4o"] }),
    )
    .await;
    create_key(
        &app,
        json!({ "group_id": g2, "api_key": "sk-models-3-000000M003" }),
    )
    .await;
    bind(
        &app,
        json!({ "namespace": "default", "public_model": "smart", "group_id": g1, "selector_value": "gpt-4o" }),
    )
    .await;
    bind(
        &app,
        json!({ "namespace": "default", "public_model": "house", "group_id": g2, "selector_value": "house-llm" }),
    )
    .await;

    let list = app
        .admin_get("/admin/models?page_size=500")
        .await
        .expect(200)
        .body;
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, vec!["gpt-4o", "gpt-4o-mini", "house-llm"]);
    assert_eq!(list["total"], 3);
    let gpt4o = must(find_model(&list, "gpt-4o"), "gpt-4o");
    assert_eq!(gpt4o["kind"], "chat");
    assert_eq!(gpt4o["supports_vision"], true);
    assert_eq!(gpt4o["context_window"], 128000);
    assert_eq!(gpt4o["source"], "catalog");
    assert_eq!(
        gpt4o["served_by"],
        json!([
            { "group_id": g1, "group": "oa", "type": "openai", "credentials": 2 },
            { "group_id": g2, "group": "mirror", "type": "compatible", "credentials": 1 },
        ])
    );
    let mini = must(find_model(&list, "gpt-4o-mini"), "gpt-4o-mini");
    assert_eq!(
        mini["served_by"],
        json!([{ "group_id": g1, "group": "oa", "type": "openai", "credentials": 1 }])
    );
    let house = must(find_model(&list, "house-llm"), "house-llm");
    assert_eq!(house["source"], "unknown");
    assert!(find_model(&list, "claude-sonnet-4-5").is_none());

    // ?all=true adds the catalogue models nobody serves.
    let all = app
        .admin_get("/admin/models?all=true&page_size=500")
        .await
        .expect(200)
        .body;
    let claude = must(
        find_model(&all, "claude-sonnet-4-5"),
        "claude-sonnet-4-5 with all=true",
    );
    assert_eq!(claude["served_by"], json!([]));
    assert_eq!(claude["source"], "catalog");
    assert!(all["total"].as_i64().expect("total") > 50);

    // Overrides: create, conflict, replace, delete; each reaches meta:models.
    let smart = must(model_entry(&app, "default.smart").await, "model entry");
    assert_eq!(smart["context_window"], 128000);
    assert_eq!(smart["supports_vision"], true);
    let mut version = check_metas(&app).await[bus_keys::MODELS_META];

    let created = app
        .admin_post(
            "/admin/models",
            json!({ "name": "gpt-4o", "context_window": 1000, "supports_reasoning": true }),
        )
        .await
        .expect(201)
        .body;
    assert_eq!(created["name"], "gpt-4o");
    assert_eq!(created["context_window"], 1000);
    assert_eq!(
        created["supports_vision"], true,
        "untouched fields keep the catalogue's"
    );
    assert_eq!(created["source"], "catalog_and_override");
    assert_eq!(created["override"]["context_window"], 1000);
    let smart = must(model_entry(&app, "default.smart").await, "model entry");
    assert_eq!(smart["context_window"], 1000);
    assert_eq!(smart["supports_reasoning"], true);
    let now = check_metas(&app).await[bus_keys::MODELS_META];
    assert!(now > version, "meta:models_meta version did not change");
    version = now;
    app.admin_post("/admin/models", json!({ "name": "gpt-4o", "context_window": 5 }))
        .await
        .expect_error(409, "conflict");
    app.admin_post("/admin/models", json!({ "name": "x", "kind": "magic" }))
        .await
        .expect_error(400, "invalid_field");
    app.admin_post("/admin/models", json!({ "name": "x", "context_window": 0 }))
        .await
        .expect_error(400, "invalid_field");

    let replaced = app
        .admin_put("/admin/models/gpt-4o", json!({ "supports_vision": false }))
        .await
        .expect(200)
        .body;
    assert_eq!(replaced["supports_vision"], false);
    assert_eq!(
        replaced["context_window"], 128000,
        "PUT replaces the whole override"
    );
    assert_eq!(replaced["override"], json!({ "supports_vision": false }));
    let smart = must(model_entry(&app, "default.smart").await, "model entry");
    assert_eq!(smart["supports_vision"], false);
    assert_eq!(smart["context_window"], 128000);
    let now = check_metas(&app).await[bus_keys::MODELS_META];
    assert!(now > version, "meta:models_meta version did not change");
    version = now;

    // A model the catalogue lacks.
    let house_override = app
        .admin_put(
            "/admin/models/house-llm",
            json!({ "kind": "chat", "context_window": 32000, "supports_functions": true }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(house_override["source"], "override");
    let house = must(model_entry(&app, "default.house").await, "model entry");
    assert_eq!(house["context_window"], 32000);
    assert_eq!(house["supports_functions"], true);
    let list = app.admin_get("/admin/models").await.expect(200).body;
    assert_eq!(
        must(find_model(&list, "house-llm"), "house-llm")["served_by"][0]["group_id"],
        g2
    );

    app.admin_delete("/admin/models/gpt-4o").await.expect(204);
    app.admin_delete("/admin/models/gpt-4o")
        .await
        .expect_error(404, "model_override_not_found");
    app.admin_delete("/admin/models/claude-sonnet-4-5")
        .await
        .expect_error(404, "model_override_not_found");
    let smart = must(model_entry(&app, "default.smart").await, "model entry");
    assert_eq!(smart["supports_vision"], true);
    assert_eq!(smart["supports_reasoning"], false);
    let list = app.admin_get("/admin/models").await.expect(200).body;
    let gpt4o = must(find_model(&list, "gpt-4o"), "gpt-4o");
    assert_eq!(gpt4o["source"], "catalog");
    assert_eq!(gpt4o["override"], Value::Null);
    let now = check_metas(&app).await[bus_keys::MODELS_META];
    assert!(now > version, "meta:models_meta version did not change");

    // Names with a slash travel URL-encoded.
    let slashed = app
        .admin_put(
            "/admin/models/vendor%2Fhouse-v2",
            json!({ "context_window": 4096 }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(slashed["name"], "vendor/house-v2");
    assert_eq!(slashed["context_window"], 4096);
    app.admin_delete("/admin/models/vendor%2Fhouse-v2")
        .await
        .expect(204);

    // An override of a model nobody serves is listed too.
    app.admin_post(
        "/admin/models",
        json!({ "name": "future-model", "kind": "embedding" }),
    )
    .await
    .expect(201);
    let list = app.admin_get("/admin/models").await.expect(200).body;
    let future = must(find_model(&list, "future-model"), "future-model");
    assert_eq!(future["kind"], "embedding");
    assert_eq!(future["served_by"], json!([]));
}

// ---------------------------------------------------------------------------------------
// Refresh events and concurrency
// ---------------------------------------------------------------------------------------

/// The refresh events received within a short while, as (resource, version).
async fn drain_events(refresh: &mut ez_bus::Subscription) -> Vec<(String, i64)> {
    use futures_util::StreamExt;
    let mut events = Vec::new();
    while let Ok(Some(raw)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), refresh.next()).await
    {
        let event: Value = serde_json::from_str(&raw).expect("refresh event is JSON");
        let timestamp = event["timestamp"].as_i64().expect("timestamp");
        assert!(
            (now_unix() - 600..=now_unix() + 5).contains(&timestamp),
            "{event}"
        );
        events.push((
            event["resource"].as_str().expect("resource").to_owned(),
            event["version"].as_i64().expect("version"),
        ));
    }
    events
}

async fn meta_version(app: &TestApp, meta: &str) -> i64 {
    must(bus_hash(app, meta).await.get("version"), "meta version")
        .parse()
        .expect("version")
}

async fn routing_changes_are_announced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut refresh = app
        .state
        .bus
        .subscribe(bus_keys::REFRESH_CHANNEL)
        .await
        .expect("subscribe");
    let gid = id_of(
        &create_group(
            &app,
            json!({ "name": "oa", "type": "openai", "models": ["gpt-4o"] }),
        )
        .await,
    );
    drain_events(&mut refresh).await;

    create_key(
        &app,
        json!({ "group_id": gid, "api_key": "sk-announce-0000000A001" }),
    )
    .await;
    let events = drain_events(&mut refresh).await;
    let providers_version = meta_version(&app, bus_keys::PROVIDERS_META).await;
    assert!(
        events.contains(&(bus_keys::resource::PROVIDERS.to_owned(), providers_version)),
        "no providers event with the meta's version {providers_version}: {events:?}"
    );

    bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": gid }),
    )
    .await;
    let events = drain_events(&mut refresh).await;
    for (resource, meta) in [
        (bus_keys::resource::BINDINGS, bus_keys::BINDINGS_META),
        (bus_keys::resource::MODELS, bus_keys::MODELS_META),
    ] {
        let version = meta_version(&app, meta).await;
        assert!(
            events.contains(&(resource.to_owned(), version)),
            "no {resource} event with the meta's version {version}: {events:?}"
        );
    }

    app.admin_put("/admin/models/gpt-4o", json!({ "context_window": 1234 }))
        .await
        .expect(200);
    let events = drain_events(&mut refresh).await;
    let version = meta_version(&app, bus_keys::MODELS_META).await;
    assert!(
        events.contains(&(bus_keys::resource::MODELS.to_owned(), version)),
        "no models event after an override: {events:?}"
    );

    app.admin_post("/admin/sync", json!({})).await.expect(200);
    let events = drain_events(&mut refresh).await;
    assert!(
        events
            .iter()
            .any(|(resource, _)| resource == bus_keys::resource::ALL),
        "no event after a full sync: {events:?}"
    );
}

async fn concurrent_changes_leave_the_bus_consistent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let gid = id_of(
        &create_group(
            &app,
            json!({ "name": "busy", "type": "openai", "models": ["gpt-4o"] }),
        )
        .await,
    );
    let mut keys = Vec::new();
    for i in 0..32 {
        let body = json!({ "group_id": gid, "api_key": format!("sk-concurrent-{i:02}-00000000C0{i:02}") });
        keys.push(id_of(&create_key(&app, body).await));
    }
    bind(
        &app,
        json!({ "namespace": "default", "public_model": "gpt-4o", "group_id": gid }),
    )
    .await;

    for round in 0..16_usize {
        let wanted: Vec<(i64, &str)> = keys
            .iter()
            .enumerate()
            .map(|(i, kid)| {
                let status = if (i + round) % 2 == 0 {
                    "active"
                } else {
                    "manual_disabled"
                };
                (*kid, status)
            })
            .collect();
        let shared = &app;
        let requests = wanted.iter().map(|(kid, status)| {
            let path = format!("/admin/api-keys/{kid}");
            let body = json!({ "status": status, "weight": round + 1 });
            async move { shared.admin_put(&path, body).await }
        });
        for resp in futures_util::future::join_all(requests).await {
            resp.expect(200);
        }

        let expected: serde_json::Map<String, Value> = wanted
            .iter()
            .filter(|(_, status)| *status == "active")
            .map(|(kid, _)| (kid.to_string(), json!("gpt-4o")))
            .collect();
        let entry = must(binding_entry(&app, "default.gpt-4o").await, "binding entry");
        assert_eq!(
            upstreams_of(&entry, gid),
            Value::Object(expected),
            "round {round}: concurrent changes left a stale binding entry on the bus"
        );
        for (kid, status) in &wanted {
            let provider = must(provider_entry(&app, *kid).await, "provider entry");
            assert_eq!(provider["status"], *status, "round {round}: credential {kid}");
            assert_eq!(provider["weight"], round + 1, "round {round}: credential {kid}");
        }
        check_metas(&app).await;
        let incremental = routing_state(&app).await;
        app.admin_post("/admin/sync", json!({})).await.expect(200);
        assert_eq!(
            routing_state(&app).await,
            incremental,
            "round {round}: the incremental state differs from a full sync"
        );
    }
}
