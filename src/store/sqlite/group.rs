//! The SQLite writer of intake groups (see `store::group`).
//!
//! It owns a connection of its own. A group is written with two multi-row
//! statements fed one JSON array each (`json_each`), so a request costs no
//! statement round trip to the connection's thread, and the fast path runs
//! first in its transaction: a failure rolls the transaction back instead of
//! needing a savepoint, whose statement journal copied every page the group
//! touched.

use std::collections::HashSet;
use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AssertSqlSafe, Connection, Row, SqliteConnection};

use super::{HANDOFF_COLUMNS, handoff_from_row};
use crate::store::group::{
    Existing, GroupWriter, IntakeQueue, Pending, Slot, firsts, not_inserted, outcomes, slots,
};
use crate::store::{CreateOutcome, StoreError, ms};

/// Inserts every handoff of a group whose `(client, request_id)` is new.
/// `WHERE true` lets SQLite parse the upsert clause after a SELECT.
const INSERT_HANDOFFS: &str = "INSERT INTO handoffs (id, client, request_id, request_sha256, kind, \
     dossier_code, agency_code, status, cod_amount_vnd, details, due_at, created_at, updated_at) \
     SELECT value ->> 0, value ->> 1, value ->> 2, unhex(value ->> 3), value ->> 4, value ->> 5, \
     value ->> 6, 'received', value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 10 \
     FROM json_each(?1) WHERE true \
     ON CONFLICT (client, request_id) DO NOTHING RETURNING id";

/// The postal create job of each handoff just inserted.
const INSERT_JOBS: &str = "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
     SELECT h.id, 'create', 'pending', h.created_at, h.created_at, h.created_at \
     FROM json_each(?1) AS j JOIN handoffs h ON h.id = j.value";

/// The stored handoffs of the requests that were not inserted.
static SELECT_EXISTING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {HANDOFF_COLUMNS}, request_sha256 FROM handoffs \
         WHERE (client, request_id) IN (SELECT value ->> 0, value ->> 1 FROM json_each(?1))"
    )
});

const INSERT_ONE_HANDOFF: &str = "INSERT INTO handoffs (id, client, request_id, request_sha256, kind, dossier_code, \
     agency_code, status, cod_amount_vnd, details, due_at, created_at, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, 'received', ?, ?, ?, ?, ?) \
     ON CONFLICT (client, request_id) DO NOTHING";

const INSERT_ONE_JOB: &str = "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
     VALUES (?, 'create', 'pending', ?, ?, ?)";

/// Opens the writer's own connection and starts its task.
pub(super) async fn start(options: &SqliteConnectOptions) -> Result<IntakeQueue, sqlx::Error> {
    let conn = SqliteConnection::connect_with(options).await?;
    Ok(IntakeQueue::start(SqliteGroups {
        conn,
        scratch: Scratch::default(),
    }))
}

/// Writes groups on its own connection.
struct SqliteGroups {
    conn: SqliteConnection,
    scratch: Scratch,
}

#[async_trait]
impl GroupWriter for SqliteGroups {
    async fn write(
        &mut self,
        group: &[Pending],
    ) -> Result<Vec<Result<CreateOutcome, StoreError>>, StoreError> {
        write_group(&mut self.conn, group, &mut self.scratch).await
    }
}

/// Buffers kept between groups, so a group allocates little.
#[derive(Default)]
struct Scratch {
    json: Vec<u8>,
}

impl Scratch {
    /// A JSON array of `items`, as text for `json_each`.
    fn array<T: serde::Serialize>(
        &mut self,
        items: impl Iterator<Item = T>,
    ) -> Result<&str, StoreError> {
        let json = &mut self.json;
        json.clear();
        json.push(b'[');
        for item in items {
            if json.len() > 1 {
                json.push(b',');
            }
            serde_json::to_writer(&mut *json, &item)
                .map_err(|e| StoreError::Corrupt(format!("request: {e}")))?;
        }
        json.push(b']');
        std::str::from_utf8(json).map_err(|e| StoreError::Corrupt(format!("request: {e}")))
    }
}

async fn write_group(
    conn: &mut SqliteConnection,
    group: &[Pending],
    scratch: &mut Scratch,
) -> Result<Vec<Result<CreateOutcome, StoreError>>, StoreError> {
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let slots = match insert_group(&mut tx, group, scratch).await {
        Ok(slots) => slots,
        Err(e) => {
            tracing::warn!(error = %e, size = group.len(), "intake group written one by one");
            tx.rollback().await?;
            tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            let mut slots = Vec::with_capacity(group.len());
            for p in group {
                slots.push(insert_one(&mut tx, p).await);
            }
            slots
        }
    };
    let existing = read_existing(&mut tx, group, &slots, scratch).await?;
    tx.commit().await?;
    Ok(outcomes(group, slots, &existing))
}

