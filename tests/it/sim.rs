//! The Vietnam Post simulator over HTTP: every call, every fault, the status
//! webhooks, the gateway's own client against it, and the `postal-sim` command.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use bcci_gateway::carrier::vnpost::VnPostClient;
use bcci_gateway::carrier::{CallFailure, CancelAnswer, Carrier};

use bcci_gateway::domain::Kind;
use bcci_gateway::domain::time::vietnam;
use bcci_gateway::sim::{
    Credentials, Faults, OrderSnapshot, SimConfig, SimHandle, Simulator, expected_final_status,
    sequence, sequence_names,
};
use bcci_gateway::telemetry::metrics::Metrics;
use jiff::Timestamp;
use jiff::civil::DateTime;
use serde_json::{Value, json};

use crate::common::config::TestConfig;
use crate::helpers::order_request;

const PATIENCE: Duration = Duration::from_secs(10);

/// A configuration whose orders stay at "created" unless a test says otherwise.
fn quiet() -> SimConfig {
    SimConfig {
        step_interval: Duration::from_secs(3600),
        ..SimConfig::default()
    }
}

/// A configuration stepping every 10 ms and posting to `url`.
fn walking(url: &str) -> SimConfig {
    SimConfig {
        step_interval: Duration::from_millis(10),
        webhook_url: Some(url.to_owned()),
        webhook_retry_initial: Duration::from_millis(20),
        ..SimConfig::default()
    }
}

async fn start(config: SimConfig) -> SimHandle {
    Simulator::start(config)
        .await
        .expect("the simulator starts")
}

/// Polls `check` until it gives a value.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn all_finished(sim: &SimHandle, n: usize) -> Vec<OrderSnapshot> {
    eventually("every order to finish its walk", || {
        let orders = sim.orders();
        (orders.len() == n && orders.iter().all(|o| o.finished)).then_some(orders)
    })
    .await
}

fn create_body(sale_order_code: &str, note: &str) -> Value {
    json!({
        "orderCreationStatus": 1,
        "type": "GUI",
        "customerCode": "T000180585",
        "contractCode": "",
        "informationOrder": {
            "senderName": "Nguyễn Văn An", "senderPhone": "0912345678", "senderEmail": "",
            "senderAddress": "12 Nguyễn Huệ", "senderProvinceCode": "79",
            "senderDistrictCode": "VNPOST", "senderCommuneCode": "26732",
            "receiverName": "Bộ phận một cửa", "receiverPhone": "02543830123", "receiverEmail": "",
            "receiverAddress": "28 Tôn Đức Thắng", "receiverProvinceCode": "79",
            "receiverDistrictCode": "VNPOST", "receiverCommuneCode": "26734",
            "serviceCode": "CTN009",
            "addonService": [],
            "saleOrderCode": sale_order_code,
            "contentNote": note,
            "weight": "300",
            "sendType": "1",
            "isBroken": "0",
            "deliveryInstruction": ""
        }
    })
}

/// A logged-in caller of the simulator.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(sim: &SimHandle) -> Self {
        let http = reqwest::Client::new();
        let base = sim.base_url();
        let (status, body) = send(http.post(format!("{base}/GetAccessToken")).json(&json!({
            "username": "partner", "password": "secret", "customerCode": "T000180585"
        })))
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["success"], true, "{body}");
        let token = body["token"].as_str().expect("a token").to_owned();
        Self { http, base, token }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let request = self.http.post(format!("{}/{path}", self.base));
        send(request.header("token", &self.token).json(body)).await
    }

    async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let request = self.http.get(format!("{}/{path_and_query}", self.base));
        send(request.header("token", &self.token)).await
    }

    /// Creates an order and returns its record, bare or unwrapped from `data`.
    async fn create(&self, sale_order_code: &str, note: &str) -> Value {
        let (status, body) = self
            .post("CreateOrder", &create_body(sale_order_code, note))
            .await;
        assert_eq!(status, 200, "{body}");
        body.get("data").cloned().unwrap_or(body)
    }
}

