//! What the `autosign` executable accepts on stdin: exactly one PEM certificate request.
//!
//! Puppetserver writes the CSR file it received to the executable's stdin. Anything else
//! there (a second block, text around the block, a truncated block) means the input is
//! not what the CA will sign, so it is refused before any decision is made: the decision
//! must be about the one request the CA holds, not about the first block of a bundle.

/// Largest input accepted, in bytes: a CSR with an RSA-8192 key and every extension is far
/// below this.
pub const MAX_CSR_INPUT: usize = 64 * 1024;

/// The PEM labels of a certificate request (`NEW` is the old Netscape/OpenSSL spelling).
const CSR_LABELS: [&str; 2] = ["CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"];

const BEGIN: &str = "-----BEGIN ";
const END: &str = "-----END ";
const DASHES: &str = "-----";

/// Why the input is not exactly one PEM certificate request.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum CsrInputError {
    /// More than [`MAX_CSR_INPUT`] bytes.
    #[error("the input is larger than {MAX_CSR_INPUT} bytes")]
    TooLarge,
    /// Not UTF-8 text.
    #[error("the input is not UTF-8 text")]
    NotUtf8,
    /// No `-----BEGIN` line at all (includes empty input).
    #[error("no PEM block in the input")]
    NoBlock,
    /// Something other than whitespace before the block.
    #[error("data before the PEM block")]
    DataBefore,
    /// Something other than whitespace after the block.
    #[error("data after the PEM block")]
    DataAfter,
    /// A second PEM block, whatever its label.
    #[error("more than one PEM block")]
    MultipleBlocks,
    /// A `-----BEGIN` line that is not `-----BEGIN <label>-----` on a line of its own.
    #[error("malformed BEGIN line")]
    MalformedBegin,
    /// A `-----END` line that is not `-----END <label>-----` on a line of its own.
    #[error("malformed END line")]
    MalformedEnd,
    /// A block whose `-----END` line is missing (or comes after another `-----BEGIN`).
    #[error("the PEM block {0:?} has no END line")]
    Unterminated(String),
    /// The END line names another label than the BEGIN line.
    #[error("the PEM block begins as {begin:?} but ends as {end:?}")]
    MismatchedLabels {
        /// Label of the BEGIN line.
        begin: String,
        /// Label of the END line.
        end: String,
    },
    /// Something other than base64 and line breaks between BEGIN and END (e.g. RFC 1421
    /// headers, which a CSR never has), or nothing at all.
    #[error("the PEM block's body is not base64")]
    BadBody,
    /// One well-formed block, but not a certificate request.
    #[error("the PEM block is labelled {0:?}, not CERTIFICATE REQUEST")]
    WrongLabel(String),
}

/// Only ASCII whitespace counts as "nothing": a non-breaking space or a zero-width
/// character is data someone put there.
fn blank(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_whitespace())
}

