//! WAL checkpoints on a task of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses its
//! threshold: that commit, and with group commit every request queued behind
//! it, waits for pages to be copied and the database file synced (the p99 of
//! a commit went from under a millisecond to tens of them). Here a passive
//! checkpoint runs beside the writers on a pool connection and never blocks
//! them; only a WAL grown past `RESTART_PAGES`, because writers never left
//! it a moment to catch up, is restarted, which waits for them once. The
//! task has a connection of its own, so the store's connection is never
//! held by a checkpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{Connection, SqliteConnection};
use tokio_util::sync::CancellationToken;

/// How often a passive checkpoint runs.
const INTERVAL: Duration = Duration::from_millis(100);
/// WAL pages past which the log is restarted (256 MiB of 4 KiB pages).
const RESTART_PAGES: i64 = 65_536;

/// Starts the checkpoint task on `conn`; it stops when `stop` is cancelled.
/// It adds to `wal_pages` the pages the log grew by since its last look (a
/// restart empties the log, so what was written after that look and before
/// the restart goes uncounted: the figure is a lower bound).
pub(super) fn start(
    mut conn: SqliteConnection,
    stop: CancellationToken,
    wal_pages: Arc<AtomicU64>,
) {
    tokio::spawn(async move {
        let mut seen = 0;
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match checkpoint(&mut conn, "PRAGMA wal_checkpoint(PASSIVE)").await {
                Ok(log) => {
                    let grown = if log >= seen { log - seen } else { log };
                    wal_pages.fetch_add(grown.max(0) as u64, Ordering::Relaxed);
                    seen = log;
                    if log > RESTART_PAGES {
                        tracing::info!(wal_pages = log, "restarting a long WAL");
                        match checkpoint(&mut conn, "PRAGMA wal_checkpoint(RESTART)").await {
                            Ok(_) => seen = 0,
                            Err(e) => tracing::warn!(error = %e, "WAL restart failed"),
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
        let _ = conn.close().await;
    });
}

/// Runs a checkpoint; returns the WAL's length in pages.
async fn checkpoint(conn: &mut SqliteConnection, sql: &'static str) -> Result<i64, sqlx::Error> {
    let (_busy, log, _copied): (i64, i64, i64) = sqlx::query_as(sql).fetch_one(conn).await?;
    Ok(log)
}