/// Sends and reads the answer; a body that is not JSON comes back as a string.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let answer = request.send().await.expect("an answer");
    let status = answer.status().as_u16();
    let text = answer.text().await.expect("a body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

fn today() -> jiff::civil::Date {
    Timestamp::now().to_zoned(vietnam()).date()
}

fn query_day(day: jiff::civil::Date) -> String {
    day.strftime("%d-%m-%Y").to_string()
}

fn carrier_time(s: &str) -> DateTime {
    DateTime::strptime("%d/%m/%Y %H:%M:%S", s).unwrap_or_else(|_| panic!("a carrier time: {s}"))
}

/// A tiny webhook receiver that keeps what it accepts and answers a
/// switchable status.
#[derive(Clone)]
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let receiver = Receiver {
            url: format!(
                "http://{}/v1/postal/vnpost/events/key",
                listener.local_addr().unwrap()
            ),
            bodies: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
        };
        let app = Router::new()
            .route(
                "/v1/postal/vnpost/events/key",
                post(
                    |State(r): State<Receiver>, Json(body): Json<Value>| async move {
                        let status = r.status.load(Ordering::SeqCst);
                        if status == 200 {
                            r.bodies.lock().unwrap().push(body);
                        }
                        StatusCode::from_u16(status).unwrap()
                    },
                ),
            )
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// Every record accepted, in arrival order.
    fn records(&self) -> Vec<Value> {
        self.bodies()
            .iter()
            .flat_map(|b| b["data"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    async fn wait_for_records(&self, n: usize) -> Vec<Value> {
        eventually(&format!("{n} webhook records"), || {
            let records = self.records();
            (records.len() >= n).then_some(records)
        })
        .await
    }
}

/// The records of one order, in arrival order.
fn records_of<'a>(records: &'a [Value], sale_order_code: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["saleOrderCode"] == sale_order_code)
        .collect()
}

fn steps(orders: &[OrderSnapshot]) -> usize {
    orders.iter().map(|o| o.history.len()).sum()
}

#[tokio::test]
async fn a_login_gives_a_token_and_wrong_credentials_are_refused() {
    let sim = start(SimConfig {
        credentials: Some(Credentials {
            username: "partner".into(),
            password: "secret".into(),
        }),
        ..quiet()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/GetAccessToken", sim.base_url());
    let (status, body) = send(http.post(&url).json(&json!({
        "username": "partner", "password": "wrong", "customerCode": "T000180585"
    })))
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["success"], false);
    assert!(body["errorMessage"].as_str().unwrap().contains("mật khẩu"));
    let api = Api::login(&sim).await;
    assert!(!api.token.is_empty());
    assert_eq!(sim.stats().logins_refused, 1);
    assert_eq!(sim.stats().calls_to("GetAccessToken"), 2);
}

#[tokio::test]
async fn an_unknown_or_expired_token_gets_401() {
    let sim = start(SimConfig {
        faults: Faults {
            token_ttl_ms: 300,
            ..Faults::default()
        },
        ..quiet()
    })
    .await;
    let mut api = Api::login(&sim).await;
    let list = format!(
        "GetListOrder?lastUpdateFrom={d}&lastUpdateTo={d}&type=GUI&size=500&page=0&isInternational=false",
        d = query_day(today())
    );
    assert_eq!(api.get(&list).await.0, 200);
    let good = std::mem::replace(&mut api.token, "not-a-token".into());
    assert_eq!(api.get(&list).await.0, 401);
    api.token = good;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, body) = api.get(&list).await;
    assert_eq!(status, 401);
    assert_eq!(body["success"], false);
    let (status, _) = api.post("CreateOrder", &create_body("h_1", "")).await;
    assert_eq!(status, 401);
    assert!(sim.orders().is_empty());
    assert_eq!(sim.stats().unauthorized, 3);
    // A new login works again.
    let api = Api::login(&sim).await;
    assert_eq!(api.get(&list).await.0, 200);
}

#[tokio::test]
async fn an_invalid_create_is_refused_with_400_naming_the_field() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    // (the field named, where it sits, its broken value: `None` removes it)
    let cases = [
        ("orderCreationStatus", "", Some(json!(5))),
        ("type", "", Some(json!("NHAN"))),
        ("customerCode", "", Some(json!(""))),
        ("informationOrder", "", Some(json!(null))),
        ("senderName", "info", Some(json!(" "))),
        ("receiverPhone", "info", Some(json!("gọi"))),
        ("senderAddress", "info", None),
        ("receiverProvinceCode", "info", Some(json!(""))),
        ("senderCommuneCode", "info", Some(json!("P.1"))),
        ("receiverDistrictCode", "info", Some(json!("760"))),
        ("serviceCode", "info", Some(json!("XYZ001"))),
        ("saleOrderCode", "info", None),
        ("weight", "info", Some(json!("0"))),
        ("weight", "info", Some(json!("nặng"))),
    ];
    for (field, place, value) in cases {
        let mut body = create_body("h_1", "");
        let target = match place {
            "info" => &mut body["informationOrder"],
            _ => &mut body,
        };
        let target = target.as_object_mut().unwrap();
        match value {
            Some(v) => target.insert(field.to_owned(), v),
            None => target.remove(field),
        };
        let (status, answer) = api.post("CreateOrder", &body).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["success"], false, "{field}");
        let message = answer["errorMessage"].as_str().unwrap();
        assert!(message.contains(field), "{field}: {message}");
    }
    let (status, answer) = send(
        api.http
            .post(format!("{}/CreateOrder", api.base))
            .header("token", &api.token)
            .body("{not json"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(sim.orders().is_empty());
}

#[tokio::test]
async fn a_second_create_with_the_same_sale_order_code_makes_a_second_order() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    let first = api
        .create("h_same", "Đăng ký hộ kinh doanh - 000.00.21.H79")
        .await;
    let second = api
        .create("h_same", "Đăng ký hộ kinh doanh - 000.00.21.H79")
        .await;
    for record in [&first, &second] {
        assert_eq!(record["saleOrderCode"], "h_same");
        assert_eq!(record["status"], 1);
        assert_eq!(record["totalFee"], 15_000 + 5 * 300);
        let item = record["itemCode"].as_str().unwrap();
        assert!(
            item.len() == 13
                && item.ends_with("VN")
                && item[..2].chars().all(|c| c.is_ascii_uppercase())
                && item[2..11].chars().all(|c| c.is_ascii_digit()),
            "{item}"
        );
    }
    assert_ne!(first["orderHdrID"], second["orderHdrID"]);
    assert_ne!(first["originalID"], second["originalID"]);
    assert_ne!(first["itemCode"], second["itemCode"]);
    let orders = sim.orders_for("h_same");
    assert_eq!(orders.len(), 2);
    assert_eq!(
        orders[0].order_hdr_id,
        first["orderHdrID"].as_str().unwrap()
    );
    assert_eq!(orders[1].item_code, second["itemCode"].as_str().unwrap());
    assert!(orders.iter().all(|o| !o.cancelled && o.status == 1));
    assert_eq!(sim.stats().orders_created, 2);
}

