//! Metrics, logs and redaction.

pub mod logging;
pub mod metrics;
pub mod process;

pub use metrics::Metrics;
