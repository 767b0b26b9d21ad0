//! The SQLite store's writes, run on the writer's connection (`writer`):
//! each function is part of one unit, inside the writer's transaction, so
//! none commits on its own and none waits for the write lock.

use std::sync::LazyLock;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::domain::callback::{BodyFormat, CallbackType};
use crate::domain::state_machine::SeenEvent;
use crate::domain::{Effect, Handoff, HandoffId, Kind, Source, Status};
use crate::store::carrier_events::{
    self, EntryRef, EventHandoff, NewCallback, SNAPSHOT_COLUMNS, SeenRow, Value,
};
use crate::store::shared::{
    AWAITING_ORDER, CallbackDraft, Change, HANDOFF_COLUMNS, OrderWrite, Settlement, TAKE_SEQUENCE,
    TERMINAL_STATUSES, TimelineDraft, handoff_from_row, opt_ms, parse, settle_plan,
};
use crate::store::{
    CallbackJob, CallbackOutcome, CancelRequest, EventContext, EventOutcome, HandoffKey,
    IncomingCarrierEvent, PostalJob, PostalOperation, PostalOutcome, SettledOrder, StoreError,
    from_ms, ms,
};

/// A handoff's row as every answer shows it.
pub(super) static SELECT_HANDOFF: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = ?1"));

/// The handoff as it is now in the transaction.
pub(super) fn read_handoff(c: &Connection, id: &HandoffId) -> Result<Handoff, StoreError> {
    let mut select = c.prepare_cached(&SELECT_HANDOFF)?;
    let mut rows = select.query([id.as_str()])?;
    match rows.next()? {
        Some(row) => handoff_from_row(row),
        None => Err(StoreError::Corrupt(format!("handoff {id} vanished"))),
    }
}

/// Records `change` for the handoff (already updated): a timeline entry and,
/// when relayed, its callback with the next sequence.
pub(super) fn record_change(
    c: &Connection,
    id: &HandoffId,
    previous: Status,
    change: Change<'_>,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    let sequence = match change.callback(previous) {
        Some((draft, format)) => Some(queue_callback(c, id, &draft, format, now)?),
        None => None,
    };
    insert_timeline(c, id, &change.entry(sequence), now)
}

/// Queues a callback with the handoff's next sequence (body fixed now, from
/// the handoff as updated) and returns that sequence.
pub(super) fn queue_callback(
    c: &Connection,
    id: &HandoffId,
    draft: &CallbackDraft<'_>,
    format: BodyFormat,
    now: jiff::Timestamp,
) -> Result<i64, StoreError> {
    // Takes the sequence and reads the handoff in one statement.
    let (handoff, sequence) = {
        let mut take = c.prepare_cached(&TAKE_SEQUENCE)?;
        let mut rows = take.query([id.as_str()])?;
        let row = rows
            .next()?
            .ok_or_else(|| StoreError::Corrupt(format!("handoff {id} vanished")))?;
        (handoff_from_row(row)?, row.get::<_, i64>("next_sequence")?)
    };
    insert_callback(c, &handoff, sequence, draft, format, now)?;
    Ok(sequence)
}

/// A callback with nothing undelivered before it is the head of its
/// handoff's queue from now on: `head_since` marks the heads, so claims
/// search the heads alone (`callbacks_heads_due`), and its retry deadline
/// runs from here. The others get theirs when the one before is delivered
/// (`NEW_HEAD`) or replayed. One writer runs one transaction at a time, so
/// no delivery can slip between the check and the insert.
const INSERT_CALLBACK: &str = "INSERT INTO callbacks (id, handoff_id, client, sequence, event_type, body, content_type, \
     state, next_attempt_at, created_at, head_since) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8, \
     CASE WHEN EXISTS (SELECT 1 FROM callbacks p WHERE p.handoff_id = ?2 AND p.sequence < ?4 \
                       AND p.state <> 'delivered') THEN NULL ELSE ?8 END)";

/// Queues the callback with `sequence`, its body fixed now from `handoff`.
pub(super) fn insert_callback(
    c: &Connection,
    handoff: &Handoff,
    sequence: i64,
    draft: &CallbackDraft<'_>,
    format: BodyFormat,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    let (body, content_type) = draft.event(handoff, sequence).render(format);
    let callback = NewCallback {
        handoff_id: handoff.id.clone(),
        client: handoff.client.clone(),
        sequence,
        event_type: draft.event_type,
        body,
        content_type,
    };
    insert_new_callback(c, &callback, now)
}

