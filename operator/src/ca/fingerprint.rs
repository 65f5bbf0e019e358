//! SHA-256 fingerprints of PEM certificates, in the CA's `AA:BB:..` form.

use sha2::{Digest, Sha256};

/// The SHA-256 fingerprint of the first certificate in `pem`; `None` when it holds none.
pub fn pem_fingerprint(pem: &str) -> Option<String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    if block.label != "CERTIFICATE" {
        return None;
    }
    let digest = Sha256::digest(&block.contents);
    Some(
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_of_a_generated_certificate_matches_its_der_digest() {
        let cert = rcgen::generate_simple_self_signed(vec!["ca.test".to_string()]).unwrap();
        let fp = pem_fingerprint(&cert.cert.pem()).unwrap();
        let expected = hex::encode_upper(Sha256::digest(cert.cert.der().as_ref()));
        assert_eq!(fp.replace(':', ""), expected);
        assert_eq!(fp.len(), 32 * 3 - 1);
    }

    #[test]
    fn no_certificate_no_fingerprint() {
        assert_eq!(pem_fingerprint("not pem"), None);
    }
}
