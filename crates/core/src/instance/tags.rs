//! The tags every managed instance carries, and EC2's rules for tags.
//!
//! Tags are what lets a restarted operator (or one whose status was lost)
//! adopt its instances instead of launching twice: one tag-filtered
//! DescribeInstances per master finds them all, and the node UID, certname and
//! incarnation tags say which PuppetNode and which incarnation each belongs to.

use std::collections::BTreeMap;

/// Names the operator installation that launched the instance.
pub const OPERATOR: &str = "puppet-conductor.dev/operator";
/// The PuppetMaster the instance belongs to, as `namespace/name` (see [`object_key`]).
pub const MASTER: &str = "puppet-conductor.dev/master";
/// The PuppetNode the instance was launched for, as `namespace/name`.
pub const NODE: &str = "puppet-conductor.dev/node";
/// The PuppetNode's UID (names survive delete-and-recreate; UIDs do not).
pub const NODE_UID: &str = "puppet-conductor.dev/node-uid";
/// The Puppet certname the instance's agent will request.
pub const CERTNAME: &str = "puppet-conductor.dev/certname";
/// The incarnation of the node the instance is (a replacement is the next one).
pub const INCARNATION: &str = "puppet-conductor.dev/incarnation";
/// The console's display name.
pub const NAME: &str = "Name";

/// EC2's limit of tags per resource.
pub const MAX_TAGS: usize = 50;
/// EC2's limit on a tag key, in Unicode characters.
pub const MAX_KEY_CHARS: usize = 128;
/// EC2's limit on a tag value, in Unicode characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// The `namespace/name` value of the [`MASTER`] and [`NODE`] tags.
pub fn object_key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Split a [`MASTER`]/[`NODE`] tag value back into `(namespace, name)`.
///
/// `None` unless it is exactly two non-empty parts.
pub fn split_object_key(value: &str) -> Option<(&str, &str)> {
    let (namespace, name) = value.split_once('/')?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some((namespace, name))
}

/// Check `tags` against EC2's rules before sending them: at most
/// [`MAX_TAGS`], non-empty keys of at most [`MAX_KEY_CHARS`] characters not
/// starting with the reserved `aws:` prefix, values of at most
/// [`MAX_VALUE_CHARS`] characters. The error says which rule broke.
pub fn validate(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > MAX_TAGS {
        return Err(format!(
            "{} tags, EC2 allows at most {MAX_TAGS} per resource",
            tags.len()
        ));
    }
    for (key, value) in tags {
        if key.is_empty() {
            return Err("a tag key is empty".to_owned());
        }
        if key.chars().count() > MAX_KEY_CHARS {
            return Err(format!(
                "tag key {key:?} is longer than {MAX_KEY_CHARS} characters"
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(format!("tag key {key:?} uses the reserved aws: prefix"));
        }
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(format!(
                "the value of tag {key:?} is longer than {MAX_VALUE_CHARS} characters"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_round_trip() {
        let key = object_key("team-a", "web-1");
        assert_eq!(key, "team-a/web-1");
        assert_eq!(split_object_key(&key), Some(("team-a", "web-1")));
        for bad in ["", "a", "/a", "a/", "a/b/c"] {
            assert_eq!(split_object_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn tag_rules() {
        let ok: BTreeMap<String, String> = [(MASTER.to_owned(), "ns/m".to_owned())].into();
        assert!(validate(&ok).is_ok());

        let too_many: BTreeMap<String, String> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(validate(&too_many).is_err());

        for (key, value) in [
            (String::new(), String::new()),
            ("k".repeat(MAX_KEY_CHARS + 1), String::new()),
            ("AWS:cloudformation".to_owned(), String::new()),
            ("k".to_owned(), "v".repeat(MAX_VALUE_CHARS + 1)),
        ] {
            let tags: BTreeMap<String, String> = [(key.clone(), value)].into();
            assert!(validate(&tags).is_err(), "{key:?}");
        }

        let at_limits: BTreeMap<String, String> =
            [("é".repeat(MAX_KEY_CHARS), "é".repeat(MAX_VALUE_CHARS))].into();
        assert!(validate(&at_limits).is_ok());
    }
}
