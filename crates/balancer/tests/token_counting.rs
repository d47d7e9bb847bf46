//! Token counting on every family that counts: Gemini's `countTokens` passed to Gemini
//! and Vertex upstreams as is and translated for Anthropic's `count_tokens`, Anthropic's
//! `count_tokens` translated for a Gemini upstream; each answer in the client's shape,
//! every request within the upstream's rules, and a clear 400 where the family cannot
//! count (OpenAI).

mod support;

use ez_control_plane::testing::Backend;
use ez_test_upstreams::anthropic as mock_anthropic;
use ez_test_upstreams::gemini::{self, ACCESS_TOKEN, KEY, MODEL};
use serde_json::{Value, json};
use support::{Gateway, both_backends};

both_backends!(tokens_are_counted_where_a_family_can_count);

const CLAUDE_KEY: &str = "sk-ant-count-1";

async fn tokens_are_counted_where_a_family_can_count(backend: Backend) {
    let gw = Gateway::start(backend).await;
    let (origin, gemini_seen) = gemini::start().await;
    let claude_seen = mock_anthropic::Seen::default();
    let claude = mock_anthropic::start(CLAUDE_KEY, claude_seen.clone()).await;
    gw.bind(
        "gemini",
        &origin,
        json!({}),
        json!({ "api_key": KEY }),
        "gem",
        MODEL,
    )
    .await;
    let vertex = json!({ "google_project": "proj-c", "google_location": "us-central1" });
    gw.bind(
        "vertex",
        &origin,
        vertex,
        json!({ "api_key": ACCESS_TOKEN }),
        "vtx",
        MODEL,
    )
    .await;
    gw.bind(
        "anthropic",
        &claude,
        json!({}),
        json!({ "api_key": CLAUDE_KEY }),
        "claude",
        "claude-sonnet-4-5",
    )
    .await;
    gw.add_route("oai", &gw.upstream, &[("sk-upstream-good", 1)], "gpt", 1)
        .await;
    let key = gw.add_tenant("acme", json!({}), json!({})).await.key;
    let google = [("x-goog-api-key", key.as_str())];
    let anthropic = [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01")];
    let contents = json!({ "contents": [{ "role": "user", "parts": [{ "text": "How many tokens?" }] }] });

    for (public, expected) in [
        ("gem", gemini::PROMPT_TOKENS),
        ("vtx", gemini::PROMPT_TOKENS),
        ("claude", mock_anthropic::INPUT_TOKENS),
    ] {
        let url = format!("/v1beta/models/{public}:countTokens");
        let (status, text) = gw.post_checked(&url, &google, contents.clone()).await;
        assert_eq!(status, 200, "{public}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["totalTokens"], expected, "{public}: {body}");
    }
    let paths: Vec<String> = gemini_seen
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _, _)| p.clone())
        .collect();
    assert!(paths[0].starts_with(&format!("{MODEL}:countTokens")), "{paths:?}");
    assert!(
        paths[1].starts_with(&format!(
            "projects/proj-c/locations/us-central1/publishers/google/models/{MODEL}:countTokens"
        )),
        "{paths:?}"
    );
    assert_eq!(claude_seen.lock().unwrap()[0].0["model"], "claude-sonnet-4-5");

    // Anthropic's counting, served by Gemini: the conversation goes whole (system included).
    let count =
        json!({ "model": "gem", "system": "Be brief.", "messages": [{ "role": "user", "content": "hi" }] });
    let (status, text) = gw
        .post_checked("/v1/messages/count_tokens", &anthropic, count)
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({ "input_tokens": gemini::PROMPT_TOKENS })
    );
    let sent = gemini_seen.lock().unwrap().last().unwrap().1.clone();
    assert_eq!(sent["generateContentRequest"]["model"], format!("models/{MODEL}"));
    assert_eq!(
        sent["generateContentRequest"]["systemInstruction"]["parts"][0]["text"],
        "Be brief."
    );

    // OpenAI cannot count: a clear 400, nothing sent.
    let (status, text) = gw
        .post_checked("/v1beta/models/gpt:countTokens", &google, contents)
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("unsupported_endpoint"), "{text}");
    assert!(gw.mock.requests().is_empty());

    let broken = gemini::broken(&gemini_seen);
    assert!(
        broken.is_empty(),
        "requests that broke Gemini's rules: {broken:?}"
    );
    let claude_broken: Vec<_> = claude_seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, r)| r.clone())
        .collect();
    assert!(
        claude_broken.is_empty(),
        "requests that broke Anthropic's rules: {claude_broken:?}"
    );
    let logs = gw.wait_for_logs(5).await;
    let formats: Vec<&str> = logs
        .iter()
        .filter_map(|l| l["upstream_format"].as_str())
        .collect();
    assert!(
        formats.contains(&"gemini_count_tokens") && formats.contains(&"anthropic_count_tokens"),
        "{logs:?}"
    );
}
