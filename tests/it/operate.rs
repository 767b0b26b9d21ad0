//! Operating it: the legal clock, its metrics, and a drain with slow calls.

use std::time::{Duration, Instant};

use bcci_gateway::app::Application;
use bcci_gateway::config::Settings;
use bcci_gateway::domain::{HandoffId, Kind, Status};
use bcci_gateway::sim::{Faults, SimConfig, Simulator};
use serde_json::json;

use crate::common::config::{KEY, TestConfig};
use crate::common::{build_app, create_handoff, free_port, valid_request};

const TOKEN: &str = "operate-token";

fn settings(db: &std::path::Path, listen: &str, postal: &str, extra: &str) -> Settings {
    TestConfig::sqlite(db, postal, "http://127.0.0.1:9/cb")
        .listen(listen, "127.0.0.1:0")
        .server("shutdown_grace_s = 10")
        .login("u", "p", "C")
        .postal("timeout_ms = 5000\nlookup_delay_s = 1\nmax_requests_per_second = 100000")
        .intake("timeout_ms = 2000")
        .client("motcua", &[TOKEN])
        .rate(100000)
        .admin(&[TOKEN])
        .extra(&format!("[retry]\ninitial_ms = 20\nmax_ms = 200\n{extra}"))
        .settings()
}

async fn submit(intake: std::net::SocketAddr, request_id: &str) -> HandoffId {
    let body = valid_request(request_id);
    create_handoff(&reqwest::Client::new(), intake, TOKEN, &body).await
}

