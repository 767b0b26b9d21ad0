//! Real processes for the soak and high-availability tests: the gateway
//! binary, the `postal-sim` simulator, and their output.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::TestConfig;
use serde_json::Value;

/// The binary cargo built for these tests (the profile `cargo test` runs in).
pub const BUILT: &str = env!("CARGO_BIN_EXE_bcci-gateway");
pub const TOKEN: &str = "soak-client-token";
pub const ADMIN_TOKEN: &str = "soak-admin-token";
pub const KEY: &str = "soak-webhook-key-0123456789";

use super::free_port;

/// The binary under test: `BCCI_TEST_BIN` when set (CI points it at the
/// release build users run: `cargo build --release` then
/// `BCCI_TEST_BIN=target/release/bcci-gateway cargo test --test soak`),
/// otherwise the one `cargo test` built. A relative path is taken from the
/// crate's root.
pub fn bin() -> PathBuf {
    static CHOSEN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHOSEN
        .get_or_init(|| {
            assert!(
                std::env::var_os("CI").is_none() || std::env::var_os("BCCI_TEST_BIN").is_some(),
                "in CI the process-level tests run the release binary: set BCCI_TEST_BIN (.ci/run does)"
            );
            let chosen = match std::env::var_os("BCCI_TEST_BIN") {
                Some(path) => {
                    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
                    assert!(
                        path.is_file(),
                        "BCCI_TEST_BIN names {}, which is not a file",
                        path.display()
                    );
                    path
                }
                None => PathBuf::from(BUILT),
            };
            // Past the harness's capture, so every run's log says which.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "testing the gateway binary {}",
                chosen.display()
            );
            chosen
        })
        .clone()
}

/// Only this test's settings configure the children.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("BCCI_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {} failed", child.id());
}

/// A child process that is killed when the test ends, whichever way it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The last lines a process wrote, kept by a thread that drains its pipe.
#[derive(Clone, Default)]
pub struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    pub fn drain(
        &self,
        pipe: impl Read + Send + 'static,
        first: Option<std::sync::mpsc::Sender<String>>,
    ) {
        let tail = self.clone();
        std::thread::spawn(move || {
            let mut first = first;
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("http://")
                    && let Some(tx) = first.take()
                {
                    let _ = tx.send(line.clone());
                }
                let mut t = tail.0.lock().unwrap();
                t.push_back(line);
                if t.len() > 40 {
                    t.pop_front();
                }
            }
        });
    }

    pub fn text(&self) -> String {
        Vec::from(self.0.lock().unwrap().clone()).join("\n")
    }
}

/// `bcci-gateway postal-sim` with the faults of issue 4.
pub struct PostalSim {
    _proc: Proc,
    pub base_url: String,
    pub output: Tail,
}

impl PostalSim {
    pub fn start(webhook_url: &str, seed: u64) -> Self {
        Self::start_with(webhook_url, seed, &[])
    }

    /// The simulator with issue 4's faults and `extra` flags after them.
    pub fn start_with(webhook_url: &str, seed: u64, extra: &[&str]) -> Self {
        let seed = seed.to_string();
        let mut args = vec![
            "postal-sim",
            "--listen",
            "127.0.0.1:0",
            // Drawn in this order on each call: 5xx, then 429 among the
            // rest (0.8 × 0.0625 = 5 % of calls), then the answer faults;
            // a CreateOrder that passes them all (and its expired-token 401s,
            // about a fifth of calls at a 2 s token life) loses its answer at
            // 0.22: about 10 % of CreateOrder calls, besides those the resets
            // and half-written answers lose.
            "--error-rate",
            "0.2",
            "--rate-limit-rate",
            "0.0625",
            "--lost-answer-rate",
            "0.22",
            "--token-ttl-s",
            "2",
            // A little latency keeps calls in flight when a kill comes.
            "--latency-ms",
            "5",
            "--latency-jitter-ms",
            "40",
            "--webhook-url",
            webhook_url,
            "--step-interval-ms",
            "500",
            "--seed",
            &seed,
        ];
        args.extend_from_slice(extra);
        let mut child = command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = Tail::default();
        let (tx, rx) = std::sync::mpsc::channel();
        output.drain(child.stdout.take().unwrap(), Some(tx));
        output.drain(child.stderr.take().unwrap(), None);
        let proc = Proc(child);
        let base_url = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "the simulator printed no base URL in 20 s:\n{}",
                    output.text()
                )
            });
        Self {
            _proc: proc,
            base_url,
            output,
        }
    }

    pub async fn get(&self, http: &reqwest::Client, path: &str) -> Value {
        let url = format!("{}{path}", self.base_url);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {url}");
        r.json().await.unwrap()
    }

    pub async fn stats(&self, http: &reqwest::Client) -> Value {
        self.get(http, "/_sim/stats").await
    }
}