/// Queues a callback whose body is rendered.
fn insert_new_callback(
    c: &Connection,
    callback: &NewCallback,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(INSERT_CALLBACK)?.execute(params![
        format!("msg_{}", ulid::Ulid::new()),
        callback.handoff_id.as_str(),
        callback.client,
        callback.sequence,
        callback.event_type.as_str(),
        callback.body,
        callback.content_type,
        ms(now),
    ])?;
    Ok(())
}

/// `?13`: the entry's item code is `?14` (a planned entry knows the one its
/// handoff had then), else the handoff's as it is now.
const INSERT_TIMELINE: &str = "INSERT INTO timeline (handoff_id, source, status, effect, sequence, occurred_at, recorded_at, \
     tracking_number, carrier_code, carrier_text, carrier_location, reason, raw) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, \
     CASE WHEN ?13 THEN ?14 ELSE (SELECT tracking_number FROM handoffs WHERE id = ?1) END, \
     ?8, ?9, ?10, ?11, ?12)";

pub(super) fn insert_timeline(
    c: &Connection,
    id: &HandoffId,
    e: &TimelineDraft<'_>,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    insert_entry(c, id, None, e, now)
}

/// Inserts `e`, with `tracking` as its item code when given (else the
/// handoff's).
fn insert_entry(
    c: &Connection,
    id: &HandoffId,
    tracking: Option<Option<&str>>,
    e: &TimelineDraft<'_>,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(INSERT_TIMELINE)?.execute(params![
        id.as_str(),
        e.source.as_str(),
        e.status.map(Status::as_str),
        e.effect.as_str(),
        e.sequence,
        ms(e.occurred_at),
        ms(now),
        e.carrier.map(|c| c.code),
        e.carrier.and_then(|c| c.text.as_deref()),
        e.carrier.and_then(|c| c.location.as_deref()),
        e.reason,
        e.raw,
        tracking.is_some(),
        tracking.flatten(),
    ])?;
    Ok(())
}

/// The handoff's status, when it exists.
pub(super) fn status_of(c: &Connection, id: &HandoffId) -> Result<Option<Status>, StoreError> {
    let current: Option<String> = c
        .prepare_cached("SELECT status FROM handoffs WHERE id = ?1")?
        .query_row([id.as_str()], |r| r.get(0))
        .optional()?;
    current.map(|s| parse("status", &s)).transpose()
}

/// Sets a handoff's status when it is still one of `from`; the status it had
/// when it was.
pub(super) fn move_handoff(
    c: &Connection,
    id: &HandoffId,
    from: &[Status],
    to: Status,
    reason: Option<&str>,
    now: jiff::Timestamp,
) -> Result<Option<Status>, StoreError> {
    let Some(current) = status_of(c, id)? else {
        return Ok(None);
    };
    if !from.contains(&current) {
        return Ok(None);
    }
    c.prepare_cached(
        "UPDATE handoffs SET status = ?1, reason = ?2, updated_at = ?3, \
         terminal_at = CASE WHEN ?4 THEN ?3 ELSE terminal_at END WHERE id = ?5",
    )?
    .execute(params![
        to.as_str(),
        reason,
        ms(now),
        to.is_terminal(),
        id.as_str()
    ])?;
    Ok(Some(current))
}

/// Adopts an order revealed for a handoff that has none (domain.md rule 2):
/// records it, relays `order_created`, and ends the create job.
fn adopt(
    c: &Connection,
    id: &HandoffId,
    order: &crate::domain::PostalOrder,
    previous: Status,
    format: BodyFormat,
    source: Source,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE handoffs SET status = 'order_created', reason = NULL, tracking_number = ?1, \
         carrier_order_id = ?2, carrier_original_id = ?3, postage_vnd = COALESCE(?4, postage_vnd), \
         order_created_at = ?5, updated_at = ?5, terminal_at = NULL WHERE id = ?6",
    )?
    .execute(params![
        order.tracking_number.as_deref(),
        order.order_id,
        order.original_id,
        order.postage_vnd,
        ms(now),
        id.as_str(),
    ])?;
    end_create_job(c, id, now)?;
    let change = Change::adoption(source, now, format);
    record_change(c, id, previous, change, now)
}

/// Ends the create job of a handoff whose order is known, in flight or not:
/// its answer, when it comes, finds the order adopted.
fn end_create_job(c: &Connection, id: &HandoffId, now: jiff::Timestamp) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE postal_jobs SET state = 'done', lease_owner = NULL, lease_expires_at = NULL, \
         attempt_started_at = NULL, updated_at = ?1 WHERE handoff_id = ?2 AND operation = 'create' \
         AND state IN ('pending', 'dead')",
    )?
    .execute(params![ms(now), id.as_str()])?;
    Ok(())
}

