//! What both backends share: reading rows back into domain types, and the
//! drafts of what a transaction records (timeline entries, callbacks, a
//! postal job's settlement). Only the SQL differs between the backends.

use std::str::FromStr;

use jiff::civil::Date;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::admin::{CallbackRecord, CallbackState};
use super::{IncomingCarrierEvent, NewHandoff, PostalJob, PostalOutcome, StoreError, from_ms, ms};
use crate::domain::callback::{BodyFormat, CallbackEvent, CallbackType};
use crate::domain::state_machine::Notice;
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

/// The terminal statuses as an SQL list (`'delivered', 'returned', …`),
/// from [`Status::is_terminal`]: the rule is written once, in Rust.
pub(super) static TERMINAL_STATUSES: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Status::ALL
        .iter()
        .filter(|s| s.is_terminal())
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
});

/// Callbacks with `behind_dead`: a dead callback of the same handoff comes
/// before it (a pending one is then held).
pub(super) const CALLBACKS: &str = "(SELECT c.id, c.handoff_id, c.client, c.sequence, c.event_type, c.state, \
     c.attempts, c.last_status, c.last_error, c.created_at, c.next_attempt_at, c.body, c.content_type, \
     EXISTS (SELECT 1 FROM callbacks d WHERE d.handoff_id = c.handoff_id AND d.state = 'dead' \
             AND d.sequence < c.sequence) AS behind_dead FROM callbacks c) AS x";

pub(super) use crate::domain::ownership::AWAITING_ORDER;

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

/// A row read on the SQLite writer's own connection (rusqlite). A cell of
/// the wrong type is stored data the gateway cannot read, not an outage.
impl Cells for rusqlite::Row<'_> {
    fn text(&self, column: &str) -> Result<String, StoreError> {
        rusqlite_cell(self, column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        rusqlite_cell(self, column)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        rusqlite_cell(self, column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        rusqlite_cell(self, column)
    }
    fn flag(&self, column: &str) -> Result<bool, StoreError> {
        rusqlite_cell(self, column)
    }
    fn bytes(&self, column: &str) -> Result<Vec<u8>, StoreError> {
        rusqlite_cell(self, column)
    }
}

fn rusqlite_cell<T: rusqlite::types::FromSql>(
    row: &rusqlite::Row<'_>,
    column: &str,
) -> Result<T, StoreError> {
    row.get(column).map_err(|e| match e {
        rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..) => {
            StoreError::Corrupt(format!("{column}: {e}"))
        }
        other => other.into(),
    })
}

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

impl<'a> Change<'a> {
    /// A handoff adopts its order (from a webhook, a lookup or the create's
    /// answer): it is `order_created` now, relayed.
    pub(super) fn adoption(source: Source, now: jiff::Timestamp, format: BodyFormat) -> Self {
        Change {
            status: Status::OrderCreated,
            source,
            occurred_at: now,
            reason: None,
            relay: Some((CallbackType::StatusChanged, format)),
        }
    }

    /// The callback the change relays from `previous`, if any, and its body's
    /// format.
    pub(super) fn callback(&self, previous: Status) -> Option<(CallbackDraft<'a>, BodyFormat)> {
        self.relay.map(|(event_type, format)| {
            let draft = CallbackDraft {
                event_type,
                status: self.status,
                previous,
                reason: self.reason,
                carrier: None,
                occurred_at: self.occurred_at,
                cod: None,
            };
            (draft, format)
        })
    }

    /// The timeline entry of the change, naming its callback's `sequence`.
    pub(super) fn entry(&self, sequence: Option<i64>) -> TimelineDraft<'a> {
        TimelineDraft {
            source: self.source,
            status: Some(self.status),
            effect: Effect::Applied,
            sequence,
            occurred_at: self.occurred_at,
            carrier: None,
            reason: self.reason,
            raw: None,
        }
    }
}

/// A callback to queue; the sequence comes from the handoff.
pub(super) struct CallbackDraft<'a> {
    pub event_type: CallbackType,
    pub status: Status,
    pub previous: Status,
    pub reason: Option<&'a str>,
    pub carrier: Option<&'a CarrierInfo>,
    pub occurred_at: jiff::Timestamp,
    pub cod: Option<crate::domain::callback::CodSettlement>,
}

