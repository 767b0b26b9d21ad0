//! Soak (issues 4 and 16): the real binary against a simulator that fails like
//! a network, SIGKILLed three times while it works, with a share of handoffs
//! cancelled right after their creates. Exactly one postal order per handoff
//! (none live for a cancelled one), every other handoff with its tracking
//! number, nothing left unprocessed; bounded for CI.
//!
//! Run it against the binary users run (`.ci/run` does):
//! `cargo build --release && BCCI_TEST_BIN=target/release/bcci-gateway cargo test --test soak`.
//! `SOAK_SEED=<n>` replays another kill schedule (and simulator seed).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::free_port;
use common::procs::{Gateway, KEY, PostalSim, Progress, Submitted, read_handoffs, submit};
use common::receiver::{ReceiverOptions, TestReceiver};
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const HANDOFFS: usize = 600;
const CONCURRENCY: usize = 16;
const KILLS: usize = 3;
const DEFAULT_SEED: u64 = 4;
/// One handoff in this many is cancelled as soon as it is accepted.
const CANCEL_EVERY: usize = 8;
/// Everything up to the final SIGTERM happens within this much of the start,
/// which keeps the test (with at most 15 s of drain) under five minutes.
const BUDGET: Duration = Duration::from_secs(270);

/// The network faults on top of issue 4's (see `PostalSim::start`): answers
/// slower than the gateway's 1 s call timeout, resets before any byte of the
/// answer, half-written answers, 200s that are not JSON, orders listed only
/// after a delay shorter than `lookup_delay_s`, duplicated and reordered
/// webhooks. The slow answers are drawn last, after 5xx, 429 and the other
/// answer faults: 0.145 of what is left is 10 % of all calls.
const NETWORK_FAULTS: &[&str] = &[
    "--slow-answer-rate",
    "0.145",
    "--slow-answer-ms",
    "1500",
    "--reset-rate",
    "0.03",
    "--half-answer-rate",
    "0.03",
    "--garbage-answer-rate",
    "0.02",
    "--listing-delay-ms",
    "800",
    "--duplicate-webhook-rate",
    "0.3",
    "--reorder-webhook-rate",
    "0.3",
];

