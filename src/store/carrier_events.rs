//! A batch of carrier events (a webhook's, a poll's), decided once for both
//! backends. The backend loads a snapshot of every handoff the events name
//! ([`EventHandoff`], locked on PostgreSQL), [`plan`] applies the events to
//! it in order, in memory, with the pure rules (order ownership, the state
//! machine, the legal calendar, the COD settlement), and the backend writes
//! the resulting [`EventPlan`]: on PostgreSQL one statement per table for
//! the whole batch instead of six round trips per event.

use std::sync::LazyLock;

use super::shared::{
    CallbackDraft, Cells, Change, HANDOFF_COLUMNS, TimelineDraft, handoff_from_row, opt_ms, parse,
};
use super::{
    EventContext, EventOutcome, HandoffKey, IncomingCarrierEvent, StoreError, from_ms, ms,
};
use crate::domain::callback::{BodyFormat, CallbackType, CodSettlement};
use crate::domain::state_machine::{self, CarrierCode, Notice, SeenEvent};
use crate::domain::{Handoff, HandoffId, Kind, PostalOrder, Source, Status};

/// The columns [`EventHandoff::from_row`] reads.
pub(super) static SNAPSHOT_COLUMNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{HANDOFF_COLUMNS}, next_sequence, carrier_order_id, carrier_original_id, watermark_at, \
         watermark_rank, picked_up_at, cod_held, details, order_created_at, sla_reached_at, \
         cod_settled_at, cod_amount_reported, delivered_at, terminal_at, last_carrier_event_at"
    )
});

/// The carrier-coded timeline entries of the handoffs `$1` names, oldest
/// first, as [`SeenRow::from_row`] reads them.
pub(super) const SEEN_COLUMNS: &str = "id, handoff_id, source, carrier_code, occurred_at, sequence";

/// Where a timeline entry is: stored, or planned by this batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EntryRef {
    Stored(i64),
    /// Its index in [`EventPlan::timeline`].
    Planned(usize),
}

/// A carrier event a handoff has seen (a timeline entry with a carrier code).
#[derive(Debug, Clone)]
pub(super) struct SeenRow {
    pub at: EntryRef,
    pub event: SeenEvent,
    pub sequence: Option<i64>,
}

impl SeenRow {
    /// A row of [`SEEN_COLUMNS`], with the handoff it belongs to.
    pub(super) fn from_row(row: &impl Cells) -> Result<(String, Self), StoreError> {
        Ok((
            row.text("handoff_id")?,
            SeenRow {
                at: EntryRef::Stored(row.int("id")?),
                event: SeenEvent {
                    source: parse("source", &row.text("source")?)?,
                    code: row.int("carrier_code")?,
                    occurred_at: from_ms(row.int("occurred_at")?)?,
                },
                sequence: row.opt_int("sequence")?,
            },
        ))
    }
}

/// A handoff as recording carrier events reads and writes it.
#[derive(Debug, Clone)]
pub(super) struct EventHandoff {
    pub handoff: Handoff,
    pub next_sequence: i64,
    pub carrier_order_id: Option<String>,
    pub carrier_original_id: Option<String>,
    pub watermark_at: Option<i64>,
    pub watermark_rank: Option<i64>,
    pub picked_up_at: Option<i64>,
    pub cod_held: bool,
    /// The request as accepted (personal), for the legal delivery time.
    pub details: Option<String>,
    pub order_created_at: Option<i64>,
    pub sla_reached_at: Option<i64>,
    pub cod_settled_at: Option<i64>,
    pub cod_amount_reported: Option<i64>,
    pub delivered_at: Option<i64>,
    pub terminal_at: Option<i64>,
    pub last_carrier_event_at: Option<i64>,
    /// Oldest first.
    pub seen: Vec<SeenRow>,
    /// The row as loaded (without its details), to write only what changed.
    loaded: Option<Box<EventHandoff>>,
}

