//! What every listener and handler shares: the layers around each router,
//! the extractors (the authenticated caller, a JSON-or-XML body, paging),
//! content negotiation, and `Problem` answers.
//!
//! A handler reads as its business logic: it takes extractors and returns
//! `Result<Response, Problem>`; `problems` gives each problem its request id
//! and format.

pub mod auth;
pub mod extract;
pub mod negotiate;
pub mod problem;
pub mod xml;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::PropagateRequestIdLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::store::StoreHealth;
use crate::telemetry::Metrics;
pub use extract::{AnswerFormat, BodyLimit, HandoffPath, Params, Payload};
pub use negotiate::Format;
pub use problem::{Problem, ProblemKind};

/// The request id assigned by the gateway (`x-request-id`), used as `instance`.
pub fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
}

/// An answer in the negotiated format; `root` names the XML document.
pub fn answer(status: StatusCode, format: Format, root: &str, doc: &impl Serialize) -> Response {
    let (content_type, body) = match format {
        Format::Json => (
            "application/json",
            serde_json::to_vec(doc).expect("an answer document is plain data"),
        ),
        Format::Xml => {
            let doc = serde_json::to_value(doc).expect("an answer document is plain data");
            (
                "application/xml",
                xml::write_document(root, &doc, xml::item_name).into_bytes(),
            )
        }
    };
    with_content_type(status, body, content_type)
}

/// A JSON answer.
pub fn json(status: StatusCode, doc: &impl Serialize) -> Response {
    answer(status, Format::Json, "", doc)
}

/// A body with its content type.
pub fn with_content_type(
    status: StatusCode,
    body: impl Into<Body>,
    content_type: &'static str,
) -> Response {
    let mut response = (status, body.into()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// How a router's problems are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemFormat {
    /// JSON or XML, as the request negotiated (the intake API).
    Negotiated,
    /// Always JSON (the admin API, the webhook).
    Json,
}

/// What `problems` needs: the format and the store health a store failure
/// takes down.
#[derive(Clone)]
struct ProblemLayer {
    format: ProblemFormat,
    health: Option<StoreHealth>,
}

/// Renders every problem a handler or an extractor answered with: the
/// request's id as `instance`, the negotiated format, and the store taken as
/// down when the problem says it could not be reached. What the rendering
/// needs is kept as header values; nothing is worked out for an answer that
/// is not a problem.
async fn problems(
    axum::extract::State(layer): axum::extract::State<ProblemLayer>,
    request: Request,
    next: Next,
) -> Response {
    let instance = request.headers().get("x-request-id").cloned();
    let negotiation = match layer.format {
        ProblemFormat::Negotiated => Some(negotiate::Negotiation::of(request.headers())),
        ProblemFormat::Json => None,
    };
    let mut response = next.run(request).await;
    let Some(problem) = response.extensions_mut().remove::<Problem>() else {
        return response;
    };
    if problem.store_unreachable
        && let Some(health) = &layer.health
    {
        health.set_down();
    }
    let instance = instance.as_ref().and_then(|v| v.to_str().ok());
    let as_xml = negotiation.is_some_and(|n| n.reply_format() == Format::Xml);
    problem.render(instance.unwrap_or("unknown"), as_xml)
}

/// Adds `problems` to a router's routes.
pub fn with_problems(router: Router, format: ProblemFormat, health: Option<StoreHealth>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        ProblemLayer { format, health },
        problems,
    ))
}

/// Answers unknown paths with a problem document.
pub async fn not_found(headers: HeaderMap) -> Response {
    let as_xml = negotiate::reply_format(&headers) == Format::Xml;
    Problem::new(ProblemKind::NotFound, "no such resource").render(request_id(&headers), as_xml)
}

/// Request ids, one span per request (route template only: paths can carry
/// secrets and personal data), panics answered as 500, and every answer
/// counted in `bcci_http_requests_total` under `listener`.
pub fn with_layers(listener: &'static str, metrics: Arc<Metrics>, router: Router) -> Router {
    router
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let metrics = metrics.clone();
                async move {
                    let route = route_of(&request).to_owned();
                    let started = std::time::Instant::now();
                    let response = next.run(request).await;
                    metrics.http_request(
                        listener,
                        &route,
                        response.status().as_u16(),
                        started.elapsed().as_secs_f64(),
                    );
                    response
                }
            },
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let route = route_of(request);
                    let request_id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        request_id,
                        method = %request.method(),
                        route,
                        client = tracing::field::Empty,
                        handoff_id = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|response: &Response, latency: Duration, _span: &Span| {
                    tracing::info!(
                        status = response.status().as_u16(),
                        latency_ms = latency.as_secs_f64() * 1000.0,
                        "request finished"
                    );
                })
                .on_failure(()),
        )
        .layer(axum::middleware::map_request(assign_request_id))
}

/// The request's route template, `unmatched` when no route took it: never
/// the raw path, which can carry a webhook key or a dossier's id.
fn route_of(request: &Request) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::telemetry::metrics::UNMATCHED, |p| p.as_str())
}

/// Every request gets a gateway-assigned id, whatever the client sent.
async fn assign_request_id(mut request: Request) -> Request {
    let id = format!("req_{}", ulid::Ulid::new());
    request.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&id).expect("ULIDs are ASCII"),
    );
    request
}