#[tokio::test]
async fn the_listing_pages_and_filters_by_vietnam_day() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    for i in 0..5 {
        api.create(&format!("h_{i}"), "").await;
    }
    let list = |from: jiff::civil::Date, to: jiff::civil::Date, size: usize, page: usize| {
        format!(
            "GetListOrder?lastUpdateFrom={}&lastUpdateTo={}&type=GUI&size={size}&page={page}&isInternational=false",
            query_day(from),
            query_day(to)
        )
    };
    let day = today();
    let (yesterday, tomorrow) = (day.yesterday().unwrap(), day.tomorrow().unwrap());
    let codes = |v: &Value| -> Vec<String> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["saleOrderCode"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = api.get(&list(day, day, 500, 0)).await;
    assert_eq!(status, 200);
    assert_eq!(codes(&all), ["h_0", "h_1", "h_2", "h_3", "h_4"]);
    let record = &all["results"][0];
    for key in ["orderHdrID", "originalID", "itemCode", "status", "totalFee"] {
        assert!(!record[key].is_null(), "{key}: {record}");
    }
    carrier_time(record["createdDate"].as_str().unwrap());
    assert_eq!(
        codes(&api.get(&list(day, day, 2, 0)).await.1),
        ["h_0", "h_1"]
    );
    assert_eq!(
        codes(&api.get(&list(day, day, 2, 1)).await.1),
        ["h_2", "h_3"]
    );
    assert_eq!(codes(&api.get(&list(day, day, 2, 2)).await.1), ["h_4"]);
    assert!(codes(&api.get(&list(day, day, 2, 3)).await.1).is_empty());
    assert_eq!(
        codes(&api.get(&list(yesterday, tomorrow, 500, 0)).await.1).len(),
        5
    );
    assert!(codes(&api.get(&list(yesterday, yesterday, 500, 0)).await.1).is_empty());
    assert!(codes(&api.get(&list(tomorrow, tomorrow, 500, 0)).await.1).is_empty());
    let (status, answer) = api
        .get("GetListOrder?lastUpdateTo=01-01-2026&type=GUI")
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["errorMessage"]
            .as_str()
            .unwrap()
            .contains("lastUpdateFrom")
    );
}

#[tokio::test]
async fn a_new_order_is_listed_only_after_the_listing_lag() {
    let sim = start(SimConfig {
        list_lag: Duration::from_millis(300),
        ..quiet()
    })
    .await;
    let api = Api::login(&sim).await;
    api.create("h_lag", "").await;
    let list = format!(
        "GetListOrder?lastUpdateFrom={d}&lastUpdateTo={d}&type=GUI&size=500&page=0&isInternational=false",
        d = query_day(today())
    );
    assert_eq!(api.get(&list).await.1["results"], json!([]));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        api.get(&list).await.1["results"][0]["saleOrderCode"],
        "h_lag"
    );
}

#[tokio::test]
async fn order_detail_masks_names_phones_and_addresses() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    let created = api.create("h_mask", "").await;
    let item = created["itemCode"].as_str().unwrap();
    let (status, answer) = api.get(&format!("getOrder?type=1&code={item}")).await;
    assert_eq!(status, 200);
    let record = &answer[0]["results"][0];
    assert_eq!(record["itemCode"], item);
    assert_eq!(record["saleOrderCode"], "h_mask");
    let text = answer.to_string();
    for personal in [
        "Nguyễn Văn An",
        "0912345678",
        "12 Nguyễn Huệ",
        "Tôn Đức Thắng",
    ] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }
    for key in [
        "senderName",
        "senderPhone",
        "senderAddress",
        "receiverName",
        "receiverPhone",
    ] {
        assert!(
            record[key].as_str().unwrap().contains('+'),
            "{key}: {record}"
        );
    }
    let (_, none) = api.get("getOrder?type=1&code=EE000000000VN").await;
    assert_eq!(none, json!([{"results": []}]));
}

