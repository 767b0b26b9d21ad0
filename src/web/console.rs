//! The desk's console on the admin listener (`/console`): sign in with a
//! named account, find a handoff, see its timeline and callbacks, and (as an
//! operator) replay, resolve, erase and send a test callback.
//!
//! Every action goes through the same store calls as the admin API, under
//! the signed-in account's name. Personal data travels only in form bodies
//! (the search), never in a URL.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use ipnet::IpNet;
use maud::{Markup, html};

use super::session::{SESSION_COOKIE, SIGN_IN_COOKIE, Session, Sessions, SignInRefused, same};
use super::{Frame, Here, Lang, cookie, kind_name, status_name, when};
use crate::carrier::guard::PostalGuard;
use crate::clock::Clock;
use crate::config::{Role, Settings};
use crate::domain::callback::BodyFormat;
use crate::domain::sla::delivered_on_time;
use crate::domain::text::normalize;
use crate::domain::{Handoff, HandoffId, HandoffRequest, PhoneNumber, Status, TimelineEntry};
use crate::http::auth::{AdminCaller, TokenTable};
use crate::lifecycle::Lifecycle;
use crate::relay::Relay;
use crate::store::admin::{
    AdminOutcome, CallbackRecord, CallbackReplay, CallbackState, MAX_NOTE_CHARS, Resolution,
    resolve_note,
};
use crate::store::{HandoffFilter, QueueStats, SharedStore, StoreError};

/// Rows a console list shows.
const LIST_LIMIT: u32 = 100;

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState(Arc<Inner>);

struct Inner {
    store: SharedStore,
    sessions: Sessions,
    clock: Arc<dyn Clock>,
    formats: Arc<HashMap<String, BodyFormat>>,
    guard: Arc<PostalGuard>,
    relay: Arc<Relay>,
    clients: Vec<String>,
    trusted_proxies: Vec<IpNet>,
    lifecycle: Lifecycle,
    secure_cookies: bool,
}

impl ConsoleState {
    pub fn new(
        settings: &Settings,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        guard: Arc<PostalGuard>,
        relay: Arc<Relay>,
        lifecycle: Lifecycle,
        tokens: Arc<TokenTable<AdminCaller>>,
    ) -> Self {
        Self(Arc::new(Inner {
            store,
            sessions: Sessions::new(
                tokens,
                Duration::from_secs(u64::from(settings.admin.session_minutes) * 60),
            ),
            clock,
            formats: Arc::new(crate::events::callback_formats(settings)),
            guard,
            relay,
            clients: settings
                .intake
                .clients
                .iter()
                .map(|c| c.name.clone())
                .collect(),
            trusted_proxies: settings.server.trusted_proxies.clone(),
            lifecycle,
            secure_cookies: settings.admin.secure_cookies,
        }))
    }
}

/// The console's routes, under `/console`.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(overview))
        .route("/console/style.css", get(super::style))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/search", post(search))
        .route("/console/handoffs", get(handoff_list))
        .route("/console/handoffs/{id}", get(handoff_page))
        .route("/console/handoffs/{id}/replay", post(replay_handoff))
        .route("/console/handoffs/{id}/resolve", post(resolve_handoff))
        .route("/console/handoffs/{id}/erase", post(erase_handoff))
        .route("/console/callbacks", get(callback_list))
        .route("/console/callbacks/replay", post(replay_all_callbacks))
        .route("/console/callbacks/{id}/replay", post(replay_callback))
        .route(
            "/console/test-callback",
            get(test_callback_page).post(test_callback),
        )
        .layer(axum::middleware::from_fn(super::page_headers))
        .with_state(state)
}

// ---------------------------------------------------------------- errors

/// A page that could not be shown, or an action refused: an HTML page with
/// the reason in both languages.
pub struct PageError {
    status: StatusCode,
    vi: String,
    en: String,
}

impl PageError {
    fn new(status: StatusCode, vi: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            status,
            vi: vi.into(),
            en: en.into(),
        }
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Không tìm thấy.", "Not found.")
    }

    fn forged() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Biểu mẫu không hợp lệ hoặc đã hết hạn (thiếu mã CSRF). Hãy tải lại trang và thử lại.",
            "The form is invalid or expired (its CSRF token is missing or wrong). Reload the page and try again.",
        )
    }

    fn viewer() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Tài khoản chỉ xem (viewer) không được thực hiện thao tác này.",
            "A viewer account may read but not act.",
        )
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "the console could not read or write the store");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Kho dữ liệu tạm thời không sẵn sàng. Hãy thử lại sau.",
            "The store is unavailable for now. Try again later.",
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let frame = Frame {
            lang: Lang::Vi,
            title: "bcci-gateway",
            style: "/console/style.css",
            class: "console",
            refresh_s: None,
            here: "/console",
        };
        let body = html! {
            div.notice.bad role="alert" {
                p #error { (self.vi) }
                p.muted lang="en" { (self.en) }
            }
            p { a href="/console" { "← Bảng điều khiển / Console" } }
        };
        let page = frame.render(html! { span.brand { "bcci-gateway" } }, body);
        (self.status, page).into_response()
    }
}

type PageResult = Result<Response, PageError>;

// ---------------------------------------------------------------- sessions

/// A request from a signed-in account; others are sent to the sign-in page.
pub struct Signed(Arc<Session>);

impl FromRequestParts<ConsoleState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ConsoleState) -> Result<Self, Response> {
        state
            .0
            .sessions
            .current(&parts.headers, Instant::now())
            .map(Signed)
            .ok_or_else(|| Redirect::to("/console/sign-in").into_response())
    }
}

