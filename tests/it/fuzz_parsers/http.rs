//! Hostile bodies through the real HTTP API: every refusal is a clean 4xx
//! problem document and stores nothing.

use std::path::PathBuf;

use bcci_gateway::http::xml;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};

use super::hostile::{self, is_xml_char};
use super::webhook;
use crate::helpers::{TOKEN, TestApp};

const WEBHOOK_KEY: &str = "webhook-key-0123456789";
/// Rows of every table of the store.
const COUNTS: &[&str] = &[
    "SELECT count(*) FROM handoffs",
    "SELECT count(*) FROM timeline",
    "SELECT count(*) FROM postal_jobs",
    "SELECT count(*) FROM callbacks",
    "SELECT count(*) FROM carrier_inbox",
];

/// The gateway without background workers, so only requests change the store.
struct Gateway {
    base: String,
    http: reqwest::Client,
    db: SqlitePool,
    _app: TestApp,
}

impl Gateway {
    async fn start() -> Self {
        let app = TestApp::builder().without_workers().spawn().await;
        let base = format!("http://{}", app.intake);
        let path: PathBuf = app.place.sqlite_file().expect("a SQLite store");
        let db =
            SqlitePool::connect_with(SqliteConnectOptions::new().filename(path).read_only(true))
                .await
                .expect("store opens read-only");
        Self {
            base,
            http: reqwest::Client::new(),
            db,
            _app: app,
        }
    }

    /// Rows of every table of the store.
    async fn rows(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for query in COUNTS {
            let n: i64 = sqlx::query_scalar(*query)
                .fetch_one(&self.db)
                .await
                .expect("count");
            counts.push(n);
        }
        counts
    }
}

/// What an answer must be when it is an error.
fn check_problem(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &str,
) -> Result<(), TestCaseError> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let instance = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let doc: Value = if ct.starts_with("application/problem+json") {
        serde_json::from_str(body)
            .map_err(|e| TestCaseError::fail(format!("problem JSON: {e}: {body}")))?
    } else {
        prop_assert!(
            ct.starts_with("application/problem+xml"),
            "{status} as {ct:?}: {body}"
        );
        let bad = body.chars().find(|c| !is_xml_char(*c));
        prop_assert!(bad.is_none(), "problem+xml carries {bad:?}: {body:?}");
        let (root, tree) = xml::read_tree(body.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("problem XML: {e}: {body}")))?;
        prop_assert_eq!(root, "problem");
        // XML leaves are text: compare as text below.
        tree
    };
    let slug = match status {
        400 => "malformed",
        401 => "unauthorized",
        409 => "conflict",
        413 => "too-large",
        415 => "unsupported-media-type",
        422 => "invalid",
        other => {
            return Err(TestCaseError::fail(format!(
                "unexpected status {other}: {body}"
            )));
        }
    };
    let want_type = format!("urn:bcci:problem:{slug}");
    prop_assert_eq!(doc["type"].as_str(), Some(want_type.as_str()));
    let doc_status = doc["status"]
        .as_u64()
        .or_else(|| doc["status"].as_str()?.parse().ok());
    prop_assert_eq!(doc_status, Some(u64::from(status)));
    prop_assert_eq!(doc["instance"].as_str(), Some(instance));
    if status == 422 {
        prop_assert!(!doc["errors"].is_null(), "a 422 names no field: {body}");
    }
    Ok(())
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/xml"),
        Some("text/xml; charset=UTF-8"),
        Some("application/xml; charset=iso-8859-1"),
        Some("text/plain"),
        Some("application/json; charset=latin1"),
        Some(";;;"),
        None,
    ])
}

fn accept() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        Some("application/json"),
        Some("application/xml"),
        Some("application/xml;q=0.1, application/json;q=NaN"),
        Some("*/*"),
    ])
}

fn intake_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        hostile::mutated_json(),
        hostile::mutated_xml(),
        hostile::mutated_tree().prop_map(|t| t.to_string().into_bytes()),
        hostile::mutated_tree()
            .prop_map(|t| xml::write_document("handoff", &t, |_| "item").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..128),
        (1usize..5000).prop_map(|d| hostile::nested(d, true, false)),
        (1usize..5000).prop_map(|d| hostile::nested(d, false, true)),
        (1usize..8, 1usize..10).prop_map(|(l, w)| hostile::laughs(l, w, false)),
    ]
}

#[test]
fn hostile_intake_bodies_get_a_clean_4xx_and_store_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gw = runtime.block_on(Gateway::start());
    let mut runner = TestRunner::new(hostile::config(300));
    let strategy = (intake_body(), content_type(), accept());
    runner
        .run(&strategy, |(body, ct, accept)| {
            runtime.block_on(async {
                let before = gw.rows().await;
                let mut req = gw
                    .http
                    .post(format!("{}/v1/handoffs", gw.base))
                    .bearer_auth(TOKEN)
                    .body(body);
                if let Some(ct) = ct {
                    req = req.header("content-type", ct);
                }
                if let Some(a) = accept {
                    req = req.header("accept", a);
                }
                let r = req.send().await.expect("answer");
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let text = r.text().await.expect("body");
                let after = gw.rows().await;
                prop_assert!(status < 500, "{status}: {text}");
                if status == 202 {
                    prop_assert_eq!(after[0], before[0] + 1, "an accepted handoff is stored");
                } else if status == 200 {
                    prop_assert_eq!(&after, &before, "a repeat stores nothing");
                } else {
                    check_problem(status, &headers, &text)?;
                    prop_assert_eq!(&after, &before, "a {} stored something", status);
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn hostile_webhook_bodies_get_200_or_a_clean_400_that_stores_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gw = runtime.block_on(Gateway::start());
    let mut runner = TestRunner::new(hostile::config(300));
    let strategy = prop_oneof![
        webhook::mutated_batch().prop_map(|d| d.to_string().into_bytes()),
        hostile::mutated(
            vec![webhook::template().to_string().into_bytes()],
            &[b"{", b"]", b"\\ud800", b"\xff", b"null"]
        ),
        prop::collection::vec(any::<u8>(), 0..128),
        (100usize..5000)
            .prop_map(|d| format!("{{\"data\":{}1{}}}", "[".repeat(d), "]".repeat(d)).into_bytes()),
    ];
    runner
        .run(&strategy, |body| {
            runtime.block_on(async {
                let before = gw.rows().await;
                let r = gw
                    .http
                    .post(format!("{}/v1/postal/vnpost/events/{WEBHOOK_KEY}", gw.base))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .expect("answer");
                let status = r.status().as_u16();
                let headers = r.headers().clone();
                let text = r.text().await.expect("body");
                prop_assert!(status == 200 || status == 400, "{status}: {text}");
                if status == 400 {
                    check_problem(status, &headers, &text)?;
                    prop_assert_eq!(gw.rows().await, before, "a 400 stored something");
                } else {
                    prop_assert_eq!(text, "{\"success\":true}");
                }
                Ok(())
            })
        })
        .unwrap();
}