#[tokio::test]
async fn status_history_follows_the_walk_with_strictly_increasing_times() {
    let sim = start(SimConfig {
        step_interval: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    let api = Api::login(&sim).await;
    let created = api.create("h_walk", "Thủ tục [sim:return_to_sender]").await;
    let orders = all_finished(&sim, 1).await;
    let walk = sequence("return_to_sender").unwrap();
    let codes: Vec<i64> = orders[0].history.iter().map(|s| s.code).collect();
    assert_eq!(codes, walk.codes);
    assert_eq!(orders[0].sequence, "return_to_sender");
    let item = created["itemCode"].as_str().unwrap();
    let (status, answer) = api
        .get(&format!("GetStatusHistoryOrder?type=1&code={item}"))
        .await;
    assert_eq!(status, 200);
    let history = answer["data"]["statusHistory"].as_array().unwrap();
    let reported: Vec<i64> = history
        .iter()
        .map(|h| h["statusCode"].as_i64().unwrap())
        .collect();
    assert_eq!(reported, walk.codes);
    let times: Vec<DateTime> = history
        .iter()
        .map(|h| {
            carrier_time(&format!(
                "{} {}",
                h["createdDate"].as_str().unwrap(),
                h["createdHour"].as_str().unwrap()
            ))
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    assert!(
        history
            .iter()
            .all(|h| h["statusName"].is_string() && h["locateName"].is_string())
    );
}

#[tokio::test]
async fn a_cancel_before_pickup_succeeds_and_after_pickup_is_refused() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    let created = api.create("h_cancel", "").await;
    let original = created["originalID"].as_str().unwrap();
    let (status, answer) = api
        .post("orderCancel", &json!({"OriginalId": original}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(answer["Type"], "00", "{answer}");
    assert_eq!(answer["OriginalId"], original);
    let order = &sim.orders_for("h_cancel")[0];
    assert!(order.cancelled && order.finished);
    assert_eq!(order.status, 9);
    // Twice is refused; so is an unknown order.
    let (_, again) = api
        .post("orderCancel", &json!({"OriginalId": original}))
        .await;
    assert_eq!(again["Type"], "01");
    let (_, unknown) = api
        .post("orderCancel", &json!({"OriginalId": "nope"}))
        .await;
    assert_ne!(unknown["Type"], "00");
    assert_ne!(unknown["Type"], "02");

    let walking = start(SimConfig {
        step_interval: Duration::from_millis(10),
        ..SimConfig::default()
    })
    .await;
    let api = Api::login(&walking).await;
    let created = api.create("h_late", "[sim:delivered]").await;
    all_finished(&walking, 1).await;
    let (_, late) = api
        .post("orderCancel", &json!({"OriginalId": created["originalID"]}))
        .await;
    assert_eq!(late["Type"], "01", "{late}");
    assert!(!late["Message"].as_str().unwrap().is_empty());
    assert!(!walking.orders()[0].cancelled);
}

#[tokio::test]
async fn a_cancel_needing_approval_answers_02_then_status_9_follows() {
    let sim = start(SimConfig {
        step_interval: Duration::from_millis(300),
        ..SimConfig::default()
    })
    .await;
    let api = Api::login(&sim).await;
    let created = api.create("h_approval", "[sim:cancel_approval]").await;
    let (_, answer) = api
        .post("orderCancel", &json!({"OriginalId": created["originalID"]}))
        .await;
    assert_eq!(answer["Type"], "02", "{answer}");
    let case_id = answer["CaseId"].as_str().unwrap().to_owned();
    assert!(!case_id.is_empty());
    let order = eventually("the approved cancellation", || {
        sim.orders().pop().filter(|o| o.cancelled)
    })
    .await;
    assert_eq!(order.status, 9);
    assert_eq!(order.cancel_case_id.as_deref(), Some(case_id.as_str()));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        sim.orders()[0].status,
        9,
        "the walk stops after the cancellation"
    );
}

#[tokio::test]
async fn an_error_rate_of_one_answers_500_before_anything() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    for _ in 0..3 {
        let (status, _) = api.post("CreateOrder", &create_body("h_err", "")).await;
        assert_eq!(status, 500);
    }
    assert!(sim.orders().is_empty());
    assert_eq!(sim.stats().errors_injected, 3);
    assert_eq!(sim.stats().calls_to("CreateOrder"), 3);
}

#[tokio::test]
async fn a_rate_limit_rate_of_one_answers_429_with_retry_after() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    sim.set_faults(Faults {
        rate_limit_rate: 1.0,
        ..Faults::default()
    });
    let answer = api
        .http
        .post(format!("{}/CreateOrder", api.base))
        .header("token", &api.token)
        .json(&create_body("h_429", ""))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 429);
    assert_eq!(answer.headers()["retry-after"], "1");
    assert!(sim.orders().is_empty());
    assert_eq!(sim.stats().rate_limits_injected, 1);
}

#[tokio::test]
async fn a_lost_answer_still_creates_the_order() {
    let sim = start(SimConfig {
        faults: Faults {
            lost_answer_rate: 1.0,
            ..Faults::default()
        },
        ..quiet()
    })
    .await;
    let api = Api::login(&sim).await;
    let (mut errors, mut drops) = (0, 0);
    for i in 0..10 {
        let sent = api
            .http
            .post(format!("{}/CreateOrder", api.base))
            .header("token", &api.token)
            .json(&create_body(&format!("h_lost_{i}"), ""))
            .send()
            .await;
        let body = match sent {
            Ok(answer) if answer.status().as_u16() == 500 => {
                errors += 1;
                continue;
            }
            Ok(answer) => answer.bytes().await,
            Err(e) => Err(e),
        };
        assert!(
            body.is_err(),
            "a lost answer must not be readable: {body:?}"
        );
        drops += 1;
    }
    assert!(errors > 0 && drops > 0, "{errors} errors, {drops} drops");
    assert_eq!(sim.orders().len(), 10);
    assert_eq!(sim.stats().lost_answers_injected, 10);
}

/// `GET /_sim/stats`, as a client of the simulator sees it.
async fn stats_over_http(sim: &SimHandle) -> Value {
    let (status, stats) =
        send(reqwest::Client::new().get(format!("{}/_sim/stats", sim.base_url()))).await;
    assert_eq!(status, 200, "{stats}");
    stats
}

/// A raw HTTP/1.1 CreateOrder, to see the bytes a client gets.
fn raw_create(api: &Api, sale_order_code: &str) -> Vec<u8> {
    let body = create_body(sale_order_code, "").to_string();
    let host = api.base.trim_start_matches("http://");
    format!(
        "POST /CreateOrder HTTP/1.1\r\nHost: {host}\r\ntoken: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        api.token,
        body.len()
    )
    .into_bytes()
}

/// Sends `request` on a fresh connection and reads until the server closes
/// it: the bytes received, and the error that ended the reading, if any.
async fn raw_exchange(sim: &SimHandle, request: &[u8]) -> (Vec<u8>, Option<std::io::Error>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return None,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("the server closes the connection");
    (received, ended)
}

#[tokio::test]
async fn a_reset_closes_the_connection_before_any_byte_yet_creates_the_order() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    sim.set_faults(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    });
    let sent = api
        .http
        .post(format!("{}/CreateOrder", api.base))
        .header("token", &api.token)
        .json(&create_body("h_reset_0", ""))
        .send()
        .await;
    let e = sent.expect_err("a reset connection gives no answer");
    assert!(e.status().is_none(), "{e:?}");
    assert!(e.is_request() && !e.is_timeout(), "{e:?}");

    let (received, ended) = raw_exchange(&sim, &raw_create(&api, "h_reset_1")).await;
    assert!(
        received.is_empty(),
        "no byte of the answer: {:?}",
        String::from_utf8_lossy(&received)
    );
    let e = ended.expect("the connection is reset, not closed gracefully");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e:?}");

    // Other calls are cut the same way and do nothing.
    let sent = api
        .http
        .get(format!("{}/getOrder?type=1&code=EE000000000VN", api.base))
        .header("token", &api.token)
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.status().is_none()));

    let codes: Vec<String> = sim
        .orders()
        .into_iter()
        .map(|o| o.sale_order_code)
        .collect();
    assert_eq!(codes, ["h_reset_0", "h_reset_1"]);
    let stats = stats_over_http(&sim).await;
    assert_eq!(stats["resets_injected"], 3, "{stats}");
    assert_eq!(stats["orders_created"], 2, "{stats}");
}

