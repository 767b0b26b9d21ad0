//! The one writer of the SQLite store.
//!
//! A thread of its own owns the store's read-write connection (rusqlite, the
//! same bundled SQLite as sqlx's reads use). It takes every command queued
//! when its previous commit ended (intake requests, and units: a closure that
//! writes one operation's rows, such as a postal outcome, a webhook's
//! carrier events or a claim), runs them in one `BEGIN IMMEDIATE … COMMIT`
//! with cached prepared statements, and answers each only after the commit.
//! One commit, and one WAL fsync, serves the whole group; no tokio task waits
//! on a statement (through sqlx, each statement was a round trip to the
//! connection's thread, about 57 µs: docs/benchmarks.md).
//!
//! The fast path runs the group without savepoints (whose statement journal
//! copied every page the group touched). If anything fails, the transaction
//! is rolled back and the group is run again with each intake request and
//! each unit in a savepoint of its own, so one failure fails that command
//! alone. A unit is therefore a closure that may run twice: it only reads
//! and writes the store, and the second run starts from the same store as
//! the first.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::config::DbConfig;
use rusqlite::trace::{TraceEvent, TraceEventCodes};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::group::{insert_group, insert_one, read_existing};
use super::{BUSY_TIMEOUT, CONNECTION_PRAGMAS};
use crate::store::group::{MAX_GROUP, Pending, outcomes};
use crate::store::{CreateOutcome, NewHandoff, StoreError};

/// Commands waiting for the writer before callers wait to queue.
const QUEUE: usize = 4096;

/// One operation's writes, run on the writer's connection.
pub(super) trait Unit: Send {
    /// Runs the operation, keeping its answer; an `Err` fails it.
    fn apply(&mut self, conn: &Connection) -> Result<(), StoreError>;
    /// Sends the answer kept by the last `apply` once it is committed, or
    /// the error that stopped it.
    fn answer(self: Box<Self>, committed: Result<(), StoreError>);
}

struct Job<F, R> {
    run: F,
    kept: Option<R>,
    reply: oneshot::Sender<Result<R, StoreError>>,
}

impl<F, R> Unit for Job<F, R>
where
    F: FnMut(&Connection) -> Result<R, StoreError> + Send,
    R: Send,
{
    fn apply(&mut self, conn: &Connection) -> Result<(), StoreError> {
        // A unit that panics (a bug) fails alone: the writer's thread, and
        // every other write, go on. The transaction is rolled back either way.
        let run = &mut self.run;
        let kept = std::panic::catch_unwind(AssertUnwindSafe(|| run(conn)))
            .map_err(|_| StoreError::Corrupt("a write of the store panicked".into()))??;
        self.kept = Some(kept);
        Ok(())
    }

    fn answer(self: Box<Self>, committed: Result<(), StoreError>) {
        let Self { kept, reply, .. } = *self;
        let answer = committed.and_then(|()| {
            kept.ok_or_else(|| StoreError::Corrupt("a committed write kept no answer".into()))
        });
        // A caller that went away (a drain, a client that hung up) still had
        // its write committed; nothing to tell it.
        let _ = reply.send(answer);
    }
}

enum Command {
    Intake(Box<Pending>),
    Unit(Box<dyn Unit>),
}

/// The queue of the store's writer.
pub(super) struct Writer {
    queue: mpsc::Sender<Command>,
    /// Transactions committed.
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Opens the writer's connection (the schema is migrated already) and
    /// starts its thread; the thread ends once the queue is dropped and empty.
    pub(super) fn start(db: &Path) -> Result<Self, StoreError> {
        let conn = open_writer(db)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("bcci-sqlite-writer".into())
            .spawn(move || run(conn, rx, &counted))
            .map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        Ok(Self { queue, commits })
    }

    /// Records the handoff in the next group; answers once it is committed.
    pub(super) async fn create(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError> {
        let (pending, answer) = Pending::new(new);
        self.send(Command::Intake(Box::new(pending))).await?;
        answer
            .await
            .map_err(|_| StoreError::gone("the store's writer dropped a request"))?
    }

    /// Runs `unit` in the next group; answers what it returned once that is
    /// committed. `unit` may run twice (see the module's documentation).
    pub(super) async fn run<R, F>(&self, unit: F) -> Result<R, StoreError>
    where
        F: FnMut(&Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            run: unit,
            kept: None,
            reply,
        };
        self.send(Command::Unit(Box::new(job))).await?;
        answer
            .await
            .map_err(|_| StoreError::gone("the store's writer dropped a write"))?
    }

    async fn send(&self, command: Command) -> Result<(), StoreError> {
        self.queue
            .send(command)
            .await
            .map_err(|_| StoreError::gone("the store's writer has stopped"))
    }

