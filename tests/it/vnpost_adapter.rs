//! The Vietnam Post adapter against a mock MyVNPost over HTTP.

use std::sync::Arc;
use std::time::Duration;

use bcci_gateway::carrier::vnpost::VnPostClient;
use bcci_gateway::carrier::{CallFailure, CancelAnswer, Carrier, OrderRequest};
use bcci_gateway::domain::Kind;
use bcci_gateway::telemetry::metrics::Metrics;
use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::common::config::TestConfig;
use crate::helpers::order_request;

const PREFIX: &str = "/customer-partner";
const DOSSIER: &str = "000.00.21.H79-261125-0001";
const NOTE: &str = "3 bản sao, 1 bản chính";

fn settings(base_url: &str, extra: &str) -> bcci_gateway::config::PostalSettings {
    TestConfig::new("sqlite://data/bcci.db", base_url, "http://127.0.0.1:2/cb")
        .login("partner", "secret-password", "T000180585")
        .webhook_keys(&["0123456789abcdef0123"])
        .postal(&format!(
            "contract_code = \"HD-2026\"\ntimeout_ms = 500\n{extra}"
        ))
        .client("motcua", &["test"])
        .admin(&["test"])
        .settings()
        .postal
}

struct Harness {
    server: MockServer,
    client: VnPostClient,
    metrics: Arc<Metrics>,
}

async fn harness() -> Harness {
    harness_with("").await
}

async fn harness_with(extra: &str) -> Harness {
    let server = MockServer::start().await;
    let metrics = Arc::new(Metrics::new());
    let base = format!("{}{PREFIX}/", server.uri());
    let client = VnPostClient::new(&settings(&base, extra), metrics.clone()).unwrap();
    Harness {
        server,
        client,
        metrics,
    }
}

impl Harness {
    async fn login_gives(&self, token: &str) {
        Mock::given(method("POST"))
            .and(path(format!("{PREFIX}/GetAccessToken")))
            .and(body_json(json!({
                "username": "partner", "password": "secret-password", "customerCode": "T000180585"
            })))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "success": true, "errorMessage": null, "token": token
            })))
            .mount(&self.server)
            .await;
    }

    async fn create_answers(&self, answer: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path(format!("{PREFIX}/CreateOrder")))
            .respond_with(answer)
            .mount(&self.server)
            .await;
    }

    async fn received(&self, endpoint: &str) -> Vec<Request> {
        let full = format!("{PREFIX}/{endpoint}");
        self.server
            .received_requests()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.url.path() == full)
            .collect()
    }

    async fn create_body(&self) -> Value {
        let sent = self.received("CreateOrder").await;
        assert_eq!(sent.len(), 1);
        sent[0].body_json().unwrap()
    }
}

fn order(kind: Kind, cod: u64) -> OrderRequest {
    let mut o = order_request(7, kind, cod);
    o.customer_code = "KH-CONDAO".into();
    o.request.request_id = "HG-2026-000123".into();
    o.request.dossier_code = DOSSIER.into();
    o.request.parcel.note = Some(NOTE.into());
    o.request.service_code = Some("ETN011".into());
    o
}

fn created() -> Value {
    json!({
        "orderHdrID": "OH-1", "originalID": "OR-1", "itemCode": "BK990032281VN",
        "saleOrderCode": order(Kind::Return, 0).handoff_id.as_str(), "status": 1, "totalFee": 23000
    })
}

fn transient(failure: CallFailure) -> (bool, &'static str, Option<Duration>) {
    match failure {
        CallFailure::Transient {
            ambiguous,
            outcome,
            retry_after,
            ..
        } => (ambiguous, outcome, retry_after),
        CallFailure::Refused { message } => {
            panic!("expected a transient failure, got a refusal: {message}")
        }
    }
}

