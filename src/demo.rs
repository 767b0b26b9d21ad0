//! `bcci-gateway demo`: the gateway, a simulated Vietnam Post and a simulated
//! intake system in one process, walking the sample dossiers of `fixtures/`
//! through their whole lifecycle.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::app::Application;
use crate::config::Settings;
use crate::domain::HandoffId;
use crate::http::auth::token_sha256_hex;
use crate::relay::signature::{SigningKey, sign};
use crate::sim::{Faults, SimConfig, SimStats, Simulator, expected_final_status};

const INTAKE_TOKEN: &str = "demo-intake-token";
const ADMIN_TOKEN: &str = "demo-admin-token";
/// The console's demo accounts: a clerk who reads, an operator who acts.
const CLERK_TOKEN: &str = "demo-clerk-token";
const OPERATOR_TOKEN: &str = "demo-operator-token";
const CALLBACK_SECRET: &str = "whsec_ZGVtby1jYWxsYmFjay1zZWNyZXQtMDEyMzQ1";
const WEBHOOK_KEY: &str = "demo-webhook-key-0123456789";

/// The sample dossiers, built into the binary so the demo runs from anywhere.
const SAMPLES: &[(&str, &str)] = &[
    (
        "return-cod",
        include_str!("../fixtures/requests/valid/return-cod.json"),
    ),
    (
        "pickup",
        include_str!("../fixtures/requests/valid/pickup.json"),
    ),
    (
        "minimal",
        include_str!("../fixtures/requests/valid/minimal.json"),
    ),
    (
        "nfd-name",
        include_str!("../fixtures/requests/valid/nfd-name.json"),
    ),
    (
        "express-slip",
        include_str!("../fixtures/requests/valid/express-slip.json"),
    ),
    (
        "phone-punctuated",
        include_str!("../fixtures/requests/valid/phone-punctuated.json"),
    ),
    (
        "shuffled",
        include_str!("../fixtures/requests/valid/shuffled.json"),
    ),
    (
        "optional-null",
        include_str!("../fixtures/requests/valid/optional-null.json"),
    ),
];

/// Which status walk each sample takes, in turn.
const WALKS: &[&str] = &[
    "cod",
    "delivered",
    "pickup_retry",
    "pickup_failed",
    "return_to_sender",
    "partial",
    "cancelled_by_carrier",
    "delivered",
];

/// What the simulated intake system saw.
#[derive(Default)]
struct IntakeSide {
    /// Accepted callbacks per handoff: (sequence, type, status).
    callbacks: HashMap<String, Vec<(u64, String, String)>>,
    bad_signatures: u64,
}

#[derive(Clone)]
struct DeskSystem {
    seen: Arc<Mutex<IntakeSide>>,
    key: SigningKey,
}

