//! The store: the only hand-off between the gateway's steps.
//!
//! Every method is one transaction. The trait is the whole contract between
//! the workers and a backend; `sqlite` and `postgres` implement it.

pub mod admin;
pub use reads::ReadPool;
mod carrier_events;
mod group;
pub mod health;
pub mod postgres;
mod reads;
mod shared;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::callback::BodyFormat;
use crate::domain::{CreateStep, Handoff, HandoffId, HandoffRequest, PostalOrder, TimelineEntry};

pub use admin::AdminStore;
pub use health::StoreHealth;

/// A store that cannot do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or failed; the caller may retry.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Stored data the gateway cannot read back: a bug or a manual edit.
    #[error("store holds unreadable data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// The store's own machinery (a writer's queue or thread) is gone.
    pub(crate) fn gone(what: &'static str) -> Self {
        StoreError::Unavailable(what.into())
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(Box::new(e))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(Box::new(e))
    }
}

/// A handoff to record, with its postal create job, in one transaction.
#[derive(Debug, Clone)]
pub struct NewHandoff {
    pub id: HandoffId,
    pub client: String,
    pub request: HandoffRequest,
    /// SHA-256 of the request's canonical form.
    pub request_sha256: [u8; 32],
    /// The canonical form, stored as the handoff's details (personal).
    details: String,
    pub now: Timestamp,
}

impl NewHandoff {
    /// The handoff `client` asks for with `request`: its canonical form is
    /// serialized once, for the details stored and for their hash.
    pub fn new(id: HandoffId, client: String, request: HandoffRequest, now: Timestamp) -> Self {
        let (details, request_sha256) = request.canonical_form();
        NewHandoff {
            id,
            client,
            request,
            request_sha256,
            details,
            now,
        }
    }

    /// The request as stored.
    pub(crate) fn details(&self) -> &str {
        &self.details
    }
}

/// What recording a new handoff did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// Stored now, with its postal job.
    Created(Handoff),
    /// The client used this `request_id` before; `same_request` tells whether
    /// the canonical requests are equal.
    Existing {
        handoff: Handoff,
        same_request: bool,
    },
}

/// Which handoffs a list asks for.
#[derive(Debug, Clone, Default)]
pub struct HandoffFilter {
    /// Restricts to one client's handoffs (`None`: across clients, for operators).
    pub client: Option<String>,
    pub dossier_code: Option<String>,
    pub request_id: Option<String>,
    pub status: Option<crate::domain::Status>,
    pub tracking_number: Option<String>,
    /// A citizen's phone in domestic form (`0` and digits), for the
    /// console's search; personal data, so never in a URL or a log.
    pub phone: Option<String>,
}

/// A page of a list (handoffs by default; callbacks: `admin::CallbackPage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T = Handoff> {
    pub items: Vec<T>,
    /// Pass back as `cursor` to read the next page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Cuts `limit + 1` fetched rows to a page: the extra row, when present,
    /// says there is a next page, whose cursor is the last kept row's.
    pub(crate) fn cut(mut items: Vec<T>, limit: u32, cursor_of: impl Fn(&T) -> String) -> Self {
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(cursor_of)
        } else {
            None
        };
        Self { items, next_cursor }
    }
}

/// What a postal job asks of Vietnam Post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostalOperation {
    /// Create the handoff's order (exactly once).
    Create,
    /// Cancel an extra order found for the handoff (`target` is its originalID).
    CancelDuplicate,
    /// Cancel the handoff's order, as the intake system asked.
    Cancel,
}

impl PostalOperation {
    pub fn as_str(self) -> &'static str {
        match self {
            PostalOperation::Create => "create",
            PostalOperation::CancelDuplicate => "cancel_duplicate",
            PostalOperation::Cancel => "cancel",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "create" => Some(PostalOperation::Create),
            "cancel_duplicate" => Some(PostalOperation::CancelDuplicate),
            "cancel" => Some(PostalOperation::Cancel),
            _ => None,
        }
    }
}

