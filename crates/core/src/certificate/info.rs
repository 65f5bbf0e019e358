//! What the CA reports about one certname (the CA client parses it from the
//! certificate_status JSON).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Signing state of a certname on the CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    /// A CSR is waiting to be signed.
    Requested,
    /// A certificate was issued and is valid.
    Signed,
    /// The certificate was revoked but its file is still on the CA.
    Revoked,
}

impl CertState {
    /// The API's name for the state (`state=` query value).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Signed => "signed",
            Self::Revoked => "revoked",
        }
    }
}

impl fmt::Display for CertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One certname's CSR or certificate as the CA reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The certname.
    pub name: String,
    /// Requested, signed or revoked.
    pub state: CertState,
    /// SHA-256 fingerprint (`AA:BB:..`) of the CSR while requested, of the
    /// certificate once signed; `None` if the CA sent none.
    pub fingerprint: Option<String>,
    /// DNS alt names (`DNS:` prefix kept, as the CA sends them). Non-empty
    /// for every signed certificate, and for a CSR only if the agent asked
    /// for alt names (it then also lists its own certname).
    pub dns_alt_names: Vec<String>,
    /// All subject alternative names, including `IP:` entries.
    pub subject_alt_names: Vec<String>,
    /// Authorisation extensions (`pp_cli_auth`, `pp_auth_*`) by short name.
    pub authorization_extensions: BTreeMap<String, String>,
    /// Start of validity (signed and revoked only).
    pub not_before: Option<DateTime<Utc>>,
    /// End of validity (signed and revoked only).
    pub not_after: Option<DateTime<Utc>>,
    /// Serial number (signed and revoked only).
    pub serial: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in [CertState::Requested, CertState::Signed, CertState::Revoked] {
            let json = format!("\"{state}\"");
            assert_eq!(serde_json::from_str::<CertState>(&json).unwrap(), state);
        }
    }
}
