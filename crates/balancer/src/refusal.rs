//! What an upstream's refusal means for the credential that got it, decided from the
//! status and the provider's *structured* error — never from words in a message.
//!
//! The shapes read (one parser for all, see [`ErrorFacts::parse`]):
//! - OpenAI and compatible: `{"error": {"message", "type", "param", "code"}}`;
//! - Anthropic: `{"type": "error", "error": {"type", "message"}}`;
//! - Google (Gemini, Vertex): `{"error": {"code", "status", "details": [{"reason"}]}}`
//!   (sometimes wrapped in a one-element array).
//!
//! The decision ([`verdict`]) is a pure function of (status, facts):
//! - an unmistakable credential failure (an invalid or deactivated key, an account
//!   without quota or billing) bans at once ([`Verdict::BanNow`]);
//! - a refusal tied to a request parameter (`error.param` set), and every other 4xx
//!   (400, 404, 413, 422…) is the request's fault: the client gets it as the upstream
//!   sent it and no credential is blamed ([`Verdict::Answer`]);
//! - a 401/402/403 that names no cause is ambiguous — a restricted key that lacks the
//!   scope of one endpoint, a key without access to one model, or a dead key look the
//!   same — so it fails over and bans only when it repeats
//!   ([`Verdict::Suspect`], counted in `bans.rs`);
//! - throttling, server errors, redirects and refusals of the gateway's region fail
//!   over without blaming the credential ([`Verdict::FailOver`]).

use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ProxyError;

/// Why a credential's attempt did not produce the answer: what the client is told when
/// no credential does better, and what a ban records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The upstream does not accept the credential (invalid, deactivated, or refused
    /// for a reason it did not name).
    Credential,
    /// The credential's account has no quota, credit or billing left.
    Quota,
    /// The upstream is throttling the credential.
    RateLimited,
    /// 5xx: the upstream failed.
    ServerError,
    /// 3xx: redirects are never followed (they would carry the credential elsewhere).
    Redirect,
    /// The upstream refuses the gateway's location, whatever the credential.
    Region,
}

impl Cause {
    /// The error the client gets when every attempt ended like this one.
    pub fn client_error(self, retry_after: Option<u64>) -> ProxyError {
        match self {
            Cause::Credential => ProxyError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_auth_failed",
                "the upstream refused the gateway's credentials",
            ),
            Cause::Quota => ProxyError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_quota_exhausted",
                "the upstream credentials have no quota left",
            ),
            Cause::RateLimited => {
                let mut e = ProxyError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "upstream_rate_limited",
                    "the upstream is rate limiting",
                );
                e.retry_after = Some(retry_after.unwrap_or(1));
                e
            }
            Cause::ServerError => {
                ProxyError::new(StatusCode::BAD_GATEWAY, "upstream_error", "the upstream failed")
            }
            Cause::Redirect => ProxyError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_redirect",
                "the upstream answered with a redirect, which the gateway does not follow",
            ),
            Cause::Region => ProxyError::new(
                StatusCode::BAD_GATEWAY,
                "upstream_refused",
                "the upstream refused to serve the gateway's location",
            ),
        }
    }
}

/// What to do with a credential's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Goes to the client as the upstream sent it (a success, or the request's fault).
    Answer,
    /// Try another credential; this one is not to blame.
    FailOver(Cause),
    /// Try another credential and ban this one at once (when it has `auto_ban`).
    BanNow(Refusal),
    /// Try another credential; ban this one when this repeats often enough.
    Suspect(Refusal),
}

impl Verdict {
    /// The upstream's status, for a refusal that blames the credential.
    pub fn status(&self) -> Option<u16> {
        match self {
            Verdict::BanNow(refusal) | Verdict::Suspect(refusal) => Some(refusal.status),
            Verdict::Answer | Verdict::FailOver(_) => None,
        }
    }
}

/// A refusal that blames the credential, with the marker that said so (one of the
/// constants below, so a ban reason never carries upstream text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub cause: Cause,
    pub status: u16,
    pub marker: Option<&'static str>,
}

