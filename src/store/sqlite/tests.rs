//! The SQLite schema's own guarantees: what its queries use, and that a
//! store written by an earlier schema opens and goes on.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode};
use sqlx::{ConnectOptions, Row, SqliteConnection};
use sqlx::{Sqlite, SqlitePool};

use super::SqliteStore;
use super::writes::{CLAIM_CALLBACKS, EVENT_HANDOFFS};
use crate::config::StoreSettings;
use crate::domain::HandoffId;
use crate::store::{HandoffKey, Store, ms};

const OWNER: &str = "test-worker";
const LEASE: Duration = Duration::from_secs(60);

fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_790_000_000).unwrap()
}

fn url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("bcci.db").display())
}

async fn connect(url: &str) -> SqliteConnection {
    SqliteConnectOptions::from_str(url)
        .unwrap()
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .connect()
        .await
        .unwrap()
}

/// `sql` with its arguments bound by `bind`, as SQLite plans it: the
/// `detail` of each step.
async fn plan(
    pool: &SqlitePool,
    sql: &str,
    bind: impl for<'q> FnOnce(
        sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    ) -> sqlx::query::Query<'q, Sqlite, SqliteArguments>,
) -> Vec<String> {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    bind(sqlx::query(sqlx::AssertSqlSafe(explain.as_str())))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get::<String, _>("detail").unwrap())
        .collect()
}

/// The plan of a callback claim: it searches the heads' index, never every
/// pending callback (with 20,000 handoffs in flight, that walk held the relay
/// to 60 callbacks/s).
#[tokio::test]
async fn a_callback_claim_searches_the_heads_of_the_queues_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir), &StoreSettings::default())
        .await
        .unwrap();
    let plan = plan(&store.pool, CLAIM_CALLBACKS, |q| {
        q.bind(OWNER).bind(0i64).bind(0i64).bind(64i64)
    })
    .await;
    assert!(
        plan.iter()
            .any(|d| d.contains("SEARCH c USING INDEX callbacks_heads_due")),
        "{plan:#?}"
    );
    assert!(!plan.iter().any(|d| d.starts_with("SCAN")), "{plan:#?}");
}

/// Each key a carrier event may name its handoff by is one indexed lookup
/// (the single statement taking all three scanned every handoff per event).
#[tokio::test]
async fn a_carrier_event_finds_its_handoff_through_an_index_whatever_key_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir), &StoreSettings::default())
        .await
        .unwrap();
    for key in [
        HandoffKey::Id(HandoffId::new(1, 1)),
        HandoffKey::TrackingNumber("EB123456789VN"),
        HandoffKey::OriginalId("ORIG-1"),
    ] {
        let plan = plan(&store.pool, &EVENT_HANDOFFS[key.index()], |q| {
            q.bind(key.value())
        })
        .await;
        assert!(
            plan.iter().any(|d| d.starts_with("SEARCH handoffs USING")),
            "{key:?}: {plan:#?}"
        );
        assert!(
            !plan.iter().any(|d| d.starts_with("SCAN")),
            "{key:?}: {plan:#?}"
        );
        // Its seen events are read through the timeline's index.
        assert!(
            plan.iter()
                .any(|d| d.starts_with("SEARCH t USING INDEX timeline_by_handoff")),
            "{key:?}: {plan:#?}"
        );
    }
}

/// A store written before heads were marked (`head_since` set at a
/// callback's first claim only) opens after the upgrade, and its relay goes
/// on in order: the heads never claimed are claimed, the callbacks behind a
/// pending or dead one wait.
#[tokio::test]
async fn a_store_written_before_heads_were_marked_opens_and_relays_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let url = url(&dir);
    let earlier = tempfile::tempdir().unwrap();
    let schemas = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/sql/sqlite");
    for name in ["0001_initial.sql", "0002_cod_settlement.sql"] {
        std::fs::copy(format!("{schemas}/{name}"), earlier.path().join(name)).unwrap();
    }
    let mut conn = connect(&url).await;
    sqlx::migrate::Migrator::new(earlier.path())
        .await
        .unwrap()
        .run(&mut conn)
        .await
        .unwrap();
    let t = ms(now()) - 60_000;
    let handoff = |n: u128| HandoffId::new(t as u64, n);
    // (handoff, sequence, state, head_since) as the earlier release left them.
    let callbacks = [
        (1, 1, "delivered", Some(t)),
        (1, 2, "pending", None),
        (1, 3, "pending", None),
        (2, 1, "pending", None),
        (3, 1, "dead", Some(t)),
        (3, 2, "pending", None),
    ];
    for n in 1..=3 {
        sqlx::query(
            "INSERT INTO handoffs (id, client, request_id, request_sha256, kind, dossier_code, \
             agency_code, status, cod_amount_vnd, created_at, updated_at) \
             VALUES (?1, 'motcua', ?1, x'00', 'pickup', 'D', 'A', 'order_created', 0, ?2, ?2)",
        )
        .bind(handoff(n).as_str())
        .bind(t)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    for (n, sequence, state, head_since) in callbacks {
        sqlx::query(
            "INSERT INTO callbacks (id, handoff_id, client, sequence, event_type, body, \
             content_type, state, next_attempt_at, created_at, head_since) \
             VALUES (?1, ?2, 'motcua', ?3, 'handoff.status_changed', x'7b7d', \
             'application/json', ?4, ?5, ?5, ?6)",
        )
        .bind(format!("msg_{n}_{sequence}"))
        .bind(handoff(n).as_str())
        .bind(sequence)
        .bind(state)
        .bind(t)
        .bind(head_since)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    drop(conn);

    let store = SqliteStore::open(&url, &StoreSettings::default())
        .await
        .unwrap();
    let mut claimed: Vec<(HandoffId, u64)> = store
        .claim_callbacks(OWNER, now(), LEASE, 64)
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.handoff_id, c.sequence))
        .collect();
    claimed.sort();
    assert_eq!(claimed, [(handoff(1), 2), (handoff(2), 1)]);
}

/// How often a claim statement, run three times with a later clock each
/// time, is compiled again on `conn`.
fn claim_reprepares(conn: &rusqlite::Connection) -> i32 {
    let mut claim = conn.prepare(CLAIM_CALLBACKS).unwrap();
    for tick in 0..3 {
        let at = ms(now()) + tick;
        let mut rows = claim
            .query(rusqlite::params![OWNER, at + 60_000, at, 8])
            .unwrap();
        while rows.next().unwrap().is_some() {}
    }
    claim.get_status(rusqlite::StatementStatus::RePrepare)
}

/// The writer's statements keep their plan whatever is bound to them: a
/// claim, whose clock changes at every call, is compiled once. Without the
/// query planner's stability guarantee SQLite compiled every claim again
/// (the second half shows it on a connection without it).
#[tokio::test]
async fn the_writers_statements_are_compiled_once_whatever_their_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let _store = SqliteStore::open(&url(&dir), &StoreSettings::default())
        .await
        .unwrap();
    let db = dir.path().join("bcci.db");
    let writer = super::writer::open_writer(&db).unwrap();
    assert_eq!(claim_reprepares(&writer), 0);

    let unguarded = rusqlite::Connection::open(&db).unwrap();
    assert!(
        claim_reprepares(&unguarded) > 0,
        "SQLite no longer recompiles a claim for a new clock; the guarantee may be moot"
    );
}
