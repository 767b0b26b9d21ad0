//! The PostgreSQL writer of intake groups (see `store::group`).
//!
//! A group is written with two multi-row statements fed column arrays
//! (`UNNEST`), in key order, so that two processes writing overlapping
//! groups take their row locks in the same order and cannot deadlock.

use std::collections::HashSet;
use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::{HANDOFF_COLUMNS, handoff_from_row};
use crate::store::group::{
    Existing, GroupWriter, IntakeQueue, Pending, Slot, firsts, not_inserted, outcomes, slots,
};
use crate::store::{CreateOutcome, StoreError, ms};

const INSERT_HANDOFFS: &str = "INSERT INTO handoffs (id, client, request_id, request_sha256, kind, \
     dossier_code, agency_code, status, cod_amount_vnd, details, due_at, created_at, updated_at) \
     SELECT id, client, request_id, sha, kind, dossier_code, agency_code, 'received', cod, details, \
     due_at, now, now \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::text[], $6::text[], \
     $7::text[], $8::int8[], $9::text[], $10::int8[], $11::int8[]) \
     AS g(id, client, request_id, sha, kind, dossier_code, agency_code, cod, details, due_at, now) \
     ORDER BY client, request_id \
     ON CONFLICT (client, request_id) DO NOTHING RETURNING id";

const INSERT_JOBS: &str = "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
     SELECT id, 'create', 'pending', created_at, created_at, created_at \
     FROM handoffs WHERE id = ANY($1::text[])";

static SELECT_EXISTING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {HANDOFF_COLUMNS}, request_sha256 FROM handoffs \
         WHERE (client, request_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
    )
});

const INSERT_ONE_HANDOFF: &str = "INSERT INTO handoffs (id, client, request_id, request_sha256, kind, dossier_code, \
     agency_code, status, cod_amount_vnd, details, due_at, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, 'received', $8, $9, $10, $11, $12) \
     ON CONFLICT (client, request_id) DO NOTHING";

const INSERT_ONE_JOB: &str = "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
     VALUES ($1, 'create', 'pending', $2, $3, $4)";

/// Starts the writer's task on the store's pool.
pub(super) fn start(pool: PgPool) -> IntakeQueue {
    IntakeQueue::start(PgGroups { pool })
}

struct PgGroups {
    pool: PgPool,
}

#[async_trait]
impl GroupWriter for PgGroups {
    async fn write(
        &mut self,
        group: &[Pending],
    ) -> Result<Vec<Result<CreateOutcome, StoreError>>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let slots = match insert_group(&mut tx, group).await {
            Ok(slots) => slots,
            Err(e) => {
                tracing::warn!(error = %e, size = group.len(), "intake group written one by one");
                tx.rollback().await?;
                tx = conn.begin().await?;
                let mut slots = Vec::with_capacity(group.len());
                for p in group {
                    slots.push(insert_one(&mut tx, p).await);
                }
                slots
            }
        };
        let existing = read_existing(&mut tx, group, &slots).await?;
        tx.commit().await?;
        Ok(outcomes(group, slots, &existing))
    }
}

/// The fast path: two statements for the whole group.
async fn insert_group(conn: &mut PgConnection, group: &[Pending]) -> Result<Vec<Slot>, StoreError> {
    let firsts: Vec<&Pending> = firsts(group).collect();
    let column = |f: fn(&Pending) -> &str| firsts.iter().map(|p| f(p)).collect::<Vec<&str>>();
    let inserted = sqlx::query(INSERT_HANDOFFS)
        .bind(column(|p| p.new.id.as_str()))
        .bind(column(|p| &p.new.client))
        .bind(column(|p| &p.new.request.request_id))
        .bind(
            firsts
                .iter()
                .map(|p| p.new.request_sha256.to_vec())
                .collect::<Vec<Vec<u8>>>(),
        )
        .bind(column(|p| p.new.request.kind.as_str()))
        .bind(column(|p| &p.new.request.dossier_code))
        .bind(column(|p| &p.new.request.agency.code))
        .bind(
            firsts
                .iter()
                .map(|p| p.new.request.cod_amount_vnd as i64)
                .collect::<Vec<i64>>(),
        )
        .bind(column(|p| p.new.details()))
        .bind(
            firsts
                .iter()
                .map(|p| p.new.request.due_at.map(ms))
                .collect::<Vec<Option<i64>>>(),
        )
        .bind(firsts.iter().map(|p| ms(p.new.now)).collect::<Vec<i64>>())
        .fetch_all(&mut *conn)
        .await?;
    let created = inserted
        .iter()
        .map(|row| row.try_get::<&str, _>(0))
        .collect::<Result<HashSet<&str>, _>>()?;
    if !created.is_empty() {
        sqlx::query(INSERT_JOBS)
            .bind(created.iter().copied().collect::<Vec<&str>>())
            .execute(&mut *conn)
            .await?;
    }
    Ok(slots(group, &created))
}

/// The slow path: one request in its own savepoint.
async fn insert_one(conn: &mut PgConnection, p: &Pending) -> Slot {
    let attempt = async {
        let mut sp = conn.begin().await?;
        let n = &p.new;
        let now = ms(n.now);
        let inserted = sqlx::query(INSERT_ONE_HANDOFF)
            .bind(n.id.as_str())
            .bind(&n.client)
            .bind(&n.request.request_id)
            .bind(&n.request_sha256[..])
            .bind(n.request.kind.as_str())
            .bind(&n.request.dossier_code)
            .bind(&n.request.agency.code)
            .bind(n.request.cod_amount_vnd as i64)
            .bind(p.new.details())
            .bind(n.request.due_at.map(ms))
            .bind(now)
            .bind(now)
            .execute(&mut *sp)
            .await?
            .rows_affected();
        if inserted == 1 {
            sqlx::query(INSERT_ONE_JOB)
                .bind(n.id.as_str())
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *sp)
                .await?;
        }
        sp.commit().await?;
        Ok::<_, StoreError>(if inserted == 1 {
            Slot::Created
        } else {
            Slot::Existing
        })
    };
    // A failed attempt's savepoint is rolled back when it is dropped.
    attempt.await.unwrap_or_else(Slot::Failed)
}

/// Reads, in the group's transaction, the stored handoff of every request
/// that was not inserted.
async fn read_existing(
    conn: &mut PgConnection,
    group: &[Pending],
    slots: &[Slot],
) -> Result<Existing, StoreError> {
    let (clients, request_ids): (Vec<&str>, Vec<&str>) =
        not_inserted(group, slots).map(Pending::key).unzip();
    if clients.is_empty() {
        return Ok(Existing::new());
    }
    let rows = sqlx::query(AssertSqlSafe(SELECT_EXISTING.as_str()))
        .bind(clients)
        .bind(request_ids)
        .fetch_all(&mut *conn)
        .await?;
    let mut found = Existing::with_capacity(rows.len());
    for row in &rows {
        let handoff = handoff_from_row(row)?;
        let sha: Vec<u8> = row.try_get("request_sha256")?;
        found.insert(
            (handoff.client.clone(), handoff.request_id.clone()),
            (handoff, sha),
        );
    }
    Ok(found)
}
