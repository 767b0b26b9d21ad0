//! Bounded fuzzing of everything the gateway reads from outside, on the
//! stable toolchain: intake JSON and XML, canonicalization, Vietnam Post
//! webhooks and answers, configuration. `PROPTEST_CASES=n` runs longer
//! (docs/robustness.md).

mod config;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod hostile;
mod http;
mod intake;
mod vnpost;
mod webhook;
