//! Recognising and reading one OAuth credential file (pure: no I/O, no database).
//!
//! Shapes read (fixtures and their origins: `tests/fixtures/credentials/README.md`):
//! - Claude Code `~/.claude/.credentials.json`: `claudeAiOauth.{accessToken, refreshToken, expiresAt (ms)}`.
//! - Codex `auth.json`: `tokens.{id_token, access_token, refresh_token, account_id}`; the expiry
//!   is the access token's JWT `exp`, the e-mail and account id come from the id token too.
//! - Gemini CLI `~/.gemini/oauth_creds.json`: `access_token`, `refresh_token`, `id_token`,
//!   `expiry_date` (ms, sometimes fractional).
//! - CLIProxyAPI per-account files, told apart by `type` (`claude`, `codex`, `gemini`,
//!   `antigravity`): `access_token`, `refresh_token`, `id_token`, `email`, `account_id`,
//!   `project_id`, `expired` (RFC 3339); `gemini` nests the OAuth2 token in `token`
//!   (`access_token`, `refresh_token`, `expiry`); `antigravity` may give `expires_in` + `timestamp` (ms).
//!
//! Antigravity's own login lives in the IDE's SQLite state database, not in a file this reads.

use ez_contract::provider::ProviderType;
use serde_json::{Map, Value};

type Object = Map<String, Value>;

/// One credential read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedCredential {
    /// `ClaudeCode`, `Codex`, `GeminiCli` or `Antigravity`.
    pub kind: ProviderType,
    /// What the file was recognised as, for the report: e.g. "Claude Code .credentials.json",
    /// "Codex auth.json", "Gemini CLI oauth_creds.json", "CLIProxyAPI claude", "CLIProxyAPI antigravity".
    pub source: &'static str,
    pub access_token: String,
    pub refresh_token: String,
    /// Unix seconds; None when the file does not say.
    pub expires_at: Option<i64>,
    /// The account's stable id used to deduplicate: the provider's account id when the file
    /// has one (Codex `account_id` / the id token's `https://api.openai.com/auth`.`chatgpt_account_id`),
    /// else the account e-mail (from the file or the id token's `email` claim), else "".
    pub account_id: String,
    /// Google Cloud project (Gemini CLI / Antigravity) when the file has one, else "".
    pub project_id: String,
    pub email: String,
}

/// The largest file read.
const MAX_FILE_BYTES: usize = 64 * 1024;
/// The longest string (or key) accepted anywhere in a file.
const MAX_STRING_BYTES: usize = 16 * 1024;
const OPENAI_AUTH_CLAIM: &str = "https://api.openai.com/auth";
const API_KEY_ONLY: &str = "an OpenAI API key file, not a ChatGPT login";
const NO_TOKENS: &str = "no refresh token or access token";

/// Recognises and reads one file; `Err` is a short reason for the operator
/// ("not JSON", "no refresh token or access token", "an OpenAI API key file, not a ChatGPT
/// login", "unrecognised format" …). Reasons never quote the file's values.
///
/// A credential needs a non-empty refresh token or access token: a file without a refresh
/// token is accepted when it has an access token (usable until it expires, not renewable),
/// and one with only a refresh token is accepted too (the access token is fetched on first use).
pub fn read(content: &[u8]) -> Result<ImportedCredential, String> {
    if content.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {} KB", MAX_FILE_BYTES / 1024));
    }
    let value: Value = serde_json::from_slice(content)
        .map_err(|e| format!("not JSON (line {}, column {})", e.line(), e.column()))?;
    check_lengths(&value)?;
    let Value::Object(file) = &value else {
        return Err("not a JSON object".into());
    };
    let credential = if let Some(inner) = file.get("claudeAiOauth") {
        claude_code(inner)?
    } else if file.contains_key("tokens") || file.contains_key("OPENAI_API_KEY") {
        codex_auth(file)?
    } else if let Some(kind) = file.get("type") {
        cliproxyapi(file, kind)?
    } else if is_gemini_cli(file) {
        gemini_cli(file)?
    } else {
        return Err("unrecognised format".into());
    };
    if credential.access_token.is_empty() && credential.refresh_token.is_empty() {
        return Err(NO_TOKENS.into());
    }
    Ok(credential)
}

