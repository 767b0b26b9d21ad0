//! The admin API on the admin listener and the `admin` command line over a
//! stopped store: search, show, replay, resolve, erase, dead and held
//! callbacks, statistics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::common::config::{NOWHERE, TestConfig};
use crate::common::receiver::TestReceiver;
use axum::http::StatusCode;
use bcci_gateway::clock::{Clock, ManualClock};
use bcci_gateway::config::Settings;
use bcci_gateway::dispatch::Dispatcher;
use bcci_gateway::domain::callback::BodyFormat;
use bcci_gateway::domain::request::Origin;
use bcci_gateway::domain::state_machine::CarrierEvent;
use bcci_gateway::domain::{
    CarrierInfo, HandoffId, HandoffRequest, PostalOrder, RequestRules, Source, Status,
};
use bcci_gateway::relay::Relay;
use bcci_gateway::store::{
    CallbackOutcome, EventContext, IncomingCarrierEvent, NewHandoff, PostalOutcome, SharedStore,
};
use jiff::{SignedDuration, Timestamp};
use reqwest::header::HeaderValue;
use serde_json::{Value, json};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const BIN: &str = env!("CARGO_BIN_EXE_bcci-gateway");
const TOKEN: &str = "admin-test-condao-token";
const HANOI_TOKEN: &str = "admin-test-hanoi-token";
const ADMIN_TOKEN: &str = "admin-test-operator-token";
const CONDAO: &str = "motcua-condao";
const HANOI: &str = "motcua-hanoi";
const OPERATOR: &str = "Trần Thị Bình";
/// A clerk's account: reads only.
const VIEWER_TOKEN: &str = "admin-test-viewer-lan-token";
const VIEWER: &str = "Lê Thị Lan";
/// An operator's account: acts under its own name.
const ACCOUNT_TOKEN: &str = "admin-test-operator-hung-token";
const ACCOUNT: &str = "Phạm Văn Hùng";

mod console;

fn config(dir: &Path, postal_url: &str, callback_url: &str) -> TestConfig {
    TestConfig::sqlite(&dir.join("bcci.db"), postal_url, callback_url)
        .log("level = \"warn\"")
        .postal("timeout_ms = 500\nmax_requests_per_second = 100000")
        .intake("timeout_ms = 1000")
        .client(CONDAO, &[TOKEN])
        .rate(100000)
        .client(HANOI, &[HANOI_TOKEN])
        .rate(100000)
        .client_extra("callback_format = \"xml\"")
        .admin(&[ADMIN_TOKEN])
        .account(VIEWER, "viewer", VIEWER_TOKEN)
        .account(ACCOUNT, "operator", ACCOUNT_TOKEN)
        .extra("[retry]\ninitial_ms = 10\nmax_ms = 50\ndeadline_s = 1")
}

/// (webhook-id, sequence) of the accepted callbacks, in arrival order.
fn accepted(receiver: &TestReceiver) -> Vec<(String, u64)> {
    receiver
        .accepted()
        .into_iter()
        .map(|r| (r.webhook_id, r.body["sequence"].as_u64().unwrap()))
        .collect()
}

/// The gateway with workers driven by the test and a manual clock; Vietnam
/// Post is a closed port.
struct Gateway {
    intake: SocketAddr,
    admin: SocketAddr,
    store: SharedStore,
    dispatcher: Arc<Dispatcher>,
    relay: Arc<Relay>,
    clock: Arc<ManualClock>,
    receiver: TestReceiver,
    http: reqwest::Client,
    db: PathBuf,
    lifecycle: bcci_gateway::lifecycle::Lifecycle,
    _dir: tempfile::TempDir,
}

async fn gateway() -> Gateway {
    gateway_with(NOWHERE).await
}

async fn gateway_with(postal_url: &str) -> Gateway {
    let receiver = TestReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = config(dir.path(), postal_url, &receiver.url()).settings();
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_str("2026-11-25T08:00:00+07:00").unwrap(),
    ));
    let app = crate::helpers::manual_app(settings, clock.clone()).await;
    let gw = Gateway {
        intake: app.intake_addr(),
        admin: app.admin_addr(),
        store: app.store(),
        dispatcher: app.dispatcher(),
        relay: app.relay(),
        clock,
        receiver,
        http: reqwest::Client::new(),
        db: dir.path().join("bcci.db"),
        lifecycle: app.lifecycle(),
        _dir: dir,
    };
    tokio::spawn(app.run_until_stopped());
    gw
}

fn request_body(request_id: &str) -> Value {
    crate::common::valid_request(request_id)
}

/// What applying carrier events needs: each client's callback format.
fn context() -> EventContext {
    EventContext {
        formats: HashMap::from([
            (CONDAO.to_owned(), BodyFormat::Json),
            (HANOI.to_owned(), BodyFormat::Xml),
        ]),
        ..EventContext::default()
    }
}

fn ts(s: &str) -> Timestamp {
    Timestamp::from_str(s).unwrap()
}

