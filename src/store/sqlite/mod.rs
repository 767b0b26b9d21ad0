//! The embedded SQLite store: one process, WAL, `secure_delete`, an exclusive
//! lock file so a second process refuses to start.

mod admin;
mod checkpoint;
mod group;
#[cfg(test)]
mod tests;
mod writer;
mod writes;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use super::shared::{HANDOFF_COLUMNS, handoff_from_row};
use super::{
    CallbackJob, CallbackOutcome, CreateOutcome, EventOutcome, IncomingCarrierEvent, NewHandoff,
    PostalJob, PostalOutcome, Store, StoreError, ms,
};
use crate::config::StoreSettings;
use crate::domain::callback::BodyFormat;
use crate::domain::{HandoffId, Kind, Source};
use writer::Writer;

/// What every connection of the store sets, sqlx's and the writer's
/// (`writer::open_writer`): each commit durable, deleted data overwritten,
/// foreign keys checked, and no checkpoint inside a commit (they run on a
/// task of their own, `checkpoint`; inside a commit they stalled every
/// request waiting behind it).
const CONNECTION_PRAGMAS: &[(&str, &str)] = &[
    ("synchronous", "FULL"),
    ("foreign_keys", "ON"),
    ("secure_delete", "ON"),
    ("wal_autocheckpoint", "0"),
];

/// The store's page size (SQLite's default) and the header of each WAL
/// frame, which holds one page.
const PAGE_SIZE: u64 = 4096;
const WAL_FRAME_HEADER: u64 = 24;

/// How long a connection waits for SQLite's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

