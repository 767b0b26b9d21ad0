//! The PostgreSQL implementation of [`AdminStore`]. Status changes go through
//! the same helpers as the workers' (`move_handoff`, `record_change`), so
//! callback sequences stay contiguous.

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;
use sqlx::Row;

use super::{PostgresStore, insert_timeline, lock_handoff, move_handoff, record_change};
use crate::domain::callback::{BodyFormat, CallbackType};
use crate::domain::{Effect, Handoff, HandoffId, Source, Status};
use crate::store::admin::{
    AdminOutcome, AdminStore, CallbackRecord, CallbackReplay, CallbackState, Resolution,
};
use crate::store::shared::{
    CALLBACKS, Change, HANDOFF_COLUMNS, TimelineDraft, callback_from_row, handoff_from_row, parse,
};
use crate::store::{StoreError, ms};

/// The handoff's status, client and whether its personal data was erased;
/// locks its row for the rest of the transaction.
async fn current(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
) -> Result<Option<(Status, String, bool)>, StoreError> {
    let row = sqlx::query(
        "SELECT status, client, personal_data_erased_at IS NOT NULL AS erased FROM handoffs WHERE id = $1 FOR UPDATE",
    )
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|r| {
        Ok((
            parse::<Status>("status", r.try_get("status")?)?,
            r.try_get("client")?,
            r.try_get("erased")?,
        ))
    })
    .transpose()
}

async fn read_handoff(tx: &mut sqlx::PgConnection, id: &HandoffId) -> Result<Handoff, StoreError> {
    let sql = format!("SELECT {HANDOFF_COLUMNS} FROM handoffs WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?;
    handoff_from_row(&row)
}

/// Names the operator on the handoff's newest timeline entry (the one the
/// action just recorded).
async fn sign(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    operator: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE timeline SET operator = $1 WHERE id = (SELECT MAX(id) FROM timeline WHERE handoff_id = $2)",
    )
    .bind(operator)
    .bind(id.as_str())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records an operator's action that changes no status.
async fn annotate(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    operator: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let entry = TimelineDraft {
        source: Source::Operator,
        status: None,
        effect: Effect::Annotation,
        sequence: None,
        occurred_at: now,
        carrier: None,
        reason: Some(reason),
        raw: None,
    };
    insert_timeline(tx, id, &entry, now).await?;
    sign(tx, id, operator).await
}

/// A status change an operator makes.
struct OperatorChange<'a> {
    from: Status,
    to: Status,
    reason: Option<&'a str>,
    operator: &'a str,
    format: BodyFormat,
}

/// Records an operator's status change, relayed, within `tx`.
async fn operator_change(
    tx: &mut sqlx::PgConnection,
    id: &HandoffId,
    c: OperatorChange<'_>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let previous = move_handoff(tx, id, &[c.from], c.to, c.reason, now)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("handoff {id} moved under a write lock")))?;
    let change = Change {
        status: c.to,
        source: Source::Operator,
        occurred_at: now,
        reason: c.reason,
        relay: Some((CallbackType::StatusChanged, c.format)),
    };
    record_change(tx, id, previous, change, now).await?;
    sign(tx, id, c.operator).await
}

