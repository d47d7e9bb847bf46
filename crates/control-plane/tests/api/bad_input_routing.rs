//! Bad input on the routing-configuration endpoints: a 4xx in the error envelope, never a
//! 500, and nothing changes.

use ez_control_plane::testing::Backend;
use serde_json::json;

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(unknown_provider_type_is_422);

async fn unknown_provider_type_is_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = app.state_snapshot().await;
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "g", "type": "openai2" }),
    )
    .await
    .expect_error(422, "unknown_provider_type");
    assert_eq!(app.state_snapshot().await, before);
}