#[tokio::test]
async fn a_half_answer_gives_the_status_and_headers_but_no_body_yet_creates_the_order() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    sim.set_faults(Faults {
        half_answer_rate: 1.0,
        ..Faults::default()
    });
    let answer = api
        .http
        .post(format!("{}/CreateOrder", api.base))
        .header("token", &api.token)
        .json(&create_body("h_half_0", ""))
        .send()
        .await
        .expect("the head arrives");
    assert_eq!(answer.status().as_u16(), 200);
    let promised: usize = answer.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(promised > 0);
    let body = answer.bytes().await;
    assert!(body.is_err(), "the body cannot be read: {body:?}");

    let (received, _) = raw_exchange(&sim, &raw_create(&api, "h_half_1")).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");
    assert!(text.contains("content-length: "), "{text:?}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "the head and not one byte of the body: {text:?}"
    );

    assert_eq!(sim.orders().len(), 2);
    assert_eq!(sim.orders_for("h_half_1").len(), 1);
    let stats = stats_over_http(&sim).await;
    assert_eq!(stats["half_answers_injected"], 2, "{stats}");
}

#[tokio::test]
async fn a_slow_answer_comes_after_the_clients_timeout_yet_creates_the_order() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    sim.set_faults(Faults {
        slow_answer_rate: 1.0,
        slow_answer_ms: 800,
        ..Faults::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let sent = impatient
        .post(format!("{}/CreateOrder", api.base))
        .header("token", &api.token)
        .json(&create_body("h_slow_0", ""))
        .send()
        .await;
    assert!(sent.is_err_and(|e| e.is_timeout()));
    assert_eq!(sim.orders_for("h_slow_0").len(), 1, "created all the same");

    let started = Instant::now();
    let created = api.create("h_slow_1", "").await;
    assert!(created["itemCode"].is_string(), "{created}");
    assert!(started.elapsed() >= Duration::from_millis(800));

    let (status, orders) = send(api.http.get(format!("{}/_sim/orders", sim.base_url()))).await;
    assert_eq!(status, 200);
    assert_eq!(orders.as_array().map(Vec::len), Some(2), "{orders}");
    let stats = stats_over_http(&sim).await;
    assert_eq!(stats["slow_answers_injected"], 2, "{stats}");
}

#[tokio::test]
async fn a_garbage_answer_is_a_200_html_page_yet_creates_the_order() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    sim.set_faults(Faults {
        garbage_answer_rate: 1.0,
        ..Faults::default()
    });
    let answer = api
        .http
        .post(format!("{}/CreateOrder", api.base))
        .header("token", &api.token)
        .json(&create_body("h_garbage", ""))
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status().as_u16(), 200);
    assert!(
        answer.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let body = answer.bytes().await.expect("a whole body");
    assert!(!body.is_empty());
    assert!(serde_json::from_slice::<Value>(&body).is_err(), "not JSON");

    assert_eq!(sim.orders_for("h_garbage").len(), 1);
    let stats = stats_over_http(&sim).await;
    assert_eq!(stats["garbage_answers_injected"], 1, "{stats}");
}

