//! Operators' tools: the admin API on `server.admin_listen` and the
//! `bcci-gateway admin …` actions, both over the store.
//!
//! Every action is recorded on the handoff's timeline with source `operator`
//! and the operator's name.

mod api;
pub mod cli;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};

use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::callback::BodyFormat;
use crate::http::auth::{AdminCaller, OperatorGate, TokenTable};
use crate::http::{self, BodyLimit, ProblemFormat};
use crate::lifecycle::Lifecycle;
use crate::store::SharedStore;

/// Everything the admin handlers need.
#[derive(Clone)]
pub struct AdminState {
    store: SharedStore,
    /// Operators' token hashes (`admin.token_sha256s`), and whether the
    /// gateway takes calls now.
    gate: Arc<OperatorGate>,
    /// Each client's callback format, for the changes operators relay.
    formats: Arc<HashMap<String, BodyFormat>>,
    max_body_bytes: usize,
    clock: Arc<dyn Clock>,
}

impl AsRef<OperatorGate> for AdminState {
    fn as_ref(&self) -> &OperatorGate {
        &self.gate
    }
}

impl FromRef<AdminState> for BodyLimit {
    fn from_ref(state: &AdminState) -> Self {
        BodyLimit(state.max_body_bytes)
    }
}

impl AdminState {
    pub fn new(
        settings: &Settings,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        lifecycle: Lifecycle,
        tokens: Arc<TokenTable<AdminCaller>>,
    ) -> Self {
        Self {
            store,
            gate: Arc::new(OperatorGate { tokens, lifecycle }),
            formats: Arc::new(crate::events::callback_formats(settings)),
            max_body_bytes: settings.server.max_body_bytes,
            clock,
        }
    }
}

/// The admin routes (`/v1/admin/...`).
pub fn router(state: AdminState) -> Router {
    let routes = Router::new()
        .route("/v1/admin/handoffs", get(api::search_handoffs))
        .route("/v1/admin/handoffs/{id}", get(api::show_handoff))
        .route("/v1/admin/handoffs/{id}/replay", post(api::replay_handoff))
        .route(
            "/v1/admin/handoffs/{id}/resolve",
            post(api::resolve_handoff),
        )
        .route("/v1/admin/handoffs/{id}/erase", post(api::erase_handoff))
        .route("/v1/admin/callbacks", get(api::list_callbacks))
        .route(
            "/v1/admin/callbacks/replay",
            post(api::replay_dead_callbacks),
        )
        .route(
            "/v1/admin/callbacks/{id}/replay",
            post(api::replay_callback),
        )
        .route("/v1/admin/stats", get(api::stats))
        // Bodies are read by `Payload`, answering the limit in the
        // contract's words.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    http::with_problems(routes, ProblemFormat::Json, None)
}
