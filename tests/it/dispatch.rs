//! The dispatcher against a stateful fake Vietnam Post (wiremock) that
//! injects 5xx, 429, answers lost after a create, and token expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::config::TestConfig;
use crate::common::{Backend, TestStore, create_handoff, valid_request};
use bcci_gateway::app::{Application, Options};
use bcci_gateway::carrier::guard::BreakerSettings;
use bcci_gateway::clock::{Clock, ManualClock};
use bcci_gateway::config::Settings;
use bcci_gateway::domain::{HandoffId, Status};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

on_both_backends!(
    two_hundred_handoffs_through_faults_get_exactly_one_order_each,
    a_refusal_rejects_the_handoff_with_vietnam_posts_message_and_queues_its_callback,
    the_breaker_opens_on_consecutive_failures_and_closes_after_a_good_probe,
    a_refusal_after_an_ambiguous_attempt_is_confirmed_by_a_lookup_that_adopts_the_order,
    a_reset_after_the_request_was_sent_is_followed_by_a_lookup_that_finds_the_order,
    one_step_of_a_worker_claims_a_batch_of_jobs_and_carries_out_every_one,
    a_retry_whose_order_a_webhook_overtook_has_that_order_cancelled_as_a_duplicate,
    a_second_order_a_webhook_reports_after_the_handoff_owns_one_is_cancelled_once,
    a_cancel_after_uncertain_creates_waits_looks_up_and_cancels_every_order,
    an_order_reported_for_a_cancelled_handoff_is_cancelled_at_vietnam_post,
    an_order_created_without_an_item_code_takes_it_from_the_first_webhook_that_carries_it,
    an_order_without_an_item_code_is_reconciled_by_its_original_id,
    a_delivered_cod_return_stays_polled_until_vietnam_post_reports_the_cod_paid,
);

const TOKEN: &str = "dispatch-test-token";

/// What the fake does with one CreateOrder call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// 500 before anything is created.
    ServerError,
    /// The order is created, then the answer is lost (500).
    LostAnswer,
    /// The order is created, then the answer comes after the client's timeout.
    SlowAnswer,
    /// 429 with Retry-After.
    TooMany,
    /// 400 refusal.
    Refuse,
    /// The order is created and answered after 300 ms (within the timeout).
    Delayed,
}

#[derive(Debug, Clone)]
struct FakeOrder {
    sale_order_code: String,
    hdr_id: String,
    original_id: String,
    item_code: String,
}

#[derive(Debug, Clone)]
struct CreateCall {
    sale_order_code: String,
    at: Timestamp,
    fault: Fault,
}

struct FakeState {
    seed: u64,
    orders: Vec<FakeOrder>,
    creates: Vec<CreateCall>,
    token_generation: u64,
    calls_with_token: u64,
    logins: u64,
    /// Fault weights: cumulative thresholds over 0..100.
    plan: Vec<(u64, Fault)>,
    refuse_codes: Vec<String>,
    /// Codes whose first create fails with 500 and whose second creates the
    /// order but answers with a refusal (an order Vietnam Post did make).
    fail_then_refuse_codes: Vec<String>,
    /// Faults for the next creates, in order, before the plan's.
    scripted: std::collections::VecDeque<Fault>,
    /// originalIDs GetListOrder does not list yet (eventual consistency).
    unlisted: Vec<String>,
    /// Answers and listings carry no itemCode (a fresh order).
    withhold_item_codes: bool,
    /// The status history every order reports: (code, "dd/MM/yyyy", "HH:mm:ss");
    /// empty: picking up since the clock's start.
    history: Vec<(i64, &'static str, &'static str)>,
}

#[derive(Clone)]
struct FakeVnPost {
    state: Arc<Mutex<FakeState>>,
    clock: Arc<ManualClock>,
    /// Stale tokens are refused after this many calls.
    expire_every: u64,
}

impl FakeVnPost {
    fn new(clock: Arc<ManualClock>, plan: Vec<(u64, Fault)>) -> Self {
        Self {
            state: Arc::new(Mutex::new(FakeState {
                seed: 0x5eed,
                orders: Vec::new(),
                creates: Vec::new(),
                token_generation: 0,
                calls_with_token: 0,
                logins: 0,
                plan,
                refuse_codes: Vec::new(),
                fail_then_refuse_codes: Vec::new(),
                scripted: Default::default(),
                unlisted: Vec::new(),
                withhold_item_codes: false,
                history: Vec::new(),
            })),
            clock,
            expire_every: 25,
        }
    }

