//! A small YAML emitter whose output means the same under YAML 1.1 and 1.2.
//!
//! cloud-init reads user data with PyYAML, a YAML 1.1 parser, while serde_yaml
//! writes YAML 1.2: it leaves strings such as `yes`, `on`, `12:30` or
//! `2024-01-01` unquoted, which PyYAML then reads as a boolean, a sexagesimal
//! integer or a date. This emitter therefore writes a string plain only when it
//! is a word no YAML version resolves to anything but a string, and otherwise
//! double-quoted (or, for readable multi-line text such as a PEM certificate, as
//! a literal block when that is unambiguous). Characters either parser treats
//! specially (controls, `\r`, NEL, line/paragraph separators, BOM, non-characters)
//! are always escaped inside double quotes, so the output never holds them raw.

use std::fmt::Write as _;

/// A YAML node. Mappings keep their order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
    /// A scalar written exactly as given (the caller guarantees it is valid YAML).
    Raw(String),
}

impl From<&serde_json::Value> for Node {
    fn from(value: &serde_json::Value) -> Self {
        match value {
            serde_json::Value::Null => Self::Null,
            serde_json::Value::Bool(b) => Self::Bool(*b),
            serde_json::Value::Number(n) => Self::Number(n.clone()),
            serde_json::Value::String(s) => Self::String(s.clone()),
            serde_json::Value::Array(items) => Self::Seq(items.iter().map(Self::from).collect()),
            serde_json::Value::Object(map) => Self::Map(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from(v)))
                    .collect(),
            ),
        }
    }
}

impl Node {
    pub(super) fn str(s: &str) -> Self {
        Self::String(s.to_owned())
    }

    pub(super) fn int(n: i64) -> Self {
        Self::Number(n.into())
    }
}

/// Keys longer than this are written as explicit `? key` entries: YAML limits
/// implicit keys to 1024 characters.
const MAX_IMPLICIT_KEY: usize = 1000;

/// Indentation step.
const INDENT: usize = 2;

/// A block mapping document of `entries`, ending with a newline.
pub(super) fn document(entries: &[(String, Node)]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("{}\n");
    } else {
        write_map(&mut out, entries, 0, false);
    }
    out
}

/// Mapping entries at `indent`; with `inline_first` the first entry continues
/// the current line (after a sequence's `- `).
fn write_map(out: &mut String, entries: &[(String, Node)], indent: usize, inline_first: bool) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 || !inline_first {
            push_indent(out, indent);
        }
        let key = inline_scalar(key);
        if key.len() > MAX_IMPLICIT_KEY {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            push_indent(out, indent);
        } else {
            out.push_str(&key);
        }
        out.push(':');
        match value {
            Node::Map(entries) if !entries.is_empty() => {
                out.push('\n');
                write_map(out, entries, indent + INDENT, false);
            }
            Node::Seq(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent + INDENT, false);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, indent + INDENT);
                out.push('\n');
            }
        }
    }
}

/// Sequence items at `indent`; `inline_first` as for [`write_map`].
fn write_seq(out: &mut String, items: &[Node], indent: usize, inline_first: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !inline_first {
            push_indent(out, indent);
        }
        out.push_str("- ");
        match item {
            Node::Map(entries) if !entries.is_empty() => {
                write_map(out, entries, indent + INDENT, true);
            }
            Node::Seq(items) if !items.is_empty() => {
                write_seq(out, items, indent + INDENT, true);
            }
            scalar => {
                write_scalar(out, scalar, indent + INDENT);
                out.push('\n');
            }
        }
    }
}

/// A scalar (or empty collection) on the current line; a literal block's lines
/// go at `block_indent`. No trailing newline.
fn write_scalar(out: &mut String, node: &Node, block_indent: usize) {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(true) => out.push_str("true"),
        Node::Bool(false) => out.push_str("false"),
        Node::Number(n) => out.push_str(&number(n)),
        Node::String(s) => match literal_block_chomping(s) {
            Some(indicator) => {
                out.push_str(indicator);
                for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                    out.push('\n');
                    if !line.is_empty() {
                        push_indent(out, block_indent);
                        out.push_str(line);
                    }
                }
            }
            None => out.push_str(&inline_scalar(s)),
        },
        Node::Seq(_) => out.push_str("[]"),
        Node::Map(_) => out.push_str("{}"),
        Node::Raw(text) => out.push_str(text),
    }
}

fn push_indent(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

/// A number both YAML versions read back as the same number. Floats always get
/// a `.` and a signed exponent, which YAML 1.1 requires (`1e20` is a string there).
fn number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let Some(f) = n.as_f64() else {
        return n.to_string();
    };
    if f.is_nan() {
        return ".nan".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { ".inf" } else { "-.inf" }.to_owned();
    }
    let text = format!("{f:?}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => {
            let dot = if mantissa.contains('.') { "" } else { ".0" };
            let sign = if exponent.starts_with('-') { "" } else { "+" };
            format!("{mantissa}{dot}e{sign}{exponent}")
        }
        None => text,
    }
}

/// Strings that resolve to booleans or null in YAML 1.1 or 1.2 (compared case-insensitively).
const NOT_PLAIN_WORDS: [&str; 9] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];

/// `s` plain if it is a word that is a string in both YAML versions, else double-quoted.
fn inline_scalar(s: &str) -> String {
    if is_plain(s) {
        s.to_owned()
    } else {
        double_quoted(s)
    }
}

/// A letter or `_`, then letters, digits, `_`, `.`, `/` and `-`: never a number,
/// date, time, null or special YAML syntax; the few such words that are booleans
/// or null are excluded.
fn is_plain(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !NOT_PLAIN_WORDS
            .iter()
            .any(|word| word.eq_ignore_ascii_case(s))
}