impl EventHandoff {
    /// A row of [`SNAPSHOT_COLUMNS`]; its seen events come apart.
    pub(super) fn from_row(row: &impl Cells) -> Result<Self, StoreError> {
        let mut h = EventHandoff {
            handoff: handoff_from_row(row)?,
            next_sequence: row.int("next_sequence")?,
            carrier_order_id: row.opt_text("carrier_order_id")?,
            carrier_original_id: row.opt_text("carrier_original_id")?,
            watermark_at: row.opt_int("watermark_at")?,
            watermark_rank: row.opt_int("watermark_rank")?,
            picked_up_at: row.opt_int("picked_up_at")?,
            cod_held: row.flag("cod_held")?,
            details: row.opt_text("details")?,
            order_created_at: row.opt_int("order_created_at")?,
            sla_reached_at: row.opt_int("sla_reached_at")?,
            cod_settled_at: row.opt_int("cod_settled_at")?,
            cod_amount_reported: row.opt_int("cod_amount_reported")?,
            delivered_at: row.opt_int("delivered_at")?,
            terminal_at: row.opt_int("terminal_at")?,
            last_carrier_event_at: row.opt_int("last_carrier_event_at")?,
            seen: Vec::new(),
            loaded: None,
        };
        h.loaded = Some(Box::new(EventHandoff {
            details: None,
            ..h.clone()
        }));
        Ok(h)
    }

    /// The columns whose value is no longer the one loaded (all of them for
    /// a row not loaded), with their values.
    pub(super) fn changed(&self) -> Vec<(&'static str, Value<'_>)> {
        let now = self.written();
        match &self.loaded {
            Some(loaded) => {
                let before = loaded.written();
                now.into_iter()
                    .zip(before)
                    .filter(|(now, before)| now != before)
                    .map(|(now, _)| now)
                    .collect()
            }
            None => now.into(),
        }
    }

    /// Attaches seen rows (any order, any handoff) to the snapshots they
    /// belong to, oldest first.
    pub(super) fn attach_seen(
        handoffs: &mut [EventHandoff],
        seen: impl IntoIterator<Item = (String, SeenRow)>,
    ) {
        for (handoff_id, row) in seen {
            if let Some(h) = handoffs
                .iter_mut()
                .find(|h| h.handoff.id.as_str() == handoff_id)
            {
                h.seen.push(row);
            }
        }
        for h in handoffs {
            h.seen.sort_by_key(|s| match s.at {
                EntryRef::Stored(id) => id,
                EntryRef::Planned(_) => i64::MAX,
            });
        }
    }

    fn matches(&self, key: &HandoffKey<'_>) -> bool {
        match key {
            HandoffKey::Id(id) => self.handoff.id == *id,
            HandoffKey::TrackingNumber(t) => self.handoff.tracking_number.as_deref() == Some(*t),
            HandoffKey::OriginalId(o) => self.carrier_original_id.as_deref() == Some(*o),
        }
    }

    /// The columns of `handoffs` a batch of carrier events may change, with
    /// their values: a plan writes them with their final values.
    pub(super) fn written(&self) -> [(&'static str, Value<'_>); 21] {
        use Value::{Flag, Int, Text};
        let h = &self.handoff;
        [
            ("status", Text(Some(h.status.as_str()))),
            ("reason", Text(h.reason.as_deref())),
            ("tracking_number", Text(h.tracking_number.as_deref())),
            ("carrier_order_id", Text(self.carrier_order_id.as_deref())),
            (
                "carrier_original_id",
                Text(self.carrier_original_id.as_deref()),
            ),
            ("postage_vnd", Int(h.postage_vnd)),
            ("order_created_at", Int(self.order_created_at)),
            ("updated_at", Int(Some(ms(h.updated_at)))),
            ("terminal_at", Int(self.terminal_at)),
            ("watermark_at", Int(self.watermark_at)),
            ("watermark_rank", Int(self.watermark_rank)),
            ("cod_settled", Flag(h.cod_settled)),
            ("cod_held", Flag(self.cod_held)),
            ("last_carrier_event_at", Int(self.last_carrier_event_at)),
            ("picked_up_at", Int(self.picked_up_at)),
            ("delivered_at", Int(self.delivered_at)),
            ("sla_due_at", Int(h.sla_due_at.map(ms))),
            ("sla_reached_at", Int(self.sla_reached_at)),
            ("next_sequence", Int(Some(self.next_sequence))),
            ("cod_settled_at", Int(self.cod_settled_at)),
            ("cod_amount_reported", Int(self.cod_amount_reported)),
        ]
    }
}

