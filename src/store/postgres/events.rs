//! Carrier events on PostgreSQL: the batch's handoffs are locked and read in
//! one statement, their seen events in a second, [`carrier_events::plan`]
//! decides, and each table is written with one `UNNEST` statement for the
//! whole batch, whatever its size.

use std::sync::LazyLock;

use sqlx::Row;

use super::super::carrier_events::{
    self, EventHandoff, EventPlan, SEEN_COLUMNS, SNAPSHOT_COLUMNS, SeenRow, Value,
};
use super::super::{EventContext, EventOutcome, IncomingCarrierEvent, StoreError, ms};
use crate::domain::Status;

/// Every handoff any key names, locked in id order so two batches touching
/// the same handoffs wait for each other instead of deadlocking.
static LOCK_HANDOFFS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM handoffs WHERE id = ANY($1) OR tracking_number = ANY($2) \
         OR carrier_original_id = ANY($3) ORDER BY id FOR UPDATE",
        *SNAPSHOT_COLUMNS
    )
});

static SEEN_EVENTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SEEN_COLUMNS} FROM timeline WHERE handoff_id = ANY($1) AND carrier_code IS NOT NULL"
    )
});

/// Records a batch of carrier events inside `tx`.
pub(super) async fn apply_events(
    tx: &mut sqlx::PgConnection,
    events: &[IncomingCarrierEvent],
    context: &EventContext,
    now: jiff::Timestamp,
) -> Result<Vec<EventOutcome>, StoreError> {
    // The values of each key column (`HandoffKey::COLUMNS`) the events name.
    let mut keys: [Vec<String>; 3] = Default::default();
    for key in events.iter().filter_map(IncomingCarrierEvent::handoff_key) {
        keys[key.index()].push(key.value().to_owned());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(LOCK_HANDOFFS.as_str()))
        .bind(&keys[0])
        .bind(&keys[1])
        .bind(&keys[2])
        .fetch_all(&mut *tx)
        .await?;
    let mut handoffs = rows
        .iter()
        .map(EventHandoff::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let loaded: Vec<&str> = handoffs.iter().map(|h| h.handoff.id.as_str()).collect();
    let seen = sqlx::query(sqlx::AssertSqlSafe(SEEN_EVENTS.as_str()))
        .bind(&loaded)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(SeenRow::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    EventHandoff::attach_seen(&mut handoffs, seen);
    let plan = carrier_events::plan(handoffs, events, context, now)?;
    let queued = write(tx, &plan, now).await?;
    Ok(plan.outcomes(&queued))
}

/// One written column ([`EventHandoff::written`]) across the plan's handoffs.
enum Column<'a> {
    Text(Vec<Option<&'a str>>),
    Int(Vec<Option<i64>>),
    Flag(Vec<bool>),
}

impl Column<'_> {
    fn sql_type(&self) -> &'static str {
        match self {
            Column::Text(_) => "text[]",
            Column::Int(_) => "int8[]",
            Column::Flag(_) => "bool[]",
        }
    }
}

