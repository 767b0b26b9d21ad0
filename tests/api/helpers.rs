//! `spawn_app()`: the gateway on port 0 over SQLite in a temp dir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bcci_gateway::app::Application;
use bcci_gateway::config::Settings;
use bcci_gateway::intake::auth::token_sha256_hex;
use bcci_gateway::lifecycle::Lifecycle;
use bcci_gateway::store::SharedStore;

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
    _dir: tempfile::TempDir,
}

/// The test configuration as TOML, for a store under `dir`.
pub fn config_toml(dir: &Path, extra: &str) -> String {
    let db = dir.join("bcci.db");
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[log]
level = "warn"

[store]
url = "sqlite://{db}"

[postal]
base_url = "http://127.0.0.1:9"
username = "partner"
password = "secret-password"
customer_code = "T000180585"
webhook_keys = ["webhook-key-0123456789"]

[[intake.clients]]
name = "motcua-condao"
token_sha256s = ["{t1}", "{t2}"]
requests_per_second = 1000
callback_url = "http://127.0.0.1:9/callback"
callback_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[[intake.clients]]
name = "motcua-hanoi"
token_sha256s = ["{t3}"]
requests_per_second = 1000
callback_url = "http://127.0.0.1:9/callback"
callback_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]

[admin]
token_sha256s = ["{ta}"]
{extra}
"#,
        db = db.display(),
        t1 = token_sha256_hex(TOKEN),
        t2 = token_sha256_hex(TOKEN_ROTATED),
        t3 = token_sha256_hex(OTHER_TOKEN),
        ta = token_sha256_hex(ADMIN_TOKEN),
    )
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with("").await
}

/// Spawns with extra TOML appended to the test configuration.
pub async fn spawn_app_with(extra: &str) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings::from_toml(&config_toml(dir.path(), extra)).expect("test settings");
    let app = Application::build(settings).await.expect("app builds");
    let intake = app.intake_addr();
    let admin = app.admin_addr();
    let store = app.store();
    let lifecycle = app.lifecycle();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        intake,
        admin,
        store,
        lifecycle,
        http: reqwest::Client::new(),
        server,
        _dir: dir,
    }
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
    pub async fn stop(self) {
        self.lifecycle.drain();
        self.server.await.expect("join").expect("clean exit");
    }
}

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/requests")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

pub fn fixture_json(rel: &str) -> serde_json::Value {
    serde_json::from_slice(&fixture(rel)).expect("fixture is JSON")
}

/// A valid request with its own request_id.
pub fn valid_request(request_id: &str) -> serde_json::Value {
    let mut v = fixture_json("valid/return-cod.json");
    v["request_id"] = serde_json::json!(request_id);
    v
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
            bcci_gateway::intake::xml::read_tree(body.as_bytes()).expect("problem XML parses");
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