/// Records the item code of the handoff's order, once Vietnam Post reports
/// it; with `original_id`, only when that order is the handoff's own. True
/// when the handoff had none before.
pub(super) fn fill_tracking_number(
    c: &Connection,
    id: &HandoffId,
    original_id: Option<&str>,
    tracking_number: &str,
    now: jiff::Timestamp,
) -> Result<bool, StoreError> {
    let filled = c
        .prepare_cached(
            "UPDATE handoffs SET tracking_number = ?1, updated_at = ?2 WHERE id = ?3 \
             AND tracking_number IS NULL AND (?4 IS NULL OR carrier_original_id = ?4)",
        )?
        .execute(params![tracking_number, ms(now), id.as_str(), original_id])?;
    Ok(filled == 1)
}

/// Queues the cancellation of an order made for the handoff that it does not
/// own. True when queued now; false when it was queued before.
fn queue_order_cancel(
    c: &Connection,
    id: &HandoffId,
    original_id: &str,
    now: jiff::Timestamp,
) -> Result<bool, StoreError> {
    let queued = c
        .prepare_cached(
            "INSERT INTO postal_jobs (handoff_id, operation, target, state, next_attempt_at, \
             created_at, updated_at) VALUES (?1, 'cancel_duplicate', ?2, 'pending', ?3, ?3, ?3) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![id.as_str(), original_id, ms(now)])?;
    Ok(queued == 1)
}

/// Clears what may echo a citizen's personal data besides the request
/// details: stored carrier answers, Vietnam Post's refusal texts (on the
/// handoff, its timeline, its jobs, a refusal awaiting its confirming
/// lookup included) and the reason inside its callback bodies. Operators'
/// notes on the timeline stay.
pub(super) fn clear_stored_carrier_answers(
    c: &Connection,
    id: &str,
    tracking_number: Option<&str>,
) -> Result<(), StoreError> {
    use crate::domain::callback::{PURGED_TEXT, purge_reason};
    c.prepare_cached(
        "UPDATE timeline SET raw = NULL, \
         reason = CASE WHEN reason IS NULL OR operator IS NOT NULL THEN reason ELSE ?2 END \
         WHERE handoff_id = ?1",
    )?
    .execute(params![id, PURGED_TEXT])?;
    c.prepare_cached("UPDATE handoffs SET reason = ?2 WHERE id = ?1 AND reason IS NOT NULL")?
        .execute(params![id, PURGED_TEXT])?;
    c.prepare_cached(
        "UPDATE postal_jobs SET refusal = NULL, last_error = NULL WHERE handoff_id = ?1",
    )?
    .execute([id])?;
    let bodies: Vec<(String, Vec<u8>, String)> = c
        .prepare_cached("SELECT id, body, content_type FROM callbacks WHERE handoff_id = ?1")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (callback, body, content_type) in &bodies {
        if let Some(purged) = purge_reason(body, content_type) {
            c.prepare_cached("UPDATE callbacks SET body = ?1 WHERE id = ?2")?
                .execute(params![purged, callback])?;
        }
    }
    c.prepare_cached(
        "UPDATE carrier_inbox SET raw = NULL WHERE raw IS NOT NULL \
         AND (instr(raw, ?1) > 0 OR (?2 IS NOT NULL AND instr(raw, ?2) > 0))",
    )?
    .execute(params![id, tracking_number])?;
    Ok(())
}

/// Ends a create job that is not in flight.
pub(super) fn stop_create_job(
    c: &Connection,
    id: &HandoffId,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE postal_jobs SET state = 'done', last_error = 'stopped by a cancel', updated_at = ?1 \
         WHERE handoff_id = ?2 AND operation = 'create' AND +state IN ('pending', 'dead') \
         AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)",
    )?
    .execute(params![ms(now), id.as_str()])?;
    Ok(())
}

/// The handoffs a carrier event's key may match, one statement per key
/// column (`HandoffKey::COLUMNS`), each one indexed lookup, with the carrier
/// events each has seen as one JSON array (`seen_rows`): a statement less
/// per handoff.
pub(super) static EVENT_HANDOFFS: LazyLock<[String; 3]> = LazyLock::new(|| {
    HandoffKey::COLUMNS.map(|column| {
        format!(
            "SELECT {}, (SELECT json_group_array(json_array(t.id, t.source, t.carrier_code, \
             t.occurred_at, t.sequence)) FROM timeline t \
             WHERE t.handoff_id = handoffs.id AND t.carrier_code IS NOT NULL) AS seen \
             FROM handoffs WHERE {column} = ?1",
            *SNAPSHOT_COLUMNS
        )
    })
});