/// Bounds every string and key in the document (serde_json already bounds nesting depth).
fn check_lengths(value: &Value) -> Result<(), String> {
    let too_long = || Err(format!("a value is longer than {} KB", MAX_STRING_BYTES / 1024));
    match value {
        Value::String(s) if s.len() > MAX_STRING_BYTES => too_long(),
        Value::Array(items) => items.iter().try_for_each(check_lengths),
        Value::Object(map) => map.iter().try_for_each(|(key, item)| {
            if key.len() > MAX_STRING_BYTES {
                too_long()
            } else {
                check_lengths(item)
            }
        }),
        _ => Ok(()),
    }
}

/// A string field, trimmed: absent or null → "", not a string → `Err` naming the field.
fn text(obj: &Object, key: &str) -> Result<String, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(_) => Err(format!("`{key}` is not a string")),
    }
}

/// A whole number field (a fractional one is truncated): absent or null → None.
fn number(obj: &Object, key: &str) -> Result<Option<i64>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            (None, Some(f)) if f.is_finite() && f.abs() < 9.0e18 => Ok(Some(f.trunc() as i64)),
            _ => Err(format!("`{key}` is out of range")),
        },
        Some(_) => Err(format!("`{key}` is not a number")),
    }
}

/// An RFC 3339 field as Unix seconds: absent, empty, unparsable or not after 1970 → None.
fn time(obj: &Object, key: &str) -> Result<Option<i64>, String> {
    Ok(parse_rfc3339(&text(obj, key)?).filter(|t| *t > 0))
}

fn millis_to_secs(ms: Option<i64>) -> Option<i64> {
    ms.map(|ms| ms.div_euclid(1000)).filter(|t| *t > 0)
}

fn object<'a>(value: &'a Value, name: &str) -> Result<&'a Object, String> {
    value
        .as_object()
        .ok_or_else(|| format!("`{name}` is not an object"))
}

fn non_empty(first: String, second: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    if first.is_empty() { second() } else { Ok(first) }
}