/// A carrier status report for the handoff's order `EE<n>VN`, with a raw
/// record carrying personal data.
fn carrier_event(id: &HandoffId, n: u32, code: i64, at: Timestamp) -> IncomingCarrierEvent {
    let tracking = format!("EE{n:09}VN");
    IncomingCarrierEvent {
        sale_order_code: Some(id.to_string()),
        tracking_number: Some(tracking.clone()),
        original_id: Some(format!("ORIG{n}")),
        order: Some(PostalOrder {
            order_id: format!("HDR{n}"),
            original_id: format!("ORIG{n}"),
            tracking_number: Some(tracking),
            postage_vnd: Some(23000),
        }),
        event: CarrierEvent {
            source: Source::Webhook,
            code,
            occurred_at: at,
        },
        carrier: CarrierInfo {
            code,
            text: Some(format!("status {code}")),
            location: None,
        },
        raw: Some(format!(
            r#"{{"receiverName":"Nguyễn Văn An","status":{code}}}"#
        )),
        cod_amount: None,
    }
}

/// Reads a problem document's status, slug and sorted field names.
fn problem(answer: &(u16, Value)) -> (u16, String, Vec<String>) {
    let (status, doc) = answer;
    let slug = doc["type"]
        .as_str()
        .and_then(|t| t.strip_prefix("urn:bcci:problem:"))
        .unwrap_or_else(|| panic!("not a problem: {doc}"))
        .to_owned();
    let mut fields: Vec<String> = doc["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect();
    fields.sort();
    (*status, slug, fields)
}

impl Gateway {
    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn submit_as(&self, token: &str, body: Value) -> HandoffId {
        let r = self
            .http
            .post(format!("http://{}/v1/handoffs", self.intake))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let doc: Value = r.json().await.unwrap();
        HandoffId::parse(doc["id"].as_str().unwrap()).unwrap()
    }

    async fn submit(&self, request_id: &str) -> HandoffId {
        self.submit_as(TOKEN, request_body(request_id)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.admin_url(path)).bearer_auth(ADMIN_TOKEN))
            .await
    }

    async fn post(&self, path: &str, operator: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(name) = operator {
            req = req.header(
                "x-operator",
                HeaderValue::from_bytes(name.as_bytes()).unwrap(),
            );
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.send(req).await
    }

    /// Lets the create job fail: Vietnam Post cannot be reached before the
    /// one-second retry deadline.
    async fn fail(&self, id: &HandoffId) {
        self.dispatcher.run_until_idle().await.unwrap();
        self.clock.advance(SignedDuration::from_secs(2));
        self.dispatcher.run_until_idle().await.unwrap();
        let h = self.store.handoff(None, id).await.unwrap().unwrap();
        assert_eq!(h.status, Status::Failed, "{h:?}");
    }

    /// Callbacks are attempted until their retry deadline passes.
    async fn let_callbacks_die(&self) {
        self.relay.run_until_idle().await.unwrap();
        self.clock.advance(SignedDuration::from_secs(2));
        self.relay.run_until_idle().await.unwrap();
    }

    async fn events(&self, id: &HandoffId, n: u32, codes: &[(i64, Timestamp)], now: Timestamp) {
        let events = codes
            .iter()
            .map(|&(code, at)| carrier_event(id, n, code, at))
            .collect();
        self.store
            .apply_carrier_events(events, &context(), now)
            .await
            .unwrap();
    }

    async fn db(&self) -> SqlitePool {
        pool(&self.db).await
    }
}

async fn pool(db: &Path) -> SqlitePool {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", db.display()))
        .unwrap()
        .busy_timeout(Duration::from_secs(10));
    SqlitePool::connect_with(options).await.unwrap()
}

#[tokio::test]
async fn every_admin_endpoint_wants_an_admin_token_and_every_action_an_operator() {
    let gw = gateway().await;
    let id = gw.submit("AUTH-1").await;
    let unknown = HandoffId::new(1_764_000_000_000, 7);
    let resolve = json!({"status": "delivered", "note": "ok"});
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/admin/handoffs".into(), None),
        ("GET", format!("/v1/admin/handoffs/{id}"), None),
        ("POST", format!("/v1/admin/handoffs/{id}/replay"), None),
        (
            "POST",
            format!("/v1/admin/handoffs/{id}/resolve"),
            Some(resolve.clone()),
        ),
        ("POST", format!("/v1/admin/handoffs/{id}/erase"), None),
        ("GET", "/v1/admin/callbacks?state=dead".into(), None),
        ("POST", "/v1/admin/callbacks/msg_x/replay".into(), None),
        ("POST", "/v1/admin/callbacks/replay?state=dead".into(), None),
        (
            "GET",
            "/v1/admin/stats?from=2026-11-01&to=2026-11-30".into(),
            None,
        ),
    ];
    for (method, path, body) in &endpoints {
        for token in [None, Some("wrong"), Some(TOKEN)] {
            let mut req = match *method {
                "GET" => gw.http.get(gw.admin_url(path)),
                _ => gw.http.post(gw.admin_url(path)).header("x-operator", "An"),
            };
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let answer = gw.send(req).await;
            assert_eq!(
                problem(&answer),
                (401, "unauthorized".into(), vec![]),
                "{method} {path} with {token:?}"
            );
        }
        if *method == "POST" {
            for operator in [None, Some("   ")] {
                let answer = gw.post(path, operator, body.clone()).await;
                assert_eq!(
                    problem(&answer),
                    (422, "invalid".into(), vec!["X-Operator".into()]),
                    "{path} with {operator:?}"
                );
            }
        }
    }
    // Every fault of a resolve is named at once; the body's form comes first.
    let answer = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/resolve"),
            None,
            Some(json!({"status": "lost", "extra": 1})),
        )
        .await;
    assert_eq!(
        problem(&answer).2,
        ["X-Operator", "extra", "status"],
        "{answer:?}"
    );
    let not_json = gw
        .send(
            gw.http
                .post(gw.admin_url(&format!("/v1/admin/handoffs/{id}/resolve")))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "text/plain")
                .body("delivered"),
        )
        .await;
    assert_eq!(problem(&not_json).1, "unsupported-media-type");
    let malformed = gw
        .send(
            gw.http
                .post(gw.admin_url(&format!("/v1/admin/handoffs/{id}/resolve")))
                .bearer_auth(ADMIN_TOKEN)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
    assert_eq!(problem(&malformed).1, "malformed");
    // Unknown handoffs and callbacks.
    for path in [
        format!("/v1/admin/handoffs/{unknown}"),
        "/v1/admin/handoffs/not-an-id".into(),
    ] {
        assert_eq!(problem(&gw.get(&path).await).0, 404, "{path}");
    }
    for (path, body) in [
        (format!("/v1/admin/handoffs/{unknown}/replay"), None),
        (format!("/v1/admin/handoffs/{unknown}/erase"), None),
        (
            format!("/v1/admin/handoffs/{unknown}/resolve"),
            Some(resolve.clone()),
        ),
        ("/v1/admin/callbacks/msg_nothing/replay".into(), None),
    ] {
        let answer = gw.post(&path, Some(OPERATOR), body).await;
        assert_eq!(
            problem(&answer),
            (404, "not-found".into(), vec![]),
            "{path}"
        );
    }
    assert_eq!(problem(&gw.get("/v1/admin/nothing").await).0, 404);
    // Actions the status forbids.
    for (path, body) in [
        (format!("/v1/admin/handoffs/{id}/replay"), None),
        (format!("/v1/admin/handoffs/{id}/resolve"), Some(resolve)),
    ] {
        let answer = gw.post(&path, Some(OPERATOR), body).await;
        assert_eq!(problem(&answer), (409, "conflict".into(), vec![]), "{path}");
        assert!(
            answer.1["detail"].as_str().unwrap().contains("received"),
            "{answer:?}"
        );
    }
    // Bad queries.
    for (path, fields) in [
        ("/v1/admin/handoffs?status=lost", vec!["status"]),
        ("/v1/admin/handoffs?limit=0", vec!["limit"]),
        ("/v1/admin/handoffs?cursor=abc", vec!["cursor"]),
        ("/v1/admin/callbacks", vec!["state"]),
        ("/v1/admin/callbacks?state=pending", vec!["state"]),
        ("/v1/admin/callbacks?state=dead&limit=101", vec!["limit"]),
        ("/v1/admin/stats", vec!["from", "to"]),
        ("/v1/admin/stats?from=2026-11-5&to=2026-11-30", vec!["from"]),
        ("/v1/admin/stats?from=2026-11-30&to=2026-11-01", vec!["to"]),
    ] {
        let answer = gw.get(path).await;
        assert_eq!(
            problem(&answer),
            (
                422,
                "invalid".into(),
                fields.iter().map(|f| f.to_string()).collect()
            ),
            "{path}"
        );
    }
    let answer = gw
        .post("/v1/admin/callbacks/replay?state=held", None, None)
        .await;
    assert_eq!(problem(&answer).2, ["X-Operator", "state"]);
    // Refused requests leave nothing behind.
    assert!(gw.store.timeline(&id).await.unwrap().is_empty());
    assert_eq!(
        gw.store.handoff(None, &id).await.unwrap().unwrap().status,
        Status::Received
    );
}

