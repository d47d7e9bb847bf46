//! The token refresh job against a mock token server: a credential about to expire gets a
//! new access token and its rotated refresh token in one write, synced to the bus; a
//! revoked refresh token disables the credential with the provider's reason; a transient
//! failure keeps the working token and backs off; racing refreshers make exactly one call
//! per credential (the lease).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ez_contract::time::now_unix;
use ez_control_plane::testing::{Backend, TestDatabase, test_bus};
use ez_control_plane::token_refresh::{Outcome, TokenRefresh};
use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(
    expiring_tokens_are_refreshed_revoked_ones_disable,
    racing_refreshers_call_once_per_credential,
    a_balancer_asks_for_a_refresh_now,
    vertex_service_account_keys_get_access_tokens
);

#[derive(Clone, Default)]
struct Mock {
    calls: Arc<AtomicUsize>,
}

/// Claude's token endpoint: `rt-good…` → a new token and a rotated refresh token;
/// `rt-revoked` → `invalid_grant`; anything else → 503.
async fn token(State(mock): State<Mock>, Json(body): Json<Value>) -> Response {
    let n = mock.calls.fetch_add(1, Ordering::SeqCst) + 1;
    assert_eq!(body["grant_type"], "refresh_token");
    assert_eq!(body["client_id"], "9d1c250a-e61b-44d9-88ed-5944d1962f5e");
    match body["refresh_token"].as_str().unwrap_or_default() {
        rt if rt.starts_with("rt-good") => Json(json!({
            "token_type": "Bearer", "access_token": format!("at-new-{n}"),
            "refresh_token": format!("{rt}-rotated"), "expires_in": 28800,
        }))
        .into_response(),
        "rt-revoked" => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": "Refresh token not found or invalid" })),
        )
            .into_response(),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "upstream connect error").into_response(),
    }
}

async fn start_mock() -> (String, Mock) {
    let mock = Mock::default();
    let app = axum::Router::new()
        .route("/v1/oauth/token", axum::routing::post(token))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/oauth/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, mock)
}

const STATS_TOKEN: &str = "internal-stats-token-0123456789";

async fn app_with(backend: Backend, token_url: &str) -> TestApp {
    let db = TestDatabase::create(backend).await;
    let bus = test_bus(backend).await;
    let url = token_url.to_owned();
    TestApp::start_with(db, bus, move |config| {
        config.token_refresh.claude_code_token_url = url;
        config.internal.stats_token = Some(ez_contract::SecretToken::from_plaintext(STATS_TOKEN));
    })
    .await
}

