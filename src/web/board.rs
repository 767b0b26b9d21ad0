//! The public board of the one-stop desk's administrative-reform figures, on
//! the main listener (issue 20): `GET /board` (the page; `?kiosk=1` for the
//! screen where citizens are received), `GET /board/figures.json` and
//! `GET /board/figures.csv` (the same figures as data), `/board/style.css`.
//!
//! # The period
//!
//! `?month=YYYY-MM` (by default the current month in Vietnam time) or
//! `?year=YYYY`: the Vietnam dates from its first day to its last. A handoff
//! belongs to the period when it was received from the intake system
//! (created) on one of those dates, whatever became of it since: a period's
//! figures still change while its handoffs travel.
//!
//! # The figures
//!
//! They are exactly the statistics of the admin API
//! (`GET /v1/admin/stats?from=&to=` over the period's dates): one row per
//! intake system, agency code and kind of the handoffs created in the
//! period, which holds no personal data.
//!
//! - **Dossiers received by post**: handoffs of kind `pickup` (Vietnam Post
//!   collects the dossier from the citizen for the desk) created in the
//!   period: the sum of `created` over the `pickup` rows.
//! - **Results returned by post**: handoffs of kind `return` (Vietnam Post
//!   carries the result from the desk to the citizen) created in the
//!   period: the sum of `created` over the `return` rows.
//! - **Delivered on time** / **late**: of the period's handoffs that have
//!   both a delivery time and a legal delivery time (`sla_due_at`: J + n
//!   working days, J the day Vietnam Post took the item over, Thông tư
//!   17/2017/TT-BTTTT), those delivered no later than the legal time / after
//!   it. A handoff not delivered (yet), or without a legal time, is neither.
//! - **On-time share**: on time ÷ (on time + late), both kinds together (per
//!   row in the table and in the rows of the JSON); a percentage with one
//!   decimal on the page, a number from 0 to 1 in the JSON; "—" (`null`)
//!   when none was delivered.
//! - **Median days to order**: the median time from the handoff's reception
//!   to the creation of its postal order, over the row's handoffs that have
//!   one; **to pickup**: from the order to Vietnam Post's pickup; **to
//!   delivery**: from the pickup to the delivery. In days (seconds ÷ 86 400)
//!   with one decimal; "—" without a sample. The median of an even count is
//!   the mean of the middle two.
//!   The medians are shown per row only: a median over several rows cannot
//!   be made from theirs, and the board shows no figure `admin stats` does
//!   not give.
//! - **Trend**: the received, returned, on-time and late totals of each of
//!   the 12 months ending with the period's month (for a year, its 12
//!   months), each month counted as a period of its own.
//!
//! The page has no script and no inline style (the policy of
//! [`super::page_headers`]); a public cache may keep an answer one minute.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::civil::{Date, date};
use maud::{Markup, html};
use serde_json::{Value, json};

use super::chart::{self, TrendPoint};
use super::{Frame, Here, Lang, kind_name, when};
use crate::admin::wire::{stats_csv, stats_row};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::Kind;
use crate::domain::time::vietnam;
use crate::http::{self, Problem, ProblemFormat};
use crate::store::admin::StatsRow;
use crate::store::{SharedStore, StoreError};

/// What the board's handlers share.
#[derive(Clone)]
pub struct BoardState {
    pub store: SharedStore,
    pub clock: Arc<dyn Clock>,
    pub refresh_s: u32,
    /// Seconds a period's figures are served again before they are read anew.
    cache_for: jiff::SignedDuration,
    /// Figures read lately, by period, with when they were read. The lock
    /// is held while figures are read, so a burst of requests (the board is
    /// public) costs the store one reading.
    cache: Arc<tokio::sync::Mutex<FiguresRead>>,
}

/// Periods' figures with when they were read.
type FiguresRead = HashMap<Period, (jiff::Timestamp, Arc<Figures>)>;

/// Periods whose figures are kept at once.
const CACHED_PERIODS: usize = 64;