#[tokio::test]
async fn operators_search_across_clients_page_through_and_see_the_client_and_timeline() {
    let gw = gateway().await;
    // A second apart, so the ids (ULIDs of the creation time) sort newest first.
    let a = gw.submit("SEARCH-1").await;
    gw.clock.advance(SignedDuration::from_secs(1));
    let mut other_dossier = request_body("SEARCH-2");
    other_dossier["dossier_code"] = json!("000.00.21.H79-261125-0002");
    let b = gw.submit_as(TOKEN, other_dossier).await;
    gw.clock.advance(SignedDuration::from_secs(1));
    let c = gw.submit_as(HANOI_TOKEN, request_body("SEARCH-1")).await;
    gw.events(&b, 1, &[(6, gw.now())], gw.now()).await;

    let ids = |doc: &Value| -> Vec<String> {
        doc["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = gw.get("/v1/admin/handoffs").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&all), [c.to_string(), b.to_string(), a.to_string()]);
    assert_eq!(all["items"][0]["client"], HANOI);
    assert_eq!(all["items"][2]["client"], CONDAO);
    assert!(all["items"][0].get("timeline").is_none());
    assert_eq!(all["next_cursor"], Value::Null);
    for (query, expected) in [
        (format!("client={HANOI}"), vec![c.to_string()]),
        (
            "dossier_code=000.00.21.H79-261125-0002".into(),
            vec![b.to_string()],
        ),
        ("status=received".into(), vec![c.to_string(), a.to_string()]),
        ("status=picked_up".into(), vec![b.to_string()]),
        ("tracking_number=EE000000001VN".into(), vec![b.to_string()]),
        (
            format!("client={CONDAO}&status=received"),
            vec![a.to_string()],
        ),
        ("status=failed".into(), vec![]),
    ] {
        let (status, doc) = gw.get(&format!("/v1/admin/handoffs?{query}")).await;
        assert_eq!(status, 200);
        assert_eq!(ids(&doc), expected, "{query}");
    }
    let (_, first) = gw.get("/v1/admin/handoffs?limit=2").await;
    assert_eq!(ids(&first), [c.to_string(), b.to_string()]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, rest) = gw
        .get(&format!("/v1/admin/handoffs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(ids(&rest), [a.to_string()]);
    assert_eq!(rest["next_cursor"], Value::Null);

    let (status, shown) = gw.get(&format!("/v1/admin/handoffs/{b}")).await;
    assert_eq!(status, 200);
    assert_eq!(shown["id"], b.to_string());
    assert_eq!(shown["client"], CONDAO);
    assert_eq!(shown["status"], "picked_up");
    let timeline = shown["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 2, "{shown}");
    assert_eq!(timeline[1]["status"], "picked_up");
}

/// Vietnam Post that gives tokens, turns every CreateOrder away with 429
/// (an answer that proves no order was made) and lists no orders.
async fn busy_postal() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/GetAccessToken"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": true, "errorMessage": null, "token": "tok-1"})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/CreateOrder"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/GetListOrder"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .mount(&server)
        .await;
    server
}

/// The Vietnam Post calls received so far, token requests left out.
async fn postal_calls(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.url.path().to_owned())
        .filter(|p| p != "/GetAccessToken")
        .collect()
}

#[tokio::test]
async fn a_replayed_failed_handoff_is_received_relayed_and_its_job_begins_with_a_lookup() {
    let postal = busy_postal().await;
    let gw = gateway_with(&postal.uri()).await;
    let id = gw.submit("REPLAY-1").await;
    gw.fail(&id).await;
    // At least the first attempt and one after the clock moved; a retry whose
    // jittered wait rounds to 0 ms is due at once, so there may be more.
    let calls = postal_calls(&postal).await;
    let creates = calls.len();
    assert!(creates >= 2, "{calls:?}");
    assert!(calls.iter().all(|c| c == "/CreateOrder"), "{calls:?}");
    let db = gw.db().await;
    let job = |db: SqlitePool| async move {
        sqlx::query_as::<_, (String, i64, Option<i64>, Option<i64>, String)>(
            "SELECT state, attempts, first_attempt_at, first_create_at, next_step FROM postal_jobs \
             WHERE operation = 'create'",
        )
        .fetch_one(&db)
        .await
        .unwrap()
    };
    let before = job(db.clone()).await;
    assert_eq!(before.0, "dead");
    assert!(before.3.is_some(), "a create was attempted");

    gw.clock.advance(SignedDuration::from_secs(60));
    let (status, doc) = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["status"], "received");
    assert_eq!(doc["reason"], Value::Null);
    assert_eq!(doc["client"], CONDAO);
    let last = doc["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last,
        json!({"sequence": 2, "status": "received", "effect": "applied",
               "occurred_at": "2026-11-25T08:01:02+07:00", "source": "operator", "operator": OPERATOR})
    );
    // Relayed: the callback after the `failed` one.
    let callbacks = gw.store.callbacks_of(&id).await.unwrap();
    assert_eq!(callbacks.len(), 2);
    let (sequence, kind, body) = &callbacks[1];
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!((*sequence, kind.as_str()), (2, "handoff.status_changed"));
    assert_eq!(body["status"], "received");
    assert_eq!(body["previous_status"], "failed");
    // A fresh retry budget, the first create day kept, a lookup first.
    let after = job(db.clone()).await;
    assert_eq!(
        after,
        ("pending".into(), 0, None, before.3, "lookup".into())
    );
    gw.dispatcher.run_until_idle().await.unwrap();
    let calls = postal_calls(&postal).await;
    assert_eq!(
        calls.get(creates).map(String::as_str),
        Some("/GetListOrder"),
        "the first call after the replay is a lookup: {calls:?}"
    );
    let next = job(db).await;
    assert_eq!(next.0, "pending");
    assert!(next.1 >= 1);
    let h = gw.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::Received, "the retry deadline restarted");
    // Only a failed handoff can be replayed.
    let again = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(problem(&again).0, 409);
}

