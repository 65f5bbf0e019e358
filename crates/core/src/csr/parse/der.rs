//! Small strict DER readers shared by the parser: one element at a time, universal
//! tags checked, nothing left over.

use std::fmt;

use x509_parser::asn1_rs::{Any, Class, FromDer, Tag};

use super::CsrError;

/// One DER UTF8String, PrintableString or IA5String, filling all of `der`.
pub(super) fn der_string(der: &[u8], what: &str) -> Result<String, CsrError> {
    let mut input = der;
    let any: Any = next(&mut input, what)?;
    expect_empty(input, what)?;
    let text = match any.tag() {
        Tag::Utf8String => any.as_utf8string().map(|s| s.string()),
        Tag::PrintableString => any.as_printablestring().map(|s| s.string()),
        Tag::Ia5String => any.as_ia5string().map(|s| s.string()),
        tag => {
            return Err(malformed(format!(
                "{what} is a {tag:?}, not a UTF8String, PrintableString or IA5String"
            )))
        }
    };
    text.map_err(|e| malformed(format!("{what}: {e}")))
}

/// Parse one `T` off the front of `input`.
pub(super) fn next<'a, T, E>(input: &mut &'a [u8], what: &str) -> Result<T, CsrError>
where
    T: FromDer<'a, E>,
    E: fmt::Debug,
{
    let (rest, value) = T::from_der(input).map_err(|e| malformed(format!("{what}: {e}")))?;
    *input = rest;
    Ok(value)
}

/// [`next`], after checking that the element is a universal `tag` (x509-parser's
/// parsers check the tag number but not always the class).
pub(super) fn next_universal<'a, T, E>(
    input: &mut &'a [u8],
    tag: Tag,
    what: &str,
) -> Result<T, CsrError>
where
    T: FromDer<'a, E>,
    E: fmt::Debug,
{
    let mut peek = *input;
    let any: Any = next(&mut peek, what)?;
    expect_universal(&any, tag, what)?;
    next(input, what)
}

/// Check that `any` is a universal `tag`, constructed exactly when a SEQUENCE or SET.
pub(super) fn expect_universal(any: &Any<'_>, tag: Tag, what: &str) -> Result<(), CsrError> {
    let constructed = matches!(tag, Tag::Sequence | Tag::Set);
    if any.class() == Class::Universal
        && any.tag() == tag
        && any.header.is_constructed() == constructed
    {
        Ok(())
    } else {
        Err(malformed(format!("{what} is not a {tag:?}")))
    }
}

pub(super) fn expect_empty(rest: &[u8], after: &str) -> Result<(), CsrError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(malformed(format!(
            "{} unexpected bytes after {after}",
            rest.len()
        )))
    }
}

pub(super) fn malformed(what: String) -> CsrError {
    CsrError::Malformed(what)
}