#[tokio::test]
async fn a_return_is_created_with_the_token_header_from_the_agency_to_the_citizen() {
    let h = harness().await;
    h.login_gives("tok-1").await;
    Mock::given(method("POST"))
        .and(path(format!("{PREFIX}/CreateOrder")))
        .and(header("token", "tok-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true, "errorMessage": null, "data": created()
        })))
        .expect(2)
        .mount(&h.server)
        .await;

    let o = order(Kind::Return, 50_000);
    let got = h.client.create_order(&o).await.unwrap();
    assert_eq!(got.order_id, "OH-1");
    assert_eq!(got.original_id, "OR-1");
    assert_eq!(got.tracking_number.as_deref(), Some("BK990032281VN"));
    assert_eq!(got.postage_vnd, Some(23_000));
    assert_eq!(got.status_code, Some(1));

    let body = h.create_body().await;
    let info = &body["informationOrder"];
    assert_eq!(body["orderCreationStatus"], 1);
    assert_eq!(body["type"], "GUI");
    assert_eq!(body["customerCode"], "KH-CONDAO");
    assert_eq!(body["contractCode"], "HD-2026");
    assert_eq!(info["senderName"], "Bộ phận một cửa đặc khu Côn Đảo");
    assert_eq!(info["senderPhone"], "02543830123");
    assert_eq!(info["senderEmail"], "");
    assert_eq!(info["senderAddress"], "28 Tôn Đức Thắng");
    assert_eq!(info["senderCommuneCode"], "26734");
    assert_eq!(info["receiverName"], "Nguyễn Văn An");
    assert_eq!(info["receiverPhone"], "0912345678");
    assert_eq!(info["receiverEmail"], "an@example.vn");
    assert_eq!(info["receiverAddress"], "12 Nguyễn Huệ, khu 3");
    assert_eq!(info["receiverCommuneCode"], "26732");
    assert_eq!(info["senderDistrictCode"], "VNPOST");
    assert_eq!(info["receiverDistrictCode"], "VNPOST");
    assert_eq!(info["serviceCode"], "ETN011");
    assert_eq!(
        info["addonService"],
        json!([{"code": "GTG021", "propValue": "PROP0018:50000"}])
    );
    assert_eq!(info["saleOrderCode"], o.handoff_id.as_str());
    assert_eq!(
        info["contentNote"],
        format!("Đăng ký hộ kinh doanh - {DOSSIER}")
    );
    assert_eq!(info["weight"], "300");
    assert_eq!(info["sendType"], "1");
    assert_eq!(info["isBroken"], "0");
    assert_eq!(info["deliveryInstruction"], "");
    let raw = body.to_string();
    assert!(!raw.contains(NOTE), "parcel.note must not be sent: {raw}");

    // The token is cached: a second create logs in no more.
    h.client.create_order(&o).await.unwrap();
    assert_eq!(h.received("GetAccessToken").await.len(), 1);

    let text = h.metrics.prometheus_text();
    assert!(
        text.contains(r#"bcci_postal_requests_total{operation="token",outcome="ok"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"bcci_postal_requests_total{operation="create",outcome="ok"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_pickup_goes_from_the_citizen_through_the_address_map_to_the_agency() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("address-map.csv");
    std::fs::write(
        &csv,
        "gso_code,vnpost_code\n# Côn Đảo\n79,70\n26732,7012345\n",
    )
    .unwrap();
    let h = harness_with(&format!(
        "address_map = {:?}\npickup_fee_addon = \"GTG099\"\ncontent_note_max_chars = 80",
        csv.display().to_string()
    ))
    .await;
    h.login_gives("tok-1").await;
    h.create_answers(ResponseTemplate::new(200).set_body_json(created()))
        .await;

    let mut o = order(Kind::Pickup, 20_000);
    o.request.procedure.name = "Cấp giấy chứng nhận đăng ký hộ kinh doanh ".repeat(5);
    o.request.citizen.email = None;
    h.client.create_order(&o).await.unwrap();

    let body = h.create_body().await;
    let info = &body["informationOrder"];
    assert_eq!(info["senderName"], "Nguyễn Văn An");
    assert_eq!(info["senderEmail"], "");
    assert_eq!(info["senderProvinceCode"], "70");
    assert_eq!(info["senderCommuneCode"], "7012345");
    assert_eq!(info["receiverName"], "Bộ phận một cửa đặc khu Côn Đảo");
    assert_eq!(info["receiverProvinceCode"], "70");
    // Not in the map: passes through.
    assert_eq!(info["receiverCommuneCode"], "26734");
    assert_eq!(
        info["addonService"],
        json!([{"code": "GTG099", "propValue": "PROP0018:20000"}])
    );
    let note = info["contentNote"].as_str().unwrap();
    assert!(note.chars().count() <= 80, "{note}");
    assert!(note.starts_with("Cấp giấy"), "{note}");
    assert!(note.ends_with(&format!("… - {DOSSIER}")), "{note}");
}

#[tokio::test]
async fn no_addon_is_sent_without_an_amount_and_a_bare_answer_with_other_spellings_is_read() {
    let h = harness().await;
    h.login_gives("tok-1").await;
    h.create_answers(ResponseTemplate::new(200).set_body_json(json!({
        "orderHdrId": 991, "originalId": "OR-9", "itemCode": "EB123456789VN",
        "status": "1", "totalFee": "18500"
    })))
    .await;
    let got = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap();
    assert_eq!(got.order_id, "991");
    assert_eq!(got.original_id, "OR-9");
    assert_eq!(got.postage_vnd, Some(18_500));
    assert_eq!(got.status_code, Some(1));
    let body = h.create_body().await;
    assert_eq!(body["informationOrder"]["addonService"], json!([]));
}

#[tokio::test]
async fn an_expired_token_is_renewed_once_and_the_call_retried() {
    let h = harness().await;
    Mock::given(path(format!("{PREFIX}/GetAccessToken")))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true, "token": "old"})),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.server)
        .await;
    h.login_gives("new").await;
    Mock::given(path(format!("{PREFIX}/CreateOrder")))
        .and(header("token", "old"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&h.server)
        .await;
    Mock::given(path(format!("{PREFIX}/CreateOrder")))
        .and(header("token", "new"))
        .respond_with(ResponseTemplate::new(200).set_body_json(created()))
        .mount(&h.server)
        .await;

    let got = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap();
    assert_eq!(got.order_id, "OH-1");
    assert_eq!(h.received("GetAccessToken").await.len(), 2);
    assert_eq!(h.received("CreateOrder").await.len(), 2);
}

