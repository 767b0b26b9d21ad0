//! The intake API: handoff requests in, handoffs out.

pub mod body;
pub mod wire;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::json;

use crate::clock::Clock;
use crate::domain::{FieldError, HandoffId, RequestRules};
use crate::http::auth::{Admitted, Authenticated, ClientGate};
use crate::http::{
    self, AnswerFormat, BodyLimit, HandoffPath, Params, Payload, Problem, ProblemFormat,
};
use crate::store::{CancelRequest, CreateOutcome, HandoffFilter, NewHandoff, SharedStore};
use crate::telemetry::Metrics;

/// Everything the intake handlers need.
pub struct IntakeState {
    pub store: SharedStore,
    /// Who may call, and whether the gateway takes calls now.
    pub gate: ClientGate,
    pub rules: Arc<RequestRules>,
    pub max_body_bytes: usize,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    /// Each client's callback format.
    pub formats: Arc<std::collections::HashMap<String, crate::domain::callback::BodyFormat>>,
}

impl AsRef<ClientGate> for Arc<IntakeState> {
    fn as_ref(&self) -> &ClientGate {
        &self.gate
    }
}

impl FromRef<Arc<IntakeState>> for BodyLimit {
    fn from_ref(state: &Arc<IntakeState>) -> Self {
        BodyLimit(state.max_body_bytes)
    }
}

/// The intake routes.
pub fn router(state: IntakeState) -> Router {
    let state = Arc::new(state);
    let counted = axum::middleware::from_fn_with_state(state.metrics.clone(), count_received);
    let routes = Router::new()
        .route(
            "/v1/handoffs",
            post(create_handoff).route_layer(counted).get(list_handoffs),
        )
        .route("/v1/handoffs/{id}", get(read_handoff))
        .route("/v1/handoffs/{id}/cancel", post(cancel_handoff))
        // Bodies are read by `Payload`, so the limit answers in the
        // contract's own words.
        .layer(DefaultBodyLimit::disable())
        // Shared, not cloned per request: a clone bumped eight reference
        // counts that every core touches (docs/benchmarks.md).
        .with_state(state.clone());
    http::with_problems(
        routes,
        ProblemFormat::Negotiated,
        Some(state.gate.health.clone()),
    )
}

/// The `kind` label a create answer is counted under.
#[derive(Debug, Clone, Copy)]
struct KindLabel(&'static str);

/// Counts every answer to `POST /v1/handoffs` in
/// `bcci_handoffs_received_total`, whatever answered it: an extractor's
/// problem, the handler's problem or its handoff.
async fn count_received(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let format = http::negotiate::request_format(request.headers());
    let response = next.run(request).await;
    let kind = response
        .extensions()
        .get::<KindLabel>()
        .map_or("unknown", |k| k.0);
    let outcome = match response.extensions().get::<Problem>() {
        Some(problem) => problem.kind.outcome(),
        None if response.status() == StatusCode::ACCEPTED => "accepted",
        None => "duplicate",
    };
    metrics.received(kind, format.label(), outcome);
    tracing::info!(outcome, "handoff request answered");
    response
}

/// `POST /v1/handoffs`. The answer carries the request's `kind` label for
/// `count_received`, whatever the outcome.
async fn create_handoff(
    State(state): State<Arc<IntakeState>>,
    Admitted(client): Authenticated,
    AnswerFormat(format): AnswerFormat,
    payload: Payload,
) -> (axum::Extension<KindLabel>, Result<Response, Problem>) {
    let tree = payload.tree("handoff");
    let kind = tree
        .as_ref()
        .map_or("unknown", |(t, _)| body::kind_label(t));
    let answer = match tree {
        Ok(tree) => create(&state, &client.name, format, tree).await,
        Err(problem) => Err(problem),
    };
    (axum::Extension(KindLabel(kind)), answer)
}

/// Validates a request tree and stores its handoff: 202 when new, 200 with
/// the stored one for a repeat, 409 for a changed request under a used id.
async fn create(
    state: &IntakeState,
    client: &str,
    format: http::Format,
    (tree, origin): (serde_json::Value, crate::domain::request::Origin),
) -> Result<Response, Problem> {
    let request = body::parse_tree(&tree, origin, &state.rules)?;
    let now = state.clock.now();
    let new = NewHandoff::new(
        HandoffId::new(now.as_millisecond().max(0) as u64, rand::random()),
        client.to_owned(),
        request,
        now,
    );
    match state.store.create_handoff(new).await? {
        CreateOutcome::Created(handoff) => {
            let id = &handoff.id;
            tracing::Span::current().record("handoff_id", id.as_str());
            let doc = wire::handoff(&handoff, Some(&[]));
            let mut answer = http::answer(StatusCode::ACCEPTED, format, "handoff", &doc);
            let location = format!("/v1/handoffs/{id}");
            answer.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&location).expect("ids are ASCII"),
            );
            Ok(answer)
        }
        CreateOutcome::Existing {
            handoff,
            same_request: true,
        } => {
            let timeline = state.store.timeline(&handoff.id).await?;
            let doc = wire::handoff(&handoff, Some(&timeline));
            Ok(http::answer(StatusCode::OK, format, "handoff", &doc))
        }
        CreateOutcome::Existing {
            same_request: false,
            ..
        } => Err(Problem::conflict(
            "request_id was already used with a different request",
        )),
    }
}