#[tokio::test]
async fn with_a_listing_delay_new_orders_are_listed_only_after_it() {
    let sim = start(SimConfig {
        faults: Faults {
            listing_delay_ms: 400,
            ..Faults::default()
        },
        ..quiet()
    })
    .await;
    let api = Api::login(&sim).await;
    let codes = ["h_late_0", "h_late_1", "h_late_2", "h_late_3", "h_late_4"];
    for code in codes {
        api.create(code, "").await;
    }
    let list = format!(
        "GetListOrder?lastUpdateFrom={d}&lastUpdateTo={d}&type=GUI&size=500&page=0&isInternational=false",
        d = query_day(today())
    );
    let listed = |body: Value| -> Vec<String> {
        body["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["saleOrderCode"].as_str().unwrap().to_owned())
            .collect()
    };
    let early = listed(api.get(&list).await.1);
    assert!(
        early.len() < codes.len(),
        "some order not listed yet: {early:?}"
    );
    let stats = stats_over_http(&sim).await;
    assert_eq!(stats["listing_delays_injected"], 5, "{stats}");
    assert_eq!(stats["listings_missing_orders"], 1, "{stats}");

    tokio::time::sleep(Duration::from_millis(450)).await;
    let late = listed(api.get(&list).await.1);
    assert_eq!(late, codes, "every order listed after the delay");
    let stats = stats_over_http(&sim).await;
    assert_eq!(stats["listings_missing_orders"], 1, "{stats}");
    assert_eq!(sim.orders().len(), 5);
}

#[tokio::test]
async fn the_admin_endpoints_change_faults_and_list_orders() {
    let sim = start(quiet()).await;
    let api = Api::login(&sim).await;
    api.create("h_admin", "").await;
    let faults_url = format!("{}/_sim/faults", sim.base_url());
    let (status, _) = send(api.http.post(&faults_url).json(&json!({"error_rate": 1.5}))).await;
    assert_eq!(status, 400);
    let (status, _) = send(api.http.post(&faults_url).json(&json!({"error_rat": 1.0}))).await;
    assert_eq!(status, 400);
    let (status, applied) =
        send(api.http.post(&faults_url).json(&json!({"error_rate": 1.0}))).await;
    assert_eq!(status, 200);
    assert_eq!(applied["error_rate"], 1.0);
    assert_eq!(sim.faults().error_rate, 1.0);
    assert_eq!(
        api.post("CreateOrder", &create_body("h_x", "")).await.0,
        500
    );
    let (_, shown) = send(api.http.get(&faults_url)).await;
    assert_eq!(shown["batch_size"], 1);
    let (status, orders) = send(api.http.get(format!("{}/_sim/orders", sim.base_url()))).await;
    assert_eq!(status, 200);
    assert_eq!(orders[0]["sale_order_code"], "h_admin");
    assert!(!orders.to_string().contains("Nguyễn"), "no personal data");
}

#[tokio::test]
async fn webhooks_arrive_in_order_with_strictly_increasing_status_dates() {
    let receiver = Receiver::start().await;
    let sim = start(walking(&receiver.url)).await;
    let api = Api::login(&sim).await;
    let walks = [
        "delivered",
        "pickup_failed",
        "partial",
        "cancelled_by_carrier",
    ];
    for walk in walks {
        api.create(&format!("h_{walk}"), &format!("[sim:{walk}]"))
            .await;
    }
    let orders = all_finished(&sim, walks.len()).await;
    let records = receiver.wait_for_records(steps(&orders)).await;
    assert_eq!(records.len(), steps(&orders));
    for order in &orders {
        let mine = records_of(&records, &order.sale_order_code);
        let codes: Vec<i64> = mine.iter().map(|r| r["status"].as_i64().unwrap()).collect();
        assert_eq!(codes, sequence(order.sequence).unwrap().codes);
        let times: Vec<DateTime> = mine
            .iter()
            .map(|r| carrier_time(r["statusDate"].as_str().unwrap()))
            .collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        for r in &mine {
            assert_eq!(r["orderHdrID"], order.order_hdr_id.as_str());
            assert_eq!(r["originalID"], order.original_id.as_str());
            assert_eq!(r["itemCode"], order.item_code.as_str());
            assert!(r["statusName"].is_string() && r["locateName"].is_string());
            assert_eq!(r["totalFee"], order.total_fee);
            assert_eq!(r["codAmount"], 0);
        }
    }
    let body = &receiver.bodies()[0];
    carrier_time(body["sendDate"].as_str().unwrap());
    assert!(!body["signature"].as_str().unwrap().is_empty());
    // The receiver keeps a body before the simulator reads its answer.
    eventually("the delivered records to be counted", || {
        (sim.stats().webhook_records == steps(&orders) as u64).then_some(())
    })
    .await;
    assert_eq!(
        sim.stats().duplicates_injected + sim.stats().reorders_injected,
        0
    );
}

#[tokio::test]
async fn a_cod_order_walks_the_cod_sequence_and_reports_the_amount() {
    let receiver = Receiver::start().await;
    let sim = start(walking(&receiver.url)).await;
    let api = Api::login(&sim).await;
    let mut body = create_body("h_cod", "[sim:cod]");
    body["informationOrder"]["addonService"] =
        json!([{"code": "GTG021", "propValue": "PROP0018:50000"}]);
    let (status, _) = api.post("CreateOrder", &body).await;
    assert_eq!(status, 200);
    let orders = all_finished(&sim, 1).await;
    assert_eq!(orders[0].history.last().unwrap().code, 21);
    assert_eq!(orders[0].cod_amount, 50_000);
    let records = receiver.wait_for_records(steps(&orders)).await;
    assert!(records.iter().all(|r| r["codAmount"] == 50_000));
}

#[tokio::test]
async fn webhooks_are_resent_while_the_receiver_fails() {
    let receiver = Receiver::start().await;
    receiver.status.store(503, Ordering::SeqCst);
    let sim = start(walking(&receiver.url)).await;
    let api = Api::login(&sim).await;
    api.create("h_resend", "[sim:pickup_failed]").await;
    eventually("failed webhook posts", || {
        (sim.stats().webhook_failures >= 3).then_some(())
    })
    .await;
    assert!(receiver.records().is_empty());
    receiver.status.store(200, Ordering::SeqCst);
    let orders = all_finished(&sim, 1).await;
    let records = receiver.wait_for_records(steps(&orders)).await;
    let codes: Vec<i64> = records
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [1, 2, 4, 5, 8]);
}

#[tokio::test]
async fn the_duplicate_fault_sends_records_twice() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        faults: Faults {
            duplicate_webhook_rate: 1.0,
            ..Faults::default()
        },
        ..walking(&receiver.url)
    })
    .await;
    let api = Api::login(&sim).await;
    api.create("h_dup", "[sim:cancelled_by_carrier]").await;
    let orders = all_finished(&sim, 1).await;
    let records = receiver.wait_for_records(2 * steps(&orders)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *seen
            .entry(format!("{}@{}", r["status"], r["statusDate"]))
            .or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 2), "{seen:?}");
    assert_eq!(sim.stats().duplicates_injected, steps(&orders) as u64);
}

#[tokio::test]
async fn the_reorder_fault_delivers_a_record_after_a_later_one() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        faults: Faults {
            reorder_webhook_rate: 1.0,
            ..Faults::default()
        },
        ..walking(&receiver.url)
    })
    .await;
    let api = Api::login(&sim).await;
    api.create("h_reorder", "[sim:delivered]").await;
    let orders = all_finished(&sim, 1).await;
    let records = receiver.wait_for_records(steps(&orders)).await;
    let times: Vec<DateTime> = records
        .iter()
        .map(|r| carrier_time(r["statusDate"].as_str().unwrap()))
        .collect();
    assert!(times.windows(2).any(|w| w[0] > w[1]), "{times:?}");
    let mut codes: Vec<i64> = records
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    codes.sort_unstable();
    let mut want = sequence("delivered").unwrap().codes.to_vec();
    want.sort_unstable();
    assert_eq!(codes, want, "every record arrives once");
    assert!(sim.stats().reorders_injected > 0);
}