/// The carrier events a handoff has seen, oldest first, from a JSON array
/// of `[id, source, code, occurred_at, sequence]`.
fn seen_rows(json: &str) -> Result<Vec<SeenRow>, StoreError> {
    let mut rows: Vec<(i64, String, i64, i64, Option<i64>)> = serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt(format!("seen carrier events: {e}")))?;
    rows.sort_by_key(|r| r.0);
    rows.into_iter()
        .map(|(id, source, code, at, sequence)| {
            Ok(SeenRow {
                at: EntryRef::Stored(id),
                event: SeenEvent {
                    source: parse("source", &source)?,
                    code,
                    occurred_at: from_ms(at)?,
                },
                sequence,
            })
        })
        .collect()
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Value::Text(v) => v.to_sql(),
            Value::Int(v) => v.to_sql(),
            Value::Flag(v) => v.to_sql(),
        }
    }
}

/// Records a batch of carrier events: loads the handoffs they name, lets
/// [`carrier_events::plan`] decide, and writes the plan.
pub(super) fn apply_events(
    c: &Connection,
    events: &[IncomingCarrierEvent],
    context: &EventContext,
    now: jiff::Timestamp,
) -> Result<Vec<EventOutcome>, StoreError> {
    let mut keys: Vec<HandoffKey<'_>> = Vec::new();
    for key in events.iter().filter_map(IncomingCarrierEvent::handoff_key) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut handoffs: Vec<EventHandoff> = Vec::new();
    for key in &keys {
        let mut select = c.prepare_cached(&EVENT_HANDOFFS[key.index()])?;
        let mut rows = select.query([key.value()])?;
        while let Some(row) = rows.next()? {
            let id: String = row.get("id")?;
            if handoffs.iter().any(|k| k.handoff.id.as_str() == id) {
                continue;
            }
            let mut h = EventHandoff::from_row(row)?;
            h.seen = seen_rows(&row.get::<_, String>("seen")?)?;
            handoffs.push(h);
        }
    }
    let plan = carrier_events::plan(handoffs, events, context, now)?;
    for h in &plan.handoffs {
        // Only what changed: a column named in the statement costs an index
        // write on SQLite even when its value stays.
        let changed = h.changed();
        if changed.is_empty() {
            continue;
        }
        let set: Vec<String> = changed
            .iter()
            .enumerate()
            .map(|(n, (column, _))| format!("{column} = ?{}", n + 2))
            .collect();
        let id = h.handoff.id.as_str();
        let mut cells: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(changed.len() + 1);
        cells.push(&id);
        cells.extend(changed.iter().map(|(_, v)| v as &dyn rusqlite::ToSql));
        c.prepare_cached(&format!(
            "UPDATE handoffs SET {} WHERE id = ?1",
            set.join(", ")
        ))?
        .execute(cells.as_slice())?;
    }
    for id in &plan.stop_create_jobs {
        end_create_job(c, id, now)?;
    }
    let mut queued = Vec::with_capacity(plan.cancels.len());
    for (id, original_id) in &plan.cancels {
        queued.push(queue_order_cancel(c, id, original_id, now)?);
    }
    for e in &plan.timeline {
        insert_entry(
            c,
            &e.handoff_id,
            Some(e.tracking_number.as_deref()),
            &e.draft,
            now,
        )?;
    }
    for (entry, sequence) in &plan.links {
        c.prepare_cached("UPDATE timeline SET sequence = ?1 WHERE id = ?2")?
            .execute(params![sequence, entry])?;
    }
    for callback in &plan.callbacks {
        insert_new_callback(c, callback, now)?;
    }
    Ok(plan.outcomes(&queued))
}

/// Records, for a handoff, the orders a lookup found (`settle_plan` decides).
pub(super) fn settle_orders(
    c: &Connection,
    id: &HandoffId,
    orders: &[crate::domain::PostalOrder],
    format: BodyFormat,
    now: jiff::Timestamp,
) -> Result<Vec<SettledOrder>, StoreError> {
    let found = c
        .prepare_cached(
            "SELECT status, carrier_original_id, tracking_number FROM handoffs WHERE id = ?1",
        )?
        .query_row([id.as_str()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .optional()?;
    let Some((status, own_original, own_tracking)) = found else {
        return Ok(Vec::new());
    };
    let status: Status = parse("status", &status)?;
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
                adopt(c, id, order, status, format, Source::Gateway, now)?;
            }
            OrderWrite::FillTracking(tracking) => {
                fill_tracking_number(c, id, None, tracking, now)?;
            }
            OrderWrite::Cancel(original_id) => {
                cancel_queued = queue_order_cancel(c, id, original_id, now)?;
            }
            OrderWrite::Nothing => {}
        }
        settled.push(SettledOrder {
            fate,
            cancel_queued,
        });
    }
    Ok(settled)
}

