//! The test app itself: what its drop checks.

use sqlx::Connection as _;

use crate::helpers::{TestApp, spawn_app};

const PICKUP: &str = include_str!("../../../fixtures/requests/valid/pickup.json");

/// A gateway without workers holding one handoff whose create job an outside
/// hand has made dead, as a create job that ran out of retries would be.
async fn app_with_a_dead_job() -> TestApp {
    let app = TestApp::builder().without_workers().spawn().await;
    let body: serde_json::Value = serde_json::from_str(PICKUP).unwrap();
    assert_eq!(app.post_json(&body).await.status(), 202);
    let mut c = sqlx::SqliteConnection::connect(&app.place.url)
        .await
        .unwrap();
    let n = sqlx::query("UPDATE postal_jobs SET state = 'dead'")
        .execute(&mut c)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 1);
    app
}

#[tokio::test]
async fn dropping_an_app_with_dead_work_fails_the_test() {
    let app = app_with_a_dead_job().await;
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(app)));
    let message = dropped.expect_err("the drop must fail the test");
    let message = message
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("left work dead") && message.contains("postal job create"),
        "{message}"
    );
}

#[tokio::test]
async fn dead_work_the_test_expects_passes() {
    let app = app_with_a_dead_job().await;
    app.expect_dead();
    drop(app);
    // Pending work is the normal end of a test without workers.
    let app = spawn_app().await;
    let body: serde_json::Value = serde_json::from_str(PICKUP).unwrap();
    assert_eq!(app.post_json(&body).await.status(), 202);
    drop(app);
}
