//! A provider group: the upstream configuration shared by its credentials.

use std::collections::BTreeMap;

use ez_contract::SecretToken;
use ez_contract::provider::ProviderType;

use super::{SpecError, SpecResult};
use crate::masking::restore_masked_base_url;
use crate::providers::is_secret_header;
use crate::store::{GroupWrite, ProviderGroup};
use crate::validation;

pub const GROUP_STATUSES: &[&str] = &["active", "disabled"];
/// `health_check` values: no probe, probes that cost nothing, and probes of metered
/// (subscription, service-account) credentials too.
pub const HEALTH_CHECKS: &[&str] = &["off", "on", "metered"];
/// Header sets the data plane knows how to send (the official CLIs' headers).
pub const HEADERS_PROFILES: &[&str] = &["", "claude-code", "codex", "gemini-cli", "antigravity"];
/// Headers a group may not set: they belong to the HTTP connection, not the request.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];
const MAX_HEADERS: usize = 64;

/// A group whose values follow the rules: a known provider type (canonical name), an
/// endpoint where the type has no official one, Google fields where the type needs them,
/// model names, header names and values, a known headers profile.
#[derive(Debug, Clone)]
pub struct GroupSpec(GroupWrite, ProviderType);

impl std::ops::Deref for GroupSpec {
    type Target = GroupWrite;

    fn deref(&self) -> &GroupWrite {
        &self.0
    }
}

impl GroupSpec {
    /// `current`: the group as stored, when it exists already. A secret header or a
    /// credential-bearing `base_url` sent back in its masked form (a read-modify-write
    /// round trip, an export without secrets) keeps the stored value; a masked value with
    /// nothing to restore is refused rather than stored.
    pub fn new(mut w: GroupWrite, current: Option<&ProviderGroup>) -> SpecResult<GroupSpec> {
        w.name = validation::identifier("name", &w.name)?;
        let kind: ProviderType = w.provider_type.parse().map_err(SpecError::UnknownProviderType)?;
        w.provider_type = kind.as_str().to_owned();
        w.base_url = if w.base_url.trim().is_empty() {
            String::new()
        } else {
            base_url(&w.base_url)?
        };
        restore_masked_base_url(&mut w.base_url, current.map(|c| c.base_url.as_str()))?;
        if w.base_url.is_empty() && kind.official_base_url().is_none() {
            return Err(SpecError::BaseUrlRequired(kind));
        }
        w.google_project = validation::text("google_project", &w.google_project, 128)?;
        w.google_location = validation::text("google_location", &w.google_location, 64)?;
        if kind.is_vertex_family() && w.google_location.is_empty() {
            w.google_location = "global".to_owned();
        }
        if kind.requires_google_project() && w.google_project.is_empty() {
            return Err(SpecError::GoogleProjectRequired(kind));
        }
        w.models = validation::model_list("models", &w.models)?;
        w.status = validation::one_of("status", &w.status, GROUP_STATUSES)?;
        w.static_headers = headers(&w.static_headers)?;
        restore_masked_headers(&mut w.static_headers, current.map(|c| &c.static_headers))?;
        w.headers_profile = validation::one_of("headers_profile", &w.headers_profile, HEADERS_PROFILES)?;
        w.route_group = validation::identifier("route_group", &w.route_group)?;
        w.health_check = validation::one_of("health_check", &w.health_check, HEALTH_CHECKS)?;
        Ok(GroupSpec(w, kind))
    }

    pub fn kind(&self) -> ProviderType {
        self.1
    }
}

fn base_url(value: &str) -> SpecResult<String> {
    let value = value.trim().trim_end_matches('/');
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.len() > "https://".len()
        && value.len() <= 2048
        && !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(SpecError::invalid(
            "base_url",
            "must be an http:// or https:// URL",
        ));
    }
    Ok(value.to_owned())
}

