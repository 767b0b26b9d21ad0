//! Configuration files: loaded, or refused with reasons.
#![no_main]

use bcci_gateway::config::Settings;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(settings) = Settings::from_toml(text)
    {
        let _ = settings.redacted_toml();
    }
});