impl Refusal {
    /// The reason a ban records: `upstream 401: invalid_api_key`, `quota exhausted
    /// (upstream 429): insufficient_quota`, `upstream 403`.
    pub fn reason(&self) -> String {
        let status = match self.cause {
            Cause::Quota => format!("quota exhausted (upstream {})", self.status),
            _ => format!("upstream {}", self.status),
        };
        match self.marker {
            Some(marker) => format!("{status}: {marker}"),
            None => status,
        }
    }
}

/// OpenAI codes, Anthropic types and Google reasons that say the credential itself is
/// not valid: no request can succeed with it.
const INVALID_CREDENTIAL: &[&str] = &[
    "invalid_api_key",
    "account_deactivated",
    "authentication_error",
    "API_KEY_INVALID",
    "API_KEY_EXPIRED",
    "CONSUMER_SUSPENDED",
];

/// Markers of an account without quota, credit or billing: no request can succeed
/// until someone pays. (OpenAI sends `insufficient_quota` as `code` and as `type`.)
const NO_QUOTA: &[&str] = &[
    "insufficient_quota",
    "billing_not_active",
    "billing_hard_limit_reached",
    "billing_error",
    "BILLING_DISABLED",
];

/// OpenAI: the API is not offered where the gateway runs. Every credential of that
/// provider gets it from this balancer, and another balancer elsewhere may not: no ban.
const REGION_REFUSED: &[&str] = &["unsupported_country_region_territory"];

/// Markers of throttling in a status other than 429 (Anthropic, Google).
const THROTTLED: &[&str] = &["rate_limit_error", "RESOURCE_EXHAUSTED"];

/// Markers of an ambiguous refusal (named in the ban reason when it comes to that).
const REFUSED: &[&str] = &[
    "permission_error",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "permission_denied",
];

/// The structured parts of an upstream error body that [`verdict`] reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFacts {
    /// OpenAI `error.code` when it is a string.
    pub code: Option<String>,
    /// OpenAI / Anthropic `error.type`.
    pub kind: Option<String>,
    /// Google `error.status` (`PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`…).
    pub status: Option<String>,
    /// Google `error.details[].reason` and the older `error.errors[].reason`.
    pub reasons: Vec<String>,
    /// `error.param` names a request parameter (OpenAI).
    pub param: bool,
}

impl ErrorFacts {
    /// Reads an error body; anything that is not one of the known shapes yields no
    /// facts (the status alone then decides).
    pub fn parse(body: &[u8]) -> ErrorFacts {
        let Ok(document) = serde_json::from_slice::<Value>(body) else {
            return ErrorFacts::default();
        };
        // Google's streaming endpoints wrap the error in an array.
        let document = match &document {
            Value::Array(items) => items.first().unwrap_or(&Value::Null),
            other => other,
        };
        let error = &document["error"];
        let text = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let mut reasons = Vec::new();
        for list in ["details", "errors"] {
            if let Some(items) = error[list].as_array() {
                reasons.extend(items.iter().filter_map(|item| text(&item["reason"])));
            }
        }
        ErrorFacts {
            code: text(&error["code"]),
            kind: text(&error["type"]),
            status: text(&error["status"]),
            reasons,
            param: text(&error["param"]).is_some(),
        }
    }

