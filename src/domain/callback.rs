//! Callbacks to the intake system: the event and its body, fixed at enqueue.

use serde_json::{Value, json};

use super::handoff::{CarrierInfo, HandoffId, Kind, Status};
use super::time::format_vietnam;
use super::xml;

/// What a purged or erased free text reads afterwards: Vietnam Post's
/// refusal texts may echo a citizen's name or address.
pub const PURGED_TEXT: &str = "[purged]";

/// The body format a client asked for (`callback_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyFormat {
    #[default]
    Json,
    Xml,
}

/// The three callback types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackType {
    StatusChanged,
    CodSettled,
    CancelRefused,
}

impl CallbackType {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackType::StatusChanged => "handoff.status_changed",
            CallbackType::CodSettled => "handoff.cod_settled",
            CallbackType::CancelRefused => "handoff.cancel_refused",
        }
    }
}

/// Everything a callback says; the sequence is assigned by the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEvent {
    pub event_type: CallbackType,
    pub handoff_id: HandoffId,
    pub request_id: String,
    pub dossier_code: String,
    pub kind: Kind,
    pub sequence: u64,
    pub status: Status,
    pub previous_status: Option<Status>,
    pub tracking_number: Option<String>,
    pub reason: Option<String>,
    pub carrier: Option<CarrierInfo>,
    pub postage_vnd: Option<i64>,
    pub sla_due_at: Option<jiff::Timestamp>,
    pub occurred_at: jiff::Timestamp,
    /// A `handoff.cod_settled`'s settlement as Vietnam Post reported it.
    pub cod: Option<CodSettlement>,
}

/// What Vietnam Post reported with code 21 (COD paid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodSettlement {
    /// The amount collected: the record's `codAmount`, else the amount asked.
    pub amount_vnd: i64,
    /// When Vietnam Post says it was paid (the code 21 event's time).
    pub settled_at: jiff::Timestamp,
}

impl CallbackEvent {
    /// The callback document (intake-api.md, Callbacks).
    pub fn to_json(&self) -> Value {
        let mut doc = json!({
            "type": self.event_type.as_str(),
            "handoff_id": self.handoff_id,
            "request_id": self.request_id,
            "dossier_code": self.dossier_code,
            "kind": self.kind,
            "sequence": self.sequence,
            "status": self.status,
            "previous_status": self.previous_status,
            "tracking_number": self.tracking_number,
            "reason": self.reason,
            "carrier": self.carrier.as_ref().map(|c| json!({
                "code": c.code, "text": c.text, "location": c.location
            })),
            "postage_vnd": self.postage_vnd,
            "sla_due_at": self.sla_due_at.map(format_vietnam),
            "occurred_at": format_vietnam(self.occurred_at),
        });
        if let Some(cod) = &self.cod {
            doc["cod_amount_vnd"] = json!(cod.amount_vnd);
            doc["cod_settled_at"] = json!(format_vietnam(cod.settled_at));
        }
        doc
    }

    /// The body bytes and content type, sent byte for byte on every attempt.
    pub fn render(&self, format: BodyFormat) -> (Vec<u8>, &'static str) {
        let doc = self.to_json();
        match format {
            BodyFormat::Json => (doc.to_string().into_bytes(), "application/json"),
            BodyFormat::Xml => (
                xml::write_document("event", &doc, |_| "item").into_bytes(),
                "application/xml",
            ),
        }
    }
}

/// A stored callback body with its `reason` replaced by [`PURGED_TEXT`];
/// `None` when the body carries no reason (nothing to rewrite). Everything
/// else stays byte for byte as rendered.
pub fn purge_reason(body: &[u8], content_type: &str) -> Option<Vec<u8>> {
    if content_type.starts_with("application/xml") {
        // The writer escapes `<` in text, so the first `</reason>` after
        // `<reason>` closes it (`reason` is a top-level field, written once).
        let text = std::str::from_utf8(body).ok()?;
        let start = text.find("<reason>")? + "<reason>".len();
        let end = start + text[start..].find("</reason>")?;
        if &text[start..end] == PURGED_TEXT {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        out.push_str(&text[..start]);
        out.push_str(PURGED_TEXT);
        out.push_str(&text[end..]);
        return Some(out.into_bytes());
    }
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let reason = doc.get_mut("reason")?;
    if !reason.is_string() || reason.as_str() == Some(PURGED_TEXT) {
        return None;
    }
    *reason = Value::String(PURGED_TEXT.to_owned());
    Some(doc.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> CallbackEvent {
        CallbackEvent {
            event_type: CallbackType::CancelRefused,
            handoff_id: HandoffId::parse("h_01JD0000000000000000000000").unwrap(),
            request_id: "HG-1".into(),
            dossier_code: "000.00.00.H00-261125-0001".into(),
            kind: Kind::Return,
            sequence: 3,
            status: Status::InTransit,
            previous_status: None,
            tracking_number: Some("BK990032281VN".into()),
            reason: Some("Người nhận Nguyễn Văn <A> & co đã nhận".into()),
            carrier: None,
            postage_vnd: Some(22000),
            sla_due_at: None,
            occurred_at: "2026-11-25T07:00:00Z".parse().unwrap(),
            cod: None,
        }
    }

    #[test]
    fn a_purged_body_keeps_everything_but_its_reason() {
        for format in [BodyFormat::Json, BodyFormat::Xml] {
            let event = refused();
            let (body, content_type) = event.render(format);
            let purged = purge_reason(&body, content_type).expect("a reason to purge");
            let expected = CallbackEvent {
                reason: Some(PURGED_TEXT.into()),
                ..refused()
            }
            .render(format)
            .0;
            assert_eq!(
                String::from_utf8(purged.clone()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
            assert_eq!(
                purge_reason(&purged, content_type),
                None,
                "purging twice changes nothing"
            );
        }
    }

    #[test]
    fn a_body_without_a_reason_is_left_alone() {
        for format in [BodyFormat::Json, BodyFormat::Xml] {
            let (body, content_type) = CallbackEvent {
                reason: None,
                ..refused()
            }
            .render(format);
            assert_eq!(purge_reason(&body, content_type), None);
        }
    }
}
