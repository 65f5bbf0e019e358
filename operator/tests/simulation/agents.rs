//! Agents on the launched instances, and attackers who can reach the CA port.

use rcgen::{
    Attribute, CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair,
    PublicKeyData,
};

const OID_CHALLENGE_PASSWORD: &[u64] = &[1, 2, 840, 113549, 1, 9, 7];
const OID_PP_INSTANCE_ID: &[u64] = &[1, 3, 6, 1, 4, 1, 34380, 1, 1, 2];

/// DER tag-length-value (short contents only).
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.extend([0x81, len as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// A CSR shaped like the agent's (PEM), with a new key; returns (pem, public key DER).
pub fn csr(certname: &str, challenge: &str, instance_id: &str) -> (String, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, certname);
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            OID_PP_INSTANCE_ID,
            tlv(0x0c, instance_id.as_bytes()),
        ));
    let attributes = vec![Attribute {
        oid: OID_CHALLENGE_PASSWORD,
        values: tlv(0x31, &tlv(0x13, challenge.as_bytes())),
    }];
    let pem = params
        .serialize_request_with_attributes(&key, attributes)
        .unwrap()
        .pem()
        .unwrap();
    (pem, key.subject_public_key_info())
}

/// A CSR holding the same extension twice: puppetserver then fails its listings.
pub fn poison_csr(certname: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, certname);
    for _ in 0..2 {
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                OID_PP_INSTANCE_ID,
                tlv(0x0c, b"i-0"),
            ));
    }
    params.serialize_request(&key).unwrap().pem().unwrap()
}

/// What the instance's cloud-init hands its agent: (challenge, instance id).
pub fn csr_attributes(user_data: &str, instance_id: &str) -> (String, String) {
    let rendered = user_data.replace(puppet_conductor::userdata::INSTANCE_ID_EXPR, instance_id);
    puppet_conductor::userdata::rendered_csr_attributes(&rendered).unwrap()
}

/// Where one instance's agent is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentState {
    /// Booted, no CSR sent yet.
    Booted,
    /// Its CSR waits at the CA.
    Submitted { public_key: Vec<u8> },
    /// It holds a signed certificate for its key.
    Certified { public_key: Vec<u8> },
    /// It asked for its catalog (the ENC ran and checked in).
    Classified,
}
