//! Vietnam Post's webhook bodies, read leniently (key spellings vary
//! between deployments, as in its API's answers) into status records.

use jiff::Timestamp;
use serde_json::Value;

use super::wire::{integer, parse_vietnam_time, text};

/// One status record of a webhook batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRecord {
    pub sale_order_code: Option<String>,
    pub tracking_number: Option<String>,
    pub order_id: Option<String>,
    pub original_id: Option<String>,
    pub code: i64,
    pub text: Option<String>,
    pub location: Option<String>,
    pub occurred_at: Timestamp,
    pub total_fee: Option<i64>,
    /// `codAmount`: what the postal worker collected (with code 21).
    pub cod_amount: Option<i64>,
}

/// A webhook body: its records, each still to be read, and its `sendDate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub records: Vec<Value>,
    pub send_date: Option<Timestamp>,
}

/// Reads a webhook body. The error (a 400's detail) is the only refusal of a
/// whole batch: the body is not JSON or its `data` is not an array.
pub fn read_batch(bytes: &[u8]) -> Result<Batch, &'static str> {
    let Ok(mut doc) = serde_json::from_slice::<Value>(bytes) else {
        return Err("the body is not JSON");
    };
    let send_date = doc
        .get("sendDate")
        .and_then(Value::as_str)
        .and_then(parse_vietnam_time);
    match doc.get_mut("data").map(Value::take) {
        Some(Value::Array(records)) => Ok(Batch { records, send_date }),
        _ => Err("data is not an array"),
    }
}

/// Reads one record; `send_date` is the batch's `sendDate`, the fallback
/// event time. The error names what is missing (never a value).
pub fn parse_record(record: &Value, send_date: Option<Timestamp>) -> Result<StatusRecord, String> {
    let Some(record) = record.as_object() else {
        return Err("record is not an object".into());
    };
    let code =
        integer(record, &["status", "statusCode"]).ok_or("status is missing or not a number")?;
    let occurred_at = text(record, &["statusDate"])
        .and_then(|d| parse_vietnam_time(&d))
        .or(send_date)
        .ok_or("statusDate and sendDate are missing or not dd/MM/yyyy HH:mm:ss")?;
    let sale_order_code = text(record, &["saleOrderCode", "SaleOrderCode"]);
    let tracking_number = text(record, &["itemCode", "ItemCode"]);
    if sale_order_code.is_none() && tracking_number.is_none() {
        return Err("neither saleOrderCode nor itemCode is given".into());
    }
    Ok(StatusRecord {
        sale_order_code,
        tracking_number,
        order_id: text(record, &["orderHdrID", "orderHdrId"]),
        original_id: text(record, &["originalID", "originalId"]),
        code,
        text: text(record, &["statusName"]),
        location: text(record, &["locateName"]),
        occurred_at,
        total_fee: integer(record, &["totalFee"]),
        cod_amount: integer(record, &["codAmount", "CodAmount"]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_key_spellings_and_vietnam_time_are_read() {
        let r = parse_record(
            &json!({"orderHdrId": "1", "originalId": "2", "itemCode": "BK990032281VN",
                    "saleOrderCode": "h_x", "status": "6", "statusName": "Lấy hàng thành công",
                    "statusDate": "25/11/2026 14:03:00", "locateName": "Bưu cục Côn Đảo", "totalFee": 23000}),
            None,
        )
        .unwrap();
        assert_eq!(r.order_id.as_deref(), Some("1"));
        assert_eq!(r.original_id.as_deref(), Some("2"));
        assert_eq!(r.code, 6);
        assert_eq!(r.occurred_at.to_string(), "2026-11-25T07:03:00Z");
    }

    #[test]
    fn send_date_is_the_fallback_and_missing_fields_are_errors() {
        let send = parse_vietnam_time("25/11/2026 14:03:05");
        let r = parse_record(&json!({"itemCode": "X", "status": 4}), send).unwrap();
        assert_eq!(Some(r.occurred_at), send);
        assert!(parse_record(&json!({"itemCode": "X", "status": 4}), None).is_err());
        assert!(parse_record(&json!({"status": 4}), send).is_err());
        assert!(parse_record(&json!({"itemCode": "X", "status": "six"}), send).is_err());
        assert!(parse_record(&json!("nope"), send).is_err());
    }
}
