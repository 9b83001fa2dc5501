//! teller's log: one line per event through `tracing`, as JSON for the
//! bank's log pipeline (ELK) or as readable text on a terminal. The lines
//! of one HTTP request carry its `request_id` and, once decided, its
//! `decision_id`. Messages go through the same masking as errors, so no
//! account number is ever logged.

use teller_contract::Error;
use teller_contract::ErrorCode;
use tracing_subscriber::EnvFilter;

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
            .try_init()
    } else {
        builder.try_init()
    };
    installed.map_err(|e| Error::internal(ErrorCode::LogInit, format!("cannot start the log: {e}")))
}