/// The fast path: two statements for the whole group.
async fn insert_group(
    conn: &mut SqliteConnection,
    group: &[Pending],
    scratch: &mut Scratch,
) -> Result<Vec<Slot>, StoreError> {
    let rows = group_rows(group, scratch)?;
    let inserted = sqlx::query(INSERT_HANDOFFS)
        .bind(rows)
        .fetch_all(&mut *conn)
        .await?;
    let created = inserted
        .iter()
        .map(|row| row.try_get::<&str, _>(0))
        .collect::<Result<HashSet<&str>, _>>()?;
    if !created.is_empty() {
        let ids = scratch.array(created.iter())?;
        sqlx::query(INSERT_JOBS)
            .bind(ids)
            .execute(&mut *conn)
            .await?;
    }
    Ok(slots(group, &created))
}

/// The rows of the group's handoffs that may insert, as a JSON array.
fn group_rows<'s>(group: &[Pending], scratch: &'s mut Scratch) -> Result<&'s str, StoreError> {
    scratch.array(firsts(group).map(|p| {
        let n = &p.new;
        (
            n.id.as_str(),
            &n.client,
            &n.request.request_id,
            hex::encode(n.request_sha256),
            n.request.kind.as_str(),
            &n.request.dossier_code,
            &n.request.agency.code,
            n.request.cod_amount_vnd as i64,
            &p.details,
            n.request.due_at.map(ms),
            ms(n.now),
        )
    }))
}

/// The keys of the requests that were not inserted, as a JSON array (`None`
/// when every request was).
fn existing_keys<'s>(
    group: &[Pending],
    slots: &[Slot],
    scratch: &'s mut Scratch,
) -> Result<Option<&'s str>, StoreError> {
    let mut wanted = not_inserted(group, slots).map(Pending::key).peekable();
    if wanted.peek().is_none() {
        return Ok(None);
    }
    scratch.array(wanted).map(Some)
}

