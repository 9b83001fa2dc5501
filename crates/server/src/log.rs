//! teller's log: one line per event through `tracing`, as JSON for the
//! bank's log pipeline (ELK) or as readable text on a terminal. The lines
//! of one HTTP request carry its `request_id` and, once decided, its
//! `decision_id`. Messages go through the same masking as errors, so no
//! account number is ever logged.

use std::fmt::{self, Write as _};
use teller_contract::Error;
use teller_contract::ErrorCode;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::{FormatFields, Writer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Json,
    Text,
}

/// Installs the process's logger: `level` is a `tracing` filter (`info`,
/// `teller=debug,warn`, ...).
pub fn init(level: &str, format: LogFormat) -> Result<(), Error> {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_new(level).map_err(|e| {
        Error::bad_request(
            ErrorCode::ConfigInvalid,
            format!("--log-level {level:?} is not a log filter: {e}"),
        )
    })?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let installed = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(SpanFields)
            .try_init()
    } else {
        builder.try_init()
    };
    installed.map_err(|e| Error::internal(ErrorCode::LogInit, format!("cannot start the log: {e}")))
}

/// Writes a span's fields as the JSON object the `json` log lines embed.
///
/// `tracing-subscriber`'s own `JsonFields` builds a map for every span and,
/// when a field is recorded later (the `decision_id`), parses its JSON back
/// to merge: a tenth of a loaded server's CPU went to the request span,
/// although no line is written for most requests. This writes the object
/// directly and appends later fields in place.
struct SpanFields;

impl<'writer> FormatFields<'writer> for SpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut members = Members::default();
        fields.record(&mut members);
        write!(writer, "{{{}}}", members.written()?)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = Members::default();
        fields.record(&mut members);
        let added = members.written()?;
        if added.is_empty() {
            return Ok(());
        }
        let object = &mut current.fields;
        match object.pop() {
            Some('}') if object.ends_with('{') => {}
            Some('}') => object.push(','),
            None => object.push('{'),
            // Not an object this formatter wrote: left as it is.
            Some(other) => {
                object.push(other);
                return Err(fmt::Error);
            }
        }
        object.push_str(&added);
        object.push('}');
        Ok(())
    }
}

/// A JSON object's members, `"name":value` separated by commas.
#[derive(Default)]
struct Members {
    out: String,
    failed: bool,
}

impl Members {
    fn key(&mut self, field: &Field) {
        if !self.out.is_empty() {
            self.out.push(',');
        }
        self.string(field.name());
        self.out.push(':');
    }

    fn string(&mut self, s: &str) {
        match serde_json::to_string(s) {
            Ok(quoted) => self.out.push_str(&quoted),
            Err(_) => self.failed = true,
        }
    }

    fn written(self) -> Result<String, fmt::Error> {
        if self.failed {
            return Err(fmt::Error);
        }
        Ok(self.out)
    }
}

impl Visit for Members {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.string(value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field);
        let _ = write!(self.out, "{value}");
    }

    /// A number, as `JsonFields` writes one; JSON has none for NaN or
    /// infinity, so those are written as text.
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        if value.is_finite() {
            let _ = write!(self.out, "{value}");
        } else {
            self.string(&value.to_string());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.string(&format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A log line's `span` holds the span's fields, those given when it was
    /// made and those recorded later, as JSON whatever their text.
    #[test]
    fn span_fields_recorded_later_join_the_json_object() {
        let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(sink.clone()))
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(SpanFields)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                request_id = %"pay \"42\"\n",
                attempt = 3u64,
                share = 0.5f64,
                decision_id = tracing::field::Empty,
                late = tracing::field::Empty
            );
            let _in = span.enter();
            tracing::info!("before");
            span.record("decision_id", "0193-ab");
            span.record("late", true);
            tracing::info!("after");
            let bare = tracing::info_span!("bare", later = tracing::field::Empty);
            bare.record("later", 7u64);
            bare.in_scope(|| tracing::info!("bare"));
        });
        let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[2]["span"],
            serde_json::json!({"name": "bare", "later": 7}),
            "{text}"
        );
        assert_eq!(
            lines[0]["span"],
            serde_json::json!({"name": "request", "request_id": "pay \"42\"\n", "attempt": 3, "share": 0.5}),
            "{text}"
        );
        assert_eq!(
            lines[1]["span"],
            serde_json::json!({
                "name": "request",
                "request_id": "pay \"42\"\n",
                "attempt": 3,
                "share": 0.5,
                "decision_id": "0193-ab",
                "late": true
            }),
            "{text}"
        );
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
