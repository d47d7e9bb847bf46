//! A namespace: a named routing space.

use super::{SpecError, SpecResult, read_only_spec};
use crate::store::NamespaceStatus;
use crate::validation;

const MAX_DESCRIPTION: usize = 1024;

/// A namespace's values as they are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceFields {
    pub name: String,
    pub description: String,
    pub status: NamespaceStatus,
}

/// A namespace whose values follow the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSpec(NamespaceFields);
read_only_spec!(NamespaceSpec => NamespaceFields);

impl NamespaceSpec {
    /// `name`: 1–64 of `A-Za-z0-9_-` (trimmed); `description`: at most 1024 characters,
    /// no control characters but line breaks and tabs (trimmed).
    pub fn new(name: &str, description: &str, status: NamespaceStatus) -> SpecResult<NamespaceSpec> {
        let name = validation::identifier("name", name)?;
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(SpecError::invalid(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters"),
            ));
        }
        if description
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(SpecError::invalid(
                "description",
                "must not contain control characters",
            ));
        }
        Ok(NamespaceSpec(NamespaceFields {
            name,
            description: description.trim().to_owned(),
            status,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stored_trimmed() {
        let ns = NamespaceSpec::new(" team ", "  shared  ", NamespaceStatus::Active).unwrap();
        assert_eq!((ns.name.as_str(), ns.description.as_str()), ("team", "shared"));
        assert!(NamespaceSpec::new("team.a", "", NamespaceStatus::Active).is_err());
        assert!(NamespaceSpec::new("t", "a\u{7}b", NamespaceStatus::Active).is_err());
        assert!(NamespaceSpec::new("t", "line\nbreak", NamespaceStatus::Active).is_ok());
        assert!(NamespaceSpec::new("t", &"d".repeat(1025), NamespaceStatus::Active).is_err());
    }
}
