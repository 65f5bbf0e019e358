//! Object keys: `<prefix>records/<certname>.json`, `<prefix>checkins/<certname>` and
//! `<prefix>signatures/<certname>.json`.

use crate::certname::validate_certname;

const RECORDS_DIR: &str = "records/";
const CHECKINS_DIR: &str = "checkins/";
const SIGNATURES_DIR: &str = "signatures/";
const RECORD_SUFFIX: &str = ".json";

/// The prefix as keys use it: empty, or without leading `/` and ending in `/`
/// (`"puppet"` and `"/puppet/"` both become `"puppet/"`).
pub fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim_start_matches('/');
    if trimmed.is_empty() || trimmed.ends_with('/') {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/")
    }
}

/// Where records and check-ins live under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

/// What an object key under the prefix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedKey {
    /// A record for this certname.
    Record(String),
    /// A check-in for this certname.
    CheckIn(String),
    /// A signature record for this certname.
    Signature(String),
}

impl KeyLayout {
    /// The layout under `prefix` (normalised with [`normalize_prefix`]).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: normalize_prefix(prefix),
        }
    }

    /// The normalised prefix: everything this layout owns starts with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where every record key starts.
    pub fn records_prefix(&self) -> String {
        format!("{}{RECORDS_DIR}", self.prefix)
    }

    /// The record key of `certname`.
    pub fn record_key(&self, certname: &str) -> String {
        format!("{}{RECORDS_DIR}{certname}{RECORD_SUFFIX}", self.prefix)
    }

    /// The check-in key of `certname`.
    pub fn check_in_key(&self, certname: &str) -> String {
        format!("{}{CHECKINS_DIR}{certname}", self.prefix)
    }

    /// The signature-record key of `certname`.
    pub fn signature_key(&self, certname: &str) -> String {
        format!("{}{SIGNATURES_DIR}{certname}{RECORD_SUFFIX}", self.prefix)
    }

    /// Which record, check-in or signature `key` is; `None` for anything else under the
    /// prefix (other files, nested keys, names that are not valid certnames).
    pub fn parse(&self, key: &str) -> Option<ParsedKey> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        let parsed = if let Some(name) = rest.strip_prefix(RECORDS_DIR) {
            ParsedKey::Record(name.strip_suffix(RECORD_SUFFIX)?.to_owned())
        } else if let Some(name) = rest.strip_prefix(CHECKINS_DIR) {
            ParsedKey::CheckIn(name.to_owned())
        } else if let Some(name) = rest.strip_prefix(SIGNATURES_DIR) {
            ParsedKey::Signature(name.strip_suffix(RECORD_SUFFIX)?.to_owned())
        } else {
            return None;
        };
        let (ParsedKey::Record(name) | ParsedKey::CheckIn(name) | ParsedKey::Signature(name)) =
            &parsed;
        validate_certname(name).ok()?;
        Some(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_normalised() {
        for (given, expected) in [
            ("", ""),
            ("/", ""),
            ("puppet", "puppet/"),
            ("puppet/", "puppet/"),
            ("/puppet/", "puppet/"),
            ("a/b", "a/b/"),
        ] {
            assert_eq!(normalize_prefix(given), expected, "{given:?}");
        }
    }

    #[test]
    fn key_layout() {
        let l = KeyLayout::new("puppet");
        assert_eq!(l.record_key("web-1"), "puppet/records/web-1.json");
        assert_eq!(l.check_in_key("web-1"), "puppet/checkins/web-1");
        assert_eq!(l.signature_key("web-1"), "puppet/signatures/web-1.json");
        assert_eq!(l.records_prefix(), "puppet/records/");
        let root = KeyLayout::new("");
        assert_eq!(root.record_key("a.b"), "records/a.b.json");
        assert_eq!(root.check_in_key("a.b"), "checkins/a.b");
    }

    #[test]
    fn keys_parse_back() {
        let l = KeyLayout::new("p/");
        for name in ["web-1", "a.json", "n.example.com"] {
            assert_eq!(
                l.parse(&l.record_key(name)),
                Some(ParsedKey::Record(name.into()))
            );
            assert_eq!(
                l.parse(&l.check_in_key(name)),
                Some(ParsedKey::CheckIn(name.into()))
            );
            assert_eq!(
                l.parse(&l.signature_key(name)),
                Some(ParsedKey::Signature(name.into()))
            );
        }
    }

    #[test]
    fn foreign_keys_are_ignored() {
        let l = KeyLayout::new("p");
        for key in [
            "p/records/web-1",
            "p/records/.json",
            "p/records/a/b.json",
            "p/checkins/a/b",
            "p/checkins/",
            "p/signatures/web-1",
            "p/signatures/a/b.json",
            "p/other/web-1.json",
            "q/records/web-1.json",
            "records/web-1.json",
            "p/records/Upper.json",
        ] {
            assert_eq!(l.parse(key), None, "{key}");
        }
    }
}