/// A postal job claimed under a lease, with its handoff.
#[derive(Debug, Clone)]
pub struct PostalJob {
    pub id: i64,
    pub operation: PostalOperation,
    pub target: String,
    /// Calls made so far (drives the backoff bound).
    pub attempts: u32,
    pub step: CreateStep,
    /// The retry deadline runs from here.
    pub first_attempt_at: Option<Timestamp>,
    /// Lookups search from this Vietnam day.
    pub first_create_at: Option<Timestamp>,
    /// A refusal awaiting its confirming lookup.
    pub refusal: Option<String>,
    /// Set when the job was found with a create attempt started but never
    /// finished (a crash, or a lost lease): that attempt is ambiguous.
    pub interrupted_at: Option<Timestamp>,
    pub lease_expires_at: Timestamp,
    pub handoff: Handoff,
    /// The handoff's order's originalID, once known (to cancel it).
    pub original_id: Option<String>,
    /// The create job's first create attempt (lookups search from its day).
    pub create_started_at: Option<Timestamp>,
    /// The create job is pending and leased: a create call may be in flight.
    pub create_in_flight: bool,
    /// The intake system asked to cancel the handoff: a create job stops.
    pub cancel_requested: bool,
    /// The personal details needed to create the order; `None` once purged.
    pub request: Option<HandoffRequest>,
}

impl PostalJob {
    /// Whether this attempt calls Vietnam Post's create: its start stays
    /// marked until its outcome is committed (the ambiguity marker).
    pub fn calls_create(&self) -> bool {
        self.operation == PostalOperation::Create
            && matches!(self.step, CreateStep::Call | CreateStep::CallAfterLookup)
    }
}

/// How a postal job ended this time, committed with its effects.
#[derive(Debug, Clone)]
pub enum PostalOutcome {
    /// Try again later, at `step`.
    Reschedule {
        step: CreateStep,
        at: Timestamp,
        refusal: Option<String>,
        last_error: Option<String>,
    },
    /// The handoff's order exists: record it, relay `order_created`, and
    /// queue the cancellation of any duplicates (their originalIDs).
    Adopt {
        order: PostalOrder,
        duplicates: Vec<String>,
        format: BodyFormat,
    },
    /// Vietnam Post refused the order permanently.
    Reject { reason: String, format: BodyFormat },
    /// The retry deadline passed without an order.
    Fail { reason: String, format: BodyFormat },
    /// Nothing more to do (a duplicate cancelled, or the handoff moved on).
    Complete { note: Option<String> },
    /// The order is cancelled (or none was ever made): the handoff is
    /// `cancelled`. An order a cancel's lookup found was settled before
    /// (see [`Store::settle_orders`]).
    Cancelled { format: BodyFormat },
    /// Vietnam Post must approve the cancel; a later status 9 or 22 completes it.
    CancelPending { case_id: Option<String> },
    /// The cancel was refused or got no answer in time: relayed as
    /// `handoff.cancel_refused`, the status unchanged.
    CancelRefused { reason: String, format: BodyFormat },
}

/// What a cancel request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelRequest {
    /// Accepted (or asked before): the handoff as it is now.
    Accepted(Handoff),
    /// The status forbids it.
    NotAllowed(Handoff),
    NotFound,
}

/// A carrier status report for some handoff, as the webhook or poller read it.
#[derive(Debug, Clone)]
pub struct IncomingCarrierEvent {
    /// `saleOrderCode`: the handoff id when the gateway created the order.
    pub sale_order_code: Option<String>,
    /// `itemCode`.
    pub tracking_number: Option<String>,
    /// `originalID`, when the record names it.
    pub original_id: Option<String>,
    /// The order's ids, to adopt it when the handoff has none yet.
    pub order: Option<PostalOrder>,
    pub event: crate::domain::state_machine::CarrierEvent,
    pub carrier: crate::domain::CarrierInfo,
    /// The record as received (kept for audit, purged with personal data).
    pub raw: Option<String>,
    /// `codAmount`, when the record carries it (a webhook's code 21).
    pub cod_amount: Option<i64>,
}

/// The one key a carrier event is matched to its handoff by, most trusted
/// first: the handoff id (`saleOrderCode`, when it is one), else the item
/// code, else the `originalID`. Each is one indexed lookup; a single
/// statement taking all three as `id = ?1 OR (?1 IS NULL AND …)` made both
/// databases scan every handoff once per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HandoffKey<'a> {
    Id(HandoffId),
    TrackingNumber(&'a str),
    OriginalId(&'a str),
}

impl HandoffKey<'_> {
    /// The `handoffs` column each key is looked up in, by [`Self::index`].
    pub(crate) const COLUMNS: [&'static str; 3] = ["id", "tracking_number", "carrier_original_id"];

    /// Its place in [`Self::COLUMNS`] (and in the backends' statements built
    /// from them).
    pub(crate) fn index(&self) -> usize {
        match self {
            HandoffKey::Id(_) => 0,
            HandoffKey::TrackingNumber(_) => 1,
            HandoffKey::OriginalId(_) => 2,
        }
    }

    pub(crate) fn value(&self) -> &str {
        match self {
            HandoffKey::Id(id) => id.as_str(),
            HandoffKey::TrackingNumber(v) | HandoffKey::OriginalId(v) => v,
        }
    }
}

impl IncomingCarrierEvent {
    /// What the event is matched by; `None` when it names no handoff.
    pub(crate) fn handoff_key(&self) -> Option<HandoffKey<'_>> {
        if let Some(id) = self.sale_order_code.as_deref().and_then(HandoffId::parse) {
            Some(HandoffKey::Id(id))
        } else if let Some(t) = self.tracking_number.as_deref() {
            Some(HandoffKey::TrackingNumber(t))
        } else {
            self.original_id.as_deref().map(HandoffKey::OriginalId)
        }
    }
}