/// The slow path: one request in its own savepoint.
async fn insert_one(conn: &mut SqliteConnection, p: &Pending) -> Slot {
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
            .bind(&p.details)
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
    conn: &mut SqliteConnection,
    group: &[Pending],
    slots: &[Slot],
    scratch: &mut Scratch,
) -> Result<Existing, StoreError> {
    let Some(keys) = existing_keys(group, slots, scratch)? else {
        return Ok(Existing::new());
    };
    let rows = sqlx::query(AssertSqlSafe(SELECT_EXISTING.as_str()))
        .bind(keys)
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::StoreSettings;
    use crate::domain::request::Origin;
    use crate::domain::{HandoffId, HandoffRequest, RequestRules};
    use crate::store::NewHandoff;
    use crate::store::Store;
    use crate::store::sqlite::SqliteStore;

    fn request(request_id: &str, dossier_code: &str) -> HandoffRequest {
        let mut doc: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/requests/valid/pickup.json"
        )))
        .unwrap();
        doc["request_id"] = request_id.into();
        doc["dossier_code"] = dossier_code.into();
        doc["due_at"] = "2030-01-01T17:00:00+07:00".into();
        let rules = RequestRules {
            service_codes: vec!["CTN009".into()],
            pickup_fees_allowed: false,
        };
        HandoffRequest::parse(&doc, Origin::Json, &rules).unwrap()
    }

    pub(in crate::store::sqlite) fn new_handoff(
        n: u128,
        request_id: &str,
        dossier_code: &str,
    ) -> NewHandoff {
        let request = request(request_id, dossier_code);
        let now = jiff::Timestamp::from_second(1_790_000_000).unwrap();
        NewHandoff {
            id: HandoffId::new(now.as_millisecond() as u64, n),
            client: "motcua".into(),
            request_sha256: request.canonical_sha256(),
            request,
            now,
        }
    }

    fn pending(new: NewHandoff) -> Pending {
        use tokio::sync::oneshot;
        Pending {
            details: serde_json::to_string(&new.request).unwrap(),
            new,
            reply: oneshot::channel().0,
        }
    }

    /// A migrated store and a connection of the test's own to write groups on.
    pub(in crate::store::sqlite) async fn store()
    -> (tempfile::TempDir, SqliteStore, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("bcci.db").display());
        let store = SqliteStore::open(&url, &StoreSettings::default())
            .await
            .unwrap();
        let conn = SqliteConnection::connect(&url).await.unwrap();
        (dir, store, conn)
    }

    async fn count(conn: &mut SqliteConnection, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
    }

    #[tokio::test]
    async fn requests_repeating_a_request_id_in_one_group_are_answered_as_if_they_came_one_after_another()
     {
        let (_dir, store, mut conn) = store().await;
        let earlier = store
            .create_handoff(new_handoff(1, "EARLIER", "D-0"))
            .await
            .unwrap();
        let CreateOutcome::Created(earlier) = earlier else {
            panic!("{earlier:?}")
        };
        let group = vec![
            pending(new_handoff(2, "R-1", "D-1")),
            pending(new_handoff(3, "R-1", "D-1")),
            pending(new_handoff(4, "R-1", "D-other")),
            pending(new_handoff(5, "R-2", "D-2")),
            pending(new_handoff(6, "EARLIER", "D-0")),
            pending(new_handoff(7, "EARLIER", "D-changed")),
        ];
        let outcomes = write_group(&mut conn, &group, &mut Scratch::default())
            .await
            .unwrap();
        let outcomes: Vec<CreateOutcome> = outcomes.into_iter().map(Result::unwrap).collect();
        let CreateOutcome::Created(first) = &outcomes[0] else {
            panic!("{:?}", outcomes[0])
        };
        assert_eq!(first.id, group[0].new.id);
        assert_eq!(
            outcomes[1],
            CreateOutcome::Existing {
                handoff: first.clone(),
                same_request: true
            }
        );
        assert_eq!(
            outcomes[2],
            CreateOutcome::Existing {
                handoff: first.clone(),
                same_request: false
            }
        );
        assert!(matches!(&outcomes[3], CreateOutcome::Created(h) if h.id == group[3].new.id));
        assert_eq!(
            outcomes[4],
            CreateOutcome::Existing {
                handoff: earlier.clone(),
                same_request: true
            }
        );
        assert_eq!(
            outcomes[5],
            CreateOutcome::Existing {
                handoff: earlier,
                same_request: false
            }
        );
        // What a group answers is what a later read finds.
        let stored = store.handoff(None, &first.id).await.unwrap().unwrap();
        assert_eq!(&stored, first);
        assert_eq!(count(&mut conn, "SELECT COUNT(*) FROM handoffs").await, 3);
        assert_eq!(
            count(
                &mut conn,
                "SELECT COUNT(*) FROM postal_jobs WHERE operation = 'create' AND state = 'pending'"
            )
            .await,
            3
        );
    }

    #[tokio::test]
    async fn a_request_that_fails_in_a_group_fails_alone_and_leaves_nothing_behind() {
        let (_dir, _store, mut conn) = store().await;
        let group = vec![
            pending(new_handoff(1, "OK-1", "D-1")),
            pending(new_handoff(2, "DOOMED", "D-2")),
            pending(new_handoff(3, "OK-2", "D-3")),
            pending(new_handoff(4, "OK-1", "D-1")),
        ];
        // The doomed request's handoff row goes in; its postal job cannot.
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TRIGGER doomed BEFORE INSERT ON postal_jobs WHEN NEW.handoff_id = '{}' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            group[1].new.id
        )))
        .execute(&mut conn)
        .await
        .unwrap();
        let outcomes = write_group(&mut conn, &group, &mut Scratch::default())
            .await
            .unwrap();
        assert!(matches!(&outcomes[0], Ok(CreateOutcome::Created(h)) if h.id == group[0].new.id));
        assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
        assert!(matches!(&outcomes[2], Ok(CreateOutcome::Created(h)) if h.id == group[2].new.id));
        assert!(
            matches!(&outcomes[3], Ok(CreateOutcome::Existing { handoff, same_request: true }) if handoff.id == group[0].new.id)
        );
        let kept: Vec<String> =
            sqlx::query_scalar("SELECT request_id FROM handoffs ORDER BY request_id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(kept, ["OK-1", "OK-2"]);
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM postal_jobs").await,
            2
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_duplicates_get_one_handoff_and_each_the_answer_for_its_own_request() {
        let (_dir, store, mut conn) = store().await;
        let store = std::sync::Arc::new(store);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..64u128 {
            let store = store.clone();
            // Even ones repeat the request, odd ones change it, all under one
            // request_id; a second key rides in the same groups.
            let dossier = if n % 2 == 0 { "D-1" } else { "D-changed" };
            let request_id = if n % 8 == 7 { "OTHER" } else { "SAME" };
            let new = new_handoff(n + 1, request_id, dossier);
            tasks.spawn(async move { (n, store.create_handoff(new).await.unwrap()) });
        }
        let mut created = Vec::new();
        let mut answers = Vec::new();
        while let Some(r) = tasks.join_next().await {
            let (n, outcome) = r.unwrap();
            match outcome {
                CreateOutcome::Created(h) => created.push((n, h)),
                CreateOutcome::Existing {
                    handoff,
                    same_request,
                } => answers.push((n, handoff, same_request)),
            }
        }
        assert_eq!(created.len(), 2, "one handoff per request_id");
        for (n, handoff, same_request) in answers {
            let (winner, first) = created
                .iter()
                .find(|(_, h)| h.request_id == handoff.request_id)
                .unwrap();
            assert_eq!(&handoff, first);
            let dossier_of = |n: u128| n % 2;
            assert_eq!(
                same_request,
                dossier_of(n) == dossier_of(*winner),
                "request {n}"
            );
        }
        assert_eq!(
            count(&mut conn, "SELECT COUNT(*) FROM postal_jobs").await,
            2
        );
    }
}
