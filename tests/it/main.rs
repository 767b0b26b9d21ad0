//! One integration-test binary (the shape issue 19 asks of every in-process
//! test): the decisions that call Vietnam Post again, each run on both
//! stores where a store is involved. `.ci/run` runs this binary in the
//! release profile too, the profile users run (issue 16).
//!
//! `cargo test --test it` (or `--release --test it`).

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

mod dispatch;
mod reconcile_cancel;
mod vnpost_adapter;