impl BoardState {
    pub fn new(settings: &Settings, store: SharedStore, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            refresh_s: settings.board.kiosk_refresh_s,
            cache_for: jiff::SignedDuration::from_secs(i64::from(settings.board.cache_s)),
            cache: Arc::default(),
        }
    }

    /// A period's figures: read from the store (13 statistics reads), or as
    /// read less than `board.cache_s` ago.
    async fn figures(&self, period: Period) -> Result<Arc<Figures>, StoreError> {
        let mut cache = self.cache.lock().await;
        let now = self.clock.now();
        let fresh = |read: jiff::Timestamp| now.duration_since(read) < self.cache_for;
        if let Some((read, figures)) = cache.get(&period)
            && fresh(*read)
        {
            return Ok(figures.clone());
        }
        let figures = Arc::new(Figures::of(self, period).await?);
        cache.retain(|_, (read, _)| fresh(*read));
        if cache.len() >= CACHED_PERIODS {
            cache.clear();
        }
        cache.insert(period, (now, figures.clone()));
        Ok(figures)
    }
}

/// The board's routes, under `/board`.
pub fn router(state: BoardState) -> Router {
    let routes = Router::new()
        .route("/board", get(page))
        .route("/board/style.css", get(super::style))
        .route("/board/figures.json", get(figures_json))
        .route("/board/figures.csv", get(figures_csv))
        .with_state(state);
    // Outermost, so a problem rendered again by `with_problems` keeps the
    // page headers.
    http::with_problems(routes, ProblemFormat::Json, None)
        .layer(axum::middleware::from_fn(super::page_headers))
}

/// How long a cache may keep an answer: the figures move slowly, and a
/// minute spares the store the twelve months of the trend per reader.
const CACHE: &str = "public, max-age=60";

/// The earliest year asked for: nothing was created before the gateway.
const FIRST_YEAR: i16 = 1970;

/// The query's parameters.
type Params = Query<HashMap<String, String>>;

// ---------------------------------------------------------------- the period

/// The dates the figures are over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Month { year: i16, month: i8 },
    Year(i16),
}

/// A query parameter the board refused: its name and why, in both languages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam {
    pub name: &'static str,
    pub en: &'static str,
    pub vi: &'static str,
}

impl BadParam {
    /// 422 naming the parameter, as the admin API's stats answer a bad
    /// date: a problem document for the data routes.
    fn problem(self) -> Problem {
        Problem::field(self.name, self.en)
    }
}

/// Four digits, a year the gateway can have figures for.
fn parse_year(raw: &str) -> Option<i16> {
    if raw.len() != 4 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok().filter(|y| *y >= FIRST_YEAR)
}

impl Period {
    /// `?month=YYYY-MM` or `?year=YYYY` (a value given empty or padded is
    /// refused); the
    /// month of `today` when neither is given.
    pub fn parse(query: &HashMap<String, String>, today: Date) -> Result<Self, BadParam> {
        // A parameter given is judged as given: empty or padded is refused.
        let given = |name: &str| query.get(name).map(String::as_str);
        match (given("month"), given("year")) {
            (Some(_), Some(_)) => Err(BadParam {
                name: "year",
                en: "give month or year, not both",
                vi: "chỉ chọn tháng hoặc năm, không chọn cả hai",
            }),
            (Some(raw), None) => raw
                .split_once('-')
                .filter(|(_, m)| m.len() == 2 && m.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|(y, m)| Some((parse_year(y)?, m.parse::<i8>().ok()?)))
                .filter(|(_, m)| (1..=12).contains(m))
                .map(|(year, month)| Period::Month { year, month })
                .ok_or(BadParam {
                    name: "month",
                    en: "must be a month YYYY-MM from 1970-01 (e.g. 2026-11)",
                    vi: "cần một tháng dạng YYYY-MM, từ 1970-01 (ví dụ 2026-11)",
                }),
            (None, Some(raw)) => parse_year(raw).map(Period::Year).ok_or(BadParam {
                name: "year",
                en: "must be a year YYYY from 1970 (e.g. 2026)",
                vi: "cần một năm dạng YYYY, từ 1970 (ví dụ 2026)",
            }),
            (None, None) => Ok(Period::Month {
                year: today.year(),
                month: today.month(),
            }),
        }
    }

