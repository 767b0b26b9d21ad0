//! The real binary: logs, the store lock, configuration commands.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::config::{NOWHERE, TestConfig};
use crate::common::free_port;

const BIN: &str = env!("CARGO_BIN_EXE_bcci-gateway");
const TOKEN: &str = "cli-test-token";

fn sha256_hex(s: &str) -> String {
    bcci_gateway::http::auth::token_sha256_hex(s)
}

/// Writes a configuration file into `dir` and returns its path and ports.
fn write_config(dir: &Path, db: &Path) -> (std::path::PathBuf, u16, u16) {
    let (port, admin_port) = (free_port(), free_port());
    let path = dir.join("config.toml");
    TestConfig::sqlite(db, NOWHERE, &format!("{NOWHERE}/callback"))
        .listen(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{admin_port}"),
        )
        .server("shutdown_grace_s = 5")
        .login("partner", "file-password-should-not-print", "T000180585")
        .client("motcua-condao", &[TOKEN])
        .admin(&[TOKEN])
        .write(&path);
    (path, port, admin_port)
}

fn gateway(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    // Only this test's variables configure the child.
    for (k, _) in std::env::vars() {
        if k.starts_with("BCCI_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

async fn wait_ready(admin_port: u16, child: &mut Child) {
    let url = format!("http://127.0.0.1:{admin_port}/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = reqwest::get(&url).await
            && r.status() == 200
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("gateway exited early: {status}");
        }
        assert!(Instant::now() < deadline, "gateway not ready in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn debug_logs_never_carry_personal_data_and_sigterm_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (config, port, admin_port) = write_config(dir.path(), &dir.path().join("bcci.db"));
    let mut child = gateway(&["serve", "--config", config.to_str().unwrap()])
        .env("BCCI_LOG__LEVEL", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(admin_port, &mut child).await;

    let personal = [
        "Trần Thị Personal",
        "0987654321",
        "citizen.secret@example.vn",
        "99 Đường Riêng Tư",
    ];
    let mut doc: serde_json::Value = crate::common::fixture_json("valid/return-cod.json");
    doc["citizen"]["name"] = personal[0].into();
    doc["citizen"]["phone"] = personal[1].into();
    doc["citizen"]["email"] = personal[2].into();
    doc["citizen"]["address"]["line"] = personal[3].into();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/handoffs");
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let created: serde_json::Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    // An invalid request carrying the same data, and a read by id.
    doc["parcel"]["weight_grams"] = 0.into();
    doc["request_id"] = "OTHER".into();
    assert_eq!(
        http.post(&url)
            .bearer_auth(TOKEN)
            .json(&doc)
            .send()
            .await
            .unwrap()
            .status(),
        422
    );
    let r = http
        .get(format!("{url}/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let status = terminate(&mut child);
    assert!(status.success(), "exit status {status}");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let all = format!("{out}\n{err}");
    assert!(out.lines().count() >= 4, "expected logs, got:\n{all}");
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    assert!(
        out.contains("\"level\":\"DEBUG\""),
        "debug level was not on:\n{out}"
    );
    for value in personal
        .iter()
        .chain([&TOKEN, &"file-password-should-not-print"])
    {
        assert!(!all.contains(value), "{value} appears in the logs:\n{all}");
    }
    // Paths are logged as route templates, never with the id in them.
    assert!(out.contains("/v1/handoffs/{id}"), "{out}");
    assert!(!out.contains(&format!("/v1/handoffs/{id}")), "{out}");
    assert!(out.contains("\"request_id\":\"req_"), "{out}");
}

#[tokio::test]
async fn a_second_process_on_the_same_sqlite_store_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let (config, _, admin_port) = write_config(dir.path(), &db);
    let mut first = gateway(&["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_ready(admin_port, &mut first).await;

    let other = tempfile::tempdir().unwrap();
    let (config2, _, _) = write_config(other.path(), &db);
    let second = gateway(&["serve", "--config", config2.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another bcci-gateway process"), "{stderr}");
    assert!(terminate(&mut first).success());
}

#[test]
fn check_config_redacts_secrets_and_warns_about_them() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = write_config(dir.path(), &dir.path().join("x.db"));
    let out = gateway(&["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("password = \"[redacted]\""), "{stdout}");
    assert!(!stdout.contains("file-password-should-not-print"));
    assert!(!stdout.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
    assert!(
        stderr.contains("postal.password is kept in the file"),
        "{stderr}"
    );
}

#[test]
fn environment_variables_override_the_file_and_others_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = write_config(dir.path(), &dir.path().join("x.db"));
    let out = gateway(&["check-config", "--config", config.to_str().unwrap()])
        .env("BCCI_SERVER__MAX_BODY_BYTES", "1234")
        .env("BCCI_POSTAL__SERVICE_CODES", "[\"CTN009\", \"ETN011\"]")
        .env("BCCI_SERVICE_PORT", "tcp://10.0.0.1:80")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("max_body_bytes = 1234"), "{stdout}");
    assert!(
        stdout.contains("service_codes = [\"CTN009\", \"ETN011\"]"),
        "{stdout}"
    );

    let out = gateway(&["check-config", "--config", config.to_str().unwrap()])
        .env("BCCI_POSTAL__PASWORD", "typo")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pasword"));
}

#[test]
fn unknown_keys_in_the_file_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = write_config(dir.path(), &dir.path().join("x.db"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = text.replace(
        "shutdown_grace_s = 5",
        "shutdown_grace_s = 5\nshutdown_grace = 5",
    );
    std::fs::write(&config, text).unwrap();
    let out = gateway(&["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shutdown_grace"));
}

#[test]
fn migrate_creates_the_store_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub/dir/bcci.db");
    let (config, _, _) = write_config(dir.path(), &db);
    let out = gateway(&["migrate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
    // Running it again is harmless.
    let again = gateway(&["migrate", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(again.status.success());
}

#[test]
fn token_new_prints_a_token_and_its_sha256() {
    let out = gateway(&["admin", "token", "new"]).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token:"))
        .unwrap()
        .trim();
    let hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256:"))
        .unwrap()
        .trim();
    assert_eq!(token.len(), 64);
    assert_eq!(sha256_hex(token), hash);
}

#[tokio::test]
async fn serve_tells_systemd_it_is_ready_and_stopping_and_healthcheck_finds_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _port, admin_port) = write_config(dir.path(), &dir.path().join("bcci.db"));
    let notify = dir.path().join("notify");
    let manager = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // Before the gateway runs, the configured admin listener does not answer.
    let down = gateway(&["healthcheck", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!down.status.success(), "healthcheck of a stopped gateway");
    let mut child = gateway(&["serve", "--config", config.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got = [0u8; 256];
    let n = manager.recv(&mut got).expect("a notification within 30 s");
    assert_eq!(&got[..n], b"READY=1");
    // Ready means serving: /readyz answers at once.
    let r = reqwest::get(format!("http://127.0.0.1:{admin_port}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up = gateway(&["healthcheck", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let n = manager.recv(&mut got).expect("STOPPING=1 at the drain");
    assert_eq!(&got[..n], b"STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after the drain");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
