//! The admin API's handlers (intake-api.md, Admin API): JSON answers,
//! problem documents as the intake API writes them.

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::civil::Date;
use serde_json::{Value, json};

use super::{AdminState, wire};
use crate::domain::text::{char_len, normalize};
use crate::domain::{FieldError, Handoff, HandoffId, Status};
use crate::intake::negotiate::{self, BodyType, Format};
use crate::intake::problem::{Problem, ProblemKind};
use crate::intake::{paging, request_id};
use crate::store::admin::{AdminOutcome, CallbackReplay, CallbackState, Resolution};
use crate::store::{HandoffFilter, StoreError};

/// Seconds an operator should wait before retrying when the gateway is unavailable.
const UNAVAILABLE_RETRY_S: u64 = 5;
/// Longest `X-Operator` name, in characters.
const MAX_OPERATOR_CHARS: usize = 200;
/// Longest resolve note, in characters.
const MAX_NOTE_CHARS: usize = 500;

type Answer = Result<Response, Problem>;

fn json_answer(status: StatusCode, doc: &Value) -> Response {
    let mut response = (status, doc.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn respond(headers: &HeaderMap, result: Answer) -> Response {
    result.unwrap_or_else(|p| p.render(&request_id(headers), false))
}

fn store_problem(e: StoreError) -> Problem {
    tracing::error!(error = %e, "store failed");
    Problem::new(ProblemKind::Unavailable, "the store is unavailable")
        .retry_after(UNAVAILABLE_RETRY_S)
}

fn no_handoff() -> Problem {
    Problem::new(ProblemKind::NotFound, "no such handoff")
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// A query parameter, empty meaning absent.
fn param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The `X-Operator` name every action records; a missing, empty or overlong
/// one is a field error.
fn operator(headers: &HeaderMap) -> Result<String, FieldError> {
    let name = headers
        .get("x-operator")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .map(normalize)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| field_error("X-Operator", "is required: the operator's name"))?;
    if char_len(&name) > MAX_OPERATOR_CHARS {
        return Err(field_error(
            "X-Operator",
            format!("must be at most {MAX_OPERATOR_CHARS} characters"),
        ));
    }
    Ok(name)
}

/// The operator of an action that takes no other input.
fn operator_only(headers: &HeaderMap) -> Result<String, Problem> {
    operator(headers).map_err(|e| Problem::invalid(vec![e]))
}

fn check(errors: Vec<FieldError>) -> Result<(), Problem> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Problem::invalid(errors))
    }
}

impl AdminState {
    /// The checks before any work: drain, then credentials.
    fn admit(&self, headers: &HeaderMap) -> Result<(), Problem> {
        if self.lifecycle.is_draining() {
            return Err(
                Problem::new(ProblemKind::Unavailable, "the gateway is shutting down")
                    .retry_after(UNAVAILABLE_RETRY_S),
            );
        }
        self.tokens.authenticate(headers).ok_or_else(|| {
            Problem::new(
                ProblemKind::Unauthorized,
                "send Authorization: Bearer <admin token>",
            )
        })
    }

    /// The handoff with its timeline.
    async fn full(&self, handoff: &Handoff) -> Result<Value, Problem> {
        let timeline = self
            .store
            .timeline(&handoff.id)
            .await
            .map_err(store_problem)?;
        Ok(wire::handoff(handoff, Some(&timeline)))
    }

    /// Answers an action on a handoff: 200 with it, 404 or 409.
    async fn action_answer(&self, outcome: AdminOutcome) -> Answer {
        match outcome {
            AdminOutcome::Done(handoff) => {
                Ok(json_answer(StatusCode::OK, &self.full(&handoff).await?))
            }
            AdminOutcome::NotFound => Err(no_handoff()),
            AdminOutcome::Conflict(detail) => Err(Problem::new(ProblemKind::Conflict, detail)),
        }
    }
}

/// `GET /v1/admin/handoffs`: search across clients.
#[tracing::instrument(skip_all)]
pub async fn search_handoffs(
    State(state): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let mut errors = Vec::new();
        let status = param(&params, "status").and_then(|s| match s.parse::<Status>() {
            Ok(s) => Some(s),
            Err(()) => {
                errors.push(field_error("status", "is not a handoff status"));
                None
            }
        });
        let (limit, cursor) = paging(&params, &mut errors);
        check(errors)?;
        let filter = HandoffFilter {
            client: param(&params, "client"),
            dossier_code: param(&params, "dossier_code"),
            request_id: param(&params, "request_id"),
            status,
            tracking_number: param(&params, "tracking_number"),
        };
        let page = state
            .store
            .list_handoffs(&filter, limit, cursor.as_deref())
            .await
            .map_err(store_problem)?;
        let items: Vec<Value> = page.items.iter().map(|h| wire::handoff(h, None)).collect();
        Ok(json_answer(
            StatusCode::OK,
            &json!({"items": items, "next_cursor": page.next_cursor}),
        ))
    }
    .await;
    respond(&headers, result)
}

