//! What both backends read the same way. Reads go through sqlx on either
//! backend, so each is written once here: one SQL text (`$n` parameters,
//! which SQLite takes too), compiled for each pool by [`on_pool!`]. The
//! store traits' default methods call these; a backend only names its pool
//! ([`super::admin::AdminStore::read_pool`]).

use jiff::civil::Date;
use sqlx::{PgPool, Row, SqlitePool};

use super::admin::{
    CallbackPage, CallbackRecord, CallbackState, HandoffRecord, StatsBuilder, StatsFacts, StatsRow,
};
use super::shared::{
    CALLBACKS, HANDOFF_COLUMNS, TERMINAL_STATUSES, callback_from_row, handoff_from_row, parse,
    start_of, timeline_from_row,
};
use super::{HandoffFilter, Page, QueueStats, QuietHandoff, StoreError, from_ms, ms};
use crate::domain::{Handoff, HandoffId, Kind, Status, TimelineEntry};

/// The pool a backend reads through.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub enum ReadPool<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

/// `$body` with `$p` bound to the pool of either backend: one text,
/// type-checked for each.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            ReadPool::Sqlite($p) => $body,
            ReadPool::Postgres($p) => $body,
        }
    };
}

impl ReadPool<'_> {
    /// The SQL function of the greatest of its arguments.
    fn greatest(self) -> &'static str {
        match self {
            ReadPool::Sqlite(_) => "MAX",
            ReadPool::Postgres(_) => "GREATEST",
        }
    }

    pub(super) async fn ping(self) -> Result<(), StoreError> {
        on_pool!(self, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    pub(super) async fn handoff(
        self,
        client: Option<&str>,
        id: &HandoffId,
    ) -> Result<Option<Handoff>, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = $1 AND ($2 IS NULL OR client = $2)"
        );
        on_pool!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id.as_str())
                .bind(client)
                .fetch_optional(p)
                .await?;
            row.as_ref().map(handoff_from_row).transpose()
        })
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    pub(super) async fn timeline(self, id: &HandoffId) -> Result<Vec<TimelineEntry>, StoreError> {
        const SQL: &str = "SELECT sequence, status, effect, occurred_at, source, carrier_code, \
             carrier_text, carrier_location, reason, operator FROM timeline WHERE handoff_id = $1 \
             ORDER BY id";
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).bind(id.as_str()).fetch_all(p).await?;
            rows.iter().map(timeline_from_row).collect()
        })
    }

    #[tracing::instrument(skip_all)]
    pub(super) async fn list_handoffs(
        self,
        filter: &HandoffFilter,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        let sql = format!(
            "SELECT {HANDOFF_COLUMNS} FROM handoffs \
             WHERE ($1 IS NULL OR client = $1) AND ($2 IS NULL OR dossier_code = $2) \
             AND ($3 IS NULL OR request_id = $3) AND ($4 IS NULL OR status = $4) \
             AND ($5 IS NULL OR tracking_number = $5) AND ($6 IS NULL OR id < $6) \
             AND ($8 IS NULL OR details LIKE $8) \
             ORDER BY id DESC LIMIT $7"
        );
        // The details hold the request as JSON, the citizen after the
        // agency, and no phone after the citizen's: the first `phone` after
        // `"citizen":{` is the citizen's, a whole string value of digits.
        let phone = filter
            .phone
            .as_deref()
            .map(|p| format!("%\"citizen\":{{%\"phone\":\"{p}\"%"));
        let items = on_pool!(self, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.client.as_deref())
                .bind(filter.dossier_code.as_deref())
                .bind(filter.request_id.as_deref())
                .bind(filter.status.map(Status::as_str))
                .bind(filter.tracking_number.as_deref())
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .bind(phone.as_deref())
                .fetch_all(p)
                .await?;
            rows.iter().map(handoff_from_row).collect::<Result<Vec<_>, _>>()?
        });
        Ok(Page::cut(items, limit, |h| h.id.to_string()))
    }

    pub(super) async fn count_cod_unsettled(
        self,
        cod_since: jiff::Timestamp,
    ) -> Result<u64, StoreError> {
        const SQL: &str = "SELECT COUNT(*) FROM handoffs WHERE status = 'delivered' \
             AND kind = 'return' AND cod_amount_vnd > 0 AND NOT cod_settled \
             AND COALESCE(delivered_at, terminal_at) <= $1";
        let n: i64 = on_pool!(self, p => {
            sqlx::query_scalar(SQL).bind(ms(cod_since)).fetch_one(p).await?
        });
        Ok(n as u64)
    }

    pub(super) async fn quiet_handoffs(
        self,
        quiet_since: jiff::Timestamp,
        cod_since: jiff::Timestamp,
        limit: u32,
    ) -> Result<Vec<QuietHandoff>, StoreError> {
        let sql = format!(
            "SELECT id, client, created_at, tracking_number, carrier_original_id FROM handoffs \
             WHERE (tracking_number IS NOT NULL OR carrier_original_id IS NOT NULL) \
             AND (status NOT IN ({terminal}) \
                  OR (status = 'delivered' AND kind = 'return' AND cod_amount_vnd > 0 AND NOT cod_settled \
                      AND COALESCE(delivered_at, terminal_at) > $3)) \
             AND {greatest}(COALESCE(last_carrier_event_at, 0), COALESCE(polled_at, 0), COALESCE(order_created_at, 0)) <= $1 \
             ORDER BY {greatest}(COALESCE(last_carrier_event_at, 0), COALESCE(polled_at, 0)) LIMIT $2",
            terminal = *TERMINAL_STATUSES,
            greatest = self.greatest(),
        );
        on_pool!(self, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(ms(quiet_since))
                .bind(i64::from(limit))
                .bind(ms(cod_since))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(QuietHandoff {
                        id: super::shared::handoff_id(r.try_get("id")?)?,
                        client: r.try_get("client")?,
                        created_at: from_ms(r.try_get("created_at")?)?,
                        tracking_number: r.try_get("tracking_number")?,
                        original_id: r.try_get("carrier_original_id")?,
                    })
                })
                .collect()
        })
    }

    pub(super) async fn handoff_counts(self) -> Result<Vec<(Kind, Status, u64)>, StoreError> {
        const SQL: &str = "SELECT kind, status, COUNT(*) AS n FROM handoffs GROUP BY kind, status";
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        parse::<Kind>("kind", r.try_get("kind")?)?,
                        parse::<Status>("status", r.try_get("status")?)?,
                        r.try_get::<i64, _>("n")? as u64,
                    ))
                })
                .collect()
        })
    }

    /// `SELECT COUNT(*) …` as a number.
    async fn count(self, sql: &'static str) -> Result<u64, StoreError> {
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(sql).fetch_one(p).await?);
        Ok(n as u64)
    }

    pub(super) async fn count_handoffs(self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) FROM handoffs").await
    }

    pub(super) async fn count_pending_postal_jobs(self) -> Result<u64, StoreError> {
        self.count("SELECT COUNT(*) FROM postal_jobs WHERE state = 'pending'")
            .await
    }

    /// Depth, oldest age and dead letters of a queue table.
    pub(super) async fn queue_stats(
        self,
        table: &'static str,
        now: jiff::Timestamp,
    ) -> Result<QueueStats, StoreError> {
        let sql = format!(
            "SELECT COUNT(*) FILTER (WHERE state = 'pending') AS depth, \
             MIN(created_at) FILTER (WHERE state = 'pending') AS oldest, \
             COUNT(*) FILTER (WHERE state = 'dead') AS dead FROM {table}"
        );
        on_pool!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_one(p).await?;
            let oldest: Option<i64> = row.try_get("oldest")?;
            Ok(QueueStats {
                depth: row.try_get::<i64, _>("depth")? as u64,
                oldest_age_s: oldest.map_or(0.0, |o| ((ms(now) - o).max(0) as f64) / 1000.0),
                dead: row.try_get::<i64, _>("dead")? as u64,
            })
        })
    }

    pub(super) async fn callbacks_of(
        self,
        id: &HandoffId,
    ) -> Result<Vec<(u64, String, Vec<u8>)>, StoreError> {
        const SQL: &str = "SELECT sequence, event_type, body FROM callbacks WHERE handoff_id = $1 ORDER BY sequence";
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).bind(id.as_str()).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get::<i64, _>("sequence")? as u64,
                        r.try_get("event_type")?,
                        r.try_get("body")?,
                    ))
                })
                .collect()
        })
    }

    pub(super) async fn list_callbacks(
        self,
        state: CallbackState,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<CallbackPage, StoreError> {
        let sql = format!(
            "SELECT * FROM {CALLBACKS} \
             WHERE (CASE $1 \
                WHEN 'held' THEN x.state = 'pending' AND x.behind_dead \
                WHEN 'pending' THEN x.state = 'pending' AND NOT x.behind_dead \
                ELSE x.state = $1 END) \
             AND ($2 IS NULL OR x.id > $2) ORDER BY x.id LIMIT $3"
        );
        let items = on_pool!(self, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(state.as_str())
                .bind(cursor)
                .bind(i64::from(limit) + 1)
                .fetch_all(p)
                .await?;
            rows.iter().map(callback_from_row).collect::<Result<Vec<_>, _>>()?
        });
        Ok(CallbackPage::cut(items, limit, |c| c.id.clone()))
    }

    /// Every callback of one handoff, in sequence order.
    pub(super) async fn handoff_callbacks(
        self,
        id: &HandoffId,
    ) -> Result<Vec<CallbackRecord>, StoreError> {
        let sql = format!("SELECT * FROM {CALLBACKS} WHERE x.handoff_id = $1 ORDER BY x.sequence");
        on_pool!(self, p => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_all(p).await?;
            rows.iter().map(callback_from_row).collect()
        })
    }

    /// What an operator's page shows of a handoff beyond its document.
    pub(super) async fn handoff_record(
        self,
        id: &HandoffId,
    ) -> Result<Option<HandoffRecord>, StoreError> {
        const SQL: &str = "SELECT details, delivered_at FROM handoffs WHERE id = $1";
        let row: Option<(Option<String>, Option<i64>)> = on_pool!(self, p => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(p).await?
        });
        let Some((details, delivered_at)) = row else {
            return Ok(None);
        };
        let request = details
            .map(|d| {
                serde_json::from_str(&d)
                    .map_err(|e| StoreError::Corrupt(format!("details of {id}: {e}")))
            })
            .transpose()?;
        Ok(Some(HandoffRecord {
            request,
            delivered_at: delivered_at.map(from_ms).transpose()?,
        }))
    }

    /// When the gateway last heard from Vietnam Post about any handoff.
    pub(super) async fn last_carrier_event(self) -> Result<Option<jiff::Timestamp>, StoreError> {
        const SQL: &str = "SELECT MAX(last_carrier_event_at) FROM handoffs";
        let at: Option<i64> = on_pool!(self, p => {
            sqlx::query_scalar(SQL).fetch_one(p).await?
        });
        at.map(from_ms).transpose()
    }

    pub(super) async fn callback(self, id: &str) -> Result<Option<CallbackRecord>, StoreError> {
        let sql = format!("SELECT * FROM {CALLBACKS} WHERE x.id = $1");
        on_pool!(self, p => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(p).await?;
            row.as_ref().map(callback_from_row).transpose()
        })
    }

    pub(super) async fn stats(self, from: Date, to: Date) -> Result<Vec<StatsRow>, StoreError> {
        const SQL: &str = "SELECT client, agency_code, kind, status, created_at, order_created_at, \
             picked_up_at, delivered_at, sla_due_at FROM handoffs \
             WHERE created_at >= $1 AND created_at < $2";
        let end = to.tomorrow().map_or(i64::MAX, start_of);
        let mut builder = StatsBuilder::default();
        on_pool!(self, p => {
            let rows = sqlx::query(SQL).bind(start_of(from)).bind(end).fetch_all(p).await?;
            for r in &rows {
                builder.add(StatsFacts {
                    client: r.try_get("client")?,
                    agency_code: r.try_get("agency_code")?,
                    kind: parse::<Kind>("kind", r.try_get("kind")?)?,
                    status: parse::<Status>("status", r.try_get("status")?)?,
                    created_at: r.try_get("created_at")?,
                    order_created_at: r.try_get("order_created_at")?,
                    picked_up_at: r.try_get("picked_up_at")?,
                    delivered_at: r.try_get("delivered_at")?,
                    sla_due_at: r.try_get("sla_due_at")?,
                });
            }
        });
        Ok(builder.rows())
    }
}