/// A submitted form's fields.
type Fields = HashMap<String, String>;

/// A form posted from a signed-in session, carrying that session's CSRF
/// token (else 403): what the session may ask without acting (search, sign
/// out).
pub struct Checked {
    session: Arc<Session>,
    fields: Fields,
}

impl FromRequest<ConsoleState> for Checked {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ConsoleState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let Signed(session) = Signed::from_request_parts(&mut parts, state).await?;
        let Form(fields) = Form::<Fields>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        if !session.csrf_matches(fields.get("csrf").map(String::as_str)) {
            return Err(PageError::forged().into_response());
        }
        Ok(Self { session, fields })
    }
}

impl Checked {
    /// A field's value, trimmed and in NFC ("" when absent).
    fn field(&self, name: &str) -> String {
        normalize(
            self.fields
                .get(name)
                .map(String::as_str)
                .unwrap_or_default(),
        )
    }
}

/// A checked form from an operator's session: the action is recorded under
/// the account's name. A viewer is refused (403).
pub struct Acting {
    operator: String,
    form: Checked,
}

impl FromRequest<ConsoleState> for Acting {
    type Rejection = Response;

    async fn from_request(request: Request, state: &ConsoleState) -> Result<Self, Response> {
        let form = Checked::from_request(request, state).await?;
        if state.0.lifecycle.is_draining() {
            return Err(PageError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Cổng đang dừng để khởi động lại; hãy thử lại sau ít phút.",
                "The gateway is stopping for a restart; try again in a few minutes.",
            )
            .into_response());
        }
        match form.session.account.role {
            Role::Operator => Ok(Self {
                operator: form.session.account.name.clone(),
                form,
            }),
            Role::Viewer => Err(PageError::viewer().into_response()),
        }
    }
}

/// The hidden CSRF field of a form.
fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

impl ConsoleState {
    /// True when the console's cookies are `Secure`: always with
    /// `admin.secure_cookies`, else when the browser reached the gateway
    /// over HTTPS through a proxy that says so.
    fn secure(&self, headers: &HeaderMap) -> bool {
        self.0.secure_cookies
            || headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
    }
}

fn set_cookie(response: &mut Response, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn cookie_value(name: &str, value: &str, max_age_s: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/console; Max-Age={max_age_s}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The frame and top bar of a console page.
/// A console page; `here` is where the language switch leads (the page
/// itself, or, after a form, the page that has the form).
fn console_page(
    lang: Lang,
    here: &str,
    session: Option<&Session>,
    title: &str,
    body: Markup,
) -> Markup {
    let frame = Frame {
        lang,
        title,
        style: "/console/style.css",
        class: "console",
        refresh_s: None,
        here,
    };
    let header = html! {
        a.brand href="/console" { (lang.pick("Bưu chính công ích — Bảng điều khiển", "Public postal service — Console")) }
        @if let Some(session) = session {
            nav {
                a href="/console/handoffs?status=failed" { (lang.pick("Lỗi", "Failed")) }
                a href="/console/handoffs?status=partially_delivered" { (lang.pick("Phát một phần", "Partial")) }
                a href="/console/callbacks?state=dead" { (lang.pick("Callback lỗi", "Dead callbacks")) }
                a href="/console/callbacks?state=held" { (lang.pick("Callback chờ", "Held callbacks")) }
                @if session.account.role == Role::Operator {
                    a href="/console/test-callback" { (lang.pick("Gửi thử", "Test callback")) }
                }
            }
            span #account { (session.account.name) " (" (session.account.role.as_str()) ")" }
            form method="post" action="/console/sign-out" {
                (csrf_field(session))
                button.link #sign-out type="submit" { (lang.pick("Đăng xuất", "Sign out")) }
            }
        }
    };
    frame.render(header, body)
}

fn html_page(markup: Markup) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// `GET /console/sign-in`.
async fn sign_in_page(
    State(state): State<ConsoleState>,
    lang: Lang,
    headers: HeaderMap,
) -> Response {
    let token = state.0.sessions.sign_in_token();
    let mut response = html_page(sign_in_form(lang, &token, None));
    set_cookie(
        &mut response,
        cookie_value(SIGN_IN_COOKIE, &token, 3600, state.secure(&headers)),
    );
    response
}

fn sign_in_form(lang: Lang, token: &str, refusal: Option<String>) -> Markup {
    let body = html! {
        h1 { (lang.pick("Đăng nhập", "Sign in")) }
        @if let Some(refusal) = refusal {
            div.notice.bad #error role="alert" { (refusal) }
        }
        form.card method="post" action="/console/sign-in" {
            input type="hidden" name="csrf" value=(token);
            label for="token" { (lang.pick("Mã truy cập của tài khoản", "Your account's token")) }
            input #token type="password" name="token" autocomplete="current-password" required;
            button #sign-in type="submit" { (lang.pick("Đăng nhập", "Sign in")) }
        }
        p.muted { (lang.pick(
            "Mỗi người dùng có tài khoản riêng trong [[admin.accounts]]; quản trị viên cấp mã bằng lệnh bcci-gateway admin token new.",
            "Each person has an account in [[admin.accounts]]; the administrator makes tokens with bcci-gateway admin token new."
        )) }
    };
    console_page(
        lang,
        "/console/sign-in",
        None,
        lang.pick("Đăng nhập", "Sign in"),
        body,
    )
}

/// `POST /console/sign-in`: the token and the sign-in form's CSRF token.
async fn sign_in(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    lang: Lang,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    let sent = fields.get("csrf").map(String::as_str).unwrap_or_default();
    if !same(expected, sent) || !state.0.sessions.sign_in_token_is_ours(sent) {
        return PageError::forged().into_response();
    }
    let from: IpAddr =
        crate::http::auth::client_address(peer.ip(), &headers, &state.0.trusted_proxies);
    let token = fields.get("token").map(String::as_str).unwrap_or_default();
    match state.0.sessions.sign_in(token, from, Instant::now()) {
        Ok((id, session)) => {
            // A browser signing in again leaves no session behind.
            state.0.sessions.sign_out(&headers);
            tracing::info!(account = %session.account.name, "signed in to the console");
            let mut response = Redirect::to("/console").into_response();
            let secure = state.secure(&headers);
            set_cookie(
                &mut response,
                cookie_value(
                    SESSION_COOKIE,
                    &id,
                    state.0.sessions.ttl().as_secs(),
                    secure,
                ),
            );
            set_cookie(&mut response, cookie_value(SIGN_IN_COOKIE, "", 0, secure));
            response
        }
        Err(refused) => {
            let (status, text, wait) = match refused {
                SignInRefused::UnknownToken => (
                    StatusCode::UNAUTHORIZED,
                    lang.pick("Mã truy cập không đúng.", "That token is not an account's.")
                        .to_owned(),
                    None,
                ),
                SignInRefused::TooMany(wait) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "{} {wait} s.",
                        lang.pick(
                            "Quá nhiều lần đăng nhập sai. Hãy thử lại sau",
                            "Too many failed sign-ins. Try again in"
                        )
                    ),
                    Some(wait),
                ),
            };
            tracing::warn!(from = %from, "a console sign-in was refused");
            let mut response =
                (status, html_page(sign_in_form(lang, expected, Some(text)))).into_response();
            if let Some(wait) = wait {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait));
            }
            response
        }
    }
}

