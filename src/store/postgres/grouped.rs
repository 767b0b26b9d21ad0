//! Group commit of the workers' one-row writes on PostgreSQL: a callback's
//! outcome, the start of a postal attempt. Workers make them concurrently
//! (the relay attempts a claimed batch at once, the dispatcher runs its jobs
//! side by side), and each used to be a transaction of its own, with its
//! commit and WAL flush: end to end, the largest share of the database's
//! work. Writes arriving together are made by one task in one transaction,
//! with one `UNNEST` statement per step, and each is answered after the
//! commit that holds it, as intake's are (`store/group.rs`).

use std::collections::HashSet;
use std::hash::Hash;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::super::group::MAX_GROUP;
use super::super::{CallbackJob, CallbackOutcome, PostalJob, StoreError, ms};
use super::lease_ms;

/// Writes waiting for the writer before callers wait to queue.
const QUEUE: usize = 4096;

/// A one-row write that may share a transaction with others of its kind.
#[async_trait]
pub(super) trait Grouped: Send + Sync + Sized + 'static {
    /// The row written: the same row twice in one statement would be written
    /// once and answered twice, so the second waits for the next group.
    type Key: Eq + Hash + Send;

    fn key(&self) -> Self::Key;

    /// Writes `group` in one transaction; the keys of the rows written (a
    /// write whose lease is gone writes nothing).
    async fn write(pool: &PgPool, group: &[Self]) -> Result<HashSet<Self::Key>, StoreError>;
}

struct Pending<W> {
    write: W,
    /// Whether the row was written.
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The queue of one kind of grouped write.
pub(super) struct GroupQueue<W> {
    queue: mpsc::Sender<Pending<W>>,
}

impl<W: Grouped> GroupQueue<W> {
    /// Starts the writer's task; it ends once the queue is dropped and empty.
    pub(super) fn start(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        Self { queue }
    }

    /// Makes `write` in the next group; answers once it is committed.
    pub(super) async fn submit(&self, write: W) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending { write, reply })
            .await
            .map_err(|_| StoreError::gone("a group writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::gone("a group writer dropped a write"))?
    }
}

async fn run<W: Grouped>(pool: PgPool, mut rx: mpsc::Receiver<Pending<W>>) {
    let mut queued = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut queued, MAX_GROUP).await > 0 {
        while !queued.is_empty() {
            let mut keys = HashSet::new();
            let cut = queued
                .iter()
                .position(|p| !keys.insert(p.write.key()))
                .unwrap_or(queued.len());
            let (writes, replies): (Vec<W>, Vec<_>) =
                queued.drain(..cut).map(|p| (p.write, p.reply)).unzip();
            match W::write(&pool, &writes).await {
                Ok(written) => {
                    for (write, reply) in writes.iter().zip(replies) {
                        let _ = reply.send(Ok(written.contains(&write.key())));
                    }
                    tracing::debug!(size = writes.len(), "group committed");
                }
                Err(e) => {
                    tracing::error!(error = %e, size = writes.len(), "a group could not be committed");
                    let text = e.to_string();
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Unavailable(text.clone().into())));
                    }
                }
            }
        }
    }
}

/// A callback's outcome, recorded while its owner holds the lease.
pub(super) struct CallbackFinish {
    id: String,
    handoff_id: String,
    sequence: i64,
    owner: String,
    state: &'static str,
    next_attempt_at: i64,
    status: Option<i64>,
    error: Option<String>,
    now: i64,
}

impl CallbackFinish {
    pub(super) fn new(
        job: &CallbackJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: &CallbackOutcome,
    ) -> Self {
        let s = outcome.settlement(now);
        CallbackFinish {
            id: job.id.clone(),
            handoff_id: job.handoff_id.as_str().to_owned(),
            sequence: job.sequence as i64,
            owner: owner.to_owned(),
            state: s.state,
            next_attempt_at: s.next_attempt_at,
            status: s.status.map(i64::from),
            error: s.error.map(str::to_owned),
            now: ms(now),
        }
    }
}

