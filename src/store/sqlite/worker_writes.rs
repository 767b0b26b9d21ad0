//! Group commit of the workers' writes on SQLite: the start of a postal
//! attempt, a postal job's outcome, a callback's outcome.
//!
//! Workers claim jobs in batches and work them concurrently, so their writes
//! arrive together. One task writes whatever is queued when its previous
//! commit ends in one transaction on the store's connection (no timer: a
//! lone write waits for nothing) and answers each write only after that
//! commit. One commit, and one WAL fsync, then serves many jobs instead of
//! one. A write that fails rolls its group back, and the group is written
//! again one write per transaction, so one failure fails that write alone.
//! A write that finds its lease lost changes nothing and answers `false`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::{
    insert_timeline, move_handoff, queue_callback, queue_order_cancel, record_change,
    stop_create_job,
};
use crate::domain::CreateStep;
use crate::domain::callback::CallbackType;
use crate::domain::{Effect, HandoffId, Source, Status};
use crate::store::shared::parse;
use crate::store::shared::{AWAITING_ORDER, CallbackDraft, Change, Settlement, TimelineDraft};
use crate::store::{
    CallbackJob, CallbackOutcome, PostalJob, PostalOperation, PostalOutcome, StoreError, ms,
};

/// Most writes one transaction carries.
const MAX_GROUP: usize = 256;
/// Writes waiting for the writer before callers wait to queue.
const QUEUE: usize = 1024;

/// The start of a postal call, committed before the call is made.
pub(super) struct StartAttempt {
    job_id: i64,
    /// A create call: its start stays marked until its outcome is committed.
    creates: bool,
    owner: String,
    now_ms: i64,
    /// The lease must last at least until then.
    until_ms: i64,
}