/// Writes the plan; which of its cancels were queued now.
async fn write(
    tx: &mut sqlx::PgConnection,
    plan: &EventPlan<'_>,
    now: jiff::Timestamp,
) -> Result<Vec<bool>, StoreError> {
    if !plan.handoffs.is_empty() {
        let rows: Vec<_> = plan.handoffs.iter().map(EventHandoff::written).collect();
        let names: Vec<&str> = rows[0].iter().map(|(name, _)| *name).collect();
        let mut columns: Vec<Column<'_>> = rows[0]
            .iter()
            .map(|(_, v)| match v {
                Value::Text(_) => Column::Text(Vec::with_capacity(rows.len())),
                Value::Int(_) => Column::Int(Vec::with_capacity(rows.len())),
                Value::Flag(_) => Column::Flag(Vec::with_capacity(rows.len())),
            })
            .collect();
        for row in &rows {
            for (column, (_, value)) in columns.iter_mut().zip(row) {
                match (column, *value) {
                    (Column::Text(c), Value::Text(v)) => c.push(v),
                    (Column::Int(c), Value::Int(v)) => c.push(v),
                    (Column::Flag(c), Value::Flag(v)) => c.push(v),
                    _ => return Err(StoreError::Corrupt("a column of two types".into())),
                }
            }
        }
        let set: Vec<String> = names.iter().map(|c| format!("{c} = u.{c}")).collect();
        let arrays: Vec<String> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| format!("${}::{}", i + 2, c.sql_type()))
            .collect();
        let sql = format!(
            "UPDATE handoffs h SET {} FROM UNNEST($1::text[], {}) AS u(id, {}) WHERE h.id = u.id",
            set.join(", "),
            arrays.join(", "),
            names.join(", ")
        );
        let ids: Vec<&str> = plan
            .handoffs
            .iter()
            .map(|h| h.handoff.id.as_str())
            .collect();
        let mut update = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ids);
        for column in columns {
            update = match column {
                Column::Text(v) => update.bind(v),
                Column::Int(v) => update.bind(v),
                Column::Flag(v) => update.bind(v),
            };
        }
        update.execute(&mut *tx).await?;
    }
    if !plan.stop_create_jobs.is_empty() {
        let ids: Vec<&str> = plan.stop_create_jobs.iter().map(|h| h.as_str()).collect();
        sqlx::query(super::END_CREATE_JOBS)
            .bind(ms(now))
            .bind(ids)
            .execute(&mut *tx)
            .await?;
    }
    let mut queued = vec![false; plan.cancels.len()];
    if !plan.cancels.is_empty() {
        let handoffs: Vec<&str> = plan.cancels.iter().map(|(h, _)| h.as_str()).collect();
        let targets: Vec<&str> = plan.cancels.iter().map(|(_, o)| *o).collect();
        let inserted = sqlx::query(
            "INSERT INTO postal_jobs (handoff_id, operation, target, state, next_attempt_at, \
             created_at, updated_at) SELECT h, 'cancel_duplicate', t, 'pending', $3, $3, $3 \
             FROM UNNEST($1::text[], $2::text[]) AS u(h, t) \
             ON CONFLICT DO NOTHING RETURNING handoff_id, target",
        )
        .bind(&handoffs)
        .bind(&targets)
        .bind(ms(now))
        .fetch_all(&mut *tx)
        .await?;
        for row in &inserted {
            let (h, t): (String, String) = (row.try_get("handoff_id")?, row.try_get("target")?);
            if let Some(i) = plan
                .cancels
                .iter()
                .position(|(id, o)| id.as_str() == h && *o == t)
            {
                queued[i] = true;
            }
        }
    }
    if !plan.timeline.is_empty() {
        let t = &plan.timeline;
        sqlx::query(
            "INSERT INTO timeline (handoff_id, source, status, effect, sequence, occurred_at, \
             recorded_at, tracking_number, carrier_code, carrier_text, carrier_location, reason, raw) \
             SELECT h, s, st, e, seq, o, $13, tn, cc, ct, cl, re, r FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::int8[], $6::int8[], $7::text[], $8::int8[], $9::text[], \
             $10::text[], $11::text[], $12::text[]) \
             WITH ORDINALITY AS u(h, s, st, e, seq, o, tn, cc, ct, cl, re, r, n) ORDER BY n",
        )
        .bind(t.iter().map(|e| e.handoff_id.as_str()).collect::<Vec<_>>())
        .bind(t.iter().map(|e| e.draft.source.as_str()).collect::<Vec<_>>())
        .bind(t.iter().map(|e| e.draft.status.map(Status::as_str)).collect::<Vec<_>>())
        .bind(t.iter().map(|e| e.draft.effect.as_str()).collect::<Vec<_>>())
        .bind(t.iter().map(|e| e.draft.sequence).collect::<Vec<_>>())
        .bind(t.iter().map(|e| ms(e.draft.occurred_at)).collect::<Vec<_>>())
        .bind(t.iter().map(|e| e.tracking_number.as_deref()).collect::<Vec<_>>())
        .bind(t.iter().map(|e| e.draft.carrier.map(|c| c.code)).collect::<Vec<_>>())
        .bind(
            t.iter()
                .map(|e| e.draft.carrier.and_then(|c| c.text.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            t.iter()
                .map(|e| e.draft.carrier.and_then(|c| c.location.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(t.iter().map(|e| e.draft.reason).collect::<Vec<_>>())
        .bind(t.iter().map(|e| e.draft.raw).collect::<Vec<_>>())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    }
    if !plan.links.is_empty() {
        sqlx::query(
            "UPDATE timeline t SET sequence = u.s FROM UNNEST($1::int8[], $2::int8[]) AS u(id, s) \
             WHERE t.id = u.id",
        )
        .bind(plan.links.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(plan.links.iter().map(|(_, s)| *s).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    if !plan.callbacks.is_empty() {
        let c = &plan.callbacks;
        sqlx::query(
            "INSERT INTO callbacks (id, handoff_id, client, sequence, event_type, body, content_type, \
             state, next_attempt_at, created_at) SELECT i, h, c, s, t, b, ct, 'pending', $8, $8 \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[], \
             $7::text[]) AS u(i, h, c, s, t, b, ct)",
        )
        .bind(
            c.iter()
                .map(|_| format!("msg_{}", ulid::Ulid::new()))
                .collect::<Vec<_>>(),
        )
        .bind(c.iter().map(|c| c.handoff_id.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.client.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.sequence).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.event_type.as_str()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.body.as_slice()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.content_type).collect::<Vec<_>>())
        .bind(ms(now))
        .execute(&mut *tx)
        .await?;
    }
    Ok(queued)
}