    fn roll(s: &mut FakeState) -> u64 {
        s.seed = s
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s.seed >> 33) % 100
    }

    fn token_ok(&self, s: &mut FakeState, req: &Request) -> bool {
        let Some(t) = req.headers.get("token").and_then(|v| v.to_str().ok()) else {
            return false;
        };
        s.calls_with_token += 1;
        if s.calls_with_token.is_multiple_of(self.expire_every) {
            // Every token issued so far expires.
            s.token_generation += 1;
        }
        t == format!("tok-{}", s.token_generation)
    }

    fn record(o: &FakeOrder, withhold_item_code: bool) -> Value {
        let mut r = json!({
            "orderHdrID": o.hdr_id, "originalID": o.original_id, "itemCode": o.item_code,
            "saleOrderCode": o.sale_order_code, "status": 1, "totalFee": 23000
        });
        if withhold_item_code {
            r.as_object_mut().unwrap().remove("itemCode");
        }
        r
    }
}

impl Respond for FakeVnPost {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut s = self.state.lock().unwrap();
        match req.url.path() {
            p if p.ends_with("/GetAccessToken") => {
                s.logins += 1;
                s.token_generation += 1;
                ResponseTemplate::new(200).set_body_json(json!({
                    "success": true, "errorMessage": null, "token": format!("tok-{}", s.token_generation)
                }))
            }
            _ if !self.token_ok(&mut s, req) => ResponseTemplate::new(401),
            p if p.ends_with("/CreateOrder") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let code = body["informationOrder"]["saleOrderCode"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let roll = Self::roll(&mut s);
                let mut fault = s
                    .plan
                    .iter()
                    .find(|(upto, _)| roll < *upto)
                    .map_or(Fault::None, |(_, f)| *f);
                if let Some(scripted) = s.scripted.pop_front() {
                    fault = scripted;
                }
                if s.refuse_codes.contains(&code) {
                    fault = Fault::Refuse;
                }
                let tries = s
                    .creates
                    .iter()
                    .filter(|c| c.sale_order_code == code)
                    .count();
                let refuse_after_create = s.fail_then_refuse_codes.contains(&code) && tries == 1;
                if s.fail_then_refuse_codes.contains(&code) {
                    fault = if tries == 0 {
                        Fault::ServerError
                    } else {
                        Fault::Refuse
                    };
                }
                s.creates.push(CreateCall {
                    sale_order_code: code.clone(),
                    at: self.clock.now(),
                    fault,
                });
                let create = |s: &mut FakeState| {
                    let n = s.orders.len() + 1;
                    let order = FakeOrder {
                        sale_order_code: code.clone(),
                        hdr_id: format!("HDR{n:06}"),
                        original_id: format!("ORIG{n:06}"),
                        item_code: format!("BK{n:09}VN"),
                    };
                    s.orders.push(order.clone());
                    order
                };
                let withhold = s.withhold_item_codes;
                match fault {
                    Fault::None => {
                        let order = create(&mut s);
                        ResponseTemplate::new(200)
                            .set_body_json(json!({"data": Self::record(&order, withhold)}))
                    }
                    Fault::Delayed => {
                        let order = create(&mut s);
                        ResponseTemplate::new(200)
                            .set_body_json(Self::record(&order, withhold))
                            .set_delay(Duration::from_millis(300))
                    }
                    Fault::ServerError => ResponseTemplate::new(500),
                    Fault::LostAnswer => {
                        create(&mut s);
                        ResponseTemplate::new(502)
                    }
                    Fault::SlowAnswer => {
                        let order = create(&mut s);
                        ResponseTemplate::new(200)
                            .set_body_json(Self::record(&order, withhold))
                            .set_delay(Duration::from_millis(1500))
                    }
                    Fault::TooMany => ResponseTemplate::new(429).insert_header("retry-after", "0"),
                    Fault::Refuse if refuse_after_create => {
                        create(&mut s);
                        ResponseTemplate::new(400)
                            .set_body_json(json!({"success": false, "errorMessage": "Đơn hàng đã tồn tại"}))
                    }
                    Fault::Refuse => ResponseTemplate::new(400)
                        .set_body_json(json!({"success": false, "errorMessage": "Địa chỉ người nhận không hợp lệ"})),
                }
            }
            p if p.ends_with("/GetListOrder") => {
                let q: HashMap<String, String> = req.url.query_pairs().into_owned().collect();
                let size: usize = q.get("size").and_then(|v| v.parse().ok()).unwrap_or(500);
                let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(0);
                let results: Vec<Value> = s
                    .orders
                    .iter()
                    .filter(|o| !s.unlisted.contains(&o.original_id))
                    .skip(page * size)
                    .take(size)
                    .map(|o| Self::record(o, s.withhold_item_codes))
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({"results": results}))
            }
            p if p.ends_with("/GetStatusHistoryOrder") => {
                let history: Vec<Value> = if s.history.is_empty() {
                    vec![(2, "25/11/2025", "16:00:00")]
                } else {
                    s.history.clone()
                }
                .into_iter()
                .map(|(code, day, hour)| {
                    json!({"statusCode": code, "statusName": format!("code {code}"),
                           "locateName": "Bưu cục", "createdDate": day, "createdHour": hour})
                })
                .collect();
                ResponseTemplate::new(200)
                    .set_body_json(json!({"data": {"statusHistory": history}}))
            }
            p if p.ends_with("/orderCancel") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap();
                let id = body["OriginalId"].as_str().unwrap_or("").to_owned();
                s.orders.retain(|o| o.original_id != id);
                ResponseTemplate::new(200)
                    .set_body_json(json!({"Type": "00", "Message": "ok", "OriginalId": id}))
            }
            _ => ResponseTemplate::new(404),
        }
    }
}

