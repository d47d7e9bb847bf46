//! Upstream URLs as the API shows them: a `base_url` that carries credentials (userinfo,
//! query values) is masked in every response and in exports without secrets, like the
//! credentials' keys (`ez_contract::redact::mask_url` says how). Sending the masked form
//! back — a read-modify-write, or importing such an export — keeps the stored URL.

use ez_contract::redact::{is_masked_url, mask_url};

use crate::spec::{SpecError, SpecResult};

/// `base_url` as responses and secret-less exports show it.
pub fn masked_base_url(url: &str) -> String {
    mask_url(url)
}

/// Puts back the stored URL when a client sent it in its masked form; a masked URL that
/// does not mask `current` (none stored, or another one) is refused rather than stored.
pub fn restore_masked_base_url(url: &mut String, current: Option<&str>) -> SpecResult<()> {
    if !is_masked_url(url) {
        return Ok(());
    }
    match current {
        Some(current) if mask_url(current) == *url => {
            current.clone_into(url);
            Ok(())
        }
        _ => Err(SpecError::invalid(
            "base_url",
            "holds a masked value; send the real URL (or export with include_secrets)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = "https://user:pass-0001@proxy.example.com/v1?api-key=sk-url-0002";

    #[test]
    fn the_masked_form_of_the_stored_url_restores_it() {
        let mut sent = masked_base_url(STORED);
        assert!(
            !sent.contains("pass-0001") && !sent.contains("sk-url-0002"),
            "{sent}"
        );
        restore_masked_base_url(&mut sent, Some(STORED)).expect("restored");
        assert_eq!(sent, STORED);
    }

    #[test]
    fn a_plain_url_is_taken_as_sent() {
        let mut sent = "https://other.example.com/v1?api-key=new-key".to_owned();
        restore_masked_base_url(&mut sent, Some(STORED)).expect("plain");
        assert_eq!(sent, "https://other.example.com/v1?api-key=new-key");
        restore_masked_base_url(&mut sent, None).expect("plain, nothing stored");
    }

    #[test]
    fn a_masked_url_that_masks_nothing_stored_is_refused() {
        let other = masked_base_url("https://user:pass-0001@elsewhere.example.com/v1");
        for current in [Some(STORED), None] {
            let mut sent = other.clone();
            let err = restore_masked_base_url(&mut sent, current).expect_err("refused");
            assert!(
                matches!(
                    err,
                    SpecError::InvalidField {
                        field: "base_url",
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}
