//! Vietnam Post answers of every call, with any status and Retry-After.
//! The first two bytes pick the status, the next eight the Retry-After.
#![no_main]

use std::time::Duration;

use bcci_gateway::carrier::CallFailure;
use bcci_gateway::carrier::vnpost::token_answer;
use bcci_gateway::carrier::vnpost::wire::{
    Answer, MAX_MESSAGE_CHARS, Op, TransientPatterns, cancel_answer, classify, create_answer,
    list_page, parse_retry_after, tracking_history,
};
use libfuzzer_sys::fuzz_target;

fn check(result: Result<(), CallFailure>) {
    match result {
        Err(CallFailure::Refused { message }) => {
            assert!(message.chars().count() <= MAX_MESSAGE_CHARS)
        }
        Err(CallFailure::Transient { detail, .. }) => assert!(detail.chars().count() <= 200),
        Ok(()) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let status = 100 + u16::from_le_bytes([data[0], data[1]]) % 500;
    let retry_after = Some(Duration::from_secs(u64::from_le_bytes(data[2..10].try_into().unwrap())));
    let body = &data[10..];
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = parse_retry_after(text, jiff::Timestamp::UNIX_EPOCH);
    }
    let patterns = TransientPatterns::new(&["hệ thống bận".into(), "timeout".into()]);
    let answer = Answer { status, retry_after, body };
    check(classify(Op::Create, &answer, &patterns, |v| create_answer(v).map(drop)));
    check(classify(Op::Lookup, &answer, &patterns, |v| list_page(v, "h_x").map(drop)));
    check(classify(Op::Cancel, &answer, &patterns, |v| cancel_answer(v).map(drop)));
    check(classify(Op::Track, &answer, &patterns, |v| tracking_history(v).map(drop)));
    check(classify(Op::Token, &answer, &patterns, |v| token_answer(v).map(drop)));
});
