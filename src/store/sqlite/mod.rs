//! The embedded SQLite store: one process, WAL, `secure_delete`, an exclusive
//! lock file so a second process refuses to start.

mod admin;
mod checkpoint;
mod group;
#[cfg(test)]
mod tests;
mod worker_writes;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, migrate::Migrator};

use super::shared::{
    CallbackDraft, Change, EventOrder, HANDOFF_COLUMNS, TAKE_SEQUENCE, TimelineDraft, event_order,
    handoff_from_row, opt_ms, parse, timeline_from_row,
};
use super::{
    CallbackJob, CallbackOutcome, CreateOutcome, EventOutcome, HandoffFilter, IncomingCarrierEvent,
    NewHandoff, Page, PostalJob, PostalOperation, PostalOutcome, QueueStats, Store, StoreError,
    from_ms, ms,
};
use crate::config::StoreSettings;
use crate::domain::callback::{BodyFormat, CallbackType};
use crate::domain::state_machine::{Relay, SeenEvent};
use crate::domain::{Effect, Handoff, HandoffId, Kind, Source, Status, TimelineEntry};
use worker_writes::{FinishCallback, FinishPostal, StartAttempt, WorkerWrites, Write};

/// Leases the due heads of the callback queues, oldest first: only heads
/// carry `head_since` (see `insert_callback`), and `callbacks_heads_due`
/// holds just those, so a claim never walks the callbacks waiting behind
/// them (named: the planner preferred `callbacks_due`, which holds them
/// all). The `NOT EXISTS` keeps the order even so.
const CLAIM_CALLBACKS: &str = "UPDATE callbacks SET lease_owner = ?1, lease_expires_at = ?2, head_since = COALESCE(head_since, ?3) \
     WHERE id IN (SELECT c.id FROM callbacks c INDEXED BY callbacks_heads_due \
       WHERE c.state = 'pending' AND c.head_since IS NOT NULL \
       AND c.next_attempt_at <= ?3 \
       AND (c.lease_expires_at IS NULL OR c.lease_expires_at <= ?3) \
       AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.handoff_id = c.handoff_id \
                       AND p.sequence < c.sequence AND p.state <> 'delivered') \
       ORDER BY c.next_attempt_at LIMIT ?4) \
     RETURNING id, handoff_id, client, sequence, body, content_type, attempts, head_since";

/// What every connection of the store sets, sqlx's and the intake writer's
/// (`group::open_writer`): each commit durable, deleted data overwritten,
/// foreign keys checked, and no checkpoint inside a commit (they run on a
/// task of their own, `checkpoint`; inside a commit they stalled every
/// request waiting behind it).
const CONNECTION_PRAGMAS: &[(&str, &str)] = &[
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    ("secure_delete", "ON"),
    ("wal_autocheckpoint", "0"),
];

/// How long a connection waits for SQLite's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: Migrator = sqlx::migrate!("./schemas/sql/sqlite");

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// Group commit of intake requests, on a connection of its own.
    intake: crate::store::group::IntakeQueue,
    /// Group commit of the workers' writes, on the pool's connection.
    writes: WorkerWrites,
    /// Stops the checkpoint task when the store goes.
    _checkpoints: tokio_util::sync::DropGuard,
    /// Held for the life of the store: the OS lock that keeps a second process out.
    _lock: Option<File>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, takes the process lock
    /// and runs the migrations.
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str, _settings: &StoreSettings) -> anyhow::Result<Self> {
        let options = CONNECTION_PRAGMAS.iter().fold(
            SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(BUSY_TIMEOUT)
                // A WAL grown under sustained load is cut back once it restarts.
                .pragma("journal_size_limit", "67108864"),
            |options, (name, value)| options.pragma(*name, *value),
        );
        let path = options.get_filename().to_path_buf();
        let lock = if path.as_os_str().is_empty() || path == Path::new(":memory:") {
            None
        } else {
            Some(take_lock(&path)?)
        };
        // One connection: SQLite has one writer at a time anyway, and with
        // several, each commit emptied the page cache of every other
        // connection and writers waiting for the lock slept in SQLite's busy
        // handler. Measured on the backlog drain: 3.1 ms of CPU per order with
        // 8 connections, 1.8 ms with one (docs/benchmarks.md).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&pool).await?;
        // This process holds the store's lock: no other process can be working
        // on a leased job, so every lease left behind belongs to a crashed run.
        sqlx::query("UPDATE postal_jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL")
            .execute(&pool)
            .await?;
        sqlx::query("UPDATE callbacks SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner IS NOT NULL")
            .execute(&pool)
            .await?;
        let intake = group::start(&path)?;
        let checkpoints = tokio_util::sync::CancellationToken::new();
        checkpoint::start(
            <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await?,
            checkpoints.clone(),
        );
        Ok(Self {
            writes: WorkerWrites::start(pool.clone()),
            pool,
            intake,
            _checkpoints: checkpoints.drop_guard(),
            _lock: lock,
        })
    }
}

