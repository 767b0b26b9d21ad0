//! `TestApp`: the gateway on port 0 over a fresh store (SQLite in a temp dir
//! by default, or PostgreSQL), with the test configuration of
//! `common::config`, Vietnam Post at a URL of the test's choosing (a mock,
//! the simulator, or nowhere) and optionally a `TestReceiver` for callbacks.
//! `spawn_app()` is the plain one the intake API tests use.

use std::net::SocketAddr;

use bcci_gateway::carrier::OrderRequest;
use bcci_gateway::domain::Kind;
use bcci_gateway::lifecycle::Lifecycle;
use bcci_gateway::store::SharedStore;

use crate::common::config::{NOWHERE, TestConfig};
use crate::common::receiver::{ReceiverOptions, TestReceiver};
use crate::common::{Backend, TestStore, build_app};

pub const TOKEN: &str = "motcua-condao-token-1";
pub const TOKEN_ROTATED: &str = "motcua-condao-token-2";
pub const OTHER_TOKEN: &str = "motcua-hanoi-token";
pub const ADMIN_TOKEN: &str = "admin-token";

/// A running gateway and what tests need to talk to it.
pub struct TestApp {
    pub intake: SocketAddr,
    pub admin: SocketAddr,
    pub store: SharedStore,
    pub lifecycle: Lifecycle,
    pub http: reqwest::Client,
    pub server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The intake system, when the builder asked for one: what it got.
    #[allow(dead_code)]
    pub receiver: Option<TestReceiver>,
    pub place: TestStore,
    /// Set by [`TestApp::expect_dead`]: the test means to leave work dead.
    dead_expected: std::sync::atomic::AtomicBool,
}

impl TestApp {
    /// The test leaves a postal job or a callback dead on purpose (it has
    /// looked at it): dropping the app does not fail.
    #[allow(dead_code)]
    pub fn expect_dead(&self) {
        self.dead_expected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// As crates.io's test app checks that no background job was left behind: a
/// test that ends with a postal job or a callback dead, and did not say it
/// meant to (`expect_dead`), fails, so work that failed in the background
/// cannot pass unseen.
impl Drop for TestApp {
    fn drop(&mut self) {
        if std::thread::panicking()
            || self
                .dead_expected
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        // The test's runtime is the thread running this drop: read on a
        // thread and a connection of their own.
        let url = self.place.url.clone();
        let dead = std::thread::spawn(move || dead_work(&url))
            .join()
            .expect("reading the store's dead work");
        assert!(
            dead.is_empty(),
            "the test left work dead without examining it: {dead:?} \
             (call TestApp::expect_dead where a test means to)"
        );
    }
}

/// The dead postal jobs and callbacks of the store at `url`.
fn dead_work(url: &str) -> Vec<String> {
    use sqlx::Connection as _;
    const DEAD: &str = "SELECT 'postal job ' || operation || ' of ' || handoff_id FROM postal_jobs \
         WHERE state = 'dead' UNION ALL \
         SELECT 'callback ' || id FROM callbacks WHERE state = 'dead'";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        if url.starts_with("sqlite:") {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar(DEAD).fetch_all(&mut c).await.unwrap()
        } else {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar(DEAD).fetch_all(&mut c).await.unwrap()
        }
    })
}

/// The test configuration of the intake API tests: two clients (one with a
/// rotated token) calling back at `callback_url`, Vietnam Post at
/// `postal_url`.
pub fn config(store_url: &str, postal_url: &str, callback_url: &str) -> TestConfig {
    TestConfig::new(store_url, postal_url, callback_url)
        .log("level = \"warn\"")
        .login("partner", "secret-password", "T000180585")
        .client("motcua-condao", &[TOKEN, TOKEN_ROTATED])
        .rate(1000)
        .client("motcua-hanoi", &[OTHER_TOKEN])
        .rate(1000)
        .admin(&[ADMIN_TOKEN])
}

