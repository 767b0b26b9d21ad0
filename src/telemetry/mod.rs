//! Metrics, logs and redaction.

pub mod logging;
pub mod metrics;

pub use metrics::Metrics;