fn take_lock(db: &Path) -> anyhow::Result<File> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut lock_path = PathBuf::from(db);
    lock_path.as_mut_os_string().push(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another bcci-gateway process is using the SQLite store {}; SQLite serves one process only (use PostgreSQL for several)",
            db.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Records `change` for the handoff (already updated in `tx`): a timeline
/// entry and, when relayed, its callback with the next sequence.
async fn record_change(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    previous: Status,
    change: Change<'_>,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    let sequence = match change.relay {
        Some((event_type, format)) => {
            let draft = CallbackDraft {
                event_type,
                status: change.status,
                previous,
                reason: change.reason,
                carrier: None,
                occurred_at: change.occurred_at,
                cod: None,
            };
            Some(queue_callback(tx, id, &draft, format, now).await?)
        }
        None => None,
    };
    let entry = TimelineDraft {
        source: change.source,
        status: Some(change.status),
        effect: Effect::Applied,
        sequence,
        occurred_at: change.occurred_at,
        carrier: None,
        reason: change.reason,
        raw: None,
    };
    insert_timeline(tx, id, &entry, now).await
}

/// Queues a callback with the handoff's next sequence (body fixed now, from
/// the handoff as updated in `tx`) and returns that sequence.
async fn queue_callback(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    draft: &CallbackDraft<'_>,
    format: BodyFormat,
    now: jiff::Timestamp,
) -> Result<i64, StoreError> {
    // Takes the sequence and reads the handoff in one statement.
    let row = sqlx::query(sqlx::AssertSqlSafe(TAKE_SEQUENCE.as_str()))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
    let handoff = handoff_from_row(&row)?;
    let sequence: i64 = row.try_get("next_sequence")?;
    insert_callback(tx, &handoff, sequence, draft, format, now).await?;
    Ok(sequence)
}

/// Queues the callback with `sequence`, its body fixed now from `handoff`.
async fn insert_callback(
    tx: &mut sqlx::SqliteConnection,
    handoff: &Handoff,
    sequence: i64,
    draft: &CallbackDraft<'_>,
    format: BodyFormat,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    let event = draft.event(handoff, sequence);
    let (body, content_type) = event.render(format);
    // A callback with nothing undelivered before it is the head of its
    // handoff's queue from now on: `head_since` marks the heads, so claims
    // search the heads alone (`callbacks_heads_due`), and its retry deadline
    // runs from here. The others get theirs when the one before is delivered
    // (`worker_writes::NEW_HEADS`) or replayed. SQLite runs one write
    // transaction at a time, so no delivery can slip between the check and
    // the insert.
    sqlx::query(
        "INSERT INTO callbacks (id, handoff_id, client, sequence, event_type, body, content_type, \
         state, next_attempt_at, created_at, head_since) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, \
         CASE WHEN EXISTS (SELECT 1 FROM callbacks p WHERE p.handoff_id = ?2 AND p.sequence < ?4 \
                           AND p.state <> 'delivered') THEN NULL ELSE ?8 END)",
    )
    .bind(format!("msg_{}", ulid::Ulid::new()))
    .bind(handoff.id.as_str())
    .bind(&handoff.client)
    .bind(sequence)
    .bind(draft.event_type.as_str())
    .bind(body)
    .bind(content_type)
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn insert_timeline(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    e: &TimelineDraft<'_>,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO timeline (handoff_id, source, status, effect, sequence, occurred_at, recorded_at, \
         tracking_number, carrier_code, carrier_text, carrier_location, reason, raw) \
         VALUES (?, ?, ?, ?, ?, ?, ?, (SELECT tracking_number FROM handoffs WHERE id = ?), ?, ?, ?, ?, ?)",
    )
    .bind(id.as_str())
    .bind(e.source.as_str())
    .bind(e.status.map(Status::as_str))
    .bind(e.effect.as_str())
    .bind(e.sequence)
    .bind(ms(e.occurred_at))
    .bind(ms(now))
    .bind(id.as_str())
    .bind(e.carrier.map(|c| c.code))
    .bind(e.carrier.and_then(|c| c.text.as_deref()))
    .bind(e.carrier.and_then(|c| c.location.as_deref()))
    .bind(e.reason)
    .bind(e.raw)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Sets a handoff's status when it is still one of `from`; true when it was.
async fn move_handoff(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    from: &[Status],
    to: Status,
    reason: Option<&str>,
    now: jiff::Timestamp,
) -> Result<Option<Status>, StoreError> {
    let current: Option<String> = sqlx::query_scalar("SELECT status FROM handoffs WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(current) = current else {
        return Ok(None);
    };
    let current: Status = parse("status", &current)?;
    if !from.contains(&current) {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE handoffs SET status = ?, reason = ?, updated_at = ?, \
         terminal_at = CASE WHEN ? THEN ? ELSE terminal_at END WHERE id = ?",
    )
    .bind(to.as_str())
    .bind(reason)
    .bind(ms(now))
    .bind(to.is_terminal())
    .bind(ms(now))
    .bind(id.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(Some(current))
}

/// The handoffs of claimed postal jobs (ids in a JSON array), with what a
/// job needs to know of the handoff's create job.
/// `+j.state`: without it SQLite searched the subquery through
/// postal_jobs_due (every pending job) instead of the handoff's own jobs, so
/// each claim cost O(backlog) (docs/benchmarks.md).
static CLAIMED_HANDOFFS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT {HANDOFF_COLUMNS}, details, carrier_original_id, \
         cancel_requested_at IS NOT NULL AS cancel_requested, \
         (SELECT first_create_at FROM postal_jobs j WHERE j.handoff_id = handoffs.id AND j.operation = 'create') AS create_started_at, \
         (SELECT COUNT(*) FROM postal_jobs j WHERE j.handoff_id = handoffs.id AND j.operation = 'create' \
            AND +j.state = 'pending' AND j.lease_expires_at > ?2) AS create_in_flight \
         FROM handoffs WHERE id IN (SELECT value FROM json_each(?1))"
    )
});

