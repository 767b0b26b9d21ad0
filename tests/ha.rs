//! High availability (issue 9): three real gateway processes on one
//! PostgreSQL database, the simulator with faults, one process SIGKILLed
//! twice and restarted. Exactly one order per handoff, every handoff final,
//! every handoff's callbacks contiguous and in order.
//!
//! Runs on a fresh database of the PostgreSQL test server (see
//! `tests/common`); skips loudly when it is unreachable and not required.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::config::SECRET;
use common::procs::{Gateway, KEY, PostalSim, TOKEN, read_handoff, read_handoffs};
use common::receiver::{ReceiverOptions, TestReceiver};
use common::{TestDatabase, free_port};
use futures_util::StreamExt;
use serde_json::{Value, json};

const HANDOFFS: usize = 300;
const PROCESSES: usize = 3;
const CONCURRENCY: usize = 16;
const SEED: u64 = 9;
const BUDGET: Duration = Duration::from_secs(200);
const TERMINAL: &[&str] = &[
    "delivered",
    "returned",
    "partially_delivered",
    "pickup_failed",
    "cancelled",
    "rejected",
    "failed",
];

/// One callback as the intake system received it.
#[derive(Debug, Clone)]
struct Arrival {
    webhook_id: String,
    handoff_id: String,
    sequence: u64,
    status: String,
}

/// The intake system: verifies each signature with the reference Standard
/// Webhooks implementation, fails one request in ten.
async fn start_receiver() -> TestReceiver {
    TestReceiver::start_with(ReceiverOptions {
        secrets: vec![SECRET.to_owned()],
        reject_bad_signatures: true,
        fail_every: Some((10, StatusCode::SERVICE_UNAVAILABLE)),
    })
    .await
}

/// The accepted callbacks per handoff, in arrival order.
fn by_handoff(receiver: &TestReceiver) -> HashMap<String, Vec<Arrival>> {
    let mut by: HashMap<String, Vec<Arrival>> = HashMap::new();
    for r in receiver.accepted() {
        let a = Arrival {
            webhook_id: r.webhook_id,
            handoff_id: r.body["handoff_id"].as_str().unwrap().to_owned(),
            sequence: r.body["sequence"].as_u64().unwrap(),
            status: r.body["status"].as_str().unwrap().to_owned(),
        };
        by.entry(a.handoff_id.clone()).or_default().push(a);
    }
    by
}

