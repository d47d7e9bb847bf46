//! Provider groups, credentials, bindings and the model registry through the admin API,
//! and the routing snapshot they produce on the bus.

use ez_control_plane::testing::Backend;
use serde_json::json;

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(a_preset_creates_a_group_with_masked_keys);

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
    assert_eq!(setup["api_keys"][0]["api_key"], "****cdef");
    assert!(!setup.to_string().contains("sk-live-0123456789abcdef"));
}