async fn read_callback(
    tx: &mut sqlx::PgConnection,
    id: &str,
) -> Result<Option<CallbackRecord>, StoreError> {
    let sql = format!("SELECT * FROM {CALLBACKS} WHERE x.id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    row.as_ref().map(callback_from_row).transpose()
}

/// Puts dead callbacks (one, or all) back to pending with a fresh retry
/// budget, inside `tx` (also `Store::replay_dead_callbacks`).
pub(super) async fn requeue_dead(
    tx: &mut sqlx::PgConnection,
    id: Option<&str>,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let n = sqlx::query(
        "UPDATE callbacks SET state = 'pending', attempts = 0, next_attempt_at = $1, head_since = $1, \
         lease_owner = NULL, lease_expires_at = NULL WHERE state = 'dead' AND ($2 IS NULL OR id = $2)",
    )
    .bind(ms(now))
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(n)
}

#[async_trait]
impl AdminStore for PostgresStore {
    fn read_pool(&self) -> crate::store::ReadPool<'_> {
        crate::store::ReadPool::Postgres(&self.pool)
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn replay_failed_handoff(
        &self,
        id: &HandoffId,
        operator: &str,
        now: Timestamp,
        formats: &HashMap<String, BodyFormat>,
    ) -> Result<AdminOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((status, client, erased)) = current(&mut tx, id).await? else {
            return Ok(AdminOutcome::NotFound);
        };
        if let Some(refused) = AdminOutcome::replay_refused(status, erased) {
            return Ok(refused);
        }
        let format = formats.get(&client).copied().unwrap_or_default();
        let change = OperatorChange {
            from: Status::Failed,
            to: Status::Received,
            reason: None,
            operator,
            format,
        };
        operator_change(&mut tx, id, change, now).await?;
        sqlx::query("UPDATE handoffs SET terminal_at = NULL WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        // A fresh retry budget (its deadline restarts at the next attempt),
        // and a lookup first: an earlier attempt may have made the order.
        // `first_create_at` stays, so the lookup searches from that day.
        sqlx::query(
            "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, next_step, \
             created_at, updated_at) VALUES ($1, 'create', 'pending', $2, 'lookup', $2, $2) \
             ON CONFLICT (handoff_id, operation, target) DO UPDATE SET state = 'pending', \
             attempts = 0, first_attempt_at = NULL, next_step = 'lookup', refusal = NULL, \
             attempt_started_at = NULL, lease_owner = NULL, lease_expires_at = NULL, \
             last_error = NULL, next_attempt_at = $2, updated_at = $2",
        )
        .bind(id.as_str())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
        let handoff = read_handoff(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!("failed handoff replayed by an operator");
        Ok(AdminOutcome::Done(Box::new(handoff)))
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn resolve_partial(
        &self,
        id: &HandoffId,
        resolution: Resolution,
        note: Option<&str>,
        operator: &str,
        now: Timestamp,
        formats: &HashMap<String, BodyFormat>,
    ) -> Result<AdminOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((status, client, _)) = current(&mut tx, id).await? else {
            return Ok(AdminOutcome::NotFound);
        };
        if let Some(refused) = AdminOutcome::resolve_refused(status) {
            return Ok(refused);
        }
        let format = formats.get(&client).copied().unwrap_or_default();
        let change = OperatorChange {
            from: Status::PartiallyDelivered,
            to: resolution.status(),
            reason: note,
            operator,
            format,
        };
        operator_change(&mut tx, id, change, now).await?;
        let handoff = read_handoff(&mut tx, id).await?;
        tx.commit().await?;
        tracing::info!(status = %resolution.status(), "partial delivery resolved by an operator");
        Ok(AdminOutcome::Done(Box::new(handoff)))
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn erase_personal_data(
        &self,
        id: &HandoffId,
        operator: &str,
        now: Timestamp,
    ) -> Result<AdminOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some((_, _, erased)) = current(&mut tx, id).await? else {
            return Ok(AdminOutcome::NotFound);
        };
        if !erased {
            let tracking_number: Option<String> =
                sqlx::query_scalar("SELECT tracking_number FROM handoffs WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
            sqlx::query(
                "UPDATE handoffs SET details = NULL, personal_data_erased_at = $1 WHERE id = $2",
            )
            .bind(ms(now))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
            super::clear_stored_carrier_answers(&mut tx, id.as_str(), tracking_number.as_deref())
                .await?;
            annotate(&mut tx, id, operator, "personal data erased", now).await?;
            tracing::info!("personal data erased by an operator");
        }
        let handoff = read_handoff(&mut tx, id).await?;
        tx.commit().await?;
        if !erased {
            // Remove the old row versions now rather than at autovacuum's pace.
            sqlx::query("VACUUM handoffs, timeline, carrier_inbox")
                .execute(&self.pool)
                .await?;
        }
        Ok(AdminOutcome::Done(Box::new(handoff)))
    }

    #[tracing::instrument(skip_all)]
    async fn replay_callback(
        &self,
        id: &str,
        operator: &str,
        now: Timestamp,
    ) -> Result<CallbackReplay, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(callback) = read_callback(&mut tx, id).await? else {
            return Ok(CallbackReplay::NotFound);
        };
        // Lock the handoff, then read the callback again under the lock.
        lock_handoff(&mut tx, callback.handoff_id.as_str()).await?;
        let Some(callback) = read_callback(&mut tx, id).await? else {
            return Ok(CallbackReplay::NotFound);
        };
        if callback.state != CallbackState::Dead {
            return Ok(CallbackReplay::NotDead(callback.state));
        }
        requeue_dead(&mut tx, Some(id), now).await?;
        let reason = format!("callback {} replayed", callback.sequence);
        annotate(&mut tx, &callback.handoff_id, operator, &reason, now).await?;
        let replayed = read_callback(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("callback {id} vanished")))?;
        tx.commit().await?;
        Ok(CallbackReplay::Replayed(Box::new(replayed)))
    }

    #[tracing::instrument(skip_all)]
    async fn replay_dead_callbacks_by(
        &self,
        operator: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT 1 FROM handoffs WHERE id IN (SELECT handoff_id FROM callbacks WHERE state = 'dead') \
             ORDER BY id FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        let dead = sqlx::query(
            "SELECT handoff_id, sequence FROM callbacks WHERE state = 'dead' ORDER BY handoff_id, sequence",
        )
        .fetch_all(&mut *tx)
        .await?;
        let n = requeue_dead(&mut tx, None, now).await?;
        for row in &dead {
            let handoff_id: String = row.try_get("handoff_id")?;
            let handoff_id = HandoffId::parse(&handoff_id)
                .ok_or_else(|| StoreError::Corrupt(format!("id {handoff_id:?}")))?;
            let sequence: i64 = row.try_get("sequence")?;
            let reason = format!("callback {sequence} replayed");
            annotate(&mut tx, &handoff_id, operator, &reason, now).await?;
        }
        tx.commit().await?;
        tracing::info!(replayed = n, "dead callbacks replayed by an operator");
        Ok(n)
    }
}
