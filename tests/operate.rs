//! Operating it: the legal clock, its metrics, and a drain with slow calls.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bcci_gateway::app::{Application, Options};
use bcci_gateway::config::Settings;
use bcci_gateway::domain::{HandoffId, Kind, Status};
use bcci_gateway::intake::auth::token_sha256_hex;
use bcci_gateway::sim::{Faults, SimConfig, Simulator};
use serde_json::{Value, json};

const TOKEN: &str = "operate-token";
const KEY: &str = "webhook-key-0123456789";

fn settings(db: &std::path::Path, listen: &str, postal: &str, extra: &str) -> Settings {
    let hash = token_sha256_hex(TOKEN);
    Settings::from_toml(&format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "127.0.0.1:0"
shutdown_grace_s = 10
[store]
url = "sqlite://{db}"
[postal]
base_url = "{postal}"
username = "u"
password = "p"
customer_code = "C"
webhook_keys = ["{KEY}"]
timeout_ms = 5000
lookup_delay_s = 1
max_requests_per_second = 100000
[intake]
timeout_ms = 2000
[[intake.clients]]
name = "motcua"
token_sha256s = ["{hash}"]
requests_per_second = 100000
callback_url = "http://127.0.0.1:9/cb"
callback_secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
[admin]
token_sha256s = ["{hash}"]
[retry]
initial_ms = 20
max_ms = 200
{extra}
"#,
        db = db.display()
    ))
    .unwrap()
}