    /// Transactions committed so far.
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

/// A read-write connection with the settings of every connection of the
/// store (`CONNECTION_PRAGMAS`).
pub(super) fn open_writer(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    for (name, value) in CONNECTION_PRAGMAS {
        conn.pragma_update(None, name, value)?;
    }
    // The query planner's stability guarantee: a statement's plan does not
    // depend on the values bound to it. Without it, SQLite marks a parameter
    // compared next to a partial index's constant (`callbacks_heads_due`)
    // and prepares the statement again whenever that value changes: every
    // claim was compiled anew (4 % of the writer's time end to end).
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.trace_v2(TraceEventCodes::SQLITE_TRACE_STMT, Some(count_statement));
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Statements the writers of this process have run (`WriteStats`): SQLite
/// reports each one's start, a trigger's included, to a plain function.
pub(super) static STATEMENTS: AtomicU64 = AtomicU64::new(0);

fn count_statement(_: TraceEvent<'_>) {
    STATEMENTS.fetch_add(1, Ordering::Relaxed);
}

fn run(mut conn: Connection, mut rx: mpsc::Receiver<Command>, commits: &AtomicU64) {
    let mut intakes = Vec::with_capacity(MAX_GROUP);
    let mut units: Vec<Box<dyn Unit>> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Intake(p) => intakes.push(*p),
                Command::Unit(u) => units.push(u),
            }
            if intakes.len() + units.len() < MAX_GROUP {
                next = rx.try_recv().ok();
            }
        }
        match write(&mut conn, &intakes, &mut units) {
            Ok((created, applied)) => {
                commits.fetch_add(1, Ordering::Relaxed);
                crate::store::group::answer(&mut intakes, Ok(created));
                for (unit, applied) in units.drain(..).zip(applied) {
                    unit.answer(applied);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, size = intakes.len() + units.len(), "a write group could not be committed");
                let text = e.to_string();
                crate::store::group::answer(&mut intakes, Err(e));
                for unit in units.drain(..) {
                    unit.answer(Err(StoreError::Unavailable(text.clone().into())));
                }
            }
        }
    }
}

type Written = (
    Vec<Result<CreateOutcome, StoreError>>,
    Vec<Result<(), StoreError>>,
);

/// Writes a group: intake requests, then units. An `Err` means nothing was
/// committed.
pub(super) fn write(
    conn: &mut Connection,
    intakes: &[Pending],
    units: &mut [Box<dyn Unit>],
) -> Result<Written, StoreError> {
    let failure = {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        match together(&tx, intakes, units) {
            Ok(slots) => {
                let existing = read_existing(&tx, intakes, &slots)?;
                tx.commit()?;
                let applied = units.iter().map(|_| Ok(())).collect();
                return Ok((outcomes(intakes, slots, &existing), applied));
            }
            // Dropping the transaction rolls it back.
            Err(e) => e,
        }
    };
    tracing::warn!(error = %failure, size = intakes.len() + units.len(), "a write group written one by one");
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let slots: Vec<_> = intakes.iter().map(|p| insert_one(&mut tx, p)).collect();
    let mut applied = Vec::with_capacity(units.len());
    for unit in units.iter_mut() {
        let sp = tx.savepoint()?;
        // A failed unit's savepoint is rolled back when it is dropped.
        applied.push(match unit.apply(&sp) {
            Ok(()) => sp.commit().map_err(StoreError::from),
            Err(e) => Err(e),
        });
    }
    let existing = read_existing(&tx, intakes, &slots)?;
    tx.commit()?;
    Ok((outcomes(intakes, slots, &existing), applied))
}

fn together(
    tx: &Connection,
    intakes: &[Pending],
    units: &mut [Box<dyn Unit>],
) -> Result<Vec<crate::store::group::Slot>, StoreError> {
    let slots = insert_group(tx, intakes)?;
    for unit in units.iter_mut() {
        unit.apply(tx)?;
    }
    Ok(slots)
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
        let before = store.writer.commits();
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
        let commits = store.writer.commits() - before;
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
        let before = store.writer.commits();
        let answers = join_all(round1.iter().enumerate().map(|(i, cb)| {
            let owner = if i == 4 { "someone-else" } else { OWNER };
            store.finish_callback(cb, owner, now, outcome(i))
        }))
        .await;
        assert!(store.writer.commits() - before <= 2, "not grouped");
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

    /// A unit that panics fails alone: the units beside it commit, and the
    /// writer's thread takes the next writes.
    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        use crate::domain::Source;
        let (_dir, store, mut conn) = store().await;
        let now = jiff::Timestamp::from_second(1_790_000_100).unwrap();
        let (before, panicked, beside) = tokio::join!(
            store.store_malformed(Source::Webhook, "raw-1", "problem", now),
            store
                .writer
                .run(|_| -> Result<(), crate::store::StoreError> { panic!("a bug in a write") }),
            store.store_malformed(Source::Webhook, "raw-2", "problem", now),
        );
        before.unwrap();
        beside.unwrap();
        assert!(panicked.is_err(), "{panicked:?}");
        store
            .store_malformed(Source::Webhook, "raw-3", "problem", now)
            .await
            .unwrap();
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM carrier_inbox")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(stored, 3);
    }

    /// The store counts what its writer does: commits, statements (two per
    /// new handoff: its row and its create job) and WAL bytes.
    #[tokio::test]
    async fn the_store_counts_its_commits_statements_and_wal_bytes() {
        let (_dir, store, _conn) = store().await;
        let before = store.write_stats().unwrap();
        for i in 0..3 {
            let new = new_handoff(i + 1, &format!("R-{i}"), &format!("D-{i}"));
            store.create_handoff(new).await.unwrap();
        }
        // The checkpointer looks at the log every 100 ms.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let after = store.write_stats().unwrap();
        assert_eq!(after.commits - before.commits, 3, "{before:?} → {after:?}");
        assert!(
            after.statements - before.statements >= 6,
            "{before:?} → {after:?}"
        );
        assert!(
            after.wal_bytes - before.wal_bytes >= 3 * 4096,
            "{before:?} → {after:?}"
        );
    }
}
