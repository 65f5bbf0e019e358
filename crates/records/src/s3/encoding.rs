//! How records are stored and read back: the metadata names, which values may travel
//! as headers, a signature record's bytes, and the hash and owner of a stored body.

use puppet_conductor_core::record::{sha256_hex, RecordOwner};

use super::cache::Stored;
use crate::{RecordsError, SignatureRecord};

/// Metadata (sent as `x-amz-meta-…`) carrying the record's content hash.
pub(super) const META_CONTENT_SHA256: &str = "content-sha256";
/// Metadata carrying the owner's node UID, so ownership needs no GET.
pub(super) const META_OWNER_NODE_UID: &str = "owner-node-uid";
/// Metadata on check-ins: the exact check-in time.
pub(super) const META_CHECKED_IN_AT: &str = "checked-in-at";

pub(super) fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic())
}

pub(super) fn signature_bytes(signature: &SignatureRecord) -> Result<Vec<u8>, RecordsError> {
    let mut bytes =
        serde_json::to_vec_pretty(signature).map_err(|source| RecordsError::Encode {
            certname: signature.certname.clone(),
            source,
        })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// What a record's body says about it (hash of the bytes as stored, owner UID
/// if it parses as a record owner).
pub(super) fn stored_from_body(bytes: &[u8], etag: String) -> Stored {
    Stored {
        etag,
        content_sha256: sha256_hex(bytes),
        node_uid: owner_from_body(bytes).map(|o| o.node_uid),
    }
}

/// The `owner` of a stored record, read leniently (only that field must parse).
pub(super) fn owner_from_body(bytes: &[u8]) -> Option<RecordOwner> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    serde_json::from_value(value.get("owner")?.clone()).ok()
}
