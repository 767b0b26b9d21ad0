//! What operators ask of the store: replaying failed handoffs, resolving
//! partial deliveries, erasing personal data, dead and held callbacks, and
//! the statistics the one-stop desk publishes.
//!
//! Every method is one transaction, like those of [`super::Store`], which
//! requires this trait so every backend implements both.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use jiff::Timestamp;
use jiff::civil::Date;

use super::StoreError;
use crate::domain::callback::BodyFormat;
use crate::domain::{Handoff, HandoffId, Kind, Status};

/// The status an operator closes a `partially_delivered` handoff with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Delivered,
    Returned,
}

impl Resolution {
    /// The status the handoff takes.
    pub fn status(self) -> Status {
        match self {
            Resolution::Delivered => Status::Delivered,
            Resolution::Returned => Status::Returned,
        }
    }

    /// Parses the contract's spelling (`delivered`, `returned`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "delivered" => Some(Resolution::Delivered),
            "returned" => Some(Resolution::Returned),
            _ => None,
        }
    }
}

/// Longest resolve note, in characters.
pub const MAX_NOTE_CHARS: usize = 500;

/// A resolve note as it is recorded: NFC and trimmed, `None` when empty; the
/// reason when it is too long.
pub fn resolve_note(raw: &str) -> Result<Option<String>, String> {
    let note = crate::domain::text::normalize(raw);
    if crate::domain::text::char_len(&note) > MAX_NOTE_CHARS {
        Err(format!("must be at most {MAX_NOTE_CHARS} characters"))
    } else {
        Ok(Some(note).filter(|n| !n.is_empty()))
    }
}

/// What an operator's action on a handoff did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// The action took effect (or, for an erasure, had taken effect before):
    /// the handoff as it is now.
    Done(Box<Handoff>),
    /// No such handoff.
    NotFound,
    /// The handoff's state forbids the action; says why.
    Conflict(String),
}

impl AdminOutcome {
    /// Why a handoff in `status` cannot be replayed (only a failed one can,
    /// and only while its personal data is kept), or `None` when it can.
    pub(super) fn replay_refused(status: Status, erased: bool) -> Option<Self> {
        if status != Status::Failed {
            return Some(Self::Conflict(format!(
                "the handoff is {status}; only a failed handoff can be replayed"
            )));
        }
        erased.then(|| {
            Self::Conflict(
                "the handoff's personal data was erased; no postal order can be created for it"
                    .into(),
            )
        })
    }

    /// Why a handoff in `status` cannot be resolved, or `None` when it can.
    pub(super) fn resolve_refused(status: Status) -> Option<Self> {
        (status != Status::PartiallyDelivered).then(|| {
            Self::Conflict(format!(
                "the handoff is {status}; only a partially_delivered handoff can be resolved"
            ))
        })
    }
}

/// Where a callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackState {
    /// Waiting for its turn or retrying.
    Pending,
    Delivered,
    /// Its retry deadline passed; an operator may replay it.
    Dead,
    /// Pending behind a dead callback of the same handoff.
    Held,
}

impl CallbackState {
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackState::Pending => "pending",
            CallbackState::Delivered => "delivered",
            CallbackState::Dead => "dead",
            CallbackState::Held => "held",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(CallbackState::Pending),
            "delivered" => Some(CallbackState::Delivered),
            "dead" => Some(CallbackState::Dead),
            "held" => Some(CallbackState::Held),
            _ => None,
        }
    }
}

/// What an operator's page shows of a handoff beyond its document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffRecord {
    /// The request as recorded, with the citizen's personal data; `None`
    /// once it is erased.
    pub request: Option<crate::domain::HandoffRequest>,
    /// When Vietnam Post first reported it delivered (the statistics'
    /// delivery time).
    pub delivered_at: Option<Timestamp>,
}

/// One queued callback as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRecord {
    /// The `webhook-id`.
    pub id: String,
    pub handoff_id: HandoffId,
    pub client: String,
    pub sequence: u64,
    /// `handoff.status_changed`, `handoff.cod_settled` or `handoff.cancel_refused`.
    pub event_type: String,
    pub state: CallbackState,
    pub attempts: u32,
    /// The HTTP status of the last answer, if there was one.
    pub last_status: Option<u16>,
    /// The last attempt's outcome (never the answer's body).
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    /// When it will next be tried, while pending.
    pub next_attempt_at: Option<Timestamp>,
    /// The body as it is sent (personal-free, fixed at enqueue).
    pub body: Vec<u8>,
    pub content_type: String,
}