#[tokio::test]
async fn credentials_refused_after_a_new_login_are_transient_not_a_refusal() {
    let h = harness().await;
    h.login_gives("tok").await;
    h.create_answers(ResponseTemplate::new(403)).await;
    let failure = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(transient(failure), (false, "transient", None));
    assert_eq!(h.received("GetAccessToken").await.len(), 2);
    assert_eq!(h.received("CreateOrder").await.len(), 2);
}

#[tokio::test]
async fn a_failed_login_is_transient_and_never_ambiguous() {
    for answer in [
        ResponseTemplate::new(200).set_body_json(
            json!({"success": false, "errorMessage": "Sai mật khẩu", "token": null}),
        ),
        ResponseTemplate::new(401),
        ResponseTemplate::new(500),
    ] {
        let h = harness().await;
        Mock::given(path(format!("{PREFIX}/GetAccessToken")))
            .respond_with(answer)
            .mount(&h.server)
            .await;
        let failure = h
            .client
            .create_order(&order(Kind::Return, 0))
            .await
            .unwrap_err();
        let shown = format!("{failure:?}");
        assert!(
            !shown.contains("secret-password") && !shown.contains("Sai mật khẩu"),
            "{shown}"
        );
        assert!(!transient(failure).0);
        assert!(h.received("CreateOrder").await.is_empty());
    }
}

#[tokio::test]
async fn a_400_is_a_refusal_with_its_message() {
    let h = harness().await;
    h.login_gives("tok").await;
    h.create_answers(ResponseTemplate::new(400).set_body_json(json!({
        "success": false, "errorMessage": "Mã phường/xã người nhận không hợp lệ"
    })))
    .await;
    let failure = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(
        failure,
        CallFailure::Refused {
            message: "Mã phường/xã người nhận không hợp lệ".into()
        }
    );
    let text = h.metrics.prometheus_text();
    assert!(
        text.contains(r#"bcci_postal_requests_total{operation="create",outcome="rejected"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn success_false_is_a_refusal_unless_the_message_is_transient() {
    let h = harness().await;
    h.login_gives("tok").await;
    Mock::given(path(format!("{PREFIX}/CreateOrder")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": false, "errorMessage": "Hệ thống bận, vui lòng thử lại", "data": null
        })))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.server)
        .await;
    h.create_answers(ResponseTemplate::new(200).set_body_json(json!({
        "success": false, "errorMessage": "Khối lượng vượt quá quy định"
    })))
    .await;

    let first = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(transient(first), (true, "ambiguous", None));
    let second = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(
        second,
        CallFailure::Refused {
            message: "Khối lượng vượt quá quy định".into()
        }
    );
    let text = h.metrics.prometheus_text();
    assert!(
        text.contains(r#"bcci_postal_requests_total{operation="create",outcome="ambiguous"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn server_errors_and_unreadable_successes_are_ambiguous() {
    for answer in [
        ResponseTemplate::new(500),
        ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"),
        ResponseTemplate::new(200).set_body_string("<html>OK</html>"),
        ResponseTemplate::new(200).set_body_json(json!({"success": true, "data": {}})),
    ] {
        let h = harness().await;
        h.login_gives("tok").await;
        h.create_answers(answer).await;
        let failure = h
            .client
            .create_order(&order(Kind::Return, 0))
            .await
            .unwrap_err();
        assert_eq!(transient(failure), (true, "ambiguous", None));
    }
}

#[tokio::test]
async fn retry_after_is_read_as_seconds_or_an_http_date() {
    let in_two_minutes = Timestamp::now() + jiff::SignedDuration::from_secs(120);
    let http_date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&in_two_minutes)
        .unwrap();
    for (status, retry_after, ambiguous) in [
        (503, "30".to_owned(), true),
        (429, "30".to_owned(), false),
        (503, http_date.clone(), true),
        (429, http_date, false),
    ] {
        let h = harness().await;
        h.login_gives("tok").await;
        h.create_answers(
            ResponseTemplate::new(status).insert_header("Retry-After", retry_after.as_str()),
        )
        .await;
        let failure = h
            .client
            .create_order(&order(Kind::Return, 0))
            .await
            .unwrap_err();
        let (a, outcome, wait) = transient(failure);
        assert_eq!(a, ambiguous, "{status}");
        assert_eq!(outcome, if ambiguous { "ambiguous" } else { "transient" });
        let wait = wait.expect("Retry-After is passed on").as_secs();
        if retry_after == "30" {
            assert_eq!(wait, 30);
        } else {
            assert!((100..=120).contains(&wait), "{wait}");
        }
    }
}