/// The intake system's callback endpoint: fails one delivery in four (500),
/// accepts the others; counts both.
async fn start_receiver() -> TestReceiver {
    TestReceiver::start_with(ReceiverOptions {
        fail_every: Some((4, StatusCode::INTERNAL_SERVER_ERROR)),
        ..ReceiverOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_hundred_handoffs_through_network_faults_cancels_and_three_sigkills_make_exactly_one_order_each()
 {
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

    let callbacks = start_receiver().await;
    let callback = callbacks.addr;
    let port = free_port();
    let sim = PostalSim::start_with(
        &format!("http://127.0.0.1:{port}/v1/postal/vnpost/events/{KEY}"),
        seed,
        NETWORK_FAULTS,
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
    let template: Value = common::fixture_json("valid/return-cod.json");
    let counts = Arc::new(Submitted::default());
    let submitter = {
        let (http, url, counts) = (http.clone(), format!("{base}/v1/handoffs"), counts.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(0..HANDOFFS)
                .map(|i| {
                    let mut body = template.clone();
                    body["request_id"] = json!(format!("SOAK-{seed}-{i:03}"));
                    let (http, url, counts) = (http.clone(), url.clone(), counts.clone());
                    async move {
                        let id = submit(&http, &url, &body, &counts, deadline).await;
                        // Right after its create: the create may be in
                        // flight, its answer lost, its order not yet listed.
                        let cancelled = i % CANCEL_EVERY == 3
                            && request_cancel(&http, &format!("{url}/{id}/cancel"), deadline).await;
                        (id, cancelled)
                    }
                })
                .buffered(CONCURRENCY)
                .collect::<Vec<(String, bool)>>()
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
    let cancel_asked: HashSet<String> = ids
        .iter()
        .filter(|(_, c)| *c)
        .map(|(id, _)| id.clone())
        .collect();
    let ids: Vec<String> = ids.into_iter().map(|(id, _)| id).collect();
    assert!(
        cancel_asked.len() >= HANDOFFS / CANCEL_EVERY / 2,
        "only {} cancels accepted",
        cancel_asked.len()
    );

    // Every handoff gets its order and tracking number, or is cancelled.
    let mut seen: HashMap<String, Progress> = HashMap::new();
    loop {
        gateway.assert_alive();
        let pending: Vec<String> = ids
            .iter()
            .filter(|id| seen.get(*id).is_none_or(|p| !settled(p)))
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
                "not every handoff has an order or is cancelled after {:.0?}: statuses {by_status:?}, \
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

    // Vietnam Post's order book: no handoff ever got a second order; a
    // cancelled handoff leaves no live order; every other one has exactly one
    // live order, the one whose item code it relays.
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
    let mut cancelled = 0;
    for id in &ids {
        let (status, tracking) = &seen[id];
        let found = by_code
            .get(id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        let describe = || {
            found
                .iter()
                .map(|o| {
                    format!(
                        "{} (created {}, status {}, cancelled {})",
                        o["item_code"], o["created_at"], o["status"], o["cancelled"]
                    )
                })
                .collect::<Vec<_>>()
        };
        if found.len() > 1 {
            problems.push(format!("{id}: {} orders: {:?}", found.len(), describe()));
        }
        // Cancelled by the gateway, or by Vietnam Post itself (codes 9 and
        // 22, which some status walks end with).
        let live: Vec<&&Value> = found
            .iter()
            .filter(|o| o["cancelled"] != true && o["status"] != 9 && o["status"] != 22)
            .collect();
        if status == "cancelled" {
            cancelled += 1;
            if !live.is_empty() {
                problems.push(format!(
                    "{id}: relayed cancelled, yet a live order: {:?}",
                    describe()
                ));
            }
        } else {
            // Its one order, which the gateway never cancelled (Vietnam Post's
            // walk may have moved on since the handoff was read).
            match found {
                [order]
                    if order["item_code"] == tracking.as_deref().unwrap()
                        && order["cancelled"] != true => {}
                _ => problems.push(format!(
                    "{id} ({status}, tracking {tracking:?}): not one uncancelled order with its tracking number: {:?}",
                    describe()
                )),
            }
            if cancel_asked.contains(id) && status != "cancelled" {
                // Allowed only when Vietnam Post refused the cancel (picked up).
                assert!(
                    !matches!(status.as_str(), "received" | "order_created"),
                    "{id}: cancel accepted but the handoff stays {status}"
                );
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} handoffs break exactly-one-order:\n{}\n{}\ngateway log tail:\n{}",
        problems.len(),
        problems.join("\n"),
        kill_log.join("\n"),
        gateway.log_tail()
    );
    assert!(cancelled > 0, "no handoff ended cancelled");

    // The last process found no duplicate to cancel.
    let metrics = http
        .get(format!("http://127.0.0.1:{}/metrics", gateway.admin_port))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let duplicates = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bcci_duplicate_orders_total "))
        .expect("bcci_duplicate_orders_total is exported");
    assert_eq!(duplicates, "0", "duplicate orders counted");

    // The faults were really injected, and the kills really happened.
    let stats = sim.stats(&http).await;
    for counter in [
        "errors_injected",
        "rate_limits_injected",
        "lost_answers_injected",
        "unauthorized",
        "slow_answers_injected",
        "resets_injected",
        "half_answers_injected",
        "garbage_answers_injected",
        "listing_delays_injected",
        "duplicates_injected",
        "reorders_injected",
    ] {
        assert!(
            stats[counter].as_u64().unwrap() > 0,
            "{counter} is 0: {stats}"
        );
    }
    // The shares issue 16 asks for, of all calls (of creates for lost
    // answers): the simulator's rates aim at them, and the share seen may
    // fall short by three standard deviations of its sampling noise.
    let count = |k: &str| stats[k].as_u64().unwrap() as f64;
    let calls: f64 = stats["calls"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap() as f64)
        .sum();
    let creates = stats["calls"]["CreateOrder"].as_u64().unwrap() as f64;
    for (what, injected, of, at_least) in [
        ("5xx", count("errors_injected"), calls, 0.20),
        ("429", count("rate_limits_injected"), calls, 0.05),
        (
            "slower than the call timeout",
            count("slow_answers_injected"),
            calls,
            0.10,
        ),
        (
            "lost create answers",
            count("lost_answers_injected"),
            creates,
            0.10,
        ),
    ] {
        let share = injected / of;
        let noise = 3.0 * (at_least * (1.0 - at_least) / of).sqrt();
        assert!(
            share >= at_least - noise,
            "{what}: {injected} of {of} calls ({:.1} %), the soak asks for {:.0} %: {stats}",
            share * 100.0,
            at_least * 100.0
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
        "soak (seed {seed}): {HANDOFFS} handoffs ({cancelled} cancelled) converged in {converged:.1?}, total {:.1?}\n{}\n\
         submissions: {} resent, {} answered 200 (stored before a kill)\n\
         callbacks received: {}, SIGTERM to exit: {drained:.1?}\nsimulator stats: {stats}",
        started.elapsed(),
        kill_log.join("\n"),
        counts.resends.load(Ordering::Relaxed),
        counts.duplicates.load(Ordering::Relaxed),
        callbacks.count(),
    );
}

/// Whether a handoff has reached where the soak waits for it: an order with
/// its tracking number, or cancelled.
fn settled((status, tracking): &Progress) -> bool {
    status == "cancelled" || (status != "received" && tracking.is_some())
}

/// Asks to cancel a handoff, resending through the kills. True when accepted
/// (202); false when its status no longer allows it (409).
async fn request_cancel(http: &reqwest::Client, url: &str, deadline: Instant) -> bool {
    loop {
        match http
            .post(url)
            .bearer_auth(common::procs::TOKEN)
            .send()
            .await
        {
            Ok(r) if r.status() == 202 => return true,
            Ok(r) if r.status() == 409 => return false,
            Ok(r) if r.status() == 503 || r.status() == 429 => {}
            Ok(r) => panic!("cancel {url}: unexpected {}", r.status()),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "cancel {url} not accepted by the deadline"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