/// What applying carrier events depends on besides the store.
#[derive(Debug, Clone, Default)]
pub struct EventContext {
    /// Each client's callback format.
    pub formats: std::collections::HashMap<String, BodyFormat>,
    /// The legal delivery time rules, for `sla_due_at` at pickup.
    pub sla: crate::domain::sla::SlaRules,
}

/// What recording one carrier event did.
#[derive(Debug, Clone, PartialEq)]
pub enum EventOutcome {
    /// No handoff matches it.
    UnknownOrder,
    /// It concerns another order than the handoff's own: a duplicate, whose
    /// cancellation `cancel_queued` says was queued now (not earlier).
    DuplicateOrder {
        handoff_id: HandoffId,
        cancel_queued: bool,
    },
    Recorded {
        handoff_id: HandoffId,
        effect: crate::domain::Effect,
        /// Stages this event completed: (kind, stage, seconds).
        legs: Vec<(crate::domain::Kind, &'static str, f64)>,
    },
}

/// What settling one order found for a handoff did (see
/// [`Store::settle_orders`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettledOrder {
    pub fate: crate::domain::ownership::OrderFate,
    /// A cancel job for the order was queued now (not earlier).
    pub cancel_queued: bool,
}

/// A handoff Vietnam Post has been quiet about, and how to ask after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHandoff {
    pub id: HandoffId,
    pub client: String,
    pub created_at: Timestamp,
    /// Its order's item code: its tracking history is polled.
    pub tracking_number: Option<String>,
    /// Its order's originalID: without an item code, the order is looked up
    /// by saleOrderCode and recognised by this.
    pub original_id: Option<String>,
}

/// A callback claimed for delivery: the head of its handoff's queue.
#[derive(Debug, Clone)]
pub struct CallbackJob {
    /// The `webhook-id`.
    pub id: String,
    pub handoff_id: HandoffId,
    pub client: String,
    pub sequence: u64,
    pub body: Vec<u8>,
    pub content_type: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it reached the head of its queue: the retry deadline runs from here.
    pub head_since: Timestamp,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackOutcome {
    Delivered,
    Retry {
        at: Timestamp,
        status: Option<u16>,
        error: String,
    },
    /// The deadline passed: the callback is dead, the ones behind it held.
    Dead {
        status: Option<u16>,
        error: String,
    },
}

/// Where an outcome leaves its callback: its state, its next attempt (Unix
/// milliseconds), the answer's status and the error, at `now`.
pub(crate) struct CallbackSettlement<'a> {
    pub state: &'static str,
    pub next_attempt_at: i64,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
}

impl CallbackOutcome {
    pub(crate) fn settlement(&self, now: Timestamp) -> CallbackSettlement<'_> {
        let settled = |state, status, error| CallbackSettlement {
            state,
            next_attempt_at: ms(now),
            status,
            error,
        };
        match self {
            CallbackOutcome::Delivered => settled("delivered", None, None),
            CallbackOutcome::Retry { at, status, error } => CallbackSettlement {
                state: "pending",
                next_attempt_at: ms(*at),
                status: *status,
                error: Some(error),
            },
            CallbackOutcome::Dead { status, error } => settled("dead", *status, Some(error)),
        }
    }
}

/// Depth, age and dead letters of a durable queue.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueueStats {
    pub depth: u64,
    pub oldest_age_s: f64,
    pub dead: u64,
}

