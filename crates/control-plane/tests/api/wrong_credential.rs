//! A credential of the wrong kind is told which kind the route needs: a child key on an
//! admin or master route, a master key on an admin route, the admin token on a master
//! route. The words name the credential needed, so the operator knows what to send.

use ez_control_plane::testing::Backend;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, TestApp};

both_backends!(each_wrong_kind_names_the_kind_needed);

async fn each_wrong_kind_names_the_kind_needed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, master_key) = app.create_master(json!({ "name": "acme" })).await;
    let (_, child_key) = app.issue_key(&master_key, json!({})).await;

    let cases = [
        // (route, credential, code, words the message must hold)
        (
            "/v1/tokens",
            child_key.as_str(),
            "master_required",
            &["child key", "master key (ezm-"][..],
        ),
        (
            "/admin/masters",
            child_key.as_str(),
            "admin_required",
            &["child key", "admin token"][..],
        ),
        (
            "/admin/masters",
            master_key.as_str(),
            "admin_required",
            &["master credential", "admin token", "/v1/tokens"][..],
        ),
        (
            "/v1/tokens",
            ADMIN_TOKEN,
            "master_required",
            &["admin credential", "master key (ezm-"][..],
        ),
    ];
    for (route, credential, code, words) in cases {
        let resp = app.get(route, credential).await.expect_error(403, code);
        let message = resp.body["error"]["message"].as_str().expect("message");
        for word in words {
            assert!(message.contains(word), "{route}: {message:?} lacks {word:?}");
        }
        assert!(!message.contains(credential), "{route}: the credential is echoed");
    }
}