/// Splits `rest` (starting right after a `-----BEGIN ` / `-----END ` marker) into the label
/// and what follows its line; `None` unless the line is exactly `<label>-----`.
fn label_line(rest: &str) -> Option<(&str, &str)> {
    let (line, after) = match rest.find('\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let line = line.strip_suffix('\r').unwrap_or(line);
    let label = line.strip_suffix(DASHES)?;
    let valid = !label.is_empty()
        && !label.contains(DASHES)
        && label.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    valid.then_some((label, after))
}

/// Returns the single PEM certificate request in `input` (the block from its BEGIN line to
/// its END line, without the surrounding whitespace), or why the input is refused.
pub fn single_csr_pem(input: &[u8]) -> Result<String, CsrInputError> {
    // Size first: never scan (or convert) more than the limit.
    if input.len() > MAX_CSR_INPUT {
        return Err(CsrInputError::TooLarge);
    }
    let text = std::str::from_utf8(input).map_err(|_| CsrInputError::NotUtf8)?;
    let Some(start) = text.find(BEGIN) else {
        return Err(if blank(text) {
            CsrInputError::NoBlock
        } else if text.contains(END) {
            // An END without BEGIN: a block's head was cut off.
            CsrInputError::MalformedBegin
        } else {
            CsrInputError::NoBlock
        });
    };
    if !blank(&text[..start]) {
        return Err(CsrInputError::DataBefore);
    }
    // The BEGIN marker must start its line (only whitespace precedes it, checked above).
    let (label, body_and_rest) =
        label_line(&text[start + BEGIN.len()..]).ok_or(CsrInputError::MalformedBegin)?;
    let Some(end_at) = body_and_rest.find(END) else {
        return Err(CsrInputError::Unterminated(label.to_owned()));
    };
    let body = &body_and_rest[..end_at];
    if body.contains(BEGIN) {
        // A second BEGIN before this block's END: nested or truncated blocks.
        return Err(CsrInputError::Unterminated(label.to_owned()));
    }
    // The END marker must start its line too.
    if !(body.is_empty() || body.ends_with('\n')) {
        return Err(CsrInputError::MalformedEnd);
    }
    let (end_label, rest) =
        label_line(&body_and_rest[end_at + END.len()..]).ok_or(CsrInputError::MalformedEnd)?;
    if end_label != label {
        return Err(CsrInputError::MismatchedLabels {
            begin: label.to_owned(),
            end: end_label.to_owned(),
        });
    }
    if rest.contains(BEGIN) {
        return Err(CsrInputError::MultipleBlocks);
    }
    if !blank(rest) {
        return Err(CsrInputError::DataAfter);
    }
    let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
    if !body.bytes().any(base64) || !body.bytes().all(|b| base64(b) || b"\r\n\t ".contains(&b)) {
        return Err(CsrInputError::BadBody);
    }
    if !CSR_LABELS.contains(&label) {
        return Err(CsrInputError::WrongLabel(label.to_owned()));
    }
    // The block as received, minus the trailing whitespace of its END line.
    let block_len = text.len() - start - rest.len();
    Ok(text[start..start + block_len].trim_end().to_owned() + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "MIIBVTCB/QIBADAbMRkwFwYDVQQDDBB3ZWItMS5leGFtcGxlLmNvbTBZMBMGByqG\nSM49AgEGCCqGSM49AwEHA0IABA==\n";

    fn block(label: &str) -> String {
        format!("-----BEGIN {label}-----\n{BODY}-----END {label}-----\n")
    }

    fn csr() -> String {
        block("CERTIFICATE REQUEST")
    }

    #[test]
    fn accepts_one_csr_block() {
        assert_eq!(single_csr_pem(csr().as_bytes()), Ok(csr()));
    }

    #[test]
    fn accepts_the_new_certificate_request_label() {
        let pem = block("NEW CERTIFICATE REQUEST");
        assert_eq!(single_csr_pem(pem.as_bytes()), Ok(pem));
    }

    #[test]
    fn accepts_surrounding_whitespace_and_crlf() {
        let input = format!("\n \t\r\n{}\r\n\n  ", csr().replace('\n', "\r\n"));
        let pem = single_csr_pem(input.as_bytes()).unwrap();
        assert!(
            pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----\r\n"),
            "{pem:?}"
        );
        assert!(
            pem.ends_with("-----END CERTIFICATE REQUEST-----\n"),
            "{pem:?}"
        );
        // Without a final newline too.
        let bare = csr().trim_end().to_owned();
        assert_eq!(single_csr_pem(bare.as_bytes()), Ok(csr()));
    }

    #[test]
    fn the_accepted_block_is_what_the_parser_reads() {
        // The returned PEM goes to parse_csr: it must still be a PEM block it can frame.
        let pem = single_csr_pem(format!("\n\n{}\n\n", csr()).as_bytes()).unwrap();
        let parsed = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap().1;
        assert_eq!(parsed.label, "CERTIFICATE REQUEST");
    }

    #[test]
    fn refuses_empty_and_blank_input() {
        assert_eq!(single_csr_pem(b""), Err(CsrInputError::NoBlock));
        assert_eq!(single_csr_pem(b" \n\t\r\n"), Err(CsrInputError::NoBlock));
    }

    #[test]
    fn refuses_input_without_a_block() {
        assert_eq!(single_csr_pem(b"hello"), Err(CsrInputError::NoBlock));
        assert_eq!(single_csr_pem(BODY.as_bytes()), Err(CsrInputError::NoBlock));
    }

    #[test]
    fn refuses_two_csr_blocks() {
        let input = format!("{}{}", csr(), csr());
        assert_eq!(
            single_csr_pem(input.as_bytes()),
            Err(CsrInputError::MultipleBlocks)
        );
    }

    #[test]
    fn refuses_a_second_block_of_any_label() {
        for other in ["CERTIFICATE", "PRIVATE KEY", "X"] {
            for input in [
                format!("{}\n{}", csr(), block(other)),
                format!("{}\n{}", block(other), csr()),
            ] {
                assert!(single_csr_pem(input.as_bytes()).is_err(), "{input}");
            }
            let after = format!("{}\n{}", csr(), block(other));
            assert_eq!(
                single_csr_pem(after.as_bytes()),
                Err(CsrInputError::MultipleBlocks)
            );
        }
    }

    #[test]
    fn refuses_data_before_the_block() {
        for before in ["x", "subject=CN=web-1\n", "\u{a0}\n", "\u{feff}"] {
            let input = format!("{before}{}", csr());
            assert_eq!(
                single_csr_pem(input.as_bytes()),
                Err(CsrInputError::DataBefore),
                "{before:?}"
            );
        }
    }

    #[test]
    fn refuses_data_after_the_block() {
        for after in [
            "x",
            "\ngarbage\n",
            "-----END CERTIFICATE REQUEST-----\n",
            "\u{200b}",
        ] {
            let input = format!("{}{after}", csr());
            assert_eq!(
                single_csr_pem(input.as_bytes()),
                Err(CsrInputError::DataAfter),
                "{after:?}"
            );
        }
    }

    #[test]
    fn refuses_non_utf8() {
        let mut input = csr().into_bytes();
        input.extend_from_slice(&[0xff, 0xfe]);
        assert_eq!(single_csr_pem(&input), Err(CsrInputError::NotUtf8));
        let mut inside = csr().into_bytes();
        inside[40] = 0xc3;
        assert_eq!(single_csr_pem(&inside), Err(CsrInputError::NotUtf8));
    }

    #[test]
    fn refuses_begin_without_end() {
        let input = format!("-----BEGIN CERTIFICATE REQUEST-----\n{BODY}");
        assert_eq!(
            single_csr_pem(input.as_bytes()),
            Err(CsrInputError::Unterminated("CERTIFICATE REQUEST".into()))
        );
        // A truncated block followed by a complete one is not "one block".
        let input = format!("-----BEGIN CERTIFICATE REQUEST-----\n{BODY}{}", csr());
        assert_eq!(
            single_csr_pem(input.as_bytes()),
            Err(CsrInputError::Unterminated("CERTIFICATE REQUEST".into()))
        );
    }

    #[test]
    fn refuses_end_without_begin() {
        let input = format!("{BODY}-----END CERTIFICATE REQUEST-----\n");
        assert_eq!(
            single_csr_pem(input.as_bytes()),
            Err(CsrInputError::MalformedBegin)
        );
    }

    #[test]
    fn refuses_mismatched_labels() {
        let input =
            format!("-----BEGIN CERTIFICATE REQUEST-----\n{BODY}-----END CERTIFICATE-----\n");
        assert_eq!(
            single_csr_pem(input.as_bytes()),
            Err(CsrInputError::MismatchedLabels {
                begin: "CERTIFICATE REQUEST".into(),
                end: "CERTIFICATE".into()
            })
        );
        let input = format!(
            "-----BEGIN NEW CERTIFICATE REQUEST-----\n{BODY}-----END CERTIFICATE REQUEST-----\n"
        );
        assert!(matches!(
            single_csr_pem(input.as_bytes()),
            Err(CsrInputError::MismatchedLabels { .. })
        ));
    }

    #[test]
    fn refuses_other_labels() {
        for label in [
            "CERTIFICATE",
            "PRIVATE KEY",
            "CERTIFICATE REQUESTS",
            "certificate request",
        ] {
            assert_eq!(
                single_csr_pem(block(label).as_bytes()),
                Err(CsrInputError::WrongLabel(label.into())),
                "{label}"
            );
        }
    }

    #[test]
    fn refuses_malformed_marker_lines() {
        let cases = [
            // Text on the BEGIN line after the dashes.
            format!(
                "-----BEGIN CERTIFICATE REQUEST----- x\n{BODY}-----END CERTIFICATE REQUEST-----\n"
            ),
            // No label.
            format!("-----BEGIN -----\n{BODY}-----END -----\n"),
            // END marker in the middle of a line.
            format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{}-----END CERTIFICATE REQUEST-----\n",
                BODY.trim_end()
            ),
            // Text after the END dashes on the same line.
            format!("{}x\n", csr().trim_end()),
        ];
        for input in cases {
            assert!(
                matches!(
                    single_csr_pem(input.as_bytes()),
                    Err(CsrInputError::MalformedBegin | CsrInputError::MalformedEnd)
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_a_body_that_is_not_base64() {
        for body in [
            "",
            "\n",
            "Proc-Type: 4,ENCRYPTED\n\nMIIB\n",
            "MIIB!\n",
            "MIIB\u{a0}\n",
        ] {
            let input = format!(
                "-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
            );
            assert_eq!(
                single_csr_pem(input.as_bytes()),
                Err(CsrInputError::BadBody),
                "{body:?}"
            );
        }
    }

    #[test]
    fn refuses_oversized_input() {
        let mut input = csr().into_bytes();
        input.resize(MAX_CSR_INPUT + 1, b'\n');
        assert_eq!(single_csr_pem(&input), Err(CsrInputError::TooLarge));
        // Exactly at the limit is still read (trailing whitespace only).
        input.truncate(MAX_CSR_INPUT);
        assert_eq!(single_csr_pem(&input), Ok(csr()));
    }
}
