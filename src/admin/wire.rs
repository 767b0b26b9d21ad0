//! The admin API's documents, shared with the command line.

use serde_json::{Map, Value, json};

use crate::domain::time::format_vietnam;
use crate::domain::{Handoff, TimelineEntry};
use crate::store::admin::{CallbackRecord, StatsRow};

/// The CSV header of the statistics (intake-api.md, Admin API).
pub const STATS_CSV_HEADER: &str = "client,agency_code,kind,created,delivered,returned,rejected,failed,cancelled,on_time,late,median_order_s,median_pickup_s,median_delivery_s";

/// A handoff as the intake API shows it, with the client that created it.
pub fn handoff(h: &Handoff, timeline: Option<&[TimelineEntry]>) -> Value {
    let Value::Object(fields) = crate::intake::wire::handoff_value(h, timeline) else {
        unreachable!("a handoff document is an object");
    };
    let mut doc = Map::new();
    for (k, v) in fields {
        doc.insert(k.clone(), v);
        if k == "id" {
            doc.insert("client".into(), json!(h.client));
        }
    }
    Value::Object(doc)
}

/// A queued callback; `event` is its body, as a JSON document when the
/// client takes JSON and as the XML text otherwise.
pub fn callback(c: &CallbackRecord) -> Value {
    let event = if c.content_type.starts_with("application/json") {
        serde_json::from_slice(&c.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&c.body).into_owned()))
    } else {
        Value::String(String::from_utf8_lossy(&c.body).into_owned())
    };
    json!({
        "id": c.id,
        "handoff_id": c.handoff_id,
        "client": c.client,
        "sequence": c.sequence,
        "type": c.event_type,
        "state": c.state.as_str(),
        "attempts": c.attempts,
        "last_status": c.last_status,
        "last_error": c.last_error,
        "created_at": format_vietnam(c.created_at),
        "next_attempt_at": c.next_attempt_at.map(format_vietnam),
        "content_type": c.content_type,
        "event": event,
    })
}

/// Whole seconds as an integer, fractions as they are.
fn seconds(s: Option<f64>) -> Value {
    match s {
        Some(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => json!(v as i64),
        Some(v) => json!(v),
        None => Value::Null,
    }
}

/// One statistics row.
pub fn stats_row(r: &StatsRow) -> Value {
    json!({
        "client": r.client,
        "agency_code": r.agency_code,
        "kind": r.kind,
        "created": r.created,
        "delivered": r.delivered,
        "returned": r.returned,
        "rejected": r.rejected,
        "failed": r.failed,
        "cancelled": r.cancelled,
        "on_time": r.on_time,
        "late": r.late,
        "median_order_s": seconds(r.median_order_s),
        "median_pickup_s": seconds(r.median_pickup_s),
        "median_delivery_s": seconds(r.median_delivery_s),
    })
}

/// The statistics as CSV: the contract's header, one line per row, an empty
/// cell for a median with no sample.
pub fn stats_csv(rows: &[StatsRow]) -> String {
    let mut out = String::from(STATS_CSV_HEADER);
    out.push_str("\r\n");
    for r in rows {
        let median = |m: Option<f64>| m.map(|v| v.to_string()).unwrap_or_default();
        let cells = [
            csv_cell(&r.client),
            csv_cell(&r.agency_code),
            r.kind.as_str().to_owned(),
            r.created.to_string(),
            r.delivered.to_string(),
            r.returned.to_string(),
            r.rejected.to_string(),
            r.failed.to_string(),
            r.cancelled.to_string(),
            r.on_time.to_string(),
            r.late.to_string(),
            median(r.median_order_s),
            median(r.median_pickup_s),
            median(r.median_delivery_s),
        ];
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Quotes a cell when RFC 4180 requires it.
fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Kind;

    #[test]
    fn csv_cells_are_quoted_only_when_needed_and_medians_print_plainly() {
        let row = StatsRow {
            client: "motcua".into(),
            agency_code: "a,\"b\"".into(),
            kind: Kind::Pickup,
            created: 2,
            delivered: 1,
            returned: 0,
            rejected: 0,
            failed: 0,
            cancelled: 1,
            on_time: 1,
            late: 0,
            median_order_s: Some(60.0),
            median_pickup_s: Some(1.5),
            median_delivery_s: None,
        };
        assert_eq!(
            stats_csv(std::slice::from_ref(&row)),
            format!(
                "{STATS_CSV_HEADER}\r\nmotcua,\"a,\"\"b\"\"\",pickup,2,1,0,0,0,1,1,0,60,1.5,\r\n"
            )
        );
        let doc = stats_row(&row);
        assert_eq!(doc["median_order_s"], json!(60));
        assert_eq!(doc["median_pickup_s"], json!(1.5));
        assert_eq!(doc["median_delivery_s"], Value::Null);
    }
}
