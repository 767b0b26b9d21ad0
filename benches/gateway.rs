//! Benchmarks of the gateway near the machine's limits (issue 10).
//!
//! `cargo bench --bench gateway -- [SCENARIO...] [--store URL] [--seconds N] [--backlog N] [--handoffs N]`
//!
//! Scenarios: `idle`, `intake`, `e2e`, `backlog` (all by default). The
//! gateway runs as a separate process (this same executable, re-run with
//! `BCCI_BENCH_GATEWAY` set, so the postal breaker can be switched off), the
//! Vietnam Post simulator, the callback receiver and the load generator run
//! in this process, all on loopback. Each run prints a Markdown row with the
//! gateway's RSS and the CPU the rest of the machine used meanwhile ("ours"
//! is the gateway, this process and, with PostgreSQL, the server processes
//! of the benchmark's database; "background" is everything else).
//! `--store` takes a `postgres://` URL (a fresh database is created and
//! dropped) or `sqlite` (a file in a fresh temporary directory; the default).

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use bcci_gateway::app::{Application, Options};
use bcci_gateway::carrier::guard::BreakerSettings;
use bcci_gateway::config::Settings;
use bcci_gateway::http::auth::token_sha256_hex;
use bcci_gateway::sim::{Faults, SimConfig, Simulator};

const TOKEN: &str = "bench-client-token";
const KEY: &str = "bench-webhook-key-0123456789";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Concurrent connections of the load generator.
const CONNECTIONS: usize = 64;
/// Set in the gateway's child process: the path of its configuration.
const CHILD_ENV: &str = "BCCI_BENCH_GATEWAY";
/// Set to `0` in the child: no background workers.
const WORKERS_ENV: &str = "BCCI_BENCH_WORKERS";
/// Set in the baseline's child process: the port of a bare axum JSON POST
/// handler, the yardstick of the intake figure.
const BARE_ENV: &str = "BCCI_BENCH_BARE";