/// The gateway's durable state (operators' actions included).
#[async_trait]
pub trait Store: AdminStore + Send + Sync + 'static {
    /// Answers when the store can serve requests.
    async fn ping(&self) -> Result<(), StoreError> {
        self.read_pool().ping().await
    }

    /// Records a handoff and its postal create job, or finds the one the client
    /// created before with the same `request_id`.
    async fn create_handoff(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError>;

    /// One handoff; `client` restricts the search to that client's handoffs.
    async fn handoff(
        &self,
        client: Option<&str>,
        id: &HandoffId,
    ) -> Result<Option<Handoff>, StoreError> {
        self.read_pool().handoff(client, id).await
    }

    /// The handoff's timeline, oldest first.
    async fn timeline(&self, id: &HandoffId) -> Result<Vec<TimelineEntry>, StoreError> {
        self.read_pool().timeline(id).await
    }

    /// Handoffs matching the filter, newest first.
    async fn list_handoffs(
        &self,
        filter: &HandoffFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        self.read_pool().list_handoffs(filter, limit, cursor).await
    }

    /// Records an intake system's cancel request: stops a create job that
    /// has not called Vietnam Post yet (then the handoff is cancelled at
    /// once), otherwise queues a durable cancel job.
    async fn request_cancel(
        &self,
        client: &str,
        id: &HandoffId,
        format: BodyFormat,
        now: Timestamp,
    ) -> Result<CancelRequest, StoreError>;

    /// Handoffs with a postal order that heard nothing from Vietnam Post
    /// (and were not polled) since `quiet_since`: the non-terminal ones, and
    /// COD returns delivered after `cod_since` whose COD is not yet paid.
    async fn quiet_handoffs(
        &self,
        quiet_since: Timestamp,
        cod_since: Timestamp,
        limit: u32,
    ) -> Result<Vec<QuietHandoff>, StoreError> {
        self.read_pool()
            .quiet_handoffs(quiet_since, cod_since, limit)
            .await
    }

    /// COD returns delivered before `cod_since` whose COD Vietnam Post has not
    /// reported paid (`bcci_cod_unsettled`).
    async fn count_cod_unsettled(&self, cod_since: Timestamp) -> Result<u64, StoreError> {
        self.read_pool().count_cod_unsettled(cod_since).await
    }

    /// Records the item code of a handoff's order that had none, when the
    /// handoff's order is still `original_id`. True when recorded.
    async fn record_tracking_number(
        &self,
        id: &HandoffId,
        original_id: &str,
        tracking_number: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Notes that a handoff was just polled.
    async fn mark_polled(&self, id: &HandoffId, now: Timestamp) -> Result<(), StoreError>;

    /// Clears every personal field (the request details, stored carrier
    /// answers, Vietnam Post's refusal texts, the reason in callback bodies)
    /// of handoffs terminal since before `cutoff` whose SLA due date (if any)
    /// is before it too, `failed` ones excepted, and makes sure the bytes do
    /// not linger in the files.
    /// Returns how many handoffs were purged.
    async fn purge_personal_data(
        &self,
        cutoff: Timestamp,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// Records `sla_breached_at` on handoffs that missed their legal delivery
    /// time (not reached by `now`, or reached late) and returns the kind of
    /// each one recorded now; each breach is recorded once, by one process.
    async fn record_sla_breaches(
        &self,
        now: Timestamp,
    ) -> Result<Vec<crate::domain::Kind>, StoreError>;

    /// Handoffs per (kind, status), for the `bcci_handoffs` gauge.
    async fn handoff_counts(
        &self,
    ) -> Result<Vec<(crate::domain::Kind, crate::domain::Status, u64)>, StoreError> {
        self.read_pool().handoff_counts().await
    }

    /// Counts the number of handoffs in total (tests and stats).
    async fn count_handoffs(&self) -> Result<u64, StoreError> {
        self.read_pool().count_handoffs().await
    }

    /// Counts pending postal jobs (tests and metrics).
    async fn count_pending_postal_jobs(&self) -> Result<u64, StoreError> {
        self.read_pool().count_pending_postal_jobs().await
    }

    /// Claims up to `limit` due postal jobs for `owner` until `now + lease`.
    async fn claim_postal_jobs(
        &self,
        owner: &str,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<PostalJob>, StoreError>;

    /// Commits the start of a call before it is made. For a create call the
    /// marker stays until the outcome is committed, so an attempt found
    /// unfinished is known to be ambiguous. False when the lease was lost or
    /// less than `must_remain` (one call timeout) of it is left: no call then.
    async fn start_postal_attempt(
        &self,
        job: &PostalJob,
        owner: &str,
        now: Timestamp,
        must_remain: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Commits a job's outcome with its effects on the handoff, timeline and
    /// callback queue, only while `owner` still holds the lease. False when
    /// the lease was lost and nothing was committed.
    async fn finish_postal_job(
        &self,
        job: &PostalJob,
        owner: &str,
        now: Timestamp,
        outcome: PostalOutcome,
    ) -> Result<bool, StoreError>;

    /// Settles orders Vietnam Post holds for a handoff (earliest first), in
    /// one transaction, by [`crate::domain::ownership::fate`]: one is adopted
    /// while the handoff may take it (relayed as `order_created`), and a
    /// cancel job is queued for each one the handoff does not own. Used when
    /// an order's creator could not commit it (its lease was lost) and when a
    /// cancel's lookup finds orders.
    async fn settle_orders(
        &self,
        id: &HandoffId,
        orders: &[PostalOrder],
        format: BodyFormat,
        now: Timestamp,
    ) -> Result<Vec<SettledOrder>, StoreError>;

    /// The postal queue as a whole (every process exports it).
    async fn postal_queue_stats(&self, now: Timestamp) -> Result<QueueStats, StoreError> {
        self.read_pool().queue_stats("postal_jobs", now).await
    }

    /// Records carrier events in one transaction: each is matched to its
    /// handoff, run through the state machine, and its effects (status,
    /// timeline, callbacks) committed. `formats` gives each client's
    /// callback format.
    async fn apply_carrier_events(
        &self,
        events: Vec<IncomingCarrierEvent>,
        context: &EventContext,
        now: Timestamp,
    ) -> Result<Vec<EventOutcome>, StoreError>;

    /// Keeps a carrier report that could not be understood.
    async fn store_malformed(
        &self,
        source: crate::domain::Source,
        raw: &str,
        problem: &str,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Claims up to `limit` due callbacks, each the head of its handoff's queue.
    async fn claim_callbacks(
        &self,
        owner: &str,
        now: Timestamp,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<CallbackJob>, StoreError>;

    /// Records a delivery attempt's outcome while `owner` holds the lease.
    async fn finish_callback(
        &self,
        job: &CallbackJob,
        owner: &str,
        now: Timestamp,
        outcome: CallbackOutcome,
    ) -> Result<bool, StoreError>;

    /// Sends dead callbacks again (one by id, or all): each goes back to
    /// pending with a fresh retry budget and the same `webhook-id` and body.
    /// Returns how many were replayed.
    async fn replay_dead_callbacks(
        &self,
        id: Option<&str>,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// The callback queue as a whole.
    async fn callback_queue_stats(&self, now: Timestamp) -> Result<QueueStats, StoreError> {
        self.read_pool().queue_stats("callbacks", now).await
    }

    /// Pending callbacks of a handoff in sequence order: (sequence, type, body).
    async fn callbacks_of(
        &self,
        id: &HandoffId,
    ) -> Result<Vec<(u64, String, Vec<u8>)>, StoreError> {
        self.read_pool().callbacks_of(id).await
    }

    /// Gives back every lease `owners` still hold (at shutdown, after the
    /// grace period), so other processes need not wait for them to expire.
    /// A create attempt cut short stays marked as started: whoever takes the
    /// job next treats it as ambiguous and looks the order up first.
    async fn release_leases(&self, owners: &[&str]) -> Result<u64, StoreError>;

    /// What the store has written so far, where it counts it (the SQLite
    /// writer); `bcci_store_*_total` and the benchmark read it.
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }

    /// Releases what this process holds (connections, locks) before exit.
    async fn close(&self);
}

/// Totals of a store's writing since it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed.
    pub commits: u64,
    /// Statements run (those of triggers included).
    pub statements: u64,
    /// Bytes appended to the write-ahead log.
    pub wal_bytes: u64,
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Opens the store named by `store.url`, running its migrations.
pub async fn open(
    url: &str,
    settings: &crate::config::StoreSettings,
) -> anyhow::Result<SharedStore> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url, settings).await?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let store = postgres::PostgresStore::open(url, settings).await?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!("store.url: expected sqlite://… or postgres://…")
    }
}

impl PostalOperation {
    pub(crate) fn from_db(s: &str) -> Result<Self, StoreError> {
        Self::parse(s).ok_or_else(|| StoreError::Corrupt(format!("operation {s:?}")))
    }
}

pub(crate) fn ms(ts: Timestamp) -> i64 {
    ts.as_millisecond()
}

pub(crate) fn from_ms(ms: i64) -> Result<Timestamp, StoreError> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("time {ms}: {e}")))
}
