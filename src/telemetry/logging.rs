//! Structured logs. Personal data never reaches them: handlers log route
//! templates, ids and outcomes, never bodies, paths or field values.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// Dependencies that would log connection details or statements at verbose
/// levels stay at `warn` whatever the configured level.
const QUIET: &[&str] = &[
    "sqlx",
    "hyper",
    "hyper_util",
    "h2",
    "reqwest",
    "rustls",
    "tower",
    "tower_http",
    "mio",
];

/// The filter for a configured level such as `info` or `debug`.
pub fn filter(level: &str) -> EnvFilter {
    let mut directives = level.to_owned();
    for dep in QUIET {
        directives.push_str(&format!(",{dep}=warn"));
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber writing to standard output.
pub fn init(settings: &LogSettings) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(&settings.level))
        .with_span_events(FmtSpan::NONE)
        .with_writer(std::io::stdout);
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