/// Builds a [`TestApp`].
pub struct TestAppBuilder {
    backend: Backend,
    postal_url: String,
    receiver: Option<ReceiverOptions>,
    run_workers: bool,
    configure: Box<dyn FnOnce(TestConfig) -> TestConfig + Send>,
}

impl TestApp {
    /// SQLite, Vietnam Post nowhere, callbacks nowhere, workers running.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            backend: Backend::Sqlite,
            postal_url: NOWHERE.to_owned(),
            receiver: None,
            run_workers: true,
            configure: Box::new(|c| c),
        }
    }
}

impl TestAppBuilder {
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Vietnam Post's base URL (a `wiremock` server, the simulator).
    pub fn postal(mut self, base_url: &str) -> Self {
        self.postal_url = base_url.to_owned();
        self
    }

    /// Callbacks go to a [`TestReceiver`] started with these options.
    pub fn receiver(mut self, options: ReceiverOptions) -> Self {
        self.receiver = Some(options);
        self
    }

    /// Workers off: the test drives them, or only requests change the store.
    pub fn without_workers(mut self) -> Self {
        self.run_workers = false;
        self
    }

    /// Changes the configuration before the gateway is built.
    pub fn configure(mut self, f: impl FnOnce(TestConfig) -> TestConfig + Send + 'static) -> Self {
        self.configure = Box::new(f);
        self
    }

    /// The running gateway, or `None` when its PostgreSQL store is skipped.
    pub async fn build(self) -> Option<TestApp> {
        let place = TestStore::new(self.backend).await?;
        let receiver = match self.receiver {
            Some(options) => Some(TestReceiver::start_with(options).await),
            None => None,
        };
        let callback_url = receiver
            .as_ref()
            .map_or_else(|| format!("{NOWHERE}/callback"), TestReceiver::url);
        let settings =
            (self.configure)(config(&place.url, &self.postal_url, &callback_url)).settings();
        let app = build_app(settings, self.run_workers).await;
        Some(TestApp {
            intake: app.intake_addr(),
            admin: app.admin_addr(),
            store: app.store(),
            lifecycle: app.lifecycle(),
            http: reqwest::Client::new(),
            server: tokio::spawn(app.run_until_stopped()),
            receiver,
            place,
            dead_expected: Default::default(),
        })
    }

    /// The running gateway on SQLite, which is never skipped.
    pub async fn spawn(self) -> TestApp {
        assert_eq!(
            self.backend,
            Backend::Sqlite,
            "PostgreSQL may skip: build()"
        );
        self.build().await.expect("a SQLite store")
    }
}

pub async fn spawn_app() -> TestApp {
    TestApp::builder().spawn().await
}

/// Spawns with extra TOML appended to the test configuration.
pub async fn spawn_app_with(extra: &str) -> TestApp {
    let extra = extra.to_owned();
    TestApp::builder()
        .configure(move |c| c.extra(&extra))
        .spawn()
        .await
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.intake, path)
    }

    /// POSTs a handoff body with the given content type and token.
    pub async fn post_handoff(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
        token: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url("/v1/handoffs"))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request sent")
    }

    pub async fn post_json(&self, body: &serde_json::Value) -> reqwest::Response {
        self.post_handoff(body.to_string(), "application/json", Some(TOKEN))
            .await
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn handoff_count(&self) -> u64 {
        self.store.count_handoffs().await.expect("store answers")
    }

    /// Stops the app and waits for it to exit.
    pub async fn stop(mut self) {
        self.lifecycle.drain();
        (&mut self.server).await.expect("join").expect("clean exit");
    }
}

pub use crate::common::{fixture, fixtures_dir, valid_request};