    /// Its first Vietnam date.
    pub fn first(self) -> Date {
        match self {
            Period::Month { year, month } => date(year, month, 1),
            Period::Year(year) => date(year, 1, 1),
        }
    }

    /// Its last Vietnam date.
    pub fn last(self) -> Date {
        match self {
            Period::Month { .. } => self.first().last_of_month(),
            Period::Year(year) => date(year, 12, 31),
        }
    }

    /// As the query and the data name it: `2026-11`, `2026`.
    pub fn code(self) -> String {
        match self {
            Period::Month { year, month } => format!("{year:04}-{month:02}"),
            Period::Year(year) => format!("{year:04}"),
        }
    }

    /// The query that asks for it.
    fn query(self) -> String {
        match self {
            Period::Month { .. } => format!("month={}", self.code()),
            Period::Year(_) => format!("year={}", self.code()),
        }
    }

    /// In words: "tháng 11/2026", "November 2026".
    fn name(self, lang: Lang) -> String {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        match (self, lang) {
            (Period::Month { year, month }, Lang::Vi) => format!("tháng {month:02}/{year}"),
            (Period::Month { year, month }, Lang::En) => {
                format!("{} {year}", MONTHS[month as usize - 1])
            }
            (Period::Year(year), Lang::Vi) => format!("năm {year}"),
            (Period::Year(year), Lang::En) => format!("{year}"),
        }
    }

    /// The trend's twelve months: those ending with this month, or the
    /// year's.
    pub fn trend_months(self) -> Vec<Period> {
        let (year, month) = match self {
            Period::Month { year, month } => (year, month),
            Period::Year(year) => (year, 12),
        };
        let end = i32::from(year) * 12 + i32::from(month) - 1;
        (end - 11..=end)
            .map(|i| Period::Month {
                year: i.div_euclid(12) as i16,
                month: (i.rem_euclid(12) + 1) as i8,
            })
            .collect()
    }
}

// ---------------------------------------------------------------- the figures

/// Sums over statistics rows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub received_by_post: u64,
    pub returned_by_post: u64,
    pub on_time: u64,
    pub late: u64,
}

impl Totals {
    pub fn of(rows: &[StatsRow]) -> Self {
        let created = |kind: Kind| -> u64 {
            rows.iter()
                .filter(|r| r.kind == kind)
                .map(|r| r.created)
                .sum()
        };
        Self {
            received_by_post: created(Kind::Pickup),
            returned_by_post: created(Kind::Return),
            on_time: rows.iter().map(|r| r.on_time).sum(),
            late: rows.iter().map(|r| r.late).sum(),
        }
    }
}

/// On time ÷ (on time + late); `None` when none was delivered.
pub fn on_time_share(on_time: u64, late: u64) -> Option<f64> {
    let delivered = on_time + late;
    (delivered > 0).then(|| on_time as f64 / delivered as f64)
}

/// Everything the board shows of a period.
struct Figures {
    period: Period,
    rows: Vec<StatsRow>,
    totals: Totals,
    trend: Vec<(Period, Totals)>,
}

impl Figures {
    async fn of(state: &BoardState, period: Period) -> Result<Self, StoreError> {
        let rows = state.store.stats(period.first(), period.last()).await?;
        let mut trend = Vec::with_capacity(12);
        for month in period.trend_months() {
            let rows = state.store.stats(month.first(), month.last()).await?;
            trend.push((month, Totals::of(&rows)));
        }
        Ok(Self {
            period,
            totals: Totals::of(&rows),
            rows,
            trend,
        })
    }

    fn trend_points(&self) -> Vec<TrendPoint> {
        self.trend
            .iter()
            .map(|(month, t)| TrendPoint {
                label: match month {
                    Period::Month { year, month } => format!("{month:02}/{year}"),
                    Period::Year(year) => year.to_string(),
                },
                received_by_post: t.received_by_post,
                returned_by_post: t.returned_by_post,
                on_time: t.on_time,
                late: t.late,
            })
            .collect()
    }