/// One cell a plan writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Flag(bool),
}

/// A callback to queue, its body fixed now.
#[derive(Debug, Clone)]
pub(super) struct NewCallback {
    pub handoff_id: HandoffId,
    pub client: String,
    pub sequence: i64,
    pub event_type: CallbackType,
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

/// A timeline entry to insert, with the handoff's item code as it is then.
pub(super) struct NewEntry<'a> {
    pub handoff_id: HandoffId,
    pub tracking_number: Option<String>,
    pub draft: TimelineDraft<'a>,
}

/// What a batch of carrier events writes, in the order to write it.
#[derive(Default)]
pub(super) struct EventPlan<'a> {
    /// The handoffs the batch changed, as they end.
    pub handoffs: Vec<EventHandoff>,
    /// Handoffs whose create job ends: an event revealed their order.
    pub stop_create_jobs: Vec<HandoffId>,
    /// Orders to cancel (the handoff, the order's originalID), each once.
    pub cancels: Vec<(HandoffId, &'a str)>,
    pub timeline: Vec<NewEntry<'a>>,
    /// Stored timeline entries (ids) that get the sequence of the callback
    /// relaying them: a COD report held until delivery.
    pub links: Vec<(i64, i64)>,
    /// In sequence order within each handoff.
    pub callbacks: Vec<NewCallback>,
    outcomes: Vec<(EventOutcome, Option<usize>)>,
}

impl<'a> EventPlan<'a> {
    /// Each event's outcome, once the backend has said which of
    /// [`Self::cancels`] it queued now (`queued`, in their order).
    pub(super) fn outcomes(self, queued: &[bool]) -> Vec<EventOutcome> {
        self.outcomes
            .into_iter()
            .map(|(mut outcome, cancel)| {
                let now = cancel.is_some_and(|i| queued.get(i).copied().unwrap_or(false));
                match &mut outcome {
                    EventOutcome::DuplicateOrder { cancel_queued, .. } => *cancel_queued = now,
                    EventOutcome::Recorded { handoff_id, .. } if now => {
                        tracing::warn!(handoff_id = %handoff_id, "an order was reported for a handoff that has none; cancelling it");
                    }
                    _ => {}
                }
                outcome
            })
            .collect()
    }

    /// Queues the cancel of `original_id` unless this batch already did;
    /// its index in [`Self::cancels`].
    fn cancel(&mut self, id: &HandoffId, original_id: &'a str) -> Option<usize> {
        if self
            .cancels
            .iter()
            .any(|(h, o)| h == id && *o == original_id)
        {
            return None;
        }
        self.cancels.push((id.clone(), original_id));
        Some(self.cancels.len() - 1)
    }

    /// Queues a callback with the handoff's next sequence, its body from the
    /// handoff as it is now; returns the sequence.
    fn callback(
        &mut self,
        h: &mut EventHandoff,
        draft: &CallbackDraft<'_>,
        format: BodyFormat,
    ) -> i64 {
        let sequence = h.next_sequence;
        h.next_sequence += 1;
        let (body, content_type) = draft.event(&h.handoff, sequence).render(format);
        self.callbacks.push(NewCallback {
            handoff_id: h.handoff.id.clone(),
            client: h.handoff.client.clone(),
            sequence,
            event_type: draft.event_type,
            body,
            content_type,
        });
        sequence
    }

    /// Records `draft` on `h`'s timeline (and, a carrier event, among the
    /// events it has seen).
    fn entry(&mut self, h: &mut EventHandoff, draft: TimelineDraft<'a>) {
        if let Some(carrier) = draft.carrier {
            h.seen.push(SeenRow {
                at: EntryRef::Planned(self.timeline.len()),
                event: SeenEvent {
                    source: draft.source,
                    code: carrier.code,
                    occurred_at: at_ms(draft.occurred_at),
                },
                sequence: draft.sequence,
            });
        }
        self.timeline.push(NewEntry {
            handoff_id: h.handoff.id.clone(),
            tracking_number: h.handoff.tracking_number.clone(),
            draft,
        });
    }

