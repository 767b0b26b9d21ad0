//! Vietnam Post's status reports: the webhook receiver (and, later, the
//! reconciliation poller), both feeding the same state machine.

pub mod poller;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use ipnet::IpNet;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::carrier::vnpost::webhook::{StatusRecord, parse_record, read_batch};
use crate::clock::Clock;
use crate::config::Settings;
use crate::domain::callback::BodyFormat;
use crate::domain::sla::{Calendar, SlaRules};
use crate::domain::state_machine::CarrierEvent;
use crate::domain::{CarrierInfo, PostalOrder, Source};
use crate::http::{self, Problem, ProblemFormat, ProblemKind};
use crate::store::{EventContext, EventOutcome, IncomingCarrierEvent, SharedStore};
use crate::telemetry::Metrics;

/// What the webhook receiver needs.
#[derive(Clone)]
pub struct EventsState {
    pub store: SharedStore,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// SHA-256 of each accepted webhook key (compared in constant time).
    key_hashes: Arc<Vec<[u8; 32]>>,
    allow: Arc<Vec<IpNet>>,
    trusted_proxies: Arc<Vec<IpNet>>,
    max_body_bytes: usize,
    pub context: Arc<EventContext>,
}

impl EventsState {
    pub fn new(
        settings: &Settings,
        store: SharedStore,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            clock,
            metrics,
            key_hashes: Arc::new(
                settings
                    .postal
                    .webhook_keys
                    .iter()
                    .map(|k| Sha256::digest(k.expose_secret().as_bytes()).into())
                    .collect(),
            ),
            allow: Arc::new(settings.postal.webhook_allow_ips.clone()),
            trusted_proxies: Arc::new(settings.server.trusted_proxies.clone()),
            max_body_bytes: settings.postal.webhook_max_body_bytes,
            context: Arc::new(EventContext {
                formats: callback_formats(settings),
                sla: sla_rules(settings),
            }),
        }
    }

    fn key_ok(&self, key: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Every key is compared, so timing says nothing about which matched.
        self.key_hashes
            .iter()
            .fold(0u8, |acc, k| acc | k.ct_eq(&given).unwrap_u8())
            == 1
    }

    fn address_allowed(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        if self.allow.is_empty() {
            return true;
        }
        let client = crate::http::auth::client_address(peer, headers, &self.trusted_proxies);
        self.allow.iter().any(|net| net.contains(&client))
    }
}

/// The legal delivery time rules of `[sla]` and `[calendar]`.
pub fn sla_rules(settings: &Settings) -> SlaRules {
    SlaRules {
        class_one_provinces: settings.sla.class_one_provinces.iter().cloned().collect(),
        remote_wards: settings.sla.remote_wards.clone(),
        calendar: Calendar::new(
            &settings.calendar.days_off(),
            &settings.calendar.extra_working_days,
        ),
    }
}

/// Each client's callback format.
pub fn callback_formats(settings: &Settings) -> HashMap<String, BodyFormat> {
    settings
        .intake
        .clients
        .iter()
        .map(|c| {
            let f = match c.callback_format {
                crate::config::CallbackFormat::Json => BodyFormat::Json,
                crate::config::CallbackFormat::Xml => BodyFormat::Xml,
            };
            (c.name.clone(), f)
        })
        .collect()
}

/// The webhook route, served on the main listener.
pub fn router(state: EventsState) -> Router {
    let routes = Router::new()
        .route("/v1/postal/vnpost/events/{webhook_key}", post(receive))
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    http::with_problems(routes, ProblemFormat::Json, None)
}

#[tracing::instrument(skip_all)]
async fn receive(
    State(state): State<EventsState>,
    Path(key): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Problem> {
    let m = &state.metrics;
    if !state.key_ok(&key) {
        m.postal_event("webhook", "unauthorized");
        return Err(Problem::new(
            ProblemKind::Unauthorized,
            "unknown webhook key",
        ));
    }
    if !state.address_allowed(peer.ip(), &headers) {
        m.postal_event("webhook", "forbidden");
        return Err(Problem::new(ProblemKind::Forbidden, "address not allowed"));
    }
    let bytes = axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|_| {
            Problem::new(
                ProblemKind::TooLarge,
                "the body exceeds postal.webhook_max_body_bytes",
            )
        })?;
    let batch =
        read_batch(&bytes).map_err(|detail| Problem::new(ProblemKind::Malformed, detail))?;
    record_batch(&state, &batch.records, batch.send_date, Source::Webhook)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "webhook batch not stored");
            Problem::store_unavailable()
        })?;
    Ok(http::json(StatusCode::OK, &json!({"success": true})))
}

/// Stores a batch: understood records through the state machine, the others
/// raw. Returns once everything is durable.
pub async fn record_batch(
    state: &EventsState,
    records: &[Value],
    send_date: Option<jiff::Timestamp>,
    source: Source,
) -> anyhow::Result<()> {
    let now = state.clock.now();
    let label = match source {
        Source::Poll => "poll",
        _ => "webhook",
    };
    let mut events = Vec::with_capacity(records.len());
    for raw in records {
        match parse_record(raw, send_date) {
            Ok(r) => events.push(incoming(r, raw, source)),
            Err(problem) => {
                state
                    .store
                    .store_malformed(source, &raw.to_string(), &problem, now)
                    .await?;
                state.metrics.postal_event(label, "malformed");
                tracing::warn!(problem = %problem, "malformed carrier record stored raw");
            }
        }
    }
    if events.is_empty() {
        return Ok(());
    }
    let outcomes = state
        .store
        .apply_carrier_events(events, &state.context, now)
        .await?;
    for outcome in outcomes {
        count_outcome(state, label, outcome);
    }
    state
        .metrics
        .last_carrier_event
        .set(now.as_millisecond() as f64 / 1000.0);
    Ok(())
}

/// Counts what recording one carrier event did.
pub(crate) fn count_outcome(state: &EventsState, source: &'static str, outcome: EventOutcome) {
    let name = match outcome {
        EventOutcome::UnknownOrder => "unknown_order",
        EventOutcome::DuplicateOrder {
            handoff_id,
            cancel_queued,
        } => {
            if cancel_queued {
                state.metrics.duplicate_orders.inc();
                tracing::error!(
                    handoff_id = %handoff_id,
                    "Vietnam Post reported a second order for a handoff; cancelling it"
                );
            }
            "unknown_order"
        }
        EventOutcome::Recorded { effect, legs, .. } => {
            for (kind, stage, seconds) in legs {
                state.metrics.leg(kind.as_str(), stage, seconds);
            }
            effect.as_str()
        }
    };
    state.metrics.postal_event(source, name);
}

fn incoming(r: StatusRecord, raw: &Value, source: Source) -> IncomingCarrierEvent {
    let order = match (&r.order_id, &r.original_id, &r.tracking_number) {
        (Some(order_id), Some(original_id), Some(_)) => Some(PostalOrder {
            order_id: order_id.clone(),
            original_id: original_id.clone(),
            tracking_number: r.tracking_number.clone(),
            postage_vnd: r.total_fee,
        }),
        _ => None,
    };
    IncomingCarrierEvent {
        sale_order_code: r.sale_order_code,
        tracking_number: r.tracking_number,
        original_id: r.original_id,
        order,
        event: CarrierEvent {
            source,
            code: r.code,
            occurred_at: r.occurred_at,
        },
        carrier: CarrierInfo {
            code: r.code,
            text: r.text,
            location: r.location,
        },
        raw: Some(raw.to_string()),
        cod_amount: r.cod_amount,
    }
}
