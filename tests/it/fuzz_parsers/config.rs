//! The configuration: any TOML text loads or is refused with reasons.

use bcci_gateway::config::{ConfigError, Settings};
use proptest::prelude::*;

use super::hostile;

fn example() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.example.toml");
    std::fs::read(path).expect("deploy/config.example.toml")
}

const TOML_TOKENS: &[&[u8]] = &[
    b"[",
    b"]",
    b"[[intake.clients]]\n",
    b"=",
    b"\"",
    b"'''",
    b"\n",
    b"18446744073709551616",
    b"-1",
    b"1e999",
    b"nan",
    b"inf",
    b"0x7fffffffffffffff",
    b"1979-05-27T07:32:00Z",
    b"{}",
    b"\\u0000",
    b"\xff",
];

fn check(text: &str) -> Result<(), TestCaseError> {
    match Settings::from_toml(text) {
        Ok(settings) => {
            let _ = settings.redacted_toml();
        }
        Err(ConfigError::Invalid(reasons)) => prop_assert!(!reasons.is_empty()),
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(hostile::config(256))]

    #[test]
    fn any_text_loads_or_is_refused_with_reasons(text in ".{0,200}") {
        check(&text)?;
    }

    #[test]
    fn a_mutated_example_configuration_loads_or_is_refused(bytes in hostile::mutated(vec![example()], TOML_TOKENS)) {
        check(&String::from_utf8_lossy(&bytes))?;
    }
}