    /// The JSON document (`schemas/board-figures.schema.json`).
    fn document(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut doc = stats_row(r);
                doc["on_time_share"] = json!(on_time_share(r.on_time, r.late));
                doc
            })
            .collect();
        let t = &self.totals;
        let trend: Vec<Value> = self
            .trend
            .iter()
            .map(|(month, t)| {
                json!({
                    "month": month.code(),
                    "received_by_post": t.received_by_post,
                    "returned_by_post": t.returned_by_post,
                    "on_time": t.on_time,
                    "late": t.late,
                })
            })
            .collect();
        json!({
            "period": self.period.code(),
            "from": self.period.first().to_string(),
            "to": self.period.last().to_string(),
            "rows": rows,
            "totals": {
                "received_by_post": t.received_by_post,
                "returned_by_post": t.returned_by_post,
                "on_time": t.on_time,
                "late": t.late,
                "on_time_share": on_time_share(t.on_time, t.late),
            },
            "trend": trend,
        })
    }
}

/// Today in Vietnam.
fn today(state: &BoardState) -> Date {
    state.clock.now().to_zoned(vietnam()).date()
}

/// Lets a public cache keep the answer a minute.
fn cached(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE));
    response
}

// ---------------------------------------------------------------- numbers

/// A count with the language's thousands separator: `1.234` or `1,234`.
pub fn count(lang: Lang, n: u64) -> String {
    let digits = n.to_string();
    let separator = lang.pick(".", ",");
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(separator);
        }
        out.push(d);
    }
    out
}

/// One decimal with the language's decimal mark: `1,5` or `1.5`.
fn decimal(lang: Lang, v: f64) -> String {
    let s = format!("{v:.1}");
    match lang {
        Lang::Vi => s.replace('.', ","),
        Lang::En => s,
    }
}

/// The on-time share as a percentage with one decimal, or "—".
pub fn share(lang: Lang, on_time: u64, late: u64) -> String {
    on_time_share(on_time, late).map_or_else(
        || "—".to_owned(),
        |s| format!("{}%", decimal(lang, s * 100.0)),
    )
}

/// Seconds as days with one decimal, or "—".
fn days(lang: Lang, seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "—".to_owned(), |s| decimal(lang, s / 86_400.0))
}

// ---------------------------------------------------------------- the page