/// Characters that must never appear raw: controls, DEL and C1 controls (NEL
/// among them), line/paragraph separators, BOM, and the non-characters YAML
/// 1.1 refuses.
fn needs_escape(c: char) -> bool {
    c < ' '
        || ('\u{7f}'..='\u{9f}').contains(&c)
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if needs_escape(c) => {
                // All such characters are in the BMP.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The literal block header (`|` or `|-`) when `s` reads unambiguously as a
/// literal block in both YAML versions, else `None`.
///
/// Only multi-line text of printable characters (tabs allowed inside lines)
/// whose first line starts with a non-blank character (so the indentation is
/// detected right), without trailing blanks on any line and with at most one
/// final newline.
fn literal_block_chomping(s: &str) -> Option<&'static str> {
    if !s.contains('\n') {
        return None;
    }
    let (body, indicator) = match s.strip_suffix('\n') {
        Some(body) => (body, "|"),
        None => (s, "|-"),
    };
    if body.is_empty() || body.ends_with('\n') || body.starts_with([' ', '\t', '\n']) {
        return None;
    }
    let clean_line = |line: &str| {
        !line.ends_with([' ', '\t']) && line.chars().all(|c| c == '\t' || !needs_escape(c))
    };
    body.split('\n').all(clean_line).then_some(indicator)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn doc(value: serde_json::Value) -> String {
        let Node::Map(entries) = Node::from(&value) else {
            panic!("not a map")
        };
        document(&entries)
    }

    #[test]
    fn layout() {
        let text = doc(json!({
            "a": 1,
            "b": [1, [2, 3], {"c": "d", "e": []}, [], {}],
            "f": {"g": {"h": null}, "i": {}},
            "j": "x\ny\n",
            "k": ["p\nq"],
        }));
        assert_eq!(
            text,
            "a: 1\n\
             b:\n  - 1\n  - - 2\n    - 3\n  - c: d\n    e: []\n  - []\n  - {}\n\
             f:\n  g:\n    h: null\n  i: {}\n\
             j: |\n  x\n  y\n\
             k:\n  - |-\n    p\n    q\n"
        );
    }

    #[test]
    fn quotes_what_yaml_1_1_would_misread() {
        for s in [
            "yes",
            "No",
            "ON",
            "off",
            "y",
            "N",
            "true",
            "Null",
            "~",
            "",
            "12:30",
            "2024-01-01",
            "0755",
            "1_000",
            "0x1f",
            "1e3",
            ".inf",
            "-",
            "- a",
            "a: b",
            "a #b",
            "#x",
            "@x",
            "*x",
            "&x",
            "!x",
            "%x",
            "'x'",
            "\"x\"",
            "[x]",
            "{x}",
            " x",
            "x ",
            "1.2.840",
            "=",
            "<<",
        ] {
            assert!(
                inline_scalar(s).starts_with('"'),
                "{s:?} -> {}",
                inline_scalar(s)
            );
        }
        for s in [
            "server",
            "puppet.example.com",
            "i-0123",
            "pp_instance_id",
            "a/b-c.d",
            "yess",
        ] {
            assert_eq!(inline_scalar(s), s);
        }
    }

    #[test]
    fn escapes_special_characters() {
        assert_eq!(double_quoted("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            double_quoted("\r\n\t\u{0}\u{85}\u{2028}\u{feff}é"),
            "\"\\r\\n\\t\\u0000\\u0085\\u2028\\ufeffé\""
        );
    }

    #[test]
    fn literal_blocks_only_when_unambiguous() {
        assert_eq!(literal_block_chomping("a\nb\n"), Some("|"));
        assert_eq!(literal_block_chomping("a\n\nb"), Some("|-"));
        assert_eq!(literal_block_chomping("a\tb\nc"), Some("|-"));
        for s in [
            "ab",
            "\n",
            "a\n\n",
            " a\nb",
            "\na",
            "a \nb",
            "a\nb\t",
            "a\r\nb",
            "a\n\u{85}",
            "\tx\ny",
        ] {
            assert_eq!(literal_block_chomping(s), None, "{s:?}");
        }
    }

    #[test]
    fn floats_keep_a_dot_and_signed_exponent() {
        for (f, text) in [
            (1.0, "1.0"),
            (0.5, "0.5"),
            (1e20, "1.0e+20"),
            (1.5e-7, "1.5e-7"),
            (-2.0, "-2.0"),
        ] {
            let n = serde_json::Number::from_f64(f).unwrap();
            assert_eq!(number(&n), text);
        }
    }

    #[test]
    fn long_keys_are_explicit() {
        let key = "k".repeat(1500);
        let text = doc(json!({ key.clone(): {"a": 1}, "list": [{ key.clone(): "v" }] }));
        assert!(text.starts_with("? kkk"), "{}", &text[..20]);
        let back: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(
            back,
            json!({ key.clone(): {"a": 1}, "list": [{ key: "v" }] })
        );
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(serde_json::Value::String),
            "[a-zA-Z0-9 :#{}%\n\t.-]{0,30}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(any::<String>(), inner.clone(), 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                prop::collection::btree_map("[a-z_:. -]{0,8}", inner, 0..5)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn round_trips_through_a_yaml_parser(
            map in prop::collection::btree_map(any::<String>(), json_value(), 0..6)
        ) {
            let value = serde_json::Value::Object(map.into_iter().collect());
            let text = doc(value.clone());
            let back: serde_json::Value = serde_yaml::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, value, "{}", text);
            prop_assert!(!text.chars().any(|c| c != '\n' && needs_escape(c) && c != '\t'), "{:?}", text);
        }
    }
}
