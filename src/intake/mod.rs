//! The intake API: handoff requests in, handoffs out.

pub mod auth;
pub mod body;
pub mod negotiate;
pub mod problem;
pub mod wire;
pub mod xml;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use crate::clock::Clock;
use crate::domain::{Handoff, HandoffId, RequestRules, TimelineEntry};
use crate::lifecycle::Lifecycle;
use crate::store::{CreateOutcome, HandoffFilter, NewHandoff, SharedStore, StoreError};
use crate::telemetry::Metrics;
use auth::{Client, TokenTable};
use negotiate::{BodyType, Format};
use problem::{Problem, ProblemKind};

/// Everything the intake handlers need.
#[derive(Clone)]
pub struct IntakeState {
    pub store: SharedStore,
    pub clients: Arc<TokenTable<Arc<Client>>>,
    pub rules: Arc<RequestRules>,
    pub max_body_bytes: usize,
    pub lifecycle: Lifecycle,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Each client's callback format.
    pub formats: Arc<std::collections::HashMap<String, crate::domain::callback::BodyFormat>>,
    /// The store's last known health: 503 first while it is down.
    pub health: crate::store::StoreHealth,
}

/// Seconds a client should wait before retrying when the gateway is unavailable.
const UNAVAILABLE_RETRY_S: u64 = 5;

/// The intake routes.
pub fn router(state: IntakeState) -> Router {
    Router::new()
        .route("/v1/handoffs", post(create_handoff).get(list_handoffs))
        .route("/v1/handoffs/{id}", get(read_handoff))
        .route("/v1/handoffs/{id}/cancel", post(cancel_handoff))
        // Bodies are read by the handler itself, so the limit answers in the
        // contract's own words.
        .layer(DefaultBodyLimit::disable())
        // Shared, not cloned per request: a clone bumped eight reference
        // counts that every core touches (docs/benchmarks.md).
        .with_state(Arc::new(state))
}

/// The request id assigned by the gateway (`x-request-id`), used as `instance`.
pub fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned()
}