/// An order for Vietnam Post of handoff `id`: the sample dossier, a
/// return or a pickup, with this COD amount.
pub fn order_request(id: u128, kind: Kind, cod: u64) -> OrderRequest {
    use bcci_gateway::domain::request::{
        Address, Agency, Citizen, HandoffRequest, Parcel, Procedure,
    };
    use bcci_gateway::domain::{HandoffId, PhoneNumber};
    let address = |line: &str, ward: &str| Address {
        line: line.into(),
        ward_code: ward.into(),
        province_code: "79".into(),
    };
    OrderRequest {
        handoff_id: HandoffId::new(1_764_000_000_000, id),
        customer_code: "T000180585".into(),
        kind,
        service_code: "ETN011".into(),
        request: HandoffRequest {
            request_id: format!("HG-{id}"),
            kind,
            dossier_code: "000.00.21.H79-261125-0001".into(),
            procedure: Procedure {
                code: "1.001612".into(),
                name: "Đăng ký hộ kinh doanh".into(),
            },
            agency: Agency {
                code: "000.00.21.H79".into(),
                name: "Bộ phận một cửa đặc khu Côn Đảo".into(),
                phone: PhoneNumber::parse("02543830123").unwrap(),
                address: address("28 Tôn Đức Thắng", "26734"),
            },
            citizen: Citizen {
                name: "Nguyễn Văn An".into(),
                phone: PhoneNumber::parse("+84 912 345 678").unwrap(),
                email: Some("an@example.vn".into()),
                address: address("12 Nguyễn Huệ, khu 3", "26732"),
            },
            parcel: Parcel {
                weight_grams: 300,
                note: None,
            },
            cod_amount_vnd: cod,
            service_code: None,
            return_appointment_slip: false,
            due_at: None,
        },
    }
}

/// Reads a problem document's slug and field names (JSON or XML).
pub fn problem_of(content_type: &str, body: &str) -> (String, Vec<String>) {
    if content_type.starts_with("application/problem+json") {
        let doc: serde_json::Value = serde_json::from_str(body).expect("problem JSON");
        let slug = doc["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:bcci:problem:"))
            .expect("urn:bcci:problem type")
            .to_owned();
        let mut fields: Vec<String> = doc["errors"]
            .as_array()
            .expect("errors array")
            .iter()
            .map(|e| e["field"].as_str().expect("field").to_owned())
            .collect();
        fields.sort();
        (slug, fields)
    } else {
        assert!(
            content_type.starts_with("application/problem+xml"),
            "unexpected content type {content_type}"
        );
        assert!(
            body.contains("<problem xmlns=\"urn:ietf:rfc:7807\">"),
            "{body}"
        );
        let (root, tree) =
            bcci_gateway::http::xml::read_tree(body.as_bytes()).expect("problem XML parses");
        assert_eq!(root, "problem");
        let slug = tree["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("urn:bcci:problem:"))
            .expect("type")
            .to_owned();
        let mut fields: Vec<String> = match &tree["errors"] {
            serde_json::Value::Null => vec![],
            serde_json::Value::Object(errors) => match &errors["error"] {
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|e| e["field"].as_str().unwrap_or("").to_owned())
                    .collect(),
                one => vec![one["field"].as_str().unwrap_or("").to_owned()],
            },
            other => panic!("errors: {other}"),
        };
        fields.sort();
        (slug, fields)
    }
}

/// The gateway on `settings` with workers the test drives and `clock`; the
/// circuit breaker never opens (a test's failures are on purpose).
pub async fn manual_app(
    settings: bcci_gateway::config::Settings,
    clock: std::sync::Arc<bcci_gateway::clock::ManualClock>,
) -> bcci_gateway::app::Application {
    bcci_gateway::app::Application::build_with(
        settings,
        bcci_gateway::app::Options {
            clock,
            run_workers: false,
            breaker: Some(bcci_gateway::carrier::guard::BreakerSettings {
                failures_to_open: 1_000_000,
                open_for: std::time::Duration::from_millis(1),
            }),
            ..bcci_gateway::app::Options::default()
        },
    )
    .await
    .expect("the gateway builds")
}
