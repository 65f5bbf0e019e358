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

/// hex SHA-256 of the DER SubjectPublicKeyInfo of the first certificate in `pem` (the
/// same digest as [`super::CsrClaims::public_key_sha256`]); `None` when it holds none.
pub fn pem_public_key_sha256(pem: &str) -> Option<String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    if block.label != "CERTIFICATE" {
        return None;
    }
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).ok()?;
    Some(hex::encode(Sha256::digest(cert.public_key().raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_digest_of_a_certificate_matches_its_csr() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["n.test".to_string()]).unwrap();
        let csr = params.serialize_request(&key).unwrap();
        let claims = crate::csr::parse_csr(&csr.pem().unwrap()).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["n.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            pem_public_key_sha256(&cert.pem()).unwrap(),
            claims.public_key_sha256
        );
        let other = rcgen::generate_simple_self_signed(vec!["n.test".to_string()]).unwrap();
        assert_ne!(
            pem_public_key_sha256(&other.cert.pem()).unwrap(),
            claims.public_key_sha256
        );
        assert_eq!(pem_public_key_sha256("not pem"), None);
    }

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
