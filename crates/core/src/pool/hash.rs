//! The template's launch hash: what its nodes' instances are made from. A change of it
//! needs new instances (a roll); a change of anything else is written into the nodes.

use puppet_conductor_api::node::PuppetNodeSpec;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Hex digits kept of the hash (a label value; 40 bits tell templates apart).
const HASH_LEN: usize = 10;

/// Hash of the fields of `spec` that a new instance is needed for: the master and the
/// instance settings (image, type, subnet, security groups, profile, key, tags, IMDS,
/// cloud-config). Classes, environment, parameters and the policies are not in it: they
/// are rewritten on the nodes that exist.
pub fn launch_hash(spec: &PuppetNodeSpec) -> String {
    let fields = serde_json::json!({
        "masterRef": spec.master_ref,
        "instance": spec.instance,
    });
    let mut canonical = String::new();
    write_canonical(&fields, &mut canonical);
    let digest = Sha256::digest(canonical.as_bytes());
    hex::encode(digest)[..HASH_LEN].to_string()
}

/// JSON with object keys sorted at every level: a hash must not depend on the order a
/// map was read in (serde_json may keep insertion order).
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