    /// The first of `markers` the error carries, in any of its fields.
    fn marker(&self, markers: &[&'static str]) -> Option<&'static str> {
        let fields = [&self.code, &self.kind, &self.status];
        let mut values = fields
            .into_iter()
            .filter_map(Option::as_deref)
            .chain(self.reasons.iter().map(String::as_str));
        values.find_map(|value| markers.iter().copied().find(|m| *m == value))
    }
}

/// The decision for one upstream answer; see the module documentation.
pub fn verdict(status: u16, facts: &ErrorFacts) -> Verdict {
    let refusal = |cause, marker| Refusal {
        cause,
        status,
        marker,
    };
    match status {
        300..=399 => Verdict::FailOver(Cause::Redirect),
        500..=599 => Verdict::FailOver(Cause::ServerError),
        400..=499 => {
            if let Some(marker) = facts.marker(INVALID_CREDENTIAL) {
                return Verdict::BanNow(refusal(Cause::Credential, Some(marker)));
            }
            // A refusal that names a parameter of the request (a 402 for `max_tokens`
            // beyond the remaining credit) is about this request: a smaller one passes.
            if facts.param {
                return Verdict::Answer;
            }
            if let Some(marker) = facts.marker(NO_QUOTA) {
                return Verdict::BanNow(refusal(Cause::Quota, Some(marker)));
            }
            if facts.marker(REGION_REFUSED).is_some() {
                return Verdict::FailOver(Cause::Region);
            }
            if status == 429 || facts.marker(THROTTLED).is_some() {
                return Verdict::FailOver(Cause::RateLimited);
            }
            match status {
                401 | 403 => Verdict::Suspect(refusal(Cause::Credential, facts.marker(REFUSED))),
                402 => Verdict::Suspect(refusal(Cause::Quota, None)),
                _ => Verdict::Answer,
            }
        }
        _ => Verdict::Answer,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ban_now(cause: Cause, status: u16, marker: &'static str) -> Verdict {
        Verdict::BanNow(Refusal {
            cause,
            status,
            marker: Some(marker),
        })
    }

    fn suspect(cause: Cause, status: u16, marker: Option<&'static str>) -> Verdict {
        Verdict::Suspect(Refusal {
            cause,
            status,
            marker,
        })
    }

    /// Recorded shapes of each provider's errors, and what they mean.
    #[test]
    fn refusals_are_told_apart_by_their_structured_error() {
        use Cause::*;
        let table: Vec<(u16, Value, Verdict)> = vec![
            // OpenAI
            (
                401,
                json!({"error": {"message": "Incorrect API key provided: sk-...abcd.", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
                ban_now(Credential, 401, "invalid_api_key"),
            ),
            (
                401,
                json!({"error": {"message": "This key is associated with a deactivated account.", "type": "invalid_request_error", "param": null, "code": "account_deactivated"}}),
                ban_now(Credential, 401, "account_deactivated"),
            ),
            (
                429,
                json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.", "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
                ban_now(Quota, 429, "insufficient_quota"),
            ),
            (
                429,
                json!({"error": {"message": "Rate limit reached for gpt-4o on requests per min (RPM): Limit 500.", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
                Verdict::FailOver(RateLimited),
            ),
            (
                403,
                json!({"error": {"message": "Country, region, or territory not supported", "type": "request_forbidden", "param": null, "code": "unsupported_country_region_territory"}}),
                Verdict::FailOver(Region),
            ),
            // A restricted key without the scope of this endpoint: no code, ambiguous.
            (
                401,
                json!({"error": {"message": "You have insufficient permissions for this operation. Missing scopes: model.request.", "type": "invalid_request_error", "param": null, "code": null}}),
                suspect(Credential, 401, None),
            ),
            (
                403,
                json!({"error": {"message": "Forbidden", "type": "invalid_request_error", "param": null, "code": null}}),
                suspect(Credential, 403, None),
            ),
            // A 402 tied to a request parameter: the request's fault.
            (
                402,
                json!({"error": {"message": "This request requires more credits, or fewer max_tokens.", "type": "insufficient_credits", "param": "max_tokens", "code": "insufficient_credits"}}),
                Verdict::Answer,
            ),
            // Even in quota words: a smaller request would pass.
            (
                402,
                json!({"error": {"message": "Lower max_tokens", "type": "insufficient_quota", "param": "max_tokens", "code": "insufficient_quota"}}),
                Verdict::Answer,
            ),
            // A 402 that names no parameter (OpenRouter puts a number in `code`).
            (
                402,
                json!({"error": {"code": 402, "message": "Insufficient credits"}}),
                suspect(Quota, 402, None),
            ),
            (
                400,
                json!({"error": {"message": "This model's maximum context length is 128000 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
                Verdict::Answer,
            ),
            (
                404,
                json!({"error": {"message": "The model `gpt-5` does not exist or you do not have access to it.", "type": "invalid_request_error", "param": null, "code": "model_not_found"}}),
                Verdict::Answer,
            ),
            // Anthropic
            (
                401,
                json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}),
                ban_now(Credential, 401, "authentication_error"),
            ),
            (
                403,
                json!({"type": "error", "error": {"type": "permission_error", "message": "Your API key does not have permission to use the specified resource."}}),
                suspect(Credential, 403, Some("permission_error")),
            ),
            (
                402,
                json!({"type": "error", "error": {"type": "billing_error", "message": "..."}}),
                ban_now(Quota, 402, "billing_error"),
            ),
            (
                429,
                json!({"type": "error", "error": {"type": "rate_limit_error", "message": "..."}}),
                Verdict::FailOver(RateLimited),
            ),
            (
                529,
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                Verdict::FailOver(ServerError),
            ),
            (
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}),
                Verdict::Answer,
            ),
            (
                413,
                json!({"type": "error", "error": {"type": "request_too_large", "message": "Request exceeds the maximum size"}}),
                Verdict::Answer,
            ),
            // Google: an invalid key is a 400.
            (
                400,
                json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.", "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
                ban_now(Credential, 400, "API_KEY_INVALID"),
            ),
            (
                400,
                json!([{"error": {"code": 400, "message": "API key expired.", "status": "INVALID_ARGUMENT", "details": [{"reason": "API_KEY_EXPIRED"}]}}]),
                ban_now(Credential, 400, "API_KEY_EXPIRED"),
            ),
            (
                400,
                json!({"error": {"code": 400, "message": "Request contains an invalid argument.", "status": "INVALID_ARGUMENT"}}),
                Verdict::Answer,
            ),
            (
                403,
                json!({"error": {"code": 403, "message": "Permission denied.", "status": "PERMISSION_DENIED"}}),
                suspect(Credential, 403, Some("PERMISSION_DENIED")),
            ),
            (
                403,
                json!({"error": {"code": 403, "message": "Billing is disabled.", "status": "PERMISSION_DENIED", "details": [{"reason": "BILLING_DISABLED"}]}}),
                ban_now(Quota, 403, "BILLING_DISABLED"),
            ),
            (
                429,
                json!({"error": {"code": 429, "message": "Resource has been exhausted.", "status": "RESOURCE_EXHAUSTED"}}),
                Verdict::FailOver(RateLimited),
            ),
        ];
        for (status, body, expected) in table {
            let facts = ErrorFacts::parse(body.to_string().as_bytes());
            assert_eq!(verdict(status, &facts), expected, "{status} {body}");
        }
    }

    #[test]
    fn bodies_without_structure_leave_the_status_to_decide() {
        use Cause::*;
        for body in [
            "",
            "<html>Unauthorized</html>",
            "{\"error\": \"Unauthorized\"}",
            "[]",
            "null",
        ] {
            let facts = ErrorFacts::parse(body.as_bytes());
            assert_eq!(facts, ErrorFacts::default(), "{body}");
            assert_eq!(verdict(401, &facts), suspect(Credential, 401, None));
            assert_eq!(verdict(403, &facts), suspect(Credential, 403, None));
            assert_eq!(verdict(402, &facts), suspect(Quota, 402, None));
            assert_eq!(verdict(429, &facts), Verdict::FailOver(RateLimited));
            assert_eq!(verdict(500, &facts), Verdict::FailOver(ServerError));
            assert_eq!(verdict(307, &facts), Verdict::FailOver(Redirect));
            assert_eq!(verdict(302, &facts), Verdict::FailOver(Redirect));
            for request_level in [400, 404, 409, 413, 422] {
                assert_eq!(verdict(request_level, &facts), Verdict::Answer, "{request_level}");
            }
            assert_eq!(verdict(200, &facts), Verdict::Answer);
        }
    }

    #[test]
    fn ban_reasons_carry_only_known_markers() {
        let facts = ErrorFacts::parse(
            br#"{"error": {"type": "sneaky <script>", "code": "also sneaky", "message": "secret"}}"#,
        );
        let Verdict::Suspect(refusal) = verdict(403, &facts) else {
            panic!("ambiguous")
        };
        assert_eq!(refusal.reason(), "upstream 403");
        let quota = Refusal {
            cause: Cause::Quota,
            status: 429,
            marker: Some("insufficient_quota"),
        };
        assert_eq!(
            quota.reason(),
            "quota exhausted (upstream 429): insufficient_quota"
        );
    }
}
