//! What both backends share: reading rows back into domain types, and the
//! drafts of what a transaction records (timeline entries, callbacks, a
//! postal job's settlement). Only the SQL differs between the backends.

use std::str::FromStr;

use jiff::civil::Date;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::admin::{CallbackRecord, CallbackState};
use super::{NewHandoff, PostalJob, PostalOutcome, StoreError, from_ms, ms};
use crate::domain::callback::{BodyFormat, CallbackEvent, CallbackType};
use crate::domain::time::vietnam;
use crate::domain::{
    CarrierInfo, CreateStep, Effect, Handoff, HandoffId, Kind, Source, Status, TimelineEntry,
};

/// The columns `handoff_from_row` reads.
pub(super) const HANDOFF_COLUMNS: &str = "id, client, request_id, kind, dossier_code, agency_code, status, reason, \
     tracking_number, postage_vnd, cod_amount_vnd, cod_settled, created_at, updated_at, due_at, sla_due_at";

/// Takes a handoff's next callback sequence (`next_sequence` in the result)
/// and returns the handoff as it is in the transaction. The update locks the
/// row on PostgreSQL, as `FOR UPDATE` would. Both backends take `$1`.
pub(super) static TAKE_SEQUENCE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE handoffs SET next_sequence = next_sequence + 1 WHERE id = $1 \
         RETURNING {HANDOFF_COLUMNS}, next_sequence - 1 AS next_sequence"
    )
});

/// Callbacks with `behind_dead`: a dead callback of the same handoff comes
/// before it (a pending one is then held).
pub(super) const CALLBACKS: &str = "(SELECT c.id, c.handoff_id, c.client, c.sequence, c.event_type, c.state, \
     c.attempts, c.last_status, c.last_error, c.created_at, c.next_attempt_at, c.body, c.content_type, \
     EXISTS (SELECT 1 FROM callbacks d WHERE d.handoff_id = c.handoff_id AND d.state = 'dead' \
             AND d.sequence < c.sequence) AS behind_dead FROM callbacks c) AS x";

/// Statuses in which a handoff may still adopt its postal order.
pub(super) const AWAITING_ORDER: &[Status] = &[Status::Received, Status::Failed];

/// A row's cells, read the same way from either backend.
pub(super) trait Cells {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    fn flag(&self, column: &str) -> Result<bool, StoreError>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError>;
}

macro_rules! cells_of {
    ($row:ty) => {
        impl Cells for $row {
            fn text(&self, column: &str) -> Result<String, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn int(&self, column: &str) -> Result<i64, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn flag(&self, column: &str) -> Result<bool, StoreError> {
                Ok(self.try_get(column)?)
            }
            fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
                Ok(self.try_get(column)?)
            }
        }
    };
}
cells_of!(SqliteRow);
cells_of!(PgRow);

pub(super) fn parse<T: FromStr>(what: &str, raw: &str) -> Result<T, StoreError> {
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {raw:?}")))
}

pub(super) fn opt_ms(v: Option<i64>) -> Result<Option<jiff::Timestamp>, StoreError> {
    v.map(from_ms).transpose()
}

pub(super) fn handoff_id(raw: &str) -> Result<HandoffId, StoreError> {
    HandoffId::parse(raw).ok_or_else(|| StoreError::Corrupt(format!("id {raw:?}")))
}

pub(super) fn handoff_from_row(row: &impl Cells) -> Result<Handoff, StoreError> {
    Ok(Handoff {
        id: handoff_id(&row.text("id")?)?,
        client: row.text("client")?,
        request_id: row.text("request_id")?,
        kind: parse::<Kind>("kind", &row.text("kind")?)?,
        dossier_code: row.text("dossier_code")?,
        agency_code: row.text("agency_code")?,
        status: parse::<Status>("status", &row.text("status")?)?,
        reason: row.opt_text("reason")?,
        tracking_number: row.opt_text("tracking_number")?,
        postage_vnd: row.opt_int("postage_vnd")?,
        cod_amount_vnd: u64::try_from(row.int("cod_amount_vnd")?)
            .map_err(|_| StoreError::Corrupt("negative cod_amount_vnd".into()))?,
        cod_settled: row.flag("cod_settled")?,
        created_at: from_ms(row.int("created_at")?)?,
        updated_at: from_ms(row.int("updated_at")?)?,
        due_at: opt_ms(row.opt_int("due_at")?)?,
        sla_due_at: opt_ms(row.opt_int("sla_due_at")?)?,
    })
}

pub(super) fn timeline_from_row(row: &impl Cells) -> Result<TimelineEntry, StoreError> {
    let status = row.opt_text("status")?;
    Ok(TimelineEntry {
        sequence: row.opt_int("sequence")?.map(|s| s as u64),
        status: status.map(|s| parse::<Status>("status", &s)).transpose()?,
        effect: parse::<Effect>("effect", &row.text("effect")?)?,
        occurred_at: from_ms(row.int("occurred_at")?)?,
        source: parse::<Source>("source", &row.text("source")?)?,
        carrier: match row.opt_int("carrier_code")? {
            Some(code) => Some(CarrierInfo {
                code,
                text: row.opt_text("carrier_text")?,
                location: row.opt_text("carrier_location")?,
            }),
            None => None,
        },
        reason: row.opt_text("reason")?,
        operator: row.opt_text("operator")?,
    })
}