    /// Adopts an order revealed for a handoff that has none (domain.md rule
    /// 2): records it, relays `order_created`, and ends the create job.
    fn adopt(
        &mut self,
        h: &mut EventHandoff,
        order: &PostalOrder,
        format: BodyFormat,
        source: Source,
        now: jiff::Timestamp,
    ) {
        let previous = h.handoff.status;
        h.handoff.status = Status::OrderCreated;
        h.handoff.reason = None;
        h.handoff.tracking_number.clone_from(&order.tracking_number);
        h.carrier_order_id = Some(order.order_id.clone());
        h.carrier_original_id = Some(order.original_id.clone());
        h.handoff.postage_vnd = order.postage_vnd.or(h.handoff.postage_vnd);
        h.order_created_at = Some(ms(now));
        h.handoff.updated_at = at_ms(now);
        h.terminal_at = None;
        self.stop_create_jobs.push(h.handoff.id.clone());
        let change = Change::adoption(source, now, format);
        let sequence = change
            .callback(previous)
            .map(|(draft, format)| self.callback(h, &draft, format));
        self.entry(h, change.entry(sequence));
    }
}

/// Times are stored with millisecond precision; keep what a re-read gives.
fn at_ms(ts: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ms(ts)).unwrap_or(ts)
}

/// Applies `events`, in order, to the handoffs they name (`handoffs`: every
/// handoff any event's key may match, with its seen events) and returns what
/// to write. Pure: each event sees what the ones before it did.
pub(super) fn plan<'a>(
    mut handoffs: Vec<EventHandoff>,
    events: &'a [IncomingCarrierEvent],
    context: &EventContext,
    now: jiff::Timestamp,
) -> Result<EventPlan<'a>, StoreError> {
    // In id order, so a key two handoffs share (an item code) names the
    // lower id, on either backend.
    handoffs.sort_by(|a, b| a.handoff.id.as_str().cmp(b.handoff.id.as_str()));
    let mut changed = vec![false; handoffs.len()];
    let mut plan = EventPlan::default();
    for incoming in events {
        let found = incoming
            .handoff_key()
            .and_then(|key| handoffs.iter().position(|h| h.matches(&key)));
        let Some(i) = found else {
            plan.outcomes.push((EventOutcome::UnknownOrder, None));
            continue;
        };
        let h = &mut handoffs[i];
        let id = h.handoff.id.clone();
        let format = context
            .formats
            .get(&h.handoff.client)
            .copied()
            .unwrap_or_default();
        let mut adopted_now = false;
        let mut cancel = None;
        match event_order(
            h.handoff.status,
            h.carrier_original_id.as_deref(),
            h.handoff.tracking_number.as_deref(),
            incoming,
        ) {
            EventOrder::Adopt(order) => {
                plan.adopt(h, order, format, incoming.event.source, now);
                adopted_now = true;
            }
            EventOrder::Own { fill_tracking } => {
                if let Some(tracking) = fill_tracking {
                    h.handoff.tracking_number = Some(tracking.to_owned());
                    h.handoff.updated_at = at_ms(now);
                }
            }
            EventOrder::Duplicate { cancel } => {
                let cancel = cancel.and_then(|original_id| plan.cancel(&id, original_id));
                let outcome = EventOutcome::DuplicateOrder {
                    handoff_id: id,
                    cancel_queued: false,
                };
                plan.outcomes.push((outcome, cancel));
                continue;
            }
            EventOrder::Unowned {
                cancel: original_id,
            } => {
                cancel = original_id.and_then(|original_id| plan.cancel(&id, original_id));
            }
        }
        changed[i] = true;
        let decided = decide_event(h, adopted_now, incoming, context, now)?;
        record_event(&mut plan, h, &decided, incoming, format, now);
        let outcome = EventOutcome::Recorded {
            handoff_id: id,
            effect: decided.verdict.effect,
            legs: decided.legs,
        };
        plan.outcomes.push((outcome, cancel));
    }
    plan.handoffs = handoffs
        .into_iter()
        .zip(changed)
        .filter_map(|(h, changed)| changed.then_some(h))
        .collect();
    Ok(plan)
}

