//! `POST /admin/api-keys/import`: the credential files the official tools and CLIProxyAPI
//! write become subscription credentials — recognised by content, the account's
//! credential updated rather than duplicated, a file of another provider, a malformed
//! one or an API-key file refused with its reason and nothing written — and reach the
//! config bus like any credential.

use ez_control_plane::testing::Backend;
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    credential_files_import_into_their_group,
    only_subscription_groups_take_files
);

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/credentials/{name}", env!("CARGO_MANIFEST_DIR"));
    let content = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    json!({ "name": name, "content": content })
}

async fn group(app: &TestApp, name: &str, kind: &str) -> i64 {
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": name, "type": kind, "models": ["m"] }),
    )
    .await
    .expect(201)
    .id()
}

async fn credentials_of(app: &TestApp, group_id: i64) -> Vec<Value> {
    let page = app
        .admin_get(&format!("/admin/api-keys?group_id={group_id}"))
        .await
        .expect(200)
        .body;
    page["items"].as_array().unwrap().clone()
}

async fn credential_files_import_into_their_group(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let codex = group(&app, "codex-pool", "codex").await;
    let files = json!([
        fixture("codex-auth.json"),
        // The same ChatGPT account, as CLIProxyAPI keeps it: an update, not a second credential.
        fixture("cliproxyapi-codex.json"),
        fixture("claude-code.credentials.json"),
        fixture("codex-api-key-only.json"),
        fixture("malformed.json"),
    ]);
    let report = app
        .admin_post(
            "/admin/api-keys/import",
            json!({ "group_id": codex, "files": files }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(
        (&report["created"], &report["updated"], &report["refused"]),
        (&json!(1), &json!(1), &json!(3)),
        "{report}"
    );
    let lines = report["files"].as_array().unwrap();
    assert_eq!(lines[0]["outcome"], "created");
    assert_eq!(lines[0]["source"], "Codex auth.json");
    assert_eq!(lines[0]["account"], "00000000-0000-4000-8000-00000000c0de");
    assert_eq!(lines[1]["outcome"], "updated");
    assert_eq!(lines[1]["credential_id"], lines[0]["credential_id"]);
    assert!(
        lines[2]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot go into a codex group"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3]["reason"], "an OpenAI API key file, not a ChatGPT login");
    assert!(
        lines[4]["reason"].as_str().unwrap().starts_with("not JSON"),
        "{}",
        lines[4]
    );
    let text = report.to_string();
    assert!(
        !text.contains("fixture-codex-refresh") && !text.contains("eyJ"),
        "no secret in the report: {text}"
    );

    // One credential, holding the newer file's tokens; secrets masked.
    let stored = credentials_of(&app, codex).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["account_id"], "00000000-0000-4000-8000-00000000c0de");
    assert!(
        stored[0]["expires_at"]
            .as_i64()
            .is_some_and(|t| t > 1_700_000_000),
        "{}",
        stored[0]
    );
    assert!(
        !stored[0].to_string().contains("not-real"),
        "masked: {}",
        stored[0]
    );
    // It reached the config bus like any credential.
    let bus = app.bus_snapshot().await;
    let providers = bus
        .values()
        .flat_map(|fields| fields.values())
        .filter(|v| v.contains("codex-pool"))
        .count();
    assert!(providers >= 1, "{bus:?}");

    // The same file again: still one credential.
    let again = app
        .admin_post(
            "/admin/api-keys/import",
            json!({ "group_id": codex, "files": [fixture("codex-auth.json")] }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(again["files"][0]["outcome"], "updated");
    assert_eq!(credentials_of(&app, codex).await.len(), 1);

    // Each tool's file into its own kind of group.
    for (kind, file, source) in [
        (
            "claude-code",
            "claude-code.credentials.json",
            "Claude Code .credentials.json",
        ),
        ("claude-code", "cliproxyapi-claude.json", "CLIProxyAPI claude"),
        (
            "gemini-cli",
            "gemini-cli-oauth_creds.json",
            "Gemini CLI oauth_creds.json",
        ),
        ("gemini-cli", "cliproxyapi-gemini.json", "CLIProxyAPI gemini"),
        (
            "antigravity",
            "cliproxyapi-antigravity.json",
            "CLIProxyAPI antigravity",
        ),
    ] {
        let id = group(&app, &format!("{kind}-{}", source.len()), kind).await;
        let report = app
            .admin_post(
                "/admin/api-keys/import",
                json!({ "group_id": id, "files": [fixture(file)] }),
            )
            .await
            .expect(200)
            .body;
        assert_eq!(report["files"][0]["outcome"], "created", "{file}: {report}");
        assert_eq!(report["files"][0]["source"], source);
        assert_eq!(credentials_of(&app, id).await.len(), 1, "{file}");
    }
}

async fn only_subscription_groups_take_files(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let openai = app
        .admin_post(
            "/admin/provider-groups",
            json!({ "name": "oai", "type": "openai", "models": ["m"] }),
        )
        .await
        .expect(201)
        .id();
    app.admin_post(
        "/admin/api-keys/import",
        json!({ "group_id": openai, "files": [fixture("codex-auth.json")] }),
    )
    .await
    .expect_error(422, "not_a_subscription_group");
    app.admin_post(
        "/admin/api-keys/import",
        json!({ "group_id": 999_999, "files": [] }),
    )
    .await
    .expect_error(422, "group_not_found");
    let too_big = json!({ "name": "big.json", "content": "x".repeat(70 * 1024) });
    let codex = app
        .admin_post(
            "/admin/provider-groups",
            json!({ "name": "cx", "type": "codex", "models": ["m"] }),
        )
        .await
        .expect(201)
        .id();
    let report = app
        .admin_post(
            "/admin/api-keys/import",
            json!({ "group_id": codex, "files": [too_big] }),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(report["files"][0]["outcome"], "refused");
    assert_eq!(credentials_of(&app, codex).await.len(), 0);
}
