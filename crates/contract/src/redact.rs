//! Showing values that may carry secrets without showing the secrets: URLs with
//! credentials in them (`https://user:password@host/…`, `…?api-key=…`) and `Debug` output
//! of types that hold secrets.
//!
//! A URL is masked part by part: the userinfo before `@`, every query value (a query
//! parameter without `=` is masked whole) and the fragment each become `****` plus the
//! last 4 characters of the part — the same form [`SecretToken::masked`] gives upstream
//! keys — so an operator can tell two masked URLs apart without learning either secret.
//! Every query value is masked, not only names that look secret: upstreams put keys in
//! parameters of any name (`key`, `code`, `sig`, `x-api-key`, …), and a masked
//! `api-version` costs nothing but a glance at the stored document.

use std::collections::BTreeMap;
use std::fmt;

use crate::token::SecretToken;

/// What a masked part of a URL starts with.
pub const MASK: &str = "****";

fn mask_part(part: &str) -> String {
    SecretToken::from_plaintext(part).masked()
}

/// `url` with its userinfo, query values and fragment masked (see the module doc); a URL
/// with none of them comes back unchanged. Never fails: text that is not a URL is
/// treated as a path.
pub fn mask_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((head, fragment)) => (head, Some(fragment)),
        None => (url, None),
    };
    let (before_query, query) = match before_fragment.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    // Only the authority can hold userinfo: after `scheme://`, before the first `/`.
    let (scheme, rest) = match before_query.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, before_query),
    };
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                out.push_str(&mask_part(userinfo));
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(authority),
        }
        out.push_str(path);
    } else {
        out.push_str(rest);
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, value)) => {
                    out.push_str(name);
                    out.push('=');
                    out.push_str(&mask_part(value));
                }
                None if pair.is_empty() => {}
                None => out.push_str(&mask_part(pair)),
            }
        }
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(&mask_part(fragment));
    }
    out
}

/// Whether `url` is (or contains) a masked value: what a client sends back after reading
/// a masked URL.
pub fn is_masked_url(url: &str) -> bool {
    url.contains(MASK)
}

/// A secret in `Debug` output: `****` when set, `""` when empty (so a missing secret can
/// still be told from a present one).
pub struct Redacted<'a>(pub &'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str(MASK)
        }
    }
}

/// A URL in `Debug` output, masked by [`mask_url`].
pub struct MaskedUrl<'a>(pub &'a str);

impl fmt::Debug for MaskedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&mask_url(self.0), f)
    }
}

/// Header values in `Debug` output: names shown, every value redacted (a header of any
/// name may carry a credential).
pub struct RedactedHeaders<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, Redacted(v))))
            .finish()
    }
}

/// Implements `Debug` for a struct whose `secret` fields (of any type: keys, tokens,
/// URLs with credentials, header maps) must never be printed: they show as `<redacted>`.
/// Every field must be listed, plain or secret, so a new field cannot slip through
/// unnoticed (the macro's exhaustive destructuring fails to compile).
#[macro_export]
macro_rules! debug_redacting {
    ($ty:ident { $($plain:ident),* $(,)? } secret { $($secret:ident),* $(,)? }) => {
        impl ::std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let $ty { $($plain,)* $($secret,)* } = self;
                $(let _ = $secret;)*
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($plain), $plain))*
                    $(.field(stringify!($secret), &::std::format_args!("<redacted>")))*
                    .finish()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_secrets_are_unchanged() {
        for url in [
            "https://api.openai.com/v1",
            "http://vllm:8000/v1",
            "https://example.com",
            "",
            "not a url",
        ] {
            assert_eq!(mask_url(url), url);
            assert!(!is_masked_url(&mask_url(url)));
        }
    }

    #[test]
    fn userinfo_query_values_and_fragment_are_masked() {
        let cases = [
            (
                "https://user:hunter2-secret@proxy.example.com/v1",
                "https://****cret@proxy.example.com/v1",
            ),
            ("https://tok@host/v1", "https://****@host/v1"),
            (
                "https://host/v1?api-key=sk-live-0123456789&api-version=2024-02-01",
                "https://host/v1?api-key=****6789&api-version=****2-01",
            ),
            ("https://host/v1?key=short", "https://host/v1?key=****"),
            ("https://host/v1?sk-bare-token-abcdef", "https://host/v1?****cdef"),
            ("https://host/v1?a=&b", "https://host/v1?a=&****"),
            (
                "https://u:p@host:8443/x?key=k#frag-secret-value",
                "https://****@host:8443/x?key=****#****alue",
            ),
            // An `@` in the path is not userinfo.
            ("https://host/users/@me", "https://host/users/@me"),
        ];
        for (url, masked) in cases {
            let shown = mask_url(url);
            assert_eq!(shown, masked, "{url}");
            assert_eq!(is_masked_url(&shown), shown != url, "{url}");
        }
        let secrets = ["hunter2-secret", "sk-live-0123456789", "frag-secret-value"];
        for (url, _) in cases {
            for secret in secrets {
                assert!(!mask_url(url).contains(secret), "{url} leaks {secret}");
            }
        }
    }

    #[test]
    fn debug_helpers_show_no_secret() {
        let headers: BTreeMap<String, String> =
            [("authorization".to_owned(), "Bearer sk-secret-1".to_owned())].into();
        let shown = format!(
            "{:?} {:?} {:?} {:?}",
            Redacted("sk-secret-0"),
            Redacted(""),
            MaskedUrl("https://u:sk-secret-2@h/v1"),
            RedactedHeaders(&headers),
        );
        assert_eq!(
            shown,
            r#"**** "" "https://****et-2@h/v1" {"authorization": ****}"#
        );
    }

    struct Credential {
        id: i64,
        api_key: Option<String>,
        headers: BTreeMap<String, String>,
    }

    crate::debug_redacting!(Credential { id } secret { api_key, headers });

    #[test]
    fn the_redacting_debug_shows_no_secret() {
        let c = Credential {
            id: 7,
            api_key: Some("sk-secret-0001".into()),
            headers: BTreeMap::from([("x-key".to_owned(), "hdr-secret-0002".to_owned())]),
        };
        let shown = format!("{c:?}");
        assert_eq!(
            shown,
            "Credential { id: 7, api_key: <redacted>, headers: <redacted> }"
        );
    }
}