async fn read_handoff(
    State(state): State<Arc<IntakeState>>,
    Admitted(client): Authenticated,
    AnswerFormat(format): AnswerFormat,
    HandoffPath(id): HandoffPath,
) -> Result<Response, Problem> {
    let handoff = state
        .store
        .handoff(Some(&client.name), &id)
        .await?
        .ok_or_else(|| Problem::not_found("handoff"))?;
    let timeline = state.store.timeline(&id).await?;
    let doc = wire::handoff(&handoff, Some(&timeline));
    Ok(http::answer(StatusCode::OK, format, "handoff", &doc))
}

async fn cancel_handoff(
    State(state): State<Arc<IntakeState>>,
    Admitted(client): Authenticated,
    AnswerFormat(format): AnswerFormat,
    HandoffPath(id): HandoffPath,
) -> Result<Response, Problem> {
    let callback_format = state.formats.get(&client.name).copied().unwrap_or_default();
    let outcome = state
        .store
        .request_cancel(&client.name, &id, callback_format, state.clock.now())
        .await?;
    match outcome {
        CancelRequest::Accepted(handoff) => {
            let timeline = state.store.timeline(&id).await?;
            let doc = wire::handoff(&handoff, Some(&timeline));
            Ok(http::answer(StatusCode::ACCEPTED, format, "handoff", &doc))
        }
        CancelRequest::NotAllowed(handoff) => Err(Problem::conflict(format!(
            "a {} handoff cannot be cancelled",
            handoff.status
        ))),
        CancelRequest::NotFound => Err(Problem::not_found("handoff")),
    }
}

/// The list filters obey the rules of the request fields they match, so a
/// value no handoff can have (empty included) is a 422, not an empty page.
fn filter_rules(
    dossier_code: Option<&str>,
    request_id: Option<&str>,
    errors: &mut Vec<FieldError>,
) {
    if dossier_code.is_some_and(|c| !(1..=64).contains(&c.chars().count())) {
        errors.push(FieldError::new(
            "dossier_code",
            "must be 1 to 64 characters",
        ));
    }
    let id_ok = |r: &str| {
        (1..=64).contains(&r.len())
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    };
    if request_id.is_some_and(|r| !id_ok(r)) {
        errors.push(FieldError::new(
            "request_id",
            "must be 1 to 64 of letters, digits, '.', '_', ':' and '-'",
        ));
    }
}

async fn list_handoffs(
    State(state): State<Arc<IntakeState>>,
    Admitted(client): Authenticated,
    AnswerFormat(format): AnswerFormat,
    params: Params,
) -> Result<Response, Problem> {
    let mut errors = Vec::new();
    let dossier_code = params.raw("dossier_code").map(str::to_owned);
    let request_id = params.raw("request_id").map(str::to_owned);
    if dossier_code.is_none() && request_id.is_none() {
        errors.push(FieldError::new(
            "dossier_code",
            "dossier_code or request_id is required",
        ));
    }
    filter_rules(dossier_code.as_deref(), request_id.as_deref(), &mut errors);
    let (limit, cursor) = params.paging(&mut errors);
    Problem::check(errors)?;
    let filter = HandoffFilter {
        client: Some(client.name.clone()),
        dossier_code,
        request_id,
        ..HandoffFilter::default()
    };
    let page = state
        .store
        .list_handoffs(&filter, limit, cursor.as_deref())
        .await?;
    let items: Vec<_> = page.items.iter().map(|h| wire::handoff(h, None)).collect();
    // XML names the list by its items' element.
    let list = match format {
        http::Format::Json => "items",
        http::Format::Xml => "handoffs",
    };
    let doc = json!({list: items, "next_cursor": page.next_cursor});
    Ok(http::answer(StatusCode::OK, format, "handoff_list", &doc))
}