/// `POST /internal/apikeys/{id}/refresh` as a balancer sends it (`token`: the internal
/// token, if any); (status, body).
async fn ask_refresh(app: &TestApp, id: i64, fingerprint: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/internal/apikeys/{id}/refresh", app.base))
        .json(&json!({ "token_fingerprint": fingerprint }));
    if let Some(token) = token {
        request = request.header("x-internal-token", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn credential(app: &TestApp, group: i64, refresh_token: &str, expires_in: i64) -> i64 {
    app.admin_post(
        "/admin/api-keys",
        json!({ "group_id": group, "access_token": format!("at-old-{refresh_token}"),
            "refresh_token": refresh_token, "expires_at": now_unix() + expires_in }),
    )
    .await
    .expect(201)
    .id()
}

async fn claude_group(app: &TestApp) -> i64 {
    app.admin_post(
        "/admin/provider-groups",
        json!({ "name": "claude-pool", "type": "claude-code", "models": ["claude-sonnet-4-5"] }),
    )
    .await
    .expect(201)
    .id()
}

fn refresher(app: &TestApp, token_url: &str) -> Arc<TokenRefresh> {
    let mut config = ez_config::Config::defaults().token_refresh;
    config.claude_code_token_url = token_url.to_owned();
    TokenRefresh::new(app.state.clone(), config)
}

async fn expiring_tokens_are_refreshed_revoked_ones_disable(backend: Backend) {
    let (url, mock) = start_mock().await;
    let app = app_with(backend, &url).await;
    let group = claude_group(&app).await;
    let good = credential(&app, group, "rt-good", 30).await;
    let revoked = credential(&app, group, "rt-revoked", 30).await;
    let flaky = credential(&app, group, "rt-flaky", 30).await;
    let fresh = credential(&app, group, "rt-good-fresh", 6 * 3600).await;

    let refresh = refresher(&app, &url);
    let mut outcomes = refresh.refresh_due().await.unwrap();
    outcomes.sort();
    let mut expected = vec![
        (good, Outcome::Refreshed),
        (revoked, Outcome::Revoked),
        (flaky, Outcome::Failed),
    ];
    expected.sort();
    assert_eq!(outcomes, expected, "the fresh credential ({fresh}) is not due");
    assert_eq!(mock.calls.load(Ordering::SeqCst), 3);

    // The new token and the rotated refresh token, stored together and on the bus.
    let stored = app.state.store.get_api_key(good).await.unwrap();
    assert!(stored.access_token.expose().starts_with("at-new-"));
    assert_eq!(stored.refresh_token.expose(), "rt-good-rotated");
    assert!(stored.expires_at.is_some_and(|t| t > now_unix() + 28000));
    let bus = app.bus_snapshot().await;
    assert!(
        bus.values()
            .flat_map(|f| f.values())
            .any(|v| v.contains(stored.access_token.expose())),
        "synced"
    );

    // Revoked: disabled, the provider's reason kept.
    let disabled = app
        .admin_get(&format!("/admin/api-keys/{revoked}"))
        .await
        .expect(200)
        .body;
    assert_eq!(disabled["status"], "auto_disabled");
    assert!(
        disabled["ban_reason"].as_str().unwrap().contains("invalid_grant"),
        "{disabled}"
    );
    // Transient: the working token stays, and the retry waits (no call right away).
    let kept = app.state.store.get_api_key(flaky).await.unwrap();
    assert_eq!(kept.access_token.expose(), "at-old-rt-flaky");
    assert_eq!(kept.status, "active");
    let again = refresh.refresh_due().await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(mock.calls.load(Ordering::SeqCst), 3);
}

async fn racing_refreshers_call_once_per_credential(backend: Backend) {
    let (url, mock) = start_mock().await;
    let app = app_with(backend, &url).await;
    let group = claude_group(&app).await;
    for n in 0..50 {
        credential(&app, group, &format!("rt-good-{n}"), 20).await;
    }
    // Two refreshers on one database, as two control planes would be.
    let (a, b) = (refresher(&app, &url), refresher(&app, &url));
    let (ra, rb) = tokio::join!(a.refresh_due(), b.refresh_due());
    let refreshed = ra
        .unwrap()
        .into_iter()
        .chain(rb.unwrap())
        .filter(|(_, o)| *o == Outcome::Refreshed)
        .count();
    assert_eq!(refreshed, 50);
    assert_eq!(mock.calls.load(Ordering::SeqCst), 50, "one call per credential");
    // Nothing is due any more.
    assert!(a.refresh_due().await.unwrap().is_empty());
    assert_eq!(mock.calls.load(Ordering::SeqCst), 50);
}

async fn a_balancer_asks_for_a_refresh_now(backend: Backend) {
    use ez_contract::report::token_fingerprint;
    let (url, mock) = start_mock().await;
    let app = app_with(backend, &url).await;
    let group = claude_group(&app).await;
    // Far from expiry: the scheduled job would leave it alone.
    let id = credential(&app, group, "rt-good-now", 6 * 3600).await;
    let refused = token_fingerprint("at-old-rt-good-now");
    let stats = Some(STATS_TOKEN);

    // Bad input changes nothing.
    let (status, body) = ask_refresh(&app, id, &refused, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = ask_refresh(&app, id, "not-hex", stats).await;
    assert_eq!(
        (status, body["error"]["param"].as_str()),
        (400, Some("token_fingerprint")),
        "{body}"
    );
    let (status, body) = ask_refresh(&app, id, &refused.to_uppercase(), stats).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = ask_refresh(&app, 999_999, &refused, stats).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(mock.calls.load(Ordering::SeqCst), 0);

    app.admin_post(
        "/admin/bindings",
        json!({ "namespace": "default", "public_model": "claude-sonnet-4-5", "group_id": group }),
    )
    .await
    .expect(201);
    let meta = |key: &'static str| {
        let bus = app.state.bus.clone();
        async move { bus.hash_get(key, "version").await.unwrap() }
    };
    let (bindings, providers) = (
        meta(ez_contract::bus_keys::BINDINGS_META).await,
        meta(ez_contract::bus_keys::PROVIDERS_META).await,
    );

    // The refused token is the stored one: refreshed now, whatever its expiry.
    let (status, body) = ask_refresh(&app, id, &refused, stats).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("refreshed")),
        "{body}"
    );
    // Only the credential's entry is rewritten: the routes it serves stay as they were.
    assert_ne!(meta(ez_contract::bus_keys::PROVIDERS_META).await, providers);
    assert_eq!(meta(ez_contract::bus_keys::BINDINGS_META).await, bindings);
    assert!(bindings.is_some());
    assert_eq!(mock.calls.load(Ordering::SeqCst), 1);
    let key = app.state.store.get_api_key(id).await.unwrap();
    assert_eq!(key.access_token.expose(), "at-new-1");
    assert_eq!(key.refresh_token.expose(), "rt-good-now-rotated");
    // A late asker with the same refused token gets the new one, no second grant.
    let (status, body) = ask_refresh(&app, id, &refused, stats).await;
    assert_eq!(
        (status, body["outcome"].as_str()),
        (200, Some("current")),
        "{body}"
    );
    assert_eq!(mock.calls.load(Ordering::SeqCst), 1);

    // Revoked: disabled with the reason.
    let revoked = credential(&app, group, "rt-revoked", 6 * 3600).await;
    let (_, body) = ask_refresh(&app, revoked, &token_fingerprint("at-old-rt-revoked"), stats).await;
    assert_eq!(body["outcome"], "revoked", "{body}");
    assert_eq!(
        app.state.store.get_api_key(revoked).await.unwrap().status,
        "auto_disabled"
    );

    // An API-key credential has nothing to refresh.
    let openai = app
        .admin_post(
            "/admin/provider-groups",
            json!({ "name": "openai", "type": "openai", "models": ["gpt-4o"] }),
        )
        .await
        .expect(201)
        .id();
    let key = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": openai, "api_key": "sk-test-0001" }),
        )
        .await
        .expect(201)
        .id();
    let (_, body) = ask_refresh(&app, key, &token_fingerprint(""), stats).await;
    assert_eq!(body["outcome"], "not_refreshable", "{body}");
    assert_eq!(mock.calls.load(Ordering::SeqCst), 2);
}