/// An answer in the negotiated format.
fn answer(status: StatusCode, format: Format, root: &str, doc: &impl Serialize) -> Response {
    let (content_type, body) = match format {
        Format::Json => (
            "application/json",
            serde_json::to_vec(doc).expect("an answer document is plain data"),
        ),
        Format::Xml => {
            let doc = serde_json::to_value(doc).expect("an answer document is plain data");
            (
                "application/xml",
                xml::write_document(root, &doc, wire::xml_item_name).into_bytes(),
            )
        }
    };
    let mut response = (status, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl IntakeState {
    /// The common checks before any work, in the contract's order: drain
    /// and store outage, credentials, rate.
    fn admit(&self, headers: &HeaderMap) -> Result<Arc<Client>, Problem> {
        if self.lifecycle.is_draining() {
            return Err(
                Problem::new(ProblemKind::Unavailable, "the gateway is shutting down")
                    .retry_after(UNAVAILABLE_RETRY_S),
            );
        }
        if !self.health.is_up() {
            return Err(unavailable());
        }
        let client = self.clients.authenticate(headers).ok_or_else(|| {
            Problem::new(
                ProblemKind::Unauthorized,
                "send Authorization: Bearer <token>",
            )
        })?;
        tracing::Span::current().record("client", client.name.as_str());
        client.admit().map_err(|wait| {
            Problem::new(
                ProblemKind::RateLimited,
                "the client's request rate is exceeded",
            )
            .retry_after(wait)
        })?;
        Ok(client)
    }
}

fn unavailable() -> Problem {
    Problem::new(ProblemKind::Unavailable, "the store is unavailable")
        .retry_after(UNAVAILABLE_RETRY_S)
}

impl IntakeState {
    /// A store failure: 503, and the store is taken as down until it
    /// answers again.
    fn store_problem(&self, e: StoreError) -> Problem {
        tracing::error!(error = %e, "store failed");
        self.health.record::<()>(&Err(e));
        unavailable()
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

#[tracing::instrument(skip_all, fields(client = tracing::field::Empty, handoff_id = tracing::field::Empty))]
async fn create_handoff(State(state): State<Arc<IntakeState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let instance = request_id(&parts.headers);
    let format = negotiate::request_format(&parts.headers);
    let reply_format = negotiate::answer_format(&parts.headers, Some(format));
    let as_xml = reply_format == Format::Xml;
    let mut kind_label = "unknown";
    let result = create(&state, &parts.headers, body, &mut kind_label).await;
    let (outcome, response) = match result {
        Ok(Created::New(handoff)) => {
            let id = &handoff.id;
            tracing::Span::current().record("handoff_id", id.as_str());
            let doc = wire::handoff(&handoff, Some(&[]));
            let mut r = answer(StatusCode::ACCEPTED, reply_format, "handoff", &doc);
            let location = format!("/v1/handoffs/{id}");
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&location).expect("ids are ASCII"),
            );
            ("accepted", r)
        }
        Ok(Created::Again(handoff, timeline)) => (
            "duplicate",
            answer(
                StatusCode::OK,
                reply_format,
                "handoff",
                &wire::handoff(&handoff, Some(&timeline)),
            ),
        ),
        Err(problem) => (problem.kind.outcome(), problem.render(&instance, as_xml)),
    };
    state.metrics.received(kind_label, format.label(), outcome);
    tracing::info!(outcome, "handoff request answered");
    response
}

enum Created {
    New(Handoff),
    Again(Handoff, Vec<TimelineEntry>),
}

async fn create(
    state: &IntakeState,
    headers: &HeaderMap,
    body: Body,
    kind_label: &mut &'static str,
) -> Result<Created, Problem> {
    let client = state.admit(headers)?;
    let BodyType::Supported(format) = negotiate::body_type(headers) else {
        return Err(Problem::new(
            ProblemKind::UnsupportedMediaType,
            "send application/json or application/xml (UTF-8)",
        ));
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return Err(Problem::new(
            ProblemKind::TooLarge,
            format!("the body exceeds {} bytes", state.max_body_bytes),
        ));
    }
    let bytes = read_body(body, state.max_body_bytes).await?;
    tracing::debug!(
        format = format.label(),
        bytes = bytes.len(),
        "request body read"
    );
    let (tree, origin) = body::read_tree(format, &bytes)?;
    *kind_label = body::kind_label(&tree);
    let parsed = body::parse_tree(&tree, origin, &state.rules)?;
    let now = state.clock.now();
    let new = NewHandoff::new(
        HandoffId::new(now.as_millisecond().max(0) as u64, rand::random()),
        client.name.clone(),
        parsed,
        now,
    );
    match state.store.create_handoff(new).await {
        Ok(CreateOutcome::Created(handoff)) => Ok(Created::New(handoff)),
        Ok(CreateOutcome::Existing {
            handoff,
            same_request: true,
        }) => {
            let timeline = state
                .store
                .timeline(&handoff.id)
                .await
                .map_err(|e| state.store_problem(e))?;
            Ok(Created::Again(handoff, timeline))
        }
        Ok(CreateOutcome::Existing {
            same_request: false,
            ..
        }) => Err(Problem::new(
            ProblemKind::Conflict,
            "request_id was already used with a different request",
        )),
        Err(e) => Err(state.store_problem(e)),
    }
}

#[tracing::instrument(skip_all, fields(client = tracing::field::Empty, handoff_id = %raw_id))]
async fn read_handoff(
    State(state): State<Arc<IntakeState>>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let instance = request_id(&headers);
    let format = negotiate::answer_format(&headers, None);
    let result = async {
        let client = state.admit(&headers)?;
        let not_found = || Problem::new(ProblemKind::NotFound, "no such handoff");
        let id = HandoffId::parse(&raw_id).ok_or_else(not_found)?;
        let handoff = state
            .store
            .handoff(Some(&client.name), &id)
            .await
            .map_err(|e| state.store_problem(e))?
            .ok_or_else(not_found)?;
        let timeline = state
            .store
            .timeline(&id)
            .await
            .map_err(|e| state.store_problem(e))?;
        Ok::<_, Problem>(wire::handoff_value(&handoff, Some(&timeline)))
    }
    .await;
    match result {
        Ok(doc) => answer(StatusCode::OK, format, "handoff", &doc),
        Err(p) => p.render(&instance, format == Format::Xml),
    }
}

#[tracing::instrument(skip_all, fields(client = tracing::field::Empty, handoff_id = %raw_id))]
async fn cancel_handoff(
    State(state): State<Arc<IntakeState>>,
    Path(raw_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    use crate::store::CancelRequest;
    let instance = request_id(&headers);
    let format = negotiate::answer_format(&headers, None);
    let result = async {
        let client = state.admit(&headers)?;
        let not_found = || Problem::new(ProblemKind::NotFound, "no such handoff");
        let id = HandoffId::parse(&raw_id).ok_or_else(not_found)?;
        let callback_format = state.formats.get(&client.name).copied().unwrap_or_default();
        let outcome = state
            .store
            .request_cancel(&client.name, &id, callback_format, state.clock.now())
            .await
            .map_err(|e| state.store_problem(e))?;
        match outcome {
            CancelRequest::Accepted(handoff) => {
                let timeline = state
                    .store
                    .timeline(&id)
                    .await
                    .map_err(|e| state.store_problem(e))?;
                Ok(wire::handoff_value(&handoff, Some(&timeline)))
            }
            CancelRequest::NotAllowed(handoff) => Err(Problem::new(
                ProblemKind::Conflict,
                format!("a {} handoff cannot be cancelled", handoff.status),
            )),
            CancelRequest::NotFound => Err(not_found()),
        }
    }
    .await;
    match result {
        Ok(doc) => answer(StatusCode::ACCEPTED, format, "handoff", &doc),
        Err(p) => p.render(&instance, format == Format::Xml),
    }
}

/// Most handoffs a list answers with.
const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 50;

/// Parses the shared paging parameters (`limit`, `cursor`).
pub fn paging(
    params: &[(String, String)],
    errors: &mut Vec<crate::domain::FieldError>,
) -> (u32, Option<String>) {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = match get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                errors.push(crate::domain::FieldError {
                    field: "limit".into(),
                    message: format!("must be an integer from 1 to {MAX_LIMIT}"),
                });
                DEFAULT_LIMIT
            }
        },
    };
    let cursor = match get("cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(raw) if HandoffId::parse(raw).is_some() => Some(raw.to_owned()),
        Some(_) => {
            errors.push(crate::domain::FieldError {
                field: "cursor".into(),
                message: "is not a cursor this gateway gave out".into(),
            });
            None
        }
    };
    (limit, cursor)
}