fn main() -> ExitCode {
    if let Ok(config) = std::env::var(CHILD_ENV) {
        return gateway_child(Path::new(&config));
    }
    if let Ok(port) = std::env::var(BARE_ENV) {
        return bare_child(port.parse().expect("a port"));
    }
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The gateway as `serve` runs it, but with the postal breaker switched off
/// (and, with `BCCI_BENCH_WORKERS=0`, without workers).
fn gateway_child(config: &Path) -> ExitCode {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let result = rt.block_on(async {
        let settings = Settings::load_file_only(config)?;
        bcci_gateway::telemetry::logging::init(&settings.log);
        let options = Options {
            run_workers: std::env::var(WORKERS_ENV).as_deref() != Ok("0"),
            breaker: Some(BreakerSettings {
                failures_to_open: u32::MAX,
                open_for: Duration::ZERO,
            }),
            ..Options::default()
        };
        let app = Application::build_with(settings, options).await?;
        let lifecycle = app.lifecycle();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
            lifecycle.drain();
        });
        app.run_until_stopped().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The yardstick of intake: axum on the same runtime, reading the body as
/// a JSON value, writing it back as JSON and hashing it (SHA-256), with no
/// validation and no store, answering 202 with a small document.
fn bare_child(port: u16) -> ExitCode {
    use sha2::Digest as _;
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let result: anyhow::Result<()> = rt.block_on(async {
        let app = axum::Router::new()
            .route(
                "/v1/handoffs",
                axum::routing::post(
                    |axum::Json(doc): axum::Json<serde_json::Value>| async move {
                        let canonical = serde_json::to_vec(&doc).unwrap_or_default();
                        let sha = sha2::Sha256::digest(&canonical);
                        (
                            axum::http::StatusCode::ACCEPTED,
                            axum::Json(serde_json::json!({
                                "id": hex::encode(&sha[..8]),
                                "request_id": doc["request_id"],
                                "status": "received",
                            })),
                        )
                    },
                ),
            )
            .route("/readyz", axum::routing::get(|| async { "ready" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, app).await?;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone)]
struct Args {
    scenarios: Vec<String>,
    store: String,
    seconds: u64,
    backlog: Vec<usize>,
    handoffs: usize,
}

impl Args {
    fn parse() -> Result<Self, String> {
        let mut a = Args {
            scenarios: Vec::new(),
            store: "sqlite".into(),
            seconds: 20,
            backlog: vec![100_000],
            handoffs: 10_000,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                // Cargo passes `--bench` to every bench target.
                "--bench" => {}
                "--store" => a.store = value("--store")?,
                "--seconds" => {
                    a.seconds = value("--seconds")?.parse().map_err(|e| format!("{e}"))?
                }
                "--handoffs" => {
                    a.handoffs = value("--handoffs")?.parse().map_err(|e| format!("{e}"))?
                }
                "--backlog" => {
                    a.backlog = value("--backlog")?
                        .split(',')
                        .map(|n| n.parse().map_err(|e| format!("{e}")))
                        .collect::<Result<_, _>>()?
                }
                "idle" | "intake" | "e2e" | "backlog" => a.scenarios.push(arg),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if a.scenarios.is_empty() {
            a.scenarios = ["idle", "intake", "e2e", "backlog"]
                .map(String::from)
                .to_vec();
        }
        Ok(a)
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    println!("{}", machine_notes());
    println!(
        "| store | scenario | result | latency p50 / p99 | gateway RSS | CPU of the machine: ours / background |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for scenario in &args.scenarios {
        match scenario.as_str() {
            "idle" => idle(&args).await?,
            "intake" => intake(&args).await?,
            "e2e" => end_to_end(&args).await?,
            "backlog" => {
                for &n in &args.backlog {
                    backlog(&args, n).await?;
                }
            }
            _ => unreachable!("checked by Args::parse"),
        }
    }
    Ok(())
}

fn store_label(args: &Args) -> &'static str {
    if args.store.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

fn row(args: &Args, scenario: &str, result: &str, latency: &str, rss: &str, cpu: &Cpu) {
    println!(
        "| {} | {scenario} | {result} | {latency} | {rss} | {} |",
        store_label(args),
        cpu.render()
    );
}

// ---------------------------------------------------------------- machine

fn machine_notes() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "machine: {cores} cores, {model}, {} GiB; load average at start: {}",
        mem / 1024 / 1024,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// CPU use of the whole machine and of this benchmark's processes.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    busy: u64,
    total: u64,
    ours: u64,
    gateway: u64,
    at: Instant,
}

fn cpu_sample(gateway: Option<u32>) -> CpuSample {
    cpu_sample_with(gateway, &[])
}

/// `database`: PostgreSQL backends serving this run, counted as ours.
fn cpu_sample_with(gateway: Option<u32>, database: &[u32]) -> CpuSample {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let get = |i: usize| fields.get(i).copied().unwrap_or(0);
    let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
    let total = busy + get(3) + get(4);
    let proc_ticks = |path: String| -> u64 {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        // Fields after the command name, which is in parentheses.
        let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<&str> = rest.split_whitespace().collect();
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // utime and stime are fields 14 and 15 of the line: 11 and 12 here.
        n(11) + n(12)
    };
    let bench = proc_ticks("/proc/self/stat".into())
        + database
            .iter()
            .map(|pid| proc_ticks(format!("/proc/{pid}/stat")))
            .sum::<u64>();
    let gateway = gateway.map_or(0, |pid| proc_ticks(format!("/proc/{pid}/stat")));
    CpuSample {
        busy,
        total,
        ours: bench + gateway,
        gateway,
        at: Instant::now(),
    }
}

/// CPU use between two samples, in per cent of the whole machine.
#[derive(Debug, Clone, Copy)]
struct Cpu {
    ours: f64,
    /// The gateway's share of `ours`.
    gateway: f64,
    background: f64,
    /// Wall-clock seconds between the samples.
    elapsed: f64,
}

impl Cpu {
    fn between(a: CpuSample, b: CpuSample) -> Self {
        let total = (b.total - a.total).max(1) as f64;
        let busy = b.busy.saturating_sub(a.busy) as f64;
        let ours = b.ours.saturating_sub(a.ours) as f64;
        Cpu {
            ours: 100.0 * ours / total,
            gateway: 100.0 * b.gateway.saturating_sub(a.gateway) as f64 / total,
            background: (100.0 * (busy - ours) / total).max(0.0),
            elapsed: b.at.duration_since(a.at).as_secs_f64(),
        }
    }

    /// CPU seconds per item: of this benchmark's processes, and of the
    /// gateway alone.
    fn seconds_per(&self, items: u64) -> (f64, f64) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let per = |share: f64| share / 100.0 * cores * self.elapsed / items.max(1) as f64;
        (per(self.ours), per(self.gateway))
    }

    fn render(&self) -> String {
        format!("{:.0}% / {:.0}%", self.ours, self.background)
    }
}

/// VmRSS and VmHWM of a process, in MiB.
fn rss(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

// ---------------------------------------------------------------- gateway

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the gateway keeps its state for one scenario.
struct StoreUnderTest {
    url: String,
    dir: tempfile::TempDir,
    /// A PostgreSQL database to drop at the end: (server URL, name).
    postgres: Option<(String, String)>,
}

impl StoreUnderTest {
    async fn new(args: &Args) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        if args.store.starts_with("postgres") {
            let name = format!(
                "bcci_bench_{}",
                ulid::Ulid::new().to_string().to_lowercase()
            );
            let server = args.store.clone();
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&server).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await?;
            let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
            Ok(Self {
                url: format!("{base}/{name}"),
                dir,
                postgres: Some((server.clone(), name)),
            })
        } else {
            Ok(Self {
                url: format!("sqlite://{}", dir.path().join("bcci.db").display()),
                dir,
                postgres: None,
            })
        }
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        if let Some((server, name)) = &self.postgres {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(server).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await?;
        }
        Ok(())
    }

    /// The PostgreSQL server processes serving this store's database.
    async fn server_pids(&self) -> Vec<u32> {
        let Some((server, name)) = &self.postgres else {
            return Vec::new();
        };
        let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(server).await else {
            return Vec::new();
        };
        sqlx::query_scalar::<_, i32>("SELECT pid FROM pg_stat_activity WHERE datname = $1")
            .bind(name)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| p as u32)
            .collect()
    }

    /// Bytes of the SQLite files (database and WAL), for the notes.
    fn sqlite_sizes(&self) -> Option<(u64, u64)> {
        let db = self.dir.path().join("bcci.db");
        let wal = self.dir.path().join("bcci.db-wal");
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        self.postgres.is_none().then(|| (size(&db), size(&wal)))
    }
}

struct Ports {
    intake: u16,
    admin: u16,
}

fn config(store: &str, ports: &Ports, postal: &str, callback: &str) -> String {
    let hash = token_sha256_hex(TOKEN);
    format!(
        r#"
[server]
listen = "127.0.0.1:{intake}"
admin_listen = "127.0.0.1:{admin}"
shutdown_grace_s = 5
[log]
level = "warn"
[store]
url = "{store}"
[postal]
base_url = "{postal}"
username = "partner"
password = "secret"
customer_code = "T000180585"
webhook_keys = ["{KEY}"]
timeout_ms = 5000
max_requests_per_second = 1000000
lookup_delay_s = 1
[intake]
timeout_ms = 5000
[[intake.clients]]
name = "motcua"
token_sha256s = ["{hash}"]
requests_per_second = 1000000
callback_url = "{callback}"
callback_secrets = ["{SECRET}"]
[admin]
token_sha256s = ["{hash}"]
[retry]
initial_ms = 100
max_ms = 1000
deadline_s = 3600
"#,
        intake = ports.intake,
        admin = ports.admin,
    )
}

/// The gateway in its own process.
struct Gateway {
    child: Child,
    intake: SocketAddr,
}

impl Gateway {
    /// The bare axum handler of [`bare_child`], in its own process.
    async fn start_bare(port: u16) -> anyhow::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(BARE_ENV, port.to_string());
        Self::spawn(cmd, port).await
    }

    /// `exe`: this benchmark (breaker off) or the real `bcci-gateway`.
    async fn start(
        exe: Option<&str>,
        dir: &Path,
        toml: &str,
        ports: &Ports,
        workers: bool,
    ) -> anyhow::Result<Self> {
        let path = dir.join(format!("gateway-{}.toml", ulid::Ulid::new()));
        std::fs::write(&path, toml)?;
        let cmd = match exe {
            Some(exe) => {
                let mut c = Command::new(exe);
                c.arg("serve").arg("--config").arg(&path);
                c
            }
            None => {
                let mut c = Command::new(std::env::current_exe()?);
                c.env(CHILD_ENV, &path)
                    .env(WORKERS_ENV, if workers { "1" } else { "0" });
                c
            }
        };
        Self::spawn(cmd, ports.intake).await
    }

    /// Runs `cmd` and waits until `/readyz` on `port` answers.
    async fn spawn(mut cmd: Command, port: u16) -> anyhow::Result<Self> {
        for (k, _) in std::env::vars() {
            if k.starts_with("BCCI_") && ![CHILD_ENV, WORKERS_ENV, BARE_ENV].contains(&k.as_str()) {
                cmd.env_remove(k);
            }
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::inherit()).spawn()?;
        let intake = SocketAddr::from(([127, 0, 0, 1], port));
        let gw = Gateway { child, intake };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
                .get(format!("http://{intake}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(gw);
            }
            anyhow::ensure!(Instant::now() < deadline, "the gateway did not get ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                self.child.kill()?;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- load

/// A request body with a fresh `request_id` each time.
#[derive(Clone)]
struct Bodies {
    before: Arc<str>,
    after: Arc<str>,
    run: Arc<str>,
}

impl Bodies {
    fn new() -> Self {
        let mut doc: serde_json::Value = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/requests/valid/pickup.json"
        )))
        .expect("the fixture is JSON");
        doc["request_id"] = "@ID@".into();
        doc["due_at"] = "2027-06-30T17:00:00+07:00".into();
        let text = doc.to_string();
        let (before, after) = text.split_once("@ID@").expect("the placeholder");
        Bodies {
            before: before.into(),
            after: after.into(),
            run: ulid::Ulid::new().to_string().into(),
        }
    }

    fn body(&self, conn: usize, n: u64) -> Bytes {
        Bytes::from(format!(
            "{}B-{}-{conn}-{n}{}",
            self.before, self.run, self.after
        ))
    }
}

#[derive(Debug, Default)]
struct LoadResult {
    accepted: u64,
    other: u64,
    errors: u64,
    /// Microseconds, of requests started after the warm-up.
    latencies: Vec<u32>,
    measured: Duration,
}

impl LoadResult {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.measured.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies[i]) / 1000.0
    }
}

/// Posts handoffs on `CONNECTIONS` keep-alive connections, each waiting for
/// its answer before the next request: for `warmup + measure`, or until
/// `total` requests were sent.
async fn load(
    intake: SocketAddr,
    bodies: &Bodies,
    warmup: Duration,
    measure: Duration,
    total: Option<u64>,
) -> anyhow::Result<LoadResult> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..CONNECTIONS {
        let bodies = bodies.clone();
        let sent = sent.clone();
        tasks.spawn(async move {
            let mut r = LoadResult::default();
            let stream = tokio::net::TcpStream::connect(intake).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            let auth = format!("Bearer {TOKEN}");
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if let Some(total) = total
                    && sent.fetch_add(1, Ordering::Relaxed) >= total
                {
                    break;
                }
                n += 1;
                let request = http::Request::post("/v1/handoffs")
                    .header("host", "gateway")
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(Full::new(bodies.body(conn, n)))?;
                sender.ready().await?;
                let answer = sender.send_request(request).await;
                let answer = match answer {
                    Ok(a) => a,
                    Err(_) => {
                        r.errors += 1;
                        break;
                    }
                };
                let status = answer.status().as_u16();
                answer.into_body().collect().await?;
                if status == 202 {
                    r.accepted += 1;
                } else {
                    r.other += 1;
                }
                if now >= measure_from {
                    r.latencies
                        .push(now.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }
            Ok::<_, anyhow::Error>(r)
        });
    }
    let mut all = LoadResult::default();
    while let Some(r) = tasks.join_next().await {
        let r = r??;
        all.accepted += r.accepted;
        all.other += r.other;
        all.errors += r.errors;
        all.latencies.extend(r.latencies);
    }
    all.measured = Instant::now()
        .min(end)
        .saturating_duration_since(measure_from);
    if total.is_some() {
        all.measured = start.elapsed();
    }
    all.latencies.sort_unstable();
    Ok(all)
}

// ---------------------------------------------------------------- receiver

/// Counts callbacks, and the ones announcing a final status.
#[derive(Clone, Default)]
struct Receiver {
    callbacks: Arc<AtomicU64>,
    finals: Arc<AtomicU64>,
}

impl Receiver {
    async fn start(&self) -> anyhow::Result<SocketAddr> {
        let me = self.clone();
        let app = axum::Router::new().route(
            "/callback",
            axum::routing::post(move |body: Bytes| {
                let me = me.clone();
                async move {
                    me.callbacks.fetch_add(1, Ordering::Relaxed);
                    if contains(&body, b"\"status\":\"delivered\"") {
                        me.finals.fetch_add(1, Ordering::Relaxed);
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(addr)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------- scenarios

/// RSS of an idle gateway: the real binary, then the benchmark's child.
async fn idle(args: &Args) -> anyhow::Result<()> {
    for (label, exe) in [
        (
            "idle (bcci-gateway serve)",
            Some(env!("CARGO_BIN_EXE_bcci-gateway")),
        ),
        ("idle (bench child)", None),
    ] {
        let store = StoreUnderTest::new(args).await?;
        let ports = Ports {
            intake: free_port(),
            admin: free_port(),
        };
        let toml = config(
            &store.url,
            &ports,
            "http://127.0.0.1:9",
            "http://127.0.0.1:9/callback",
        );
        let gw = Gateway::start(exe, store.dir.path(), &toml, &ports, true).await?;
        let before = cpu_sample(Some(gw.pid()));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cpu = Cpu::between(before, cpu_sample(Some(gw.pid())));
        let (now, peak) = rss(gw.pid());
        row(
            args,
            label,
            "5 s after ready",
            "",
            &format!("{now:.1} MiB (peak {peak:.1})"),
            &cpu,
        );
        gw.stop().await?;
        store.drop_database().await?;
    }
    Ok(())
}

/// Accepted handoffs per second at 64 connections, workers stopped, so the
/// figure is intake's own; first the same load on a bare axum JSON POST
/// handler ([`bare_child`]), whose rate the intake figure is divided by.
async fn intake(args: &Args) -> anyhow::Result<()> {
    let warmup = Duration::from_secs(3);
    let measure = Duration::from_secs(args.seconds);
    let bare = {
        let port = free_port();
        let gw = Gateway::start_bare(port).await?;
        let before = cpu_sample(Some(gw.pid()));
        let r = load(gw.intake, &Bodies::new(), warmup, measure, None).await?;
        let cpu = Cpu::between(before, cpu_sample(Some(gw.pid())));
        load_row(
            args,
            &format!("baseline: bare axum JSON POST, {CONNECTIONS} connections"),
            &format!("**{:.0} answered/s**", r.rate()),
            ("answered 202", "the handler's process"),
            (&r, warmup, &cpu, gw.pid()),
        );
        gw.stop().await?;
        r.rate()
    };
    let store = StoreUnderTest::new(args).await?;
    let ports = Ports {
        intake: free_port(),
        admin: free_port(),
    };
    let toml = config(
        &store.url,
        &ports,
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/callback",
    );
    let gw = Gateway::start(None, store.dir.path(), &toml, &ports, false).await?;
    let bodies = Bodies::new();
    let before = cpu_sample_with(Some(gw.pid()), &store.server_pids().await);
    let r = load(gw.intake, &bodies, warmup, measure, None).await?;
    let cpu = Cpu::between(
        before,
        cpu_sample_with(Some(gw.pid()), &store.server_pids().await),
    );
    load_row(
        args,
        &format!("intake, {CONNECTIONS} connections, workers stopped"),
        &format!(
            "**{:.0} accepted/s**, **{:.3} of the baseline**",
            r.rate(),
            r.rate() / bare
        ),
        ("accepted", "the gateway"),
        (&r, warmup, &cpu, gw.pid()),
    );
    gw.stop().await?;
    if let Some((db, wal)) = store.sqlite_sizes() {
        println!(
            "<!-- intake: database {} MiB, WAL {} MiB after the run -->",
            db >> 20,
            wal >> 20
        );
    }
    store.drop_database().await?;
    Ok(())
}

/// The row of a load run: `headline`, then the counts (`counted`: what a
/// 202 is called) and the CPU per request, of which `whose` (the server's
/// process, `pid`) took the second figure.
fn load_row(
    args: &Args,
    scenario: &str,
    headline: &str,
    (counted, whose): (&str, &str),
    (r, warmup, cpu, pid): (&LoadResult, Duration, &Cpu, u32),
) {
    let (now, peak) = rss(pid);
    let (ours, server) = cpu.seconds_per(r.accepted + r.other);
    row(
        args,
        scenario,
        &format!(
            "{headline} ({} {counted}, {} other, {} errors in {:.0} s + {:.0} s warm-up; CPU per request: {:.0} µs, of which {whose} {:.0} µs)",
            r.accepted,
            r.other,
            r.errors,
            r.measured.as_secs_f64(),
            warmup.as_secs_f64(),
            ours * 1e6,
            server * 1e6,
        ),
        &format!("{:.1} / {:.1} ms", r.percentile(0.5), r.percentile(0.99)),
        &format!("{now:.1} MiB (peak {peak:.1})"),
        cpu,
    );
}

/// Handoffs per second from intake to the final callback, through the
/// `delivered` walk (8 Vietnam Post statuses, 7 callbacks).
async fn end_to_end(args: &Args) -> anyhow::Result<()> {
    let store = StoreUnderTest::new(args).await?;
    let ports = Ports {
        intake: free_port(),
        admin: free_port(),
    };
    let receiver = Receiver::default();
    let callback = receiver.start().await?;
    let sim = Simulator::start(SimConfig {
        webhook_url: Some(format!(
            "http://127.0.0.1:{}/v1/postal/vnpost/events/{KEY}",
            ports.intake
        )),
        step_interval: Duration::from_millis(200),
        webhook_retry_initial: Duration::from_millis(50),
        webhook_retry_max: Duration::from_millis(500),
        sequence_weights: vec![("delivered".into(), 1)],
        faults: Faults {
            batch_size: 100,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await?;
    let toml = config(
        &store.url,
        &ports,
        &sim.base_url(),
        &format!("http://{callback}/callback"),
    );
    let gw = Gateway::start(None, store.dir.path(), &toml, &ports, true).await?;
    let n = args.handoffs as u64;
    let bodies = Bodies::new();
    let before = cpu_sample(Some(gw.pid()));
    let started = Instant::now();
    let submitted = load(
        gw.intake,
        &bodies,
        Duration::ZERO,
        Duration::from_secs(3600),
        Some(n),
    )
    .await?;
    let submit_time = started.elapsed();
    let deadline = started + Duration::from_secs(600);
    let mut peak = 0.0f64;
    while receiver.finals.load(Ordering::Relaxed) < submitted.accepted && Instant::now() < deadline
    {
        peak = peak.max(rss(gw.pid()).0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    let cpu = Cpu::between(before, cpu_sample(Some(gw.pid())));
    let finals = receiver.finals.load(Ordering::Relaxed);
    let (_, hwm) = rss(gw.pid());
    let writes = store_writes(ports.admin, finals, "per handoff, intake included").await;
    row(
        args,
        "end to end (intake → order → 8 statuses → final callback)",
        &format!(
            "**{:.0} handoffs/s** ({finals} of {} final callbacks in {:.1} s; intake done in {:.1} s; {} callbacks, {} webhook posts; CPU per handoff: {:.0} µs, of which the gateway {:.0} µs{writes})",
            finals as f64 / elapsed.as_secs_f64(),
            submitted.accepted,
            elapsed.as_secs_f64(),
            submit_time.as_secs_f64(),
            receiver.callbacks.load(Ordering::Relaxed),
            sim.stats().webhook_posts,
            cpu.seconds_per(finals).0 * 1e6,
            cpu.seconds_per(finals).1 * 1e6,
        ),
        "",
        &format!("peak {hwm:.1} MiB (sampled {peak:.1})"),
        &cpu,
    );
    gw.stop().await?;
    sim.shutdown().await;
    store.drop_database().await?;
    Ok(())
}

/// What the store wrote per handoff, from the gateway's `bcci_store_*`
/// counters (exported every 5 s, so read after one more export): "" where
/// the store does not count them (PostgreSQL).
async fn store_writes(admin: u16, items: u64, per_what: &str) -> String {
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let url = format!("http://127.0.0.1:{admin}/metrics");
    let Ok(text) = async { reqwest::get(&url).await?.text().await }.await else {
        return String::new();
    };
    let total = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let commits = total("bcci_store_commits_total");
    if commits == 0.0 || items == 0 {
        return String::new();
    }
    let per = |v: f64| v / items as f64;
    format!(
        "; {per_what}: {:.1} statements, {:.2} commits, {:.1} KiB of WAL",
        per(total("bcci_store_statements_total")),
        per(commits),
        per(total("bcci_store_wal_bytes_total")) / 1024.0,
    )
}

/// `n` handoffs accepted while Vietnam Post is unreachable (gateway without
/// workers, simulator not started), then the gateway restarted with its
/// workers and the simulator up: orders created per second, peak RSS.
async fn backlog(args: &Args, n: usize) -> anyhow::Result<()> {
    let store = StoreUnderTest::new(args).await?;
    let ports = Ports {
        intake: free_port(),
        admin: free_port(),
    };
    let receiver = Receiver::default();
    let callback = receiver.start().await?;
    let sim_port = free_port();
    let sim_url = format!("http://127.0.0.1:{sim_port}");
    let toml = config(
        &store.url,
        &ports,
        &sim_url,
        &format!("http://{callback}/callback"),
    );
    let gw = Gateway::start(None, store.dir.path(), &toml, &ports, false).await?;
    let bodies = Bodies::new();
    let filled = load(
        gw.intake,
        &bodies,
        Duration::ZERO,
        Duration::from_secs(3600),
        Some(n as u64),
    )
    .await?;
    gw.stop().await?;
    let sim = Simulator::start(SimConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], sim_port)),
        // No status walk while draining: the orders are what is measured.
        step_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .await?;
    let started = Instant::now();
    let gw = Gateway::start(None, store.dir.path(), &toml, &ports, true).await?;
    let before = cpu_sample(Some(gw.pid()));
    let deadline = started + Duration::from_secs(900);
    let mut first: Option<Instant> = None;
    loop {
        let created = sim.stats().orders_created;
        if first.is_none() && created > 0 {
            first = Some(Instant::now());
        }
        if created >= filled.accepted || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let done = Instant::now();
    let cpu = Cpu::between(before, cpu_sample(Some(gw.pid())));
    let (now, peak) = rss(gw.pid());
    let created = sim.stats().orders_created;
    let from = first.unwrap_or(started);
    let writes = store_writes(ports.admin, created, "per order, the drain alone").await;
    row(
        args,
        &format!("backlog of {n}: drain after restart"),
        &format!(
            "**{:.0} orders/s** ({created} of {} orders in {:.1} s; accepted at {:.0}/s while Vietnam Post was down; {} callbacks delivered meanwhile; CPU per order: {:.0} µs, of which the gateway {:.0} µs{writes})",
            created as f64 / done.duration_since(from).as_secs_f64(),
            filled.accepted,
            done.duration_since(from).as_secs_f64(),
            filled.accepted as f64 / filled.measured.as_secs_f64(),
            receiver.callbacks.load(Ordering::Relaxed),
            cpu.seconds_per(created).0 * 1e6,
            cpu.seconds_per(created).1 * 1e6,
        ),
        "",
        &format!("{now:.1} MiB, peak {peak:.1} MiB"),
        &cpu,
    );
    gw.stop().await?;
    sim.shutdown().await;
    store.drop_database().await?;
    Ok(())
}