/// `POST /console/sign-out`.
async fn sign_out(State(state): State<ConsoleState>, headers: HeaderMap, _: Checked) -> PageResult {
    state.0.sessions.sign_out(&headers);
    let mut response = Redirect::to("/console/sign-in").into_response();
    set_cookie(
        &mut response,
        cookie_value(SESSION_COOKIE, "", 0, state.secure(&headers)),
    );
    Ok(response)
}

// ---------------------------------------------------------------- overview

fn search_form(lang: Lang, session: &Session) -> Markup {
    html! {
        form.card method="post" action="/console/search" {
            (csrf_field(session))
            label for="q" { (lang.pick(
                "Tìm theo mã hồ sơ, mã yêu cầu, mã bưu gửi hoặc số điện thoại",
                "Find by dossier code, request id, tracking number or phone"
            )) }
            input #q type="search" name="q" required;
            button #search type="submit" { (lang.pick("Tìm", "Find")) }
        }
    }
}

fn queue_figures(lang: Lang, title: &str, q: &QueueStats, dead_link: Option<&str>) -> Markup {
    html! {
        section.card {
            h2 { (title) }
            dl.facts {
                dt { (lang.pick("Đang chờ", "Waiting")) }
                dd.depth { (q.depth) }
                dt { (lang.pick("Chờ lâu nhất", "Oldest waiting")) }
                dd { (format!("{:.0} s", q.oldest_age_s)) }
                dt { (lang.pick("Lỗi (dead)", "Dead")) }
                dd {
                    @if let Some(link) = dead_link {
                        a href=(link) { (q.dead) }
                    } @else {
                        (q.dead)
                    }
                }
            }
        }
    }
}

/// `GET /console`: search and the queues' health.
async fn overview(
    State(state): State<ConsoleState>,
    Signed(session): Signed,
    lang: Lang,
) -> PageResult {
    let s = &state.0;
    let now = s.clock.now();
    let postal = s.store.postal_queue_stats(now).await?;
    let callbacks = s.store.callback_queue_stats(now).await?;
    // From the store, not the `bcci_last_carrier_event_timestamp_seconds`
    // gauge: that is this process's alone, and an HA group's webhooks may
    // reach another.
    let last_event = s.store.last_carrier_event().await?;
    let counts = s.store.handoff_counts().await?;
    let count = |status: Status| -> u64 {
        counts
            .iter()
            .filter(|(_, s, _)| *s == status)
            .map(|(_, _, n)| n)
            .sum()
    };
    let open = s.guard.is_open();
    let body = html! {
        h1 { (lang.pick("Bảng điều khiển", "Console")) }
        (search_form(lang, &session))
        div.grid {
            div.figure {
                span.value #failed-count { a href="/console/handoffs?status=failed" { (count(Status::Failed)) } }
                span.label { (lang.pick("Hồ sơ lỗi chờ xử lý", "Failed handoffs")) }
            }
            div.figure {
                span.value { a href="/console/handoffs?status=partially_delivered" { (count(Status::PartiallyDelivered)) } }
                span.label { (lang.pick("Phát một phần, chờ kết luận", "Partially delivered")) }
            }
            div.figure {
                span.value #circuit {
                    @if open { span.badge.bad { (lang.pick("Đang ngắt", "Open")) } }
                    @else { span.badge.ok { (lang.pick("Bình thường", "Closed")) } }
                }
                span.label { (lang.pick("Kết nối Vietnam Post (cầu dao)", "Vietnam Post circuit")) }
            }
            div.figure {
                span.value { @match last_event { Some(t) => (when(t)), None => "—" } }
                span.label { (lang.pick("Tin gần nhất từ Vietnam Post", "Last word from Vietnam Post")) }
            }
        }
        div.grid {
            (queue_figures(lang, lang.pick("Hàng đợi gửi Vietnam Post", "Vietnam Post queue"), &postal, None))
            (queue_figures(lang, lang.pick("Hàng đợi callback", "Callback queue"), &callbacks, Some("/console/callbacks?state=dead")))
        }
    };
    Ok(html_page(console_page(
        lang,
        "/console",
        Some(&session),
        lang.pick("Bảng điều khiển", "Console"),
        body,
    )))
}

