//! Which upstream response headers reach the client: an allow-list, because the rest
//! describe the gateway's upstream account, not the tenant's request (`set-cookie`,
//! `openai-organization`, `openai-project`, the credential's `x-ratelimit-*` and
//! `anthropic-ratelimit-*` budgets, `cf-ray`, server banners…).

use axum::http::{HeaderMap, HeaderName};

/// Upstream headers forwarded under their own name:
/// - `content-type`, `content-encoding`: needed to read the body;
/// - `retry-after`, `retry-after-ms`: when the request may be retried (the OpenAI SDKs
///   read both).
///
/// Rate-limit headers are not here: the upstream's describe the shared credential's
/// budget (and leak the account's tier), never the tenant's limit. The gateway's own
/// limit shows in its `429 rate_limited` answers and their `Retry-After`.
pub const FORWARDED: [&str; 4] = [
    "content-type",
    "content-encoding",
    "retry-after",
    "retry-after-ms",
];

/// Upstream request ids (OpenAI's `x-request-id`, Anthropic's `request-id`), forwarded
/// as [`UPSTREAM_REQUEST_ID`] so they never replace the gateway's own `X-Request-ID`.
pub const UPSTREAM_REQUEST_IDS: [&str; 2] = ["x-request-id", "request-id"];

/// The name under which the upstream's request id reaches the client (for support
/// requests to the provider).
pub const UPSTREAM_REQUEST_ID: &str = "x-upstream-request-id";

/// The headers of an upstream answer that the client sees.
pub fn forwarded(upstream: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(FORWARDED.len() + 1);
    for name in FORWARDED {
        for value in upstream.get_all(name) {
            out.append(HeaderName::from_static(name), value.clone());
        }
    }
    if let Some(id) = UPSTREAM_REQUEST_IDS.iter().find_map(|name| upstream.get(*name)) {
        out.insert(HeaderName::from_static(UPSTREAM_REQUEST_ID), id.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_allowed_headers_pass_and_request_ids_are_renamed() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("retry-after", "7"),
            ("x-request-id", "req_openai_1"),
            ("set-cookie", "__cf_bm=abc; path=/"),
            ("openai-organization", "org-secret"),
            ("openai-project", "proj_secret"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-remaining-tokens", "99"),
            ("anthropic-ratelimit-requests-remaining", "5"),
            ("connection", "keep-alive"),
            ("content-length", "12"),
            ("server", "cloudflare"),
        ] {
            upstream.append(name, HeaderValue::from_static(value));
        }
        let out = forwarded(&upstream);
        let mut names: Vec<&str> = out.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "retry-after", "x-upstream-request-id"]);
        assert_eq!(out["x-upstream-request-id"], "req_openai_1");
        assert_eq!(out["retry-after"], "7");

        let mut anthropic = HeaderMap::new();
        anthropic.insert("request-id", HeaderValue::from_static("req_018E"));
        assert_eq!(forwarded(&anthropic)["x-upstream-request-id"], "req_018E");
        assert!(forwarded(&HeaderMap::new()).is_empty());
    }
}