fn settings(store_url: &str, base_url: &str) -> Settings {
    TestConfig::new(store_url, base_url, "http://127.0.0.1:9/cb")
        .postal("timeout_ms = 500\nmax_requests_per_second = 100000\nlookup_delay_s = 60")
        .client("motcua", &[TOKEN])
        .rate(100000)
        .admin(&[TOKEN])
        .settings()
}

struct Harness {
    app_store: bcci_gateway::store::SharedStore,
    dispatcher: Arc<bcci_gateway::dispatch::Dispatcher>,
    poller: Arc<bcci_gateway::events::poller::Poller>,
    clock: Arc<ManualClock>,
    fake: FakeVnPost,
    intake: std::net::SocketAddr,
    metrics_url: String,
    _server: MockServer,
    _store: TestStore,
}

async fn harness(
    backend: Backend,
    plan: Vec<(u64, Fault)>,
    breaker: BreakerSettings,
) -> Option<Harness> {
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_764_057_600).unwrap(),
    ));
    let fake = FakeVnPost::new(clock.clone(), plan);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/GetAccessToken"))
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    for p in ["/CreateOrder", "/orderCancel"] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(fake.clone())
            .mount(&server)
            .await;
    }
    for p in ["/GetListOrder", "/GetStatusHistoryOrder"] {
        Mock::given(method("GET"))
            .and(path(p))
            .respond_with(fake.clone())
            .mount(&server)
            .await;
    }
    let place = TestStore::new(backend).await?;
    let app = Application::build_with(
        settings(&place.url, &server.uri()),
        Options {
            clock: clock.clone(),
            run_workers: false,
            breaker: Some(breaker),
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let h = Harness {
        app_store: app.store(),
        dispatcher: app.dispatcher(),
        poller: app.poller(),
        clock,
        fake,
        intake: app.intake_addr(),
        metrics_url: format!("http://{}/metrics", app.admin_addr()),
        _server: server,
        _store: place,
    };
    tokio::spawn(app.run_until_stopped());
    Some(h)
}

impl Harness {
    async fn submit(&self, n: usize) -> Vec<HandoffId> {
        let http = reqwest::Client::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let body = valid_request(&format!("D-{i}"));
            ids.push(create_handoff(&http, self.intake, TOKEN, &body).await);
        }
        ids
    }

    /// Posts Vietnam Post status records to the gateway's webhook.
    async fn webhook(&self, records: Vec<Value>) {
        let r = reqwest::Client::new()
            .post(format!(
                "http://{}/v1/postal/vnpost/events/webhook-key-0123456789",
                self.intake
            ))
            .json(&json!({"data": records, "sendDate": "25/11/2025 15:30:00"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// A status record of the fake's `n`-th order (from 0).
    fn status_record(&self, n: usize, code: i64) -> Value {
        let s = self.fake.state.lock().unwrap();
        let o = &s.orders[n];
        json!({
            "orderHdrID": o.hdr_id, "originalID": o.original_id, "itemCode": o.item_code,
            "saleOrderCode": o.sale_order_code, "status": code,
            "statusDate": "25/11/2025 15:20:00", "totalFee": 23000
        })
    }

    /// The live orders the fake holds: (originalID, itemCode).
    fn live_orders(&self) -> Vec<(String, String)> {
        let s = self.fake.state.lock().unwrap();
        s.orders
            .iter()
            .map(|o| (o.original_id.clone(), o.item_code.clone()))
            .collect()
    }

    async fn duplicates_counted(&self) -> u64 {
        let text = reqwest::get(&self.metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("bcci_duplicate_orders_total "))
            .unwrap_or_else(|| panic!("no bcci_duplicate_orders_total in:\n{text}"))
            .parse()
            .unwrap()
    }

    async fn handoff(&self, id: &HandoffId) -> bcci_gateway::domain::Handoff {
        self.app_store.handoff(None, id).await.unwrap().unwrap()
    }

    async fn cancel(&self, id: &HandoffId) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/v1/handoffs/{id}/cancel", self.intake))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }

    /// Runs the dispatcher, moving the clock on, until every handoff left `received`.
    async fn drive(&self, ids: &[HandoffId], rounds: usize) {
        for _ in 0..rounds {
            self.dispatcher.run_until_idle().await.unwrap();
            let mut waiting = 0;
            for id in ids {
                let h = self.app_store.handoff(None, id).await.unwrap().unwrap();
                if h.status == Status::Received {
                    waiting += 1;
                }
            }
            if waiting == 0 && self.app_store.count_pending_postal_jobs().await.unwrap() == 0 {
                return;
            }
            self.clock.advance(SignedDuration::from_secs(61));
        }
        panic!("handoffs still waiting after {rounds} rounds");
    }
}

async fn two_hundred_handoffs_through_faults_get_exactly_one_order_each(backend: Backend) {
    let plan = vec![
        (12, Fault::ServerError),
        (22, Fault::LostAnswer),
        (26, Fault::SlowAnswer),
        (36, Fault::TooMany),
    ];
    let Some(h) = harness(
        backend,
        plan,
        BreakerSettings {
            failures_to_open: 1000,
            open_for: Duration::from_millis(1),
        },
    )
    .await
    else {
        return;
    };
    let ids = h.submit(200).await;
    h.drive(&ids, 400).await;

    let (orders, creates, logins) = {
        let s = h.fake.state.lock().unwrap();
        (s.orders.clone(), s.creates.clone(), s.logins)
    };
    let faults: HashMap<String, usize> = creates.iter().fold(HashMap::new(), |mut m, c| {
        *m.entry(format!("{:?}", c.fault)).or_default() += 1;
        m
    });
    for f in ["ServerError", "LostAnswer", "SlowAnswer", "TooMany", "None"] {
        assert!(
            faults.get(f).copied().unwrap_or(0) > 0,
            "fault {f} never injected: {faults:?}"
        );
    }
    assert!(logins > 1, "tokens never expired");
    let mut per_code: HashMap<&str, Vec<&FakeOrder>> = HashMap::new();
    for o in &orders {
        per_code
            .entry(o.sale_order_code.as_str())
            .or_default()
            .push(o);
    }
    for id in &ids {
        let found = per_code.get(id.as_str()).cloned().unwrap_or_default();
        assert_eq!(
            found.len(),
            1,
            "{id}: {} orders at Vietnam Post",
            found.len()
        );
        let handoff = h.app_store.handoff(None, id).await.unwrap().unwrap();
        assert_eq!(handoff.status, Status::OrderCreated, "{id}");
        assert_eq!(
            handoff.tracking_number.as_deref(),
            Some(found[0].item_code.as_str()),
            "{id}"
        );
        assert_eq!(handoff.postage_vnd, Some(23000));
    }
    // No create follows an ambiguous one without the lookup delay in between.
    let mut last: HashMap<&str, &CreateCall> = HashMap::new();
    for c in &creates {
        if let Some(prev) = last.get(c.sale_order_code.as_str())
            && matches!(
                prev.fault,
                Fault::ServerError | Fault::LostAnswer | Fault::SlowAnswer
            )
        {
            assert!(
                c.at.duration_since(prev.at) >= SignedDuration::from_secs(60),
                "{}: created again {} after an ambiguous attempt",
                c.sale_order_code,
                c.at.duration_since(prev.at)
            );
        }
        last.insert(&c.sale_order_code, c);
    }
}

async fn a_refusal_rejects_the_handoff_with_vietnam_posts_message_and_queues_its_callback(
    backend: Backend,
) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    let ids = h.submit(2).await;
    h.fake
        .state
        .lock()
        .unwrap()
        .refuse_codes
        .push(ids[0].to_string());
    h.drive(&ids, 5).await;
    let rejected = h.app_store.handoff(None, &ids[0]).await.unwrap().unwrap();
    assert_eq!(rejected.status, Status::Rejected);
    assert_eq!(
        rejected.reason.as_deref(),
        Some("Địa chỉ người nhận không hợp lệ")
    );
    let created = h.app_store.handoff(None, &ids[1]).await.unwrap().unwrap();
    assert_eq!(created.status, Status::OrderCreated);
    // Each status change is on the timeline with sequence 1 and queued as callback 1.
    for (id, status) in [(&ids[0], "rejected"), (&ids[1], "order_created")] {
        let timeline = h.app_store.timeline(id).await.unwrap();
        assert_eq!(timeline.len(), 1);
        assert_eq!(timeline[0].sequence, Some(1));
        assert_eq!(timeline[0].status.map(|s| s.as_str()), Some(status));
        let callbacks = h.app_store.callbacks_of(id).await.unwrap();
        assert_eq!(callbacks.len(), 1);
        let body: Value = serde_json::from_slice(&callbacks[0].2).unwrap();
        assert_eq!(body["type"], "handoff.status_changed");
        assert_eq!(body["sequence"], 1);
        assert_eq!(body["status"], status);
        assert_eq!(body["previous_status"], "received");
        assert_eq!(body["handoff_id"], id.as_str());
    }
    let created_cb: Value =
        serde_json::from_slice(&h.app_store.callbacks_of(&ids[1]).await.unwrap()[0].2).unwrap();
    assert_eq!(
        created_cb["tracking_number"],
        created.tracking_number.unwrap().as_str()
    );
    assert_eq!(h.fake.state.lock().unwrap().orders.len(), 1);
}

async fn the_breaker_opens_on_consecutive_failures_and_closes_after_a_good_probe(backend: Backend) {
    let Some(h) = harness(
        backend,
        vec![(100, Fault::ServerError)],
        BreakerSettings {
            failures_to_open: 3,
            open_for: Duration::from_millis(300),
        },
    )
    .await
    else {
        return;
    };
    let ids = h.submit(5).await;
    let metric = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("bcci_circuit_open{upstream=\"postal\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    // Three ambiguous failures open it. The five jobs were claimed in one
    // batch and their calls permitted together, before any failed; no call
    // starts once it is open.
    let run = tokio::time::timeout(Duration::from_millis(200), h.dispatcher.run_until_idle()).await;
    assert!(
        run.is_err(),
        "the dispatcher waits while the breaker is open"
    );
    let text = reqwest::get(&h.metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text).as_deref(), Some("1"), "{text}");
    let made = h.fake.state.lock().unwrap().creates.len();
    assert_eq!(
        made, 5,
        "one batch of calls, all permitted before the first failure"
    );
    let run = tokio::time::timeout(Duration::from_millis(50), h.dispatcher.run_until_idle()).await;
    assert!(run.is_err(), "still waiting while open");
    assert_eq!(
        h.fake.state.lock().unwrap().creates.len(),
        made,
        "no calls while open"
    );
    // Vietnam Post recovers: the half-open probe succeeds and the breaker closes.
    h.fake.state.lock().unwrap().plan.clear();
    h.drive(&ids, 20).await;
    let text = reqwest::get(&h.metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(metric(&text).as_deref(), Some("0"), "{text}");
    for id in &ids {
        assert_eq!(
            h.app_store.handoff(None, id).await.unwrap().unwrap().status,
            Status::OrderCreated
        );
    }
}

async fn a_refusal_after_an_ambiguous_attempt_is_confirmed_by_a_lookup_that_adopts_the_order(
    backend: Backend,
) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    let ids = h.submit(1).await;
    h.fake
        .state
        .lock()
        .unwrap()
        .fail_then_refuse_codes
        .push(ids[0].to_string());
    h.drive(&ids, 10).await;
    let handoff = h.app_store.handoff(None, &ids[0]).await.unwrap().unwrap();
    assert_eq!(
        handoff.status,
        Status::OrderCreated,
        "a refusal after an ambiguous attempt must not reject"
    );
    let s = h.fake.state.lock().unwrap();
    assert_eq!(s.creates.len(), 2);
    assert_eq!(s.orders.len(), 1);
    assert_eq!(
        handoff.tracking_number.as_deref(),
        Some(s.orders[0].item_code.as_str())
    );
}

/// A Vietnam Post whose CreateOrder reads the request, creates the order and
/// then resets the connection without answering.
async fn resetting_vnpost() -> (String, Arc<Mutex<Vec<String>>>, Arc<Mutex<u32>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let orders: Arc<Mutex<Vec<String>>> = Arc::default();
    let creates: Arc<Mutex<u32>> = Arc::default();
    let (o, c) = (orders.clone(), creates.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (orders, creates) = (o.clone(), c.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some(head_end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let len: usize = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() < head_end + 4 + len {
                        continue;
                    }
                    let body =
                        String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
                    let answer = if text.starts_with("POST /GetAccessToken") {
                        json!({"success": true, "token": "t"}).to_string()
                    } else if text.starts_with("POST /CreateOrder") {
                        let v: Value = serde_json::from_str(&body).unwrap();
                        orders.lock().unwrap().push(
                            v["informationOrder"]["saleOrderCode"]
                                .as_str()
                                .unwrap()
                                .to_owned(),
                        );
                        *creates.lock().unwrap() += 1;
                        // Created; the answer is lost: reset the connection.
                        let sock = sock.into_std().unwrap();
                        let sock = socket2::Socket::from(sock);
                        sock.set_linger(Some(Duration::ZERO)).unwrap();
                        drop(sock);
                        return;
                    } else if text.starts_with("GET /GetListOrder") {
                        let results: Vec<Value> = orders.lock().unwrap().iter().enumerate().map(|(i, code)| json!({
                            "orderHdrID": format!("H{i}"), "originalID": format!("O{i}"),
                            "itemCode": format!("EE{i:09}VN"), "saleOrderCode": code, "totalFee": 15000
                        })).collect();
                        json!({"results": results}).to_string()
                    } else {
                        "{}".to_owned()
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
                        answer.len(),
                        answer
                    );
                    sock.write_all(resp.as_bytes()).await.unwrap();
                    buf.clear();
                }
            });
        }
    });
    (format!("http://{addr}"), orders, creates)
}