/// `GET /v1/admin/handoffs/{id}`: any client's handoff with its timeline.
#[tracing::instrument(skip_all, fields(handoff_id = %raw_id))]
pub async fn show_handoff(
    State(state): State<AdminState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let id = HandoffId::parse(&raw_id).ok_or_else(no_handoff)?;
        let handoff = state
            .store
            .handoff(None, &id)
            .await
            .map_err(store_problem)?
            .ok_or_else(no_handoff)?;
        Ok(json_answer(StatusCode::OK, &state.full(&handoff).await?))
    }
    .await;
    respond(&headers, result)
}

/// `POST /v1/admin/handoffs/{id}/replay`.
#[tracing::instrument(skip_all, fields(handoff_id = %raw_id))]
pub async fn replay_handoff(
    State(state): State<AdminState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let operator = operator_only(&headers)?;
        let id = HandoffId::parse(&raw_id).ok_or_else(no_handoff)?;
        let outcome = state
            .store
            .replay_failed_handoff(&id, &operator, state.clock.now(), &state.formats)
            .await
            .map_err(store_problem)?;
        state.action_answer(outcome).await
    }
    .await;
    respond(&headers, result)
}

/// `POST /v1/admin/handoffs/{id}/erase`.
#[tracing::instrument(skip_all, fields(handoff_id = %raw_id))]
pub async fn erase_handoff(
    State(state): State<AdminState>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let operator = operator_only(&headers)?;
        let id = HandoffId::parse(&raw_id).ok_or_else(no_handoff)?;
        let outcome = state
            .store
            .erase_personal_data(&id, &operator, state.clock.now())
            .await
            .map_err(store_problem)?;
        state.action_answer(outcome).await
    }
    .await;
    respond(&headers, result)
}

/// A resolve request, validated.
struct Resolve {
    resolution: Resolution,
    note: Option<String>,
}

/// Reads `{"status": "delivered" | "returned", "note": "..."}`, naming every
/// bad field.
fn parse_resolve(doc: &Value) -> Result<Resolve, Vec<FieldError>> {
    let Some(fields) = doc.as_object() else {
        return Err(vec![field_error(
            "status",
            "the body must be an object with status and note",
        )]);
    };
    let mut errors = Vec::new();
    for name in fields.keys() {
        if name != "status" && name != "note" {
            errors.push(field_error(name, "is not a known field"));
        }
    }
    let resolution = match fields.get("status") {
        None | Some(Value::Null) => Err(field_error("status", "is required")),
        Some(Value::String(s)) => Resolution::parse(s)
            .ok_or_else(|| field_error("status", "must be delivered or returned")),
        Some(_) => Err(field_error("status", "must be a string")),
    };
    let note = match fields.get("note") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let note = normalize(s);
            if char_len(&note) > MAX_NOTE_CHARS {
                Err(field_error(
                    "note",
                    format!("must be at most {MAX_NOTE_CHARS} characters"),
                ))
            } else {
                Ok(Some(note).filter(|n| !n.is_empty()))
            }
        }
        Some(_) => Err(field_error("note", "must be a string")),
    };
    match (resolution, note) {
        (Ok(resolution), Ok(note)) if errors.is_empty() => Ok(Resolve { resolution, note }),
        (resolution, note) => {
            errors.extend(resolution.err());
            errors.extend(note.err());
            Err(errors)
        }
    }
}

/// Reads a body of at most `limit` bytes.
async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, Problem> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Problem::new(
                ProblemKind::TooLarge,
                format!("the body exceeds {limit} bytes"),
            )
        } else {
            Problem::new(ProblemKind::Malformed, "the body could not be read")
        }
    })
}

/// `POST /v1/admin/handoffs/{id}/resolve`.
#[tracing::instrument(skip_all, fields(handoff_id = %raw_id))]
pub async fn resolve_handoff(
    State(state): State<AdminState>,
    Path(raw_id): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let result = async {
        state.admit(&headers)?;
        if negotiate::body_type(&headers) != BodyType::Supported(Format::Json) {
            return Err(Problem::new(
                ProblemKind::UnsupportedMediaType,
                "send application/json",
            ));
        }
        let bytes = read_body(body, state.max_body_bytes).await?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| {
            Problem::new(ProblemKind::Malformed, format!("not well-formed JSON: {e}"))
        })?;
        let (resolve, operator) = match (parse_resolve(&doc), operator(&headers)) {
            (Ok(resolve), Ok(operator)) => (resolve, operator),
            (resolve, operator) => {
                let mut errors = resolve.err().unwrap_or_default();
                errors.extend(operator.err());
                return Err(Problem::invalid(errors));
            }
        };
        let id = HandoffId::parse(&raw_id).ok_or_else(no_handoff)?;
        let outcome = state
            .store
            .resolve_partial(
                &id,
                resolve.resolution,
                resolve.note.as_deref(),
                &operator,
                state.clock.now(),
                &state.formats,
            )
            .await
            .map_err(store_problem)?;
        state.action_answer(outcome).await
    }
    .await;
    respond(&headers, result)
}

