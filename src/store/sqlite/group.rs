//! Intake requests as the SQLite writer (`writer`) writes them: the first
//! request of each `(client, request_id)` of a group inserted, in order,
//! without savepoints; on the slow path one request per savepoint; then the
//! stored handoff of every request that was not inserted.

use std::collections::HashSet;
use std::sync::LazyLock;

use rusqlite::{CachedStatement, Connection, Transaction, params};

use super::{HANDOFF_COLUMNS, handoff_from_row};
use crate::store::group::{Existing, Pending, Slot, firsts, not_inserted, slots};
use crate::store::{StoreError, ms};

const INSERT_HANDOFF: &str = "INSERT INTO handoffs (id, client, request_id, request_sha256, kind, dossier_code, \
     agency_code, status, cod_amount_vnd, details, due_at, created_at, updated_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'received', ?8, ?9, ?10, ?11, ?11) \
     ON CONFLICT (client, request_id) DO NOTHING";

const INSERT_JOB: &str = "INSERT INTO postal_jobs (handoff_id, operation, state, next_attempt_at, created_at, updated_at) \
     VALUES (?1, 'create', 'pending', ?2, ?2, ?2)";

/// The stored handoff of a request that was not inserted.
static SELECT_EXISTING: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {HANDOFF_COLUMNS}, request_sha256 FROM handoffs \
         WHERE client = ?1 AND request_id = ?2"
    )
});

/// The fast path: the first request of each key inserted, in order.
pub(super) fn insert_group(tx: &Connection, group: &[Pending]) -> Result<Vec<Slot>, StoreError> {
    let mut handoff = tx.prepare_cached(INSERT_HANDOFF)?;
    let mut job = tx.prepare_cached(INSERT_JOB)?;
    let mut created = HashSet::with_capacity(group.len());
    for p in firsts(group) {
        if insert(&mut handoff, &mut job, p)? {
            created.insert(p.new.id.as_str());
        }
    }
    Ok(slots(group, &created))
}

/// Inserts the request's handoff and, when it is new, its create job; true
/// when it was new.
fn insert(
    handoff: &mut CachedStatement<'_>,
    job: &mut CachedStatement<'_>,
    p: &Pending,
) -> rusqlite::Result<bool> {
    let n = &p.new;
    let now = ms(n.now);
    let inserted = handoff.execute(params![
        n.id.as_str(),
        n.client,
        n.request.request_id,
        &n.request_sha256[..],
        n.request.kind.as_str(),
        n.request.dossier_code,
        n.request.agency.code,
        n.request.cod_amount_vnd as i64,
        p.new.details(),
        n.request.due_at.map(ms),
        now,
    ])? == 1;
    if inserted {
        job.execute(params![n.id.as_str(), now])?;
    }
    Ok(inserted)
}

/// The slow path: one request in its own savepoint.
pub(super) fn insert_one(tx: &mut Transaction<'_>, p: &Pending) -> Slot {
    insert_alone(tx, p).unwrap_or_else(Slot::Failed)
}

fn insert_alone(tx: &mut Transaction<'_>, p: &Pending) -> Result<Slot, StoreError> {
    // A failed attempt's savepoint is rolled back when it is dropped.
    let sp = tx.savepoint()?;
    let inserted = insert(
        &mut sp.prepare_cached(INSERT_HANDOFF)?,
        &mut sp.prepare_cached(INSERT_JOB)?,
        p,
    )?;
    sp.commit()?;
    Ok(if inserted {
        Slot::Created
    } else {
        Slot::Existing
    })
}

/// Reads, in the group's transaction, the stored handoff of every request
/// that was not inserted.
pub(super) fn read_existing(
    tx: &Connection,
    group: &[Pending],
    slots: &[Slot],
) -> Result<Existing, StoreError> {
    let wanted: HashSet<(&str, &str)> = not_inserted(group, slots).map(Pending::key).collect();
    let mut found = Existing::with_capacity(wanted.len());
    if wanted.is_empty() {
        return Ok(found);
    }
    let mut select = tx.prepare_cached(&SELECT_EXISTING)?;
    for (client, request_id) in wanted {
        let mut rows = select.query(params![client, request_id])?;
        if let Some(row) = rows.next()? {
            let handoff = handoff_from_row(row)?;
            let sha: Vec<u8> = row.get("request_sha256")?;
            found.insert((client.to_owned(), request_id.to_owned()), (handoff, sha));
        }
    }
    Ok(found)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::config::StoreSettings;
    use crate::domain::request::Origin;
    use crate::domain::{HandoffId, HandoffRequest, RequestRules};
    use crate::store::sqlite::SqliteStore;
    use crate::store::{CreateOutcome, NewHandoff, Store};
    use sqlx::{Connection as _, SqliteConnection};

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
        NewHandoff::new(
            HandoffId::new(now.as_millisecond() as u64, n),
            "motcua".into(),
            request,
            now,
        )
    }

    fn write_group(
        conn: &mut Connection,
        group: &[Pending],
    ) -> Result<Vec<Result<CreateOutcome, StoreError>>, StoreError> {
        Ok(crate::store::sqlite::writer::write(conn, group, &mut [])?.0)
    }

    fn pending(new: NewHandoff) -> Pending {
        use tokio::sync::oneshot;
        Pending {
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

    /// A writer connection of the test's own, as the writer opens it.
    fn writer(dir: &tempfile::TempDir) -> Connection {
        crate::store::sqlite::writer::open_writer(&dir.path().join("bcci.db")).unwrap()
    }

    async fn count(conn: &mut SqliteConnection, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
    }

    #[tokio::test]
    async fn requests_repeating_a_request_id_in_one_group_are_answered_as_if_they_came_one_after_another()
     {
        let (dir, store, mut conn) = store().await;
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
        let outcomes = write_group(&mut writer(&dir), &group).unwrap();
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
        let (dir, _store, mut conn) = store().await;
        let group = vec![
            pending(new_handoff(1, "OK-1", "D-1")),
            pending(new_handoff(2, "DOOMED", "D-2")),
            pending(new_handoff(3, "OK-2", "D-3")),
            pending(new_handoff(4, "OK-1", "D-1")),
        ];
        // The doomed request's handoff row goes in; its postal job cannot.
        let mut writer = writer(&dir);
        writer
            .execute_batch(&format!(
                "CREATE TRIGGER doomed BEFORE INSERT ON postal_jobs WHEN NEW.handoff_id = '{}' \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
                group[1].new.id
            ))
            .unwrap();
        let outcomes = write_group(&mut writer, &group).unwrap();
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