/// Writes `decided` into the snapshot and the plan: the handoff's new
/// state, the callbacks it relays and its timeline entry.
fn record_event<'a>(
    plan: &mut EventPlan<'a>,
    h: &mut EventHandoff,
    decided: &EventDecision,
    incoming: &'a IncomingCarrierEvent,
    format: BodyFormat,
    now: jiff::Timestamp,
) {
    let next = &decided.verdict.next;
    let occurred = ms(incoming.event.occurred_at);
    h.handoff.status = next.status;
    h.watermark_at = next.watermark.map(|(at, _)| ms(at));
    h.watermark_rank = next.watermark.map(|(_, rank)| i64::from(rank));
    h.handoff.cod_settled = next.cod_settled;
    h.cod_held = next.cod_held;
    h.last_carrier_event_at = Some(ms(now));
    if next.status != decided.previous {
        h.handoff.updated_at = at_ms(now);
    }
    if next.picked_up && h.picked_up_at.is_none() {
        h.picked_up_at = Some(occurred);
    }
    if next.status == Status::Delivered && h.delivered_at.is_none() {
        h.delivered_at = Some(occurred);
    }
    if next.status.is_terminal() && h.terminal_at.is_none() {
        h.terminal_at = Some(ms(now));
    }
    if let Some(due) = decided.sla_due_at {
        h.handoff.sla_due_at = Some(at_ms(due));
    }
    h.sla_reached_at = h.sla_reached_at.or(decided.reached_at.map(ms));
    if decided.cod_paid_now {
        h.cod_settled_at = h.cod_settled_at.or(Some(occurred));
        h.cod_amount_reported = h.cod_amount_reported.or(incoming.cod_amount);
    }
    let mut first_sequence = None;
    for notice in &decided.verdict.notices {
        let draft = CallbackDraft::relayed(notice, incoming, decided.cod);
        let sequence = plan.callback(h, &draft, format);
        match notice {
            Notice::CodSettled if decided.verdict.mapped.is_some() => {
                // The COD report held earlier is the entry this callback relays.
                let held = h.seen.iter_mut().find(|s| {
                    matches!(CarrierCode::from_code(s.event.code), CarrierCode::CodPaid)
                        && s.sequence.is_none()
                });
                if let Some(held) = held {
                    held.sequence = Some(sequence);
                    match held.at {
                        EntryRef::Stored(entry) => plan.links.push((entry, sequence)),
                        EntryRef::Planned(i) => plan.timeline[i].draft.sequence = Some(sequence),
                    }
                }
            }
            _ => first_sequence = first_sequence.or(Some(sequence)),
        }
    }
    let entry = TimelineDraft {
        source: incoming.event.source,
        status: decided.verdict.mapped,
        effect: decided.verdict.effect,
        sequence: first_sequence,
        occurred_at: incoming.event.occurred_at,
        carrier: Some(&incoming.carrier),
        reason: None,
        raw: incoming.raw.as_deref(),
    };
    plan.entry(h, entry);
}