/// A page of callbacks, oldest first.
pub type CallbackPage = crate::store::Page<CallbackRecord>;

/// What replaying one callback did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackReplay {
    /// Queued again: the callback as it is now.
    Replayed(Box<CallbackRecord>),
    NotFound,
    /// Only a dead callback can be replayed; this is its state.
    NotDead(CallbackState),
}

/// One line of the statistics: handoffs of one client, agency and kind
/// created in the period, and what became of them.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsRow {
    pub client: String,
    pub agency_code: String,
    pub kind: Kind,
    pub created: u64,
    pub delivered: u64,
    pub returned: u64,
    pub rejected: u64,
    pub failed: u64,
    pub cancelled: u64,
    /// Delivered no later than `sla_due_at`.
    pub on_time: u64,
    /// Delivered after `sla_due_at`.
    pub late: u64,
    /// Median seconds from `created_at` to `order_created_at`.
    pub median_order_s: Option<f64>,
    /// Median seconds from `order_created_at` to `picked_up_at`.
    pub median_pickup_s: Option<f64>,
    /// Median seconds from `picked_up_at` to `delivered_at`.
    pub median_delivery_s: Option<f64>,
}

/// The facts of one handoff the statistics need (times in Unix milliseconds).
#[derive(Debug, Clone)]
pub struct StatsFacts {
    pub client: String,
    pub agency_code: String,
    pub kind: Kind,
    pub status: Status,
    pub created_at: i64,
    pub order_created_at: Option<i64>,
    pub picked_up_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub sla_due_at: Option<i64>,
}

/// Aggregates handoff facts into statistics rows; shared by the backends so
/// they count alike.
#[derive(Debug, Default)]
pub struct StatsBuilder {
    groups: BTreeMap<(String, String, Kind), Group>,
}

#[derive(Debug, Default)]
struct Group {
    statuses: HashMap<Status, u64>,
    created: u64,
    on_time: u64,
    late: u64,
    order_ms: Vec<i64>,
    pickup_ms: Vec<i64>,
    delivery_ms: Vec<i64>,
}

impl StatsBuilder {
    pub fn add(&mut self, f: StatsFacts) {
        let g = self
            .groups
            .entry((f.client, f.agency_code, f.kind))
            .or_default();
        g.created += 1;
        *g.statuses.entry(f.status).or_default() += 1;
        if let (Some(delivered), Some(due)) = (f.delivered_at, f.sla_due_at) {
            if crate::domain::sla::delivered_on_time(delivered, due) {
                g.on_time += 1;
            } else {
                g.late += 1;
            }
        }
        let span = |from: Option<i64>, to: Option<i64>| from.zip(to).map(|(a, b)| b - a);
        g.order_ms
            .extend(span(Some(f.created_at), f.order_created_at));
        g.pickup_ms.extend(span(f.order_created_at, f.picked_up_at));
        g.delivery_ms.extend(span(f.picked_up_at, f.delivered_at));
    }

    /// Rows ordered by client, agency code and kind.
    pub fn rows(self) -> Vec<StatsRow> {
        self.groups
            .into_iter()
            .map(|((client, agency_code, kind), mut g)| {
                let n = |s: Status| g.statuses.get(&s).copied().unwrap_or(0);
                StatsRow {
                    delivered: n(Status::Delivered),
                    returned: n(Status::Returned),
                    rejected: n(Status::Rejected),
                    failed: n(Status::Failed),
                    cancelled: n(Status::Cancelled),
                    client,
                    agency_code,
                    kind,
                    created: g.created,
                    on_time: g.on_time,
                    late: g.late,
                    median_order_s: median_seconds(&mut g.order_ms),
                    median_pickup_s: median_seconds(&mut g.pickup_ms),
                    median_delivery_s: median_seconds(&mut g.delivery_ms),
                }
            })
            .collect()
    }
}

/// The median of millisecond spans, in seconds; the mean of the two middle
/// values for an even count; `None` with no sample.
pub fn median_seconds(ms: &mut [i64]) -> Option<f64> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_unstable();
    let mid = ms.len() / 2;
    let median_ms = if ms.len() % 2 == 1 {
        ms[mid] as f64
    } else {
        (ms[mid - 1] as f64 + ms[mid] as f64) / 2.0
    };
    Some(median_ms / 1000.0)
}

