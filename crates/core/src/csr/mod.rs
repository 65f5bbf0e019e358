//! Certificate signing requests: parsing (DER/PEM, key, attributes), the checks a CSR
//! must pass before it is signed, and what the autosign hook accepts on stdin.

pub mod check;
pub mod input;
pub mod parse;

pub use check::{verify, Expected, Refusal, Verdict};
pub use parse::{parse_csr, parse_csr_der, CsrClaims, CsrError, KeyAlgorithm, KeyInfo};
