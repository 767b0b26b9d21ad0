//! The handoff as the intake API shows it.

use serde::Serialize;
use serde_json::Value;

use crate::domain::time::format_vietnam;
use crate::domain::{CarrierInfo, Effect, Handoff, HandoffId, Kind, Source, Status, TimelineEntry};

/// The handoff document; `timeline` is omitted in lists. Serialized
/// straight to the JSON answer (no `Value` built and walked per request),
/// and through a `Value` for XML.
#[derive(Serialize)]
pub struct HandoffDoc<'a> {
    id: &'a HandoffId,
    request_id: &'a str,
    kind: Kind,
    dossier_code: &'a str,
    status: Status,
    reason: Option<&'a str>,
    tracking_number: Option<&'a str>,
    postage_vnd: Option<i64>,
    cod_amount_vnd: u64,
    cod_settled: bool,
    created_at: String,
    updated_at: String,
    due_at: Option<String>,
    sla_due_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeline: Option<Vec<TimelineDoc<'a>>>,
}

/// One entry of a handoff's timeline; absent facts are left out.
#[derive(Serialize)]
struct TimelineDoc<'a> {
    sequence: Option<u64>,
    status: Option<Status>,
    effect: Effect,
    occurred_at: String,
    source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<CarrierDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    operator: Option<&'a str>,
}

#[derive(Serialize)]
struct CarrierDoc<'a> {
    code: i64,
    text: Option<&'a str>,
    location: Option<&'a str>,
}

impl<'a> From<&'a CarrierInfo> for CarrierDoc<'a> {
    fn from(c: &'a CarrierInfo) -> Self {
        Self {
            code: c.code,
            text: c.text.as_deref(),
            location: c.location.as_deref(),
        }
    }
}

pub fn handoff<'a>(h: &'a Handoff, timeline: Option<&'a [TimelineEntry]>) -> HandoffDoc<'a> {
    HandoffDoc {
        id: &h.id,
        request_id: &h.request_id,
        kind: h.kind,
        dossier_code: &h.dossier_code,
        status: h.status,
        reason: h.reason.as_deref(),
        tracking_number: h.tracking_number.as_deref(),
        postage_vnd: h.postage_vnd,
        cod_amount_vnd: h.cod_amount_vnd,
        cod_settled: h.cod_settled,
        created_at: format_vietnam(h.created_at),
        updated_at: format_vietnam(h.updated_at),
        due_at: h.due_at.map(format_vietnam),
        sla_due_at: h.sla_due_at.map(format_vietnam),
        timeline: timeline.map(|entries| entries.iter().map(timeline_entry).collect()),
    }
}

/// The handoff document as a `Value` (lists and the admin API compose it).
pub fn handoff_value(h: &Handoff, timeline: Option<&[TimelineEntry]>) -> Value {
    serde_json::to_value(handoff(h, timeline)).expect("a handoff document is plain data")
}

fn timeline_entry(e: &TimelineEntry) -> TimelineDoc<'_> {
    TimelineDoc {
        sequence: e.sequence,
        status: e.status,
        effect: e.effect,
        occurred_at: format_vietnam(e.occurred_at),
        source: e.source,
        carrier: e.carrier.as_ref().map(CarrierDoc::from),
        reason: e.reason.as_deref(),
        operator: e.operator.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::Effect;

    /// The document as it was built before it was typed, field by field.
    fn as_before(h: &Handoff, timeline: &[TimelineEntry]) -> Value {
        let entries: Vec<Value> = timeline
            .iter()
            .map(|e| {
                let mut doc = serde_json::Map::new();
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
            })
            .collect();
        json!({
            "id": h.id, "request_id": h.request_id, "kind": h.kind,
            "dossier_code": h.dossier_code, "status": h.status, "reason": h.reason,
            "tracking_number": h.tracking_number, "postage_vnd": h.postage_vnd,
            "cod_amount_vnd": h.cod_amount_vnd, "cod_settled": h.cod_settled,
            "created_at": format_vietnam(h.created_at), "updated_at": format_vietnam(h.updated_at),
            "due_at": h.due_at.map(format_vietnam), "sla_due_at": h.sla_due_at.map(format_vietnam),
            "timeline": entries,
        })
    }

    /// The typed document prints the same bytes as the `Value` it replaced,
    /// absent and present facts alike.
    #[test]
    fn the_typed_document_prints_what_the_value_printed() {
        let at = jiff::Timestamp::from_second(1_790_000_000).unwrap();
        let h = Handoff {
            id: HandoffId::new(1_790_000_000_000, 7),
            client: "motcua".into(),
            request_id: "R-1".into(),
            kind: Kind::Return,
            dossier_code: "000.00.00.H01-261204-0001".into(),
            agency_code: "000.00.00.H01".into(),
            status: Status::Delivered,
            reason: Some("người nhận vắng nhà".into()),
            tracking_number: Some("EB123456789VN".into()),
            postage_vnd: Some(22_000),
            cod_amount_vnd: 50_000,
            cod_settled: false,
            created_at: at,
            updated_at: at + jiff::SignedDuration::from_hours(30),
            due_at: None,
            sla_due_at: Some(at + jiff::SignedDuration::from_hours(72)),
        };
        let timeline = [
            TimelineEntry {
                sequence: Some(1),
                status: Some(Status::OrderCreated),
                effect: Effect::Applied,
                occurred_at: at,
                source: Source::Gateway,
                carrier: None,
                reason: None,
                operator: None,
            },
            TimelineEntry {
                sequence: None,
                status: None,
                effect: Effect::Annotation,
                occurred_at: at,
                source: Source::Webhook,
                carrier: Some(CarrierInfo {
                    code: 5,
                    text: Some("Phát thành công".into()),
                    location: None,
                }),
                reason: Some("ghi chú".into()),
                operator: Some("Nguyễn Văn A".into()),
            },
        ];
        assert_eq!(
            serde_json::to_string(&handoff(&h, Some(&timeline))).unwrap(),
            as_before(&h, &timeline).to_string()
        );
        let mut listed = as_before(&h, &[]);
        listed.as_object_mut().unwrap().shift_remove("timeline");
        assert_eq!(
            serde_json::to_string(&handoff(&h, None)).unwrap(),
            listed.to_string()
        );
    }
}
