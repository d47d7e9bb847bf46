//! Usage windows that upstreams announce for a credential, read from their answers:
//!
//! - Anthropic (Claude subscriptions): the unified rate-limit headers —
//!   `anthropic-ratelimit-unified-status` (`allowed`, `allowed_warning`, `rejected`), the
//!   window that binds (`…-representative-claim`: `five_hour`, `seven_day`), its
//!   `…-{5h,7d}-utilization` (a fraction) and `…-reset` (Unix seconds);
//! - Codex (ChatGPT subscriptions): `x-codex-{primary,secondary}-used-percent`,
//!   `…-window-minutes`, `…-reset-at` (Unix seconds) or `…-reset-after-seconds`, and the
//!   429 body `{"error": {"type": "usage_limit_reached", "resets_at" | "resets_in_seconds"}}`;
//! - Google (Gemini API, Vertex, Gemini CLI, Antigravity): a 429 `RESOURCE_EXHAUSTED` whose
//!   details carry `RetryInfo.retryDelay` (and `QuotaFailure` naming the quota).
//!
//! An exhausted window makes the credential cool down until it resets: routing skips it
//! and takes it back by itself — routing state, never a ban (`QuotaWindow`).

use ez_contract::report::QuotaWindow;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The longest cooling a window may impose (a longer reset is someone's mistake).
const MAX_COOLING: i64 = 7 * 24 * 3600;
/// Cooling when a window is exhausted but its reset is not said.
const UNSAID_RESET: i64 = 60;

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn number(headers: &HeaderMap, name: &str) -> Option<f64> {
    header(headers, name)
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

/// A count of seconds or a Unix time, never negative; absurd values are capped (a Unix
/// time far beyond any reset, a delay far beyond [`MAX_COOLING`]) so that adding it to
/// now cannot overflow.
fn seconds(headers: &HeaderMap, name: &str) -> Option<i64> {
    number(headers, name).map(|v| v.clamp(0.0, MAX_SECONDS as f64).ceil() as i64)
}

/// The largest number of seconds or Unix time taken from an upstream (year ~2286).
const MAX_SECONDS: i64 = 9_999_999_999;

/// A Unix time `delay` seconds after `now`, the delay capped.
fn after(now: i64, delay: i64) -> i64 {
    now.saturating_add(delay.clamp(0, MAX_SECONDS))
}

fn cooling(resets_at: Option<i64>, now: i64) -> i64 {
    resets_at
        .filter(|t| *t > now)
        .unwrap_or(now + UNSAID_RESET)
        .min(now.saturating_add(MAX_COOLING))
}

/// The window an answer's headers announce, if they announce one.
pub fn from_headers(headers: &HeaderMap, now: i64) -> Option<QuotaWindow> {
    anthropic(headers, now).or_else(|| codex(headers, now))
}

fn anthropic(headers: &HeaderMap, now: i64) -> Option<QuotaWindow> {
    let status = header(headers, "anthropic-ratelimit-unified-status")?;
    let (name, utilization, reset) = match header(headers, "anthropic-ratelimit-unified-representative-claim")
    {
        Some("five_hour") => (
            "5h",
            "anthropic-ratelimit-unified-5h-utilization",
            "anthropic-ratelimit-unified-5h-reset",
        ),
        Some("seven_day") => (
            "7d",
            "anthropic-ratelimit-unified-7d-utilization",
            "anthropic-ratelimit-unified-7d-reset",
        ),
        _ => ("unified", "", ""),
    };
    let resets_at = seconds(headers, reset).or_else(|| seconds(headers, "anthropic-ratelimit-unified-reset"));
    Some(QuotaWindow {
        name: name.to_owned(),
        used_percent: number(headers, utilization).map(|f| (f * 100.0).clamp(0.0, 100.0)),
        resets_at,
        cooling_until: (status == "rejected").then(|| cooling(resets_at, now)),
        observed_at: now,
    })
}

/// One of Codex's two windows: (used percent, minutes, resets at).
fn codex_window(headers: &HeaderMap, which: Which, now: i64) -> Option<(f64, Option<i64>, Option<i64>)> {
    let [used, minutes, reset_at, reset_after] = which.headers();
    let used = number(headers, used)?.clamp(0.0, 100.0);
    let resets_at =
        seconds(headers, reset_at).or_else(|| seconds(headers, reset_after).map(|s| after(now, s)));
    Some((used, seconds(headers, minutes), resets_at))
}

#[derive(Clone, Copy)]
enum Which {
    Primary,
    Secondary,
}

impl Which {
    fn headers(self) -> [&'static str; 4] {
        match self {
            Which::Primary => [
                "x-codex-primary-used-percent",
                "x-codex-primary-window-minutes",
                "x-codex-primary-reset-at",
                "x-codex-primary-reset-after-seconds",
            ],
            Which::Secondary => [
                "x-codex-secondary-used-percent",
                "x-codex-secondary-window-minutes",
                "x-codex-secondary-reset-at",
                "x-codex-secondary-reset-after-seconds",
            ],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Which::Primary => "primary",
            Which::Secondary => "secondary",
        }
    }
}

/// `300` → `5h`, `10080` → `7d`, `45` → `45m`.
fn window_name(minutes: Option<i64>, which: Which) -> String {
    match minutes {
        Some(m) if m > 0 && m % 1440 == 0 => format!("{}d", m / 1440),
        Some(m) if m > 0 && m % 60 == 0 => format!("{}h", m / 60),
        Some(m) if m > 0 => format!("{m}m"),
        _ => which.name().to_owned(),
    }
}

/// The Codex window that binds: the fuller of the two.
fn codex(headers: &HeaderMap, now: i64) -> Option<QuotaWindow> {
    let primary = codex_window(headers, Which::Primary, now).map(|w| (w, Which::Primary));
    let secondary = codex_window(headers, Which::Secondary, now).map(|w| (w, Which::Secondary));
    let ((used, minutes, resets_at), which) = match (primary, secondary) {
        (Some(p), Some(s)) if s.0.0 > p.0.0 => s,
        (Some(p), _) => p,
        (None, s) => s?,
    };
    Some(QuotaWindow {
        name: window_name(minutes, which),
        used_percent: Some(used),
        resets_at,
        cooling_until: (used >= 100.0).then(|| cooling(resets_at, now)),
        observed_at: now,
    })
}

/// The window a refusal announces: its headers', made exhausted by a body that says so
/// (Codex's `usage_limit_reached`, Google's `RESOURCE_EXHAUSTED` with a retry delay).
pub fn from_refusal(status: u16, headers: &HeaderMap, body: &[u8], now: i64) -> Option<QuotaWindow> {
    let announced = from_headers(headers, now);
    if status != 429 {
        return announced;
    }
    let document: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // Google's streaming endpoints wrap the error in an array.
    let error = match &document {
        Value::Array(items) => &items.first().unwrap_or(&Value::Null)["error"],
        other => &other["error"],
    };
    let retry_after = seconds(headers, "retry-after").map(|s| after(now, s));
    if [&error["type"], &error["code"]]
        .iter()
        .any(|v| v.as_str() == Some("usage_limit_reached"))
    {
        let resets_at = error["resets_at"]
            .as_i64()
            .filter(|t| (1..=MAX_SECONDS).contains(t))
            .or_else(|| error["resets_in_seconds"].as_i64().map(|s| after(now, s)))
            .or(announced.as_ref().and_then(|w| w.resets_at))
            .or(retry_after);
        let mut window = announced.unwrap_or_else(|| QuotaWindow {
            name: "usage_limit".to_owned(),
            used_percent: Some(100.0),
            resets_at: None,
            cooling_until: None,
            observed_at: now,
        });
        window.resets_at = resets_at;
        window.cooling_until = Some(cooling(resets_at, now));
        return Some(window);
    }
    if error["status"].as_str() == Some("RESOURCE_EXHAUSTED") {
        return google(error, now).or(announced);
    }
    announced
}

/// Google's `RetryInfo` (`"retryDelay": "41.5s"`) and the quota `QuotaFailure` names.
fn google(error: &Value, now: i64) -> Option<QuotaWindow> {
    let details = error["details"].as_array()?;
    let typed = |suffix: &str| {
        details
            .iter()
            .find(|d| d["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
    };
    let delay = typed("google.rpc.RetryInfo")?["retryDelay"]
        .as_str()?
        .strip_suffix('s')?
        .parse::<f64>()
        .ok()
        .filter(|d| d.is_finite())?;
    let quota = typed("google.rpc.QuotaFailure")
        .and_then(|q| q["violations"][0]["quotaId"].as_str())
        .unwrap_or_default();
    let name = if quota.contains("PerDay") {
        "per_day"
    } else if quota.contains("PerMinute") {
        "per_minute"
    } else {
        "quota"
    };
    let resets_at = after(now, delay.clamp(1.0, MAX_SECONDS as f64).ceil() as i64);
    Some(QuotaWindow {
        name: name.to_owned(),
        used_percent: None,
        resets_at: Some(resets_at),
        cooling_until: Some(cooling(Some(resets_at), now)),
        observed_at: now,
    })
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderName, HeaderValue};
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_760_000_000;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn anthropic_unified_headers_name_the_binding_window() {
        let allowed = headers(&[
            ("anthropic-ratelimit-unified-status", "allowed"),
            ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
            ("anthropic-ratelimit-unified-5h-utilization", "0.42"),
            ("anthropic-ratelimit-unified-5h-reset", "1760003600"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.1"),
            ("anthropic-ratelimit-unified-reset", "1760003600"),
        ]);
        let w = from_headers(&allowed, NOW).unwrap();
        assert_eq!(w.name, "5h");
        assert!((w.used_percent.unwrap() - 42.0).abs() < 1e-9);
        assert_eq!((w.resets_at, w.cooling_until), (Some(1_760_003_600), None));

        let rejected = headers(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-representative-claim", "seven_day"),
            ("anthropic-ratelimit-unified-7d-utilization", "1.0"),
            ("anthropic-ratelimit-unified-7d-reset", "1760086400"),
        ]);
        let w = from_headers(&rejected, NOW).unwrap();
        assert_eq!(w.name, "7d");
        assert_eq!(w.used_percent, Some(100.0));
        assert_eq!(w.cooling_until, Some(1_760_086_400));
        assert_eq!(from_headers(&headers(&[("x-request-id", "1")]), NOW), None);
    }

    #[test]
    fn codex_headers_pick_the_fuller_window_and_cool_when_it_is_full() {
        let h = headers(&[
            ("x-codex-primary-used-percent", "35.5"),
            ("x-codex-primary-window-minutes", "300"),
            ("x-codex-primary-reset-after-seconds", "600"),
            ("x-codex-secondary-used-percent", "80"),
            ("x-codex-secondary-window-minutes", "10080"),
            ("x-codex-secondary-reset-at", "1760500000"),
        ]);
        let w = from_headers(&h, NOW).unwrap();
        assert_eq!((w.name.as_str(), w.used_percent), ("7d", Some(80.0)));
        assert_eq!((w.resets_at, w.cooling_until), (Some(1_760_500_000), None));

        let full = headers(&[
            ("x-codex-primary-used-percent", "100"),
            ("x-codex-primary-window-minutes", "300"),
            ("x-codex-primary-reset-after-seconds", "1200"),
        ]);
        let w = from_headers(&full, NOW).unwrap();
        assert_eq!(w.name, "5h");
        assert_eq!(w.cooling_until, Some(NOW + 1200));
        assert_eq!(window_name(Some(45), Which::Primary), "45m");
        assert_eq!(window_name(None, Which::Secondary), "secondary");
    }

    #[test]
    fn codex_usage_limit_bodies_cool_until_the_reset() {
        let body = json!({ "error": { "type": "usage_limit_reached", "message": "You've hit your usage limit.", "plan_type": "plus", "resets_in_seconds": 3000 } });
        let w = from_refusal(429, &HeaderMap::new(), body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(w.name, "usage_limit");
        assert_eq!(
            (w.resets_at, w.cooling_until),
            (Some(NOW + 3000), Some(NOW + 3000))
        );

        let body = json!({ "error": { "code": "usage_limit_reached", "resets_at": NOW + 90 } });
        let h = headers(&[
            ("x-codex-primary-used-percent", "100"),
            ("x-codex-primary-window-minutes", "300"),
        ]);
        let w = from_refusal(429, &h, body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!((w.name.as_str(), w.cooling_until), ("5h", Some(NOW + 90)));

        // An absurd reset is capped; a plain throttle is no window.
        let body = json!({ "error": { "type": "usage_limit_reached", "resets_in_seconds": 100_000_000 } });
        let w = from_refusal(429, &HeaderMap::new(), body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(w.cooling_until, Some(NOW + MAX_COOLING));
        // Absurd numbers neither overflow nor leave the window.
        let h = headers(&[
            ("retry-after", "1e30"),
            ("x-codex-primary-used-percent", "100"),
            ("x-codex-primary-reset-after-seconds", "1e300"),
        ]);
        let body = json!({ "error": { "type": "usage_limit_reached", "resets_at": -5, "resets_in_seconds": i64::MAX } });
        let w = from_refusal(429, &h, body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(w.cooling_until, Some(NOW + MAX_COOLING));
        assert!(w.resets_at.unwrap() > NOW);
        let google = json!({ "error": { "status": "RESOURCE_EXHAUSTED", "details": [{ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1e300s" }] } });
        let w = from_refusal(429, &HeaderMap::new(), google.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(w.cooling_until, Some(NOW + MAX_COOLING));
        let throttled = json!({ "error": { "type": "rate_limit_error", "message": "slow down" } });
        assert_eq!(
            from_refusal(429, &HeaderMap::new(), throttled.to_string().as_bytes(), NOW),
            None
        );
        assert_eq!(from_refusal(429, &HeaderMap::new(), b"not json", NOW), None);
    }

    #[test]
    fn google_resource_exhausted_cools_for_the_retry_delay() {
        let body = json!([{ "error": { "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
            "details": [
                { "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{ "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests", "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier" }] },
                { "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "41.5s" }
            ] } }]);
        let w = from_refusal(429, &HeaderMap::new(), body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(w.name, "per_day");
        assert_eq!(w.cooling_until, Some(NOW + 42));
        // Without retry info it is a throttle like any other.
        let bare = json!({ "error": { "code": 429, "status": "RESOURCE_EXHAUSTED", "details": [] } });
        assert_eq!(
            from_refusal(429, &HeaderMap::new(), bare.to_string().as_bytes(), NOW),
            None
        );
    }
}
