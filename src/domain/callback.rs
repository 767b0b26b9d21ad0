//! Callbacks to the intake system: the event and its body, fixed at enqueue.

use serde_json::{Value, json};

use super::handoff::{CarrierInfo, HandoffId, Kind, Status};
use super::time::format_vietnam;
use super::xml;

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
