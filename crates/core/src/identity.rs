//! Everything derived from a PuppetNode's UID and incarnation.
//!
//! The certname, the EC2 `ClientToken` and the one-time CSR challenge are pure
//! functions of `(uid, incarnation)` (plus, for the challenge, a key kept in a
//! Secret), so nothing depends on the node's status surviving: a restarted
//! operator recomputes the same names and adopts what it finds instead of
//! launching twice.
//!
//! No I/O here.

use std::fmt;

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Longest certname produced (a DNS name's limit, and the CRD's `maxLength`).
pub const MAX_CERTNAME_LEN: usize = 253;

/// Shortest challenge key accepted, in bytes (128 bits).
pub const MIN_CHALLENGE_KEY_LEN: usize = 16;

/// Length of a generated challenge key, in bytes (256 bits).
pub const CHALLENGE_KEY_LEN: usize = 32;

/// Hex characters of the HMAC kept in a challenge (128 bits).
const CHALLENGE_HEX_LEN: usize = 32;

/// Hex characters of the SHA-256 kept in a client token (160 bits).
const CLIENT_TOKEN_HEX_LEN: usize = 40;

/// Prefix of every client token.
const CLIENT_TOKEN_PREFIX: &str = "pc-";

/// Domain separation for challenges; bump `v1` if the derivation ever changes.
const CHALLENGE_CONTEXT: &str = "puppet-conductor/v1";

/// What can go wrong building identities.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The challenge key from the Secret is too short to be a secret.
    #[error("challenge key is {len} bytes; at least {min} are required")]
    KeyTooShort {
        /// Its length.
        len: usize,
        /// The minimum.
        min: usize,
    },
}

impl IdentityError {
    /// Short label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Self::KeyTooShort { .. } => "invalid_key",
        }
    }
}

/// The node's Puppet certname.
///
/// The spec's certname when set (every incarnation reuses it; the CRD already
/// validated it), else `<uid>-<incarnation>` in lower case, so a replacement
/// instance gets a fresh certname. Kubernetes UIDs are UUIDs, which already fit
/// the CRD pattern `^[a-z0-9][a-z0-9._-]*$`; any other character is replaced by
/// `-` (and a leading non-alphanumeric gets an `n` in front) so the result fits
/// it whatever `uid` is, within [`MAX_CERTNAME_LEN`].
pub fn certname(uid: &str, incarnation: i64, spec_certname: Option<&str>) -> String {
    if let Some(name) = spec_certname {
        return name.to_owned();
    }
    let suffix = format!("-{incarnation}");
    let mut name: String = uid
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'n');
    }
    // ASCII only by now, so byte truncation is on a character boundary.
    name.truncate(MAX_CERTNAME_LEN.saturating_sub(suffix.len()));
    name.push_str(&suffix);
    name
}

/// The EC2 `ClientToken` for launching this incarnation: `pc-` followed by the
/// first 40 hex characters of SHA-256(`"<uid>/<incarnation>"`), 43 ASCII
/// characters (EC2 allows 64). Repeating a RunInstances call with it returns
/// the instance the first call launched.
pub fn client_token(uid: &str, incarnation: i64) -> String {
    let digest = Sha256::digest(format!("{uid}/{incarnation}").as_bytes());
    let mut token = String::from(CLIENT_TOKEN_PREFIX);
    token.push_str(&hex::encode(digest)[..CLIENT_TOKEN_HEX_LEN]);
    token
}

/// The key challenges are derived from, kept in a Secret.
///
/// `Debug` shows only the length, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ChallengeKey(Vec<u8>);

impl ChallengeKey {
    /// A key read from the Secret; at least [`MIN_CHALLENGE_KEY_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        if bytes.len() < MIN_CHALLENGE_KEY_LEN {
            return Err(IdentityError::KeyTooShort {
                len: bytes.len(),
                min: MIN_CHALLENGE_KEY_LEN,
            });
        }
        Ok(Self(bytes.to_vec()))
    }

    /// A fresh random key of [`CHALLENGE_KEY_LEN`] bytes, for a Secret that does not exist yet.
    pub fn generate() -> Self {
        let bytes: [u8; CHALLENGE_KEY_LEN] = rand::random();
        Self(bytes.to_vec())
    }

    /// The key's bytes, to store in the Secret.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The one-time challenge of one incarnation: the first 32 hex characters of
    /// HMAC-SHA256(key, `"puppet-conductor/v1/<uid>/<incarnation>"`).
    ///
    /// It goes into the instance's user data (the CSR's `challengePassword`);
    /// records keep only [`challenge_sha256`] of it.
    pub fn challenge(&self, uid: &str, incarnation: i64) -> String {
        let mut mac = keyed_hmac(&self.0);
        mac.update(format!("{CHALLENGE_CONTEXT}/{uid}/{incarnation}").as_bytes());
        let mut hex = hex::encode(mac.finalize().into_bytes());
        hex.truncate(CHALLENGE_HEX_LEN);
        hex
    }
}

