//! The admin API's handlers (intake-api.md, Admin API): JSON answers,
//! problem documents as the intake API writes them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use jiff::civil::Date;
use serde_json::{Value, json};

use super::{AdminState, wire};
use crate::domain::{FieldError, Handoff, Status};
use crate::http::auth::{AdminAuth, Operator};
use crate::http::extract::JsonOnly;
use crate::http::{self, HandoffPath, Params, Payload, Problem};
use crate::store::HandoffFilter;
use crate::store::admin::{AdminOutcome, CallbackReplay, CallbackState, Resolution, resolve_note};

impl AdminState {
    /// The handoff with its timeline.
    async fn full(&self, handoff: &Handoff) -> Result<Value, Problem> {
        let timeline = self.store.timeline(&handoff.id).await?;
        Ok(wire::handoff(handoff, Some(&timeline)))
    }

    /// Answers an action on a handoff: 200 with it, 404 or 409.
    async fn action_answer(&self, outcome: AdminOutcome) -> Result<Response, Problem> {
        match outcome {
            AdminOutcome::Done(handoff) => {
                Ok(http::json(StatusCode::OK, &self.full(&handoff).await?))
            }
            AdminOutcome::NotFound => Err(Problem::not_found("handoff")),
            AdminOutcome::Conflict(detail) => Err(Problem::conflict(detail)),
        }
    }
}

/// `GET /v1/admin/handoffs`: search across clients.
pub async fn search_handoffs(
    State(state): State<AdminState>,
    _: AdminAuth,
    params: Params,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let status = params
        .get("status")
        .and_then(|s| match s.parse::<Status>() {
            Ok(s) => Some(s),
            Err(()) => {
                errors.push(FieldError::new("status", "is not a handoff status"));
                None
            }
        });
    let (limit, cursor) = params.paging(&mut errors);
    Problem::check(errors)?;
    let filter = HandoffFilter {
        client: params.get("client"),
        dossier_code: params.get("dossier_code"),
        request_id: params.get("request_id"),
        status,
        tracking_number: params.get("tracking_number"),
        phone: None,
    };
    let page = state
        .store
        .list_handoffs(&filter, limit, cursor.as_deref())
        .await?;
    let items: Vec<Value> = page.items.iter().map(|h| wire::handoff(h, None)).collect();
    let doc = json!({"items": items, "next_cursor": page.next_cursor});
    Ok(http::json(StatusCode::OK, &doc))
}

/// `GET /v1/admin/handoffs/{id}`: any client's handoff with its timeline.
pub async fn show_handoff(
    State(state): State<AdminState>,
    _: AdminAuth,
    HandoffPath(id): HandoffPath,
) -> Result<Response, Problem> {
    let handoff = state
        .store
        .handoff(None, &id)
        .await?
        .ok_or_else(|| Problem::not_found("handoff"))?;
    Ok(http::json(StatusCode::OK, &state.full(&handoff).await?))
}

/// `POST /v1/admin/handoffs/{id}/replay`.
pub async fn replay_handoff(
    State(state): State<AdminState>,
    operator: Operator,
    HandoffPath(id): HandoffPath,
) -> Result<Response, Problem> {
    let operator = operator.name()?;
    let outcome = state
        .store
        .replay_failed_handoff(&id, &operator, state.clock.now(), &state.formats)
        .await?;
    state.action_answer(outcome).await
}

/// `POST /v1/admin/handoffs/{id}/erase`.
pub async fn erase_handoff(
    State(state): State<AdminState>,
    operator: Operator,
    HandoffPath(id): HandoffPath,
) -> Result<Response, Problem> {
    let operator = operator.name()?;
    let outcome = state
        .store
        .erase_personal_data(&id, &operator, state.clock.now())
        .await?;
    state.action_answer(outcome).await
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
        return Err(vec![FieldError::new(
            "status",
            "the body must be an object with status and note",
        )]);
    };
    let mut errors = Vec::new();
    for name in fields.keys() {
        if name != "status" && name != "note" {
            errors.push(FieldError::new(name, "is not a known field"));
        }
    }
    let resolution = match fields.get("status") {
        None | Some(Value::Null) => Err(FieldError::new("status", "is required")),
        Some(Value::String(s)) => Resolution::parse(s)
            .ok_or_else(|| FieldError::new("status", "must be delivered or returned")),
        Some(_) => Err(FieldError::new("status", "must be a string")),
    };
    let note = match fields.get("note") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => resolve_note(s).map_err(|why| FieldError::new("note", why)),
        Some(_) => Err(FieldError::new("note", "must be a string")),
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

