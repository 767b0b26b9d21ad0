//! Test support shared by the integration tests (`tests/it`) and the
//! process-level tests (`tests/soak.rs`, `tests/ha.rs`): a store for each
//! backend, the one test configuration (`config`), the callback receiver
//! (`receiver`), free ports and the processes (`procs`).
//!
//! SQLite lives in a temporary directory. PostgreSQL gets a fresh database
//! on the server named by `BCCI_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped when the test
//! ends. When that server cannot be reached the test says so loudly and
//! skips, unless `BCCI_TEST_REQUIRE_POSTGRES=1` (set by `.ci/run`), which
//! makes it fail instead.

#![allow(dead_code)]

use std::time::Duration;

/// For each named `async fn name(backend: Backend)` of the test module, one
/// test on SQLite (`sqlite::name`) and one on PostgreSQL (`postgres::name`),
/// each on a runtime of four workers.
///
/// `on_both_backends!(workers = 2, via = run; name, …)` instead calls the
/// module's `run(backend, |store| Box::pin(name(store)))`, for tests that
/// take what `run` makes of the backend (the store suite: an open store).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    (workers = $workers:tt, via = $run:ident; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
                async fn $name() {
                    super::$run(super::Backend::Sqlite, |s| Box::pin(super::$name(s))).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = $workers)]
                async fn $name() {
                    super::$run(super::Backend::Postgres, |s| Box::pin(super::$name(s))).await;
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

use sqlx::Connection;
use sqlx::postgres::PgConnection;

pub mod config;
pub mod procs;
pub mod receiver;

/// The sample requests, `fixtures/requests`.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

pub fn fixture_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(rel)).expect("fixture is JSON")
}

/// A valid request (`valid/return-cod.json`) with its own request_id.
pub fn valid_request(request_id: &str) -> serde_json::Value {
    let mut v = fixture_json("valid/return-cod.json");
    v["request_id"] = serde_json::json!(request_id);
    v
}

/// Creates a handoff through the intake API at `intake`; it must be new
/// (202).
pub async fn create_handoff(
    http: &reqwest::Client,
    intake: std::net::SocketAddr,
    token: &str,
    body: &serde_json::Value,
) -> bcci_gateway::domain::HandoffId {
    let r = http
        .post(format!("http://{intake}/v1/handoffs"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let doc: serde_json::Value = r.json().await.unwrap();
    bcci_gateway::domain::HandoffId::parse(doc["id"].as_str().unwrap()).unwrap()
}

/// The application on `settings`, with its background workers or without
/// them (the test drives them, or only requests change the store).
pub async fn build_app(
    settings: bcci_gateway::config::Settings,
    run_workers: bool,
) -> bcci_gateway::app::Application {
    let options = bcci_gateway::app::Options {
        run_workers,
        ..bcci_gateway::app::Options::default()
    };
    bcci_gateway::app::Application::build_with(settings, options)
        .await
        .expect("app builds")
}

/// A loopback port nothing listens on now, for a listener the test must
/// know before it starts (a gateway process, a webhook URL given to the
/// simulator first).
///
/// It is drawn below Linux's ephemeral range (32768–60999), from which the
/// kernel picks the local ports of outgoing connections: a port from that
/// range (what binding port 0 gives) can be taken by a test's own client
/// connection before the gateway binds it ("Address already in use", seen
/// in the HA test).
pub fn free_port() -> u16 {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    for _ in 0..1_000 {
        let port = rand::random_range(LOW..HIGH);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{HIGH}");
}

/// The server the PostgreSQL tests use (its maintenance database).
pub fn postgres_server_url() -> String {
    std::env::var("BCCI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn postgres_required() -> bool {
    std::env::var("BCCI_TEST_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A store location for one test, removed when dropped.
pub struct TestStore {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

impl TestStore {
    /// A fresh store of `backend`, or `None` (after a loud notice) when
    /// PostgreSQL is unreachable and not required.
    pub async fn new(backend: Backend) -> Option<TestStore> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                Some(TestStore {
                    url: format!("sqlite://{}", dir.path().join("bcci.db").display()),
                    _dir: Some(dir),
                    _database: None,
                })
            }
            Backend::Postgres => {
                let database = TestDatabase::create().await?;
                Some(TestStore {
                    url: database.url.clone(),
                    _dir: None,
                    _database: Some(database),
                })
            }
        }
    }

    /// The SQLite file, for a test that reads it behind the gateway's back.
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        self.url.strip_prefix("sqlite://").map(Into::into)
    }
}

/// A uniquely named PostgreSQL database, dropped (forcibly) on drop.
pub struct TestDatabase {
    pub url: String,
    pub name: String,
}

impl TestDatabase {
    pub async fn create() -> Option<TestDatabase> {
        let server = postgres_server_url();
        let mut conn = match tokio::time::timeout(
            Duration::from_secs(5),
            PgConnection::connect(&server),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            failed => {
                let why = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "connect timed out".to_owned(),
                };
                if postgres_required() {
                    panic!(
                        "PostgreSQL at {server} is unreachable ({why}) and BCCI_TEST_REQUIRE_POSTGRES=1"
                    );
                }
                // Written to the stderr handle itself, which the test
                // harness does not capture: the notice shows in `cargo test`.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!!! SKIPPED: PostgreSQL at {server} is unreachable ({why}); \
                     this PostgreSQL test did not run. Set BCCI_TEST_POSTGRES_URL, or \
                     BCCI_TEST_REQUIRE_POSTGRES=1 to fail instead of skipping. !!!!\n"
                );
                return None;
            }
        };
        let name = format!("bcci_test_{}", ulid::Ulid::new().to_string().to_lowercase());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        conn.close().await.ok();
        let url = with_database(&server, &name);
        Some(TestDatabase { url, name })
    }
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = postgres_server_url();
        let name = self.name.clone();
        // Drop runs outside any async context we may block: use a thread
        // with its own runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnection::connect(&server).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await?;
                Ok::<_, sqlx::Error>(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database {}", self.name);
        }
    }
}