// ---------------------------------------------------------------- handoffs

fn status_badge(lang: Lang, status: Status) -> Markup {
    let class = match status {
        Status::Delivered | Status::Returned => "badge ok",
        Status::Failed | Status::Rejected | Status::PickupFailed => "badge bad",
        Status::PartiallyDelivered | Status::Cancelled => "badge warn",
        _ => "badge",
    };
    html! { span class=(class) data-status=(status.as_str()) { (status_name(lang, status)) } }
}

fn handoff_table(lang: Lang, handoffs: &[Handoff]) -> Markup {
    html! {
        @if handoffs.is_empty() {
            p.muted #empty { (lang.pick("Không có hồ sơ nào.", "No handoffs.")) }
        } @else {
            div.table-wrap {
                table #handoffs {
                    thead { tr {
                        th { (lang.pick("Mã hồ sơ", "Dossier")) }
                        th { (lang.pick("Loại", "Kind")) }
                        th { (lang.pick("Trạng thái", "Status")) }
                        th { (lang.pick("Mã bưu gửi", "Tracking")) }
                        th { (lang.pick("Cơ quan", "Agency")) }
                        th { (lang.pick("Tiếp nhận lúc", "Received")) }
                    } }
                    tbody {
                        @for h in handoffs {
                            tr {
                                td { a href={ "/console/handoffs/" (h.id) } { (h.dossier_code) } }
                                td { (kind_name(lang, h.kind)) }
                                td { (status_badge(lang, h.status)) }
                                td { (h.tracking_number.as_deref().unwrap_or("—")) }
                                td { (h.agency_code) }
                                td { (when(h.created_at)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /console/search`: one box for a dossier code, a request id, a
/// tracking number, a handoff id or a phone (which stays out of the URL).
async fn search(State(state): State<ConsoleState>, lang: Lang, form: Checked) -> PageResult {
    let q = form.field("q");
    if let Some(id) = HandoffId::parse(&q) {
        return Ok(Redirect::to(&format!("/console/handoffs/{id}")).into_response());
    }
    let mut found: Vec<Handoff> = Vec::new();
    if !q.is_empty() {
        let code = |f: fn(&mut HandoffFilter, String)| {
            let mut filter = HandoffFilter::default();
            f(&mut filter, q.clone());
            filter
        };
        let mut filters = vec![
            code(|f, q| f.dossier_code = Some(q)),
            code(|f, q| f.request_id = Some(q)),
            code(|f, q| f.tracking_number = Some(q)),
        ];
        // A citizen's phone, in any spelling Vietnamese phones are written.
        let phone_like = q
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '.' | '-'));
        if let Some(phone) = phone_like.then(|| PhoneNumber::parse(&q).ok()).flatten() {
            filters.push(HandoffFilter {
                phone: Some(phone.as_str().to_owned()),
                ..HandoffFilter::default()
            });
        }
        for filter in &filters {
            let page = state
                .0
                .store
                .list_handoffs(filter, LIST_LIMIT, None)
                .await?;
            for h in page.items {
                if !found.iter().any(|f| f.id == h.id) {
                    found.push(h);
                }
            }
        }
        found.sort_by(|a, b| b.id.cmp(&a.id));
    }
    if let [one] = found.as_slice() {
        return Ok(Redirect::to(&format!("/console/handoffs/{}", one.id)).into_response());
    }
    let body = html! {
        h1 { (lang.pick("Kết quả tìm kiếm", "Search results")) }
        (search_form(lang, &form.session))
        (handoff_table(lang, &found))
    };
    Ok(html_page(console_page(
        lang,
        "/console",
        Some(&form.session),
        lang.pick("Tìm kiếm", "Search"),
        body,
    )))
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    status: Option<String>,
}

/// `GET /console/handoffs?status=failed|partially_delivered|…`.
async fn handoff_list(
    State(state): State<ConsoleState>,
    Signed(session): Signed,
    lang: Lang,
    Here(here): Here,
    Query(query): Query<StatusQuery>,
) -> PageResult {
    let status = query
        .status
        .as_deref()
        .and_then(|s| s.parse::<Status>().ok())
        .unwrap_or(Status::Failed);
    let filter = HandoffFilter {
        status: Some(status),
        ..HandoffFilter::default()
    };
    let page = state
        .0
        .store
        .list_handoffs(&filter, LIST_LIMIT, None)
        .await?;
    let title = status_name(lang, status);
    let body = html! {
        h1 { (lang.pick("Hồ sơ: ", "Handoffs: ")) (title) }
        (handoff_table(lang, &page.items))
        @if page.next_cursor.is_some() {
            p.muted { (lang.pick("Chỉ hiện 100 hồ sơ mới nhất.", "Only the newest 100 are shown.")) }
        }
    };
    Ok(html_page(console_page(
        lang,
        &here,
        Some(&session),
        title,
        body,
    )))
}

/// A handoff against its legal deadline, as the statistics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadline {
    /// Delivered no later than `sla_due_at`.
    OnTime,
    /// Delivered after it, or not delivered and past it.
    Late,
    /// Not delivered and not past it.
    Running,
    /// Ended without a delivery (returned, cancelled, …): not counted.
    Ended,
}

/// Where a handoff stands against its deadline by the statistics' rule
/// (`sla::delivered_on_time`), from the store's `delivered_at`: the time
/// Vietnam Post first reported it delivered.
fn deadline(
    status: Status,
    due: jiff::Timestamp,
    delivered_at: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Deadline {
    match delivered_at {
        Some(at) if delivered_on_time(at, due) => Deadline::OnTime,
        Some(_) => Deadline::Late,
        None if status.is_terminal() => Deadline::Ended,
        None if now > due => Deadline::Late,
        None => Deadline::Running,
    }
}

/// The legal deadline and where the handoff stands against it.
fn lateness(
    lang: Lang,
    handoff: &Handoff,
    delivered_at: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Markup {
    let Some(due) = handoff.sla_due_at else {
        return html! { span.muted { "—" } };
    };
    html! {
        (when(due)) " "
        @match deadline(handoff.status, due, delivered_at, now) {
            Deadline::Late => span.badge.bad #late { (lang.pick("Trễ hạn", "Late")) },
            Deadline::OnTime => span.badge.ok #on-time { (lang.pick("Đúng hạn", "On time")) },
            Deadline::Running => span.badge #in-time { (lang.pick("Còn hạn", "Within deadline")) },
            Deadline::Ended => {},
        }
    }
}

fn callback_badge(lang: Lang, state: CallbackState) -> Markup {
    let (class, text) = match state {
        CallbackState::Pending => ("badge", lang.pick("Đang gửi", "Pending")),
        CallbackState::Delivered => ("badge ok", lang.pick("Đã nhận", "Delivered")),
        CallbackState::Dead => ("badge bad", lang.pick("Lỗi (dead)", "Dead")),
        CallbackState::Held => ("badge warn", lang.pick("Chờ (held)", "Held")),
    };
    html! { span class=(class) data-state=(state.as_str()) { (text) } }
}

fn callback_table(
    lang: Lang,
    session: &Session,
    callbacks: &[CallbackRecord],
    with_handoff: bool,
) -> Markup {
    html! {
        @if callbacks.is_empty() {
            p.muted #no-callbacks { (lang.pick("Không có callback nào.", "No callbacks.")) }
        } @else {
            div.table-wrap {
                table #callbacks {
                    thead { tr {
                        @if with_handoff { th { (lang.pick("Hồ sơ", "Handoff")) } }
                        th.num { "#" }
                        th { (lang.pick("Sự kiện", "Event")) }
                        th { (lang.pick("Trạng thái", "State")) }
                        th.num { (lang.pick("Lần gửi", "Attempts")) }
                        th { (lang.pick("Kết quả gần nhất", "Last answer")) }
                        th { (lang.pick("Tạo lúc", "Created")) }
                        th {}
                    } }
                    tbody {
                        @for c in callbacks {
                            tr data-callback=(c.id) {
                                @if with_handoff {
                                    td { a href={ "/console/handoffs/" (c.handoff_id) } { (c.handoff_id) } }
                                }
                                td.num { (c.sequence) }
                                td { code { (c.event_type) } }
                                td { (callback_badge(lang, c.state)) }
                                td.num { (c.attempts) }
                                td {
                                    @if let Some(s) = c.last_status { "HTTP " (s) " " }
                                    @if let Some(e) = &c.last_error { span.muted { (e) } }
                                    @if let Some(next) = c.next_attempt_at {
                                        @if c.state == CallbackState::Pending {
                                            br; span.muted { (lang.pick("Lần tới: ", "Next: ")) (when(next)) }
                                        }
                                    }
                                }
                                td { (when(c.created_at)) }
                                td {
                                    @if c.state == CallbackState::Dead && session.account.role == Role::Operator {
                                        form.inline method="post" action={ "/console/callbacks/" (c.id) "/replay" } {
                                            (csrf_field(session))
                                            button.replay type="submit" { (lang.pick("Gửi lại", "Replay")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

/// The notice after an action (its name travels in the URL, nothing else).
fn done_notice(lang: Lang, done: Option<&str>) -> Markup {
    let text = match done {
        Some("replayed") => lang.pick(
            "Đã đưa hồ sơ về trạng thái tiếp nhận; đơn sẽ được tra cứu trước khi tạo, không tạo trùng.",
            "The handoff is received again; its order is looked up before any new one, never two.",
        ),
        Some("resolved") => lang.pick("Đã kết luận hồ sơ.", "The handoff is resolved."),
        Some("erased") => lang.pick("Đã xoá dữ liệu cá nhân.", "Personal data erased."),
        Some("callback") => lang.pick("Đã đưa callback vào hàng đợi gửi lại.", "The callback is queued again."),
        Some("callbacks") => lang.pick("Đã đưa các callback lỗi vào hàng đợi gửi lại.", "The dead callbacks are queued again."),
        _ => return html! {},
    };
    html! { div.notice.ok #done role="status" { (text) } }
}

/// `GET /console/handoffs/{id}`.
async fn handoff_page(
    State(state): State<ConsoleState>,
    Signed(session): Signed,
    lang: Lang,
    Here(here): Here,
    Path(id): Path<String>,
    Query(done): Query<DoneQuery>,
) -> PageResult {
    let id = HandoffId::parse(&id).ok_or_else(PageError::not_found)?;
    let s = &state.0;
    let handoff = s
        .store
        .handoff(None, &id)
        .await?
        .ok_or_else(PageError::not_found)?;
    let timeline = s.store.timeline(&id).await?;
    let callbacks = s.store.handoff_callbacks(&id).await?;
    let record = s
        .store
        .handoff_record(&id)
        .await?
        .ok_or_else(PageError::not_found)?;
    let now = s.clock.now();
    let operator = session.account.role == Role::Operator;
    let body = html! {
        (done_notice(lang, done.done.as_deref()))
        h1 { (lang.pick("Hồ sơ ", "Dossier ")) span #dossier { (handoff.dossier_code) } }
        section.card {
            dl.facts {
                dt { (lang.pick("Trạng thái", "Status")) }
                dd #status { (status_badge(lang, handoff.status))
                    @if let Some(r) = &handoff.reason { " " span.muted { (r) } } }
                dt { (lang.pick("Loại", "Kind")) } dd { (kind_name(lang, handoff.kind)) }
                dt { (lang.pick("Cơ quan", "Agency")) } dd { (handoff.agency_code) }
                dt { (lang.pick("Hệ thống một cửa", "Intake system")) } dd { (handoff.client) }
                dt { (lang.pick("Mã yêu cầu", "Request id")) } dd { code { (handoff.request_id) } }
                dt { (lang.pick("Mã chuyển giao", "Handoff id")) } dd { code { (handoff.id) } }
                dt { (lang.pick("Tiếp nhận lúc", "Received")) } dd { (when(handoff.created_at)) }
                dt { (lang.pick("Hạn theo quy định", "Legal deadline")) } dd #sla { (lateness(lang, &handoff, record.delivered_at, now)) }
                dt { (lang.pick("Mã bưu gửi", "Tracking number")) } dd #tracking { (handoff.tracking_number.as_deref().unwrap_or("—")) }
                dt { (lang.pick("Cước", "Postage")) } dd { @match handoff.postage_vnd { Some(v) => { (v) " ₫" }, None => "—" } }
                @if handoff.cod_amount_vnd > 0 {
                    dt { (lang.pick("Thu hộ (COD)", "Cash on delivery")) }
                    dd { (handoff.cod_amount_vnd) " ₫ "
                        @if handoff.cod_settled { span.badge.ok { (lang.pick("Đã đối soát", "Settled")) } } }
                }
            }
        }
        (citizen(lang, record.request.as_ref()))
        @if operator {
            (actions(lang, &session, &handoff))
        }
        h2 { (lang.pick("Diễn biến", "Timeline")) }
        (timeline_list(lang, &timeline))
        h2 { (lang.pick("Callback gửi hệ thống một cửa", "Callbacks to the intake system")) }
        (callback_table(lang, &session, &callbacks, false))
    };
    Ok(html_page(console_page(
        lang,
        &here,
        Some(&session),
        &handoff.dossier_code,
        body,
    )))
}

/// The citizen's details, for signed-in accounts only (personal data: on
/// this page, never in a URL or a log), or that they were erased.
fn citizen(lang: Lang, request: Option<&HandoffRequest>) -> Markup {
    html! {
        section.card #citizen {
            h2 { (lang.pick("Công dân", "Citizen")) }
            @match request {
                Some(r) => dl.facts {
                    dt { (lang.pick("Họ tên", "Name")) } dd { (r.citizen.name) }
                    dt { (lang.pick("Điện thoại", "Phone")) } dd { (r.citizen.phone.as_str()) }
                    @if let Some(email) = &r.citizen.email {
                        dt { "Email" } dd { (email) }
                    }
                    dt { (lang.pick("Địa chỉ", "Address")) }
                    dd { (r.citizen.address.line) " (" (lang.pick("mã xã/phường ", "ward code ")) (r.citizen.address.ward_code) ")" }
                    dt { (lang.pick("Thủ tục", "Procedure")) } dd { (r.procedure.name) " (" (r.procedure.code) ")" }
                },
                None => p.muted #erased { (lang.pick(
                    "Dữ liệu cá nhân đã được xoá theo thời hạn lưu trữ hoặc theo yêu cầu.",
                    "The personal data has been erased (retention, or on request)."
                )) },
            }
        }
    }
}

fn timeline_list(lang: Lang, timeline: &[TimelineEntry]) -> Markup {
    html! {
        ol.timeline #timeline {
            @for e in timeline {
                li class=(if e.status.is_some() { "" } else { "muted" }) {
                    strong { (when(e.occurred_at)) } " · "
                    @if let Some(status) = e.status { (status_badge(lang, status)) " " }
                    span.muted { (e.source.as_str()) " · " (e.effect.as_str()) }
                    @if let Some(c) = &e.carrier {
                        br;
                        (lang.pick("Mã Vietnam Post ", "Vietnam Post code ")) code { (c.code) }
                        @if let Some(t) = &c.text { " — " (t) }
                        @if let Some(l) = &c.location { " · " (l) }
                    }
                    @if let Some(r) = &e.reason { br; span.muted { (r) } }
                    @if let Some(o) = &e.operator { br; (lang.pick("Người thực hiện: ", "By: ")) (o) }
                }
            }
        }
    }
}

fn actions(lang: Lang, session: &Session, handoff: &Handoff) -> Markup {
    let base = format!("/console/handoffs/{}", handoff.id);
    html! {
        section.card #actions {
            h2 { (lang.pick("Thao tác", "Actions")) }
            @if handoff.status == Status::Failed {
                form.inline method="post" action={ (base) "/replay" } {
                    (csrf_field(session))
                    button #replay-handoff type="submit" { (lang.pick("Xử lý lại", "Replay")) }
                }
            }
            @if handoff.status == Status::PartiallyDelivered {
                form method="post" action={ (base) "/resolve" } {
                    (csrf_field(session))
                    label for="resolution" { (lang.pick("Kết luận", "Outcome")) }
                    select #resolution name="status" {
                        option value="delivered" { (lang.pick("Đã phát", "Delivered")) }
                        option value="returned" { (lang.pick("Đã chuyển hoàn", "Returned")) }
                    }
                    label for="note" { (lang.pick("Ghi chú", "Note")) }
                    input #note type="text" name="note" maxlength="500";
                    button #resolve type="submit" { (lang.pick("Kết luận", "Resolve")) }
                }
            }
            form method="post" action={ (base) "/erase" } {
                (csrf_field(session))
                label for="confirm" { (lang.pick(
                    "Xoá dữ liệu cá nhân ngay: nhập mã hồ sơ để xác nhận",
                    "Erase personal data now: type the dossier code to confirm"
                )) " (" code { (handoff.dossier_code) } ")" }
                input #confirm type="text" name="confirm" autocomplete="off" required;
                button.danger #erase type="submit" { (lang.pick("Xoá dữ liệu cá nhân", "Erase personal data")) }
            }
        }
    }
}

/// An action's outcome: back to the handoff's page, or why not.
fn after_action(outcome: AdminOutcome, done: &str) -> PageResult {
    match outcome {
        AdminOutcome::Done(h) => {
            Ok(Redirect::to(&format!("/console/handoffs/{}?done={done}", h.id)).into_response())
        }
        AdminOutcome::NotFound => Err(PageError::not_found()),
        AdminOutcome::Conflict(detail) => Err(PageError::new(
            StatusCode::CONFLICT,
            format!("Không thực hiện được: {detail}"),
            format!("Not done: {detail}"),
        )),
    }
}

fn handoff_id(id: &str) -> Result<HandoffId, PageError> {
    HandoffId::parse(id).ok_or_else(PageError::not_found)
}

/// `POST /console/handoffs/{id}/replay`.
async fn replay_handoff(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    acting: Acting,
) -> PageResult {
    let operator = acting.operator.as_str();
    let s = &state.0;
    let outcome = s
        .store
        .replay_failed_handoff(&handoff_id(&id)?, operator, s.clock.now(), &s.formats)
        .await?;
    after_action(outcome, "replayed")
}

/// `POST /console/handoffs/{id}/resolve`.
async fn resolve_handoff(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    acting: Acting,
) -> PageResult {
    let operator = acting.operator.as_str();
    let resolution = Resolution::parse(&acting.form.field("status")).ok_or_else(|| {
        PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Hãy chọn kết luận: đã phát hoặc đã chuyển hoàn.",
            "Choose an outcome: delivered or returned.",
        )
    })?;
    let note =
        resolve_note(acting.form.fields.get("note").map_or("", String::as_str)).map_err(|why| {
            PageError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("Ghi chú dài quá {MAX_NOTE_CHARS} ký tự."),
                format!("The note {why}."),
            )
        })?;
    let s = &state.0;
    let outcome = s
        .store
        .resolve_partial(
            &handoff_id(&id)?,
            resolution,
            note.as_deref(),
            operator,
            s.clock.now(),
            &s.formats,
        )
        .await?;
    after_action(outcome, "resolved")
}

/// `POST /console/handoffs/{id}/erase`: only with the dossier code typed
/// again.
async fn erase_handoff(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    acting: Acting,
) -> PageResult {
    let operator = acting.operator.as_str();
    let id = handoff_id(&id)?;
    let s = &state.0;
    let handoff = s
        .store
        .handoff(None, &id)
        .await?
        .ok_or_else(PageError::not_found)?;
    if acting.form.field("confirm") != handoff.dossier_code {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Mã hồ sơ nhập vào không khớp; chưa xoá gì.",
            "The dossier code typed does not match; nothing was erased.",
        ));
    }
    let outcome = s
        .store
        .erase_personal_data(&id, operator, s.clock.now())
        .await?;
    after_action(outcome, "erased")
}

// ---------------------------------------------------------------- callbacks

#[derive(serde::Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    done: Option<String>,
}

/// `GET /console/callbacks?state=dead|held`.
async fn callback_list(
    State(state): State<ConsoleState>,
    Signed(session): Signed,
    lang: Lang,
    Here(here): Here,
    Query(query): Query<CallbackQuery>,
) -> PageResult {
    let wanted = match query.state.as_deref() {
        Some("held") => CallbackState::Held,
        _ => CallbackState::Dead,
    };
    let page = state
        .0
        .store
        .list_callbacks(wanted, LIST_LIMIT, None)
        .await?;
    let title = match wanted {
        CallbackState::Held => lang.pick(
            "Callback đang chờ (sau một callback lỗi)",
            "Held callbacks (behind a dead one)",
        ),
        _ => lang.pick("Callback lỗi (dead)", "Dead callbacks"),
    };
    let body = html! {
        (done_notice(lang, query.done.as_deref()))
        h1 { (title) }
        @if wanted == CallbackState::Dead && !page.items.is_empty() && session.account.role == Role::Operator {
            form method="post" action="/console/callbacks/replay" {
                (csrf_field(&session))
                button #replay-all type="submit" { (lang.pick("Gửi lại tất cả", "Replay all")) }
            }
        }
        (callback_table(lang, &session, &page.items, true))
    };
    Ok(html_page(console_page(
        lang,
        &here,
        Some(&session),
        title,
        body,
    )))
}

/// `POST /console/callbacks/{id}/replay`.
async fn replay_callback(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    acting: Acting,
) -> PageResult {
    let operator = acting.operator.as_str();
    let s = &state.0;
    match s
        .store
        .replay_callback(&id, operator, s.clock.now())
        .await?
    {
        CallbackReplay::Replayed(c) => Ok(Redirect::to(&format!(
            "/console/handoffs/{}?done=callback",
            c.handoff_id
        ))
        .into_response()),
        CallbackReplay::NotFound => Err(PageError::not_found()),
        CallbackReplay::NotDead(state) => Err(PageError::new(
            StatusCode::CONFLICT,
            format!(
                "Callback đang ở trạng thái {}; chỉ gửi lại được callback lỗi.",
                state.as_str()
            ),
            format!(
                "The callback is {}; only a dead callback can be replayed.",
                state.as_str()
            ),
        )),
    }
}

/// `POST /console/callbacks/replay`: every dead callback.
async fn replay_all_callbacks(State(state): State<ConsoleState>, acting: Acting) -> PageResult {
    let operator = acting.operator.as_str();
    let s = &state.0;
    s.store
        .replay_dead_callbacks_by(operator, s.clock.now())
        .await?;
    Ok(Redirect::to("/console/callbacks?state=dead&done=callbacks").into_response())
}

// ---------------------------------------------------------------- test callback

fn test_callback_form(
    lang: Lang,
    state: &ConsoleState,
    session: &Session,
    answer: Option<Markup>,
) -> Markup {
    let body = html! {
        h1 { (lang.pick("Gửi thử một callback", "Send a test callback")) }
        p.muted { (lang.pick(
            "Gửi ngay một callback có chữ ký, loại gateway.test, tới địa chỉ của hệ thống một cửa; không lưu, không gửi lại.",
            "Sends one signed callback of type gateway.test to the intake system's endpoint now; nothing is stored or retried."
        )) }
        @if let Some(answer) = answer { (answer) }
        form.card method="post" action="/console/test-callback" {
            (csrf_field(session))
            label for="client" { (lang.pick("Hệ thống một cửa", "Intake system")) }
            select #client name="client" {
                @for c in &state.0.clients { option value=(c) { (c) } }
            }
            button #send-test type="submit" { (lang.pick("Gửi thử", "Send")) }
        }
    };
    console_page(
        lang,
        "/console/test-callback",
        Some(session),
        lang.pick("Gửi thử", "Test callback"),
        body,
    )
}

/// `GET /console/test-callback`.
async fn test_callback_page(
    State(state): State<ConsoleState>,
    session: Signed,
    lang: Lang,
) -> PageResult {
    if session.0.account.role != Role::Operator {
        return Err(PageError::viewer());
    }
    Ok(html_page(test_callback_form(
        lang, &state, &session.0, None,
    )))
}

/// `POST /console/test-callback`: sends it and shows the answer.
async fn test_callback(
    State(state): State<ConsoleState>,
    lang: Lang,
    acting: Acting,
) -> PageResult {
    let operator = acting.operator.as_str();
    let client = acting.form.field("client");
    let client = client.as_str();
    let format = state.0.formats.get(client).copied().unwrap_or_default();
    let answer = state
        .0
        .relay
        .send_test(client, format)
        .await
        .ok_or_else(PageError::not_found)?;
    tracing::info!(operator = %operator, client, status = ?answer.status, "sent a test callback");
    let ok = answer.status.is_some_and(|s| (200..300).contains(&s));
    let shown = html! {
        div class=(if ok { "notice ok" } else { "notice bad" }) #test-answer role="status" {
            p { (lang.pick("Địa chỉ: ", "Endpoint: ")) code { (answer.url) } }
            p { "webhook-id: " code { (answer.id) } }
            p {
                (lang.pick("Trả lời: ", "Answer: "))
                @match answer.status { Some(s) => strong #answer-status { "HTTP " (s) }, None => strong #answer-status { (answer.error.as_deref().unwrap_or("—")) } }
                " · " (answer.took.as_millis()) " ms"
            }
        }
    };
    Ok(html_page(test_callback_form(
        lang,
        &state,
        &acting.form.session,
        Some(shown),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_deadline_is_judged_by_the_delivery_time_as_the_stats_judge_it() {
        let due = at("2026-11-27T10:00:00Z");
        let now = at("2026-11-30T10:00:00Z");
        let on_time = Some(at("2026-11-27T10:00:00Z"));
        assert_eq!(
            deadline(Status::Delivered, due, on_time, now),
            Deadline::OnTime
        );
        let late = Some(at("2026-11-27T10:00:01Z"));
        assert_eq!(deadline(Status::Delivered, due, late, now), Deadline::Late);
        // Partly delivered, returned or cancelled: no delivery time, and the
        // stats count neither.
        assert_eq!(
            deadline(Status::PartiallyDelivered, due, None, now),
            Deadline::Ended
        );
        assert_eq!(deadline(Status::Returned, due, None, now), Deadline::Ended);
        // Still travelling: late once the deadline has passed.
        assert_eq!(deadline(Status::InTransit, due, None, now), Deadline::Late);
        assert_eq!(
            deadline(Status::InTransit, due, None, at("2026-11-26T10:00:00Z")),
            Deadline::Running
        );
    }
}
