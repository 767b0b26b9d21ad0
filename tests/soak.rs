//! Soak (issue 4): the real binary against a faulty simulator, SIGKILLed three
//! times while it works. Exactly one postal order per handoff, every handoff
//! with its tracking number, nothing left unprocessed; bounded for CI.
//!
//! `SOAK_SEED=<n>` replays another kill schedule (and simulator seed).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bcci_gateway::intake::auth::token_sha256_hex;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
const BIN: &str = env!("CARGO_BIN_EXE_bcci-gateway");
const TOKEN: &str = "soak-client-token";
const ADMIN_TOKEN: &str = "soak-admin-token";
const KEY: &str = "soak-webhook-key-0123456789";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const HANDOFFS: usize = 300;
const CONCURRENCY: usize = 16;
const KILLS: usize = 3;
const DEFAULT_SEED: u64 = 4;
/// Everything up to the final SIGTERM happens within this much of the start,
/// which keeps the test (with at most 15 s of drain) under three minutes.
const BUDGET: Duration = Duration::from_secs(150);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Only this test's settings configure the children.
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("BCCI_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {} failed", child.id());
}

/// A child process that is killed when the test ends, whichever way it ends.
struct Proc(Child);

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
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn drain(
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

    fn text(&self) -> String {
        Vec::from(self.0.lock().unwrap().clone()).join("\n")
    }
}

/// `bcci-gateway postal-sim` with the faults of issue 4.
struct PostalSim {
    _proc: Proc,
    base_url: String,
    output: Tail,
}

