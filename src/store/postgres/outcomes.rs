//! Group commit of callback outcomes on PostgreSQL. The relay sends a batch
//! of callbacks concurrently and each outcome used to be a transaction of
//! its own (two updates, a commit and its WAL flush): the largest share of
//! the database's work end to end. Outcomes arriving together are written
//! by one task in one transaction, one `UNNEST` statement per step; each is
//! answered after the commit that holds it, as with intake (`store/group.rs`).

use std::collections::HashSet;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::super::group::MAX_GROUP;
use super::super::{CallbackJob, CallbackOutcome, StoreError, ms};

/// Outcomes waiting for the writer before callers wait to queue.
const QUEUE: usize = 4096;

/// One callback outcome waiting for its group's commit.
struct Pending {
    id: String,
    handoff_id: String,
    sequence: i64,
    owner: String,
    state: &'static str,
    next_attempt_at: i64,
    status: Option<i64>,
    error: Option<String>,
    now: i64,
    /// Whether the lease was still held, so the outcome was recorded.
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The queue of the outcome writer.
pub(super) struct OutcomeQueue {
    queue: mpsc::Sender<Pending>,
}

impl OutcomeQueue {
    /// Starts the writer's task; it ends once the queue is dropped and empty.
    pub(super) fn start(pool: PgPool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, rx));
        Self { queue }
    }

    /// Records `outcome` of `job` if `owner` still holds its lease; answers
    /// once committed.
    pub(super) async fn finish(
        &self,
        job: &CallbackJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: CallbackOutcome,
    ) -> Result<bool, StoreError> {
        let now = ms(now);
        let (state, next_attempt_at, status, error) = match outcome {
            CallbackOutcome::Delivered => ("delivered", now, None, None),
            CallbackOutcome::Retry { at, status, error } => {
                ("pending", ms(at), status, Some(error))
            }
            CallbackOutcome::Dead { status, error } => ("dead", now, status, Some(error)),
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            id: job.id.clone(),
            handoff_id: job.handoff_id.as_str().to_owned(),
            sequence: job.sequence as i64,
            owner: owner.to_owned(),
            state,
            next_attempt_at,
            status: status.map(i64::from),
            error,
            now,
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::gone("the callback outcome writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::gone("the callback outcome writer dropped an outcome"))?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Pending>) {
    let mut queued = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut queued, MAX_GROUP).await > 0 {
        // A callback twice in one statement would be updated once and
        // answered twice: the second waits for the next group.
        while !queued.is_empty() {
            let mut ids = HashSet::new();
            let cut = queued
                .iter()
                .position(|p| !ids.insert(p.id.as_str()))
                .unwrap_or(queued.len());
            let group: Vec<Pending> = queued.drain(..cut).collect();
            let size = group.len();
            match write(&pool, &group).await {
                Ok(held) => {
                    for p in group {
                        let _ = p.reply.send(Ok(held.contains(&p.id)));
                    }
                    tracing::debug!(size, "callback outcomes committed");
                }
                Err(e) => {
                    tracing::error!(error = %e, size, "callback outcomes could not be committed");
                    let text = e.to_string();
                    for p in group {
                        let _ = p
                            .reply
                            .send(Err(StoreError::Unavailable(text.clone().into())));
                    }
                }
            }
        }
    }
}

/// Writes a group in one transaction; the ids whose lease was still held.
async fn write(pool: &PgPool, group: &[Pending]) -> Result<HashSet<String>, StoreError> {
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
    let next: Vec<&Pending> = group
        .iter()
        .filter(|p| p.state == "delivered" && held.contains(&p.id))
        .collect();
    if !next.is_empty() {
        sqlx::query(
            "UPDATE callbacks c SET head_since = u.now \
             FROM UNNEST($1::text[], $2::int8[], $3::int8[]) AS u(handoff_id, sequence, now) \
             WHERE c.handoff_id = u.handoff_id AND c.sequence = u.sequence AND c.state = 'pending'",
        )
        .bind(
            next.iter()
                .map(|p| p.handoff_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(next.iter().map(|p| p.sequence + 1).collect::<Vec<_>>())
        .bind(next.iter().map(|p| p.now).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(held)
}
