//! Which certnames the client accepts before putting them into a URL path.
//!
//! Puppet itself allows almost any printable ASCII except `/` and upper case.
//! The operator only ever makes names of lower-case letters, digits, `.`, `-`
//! and `_` (derived from a UID and an incarnation), so anything else is refused:
//! a crafted name can then never reach another endpoint (`../clean`), add a
//! query (`x?state=`) or differ from what the agent submitted only by case.

/// Longest certname accepted (a DNS name's limit; puppet has none).
pub const MAX_CERTNAME_LEN: usize = 253;

/// A certname that cannot safely name a CA resource or a record object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid certname {certname:?}: {reason}")]
pub struct InvalidCertname {
    /// The refused certname.
    pub certname: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

/// Check that `certname` is safe to use as one URL path segment and is a name
/// the operator could have issued.
pub fn validate_certname(certname: &str) -> Result<(), InvalidCertname> {
    let refuse = |reason| {
        Err(InvalidCertname {
            certname: certname.to_owned(),
            reason,
        })
    };
    if certname.is_empty() {
        return refuse("empty");
    }
    if certname.len() > MAX_CERTNAME_LEN {
        return refuse("longer than 253 characters");
    }
    if !certname
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return refuse("only lower-case letters, digits, '.', '-' and '_' are allowed");
    }
    // Also rules out "." and ".." (path traversal) and hidden-file style names.
    if !certname
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
    {
        return refuse("must start with a letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_operator_names() {
        for name in [
            "a",
            "node-0f3c9a.incarnation-2",
            "web01.example.com",
            "pc_9f8e7d6c-1",
            "0leading-digit",
        ] {
            assert!(validate_certname(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_anything_that_could_escape_the_path() {
        for name in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "..%2fclean",
            "a?state=signed",
            "a#b",
            "a b",
            "Upper",
            "UPPER.example.com",
            ".hidden",
            "-dash",
            "tab\tname",
            "newline\n",
            "naïve",
            "a\\b",
        ] {
            let err = validate_certname(name).expect_err(name);
            assert_eq!(err.certname, name);
        }
    }

    #[test]
    fn refuses_overlong_names() {
        assert!(validate_certname(&"a".repeat(MAX_CERTNAME_LEN)).is_ok());
        assert!(validate_certname(&"a".repeat(MAX_CERTNAME_LEN + 1)).is_err());
    }
}