/// The handoffs of claimed postal jobs, with what a job needs to know of the
/// handoff's create job. `+j.state`: without it SQLite searched the subquery
/// through postal_jobs_due (every pending job) instead of the handoff's own
/// jobs, so each claim cost O(backlog) (docs/benchmarks.md).
static CLAIMED_HANDOFF: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {HANDOFF_COLUMNS}, details, carrier_original_id, \
         cancel_requested_at IS NOT NULL AS cancel_requested, \
         (SELECT first_create_at FROM postal_jobs j WHERE j.handoff_id = handoffs.id AND j.operation = 'create') AS create_started_at, \
         (SELECT COUNT(*) FROM postal_jobs j WHERE j.handoff_id = handoffs.id AND j.operation = 'create' \
            AND +j.state = 'pending' AND j.lease_expires_at > ?2) AS create_in_flight \
         FROM handoffs WHERE id = ?1"
    )
});

const CLAIM_POSTAL_JOBS: &str = "UPDATE postal_jobs SET lease_owner = ?1, lease_expires_at = ?2 WHERE id IN ( \
       SELECT id FROM postal_jobs WHERE state = 'pending' AND next_attempt_at <= ?3 \
       AND (lease_expires_at IS NULL OR lease_expires_at <= ?3) \
       ORDER BY next_attempt_at LIMIT ?4) \
     RETURNING id, handoff_id, operation, target, attempts, next_step, first_attempt_at, \
       first_create_at, refusal, attempt_started_at";

/// Leases up to `limit` due postal jobs to `owner`, each with its handoff.
pub(super) fn claim_postal_jobs(
    c: &Connection,
    owner: &str,
    now: jiff::Timestamp,
    lease: Duration,
    limit: u32,
) -> Result<Vec<PostalJob>, StoreError> {
    let now_ms = ms(now);
    let expires = now_ms + lease.as_millis() as i64;
    let mut claim = c.prepare_cached(CLAIM_POSTAL_JOBS)?;
    let mut claimed = claim.query(params![owner, expires, now_ms, i64::from(limit)])?;
    let mut read = c.prepare_cached(&CLAIMED_HANDOFF)?;
    let mut jobs = Vec::new();
    while let Some(row) = claimed.next()? {
        let handoff_id: String = row.get("handoff_id")?;
        let mut handoffs = read.query(params![handoff_id, now_ms])?;
        let h = handoffs
            .next()?
            .ok_or_else(|| StoreError::Corrupt(format!("job of a missing handoff {handoff_id}")))?;
        let details: Option<String> = h.get("details")?;
        let request = details
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("details of {handoff_id}: {e}")))?;
        jobs.push(PostalJob {
            id: row.get("id")?,
            operation: PostalOperation::from_db(&row.get::<_, String>("operation")?)?,
            target: row.get("target")?,
            attempts: row.get::<_, i64>("attempts")? as u32,
            step: parse("next_step", &row.get::<_, String>("next_step")?)?,
            first_attempt_at: opt_ms(row.get("first_attempt_at")?)?,
            first_create_at: opt_ms(row.get("first_create_at")?)?,
            refusal: row.get("refusal")?,
            interrupted_at: opt_ms(row.get("attempt_started_at")?)?,
            lease_expires_at: from_ms(expires)?,
            handoff: handoff_from_row(h)?,
            original_id: h.get("carrier_original_id")?,
            create_started_at: opt_ms(h.get("create_started_at")?)?,
            create_in_flight: h.get::<_, i64>("create_in_flight")? > 0,
            cancel_requested: h.get("cancel_requested")?,
            request,
        });
    }
    Ok(jobs)
}

/// Leases the due heads of the callback queues, oldest first: only heads
/// carry `head_since` (see `INSERT_CALLBACK`), and `callbacks_heads_due`
/// holds just those, so a claim never walks the callbacks waiting behind
/// them (named: the planner preferred `callbacks_due`, which holds them
/// all). The `NOT EXISTS` keeps the order even so.
pub(super) const CLAIM_CALLBACKS: &str = "UPDATE callbacks SET lease_owner = ?1, lease_expires_at = ?2, head_since = COALESCE(head_since, ?3) \
     WHERE id IN (SELECT c.id FROM callbacks c INDEXED BY callbacks_heads_due \
       WHERE c.state = 'pending' AND c.head_since IS NOT NULL \
       AND c.next_attempt_at <= ?3 \
       AND (c.lease_expires_at IS NULL OR c.lease_expires_at <= ?3) \
       AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.handoff_id = c.handoff_id \
                       AND p.sequence < c.sequence AND p.state <> 'delivered') \
       ORDER BY c.next_attempt_at LIMIT ?4) \
     RETURNING id, handoff_id, client, sequence, body, content_type, attempts, head_since";

