//! The PostgreSQL store: any number of gateway processes on one database.
//!
//! Work is claimed with `FOR UPDATE SKIP LOCKED` under leases set and
//! compared on the database's clock; a transaction that changes a handoff
//! locks its row first, so concurrent webhooks, workers and operators take
//! their turns on it. Migrations hold PostgreSQL's advisory lock, so several
//! processes may start at once.

mod admin;
mod events;
mod group;
mod grouped;

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Row, migrate::Migrator};

use super::shared::{
    AWAITING_ORDER, CallbackDraft, Change, HANDOFF_COLUMNS, Settlement, TAKE_SEQUENCE,
    TimelineDraft, handoff_from_row, opt_ms, parse,
};
use super::{
    CallbackJob, CallbackOutcome, CreateOutcome, EventOutcome, IncomingCarrierEvent, NewHandoff,
    PostalJob, PostalOperation, PostalOutcome, Store, StoreError, from_ms, ms,
};
use crate::config::StoreSettings;
use crate::domain::callback::{BodyFormat, CallbackType};
use crate::domain::{Effect, HandoffId, Kind, Source, Status};

static MIGRATOR: Migrator = sqlx::migrate!("./schemas/sql/postgres");

/// How long a request waits for a connection before the store counts as
/// unavailable (readiness then answers 503).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections per process: enough for every worker and a burst of intake
/// requests; three processes stay well under PostgreSQL's default 100.
const MAX_CONNECTIONS: u32 = 16;

/// The PostgreSQL implementation of [`Store`].
pub struct PostgresStore {
    pool: PgPool,
    /// Group commit of intake requests.
    intake: crate::store::group::IntakeQueue,
    /// Group commit of callback outcomes.
    callback_finishes: grouped::GroupQueue<grouped::CallbackFinish>,
    /// Group commit of postal attempts' starts.
    postal_starts: grouped::GroupQueue<grouped::PostalStart>,
}

impl PostgresStore {
    /// Connects and runs the migrations (under PostgreSQL's advisory lock,
    /// so processes starting together apply them once).
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str, _settings: &StoreSettings) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)?.application_name("bcci-gateway");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        // Leases are left alone: other processes may hold them; a crashed
        // process's ones expire on the database's clock and are taken over.
        let intake = group::start(pool.clone());
        Ok(Self {
            callback_finishes: grouped::GroupQueue::start(pool.clone()),
            postal_starts: grouped::GroupQueue::start(pool.clone()),
            pool,
            intake,
        })
    }
}

/// A duration as whole milliseconds, for interval arithmetic in SQL.
fn lease_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// When a lease ends on the gateway's clock: `now` plus what the database
/// said was left of it, so a skewed process clock cannot stretch it.
fn lease_end(now: jiff::Timestamp, left_ms: i64) -> Result<jiff::Timestamp, StoreError> {
    from_ms(ms(now).saturating_add(left_ms.max(0)))
}

/// Locks a handoff's row for the rest of the transaction: every transaction
/// that changes a handoff takes this lock first, in the same order (handoff,
/// then its jobs and callbacks), so they cannot deadlock.
async fn lock_handoff(tx: &mut sqlx::PgConnection, id: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT 1 FROM handoffs WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(())
}

/// Records `change` for the handoff (already updated in `tx`): a timeline
/// entry and, when relayed, its callback with the next sequence.
async fn record_change(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    previous: Status,
    change: Change<'_>,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    let sequence = match change.callback(previous) {
        Some((draft, format)) => Some(queue_callback(tx, id, &draft, format, now).await?),
        None => None,
    };
    insert_timeline(tx, id, &change.entry(sequence), now).await
}