async fn a_reset_after_the_request_was_sent_is_followed_by_a_lookup_that_finds_the_order(
    backend: Backend,
) {
    let (base, _orders, creates) = resetting_vnpost().await;
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_second(1_764_057_600).unwrap(),
    ));
    let Some(place) = TestStore::new(backend).await else {
        return;
    };
    let app = Application::build_with(
        settings(&place.url, &base),
        Options {
            clock: clock.clone(),
            run_workers: false,
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let (store, dispatcher, intake) = (app.store(), app.dispatcher(), app.intake_addr());
    let poller = app.poller();
    tokio::spawn(app.run_until_stopped());
    let h = Harness {
        app_store: store,
        dispatcher,
        poller,
        clock,
        fake: FakeVnPost::new(Arc::new(ManualClock::new(Timestamp::UNIX_EPOCH)), vec![]),
        intake,
        metrics_url: String::new(),
        _server: MockServer::start().await,
        _store: place,
    };
    let ids = h.submit(1).await;
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(*creates.lock().unwrap(), 1);
    let still = h.app_store.handoff(None, &ids[0]).await.unwrap().unwrap();
    assert_eq!(
        still.status,
        Status::Received,
        "no answer: nothing known yet"
    );
    // Before the lookup delay nothing is called again.
    h.clock.advance(SignedDuration::from_secs(30));
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(*creates.lock().unwrap(), 1);
    h.drive(&ids, 5).await;
    let handoff = h.app_store.handoff(None, &ids[0]).await.unwrap().unwrap();
    assert_eq!(handoff.status, Status::OrderCreated);
    assert_eq!(handoff.tracking_number.as_deref(), Some("EE000000000VN"));
    assert_eq!(
        *creates.lock().unwrap(),
        1,
        "the lookup found the order: no second create"
    );
}

async fn one_step_of_a_worker_claims_a_batch_of_jobs_and_carries_out_every_one(backend: Backend) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    let ids = h.submit(11).await;
    // One claim takes a batch of 8 (the rate limit allows the largest), and
    // every job of it gets its order before the step returns.
    let step = h.dispatcher.try_execute().await.unwrap();
    assert_eq!(step, bcci_gateway::dispatch::Executed::Worked);
    assert_eq!(h.fake.state.lock().unwrap().orders.len(), 8);
    assert_eq!(h.app_store.count_pending_postal_jobs().await.unwrap(), 3);
    h.dispatcher.try_execute().await.unwrap();
    assert_eq!(h.fake.state.lock().unwrap().orders.len(), 11);
    for id in &ids {
        let status = h.app_store.handoff(None, id).await.unwrap().unwrap().status;
        assert_eq!(status, Status::OrderCreated);
    }
    assert_eq!(
        h.dispatcher.try_execute().await.unwrap(),
        bcci_gateway::dispatch::Executed::Idle
    );
}