/// Leases up to `limit` due callbacks to `owner`.
pub(super) fn claim_callbacks(
    c: &Connection,
    owner: &str,
    now: jiff::Timestamp,
    lease: Duration,
    limit: u32,
) -> Result<Vec<CallbackJob>, StoreError> {
    let now_ms = ms(now);
    let mut claim = c.prepare_cached(CLAIM_CALLBACKS)?;
    let mut rows = claim.query(params![
        owner,
        now_ms + lease.as_millis() as i64,
        now_ms,
        i64::from(limit)
    ])?;
    let mut jobs = Vec::new();
    while let Some(r) = rows.next()? {
        let id: String = r.get("handoff_id")?;
        jobs.push(CallbackJob {
            id: r.get("id")?,
            handoff_id: HandoffId::parse(&id)
                .ok_or_else(|| StoreError::Corrupt(format!("id {id:?}")))?,
            client: r.get("client")?,
            sequence: r.get::<_, i64>("sequence")? as u64,
            body: r.get("body")?,
            content_type: r.get("content_type")?,
            attempts: r.get::<_, i64>("attempts")? as u32,
            head_since: from_ms(r.get("head_since")?)?,
        });
    }
    Ok(jobs)
}

/// The start of a postal call, committed before the call is made: the
/// attempt is counted, its start marked when it `calls_create` (kept until
/// its outcome), and only while the lease lasts at least until `until`. True
/// when the lease was held.
pub(super) fn start_postal_attempt(
    c: &Connection,
    job_id: i64,
    calls_create: bool,
    owner: &str,
    now: jiff::Timestamp,
    must_remain: Duration,
) -> Result<bool, StoreError> {
    let now_ms = ms(now);
    let until_ms =
        now_ms.saturating_add(i64::try_from(must_remain.as_millis()).unwrap_or(i64::MAX));
    let held = c
        .prepare_cached(
            "UPDATE postal_jobs SET attempts = attempts + 1, \
             first_attempt_at = COALESCE(first_attempt_at, ?3), \
             first_create_at = CASE WHEN ?4 THEN COALESCE(first_create_at, ?3) ELSE first_create_at END, \
             attempt_started_at = CASE WHEN ?4 THEN ?3 ELSE NULL END, updated_at = ?3 \
             WHERE id = ?1 AND lease_owner = ?2 AND lease_expires_at >= ?5",
        )?
        .execute(params![job_id, owner, now_ms, calls_create, until_ms])?;
    Ok(held == 1)
}

/// What a callback's outcome needs of its claimed job (not its body).
pub(super) struct CallbackRef {
    pub id: String,
    pub handoff_id: HandoffId,
    pub sequence: u64,
}

impl From<&CallbackJob> for CallbackRef {
    fn from(job: &CallbackJob) -> Self {
        Self {
            id: job.id.clone(),
            handoff_id: job.handoff_id.clone(),
            sequence: job.sequence,
        }
    }
}

/// A delivery attempt's outcome, only while its lease is held; the callback
/// behind a delivered one reaches the head of its queue.
pub(super) fn finish_callback(
    c: &Connection,
    job: &CallbackRef,
    owner: &str,
    now: jiff::Timestamp,
    outcome: &CallbackOutcome,
) -> Result<bool, StoreError> {
    let now_ms = ms(now);
    let s = outcome.settlement(now);
    let held =
        c.prepare_cached(
            "UPDATE callbacks SET state = ?3, next_attempt_at = ?4, attempts = attempts + 1, \
             last_status = COALESCE(?5, last_status), last_error = ?6, \
             lease_owner = NULL, lease_expires_at = NULL, \
             delivered_at = CASE WHEN ?3 = 'delivered' THEN ?7 ELSE NULL END \
             WHERE id = ?1 AND lease_owner = ?2 AND lease_expires_at > ?7",
        )?
        .execute(params![
            job.id,
            owner,
            s.state,
            s.next_attempt_at,
            s.status,
            s.error,
            now_ms
        ])? == 1;
    if held && *outcome == CallbackOutcome::Delivered {
        // `+state`: otherwise SQLite searches every pending callback.
        c.prepare_cached(
            "UPDATE callbacks SET head_since = ?3 WHERE handoff_id = ?1 AND sequence = ?2 \
             AND +state = 'pending'",
        )?
        .execute(params![
            job.handoff_id.as_str(),
            job.sequence as i64 + 1,
            now_ms
        ])?;
    }
    Ok(held)
}

