//! Vietnam Post's status events in, signed and ordered callbacks out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use bcci_gateway::app::{Application, Options};
use bcci_gateway::config::Settings;
use bcci_gateway::domain::{HandoffId, Status};
use bcci_gateway::sim::{Faults, SimConfig, Simulator};

use crate::common::config::{KEY, NOWHERE, SECRET, TestConfig};
use crate::common::receiver::{ReceiverOptions, TestReceiver};
use crate::common::{Backend, TestStore, create_handoff, free_port, valid_request};
use crate::helpers::TestApp;
use serde_json::{Value, json};

on_both_backends!(
    one_hundred_handoffs_close_the_loop_through_duplicated_reordered_webhooks_and_a_flaky_receiver,
    a_receiver_down_past_the_deadline_leaves_dead_and_held_callbacks_that_replay_in_order,
    webhooks_are_authenticated_and_every_record_is_stored_or_counted,
    an_address_outside_the_allowlist_is_forbidden,
);

const TOKEN: &str = "loop-test-token";
const ROTATED: &str = "whsec_dGhpcyBpcyBhIHNlY29uZCBrZXk=";

/// A tiny intake system: verifies every signature with the reference
/// Standard Webhooks implementation (both the current and the rotated
/// secret must verify on their own) and fails every n-th request with 503
/// (0: none).
async fn start_receiver(fail_every: u64) -> (TestReceiver, SocketAddr) {
    let r = TestReceiver::start_with(ReceiverOptions {
        secrets: vec![SECRET.to_owned(), ROTATED.to_owned()],
        fail_every: (fail_every > 0).then_some((fail_every, StatusCode::SERVICE_UNAVAILABLE)),
        ..ReceiverOptions::default()
    })
    .await;
    let addr = r.addr;
    (r, addr)
}

/// Accepted callbacks per handoff, in arrival order.
fn accepted(receiver: &TestReceiver) -> HashMap<String, Vec<Value>> {
    let mut by: HashMap<String, Vec<Value>> = HashMap::new();
    for r in receiver.accepted() {
        by.entry(r.body["handoff_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(r.body);
    }
    by
}

fn settings(
    store_url: &str,
    port: u16,
    postal: &str,
    callback: SocketAddr,
    extra: &str,
) -> Settings {
    TestConfig::new(store_url, postal, &format!("http://{callback}/callback"))
        .listen(&format!("127.0.0.1:{port}"), "127.0.0.1:0")
        .webhook_keys(&["old-key-that-was-rotated", KEY])
        .postal("timeout_ms = 2000\nmax_requests_per_second = 100000\nlookup_delay_s = 1")
        .intake("timeout_ms = 2000")
        .client("motcua", &[TOKEN])
        .rate(100000)
        .secrets(&[SECRET, ROTATED])
        .admin(&[TOKEN])
        .extra(extra)
        .settings()
}

async fn submit(intake: SocketAddr, n: usize) -> Vec<HandoffId> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let body = valid_request(&format!("LOOP-{i}"));
        ids.push(create_handoff(&http, intake, TOKEN, &body).await);
    }
    ids
}

