//! The public board of the desk's figures on the main listener (issue 20):
//! the same rows as the admin statistics, as a page without script, as JSON
//! and as CSV, and never a citizen's details.

use std::str::FromStr;
use std::sync::Arc;

use bcci_gateway::clock::{Clock, ManualClock};
use bcci_gateway::domain::HandoffId;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::common::config::{KEY, NOWHERE, TestConfig};
use crate::common::{Backend, TestStore, create_handoff, valid_request};
use crate::helpers::{ADMIN_TOKEN, OTHER_TOKEN, TOKEN, config};

/// The citizen's details in every request of these tests (the fixture's).
const PERSONAL: [&str; 6] = [
    "Nguyễn Văn An",
    "0912345678",
    "912345678",
    "an@example.vn",
    "Nguyễn Huệ",
    "khu 3",
];

/// A gateway on a manual clock, workers off: the test moves the handoffs
/// with Vietnam Post's webhook.
struct Board {
    intake: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    place: TestStore,
}

async fn board_with(configure: impl FnOnce(TestConfig) -> TestConfig) -> Board {
    let place = TestStore::new(Backend::Sqlite)
        .await
        .expect("a SQLite store");
    let settings =
        configure(config(&place.url, NOWHERE, &format!("{NOWHERE}/callback"))).settings();
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_str("2026-10-20T10:00:00+07:00").unwrap(),
    ));
    let app = crate::helpers::manual_app(settings, clock.clone()).await;
    let board = Board {
        intake: app.intake_addr(),
        admin: app.admin_addr(),
        clock,
        http: reqwest::Client::new(),
        place,
    };
    tokio::spawn(app.run_until_stopped());
    board
}

async fn board() -> Board {
    board_with(|c| c).await
}