/// A row of [`CALLBACKS`].
pub(super) fn callback_from_row(row: &impl Cells) -> Result<CallbackRecord, StoreError> {
    let stored = row.text("state")?;
    let state = match stored.as_str() {
        "pending" if row.flag("behind_dead")? => CallbackState::Held,
        other => CallbackState::parse(other)
            .ok_or_else(|| StoreError::Corrupt(format!("callback state {other:?}")))?,
    };
    Ok(CallbackRecord {
        id: row.text("id")?,
        handoff_id: handoff_id(&row.text("handoff_id")?)?,
        client: row.text("client")?,
        sequence: row.int("sequence")? as u64,
        event_type: row.text("event_type")?,
        state,
        attempts: row.int("attempts")? as u32,
        last_status: row
            .opt_int("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.opt_text("last_error")?,
        created_at: from_ms(row.int("created_at")?)?,
        next_attempt_at: if state == CallbackState::Pending {
            Some(from_ms(row.int("next_attempt_at")?)?)
        } else {
            None
        },
        body: row.bytes("body")?,
        content_type: row.text("content_type")?,
    })
}

/// The handoff a new request creates, as a re-read would give it.
pub(super) fn new_handoff_record(new: &NewHandoff) -> Handoff {
    Handoff {
        id: new.id.clone(),
        client: new.client.clone(),
        request_id: new.request.request_id.clone(),
        kind: new.request.kind,
        dossier_code: new.request.dossier_code.clone(),
        agency_code: new.request.agency.code.clone(),
        status: Status::Received,
        reason: None,
        tracking_number: None,
        postage_vnd: None,
        cod_amount_vnd: new.request.cod_amount_vnd,
        cod_settled: false,
        created_at: truncate_ms(new.now),
        updated_at: truncate_ms(new.now),
        due_at: new.request.due_at,
        sla_due_at: None,
    }
}

/// Times are stored with millisecond precision; answer what a re-read gives.
fn truncate_ms(ts: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts)
}

/// Unix milliseconds at the start of a Vietnam date.
pub(super) fn start_of(date: Date) -> i64 {
    date.to_zoned(vietnam())
        .map_or(i64::MAX, |z| ms(z.timestamp()))
}

/// A change of a handoff's status to record on its timeline and, when
/// relayed, to queue as a callback — all inside the caller's transaction.
pub(super) struct Change<'a> {
    pub status: Status,
    pub source: Source,
    pub occurred_at: jiff::Timestamp,
    pub reason: Option<&'a str>,
    pub relay: Option<(CallbackType, BodyFormat)>,
}

/// A callback to queue; the sequence comes from the handoff.
pub(super) struct CallbackDraft<'a> {
    pub event_type: CallbackType,
    pub status: Status,
    pub previous: Status,
    pub reason: Option<&'a str>,
    pub carrier: Option<&'a CarrierInfo>,
    pub occurred_at: jiff::Timestamp,
}

impl CallbackDraft<'_> {
    /// The callback's event, from the handoff as the transaction left it.
    pub(super) fn event(&self, handoff: &Handoff, sequence: i64) -> CallbackEvent {
        CallbackEvent {
            event_type: self.event_type,
            handoff_id: handoff.id.clone(),
            request_id: handoff.request_id.clone(),
            dossier_code: handoff.dossier_code.clone(),
            kind: handoff.kind,
            sequence: sequence as u64,
            status: self.status,
            previous_status: Some(self.previous),
            tracking_number: handoff.tracking_number.clone(),
            reason: self.reason.map(str::to_owned),
            carrier: self.carrier.cloned(),
            postage_vnd: handoff.postage_vnd,
            sla_due_at: handoff.sla_due_at,
            occurred_at: self.occurred_at,
        }
    }
}

/// A timeline entry to record.
pub(super) struct TimelineDraft<'a> {
    pub source: Source,
    pub status: Option<Status>,
    pub effect: Effect,
    pub sequence: Option<i64>,
    pub occurred_at: jiff::Timestamp,
    pub carrier: Option<&'a CarrierInfo>,
    pub reason: Option<&'a str>,
    pub raw: Option<&'a str>,
}

/// Where a postal job stands once an outcome is committed.
pub(super) struct Settlement {
    /// `pending`, `done` or `dead`.
    pub state: &'static str,
    pub step: CreateStep,
    pub next_attempt_at: i64,
    pub refusal: Option<String>,
    pub last_error: Option<String>,
}

impl Settlement {
    pub(super) fn of(job: &PostalJob, outcome: &PostalOutcome, now: jiff::Timestamp) -> Self {
        let settled = |state, last_error| Settlement {
            state,
            step: job.step,
            next_attempt_at: ms(now),
            refusal: None,
            last_error,
        };
        match outcome {
            PostalOutcome::Reschedule {
                step,
                at,
                refusal,
                last_error,
            } => Settlement {
                state: "pending",
                step: *step,
                next_attempt_at: ms(*at),
                refusal: refusal.clone(),
                last_error: last_error.clone(),
            },
            PostalOutcome::Fail { reason, .. } => settled("dead", Some(reason.clone())),
            PostalOutcome::Reject { reason, .. } => settled("done", Some(reason.clone())),
            PostalOutcome::Adopt { .. }
            | PostalOutcome::Complete { .. }
            | PostalOutcome::Cancelled { .. }
            | PostalOutcome::CancelPending { .. }
            | PostalOutcome::CancelRefused { .. } => settled("done", None),
        }
    }
}
