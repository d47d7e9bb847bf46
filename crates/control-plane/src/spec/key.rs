//! A child key of a master.

use ez_contract::snapshot::KeyStatus;

use super::token::{StoredToken, epoch};
use super::{AccessSpec, SpecError, SpecResult, read_only_spec};
use crate::store::{IssuedBy, KeyImport, KeyWrite, NewKey, SuspendedBy};
use crate::validation;

/// A child key whose values follow the rules: name 1–128 characters (trimmed), access
/// within its master's namespaces, normalised IP lists, an expiry in range, `qps` ≥ 0,
/// and `suspended_by` set exactly when the key is suspended.
#[derive(Debug, Clone)]
pub struct KeySpec(KeyWrite);
read_only_spec!(KeySpec => KeyWrite);

impl KeySpec {
    /// `master_namespaces`: the namespaces of the key's master, which the key's must be
    /// among; `None` for a key that can never authenticate again (revoked, or issued
    /// before its master's epoch), whose namespaces are a record of the past. The expiry
    /// may lie in the past (a restored key that has expired); a client that sets one must
    /// give a future time ([`validation::future_time`]).
    pub fn new(w: KeyWrite, master_namespaces: Option<&[String]>) -> SpecResult<KeySpec> {
        let name = validation::display_name("name", &w.name)?;
        let access = AccessSpec::new(&w.default_namespace, &w.namespaces)?;
        if let Some(allowed) = master_namespaces {
            let outside = access.outside(allowed);
            if !outside.is_empty() {
                return Err(SpecError::NamespacesNotAllowed(outside));
            }
        }
        let (default_namespace, namespaces) = access.into_parts();
        let allow_ips = validation::cidr_list("allow_ips", &w.allow_ips)?;
        let deny_ips = validation::cidr_list("deny_ips", &w.deny_ips)?;
        let expires_at = w
            .expires_at
            .map(|t| validation::expiry("expires_at", t))
            .transpose()?;
        let qps = w.qps.map(|q| validation::non_negative("qps", q)).transpose()?;
        let suspended_by = match (w.status, w.suspended_by) {
            // A suspension whose author is unknown (a document written before the field
            // existed) is taken for an admin's, so it keeps holding.
            (KeyStatus::Suspended, by) => Some(by.unwrap_or(SuspendedBy::Admin)),
            (_, None) => None,
            (_, Some(_)) => {
                return Err(SpecError::invalid(
                    "suspended_by",
                    "only a suspended key has suspended_by",
                ));
            }
        };
        Ok(KeySpec(KeyWrite {
            name,
            status: w.status,
            suspended_by,
            default_namespace,
            namespaces,
            allow_ips,
            deny_ips,
            expires_at,
            qps,
            revision: w.revision,
        }))
    }

    /// The key as the API issues it: active, with a fresh token.
    pub fn new_key(
        &self,
        master_id: i64,
        token_digest: String,
        token_prefix: String,
        issued_by: IssuedBy,
    ) -> NewKey {
        NewKey {
            master_id,
            name: self.0.name.clone(),
            token_digest,
            token_prefix,
            issued_by,
            default_namespace: self.0.default_namespace.clone(),
            namespaces: self.0.namespaces.clone(),
            allow_ips: self.0.allow_ips.clone(),
            deny_ips: self.0.deny_ips.clone(),
            expires_at: self.0.expires_at,
            qps: self.0.qps,
        }
    }

    /// The key as a backup restores it: its digest, epoch (≥ 1) and issuer.
    pub fn import(
        &self,
        master_id: i64,
        token: &StoredToken,
        issued_at_epoch: i64,
        issued_by: IssuedBy,
    ) -> SpecResult<KeyImport> {
        Ok(KeyImport {
            master_id,
            name: self.0.name.clone(),
            token_digest: token.digest().to_owned(),
            token_prefix: token.prefix().to_owned(),
            status: self.0.status,
            suspended_by: self.0.suspended_by,
            issued_at_epoch: epoch("issued_at_epoch", issued_at_epoch)?,
            issued_by,
            default_namespace: self.0.default_namespace.clone(),
            namespaces: self.0.namespaces.clone(),
            allow_ips: self.0.allow_ips.clone(),
            deny_ips: self.0.deny_ips.clone(),
            expires_at: self.0.expires_at,
            qps: self.0.qps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write() -> KeyWrite {
        KeyWrite {
            name: " ci ".into(),
            status: KeyStatus::Active,
            suspended_by: None,
            default_namespace: "default".into(),
            namespaces: vec!["default".into(), "default".into()],
            allow_ips: vec!["10.1.2.3".into()],
            deny_ips: vec![],
            expires_at: Some(1),
            qps: None,
            revision: 0,
        }
    }

    #[test]
    fn values_are_normalised() {
        let master = ["default".to_owned(), "team".to_owned()];
        let k = KeySpec::new(write(), Some(&master[..])).unwrap();
        assert_eq!(k.name, "ci");
        assert_eq!(k.namespaces, vec!["default"]);
        assert_eq!(k.allow_ips, vec!["10.1.2.3/32"]);
        assert_eq!(k.expires_at, Some(1), "a past expiry is kept");
        let mut far = write();
        far.expires_at = Some(i64::MAX);
        assert!(KeySpec::new(far, Some(&master[..])).is_err());
        let mut outside = write();
        outside.namespaces = vec!["default".into(), "other".into()];
        assert_eq!(
            KeySpec::new(outside.clone(), Some(&master[..])).unwrap_err(),
            SpecError::NamespacesNotAllowed(vec!["other".into()])
        );
        assert!(
            KeySpec::new(outside, None).is_ok(),
            "a dead key's namespaces are history"
        );
    }

    #[test]
    fn suspended_by_goes_with_the_suspension() {
        let master = ["default".to_owned()];
        let mut suspended = write();
        suspended.status = KeyStatus::Suspended;
        let k = KeySpec::new(suspended.clone(), Some(&master[..])).unwrap();
        assert_eq!(
            k.suspended_by,
            Some(SuspendedBy::Admin),
            "unknown author: an admin"
        );
        suspended.suspended_by = Some(SuspendedBy::Master);
        let k = KeySpec::new(suspended, Some(&master[..])).unwrap();
        assert_eq!(k.suspended_by, Some(SuspendedBy::Master));
        let mut active = write();
        active.suspended_by = Some(SuspendedBy::Admin);
        assert!(KeySpec::new(active, Some(&master[..])).is_err());
    }
}