fn html_page(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn board_header(lang: Lang) -> Markup {
    html! {
        a.brand href="/board" {
            (lang.pick(
                "Bộ phận một cửa — Chỉ số cải cách hành chính",
                "One-stop desk — Administrative reform figures"
            ))
        }
    }
}

/// A page that says why the board could not be shown.
fn refusal(lang: Lang, status: StatusCode, text: &str) -> Response {
    let frame = Frame {
        lang,
        title: lang.pick(
            "Chỉ số cải cách hành chính",
            "Administrative reform figures",
        ),
        style: "/board/style.css",
        class: "board",
        refresh_s: None,
        here: "/board",
    };
    let body = html! {
        div.notice.bad role="alert" { p #error { (text) } }
        p { a href="/board" { (lang.pick("← Tháng này", "← This month")) } }
    };
    html_page(status, frame.render(board_header(lang), body))
}

fn bad_param(lang: Lang, bad: &BadParam) -> Response {
    let text = match lang {
        Lang::Vi => format!("Tham số {} không hợp lệ: {}.", bad.name, bad.vi),
        Lang::En => format!("The parameter {} is invalid: it {}.", bad.name, bad.en),
    };
    refusal(lang, StatusCode::BAD_REQUEST, &text)
}

fn unavailable(lang: Lang, e: StoreError) -> Response {
    tracing::error!(error = %e, "the board could not read the store");
    refusal(
        lang,
        StatusCode::SERVICE_UNAVAILABLE,
        lang.pick(
            "Số liệu tạm thời không xem được. Hãy thử lại sau.",
            "The figures cannot be read for now. Try again later.",
        ),
    )
}

/// `GET /board[?month=|year=][&kiosk=1]`.
async fn page(
    State(state): State<BoardState>,
    lang: Lang,
    Here(here): Here,
    Query(query): Params,
) -> Response {
    let kiosk = query.get("kiosk").is_some_and(|v| v == "1");
    let period = match Period::parse(&query, today(&state)) {
        Ok(p) => p,
        Err(bad) => return bad_param(lang, &bad),
    };
    let figures = match state.figures(period).await {
        Ok(f) => f,
        Err(e) => return unavailable(lang, e),
    };
    let title = format!(
        "{}: {}",
        lang.pick(
            "Chỉ số cải cách hành chính",
            "Administrative reform figures"
        ),
        period.name(lang)
    );
    let frame = Frame {
        lang,
        title: &title,
        style: "/board/style.css",
        class: if kiosk { "board kiosk" } else { "board" },
        refresh_s: kiosk.then_some(state.refresh_s),
        here: &here,
    };
    let body = html! {
        h1 { (title) }
        @if !kiosk {
            (period_forms(lang, period))
            p.downloads {
                (lang.pick("Tải số liệu: ", "Download the figures: "))
                a href={ "/board/figures.json?" (period.query()) } type="application/json" { "JSON" }
                a href={ "/board/figures.csv?" (period.query()) } type="text/csv" { "CSV" }
            }
        }
        (headline(lang, &figures.totals))
        @if figures.rows.is_empty() {
            p.notice #empty { (lang.pick(
                "Không có hồ sơ nào trong kỳ này.",
                "No dossiers in this period."
            )) }
        } @else {
            h2 { (lang.pick("Theo cơ quan và loại", "By agency and kind")) }
            (agency_table(lang, &figures.rows))
        }
        h2 { (lang.pick("Xu hướng 12 tháng", "The last 12 months")) }
        @let points = figures.trend_points();
        figure.chart { (chart::trend_svg(lang, &points)) }
        (chart::trend_table(lang, &points))
        footer.note {
            p { (lang.pick(
                "Tính theo ngày tiếp nhận hồ sơ (giờ Việt Nam). Đúng hạn: phát không muộn hơn thời hạn theo quy định (J + n ngày làm việc kể từ ngày bưu chính nhận gói, Thông tư 17/2017/TT-BTTTT); hồ sơ chưa phát không tính. Trung vị số ngày của mỗi chặng tính theo từng dòng của bảng. Không có dữ liệu cá nhân.",
                "Counted by the day each dossier was received (Vietnam time). On time: delivered no later than the legal time (J + n working days from the day the post took the item, Thông tư 17/2017/TT-BTTTT); dossiers not yet delivered do not count. The median days of each leg are per row of the table. No personal data."
            )) }
            p { (lang.pick("Số liệu lúc ", "Figures as of ")) (when(state.clock.now())) }
        }
    };
    let mut response = cached(html_page(
        StatusCode::OK,
        frame.render(board_header(lang), body),
    ));
    // The language can come from the cookie: a cache keys on it.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Cookie"));
    response
}

/// The reader's choice of a month or a year (no script: two plain forms).
fn period_forms(lang: Lang, period: Period) -> Markup {
    let (month, year) = match period {
        Period::Month { year, .. } => (period.code(), year),
        Period::Year(year) => (Period::Month { year, month: 1 }.code(), year),
    };
    html! {
        div.periods {
            form.period method="get" action="/board" {
                input type="hidden" name="lang" value=(lang.code());
                label for="month" { (lang.pick("Tháng", "Month")) }
                input #month type="month" name="month" value=(month) min="1970-01" pattern="[0-9]{4}-[0-9]{2}";
                button type="submit" { (lang.pick("Xem tháng", "Show the month")) }
            }
            form.period method="get" action="/board" {
                input type="hidden" name="lang" value=(lang.code());
                label for="year" { (lang.pick("Năm", "Year")) }
                input #year type="number" name="year" value=(year) min=(FIRST_YEAR) max="9999" step="1";
                button type="submit" { (lang.pick("Xem cả năm", "Show the year")) }
            }
        }
    }
}

fn headline(lang: Lang, t: &Totals) -> Markup {
    html! {
        section #figures {
            div.grid {
                div.figure #received {
                    span.value { (count(lang, t.received_by_post)) }
                    span.label { (lang.pick("Hồ sơ tiếp nhận qua bưu chính", "Dossiers received by post")) }
                }
                div.figure #returned {
                    span.value { (count(lang, t.returned_by_post)) }
                    span.label { (lang.pick("Kết quả trả qua bưu chính", "Results returned by post")) }
                }
                div.figure #on-time {
                    span.value { (share(lang, t.on_time, t.late)) }
                    span.label {
                        (lang.pick("Phát đúng hạn theo quy định", "Delivered within the legal time"))
                        " (" (count(lang, t.on_time)) "/" (count(lang, t.on_time + t.late)) ")"
                    }
                }
            }
        }
    }
}