/// HMAC-SHA256 keyed with `key`, without the fallible `new_from_slice`.
///
/// RFC 2104 keying: a key longer than the hash's block size is replaced by its
/// hash, then the key is padded with zeros to the block size. That block is what
/// the infallible `KeyInit::new` takes; the result is the same MAC as
/// `Hmac::new_from_slice(key)` (checked in the tests).
fn keyed_hmac(key: &[u8]) -> Hmac<Sha256> {
    let mut block = hmac::digest::Key::<Hmac<Sha256>>::default();
    if key.len() <= block.len() {
        block[..key.len()].copy_from_slice(key);
    } else {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    }
    <Hmac<Sha256> as KeyInit>::new(&block)
}

impl fmt::Debug for ChallengeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChallengeKey")
            .field("len", &self.0.len())
            .finish_non_exhaustive()
    }
}

/// Hex SHA-256 of a challenge: what the S3 record stores instead of the challenge.
pub fn challenge_sha256(challenge: &str) -> String {
    hex::encode(Sha256::digest(challenge.as_bytes()))
}

/// Compare two challenges without an early exit on the first differing byte
/// (`subtle`'s constant-time comparison).
///
/// The length is not secret (challenges have a fixed length), so unequal
/// lengths return at once.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// The incarnation in an instance tag: a positive decimal integer written the
/// way the operator writes it (no sign, no leading zeros, no spaces).
pub fn parse_incarnation(tag: &str) -> Option<i64> {
    let n: i64 = tag.parse().ok()?;
    (n > 0 && n.to_string() == tag).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UID: &str = "0f3c9a2e-7b1d-4c8e-9a6f-1e2d3c4b5a69";

    fn key() -> ChallengeKey {
        ChallengeKey::from_bytes(&[7u8; 32]).unwrap()
    }

    fn fits_crd_pattern(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_CERTNAME_LEN
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
    }

    #[test]
    fn certname_from_uid_and_incarnation() {
        assert_eq!(
            certname(UID, 3, None),
            "0f3c9a2e-7b1d-4c8e-9a6f-1e2d3c4b5a69-3"
        );
        assert_eq!(
            certname("0F3C9A2E-7B1D-4C8E-9A6F-1E2D3C4B5A69", 3, None),
            "0f3c9a2e-7b1d-4c8e-9a6f-1e2d3c4b5a69-3"
        );
        assert!(crate::certname::validate_certname(&certname(UID, 1, None)).is_ok());
    }

    #[test]
    fn spec_certname_is_reused_by_every_incarnation() {
        assert_eq!(
            certname(UID, 1, Some("web01.example.com")),
            "web01.example.com"
        );
        assert_eq!(
            certname(UID, 9, Some("web01.example.com")),
            "web01.example.com"
        );
    }

    #[test]
    fn odd_uids_still_fit_the_pattern() {
        for uid in ["", "-x", "A/B C", ".hidden", "ü", &"x".repeat(400)] {
            let name = certname(uid, 12, None);
            assert!(fits_crd_pattern(&name), "{uid:?} -> {name:?}");
            assert!(name.ends_with("-12"), "{name}");
        }
    }

    #[test]
    fn client_token_shape() {
        let token = client_token(UID, 1);
        assert_eq!(token.len(), 43);
        assert!(token.starts_with("pc-"));
        assert_eq!(token, client_token(UID, 1));
        assert_ne!(token, client_token(UID, 2));
        // Pinned: a changed derivation would launch duplicates after an upgrade.
        let digest = hex::encode(Sha256::digest(format!("{UID}/1").as_bytes()));
        assert_eq!(token, format!("pc-{}", &digest[..40]));
    }

    #[test]
    fn challenge_is_hmac_of_uid_and_incarnation() {
        let key = key();
        let c = key.challenge(UID, 1);
        assert_eq!(c.len(), 32);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7u8; 32]).unwrap();
        mac.update(format!("puppet-conductor/v1/{UID}/1").as_bytes());
        assert_eq!(c, hex::encode(mac.finalize().into_bytes())[..32]);
        assert_ne!(c, key.challenge(UID, 2));
        assert_ne!(
            c,
            ChallengeKey::from_bytes(&[8u8; 32])
                .unwrap()
                .challenge(UID, 1)
        );
    }

    #[test]
    fn keyed_hmac_matches_new_from_slice() {
        for len in [0, 1, 16, 32, 63, 64, 65, 100, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut ours = keyed_hmac(&key);
            let mut theirs = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
            ours.update(b"message");
            theirs.update(b"message");
            assert_eq!(
                ours.finalize().into_bytes(),
                theirs.finalize().into_bytes(),
                "{len}"
            );
        }
    }

    #[test]
    fn short_keys_are_refused() {
        let err = ChallengeKey::from_bytes(&[1u8; 15]).unwrap_err();
        assert_eq!(err.category(), "invalid_key");
        assert_eq!(
            err.to_string(),
            "challenge key is 15 bytes; at least 16 are required"
        );
        assert!(ChallengeKey::from_bytes(&[1u8; 16]).is_ok());
    }

    #[test]
    fn generated_keys_are_random_and_round_trip() {
        let a = ChallengeKey::generate();
        let b = ChallengeKey::generate();
        assert_eq!(a.as_bytes().len(), 32);
        assert_ne!(a.as_bytes(), b.as_bytes());
        let again = ChallengeKey::from_bytes(a.as_bytes()).unwrap();
        assert_eq!(again.challenge(UID, 4), a.challenge(UID, 4));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let key = ChallengeKey::from_bytes(&[0xab; 32]).unwrap();
        let shown = format!("{key:?} {key:#?}");
        assert!(shown.contains("len: 32"), "{shown}");
        assert!(!shown.contains("ab") && !shown.contains("171"), "{shown}");
    }

    #[test]
    fn challenge_hash() {
        assert_eq!(
            challenge_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_eq_cases() {
        assert!(constant_time_eq("", ""));
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("abc", "ABC"));
    }

    #[test]
    fn incarnation_tags() {
        assert_eq!(parse_incarnation("1"), Some(1));
        assert_eq!(parse_incarnation("42"), Some(42));
        assert_eq!(parse_incarnation(&i64::MAX.to_string()), Some(i64::MAX));
        for bad in [
            "",
            "0",
            "-1",
            "+1",
            "01",
            " 1",
            "1 ",
            "1.0",
            "x",
            "9223372036854775808",
        ] {
            assert_eq!(parse_incarnation(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn derivations_are_deterministic(uid in ".{0,80}", inc in any::<i64>()) {
            let key = key();
            prop_assert_eq!(certname(&uid, inc, None), certname(&uid, inc, None));
            prop_assert_eq!(client_token(&uid, inc), client_token(&uid, inc));
            prop_assert_eq!(key.challenge(&uid, inc), key.challenge(&uid, inc));
        }

        #[test]
        fn incarnations_differ(uid in "[0-9a-f-]{1,40}", a in 1i64..1_000_000, b in 1i64..1_000_000) {
            prop_assume!(a != b);
            let key = key();
            prop_assert_ne!(certname(&uid, a, None), certname(&uid, b, None));
            prop_assert_ne!(client_token(&uid, a), client_token(&uid, b));
            prop_assert_ne!(key.challenge(&uid, a), key.challenge(&uid, b));
            prop_assert_eq!(certname(&uid, a, Some("fixed")), certname(&uid, b, Some("fixed")));
        }

        #[test]
        fn certname_always_fits_the_crd_pattern(uid in any::<String>(), inc in any::<i64>()) {
            let name = certname(&uid, inc, None);
            prop_assert!(fits_crd_pattern(&name), "{:?} -> {:?}", uid, name);
        }

        #[test]
        fn uuid_certnames_keep_the_uid(uid in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", inc in 1i64..) {
            prop_assert_eq!(certname(&uid, inc, None), format!("{uid}-{inc}"));
        }

        #[test]
        fn client_token_is_short_ascii(uid in any::<String>(), inc in any::<i64>()) {
            let token = client_token(&uid, inc);
            prop_assert!(token.len() <= 64);
            prop_assert_eq!(token.len(), 43);
            prop_assert!(token.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        }

        #[test]
        fn incarnation_round_trips(n in 1i64..) {
            prop_assert_eq!(parse_incarnation(&n.to_string()), Some(n));
        }

        #[test]
        fn constant_time_eq_agrees_with_eq(a in ".{0,40}", b in ".{0,40}") {
            prop_assert_eq!(constant_time_eq(&a, &b), a == b);
            prop_assert!(constant_time_eq(&a, &a));
        }
    }
}