/// The handoff a carrier event concerns, one statement per key it may be
/// matched by (`HandoffKey::COLUMNS`), with the carrier events it has seen
/// as one JSON array.
static EVENT_HANDOFF: std::sync::LazyLock<[String; 3]> = std::sync::LazyLock::new(|| {
    super::HandoffKey::COLUMNS.map(|column| {
        format!(
            "SELECT {}, \
             (SELECT json_group_array(json_array(t.source, t.carrier_code, t.occurred_at)) FROM timeline t \
              WHERE t.handoff_id = handoffs.id AND t.carrier_code IS NOT NULL) AS seen \
             FROM handoffs WHERE {column} = ?1 LIMIT 1",
            super::shared::EVENT_COLUMNS
        )
    })
});

/// Records a carrier event on its handoff and takes `?14` callback sequences
/// (the first in `next_sequence`), returning the handoff as updated.
static APPLY_EVENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE handoffs SET status = ?1, watermark_at = ?2, watermark_rank = ?3, cod_settled = ?4, \
         cod_held = ?5, last_carrier_event_at = ?6, updated_at = CASE WHEN ?7 THEN ?6 ELSE updated_at END, \
         picked_up_at = CASE WHEN ?8 AND picked_up_at IS NULL THEN ?9 ELSE picked_up_at END, \
         delivered_at = CASE WHEN ?1 = 'delivered' AND delivered_at IS NULL THEN ?9 ELSE delivered_at END, \
         terminal_at = CASE WHEN ?10 AND terminal_at IS NULL THEN ?6 ELSE terminal_at END, \
         sla_due_at = COALESCE(?12, sla_due_at), sla_reached_at = COALESCE(sla_reached_at, ?13), \
         next_sequence = next_sequence + ?14, cod_settled_at = COALESCE(cod_settled_at, ?15), \
         cod_amount_reported = COALESCE(cod_amount_reported, ?16) \
         WHERE id = ?11 RETURNING {HANDOFF_COLUMNS}, next_sequence - ?14 AS next_sequence"
    )
});

/// The carrier events a handoff has seen, from a JSON array of
/// `[source, code, occurred_at]`.
fn seen_events(json: &str) -> Result<Vec<SeenEvent>, StoreError> {
    let rows: Vec<(String, i64, i64)> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("seen carrier events: {e}")))?;
    rows.into_iter()
        .map(|(source, code, at)| {
            Ok(SeenEvent {
                source: parse("source", &source)?,
                code,
                occurred_at: from_ms(at)?,
            })
        })
        .collect()
}