async fn submit(intake: std::net::SocketAddr, request_id: &str) -> HandoffId {
    let mut body: Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/requests/valid/return-cod.json"
        ))
        .unwrap(),
    )
    .unwrap();
    body["request_id"] = json!(request_id);
    let r = reqwest::Client::new()
        .post(format!("http://{intake}/v1/handoffs"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    HandoffId::parse(r.json::<Value>().await.unwrap()["id"].as_str().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_pickup_leg_is_a_breach_recorded_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        &dir.path().join("bcci.db"),
        "127.0.0.1:0",
        "http://127.0.0.1:9",
        "",
    );
    let app = Application::build_with(
        s,
        Options {
            run_workers: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let (store, intake) = (app.store(), app.intake_addr());
    let metrics = format!("http://{}/metrics", app.admin_addr());
    tokio::spawn(app.run_until_stopped());
    let id = submit(intake, "SLA-1").await;
    // Picked up on Monday 5 January 2026 at Côn Đảo (a remote ward: 4 working days).
    let batch = json!({"data": [
        {"orderHdrID": "H1", "originalID": "O1", "itemCode": "EE000000001VN", "saleOrderCode": id.as_str(),
         "status": 6, "statusDate": "05/01/2026 09:00:00"}
    ]});
    let r = reqwest::Client::new()
        .post(format!("http://{intake}/v1/postal/vnpost/events/{KEY}"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::PickedUp);
    assert_eq!(
        h.sla_due_at
            .map(bcci_gateway::domain::time::format_vietnam)
            .as_deref(),
        Some("2026-01-09T23:59:59+07:00")
    );
    let now = jiff::Timestamp::now();
    assert_eq!(
        store.record_sla_breaches(now).await.unwrap(),
        vec![Kind::Return]
    );
    assert!(
        store.record_sla_breaches(now).await.unwrap().is_empty(),
        "a breach is recorded once"
    );
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    assert!(
        text.contains("bcci_leg_duration_seconds_count{kind=\"return\",stage=\"pickup\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_horizon_and_working_hours_are_exported() {
    let dir = tempfile::tempdir().unwrap();
    // The horizon is that of the decreed days; the statute never runs out.
    let s = settings(
        &dir.path().join("bcci.db"),
        "127.0.0.1:0",
        "http://127.0.0.1:9",
        "[calendar]\nextra_working_days = [\"2026-05-09\"]",
    );
    let app = Application::build(s).await.unwrap();
    let metrics = format!("http://{}/metrics", app.admin_addr());
    let lifecycle = app.lifecycle();
    let server = tokio::spawn(app.run_until_stopped());
    let last_day = jiff::civil::date(2026, 12, 31)
        .to_zoned(bcci_gateway::domain::time::vietnam())
        .unwrap()
        .timestamp()
        .as_second();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        let working = text.lines().find(|l| l.starts_with("bcci_working_hours "));
        if let Some(working) = working
            && text.contains(&format!(
                "bcci_calendar_last_day_timestamp_seconds {last_day}"
            ))
        {
            let expected = bcci_gateway::app::is_working_hours(
                &bcci_gateway::domain::sla::Calendar::new(&[], &[]),
                jiff::Timestamp::now(),
            );
            // Today (2026-11-25) is no holiday, so the unconfigured calendar agrees.
            assert!(
                working.ends_with(if expected { " 1" } else { " 0" }),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    lifecycle.drain();
    server.await.unwrap().unwrap();
}

#[test]
fn working_hours_are_07_30_to_17_00_on_working_days() {
    use bcci_gateway::app::is_working_hours;
    let cal = bcci_gateway::domain::sla::Calendar::new(&["2026-09-02".parse().unwrap()], &[]);
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    assert!(is_working_hours(&cal, at("2026-11-25T07:30:00+07:00")));
    assert!(!is_working_hours(&cal, at("2026-11-25T07:29:00+07:00")));
    assert!(!is_working_hours(&cal, at("2026-11-25T17:00:00+07:00")));
    assert!(
        !is_working_hours(&cal, at("2026-11-28T10:00:00+07:00")),
        "Saturday"
    );
    assert!(
        !is_working_hours(&cal, at("2026-09-02T10:00:00+07:00")),
        "National Day"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_with_slow_calls_in_flight_exits_cleanly_and_loses_nothing() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sim = Simulator::start(SimConfig {
        webhook_url: Some(format!(
            "http://127.0.0.1:{port}/v1/postal/vnpost/events/{KEY}"
        )),
        step_interval: Duration::from_millis(200),
        faults: Faults {
            latency_ms: 1500,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bcci.db");
    let listen = format!("127.0.0.1:{port}");
    let app = Application::build(settings(&db, &listen, &sim.base_url(), ""))
        .await
        .unwrap();
    let (intake, lifecycle) = (app.intake_addr(), app.lifecycle());
    let server = tokio::spawn(app.run_until_stopped());
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(submit(intake, &format!("DRAIN-{i}")).await);
    }
    // Calls to Vietnam Post take 1.5 s: drain while they are in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    lifecycle.drain();
    let r = reqwest::Client::new()
        .post(format!("http://{intake}/v1/handoffs"))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "new intake requests get 503 while draining"
    );
    server.await.unwrap().expect("a drain ends cleanly");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the drain took {:?}",
        started.elapsed()
    );
    let before = sim.orders().len();

    // Restarted on the same store: nothing accepted was lost, each handoff
    // ends with exactly one order and every queued callback is still there.
    let app = Application::build(settings(&db, &listen, &sim.base_url(), ""))
        .await
        .unwrap();
    let (store, lifecycle) = (app.store(), app.lifecycle());
    let server = tokio::spawn(app.run_until_stopped());
    assert_eq!(store.count_handoffs().await.unwrap(), 10);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for id in &ids {
            let h = store.handoff(None, id).await.unwrap().unwrap();
            if h.tracking_number.is_some() {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} handoffs got their order after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ids {
        assert_eq!(
            sim.orders_for(id.as_str()).len(),
            1,
            "{id}: exactly one order"
        );
        let callbacks = store.callbacks_of(id).await.unwrap();
        let sequences: Vec<u64> = callbacks.iter().map(|c| c.0).collect();
        assert_eq!(
            sequences,
            (1..=callbacks.len() as u64).collect::<Vec<_>>(),
            "{id}"
        );
        assert!(!callbacks.is_empty());
    }
    assert!(before <= 10);
    lifecycle.drain();
    server.await.unwrap().unwrap();
}
