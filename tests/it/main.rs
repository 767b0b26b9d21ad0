//! The one integration-test binary (issue 19): every in-process test, as
//! modules. The gateway runs in the test process on port 0 with a real
//! store; the process-level soak and HA tests (`tests/soak.rs`,
//! `tests/ha.rs`) and the miscompilation guard (`tests/toolchain.rs`) are
//! binaries of their own. `.ci/run` runs this binary in the release profile
//! too, the profile users run (issue 16).
//!
//! `cargo test --test it` (or `--release --test it`); one module with
//! `cargo test --test it store_suite::`.

#[macro_use]
#[path = "../common/mod.rs"]
mod common;
mod helpers;

mod admin;
mod api;
mod board;
mod cli;
mod closed_loop;
mod dispatch;
mod fuzz_parsers;
mod operate;
mod properties;
mod reconcile_cancel;
mod retention;
mod sim;
mod store_suite;
mod vnpost_adapter;
