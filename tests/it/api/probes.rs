//! Health, readiness and metrics.

use crate::helpers::*;

#[tokio::test]
async fn both_listeners_answer_health_and_readiness() {
    let app = spawn_app().await;
    for addr in [app.intake, app.admin] {
        for path in ["/healthz", "/readyz"] {
            let r = app
                .http
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{addr}{path}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_when_draining() {
    let mut app = spawn_app().await;
    // A long-lived connection sees the drain on its next request.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = format!("http://{}/readyz", app.admin);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    app.lifecycle.drain();
    // Listeners keep answering through the drain window: readiness is 503.
    let after = http
        .get(&url)
        .send()
        .await
        .expect("still listening while draining");
    assert_eq!(after.status(), 503);
    (&mut app.server).await.unwrap().unwrap();
}

#[tokio::test]
async fn metrics_count_intake_outcomes_in_prometheus_text() {
    let app = spawn_app().await;
    assert_eq!(app.post_json(&valid_request("M-1")).await.status(), 202);
    assert_eq!(app.post_json(&valid_request("M-1")).await.status(), 200);
    assert_eq!(
        app.post_handoff("{", "application/json", Some(TOKEN))
            .await
            .status(),
        400
    );
    let r = app
        .http
        .get(format!("http://{}/metrics", app.admin))
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text().await.unwrap();
    for line in [
        "bcci_handoffs_received_total{kind=\"return\",format=\"json\",outcome=\"accepted\"} 1",
        "bcci_handoffs_received_total{kind=\"return\",format=\"json\",outcome=\"duplicate\"} 1",
        "bcci_handoffs_received_total{kind=\"unknown\",format=\"json\",outcome=\"malformed\"} 1",
        "bcci_build_info{version=\"",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let r = app
        .http
        .get(format!("http://{}/metrics", app.admin))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_are_not_served_on_the_intake_listener() {
    let app = spawn_app().await;
    let r = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}
