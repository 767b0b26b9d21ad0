//! The simulator's HTTP endpoints: MyVNPost's calls at the root, with faults
//! injected in front of them, and `/_sim/…` for tests and debugging.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, MatchedPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::{Full, Limited};
use serde_json::{Value, json};

use super::faults::{AnswerFault, Faults};
use super::orders::CancelOutcome;
use super::server::Cut;
use super::state::Shared;
use super::validate::{self, Rules};
use super::wire;

type SharedState = State<Arc<Shared>>;

/// Most records in one GetListOrder page.
const MAX_PAGE_SIZE: usize = 1000;

/// Largest request body read before an answer is spoilt (axum's default
/// limit for the endpoints' own extractors).
const MAX_BODY: usize = 2 * 1024 * 1024;

/// What a proxy in front of Vietnam Post answers when the service behind it
/// fails: a 200 with an HTML page.
const GARBAGE_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>\n<body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request.</p><hr><address>Apache Server</address></body></html>\n";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let carrier = Router::new()
        .route("/GetAccessToken", post(login))
        .route("/CreateOrder", post(create_order))
        .route("/GetListOrder", get(list_orders))
        .route("/getOrder", get(order_detail))
        .route("/GetStatusHistoryOrder", get(status_history))
        .route("/orderCancel", post(cancel_order))
        .route_layer(middleware::from_fn_with_state(shared.clone(), faults));
    let admin = Router::new()
        .route("/_sim/faults", get(show_faults).post(replace_faults))
        .route("/_sim/orders", get(show_orders))
        .route("/_sim/stats", get(show_stats));
    carrier.merge(admin).with_state(shared)
}

/// Counts the call, waits the latency, injects 500 or 429 before the
/// endpoint does anything, and may spoil the answer (see [`AnswerFault`]).
#[tracing::instrument(skip_all)]
async fn faults(State(shared): SharedState, request: Request, next: Next) -> Response {
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path(), MatchedPath::as_str)
        .trim_start_matches('/')
        .to_owned();
    shared.count(|s| *s.calls.entry(endpoint.clone()).or_default() += 1);
    let latency = shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let f = shared.faults();
    if shared.chance(f.error_rate) {
        shared.count(|s| s.errors_injected += 1);
        return (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response();
    }
    if shared.chance(f.rate_limit_rate) {
        shared.count(|s| s.rate_limits_injected += 1);
        let mut answer = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
        answer
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return answer;
    }
    match shared.answer_fault() {
        None => next.run(request).await,
        Some(fault) => spoilt_answer(&shared, &endpoint, fault, request, next).await,
    }
}

/// Reads the request whole, lets the endpoint work when `fault` says so, and
/// answers the way `fault` spoils it.
async fn spoilt_answer(
    shared: &Shared,
    endpoint: &str,
    fault: AnswerFault,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(body) => body,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large").into_response(),
    };
    let request = Request::from_parts(parts, Body::from(body));
    let answer = if fault.lets_work_happen(endpoint) {
        Some(next.run(request).await)
    } else {
        None
    };
    shared.count(|s| fault.count(s));
    tracing::debug!(endpoint, ?fault, "the answer is spoilt");
    match fault {
        AnswerFault::Reset => Cut::Reset.into_response(),
        AnswerFault::HalfAnswer => {
            let answer = answer.unwrap_or_else(|| Json(json!({"success": true})).into_response());
            Cut::AfterHead.apply(answer)
        }
        AnswerFault::Garbage => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=iso-8859-1")],
            GARBAGE_PAGE,
        )
            .into_response(),
        AnswerFault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            answer.unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// A call carrying a valid `token` header.
struct Authorized;

impl FromRequestParts<Arc<Shared>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let token = parts.headers.get("token").and_then(|v| v.to_str().ok());
        if token.is_some_and(|t| shared.token_valid(t)) {
            return Ok(Authorized);
        }
        shared.count(|s| s.unauthorized += 1);
        Err((
            StatusCode::UNAUTHORIZED,
            Json(wire::refusal("Token không hợp lệ hoặc đã hết hạn")),
        )
            .into_response())
    }
}

/// A request Vietnam Post refuses: HTTP 400 with a message naming the field.
struct Refusal(String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(wire::refusal(&self.0))).into_response()
    }
}

fn json_body(body: &Bytes) -> Result<Value, Refusal> {
    serde_json::from_slice(body)
        .map_err(|_| Refusal("Dữ liệu gửi lên không đúng định dạng JSON".into()))
}

#[tracing::instrument(skip_all)]
async fn login(State(shared): SharedState, body: Bytes) -> Result<Response, Refusal> {
    let body = json_body(&body)?;
    Ok(match shared.login(&body) {
        Some(token) => {
            Json(json!({"success": true, "errorMessage": null, "token": token})).into_response()
        }
        None => {
            shared.count(|s| s.logins_refused += 1);
            Json(json!({
                "success": false,
                "errorMessage": "Tên đăng nhập hoặc mật khẩu không đúng",
                "token": null
            }))
            .into_response()
        }
    })
}

#[tracing::instrument(skip_all)]
async fn create_order(
    State(shared): SharedState,
    _: Authorized,
    body: Bytes,
) -> Result<Response, Refusal> {
    let body = json_body(&body)?;
    let rules = Rules {
        service_codes: &shared.config.service_codes,
        customer_code: shared.config.customer_code.as_deref(),
    };
    let new = validate::create_order(&body, &rules).map_err(Refusal)?;
    let customer_code = body["customerCode"].as_str().unwrap_or_default();
    let record = shared.create(customer_code, new);
    if shared.chance(shared.faults().lost_answer_rate) {
        shared.count(|s| s.lost_answers_injected += 1);
        tracing::debug!("the order was created; its answer is lost");
        return Ok(lost_answer(shared.chance(0.5)));
    }
    // Both shapes are seen from Vietnam Post.
    Ok(if shared.chance(0.5) {
        Json(record).into_response()
    } else {
        Json(json!({"success": true, "errorMessage": null, "data": record})).into_response()
    })
}

