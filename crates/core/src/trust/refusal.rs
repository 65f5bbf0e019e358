//! Why a CSR is not signed: the CSR's own faults and the lifecycle's.

/// Why a waiting CSR is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The CSR itself fails a check (challenge, instance id, key, extensions, ...).
    Csr(crate::csr::Refusal),
    /// No record names the certname: no node of ours has it.
    NoRecord,
    /// Another node claims the certname (its `namespace/name`).
    CertnameConflict(String),
    /// The node is being deleted.
    NodeDeleting,
    /// The incarnation is being fenced (its instance terminated, its successor next).
    IncarnationFencing(i64),
    /// The record is not the node's current incarnation.
    NotCurrentIncarnation {
        /// The record's incarnation.
        record: i64,
        /// The node's.
        current: i64,
    },
    /// No instance is recorded for the incarnation yet, or not the running one.
    NoInstance,
    /// A certificate was already signed for the incarnation (its serial, when known):
    /// a challenge is worth one signature.
    AlreadySigned {
        /// Serial of the certificate that was signed.
        serial: Option<String>,
    },
    /// The incarnation's one signature is claimed for another key.
    OtherKeySigned,
    /// A signature record of another incarnation (of a fixed certname) is still there:
    /// its fencing has not completed.
    StaleSignature(i64),
}

impl Refusal {
    /// The event reason (PascalCase, stable).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Csr(r) => r.reason(),
            Self::NoRecord => "CSRUnknownCertname",
            Self::CertnameConflict(_) => "CertnameConflict",
            Self::NodeDeleting => "CSRNodeDeleting",
            Self::IncarnationFencing(_) => "CSRIncarnationFencing",
            Self::NotCurrentIncarnation { .. } => "CSROldIncarnation",
            Self::NoInstance => "CSRNoInstance",
            Self::AlreadySigned { .. } => "CSRAlreadySigned",
            Self::OtherKeySigned => "CSRAlreadySigned",
            Self::StaleSignature(_) => "CSRIncarnationFencing",
        }
    }

    /// Human text for events and logs; never contains a challenge.
    pub fn message(&self) -> String {
        match self {
            Self::Csr(r) => r.message(),
            Self::NoRecord => "no node record has this certname".to_owned(),
            Self::CertnameConflict(other) => {
                format!("the certname is claimed by another node ({other})")
            }
            Self::NodeDeleting => "the node is being deleted".to_owned(),
            Self::IncarnationFencing(inc) => {
                format!("incarnation {inc} is being fenced; it is never signed again")
            }
            Self::NotCurrentIncarnation { record, current } => format!(
                "it belongs to incarnation {record}, but the node is at incarnation {current}"
            ),
            Self::NoInstance => {
                "no instance is recorded for this incarnation (or not the running one)".to_owned()
            }
            Self::AlreadySigned {
                serial: Some(serial),
            } => format!(
                "a certificate (serial {serial}) was already signed for this incarnation; \
                 its challenge is worth one signature"
            ),
            Self::AlreadySigned { serial: None } => {
                "a certificate was already signed for this incarnation; its challenge is worth \
                 one signature"
                    .to_owned()
            }
            Self::OtherKeySigned => {
                "this incarnation's one signature went to another key; its challenge is worth \
                 one signature"
                    .to_owned()
            }
            Self::StaleSignature(inc) => format!(
                "the signature record of incarnation {inc} is still there: its fencing has not \
                 completed"
            ),
        }
    }

    /// Whether the refused CSR is removed from the CA, so that the real agent's next
    /// submission is not blocked (the CA keeps one CSR per certname). Never for a
    /// certname another node claims: the waiting CSR may be that node's.
    pub fn removes_csr(&self) -> bool {
        !matches!(self, Self::CertnameConflict(_) | Self::NoRecord)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason(), self.message())
    }
}
