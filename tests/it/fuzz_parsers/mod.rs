//! Bounded fuzzing of everything the gateway reads from outside, on the
//! stable toolchain: intake JSON and XML, canonicalization, Vietnam Post
//! webhooks and answers, configuration. `PROPTEST_CASES=n` runs longer
//! (docs/robustness.md).

mod config;
mod hostile;
mod http;
mod intake;
mod vnpost;
mod webhook;
