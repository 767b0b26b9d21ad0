//! The handoff as the intake API shows it.

use serde_json::{Map, Value, json};

use crate::domain::time::format_vietnam;
use crate::domain::{Handoff, TimelineEntry};

/// The handoff document; `timeline` is omitted in lists.
pub fn handoff(h: &Handoff, timeline: Option<&[TimelineEntry]>) -> Value {
    let mut doc = json!({
        "id": h.id,
        "request_id": h.request_id,
        "kind": h.kind,
        "dossier_code": h.dossier_code,
        "status": h.status,
        "reason": h.reason,
        "tracking_number": h.tracking_number,
        "postage_vnd": h.postage_vnd,
        "cod_amount_vnd": h.cod_amount_vnd,
        "cod_settled": h.cod_settled,
        "created_at": format_vietnam(h.created_at),
        "updated_at": format_vietnam(h.updated_at),
        "due_at": h.due_at.map(format_vietnam),
        "sla_due_at": h.sla_due_at.map(format_vietnam),
    });
    if let Some(entries) = timeline {
        doc["timeline"] = entries.iter().map(timeline_entry).collect();
    }
    doc
}

fn timeline_entry(e: &TimelineEntry) -> Value {
    let mut doc = Map::new();
    doc.insert("sequence".into(), json!(e.sequence));
    doc.insert("status".into(), json!(e.status));
    doc.insert("effect".into(), json!(e.effect));
    doc.insert("occurred_at".into(), json!(format_vietnam(e.occurred_at)));
    doc.insert("source".into(), json!(e.source));
    if let Some(c) = &e.carrier {
        doc.insert(
            "carrier".into(),
            json!({"code": c.code, "text": c.text, "location": c.location}),
        );
    }
    if let Some(reason) = &e.reason {
        doc.insert("reason".into(), json!(reason));
    }
    if let Some(operator) = &e.operator {
        doc.insert("operator".into(), json!(operator));
    }
    Value::Object(doc)
}

/// Element names of list items in XML answers.
pub fn xml_item_name(list: &str) -> &'static str {
    match list {
        "timeline" => "event",
        "handoffs" => "handoff",
        "errors" => "error",
        _ => "item",
    }
}