/// Fills `email` and `account_id` from the file's values, else the id token's claims
/// (`email`, `https://api.openai.com/auth`.`chatgpt_account_id`); the account id falls back
/// to the e-mail.
fn identify(credential: &mut ImportedCredential, account_id: String, email: String, id_token: String) {
    let claims = jwt_claims(&id_token).unwrap_or_default();
    let claim = |obj: &Object, key: &str| {
        obj.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    credential.email = if email.is_empty() {
        claim(&claims, "email")
    } else {
        email
    };
    let chatgpt = claims.get(OPENAI_AUTH_CLAIM).and_then(Value::as_object);
    credential.account_id = match (account_id, chatgpt.map(|auth| claim(auth, "chatgpt_account_id"))) {
        (id, _) if !id.is_empty() => id,
        (_, Some(id)) if !id.is_empty() => id,
        _ => credential.email.clone(),
    };
}

fn blank(kind: ProviderType, source: &'static str) -> ImportedCredential {
    ImportedCredential {
        kind,
        source,
        access_token: String::new(),
        refresh_token: String::new(),
        expires_at: None,
        account_id: String::new(),
        project_id: String::new(),
        email: String::new(),
    }
}

/// Claude Code `.credentials.json`; the file names no account.
fn claude_code(inner: &Value) -> Result<ImportedCredential, String> {
    let oauth = object(inner, "claudeAiOauth")?;
    let mut credential = blank(ProviderType::ClaudeCode, "Claude Code .credentials.json");
    credential.access_token = text(oauth, "accessToken")?;
    credential.refresh_token = text(oauth, "refreshToken")?;
    credential.expires_at = millis_to_secs(number(oauth, "expiresAt")?);
    Ok(credential)
}

/// Codex `auth.json`: a ChatGPT login (`tokens`), or an API key alone (refused).
fn codex_auth(file: &Object) -> Result<ImportedCredential, String> {
    let has_api_key = !text(file, "OPENAI_API_KEY")?.is_empty();
    let tokens = match file.get("tokens") {
        None | Some(Value::Null) => None,
        Some(tokens) => Some(object(tokens, "tokens")?),
    };
    let Some(tokens) = tokens else {
        return Err(if has_api_key { API_KEY_ONLY } else { NO_TOKENS }.into());
    };
    let mut credential = blank(ProviderType::Codex, "Codex auth.json");
    credential.access_token = text(tokens, "access_token")?;
    credential.refresh_token = text(tokens, "refresh_token")?;
    if credential.access_token.is_empty() && credential.refresh_token.is_empty() && has_api_key {
        return Err(API_KEY_ONLY.into());
    }
    credential.expires_at = jwt_expiry(&credential.access_token);
    let (account_id, id_token) = (text(tokens, "account_id")?, text(tokens, "id_token")?);
    identify(&mut credential, account_id, String::new(), id_token);
    Ok(credential)
}

/// Gemini CLI's file has no `type`; it is told by `expiry_date` or a Google scope.
fn is_gemini_cli(file: &Object) -> bool {
    let google_scope = file
        .get("scope")
        .and_then(Value::as_str)
        .is_some_and(|s| s.contains("googleapis.com/auth/"));
    file.contains_key("expiry_date") || google_scope
}

fn gemini_cli(file: &Object) -> Result<ImportedCredential, String> {
    let mut credential = blank(ProviderType::GeminiCli, "Gemini CLI oauth_creds.json");
    credential.access_token = text(file, "access_token")?;
    credential.refresh_token = text(file, "refresh_token")?;
    credential.expires_at = millis_to_secs(number(file, "expiry_date")?);
    identify(
        &mut credential,
        String::new(),
        String::new(),
        text(file, "id_token")?,
    );
    Ok(credential)
}

/// A CLIProxyAPI per-account file, by its `type`.
fn cliproxyapi(file: &Object, kind: &Value) -> Result<ImportedCredential, String> {
    let (kind, source) = match kind.as_str().unwrap_or("") {
        "claude" => (ProviderType::ClaudeCode, "CLIProxyAPI claude"),
        "codex" => (ProviderType::Codex, "CLIProxyAPI codex"),
        "gemini" => (ProviderType::GeminiCli, "CLIProxyAPI gemini"),
        "antigravity" => (ProviderType::Antigravity, "CLIProxyAPI antigravity"),
        other if !other.is_empty() && other.len() <= 32 && other.bytes().all(is_name_byte) => {
            return Err(format!("unrecognised format (type \"{other}\")"));
        }
        _ => return Err("unrecognised format".into()),
    };
    // Gemini keeps the OAuth2 token nested; after a refresh it is copied to the top level too.
    let nested = match file.get("token") {
        Some(token) if kind == ProviderType::GeminiCli && !token.is_null() => object(token, "token")?,
        _ => &Object::new(),
    };
    let mut credential = blank(kind, source);
    credential.access_token = non_empty(text(nested, "access_token")?, || text(file, "access_token"))?;
    credential.refresh_token = non_empty(text(nested, "refresh_token")?, || text(file, "refresh_token"))?;
    credential.expires_at = match kind {
        ProviderType::Codex => jwt_expiry(&credential.access_token),
        _ => None,
    };
    let stated = [
        time(nested, "expiry")?,
        time(file, "expiry")?,
        time(file, "expired")?,
    ];
    credential.expires_at = credential.expires_at.or(stated.into_iter().flatten().next());
    if let (None, Some(ms), Some(lifetime)) = (
        credential.expires_at,
        number(file, "timestamp")?,
        number(file, "expires_in")?,
    ) {
        credential.expires_at = millis_to_secs(Some(ms)).map(|t| t.saturating_add(lifetime));
    }
    credential.project_id = text(file, "project_id")?;
    let (account_id, email) = (text(file, "account_id")?, text(file, "email")?);
    identify(&mut credential, account_id, email, text(file, "id_token")?);
    Ok(credential)
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// The claims of a JWT, read without checking its signature; None when `token` is not one.
fn jwt_claims(token: &str) -> Option<Object> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    match serde_json::from_slice(&base64url_decode(payload)?).ok()? {
        Value::Object(claims) => Some(claims),
        _ => None,
    }
}

fn jwt_expiry(token: &str) -> Option<i64> {
    jwt_claims(token)?.get("exp")?.as_i64().filter(|t| *t > 0)
}

/// Base64url (the standard alphabet is accepted too), padding optional.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let input = input.trim_end_matches('=');
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in input.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// An RFC 3339 date-time (`2026-01-01T00:00:00Z`, `…00.123456789+08:00`) as Unix seconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |from: usize, to: usize| -> Option<i64> {
        let part = b.get(from..to)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    if b.len() < 20 || !matches!(b[10], b'T' | b't' | b' ') || separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    if rest.first() == Some(&b'.') {
        let fraction = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if fraction == 0 {
            return None;
        }
        rest = &rest[1 + fraction..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let at = b.len() - 5;
            let minutes = digits(at, at + 2)? * 60 + digits(at + 3, at + 5)?;
            if *sign == b'-' {
                -minutes * 60
            } else {
                minutes * 60
            }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProviderType::{Antigravity, ClaudeCode, Codex, GeminiCli};

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../tests/fixtures/credentials/", $name)).as_slice()
        };
    }

    const CODEX_ACCOUNT: &str = "00000000-0000-4000-8000-00000000c0de";

    /// `strings` are `[access_token, refresh_token, account_id, project_id, email]`.
    fn cred(
        kind: ProviderType,
        source: &'static str,
        expires_at: i64,
        strings: [&str; 5],
    ) -> ImportedCredential {
        let [access_token, refresh_token, account_id, project_id, email] = strings.map(str::to_owned);
        let expires_at = Some(expires_at);
        ImportedCredential {
            kind,
            source,
            access_token,
            refresh_token,
            expires_at,
            account_id,
            project_id,
            email,
        }
    }

    #[test]
    fn every_fixture_reads_exactly() {
        let value: Value = serde_json::from_slice(fixture!("codex-auth.json")).unwrap();
        let codex_access = value
            .pointer("/tokens/access_token")
            .and_then(Value::as_str)
            .unwrap();
        let (claude, codex) = ("claude.user@example.com", "codex.user@example.com");
        let (gemini, antigravity) = ("gemini.user@example.com", "antigravity.user@example.com");
        // [access_token, refresh_token, account_id, project_id, email]
        #[rustfmt::skip]
        let cases = [
            (fixture!("claude-code.credentials.json"), cred(ClaudeCode, "Claude Code .credentials.json", 1_767_254_400, [
                "sk-ant-oat01-fixture-claude-code-access-token-not-real",
                "sk-ant-ort01-fixture-claude-code-refresh-token-not-real", "", "", ""])),
            (fixture!("codex-auth.json"), cred(Codex, "Codex auth.json", 1_768_089_600, [
                codex_access, "rt_fixture-codex-refresh-token-not-real", CODEX_ACCOUNT, "", codex])),
            (fixture!("gemini-cli-oauth_creds.json"), cred(GeminiCli, "Gemini CLI oauth_creds.json", 1_767_229_199, [
                "ya29.fixture-gemini-cli-access-token-not-real",
                "1//fixture-gemini-cli-refresh-token-not-real", gemini, "", gemini])),
            (fixture!("cliproxyapi-claude.json"), cred(ClaudeCode, "CLIProxyAPI claude", 1_767_254_400, [
                "sk-ant-oat01-fixture-cliproxyapi-claude-access-not-real",
                "sk-ant-ort01-fixture-cliproxyapi-claude-refresh-not-real", claude, "", claude])),
            (fixture!("cliproxyapi-codex.json"), cred(Codex, "CLIProxyAPI codex", 1_768_089_600, [
                codex_access, "rt_fixture-cliproxyapi-codex-refresh-not-real", CODEX_ACCOUNT, "", codex])),
            (fixture!("cliproxyapi-gemini.json"), cred(GeminiCli, "CLIProxyAPI gemini", 1_767_229_199, [
                "ya29.fixture-cliproxyapi-gemini-access-not-real",
                "1//fixture-cliproxyapi-gemini-refresh-not-real", gemini, "fixture-project-123456", gemini])),
            (fixture!("cliproxyapi-antigravity.json"), cred(Antigravity, "CLIProxyAPI antigravity", 1_767_229_199, [
                "ya29.fixture-cliproxyapi-antigravity-access-not-real",
                "1//fixture-cliproxyapi-antigravity-refresh-not-real",
                antigravity, "fixture-antigravity-project", antigravity])),
        ];
        for (file, want) in cases {
            assert_eq!(read(file), Ok(want));
        }
    }

    #[test]
    fn variants_of_the_shapes() {
        // Antigravity without `expired`: timestamp (ms) + expires_in.
        let file =
            br#"{"type":"antigravity","refresh_token":"1//r","expires_in":3599,"timestamp":1767225600000}"#;
        assert_eq!(read(file).unwrap().expires_at, Some(1_767_229_199));
        // Gemini CLI writes a fractional expiry_date at times.
        let file = br#"{"access_token":"ya29.a","refresh_token":"1//r","expiry_date":1769159945362.7791}"#;
        assert_eq!(read(file).unwrap().expires_at, Some(1_769_159_945));
        // Codex without tokens.account_id: the id token's chatgpt_account_id; an API key beside tokens is ignored.
        let value: Value = serde_json::from_slice(fixture!("codex-auth.json")).unwrap();
        let id_token = value.pointer("/tokens/id_token").unwrap().as_str().unwrap();
        let file = format!(
            r#"{{"OPENAI_API_KEY":"sk-x","tokens":{{"id_token":"{id_token}","refresh_token":"rt_r"}}}}"#
        );
        let read_back = read(file.as_bytes()).unwrap();
        assert_eq!(
            (read_back.account_id.as_str(), read_back.expires_at),
            (CODEX_ACCOUNT, None)
        );
        // Gemini after a CLIProxyAPI refresh: tokens at the top level, zero expiry ignored.
        let file = br#"{"type":"gemini","email":"g@example.com","token":{"expiry":"0001-01-01T00:00:00Z"},"access_token":"ya29.b","expiry":"2026-01-01T00:00:00Z"}"#;
        let read_back = read(file).unwrap();
        assert_eq!(
            (read_back.access_token.as_str(), read_back.expires_at),
            ("ya29.b", Some(1_767_225_600))
        );
    }

    #[test]
    fn one_token_is_enough() {
        let access_only = read(br#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-a"}}"#).unwrap();
        assert_eq!(
            (access_only.refresh_token.as_str(), access_only.expires_at),
            ("", None)
        );
        let refresh_only = read(br#"{"type":"claude","refresh_token":"sk-ant-ort01-r"}"#).unwrap();
        assert_eq!(refresh_only.access_token, "");
    }

    #[test]
    fn refusals_give_their_reason_without_secrets() {
        let long = format!(
            r#"{{"claudeAiOauth":{{"accessToken":"SECRET{}"}}}}"#,
            "x".repeat(MAX_STRING_BYTES)
        );
        let huge = format!(r#"{{"pad":"{}","x":"SECRET"}}"#, "x".repeat(MAX_FILE_BYTES));
        #[rustfmt::skip]
        let cases: [(&[u8], &str); 12] = [
            (fixture!("malformed.json"), "not JSON"),
            (fixture!("codex-api-key-only.json"), API_KEY_ONLY),
            (br#"{"OPENAI_API_KEY":"sk-SECRET","tokens":{"access_token":"","refresh_token":""}}"#, API_KEY_ONLY),
            (br#"["SECRET"]"#, "not a JSON object"),
            (b"\"SECRET\"", "not a JSON object"),
            (br#"{"access_token":"SECRET","refresh_token":"SECRET"}"#, "unrecognised format"),
            (br#"{"type":"service_account","private_key":"SECRET"}"#, "unrecognised format (type \"service_account\")"),
            (br#"{"type":"claude","email":"a@example.com"}"#, NO_TOKENS),
            (br#"{"OPENAI_API_KEY":null,"tokens":null}"#, NO_TOKENS),
            (br#"{"claudeAiOauth":{"accessToken":42,"refreshToken":"SECRET"}}"#, "`accessToken` is not a string"),
            (long.as_bytes(), "a value is longer than 16 KB"),
            (huge.as_bytes(), "larger than 64 KB"),
        ];
        for (file, reason) in cases {
            let got = read(file).unwrap_err();
            assert!(got.starts_with(reason), "{got:?} should start with {reason:?}");
            for secret in ["SECRET", "sk-", "fixture", "ort01", "oat01"] {
                assert!(!got.contains(secret), "{got:?} quotes the file");
            }
        }
    }

    #[test]
    fn rfc3339_and_base64url() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-01-01T08:00:00+08:00"), Some(1_767_225_600));
        assert_eq!(parse_rfc3339("2025-12-31T19:00:00.5-05:00"), Some(1_767_225_600));
        assert_eq!(parse_rfc3339("2024-02-29t12:00:00z"), Some(1_709_208_000));
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00+0800",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(
            base64url_decode("eyJhIjoxfQ").as_deref(),
            Some(br#"{"a":1}"#.as_slice())
        );
        assert_eq!(base64url_decode("-_8").as_deref(), Some([0xfb, 0xff].as_slice()));
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("ab!c"), None);
        assert_eq!(jwt_claims("not-a-jwt"), None);
    }
}
