//! The certificates and CRL of [`super::FakeCa`] (rcgen): the CA's own, and the one it
//! issues for a CSR as puppetserver's `create-agent-extensions` describes.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CustomExtension,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};

use super::csr::{
    alt_names, authorization_extensions, colon_hex, oid_arcs, subject_alt_names, under, Csr,
    PP_AUTHORIZATION, PP_PRIVATE, PP_REGISTERED,
};
use super::{Issued, SignedCert, CA_NAME, CERT_TTL};
use puppet_conductor_ca::{CertState, CertificateInfo};

/// puppetserver backdates certificates by a day against clock skew.
const BACKDATE: TimeDelta = TimeDelta::days(1);
const OID_NETSCAPE_COMMENT: &[u64] = &[2, 16, 840, 1, 113_730, 1, 13];
const NETSCAPE_COMMENT: &str = "Puppet Server Internal Certificate";

/// The CA's key and certificate.
pub(super) struct Authority {
    pub(super) issuer: Issuer<'static, KeyPair>,
    pub(super) pem: String,
}

/// `$t` (a `DateTime<Utc>`) in the time type rcgen takes. A macro, not a function:
/// that type is the `time` crate's, which this crate does not name.
macro_rules! x509_time {
    ($t:expr) => {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix_secs($t))
    };
}

impl Csr {
    /// The certificate puppetserver's `create-agent-extensions` describes: the CSR's key
    /// and Puppet extensions, its alt names plus the certname, server and client use.
    pub(super) fn issue(
        &self,
        authority: &Authority,
        certname: &str,
        serial: u64,
        now: DateTime<Utc>,
    ) -> Result<Issued, String> {
        let key = rcgen::SubjectPublicKeyInfo::from_der(&self.spki).map_err(|e| e.to_string())?;
        let not_before = now - BACKDATE;
        let not_after = now + ttl();
        let (mut dns, ips) = alt_names(&self.extensions);
        if !dns.iter().any(|d| d == certname) {
            dns.push(certname.to_owned());
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(certname);
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = x509_time!(not_before);
        params.not_after = x509_time!(not_after);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.subject_alt_names = ips.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for name in &dns {
            let name =
                rcgen::string::Ia5String::try_from(name.as_str()).map_err(|e| e.to_string())?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        params.custom_extensions = vec![netscape_comment()];
        for extension in self.extensions.iter().filter(|x| {
            under(&x.oid, PP_REGISTERED)
                || under(&x.oid, PP_PRIVATE)
                || under(&x.oid, PP_AUTHORIZATION)
        }) {
            let arcs = oid_arcs(&extension.oid).ok_or("unreadable extension OID")?;
            let mut custom = CustomExtension::from_oid_content(&arcs, extension.value.clone());
            custom.set_criticality(extension.critical);
            params.custom_extensions.push(custom);
        }
        let cert = params
            .signed_by(&key, &authority.issuer)
            .map_err(|e| e.to_string())?;
        let fingerprint = colon_hex(cert.der());
        let info = CertificateInfo {
            name: certname.to_owned(),
            state: CertState::Signed,
            fingerprint: Some(fingerprint.clone()),
            subject_alt_names: subject_alt_names(&dns, &ips),
            dns_alt_names: dns.iter().map(|d| format!("DNS:{d}")).collect(),
            authorization_extensions: authorization_extensions(&self.extensions),
            not_before: Some(not_before),
            not_after: Some(not_after),
            serial: Some(serial),
        };
        Ok(Issued {
            cert: SignedCert {
                certname: certname.to_owned(),
                serial,
                public_key_sha256: hex::encode(Sha256::digest(&self.spki)),
                fingerprint,
                pem: cert.pem(),
                state: CertState::Signed,
                on_ca: true,
            },
            info,
            revoked_at: None,
        })
    }
}

pub(super) fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn netscape_comment() -> CustomExtension {
    let mut value = vec![0x16, u8::try_from(NETSCAPE_COMMENT.len()).unwrap_or(0)];
    value.extend_from_slice(NETSCAPE_COMMENT.as_bytes());
    CustomExtension::from_oid_content(OID_NETSCAPE_COMMENT, value)
}

fn ttl() -> TimeDelta {
    TimeDelta::from_std(CERT_TTL).unwrap_or(TimeDelta::MAX)
}

/// Whole seconds from 1970 to `t`, clamped to the years X.509 can express.
fn unix_secs(t: DateTime<Utc>) -> u64 {
    const MAX_SECS: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    u64::try_from(t.timestamp().clamp(0, MAX_SECS)).unwrap_or(0)
}

impl Authority {
    /// A self-signed CA certificate for `key` (a new Ed25519 key when `None`), valid from
    /// a day before `now` for [`CERT_TTL`], serial 1.
    pub(super) fn new(key: Option<KeyPair>, now: DateTime<Utc>) -> Result<Self, rcgen::Error> {
        let key = match key {
            Some(key) => key,
            None => KeyPair::generate_for(&rcgen::PKCS_ED25519)?,
        };
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(CA_NAME);
        params.serial_number = Some(SerialNumber::from(1u64));
        params.not_before = x509_time!(now - BACKDATE);
        params.not_after = x509_time!(now + ttl());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.custom_extensions = vec![netscape_comment()];
        let pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            pem,
        })
    }

    /// The CRL listing `revoked` (serial, revocation time), numbered `number`, issued
    /// `now` and valid for [`CERT_TTL`].
    pub(super) fn crl(
        &self,
        revoked: &[(u64, DateTime<Utc>)],
        number: u64,
        now: DateTime<Utc>,
    ) -> Result<String, rcgen::Error> {
        let params = CertificateRevocationListParams {
            this_update: x509_time!(now),
            next_update: x509_time!(now + ttl()),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: x509_time!(*at),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }
}
