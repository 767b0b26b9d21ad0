//! Soak (issue 4): the real binary against a faulty simulator, SIGKILLed three
//! times while it works. Exactly one postal order per handoff, every handoff
//! with its tracking number, nothing left unprocessed; bounded for CI.
//!
//! `SOAK_SEED=<n>` replays another kill schedule (and simulator seed).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::procs::{
    Gateway, KEY, PostalSim, Progress, Submitted, free_port, read_handoffs, submit,
};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const HANDOFFS: usize = 300;
const CONCURRENCY: usize = 16;
const KILLS: usize = 3;
const DEFAULT_SEED: u64 = 4;
/// Everything up to the final SIGTERM happens within this much of the start,
/// which keeps the test (with at most 15 s of drain) under three minutes.
const BUDGET: Duration = Duration::from_secs(150);

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
    let store_url = format!("sqlite://{}", dir.path().join("bcci.db").display());
    let mut gateway = Gateway::new(
        dir.path(),
        "gateway",
        &store_url,
        &sim.base_url,
        port,
        callback,
    );
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
        let read = read_handoffs(&http, &base, pending, CONCURRENCY).await;
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