/// A retry's CreateOrder is in flight when a webhook reveals the order the
/// first (lost) attempt made; the retry's own order must not be left live.
async fn a_retry_whose_order_a_webhook_overtook_has_that_order_cancelled_as_a_duplicate(
    backend: Backend,
) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    h.fake.state.lock().unwrap().scripted = [Fault::LostAnswer, Fault::Delayed].into();
    let id = h.submit(1).await.remove(0);
    h.dispatcher.run_until_idle().await.unwrap();
    // The first order exists but is not listed yet: the lookup misses it.
    let first = h.live_orders()[0].clone();
    h.fake.state.lock().unwrap().unlisted = vec![first.0.clone()];
    h.clock.advance(SignedDuration::from_secs(61));
    let dispatcher = h.dispatcher.clone();
    let step = tokio::spawn(async move { dispatcher.run_until_idle().await });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while h.fake.state.lock().unwrap().creates.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no retry create");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The retry is in flight (answered after 300 ms): a webhook reports the
    // first order, which the handoff adopts.
    h.webhook(vec![h.status_record(0, 2)]).await;
    step.await.unwrap().unwrap();
    let handoff = h.handoff(&id).await;
    assert_eq!(handoff.tracking_number.as_deref(), Some(first.1.as_str()));
    assert_eq!(
        h.live_orders(),
        vec![first],
        "the retry's order is cancelled: one live order"
    );
    assert_eq!(h.duplicates_counted().await, 1);
}