/// Header names lower-cased; reserved names and values that could split a header are
/// refused.
fn headers(map: &BTreeMap<String, String>) -> SpecResult<BTreeMap<String, String>> {
    if map.len() > MAX_HEADERS {
        return Err(SpecError::invalid(
            "static_headers",
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let lower = name.trim().to_ascii_lowercase();
        let token = !lower.is_empty()
            && lower.len() <= 128
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(SpecError::invalid(
                "static_headers",
                format!("{name:?} is not a header name"),
            ));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(SpecError::invalid(
                "static_headers",
                format!("{lower} is managed by the gateway"),
            ));
        }
        if value.len() > 8192 || value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(SpecError::invalid(
                "static_headers",
                format!("the value of {lower} is not a header value"),
            ));
        }
        out.insert(lower, value.clone());
    }
    Ok(out)
}

fn restore_masked_headers(
    headers: &mut BTreeMap<String, String>,
    current: Option<&BTreeMap<String, String>>,
) -> SpecResult<()> {
    for (name, value) in headers.iter_mut() {
        if !is_secret_header(name) || !value.starts_with("****") {
            continue;
        }
        let original = current
            .and_then(|c| c.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)))
            .map(|(_, v)| v)
            .filter(|v| SecretToken::from_plaintext((*v).clone()).masked() == *value);
        match original {
            Some(original) => *value = original.clone(),
            None => {
                return Err(SpecError::invalid(
                    "static_headers",
                    format!(
                        "{name} holds a masked value; send the real one (or export with include_secrets)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(kind: &str) -> GroupWrite {
        GroupWrite {
            name: " main ".into(),
            provider_type: kind.into(),
            base_url: String::new(),
            google_project: String::new(),
            google_location: String::new(),
            models: vec!["gpt-4o".into()],
            status: "active".into(),
            static_headers: BTreeMap::new(),
            headers_profile: String::new(),
            route_group: "default".into(),
            health_check: "off".into(),
        }
    }

    #[test]
    fn types_endpoints_and_google_fields() {
        let g = GroupSpec::new(write(" OpenAI "), None).unwrap();
        assert_eq!((g.name.as_str(), g.kind()), ("main", ProviderType::OpenAi));
        assert_eq!(
            GroupSpec::new(write("compatible"), None).unwrap_err(),
            SpecError::BaseUrlRequired(ProviderType::Compatible)
        );
        assert!(matches!(
            GroupSpec::new(write("nope"), None),
            Err(SpecError::UnknownProviderType(_))
        ));
        let mut vertex = write("vertex");
        vertex.google_project = "p".into();
        assert_eq!(GroupSpec::new(vertex, None).unwrap().google_location, "global");
    }

    #[test]
    fn masked_headers_need_a_stored_value() {
        let mut w = write("openai");
        w.static_headers.insert("Authorization".into(), "****cret".into());
        assert!(GroupSpec::new(w.clone(), None).is_err(), "nothing to restore");
        let stored = stored_group(
            BTreeMap::from([("authorization".to_owned(), "Bearer secret".to_owned())]),
            "",
        );
        let g = GroupSpec::new(w, Some(&stored)).unwrap();
        assert_eq!(g.static_headers["authorization"], "Bearer secret");
    }

    #[test]
    fn a_masked_base_url_needs_the_stored_one() {
        let real = "https://user:pass-0001@proxy.example.com/v1?key=sk-url-0002";
        let mut w = write("compatible");
        w.base_url = crate::masking::masked_base_url(real);
        assert!(GroupSpec::new(w.clone(), None).is_err(), "nothing to restore");
        let stored = stored_group(BTreeMap::new(), real);
        assert_eq!(GroupSpec::new(w, Some(&stored)).unwrap().base_url, real);
    }

    fn stored_group(static_headers: BTreeMap<String, String>, base_url: &str) -> ProviderGroup {
        ProviderGroup {
            id: 1,
            name: "g".into(),
            provider_type: "compatible".into(),
            base_url: base_url.into(),
            google_project: String::new(),
            google_location: String::new(),
            models: vec![],
            status: "active".into(),
            static_headers,
            headers_profile: String::new(),
            route_group: "default".into(),
            health_check: "off".into(),
            created_at: 0,
            updated_at: 0,
        }
    }
}
