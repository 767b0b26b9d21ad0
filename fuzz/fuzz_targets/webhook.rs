//! Vietnam Post webhook bodies: refused whole (400) or read record by record.
#![no_main]

use bcci_gateway::carrier::vnpost::webhook::{parse_record, read_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = read_batch(data) {
        for record in &batch.records {
            if let Err(message) = parse_record(record, batch.send_date) {
                assert!(message.len() < 100);
            }
        }
    }
});