/// The gateway with no background workers: the test drives them.
async fn without_workers(settings: Settings) -> Application {
    build_app(settings, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_pickup_leg_is_a_breach_recorded_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = without_workers(settings(
        &dir.path().join("bcci.db"),
        "127.0.0.1:0",
        "http://127.0.0.1:9",
        "",
    ))
    .await;
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
    // The webhook revealed the order before any create answer: the order
    // stage ends there.
    assert!(
        text.contains("bcci_leg_duration_seconds_count{kind=\"return\",stage=\"order\"} 1"),
        "{text}"
    );
}

/// The value of one sample line of a scrape (`name{labels}` as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_is_exported_from_the_first_scrape_and_answers_are_counted_by_route() {
    let dir = tempfile::tempdir().unwrap();
    let app = without_workers(settings(
        &dir.path().join("bcci.db"),
        "127.0.0.1:0",
        "http://127.0.0.1:9",
        "",
    ))
    .await;
    let (intake, lifecycle) = (app.intake_addr(), app.lifecycle());
    let metrics = format!("http://{}/metrics", app.admin_addr());
    let server = tokio::spawn(app.run_until_stopped());
    let started = jiff::Timestamp::now().as_second() as f64;

    let first = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    for series in [
        "bcci_leg_duration_seconds_count{kind=\"pickup\",stage=\"order\"}",
        "bcci_leg_duration_seconds_count{kind=\"return\",stage=\"delivery\"}",
        "bcci_sla_breaches_total{kind=\"return\"}",
        "bcci_callbacks_total{client=\"motcua\",outcome=\"rejected_4xx\"}",
        "bcci_callback_duration_seconds_count{client=\"motcua\"}",
        "bcci_postal_requests_total{operation=\"lookup\",outcome=\"ambiguous\"}",
        "bcci_postal_events_total{source=\"poll\",outcome=\"unknown_code\"}",
        "bcci_handoffs_received_total{kind=\"unknown\",format=\"xml\",outcome=\"too_large\"}",
        "bcci_handoffs{kind=\"pickup\",status=\"failed\"}",
        "bcci_queue_depth{queue=\"callback\"}",
        "bcci_dead_letters{queue=\"postal\"}",
        "bcci_duplicate_orders_total",
        "bcci_cod_unsettled",
    ] {
        assert_eq!(
            sample(&first, series),
            Some(0.0),
            "{series} at 0 in\n{first}"
        );
    }
    for family in [
        "bcci_office_open",
        "bcci_store_commits_total",
        "bcci_store_statements_total",
        "bcci_store_wal_bytes_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(sample(&first, family).is_some(), "{family} in\n{first}");
    }
    let start_time = sample(&first, "process_start_time_seconds").expect("the start time");
    assert!(
        (started - 600.0..=started + 1.0).contains(&start_time),
        "process_start_time_seconds {start_time}, test started at {started}"
    );
    assert!(sample(&first, "process_resident_memory_bytes").unwrap() > 1_000_000.0);
    for series in [
        "bcci_http_requests_total{listener=\"main\",route=\"unmatched\",status=\"404\"}",
        "bcci_http_requests_total{listener=\"admin\",route=\"unmatched\",status=\"404\"}",
        "bcci_http_request_duration_seconds_count{listener=\"main\",route=\"unmatched\"}",
    ] {
        assert_eq!(
            sample(&first, series),
            Some(0.0),
            "{series} at 0 in\n{first}"
        );
    }

    let http = reqwest::Client::new();
    let unknown = "h_01JD7Q3ZK8S5V4W2X1Y0Z9A8B7";
    let r = http
        .get(format!("http://{intake}/v1/handoffs/{unknown}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!(
            "http://{intake}/v1/postal/vnpost/events/not-the-key-s3cr3t"
        ))
        .json(&json!({"data": []}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let webhook_status = r.status().as_u16();
    let r = http
        .get(format!("http://{intake}/no/such/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    for (series, value) in [
        ("bcci_http_requests_total{listener=\"main\",route=\"/v1/handoffs/{id}\",status=\"404\"}".to_owned(), 1.0),
        (format!("bcci_http_requests_total{{listener=\"main\",route=\"/v1/postal/vnpost/events/{{webhook_key}}\",status=\"{webhook_status}\"}}"), 1.0),
        ("bcci_http_requests_total{listener=\"main\",route=\"unmatched\",status=\"404\"}".to_owned(), 1.0),
        ("bcci_http_requests_total{listener=\"admin\",route=\"/metrics\",status=\"200\"}".to_owned(), 1.0),
        ("bcci_http_request_duration_seconds_count{listener=\"main\",route=\"/v1/handoffs/{id}\"}".to_owned(), 1.0),
    ] {
        assert_eq!(sample(&text, &series), Some(value), "{series} in\n{text}");
    }
    for raw in [unknown, "not-the-key-s3cr3t", "/no/such/path"] {
        assert!(!text.contains(raw), "a raw path part {raw} in the metrics");
    }
    lifecycle.drain();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adopted_order_ends_the_order_leg_and_a_4xx_callback_attempt_counts_once() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    // The intake system's endpoint refuses every callback with 400.
    let refusing = axum::Router::new().route(
        "/cb",
        axum::routing::post(|| async { axum::http::StatusCode::BAD_REQUEST }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, refusing).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(
        &dir.path().join("bcci.db"),
        "127.0.0.1:0",
        &sim.base_url(),
        "",
    );
    s.intake.clients[0].callback_url = format!("http://{receiver}/cb");
    let app = without_workers(s).await;
    let (intake, lifecycle) = (app.intake_addr(), app.lifecycle());
    let (dispatcher, relay) = (app.dispatcher(), app.relay());
    let metrics = format!("http://{}/metrics", app.admin_addr());
    let server = tokio::spawn(app.run_until_stopped());
    submit(intake, "LEG-1").await;
    dispatcher.run_until_idle().await.unwrap();
    assert_eq!(
        relay.try_execute().await.unwrap(),
        bcci_gateway::relay::Executed::Worked
    );
    let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
    for (series, value) in [
        (
            "bcci_leg_duration_seconds_count{kind=\"return\",stage=\"order\"}",
            1.0,
        ),
        (
            "bcci_callbacks_total{client=\"motcua\",outcome=\"rejected_4xx\"}",
            1.0,
        ),
        (
            "bcci_callbacks_total{client=\"motcua\",outcome=\"retry\"}",
            0.0,
        ),
        (
            "bcci_callbacks_total{client=\"motcua\",outcome=\"delivered\"}",
            0.0,
        ),
        (
            "bcci_callback_duration_seconds_count{client=\"motcua\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    lifecycle.drain();
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calendar_horizon_and_office_hours_are_exported() {
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
        let working = text.lines().find(|l| l.starts_with("bcci_office_open "));
        if let Some(working) = working
            && text.contains(&format!(
                "bcci_calendar_last_day_timestamp_seconds {last_day}"
            ))
        {
            let expected = bcci_gateway::app::is_office_open(
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
fn the_office_is_open_07_30_to_17_00_on_working_days() {
    use bcci_gateway::app::is_office_open;
    let cal = bcci_gateway::domain::sla::Calendar::new(&["2026-09-02".parse().unwrap()], &[]);
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    assert!(is_office_open(&cal, at("2026-11-25T07:30:00+07:00")));
    assert!(!is_office_open(&cal, at("2026-11-25T07:29:00+07:00")));
    assert!(!is_office_open(&cal, at("2026-11-25T17:00:00+07:00")));
    assert!(
        !is_office_open(&cal, at("2026-11-28T10:00:00+07:00")),
        "Saturday"
    );
    assert!(
        !is_office_open(&cal, at("2026-09-02T10:00:00+07:00")),
        "National Day"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drain_with_slow_calls_in_flight_exits_cleanly_and_loses_nothing() {
    let port = free_port();
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
