//! Personal data does not outlive its purpose, in the store's files either.

use bcci_gateway::domain::Status;
use serde_json::{Value, json};

use crate::common::config::{KEY, NOWHERE, TestConfig};
use crate::common::{build_app, create_handoff};

const TOKEN: &str = "retention-token";

fn file_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for name in ["bcci.db", "bcci.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(name)) {
            all.extend(b);
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_leaves_no_trace_of_a_terminal_handoffs_phone_in_the_database_or_wal() {
    let dir = tempfile::tempdir().unwrap();
    let settings = TestConfig::sqlite(
        &dir.path().join("bcci.db"),
        NOWHERE,
        "http://127.0.0.1:9/cb",
    )
    .login("u", "p", "C")
    .client("motcua", &[TOKEN])
    .admin(&[TOKEN])
    .extra("[retention]\npersonal_data_days = 0")
    .settings();
    let app = build_app(settings, false).await;
    let (store, intake, lifecycle) = (app.store(), app.intake_addr(), app.lifecycle());
    let server = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let base: Value = crate::common::fixture_json("valid/return-cod.json");
    let mut ids = Vec::new();
    for (request_id, phone, name) in [
        ("PURGED", "0987111222", "Lê Thị Riêng Tư"),
        ("KEPT", "0987333444", "Phạm Văn Đang Chờ"),
    ] {
        let mut body = base.clone();
        body["request_id"] = json!(request_id);
        body["citizen"]["phone"] = json!(phone);
        body["citizen"]["name"] = json!(name);
        ids.push(create_handoff(&http, intake, TOKEN, &body).await);
    }
    // Vietnam Post reports the first one delivered (adopting its order).
    let batch = json!({"data": [{
        "orderHdrID": "H1", "originalID": "O1", "itemCode": "EE000000001VN",
        "saleOrderCode": ids[0].as_str(), "status": 14, "statusDate": "25/11/2026 14:03:00"
    }]});
    let r = http
        .post(format!("http://{intake}/v1/postal/vnpost/events/{KEY}"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        store.handoff(None, &ids[0]).await.unwrap().unwrap().status,
        Status::Delivered
    );
    assert!(
        contains(&file_bytes(dir.path()), "0987111222"),
        "the phone should be stored before the purge (else this test proves nothing)"
    );

    let now = jiff::Timestamp::now();
    assert_eq!(store.purge_personal_data(now, now).await.unwrap(), 1);
    // While the gateway still runs (its WAL in use), and again after it stopped.
    let running = file_bytes(dir.path());
    assert!(
        !contains(&running, "0987111222"),
        "a purged phone lingers in the live database or WAL"
    );
    assert!(
        !contains(&running, "Lê Thị Riêng Tư"),
        "a purged name lingers in the live database or WAL"
    );
    lifecycle.drain();
    server.await.unwrap().unwrap();
    drop(store);

    let bytes = file_bytes(dir.path());
    assert!(
        !contains(&bytes, "0987111222"),
        "a purged phone number lingers in the store files"
    );
    assert!(
        !contains(&bytes, "Lê Thị Riêng Tư"),
        "a purged name lingers in the store files"
    );
    assert!(
        contains(&bytes, "0987333444"),
        "a non-terminal handoff keeps its data"
    );
    // The non-personal timeline stays for statistics.
    let reopened = bcci_gateway::store::open(
        &format!("sqlite://{}", dir.path().join("bcci.db").display()),
        &Default::default(),
    )
    .await
    .unwrap();
    let timeline = reopened.timeline(&ids[0]).await.unwrap();
    assert!(timeline.iter().any(|e| e.status == Some(Status::Delivered)));
}
