//! Bad input on every endpoint: a 4xx in the error envelope, never a 500, and nothing
//! changes.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{ADMIN_TOKEN, TestApp};
use ez_control_plane::testing::Backend;

both_backends!(malformed_json_changes_nothing);

async fn malformed_json_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.create_master(json!({ "name": "acme" })).await;
    let before = app.state_snapshot().await;
    app.raw(
        reqwest::Method::POST,
        "/admin/masters",
        Some(ADMIN_TOKEN),
        "application/json",
        "{\"name\": ",
    )
    .await
    .expect_error(400, "invalid_json");
    assert_eq!(app.state_snapshot().await, before);
}