#[async_trait]
impl Grouped for CallbackFinish {
    type Key = String;

    fn key(&self) -> String {
        self.id.clone()
    }

    async fn write(pool: &PgPool, group: &[Self]) -> Result<HashSet<String>, StoreError> {
        let mut tx = pool.begin().await?;
        let held: Vec<String> = sqlx::query_scalar(
            "UPDATE callbacks c SET state = u.state, next_attempt_at = u.at, attempts = c.attempts + 1, \
             last_status = COALESCE(u.status, c.last_status), last_error = u.error, lease_owner = NULL, \
             lease_expires_at = NULL, delivered_at = CASE WHEN u.state = 'delivered' THEN u.now ELSE NULL END \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::int8[]) \
             AS u(id, owner, state, at, status, error, now) \
             WHERE c.id = u.id AND c.lease_owner = u.owner AND c.lease_expires_at > clock_timestamp() \
             RETURNING c.id",
        )
        .bind(group.iter().map(|p| p.id.as_str()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.owner.as_str()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.state).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.next_attempt_at).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.status).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.error.as_deref()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.now).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        let held: HashSet<String> = held.into_iter().collect();
        // The callback after each delivered one reaches the head now: its
        // deadline starts.
        let next: Vec<&Self> = group
            .iter()
            .filter(|p| p.state == "delivered" && held.contains(&p.id))
            .collect();
        if !next.is_empty() {
            sqlx::query(
                "UPDATE callbacks c SET head_since = u.now \
                 FROM UNNEST($1::text[], $2::int8[], $3::int8[]) AS u(handoff_id, sequence, now) \
                 WHERE c.handoff_id = u.handoff_id AND c.sequence = u.sequence AND c.state = 'pending'",
            )
            .bind(next.iter().map(|p| p.handoff_id.as_str()).collect::<Vec<_>>())
            .bind(next.iter().map(|p| p.sequence + 1).collect::<Vec<_>>())
            .bind(next.iter().map(|p| p.now).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(held)
    }
}

/// The start of a postal attempt, recorded before the call while its owner
/// holds the lease with at least `must_remain` left: for a create, the
/// ambiguity marker (`attempt_started_at`), durable before Vietnam Post is
/// called.
pub(super) struct PostalStart {
    id: i64,
    owner: String,
    now: i64,
    creates: bool,
    must_remain_ms: i64,
}

impl PostalStart {
    pub(super) fn new(
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        must_remain: std::time::Duration,
    ) -> Self {
        PostalStart {
            id: job.id,
            owner: owner.to_owned(),
            now: ms(now),
            creates: job.calls_create(),
            must_remain_ms: lease_ms(must_remain),
        }
    }
}

#[async_trait]
impl Grouped for PostalStart {
    type Key = i64;

    fn key(&self) -> i64 {
        self.id
    }

    async fn write(pool: &PgPool, group: &[Self]) -> Result<HashSet<i64>, StoreError> {
        let started: Vec<i64> = sqlx::query_scalar(
            "UPDATE postal_jobs j SET attempts = j.attempts + 1, \
             first_attempt_at = COALESCE(j.first_attempt_at, u.now), \
             first_create_at = CASE WHEN u.creates THEN COALESCE(j.first_create_at, u.now) ELSE j.first_create_at END, \
             attempt_started_at = CASE WHEN u.creates THEN u.now ELSE NULL END, updated_at = u.now \
             FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::bool[], $5::int8[]) \
             AS u(id, owner, now, creates, must_remain) \
             WHERE j.id = u.id AND j.lease_owner = u.owner \
               AND j.lease_expires_at >= clock_timestamp() + u.must_remain::float8 * INTERVAL '1 millisecond' \
             RETURNING j.id",
        )
        .bind(group.iter().map(|p| p.id).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.owner.as_str()).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.now).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.creates).collect::<Vec<_>>())
        .bind(group.iter().map(|p| p.must_remain_ms).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?;
        Ok(started.into_iter().collect())
    }
}
