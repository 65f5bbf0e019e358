//! Logging: text or JSON lines on stderr, filtered by an `EnvFilter` directive
//! string (e.g. `info,puppet_conductor=debug`).

use std::io::IsTerminal;

use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the current span and the span list, so
    /// every line of a reconcile carries its `kind`, `object` (the name) and
    /// `namespace`; no key appears twice in an object.
    Json,
}

/// Why logging could not be set up.
#[derive(thiserror::Error, Debug)]
pub enum TelemetryError {
    /// The filter string is not valid `EnvFilter` syntax.
    #[error("invalid log filter {filter:?}")]
    Filter {
        /// The string given.
        filter: String,
        /// The parser's complaint.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("could not install the log subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the global subscriber writing to stderr; call once, early in `main`.
/// Text lines are coloured only when stderr is a terminal and `NO_COLOR` is unset
/// (<https://no-color.org>): a log file or collector gets no escape codes.
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    dispatch(format, filter, colour, std::io::stderr)?
        .try_init()
        .map_err(TelemetryError::Install)
}

/// The subscriber `init` installs, writing to `writer` (`colour`: ANSI codes in text
/// lines); tests use it with `tracing::dispatcher::with_default` instead of
/// installing it globally.
fn dispatch<W>(
    format: LogFormat,
    filter: &str,
    colour: bool,
    writer: W,
) -> Result<Dispatch, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_string(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    let dispatch = match format {
        LogFormat::Text => Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour)
                    .with_writer(writer),
            ),
        ),
        LogFormat::Json => Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(writer),
            ),
        ),
    };
    Ok(dispatch)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A `MakeWriter` collecting everything written, for inspection.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// A JSON value read with every object's keys checked for repeats (serde_json
    /// keeps the last of two equal keys silently, as most parsers do).
    struct Unique(serde_json::Value);

    impl<'de> serde::Deserialize<'de> for Unique {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(UniqueVisitor)
        }
    }

    struct UniqueVisitor;

    impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
        type Value = Unique;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
            let mut out = serde_json::Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let Unique(value) = map.next_value()?;
                if out.insert(key.clone(), value).is_some() {
                    return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
                }
            }
            Ok(Unique(out.into()))
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
            let mut out = Vec::new();
            while let Some(Unique(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Unique(out.into()))
        }

        fn visit_str<E>(self, v: &str) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }

        fn visit_bool<E>(self, v: bool) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Unique, E> {
            Ok(Unique(v.into()))
        }

        fn visit_unit<E>(self) -> Result<Unique, E> {
            Ok(Unique(serde_json::Value::Null))
        }
    }

    fn reconcile_meta() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("web-1".into()),
            namespace: Some("prod".into()),
            ..Default::default()
        }
    }

    #[test]
    fn json_lines_carry_the_reconcile_span_with_unique_keys() {
        let out = Captured::default();
        let dispatch = dispatch(LogFormat::Json, "info", false, out.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let meta = reconcile_meta();
            let span = crate::runner::wiring::reconcile_span("PuppetNode", &meta);
            let _entered = span.enter();
            tracing::info!(certname = "web-1.example", "signed");
            tracing::debug!("filtered out");
        });
        let text = out.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| match serde_json::from_str::<Unique>(l) {
                Ok(Unique(v)) => v,
                Err(e) => panic!("{e}: {l}"),
            })
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = &lines[0];
        assert_eq!(line["fields"]["message"], "signed");
        assert_eq!(line["fields"]["certname"], "web-1.example");
        assert_eq!(line["span"]["name"], "reconcile");
        assert_eq!(line["span"]["object"], "web-1");
        assert_eq!(line["span"]["kind"], "PuppetNode");
        assert_eq!(line["spans"][0]["namespace"], "prod");
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }

    #[test]
    fn a_repeated_key_is_caught_by_the_unique_reader() {
        let err = serde_json::from_str::<Unique>(r#"{"span":{"name":"a","name":"b"}}"#);
        assert!(err.is_err());
    }

    #[test]
    fn text_lines_carry_colour_codes_only_when_asked() {
        for colour in [false, true] {
            let out = Captured::default();
            let dispatch = dispatch(LogFormat::Text, "info", colour, out.clone()).unwrap();
            tracing::dispatcher::with_default(&dispatch, || tracing::warn!(certname = "x", "loud"));
            let text = out.text();
            assert_eq!(text.contains('\u{1b}'), colour, "{text:?}");
        }
    }

    #[test]
    fn text_format_honours_the_filter() {
        let out = Captured::default();
        let dispatch = dispatch(LogFormat::Text, "warn", false, out.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("quiet");
            tracing::warn!("loud");
        });
        let text = out.text();
        assert!(text.contains("loud") && !text.contains("quiet"), "{text}");
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        let err = dispatch(
            LogFormat::Json,
            "info,puppet_conductor=loud",
            false,
            std::io::sink,
        )
        .unwrap_err();
        assert!(matches!(err, TelemetryError::Filter { .. }), "{err:?}");
    }
}