impl<'a> CallbackDraft<'a> {
    /// The callback a carrier event's verdict asks for (a `Notice`); `cod` is
    /// what a COD settlement reports.
    pub(super) fn relayed(
        notice: &Notice,
        incoming: &'a IncomingCarrierEvent,
        cod: crate::domain::callback::CodSettlement,
    ) -> Self {
        let (event_type, status, previous) = match *notice {
            Notice::StatusChanged { status, previous } => {
                (CallbackType::StatusChanged, status, previous)
            }
            Notice::CodSettled => (
                CallbackType::CodSettled,
                Status::Delivered,
                Status::Delivered,
            ),
        };
        Self {
            event_type,
            status,
            previous,
            reason: None,
            carrier: Some(&incoming.carrier),
            occurred_at: incoming.event.occurred_at,
            cod: (event_type == CallbackType::CodSettled).then_some(cod),
        }
    }

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
            cod: self.cod,
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

/// A write that settling an order asks of the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OrderWrite<'a> {
    Adopt(&'a crate::domain::PostalOrder),
    FillTracking(&'a str),
    /// Queue the cancellation of the order with this originalID.
    Cancel(&'a str),
    Nothing,
}

/// Decides, order by order (earliest first), what [`super::Store::settle_orders`]
/// writes: each decision sees the ones before it (an order adopted by the
/// first makes the next a duplicate).
pub(super) fn settle_plan<'a>(
    status: Status,
    own_original_id: Option<&str>,
    own_tracking: Option<&str>,
    orders: &'a [crate::domain::PostalOrder],
) -> Vec<(crate::domain::ownership::OrderFate, OrderWrite<'a>)> {
    use crate::domain::ownership::{OrderFate, OrderIds, fate};
    let mut status = status;
    let mut own_original = own_original_id.map(str::to_owned);
    let mut own_tracking = own_tracking.map(str::to_owned);
    let mut plan = Vec::with_capacity(orders.len());
    for order in orders {
        let own = OrderIds {
            original_id: own_original.as_deref(),
            tracking_number: own_tracking.as_deref(),
        };
        let reported = OrderIds {
            original_id: Some(&order.original_id),
            tracking_number: order.tracking_number.as_deref(),
        };
        let f = fate(status, own, reported);
        let write = match f {
            OrderFate::Adopt => {
                status = Status::OrderCreated;
                own_original = Some(order.original_id.clone());
                own_tracking.clone_from(&order.tracking_number);
                OrderWrite::Adopt(order)
            }
            OrderFate::Own => match (&own_tracking, &order.tracking_number) {
                (None, Some(tracking)) => {
                    own_tracking = Some(tracking.clone());
                    OrderWrite::FillTracking(tracking)
                }
                _ => OrderWrite::Nothing,
            },
            OrderFate::Duplicate | OrderFate::Unowned => OrderWrite::Cancel(&order.original_id),
        };
        plan.push((f, write));
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PostalOrder;
    use crate::domain::ownership::OrderFate;

    fn order(n: u32, tracking: bool) -> PostalOrder {
        PostalOrder {
            order_id: format!("H{n}"),
            original_id: format!("O{n}"),
            tracking_number: tracking.then(|| format!("EB{n}VN")),
            postage_vnd: None,
        }
    }

    #[test]
    fn the_terminal_statuses_of_the_sql_are_the_domains() {
        assert_eq!(
            *TERMINAL_STATUSES,
            "'delivered', 'returned', 'partially_delivered', 'pickup_failed', 'cancelled', 'rejected', 'failed'"
        );
    }

    #[test]
    fn the_first_order_is_adopted_and_the_rest_are_duplicates() {
        let orders = [order(1, true), order(2, true), order(3, false)];
        let plan = settle_plan(Status::Received, None, None, &orders);
        assert_eq!(
            plan,
            vec![
                (OrderFate::Adopt, OrderWrite::Adopt(&orders[0])),
                (OrderFate::Duplicate, OrderWrite::Cancel("O2")),
                (OrderFate::Duplicate, OrderWrite::Cancel("O3")),
            ]
        );
    }

    #[test]
    fn an_order_found_again_fills_its_item_code_and_others_are_cancelled() {
        let orders = [order(2, true), order(1, true)];
        let plan = settle_plan(Status::OrderCreated, Some("O1"), None, &orders);
        assert_eq!(
            plan,
            vec![
                (OrderFate::Duplicate, OrderWrite::Cancel("O2")),
                (OrderFate::Own, OrderWrite::FillTracking("EB1VN")),
            ]
        );
        let plan = settle_plan(Status::Cancelled, None, None, &orders[..1]);
        assert_eq!(plan, vec![(OrderFate::Unowned, OrderWrite::Cancel("O2"))]);
    }
}
