//! Logging: text or JSON lines on stderr, filtered by an `EnvFilter` directive
//! string (e.g. `info,puppet_conductor=debug`).

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
    /// every line of a reconcile carries its `kind`, `name` and `namespace`.
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
pub fn init(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    dispatch(format, filter, std::io::stderr)?
        .try_init()
        .map_err(TelemetryError::Install)
}

/// The subscriber `init` installs, writing to `writer`; tests use it with
/// `tracing::dispatcher::with_default` instead of installing it globally.
fn dispatch<W>(format: LogFormat, filter: &str, writer: W) -> Result<Dispatch, TelemetryError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(filter).map_err(|source| TelemetryError::Filter {
        filter: filter.to_string(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    let dispatch = match format {
        LogFormat::Text => {
            Dispatch::new(registry.with(tracing_subscriber::fmt::layer().with_writer(writer)))
        }
        LogFormat::Json => Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
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

    #[test]
    fn json_lines_carry_the_reconcile_span() {
        let out = Captured::default();
        let dispatch = dispatch(LogFormat::Json, "info", out.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!(
                "reconcile",
                kind = "PuppetNode",
                name = "web-1",
                namespace = "prod"
            );
            let _entered = span.enter();
            tracing::info!(certname = "web-1.example", "signed");
            tracing::debug!("filtered out");
        });
        let text = out.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line = &lines[0];
        assert_eq!(line["fields"]["message"], "signed");
        assert_eq!(line["fields"]["certname"], "web-1.example");
        assert_eq!(line["span"]["name"], "reconcile");
        assert_eq!(line["span"]["kind"], "PuppetNode");
        assert_eq!(line["spans"][0]["namespace"], "prod");
    }

    #[test]
    fn text_format_honours_the_filter() {
        let out = Captured::default();
        let dispatch = dispatch(LogFormat::Text, "warn", out.clone()).unwrap();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("quiet");
            tracing::warn!("loud");
        });
        let text = out.text();
        assert!(text.contains("loud") && !text.contains("quiet"), "{text}");
    }

    #[test]
    fn a_bad_filter_is_an_error() {
        let err =
            dispatch(LogFormat::Json, "info,puppet_conductor=loud", std::io::sink).unwrap_err();
        assert!(matches!(err, TelemetryError::Filter { .. }), "{err:?}");
    }
}