/// What a carrier event's order is to the handoff it names, and so what
/// recording the event does besides running the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EventOrder<'a> {
    /// The handoff adopts the reported order, then the event applies.
    Adopt(&'a PostalOrder),
    /// The handoff's own order (or one that cannot be told apart): the event
    /// applies, filling in the item code the handoff lacked.
    Own { fill_tracking: Option<&'a str> },
    /// Another order made for the handoff: the event is not the handoff's;
    /// the order is cancelled (`cancel`: its originalID, when the record
    /// names it and the order is still live).
    Duplicate { cancel: Option<&'a str> },
    /// An order nobody owns (the handoff ended without one): the event is
    /// recorded (absorbed) and the order cancelled.
    Unowned { cancel: Option<&'a str> },
}

/// Decides [`EventOrder`] from the handoff's status and order ids as stored.
pub(super) fn event_order<'a>(
    status: Status,
    own_original_id: Option<&str>,
    own_tracking: Option<&str>,
    incoming: &'a IncomingCarrierEvent,
) -> EventOrder<'a> {
    use crate::domain::ownership::{OrderFate, OrderIds, fate};
    let reported = OrderIds {
        original_id: incoming.original_id.as_deref(),
        tracking_number: incoming.tracking_number.as_deref(),
    };
    let own = OrderIds {
        original_id: own_original_id,
        tracking_number: own_tracking,
    };
    // An order Vietnam Post already reports cancelled needs no cancel.
    let live = !matches!(
        CarrierCode::from_code(incoming.event.code),
        CarrierCode::Status(Status::Cancelled) | CarrierCode::DeliveryCancelled
    );
    let cancel = incoming.original_id.as_deref().filter(|_| live);
    match fate(status, own, reported) {
        OrderFate::Adopt => match &incoming.order {
            Some(order) => EventOrder::Adopt(order),
            None => EventOrder::Own {
                fill_tracking: None,
            },
        },
        OrderFate::Own => EventOrder::Own {
            fill_tracking: incoming
                .tracking_number
                .as_deref()
                .filter(|_| own_tracking.is_none()),
        },
        OrderFate::Duplicate => EventOrder::Duplicate { cancel },
        OrderFate::Unowned => EventOrder::Unowned { cancel },
    }
}

/// What applying one carrier event to its handoff decides: the state
/// machine's verdict and what the handoff records with it.
pub(super) struct EventDecision {
    pub verdict: state_machine::Verdict,
    /// The status before the event (after an adoption by this event).
    pub previous: Status,
    /// Stages this event completed: (kind, stage, seconds).
    pub legs: Vec<(Kind, &'static str, f64)>,
    /// Set at pickup: the legal delivery time (day J).
    pub sla_due_at: Option<jiff::Timestamp>,
    /// When the legal clock stopped, if it stops now.
    pub reached_at: Option<jiff::Timestamp>,
    /// Code 21 reported for the first time: its time and amount are kept.
    pub cod_paid_now: bool,
    /// What a `handoff.cod_settled` callback of this event would carry.
    pub cod: CodSettlement,
}

/// Decides what one carrier event does to its handoff `h` (its status
/// already that of an order this event revealed: `adopted_now`). Pure: every
/// rule of applying an event lives here.
pub(super) fn decide_event(
    h: &EventHandoff,
    adopted_now: bool,
    incoming: &IncomingCarrierEvent,
    context: &EventContext,
    now: jiff::Timestamp,
) -> Result<EventDecision, StoreError> {
    let state = state_machine::MachineState {
        status: h.handoff.status,
        watermark: match (h.watermark_at, h.watermark_rank) {
            (Some(at), Some(rank)) => Some((from_ms(at)?, rank as u8)),
            _ => None,
        },
        picked_up: h.picked_up_at.is_some(),
        cod_settled: h.handoff.cod_settled,
        cod_held: h.cod_held,
    };
    let seen: Vec<SeenEvent> = h.seen.iter().map(|s| s.event.clone()).collect();
    let verdict = state_machine::apply(&state, &seen, &incoming.event);
    let next = &verdict.next;
    let kind = h.handoff.kind;
    let occurred = incoming.event.occurred_at;
    let mut legs = Vec::new();
    if adopted_now {
        // A webhook revealed the order before the create's answer did.
        let received = ms(h.handoff.created_at);
        legs.push((kind, "order", (ms(now) - received) as f64 / 1000.0));
    }
    let picks_up_now = next.picked_up && !state.picked_up;
    let picked_up_at = if picks_up_now {
        if let Some(created) = h.order_created_at {
            legs.push((kind, "pickup", (ms(occurred) - created) as f64 / 1000.0));
        }
        Some(occurred)
    } else {
        opt_ms(h.picked_up_at)?
    };
    // The legal clock stops at delivery; for a return at the first delivery attempt.
    let reaches = next.status != state.status
        && match kind {
            Kind::Pickup => next.status == Status::Delivered,
            Kind::Return => matches!(
                next.status,
                Status::Delivered | Status::DeliveryAttemptFailed
            ),
        };
    let reached_at = if reaches && h.sla_reached_at.is_none() {
        if let Some(p) = picked_up_at {
            legs.push((kind, "delivery", (ms(occurred) - ms(p)) as f64 / 1000.0));
        }
        Some(occurred)
    } else {
        None
    };
    // Day J: the legal delivery time starts when the item is taken over.
    let sla_due_at = if picks_up_now {
        h.details
            .as_deref()
            .and_then(|d| serde_json::from_str::<crate::domain::HandoffRequest>(d).ok())
            .map(|r| {
                context.sla.due_at(
                    occurred,
                    &r.citizen.address,
                    &r.agency.address,
                    r.return_appointment_slip,
                )
            })
    } else {
        None
    };
    // Code 21 seen for the first time: its time and amount are kept for the
    // `handoff.cod_settled` callback, which may wait for the delivery.
    let cod_paid_now = matches!(
        CarrierCode::from_code(incoming.event.code),
        CarrierCode::CodPaid
    ) && !state.cod_settled
        && !state.cod_held
        && (next.cod_settled || next.cod_held);
    let cod = cod_settlement(
        incoming,
        h.cod_settled_at,
        h.cod_amount_reported,
        h.handoff.cod_amount_vnd,
    )?;
    Ok(EventDecision {
        previous: state.status,
        verdict,
        legs,
        sla_due_at,
        reached_at,
        cod_paid_now,
        cod,
    })
}

/// The settlement a `handoff.cod_settled` callback carries: the code 21
/// report being applied now, else the one held until delivery.
pub(super) fn cod_settlement(
    incoming: &IncomingCarrierEvent,
    held_at: Option<i64>,
    held_amount: Option<i64>,
    asked_vnd: u64,
) -> Result<CodSettlement, StoreError> {
    let asked = i64::try_from(asked_vnd).unwrap_or(i64::MAX);
    Ok(
        match (CarrierCode::from_code(incoming.event.code), held_at) {
            (CarrierCode::CodPaid, _) | (_, None) => CodSettlement {
                amount_vnd: incoming.cod_amount.unwrap_or(asked),
                settled_at: incoming.event.occurred_at,
            },
            (_, Some(at)) => CodSettlement {
                amount_vnd: held_amount.unwrap_or(asked),
                settled_at: from_ms(at)?,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CarrierInfo, Effect};

    fn ts(s: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_764_000_000 + s).unwrap()
    }

    /// A return with its order since `ts(0)`, received a minute before.
    fn return_handoff(picked_up_at: Option<i64>) -> EventHandoff {
        EventHandoff {
            handoff: Handoff {
                id: HandoffId::parse("h_01KBQZ6Y0000000000000000AA").unwrap(),
                client: "desk".into(),
                request_id: "r1".into(),
                kind: Kind::Return,
                dossier_code: "000.00.21.H03-201021-0001".into(),
                agency_code: "H03".into(),
                status: Status::OrderCreated,
                reason: None,
                tracking_number: Some("EB1VN".into()),
                postage_vnd: None,
                cod_amount_vnd: 0,
                cod_settled: false,
                created_at: ts(-60),
                updated_at: ts(0),
                due_at: None,
                sla_due_at: None,
            },
            next_sequence: 2,
            carrier_order_id: Some("H1".into()),
            carrier_original_id: Some("O1".into()),
            watermark_at: None,
            watermark_rank: None,
            picked_up_at: picked_up_at.map(|s| ms(ts(s))),
            cod_held: false,
            details: None,
            order_created_at: Some(ms(ts(0))),
            sla_reached_at: None,
            cod_settled_at: None,
            cod_amount_reported: None,
            delivered_at: None,
            terminal_at: None,
            last_carrier_event_at: None,
            seen: Vec::new(),
            loaded: None,
        }
    }

    fn reported(code: i64, at: i64) -> IncomingCarrierEvent {
        IncomingCarrierEvent {
            sale_order_code: None,
            tracking_number: Some("EB1VN".into()),
            original_id: None,
            order: None,
            event: state_machine::CarrierEvent {
                source: Source::Webhook,
                code,
                occurred_at: ts(at),
            },
            carrier: CarrierInfo {
                code,
                text: None,
                location: None,
            },
            raw: None,
            cod_amount: None,
        }
    }

    #[test]
    fn a_pickup_ends_the_pickup_leg_and_a_first_delivery_attempt_ends_a_returns_delivery_leg() {
        let context = EventContext::default();
        let h = return_handoff(None);
        let d = decide_event(&h, false, &reported(6, 3600), &context, ts(3700)).unwrap();
        assert_eq!(d.previous, Status::OrderCreated);
        assert_eq!(d.verdict.next.status, Status::PickedUp);
        assert_eq!(d.legs, vec![(Kind::Return, "pickup", 3600.0)]);
        assert_eq!(d.reached_at, None);
        // A return's legal clock stops at its first delivery attempt.
        let mut h = return_handoff(Some(3600));
        h.handoff.status = Status::OutForDelivery;
        let d = decide_event(&h, false, &reported(15, 7200), &context, ts(7300)).unwrap();
        assert_eq!(d.verdict.next.status, Status::DeliveryAttemptFailed);
        assert_eq!(d.reached_at, Some(ts(7200)));
        assert_eq!(d.legs, vec![(Kind::Return, "delivery", 3600.0)]);
    }

    #[test]
    fn an_order_a_webhook_reveals_ends_the_order_leg_at_its_adoption() {
        let h = return_handoff(None);
        let d = decide_event(&h, true, &reported(2, 30), &EventContext::default(), ts(40)).unwrap();
        assert_eq!(d.legs, vec![(Kind::Return, "order", 100.0)]);
        assert!(!d.cod_paid_now);
    }

    #[test]
    fn each_event_of_a_batch_sees_the_ones_before_it_and_the_handoff_is_written_once() {
        let h = return_handoff(None);
        let events = [reported(6, 3600), reported(6, 3600), reported(10, 7200)];
        let plan = plan(vec![h], &events, &EventContext::default(), ts(8000)).unwrap();
        assert_eq!(plan.handoffs.len(), 1);
        let h = &plan.handoffs[0];
        // The repeated pickup is a duplicate the state machine ignores: it
        // saw the first one, planned in this same batch.
        assert_eq!(plan.timeline.len(), 3);
        assert_eq!(plan.timeline[1].draft.effect, Effect::Duplicate);
        let sequences: Vec<i64> = plan.callbacks.iter().map(|c| c.sequence).collect();
        assert_eq!(sequences, vec![2, 3]);
        assert_eq!(h.next_sequence, 4);
        assert_eq!(h.picked_up_at, Some(ms(ts(3600))));
        assert_eq!(h.handoff.status, Status::InTransit);
        // A handoff that was not loaded writes every column.
        assert_eq!(h.changed().len(), h.written().len());
        let outcomes = plan.outcomes(&[]);
        assert_eq!(outcomes.len(), 3);
    }

    #[test]
    fn a_loaded_handoff_writes_only_the_columns_its_events_changed() {
        let mut h = return_handoff(None);
        h.loaded = Some(Box::new(h.clone()));
        let events = [reported(6, 3600)];
        let plan = plan(vec![h], &events, &EventContext::default(), ts(3700)).unwrap();
        let changed: Vec<&str> = plan.handoffs[0]
            .changed()
            .into_iter()
            .map(|(column, _)| column)
            .collect();
        assert_eq!(
            changed,
            vec![
                "status",
                "updated_at",
                "watermark_at",
                "watermark_rank",
                "last_carrier_event_at",
                "picked_up_at",
                "next_sequence"
            ]
        );
    }

    #[test]
    fn an_event_naming_no_loaded_handoff_is_unknown_and_writes_nothing() {
        let mut event = reported(6, 60);
        event.tracking_number = Some("EB9VN".into());
        let events = [event];
        let plan = plan(
            vec![return_handoff(None)],
            &events,
            &EventContext::default(),
            ts(100),
        )
        .unwrap();
        assert!(plan.handoffs.is_empty() && plan.timeline.is_empty() && plan.callbacks.is_empty());
        assert_eq!(plan.outcomes(&[]), vec![EventOutcome::UnknownOrder]);
    }
}