/// Matches one carrier event to its handoff and records what it does.
async fn apply_one(
    tx: &mut sqlx::SqliteConnection,
    incoming: &IncomingCarrierEvent,
    context: &super::EventContext,
    now: jiff::Timestamp,
) -> Result<EventOutcome, StoreError> {
    let formats = &context.formats;
    let Some(key) = incoming.handoff_key() else {
        return Ok(EventOutcome::UnknownOrder);
    };
    // The carrier events already seen come with the handoff, as one JSON
    // array: a statement less per event.
    let row = sqlx::query(sqlx::AssertSqlSafe(EVENT_HANDOFF[key.index()].as_str()))
        .bind(key.value())
        .fetch_optional(&mut *tx)
        .await?;
    let Some(row) = row else {
        return Ok(EventOutcome::UnknownOrder);
    };
    let id: String = row.try_get("id")?;
    let id = HandoffId::parse(&id).ok_or_else(|| StoreError::Corrupt(format!("id {id:?}")))?;
    let client: String = row.try_get("client")?;
    let format = formats.get(&client).copied().unwrap_or_default();
    let mut status: Status = parse("status", row.try_get("status")?)?;
    let known_tracking: Option<String> = row.try_get("tracking_number")?;
    let known_original: Option<String> = row.try_get("carrier_original_id")?;
    let mut adopted_now = false;
    match event_order(
        status,
        known_original.as_deref(),
        known_tracking.as_deref(),
        incoming,
    ) {
        EventOrder::Adopt(order) => {
            adopt(tx, &id, order, status, format, incoming.event.source, now).await?;
            status = Status::OrderCreated;
            adopted_now = true;
        }
        EventOrder::Own { fill_tracking } => {
            if let Some(tracking) = fill_tracking {
                fill_tracking_number(tx, &id, tracking, now).await?;
            }
        }
        EventOrder::Duplicate { cancel } => {
            let cancel_queued = match cancel {
                Some(original_id) => queue_order_cancel(tx, &id, original_id, now).await?,
                None => false,
            };
            return Ok(EventOutcome::DuplicateOrder {
                handoff_id: id,
                cancel_queued,
            });
        }
        EventOrder::Unowned { cancel } => {
            if let Some(original_id) = cancel
                && queue_order_cancel(tx, &id, original_id, now).await?
            {
                tracing::warn!(handoff_id = %id, "an order was reported for a handoff that has none; cancelling it");
            }
        }
    }
    let seen = seen_events(row.try_get("seen")?)?;
    let decided =
        super::shared::decide_event(&row, status, adopted_now, &seen, incoming, context, now)?;
    let next = &decided.verdict.next;
    // The update also takes the sequences of the callbacks the event relays
    // and returns the handoff their bodies describe.
    let updated = sqlx::query(sqlx::AssertSqlSafe(APPLY_EVENT.as_str()))
        .bind(next.status.as_str())
        .bind(next.watermark.map(|(at, _)| ms(at)))
        .bind(next.watermark.map(|(_, rank)| i64::from(rank)))
        .bind(next.cod_settled)
        .bind(next.cod_held)
        .bind(ms(now))
        .bind(next.status != decided.previous)
        .bind(next.picked_up)
        .bind(ms(incoming.event.occurred_at))
        .bind(next.status.is_terminal())
        .bind(id.as_str())
        .bind(decided.sla_due_at.map(ms))
        .bind(decided.reached_at.map(ms))
        .bind(decided.verdict.relay.len() as i64)
        .bind(decided.cod_paid_now.then(|| ms(incoming.event.occurred_at)))
        .bind(incoming.cod_amount.filter(|_| decided.cod_paid_now))
        .fetch_one(&mut *tx)
        .await?;
    let handoff = handoff_from_row(&updated)?;
    let first_of_event: i64 = updated.try_get("next_sequence")?;
    let mut first_sequence = None;
    for (sequence, relay) in (first_of_event..).zip(&decided.verdict.relay) {
        let (event_type, status, previous) = match *relay {
            Relay::StatusChanged { status, previous } => {
                (CallbackType::StatusChanged, status, previous)
            }
            Relay::CodSettled => (
                CallbackType::CodSettled,
                Status::Delivered,
                Status::Delivered,
            ),
        };
        let draft = CallbackDraft {
            event_type,
            status,
            previous,
            reason: None,
            carrier: Some(&incoming.carrier),
            occurred_at: incoming.event.occurred_at,
            cod: (event_type == CallbackType::CodSettled).then_some(decided.cod),
        };
        insert_callback(tx, &handoff, sequence, &draft, format, now).await?;
        match relay {
            Relay::CodSettled if decided.verdict.mapped.is_some() => {
                // The COD report held earlier is the entry this callback relays.
                sqlx::query(
                    "UPDATE timeline SET sequence = ? WHERE id = (SELECT id FROM timeline \
                     WHERE handoff_id = ? AND carrier_code = 21 AND sequence IS NULL ORDER BY id LIMIT 1)",
                )
                .bind(sequence)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
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
    insert_timeline(tx, &id, &entry, now).await?;
    Ok(EventOutcome::Recorded {
        handoff_id: id,
        effect: decided.verdict.effect,
        legs: decided.legs,
    })
}

/// Adopts an order revealed for a handoff that has none (domain.md rule 2):
/// records it, relays `order_created`, and ends the create job.
async fn adopt(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    order: &crate::domain::PostalOrder,
    previous: Status,
    format: BodyFormat,
    source: Source,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE handoffs SET status = 'order_created', reason = NULL, tracking_number = ?, \
         carrier_order_id = ?, carrier_original_id = ?, postage_vnd = COALESCE(?, postage_vnd), \
         order_created_at = ?, updated_at = ?, terminal_at = NULL WHERE id = ?",
    )
    .bind(order.tracking_number.as_deref())
    .bind(&order.order_id)
    .bind(&order.original_id)
    .bind(order.postage_vnd)
    .bind(ms(now))
    .bind(ms(now))
    .bind(id.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE postal_jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, \
         attempt_started_at = NULL, updated_at = ? WHERE handoff_id = ? AND operation = 'create' \
         AND state IN ('pending', 'dead')",
    )
    .bind(ms(now))
    .bind(id.as_str())
    .execute(&mut *tx)
    .await?;
    let change = Change {
        status: Status::OrderCreated,
        source,
        occurred_at: now,
        reason: None,
        relay: Some((CallbackType::StatusChanged, format)),
    };
    record_change(tx, id, previous, change, now).await
}

/// Records the item code of the handoff's order, once Vietnam Post reports it.
async fn fill_tracking_number(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    tracking_number: &str,
    now: jiff::Timestamp,
) -> Result<bool, StoreError> {
    let filled = sqlx::query(
        "UPDATE handoffs SET tracking_number = ?, updated_at = ? \
         WHERE id = ? AND tracking_number IS NULL",
    )
    .bind(tracking_number)
    .bind(ms(now))
    .bind(id.as_str())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(filled == 1)
}

/// Queues the cancellation of an order made for the handoff that it does not
/// own. True when queued now; false when it was queued before.
pub(super) async fn queue_order_cancel(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    original_id: &str,
    now: jiff::Timestamp,
) -> Result<bool, StoreError> {
    let queued = sqlx::query(
        "INSERT INTO postal_jobs (handoff_id, operation, target, state, next_attempt_at, \
         created_at, updated_at) VALUES (?, 'cancel_duplicate', ?, 'pending', ?, ?, ?) \
         ON CONFLICT DO NOTHING",
    )
    .bind(id.as_str())
    .bind(original_id)
    .bind(ms(now))
    .bind(ms(now))
    .bind(ms(now))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(queued == 1)
}

/// Clears what may echo a citizen's personal data besides the request
/// details: stored carrier answers, Vietnam Post's refusal texts (on the
/// handoff, its timeline, its jobs, a refusal awaiting its confirming
/// lookup included) and the reason inside its
/// callback bodies. Operators' notes on the timeline stay.
pub(super) async fn clear_stored_carrier_answers(
    tx: &mut sqlx::SqliteConnection,
    id: &str,
    tracking_number: Option<&str>,
) -> Result<(), StoreError> {
    use crate::domain::callback::{PURGED_TEXT, purge_reason};
    sqlx::query(
        "UPDATE timeline SET raw = NULL, \
         reason = CASE WHEN reason IS NULL OR operator IS NOT NULL THEN reason ELSE ?2 END \
         WHERE handoff_id = ?1",
    )
    .bind(id)
    .bind(PURGED_TEXT)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE handoffs SET reason = ?2 WHERE id = ?1 AND reason IS NOT NULL")
        .bind(id)
        .bind(PURGED_TEXT)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE postal_jobs SET refusal = NULL, last_error = NULL WHERE handoff_id = ?1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let bodies = sqlx::query("SELECT id, body, content_type FROM callbacks WHERE handoff_id = ?1")
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    for row in &bodies {
        let body: Vec<u8> = row.try_get("body")?;
        let content_type: String = row.try_get("content_type")?;
        if let Some(purged) = purge_reason(&body, &content_type) {
            let callback: String = row.try_get("id")?;
            sqlx::query("UPDATE callbacks SET body = ?1 WHERE id = ?2")
                .bind(purged)
                .bind(callback)
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(
        "UPDATE carrier_inbox SET raw = NULL WHERE raw IS NOT NULL \
         AND (instr(raw, ?1) > 0 OR (?2 IS NOT NULL AND instr(raw, ?2) > 0))",
    )
    .bind(id)
    .bind(tracking_number)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Ends a create job that is not in flight.
async fn stop_create_job(
    tx: &mut sqlx::SqliteConnection,
    id: &HandoffId,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE postal_jobs SET state = 'done', last_error = 'stopped by a cancel', updated_at = ?1 \
         WHERE handoff_id = ?2 AND operation = 'create' AND +state IN ('pending', 'dead') \
         AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)",
    )
    .bind(ms(now))
    .bind(id.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Depth, oldest age and dead letters of a queue table.
async fn queue_stats(
    pool: &SqlitePool,
    table: &'static str,
    now: jiff::Timestamp,
) -> Result<QueueStats, StoreError> {
    let sql = format!(
        "SELECT COUNT(*) FILTER (WHERE state = 'pending') AS depth, \
         MIN(created_at) FILTER (WHERE state = 'pending') AS oldest, \
         COUNT(*) FILTER (WHERE state = 'dead') AS dead FROM {table}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(pool)
        .await?;
    let oldest: Option<i64> = row.try_get("oldest")?;
    Ok(QueueStats {
        depth: row.try_get::<i64, _>("depth")? as u64,
        oldest_age_s: oldest.map_or(0.0, |o| ((ms(now) - o).max(0) as f64) / 1000.0),
        dead: row.try_get::<i64, _>("dead")? as u64,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %new.id))]
    async fn create_handoff(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError> {
        self.intake.create(new).await
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn handoff(
        &self,
        client: Option<&str>,
        id: &HandoffId,
    ) -> Result<Option<Handoff>, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = ?1 AND (?2 IS NULL OR client = ?2)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .bind(client)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(handoff_from_row).transpose()
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn timeline(&self, id: &HandoffId) -> Result<Vec<TimelineEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT sequence, status, effect, occurred_at, source, carrier_code, carrier_text, \
             carrier_location, reason, operator FROM timeline WHERE handoff_id = ? ORDER BY id",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(timeline_from_row).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn list_handoffs(
        &self,
        filter: &HandoffFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs \
             WHERE (?1 IS NULL OR client = ?1) AND (?2 IS NULL OR dossier_code = ?2) \
             AND (?3 IS NULL OR request_id = ?3) AND (?4 IS NULL OR status = ?4) \
             AND (?5 IS NULL OR tracking_number = ?5) AND (?6 IS NULL OR id < ?6) \
             ORDER BY id DESC LIMIT ?7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.client.as_deref())
            .bind(filter.dossier_code.as_deref())
            .bind(filter.request_id.as_deref())
            .bind(filter.status.map(Status::as_str))
            .bind(filter.tracking_number.as_deref())
            .bind(cursor)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let items = rows
            .iter()
            .map(handoff_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let (items, next_cursor) = super::cut_page(items, limit, |h| h.id.to_string());
        Ok(Page { items, next_cursor })
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn request_cancel(
        &self,
        client: &str,
        id: &HandoffId,
        format: BodyFormat,
        now: jiff::Timestamp,
    ) -> Result<super::CancelRequest, StoreError> {
        use super::CancelRequest;
        let now_ms = ms(now);
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE handoffs SET id = id WHERE 0")
            .execute(&mut *tx)
            .await?;
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS}, cancel_requested_at FROM handoffs WHERE id = ? AND client = ?"
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .bind(client)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(CancelRequest::NotFound);
        };
        let handoff = handoff_from_row(&row)?;
        let asked_before: Option<i64> = row.try_get("cancel_requested_at")?;
        if asked_before.is_some() {
            return Ok(CancelRequest::Accepted(handoff));
        }
        if !handoff.status.is_cancellable() {
            return Ok(CancelRequest::NotAllowed(handoff));
        }
        sqlx::query("UPDATE handoffs SET cancel_requested_at = ? WHERE id = ?")
            .bind(now_ms)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        let entry = TimelineDraft {
            source: Source::Intake,
            status: None,
            effect: Effect::Annotation,
            sequence: None,
            occurred_at: now,
            carrier: None,
            reason: Some("cancel requested"),
            raw: None,
        };
        insert_timeline(&mut tx, id, &entry, now).await?;
        // A create job that never called Vietnam Post and is not in flight
        // can simply stop: there is no order to cancel.
        let untouched = sqlx::query(
            "UPDATE postal_jobs SET state = 'done', last_error = 'stopped by a cancel', updated_at = ?1 \
             WHERE handoff_id = ?2 AND operation = 'create' AND +state = 'pending' AND first_create_at IS NULL \
             AND attempt_started_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)",
        )
        .bind(now_ms)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if untouched == 1 && handoff.status == Status::Received {
            if let Some(previous) = move_handoff(
                &mut tx,
                id,
                &[Status::Received],
                Status::Cancelled,
                None,
                now,
            )
            .await?
            {
                let change = Change {
                    status: Status::Cancelled,
                    source: Source::Gateway,
                    occurred_at: now,
                    reason: None,
                    relay: Some((CallbackType::StatusChanged, format)),
                };
                record_change(&mut tx, id, previous, change, now).await?;
            }
        } else {
            stop_create_job(&mut tx, id, now).await?;
            sqlx::query(
                "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
                 VALUES (?, 'cancel', 'pending', ?, ?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(id.as_str())
            .bind(now_ms)
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let sql = format!("SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let handoff = handoff_from_row(&row)?;
        tx.commit().await?;
        Ok(CancelRequest::Accepted(handoff))
    }

    async fn quiet_handoffs(
        &self,
        quiet_since: jiff::Timestamp,
        cod_since: jiff::Timestamp,
        limit: u32,
    ) -> Result<Vec<super::QuietHandoff>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id, client, created_at, tracking_number, carrier_original_id FROM handoffs \
             WHERE (tracking_number IS NOT NULL OR carrier_original_id IS NOT NULL) \
             AND (status NOT IN ({terminal}) \
                  OR (status = 'delivered' AND kind = 'return' AND cod_amount_vnd > 0 AND cod_settled = 0 \
                      AND COALESCE(delivered_at, terminal_at) > ?3)) \
             AND MAX(COALESCE(last_carrier_event_at, 0), COALESCE(polled_at, 0), COALESCE(order_created_at, 0)) <= ?1 \
             ORDER BY MAX(COALESCE(last_carrier_event_at, 0), COALESCE(polled_at, 0)) LIMIT ?2",
            terminal = *super::shared::TERMINAL_STATUSES
        )))
        .bind(ms(quiet_since))
        .bind(i64::from(limit))
        .bind(ms(cod_since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(super::QuietHandoff {
                    id: super::shared::handoff_id(r.try_get("id")?)?,
                    client: r.try_get("client")?,
                    created_at: from_ms(r.try_get("created_at")?)?,
                    tracking_number: r.try_get("tracking_number")?,
                    original_id: r.try_get("carrier_original_id")?,
                })
            })
            .collect()
    }

    async fn count_cod_unsettled(&self, cod_since: jiff::Timestamp) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM handoffs WHERE status = 'delivered' AND kind = 'return' \
             AND cod_amount_vnd > 0 AND cod_settled = 0 AND COALESCE(delivered_at, terminal_at) <= ?",
        )
        .bind(ms(cod_since))
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn record_tracking_number(
        &self,
        id: &HandoffId,
        original_id: &str,
        tracking_number: &str,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let filled = sqlx::query(
            "UPDATE handoffs SET tracking_number = ?, updated_at = ? \
             WHERE id = ? AND carrier_original_id = ? AND tracking_number IS NULL",
        )
        .bind(tracking_number)
        .bind(ms(now))
        .bind(id.as_str())
        .bind(original_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(filled == 1)
    }

    async fn mark_polled(&self, id: &HandoffId, now: jiff::Timestamp) -> Result<(), StoreError> {
        sqlx::query("UPDATE handoffs SET polled_at = ? WHERE id = ?")
            .bind(ms(now))
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn purge_personal_data(
        &self,
        cutoff: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let purged = sqlx::query(
            "UPDATE handoffs SET details = NULL, personal_data_erased_at = ?1 \
             WHERE personal_data_erased_at IS NULL AND terminal_at IS NOT NULL AND terminal_at <= ?2 \
             AND (sla_due_at IS NULL OR sla_due_at <= ?2) \
             AND status <> 'failed' RETURNING id, tracking_number",
        )
        .bind(ms(now))
        .bind(ms(cutoff))
        .fetch_all(&mut *tx)
        .await?;
        for row in &purged {
            let id: String = row.try_get("id")?;
            let tracking: Option<String> = row.try_get("tracking_number")?;
            clear_stored_carrier_answers(&mut tx, &id, tracking.as_deref()).await?;
        }
        tx.commit().await?;
        if !purged.is_empty() {
            // secure_delete zeroes freed content in the database file; the
            // checkpoint moves the zeroed pages there and truncates the WAL,
            // which still held the old page images.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
            tracing::info!(purged = purged.len(), "personal data purged");
        }
        Ok(purged.len() as u64)
    }

    async fn record_sla_breaches(&self, now: jiff::Timestamp) -> Result<Vec<Kind>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE handoffs SET sla_breached_at = ?1 WHERE sla_breached_at IS NULL AND sla_due_at IS NOT NULL \
             AND ((sla_reached_at IS NULL AND sla_due_at < ?1 \
                   AND status NOT IN ({terminal})) \
                  OR sla_reached_at > sla_due_at) \
             RETURNING kind",
            terminal = *super::shared::TERMINAL_STATUSES
        )))
        .bind(ms(now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse::<Kind>("kind", r.try_get("kind")?))
            .collect()
    }

    async fn handoff_counts(&self) -> Result<Vec<(Kind, Status, u64)>, StoreError> {
        let rows =
            sqlx::query("SELECT kind, status, COUNT(*) AS n FROM handoffs GROUP BY kind, status")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    parse::<Kind>("kind", r.try_get("kind")?)?,
                    parse::<Status>("status", r.try_get("status")?)?,
                    r.try_get::<i64, _>("n")? as u64,
                ))
            })
            .collect()
    }

    async fn count_handoffs(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM handoffs")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn count_pending_postal_jobs(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM postal_jobs WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    #[tracing::instrument(skip_all)]
    async fn claim_postal_jobs(
        &self,
        owner: &str,
        now: jiff::Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<PostalJob>, StoreError> {
        let now_ms = ms(now);
        let expires = now_ms + lease.as_millis() as i64;
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE postal_jobs SET lease_owner = ?1, lease_expires_at = ?2 WHERE id IN ( \
               SELECT id FROM postal_jobs WHERE state = 'pending' AND next_attempt_at <= ?3 \
               AND (lease_expires_at IS NULL OR lease_expires_at <= ?3) \
               ORDER BY next_attempt_at LIMIT ?4) \
             RETURNING id, handoff_id, operation, target, attempts, next_step, first_attempt_at, \
               first_create_at, refusal, attempt_started_at",
        )
        .bind(owner)
        .bind(expires)
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        // The claimed jobs' handoffs, read in one statement.
        let ids = rows
            .iter()
            .map(|r| r.try_get::<&str, _>("handoff_id"))
            .collect::<Result<Vec<_>, _>>()?;
        let ids = serde_json::to_string(&ids)
            .map_err(|e| StoreError::Corrupt(format!("handoff ids: {e}")))?;
        let handoffs = sqlx::query(sqlx::AssertSqlSafe(CLAIMED_HANDOFFS.as_str()))
            .bind(ids)
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
        let handoffs: std::collections::HashMap<String, sqlx::sqlite::SqliteRow> = handoffs
            .into_iter()
            .map(|h| Ok((h.try_get::<String, _>("id")?, h)))
            .collect::<Result<_, sqlx::Error>>()?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let handoff_id: &str = row.try_get("handoff_id")?;
            let h = handoffs.get(handoff_id).ok_or_else(|| {
                StoreError::Corrupt(format!("job of a missing handoff {handoff_id}"))
            })?;
            let details: Option<String> = h.try_get("details")?;
            let request = details
                .map(|d| serde_json::from_str(&d))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("details of {handoff_id}: {e}")))?;
            jobs.push(PostalJob {
                id: row.try_get("id")?,
                operation: PostalOperation::from_db(row.try_get("operation")?)?,
                target: row.try_get("target")?,
                attempts: row.try_get::<i64, _>("attempts")? as u32,
                step: parse("next_step", row.try_get("next_step")?)?,
                first_attempt_at: opt_ms(row.try_get("first_attempt_at")?)?,
                first_create_at: opt_ms(row.try_get("first_create_at")?)?,
                refusal: row.try_get("refusal")?,
                interrupted_at: opt_ms(row.try_get("attempt_started_at")?)?,
                lease_expires_at: from_ms(expires)?,
                handoff: handoff_from_row(h)?,
                original_id: h.try_get("carrier_original_id")?,
                create_started_at: opt_ms(h.try_get("create_started_at")?)?,
                create_in_flight: h.try_get::<i64, _>("create_in_flight")? > 0,
                cancel_requested: h.try_get("cancel_requested")?,
                request,
            });
        }
        tx.commit().await?;
        Ok(jobs)
    }

    async fn start_postal_attempt(
        &self,
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        must_remain: Duration,
    ) -> Result<bool, StoreError> {
        let write = StartAttempt::new(job, owner, now, must_remain);
        self.writes.commit(Write::Start(write)).await
    }

    async fn finish_postal_job(
        &self,
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: PostalOutcome,
    ) -> Result<bool, StoreError> {
        let write = FinishPostal::new(job, owner, now, outcome);
        self.writes.commit(Write::FinishPostal(write)).await
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn settle_orders(
        &self,
        id: &HandoffId,
        orders: &[crate::domain::PostalOrder],
        format: BodyFormat,
        now: jiff::Timestamp,
    ) -> Result<Vec<super::SettledOrder>, StoreError> {
        use super::shared::{OrderWrite, settle_plan};
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE handoffs SET id = id WHERE 0")
            .execute(&mut *tx)
            .await?;
        let Some(row) = sqlx::query(
            "SELECT status, carrier_original_id, tracking_number FROM handoffs WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(Vec::new());
        };
        let status: Status = parse("status", row.try_get("status")?)?;
        let own_original: Option<String> = row.try_get("carrier_original_id")?;
        let own_tracking: Option<String> = row.try_get("tracking_number")?;
        let plan = settle_plan(
            status,
            own_original.as_deref(),
            own_tracking.as_deref(),
            orders,
        );
        let mut settled = Vec::with_capacity(plan.len());
        for (fate, write) in plan {
            let mut cancel_queued = false;
            match write {
                OrderWrite::Adopt(order) => {
                    adopt(&mut tx, id, order, status, format, Source::Gateway, now).await?;
                }
                OrderWrite::FillTracking(tracking) => {
                    fill_tracking_number(&mut tx, id, tracking, now).await?;
                }
                OrderWrite::Cancel(original_id) => {
                    cancel_queued = queue_order_cancel(&mut tx, id, original_id, now).await?;
                }
                OrderWrite::Nothing => {}
            }
            settled.push(super::SettledOrder {
                fate,
                cancel_queued,
            });
        }
        tx.commit().await?;
        Ok(settled)
    }

    async fn postal_queue_stats(&self, now: jiff::Timestamp) -> Result<QueueStats, StoreError> {
        queue_stats(&self.pool, "postal_jobs", now).await
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn apply_carrier_events(
        &self,
        events: Vec<IncomingCarrierEvent>,
        context: &super::EventContext,
        now: jiff::Timestamp,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Take the write lock first so the reads below see a stable store.
        sqlx::query("UPDATE handoffs SET id = id WHERE 0")
            .execute(&mut *tx)
            .await?;
        let mut outcomes = Vec::with_capacity(events.len());
        for incoming in &events {
            outcomes.push(apply_one(&mut tx, incoming, context, now).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn store_malformed(
        &self,
        source: Source,
        raw: &str,
        problem: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO carrier_inbox (source, received_at, problem, raw) VALUES (?, ?, ?, ?)",
        )
        .bind(source.as_str())
        .bind(ms(now))
        .bind(problem)
        .bind(raw)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn claim_callbacks(
        &self,
        owner: &str,
        now: jiff::Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<CallbackJob>, StoreError> {
        let now_ms = ms(now);
        let rows = sqlx::query(CLAIM_CALLBACKS)
            .bind(owner)
            .bind(now_ms + lease.as_millis() as i64)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("handoff_id")?;
                Ok(CallbackJob {
                    id: r.try_get("id")?,
                    handoff_id: HandoffId::parse(&id)
                        .ok_or_else(|| StoreError::Corrupt(format!("id {id:?}")))?,
                    client: r.try_get("client")?,
                    sequence: r.try_get::<i64, _>("sequence")? as u64,
                    body: r.try_get("body")?,
                    content_type: r.try_get("content_type")?,
                    attempts: r.try_get::<i64, _>("attempts")? as u32,
                    head_since: from_ms(r.try_get("head_since")?)?,
                })
            })
            .collect()
    }

    async fn finish_callback(
        &self,
        job: &CallbackJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: CallbackOutcome,
    ) -> Result<bool, StoreError> {
        let write = FinishCallback::new(job, owner, now, outcome);
        self.writes.commit(Write::FinishCallback(write)).await
    }

    async fn replay_dead_callbacks(
        &self,
        id: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        admin::requeue_dead(&mut conn, id, now).await
    }

    async fn callback_queue_stats(&self, now: jiff::Timestamp) -> Result<QueueStats, StoreError> {
        queue_stats(&self.pool, "callbacks", now).await
    }

    async fn callbacks_of(
        &self,
        id: &HandoffId,
    ) -> Result<Vec<(u64, String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT sequence, event_type, body FROM callbacks WHERE handoff_id = ? ORDER BY sequence",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("sequence")? as u64,
                    r.try_get("event_type")?,
                    r.try_get("body")?,
                ))
            })
            .collect()
    }

    async fn release_leases(&self, owners: &[&str]) -> Result<u64, StoreError> {
        let mut released = 0;
        for owner in owners {
            for table in ["postal_jobs", "callbacks"] {
                let sql = format!(
                    "UPDATE {table} SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?"
                );
                released += sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(*owner)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
            }
        }
        Ok(released)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
