//! One OAuth refresh-token grant at each provider's token endpoint, as its official tool
//! sends it: Claude Code and Codex post JSON with their public client ids; Gemini CLI and
//! Antigravity post a form to Google's endpoint with their installed-app client (public by
//! Google's design for installed apps). The answer: a new access token, maybe a rotated
//! refresh token, its lifetime — or why not.

use std::time::Duration;

use ez_config::TokenRefreshConfig;
use ez_contract::provider::ProviderType;
use serde_json::{Value, json};

const CLAUDE_CODE_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
const CODEX_CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
const GEMINI_CLI_CLIENT: (&str, &str) = (
    "681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
    "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",
);
const ANTIGRAVITY_CLIENT: (&str, &str) = (
    "1071006060591-tmhssin2h21lcre235vtolojh4g403ep.apps.googleusercontent.com",
    "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",
);
const TIMEOUT: Duration = Duration::from_secs(20);

/// A refreshed access token.
#[derive(Debug, PartialEq, Eq)]
pub struct Tokens {
    pub access_token: String,
    /// A rotated refresh token, when the provider sent one.
    pub refresh_token: Option<String>,
    /// Seconds the access token lives.
    pub expires_in: Option<i64>,
}

/// Why a refresh gave no token.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// The refresh token is revoked or expired (`invalid_grant`, or the endpoint refused
    /// the client): retrying cannot help.
    Revoked(String),
    /// A network error, a 5xx, a 429, an answer without a token: retry later.
    Transient(String),
}

pub(super) fn form(pairs: &[(&str, &str)]) -> String {
    fn encode(value: &str) -> String {
        value
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request for `kind`'s endpoint: URL, content type and body.
fn request(
    config: &TokenRefreshConfig,
    kind: ProviderType,
    refresh_token: &str,
) -> Option<(String, &'static str, String)> {
    let grant = |url: &str, (id, secret): (&str, &str)| {
        let body = form(&[
            ("client_id", id),
            ("client_secret", secret),
            ("refresh_token", refresh_token),
            ("grant_type", "refresh_token"),
        ]);
        (url.to_owned(), "application/x-www-form-urlencoded", body)
    };
    Some(match kind {
        ProviderType::ClaudeCode => {
            let body = json!({ "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": CLAUDE_CODE_CLIENT_ID });
            (
                config.claude_code_token_url.clone(),
                "application/json",
                body.to_string(),
            )
        }
        ProviderType::Codex => {
            let body = json!({ "client_id": CODEX_CLIENT_ID, "grant_type": "refresh_token",
                "refresh_token": refresh_token, "scope": "openid profile email" });
            (
                config.codex_token_url.clone(),
                "application/json",
                body.to_string(),
            )
        }
        ProviderType::GeminiCli => grant(&config.gemini_cli_token_url, GEMINI_CLI_CLIENT),
        ProviderType::Antigravity => grant(&config.antigravity_token_url, ANTIGRAVITY_CLIENT),
        _ => return None,
    })
}

/// Reads a token endpoint's answer (`status`, body).
pub fn answer(status: u16, body: &[u8]) -> Result<Tokens, Failure> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        let access_token = value["access_token"].as_str().filter(|t| !t.is_empty());
        let Some(access_token) = access_token else {
            return Err(Failure::Transient(format!(
                "status {status} without an access_token"
            )));
        };
        return Ok(Tokens {
            access_token: access_token.to_owned(),
            refresh_token: value["refresh_token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            expires_in: value["expires_in"].as_i64(),
        });
    }
    // OAuth's error code, and a bounded description (never a token: endpoints do not echo them).
    let code = value["error"]
        .as_str()
        .or_else(|| value["error"]["type"].as_str())
        .unwrap_or("no error code");
    let description = value["error_description"]
        .as_str()
        .or_else(|| value["error"]["message"].as_str())
        .unwrap_or_default();
    let why = ez_contract::report::clean_copy(&format!("{status} {code}: {description}"), 300);
    let revoked = matches!(code, "invalid_grant" | "invalid_client" | "unauthorized_client")
        || (status == 401 && code != "no error code");
    if revoked && status < 500 {
        Err(Failure::Revoked(why))
    } else {
        Err(Failure::Transient(why))
    }
}

/// Refreshes the access token of a `kind` credential.
pub async fn refresh(
    http: &reqwest::Client,
    config: &TokenRefreshConfig,
    kind: ProviderType,
    refresh_token: &str,
) -> Result<Tokens, Failure> {
    let Some((url, content_type, body)) = request(config, kind, refresh_token) else {
        return Err(Failure::Revoked(format!(
            "{} credentials have no token refresh",
            kind.as_str()
        )));
    };
    post(http, url, content_type, body).await
}

/// Posts a grant to a token endpoint and reads its answer.
pub(super) async fn post(
    http: &reqwest::Client,
    url: String,
    content_type: &'static str,
    body: String,
) -> Result<Tokens, Failure> {
    let sent = http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .header(reqwest::header::ACCEPT, "application/json")
        .timeout(TIMEOUT)
        .body(body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        // The error's kind only: its text may hold the URL, never needed here.
        Err(e) if e.is_timeout() => {
            return Err(Failure::Transient(
                "the token endpoint did not answer in time".into(),
            ));
        }
        Err(_) => {
            return Err(Failure::Transient(
                "the token endpoint could not be reached".into(),
            ));
        }
    };
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    answer(status, &body[..body.len().min(64 * 1024)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_is_asked_as_its_tool_asks() {
        let config = ez_config::Config::defaults().token_refresh;
        let (url, kind, body) = request(&config, ProviderType::ClaudeCode, "rt-1").unwrap();
        assert_eq!(url, "https://console.anthropic.com/v1/oauth/token");
        assert_eq!(kind, "application/json");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({ "grant_type": "refresh_token", "refresh_token": "rt-1", "client_id": CLAUDE_CODE_CLIENT_ID })
        );
        let (_, _, body) = request(&config, ProviderType::Codex, "rt-2").unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["client_id"],
            CODEX_CLIENT_ID
        );
        let (url, kind, body) = request(&config, ProviderType::GeminiCli, "1//a b&c").unwrap();
        assert_eq!(
            (url.as_str(), kind),
            (
                "https://oauth2.googleapis.com/token",
                "application/x-www-form-urlencoded"
            )
        );
        assert!(body.contains("refresh_token=1%2F%2Fa%20b%26c"), "{body}");
        assert!(body.contains("grant_type=refresh_token"));
        assert!(request(&config, ProviderType::OpenAi, "x").is_none());
    }

    #[test]
    fn answers_are_tokens_revocations_or_transient_failures() {
        let ok = answer(
            200,
            br#"{"access_token":"at-2","refresh_token":"rt-3","expires_in":3600,"token_type":"Bearer"}"#,
        );
        assert_eq!(
            ok,
            Ok(Tokens {
                access_token: "at-2".into(),
                refresh_token: Some("rt-3".into()),
                expires_in: Some(3600)
            })
        );
        assert_eq!(
            answer(200, br#"{"access_token":"at-2"}"#).unwrap().refresh_token,
            None
        );
        assert!(
            matches!(answer(400, br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#),
            Err(Failure::Revoked(why)) if why == "400 invalid_grant: Token has been expired or revoked.")
        );
        assert!(matches!(answer(503, b"<html>"), Err(Failure::Transient(_))));
        assert!(matches!(
            answer(429, br#"{"error":"rate_limited"}"#),
            Err(Failure::Transient(_))
        ));
        assert!(matches!(answer(200, b"{}"), Err(Failure::Transient(_))));
    }
}