/// The handoff owns the order of its retry when a webhook reports the order
/// its first (lost) create made, listed too late for the lookup: that order
/// is cancelled as a duplicate and counted once, and the handoff keeps its own.
async fn a_second_order_a_webhook_reports_after_the_handoff_owns_one_is_cancelled_once(
    backend: Backend,
) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    h.fake.state.lock().unwrap().scripted = [Fault::LostAnswer].into();
    let id = h.submit(1).await.remove(0);
    h.dispatcher.run_until_idle().await.unwrap();
    let lost = h.live_orders()[0].clone();
    h.fake.state.lock().unwrap().unlisted = vec![lost.0.clone()];
    h.clock.advance(SignedDuration::from_secs(61));
    h.dispatcher.run_until_idle().await.unwrap();
    let orders = h.live_orders();
    assert_eq!(
        orders.len(),
        2,
        "the lookup missed the first order: {orders:?}"
    );
    let own = orders[1].clone();
    assert_eq!(
        h.handoff(&id).await.tracking_number.as_deref(),
        Some(own.1.as_str())
    );
    assert_eq!(h.duplicates_counted().await, 0);
    let reported_again = h.status_record(0, 3);
    h.webhook(vec![h.status_record(0, 2)]).await;
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(h.live_orders(), vec![own.clone()], "one live order");
    assert_eq!(h.duplicates_counted().await, 1);
    // Reported again (its cancellation, say): not counted twice.
    h.webhook(vec![reported_again]).await;
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(h.duplicates_counted().await, 1);
    let handoff = h.handoff(&id).await;
    assert_eq!(handoff.tracking_number.as_deref(), Some(own.1.as_str()));
    assert_eq!(
        handoff.status,
        Status::OrderCreated,
        "the duplicate's reports change nothing"
    );
}

