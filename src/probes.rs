//! `/healthz`, `/readyz` (both listeners) and `/metrics` (admin listener).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::lifecycle::Lifecycle;
use crate::store::SharedStore;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct ProbeState {
    pub store: SharedStore,
    /// Readiness records what its ping found.
    pub health: crate::store::StoreHealth,
    pub lifecycle: Lifecycle,
    pub metrics: Arc<Metrics>,
}

/// Health and readiness, served on both listeners.
pub fn router(state: ProbeState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Health, readiness and metrics, for the admin listener.
pub fn admin_router(state: ProbeState) -> Router {
    router(state.clone()).merge(
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(state),
    )
}

async fn readyz(State(state): State<ProbeState>) -> Response {
    if state.lifecycle.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let pinged = state.store.ping().await;
    state.health.record(&pinged);
    match pinged {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: store unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n").into_response()
        }
    }
}

async fn metrics(State(state): State<ProbeState>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (content_type, body) = if wants_openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.openmetrics(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.prometheus_text(),
        )
    };
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
