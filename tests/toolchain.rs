//! Guards against a rustc miscompilation that made the release build send a
//! second CreateOrder without the lookup (issue 16, docs/decisions.md).
//!
//! rust-lang/rust issue 158206: the MIR pass `SimplifyComparisonIntegral`
//! deletes the definition of a boolean made by comparing an enum's
//! discriminant when the boolean is both switched on and used again, so the
//! later use reads garbage. Affected: rustc 1.95.0 (and the 2026-05-19
//! nightly) at opt-level 2 and 3. `.cargo/config.toml` switches the pass off;
//! without it `cargo test --release --test toolchain` fails on an affected
//! compiler. This is the construct of `carrier::vnpost::wire::transient`,
//! reduced: no dependency on the crate, so the guard does not move when that
//! code does.

use std::hint::black_box;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Token,
    Create,
}

impl Op {
    fn creates(self) -> bool {
        self == Op::Create
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Refused,
    Transient {
        ambiguous: bool,
        detail: String,
        outcome: &'static str,
    },
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Connect,
    Timeout,
    Other,
}

fn transient(op: Op, reached: bool, detail: String) -> Failure {
    let ambiguous = reached && op.creates();
    Failure::Transient {
        ambiguous,
        detail,
        outcome: if ambiguous { "ambiguous" } else { "transient" },
    }
}

fn classify(op: Op, kind: Transport) -> Failure {
    match kind {
        Transport::Connect => transient(op, false, String::from("connect")),
        Transport::Timeout => Failure::Transient {
            ambiguous: op.creates(),
            detail: String::from("timeout"),
            outcome: "timeout",
        },
        Transport::Other => transient(op, true, String::from("other")),
    }
}

fn seen(op: Op, kind: Transport) -> (bool, &'static str) {
    match classify(black_box(op), black_box(kind)) {
        Failure::Transient {
            ambiguous, outcome, ..
        } => (ambiguous, outcome),
        Failure::Refused => (false, "refused"),
    }
}

#[test]
fn optimised_code_keeps_a_compared_discriminant() {
    assert_eq!(seen(Op::Create, Transport::Other), (true, "ambiguous"));
    assert_eq!(seen(Op::Create, Transport::Connect), (false, "transient"));
    assert_eq!(seen(Op::Create, Transport::Timeout), (true, "timeout"));
    assert_eq!(seen(Op::Token, Transport::Other), (false, "transient"));
    let _ = Failure::Refused;
}