/// `POST /v1/admin/handoffs/{id}/resolve`.
pub async fn resolve_handoff(
    State(state): State<AdminState>,
    Operator(operator): Operator,
    HandoffPath(id): HandoffPath,
    payload: Payload<JsonOnly>,
) -> Result<Response, Problem> {
    let (doc, _) = payload.tree("resolve")?;
    let (resolve, operator) = match (parse_resolve(&doc), operator) {
        (Ok(resolve), Ok(operator)) => (resolve, operator),
        (resolve, operator) => {
            let mut errors = resolve.err().unwrap_or_default();
            errors.extend(operator.err());
            return Err(errors.into());
        }
    };
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
        .await?;
    state.action_answer(outcome).await
}

/// The `state` parameter of the callback endpoints.
fn callback_state(
    params: &Params,
    allowed: &[CallbackState],
    errors: &mut Vec<FieldError>,
) -> Option<CallbackState> {
    let names: Vec<&str> = allowed.iter().map(|s| s.as_str()).collect();
    let wanted = params
        .get("state")
        .and_then(|s| CallbackState::parse(&s))
        .filter(|s| allowed.contains(s));
    if wanted.is_none() {
        errors.push(FieldError::new(
            "state",
            format!("is required: one of {}", names.join(", ")),
        ));
    }
    wanted
}

/// `GET /v1/admin/callbacks?state=dead|held`.
pub async fn list_callbacks(
    State(state): State<AdminState>,
    _: AdminAuth,
    params: Params,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let wanted = callback_state(
        &params,
        &[CallbackState::Dead, CallbackState::Held],
        &mut errors,
    );
    // Callback cursors are callback ids, not handoff ids.
    let limit = params.limit(&mut errors);
    let cursor = params.cursor(&mut errors, |c| c.starts_with("msg_"));
    Problem::check(errors)?;
    let wanted = wanted.unwrap_or(CallbackState::Dead);
    let page = state
        .store
        .list_callbacks(wanted, limit, cursor.as_deref())
        .await?;
    let items: Vec<Value> = page.items.iter().map(wire::callback).collect();
    let doc = json!({"items": items, "next_cursor": page.next_cursor});
    Ok(http::json(StatusCode::OK, &doc))
}

/// `POST /v1/admin/callbacks/{id}/replay`.
pub async fn replay_callback(
    State(state): State<AdminState>,
    operator: Operator,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let operator = operator.name()?;
    let outcome = state
        .store
        .replay_callback(&id, &operator, state.clock.now())
        .await?;
    match outcome {
        CallbackReplay::Replayed(c) => Ok(http::json(StatusCode::ACCEPTED, &wire::callback(&c))),
        CallbackReplay::NotFound => Err(Problem::not_found("callback")),
        CallbackReplay::NotDead(s) => Err(Problem::conflict(format!(
            "the callback is {}; only a dead callback can be replayed",
            s.as_str()
        ))),
    }
}

/// `POST /v1/admin/callbacks/replay?state=dead`.
pub async fn replay_dead_callbacks(
    State(state): State<AdminState>,
    Operator(operator): Operator,
    params: Params,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    callback_state(&params, &[CallbackState::Dead], &mut errors);
    let operator = match operator {
        Ok(name) if errors.is_empty() => name,
        named => {
            errors.extend(named.err());
            return Err(errors.into());
        }
    };
    let n = state
        .store
        .replay_dead_callbacks_by(&operator, state.clock.now())
        .await?;
    Ok(http::json(StatusCode::ACCEPTED, &json!({"replayed": n})))
}

/// A `YYYY-MM-DD` date parameter.
fn date(params: &Params, name: &str) -> Result<Date, FieldError> {
    params
        .get(name)
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
        .ok_or_else(|| FieldError::new(name, "is required: a date YYYY-MM-DD"))
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
pub async fn stats(
    State(state): State<AdminState>,
    _: AdminAuth,
    params: Params,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let (from, to) = match (date(&params, "from"), date(&params, "to")) {
        (Ok(from), Ok(to)) if to < from => {
            return Err(Problem::field("to", "must not be before from"));
        }
        (Ok(from), Ok(to)) => (from, to),
        (from, to) => {
            return Err(from
                .err()
                .into_iter()
                .chain(to.err())
                .collect::<Vec<_>>()
                .into());
        }
    };
    let rows = state.store.stats(from, to).await?;
    if wants_csv(&headers) {
        let csv = wire::stats_csv(&rows);
        return Ok(http::with_content_type(
            StatusCode::OK,
            csv,
            "text/csv; charset=utf-8",
        ));
    }
    let rows: Vec<Value> = rows.iter().map(wire::stats_row).collect();
    let doc = json!({"from": from.to_string(), "to": to.to_string(), "rows": rows});
    Ok(http::json(StatusCode::OK, &doc))
}