/// A cancel asked right after two uncertain creates waits out the lookup
/// delay, finds both orders, and leaves neither live.
async fn a_cancel_after_uncertain_creates_waits_looks_up_and_cancels_every_order(backend: Backend) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    h.fake.state.lock().unwrap().scripted = [Fault::LostAnswer, Fault::LostAnswer].into();
    let id = h.submit(1).await.remove(0);
    h.dispatcher.run_until_idle().await.unwrap();
    let first = h.live_orders()[0].0.clone();
    h.fake.state.lock().unwrap().unlisted = vec![first];
    h.clock.advance(SignedDuration::from_secs(61));
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(h.live_orders().len(), 2, "two orders, neither listed yet");
    let second = h.live_orders()[1].0.clone();
    h.fake.state.lock().unwrap().unlisted.push(second);
    h.cancel(&id).await;
    // The cancel does not look up before the delay: the orders are not listed.
    h.dispatcher.run_until_idle().await.unwrap();
    h.clock.advance(SignedDuration::from_secs(30));
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(h.handoff(&id).await.status, Status::Received);
    assert_eq!(h.live_orders().len(), 2);
    // Listed by the time the lookup runs.
    h.fake.state.lock().unwrap().unlisted.clear();
    h.clock.advance(SignedDuration::from_secs(31));
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(h.handoff(&id).await.status, Status::Cancelled);
    assert_eq!(h.live_orders(), vec![], "every order found is cancelled");
    assert_eq!(h.fake.state.lock().unwrap().creates.len(), 2);
    assert_eq!(h.duplicates_counted().await, 1, "the second order");
    let types: Vec<String> = h
        .app_store
        .callbacks_of(&id)
        .await
        .unwrap()
        .iter()
        .map(|(_, _, body)| {
            let b: Value = serde_json::from_slice(body).unwrap();
            b["status"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(types, ["order_created", "cancelled"]);
}

/// An order Vietnam Post lists too late for the cancel's lookup is reported
/// by a webhook after the handoff was cancelled: it is cancelled too.
async fn an_order_reported_for_a_cancelled_handoff_is_cancelled_at_vietnam_post(backend: Backend) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    h.fake.state.lock().unwrap().scripted = [Fault::LostAnswer].into();
    let id = h.submit(1).await.remove(0);
    h.dispatcher.run_until_idle().await.unwrap();
    let order = h.live_orders()[0].0.clone();
    h.fake.state.lock().unwrap().unlisted = vec![order];
    h.cancel(&id).await;
    for _ in 0..3 {
        h.dispatcher.run_until_idle().await.unwrap();
        h.clock.advance(SignedDuration::from_secs(61));
    }
    assert_eq!(h.handoff(&id).await.status, Status::Cancelled);
    assert_eq!(h.live_orders().len(), 1, "the lookup could not see it");
    h.webhook(vec![h.status_record(0, 2)]).await;
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(h.live_orders(), vec![], "the unowned order is cancelled");
    assert_eq!(h.handoff(&id).await.status, Status::Cancelled);
    assert_eq!(h.duplicates_counted().await, 0, "the handoff's only order");
}

async fn an_order_created_without_an_item_code_takes_it_from_the_first_webhook_that_carries_it(
    backend: Backend,
) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    h.fake.state.lock().unwrap().withhold_item_codes = true;
    let id = h.submit(1).await.remove(0);
    h.dispatcher.run_until_idle().await.unwrap();
    let handoff = h.handoff(&id).await;
    assert_eq!(handoff.status, Status::OrderCreated);
    assert_eq!(handoff.tracking_number, None, "none answered yet");
    let (_, item_code) = h.live_orders()[0].clone();
    h.webhook(vec![h.status_record(0, 2)]).await;
    let handoff = h.handoff(&id).await;
    assert_eq!(handoff.tracking_number.as_deref(), Some(item_code.as_str()));
    assert_eq!(handoff.status, Status::PickingUp);
    assert_eq!(h.live_orders().len(), 1);
    assert_eq!(h.duplicates_counted().await, 0);
}

