//! The CA's certificate_status JSON, converted so callers never see the API's quirks.
//!
//! Shape measured on puppetserver 7.9 (fixtures in `tests/fixtures/ca/` at the workspace root):
//! `name`, `state`, `dns_alt_names` and `subject_alt_names` (`"DNS:x"`, `"IP:y"`),
//! `authorization_extensions` (`{"pp_cli_auth": "true"}`), `fingerprint` (SHA-256
//! of the CSR or certificate, `AA:BB:..`), `fingerprints` (`SHA1`, `SHA256`,
//! `SHA512`, `default`), and once signed `not_before`/`not_after`
//! (`"2031-11-21T04:34:26UTC"`) and `serial_number`. CSR attributes (challenge,
//! extension requests) are not in it: read the CSR PEM for those.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;

use crate::{CertState, CertificateInfo};

/// The wire format; converted so callers never see the API's quirks.
#[derive(Deserialize)]
pub(crate) struct RawStatus {
    name: String,
    state: CertState,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(default)]
    fingerprints: BTreeMap<String, String>,
    #[serde(default)]
    dns_alt_names: Vec<String>,
    #[serde(default)]
    subject_alt_names: Vec<String>,
    #[serde(default)]
    authorization_extensions: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    not_after: Option<String>,
    #[serde(default)]
    serial_number: Option<u64>,
}

impl From<RawStatus> for CertificateInfo {
    fn from(raw: RawStatus) -> Self {
        // `fingerprint` is the "default" digest, SHA-256 today; prefer the
        // explicitly named one in case the default ever changes.
        let fingerprint = raw.fingerprints.get("SHA256").cloned().or(raw.fingerprint);
        let authorization_extensions = raw
            .authorization_extensions
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
        Self {
            not_before: raw
                .not_before
                .as_deref()
                .and_then(|t| parse_ca_time(&raw.name, t)),
            not_after: raw
                .not_after
                .as_deref()
                .and_then(|t| parse_ca_time(&raw.name, t)),
            name: raw.name,
            state: raw.state,
            fingerprint,
            dns_alt_names: raw.dns_alt_names,
            subject_alt_names: raw.subject_alt_names,
            authorization_extensions,
            serial: raw.serial_number,
        }
    }
}

/// Parse the CA's timestamps: `2031-11-21T04:34:26UTC` (puppetserver 7), or
/// RFC 3339 should a later version switch.
///
/// An unreadable time is logged and dropped rather than failing the whole
/// listing: signing and revoking do not depend on it.
fn parse_ca_time(certname: &str, text: &str) -> Option<DateTime<Utc>> {
    let parsed = match text.strip_suffix("UTC") {
        Some(naive) => NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S")
            .ok()
            .map(|t| t.and_utc()),
        None => DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
    };
    if parsed.is_none() {
        tracing::warn!(
            certname,
            time = text,
            "unparseable time in Puppet CA status"
        );
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const STATUSES: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/ca/certificate_statuses.json"
    ));
    const REQUESTED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/ca/certificate_status_requested.json"
    ));

    fn parse_list(json: &str) -> Vec<CertificateInfo> {
        let raw: Vec<RawStatus> = serde_json::from_str(json).unwrap();
        raw.into_iter().map(CertificateInfo::from).collect()
    }

    #[test]
    fn parses_requested_status_from_the_real_server() {
        let raw: RawStatus = serde_json::from_str(REQUESTED).unwrap();
        let info = CertificateInfo::from(raw);
        assert_eq!(info.name, "fixture-requested");
        assert_eq!(info.state, CertState::Requested);
        assert_eq!(
            info.fingerprint.as_deref(),
            Some("1B:ED:B3:74:10:F5:51:0C:B7:25:44:7E:8C:FE:A3:87:E3:3F:2C:B2:07:3A:24:49:48:80:5F:47:89:8B:BC:30")
        );
        assert_eq!(
            info.dns_alt_names,
            ["DNS:fixture-requested", "DNS:fixture-requested.example"]
        );
        assert!(info.authorization_extensions.is_empty());
        assert_eq!(
            (info.not_before, info.not_after, info.serial),
            (None, None, None)
        );
    }

    #[test]
    fn parses_every_state_of_a_listing() {
        let list = parse_list(STATUSES);
        let states: Vec<_> = list.iter().map(|i| (i.name.as_str(), i.state)).collect();
        assert_eq!(
            states,
            [
                ("fixture-requested", CertState::Requested),
                ("fixture-signed", CertState::Signed),
                ("fixture-revoked", CertState::Revoked),
                ("pc-puppetserver", CertState::Signed),
            ]
        );
    }

    #[test]
    fn signed_certificates_carry_validity_and_serial() {
        let list = parse_list(STATUSES);
        let signed = &list[1];
        assert_eq!(
            signed.not_before,
            Some(Utc.with_ymd_and_hms(2026, 11, 21, 4, 34, 26).unwrap())
        );
        assert_eq!(
            signed.not_after,
            Some(Utc.with_ymd_and_hms(2031, 11, 21, 4, 34, 26).unwrap())
        );
        assert_eq!(signed.serial, Some(11));
        assert_eq!(
            signed.fingerprint.as_deref(),
            Some("DF:F5:2B:01:FF:C0:E5:17:C8:29:34:58:ED:C6:B2:4D:06:3F:D7:F3:A1:D7:22:84:4B:B3:0E:BE:2A:A6:61:82")
        );
    }

    #[test]
    fn authorization_extensions_are_read() {
        let list = parse_list(STATUSES);
        let server = &list[3];
        assert_eq!(
            server
                .authorization_extensions
                .get("pp_cli_auth")
                .map(String::as_str),
            Some("true")
        );
        assert!(server
            .subject_alt_names
            .contains(&"IP:127.0.0.1".to_owned()));
    }

    #[test]
    fn minimal_status_and_fallback_fingerprint() {
        let info = CertificateInfo::from(
            serde_json::from_str::<RawStatus>(
                r#"{"name":"x","state":"signed","fingerprint":"AB","authorization_extensions":{"pp_auth_role":["a"]}}"#,
            )
            .unwrap(),
        );
        assert_eq!(info.fingerprint.as_deref(), Some("AB"));
        assert_eq!(info.authorization_extensions["pp_auth_role"], r#"["a"]"#);
    }

    #[test]
    fn unknown_states_are_refused() {
        assert!(serde_json::from_str::<RawStatus>(r#"{"name":"x","state":"pending"}"#).is_err());
    }

    #[test]
    fn ca_time_formats() {
        let want = Utc.with_ymd_and_hms(2031, 11, 21, 4, 34, 26).unwrap();
        assert_eq!(parse_ca_time("x", "2031-11-21T04:34:26UTC"), Some(want));
        assert_eq!(parse_ca_time("x", "2031-11-21T04:34:26Z"), Some(want));
        assert_eq!(parse_ca_time("x", "2031-11-21T05:34:26+01:00"), Some(want));
        assert_eq!(parse_ca_time("x", "next tuesday"), None);
    }
}