impl PostalSim {
    fn start(webhook_url: &str, seed: u64) -> Self {
        let mut child = command(&[
            "postal-sim",
            "--listen",
            "127.0.0.1:0",
            "--error-rate",
            "0.2",
            "--rate-limit-rate",
            "0.05",
            "--lost-answer-rate",
            "0.1",
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
            &seed.to_string(),
        ])
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

    async fn get(&self, http: &reqwest::Client, path: &str) -> Value {
        let url = format!("{}{path}", self.base_url);
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {url}");
        r.json().await.unwrap()
    }

    async fn stats(&self, http: &reqwest::Client) -> Value {
        self.get(http, "/_sim/stats").await
    }
}

/// The gateway under test: one configuration and one SQLite file across runs.
struct Gateway {
    proc: Option<Proc>,
    config: PathBuf,
    log: PathBuf,
    port: u16,
    admin_port: u16,
    starts: usize,
    kills: usize,
}

impl Gateway {
    fn new(dir: &Path, sim: &str, port: u16, callback: SocketAddr) -> Self {
        let admin_port = free_port();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin_port}"
shutdown_grace_s = 10

[log]
level = "warn"
format = "text"

[store]
url = "sqlite://{db}"
lease_s = 10

[postal]
base_url = "{sim}"
username = "partner"
password = "soak-password"
customer_code = "T000180585"
webhook_keys = ["{KEY}"]
timeout_ms = 1000
lookup_delay_s = 1
max_requests_per_second = 1000

[intake]
timeout_ms = 1000

[[intake.clients]]
name = "motcua-soak"
token_sha256s = ["{client}"]
requests_per_second = 100000
callback_url = "http://{callback}/callback"
callback_secrets = ["{SECRET}"]

[admin]
token_sha256s = ["{admin}"]

[retry]
initial_ms = 50
max_ms = 1000
deadline_s = 600
"#,
            db = dir.join("bcci.db").display(),
            client = token_sha256_hex(TOKEN),
            admin = token_sha256_hex(ADMIN_TOKEN),
        );
        let config = dir.join("config.toml");
        std::fs::write(&config, toml).unwrap();
        Self {
            proc: None,
            config,
            log: dir.join("gateway.log"),
            port,
            admin_port,
            starts: 0,
            kills: 0,
        }
    }

    fn spawn(&mut self) {
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

    fn child(&mut self) -> &mut Child {
        &mut self.proc.as_mut().expect("the gateway is running").0
    }

    async fn wait_ready(&mut self) {
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

    fn sigkill(&mut self) {
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

    fn sigterm(&mut self) -> ExitStatus {
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

    fn assert_alive(&mut self) {
        if let Some(status) = self.child().try_wait().unwrap() {
            panic!("the gateway died ({status}):\n{}", self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// The intake system's callback endpoint: accepts everything so callbacks drain.
async fn start_receiver() -> (SocketAddr, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, count)
}

/// How the submissions went.
#[derive(Default)]
struct Submitted {
    accepted: AtomicUsize,
    duplicates: AtomicUsize,
    resends: AtomicUsize,
}

/// Sends one handoff until the gateway has it (202, or 200 when an earlier
/// send was stored but its answer was lost to a kill); returns its id.
async fn submit(
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
type Progress = (String, Option<String>);

async fn read_handoff(http: &reqwest::Client, base: &str, id: &str) -> Option<Progress> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_handoffs_through_faults_and_three_sigkills_make_exactly_one_order_each() {
    let started = Instant::now();
    let deadline = started + BUDGET;
    let seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = StdRng::seed_from_u64(seed);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    let (callback, callbacks) = start_receiver().await;
    let port = free_port();
    let sim = PostalSim::start(
        &format!("http://127.0.0.1:{port}/v1/postal/vnpost/events/{KEY}"),
        seed,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::new(dir.path(), &sim.base_url, port, callback);
    gateway.spawn();
    gateway.wait_ready().await;
    let base = format!("http://127.0.0.1:{}", gateway.port);

    // The intake system sends 300 handoffs, resending through the outages.
    let template: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/requests/valid/return-cod.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let counts = Arc::new(Submitted::default());
    let submitter = {
        let (http, url, counts) = (http.clone(), format!("{base}/v1/handoffs"), counts.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(0..HANDOFFS)
                .map(|i| {
                    let mut body = template.clone();
                    body["request_id"] = json!(format!("SOAK-{seed}-{i:03}"));
                    let (http, url, counts) = (http.clone(), url.clone(), counts.clone());
                    async move { submit(&http, &url, &body, &counts, deadline).await }
                })
                .buffered(CONCURRENCY)
                .collect::<Vec<String>>()
                .await
        })
    };

    // The first kill comes as soon as CreateOrder calls are under way.
    let mut kill_log = Vec::new();
    loop {
        let stats = sim.stats(&http).await;
        if stats["calls"]["CreateOrder"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < started + Duration::from_secs(30),
            "no CreateOrder call in 30 s:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for k in 0..KILLS {
        let wait = if k == 0 {
            rng.random_range(0..300)
        } else {
            rng.random_range(1000..4000)
        };
        tokio::time::sleep(Duration::from_millis(wait)).await;
        gateway.assert_alive();
        let at = started.elapsed();
        gateway.sigkill();
        let stats = sim.stats(&http).await;
        let created = stats["orders_created"].as_u64().unwrap();
        let calls = stats["calls"]["CreateOrder"].as_u64().unwrap_or(0);
        let accepted = counts.accepted.load(Ordering::Relaxed);
        kill_log.push(format!(
            "kill {} at {at:.1?}: {accepted} handoffs accepted, {created} orders, {calls} CreateOrder calls",
            k + 1
        ));
        if k == 0 {
            assert!(
                (created as usize) < HANDOFFS,
                "the first kill came after every order was created"
            );
        }
        gateway.spawn();
        gateway.wait_ready().await;
    }
    let ids = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        submitter,
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} of {HANDOFFS} handoffs accepted by the deadline:\n{}",
            counts.accepted.load(Ordering::Relaxed),
            gateway.log_tail()
        )
    })
    .expect("the submitter panicked");
    assert_eq!(ids.len(), HANDOFFS);

    // Every handoff gets its order and tracking number.
    let mut seen: HashMap<String, Progress> = HashMap::new();
    loop {
        gateway.assert_alive();
        let pending: Vec<String> = ids
            .iter()
            .filter(|id| {
                seen.get(*id)
                    .is_none_or(|(s, t)| s == "received" || t.is_none())
            })
            .cloned()
            .collect();
        if pending.is_empty() {
            break;
        }
        let read: Vec<(String, Option<Progress>)> = futures_util::stream::iter(pending)
            .map(|id| {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    let h = read_handoff(&http, &base, &id).await;
                    (id, h)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (id, h) in read {
            if let Some(h) = h {
                seen.insert(id, h);
            }
        }
        if Instant::now() >= deadline {
            let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
            let mut untracked = Vec::new();
            for id in &ids {
                let (status, tracking) = seen.get(id).cloned().unwrap_or(("unread".into(), None));
                *by_status.entry(status).or_default() += 1;
                if tracking.is_none() {
                    untracked.push(id.clone());
                }
            }
            panic!(
                "not every handoff has an order after {:.0?}: statuses {by_status:?}, \
                 {} without a tracking number (e.g. {:?})\n{}\nsimulator stats: {}\n\
                 gateway log tail:\n{}\nsimulator output tail:\n{}",
                started.elapsed(),
                untracked.len(),
                &untracked[..untracked.len().min(5)],
                kill_log.join("\n"),
                sim.stats(&http).await,
                gateway.log_tail(),
                sim.output.text()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let converged = started.elapsed();

    // Exactly one order per handoff at the simulator, cancelled ones included.
    let orders = sim.get(&http, "/_sim/orders").await;
    let orders = orders.as_array().expect("a list of orders");
    let mut by_code: HashMap<&str, Vec<&Value>> = HashMap::new();
    for o in orders {
        by_code
            .entry(o["sale_order_code"].as_str().unwrap())
            .or_default()
            .push(o);
    }
    let mut problems = Vec::new();
    for id in &ids {
        let tracking = seen[id].1.as_deref().unwrap();
        match by_code.get(id.as_str()).map(Vec::as_slice) {
            Some([order]) => {
                if order["item_code"] != tracking {
                    problems.push(format!(
                        "{id}: tracking number {tracking} but the order's itemCode is {}",
                        order["item_code"]
                    ));
                }
            }
            found => {
                let found: Vec<String> = found
                    .unwrap_or_default()
                    .iter()
                    .map(|o| {
                        format!(
                            "{} (created {}, status {}, cancelled {})",
                            o["item_code"], o["created_at"], o["status"], o["cancelled"]
                        )
                    })
                    .collect();
                problems.push(format!(
                    "{id}: {} orders, not one: {found:?}; the handoff has {tracking}",
                    found.len()
                ));
            }
        }
    }
    assert_eq!(
        orders.len(),
        HANDOFFS,
        "orders at the simulator; problems: {problems:#?}"
    );
    assert!(
        problems.is_empty(),
        "{} handoffs break exactly-one-order:\n{}\n{}\ngateway log tail:\n{}",
        problems.len(),
        problems.join("\n"),
        kill_log.join("\n"),
        gateway.log_tail()
    );

    // The faults were really injected, and the kills really happened.
    let stats = sim.stats(&http).await;
    for counter in [
        "errors_injected",
        "rate_limits_injected",
        "lost_answers_injected",
        "unauthorized",
    ] {
        assert!(
            stats[counter].as_u64().unwrap() > 0,
            "{counter} is 0: {stats}"
        );
    }
    assert!(gateway.kills >= KILLS, "only {} kills", gateway.kills);
    assert_eq!(gateway.starts, KILLS + 1);

    let term = Instant::now();
    let status = gateway.sigterm();
    let drained = term.elapsed();
    assert!(
        status.success(),
        "SIGTERM exit status {status}:\n{}",
        gateway.log_tail()
    );
    eprintln!(
        "soak (seed {seed}): {HANDOFFS} handoffs converged in {converged:.1?}, total {:.1?}\n{}\n\
         submissions: {} resent, {} answered 200 (stored before a kill)\n\
         callbacks received: {}, SIGTERM to exit: {drained:.1?}\nsimulator stats: {stats}",
        started.elapsed(),
        kill_log.join("\n"),
        counts.resends.load(Ordering::Relaxed),
        counts.duplicates.load(Ordering::Relaxed),
        callbacks.load(Ordering::Relaxed),
    );
}