async fn an_order_without_an_item_code_is_reconciled_by_its_original_id(backend: Backend) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    h.fake.state.lock().unwrap().withhold_item_codes = true;
    let id = h.submit(1).await.remove(0);
    h.dispatcher.run_until_idle().await.unwrap();
    assert_eq!(h.handoff(&id).await.tracking_number, None);
    // Webhooks stay quiet; Vietnam Post has assigned the item code since.
    h.fake.state.lock().unwrap().withhold_item_codes = false;
    h.clock.advance(SignedDuration::from_secs(21_601));
    let polled = h.poller.poll_quiet().await.unwrap();
    assert_eq!(polled, 1);
    let (_, item_code) = h.live_orders()[0].clone();
    let handoff = h.handoff(&id).await;
    assert_eq!(handoff.tracking_number.as_deref(), Some(item_code.as_str()));
    assert_eq!(handoff.status, Status::PickingUp, "its history was polled");
}

/// Vietnam Post reports code 21 (COD paid) after the delivery, and no webhook
/// comes: the delivered return is polled until it does.
async fn a_delivered_cod_return_stays_polled_until_vietnam_post_reports_the_cod_paid(
    backend: Backend,
) {
    let Some(h) = harness(backend, vec![], BreakerSettings::default()).await else {
        return;
    };
    let id = h.submit(1).await.remove(0);
    h.dispatcher.run_until_idle().await.unwrap();
    let quiet = SignedDuration::from_secs(21_601);
    h.fake.state.lock().unwrap().history = vec![
        (2, "25/11/2025", "16:00:00"),
        (6, "25/11/2025", "17:00:00"),
        (14, "25/11/2025", "18:00:00"),
    ];
    h.clock.advance(quiet);
    assert_eq!(h.poller.poll_quiet().await.unwrap(), 1);
    let handoff = h.handoff(&id).await;
    assert_eq!(handoff.status, Status::Delivered);
    assert!(!handoff.cod_settled);
    // Not paid after 30 days: counted in bcci_cod_unsettled.
    let month_later = h.clock.now() + SignedDuration::from_hours(24 * 31);
    assert_eq!(
        h.app_store
            .count_cod_unsettled(month_later - SignedDuration::from_hours(24 * 30))
            .await
            .unwrap(),
        1
    );
    // The COD is paid the next morning.
    h.fake
        .state
        .lock()
        .unwrap()
        .history
        .push((21, "26/11/2025", "09:30:00"));
    h.clock.advance(quiet);
    assert_eq!(
        h.poller.poll_quiet().await.unwrap(),
        1,
        "the delivered COD return is polled again"
    );
    let handoff = h.handoff(&id).await;
    assert!(handoff.cod_settled);
    assert_eq!(handoff.status, Status::Delivered);
    let callbacks = h.app_store.callbacks_of(&id).await.unwrap();
    let (_, kind, body) = callbacks.last().unwrap();
    assert_eq!(kind, "handoff.cod_settled");
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["cod_amount_vnd"], 50_000, "{body}");
    assert_eq!(
        body["cod_settled_at"], "2025-11-26T09:30:00+07:00",
        "{body}"
    );
    assert_eq!(
        h.app_store
            .count_cod_unsettled(month_later - SignedDuration::from_hours(24 * 30))
            .await
            .unwrap(),
        0
    );
    // Settled: no more polls.
    h.clock.advance(quiet);
    assert_eq!(h.poller.poll_quiet().await.unwrap(), 0);
}