#[tokio::test]
async fn webhook_posts_hold_at_most_batch_size_records_of_several_orders() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        step_interval: Duration::from_millis(50),
        faults: Faults {
            batch_size: 3,
            ..Faults::default()
        },
        ..walking(&receiver.url)
    })
    .await;
    let api = Api::login(&sim).await;
    for i in 0..6 {
        api.create(&format!("h_batch_{i}"), "[sim:delivered]").await;
    }
    let orders = all_finished(&sim, 6).await;
    receiver.wait_for_records(steps(&orders)).await;
    let sizes: Vec<usize> = receiver
        .bodies()
        .iter()
        .map(|b| b["data"].as_array().unwrap().len())
        .collect();
    assert!(sizes.iter().all(|n| (1..=3).contains(n)), "{sizes:?}");
    assert!(sizes.contains(&3), "{sizes:?}");
    let mixed = receiver.bodies().iter().any(|b| {
        let data = b["data"].as_array().unwrap();
        data.iter()
            .any(|r| r["saleOrderCode"] != data[0]["saleOrderCode"])
    });
    assert!(mixed, "a POST carries several orders' records");
}

#[tokio::test]
async fn the_key_variant_fault_spells_keys_the_other_way() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        faults: Faults {
            key_variant_rate: 1.0,
            ..Faults::default()
        },
        ..walking(&receiver.url)
    })
    .await;
    let api = Api::login(&sim).await;
    let created = api.create("h_keys", "[sim:pickup_failed]").await;
    let orders = all_finished(&sim, 1).await;
    let records = receiver.wait_for_records(steps(&orders)).await;
    for r in &records {
        assert!(
            r.get("orderHdrID").is_none() && r["orderHdrId"].is_string(),
            "{r}"
        );
        assert!(r["originalId"].is_string(), "{r}");
    }
    let item = created["itemCode"].as_str().unwrap();
    let (_, history) = api
        .get(&format!("GetStatusHistoryOrder?type=1&code={item}"))
        .await;
    assert!(history["data"]["statusHistory"][0]["createHour"].is_string());
}

