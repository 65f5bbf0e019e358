//! Escaping text for cloud-init's jinja renderer.
//!
//! User data that starts with `## template: jinja` is rendered by cloud-init on
//! the instance (jinja2 with `trim_blocks=True`, no line statements). Only three
//! two-character sequences start jinja syntax: `{{`, `{%` and `{#`. [`escape`]
//! turns text into a template that renders back to exactly that text by
//! replacing the `{` of each such sequence with the expression `{{ '{' }}`.
//! Expressions are untouched by `trim_blocks` (it only affects `{% %}` blocks),
//! and no `{% raw %}` block is used, so no user text can close one early.
//!
//! Jinja also turns `\r\n` and `\r` in template data into `\n`; the YAML
//! emitter never writes a raw `\r` (it escapes it inside double quotes).

/// A jinja expression that renders as a single `{`.
pub(super) const OPEN_BRACE: &str = "{{ '{' }}";

/// A template that renders to `text`: every `{` followed by `{`, `%` or `#`
/// becomes [`OPEN_BRACE`].
///
/// After escaping, the text contains no `{{`, `{%` or `{#` other than the
/// `{{ '{' }}` expressions themselves.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '{' && matches!(chars.peek(), Some('{' | '%' | '#')) {
            out.push_str(OPEN_BRACE);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What jinja makes of an escaped template, for templates whose only jinja
    /// syntax is `{{ '{' }}` and the `extra` expressions given (each rendered as
    /// its value). Panics on any other jinja syntax: that would be an injection.
    pub(crate) fn render(template: &str, extra: &[(&str, &str)]) -> String {
        let mut out = String::new();
        let mut rest = template;
        while let Some(at) = rest.find(['{']) {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if !(rest.starts_with("{{") || rest.starts_with("{%") || rest.starts_with("{#")) {
                out.push('{');
                rest = &rest[1..];
                continue;
            }
            if let Some(after) = rest.strip_prefix(OPEN_BRACE) {
                out.push('{');
                rest = after;
                continue;
            }
            let Some((expr, value)) = extra.iter().find(|(expr, _)| rest.starts_with(expr)) else {
                panic!(
                    "unexpected jinja syntax at {:?}",
                    &rest[..rest.len().min(40)]
                );
            };
            out.push_str(value);
            rest = &rest[expr.len()..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn escapes_only_delimiters() {
        assert_eq!(escape("a{b}c {} {"), "a{b}c {} {");
        assert_eq!(escape("{{ x }}"), "{{ '{' }}{ x }}");
        assert_eq!(escape("{% endraw %}"), "{{ '{' }}% endraw %}");
        assert_eq!(escape("{#"), "{{ '{' }}#");
        assert_eq!(escape("{{{"), "{{ '{' }}{{ '{' }}{");
    }

    proptest! {
        #[test]
        fn escaped_text_renders_back(text in "[{}%# a\n-]{0,40}|.{0,40}") {
            let escaped = escape(&text);
            prop_assert_eq!(render(&escaped, &[]), text);
        }
    }
}