#[tokio::test]
async fn a_408_never_reached_the_order_book() {
    let h = harness().await;
    h.login_gives("tok").await;
    h.create_answers(ResponseTemplate::new(408)).await;
    let failure = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(transient(failure), (false, "transient", None));
}

#[tokio::test]
async fn an_answer_later_than_the_timeout_is_ambiguous() {
    let h = harness().await;
    h.login_gives("tok").await;
    h.create_answers(
        ResponseTemplate::new(200)
            .set_body_json(created())
            .set_delay(Duration::from_millis(1_500)),
    )
    .await;
    let failure = h
        .client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(transient(failure), (true, "timeout", None));
    let text = h.metrics.prometheus_text();
    assert!(
        text.contains(r#"bcci_postal_requests_total{operation="create",outcome="timeout"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_not_ambiguous() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let metrics = Arc::new(Metrics::new());
    let client = VnPostClient::new(
        &settings(&format!("http://127.0.0.1:{port}{PREFIX}"), ""),
        metrics.clone(),
    )
    .unwrap();
    let failure = client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(transient(failure), (false, "transient", None));
    let text = metrics.prometheus_text();
    assert!(
        text.contains(r#"bcci_postal_requests_total{operation="token",outcome="transient"} 1"#),
        "{text}"
    );
}

/// A server that answers the login, then closes the connection of any other
/// request without answering.
async fn hang_up_after_login() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = socket.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if seen.len() < end + 4 + length {
                        continue;
                    }
                    if !text.contains("GetAccessToken") {
                        return;
                    }
                    let body = r#"{"success":true,"token":"tok"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    seen.clear();
                }
            });
        }
    });
    format!("http://{addr}{PREFIX}")
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_ambiguous() {
    let base = hang_up_after_login().await;
    let client = VnPostClient::new(&settings(&base, ""), Arc::new(Metrics::new())).unwrap();
    let failure = client
        .create_order(&order(Kind::Return, 0))
        .await
        .unwrap_err();
    assert_eq!(transient(failure), (true, "ambiguous", None));
}

fn listed(n: usize, sale_order_code: &str) -> Value {
    json!({
        "orderHdrID": format!("OH-{n}"), "originalID": format!("OR-{n}"),
        "itemCode": format!("BK{n:09}VN"), "saleOrderCode": sale_order_code,
        "status": 2, "totalFee": 23000, "createdDate": "25/11/2026 14:03:00"
    })
}