/// A 500, or a connection dropped in the middle of the answer.
fn lost_answer(drop_connection: bool) -> Response {
    if !drop_connection {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(wire::refusal("Lỗi hệ thống")),
        )
            .into_response();
    }
    // The body promises more bytes than it yields, so the server aborts the
    // connection after the head: the client reads a 200 it cannot finish.
    let promised = Full::new(Bytes::from(vec![b' '; 64]));
    Response::new(Body::new(Limited::new(promised, 16)))
}

#[tracing::instrument(skip_all)]
async fn list_orders(
    State(shared): SharedState,
    _: Authorized,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let day = |key: &str| {
        query
            .get(key)
            .and_then(|d| wire::query_day(d))
            .ok_or_else(|| Refusal(format!("Trường {key} không hợp lệ (dd-MM-yyyy)")))
    };
    let (from, to) = (day("lastUpdateFrom")?, day("lastUpdateTo")?);
    let number = |key: &str, default: usize| match query.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .map_err(|_| Refusal(format!("Trường {key} không hợp lệ"))),
    };
    let (size, page) = (number("size", 500)?, number("page", 0)?);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(Refusal(format!(
            "Trường size không hợp lệ (1-{MAX_PAGE_SIZE})"
        )));
    }
    let domestic = query.get("type").is_none_or(|t| t == "GUI")
        && query.get("isInternational").is_none_or(|i| i != "true");
    let lag = shared.config.list_lag;
    let now = jiff::Timestamp::now();
    let book = shared.book();
    let (listed, unlisted): (Vec<_>, Vec<_>) = book
        .iter()
        .filter(|o| domestic && !o.draft)
        .filter(|o| {
            // The carrier clock may run ahead of the wall clock; a listing
            // never shows an update later than now.
            let day = wire::vietnam_day(o.updated_at().min(now));
            from <= day && day <= to
        })
        .partition(|o| o.created.elapsed() >= lag + o.listing_delay);
    let results: Vec<Value> = listed
        .into_iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .map(wire::record)
        .collect();
    let missing = !unlisted.is_empty();
    drop(book);
    if missing {
        shared.count(|s| s.listings_missing_orders += 1);
    }
    Ok(Json(json!({"results": results})).into_response())
}

/// The item code of a `type=1&code=…` query.
fn item_code(query: &HashMap<String, String>) -> Result<&str, Refusal> {
    if query.get("type").map(String::as_str) != Some("1") {
        return Err(Refusal("Trường type không hợp lệ".into()));
    }
    query
        .get("code")
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Refusal("Trường code không được để trống".into()))
}

#[tracing::instrument(skip_all)]
async fn order_detail(
    State(shared): SharedState,
    _: Authorized,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let code = item_code(&query)?;
    let results: Vec<Value> = shared
        .book()
        .by_item_code(code)
        .map(wire::masked_record)
        .into_iter()
        .collect();
    Ok(Json(json!([{"results": results}])).into_response())
}

#[tracing::instrument(skip_all)]
async fn status_history(
    State(shared): SharedState,
    _: Authorized,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, Refusal> {
    let code = item_code(&query)?;
    let hour_key = if shared.chance(shared.faults().key_variant_rate) {
        "createHour"
    } else {
        "createdHour"
    };
    let answer = wire::history(shared.book().by_item_code(code), hour_key);
    Ok(Json(answer).into_response())
}

#[tracing::instrument(skip_all)]
async fn cancel_order(
    State(shared): SharedState,
    _: Authorized,
    body: Bytes,
) -> Result<Response, Refusal> {
    let body = json_body(&body)?;
    let original_id = body
        .as_object()
        .and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("OriginalId")))
        .and_then(|(_, v)| v.as_str())
        .unwrap_or_default()
        .trim()
        .to_owned();
    if original_id.is_empty() {
        return Err(Refusal("Trường OriginalId không được để trống".into()));
    }
    let (kind, message, case_id) = match shared.cancel(&original_id) {
        CancelOutcome::Cancelled(_) => ("00", "Hủy đơn hàng thành công", String::new()),
        CancelOutcome::Pending { case_id } => ("02", "Yêu cầu hủy đơn đang chờ duyệt", case_id),
        CancelOutcome::Refused(message) => ("01", message, String::new()),
        CancelOutcome::Unknown => ("03", "Không tìm thấy đơn hàng", String::new()),
    };
    Ok(Json(json!({
        "Type": kind,
        "Message": message,
        "Note": "",
        "OriginalId": original_id,
        "CaseId": case_id,
    }))
    .into_response())
}

#[tracing::instrument(skip_all)]
async fn show_faults(State(shared): SharedState) -> Json<Faults> {
    Json(shared.faults())
}

#[tracing::instrument(skip_all)]
async fn replace_faults(State(shared): SharedState, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(faults) => faults,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if let Err(e) = faults.check() {
        return (StatusCode::BAD_REQUEST, e).into_response();
    }
    shared.set_faults(faults);
    Json(shared.faults()).into_response()
}

#[tracing::instrument(skip_all)]
async fn show_orders(State(shared): SharedState) -> Response {
    Json(shared.book().snapshots(|_| true)).into_response()
}

#[tracing::instrument(skip_all)]
async fn show_stats(State(shared): SharedState) -> Response {
    Json(shared.stats()).into_response()
}