/// Verifies each callback's signature the way an integrator would.
async fn callback(State(s): State<DeskSystem>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let get = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let (id, ts) = (
        get("webhook-id"),
        get("webhook-timestamp").parse::<i64>().unwrap_or(0),
    );
    let expected = sign(std::slice::from_ref(&s.key), id, ts, &body);
    let mut seen = s.seen.lock().expect("demo lock");
    if !get("webhook-signature")
        .split(' ')
        .any(|sig| sig == expected)
    {
        seen.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let handoff = doc["handoff_id"].as_str().unwrap_or("").to_owned();
    seen.callbacks.entry(handoff).or_default().push((
        doc["sequence"].as_u64().unwrap_or(0),
        doc["type"].as_str().unwrap_or("").to_owned(),
        doc["status"].as_str().unwrap_or("").to_owned(),
    ));
    StatusCode::NO_CONTENT
}

/// Binds `preferred` when free, else any port on loopback.
async fn listener(preferred: &str) -> anyhow::Result<SocketAddr> {
    let l = match std::net::TcpListener::bind(preferred) {
        Ok(l) => l,
        Err(_) => std::net::TcpListener::bind("127.0.0.1:0")?,
    };
    Ok(l.local_addr()?)
}

struct Sample {
    name: &'static str,
    walk: &'static str,
    id: HandoffId,
}

type FaultStep = (&'static str, fn(Faults) -> Faults, fn(&SimStats) -> u64);

/// The network faults each sample after the first gets once for sure.
const FAULT_TOUR: [FaultStep; 5] = [
    (
        "a connection reset",
        |f| Faults {
            reset_rate: 1.0,
            ..f
        },
        |s| s.resets_injected,
    ),
    (
        "a half-written answer",
        |f| Faults {
            half_answer_rate: 1.0,
            ..f
        },
        |s| s.half_answers_injected,
    ),
    (
        "an HTML page for an answer",
        |f| Faults {
            garbage_answer_rate: 1.0,
            ..f
        },
        |s| s.garbage_answers_injected,
    ),
    (
        "an answer after the gateway's timeout",
        |f| Faults {
            slow_answer_rate: 1.0,
            ..f
        },
        |s| s.slow_answers_injected,
    ),
    (
        // The order is made; GetListOrder shows it only after the standing
        // random listing delay (`listing_delay_ms`), which the lookup after
        // the lost answer must wait out.
        "a lost answer, its order listed late",
        |f| Faults {
            lost_answer_rate: 1.0,
            ..f
        },
        |s| s.lost_answers_injected,
    ),
];

/// Sends sample `i` to the gateway's intake API.
async fn submit(http: &reqwest::Client, api: SocketAddr, i: usize) -> anyhow::Result<Sample> {
    let (name, text) = SAMPLES[i];
    let walk = WALKS[i % WALKS.len()];
    let mut body: Value = serde_json::from_str(text)?;
    body["request_id"] = json!(format!("DEMO-{i}-{name}"));
    let proc_name = body["procedure"]["name"].as_str().unwrap_or("").to_owned();
    body["procedure"]["name"] = json!(format!("[sim:{walk}] {proc_name}"));
    let r = http
        .post(format!("http://{api}/v1/handoffs"))
        .bearer_auth(INTAKE_TOKEN)
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "sample {name} refused: {}",
        r.status()
    );
    let doc: Value = r.json().await?;
    let id = HandoffId::parse(doc["id"].as_str().unwrap_or("")).context("handoff id")?;
    Ok(Sample { name, walk, id })
}

/// Polls `done` for up to 10 s; the demo goes on either way.
async fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The arguments of `demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Exit after this long (e.g. `90s`, `5m`): 0 if every sample ended as expected.
    #[arg(long = "for", value_name = "DURATION")]
    pub run_for: Option<jiff::SignedDuration>,
}

/// Runs the demo; with `--for`, exits after it, 0 if every sample ended as
/// expected.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let run_for = args
        .run_for
        .map(|d| Duration::try_from(d).context("--for must be positive"))
        .transpose()?;
    Ok(if run_samples(run_for).await? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs the demo; with `run_for`, exits after it with whether every sample
/// ended as expected.
async fn run_samples(run_for: Option<Duration>) -> anyhow::Result<bool> {
    let data = Path::new("data");
    std::fs::create_dir_all(data)?;
    for f in ["demo.db", "demo.db-wal", "demo.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let seen = Arc::new(Mutex::new(IntakeSide::default()));
    let intake_app = axum::Router::new()
        .route("/callback", axum::routing::post(callback))
        .with_state(DeskSystem {
            seen: seen.clone(),
            key: SigningKey::parse(CALLBACK_SECRET).expect("demo secret"),
        });
    let intake_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let callback_addr = intake_listener.local_addr()?;
    tokio::spawn(async move { axum::serve(intake_listener, intake_app).await });

    let api = listener("127.0.0.1:8080").await?;
    let admin = listener("127.0.0.1:9090").await?;
    let sim = Simulator::start(SimConfig {
        webhook_url: Some(format!(
            "http://{api}/v1/postal/vnpost/events/{WEBHOOK_KEY}"
        )),
        step_interval: Duration::from_millis(400),
        webhook_retry_initial: Duration::from_millis(200),
        webhook_retry_max: Duration::from_secs(2),
        faults: Faults {
            error_rate: 0.05,
            lost_answer_rate: 0.1,
            reset_rate: 0.05,
            half_answer_rate: 0.05,
            slow_answer_rate: 0.05,
            // Past the gateway's `postal.timeout_ms` below: it has given up.
            slow_answer_ms: 2500,
            garbage_answer_rate: 0.05,
            // Within `postal.lookup_delay_s` below, so the lookup after an
            // ambiguous create finds the order.
            listing_delay_ms: 1500,
            duplicate_webhook_rate: 0.1,
            reorder_webhook_rate: 0.1,
            batch_size: 3,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await?;
    let settings = Settings::from_toml(&format!(
        r#"
[server]
listen = "{api}"
admin_listen = "{admin}"
[log]
level = "error"
[store]
url = "sqlite://data/demo.db"
[postal]
base_url = "{base}"
username = "demo"
password = "demo"
customer_code = "DEMO"
webhook_keys = ["{WEBHOOK_KEY}"]
timeout_ms = 2000
lookup_delay_s = 2
reconcile_after_s = 10
[intake]
timeout_ms = 2000
[[intake.clients]]
name = "demo-motcua"
token_sha256s = ["{intake}"]
callback_url = "http://{callback_addr}/callback"
callback_secrets = ["{CALLBACK_SECRET}"]
[admin]
token_sha256s = ["{admin_hash}"]
[[admin.accounts]]
name = "Cán bộ một cửa (demo)"
role = "viewer"
token_sha256s = ["{clerk_hash}"]
[[admin.accounts]]
name = "Quản trị viên (demo)"
role = "operator"
token_sha256s = ["{operator_hash}"]
[retry]
initial_ms = 200
max_ms = 2000
"#,
        base = sim.base_url(),
        intake = token_sha256_hex(INTAKE_TOKEN),
        admin_hash = token_sha256_hex(ADMIN_TOKEN),
        clerk_hash = token_sha256_hex(CLERK_TOKEN),
        operator_hash = token_sha256_hex(OPERATOR_TOKEN),
    ))?;
    let app = Application::build(settings)
        .await
        .context("starting the gateway")?;
    let (store, lifecycle) = (app.store(), app.lifecycle());
    let server = tokio::spawn(app.run_until_stopped());

    println!("bcci-gateway demo");
    println!("  intake API   http://{api}/v1/handoffs   (Authorization: Bearer {INTAKE_TOKEN})");
    println!("  admin API    http://{admin}/v1/admin    (Authorization: Bearer {ADMIN_TOKEN})");
    println!("  metrics      http://{admin}/metrics");
    println!(
        "  console      http://{admin}/console   (sign in with {OPERATOR_TOKEN}, or {CLERK_TOKEN} to read only)"
    );
    println!("  public board http://{api}/board   (kiosk: http://{api}/board?kiosk=1)");
    println!("  Vietnam Post (simulated) {}", sim.base_url());
    println!();

    let http = reqwest::Client::new();
    let base_faults = sim.faults();
    let mut samples = Vec::new();
    // The first sample logs the gateway in, so the faults that follow spoil
    // CreateOrder answers rather than the login.
    samples.push(submit(&http, api, 0).await?);
    wait_for(|| sim.stats().orders_created > 0).await;
    // Each network fault once for sure, on the next sample's CreateOrder: the
    // gateway takes each as ambiguous, and adopts the order from its first
    // webhook or a lookup.
    for (i, (what, fault, injected)) in FAULT_TOUR.iter().enumerate() {
        println!("  {} gets {what}", SAMPLES[i + 1].0);
        let before = injected(&sim.stats());
        sim.set_faults(fault(base_faults.clone()));
        samples.push(submit(&http, api, i + 1).await?);
        wait_for(|| injected(&sim.stats()) > before).await;
        sim.set_faults(base_faults.clone());
    }
    for i in samples.len()..SAMPLES.len() {
        samples.push(submit(&http, api, i).await?);
    }
    println!();

    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last_lines: Vec<String> = Vec::new();
    let mut finished_at = None;
    let mut all_ok = false;
    loop {
        let mut lines = Vec::new();
        let mut ok = 0;
        for s in &samples {
            let h = store
                .handoff(None, &s.id)
                .await?
                .context("sample vanished")?;
            let want = expected_final_status(s.walk);
            let got = seen
                .lock()
                .expect("demo lock")
                .callbacks
                .get(s.id.as_str())
                .map_or(0, Vec::len);
            let queued = store.callbacks_of(&s.id).await?.len();
            let done = h.status.as_str() == want && got == queued && queued > 0;
            ok += usize::from(done);
            lines.push(format!(
                "  {:<17} {:<21} {:<24} {:<15} callbacks {got}/{queued} {}",
                s.name,
                s.walk,
                h.status.as_str(),
                h.tracking_number.as_deref().unwrap_or("-"),
                if done { "✓" } else { " " }
            ));
        }
        let bar_len = 30 * ok / samples.len();
        let header = format!(
            "  [{}{}] {ok}/{} samples ended as expected, {:.0} s",
            "#".repeat(bar_len),
            ".".repeat(30 - bar_len),
            samples.len(),
            started.elapsed().as_secs_f64()
        );
        if tty {
            // Redraw the table in place.
            print!(
                "\x1b[{}A\x1b[J",
                if last_lines.is_empty() {
                    0
                } else {
                    last_lines.len() + 1
                }
            );
            println!("{header}");
            for l in &lines {
                println!("{l}");
            }
        } else if lines != last_lines {
            println!("{header}");
            for (new, old) in lines
                .iter()
                .zip(last_lines.iter().chain(std::iter::repeat(&String::new())))
            {
                if new != old {
                    println!("{new}");
                }
            }
        }
        std::io::stdout().flush()?;
        last_lines = lines;
        if ok == samples.len() && finished_at.is_none() {
            finished_at = Some(Instant::now());
            all_ok = true;
            let bad = seen.lock().expect("demo lock").bad_signatures;
            println!("\nevery sample ended as expected; {bad} callbacks had a bad signature");
            all_ok &= bad == 0;
            if run_for.is_none() {
                println!("still serving; Ctrl-C to stop");
            }
        }
        if let Some(limit) = run_for
            && started.elapsed() >= limit
        {
            break;
        }
        if run_for.is_none() && finished_at.is_some() {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    print_faults(&sim.stats());
    lifecycle.drain();
    server.await??;
    if !all_ok {
        println!("some samples did not end as expected");
    }
    Ok(all_ok)
}

/// What the simulated Vietnam Post injected, for the closing summary.
fn print_faults(stats: &SimStats) {
    let calls: u64 = stats.calls.values().sum();
    println!(
        "\nsimulated Vietnam Post: {calls} calls, {} orders created; injected:",
        stats.orders_created
    );
    println!(
        "  {} errors (500), {} rate limits (429), {} lost answers",
        stats.errors_injected, stats.rate_limits_injected, stats.lost_answers_injected
    );
    println!(
        "  {} connection resets, {} half answers, {} slow answers, {} HTML answers",
        stats.resets_injected,
        stats.half_answers_injected,
        stats.slow_answers_injected,
        stats.garbage_answers_injected
    );
    println!(
        "  {} orders listed late, {} listings that left one out",
        stats.listing_delays_injected, stats.listings_missing_orders
    );
    println!(
        "  {} duplicate and {} reordered webhook records",
        stats.duplicates_injected, stats.reorders_injected
    );
}
