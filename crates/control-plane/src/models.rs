//! The model registry: a built-in catalogue of well-known models shipped with the binary
//! (`data/model_catalog.json`, no network), overlaid by admin overrides from the database.

use std::collections::HashMap;
use std::sync::OnceLock;

use ez_contract::selector::normalize_model_name;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Capabilities and prices of one model. Overrides use the same shape with every field
/// optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    /// Maker of the model (`openai`, `anthropic`, …); empty when unknown.
    #[serde(default)]
    pub provider: String,
    /// `chat`, `embedding`, `completion`, `image`, `audio`, `rerank` or `moderation`.
    pub kind: String,
    pub context_window: Option<i64>,
    pub max_output_tokens: Option<i64>,
    pub supports_vision: bool,
    pub supports_functions: bool,
    pub supports_tool_choice: bool,
    pub supports_fim: bool,
    pub supports_reasoning: bool,
    pub supports_json_output: bool,
    pub input_price_per_mtok: Option<f64>,
    pub output_price_per_mtok: Option<f64>,
    pub embedding_dimensions: Option<i64>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

impl ModelInfo {
    /// What is known of a model that is in neither the catalogue nor the overrides.
    pub fn unknown(name: &str) -> ModelInfo {
        ModelInfo {
            name: name.to_owned(),
            provider: String::new(),
            kind: "chat".to_owned(),
            context_window: None,
            max_output_tokens: None,
            supports_vision: false,
            supports_functions: false,
            supports_tool_choice: false,
            supports_fim: false,
            supports_reasoning: false,
            supports_json_output: false,
            input_price_per_mtok: None,
            output_price_per_mtok: None,
            embedding_dimensions: None,
            aliases: Vec::new(),
        }
    }
}

/// An admin override: the fields it sets replace the catalogue's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_vision: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_functions: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_tool_choice: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_fim: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_reasoning: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports_json_output: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_price_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_price_per_mtok: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dimensions: Option<i64>,
}

pub const MODEL_KINDS: &[&str] = &[
    "chat",
    "embedding",
    "completion",
    "image",
    "audio",
    "rerank",
    "moderation",
];

impl ModelOverride {
    /// Checks values an operator may get wrong; returns the first problem.
    pub fn problem(&self) -> Option<String> {
        if let Some(kind) = &self.kind
            && !MODEL_KINDS.contains(&kind.as_str())
        {
            return Some(format!("kind must be one of {}", MODEL_KINDS.join(", ")));
        }
        for (field, value) in [
            ("context_window", self.context_window),
            ("max_output_tokens", self.max_output_tokens),
            ("embedding_dimensions", self.embedding_dimensions),
        ] {
            if value.is_some_and(|v| v <= 0) {
                return Some(format!("{field} must be > 0"));
            }
        }
        for (field, value) in [
            ("input_price_per_mtok", self.input_price_per_mtok),
            ("output_price_per_mtok", self.output_price_per_mtok),
        ] {
            if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
                return Some(format!("{field} must be a number >= 0"));
            }
        }
        None
    }

    pub fn apply(&self, base: &mut ModelInfo) {
        macro_rules! set {
            ($($field:ident),+) => { $( if let Some(v) = &self.$field { base.$field = v.clone(); } )+ };
        }
        set!(
            provider,
            kind,
            supports_vision,
            supports_functions,
            supports_tool_choice,
            supports_fim
        );
        set!(supports_reasoning, supports_json_output);
        macro_rules! set_opt {
            ($($field:ident),+) => { $( if self.$field.is_some() { base.$field = self.$field; } )+ };
        }
        set_opt!(
            context_window,
            max_output_tokens,
            input_price_per_mtok,
            output_price_per_mtok,
            embedding_dimensions
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    source: String,
    updated: String,
    models: Vec<ModelInfo>,
}

/// The built-in catalogue, parsed once.
pub struct Catalog {
    pub source: String,
    pub updated: String,
    pub models: Vec<ModelInfo>,
    /// Name, alias and normalised name → index into `models`.
    index: HashMap<String, usize>,
}

const CATALOG_JSON: &str = include_str!("../data/model_catalog.json");

impl Catalog {
    pub fn builtin() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            // The file is part of the source tree and checked by a test; a broken file
            // is a build defect, and an empty catalogue keeps the gateway running.
            let file: CatalogFile = serde_json::from_str(CATALOG_JSON).unwrap_or_else(|e| {
                tracing::error!(error = %e, "built-in model catalogue is malformed");
                CatalogFile {
                    source: "empty".into(),
                    updated: String::new(),
                    models: Vec::new(),
                }
            });
            Catalog::new(file.source, file.updated, file.models)
        })
    }

    fn new(source: String, updated: String, models: Vec<ModelInfo>) -> Catalog {
        let mut index = HashMap::new();
        for (i, m) in models.iter().enumerate() {
            for name in std::iter::once(&m.name).chain(m.aliases.iter()) {
                index.entry(name.clone()).or_insert(i);
                index.entry(normalize_model_name(name)).or_insert(i);
            }
        }
        Catalog {
            source,
            updated,
            models,
            index,
        }
    }

    /// Finds a model by name, alias, or normalised name (`openai/GPT-4o` → `gpt-4o`).
    pub fn find(&self, name: &str) -> Option<&ModelInfo> {
        self.index
            .get(name)
            .or_else(|| self.index.get(&normalize_model_name(name)))
            .map(|&i| &self.models[i])
    }
}

