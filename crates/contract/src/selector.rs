//! Which of a group's upstream models a binding uses (SPEC §6 step 4). The CP resolves
//! selectors when it builds the snapshot, per credential; zero or several hits are a
//! configuration error shown on the binding, never a guess.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorType {
    /// The upstream model equals the selector value.
    Exact,
    /// Unanchored regular expression; exactly one model must match.
    Regex,
    /// Lower-cased, everything up to the last `/` dropped, then equal; exactly one must
    /// match.
    NormalizeExact,
}

impl SelectorType {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectorType::Exact => "exact",
            SelectorType::Regex => "regex",
            SelectorType::NormalizeExact => "normalize_exact",
        }
    }
}

impl FromStr for SelectorType {
    type Err = String;

    fn from_str(s: &str) -> Result<SelectorType, String> {
        match s.trim() {
            "exact" => Ok(SelectorType::Exact),
            "regex" => Ok(SelectorType::Regex),
            "normalize_exact" => Ok(SelectorType::NormalizeExact),
            other => Err(format!(
                "unknown selector type {other:?}; expected exact, regex or normalize_exact"
            )),
        }
    }
}

impl fmt::Display for SelectorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of resolving one selector against one credential's model list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The upstream model to send.
    Model(String),
    /// Nothing matches.
    NoMatch,
    /// Several models match; the binding must be made precise.
    Ambiguous(Vec<String>),
    /// The regular expression does not compile.
    InvalidRegex(String),
}

/// `models/Gemini-2.5-Pro` → `gemini-2.5-pro`.
pub fn normalize_model_name(name: &str) -> String {
    let base = name.rsplit_once('/').map_or(name, |(_, last)| last);
    base.trim().to_lowercase()
}

/// What a selector looks for: its value, or the public model when the value is empty.
pub fn wanted<'a>(selector_value: &'a str, public_model: &'a str) -> &'a str {
    let value = selector_value.trim();
    if value.is_empty() { public_model } else { value }
}

/// Resolves `selector_value` (empty = the public model) against `models`.
pub fn resolve(
    kind: SelectorType,
    selector_value: &str,
    public_model: &str,
    models: &[String],
) -> Resolution {
    let wanted = wanted(selector_value, public_model);
    let hits: Vec<&String> = match kind {
        SelectorType::Exact => models.iter().filter(|m| m.as_str() == wanted).collect(),
        SelectorType::Regex => {
            let re = match regex::Regex::new(wanted) {
                Ok(re) => re,
                Err(e) => return Resolution::InvalidRegex(e.to_string()),
            };
            models.iter().filter(|m| re.is_match(m)).collect()
        }
        SelectorType::NormalizeExact => {
            let wanted = normalize_model_name(wanted);
            models
                .iter()
                .filter(|m| normalize_model_name(m) == wanted)
                .collect()
        }
    };
    let mut hits: Vec<String> = hits.into_iter().cloned().collect();
    hits.dedup();
    match hits.len() {
        0 => Resolution::NoMatch,
        1 => Resolution::Model(hits.remove(0)),
        _ => Resolution::Ambiguous(hits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selector_resolution_table() {
        use Resolution::*;
        use SelectorType::*;
        let m = models(&[
            "gpt-4o",
            "gpt-4o-mini",
            "models/Gemini-2.5-Pro",
            "google/gemini-2.5-flash",
            "llama-3",
        ]);
        let cases: Vec<(&str, SelectorType, &str, &str, Resolution)> = vec![
            (
                "exact hit on the public model",
                Exact,
                "",
                "gpt-4o",
                Model("gpt-4o".into()),
            ),
            (
                "exact hit on the selector value",
                Exact,
                "gpt-4o-mini",
                "fast",
                Model("gpt-4o-mini".into()),
            ),
            ("exact miss", Exact, "", "gpt-5", NoMatch),
            ("exact is case sensitive", Exact, "GPT-4O", "x", NoMatch),
            (
                "regex with one hit",
                Regex,
                "mini$",
                "x",
                Model("gpt-4o-mini".into()),
            ),
            ("regex is unanchored", Regex, "lama", "x", Model("llama-3".into())),
            ("regex with no hit", Regex, "^claude", "x", NoMatch),
            (
                "regex with two hits",
                Regex,
                "^gpt-4o",
                "x",
                Ambiguous(vec!["gpt-4o".into(), "gpt-4o-mini".into()]),
            ),
            (
                "regex defaults to the public model",
                Regex,
                "",
                "llama",
                Model("llama-3".into()),
            ),
            (
                "normalize_exact drops a provider prefix and case",
                NormalizeExact,
                "",
                "gemini-2.5-pro",
                Model("models/Gemini-2.5-Pro".into()),
            ),
            (
                "normalize_exact on both sides",
                NormalizeExact,
                "vendor/GEMINI-2.5-FLASH",
                "x",
                Model("google/gemini-2.5-flash".into()),
            ),
            (
                "normalize_exact miss",
                NormalizeExact,
                "",
                "gemini-1.5-pro",
                NoMatch,
            ),
        ];
        for (name, kind, value, public, expected) in cases {
            assert_eq!(resolve(kind, value, public, &m), expected, "case: {name}");
        }
    }

    #[test]
    fn invalid_regex_is_reported_not_guessed() {
        assert!(matches!(
            resolve(SelectorType::Regex, "gpt-(", "x", &models(&["gpt-4o"])),
            Resolution::InvalidRegex(_)
        ));
    }

    #[test]
    fn normalize_exact_with_two_hits_is_ambiguous() {
        let m = models(&["a/GPT-4o", "b/gpt-4o"]);
        assert_eq!(
            resolve(SelectorType::NormalizeExact, "", "gpt-4o", &m),
            Resolution::Ambiguous(vec!["a/GPT-4o".into(), "b/gpt-4o".into()])
        );
    }

    #[test]
    fn selector_types_parse() {
        assert_eq!("normalize_exact".parse(), Ok(SelectorType::NormalizeExact));
        assert!("fuzzy".parse::<SelectorType>().is_err());
    }
}