/// The list filters obey the rules of the request fields they match, so a
/// value no handoff can have (empty included) is a 422, not an empty page.
fn filter_rules(
    dossier_code: Option<&str>,
    request_id: Option<&str>,
    errors: &mut Vec<crate::domain::FieldError>,
) {
    if dossier_code.is_some_and(|c| !(1..=64).contains(&c.chars().count())) {
        errors.push(crate::domain::FieldError {
            field: "dossier_code".into(),
            message: "must be 1 to 64 characters".into(),
        });
    }
    let id_ok = |r: &str| {
        (1..=64).contains(&r.len())
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    if request_id.is_some_and(|r| !id_ok(r)) {
        errors.push(crate::domain::FieldError {
            field: "request_id".into(),
            message: "must be 1 to 64 of letters, digits, '.', '_', ':' and '-'".into(),
        });
    }
}

#[tracing::instrument(skip_all, fields(client = tracing::field::Empty))]
async fn list_handoffs(
    State(state): State<Arc<IntakeState>>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let instance = request_id(&headers);
    let format = negotiate::answer_format(&headers, None);
    let result = async {
        let client = state.admit(&headers)?;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut errors = Vec::new();
        let dossier_code = get("dossier_code");
        let request_id = get("request_id");
        if dossier_code.is_none() && request_id.is_none() {
            errors.push(crate::domain::FieldError {
                field: "dossier_code".into(),
                message: "dossier_code or request_id is required".into(),
            });
        }
        filter_rules(dossier_code.as_deref(), request_id.as_deref(), &mut errors);
        let (limit, cursor) = paging(&params, &mut errors);
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        let filter = HandoffFilter {
            client: Some(client.name.clone()),
            dossier_code,
            request_id,
            ..HandoffFilter::default()
        };
        let page = state
            .store
            .list_handoffs(&filter, limit, cursor.as_deref())
            .await
            .map_err(|e| state.store_problem(e))?;
        Ok::<_, Problem>(page)
    }
    .await;
    match result {
        Ok(page) => {
            let items: Vec<_> = page.items.iter().map(|h| wire::handoff(h, None)).collect();
            match format {
                Format::Json => answer(
                    StatusCode::OK,
                    format,
                    "handoff_list",
                    &json!({"items": items, "next_cursor": page.next_cursor}),
                ),
                Format::Xml => answer(
                    StatusCode::OK,
                    format,
                    "handoff_list",
                    &json!({"handoffs": items, "next_cursor": page.next_cursor}),
                ),
            }
        }
        Err(p) => p.render(&instance, format == Format::Xml),
    }
}

/// Answers unknown paths with a problem document.
pub async fn not_found(headers: HeaderMap) -> Response {
    let format = negotiate::answer_format(&headers, None);
    Problem::new(ProblemKind::NotFound, "no such resource")
        .render(&request_id(&headers), format == Format::Xml)
}