/// Where a model's description came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InfoSource {
    Catalog,
    Override,
    CatalogAndOverride,
    Unknown,
}

/// The registry's answer for `name`: catalogue entry (if any) with the override applied.
pub fn describe(name: &str, overrides: &HashMap<String, ModelOverride>) -> (ModelInfo, InfoSource) {
    let catalog = Catalog::builtin().find(name);
    let override_ = overrides
        .get(name)
        .or_else(|| catalog.and_then(|c| overrides.get(&c.name)));
    let mut info = catalog.cloned().unwrap_or_else(|| ModelInfo::unknown(name));
    if catalog.is_some() {
        // Report the name asked for; the catalogue's canonical name is an alias of it.
        if info.name != name {
            info.aliases.push(info.name.clone());
            info.name = name.to_owned();
        }
    }
    let source = match (catalog.is_some(), override_) {
        (true, Some(o)) => {
            o.apply(&mut info);
            InfoSource::CatalogAndOverride
        }
        (false, Some(o)) => {
            o.apply(&mut info);
            InfoSource::Override
        }
        (true, None) => InfoSource::Catalog,
        (false, None) => InfoSource::Unknown,
    };
    (info, source)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn builtin_catalogue_is_well_formed() {
        let catalog = Catalog::builtin();
        assert!(
            catalog.models.len() >= 50,
            "the catalogue has {} models",
            catalog.models.len()
        );
        let mut names = HashSet::new();
        for m in &catalog.models {
            for name in std::iter::once(&m.name).chain(m.aliases.iter()) {
                assert!(names.insert(name.clone()), "duplicate model id {name}");
                assert!(
                    !name.is_empty() && !name.contains(char::is_whitespace),
                    "bad id {name:?}"
                );
            }
            assert!(
                MODEL_KINDS.contains(&m.kind.as_str()),
                "{}: kind {}",
                m.name,
                m.kind
            );
            assert!(m.context_window.is_none_or(|c| c > 0), "{}", m.name);
            if let (Some(out), Some(ctx)) = (m.max_output_tokens, m.context_window) {
                assert!(out <= ctx, "{}: max output above context", m.name);
            }
            for price in [m.input_price_per_mtok, m.output_price_per_mtok]
                .into_iter()
                .flatten()
            {
                assert!(price >= 0.0, "{}", m.name);
            }
        }
    }

    #[test]
    fn lookup_by_name_alias_and_normalised_name() {
        let catalog = Catalog::builtin();
        let gpt4o = catalog.find("gpt-4o").expect("gpt-4o is catalogued");
        assert_eq!(gpt4o.kind, "chat");
        assert!(gpt4o.supports_vision && gpt4o.supports_functions);
        assert_eq!(
            catalog.find("gpt-4o-2024-08-06").map(|m| &m.name),
            Some(&gpt4o.name)
        );
        assert_eq!(catalog.find("openai/GPT-4o").map(|m| &m.name), Some(&gpt4o.name));
        assert_eq!(
            catalog.find("text-embedding-3-small").map(|m| m.kind.as_str()),
            Some("embedding")
        );
        assert!(catalog.find("no-such-model-anywhere").is_none());
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let mut overrides = HashMap::new();
        overrides.insert(
            "gpt-4o".to_owned(),
            ModelOverride {
                context_window: Some(1_000),
                ..Default::default()
            },
        );
        let (info, source) = describe("gpt-4o", &overrides);
        assert_eq!(source, InfoSource::CatalogAndOverride);
        assert_eq!(info.context_window, Some(1_000));
        assert!(
            info.supports_vision,
            "untouched fields keep the catalogue's value"
        );

        overrides.insert(
            "house-model".to_owned(),
            ModelOverride {
                kind: Some("embedding".into()),
                ..Default::default()
            },
        );
        let (info, source) = describe("house-model", &overrides);
        assert_eq!((source, info.kind.as_str()), (InfoSource::Override, "embedding"));
        let (info, source) = describe("mystery", &overrides);
        assert_eq!((source, info.kind.as_str()), (InfoSource::Unknown, "chat"));
    }

    #[test]
    fn override_problems_are_reported() {
        assert!(
            ModelOverride {
                kind: Some("magic".into()),
                ..Default::default()
            }
            .problem()
            .is_some()
        );
        assert!(
            ModelOverride {
                context_window: Some(0),
                ..Default::default()
            }
            .problem()
            .is_some()
        );
        assert!(
            ModelOverride {
                input_price_per_mtok: Some(-1.0),
                ..Default::default()
            }
            .problem()
            .is_some()
        );
        assert!(
            ModelOverride {
                context_window: Some(8),
                ..Default::default()
            }
            .problem()
            .is_none()
        );
    }
}