/// Queues a callback with the handoff's next sequence (body fixed now, from
/// the handoff as updated in `tx`) and returns that sequence.
async fn queue_callback(
    tx: &mut sqlx::PgConnection,
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
    let event = draft.event(&handoff, sequence);
    let (body, content_type) = event.render(format);
    sqlx::query(
        "INSERT INTO callbacks (id, handoff_id, client, sequence, event_type, body, content_type, \
         state, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9)",
    )
    .bind(format!("msg_{}", ulid::Ulid::new()))
    .bind(id.as_str())
    .bind(&handoff.client)
    .bind(sequence)
    .bind(draft.event_type.as_str())
    .bind(body)
    .bind(content_type)
    .bind(ms(now))
    .bind(ms(now))
    .execute(&mut *tx)
    .await?;
    Ok(sequence)
}

async fn insert_timeline(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    e: &TimelineDraft<'_>,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO timeline (handoff_id, source, status, effect, sequence, occurred_at, recorded_at, \
         tracking_number, carrier_code, carrier_text, carrier_location, reason, raw) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT tracking_number FROM handoffs WHERE id = $8), $9, $10, $11, $12, $13)",
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
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    from: &[Status],
    to: Status,
    reason: Option<&str>,
    now: jiff::Timestamp,
) -> Result<Option<Status>, StoreError> {
    let current: Option<String> =
        sqlx::query_scalar("SELECT status FROM handoffs WHERE id = $1 FOR UPDATE")
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
        "UPDATE handoffs SET status = $1, reason = $2, updated_at = $3, \
         terminal_at = CASE WHEN $4 THEN $5 ELSE terminal_at END WHERE id = $6",
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

/// Ends the create jobs of the handoffs `$2` names, whose orders are known,
/// in flight or not: an answer, when it comes, finds the order adopted.
const END_CREATE_JOBS: &str = "UPDATE postal_jobs SET state = 'done', lease_owner = NULL, \
     lease_expires_at = NULL, attempt_started_at = NULL, updated_at = $1 \
     WHERE handoff_id = ANY($2) AND operation = 'create' AND state IN ('pending', 'dead')";

/// Adopts an order revealed for a handoff that has none (domain.md rule 2):
/// records it, relays `order_created`, and ends the create job.
async fn adopt(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    order: &crate::domain::PostalOrder,
    previous: Status,
    format: BodyFormat,
    source: Source,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE handoffs SET status = 'order_created', reason = NULL, tracking_number = $1, \
         carrier_order_id = $2, carrier_original_id = $3, postage_vnd = COALESCE($4, postage_vnd), \
         order_created_at = $5, updated_at = $6, terminal_at = NULL WHERE id = $7",
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
    sqlx::query(END_CREATE_JOBS)
        .bind(ms(now))
        .bind([id.as_str()].as_slice())
        .execute(&mut *tx)
        .await?;
    let change = Change::adoption(source, now, format);
    record_change(tx, id, previous, change, now).await
}

/// Records the item code of the handoff's order, once Vietnam Post reports it.
async fn fill_tracking_number(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    tracking_number: &str,
    now: jiff::Timestamp,
) -> Result<bool, StoreError> {
    let filled = sqlx::query(
        "UPDATE handoffs SET tracking_number = $1, updated_at = $2 \
         WHERE id = $3 AND tracking_number IS NULL",
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
async fn queue_order_cancel(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    original_id: &str,
    now: jiff::Timestamp,
) -> Result<bool, StoreError> {
    let queued = sqlx::query(
        "INSERT INTO postal_jobs (handoff_id, operation, target, state, next_attempt_at, \
         created_at, updated_at) VALUES ($1, 'cancel_duplicate', $2, 'pending', $3, $4, $5) \
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
    tx: &mut sqlx::PgConnection,
    id: &str,
    tracking_number: Option<&str>,
) -> Result<(), StoreError> {
    use crate::domain::callback::{PURGED_TEXT, purge_reason};
    sqlx::query(
        "UPDATE timeline SET raw = NULL, \
         reason = CASE WHEN reason IS NULL OR operator IS NOT NULL THEN reason ELSE $2 END \
         WHERE handoff_id = $1",
    )
    .bind(id)
    .bind(PURGED_TEXT)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE handoffs SET reason = $2 WHERE id = $1 AND reason IS NOT NULL")
        .bind(id)
        .bind(PURGED_TEXT)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE postal_jobs SET refusal = NULL, last_error = NULL WHERE handoff_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let bodies = sqlx::query("SELECT id, body, content_type FROM callbacks WHERE handoff_id = $1")
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    for row in &bodies {
        let body: Vec<u8> = row.try_get("body")?;
        let content_type: String = row.try_get("content_type")?;
        if let Some(purged) = purge_reason(&body, &content_type) {
            let callback: String = row.try_get("id")?;
            sqlx::query("UPDATE callbacks SET body = $1 WHERE id = $2")
                .bind(purged)
                .bind(callback)
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(
        "UPDATE carrier_inbox SET raw = NULL WHERE raw IS NOT NULL \
         AND (strpos(raw, $1) > 0 OR ($2 IS NOT NULL AND strpos(raw, $2) > 0))",
    )
    .bind(id)
    .bind(tracking_number)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Ends a create job that is not in flight.
async fn stop_create_job(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    now: jiff::Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE postal_jobs SET state = 'done', last_error = 'stopped by a cancel', updated_at = $1 \
         WHERE handoff_id = $2 AND operation = 'create' AND state IN ('pending', 'dead') \
         AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())",
    )
    .bind(ms(now))
    .bind(id.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    #[tracing::instrument(skip_all, fields(handoff_id = %new.id))]
    async fn create_handoff(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError> {
        self.intake.create(new).await
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
        lock_handoff(&mut tx, id.as_str()).await?;
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS}, cancel_requested_at FROM handoffs WHERE id = $1 AND client = $2"
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
        sqlx::query("UPDATE handoffs SET cancel_requested_at = $1 WHERE id = $2")
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
            "UPDATE postal_jobs SET state = 'done', last_error = 'stopped by a cancel', updated_at = $1 \
             WHERE handoff_id = $2 AND operation = 'create' AND state = 'pending' AND first_create_at IS NULL \
             AND attempt_started_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())",
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
                 VALUES ($1, 'cancel', 'pending', $2, $3, $4) ON CONFLICT DO NOTHING",
            )
            .bind(id.as_str())
            .bind(now_ms)
            .bind(now_ms)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        let sql = format!("SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let handoff = handoff_from_row(&row)?;
        tx.commit().await?;
        Ok(CancelRequest::Accepted(handoff))
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
            "UPDATE handoffs SET tracking_number = $1, updated_at = $2 \
             WHERE id = $3 AND carrier_original_id = $4 AND tracking_number IS NULL",
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
        sqlx::query("UPDATE handoffs SET polled_at = $1 WHERE id = $2")
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
            "UPDATE handoffs SET details = NULL, personal_data_erased_at = $1 \
             WHERE personal_data_erased_at IS NULL AND terminal_at IS NOT NULL AND terminal_at <= $2 \
             AND (sla_due_at IS NULL OR sla_due_at <= $2) \
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
            // The old row versions stay in the table files until a vacuum
            // removes them; run one now rather than waiting for autovacuum.
            sqlx::query("VACUUM handoffs, timeline, carrier_inbox")
                .execute(&self.pool)
                .await?;
            tracing::info!(purged = purged.len(), "personal data purged");
        }
        Ok(purged.len() as u64)
    }

    async fn record_sla_breaches(&self, now: jiff::Timestamp) -> Result<Vec<Kind>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE handoffs SET sla_breached_at = $1 WHERE sla_breached_at IS NULL AND sla_due_at IS NOT NULL \
             AND ((sla_reached_at IS NULL AND sla_due_at < $1 \
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

    #[tracing::instrument(skip_all)]
    async fn claim_postal_jobs(
        &self,
        owner: &str,
        now: jiff::Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<PostalJob>, StoreError> {
        let now_ms = ms(now);
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "UPDATE postal_jobs SET lease_owner = $1, \
               lease_expires_at = clock_timestamp() + $2::float8 * INTERVAL '1 millisecond' WHERE id IN ( \
               SELECT id FROM postal_jobs WHERE state = 'pending' AND next_attempt_at <= $3 \
               AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp()) \
               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING id, handoff_id, operation, target, attempts, next_step, first_attempt_at, \
               first_create_at, refusal, attempt_started_at, \
               (EXTRACT(EPOCH FROM lease_expires_at - clock_timestamp()) * 1000)::BIGINT AS lease_ms_left",
        )
        .bind(owner)
        .bind(lease_ms(lease))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        for row in rows {
            let handoff_id: String = row.try_get("handoff_id")?;
            let sql = format!(
                "SELECT {HANDOFF_COLUMNS}, details, carrier_original_id, \
         cancel_requested_at IS NOT NULL AS cancel_requested, \
                 (SELECT first_create_at FROM postal_jobs j WHERE j.handoff_id = handoffs.id AND j.operation = 'create') AS create_started_at, \
                 (SELECT COUNT(*) FROM postal_jobs j WHERE j.handoff_id = handoffs.id AND j.operation = 'create' \
                    AND j.state = 'pending' AND j.lease_expires_at > clock_timestamp()) AS create_in_flight \
                 FROM handoffs WHERE id = $1"
            );
            let h = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&handoff_id)
                .fetch_one(&mut *tx)
                .await?;
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
                lease_expires_at: lease_end(now, row.try_get("lease_ms_left")?)?,
                handoff: handoff_from_row(&h)?,
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

    #[tracing::instrument(skip_all, fields(handoff_id = %job.handoff.id))]
    async fn start_postal_attempt(
        &self,
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        must_remain: Duration,
    ) -> Result<bool, StoreError> {
        self.postal_starts
            .submit(grouped::PostalStart::new(job, owner, now, must_remain))
            .await
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %job.handoff.id))]
    async fn finish_postal_job(
        &self,
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: PostalOutcome,
    ) -> Result<bool, StoreError> {
        let now_ms = ms(now);
        let mut tx = self.pool.begin().await?;
        lock_handoff(&mut tx, job.handoff.id.as_str()).await?;
        let settled = Settlement::of(job, &outcome, now);
        let state = settled.state;
        let held = sqlx::query(
            "UPDATE postal_jobs SET state = $1, next_step = $2, next_attempt_at = $3, refusal = $4, \
             last_error = COALESCE($5, last_error), attempt_started_at = NULL, lease_owner = NULL, \
             lease_expires_at = NULL, updated_at = $6 \
             WHERE id = $7 AND lease_owner = $8 AND lease_expires_at > clock_timestamp()",
        )
        .bind(state)
        .bind(settled.step.as_str())
        .bind(settled.next_attempt_at)
        .bind(settled.refusal)
        .bind(settled.last_error)
        .bind(now_ms)
        .bind(job.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        let id = &job.handoff.id;
        match outcome {
            PostalOutcome::Adopt {
                order,
                duplicates,
                format,
            } => {
                sqlx::query(
                    "UPDATE handoffs SET tracking_number = $1, carrier_order_id = $2, carrier_original_id = $3, \
                     postage_vnd = $4, order_created_at = $5 WHERE id = $6 AND status IN ('received', 'failed')",
                )
                .bind(order.tracking_number.as_deref())
                .bind(&order.order_id)
                .bind(&order.original_id)
                .bind(order.postage_vnd)
                .bind(now_ms)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
                if let Some(previous) =
                    move_handoff(&mut tx, id, AWAITING_ORDER, Status::OrderCreated, None, now)
                        .await?
                {
                    let change = Change {
                        status: Status::OrderCreated,
                        source: Source::Gateway,
                        occurred_at: now,
                        reason: None,
                        relay: Some((CallbackType::StatusChanged, format)),
                    };
                    record_change(&mut tx, id, previous, change, now).await?;
                }
                for original_id in &duplicates {
                    queue_order_cancel(&mut tx, id, original_id, now).await?;
                }
            }
            PostalOutcome::Reject { reason, format } | PostalOutcome::Fail { reason, format } => {
                let to = if state == "dead" {
                    Status::Failed
                } else {
                    Status::Rejected
                };
                if let Some(previous) =
                    move_handoff(&mut tx, id, &[Status::Received], to, Some(&reason), now).await?
                {
                    let change = Change {
                        status: to,
                        source: Source::Gateway,
                        occurred_at: now,
                        reason: Some(&reason),
                        relay: Some((CallbackType::StatusChanged, format)),
                    };
                    record_change(&mut tx, id, previous, change, now).await?;
                }
            }
            PostalOutcome::Cancelled { format } => {
                stop_create_job(&mut tx, id, now).await?;
                let from = [
                    Status::Received,
                    Status::Failed,
                    Status::OrderCreated,
                    Status::PickingUp,
                    Status::PickupAttemptFailed,
                ];
                if let Some(previous) =
                    move_handoff(&mut tx, id, &from, Status::Cancelled, None, now).await?
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
                insert_timeline(&mut tx, id, &entry, now).await?;
            }
            PostalOutcome::CancelRefused { reason, format } => {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM handoffs WHERE id = $1")
                        .bind(id.as_str())
                        .fetch_one(&mut *tx)
                        .await?;
                let status: Status = parse("status", &status)?;
                let draft = CallbackDraft {
                    event_type: CallbackType::CancelRefused,
                    status,
                    previous: status,
                    reason: Some(&reason),
                    carrier: None,
                    occurred_at: now,
                    cod: None,
                };
                let sequence = queue_callback(&mut tx, id, &draft, format, now).await?;
                let entry = TimelineDraft {
                    source: Source::Gateway,
                    status: Some(status),
                    effect: Effect::Annotation,
                    sequence: Some(sequence),
                    occurred_at: now,
                    carrier: None,
                    reason: Some(&reason),
                    raw: None,
                };
                insert_timeline(&mut tx, id, &entry, now).await?;
            }
            PostalOutcome::Reschedule { .. } | PostalOutcome::Complete { .. } => {}
        }
        tx.commit().await?;
        Ok(true)
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
        lock_handoff(&mut tx, id.as_str()).await?;
        let Some(row) = sqlx::query(
            "SELECT status, carrier_original_id, tracking_number FROM handoffs WHERE id = $1",
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

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn apply_carrier_events(
        &self,
        events: Vec<IncomingCarrierEvent>,
        context: &super::EventContext,
        now: jiff::Timestamp,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcomes = events::apply_events(&mut tx, &events, context, now).await?;
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
            "INSERT INTO carrier_inbox (source, received_at, problem, raw) VALUES ($1, $2, $3, $4)",
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
        let rows = sqlx::query(
            "UPDATE callbacks SET lease_owner = $1, lease_expires_at = clock_timestamp() + $2::float8 * INTERVAL '1 millisecond', \
               head_since = COALESCE(head_since, $3) \
             WHERE id IN (SELECT c.id FROM callbacks c WHERE c.state = 'pending' AND c.next_attempt_at <= $3 \
               AND (c.lease_expires_at IS NULL OR c.lease_expires_at <= clock_timestamp()) \
               AND NOT EXISTS (SELECT 1 FROM callbacks p WHERE p.handoff_id = c.handoff_id \
                               AND p.sequence < c.sequence AND p.state <> 'delivered') \
               ORDER BY c.next_attempt_at LIMIT $4 FOR UPDATE OF c SKIP LOCKED) \
             RETURNING id, handoff_id, client, sequence, body, content_type, attempts, head_since",
        )
        .bind(owner)
        .bind(lease_ms(lease))
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

    #[tracing::instrument(skip_all, fields(handoff_id = %job.handoff_id))]
    async fn finish_callback(
        &self,
        job: &CallbackJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: CallbackOutcome,
    ) -> Result<bool, StoreError> {
        self.callback_finishes
            .submit(grouped::CallbackFinish::new(job, owner, now, &outcome))
            .await
    }

    async fn replay_dead_callbacks(
        &self,
        id: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        admin::requeue_dead(&mut conn, id, now).await
    }

    async fn release_leases(&self, owners: &[&str]) -> Result<u64, StoreError> {
        let mut released = 0;
        for owner in owners {
            for table in ["postal_jobs", "callbacks"] {
                let sql = format!(
                    "UPDATE {table} SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1"
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