fn agency_table(lang: Lang, rows: &[StatsRow]) -> Markup {
    html! {
        div.table-wrap {
            table #agencies {
                thead {
                    tr {
                        th scope="col" { (lang.pick("Cơ quan", "Agency")) }
                        th scope="col" { (lang.pick("Loại", "Kind")) }
                        th scope="col" { (lang.pick("Hệ thống một cửa", "Intake system")) }
                        th.num scope="col" { (lang.pick("Số hồ sơ", "Handoffs")) }
                        th.num scope="col" { (lang.pick("Đã phát", "Delivered")) }
                        th.num scope="col" { (lang.pick("Chuyển hoàn", "Returned to sender")) }
                        th.num scope="col" { (lang.pick("Đúng hạn", "On time")) }
                        th.num scope="col" { (lang.pick("Trễ hạn", "Late")) }
                        th.num scope="col" { (lang.pick("Tỷ lệ đúng hạn", "On-time share")) }
                        th.num scope="col" { (lang.pick("Trung vị đến tạo đơn (ngày)", "Median days to order")) }
                        th.num scope="col" { (lang.pick("Đến nhận gói (ngày)", "To pickup (days)")) }
                        th.num scope="col" { (lang.pick("Đến phát (ngày)", "To delivery (days)")) }
                    }
                }
                tbody {
                    @for r in rows {
                        tr {
                            td { (r.agency_code) }
                            td { (kind_name(lang, r.kind)) }
                            td { (r.client) }
                            td.num { (count(lang, r.created)) }
                            td.num { (count(lang, r.delivered)) }
                            td.num { (count(lang, r.returned)) }
                            td.num { (count(lang, r.on_time)) }
                            td.num { (count(lang, r.late)) }
                            td.num { (share(lang, r.on_time, r.late)) }
                            td.num { (days(lang, r.median_order_s)) }
                            td.num { (days(lang, r.median_pickup_s)) }
                            td.num { (days(lang, r.median_delivery_s)) }
                        }
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------- the data

/// `GET /board/figures.json[?month=|year=]`.
async fn figures_json(
    State(state): State<BoardState>,
    Query(query): Params,
) -> Result<Response, Problem> {
    let period = Period::parse(&query, today(&state)).map_err(BadParam::problem)?;
    let figures = state.figures(period).await?;
    Ok(cached(http::json(StatusCode::OK, &figures.document())))
}

/// `GET /board/figures.csv[?month=|year=]`: the admin statistics' CSV.
async fn figures_csv(
    State(state): State<BoardState>,
    Query(query): Params,
) -> Result<Response, Problem> {
    let period = Period::parse(&query, today(&state)).map_err(BadParam::problem)?;
    let rows = state.store.stats(period.first(), period.last()).await?;
    let mut response =
        http::with_content_type(StatusCode::OK, stats_csv(&rows), "text/csv; charset=utf-8");
    let disposition = format!("attachment; filename=\"board-{}.csv\"", period.code());
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(cached(response))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn row(
        client: &str,
        kind: Kind,
        created: u64,
        on_time: u64,
        late: u64,
        order_s: Option<f64>,
    ) -> StatsRow {
        StatsRow {
            client: client.into(),
            agency_code: "000.00.21.H79".into(),
            kind,
            created,
            delivered: on_time + late,
            returned: 0,
            rejected: 0,
            failed: 0,
            cancelled: 0,
            on_time,
            late,
            median_order_s: order_s,
            median_pickup_s: None,
            median_delivery_s: None,
        }
    }

    #[test]
    fn the_period_is_a_month_a_year_or_this_month() {
        let today = date(2026, 11, 28);
        let p = Period::parse(&query(&[]), today).unwrap();
        assert_eq!(
            p,
            Period::Month {
                year: 2026,
                month: 11
            }
        );
        assert_eq!(
            (p.first(), p.last()),
            (date(2026, 11, 1), date(2026, 11, 30))
        );
        let p = Period::parse(&query(&[("month", "2028-02")]), today).unwrap();
        assert_eq!(
            (p.code(), p.last()),
            ("2028-02".to_owned(), date(2028, 2, 29))
        );
        // A value given is judged as given (schemathesis: `year=` was
        // taken for no year).
        for (name, raw) in [
            ("year", ""),
            ("month", ""),
            ("year", " 2026"),
            ("month", "2026-11 "),
        ] {
            let bad = Period::parse(&query(&[(name, raw)]), today).unwrap_err();
            assert_eq!(bad.name, name, "{name}={raw:?}");
        }
        let p = Period::parse(&query(&[("year", "2025")]), today).unwrap();
        assert_eq!(p, Period::Year(2025));
        assert_eq!(
            (p.first(), p.last()),
            (date(2025, 1, 1), date(2025, 12, 31))
        );
        assert_eq!(p.code(), "2025");
    }

    #[test]
    fn a_bad_period_names_its_parameter() {
        let today = date(2026, 11, 28);
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-11",
            "2026/11",
            "abcd-11",
            "1969-12",
            "+026-11",
            "2026-11-01",
        ] {
            let e = Period::parse(&query(&[("month", bad)]), today).unwrap_err();
            assert_eq!(e.name, "month", "{bad}");
        }
        for bad in ["abcd", "202", "20266", "-202", "1969"] {
            let e = Period::parse(&query(&[("year", bad)]), today).unwrap_err();
            assert_eq!(e.name, "year", "{bad}");
        }
        let both = Period::parse(&query(&[("month", "2026-11"), ("year", "2026")]), today);
        assert_eq!(both.unwrap_err().name, "year");
        let problem =
            BadParam::problem(Period::parse(&query(&[("year", "x")]), today).unwrap_err());
        assert_eq!(problem.kind.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem.errors[0].field, "year");
    }

    #[test]
    fn the_trend_is_the_twelve_months_ending_with_the_period() {
        let codes =
            |p: Period| -> Vec<String> { p.trend_months().into_iter().map(Period::code).collect() };
        let month = codes(Period::Month {
            year: 2026,
            month: 3,
        });
        assert_eq!(month.len(), 12);
        assert_eq!(
            (month[0].as_str(), month[11].as_str()),
            ("2025-04", "2026-03")
        );
        let december = codes(Period::Month {
            year: 2026,
            month: 12,
        });
        assert_eq!(
            (december[0].as_str(), december[11].as_str()),
            ("2026-01", "2026-12")
        );
        assert_eq!(codes(Period::Year(2026)), december);
    }

    #[test]
    fn totals_sum_the_rows_by_kind_and_share_on_time_over_delivered() {
        let rows = [
            row("a", Kind::Pickup, 3, 1, 0, Some(60.0)),
            row("a", Kind::Return, 5, 2, 1, Some(120.0)),
            row("b", Kind::Pickup, 2, 0, 0, None),
            row("b", Kind::Return, 1, 0, 0, Some(600.0)),
        ];
        let t = Totals::of(&rows);
        assert_eq!(
            (t.received_by_post, t.returned_by_post, t.on_time, t.late),
            (5, 6, 3, 1)
        );
        assert_eq!(on_time_share(3, 1), Some(0.75));
        assert_eq!(on_time_share(0, 0), None);
        assert_eq!(share(Lang::Vi, 2, 1), "66,7%");
        assert_eq!(share(Lang::En, 0, 0), "—");
        assert_eq!(Totals::of(&[]), Totals::default());
    }

    #[test]
    fn numbers_are_written_the_language_s_way() {
        assert_eq!(count(Lang::Vi, 0), "0");
        assert_eq!(count(Lang::Vi, 999), "999");
        assert_eq!(count(Lang::Vi, 1234567), "1.234.567");
        assert_eq!(count(Lang::En, 1000), "1,000");
        assert_eq!(days(Lang::Vi, Some(129_600.0)), "1,5");
        assert_eq!(days(Lang::En, Some(4_320.0)), "0.1");
        assert_eq!(days(Lang::En, None), "—");
    }
}