const SERVICE_ACCOUNT: &str = include_str!("../fixtures/credentials/vertex_service_account.json");
const SERVICE_ACCOUNT_PUBLIC: &str = include_str!("../fixtures/credentials/vertex_service_account.pub.pem");

/// Google's token endpoint for the JWT bearer grant: the assertion must verify with the
/// fixture's public key and name the service account; then a token for an hour.
async fn google_token(State(mock): State<Mock>, body: String) -> Response {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    let n = mock.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let form: std::collections::HashMap<String, String> = body
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
        .collect();
    assert_eq!(form["grant_type"], "urn:ietf:params:oauth:grant-type:jwt-bearer");
    let public = rsa::RsaPublicKey::from_public_key_pem(SERVICE_ACCOUNT_PUBLIC).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_der(public.to_pkcs1_der().unwrap().as_bytes());
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_aud = false;
    match jsonwebtoken::decode::<Value>(&form["assertion"], &key, &validation) {
        Ok(jwt) if jwt.claims["iss"] == "ez-test@ez-test-project.iam.gserviceaccount.com" => Json(
            json!({ "access_token": format!("ya29.vertex-{n}"), "expires_in": 3599, "token_type": "Bearer" }),
        )
        .into_response(),
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "invalid_grant", "error_description": "Invalid JWT Signature." })),
        )
            .into_response(),
    }
}

async fn vertex_service_account_keys_get_access_tokens(backend: Backend) {
    let mock = Mock::default();
    let app_router = axum::Router::new()
        .route("/token", axum::routing::post(google_token))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app_router).await;
    });
    let db = TestDatabase::create(backend).await;
    let bus = test_bus(backend).await;
    let token_url = url.clone();
    let app = TestApp::start_with(db, bus, move |config| {
        config.token_refresh.google_token_url = token_url;
    })
    .await;
    let group = app
        .admin_post(
            "/admin/provider-groups",
            json!({ "name": "vertex", "type": "vertex", "google_project": "ez-test-project", "models": ["gemini-2.5-pro"] }),
        )
        .await
        .expect(201)
        .id();
    // The key file as Google issues it (pretty-printed JSON).
    let created = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": group, "api_key": SERVICE_ACCOUNT }),
        )
        .await
        .expect(201);
    let id = created.id();
    let shown = created.body.to_string();
    assert!(
        !shown.contains("PRIVATE KEY") && !shown.contains("MII"),
        "{shown}"
    );
    assert_eq!(
        created.body["account_id"],
        "ez-test@ez-test-project.iam.gserviceaccount.com"
    );
    // A key file that is not a service account's, or whose key is no key: 4xx, nothing stored.
    let mut wrong: Value = serde_json::from_str(SERVICE_ACCOUNT).unwrap();
    wrong["private_key"] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
    let refused = app
        .admin_post(
            "/admin/api-keys",
            json!({ "group_id": group, "api_key": wrong.to_string() }),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"]["param"], "api_key");

    let mut config = ez_config::Config::defaults().token_refresh;
    config.google_token_url = url;
    let refresh = TokenRefresh::new(app.state.clone(), config);
    let outcomes = refresh.refresh_due().await.unwrap();
    assert_eq!(outcomes, vec![(id, Outcome::Refreshed)]);
    let key = app.state.store.get_api_key(id).await.unwrap();
    assert_eq!(key.access_token.expose(), "ya29.vertex-1");
    assert!(key.expires_at.unwrap() > now_unix() + 3000);
    assert!(key.api_key.expose().starts_with('{'), "the key stays");
    assert!(
        refresh.refresh_due().await.unwrap().is_empty(),
        "fresh for an hour"
    );
    assert_eq!(mock.calls.load(Ordering::SeqCst), 1);
    // Balancers get the access token, which they present.
    let entry = app
        .state
        .bus
        .hash_get(ez_contract::bus_keys::PROVIDERS, &id.to_string())
        .await
        .unwrap()
        .unwrap();
    let entry: Value = serde_json::from_str(&entry).unwrap();
    assert_eq!(entry["access_token"], "ya29.vertex-1");
    // The key itself stays on the control plane: balancers get a marker.
    assert_eq!(entry["api_key"], r#"{"type":"service_account"}"#);
    assert!(!entry.to_string().contains("PRIVATE") && !entry.to_string().contains("MII"));
}