#[tokio::test]
async fn a_lookup_pages_until_a_page_is_not_full() {
    let h = harness().await;
    h.login_gives("tok").await;
    let ours = order(Kind::Return, 0).handoff_id.to_string();
    let first: Vec<Value> = (0..500)
        .map(|n| listed(n, &format!("h_other{n}")))
        .collect();
    let second = vec![
        listed(900, "h_other"),
        listed(901, &ours),
        listed(902, "h_other2"),
    ];
    for (page, records) in [("0", first), ("1", second)] {
        Mock::given(method("GET"))
            .and(path(format!("{PREFIX}/GetListOrder")))
            .and(header("token", "tok"))
            .and(query_param("lastUpdateFrom", "05-01-2026"))
            .and(query_param("lastUpdateTo", "06-01-2026"))
            .and(query_param("type", "GUI"))
            .and(query_param("size", "500"))
            .and(query_param("page", page))
            .and(query_param("isInternational", "false"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"data": {"results": records}})),
            )
            .expect(1)
            .mount(&h.server)
            .await;
    }
    let found = h
        .client
        .find_orders(
            &ours,
            Date::constant(2026, 1, 5),
            Date::constant(2026, 1, 6),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].order_id, "OH-901");
    assert_eq!(found[0].tracking_number.as_deref(), Some("BK000000901VN"));
    assert_eq!(
        found[0].created_at,
        Some("2026-11-25T14:03:00+07:00".parse().unwrap())
    );
    let text = h.metrics.prometheus_text();
    assert!(
        text.contains(r#"bcci_postal_requests_total{operation="lookup",outcome="ok"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_lookup_that_finds_nothing_is_empty_and_its_failures_are_not_ambiguous() {
    let h = harness().await;
    h.login_gives("tok").await;
    Mock::given(path(format!("{PREFIX}/GetListOrder")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"results": []})))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&h.server)
        .await;
    Mock::given(path(format!("{PREFIX}/GetListOrder")))
        .respond_with(ResponseTemplate::new(500))
        .mount(&h.server)
        .await;
    let day = Date::constant(2026, 11, 25);
    assert!(
        h.client
            .find_orders("h_x", day, day)
            .await
            .unwrap()
            .is_empty()
    );
    let failure = h.client.find_orders("h_x", day, day).await.unwrap_err();
    assert_eq!(transient(failure), (false, "transient", None));
}

async fn cancel_answer(answer: Value) -> Result<CancelAnswer, CallFailure> {
    let h = harness().await;
    h.login_gives("tok").await;
    Mock::given(method("POST"))
        .and(path(format!("{PREFIX}/orderCancel")))
        .and(header("token", "tok"))
        .and(body_json(json!({"OriginalId": "OR-1"})))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .expect(1)
        .mount(&h.server)
        .await;
    h.client.cancel_order("OR-1").await
}

#[tokio::test]
async fn cancel_answers_are_cancelled_pending_or_refused() {
    assert_eq!(
        cancel_answer(json!({"Type": "00", "Message": "Thành công", "OriginalId": "OR-1"}))
            .await
            .unwrap(),
        CancelAnswer::Cancelled
    );
    assert_eq!(
        cancel_answer(
            json!({"Type": "02", "Message": "Chờ duyệt", "OriginalId": "OR-1", "CaseId": "CASE-7"})
        )
        .await
        .unwrap(),
        CancelAnswer::Pending {
            case_id: Some("CASE-7".into())
        }
    );
    assert_eq!(
        cancel_answer(json!({"Type": "01", "Message": "Đơn hàng đã được lấy", "Note": null}))
            .await
            .unwrap(),
        CancelAnswer::Refused {
            message: "Đơn hàng đã được lấy".into()
        }
    );
}

#[tokio::test]
async fn tracking_reads_both_hour_spellings_oldest_first_in_vietnam_time() {
    let h = harness().await;
    h.login_gives("tok").await;
    Mock::given(method("GET"))
        .and(path(format!("{PREFIX}/GetStatusHistoryOrder")))
        .and(query_param("type", "1"))
        .and(query_param("code", "BK990032281VN"))
        .and(header("token", "tok"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"data": {"statusHistory": [
                {"statusCode": 6, "statusName": "Đã nhận hàng", "locateName": "BC Côn Đảo",
                 "createdDate": "25/11/2026", "createdHour": "14:03:00"},
                {"statusCode": 2, "statusName": "Đã phân công", "locateName": "BC Côn Đảo",
                 "createdDate": "25/11/2026", "createHour": "09:30:00"}
            ]}})),
        )
        .mount(&h.server)
        .await;
    let events = h.client.tracking("BK990032281VN").await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].code, 2);
    assert_eq!(
        events[0].occurred_at,
        "2026-11-25T02:30:00Z".parse::<Timestamp>().unwrap()
    );
    assert_eq!(events[1].code, 6);
    assert_eq!(events[1].text.as_deref(), Some("Đã nhận hàng"));
    assert_eq!(events[1].location.as_deref(), Some("BC Côn Đảo"));
    assert_eq!(
        events[1].occurred_at,
        "2026-11-25T14:03:00+07:00".parse::<Timestamp>().unwrap()
    );
}
