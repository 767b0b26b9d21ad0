//! The SQLite implementation of [`AdminStore`]. Every action is a unit of
//! the store's writer, and status changes go through the same helpers as
//! the workers' (`move_handoff`, `record_change`), so callback sequences
//! stay contiguous.

use std::collections::HashMap;

use std::sync::LazyLock;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

use super::SqliteStore;
use super::writes::{
    clear_stored_carrier_answers, insert_timeline, move_handoff, read_handoff, record_change,
    requeue_dead,
};
use crate::domain::callback::{BodyFormat, CallbackType};
use crate::domain::{Effect, Handoff, HandoffId, Source, Status};
use crate::store::admin::{
    AdminOutcome, AdminStore, CallbackRecord, CallbackReplay, CallbackState, Resolution,
};
use crate::store::shared::{CALLBACKS, Change, TimelineDraft, callback_from_row, parse};
use crate::store::{StoreError, ms};

/// The handoff's status, client and whether its personal data was erased.
fn current(c: &Connection, id: &HandoffId) -> Result<Option<(Status, String, bool)>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT status, client, personal_data_erased_at IS NOT NULL AS erased FROM handoffs WHERE id = ?1",
        )?
        .query_row([id.as_str()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, bool>(2)?))
        })
        .optional()?;
    row.map(|(status, client, erased)| Ok((parse::<Status>("status", &status)?, client, erased)))
        .transpose()
}

/// Names the operator on the handoff's newest timeline entry (the one the
/// action just recorded).
fn sign(c: &Connection, id: &HandoffId, operator: &str) -> Result<(), StoreError> {
    c.prepare_cached(
        "UPDATE timeline SET operator = ?1 WHERE id = (SELECT MAX(id) FROM timeline WHERE handoff_id = ?2)",
    )?
    .execute(params![operator, id.as_str()])?;
    Ok(())
}

/// Records an operator's action that changes no status.
fn annotate(
    c: &Connection,
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
    insert_timeline(c, id, &entry, now)?;
    sign(c, id, operator)
}

/// A status change an operator makes.
struct OperatorChange<'a> {
    from: Status,
    to: Status,
    reason: Option<&'a str>,
    operator: &'a str,
    format: BodyFormat,
}

/// Records an operator's status change, relayed.
fn operator_change(
    c: &Connection,
    id: &HandoffId,
    change: OperatorChange<'_>,
    now: Timestamp,
) -> Result<(), StoreError> {
    let previous = move_handoff(c, id, &[change.from], change.to, change.reason, now)?
        .ok_or_else(|| StoreError::Corrupt(format!("handoff {id} moved under a write lock")))?;
    let recorded = Change {
        status: change.to,
        source: Source::Operator,
        occurred_at: now,
        reason: change.reason,
        relay: Some((CallbackType::StatusChanged, change.format)),
    };
    record_change(c, id, previous, recorded, now)?;
    sign(c, id, change.operator)
}

static SELECT_CALLBACK: LazyLock<String> =
    LazyLock::new(|| format!("SELECT * FROM {CALLBACKS} WHERE x.id = ?1"));

fn read_callback(c: &Connection, id: &str) -> Result<Option<CallbackRecord>, StoreError> {
    let mut select = c.prepare_cached(&SELECT_CALLBACK)?;
    let mut rows = select.query([id])?;
    rows.next()?.map(callback_from_row).transpose()
}

