//! Vietnam Post's JSON and date formats, as the simulator writes them
//! (vnpost-api.md).

use base64::Engine;
use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::orders::{Order, StatusStep};
use super::validate::Party;
use crate::domain::time::vietnam;

/// `dd/MM/yyyy HH:mm:ss`, Vietnam time.
pub(crate) fn carrier_time(ts: Timestamp) -> String {
    ts.to_zoned(vietnam())
        .strftime("%d/%m/%Y %H:%M:%S")
        .to_string()
}

/// The Vietnam-time day of a time.
pub(crate) fn vietnam_day(ts: Timestamp) -> Date {
    ts.to_zoned(vietnam()).date()
}

/// A GetListOrder day, `dd-MM-yyyy`.
pub(crate) fn query_day(s: &str) -> Option<Date> {
    Date::strptime("%d-%m-%Y", s.trim()).ok()
}

/// A refusal body.
pub(crate) fn refusal(message: &str) -> Value {
    json!({"success": false, "errorMessage": message})
}

/// An order record as CreateOrder and GetListOrder answer it.
pub(crate) fn record(order: &Order) -> Value {
    json!({
        "orderHdrID": order.order_hdr_id,
        "originalID": order.original_id,
        "itemCode": order.item_code,
        "saleOrderCode": order.sale_order_code,
        "customerCode": order.customer_code,
        "serviceCode": order.service_code,
        "status": order.status(),
        "statusName": super::sequences::status_name(order.status()),
        "weight": order.weight_grams,
        "totalFee": order.total_fee,
        "codAmount": order.cod_amount,
        "createdDate": carrier_time(order.created_at()),
        "lastUpdateDate": carrier_time(order.updated_at()),
    })
}

/// An order record as getOrder answers it: names, phones and addresses masked.
pub(crate) fn masked_record(order: &Order) -> Value {
    let mut value = record(order);
    if let Value::Object(o) = &mut value {
        for (side, party) in [("sender", &order.sender), ("receiver", &order.receiver)] {
            for (field, text) in masked(party) {
                o.insert(format!("{side}{field}"), Value::String(text));
            }
            o.insert(
                format!("{side}ProvinceCode"),
                party.province_code.clone().into(),
            );
            o.insert(format!("{side}DistrictCode"), "VNPOST".into());
            o.insert(
                format!("{side}CommuneCode"),
                party.commune_code.clone().into(),
            );
        }
    }
    value
}

fn masked(party: &Party) -> [(&'static str, String); 3] {
    [
        ("Name", mask(&party.name, 1, 1)),
        ("Phone", mask(&party.phone, 3, 2)),
        ("Address", mask(&party.address, 2, 0)),
    ]
}

/// Keeps the first `start` and last `end` characters, `+` in between.
pub(crate) fn mask(s: &str, start: usize, end: usize) -> String {
    let n = s.chars().count();
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            let kept = n > start + end && (i < start || i >= n - end);
            if kept || c == ' ' { c } else { '+' }
        })
        .collect()
}

/// A GetStatusHistoryOrder answer, oldest first. `hour_key` is `createdHour`
/// or the variant `createHour`.
pub(crate) fn history(order: Option<&Order>, hour_key: &str) -> Value {
    let entries: Vec<Value> = order
        .map(|o| o.history.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|step| {
            let local = step.at.to_zoned(vietnam());
            json!({
                "statusCode": step.code,
                "statusName": step.name,
                "locateName": step.location,
                "createdDate": local.strftime("%d/%m/%Y").to_string(),
                hour_key: local.strftime("%H:%M:%S").to_string(),
            })
        })
        .collect();
    json!({"success": true, "data": {"statusHistory": entries}})
}

/// One webhook record: a status step of an order.
pub(crate) fn webhook_record(order: &Order, step: &StatusStep) -> Value {
    json!({
        "orderHdrID": order.order_hdr_id,
        "originalID": order.original_id,
        "itemCode": order.item_code,
        "saleOrderCode": order.sale_order_code,
        "status": step.code,
        "statusName": step.name,
        "statusDate": carrier_time(step.at),
        "locateName": step.location,
        "codAmount": order.cod_amount,
        "totalFee": order.total_fee,
    })
}

/// Renames `orderHdrID`/`originalID` to the spellings other deployments use.
pub(crate) fn vary_keys(record: &mut Value) {
    if let Value::Object(o) = record {
        for (from, to) in [("orderHdrID", "orderHdrId"), ("originalID", "originalId")] {
            if let Some(v) = o.remove(from) {
                o.insert(to.to_owned(), v);
            }
        }
    }
}

/// A webhook body. The signature imitates the documented one (over
/// `"MYVNP" + sendDate + itemCode + status` of the first record) with a hash.
pub(crate) fn webhook_body(records: Vec<Value>, sent: Timestamp) -> Value {
    let send_date = carrier_time(sent);
    let first = records.first();
    let field = |k: &str| {
        first
            .and_then(|r| r.get(k))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
    };
    let signed = format!(
        "MYVNP{send_date}{}{}",
        field("itemCode").unwrap_or_default(),
        field("status").unwrap_or_default()
    );
    let signature = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(signed));
    json!({"data": records, "sendDate": send_date, "signature": signature})
}

/// A UPU S10 item code: prefix, 8-digit serial, check digit, `VN`.
pub(crate) fn item_code(prefix: &str, serial: u32) -> String {
    const WEIGHTS: [u32; 8] = [8, 6, 4, 2, 3, 5, 9, 7];
    let digits = format!("{:08}", serial % 100_000_000);
    let sum: u32 = digits
        .bytes()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    let check = match 11 - sum % 11 {
        10 => 0,
        11 => 5,
        c => c,
    };
    format!("{prefix}{digits}{check}VN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_codes_carry_the_s10_check_digit() {
        // The usual worked example: RR 47312482 9 GB.
        assert_eq!(item_code("RR", 47_312_482), "RR473124829VN");
        assert_eq!(item_code("EE", 1), "EE000000014VN");
        // Remainders giving 10 and 11 map to 0 and 5.
        assert_eq!(item_code("EE", 60_000), "EE000600000VN");
        assert_eq!(item_code("EE", 0), "EE000000005VN");
    }

    #[test]
    fn masking_keeps_the_ends() {
        assert_eq!(mask("Nguyễn Văn An", 1, 1), "N+++++ +++ +n");
        assert_eq!(mask("0912345678", 3, 2), "091+++++78");
        assert_eq!(mask("An", 1, 1), "++");
    }

    #[test]
    fn days_and_times_are_vietnam_time() {
        let ts: Timestamp = "2026-11-25T17:30:00Z".parse().unwrap();
        assert_eq!(carrier_time(ts), "26/11/2026 00:30:00");
        assert_eq!(vietnam_day(ts), Date::constant(2026, 11, 26));
        assert_eq!(query_day("26-11-2026"), Some(Date::constant(2026, 11, 26)));
        assert_eq!(query_day("2026-11-26"), None);
    }
}
