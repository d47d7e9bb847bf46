//! Credentials inside an upstream's `base_url` (userinfo, query values) are secrets like
//! the credentials' keys: masked in every response and in exports without secrets, kept
//! when their masked form is sent back, delivered unmasked to balancers only, and never
//! in a log line.

use ez_contract::redact::mask_url;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, captured_logs};

both_backends!(base_url_credentials_are_masked_and_kept);

const URL: &str =
    "https://proxy-user:proxy-pass-0001@proxy.example.com/v1?api-key=url-key-0002&api-version=2024-06-01";
const SECRETS: [&str; 2] = ["proxy-pass-0001", "url-key-0002"];

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}: {text}");
    }
}

async fn stored_url(app: &TestApp, id: i64) -> String {
    app.state.store.get_group(id).await.expect("group").base_url
}

async fn base_url_credentials_are_masked_and_kept(backend: ez_control_plane::testing::Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({ "name": "proxied", "type": "openai", "base_url": URL, "models": ["gpt-4o"] });
    let created = app.admin_post("/admin/provider-groups", body).await.expect(201);
    assert_no_secret("create", &created.text);
    let id = created.id();
    let masked = created.str("base_url");
    assert_eq!(masked, mask_url(URL));
    assert!(masked.contains("@proxy.example.com/v1?api-key=****"), "{masked}");
    let path = format!("/admin/provider-groups/{id}");
    let read = app.admin_get(&path).await.expect(200);
    assert_eq!(read.str("base_url"), masked);
    let list = app.admin_get("/admin/provider-groups").await.expect(200);
    assert_no_secret("list", &list.text);

    // Read-modify-write with the masked URL keeps the stored one.
    let put = json!({ "base_url": masked, "models": ["gpt-4o", "gpt-4o-mini"] });
    let updated = app.admin_put(&path, put).await.expect(200);
    assert_no_secret("update", &updated.text);
    assert_eq!(stored_url(&app, id).await, URL);
    // A masked URL that masks something else cannot be stored.
    let other = mask_url("https://someone:else-secret-9999@elsewhere.example.com/v1");
    app.admin_put(&path, json!({ "base_url": other }))
        .await
        .expect_error(400, "invalid_field");
    assert_eq!(stored_url(&app, id).await, URL);

    // Balancers get the real URL: they must call it.
    let cred = json!({ "group_id": id, "api_key": "sk-upstream-secret-0003" });
    let cred = app.admin_post("/admin/api-keys", cred).await.expect(201).id();
    let providers = app
        .state
        .bus
        .hash_get_all(ez_contract::bus_keys::PROVIDERS)
        .await
        .expect("providers");
    let entry = &providers[&cred.to_string()];
    assert!(entry.contains(URL), "{entry}");

    // The custom-endpoint shortcut answers masked too.
    let custom = json!({
        "name": "vllm", "base_url": "https://vllm.internal/v1?api-key=url-key-0002",
        "api_keys": ["token-0004"], "models": ["llama-3.3-70b-instruct"],
    });
    let custom = app
        .admin_post("/admin/providers/custom", custom)
        .await
        .expect(201);
    assert_no_secret("custom shortcut", &custom.text);

    // An export without secrets masks the URL; importing it keeps the stored URL.
    let doc = app.admin_get("/admin/export").await.expect(200);
    assert_no_secret("export", &doc.text);
    app.admin_post("/admin/import?policy=overwrite", doc.body)
        .await
        .expect(200);
    assert_eq!(stored_url(&app, id).await, URL);
    let full = app
        .admin_get("/admin/export?include_secrets=true")
        .await
        .expect(200);
    assert!(full.text.contains(URL), "export with secrets: {}", full.text);

    assert_no_secret("log", &captured_logs());
}
