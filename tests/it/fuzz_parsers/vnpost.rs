//! Vietnam Post's answers (create, lookup, cancel, tracking, login) and
//! their `Retry-After`, read directly.

use std::sync::Arc;
use std::time::Duration;

use bcci_gateway::carrier::CallFailure;
use bcci_gateway::carrier::guard::{BreakerSettings, CallResult, PostalGuard};
use bcci_gateway::carrier::vnpost::token_answer;
use bcci_gateway::carrier::vnpost::wire::{
    self, Answer, MAX_MESSAGE_CHARS, Op, TransientPatterns, cancel_answer, carrier_time, classify,
    create_answer, list_page, parse_retry_after, tracking_history,
};
use bcci_gateway::telemetry::Metrics;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::hostile;

const SALE_ORDER_CODE: &str = "h_01JDQ4M5X2K7A9B3C6D8E0F1G2";

fn order() -> Value {
    json!({"orderHdrID": "10001", "originalID": "20001", "itemCode": "BK990032281VN",
           "saleOrderCode": SALE_ORDER_CODE, "totalFee": 23000, "status": 2,
           "createdDate": "25/11/2026 09:12:51"})
}

/// Answers as vnpost-api.md and the simulator give them.
fn templates() -> Vec<Value> {
    vec![
        json!({"success": true, "data": order()}),
        order(),
        json!({"data": [order()]}),
        json!({"results": [order(), {"saleOrderCode": "h_other"}]}),
        json!([{"results": [order()]}, {"results": []}]),
        json!({"data": {"Type": "00", "Message": "OK"}}),
        json!({"type": 2, "caseId": "C1"}),
        json!({"Type": "05", "Note": "Đơn hàng đã lấy"}),
        json!({"data": {"statusHistory": [
            {"createdDate": "25/11/2026", "createdHour": "14:03:00", "statusCode": 6, "statusName": "Lấy hàng thành công", "locateName": "Côn Đảo"},
            {"createDate": "2026-11-25T13:40:00", "statusCode": "4.0"}]}}),
        json!({"success": false, "errorMessage": "Hệ thống bận, vui lòng thử lại"}),
        json!({"success": "false", "message": "Sai mã tỉnh"}),
        json!({"token": "eyJhbGciOi.eyJzdWIi.c2ln", "success": true}),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        (
            prop::sample::select(templates()),
            prop::collection::vec(
                (
                    0.0f64..1.0,
                    hostile::hostile_value().prop_map(hostile::TreeEdit::Replace)
                ),
                0..4
            ),
        )
            .prop_map(|(doc, edits)| hostile::edit_tree(doc, edits).to_string().into_bytes()),
        hostile::mutated(
            templates()
                .iter()
                .map(|t| t.to_string().into_bytes())
                .collect(),
            &[
                b"{",
                b"]",
                b"\\ud800",
                b"1e999999",
                b"\xff",
                b"null",
                b"\"success\":false,"
            ],
        ),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => prop::sample::select(vec![200u16, 201, 204, 400, 401, 403, 408, 429, 500, 503]),
        1 => 100u16..600,
    ]
}

/// `Retry-After` values: seconds of any size, HTTP dates, junk.
pub fn retry_after_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        Just(u64::MAX.to_string()),
        Just("18446744073709551616".to_owned()),
        "[0-9]{1,30}",
        Just("Fri, 31 Dec 9999 23:59:59 GMT".to_owned()),
        Just("Mon, 01 Jan 1900 00:00:00 GMT".to_owned()),
        ".{0,40}",
    ]
}

fn check_failure(f: &CallFailure) -> Result<(), TestCaseError> {
    match f {
        CallFailure::Refused { message } => {
            prop_assert!(!message.is_empty());
            prop_assert!(
                message.chars().count() <= MAX_MESSAGE_CHARS,
                "{} chars",
                message.chars().count()
            );
        }
        CallFailure::Transient {
            detail, outcome, ..
        } => {
            prop_assert!(
                !detail.is_empty() && detail.chars().count() <= 200,
                "{detail}"
            );
            prop_assert!(["transient", "ambiguous", "timeout"].contains(outcome));
        }
    }
    Ok(())
}

fn classify_all(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), TestCaseError> {
    let patterns = TransientPatterns::new(&["hệ thống bận".into(), "timeout".into()]);
    let answer = Answer {
        status,
        retry_after,
        body,
    };
    let results = [
        classify(Op::Create, &answer, &patterns, |v| {
            create_answer(v).map(|_| ())
        }),
        classify(Op::Lookup, &answer, &patterns, |v| {
            list_page(v, SALE_ORDER_CODE).map(|_| ())
        }),
        classify(Op::Cancel, &answer, &patterns, |v| {
            cancel_answer(v).map(|_| ())
        }),
        classify(Op::Track, &answer, &patterns, |v| {
            let history = tracking_history(v)?;
            let sorted = history
                .events
                .windows(2)
                .all(|w| w[0].occurred_at <= w[1].occurred_at);
            assert!(sorted, "tracking events out of order");
            Ok(())
        }),
        classify(Op::Token, &answer, &patterns, |v| {
            token_answer(v).map(|_| ())
        }),
    ];
    for result in &results {
        if let Err(f) = result {
            check_failure(f)?;
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let _ = carrier_time(text);
        let _ = wire::order_record(&json!(text));
    }
    Ok(())
}

proptest! {
    #![proptest_config(hostile::config(2048))]

    #[test]
    fn any_answer_is_classified_without_panic(status in status(), body in body(), ra in prop::option::of(0u64..100_000)) {
        classify_all(status, ra.map(Duration::from_secs), &body)?;
    }

    #[test]
    fn carrier_times_of_any_text_parse_or_not_without_panic(raw in prop_oneof![".{0,40}", "[0-9]{1,4}[-/][0-9]{1,4}[-/][0-9]{1,6}[ T][0-9:]{0,12}"]) {
        let _ = carrier_time(&raw);
    }
}

proptest! {
    #![proptest_config(hostile::config(256))]

    /// A `Retry-After` of any size pauses the guard without overflowing its clock.
    #[test]
    fn any_retry_after_pauses_the_postal_guard_without_panic(raw in retry_after_text()) {
        let now = jiff::Timestamp::now();
        let parsed = parse_retry_after(&raw, now);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let guard = PostalGuard::new(10, BreakerSettings::default(), Arc::new(Metrics::new()));
            guard.permit().await.record(CallResult::Failed { retry_after: parsed });
            assert!(!guard.is_open(), "one failure does not open the breaker");
        });
    }
}