/// Operators' actions and reports over the store.
#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// The pool the store's shared reads (`store/reads.rs`) go through.
    #[doc(hidden)]
    fn read_pool(&self) -> super::ReadPool<'_>;

    /// A `failed` handoff goes back to `received`, relayed (source
    /// `operator`); its create job is pending again with a fresh retry budget
    /// and begins with a lookup, so a replay never makes a second order.
    /// `formats` gives each client's callback format.
    async fn replay_failed_handoff(
        &self,
        id: &HandoffId,
        operator: &str,
        now: Timestamp,
        formats: &HashMap<String, BodyFormat>,
    ) -> Result<AdminOutcome, StoreError>;

    /// Closes a `partially_delivered` handoff as delivered or returned,
    /// relayed with the note as its reason.
    async fn resolve_partial(
        &self,
        id: &HandoffId,
        resolution: Resolution,
        note: Option<&str>,
        operator: &str,
        now: Timestamp,
        formats: &HashMap<String, BodyFormat>,
    ) -> Result<AdminOutcome, StoreError>;

    /// Clears the handoff's personal data now (its details, the carrier
    /// answers on its timeline and in the inbox) and records it on the
    /// timeline; erasing again changes nothing.
    async fn erase_personal_data(
        &self,
        id: &HandoffId,
        operator: &str,
        now: Timestamp,
    ) -> Result<AdminOutcome, StoreError>;

    /// Callbacks in `state`, oldest first, after `cursor` (a callback id).
    async fn list_callbacks(
        &self,
        state: CallbackState,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<CallbackPage, StoreError> {
        self.read_pool().list_callbacks(state, limit, cursor).await
    }

    /// Every callback of one handoff, in sequence order, whatever its state.
    async fn handoff_callbacks(&self, id: &HandoffId) -> Result<Vec<CallbackRecord>, StoreError> {
        self.read_pool().handoff_callbacks(id).await
    }

    /// A handoff's request and delivery time, for operators' pages.
    async fn handoff_record(&self, id: &HandoffId) -> Result<Option<HandoffRecord>, StoreError> {
        self.read_pool().handoff_record(id).await
    }

    /// When the gateway last heard from Vietnam Post about any handoff.
    async fn last_carrier_event(&self) -> Result<Option<Timestamp>, StoreError> {
        self.read_pool().last_carrier_event().await
    }

    /// One callback.
    async fn callback(&self, id: &str) -> Result<Option<CallbackRecord>, StoreError> {
        self.read_pool().callback(id).await
    }

    /// Sends a dead callback again (same `webhook-id` and body, fresh retry
    /// budget), noting it on its handoff's timeline.
    async fn replay_callback(
        &self,
        id: &str,
        operator: &str,
        now: Timestamp,
    ) -> Result<CallbackReplay, StoreError>;

    /// Replays every dead callback, noting each on its handoff's timeline;
    /// returns how many.
    async fn replay_dead_callbacks_by(
        &self,
        operator: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Statistics of the handoffs created on Vietnam dates `from..=to`.
    async fn stats(&self, from: Date, to: Date) -> Result<Vec<StatsRow>, StoreError> {
        self.read_pool().stats(from, to).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median_seconds(&mut []), None);
        assert_eq!(median_seconds(&mut [3000]), Some(3.0));
        assert_eq!(median_seconds(&mut [9000, 1000, 4000]), Some(4.0));
        assert_eq!(median_seconds(&mut [1000, 4000, 2000, 9000]), Some(3.0));
    }

    #[test]
    fn delivered_on_the_due_time_is_on_time_and_without_a_due_time_is_neither() {
        let facts = |delivered: Option<i64>, due: Option<i64>| StatsFacts {
            client: "c".into(),
            agency_code: "a".into(),
            kind: Kind::Return,
            status: Status::Delivered,
            created_at: 0,
            order_created_at: Some(1000),
            picked_up_at: Some(2000),
            delivered_at: delivered,
            sla_due_at: due,
        };
        let mut b = StatsBuilder::default();
        b.add(facts(Some(5000), Some(5000)));
        b.add(facts(Some(5001), Some(5000)));
        b.add(facts(Some(5000), None));
        b.add(facts(None, Some(5000)));
        let rows = b.rows();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!((r.created, r.delivered, r.on_time, r.late), (4, 4, 1, 1));
        assert_eq!(r.median_order_s, Some(1.0));
        assert_eq!(r.median_delivery_s, Some(3.0));
    }
}
