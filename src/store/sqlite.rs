//! The embedded SQLite store: one process, WAL, `secure_delete`, an exclusive
//! lock file so a second process refuses to start.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, migrate::Migrator};

use super::{CreateOutcome, HandoffFilter, NewHandoff, Page, Store, StoreError, from_ms, ms};
use crate::config::StoreSettings;
use crate::domain::{CarrierInfo, Effect, Handoff, HandoffId, Kind, Source, Status, TimelineEntry};

static MIGRATOR: Migrator = sqlx::migrate!("./schemas/sql/sqlite");

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held for the life of the store: the OS lock that keeps a second process out.
    _lock: Option<File>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file, takes the process lock
    /// and runs the migrations.
    #[tracing::instrument(skip_all)]
    pub async fn open(url: &str, _settings: &StoreSettings) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("secure_delete", "ON");
        let path = options.get_filename().to_path_buf();
        let lock = if path.as_os_str().is_empty() || path == Path::new(":memory:") {
            None
        } else {
            Some(take_lock(&path)?)
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, _lock: lock })
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

const HANDOFF_COLUMNS: &str = "id, client, request_id, kind, dossier_code, agency_code, status, reason, \
     tracking_number, postage_vnd, cod_amount_vnd, cod_settled, created_at, updated_at, due_at, sla_due_at";

fn parse<T: FromStr>(what: &str, raw: &str) -> Result<T, StoreError> {
    raw.parse()
        .map_err(|_| StoreError::Corrupt(format!("{what} {raw:?}")))
}

fn opt_ms(v: Option<i64>) -> Result<Option<jiff::Timestamp>, StoreError> {
    v.map(from_ms).transpose()
}

fn handoff_from_row(row: &SqliteRow) -> Result<Handoff, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(Handoff {
        id: HandoffId::parse(&id).ok_or_else(|| StoreError::Corrupt(format!("id {id:?}")))?,
        client: row.try_get("client")?,
        request_id: row.try_get("request_id")?,
        kind: parse::<Kind>("kind", row.try_get("kind")?)?,
        dossier_code: row.try_get("dossier_code")?,
        agency_code: row.try_get("agency_code")?,
        status: parse::<Status>("status", row.try_get("status")?)?,
        reason: row.try_get("reason")?,
        tracking_number: row.try_get("tracking_number")?,
        postage_vnd: row.try_get("postage_vnd")?,
        cod_amount_vnd: u64::try_from(row.try_get::<i64, _>("cod_amount_vnd")?)
            .map_err(|_| StoreError::Corrupt("negative cod_amount_vnd".into()))?,
        cod_settled: row.try_get("cod_settled")?,
        created_at: from_ms(row.try_get("created_at")?)?,
        updated_at: from_ms(row.try_get("updated_at")?)?,
        due_at: opt_ms(row.try_get("due_at")?)?,
        sla_due_at: opt_ms(row.try_get("sla_due_at")?)?,
    })
}

fn timeline_from_row(row: &SqliteRow) -> Result<TimelineEntry, StoreError> {
    let status: Option<String> = row.try_get("status")?;
    let code: Option<i64> = row.try_get("carrier_code")?;
    let sequence: Option<i64> = row.try_get("sequence")?;
    Ok(TimelineEntry {
        sequence: sequence.map(|s| s as u64),
        status: status.map(|s| parse::<Status>("status", &s)).transpose()?,
        effect: parse::<Effect>("effect", row.try_get("effect")?)?,
        occurred_at: from_ms(row.try_get("occurred_at")?)?,
        source: parse::<Source>("source", row.try_get("source")?)?,
        carrier: match code {
            Some(code) => Some(CarrierInfo {
                code,
                text: row.try_get("carrier_text")?,
                location: row.try_get("carrier_location")?,
            }),
            None => None,
        },
        reason: row.try_get("reason")?,
        operator: row.try_get("operator")?,
    })
}

fn new_handoff_record(new: &NewHandoff) -> Handoff {
    Handoff {
        id: new.id.clone(),
        client: new.client.clone(),
        request_id: new.request.request_id.clone(),
        kind: new.request.kind,
        dossier_code: new.request.dossier_code.clone(),
        agency_code: new.request.agency.code.clone(),
        status: Status::Received,
        reason: None,
        tracking_number: None,
        postage_vnd: None,
        cod_amount_vnd: new.request.cod_amount_vnd,
        cod_settled: false,
        created_at: truncate_ms(new.now),
        updated_at: truncate_ms(new.now),
        due_at: new.request.due_at,
        sla_due_at: None,
    }
}

/// Times are stored with millisecond precision; answer what a re-read gives.
fn truncate_ms(ts: jiff::Timestamp) -> jiff::Timestamp {
    jiff::Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %new.id))]
    async fn create_handoff(&self, new: NewHandoff) -> Result<CreateOutcome, StoreError> {
        let details = serde_json::to_string(&new.request)
            .map_err(|e| StoreError::Corrupt(format!("request: {e}")))?;
        let now = ms(new.now);
        let mut tx = self.pool.begin().await?;
        // The insert comes first so the transaction takes the write lock at
        // once; the unique (client, request_id) decides between racing duplicates.
        let inserted = sqlx::query(
            "INSERT INTO handoffs (id, client, request_id, request_sha256, kind, dossier_code, \
             agency_code, status, cod_amount_vnd, details, due_at, created_at, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?, ?, ?, ?) \
             ON CONFLICT (client, request_id) DO NOTHING",
        )
        .bind(new.id.as_str())
        .bind(&new.client)
        .bind(&new.request.request_id)
        .bind(&new.request_sha256[..])
        .bind(new.request.kind.as_str())
        .bind(&new.request.dossier_code)
        .bind(&new.request.agency.code)
        .bind(new.request.cod_amount_vnd as i64)
        .bind(&details)
        .bind(new.request.due_at.map(ms))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            sqlx::query(
                "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
                 VALUES (?, 'create', 'pending', ?, ?, ?)",
            )
            .bind(new.id.as_str())
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            tracing::debug!("handoff and postal job committed");
            return Ok(CreateOutcome::Created(new_handoff_record(&new)));
        }
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS}, request_sha256 FROM handoffs WHERE client = ? AND request_id = ?"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&new.client)
            .bind(&new.request.request_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.rollback().await?;
        let stored: Vec<u8> = row.try_get("request_sha256")?;
        Ok(CreateOutcome::Existing {
            handoff: handoff_from_row(&row)?,
            same_request: stored == new.request_sha256,
        })
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
        let mut items = rows
            .iter()
            .map(handoff_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|h| h.id.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
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

    async fn close(&self) {
        self.pool.close().await;
    }
}
