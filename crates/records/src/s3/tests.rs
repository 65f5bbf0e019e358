//! Tests of what needs no S3: ETag comparison, reading a stored body, header safety and
//! the certname check.

use super::cache::same_etag;
use super::encoding::{is_header_safe, owner_from_body, stored_from_body};
use super::records::check_certname;
use puppet_conductor_core::record::{sha256_hex, NodeRecord};

fn sample() -> NodeRecord {
    serde_json::from_value(serde_json::json!({
        "certname": "web-1", "classes": ["role::web"], "environment": "production", "parameters": {}, "instanceId": null,
        "challengeSha256": sha256_hex(b"challenge"), "state": "Live",
        "owner": {"operator": "puppet-conductor", "master": "puppet/main",
                  "node": "puppet/web-1", "nodeUid": "6f0e5c1a-8d1b", "incarnation": 1},
    }))
    .unwrap()
}

#[test]
fn etags_compare_without_quotes() {
    assert!(same_etag("\"abc\"", "abc"));
    assert!(same_etag("\"abc\"", "\"abc\""));
    assert!(!same_etag("\"abc\"", "\"abd\""));
}

#[test]
fn stored_state_from_a_body() {
    let bytes = sample().to_bytes().unwrap();
    let s = stored_from_body(&bytes, "\"e\"".into());
    assert_eq!(s.content_sha256, sample().content_hash().unwrap());
    assert_eq!(
        s.node_uid.as_deref(),
        Some(sample().owner.node_uid.as_str())
    );
    let foreign = stored_from_body(b"classes: [a]\n", "\"f\"".into());
    assert_eq!(foreign.node_uid, None);
    assert_eq!(owner_from_body(b"{\"owner\": 1}"), None);
}

#[test]
fn header_safety() {
    assert!(is_header_safe("6f0e5c1a-8d1b-4b6e-9f7a-2d7c1e0b9a11"));
    assert!(!is_header_safe(""));
    assert!(!is_header_safe("a b"));
    assert!(!is_header_safe("ü"));
    assert!(!is_header_safe("a\r\nb"));
}

#[test]
fn invalid_certnames_are_refused() {
    for name in ["", "../x", "a/b", "Upper"] {
        let e = check_certname(name).unwrap_err();
        assert_eq!(e.category(), "invalid_certname", "{name}");
    }
    assert!(check_certname("web-1.example.com").is_ok());
}