/// A gateway process under test: one configuration and one store across runs.
pub struct Gateway {
    proc: Option<Proc>,
    config: PathBuf,
    log: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub starts: usize,
    pub kills: usize,
}

impl Gateway {
    /// A gateway on `store_url`, configured in `dir` under `name`.
    pub fn new(
        dir: &Path,
        name: &str,
        store_url: &str,
        sim: &str,
        port: u16,
        callback: SocketAddr,
    ) -> Self {
        let admin_port = free_port();
        let config = dir.join(format!("{name}.toml"));
        TestConfig::new(store_url, sim, &format!("http://{callback}/callback"))
            .listen(
                &format!("127.0.0.1:{port}"),
                &format!("127.0.0.1:{admin_port}"),
            )
            .server("shutdown_grace_s = 10")
            .log("level = \"warn\"\nformat = \"text\"")
            .store("lease_s = 10")
            .login("partner", "soak-password", "T000180585")
            .webhook_keys(&[KEY])
            .postal(
                "timeout_ms = 1000
lookup_delay_s = 1
max_requests_per_second = 1000
# The simulator fails up to half the calls; the breaker (tested on its own in
# tests/it/dispatch.rs) would stop the run for its whole open time.
breaker_failures = 50
breaker_open_s = 1",
            )
            .intake("timeout_ms = 1000")
            .client("motcua-soak", &[TOKEN])
            .rate(100000)
            .admin(&[ADMIN_TOKEN])
            .extra(
                "[retry]
initial_ms = 50
max_ms = 1000
deadline_s = 600",
            )
            .write(&config);
        Self {
            proc: None,
            config,
            log: dir.join(format!("{name}.log")),
            port,
            admin_port,
            starts: 0,
            kills: 0,
        }
    }

    pub fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = command(&["serve", "--config", self.config.to_str().unwrap()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.proc = Some(Proc(child));
        self.starts += 1;
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.proc.as_mut().expect("the gateway is running").0
    }

    pub async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(1)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child().try_wait().unwrap() {
                panic!(
                    "gateway start {} exited early ({status}):\n{}",
                    self.starts,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway start {} not ready in 20 s:\n{}",
                self.starts,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn sigkill(&mut self) {
        let child = self.child();
        signal(child, "-KILL");
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{status}"
        );
        self.proc = None;
        self.kills += 1;
    }

    pub fn sigterm(&mut self) -> ExitStatus {
        let child = self.child();
        signal(child, "-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit within 15 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn assert_alive(&mut self) {
        if let Some(status) = self.child().try_wait().unwrap() {
            panic!("the gateway died ({status}):\n{}", self.log_tail());
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// How the submissions went.
#[derive(Default)]
pub struct Submitted {
    pub accepted: AtomicUsize,
    pub duplicates: AtomicUsize,
    pub resends: AtomicUsize,
}

/// Sends one handoff until the gateway has it (202, or 200 when an earlier
/// send was stored but its answer was lost to a kill); returns its id.
pub async fn submit(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    counts: &Submitted,
    deadline: Instant,
) -> String {
    loop {
        let last = match http.post(url).bearer_auth(TOKEN).json(body).send().await {
            Ok(r) if r.status() == 202 || r.status() == 200 => {
                if r.status() == 200 {
                    counts.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                let doc: Value = r.json().await.unwrap();
                counts.accepted.fetch_add(1, Ordering::Relaxed);
                return doc["id"].as_str().unwrap().to_owned();
            }
            Ok(r) if r.status() == 503 || r.status() == 429 => format!("{}", r.status()),
            Ok(r) => {
                let status = r.status();
                panic!(
                    "{}: unexpected {status}: {}",
                    body["request_id"],
                    r.text().await.unwrap_or_default()
                );
            }
            Err(e) => format!("{e}"),
        };
        assert!(
            Instant::now() < deadline,
            "{} still not accepted at the deadline (last: {last})",
            body["request_id"]
        );
        counts.resends.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the gateway says about a handoff: its status and tracking number.
pub type Progress = (String, Option<String>);

/// Reads many handoffs, `concurrency` at a time, each with its id.
pub async fn read_handoffs(
    http: &reqwest::Client,
    base: &str,
    ids: Vec<String>,
    concurrency: usize,
) -> Vec<(String, Option<Progress>)> {
    use futures_util::StreamExt;
    futures_util::stream::iter(ids)
        .map(|id| async move {
            let h = read_handoff(http, base, &id).await;
            (id, h)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

pub async fn read_handoff(http: &reqwest::Client, base: &str, id: &str) -> Option<Progress> {
    let r = http
        .get(format!("{base}/v1/handoffs/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?;
    assert_eq!(r.status(), 200, "GET /v1/handoffs/{id}");
    let doc: Value = r.json().await.ok()?;
    Some((
        doc["status"].as_str()?.to_owned(),
        doc["tracking_number"].as_str().map(str::to_owned),
    ))
}
