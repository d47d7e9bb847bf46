//! A master (tenant).

use super::token::{StoredToken, epoch};
use super::{AccessSpec, SpecResult, read_only_spec};
use crate::store::{MasterImport, MasterWrite, NewMaster};
use crate::validation;

/// A master whose values follow the rules: name 1–128 characters (trimmed), group an
/// identifier, `max_child_keys` and `global_qps` ≥ 0, valid access.
#[derive(Debug, Clone)]
pub struct MasterSpec(MasterWrite);
read_only_spec!(MasterSpec => MasterWrite);

impl MasterSpec {
    pub fn new(w: MasterWrite) -> SpecResult<MasterSpec> {
        let name = validation::display_name("name", &w.name)?;
        let group = validation::identifier("group", &w.group)?;
        let max_child_keys = validation::non_negative("max_child_keys", w.max_child_keys)?;
        let global_qps = validation::non_negative("global_qps", w.global_qps)?;
        let (default_namespace, namespaces) =
            AccessSpec::new(&w.default_namespace, &w.namespaces)?.into_parts();
        Ok(MasterSpec(MasterWrite {
            name,
            group,
            status: w.status,
            max_child_keys,
            global_qps,
            default_namespace,
            namespaces,
            revision: w.revision,
        }))
    }

    /// The master as the API creates it: active, epoch 1, with a fresh key.
    pub fn new_master(&self, token_digest: String, token_prefix: String) -> NewMaster {
        NewMaster {
            name: self.0.name.clone(),
            group: self.0.group.clone(),
            max_child_keys: self.0.max_child_keys,
            global_qps: self.0.global_qps,
            default_namespace: self.0.default_namespace.clone(),
            namespaces: self.0.namespaces.clone(),
            token_digest,
            token_prefix,
        }
    }

    /// The master as a backup restores it: its epoch (≥ 1) and key digest.
    pub fn import(&self, master_epoch: i64, token: &StoredToken) -> SpecResult<MasterImport> {
        Ok(MasterImport {
            name: self.0.name.clone(),
            group: self.0.group.clone(),
            status: self.0.status,
            max_child_keys: self.0.max_child_keys,
            global_qps: self.0.global_qps,
            epoch: epoch("epoch", master_epoch)?,
            default_namespace: self.0.default_namespace.clone(),
            namespaces: self.0.namespaces.clone(),
            token_digest: token.digest().to_owned(),
            token_prefix: token.prefix().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use ez_contract::snapshot::MasterStatus;

    use super::*;

    fn write(name: &str, namespaces: &[&str]) -> MasterWrite {
        MasterWrite {
            name: name.into(),
            group: " default ".into(),
            status: MasterStatus::Active,
            max_child_keys: 5,
            global_qps: 0,
            default_namespace: "default".into(),
            namespaces: namespaces.iter().map(|s| (*s).to_owned()).collect(),
            revision: 3,
        }
    }

    #[test]
    fn values_are_normalised() {
        let m = MasterSpec::new(write(" acme ", &["default", " default"])).unwrap();
        assert_eq!((m.name.as_str(), m.group.as_str()), ("acme", "default"));
        assert_eq!(m.namespaces, vec!["default"]);
        assert_eq!(m.revision, 3);
        assert!(
            MasterSpec::new(write("acme", &["team"])).is_err(),
            "default not listed"
        );
        let mut negative = write("acme", &["default"]);
        negative.max_child_keys = -1;
        assert!(MasterSpec::new(negative).is_err());
        let token = StoredToken::new(&"0".repeat(64), "ezm-0000").unwrap();
        assert!(m.import(0, &token).is_err());
        assert_eq!(m.import(2, &token).unwrap().epoch, 2);
    }
}
