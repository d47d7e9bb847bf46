//! A binding: a public model name in a namespace, routed to a provider group.

use ez_contract::selector::SelectorType;

use super::{SpecError, SpecResult, read_only_spec};
use crate::store::BindingWrite;
use crate::validation;

pub const BINDING_STATUSES: &[&str] = &["active", "disabled"];

/// A binding whose values follow the rules: the namespace an identifier, the public
/// model a model name, a weight, a known selector (a regex that compiles).
#[derive(Debug, Clone)]
pub struct BindingSpec(BindingWrite);
read_only_spec!(BindingSpec => BindingWrite);

impl BindingSpec {
    pub fn new(mut w: BindingWrite) -> SpecResult<BindingSpec> {
        w.namespace = validation::identifier("namespace", &w.namespace)?;
        w.public_model = validation::model_name("public_model", &w.public_model)
            .map_err(|_| SpecError::invalid("public_model", "must be a model name without spaces"))?;
        w.weight = validation::weight(w.weight)?;
        let kind: SelectorType = w
            .selector_type
            .parse()
            .map_err(|e: String| SpecError::invalid("selector_type", e))?;
        w.selector_type = kind.as_str().to_owned();
        w.selector_value = validation::text("selector_value", &w.selector_value, 512)?;
        if kind == SelectorType::Regex {
            let pattern = if w.selector_value.is_empty() {
                &w.public_model
            } else {
                &w.selector_value
            };
            if let Err(e) = regex::Regex::new(pattern) {
                return Err(SpecError::InvalidSelector(e.to_string()));
            }
        }
        w.status = validation::one_of("status", &w.status, BINDING_STATUSES)?;
        Ok(BindingSpec(w))
    }

    /// The same binding to group `group_id`.
    pub fn in_group(mut self, group_id: i64) -> BindingSpec {
        self.0.group_id = group_id;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write() -> BindingWrite {
        BindingWrite {
            namespace: " default".into(),
            public_model: " gpt-4o ".into(),
            group_id: 0,
            weight: 1,
            selector_type: "regex".into(),
            selector_value: "gpt-4o.*".into(),
            status: "active".into(),
        }
    }

    #[test]
    fn values_are_normalised_and_regexes_compile() {
        let b = BindingSpec::new(write()).unwrap().in_group(4);
        assert_eq!(
            (b.namespace.as_str(), b.public_model.as_str(), b.group_id),
            ("default", "gpt-4o", 4)
        );
        let mut bad = write();
        bad.selector_value = "(".into();
        assert!(matches!(
            BindingSpec::new(bad),
            Err(SpecError::InvalidSelector(_))
        ));
    }
}