impl StartAttempt {
    pub(super) fn new(
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        must_remain: std::time::Duration,
    ) -> Self {
        let now_ms = ms(now);
        Self {
            job_id: job.id,
            creates: job.operation == PostalOperation::Create
                && matches!(job.step, CreateStep::Call | CreateStep::CallAfterLookup),
            owner: owner.to_owned(),
            now_ms,
            until_ms: now_ms
                .saturating_add(i64::try_from(must_remain.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// A postal job's outcome with its effects.
pub(super) struct FinishPostal {
    job_id: i64,
    handoff_id: HandoffId,
    owner: String,
    now: jiff::Timestamp,
    settled: Settlement,
    outcome: PostalOutcome,
}

impl FinishPostal {
    pub(super) fn new(
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: PostalOutcome,
    ) -> Self {
        Self {
            job_id: job.id,
            handoff_id: job.handoff.id.clone(),
            owner: owner.to_owned(),
            now,
            settled: Settlement::of(job, &outcome, now),
            outcome,
        }
    }
}

/// A delivery attempt's outcome.
pub(super) struct FinishCallback {
    id: String,
    handoff_id: HandoffId,
    sequence: u64,
    owner: String,
    now: jiff::Timestamp,
    outcome: CallbackOutcome,
}

impl FinishCallback {
    pub(super) fn new(
        job: &CallbackJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: CallbackOutcome,
    ) -> Self {
        Self {
            id: job.id.clone(),
            handoff_id: job.handoff_id.clone(),
            sequence: job.sequence,
            owner: owner.to_owned(),
            now,
            outcome,
        }
    }
}

/// One write of a worker.
pub(super) enum Write {
    Start(StartAttempt),
    FinishPostal(FinishPostal),
    FinishCallback(FinishCallback),
}

struct Queued {
    write: Write,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// The queue of the workers' writer.
pub(super) struct WorkerWrites {
    queue: mpsc::Sender<Queued>,
    /// Transactions committed (tests check that writes share them).
    #[cfg(test)]
    commits: Arc<AtomicU64>,
}

impl WorkerWrites {
    /// Starts the writer's task on `pool`; it ends once the queue is dropped
    /// and empty.
    pub(super) fn start(pool: SqlitePool) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(pool, rx, commits.clone()));
        Self {
            queue,
            #[cfg(test)]
            commits,
        }
    }

    /// Commits `write` in the next group; true when its lease was held.
    pub(super) async fn commit(&self, write: Write) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Queued { write, reply })
            .await
            .map_err(|_| StoreError::gone("the workers' writer has stopped"))?;
        answer
            .await
            .map_err(|_| StoreError::gone("the workers' writer dropped a write"))?
    }

    /// Transactions committed so far.
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<Queued>, commits: Arc<AtomicU64>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while rx.recv_many(&mut group, MAX_GROUP).await > 0 {
        let answers = match together(&pool, &group).await {
            Ok(held) => {
                commits.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(size = held.len(), "worker writes committed");
                held.into_iter().map(Ok).collect()
            }
            Err(e) if group.len() == 1 => vec![Err(e)],
            Err(e) => {
                tracing::warn!(error = %e, size = group.len(), "worker writes committed one by one");
                let mut answers = Vec::with_capacity(group.len());
                for q in &group {
                    let answer = alone(&pool, &q.write).await;
                    if answer.is_ok() {
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    answers.push(answer);
                }
                answers
            }
        };
        for (q, answer) in group.drain(..).zip(answers) {
            // A worker that went away (a drain) still had its write committed.
            let _ = q.reply.send(answer);
        }
    }
}

/// The whole group in one transaction.
async fn together(pool: &SqlitePool, group: &[Queued]) -> Result<Vec<bool>, StoreError> {
    let writes: Vec<&Write> = group.iter().map(|q| &q.write).collect();
    commit_writes(pool, &writes).await
}

/// One write in a transaction of its own (a group that failed is written
/// again this way, so one failing write fails alone).
async fn alone(pool: &SqlitePool, write: &Write) -> Result<bool, StoreError> {
    Ok(commit_writes(pool, &[write]).await?[0])
}

/// Writes in one transaction. The starts among them are one statement, and
/// so are the callback outcomes: a statement costs a round trip to the
/// connection's thread, the store's scarcest resource. Writes of one group
/// concern different jobs, so their order does not matter.
#[tracing::instrument(skip_all, fields(writes = writes.len()))]
async fn commit_writes(pool: &SqlitePool, writes: &[&Write]) -> Result<Vec<bool>, StoreError> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let mut held = vec![false; writes.len()];
    start_attempts(&mut tx, writes, &mut held).await?;
    finish_callbacks(&mut tx, writes, &mut held).await?;
    for (write, held) in writes.iter().zip(held.iter_mut()) {
        if let Write::FinishPostal(w) = write {
            *held = finish_postal(&mut tx, w).await?;
        }
    }
    tx.commit().await?;
    Ok(held)
}

/// Every start of the group in one statement: the attempt is counted, its
/// start marked (a create's stays until its outcome), and only while the
/// lease lasts at least until `until`.
const START_ATTEMPTS: &str = "UPDATE postal_jobs SET attempts = attempts + 1, \
     first_attempt_at = COALESCE(first_attempt_at, w.now), \
     first_create_at = CASE WHEN w.creates THEN COALESCE(first_create_at, w.now) ELSE first_create_at END, \
     attempt_started_at = CASE WHEN w.creates THEN w.now ELSE NULL END, updated_at = w.now \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS owner, value ->> 2 AS creates, \
           value ->> 3 AS now, value ->> 4 AS until FROM json_each(?1)) AS w \
     WHERE postal_jobs.id = w.id AND postal_jobs.lease_owner = w.owner \
       AND postal_jobs.lease_expires_at >= w.until \
     RETURNING postal_jobs.id";

/// Every callback outcome of the group in one statement, only while its
/// lease is held.
const FINISH_CALLBACKS: &str = "UPDATE callbacks SET state = w.state, next_attempt_at = w.at, \
     attempts = attempts + 1, last_status = COALESCE(w.status, last_status), last_error = w.error, \
     lease_owner = NULL, lease_expires_at = NULL, \
     delivered_at = CASE WHEN w.state = 'delivered' THEN w.now ELSE NULL END \
     FROM (SELECT value ->> 0 AS id, value ->> 1 AS owner, value ->> 2 AS state, value ->> 3 AS at, \
           value ->> 4 AS status, value ->> 5 AS error, value ->> 6 AS now FROM json_each(?1)) AS w \
     WHERE callbacks.id = w.id AND callbacks.lease_owner = w.owner AND callbacks.lease_expires_at > w.now \
     RETURNING callbacks.id";

/// The callbacks behind those delivered reach the head of their queues.
/// `+state`: otherwise SQLite searches every pending callback.
const NEW_HEADS: &str = "UPDATE callbacks SET head_since = w.now \
     FROM (SELECT value ->> 0 AS handoff_id, value ->> 1 AS sequence, value ->> 2 AS now \
           FROM json_each(?1)) AS w \
     WHERE callbacks.handoff_id = w.handoff_id AND callbacks.sequence = w.sequence \
       AND +callbacks.state = 'pending'";

async fn start_attempts(
    conn: &mut SqliteConnection,
    group: &[&Write],
    held: &mut [bool],
) -> Result<(), StoreError> {
    let starts: Vec<_> = group
        .iter()
        .filter_map(|write| match write {
            Write::Start(w) => Some((w.job_id, &w.owner, w.creates, w.now_ms, w.until_ms)),
            _ => None,
        })
        .collect();
    if starts.is_empty() {
        return Ok(());
    }
    let started: HashSet<i64> = sqlx::query_scalar(START_ATTEMPTS)
        .bind(to_json(&starts)?)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    for (write, held) in group.iter().zip(held.iter_mut()) {
        if let Write::Start(w) = write {
            *held = started.contains(&w.job_id);
        }
    }
    Ok(())
}

async fn finish_callbacks(
    conn: &mut SqliteConnection,
    group: &[&Write],
    held: &mut [bool],
) -> Result<(), StoreError> {
    let outcomes: Vec<_> = group
        .iter()
        .filter_map(|write| match write {
            Write::FinishCallback(w) => {
                let (state, at, status, error) = callback_columns(w);
                Some((&w.id, &w.owner, state, at, status, error, ms(w.now)))
            }
            _ => None,
        })
        .collect();
    if outcomes.is_empty() {
        return Ok(());
    }
    let finished: HashSet<String> = sqlx::query_scalar(FINISH_CALLBACKS)
        .bind(to_json(&outcomes)?)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let mut heads = Vec::new();
    for (write, held) in group.iter().zip(held.iter_mut()) {
        if let Write::FinishCallback(w) = write {
            *held = finished.contains(&w.id);
            if *held && w.outcome == CallbackOutcome::Delivered {
                heads.push((w.handoff_id.as_str(), w.sequence as i64 + 1, ms(w.now)));
            }
        }
    }
    if !heads.is_empty() {
        sqlx::query(NEW_HEADS)
            .bind(to_json(&heads)?)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Rows for `json_each`.
fn to_json<T: serde::Serialize>(rows: &T) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(format!("worker writes: {e}")))
}

/// A callback outcome as columns: state, next attempt, HTTP status, error.
fn callback_columns(w: &FinishCallback) -> (&'static str, i64, Option<u16>, Option<&str>) {
    let now_ms = ms(w.now);
    match &w.outcome {
        CallbackOutcome::Delivered => ("delivered", now_ms, None, None),
        CallbackOutcome::Retry { at, status, error } => {
            ("pending", ms(*at), *status, Some(error.as_str()))
        }
        CallbackOutcome::Dead { status, error } => ("dead", now_ms, *status, Some(error.as_str())),
    }
}

#[tracing::instrument(skip_all, fields(handoff_id = %w.handoff_id))]
async fn finish_postal(conn: &mut SqliteConnection, w: &FinishPostal) -> Result<bool, StoreError> {
    let now_ms = ms(w.now);
    let settled = &w.settled;
    let state = settled.state;
    let held = sqlx::query(
        "UPDATE postal_jobs SET state = ?1, next_step = ?2, next_attempt_at = ?3, refusal = ?4, \
         last_error = COALESCE(?5, last_error), attempt_started_at = NULL, lease_owner = NULL, \
         lease_expires_at = NULL, updated_at = ?6 \
         WHERE id = ?7 AND lease_owner = ?8 AND lease_expires_at > ?6",
    )
    .bind(state)
    .bind(settled.step.as_str())
    .bind(settled.next_attempt_at)
    .bind(settled.refusal.as_deref())
    .bind(settled.last_error.as_deref())
    .bind(now_ms)
    .bind(w.job_id)
    .bind(&w.owner)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if held != 1 {
        return Ok(false);
    }
    let id = &w.handoff_id;
    let now = w.now;
    match &w.outcome {
        PostalOutcome::Adopt {
            order,
            duplicates,
            format,
        } => {
            sqlx::query(
                "UPDATE handoffs SET tracking_number = ?, carrier_order_id = ?, carrier_original_id = ?, \
                 postage_vnd = ?, order_created_at = ? WHERE id = ? AND status IN ('received', 'failed')",
            )
            .bind(order.tracking_number.as_deref())
            .bind(&order.order_id)
            .bind(&order.original_id)
            .bind(order.postage_vnd)
            .bind(now_ms)
            .bind(id.as_str())
            .execute(&mut *conn)
            .await?;
            if let Some(previous) = move_handoff(
                &mut *conn,
                id,
                AWAITING_ORDER,
                Status::OrderCreated,
                None,
                now,
            )
            .await?
            {
                let change = Change {
                    status: Status::OrderCreated,
                    source: Source::Gateway,
                    occurred_at: now,
                    reason: None,
                    relay: Some((CallbackType::StatusChanged, *format)),
                };
                record_change(&mut *conn, id, previous, change, now).await?;
            }
            for original_id in duplicates {
                queue_order_cancel(&mut *conn, id, original_id, now).await?;
            }
        }
        PostalOutcome::Reject { reason, format } | PostalOutcome::Fail { reason, format } => {
            let to = if state == "dead" {
                Status::Failed
            } else {
                Status::Rejected
            };
            if let Some(previous) =
                move_handoff(&mut *conn, id, &[Status::Received], to, Some(reason), now).await?
            {
                let change = Change {
                    status: to,
                    source: Source::Gateway,
                    occurred_at: now,
                    reason: Some(reason),
                    relay: Some((CallbackType::StatusChanged, *format)),
                };
                record_change(&mut *conn, id, previous, change, now).await?;
            }
        }
        PostalOutcome::Cancelled { format } => {
            stop_create_job(&mut *conn, id, now).await?;
            let from = [
                Status::Received,
                Status::Failed,
                Status::OrderCreated,
                Status::PickingUp,
                Status::PickupAttemptFailed,
            ];
            if let Some(previous) =
                move_handoff(&mut *conn, id, &from, Status::Cancelled, None, now).await?
            {
                let change = Change {
                    status: Status::Cancelled,
                    source: Source::Gateway,
                    occurred_at: now,
                    reason: None,
                    relay: Some((CallbackType::StatusChanged, *format)),
                };
                record_change(&mut *conn, id, previous, change, now).await?;
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
            insert_timeline(&mut *conn, id, &entry, now).await?;
        }
        PostalOutcome::CancelRefused { reason, format } => {
            let status: String = sqlx::query_scalar("SELECT status FROM handoffs WHERE id = ?")
                .bind(id.as_str())
                .fetch_one(&mut *conn)
                .await?;
            let status: Status = parse("status", &status)?;
            let draft = CallbackDraft {
                event_type: CallbackType::CancelRefused,
                status,
                previous: status,
                reason: Some(reason),
                carrier: None,
                occurred_at: now,
                cod: None,
            };
            let sequence = queue_callback(&mut *conn, id, &draft, *format, now).await?;
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
            insert_timeline(&mut *conn, id, &entry, now).await?;
        }
        PostalOutcome::Reschedule { .. } | PostalOutcome::Complete { .. } => {}
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures_util::future::join_all;

    use crate::domain::PostalOrder;
    use crate::domain::callback::BodyFormat;
    use crate::store::sqlite::group::tests::{new_handoff, store};
    use crate::store::{CallbackOutcome, PostalOutcome, Store};

    const OWNER: &str = "test-worker";
    const LEASE: Duration = Duration::from_secs(60);

    fn order(n: usize) -> PostalOrder {
        PostalOrder {
            order_id: format!("ORDER-{n}"),
            original_id: format!("ORIGINAL-{n}"),
            tracking_number: Some(format!("EB{n:09}VN")),
            postage_vnd: Some(22_000),
        }
    }

    /// `n` handoffs whose create jobs are claimed, adopted concurrently, and
    /// whose `order_created` callbacks are then claimed.
    #[tokio::test]
    async fn concurrent_outcomes_share_commits_and_one_failure_fails_alone() {
        let (_dir, store, mut conn) = store().await;
        let n = 24;
        for i in 0..n {
            let new = new_handoff(i as u128 + 1, &format!("R-{i}"), &format!("D-{i}"));
            store.create_handoff(new).await.unwrap();
        }
        let now = jiff::Timestamp::from_second(1_790_000_100).unwrap();
        let jobs = store
            .claim_postal_jobs(OWNER, now, LEASE, n as u32)
            .await
            .unwrap();
        assert_eq!(jobs.len(), n);

        // Starts and outcomes arriving together are committed together.
        let before = store.writes.commits();
        let started = join_all(
            jobs.iter()
                .map(|job| store.start_postal_attempt(job, OWNER, now, Duration::from_secs(10))),
        )
        .await;
        assert!(started.into_iter().all(|s| s.unwrap()));
        let adopted = join_all(jobs.iter().enumerate().map(|(i, job)| {
            let outcome = PostalOutcome::Adopt {
                order: order(i),
                duplicates: vec![],
                format: BodyFormat::Json,
            };
            store.finish_postal_job(job, OWNER, now, outcome)
        }))
        .await;
        assert!(adopted.into_iter().all(|held| held.unwrap()));
        let commits = store.writes.commits() - before;
        assert!(
            commits <= 4,
            "{} writes took {commits} commits; they were not grouped",
            2 * n
        );
        for (i, job) in jobs.iter().enumerate() {
            let h = store.handoff(None, &job.handoff.id).await.unwrap().unwrap();
            assert_eq!(h.status, crate::domain::Status::OrderCreated);
            assert_eq!(h.tracking_number, order(i).tracking_number);
        }

        let callbacks = store
            .claim_callbacks(OWNER, now, LEASE, n as u32)
            .await
            .unwrap();
        assert_eq!(callbacks.len(), n);
        // The next callback of the first handoff, behind the one delivered below.
        let first = &callbacks[0];
        sqlx::query(
            "INSERT INTO callbacks (id, handoff_id, client, sequence, event_type, body, content_type, \
             state, next_attempt_at, created_at) VALUES ('msg_next', ?, 'motcua', ?, 'handoff.status_changed', \
             x'7b7d', 'application/json', 'pending', 0, 0)",
        )
        .bind(first.handoff_id.as_str())
        .bind(first.sequence as i64 + 1)
        .execute(&mut conn)
        .await
        .unwrap();

        // Every kind of outcome in one group, one of them under a lost lease.
        let later = now + jiff::SignedDuration::from_secs(30);
        let (round1, round2) = callbacks.split_at(n / 2);
        let outcome = |i: usize| match i % 3 {
            0 => CallbackOutcome::Delivered,
            1 => CallbackOutcome::Retry {
                at: later,
                status: Some(503),
                error: "answered 503".into(),
            },
            _ => CallbackOutcome::Dead {
                status: None,
                error: "timed out".into(),
            },
        };
        let before = store.writes.commits();
        let answers = join_all(round1.iter().enumerate().map(|(i, cb)| {
            let owner = if i == 4 { "someone-else" } else { OWNER };
            store.finish_callback(cb, owner, now, outcome(i))
        }))
        .await;
        assert!(store.writes.commits() - before <= 2, "not grouped");
        for (i, (cb, answer)) in round1.iter().zip(&answers).enumerate() {
            let row: (String, i64, Option<i64>, Option<String>, Option<String>) = sqlx::query_as(
                "SELECT state, next_attempt_at, last_status, last_error, lease_owner \
                 FROM callbacks WHERE id = ?",
            )
            .bind(&cb.id)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            let (state, next, status, error, leased) = row;
            if i == 4 {
                assert!(!answer.as_ref().unwrap(), "a lost lease commits nothing");
                assert_eq!(
                    (state.as_str(), leased.as_deref()),
                    ("pending", Some(OWNER))
                );
                continue;
            }
            assert!(answer.as_ref().unwrap(), "write {i}: {answer:?}");
            assert_eq!(leased, None);
            let at = |t: jiff::Timestamp| t.as_millisecond();
            let expected = match outcome(i) {
                CallbackOutcome::Delivered => ("delivered", at(now), None, None),
                CallbackOutcome::Retry { .. } => {
                    ("pending", at(later), Some(503), Some("answered 503"))
                }
                CallbackOutcome::Dead { .. } => ("dead", at(now), None, Some("timed out")),
            };
            assert_eq!(
                (state.as_str(), next, status, error.as_deref()),
                expected,
                "write {i}"
            );
        }
        let head_since: Option<i64> =
            sqlx::query_scalar("SELECT head_since FROM callbacks WHERE id = 'msg_next'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(
            head_since,
            Some(now.as_millisecond()),
            "the next one reached the head"
        );

        // One callback's write fails inside a group: it fails alone.
        let doomed = round2[5].id.clone();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER doomed BEFORE UPDATE OF state ON callbacks WHEN NEW.id = '{doomed}' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let answers = join_all(
            round2
                .iter()
                .map(|cb| store.finish_callback(cb, OWNER, now, CallbackOutcome::Delivered)),
        )
        .await;
        for (i, answer) in answers.iter().enumerate() {
            if i == 5 {
                assert!(answer.is_err(), "the doomed write: {answer:?}");
            } else {
                assert!(answer.as_ref().unwrap(), "write {i}: {answer:?}");
            }
        }
        let delivered: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM callbacks WHERE state = 'delivered' AND id <> 'msg_next'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let delivered_in_round1 = (0..round1.len()).filter(|&i| i != 4 && i % 3 == 0).count();
        assert_eq!(delivered as usize, delivered_in_round1 + round2.len() - 1);
        let (state, leased): (String, Option<String>) =
            sqlx::query_as("SELECT state, lease_owner FROM callbacks WHERE id = ?")
                .bind(&doomed)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(
            (state.as_str(), leased.as_deref()),
            ("pending", Some(OWNER))
        );
    }
}