#[tokio::test]
async fn dead_and_held_callbacks_are_listed_and_replayed_in_order_with_their_webhook_ids() {
    let gw = gateway().await;
    gw.receiver.set_status(StatusCode::SERVICE_UNAVAILABLE);
    let id = gw.submit("CALLBACKS-1").await;
    gw.fail(&id).await;
    gw.let_callbacks_die().await;
    // A new change queues behind the dead callback: it is held.
    let (status, _) = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200);

    let (status, dead) = gw.get("/v1/admin/callbacks?state=dead").await;
    assert_eq!(status, 200);
    let dead_items = dead["items"].as_array().unwrap();
    assert_eq!(dead_items.len(), 1, "{dead}");
    let first = &dead_items[0];
    assert_eq!(first["handoff_id"], id.to_string());
    assert_eq!(first["client"], CONDAO);
    assert_eq!(first["sequence"], 1);
    assert_eq!(first["type"], "handoff.status_changed");
    assert_eq!(first["state"], "dead");
    assert_eq!(first["last_status"], 503);
    assert_eq!(first["next_attempt_at"], Value::Null);
    assert_eq!(first["event"]["status"], "failed");
    let first_id = first["id"].as_str().unwrap().to_owned();
    let (_, held) = gw.get("/v1/admin/callbacks?state=held").await;
    let held_items = held["items"].as_array().unwrap();
    assert_eq!(held_items.len(), 1, "{held}");
    assert_eq!(held_items[0]["sequence"], 2);
    assert_eq!(held_items[0]["state"], "held");
    let held_id = held_items[0]["id"].as_str().unwrap().to_owned();

    let answer = gw
        .post(
            &format!("/v1/admin/callbacks/{held_id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(problem(&answer).0, 409);
    let (status, replayed) = gw
        .post(
            &format!("/v1/admin/callbacks/{first_id}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(replayed["state"], "pending");
    assert_eq!(replayed["attempts"], 0);
    let timeline = gw.store.timeline(&id).await.unwrap();
    let note = timeline.last().unwrap();
    assert_eq!(note.source, Source::Operator);
    assert_eq!(note.reason.as_deref(), Some("callback 1 replayed"));
    assert_eq!(note.operator.as_deref(), Some(OPERATOR));
    assert_eq!(note.sequence, None);

    // Still down: it dies again, and the bulk replay sends it once more.
    gw.let_callbacks_die().await;
    let (_, dead) = gw.get("/v1/admin/callbacks?state=dead").await;
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    let (status, bulk) = gw
        .post(
            "/v1/admin/callbacks/replay?state=dead",
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!((status, bulk), (202, json!({"replayed": 1})));
    gw.receiver.set_status(StatusCode::NO_CONTENT);
    gw.relay.run_until_idle().await.unwrap();
    assert_eq!(
        accepted(&gw.receiver),
        [(first_id, 1), (held_id, 2)],
        "in sequence order, with the same webhook-ids"
    );
    for state in ["dead", "held"] {
        let (_, doc) = gw.get(&format!("/v1/admin/callbacks?state={state}")).await;
        assert_eq!(doc["items"], json!([]), "{state}");
    }
}

#[tokio::test]
async fn resolve_closes_a_partially_delivered_handoff_and_relays_it_with_the_note() {
    let gw = gateway().await;
    let id = gw.submit("RESOLVE-1").await;
    let t = gw.now();
    gw.events(
        &id,
        1,
        &[
            (1, t),
            (6, t + SignedDuration::from_hours(1)),
            (20, t + SignedDuration::from_hours(48)),
        ],
        t,
    )
    .await;
    assert_eq!(
        gw.store.handoff(None, &id).await.unwrap().unwrap().status,
        Status::PartiallyDelivered
    );
    let note = "Phần còn lại đã hoàn về bộ phận một cửa";
    let (status, doc) = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/resolve"),
            Some(OPERATOR),
            Some(json!({"status": "returned", "note": note})),
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["status"], "returned");
    assert_eq!(doc["reason"], note);
    let last = doc["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "operator");
    assert_eq!(last["status"], "returned");
    assert_eq!(last["reason"], note);
    assert_eq!(last["operator"], OPERATOR);
    let callbacks = gw.store.callbacks_of(&id).await.unwrap();
    let sequences: Vec<u64> = callbacks.iter().map(|c| c.0).collect();
    assert_eq!(sequences, [1, 2, 3, 4]);
    assert_eq!(last["sequence"], 4);
    let body: Value = serde_json::from_slice(&callbacks[3].2).unwrap();
    assert_eq!(body["status"], "returned");
    assert_eq!(body["previous_status"], "partially_delivered");
    assert_eq!(body["reason"], note);
    let again = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/resolve"),
            Some(OPERATOR),
            Some(json!({"status": "delivered"})),
        )
        .await;
    assert_eq!(problem(&again).0, 409);
}

#[tokio::test]
async fn erasure_clears_personal_data_once_is_recorded_and_leaves_nothing_to_dispatch() {
    let gw = gateway().await;
    let id = gw.submit("ERASE-1").await;
    let t = gw.now();
    gw.events(&id, 1, &[(1, t), (6, t + SignedDuration::from_hours(1))], t)
        .await;
    let db = gw.db().await;
    let personal = |db: SqlitePool, id: HandoffId| async move {
        let details: Option<String> =
            sqlx::query_scalar("SELECT details FROM handoffs WHERE id = ?")
                .bind(id.as_str())
                .fetch_one(&db)
                .await
                .unwrap();
        let raws: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM timeline WHERE handoff_id = ? AND raw IS NOT NULL",
        )
        .bind(id.as_str())
        .fetch_one(&db)
        .await
        .unwrap();
        (details.is_some(), raws)
    };
    assert_eq!(personal(db.clone(), id.clone()).await, (true, 2));
    let (status, doc) = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/erase"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["status"], "picked_up");
    assert_eq!(personal(db.clone(), id.clone()).await, (false, 0));
    let timeline = doc["timeline"].as_array().unwrap();
    assert_eq!(
        timeline.len(),
        4,
        "adoption, two carrier reports, the erasure"
    );
    let last = &timeline[3];
    assert_eq!(last["source"], "operator");
    assert_eq!(last["effect"], "annotation");
    assert_eq!(last["status"], Value::Null);
    assert_eq!(last["sequence"], Value::Null);
    assert_eq!(last["reason"], "personal data erased");
    assert_eq!(last["operator"], OPERATOR);
    // Erasing again changes nothing.
    let (status, again) = gw
        .post(
            &format!("/v1/admin/handoffs/{id}/erase"),
            Some("Lê Văn C"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(again["timeline"], doc["timeline"]);

    // A handoff erased before its order exists cannot be dispatched, nor replayed.
    let waiting = gw.submit("ERASE-2").await;
    let (status, _) = gw
        .post(
            &format!("/v1/admin/handoffs/{waiting}/erase"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(status, 200);
    gw.dispatcher.run_until_idle().await.unwrap();
    let h = gw.store.handoff(None, &waiting).await.unwrap().unwrap();
    assert_eq!(h.status, Status::Failed);
    assert!(h.reason.unwrap().contains("erased"));
    let replay = gw
        .post(
            &format!("/v1/admin/handoffs/{waiting}/replay"),
            Some(OPERATOR),
            None,
        )
        .await;
    assert_eq!(problem(&replay).0, 409);
    assert!(replay.1["detail"].as_str().unwrap().contains("erased"));
}

/// The statistics dataset: handoffs created, moved and timed through the
/// store, around the edges of Vietnam dates.
async fn stats_dataset(store: &SharedStore, db: &Path) -> String {
    let rules = RequestRules {
        service_codes: vec!["CTN009".into()],
        pickup_fees_allowed: false,
    };
    let mut n = 0u32;
    let mut create = async |client: &str, pickup: bool, created: &str| {
        n += 1;
        let mut body = request_body(&format!("STATS-{n}"));
        if pickup {
            body["kind"] = json!("pickup");
            body["cod_amount_vnd"] = json!(0);
        }
        let request = HandoffRequest::parse(&body, Origin::Json, &rules).unwrap();
        let now = ts(created);
        let id = HandoffId::new(now.as_millisecond() as u64, u128::from(n));
        store
            .create_handoff(NewHandoff::new(id.clone(), client.into(), request, now))
            .await
            .unwrap();
        (id, n, now)
    };
    let s = SignedDuration::from_secs;
    let h = SignedDuration::from_hours;
    let apply = async |id: &HandoffId, n: u32, codes: &[(i64, Timestamp)], now: Timestamp| {
        let events = codes
            .iter()
            .map(|&(code, at)| carrier_event(id, n, code, at))
            .collect();
        store
            .apply_carrier_events(events, &context(), now)
            .await
            .unwrap();
    };
    let pool = pool(db).await;
    let set_sla = async |id: &HandoffId, due: Timestamp| {
        sqlx::query("UPDATE handoffs SET sla_due_at = ? WHERE id = ?")
            .bind(due.as_millisecond())
            .bind(id.as_str())
            .execute(&pool)
            .await
            .unwrap();
    };
    // Delivered on time: Vietnam date 25, though the UTC date is the 24th.
    let (h1, n1, t1) = create(CONDAO, false, "2026-11-25T00:10:00+07:00").await;
    apply(&h1, n1, &[(1, t1 + s(60))], t1 + s(60)).await;
    apply(&h1, n1, &[(6, t1 + h(1)), (14, t1 + h(24))], t1 + h(24)).await;
    set_sla(&h1, t1 + h(48)).await;
    // Delivered late.
    let (h2, n2, t2) = create(CONDAO, false, "2026-11-25T09:00:00+07:00").await;
    apply(&h2, n2, &[(1, t2 + s(120))], t2 + s(120)).await;
    apply(&h2, n2, &[(6, t2 + h(3)), (14, t2 + h(72))], t2 + h(72)).await;
    set_sla(&h2, t2 + h(48)).await;
    // Returned: a due time but no delivery, neither on time nor late.
    let (h3, n3, t3) = create(CONDAO, false, "2026-11-26T10:00:00+07:00").await;
    apply(&h3, n3, &[(1, t3 + s(30))], t3 + s(30)).await;
    apply(&h3, n3, &[(6, t3 + h(2)), (19, t3 + h(96))], t3 + h(96)).await;
    set_sla(&h3, t3 + h(48)).await;
    // Rejected and failed by the postal job.
    let (h4, _, t4) = create(CONDAO, false, "2026-11-26T11:00:00+07:00").await;
    let (h5, _, _) = create(CONDAO, false, "2026-11-26T12:00:00+07:00").await;
    // Cancelled after its order was made.
    let (h6, n6, t6) = create(CONDAO, false, "2026-11-26T13:00:00+07:00").await;
    apply(&h6, n6, &[(1, t6 + s(90))], t6 + s(90)).await;
    apply(&h6, n6, &[(9, t6 + h(1))], t6 + h(1)).await;
    // Outside the dates: the 24th in Vietnam (the 24th in UTC too) and the 27th.
    create(CONDAO, false, "2026-11-24T23:30:00+07:00").await;
    create(CONDAO, false, "2026-11-27T00:00:00+07:00").await;
    // Another client's pickup, still waiting.
    create(HANOI, true, "2026-11-26T23:59:59+07:00").await;
    let now = t4 + h(100);
    let jobs = store
        .claim_postal_jobs("stats-test", now, Duration::from_secs(60), 100)
        .await
        .unwrap();
    for job in &jobs {
        let outcome = if job.handoff.id == h4 {
            PostalOutcome::Reject {
                reason: "Địa chỉ người nhận không hợp lệ".into(),
                format: BodyFormat::Json,
            }
        } else if job.handoff.id == h5 {
            PostalOutcome::Fail {
                reason: "no answer before the retry deadline".into(),
                format: BodyFormat::Json,
            }
        } else {
            continue;
        };
        assert!(
            store
                .finish_postal_job(job, "stats-test", now, outcome)
                .await
                .unwrap()
        );
    }
    request_body("x")["agency"]["code"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn statistics_count_and_time_the_handoffs_created_on_the_vietnam_dates_asked() {
    let gw = gateway().await;
    let agency = stats_dataset(&gw.store, &gw.db).await;
    let (status, doc) = gw
        .get("/v1/admin/stats?from=2026-11-25&to=2026-11-26")
        .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(
        doc,
        json!({
            "from": "2026-11-25", "to": "2026-11-26",
            "rows": [
                {"client": CONDAO, "agency_code": agency, "kind": "return",
                 "created": 6, "delivered": 2, "returned": 1, "rejected": 1, "failed": 1, "cancelled": 1,
                 "on_time": 1, "late": 1,
                 "median_order_s": 75, "median_pickup_s": 7170, "median_delivery_s": 165600},
                {"client": HANOI, "agency_code": agency, "kind": "pickup",
                 "created": 1, "delivered": 0, "returned": 0, "rejected": 0, "failed": 0, "cancelled": 0,
                 "on_time": 0, "late": 0,
                 "median_order_s": null, "median_pickup_s": null, "median_delivery_s": null}
            ]
        })
    );
    let r = gw
        .http
        .get(gw.admin_url("/v1/admin/stats?from=2026-11-25&to=2026-11-26"))
        .bearer_auth(ADMIN_TOKEN)
        .header("accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "client,agency_code,kind,created,delivered,returned,rejected,failed,cancelled,on_time,late,median_order_s,median_pickup_s,median_delivery_s".to_owned(),
            format!("{CONDAO},{agency},return,6,2,1,1,1,1,1,1,75,7170,165600"),
            format!("{HANOI},{agency},pickup,1,0,0,0,0,0,0,0,,,"),
        ]
    );
    // One day only: the two handoffs created on the 25th.
    let (_, day) = gw
        .get("/v1/admin/stats?from=2026-11-25&to=2026-11-25")
        .await;
    let rows = day["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["created"], 2);
    assert_eq!(rows[0]["median_order_s"], 90);
}

fn admin_cli(config: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin").arg("--config").arg(config).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("BCCI_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn stdout_lines(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr_of(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A stopped store: failed, partially delivered and waiting handoffs, two
/// dead callbacks and two held behind one of them.
struct StoppedStore {
    config: PathBuf,
    failed: HandoffId,
    partial: HandoffId,
    waiting: HandoffId,
    _dir: tempfile::TempDir,
}

async fn stopped_store() -> StoppedStore {
    let dir = tempfile::tempdir().unwrap();
    let test_config = config(dir.path(), NOWHERE, &format!("{NOWHERE}/callback"));
    let config = dir.path().join("config.toml");
    test_config.write(&config);
    let settings = test_config.settings();
    let store = bcci_gateway::store::open(&settings.store.url, &settings.store)
        .await
        .unwrap();
    let rules = RequestRules {
        service_codes: vec!["CTN009".into()],
        pickup_fees_allowed: false,
    };
    let t = ts("2026-11-25T09:00:00+07:00");
    let mut ids = Vec::new();
    for (i, request_id) in ["CLI-1", "CLI-2", "CLI-3"].iter().enumerate() {
        let request =
            HandoffRequest::parse(&request_body(request_id), Origin::Json, &rules).unwrap();
        let id = HandoffId::new(t.as_millisecond() as u64 + i as u64, 1);
        store
            .create_handoff(NewHandoff::new(
                id.clone(),
                CONDAO.into(),
                request,
                t + SignedDuration::from_secs(i as i64),
            ))
            .await
            .unwrap();
        ids.push(id);
    }
    let (failed, partial, waiting) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let events = [
        (1, t),
        (6, t + SignedDuration::from_hours(1)),
        (20, t + SignedDuration::from_hours(30)),
    ]
    .iter()
    .map(|&(code, at)| carrier_event(&partial, 7, code, at))
    .collect();
    store
        .apply_carrier_events(events, &context(), t)
        .await
        .unwrap();
    let now = t + SignedDuration::from_hours(40);
    for job in store
        .claim_postal_jobs("cli-test", now, Duration::from_secs(60), 10)
        .await
        .unwrap()
    {
        if job.handoff.id == failed {
            let outcome = PostalOutcome::Fail {
                reason: "no answer before the retry deadline".into(),
                format: BodyFormat::Json,
            };
            store
                .finish_postal_job(&job, "cli-test", now, outcome)
                .await
                .unwrap();
        }
    }
    for callback in store
        .claim_callbacks("cli-test", now, Duration::from_secs(60), 10)
        .await
        .unwrap()
    {
        let dead = CallbackOutcome::Dead {
            status: Some(503),
            error: "503 Service Unavailable".into(),
        };
        store
            .finish_callback(&callback, "cli-test", now, dead)
            .await
            .unwrap();
    }
    store.close().await;
    drop(store);
    StoppedStore {
        config,
        failed,
        partial,
        waiting,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_admin_command_line_acts_on_a_stopped_store() {
    let s = stopped_store().await;
    let cfg = s.config.as_path();
    let (failed, partial, waiting) = (
        s.failed.to_string(),
        s.partial.to_string(),
        s.waiting.to_string(),
    );

    let all = stdout_lines(&admin_cli(cfg, &["handoffs", "list"]));
    let listed: Vec<&str> = all.iter().map(|h| h["id"].as_str().unwrap()).collect();
    assert_eq!(listed, [&waiting, &partial, &failed]);
    assert!(all.iter().all(|h| h["client"] == CONDAO));
    let only = stdout_lines(&admin_cli(cfg, &["handoffs", "list", "--status", "failed"]));
    assert_eq!(only.len(), 1);
    assert_eq!(only[0]["id"], failed);
    let one = stdout_lines(&admin_cli(
        cfg,
        &[
            "handoffs",
            "list",
            "--client",
            CONDAO,
            "--dossier-code",
            "000.00.21.H79-261125-0001",
            "--limit",
            "1",
        ],
    ));
    assert_eq!(one.len(), 1);
    assert!(
        stderr_of(&admin_cli(cfg, &["handoffs", "list", "--status", "lost"]))
            .contains("not a handoff status")
    );

    let shown = stdout_lines(&admin_cli(cfg, &["handoffs", "show", &partial]));
    assert_eq!(shown[0]["status"], "partially_delivered");
    let timeline = shown[0]["timeline"].as_array().unwrap();
    assert_eq!(timeline.last().unwrap()["status"], "partially_delivered");
    let missing = HandoffId::new(1_764_000_000_000, 9).to_string();
    assert!(stderr_of(&admin_cli(cfg, &["handoffs", "show", &missing])).contains("no handoff"));

    let replayed = stdout_lines(&admin_cli(
        cfg,
        &["handoffs", "replay", &failed, "--operator", OPERATOR],
    ));
    assert_eq!(replayed[0]["status"], "received");
    let last = replayed[0]["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["operator"], OPERATOR);
    assert_eq!(last["source"], "operator");
    assert!(
        stderr_of(&admin_cli(
            cfg,
            &["handoffs", "replay", &failed, "--operator", OPERATOR]
        ))
        .contains("only a failed handoff")
    );

    let resolved = stdout_lines(&admin_cli(
        cfg,
        &[
            "handoffs",
            "resolve",
            &partial,
            "--status",
            "delivered",
            "--note",
            "Công dân xác nhận đã nhận đủ",
            "--operator",
            OPERATOR,
        ],
    ));
    assert_eq!(resolved[0]["status"], "delivered");
    assert_eq!(resolved[0]["reason"], "Công dân xác nhận đã nhận đủ");
    assert!(
        stderr_of(&admin_cli(
            cfg,
            &[
                "handoffs",
                "resolve",
                &waiting,
                "--status",
                "lost",
                "--operator",
                OPERATOR
            ]
        ))
        .contains("delivered or returned")
    );

    let erased = stdout_lines(&admin_cli(
        cfg,
        &["handoffs", "erase", &waiting, "--operator", OPERATOR],
    ));
    let last = erased[0]["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["reason"], "personal data erased");

    let dead = stdout_lines(&admin_cli(cfg, &["callbacks", "list", "--state", "dead"]));
    assert_eq!(dead.len(), 2, "{dead:?}");
    let held = stdout_lines(&admin_cli(cfg, &["callbacks", "list", "--state", "held"]));
    let held_sequences: Vec<u64> = held
        .iter()
        .map(|c| c["sequence"].as_u64().unwrap())
        .collect();
    // The partial handoff's 2 and 3, its resolution's 4, and the replay's 2.
    assert_eq!(held.len(), 4, "{held:?}");
    assert!(held_sequences.contains(&4));
    let partial_dead = dead.iter().find(|c| c["handoff_id"] == partial).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = stdout_lines(&admin_cli(
        cfg,
        &["callbacks", "replay", &partial_dead, "--operator", OPERATOR],
    ));
    assert_eq!(one[0]["state"], "pending");
    assert!(
        stderr_of(&admin_cli(
            cfg,
            &["callbacks", "replay", &partial_dead, "--operator", OPERATOR]
        ))
        .contains("only a dead callback")
    );
    let all = stdout_lines(&admin_cli(
        cfg,
        &["callbacks", "replay", "--all-dead", "--operator", OPERATOR],
    ));
    assert_eq!(all, [json!({"replayed": 1})]);
    assert!(stdout_lines(&admin_cli(cfg, &["callbacks", "list", "--state", "dead"])).is_empty());

    let rows = stdout_lines(&admin_cli(
        cfg,
        &["stats", "--from", "2026-11-25", "--to", "2026-11-25"],
    ));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (&rows[0]["created"], &rows[0]["delivered"]),
        (&json!(3), &json!(1))
    );
    let out = admin_cli(
        cfg,
        &[
            "stats",
            "--from",
            "2026-11-25",
            "--to",
            "2026-11-25",
            "--csv",
        ],
    );
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("client,agency_code,kind,created,"));
    assert!(lines[1].starts_with(&format!("{CONDAO},")));
    assert!(
        stderr_of(&admin_cli(
            cfg,
            &["stats", "--from", "2026-11-26", "--to", "2026-11-25"]
        ))
        .contains("before")
    );
}

#[tokio::test]
async fn the_admin_command_line_refuses_a_store_the_gateway_holds() {
    let s = stopped_store().await;
    let settings = Settings::from_toml(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    let store = bcci_gateway::store::open(&settings.store.url, &settings.store)
        .await
        .unwrap();
    let err = stderr_of(&admin_cli(&s.config, &["handoffs", "list"]));
    assert!(err.contains("stop the gateway"), "{err}");
    assert!(err.contains("another bcci-gateway process"), "{err}");
    store.close().await;
}