/// A fetched answer: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Board {
    async fn fetch(&self, request: reqwest::RequestBuilder) -> Answer {
        let r = request.send().await.unwrap();
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    /// GET on the main listener, as a citizen's browser (no credentials).
    async fn get(&self, path: &str) -> Answer {
        self.fetch(self.http.get(format!("http://{}{path}", self.intake)))
            .await
    }

    /// GET on the admin API with the operator's token.
    async fn admin_get(&self, path: &str, accept: &str) -> Answer {
        self.fetch(
            self.http
                .get(format!("http://{}{path}", self.admin))
                .bearer_auth(ADMIN_TOKEN)
                .header("accept", accept),
        )
        .await
    }

    fn advance_to(&self, at: &str) {
        let at = Timestamp::from_str(at).unwrap();
        let by = at.duration_since(self.clock.now());
        assert!(by >= SignedDuration::ZERO, "the clock only moves forward");
        self.clock.advance(by);
    }

    /// A handoff through the intake API, now: a return, or a pickup.
    async fn create(&self, token: &str, request_id: &str, pickup: bool) -> HandoffId {
        let mut body = valid_request(request_id);
        if pickup {
            body["kind"] = json!("pickup");
            body["cod_amount_vnd"] = json!(0);
        }
        create_handoff(&self.http, self.intake, token, &body).await
    }

    /// Vietnam Post reports `code` for the handoff's order `n` at `at` (a
    /// Vietnam time `dd/mm/yyyy HH:MM:SS`), the clock having moved there.
    async fn report(&self, id: &HandoffId, n: u32, code: i64, at: &str) {
        let r = self
            .http
            .post(format!(
                "http://{}/v1/postal/vnpost/events/{KEY}",
                self.intake
            ))
            .json(&json!({
                "data": [{
                    "orderHdrId": format!("H{n}"), "originalId": format!("O{n}"),
                    "itemCode": format!("EE{n:09}VN"), "saleOrderCode": id.as_str(),
                    "status": code, "statusDate": at, "totalFee": 23000,
                }],
                "sendDate": at,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

/// The dataset: in November 2026, two returns delivered (one on time, one
/// late) and one waiting, one pickup delivered on time and one waiting, of
/// two intake systems; one return in October.
async fn dataset(b: &Board) {
    b.create(TOKEN, "OCT-1", false).await;
    b.advance_to("2026-11-10T09:00:00+07:00");
    let on_time = b.create(TOKEN, "NOV-1", false).await;
    let late = b.create(TOKEN, "NOV-2", false).await;
    b.create(OTHER_TOKEN, "NOV-3", false).await;
    let pickup = b.create(TOKEN, "NOV-4", true).await;
    b.create(OTHER_TOKEN, "NOV-5", true).await;
    let moved = [(&on_time, 1), (&late, 2), (&pickup, 3)];
    b.advance_to("2026-11-10T09:10:00+07:00");
    for (id, n) in moved {
        b.report(id, n, 1, "10/11/2026 09:10:00").await;
    }
    b.advance_to("2026-11-10T11:10:00+07:00");
    for (id, n) in moved {
        b.report(id, n, 6, "10/11/2026 11:10:00").await;
    }
    // The next day is within any legal time; forty days later is not.
    b.advance_to("2026-11-11T15:00:00+07:00");
    b.report(&on_time, 1, 14, "11/11/2026 15:00:00").await;
    b.report(&pickup, 3, 14, "11/11/2026 15:00:00").await;
    b.advance_to("2026-12-20T10:00:00+07:00");
    b.report(&late, 2, 14, "20/12/2026 10:00:00").await;
}

fn sum(rows: &[Value], kind: Option<&str>, field: &str) -> u64 {
    rows.iter()
        .filter(|r| kind.is_none_or(|k| r["kind"] == k))
        .map(|r| r[field].as_u64().unwrap())
        .sum()
}

/// Checks the board's JSON of a period against the admin statistics of its
/// dates: the same rows field for field, totals that are their sums.
async fn assert_same_as_admin(b: &Board, query: &str, from: &str, to: &str) -> Value {
    let answer = b.get(&format!("/board/figures.json?{query}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer
            .header("content-type")
            .starts_with("application/json")
    );
    assert_eq!(answer.header("cache-control"), "public, max-age=60");
    let doc = answer.json();
    assert_eq!(
        (doc["from"].as_str(), doc["to"].as_str()),
        (Some(from), Some(to))
    );
    let admin = b
        .admin_get(
            &format!("/v1/admin/stats?from={from}&to={to}"),
            "application/json",
        )
        .await;
    assert_eq!(admin.status, 200, "{}", admin.body);
    let admin_rows = admin.json()["rows"].as_array().unwrap().clone();
    assert!(!admin_rows.is_empty());
    let mut rows = doc["rows"].as_array().unwrap().clone();
    for row in &mut rows {
        let share = row
            .as_object_mut()
            .unwrap()
            .remove("on_time_share")
            .unwrap();
        let (on_time, late) = (
            row["on_time"].as_u64().unwrap(),
            row["late"].as_u64().unwrap(),
        );
        let expected = if on_time + late == 0 {
            Value::Null
        } else {
            json!(on_time as f64 / (on_time + late) as f64)
        };
        assert_eq!(share, expected, "{row}");
    }
    assert_eq!(
        rows, admin_rows,
        "the admin statistics' rows, field for field"
    );
    let totals = &doc["totals"];
    assert_eq!(
        totals["received_by_post"],
        sum(&admin_rows, Some("pickup"), "created")
    );
    assert_eq!(
        totals["returned_by_post"],
        sum(&admin_rows, Some("return"), "created")
    );
    assert_eq!(totals["on_time"], sum(&admin_rows, None, "on_time"));
    assert_eq!(totals["late"], sum(&admin_rows, None, "late"));

    let csv = b.get(&format!("/board/figures.csv?{query}")).await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.header("content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        csv.header("content-disposition"),
        format!(
            "attachment; filename=\"board-{}.csv\"",
            doc["period"].as_str().unwrap()
        )
    );
    assert_eq!(csv.header("cache-control"), "public, max-age=60");
    let admin_csv = b
        .admin_get(&format!("/v1/admin/stats?from={from}&to={to}"), "text/csv")
        .await;
    assert_eq!(admin_csv.status, 200);
    assert_eq!(csv.body, admin_csv.body, "the admin CSV, byte for byte");
    doc
}

#[tokio::test]
async fn the_board_s_figures_are_the_admin_statistics_of_the_period() {
    let b = board().await;
    dataset(&b).await;
    let month = assert_same_as_admin(&b, "month=2026-11", "2026-11-01", "2026-11-30").await;
    assert_eq!(month["period"], "2026-11");
    assert_eq!(
        month["totals"],
        json!({"received_by_post": 2, "returned_by_post": 3, "on_time": 2, "late": 1,
               "on_time_share": 2.0 / 3.0})
    );
    let trend = month["trend"].as_array().unwrap();
    let months: Vec<&str> = trend.iter().map(|t| t["month"].as_str().unwrap()).collect();
    assert_eq!(months.len(), 12);
    assert_eq!((months[0], months[11]), ("2025-12", "2026-11"));
    assert_eq!(
        trend[10],
        json!({"month": "2026-10", "received_by_post": 0, "returned_by_post": 1, "on_time": 0, "late": 0})
    );
    assert_eq!(
        trend[11],
        json!({"month": "2026-11", "received_by_post": 2, "returned_by_post": 3, "on_time": 2, "late": 1})
    );
    assert!(trend[..10].iter().all(|t| t["returned_by_post"] == 0));

    let year = assert_same_as_admin(&b, "year=2026", "2026-01-01", "2026-12-31").await;
    assert_eq!(year["period"], "2026");
    assert_eq!(year["totals"]["returned_by_post"], 4, "October's too");
    let months: Vec<&str> = year["trend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["month"].as_str().unwrap())
        .collect();
    assert_eq!((months[0], months[11]), ("2026-01", "2026-12"));

    // By default the current month in Vietnam time (December): nothing yet.
    let now = b.get("/board/figures.json").await.json();
    assert_eq!(
        (&now["period"], &now["rows"]),
        (&json!("2026-12"), &json!([]))
    );
    assert_eq!(now["totals"]["on_time_share"], Value::Null);
    let csv = b.get("/board/figures.csv").await;
    assert_eq!(
        csv.body,
        format!("{}\r\n", bcci_gateway::admin::wire::STATS_CSV_HEADER)
    );
}

/// The page's security headers: no script, no inline style.
fn assert_page(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), "text/html; charset=utf-8");
    let csp = answer.header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(answer.header("cache-control"), "public, max-age=60");
    assert!(!answer.body.contains("<script"), "{}", answer.body);
    assert!(!answer.body.contains(" style="), "{}", answer.body);
    assert!(answer.body.contains("<svg"), "the trend chart");
    assert!(answer.body.contains("href=\"/board/style.css\""));
}

#[tokio::test]
async fn the_page_shows_the_figures_without_script_in_either_language_and_as_a_kiosk() {
    let b = board().await;
    dataset(&b).await;
    let vi = b.get("/board?month=2026-11").await;
    assert_page(&vi);
    let page = &vi.body;
    assert!(page.contains("<html lang=\"vi\">"));
    assert!(page.contains("Hồ sơ tiếp nhận qua bưu chính"));
    for (figure, value) in [("received", "2"), ("returned", "3"), ("on-time", "66,7%")] {
        assert!(
            page.contains(&format!(
                "id=\"{figure}\"><span class=\"value\">{value}</span>"
            )),
            "{figure} = {value}: {page}"
        );
    }
    assert!(page.contains("id=\"agencies\""), "the table per agency");
    assert!(
        page.contains("Trả kết quả</td><td>motcua-condao</td>"),
        "{page}"
    );
    assert!(page.contains("href=\"/board/figures.json?month=2026-11\""));
    assert!(page.contains("href=\"/board/figures.csv?month=2026-11\""));
    assert!(page.contains("class=\"period\""), "the period form");
    assert!(!page.contains("http-equiv=\"refresh\""));

    let en = b.get("/board?month=2026-11&lang=en").await;
    assert_page(&en);
    assert!(en.body.contains("<html lang=\"en\">"));
    assert!(en.body.contains("Dossiers received by post"));
    assert!(
        en.body
            .contains("id=\"on-time\"><span class=\"value\">66.7%</span>")
    );
    assert!(en.body.contains("November 2026"));

    let kiosk = b.get("/board?kiosk=1&month=2026-11").await;
    assert_page(&kiosk);
    assert!(
        kiosk
            .body
            .contains("<meta http-equiv=\"refresh\" content=\"60\">"),
        "{}",
        kiosk.body
    );
    assert!(kiosk.body.contains("<body class=\"board kiosk\">"));
    assert!(
        kiosk
            .body
            .contains("id=\"received\"><span class=\"value\">2</span>")
    );
    assert!(!kiosk.body.contains("class=\"period\"") && !kiosk.body.contains("figures.csv"));

    let year = b.get("/board?year=2026").await;
    assert_page(&year);
    assert!(
        year.body
            .contains("id=\"returned\"><span class=\"value\">4</span>")
    );

    let empty = b.get("/board").await;
    assert_page(&empty);
    assert!(empty.body.contains("Không có hồ sơ nào trong kỳ này."));
    assert!(
        empty
            .body
            .contains("id=\"on-time\"><span class=\"value\">—</span>")
    );

    let css = b.get("/board/style.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").starts_with("text/css"));
    assert!(css.body.contains("body.kiosk"));
}

#[tokio::test]
async fn a_bad_period_is_refused_naming_its_parameter() {
    let b = board().await;
    for (path, name) in [
        ("/board?month=2026-13", "month"),
        ("/board?year=20x6", "year"),
        ("/board?month=2026-11&year=2026&lang=en", "year"),
    ] {
        let answer = b.get(path).await;
        assert_eq!(answer.status, 400, "{path}");
        assert_eq!(answer.header("content-type"), "text/html; charset=utf-8");
        assert!(
            answer
                .header("content-security-policy")
                .contains("default-src 'none'")
        );
        assert!(
            answer.body.contains(&format!("{name} ")),
            "{path}: {}",
            answer.body
        );
        assert!(!answer.body.contains("<script"));
    }
    for (path, name) in [
        ("/board/figures.json?year=abcd", "year"),
        ("/board/figures.json?month=2026-1", "month"),
        ("/board/figures.csv?month=13-2026", "month"),
    ] {
        let answer = b.get(path).await;
        assert_eq!(answer.status, 422, "{path}");
        assert_eq!(answer.header("content-type"), "application/problem+json");
        let doc = answer.json();
        assert_eq!(doc["errors"][0]["field"], name, "{path}: {doc}");
        assert_eq!(doc["status"], 422);
        assert_eq!(doc["type"], "urn:bcci:problem:invalid");
    }
}

#[tokio::test]
async fn the_board_is_on_the_main_listener_only_and_can_be_turned_off() {
    let on = board().await;
    assert_eq!(on.get("/board").await.status, 200);
    let admin = on
        .fetch(on.http.get(format!("http://{}/board", on.admin)))
        .await;
    assert_eq!(admin.status, 404, "not on the admin listener");

    let off = board_with(|c| c.extra("[board]\nenabled = false")).await;
    for path in [
        "/board",
        "/board?kiosk=1",
        "/board/figures.json",
        "/board/figures.csv",
        "/board/style.css",
    ] {
        assert_eq!(off.get(path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn the_board_shows_no_personal_data() {
    let b = board().await;
    dataset(&b).await;
    // The details are in the store (for the postal order): the board must
    // leave them there.
    let details: Vec<Option<String>> = {
        use sqlx::Connection as _;
        let url = b.place.url.clone();
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT details FROM handoffs")
            .fetch_all(&mut c)
            .await
            .unwrap()
    };
    let stored: String = details.into_iter().flatten().collect();
    for p in ["Nguyễn Văn An", "912345678", "an@example.vn", "Nguyễn Huệ"] {
        assert!(stored.contains(p), "{p} is not in the store: {stored}");
    }
    for path in [
        "/board?month=2026-11",
        "/board?month=2026-11&lang=en",
        "/board?year=2026&kiosk=1",
        "/board/figures.json?month=2026-11",
        "/board/figures.json?year=2026",
        "/board/figures.csv?year=2026",
    ] {
        let answer = b.get(path).await;
        assert_eq!(answer.status, 200, "{path}");
        for personal in PERSONAL {
            assert!(!answer.body.contains(personal), "{path} shows {personal}");
        }
    }
}

#[tokio::test]
async fn a_periods_figures_are_read_once_a_minute_however_often_the_board_is_asked() {
    let b = board().await;
    b.advance_to("2026-11-10T09:00:00+07:00");
    let count = async || {
        let doc = b.get("/board/figures.json?month=2026-11").await.json();
        doc["totals"]["returned_by_post"].as_u64().unwrap()
    };
    assert_eq!(count().await, 0);
    b.create(TOKEN, "CACHE-1", false).await;
    assert_eq!(count().await, 0, "served again within the minute");
    b.advance_to("2026-11-10T09:01:00+07:00");
    assert_eq!(count().await, 1, "read anew after a minute");
}