static MIGRATOR: Migrator = sqlx::migrate!("./schemas/sql/sqlite");

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// The one writer: every write, on a connection of its own.
    writer: Writer,
    /// WAL pages written, as the checkpoint task saw the log grow.
    wal_pages: std::sync::Arc<std::sync::atomic::AtomicU64>,
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
        let writer = Writer::start(&path)?;
        let checkpoints = tokio_util::sync::CancellationToken::new();
        let wal_pages = std::sync::Arc::default();
        checkpoint::start(
            <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options).await?,
            checkpoints.clone(),
            std::sync::Arc::clone(&wal_pages),
        );
        Ok(Self {
            pool,
            writer,
            wal_pages,
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

#[async_trait]
impl Store for SqliteStore {
    #[tracing::instrument(skip_all, fields(handoff_id = %new.id))]
    async fn create_handoff(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError> {
        self.writer.create(new).await
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn request_cancel(
        &self,
        client: &str,
        id: &HandoffId,
        format: BodyFormat,
        now: jiff::Timestamp,
    ) -> Result<super::CancelRequest, StoreError> {
        let client = client.to_owned();
        let id = id.clone();
        self.writer
            .run(move |c| writes::request_cancel(c, &client, &id, format, now))
            .await
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn record_tracking_number(
        &self,
        id: &HandoffId,
        original_id: &str,
        tracking_number: &str,
        now: jiff::Timestamp,
    ) -> Result<bool, StoreError> {
        let (id, original_id, tracking_number) = (
            id.clone(),
            original_id.to_owned(),
            tracking_number.to_owned(),
        );
        self.writer
            .run(move |c| {
                writes::fill_tracking_number(c, &id, Some(&original_id), &tracking_number, now)
            })
            .await
    }

    async fn mark_polled(&self, id: &HandoffId, now: jiff::Timestamp) -> Result<(), StoreError> {
        let id = id.clone();
        self.writer
            .run(move |c| {
                c.prepare_cached("UPDATE handoffs SET polled_at = ?1 WHERE id = ?2")?
                    .execute(rusqlite::params![ms(now), id.as_str()])?;
                Ok(())
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn purge_personal_data(
        &self,
        cutoff: jiff::Timestamp,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let purged = self
            .writer
            .run(move |c| writes::purge_personal_data(c, cutoff, now))
            .await?;
        if purged > 0 {
            // secure_delete zeroes freed content in the database file; the
            // checkpoint moves the zeroed pages there and truncates the WAL,
            // which still held the old page images.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
            tracing::info!(purged, "personal data purged");
        }
        Ok(purged)
    }

    async fn record_sla_breaches(&self, now: jiff::Timestamp) -> Result<Vec<Kind>, StoreError> {
        self.writer
            .run(move |c| writes::record_sla_breaches(c, now))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn claim_postal_jobs(
        &self,
        owner: &str,
        now: jiff::Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<PostalJob>, StoreError> {
        let owner = owner.to_owned();
        self.writer
            .run(move |c| writes::claim_postal_jobs(c, &owner, now, lease, limit))
            .await
    }

    async fn start_postal_attempt(
        &self,
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        must_remain: Duration,
    ) -> Result<bool, StoreError> {
        let (job_id, calls_create, owner) = (job.id, job.calls_create(), owner.to_owned());
        self.writer
            .run(move |c| {
                writes::start_postal_attempt(c, job_id, calls_create, &owner, now, must_remain)
            })
            .await
    }

    async fn finish_postal_job(
        &self,
        job: &PostalJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: PostalOutcome,
    ) -> Result<bool, StoreError> {
        let settled = super::shared::Settlement::of(job, &outcome, now);
        let (job_id, id, owner) = (job.id, job.handoff.id.clone(), owner.to_owned());
        self.writer
            .run(move |c| {
                writes::finish_postal_job(c, job_id, &id, &owner, now, &settled, &outcome)
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn settle_orders(
        &self,
        id: &HandoffId,
        orders: &[crate::domain::PostalOrder],
        format: BodyFormat,
        now: jiff::Timestamp,
    ) -> Result<Vec<super::SettledOrder>, StoreError> {
        let (id, orders) = (id.clone(), orders.to_vec());
        self.writer
            .run(move |c| writes::settle_orders(c, &id, &orders, format, now))
            .await
    }

    #[tracing::instrument(skip_all, fields(events = events.len()))]
    async fn apply_carrier_events(
        &self,
        events: Vec<IncomingCarrierEvent>,
        context: &super::EventContext,
        now: jiff::Timestamp,
    ) -> Result<Vec<EventOutcome>, StoreError> {
        let context = context.clone();
        self.writer
            .run(move |c| writes::apply_events(c, &events, &context, now))
            .await
    }

    async fn store_malformed(
        &self,
        source: Source,
        raw: &str,
        problem: &str,
        now: jiff::Timestamp,
    ) -> Result<(), StoreError> {
        let (raw, problem) = (raw.to_owned(), problem.to_owned());
        self.writer
            .run(move |c| {
                c.prepare_cached(
                    "INSERT INTO carrier_inbox (source, received_at, problem, raw) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(rusqlite::params![source.as_str(), ms(now), problem, raw])?;
                Ok(())
            })
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn claim_callbacks(
        &self,
        owner: &str,
        now: jiff::Timestamp,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<CallbackJob>, StoreError> {
        let owner = owner.to_owned();
        self.writer
            .run(move |c| writes::claim_callbacks(c, &owner, now, lease, limit))
            .await
    }

    async fn finish_callback(
        &self,
        job: &CallbackJob,
        owner: &str,
        now: jiff::Timestamp,
        outcome: CallbackOutcome,
    ) -> Result<bool, StoreError> {
        let (job, owner) = (writes::CallbackRef::from(job), owner.to_owned());
        self.writer
            .run(move |c| writes::finish_callback(c, &job, &owner, now, &outcome))
            .await
    }

    async fn replay_dead_callbacks(
        &self,
        id: Option<&str>,
        now: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        let id = id.map(str::to_owned);
        self.writer
            .run(move |c| writes::requeue_dead(c, id.as_deref(), now))
            .await
    }

    async fn release_leases(&self, owners: &[&str]) -> Result<u64, StoreError> {
        let owners: Vec<String> = owners.iter().map(|o| (*o).to_owned()).collect();
        self.writer
            .run(move |c| {
                let mut released = 0;
                for owner in &owners {
                    for table in ["postal_jobs", "callbacks"] {
                        let sql = format!(
                            "UPDATE {table} SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = ?1"
                        );
                        released += c.prepare_cached(&sql)?.execute([owner])? as u64;
                    }
                }
                Ok(released)
            })
            .await
    }

    fn write_stats(&self) -> Option<super::WriteStats> {
        use std::sync::atomic::Ordering::Relaxed;
        Some(super::WriteStats {
            commits: self.writer.commits(),
            statements: writer::STATEMENTS.load(Relaxed),
            wal_bytes: self.wal_pages.load(Relaxed) * (PAGE_SIZE + WAL_FRAME_HEADER),
        })
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
