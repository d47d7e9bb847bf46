//! Which namespaces a master or child key may use, and its default one.

use super::{SpecError, SpecResult};
use crate::validation;

/// A default namespace and the list of allowed ones, default included: identifiers,
/// de-duplicated, never empty. Whether they exist is for the caller to check (it needs
/// the database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessSpec {
    default_namespace: String,
    namespaces: Vec<String>,
}

impl AccessSpec {
    /// Both values given: the default must be one of the list.
    pub fn new(default_namespace: &str, namespaces: &[String]) -> SpecResult<AccessSpec> {
        AccessSpec::merge(Some(default_namespace), Some(namespaces), ("", &[]))
    }

    /// A change of `current` (trusted: it was built by this type): a list given replaces
    /// the list, and then the default must be on it; a default given alone joins the
    /// list; with no default given, the current one stays if still listed, else the
    /// first of the list becomes the default.
    pub fn merge(
        requested_default: Option<&str>,
        requested_list: Option<&[String]>,
        current: (&str, &[String]),
    ) -> SpecResult<AccessSpec> {
        let mut namespaces = match requested_list {
            Some(list) => {
                let list = validation::identifier_list("namespaces", list)?;
                if list.is_empty() {
                    return Err(SpecError::invalid("namespaces", "must not be empty"));
                }
                list
            }
            None => current.1.to_vec(),
        };
        let default_namespace = match requested_default {
            Some(name) => validation::identifier("default_namespace", name)?,
            None if namespaces.iter().any(|n| n == current.0) => current.0.to_owned(),
            None => namespaces
                .first()
                .cloned()
                .ok_or_else(|| SpecError::invalid("namespaces", "must not be empty"))?,
        };
        if !namespaces.contains(&default_namespace) {
            if requested_list.is_some() {
                return Err(SpecError::DefaultNamespaceNotInNamespaces(default_namespace));
            }
            namespaces.insert(0, default_namespace.clone());
        }
        Ok(AccessSpec {
            default_namespace,
            namespaces,
        })
    }

    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The namespaces of `self` that `allowed` lacks.
    pub fn outside(&self, allowed: &[String]) -> Vec<String> {
        self.namespaces
            .iter()
            .filter(|n| !allowed.contains(n))
            .cloned()
            .collect()
    }

    pub fn into_parts(self) -> (String, Vec<String>) {
        (self.default_namespace, self.namespaces)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn both_given() {
        let a = AccessSpec::new(" team", &list(&["default", "team", " team"])).unwrap();
        assert_eq!(a.default_namespace(), "team");
        assert_eq!(a.namespaces(), list(&["default", "team"]));
        assert_eq!(
            AccessSpec::new("other", &list(&["default"])),
            Err(SpecError::DefaultNamespaceNotInNamespaces("other".into()))
        );
        assert!(AccessSpec::new("default", &[]).is_err());
        assert!(AccessSpec::new("default", &list(&["team.a"])).is_err());
    }

    #[test]
    fn changes_of_the_current_access() {
        let current = list(&["default", "team"]);
        let a = AccessSpec::merge(Some("extra"), None, ("default", &current)).unwrap();
        assert_eq!(a.namespaces(), list(&["extra", "default", "team"]));
        let a = AccessSpec::merge(None, Some(&list(&["team"])), ("default", &current)).unwrap();
        assert_eq!(
            (a.default_namespace(), a.namespaces()),
            ("team", &list(&["team"])[..])
        );
        let a = AccessSpec::merge(None, None, ("team", &current)).unwrap();
        assert_eq!(a.default_namespace(), "team");
        assert_eq!(a.outside(&list(&["default"])), list(&["team"]));
    }
}