async fn one_hundred_handoffs_close_the_loop_through_duplicated_reordered_webhooks_and_a_flaky_receiver(
    backend: Backend,
) {
    let (receiver, callback_addr) = start_receiver(4).await;
    let port = free_port();
    let sim = Simulator::start(SimConfig {
        webhook_url: Some(format!(
            "http://127.0.0.1:{port}/v1/postal/vnpost/events/{KEY}"
        )),
        step_interval: Duration::from_millis(30),
        webhook_retry_initial: Duration::from_millis(50),
        webhook_retry_max: Duration::from_millis(500),
        seed: 7,
        faults: Faults {
            duplicate_webhook_rate: 0.25,
            reorder_webhook_rate: 0.25,
            batch_size: 4,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let Some(place) = TestStore::new(backend).await else {
        return;
    };
    let s = settings(
        &place.url,
        port,
        &sim.base_url(),
        callback_addr,
        "[retry]\ninitial_ms = 20\nmax_ms = 200\ndeadline_s = 600\n",
    );
    let app = Application::build_with(s, Options::default())
        .await
        .unwrap();
    let (store, intake) = (app.store(), app.intake_addr());
    let lifecycle = app.lifecycle();
    let server = tokio::spawn(app.run_until_stopped());
    let ids = submit(intake, 100).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = |id: &HandoffId| {
        let orders = sim.orders_for(id.as_str());
        (orders.len() == 1).then(|| bcci_gateway::sim::expected_final_status(orders[0].sequence))
    };
    loop {
        let mut done = 0;
        for id in &ids {
            let h = store.handoff(None, id).await.unwrap().unwrap();
            let delivered = accepted(&receiver).get(id.as_str()).map_or(0, Vec::len);
            let queued = store.callbacks_of(id).await.unwrap().len();
            if expected(id) == Some(h.status.as_str()) && delivered == queued && queued > 0 {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of 100 handoffs closed the loop in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = sim.stats();
    assert!(
        stats.duplicates_injected > 0 && stats.reorders_injected > 0,
        "{stats:?}"
    );
    assert!(
        receiver.received().iter().any(|r| !r.accepted()),
        "the receiver never failed"
    );
    assert_eq!(receiver.bad_signatures(), 0, "a signature did not verify");

    let accepted = accepted(&receiver);
    for id in &ids {
        let handoff = store.handoff(None, id).await.unwrap().unwrap();
        let got = &accepted[id.as_str()];
        let sequences: Vec<u64> = got
            .iter()
            .map(|b| b["sequence"].as_u64().unwrap())
            .collect();
        let contiguous: Vec<u64> = (1..=got.len() as u64).collect();
        assert_eq!(
            sequences, contiguous,
            "{id}: callbacks out of order or with gaps"
        );
        let changes: Vec<&Value> = got
            .iter()
            .filter(|b| b["type"] == "handoff.status_changed")
            .collect();
        for w in changes.windows(2) {
            assert_eq!(w[1]["previous_status"], w[0]["status"], "{id}");
            assert_ne!(
                w[1]["status"], w[0]["status"],
                "{id}: a status relayed twice in a row"
            );
            assert!(
                w[0]["occurred_at"].as_str() <= w[1]["occurred_at"].as_str(),
                "{id}: times go back"
            );
        }
        assert_eq!(
            changes.last().unwrap()["status"],
            handoff.status.as_str(),
            "{id}"
        );
        assert_eq!(changes[0]["status"], "order_created");
    }
    lifecycle.drain();
    server.await.unwrap().unwrap();
}

async fn a_receiver_down_past_the_deadline_leaves_dead_and_held_callbacks_that_replay_in_order(
    backend: Backend,
) {
    let (receiver, callback_addr) = start_receiver(0).await;
    receiver.set_status(StatusCode::SERVICE_UNAVAILABLE);
    let port = free_port();
    let sim = Simulator::start(SimConfig {
        webhook_url: Some(format!(
            "http://127.0.0.1:{port}/v1/postal/vnpost/events/{KEY}"
        )),
        step_interval: Duration::from_millis(30),
        sequence_weights: vec![("delivered".into(), 1)],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let Some(place) = TestStore::new(backend).await else {
        return;
    };
    let s = settings(
        &place.url,
        port,
        &sim.base_url(),
        callback_addr,
        "[retry]\ninitial_ms = 10\nmax_ms = 50\ndeadline_s = 1\n",
    );
    let app = Application::build_with(s, Options::default())
        .await
        .unwrap();
    let (store, intake, relay) = (app.store(), app.intake_addr(), app.relay());
    let metrics_url = format!("http://{}/metrics", app.admin_addr());
    let lifecycle = app.lifecycle();
    let server = tokio::spawn(app.run_until_stopped());
    let ids = submit(intake, 1).await;
    let id = &ids[0];
    // The walk ends delivered; the first callback dies, the rest are held.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = store.handoff(None, id).await.unwrap().unwrap();
        let stats = store
            .callback_queue_stats(jiff::Timestamp::now())
            .await
            .unwrap();
        if h.status == Status::Delivered && stats.dead == 1 && stats.depth >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no dead callback: {stats:?} {:?}",
            h.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted(&receiver).is_empty());
    // The whole-store gauges show it (refreshed every few seconds).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("bcci_dead_letters{queue=\"callback\"} 1")
            && text.contains("bcci_handoffs{kind=\"return\",status=\"delivered\"} 1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gauges never showed the dead callback:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let attempts_before = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attempts_held = receiver.received().len();
    // Held callbacks are not attempted: only the dead one ever was.
    let ids_attempted: std::collections::HashSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.webhook_id.clone())
        .collect();
    assert_eq!(
        ids_attempted.len(),
        1,
        "a held callback was sent before the head"
    );
    assert_eq!(
        attempts_before, attempts_held,
        "a dead callback was retried"
    );

    receiver.set_status(StatusCode::NO_CONTENT);
    assert_eq!(
        store
            .replay_dead_callbacks(None, jiff::Timestamp::now())
            .await
            .unwrap(),
        1
    );
    relay.run_until_idle().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let queued = store.callbacks_of(id).await.unwrap().len();
    while accepted(&receiver).get(id.as_str()).map_or(0, Vec::len) < queued {
        assert!(
            Instant::now() < deadline,
            "replayed callbacks did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = &accepted(&receiver)[id.as_str()];
    let sequences: Vec<u64> = got
        .iter()
        .map(|b| b["sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, (1..=queued as u64).collect::<Vec<_>>());
    // The replayed callback keeps its webhook-id.
    let first_id = receiver.received()[0].webhook_id.clone();
    let replayed = receiver
        .received()
        .into_iter()
        .find(|r| r.accepted())
        .unwrap()
        .webhook_id;
    assert_eq!(first_id, replayed);
    lifecycle.drain();
    server.await.unwrap().unwrap();
}

async fn webhooks_are_authenticated_and_every_record_is_stored_or_counted(backend: Backend) {
    let (_receiver, callback_addr) = start_receiver(0).await;
    let Some(place) = TestStore::new(backend).await else {
        return;
    };
    let port = free_port();
    let s = settings(&place.url, port, "http://127.0.0.1:9", callback_addr, "");
    let app = Application::build_with(
        s,
        Options {
            run_workers: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let metrics = format!("http://{}/metrics", app.admin_addr());
    let (store, intake) = (app.store(), app.intake_addr());
    tokio::spawn(app.run_until_stopped());
    let ids = submit(intake, 1).await;
    let http = reqwest::Client::new();
    let url = |key: &str| format!("http://{intake}/v1/postal/vnpost/events/{key}");
    let post = |u: String, body: String| {
        let http = http.clone();
        async move {
            http.post(u)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(url("wrong-key-0123456789"), "{}".into()).await, 401);
    assert_eq!(post(url(KEY), "not json".into()).await, 400);
    assert_eq!(post(url(KEY), json!({"data": {}}).to_string()).await, 400);
    // The handoff's order revealed by a webhook is adopted; an unknown order
    // is counted, a record without a status stored raw: the batch succeeds.
    let batch = json!({
        "data": [
            {"orderHdrId": "H1", "originalId": "O1", "itemCode": "EE000000001VN", "saleOrderCode": ids[0].as_str(),
             "status": 2, "statusName": "Đã phân công", "statusDate": "25/11/2026 14:03:00", "totalFee": 15000},
            {"itemCode": "EE999999999VN", "saleOrderCode": "someone-else", "status": 6, "statusDate": "25/11/2026 14:03:00"},
            {"itemCode": "EE000000001VN", "statusDate": "25/11/2026 14:04:00"}
        ],
        "sendDate": "25/11/2026 14:05:00"
    });
    assert_eq!(post(url(KEY), batch.to_string()).await, 200);
    // The same batch again changes nothing.
    assert_eq!(post(url(KEY), batch.to_string()).await, 200);
    let h = store.handoff(None, &ids[0]).await.unwrap().unwrap();
    assert_eq!(h.status, Status::PickingUp);
    assert_eq!(h.tracking_number.as_deref(), Some("EE000000001VN"));
    let timeline = store.timeline(&ids[0]).await.unwrap();
    let effects: Vec<(&str, Option<u64>)> = timeline
        .iter()
        .map(|e| (e.effect.as_str(), e.sequence))
        .collect();
    assert_eq!(
        effects,
        [
            ("applied", Some(1)),
            ("applied", Some(2)),
            ("duplicate", None)
        ],
        "adoption, the status, then the duplicate"
    );
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    for line in [
        "bcci_postal_events_total{source=\"webhook\",outcome=\"unauthorized\"} 1",
        "bcci_postal_events_total{source=\"webhook\",outcome=\"applied\"} 1",
        "bcci_postal_events_total{source=\"webhook\",outcome=\"duplicate\"} 1",
        "bcci_postal_events_total{source=\"webhook\",outcome=\"unknown_order\"} 2",
        "bcci_postal_events_total{source=\"webhook\",outcome=\"malformed\"} 2",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
}

async fn an_address_outside_the_allowlist_is_forbidden(backend: Backend) {
    let Some(app) = TestApp::builder()
        .backend(backend)
        .postal(NOWHERE)
        .receiver(ReceiverOptions::default())
        .without_workers()
        .configure(|c| c.postal("webhook_allow_ips = [\"10.0.0.0/8\"]"))
        .build()
        .await
    else {
        return;
    };
    let intake = app.intake;
    let r = reqwest::Client::new()
        .post(format!("http://{intake}/v1/postal/vnpost/events/{KEY}"))
        .header("x-forwarded-for", "10.1.2.3")
        .body("{\"data\": []}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "X-Forwarded-For is not believed from an untrusted peer"
    );
}
