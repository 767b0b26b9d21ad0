//! Vietnam Post's status webhooks, read directly.

use std::time::{Duration, Instant};

use bcci_gateway::carrier::vnpost::webhook::{parse_record, read_batch};
use bcci_gateway::carrier::vnpost::wire::parse_vietnam_time;
use proptest::prelude::*;
use serde_json::{Value, json};

use super::hostile;

/// A batch as vnpost-api.md shows it, both key spellings mixed.
pub fn template() -> Value {
    json!({
        "data": [
            {"orderHdrID": "10001", "originalID": "20001", "itemCode": "BK990032281VN",
             "saleOrderCode": "h_01JDQ4M5X2K7A9B3C6D8E0F1G2", "status": 6,
             "statusName": "Lấy hàng thành công", "statusDate": "25/11/2026 14:03:00",
             "locateName": "Bưu cục Côn Đảo", "codAmount": 50000, "totalFee": 23000},
            {"orderHdrId": 10002, "originalId": "20002", "itemCode": "BK990032282VN",
             "status": "4", "statusDate": "25/11/2026 13:40:00"}
        ],
        "sendDate": "25/11/2026 14:03:05",
        "signature": "c2lnbmF0dXJl"
    })
}

fn hostile_time() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,3}/[0-9]{1,3}/-?[0-9]{1,6} [0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}",
        Just("31/02/2026 25:61:61".to_owned()),
        Just("00/00/0000 00:00:00".to_owned()),
        Just("31/12/9999 23:59:59".to_owned()),
        Just("01/01/-9999 00:00:00".to_owned()),
        ".{0,30}",
    ]
}

/// A batch with records' fields replaced, removed or added.
pub fn mutated_batch() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec((0.0f64..1.0, replace_edit()), 0..5),
        prop::option::of(hostile_time()),
        prop::option::of(hostile_time()),
    )
        .prop_map(|(edits, send, status)| {
            let mut doc = hostile::edit_tree(template(), edits);
            if let (Some(s), Some(batch)) = (send, doc.as_object_mut()) {
                batch.insert("sendDate".into(), json!(s));
            }
            if let (Some(s), Some(Value::Array(records))) = (status, doc.get_mut("data"))
                && let Some(Value::Object(r)) = records.first_mut()
            {
                r.insert("statusDate".into(), json!(s));
            }
            doc
        })
}

fn replace_edit() -> impl Strategy<Value = hostile::TreeEdit> {
    hostile::hostile_value().prop_map(hostile::TreeEdit::Replace)
}

/// Reads a body like the receiver does; every record either reads or is
/// refused with a short message that names no value.
pub fn check_webhook_body(bytes: &[u8]) -> Result<bool, TestCaseError> {
    let started = Instant::now();
    let Ok(batch) = read_batch(bytes) else {
        prop_assert!(started.elapsed() < Duration::from_secs(2));
        return Ok(false);
    };
    for record in &batch.records {
        match parse_record(record, batch.send_date) {
            Ok(r) => {
                prop_assert!(r.sale_order_code.is_some() || r.tracking_number.is_some());
            }
            Err(message) => {
                prop_assert!(!message.is_empty() && message.len() < 100, "{message}");
            }
        }
    }
    prop_assert!(started.elapsed() < Duration::from_secs(2));
    Ok(true)
}

proptest! {
    #![proptest_config(hostile::config(2048))]

    #[test]
    fn arbitrary_bytes_as_a_webhook_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_webhook_body(&bytes)?;
    }

    #[test]
    fn mutated_webhook_batches_are_read_or_refused_record_by_record(doc in mutated_batch()) {
        let is_batch = doc.get("data").is_some_and(Value::is_array);
        prop_assert_eq!(check_webhook_body(doc.to_string().as_bytes())?, is_batch);
    }

    #[test]
    fn mutated_webhook_bytes_fail_cleanly(bytes in hostile::mutated(vec![template().to_string().into_bytes()], &[b"{", b"]", b"\\ud800", b"1e999999", b"\xff", b"\"data\":null"])) {
        check_webhook_body(&bytes)?;
    }

    #[test]
    fn vietnam_times_of_any_text_parse_or_not_without_panic(raw in prop_oneof![hostile_time(), ".{0,40}"]) {
        let _ = parse_vietnam_time(&raw);
    }
}

proptest! {
    #![proptest_config(hostile::config(64))]

    #[test]
    fn deeply_nested_webhook_bodies_are_refused(depth in 128usize..50_000) {
        let body = format!("{{\"data\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
        prop_assert!(!check_webhook_body(body.as_bytes())?);
    }
}