/// Sends one handoff to the processes in turn until one stores it.
async fn submit_anywhere(
    http: &reqwest::Client,
    ports: &[u16],
    body: &Value,
    start: usize,
    deadline: Instant,
    resends: &AtomicUsize,
) -> String {
    let mut turn = start;
    loop {
        let port = ports[turn % ports.len()];
        let url = format!("http://127.0.0.1:{port}/v1/handoffs");
        match http.post(&url).bearer_auth(TOKEN).json(body).send().await {
            Ok(r) if r.status() == 202 || r.status() == 200 => {
                let doc: Value = r.json().await.unwrap();
                return doc["id"].as_str().unwrap().to_owned();
            }
            Ok(r) if r.status() == 503 || r.status() == 429 => {}
            Ok(r) => panic!("{}: unexpected {}", body["request_id"], r.status()),
            Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{} never accepted",
            body["request_id"]
        );
        resends.fetch_add(1, Ordering::Relaxed);
        turn += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_processes_on_one_postgres_survive_two_sigkills_with_one_order_each() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let started = Instant::now();
    let deadline = started + BUDGET;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let receiver = start_receiver().await;
    let callback = receiver.addr;
    let ports: Vec<u16> = (0..PROCESSES).map(|_| free_port()).collect();
    // Vietnam Post posts its webhooks to the first process.
    let sim = PostalSim::start(
        &format!(
            "http://127.0.0.1:{}/v1/postal/vnpost/events/{KEY}",
            ports[0]
        ),
        SEED,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut gateways: Vec<Gateway> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Gateway::new(
                dir.path(),
                &format!("gw{i}"),
                &db.url,
                &sim.base_url,
                *port,
                callback,
            )
        })
        .collect();
    // All three start at once on the empty database: the migrations race.
    for g in &mut gateways {
        g.spawn();
    }
    for g in &mut gateways {
        g.wait_ready().await;
    }

    let template: Value = common::fixture_json("valid/return-cod.json");
    let resends = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (http, ports, resends) = (http.clone(), ports.clone(), resends.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(0..HANDOFFS)
                .map(|i| {
                    let mut body = template.clone();
                    body["request_id"] = json!(format!("HA-{i:03}"));
                    let (http, ports, resends) = (http.clone(), ports.clone(), resends.clone());
                    async move {
                        submit_anywhere(&http, &ports, &body, i, deadline, &resends).await
                    }
                })
                .buffered(CONCURRENCY)
                .collect::<Vec<String>>()
                .await
        })
    };

    // The last process is killed twice while orders are being created.
    loop {
        let stats = sim.stats(&http).await;
        if stats["calls"]["CreateOrder"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            Instant::now() < started + Duration::from_secs(30),
            "no CreateOrder call in 30 s:\n{}",
            gateways[0].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut kill_log = Vec::new();
    for (k, wait_ms) in [150_u64, 2500].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        let victim = &mut gateways[PROCESSES - 1];
        victim.assert_alive();
        victim.sigkill();
        let stats = sim.stats(&http).await;
        kill_log.push(format!(
            "kill {} at {:.1?}: {} orders created so far",
            k + 1,
            started.elapsed(),
            stats["orders_created"]
        ));
        if k == 0 {
            assert!(
                (stats["orders_created"].as_u64().unwrap() as usize) < HANDOFFS,
                "the first kill came after every order was created"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        victim.spawn();
        victim.wait_ready().await;
    }
    let ids = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        submitter,
    )
    .await
    .expect("every handoff accepted by the deadline")
    .expect("the submitter panicked");
    assert_eq!(ids.len(), HANDOFFS);

    // Every handoff reaches a final status, and its last callback arrives.
    let base = format!("http://127.0.0.1:{}", ports[0]);
    let mut final_status: HashMap<String, String> = HashMap::new();
    loop {
        for g in &mut gateways {
            g.assert_alive();
        }
        let open: Vec<String> = ids
            .iter()
            .filter(|id| !final_status.contains_key(*id))
            .cloned()
            .collect();
        let read = read_handoffs(&http, &base, open, CONCURRENCY).await;
        for (id, h) in read {
            if let Some((status, _)) = h
                && TERMINAL.contains(&status.as_str())
            {
                final_status.insert(id, status);
            }
        }
        let arrivals = by_handoff(&receiver);
        let relayed = ids
            .iter()
            .filter(|id| {
                final_status.get(*id).is_some_and(|s| {
                    arrivals
                        .get(*id)
                        .is_some_and(|a| a.iter().any(|a| &a.status == s))
                })
            })
            .count();
        if relayed == HANDOFFS {
            break;
        }
        if Instant::now() >= deadline {
            let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
            for s in final_status.values() {
                *by_status.entry(s.clone()).or_default() += 1;
            }
            panic!(
                "after {:.0?}: {} final ({by_status:?}), {relayed} with their final callback\n{}\n\
                 simulator: {}\nlog of gw0:\n{}\nlog of gw2:\n{}",
                started.elapsed(),
                final_status.len(),
                kill_log.join("\n"),
                sim.stats(&http).await,
                gateways[0].log_tail(),
                gateways[PROCESSES - 1].log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Exactly one order per handoff at the simulator.
    let orders = sim.get(&http, "/_sim/orders").await;
    let mut per_handoff: HashMap<String, usize> = HashMap::new();
    for o in orders.as_array().expect("a list of orders") {
        *per_handoff
            .entry(o["sale_order_code"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    let wrong: Vec<_> = ids
        .iter()
        .filter(|id| per_handoff.get(*id) != Some(&1))
        .map(|id| (id.clone(), per_handoff.get(id).copied().unwrap_or(0)))
        .collect();
    assert!(
        wrong.is_empty(),
        "handoffs without exactly one order: {wrong:?}"
    );
    assert_eq!(per_handoff.len(), HANDOFFS);

    // Callbacks: each handoff's arrive in sequence, none missing. A callback
    // may arrive again (a process died after sending it, before recording
    // it), but never after a later one.
    assert_eq!(receiver.bad_signatures(), 0);
    let arrivals = by_handoff(&receiver);
    for id in &ids {
        let got = &arrivals[id];
        let mut expected = 1;
        let mut ids_by_sequence: HashMap<u64, &str> = HashMap::new();
        for a in got {
            let first = ids_by_sequence.entry(a.sequence).or_insert(&a.webhook_id);
            assert_eq!(*first, a.webhook_id, "{id}: one webhook-id per sequence");
            if a.sequence + 1 == expected {
                continue; // the previous one again
            }
            assert_eq!(
                a.sequence,
                expected,
                "{id}: callbacks out of order or missing: {:?}",
                got.iter().map(|a| a.sequence).collect::<Vec<_>>()
            );
            expected += 1;
        }
        assert_eq!(
            got.last().map(|a| a.status.as_str()),
            final_status.get(id).map(String::as_str),
            "{id}: the last callback carries the final status"
        );
    }

    let stats = sim.stats(&http).await;
    for counter in ["errors_injected", "lost_answers_injected"] {
        assert!(
            stats[counter].as_u64().unwrap() > 0,
            "{counter} is 0: {stats}"
        );
    }
    assert_eq!(gateways[PROCESSES - 1].kills, 2);
    for g in &mut gateways {
        let status = g.sigterm();
        assert!(
            status.success(),
            "SIGTERM exit status {status}:\n{}",
            g.log_tail()
        );
    }
    eprintln!(
        "ha: {HANDOFFS} handoffs on {PROCESSES} processes final and relayed in {:.1?}\n{}\n\
         resends: {}\nsimulator: {stats}",
        started.elapsed(),
        kill_log.join("\n"),
        resends.load(Ordering::Relaxed)
    );
    drop(db);
}

/// Runs SQL on the PostgreSQL test server's maintenance database.
async fn on_server(sql: String) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&common::postgres_server_url())
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .unwrap();
}

/// Waits until `/readyz` answers `want`.
async fn readiness_becomes(http: &reqwest::Client, admin_port: u16, want: u16, within: Duration) {
    let url = format!("http://127.0.0.1:{admin_port}/readyz");
    let until = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status().as_u16() == want
        {
            return;
        }
        assert!(
            Instant::now() < until,
            "/readyz did not answer {want} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_turns_readiness_503_loses_nothing_and_recovers_by_itself() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let receiver = start_receiver().await;
    let callback = receiver.addr;
    let port = free_port();
    let sim = PostalSim::start(
        &format!("http://127.0.0.1:{port}/v1/postal/vnpost/events/{KEY}"),
        SEED,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::new(dir.path(), "gw", &db.url, &sim.base_url, port, callback);
    gateway.spawn();
    gateway.wait_ready().await;

    let template: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/requests/valid/minimal.json"
        ))
        .unwrap(),
    )
    .unwrap();
    // The intake system keeps sending through the outage; every 202 it gets
    // is a promise the gateway must keep.
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = {
        let (http, accepted, refused, stop) = (
            http.clone(),
            accepted.clone(),
            refused.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let mut body = template.clone();
                body["request_id"] = json!(format!("OUT-{i:04}"));
                i += 1;
                match http
                    .post(format!("http://127.0.0.1:{port}/v1/handoffs"))
                    .bearer_auth(TOKEN)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 202 => {
                        let doc: Value = r.json().await.unwrap();
                        accepted
                            .lock()
                            .unwrap()
                            .push(doc["id"].as_str().unwrap().to_owned());
                    }
                    Ok(r) => {
                        assert_eq!(r.status(), 503, "refused during the outage with 503");
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => panic!("the gateway stopped answering: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = accepted.lock().unwrap().len();
    assert!(before > 0, "handoffs accepted before the outage");

    // The outage: this test's database refuses connections and drops the
    // open ones (never the shared server).
    on_server(format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS false",
        db.name
    ))
    .await;
    on_server(format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
        db.name
    ))
    .await;
    readiness_becomes(&http, gateway.admin_port, 503, Duration::from_secs(15)).await;
    let refused_before = refused.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        refused.load(Ordering::SeqCst) > refused_before,
        "intake answers 503 while the database is away"
    );
    // 503 comes first (intake-api.md): a malformed or invalid body, or no
    // credentials at all, is not judged while nothing could be stored.
    for (body, token) in [
        ("{\"request_id\":", Some(TOKEN)),
        ("{\"request_id\": 7}", Some(TOKEN)),
        ("{}", None),
    ] {
        let mut request = http
            .post(format!("http://127.0.0.1:{port}/v1/handoffs"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 503, "{body} during the outage");
        let problem: Value = r.json().await.unwrap();
        assert_eq!(problem["type"], "urn:bcci:problem:unavailable", "{problem}");
    }
    gateway.assert_alive();

    // It comes back: the gateway recovers without a restart.
    on_server(format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", db.name)).await;
    readiness_becomes(&http, gateway.admin_port, 200, Duration::from_secs(30)).await;
    let after_outage = accepted.lock().unwrap().len();
    let until = Instant::now() + Duration::from_secs(15);
    while accepted.lock().unwrap().len() < after_outage + 10 {
        assert!(
            Instant::now() < until,
            "intake accepts again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    sender.await.unwrap();

    // Every accepted handoff is there and gets its postal order.
    let ids = accepted.lock().unwrap().clone();
    let base = format!("http://127.0.0.1:{port}");
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut waiting = 0;
        for id in &ids {
            let (status, tracking) = read_handoff(&http, &base, id)
                .await
                .unwrap_or_else(|| panic!("accepted handoff {id} is lost"));
            if status == "received" || tracking.is_none() {
                waiting += 1;
            }
        }
        if waiting == 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "{waiting} of {} handoffs still without an order:\n{}",
            ids.len(),
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    gateway.assert_alive();
    let status = gateway.sigterm();
    assert!(status.success(), "SIGTERM exit status {status}");
    eprintln!(
        "outage: {} handoffs accepted ({before} before the outage), {} refused with 503",
        ids.len(),
        refused.load(Ordering::SeqCst)
    );
    drop(db);
}
