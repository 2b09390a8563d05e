//! Kubernetes' rule for the names both sides parse from flags: namespaces, Services, host labels.

/// An RFC 1123 label: lower-case letters, digits and '-' (neither first nor last), 1 to 63 bytes.
pub fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::dns_label;

    #[test]
    fn rfc_1123_labels_only() {
        for ok in ["a", "shop", "team-a", "0a9", &"a".repeat(63)] {
            assert!(dns_label(ok), "{ok:?}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "ä", &"a".repeat(64)] {
            assert!(!dns_label(bad), "{bad:?}");
        }
    }
}