#[tokio::test]
async fn no_webhooks_are_posted_when_they_are_off() {
    let receiver = Receiver::start().await;
    let sim = start(SimConfig {
        faults: Faults {
            webhooks_enabled: false,
            ..Faults::default()
        },
        ..walking(&receiver.url)
    })
    .await;
    let api = Api::login(&sim).await;
    api.create("h_off", "[sim:pickup_failed]").await;
    let orders = all_finished(&sim, 1).await;
    eventually("the dropped records to be counted", || {
        (sim.stats().webhooks_dropped == steps(&orders) as u64).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(receiver.bodies().is_empty());
    assert_eq!(sim.stats().webhook_posts, 0);

    // Turned back on, later statuses are posted again.
    sim.set_faults(Faults::default());
    api.create("h_on", "[sim:pickup_failed]").await;
    receiver.wait_for_records(5).await;
    assert!(
        receiver
            .records()
            .iter()
            .all(|r| r["saleOrderCode"] == "h_on")
    );
}

#[test]
fn every_walk_has_its_expected_final_status() {
    let names = sequence_names();
    assert_eq!(
        names,
        [
            "delivered",
            "pickup_retry",
            "pickup_failed",
            "return_to_sender",
            "partial",
            "cod",
            "cancelled_by_carrier"
        ]
    );
    let finals: Vec<&str> = names.iter().map(|n| expected_final_status(n)).collect();
    assert_eq!(
        finals,
        [
            "delivered",
            "delivered",
            "pickup_failed",
            "returned",
            "partially_delivered",
            "delivered",
            "cancelled"
        ]
    );
}

fn postal_settings(base_url: &str) -> bcci_gateway::config::PostalSettings {
    postal_settings_with_timeout(base_url, 2000)
}

fn postal_settings_with_timeout(
    base_url: &str,
    timeout_ms: u64,
) -> bcci_gateway::config::PostalSettings {
    TestConfig::new("sqlite://data/bcci.db", base_url, "http://127.0.0.1:2/cb")
        .webhook_keys(&["0123456789abcdef0123"])
        .postal(&format!("timeout_ms = {timeout_ms}"))
        .client("motcua", &["test"])
        .admin(&["test"])
        .settings()
        .postal
}

#[tokio::test]
async fn the_gateways_client_creates_finds_tracks_and_cancels_against_the_simulator() {
    let sim = start(SimConfig {
        credentials: Some(Credentials {
            username: "partner".into(),
            password: "secret".into(),
        }),
        customer_code: Some("T000180585".into()),
        sequence_weights: vec![("delivered".into(), 1)],
        ..quiet()
    })
    .await;
    let client = VnPostClient::new(&postal_settings(&sim.base_url()), Arc::new(Metrics::new()))
        .expect("a client");

    let order = order_request(1, Kind::Return, 50_000);
    let created = client.create_order(&order).await.expect("created");
    let item = created.tracking_number.clone().expect("an item code");
    assert!(item.starts_with("EE") && item.ends_with("VN"), "{item}");
    assert_eq!(created.postage_vnd, Some(16_500));
    assert_eq!(created.status_code, Some(1));
    let held = &sim.orders_for(order.handoff_id.as_str())[0];
    assert_eq!(held.cod_amount, 50_000);
    assert_eq!(held.sequence, "cod");

    let found = client
        .find_orders(
            order.handoff_id.as_str(),
            today().yesterday().unwrap(),
            today(),
        )
        .await
        .expect("listed");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].order_id, created.order_id);
    assert_eq!(found[0].original_id, created.original_id);
    assert!(found[0].created_at.is_some());

    let events = client.tracking(&item).await.expect("tracked");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].code, 1);
    assert!(events[0].location.is_some());

    assert_eq!(
        client
            .cancel_order(&created.original_id)
            .await
            .expect("answered"),
        CancelAnswer::Cancelled
    );
    assert!(matches!(
        client.cancel_order(&created.original_id).await,
        Ok(CancelAnswer::Refused { .. })
    ));
    let events = client.tracking(&item).await.expect("tracked");
    assert_eq!(events.last().map(|e| e.code), Some(9));

    // A lost answer is ambiguous to the gateway, and the lookup finds the order.
    sim.set_faults(Faults {
        lost_answer_rate: 1.0,
        ..Faults::default()
    });
    let lost = order_request(2, Kind::Pickup, 0);
    match client.create_order(&lost).await {
        Err(CallFailure::Transient { ambiguous, .. }) => assert!(ambiguous),
        other => panic!("expected an ambiguous failure, got {other:?}"),
    }
    sim.set_faults(Faults::default());
    let found = client
        .find_orders(lost.handoff_id.as_str(), today(), today())
        .await
        .expect("listed");
    assert_eq!(found.len(), 1);

    // A refusal comes back as one, with the field named.
    let mut refused = order_request(3, Kind::Return, 0);
    refused.service_code = "XYZ001".into();
    match client.create_order(&refused).await {
        Err(CallFailure::Refused { message }) => assert!(message.contains("serviceCode")),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // An expired token is renewed by the client on its own.
    sim.set_faults(Faults {
        token_ttl_ms: 50,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(80)).await;
    client
        .tracking(&item)
        .await
        .expect("tracked after a new login");
    assert!(sim.stats().unauthorized >= 1);
    sim.shutdown().await;
}

/// Creates an order through the gateway's own client, logged in before
/// `faults` are set, and asserts the client took the failure as ambiguous and
/// the order was created all the same.
async fn the_client_finds_a_create_ambiguous_under(faults: Faults, timeout_ms: u64) -> SimHandle {
    let sim = start(quiet()).await;
    let settings = postal_settings_with_timeout(&sim.base_url(), timeout_ms);
    let client = VnPostClient::new(&settings, Arc::new(Metrics::new())).expect("a client");
    // Logs in while nothing is injected: a spoilt login is never ambiguous.
    client
        .find_orders("h_none", today(), today())
        .await
        .expect("listed");
    sim.set_faults(faults);
    let order = order_request(7, Kind::Return, 0);
    match client.create_order(&order).await {
        Err(CallFailure::Transient { ambiguous, .. }) => {
            assert!(ambiguous, "the order may exist: the failure is ambiguous");
        }
        other => panic!("expected an ambiguous failure, got {other:?}"),
    }
    assert_eq!(sim.orders_for(order.handoff_id.as_str()).len(), 1);
    sim
}

#[tokio::test]
async fn the_gateways_client_takes_a_reset_after_the_request_as_ambiguous() {
    let sim = the_client_finds_a_create_ambiguous_under(
        Faults {
            reset_rate: 1.0,
            ..Faults::default()
        },
        2000,
    )
    .await;
    assert_eq!(sim.stats().resets_injected, 1);
}

#[tokio::test]
async fn the_gateways_client_takes_a_half_answer_as_ambiguous() {
    let sim = the_client_finds_a_create_ambiguous_under(
        Faults {
            half_answer_rate: 1.0,
            ..Faults::default()
        },
        2000,
    )
    .await;
    assert_eq!(sim.stats().half_answers_injected, 1);
}

#[tokio::test]
async fn the_gateways_client_takes_an_answer_past_its_timeout_as_ambiguous() {
    let sim = the_client_finds_a_create_ambiguous_under(
        Faults {
            slow_answer_rate: 1.0,
            slow_answer_ms: 1000,
            ..Faults::default()
        },
        300,
    )
    .await;
    assert_eq!(sim.stats().slow_answers_injected, 1);
}

#[tokio::test]
async fn the_gateways_client_takes_a_200_html_page_as_ambiguous() {
    let sim = the_client_finds_a_create_ambiguous_under(
        Faults {
            garbage_answer_rate: 1.0,
            ..Faults::default()
        },
        2000,
    )
    .await;
    assert_eq!(sim.stats().garbage_answers_injected, 1);
}

#[tokio::test]
async fn the_postal_sim_command_prints_its_base_url_first() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_bcci-gateway"))
        .args([
            "postal-sim",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "7",
            "--error-rate",
            "0",
            "--batch-size",
            "2",
            "--reset-rate",
            "0.0001",
            "--half-answer-rate",
            "0.0002",
            "--slow-answer-rate",
            "0.0003",
            "--slow-answer-ms",
            "2500",
            "--garbage-answer-rate",
            "0.0004",
            "--listing-delay-ms",
            "700",
            "--username",
            "partner",
            "--password",
            "secret",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let base = first.trim().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{first:?}");
    let (status, body) = send(
        reqwest::Client::new()
            .post(format!("{base}/GetAccessToken"))
            .json(
                &json!({"username": "partner", "password": "secret", "customerCode": "T000180585"}),
            ),
    )
    .await;
    let (_, faults) = send(reqwest::Client::new().get(format!("{base}/_sim/faults"))).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200);
    assert_eq!(body["success"], true);
    for (field, value) in [
        ("reset_rate", json!(0.0001)),
        ("half_answer_rate", json!(0.0002)),
        ("slow_answer_rate", json!(0.0003)),
        ("slow_answer_ms", json!(2500)),
        ("garbage_answer_rate", json!(0.0004)),
        ("listing_delay_ms", json!(700)),
    ] {
        assert_eq!(faults[field], value, "{field} in {faults}");
    }
}

#[tokio::test]
async fn latency_is_added_to_every_answer() {
    let sim = start(SimConfig {
        faults: Faults {
            latency_ms: 150,
            latency_jitter_ms: 50,
            ..Faults::default()
        },
        ..quiet()
    })
    .await;
    let started = Instant::now();
    let api = Api::login(&sim).await;
    api.get("getOrder?type=1&code=EE000000000VN").await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}