fn replay_failed_handoff(
    c: &Connection,
    id: &HandoffId,
    operator: &str,
    now: Timestamp,
    formats: &HashMap<String, BodyFormat>,
) -> Result<AdminOutcome, StoreError> {
    let Some((status, client, erased)) = current(c, id)? else {
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
    operator_change(c, id, change, now)?;
    c.prepare_cached("UPDATE handoffs SET terminal_at = NULL WHERE id = ?1")?
        .execute([id.as_str()])?;
    // A fresh retry budget (its deadline restarts at the next attempt), and a
    // lookup first: an earlier attempt may have made the order.
    // `first_create_at` stays, so the lookup searches from that day.
    c.prepare_cached(
        "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, next_step, \
         created_at, updated_at) VALUES (?1, 'create', 'pending', ?2, 'lookup', ?2, ?2) \
         ON CONFLICT (handoff_id, operation, target) DO UPDATE SET state = 'pending', \
         attempts = 0, first_attempt_at = NULL, next_step = 'lookup', refusal = NULL, \
         attempt_started_at = NULL, lease_owner = NULL, lease_expires_at = NULL, \
         last_error = NULL, next_attempt_at = ?2, updated_at = ?2",
    )?
    .execute(params![id.as_str(), ms(now)])?;
    Ok(AdminOutcome::Done(Box::new(read_handoff(c, id)?)))
}

fn resolve_partial(
    c: &Connection,
    id: &HandoffId,
    resolution: Resolution,
    note: Option<&str>,
    operator: &str,
    now: Timestamp,
    formats: &HashMap<String, BodyFormat>,
) -> Result<AdminOutcome, StoreError> {
    let Some((status, client, _)) = current(c, id)? else {
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
    operator_change(c, id, change, now)?;
    Ok(AdminOutcome::Done(Box::new(read_handoff(c, id)?)))
}

/// True when erased now; false when it was erased before.
fn erase_personal_data(
    c: &Connection,
    id: &HandoffId,
    operator: &str,
    now: Timestamp,
) -> Result<Option<(bool, Handoff)>, StoreError> {
    let Some((_, _, erased)) = current(c, id)? else {
        return Ok(None);
    };
    if !erased {
        let tracking_number: Option<String> = c
            .prepare_cached("SELECT tracking_number FROM handoffs WHERE id = ?1")?
            .query_row([id.as_str()], |r| r.get(0))?;
        c.prepare_cached(
            "UPDATE handoffs SET details = NULL, personal_data_erased_at = ?1 WHERE id = ?2",
        )?
        .execute(params![ms(now), id.as_str()])?;
        clear_stored_carrier_answers(c, id.as_str(), tracking_number.as_deref())?;
        annotate(c, id, operator, "personal data erased", now)?;
    }
    Ok(Some((!erased, read_handoff(c, id)?)))
}

fn replay_callback(
    c: &Connection,
    id: &str,
    operator: &str,
    now: Timestamp,
) -> Result<CallbackReplay, StoreError> {
    let Some(callback) = read_callback(c, id)? else {
        return Ok(CallbackReplay::NotFound);
    };
    if callback.state != CallbackState::Dead {
        return Ok(CallbackReplay::NotDead(callback.state));
    }
    requeue_dead(c, Some(id), now)?;
    let reason = format!("callback {} replayed", callback.sequence);
    annotate(c, &callback.handoff_id, operator, &reason, now)?;
    let replayed = read_callback(c, id)?
        .ok_or_else(|| StoreError::Corrupt(format!("callback {id} vanished")))?;
    Ok(CallbackReplay::Replayed(Box::new(replayed)))
}

fn replay_dead_callbacks_by(
    c: &Connection,
    operator: &str,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let dead: Vec<(String, i64)> = c
        .prepare_cached(
            "SELECT handoff_id, sequence FROM callbacks WHERE state = 'dead' ORDER BY handoff_id, sequence",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let n = requeue_dead(c, None, now)?;
    for (handoff_id, sequence) in &dead {
        let handoff_id = HandoffId::parse(handoff_id)
            .ok_or_else(|| StoreError::Corrupt(format!("id {handoff_id:?}")))?;
        let reason = format!("callback {sequence} replayed");
        annotate(c, &handoff_id, operator, &reason, now)?;
    }
    Ok(n)
}

#[async_trait]
impl AdminStore for SqliteStore {
    fn read_pool(&self) -> crate::store::ReadPool<'_> {
        crate::store::ReadPool::Sqlite(&self.pool)
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn replay_failed_handoff(
        &self,
        id: &HandoffId,
        operator: &str,
        now: Timestamp,
        formats: &HashMap<String, BodyFormat>,
    ) -> Result<AdminOutcome, StoreError> {
        let (id, operator, formats) = (id.clone(), operator.to_owned(), formats.clone());
        let outcome = self
            .writer
            .run(move |c| replay_failed_handoff(c, &id, &operator, now, &formats))
            .await?;
        if matches!(outcome, AdminOutcome::Done(_)) {
            tracing::info!("failed handoff replayed by an operator");
        }
        Ok(outcome)
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
        let (id, operator, formats) = (id.clone(), operator.to_owned(), formats.clone());
        let note = note.map(str::to_owned);
        let outcome = self
            .writer
            .run(move |c| {
                resolve_partial(
                    c,
                    &id,
                    resolution,
                    note.as_deref(),
                    &operator,
                    now,
                    &formats,
                )
            })
            .await?;
        if matches!(outcome, AdminOutcome::Done(_)) {
            tracing::info!(status = %resolution.status(), "partial delivery resolved by an operator");
        }
        Ok(outcome)
    }

    #[tracing::instrument(skip_all, fields(handoff_id = %id))]
    async fn erase_personal_data(
        &self,
        id: &HandoffId,
        operator: &str,
        now: Timestamp,
    ) -> Result<AdminOutcome, StoreError> {
        let (id, operator) = (id.clone(), operator.to_owned());
        let erased = self
            .writer
            .run(move |c| erase_personal_data(c, &id, &operator, now))
            .await?;
        Ok(match erased {
            None => AdminOutcome::NotFound,
            Some((now_erased, handoff)) => {
                if now_erased {
                    tracing::info!("personal data erased by an operator");
                }
                AdminOutcome::Done(Box::new(handoff))
            }
        })
    }

    #[tracing::instrument(skip_all)]
    async fn replay_callback(
        &self,
        id: &str,
        operator: &str,
        now: Timestamp,
    ) -> Result<CallbackReplay, StoreError> {
        let (id, operator) = (id.to_owned(), operator.to_owned());
        self.writer
            .run(move |c| replay_callback(c, &id, &operator, now))
            .await
    }

    #[tracing::instrument(skip_all)]
    async fn replay_dead_callbacks_by(
        &self,
        operator: &str,
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let operator = operator.to_owned();
        let n = self
            .writer
            .run(move |c| replay_dead_callbacks_by(c, &operator, now))
            .await?;
        tracing::info!(replayed = n, "dead callbacks replayed by an operator");
        Ok(n)
    }
}