/// The `state` parameter of the callback endpoints.
fn callback_state(
    params: &[(String, String)],
    allowed: &[CallbackState],
    errors: &mut Vec<FieldError>,
) -> Option<CallbackState> {
    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    let wanted = param(params, "state")
        .and_then(|s| CallbackState::parse(&s))
        .filter(|s| allowed.contains(s));
    if wanted.is_none() {
        errors.push(field_error(
            "state",
            format!("is required: one of {}", names.join(", ")),
        ));
    }
    wanted
}

/// `GET /v1/admin/callbacks?state=dead|held`.
#[tracing::instrument(skip_all)]
pub async fn list_callbacks(
    State(state): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let mut errors = Vec::new();
        let wanted = callback_state(
            &params,
            &[CallbackState::Dead, CallbackState::Held],
            &mut errors,
        );
        // Callback cursors are callback ids, not handoff ids: only the
        // limit is read by the shared paging rules.
        let without_cursor: Vec<(String, String)> = params
            .iter()
            .filter(|(n, _)| n != "cursor")
            .cloned()
            .collect();
        let (limit, _) = paging(&without_cursor, &mut errors);
        let cursor = param(&params, "cursor");
        if cursor.as_deref().is_some_and(|c| !c.starts_with("msg_")) {
            errors.push(field_error(
                "cursor",
                "is not a cursor this gateway gave out",
            ));
        }
        check(errors)?;
        let wanted = wanted.unwrap_or(CallbackState::Dead);
        let page = state
            .store
            .list_callbacks(wanted, limit, cursor.as_deref())
            .await
            .map_err(store_problem)?;
        let items: Vec<Value> = page.items.iter().map(wire::callback).collect();
        Ok(json_answer(
            StatusCode::OK,
            &json!({"items": items, "next_cursor": page.next_cursor}),
        ))
    }
    .await;
    respond(&headers, result)
}

/// `POST /v1/admin/callbacks/{id}/replay`.
#[tracing::instrument(skip_all)]
pub async fn replay_callback(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let operator = operator_only(&headers)?;
        let outcome = state
            .store
            .replay_callback(&id, &operator, state.clock.now())
            .await
            .map_err(store_problem)?;
        match outcome {
            CallbackReplay::Replayed(c) => {
                Ok(json_answer(StatusCode::ACCEPTED, &wire::callback(&c)))
            }
            CallbackReplay::NotFound => {
                Err(Problem::new(ProblemKind::NotFound, "no such callback"))
            }
            CallbackReplay::NotDead(s) => Err(Problem::new(
                ProblemKind::Conflict,
                format!(
                    "the callback is {}; only a dead callback can be replayed",
                    s.as_str()
                ),
            )),
        }
    }
    .await;
    respond(&headers, result)
}

/// `POST /v1/admin/callbacks/replay?state=dead`.
#[tracing::instrument(skip_all)]
pub async fn replay_dead_callbacks(
    State(state): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let mut errors = Vec::new();
        callback_state(&params, &[CallbackState::Dead], &mut errors);
        let operator = match operator(&headers) {
            Ok(name) if errors.is_empty() => name,
            named => {
                errors.extend(named.err());
                return Err(Problem::invalid(errors));
            }
        };
        let n = state
            .store
            .replay_dead_callbacks_by(&operator, state.clock.now())
            .await
            .map_err(store_problem)?;
        Ok(json_answer(StatusCode::ACCEPTED, &json!({"replayed": n})))
    }
    .await;
    respond(&headers, result)
}

/// A `YYYY-MM-DD` date parameter.
fn date(params: &[(String, String)], name: &str) -> Result<Date, FieldError> {
    param(params, name)
        .filter(|raw| {
            raw.len() == 10
                && raw.bytes().enumerate().all(|(i, b)| {
                    if i == 4 || i == 7 {
                        b == b'-'
                    } else {
                        b.is_ascii_digit()
                    }
                })
        })
        .and_then(|raw| raw.parse::<Date>().ok())
        .ok_or_else(|| field_error(name, "is required: a date YYYY-MM-DD"))
}

/// True when the request asks for CSV.
fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv"))
        })
}

/// `GET /v1/admin/stats?from=&to=`: JSON, or CSV with `Accept: text/csv`.
#[tracing::instrument(skip_all)]
pub async fn stats(
    State(state): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let result = async {
        state.admit(&headers)?;
        let (from, to) = match (date(&params, "from"), date(&params, "to")) {
            (Ok(from), Ok(to)) if to < from => {
                return Err(Problem::field("to", "must not be before from"));
            }
            (Ok(from), Ok(to)) => (from, to),
            (from, to) => {
                let errors = from.err().into_iter().chain(to.err()).collect();
                return Err(Problem::invalid(errors));
            }
        };
        let rows = state.store.stats(from, to).await.map_err(store_problem)?;
        if wants_csv(&headers) {
            let mut response = (StatusCode::OK, wire::stats_csv(&rows)).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            return Ok(response);
        }
        let rows: Vec<Value> = rows.iter().map(wire::stats_row).collect();
        Ok(json_answer(
            StatusCode::OK,
            &json!({"from": from.to_string(), "to": to.to_string(), "rows": rows}),
        ))
    }
    .await;
    respond(&headers, result)
}