/// A postal job's outcome with its effects, only while its lease is held.
pub(super) fn finish_postal_job(
    c: &Connection,
    job_id: i64,
    id: &HandoffId,
    owner: &str,
    now: jiff::Timestamp,
    settled: &Settlement,
    outcome: &PostalOutcome,
) -> Result<bool, StoreError> {
    let now_ms = ms(now);
    let state = settled.state;
    let held = c
        .prepare_cached(
            "UPDATE postal_jobs SET state = ?1, next_step = ?2, next_attempt_at = ?3, refusal = ?4, \
             last_error = COALESCE(?5, last_error), attempt_started_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = ?6 \
             WHERE id = ?7 AND lease_owner = ?8 AND lease_expires_at > ?6",
        )?
        .execute(params![
            state,
            settled.step.as_str(),
            settled.next_attempt_at,
            settled.refusal.as_deref(),
            settled.last_error.as_deref(),
            now_ms,
            job_id,
            owner,
        ])?;
    if held != 1 {
        return Ok(false);
    }
    match outcome {
        PostalOutcome::Adopt {
            order,
            duplicates,
            format,
        } => {
            c.prepare_cached(
                "UPDATE handoffs SET tracking_number = ?1, carrier_order_id = ?2, carrier_original_id = ?3, \
                 postage_vnd = ?4, order_created_at = ?5 WHERE id = ?6 AND status IN ('received', 'failed')",
            )?
            .execute(params![
                order.tracking_number.as_deref(),
                order.order_id,
                order.original_id,
                order.postage_vnd,
                now_ms,
                id.as_str(),
            ])?;
            gateway_change(
                c,
                id,
                AWAITING_ORDER,
                Status::OrderCreated,
                None,
                *format,
                now,
            )?;
            for original_id in duplicates {
                queue_order_cancel(c, id, original_id, now)?;
            }
        }
        PostalOutcome::Reject { reason, format } | PostalOutcome::Fail { reason, format } => {
            let to = if state == "dead" {
                Status::Failed
            } else {
                Status::Rejected
            };
            gateway_change(c, id, &[Status::Received], to, Some(reason), *format, now)?;
        }
        PostalOutcome::Cancelled { format } => {
            stop_create_job(c, id, now)?;
            let from = [
                Status::Received,
                Status::Failed,
                Status::OrderCreated,
                Status::PickingUp,
                Status::PickupAttemptFailed,
            ];
            gateway_change(c, id, &from, Status::Cancelled, None, *format, now)?;
        }
        PostalOutcome::CancelPending { case_id } => {
            let reason = match &case_id {
                Some(c) => format!("cancel pending Vietnam Post's approval (CaseId {c})"),
                None => "cancel pending Vietnam Post's approval".to_owned(),
            };
            let entry = TimelineDraft {
                source: Source::Gateway,
                status: None,
                effect: Effect::Annotation,
                sequence: None,
                occurred_at: now,
                carrier: None,
                reason: Some(&reason),
                raw: None,
            };
            insert_timeline(c, id, &entry, now)?;
        }
        PostalOutcome::CancelRefused { reason, format } => {
            let status = status_of(c, id)?
                .ok_or_else(|| StoreError::Corrupt(format!("handoff {id} vanished")))?;
            let draft = CallbackDraft {
                event_type: CallbackType::CancelRefused,
                status,
                previous: status,
                reason: Some(reason),
                carrier: None,
                occurred_at: now,
                cod: None,
            };
            let sequence = queue_callback(c, id, &draft, *format, now)?;
            let entry = TimelineDraft {
                source: Source::Gateway,
                status: Some(status),
                effect: Effect::Annotation,
                sequence: Some(sequence),
                occurred_at: now,
                carrier: None,
                reason: Some(reason),
                raw: None,
            };
            insert_timeline(c, id, &entry, now)?;
        }
        PostalOutcome::Reschedule { .. } | PostalOutcome::Complete { .. } => {}
    }
    Ok(true)
}

/// A status change the gateway makes, relayed, when the handoff is still one
/// of `from`.
pub(super) fn gateway_change(
    c: &Connection,
    id: &HandoffId,
    from: &[Status],
    to: Status,
    reason: Option<&str>,
    format: BodyFormat,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    if let Some(previous) = move_handoff(c, id, from, to, reason, now)? {
        let change = Change {
            status: to,
            source: Source::Gateway,
            occurred_at: now,
            reason,
            relay: Some((CallbackType::StatusChanged, format)),
        };
        record_change(c, id, previous, change, now)?;
    }
    Ok(())
}

/// Puts dead callbacks (one, or all) back to pending with a fresh retry
/// budget.
pub(super) fn requeue_dead(
    c: &Connection,
    id: Option<&str>,
    now: jiff::Timestamp,
) -> Result<u64, StoreError> {
    let n = c
        .prepare_cached(
            "UPDATE callbacks SET state = 'pending', attempts = 0, next_attempt_at = ?1, head_since = ?1, \
             lease_owner = NULL, lease_expires_at = NULL WHERE state = 'dead' AND (?2 IS NULL OR id = ?2)",
        )?
        .execute(params![ms(now), id])?;
    Ok(n as u64)
}

/// A client's request to cancel its handoff.
pub(super) fn request_cancel(
    c: &Connection,
    client: &str,
    id: &HandoffId,
    format: BodyFormat,
    now: jiff::Timestamp,
) -> Result<CancelRequest, StoreError> {
    static SELECT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {HANDOFF_COLUMNS}, cancel_requested_at FROM handoffs WHERE id = ?1 AND client = ?2"
        )
    });
    let now_ms = ms(now);
    let found = {
        let mut select = c.prepare_cached(&SELECT)?;
        let mut rows = select.query(params![id.as_str(), client])?;
        match rows.next()? {
            Some(row) => Some((
                handoff_from_row(row)?,
                row.get::<_, Option<i64>>("cancel_requested_at")?,
            )),
            None => None,
        }
    };
    let Some((handoff, asked_before)) = found else {
        return Ok(CancelRequest::NotFound);
    };
    if asked_before.is_some() {
        return Ok(CancelRequest::Accepted(handoff));
    }
    if !handoff.status.is_cancellable() {
        return Ok(CancelRequest::NotAllowed(handoff));
    }
    c.prepare_cached("UPDATE handoffs SET cancel_requested_at = ?1 WHERE id = ?2")?
        .execute(params![now_ms, id.as_str()])?;
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
    insert_timeline(c, id, &entry, now)?;
    // A create job that never called Vietnam Post and is not in flight can
    // simply stop: there is no order to cancel.
    let untouched = c
        .prepare_cached(
            "UPDATE postal_jobs SET state = 'done', last_error = 'stopped by a cancel', updated_at = ?1 \
             WHERE handoff_id = ?2 AND operation = 'create' AND +state = 'pending' AND first_create_at IS NULL \
             AND attempt_started_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= ?1)",
        )?
        .execute(params![now_ms, id.as_str()])?;
    if untouched == 1 && handoff.status == Status::Received {
        gateway_change(
            c,
            id,
            &[Status::Received],
            Status::Cancelled,
            None,
            format,
            now,
        )?;
    } else {
        stop_create_job(c, id, now)?;
        c.prepare_cached(
            "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
             VALUES (?1, 'cancel', 'pending', ?2, ?2, ?2) ON CONFLICT DO NOTHING",
        )?
        .execute(params![id.as_str(), now_ms])?;
    }
    Ok(CancelRequest::Accepted(read_handoff(c, id)?))
}

/// Clears the personal data of handoffs ended before `cutoff`; how many.
pub(super) fn purge_personal_data(
    c: &Connection,
    cutoff: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Result<u64, StoreError> {
    let purged: Vec<(String, Option<String>)> = c
        .prepare_cached(
            "UPDATE handoffs SET details = NULL, personal_data_erased_at = ?1 \
             WHERE personal_data_erased_at IS NULL AND terminal_at IS NOT NULL AND terminal_at <= ?2 \
             AND (sla_due_at IS NULL OR sla_due_at <= ?2) \
             AND status <> 'failed' RETURNING id, tracking_number",
        )?
        .query_map(params![ms(now), ms(cutoff)], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, tracking) in &purged {
        clear_stored_carrier_answers(c, id, tracking.as_deref())?;
    }
    Ok(purged.len() as u64)
}

/// Marks the handoffs that missed their legal deadline; the kind of each.
pub(super) fn record_sla_breaches(
    c: &Connection,
    now: jiff::Timestamp,
) -> Result<Vec<Kind>, StoreError> {
    static BREACHES: LazyLock<String> = LazyLock::new(|| {
        format!(
            "UPDATE handoffs SET sla_breached_at = ?1 WHERE sla_breached_at IS NULL AND sla_due_at IS NOT NULL \
             AND ((sla_reached_at IS NULL AND sla_due_at < ?1 \
                   AND status NOT IN ({terminal})) \
                  OR sla_reached_at > sla_due_at) \
             RETURNING kind",
            terminal = *TERMINAL_STATUSES
        )
    });
    let kinds: Vec<String> = c
        .prepare_cached(&BREACHES)?
        .query_map([ms(now)], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    kinds.iter().map(|k| parse::<Kind>("kind", k)).collect()
}
