//! The Prometheus metrics of operations.md, and their exposition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

use crate::domain::{Kind, Status};

/// Labels of `bcci_handoffs_received_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceivedLabels {
    pub kind: &'static str,
    pub format: &'static str,
    pub outcome: &'static str,
}

/// Labels of `bcci_postal_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PostalLabels {
    /// token, create, lookup, track, cancel
    pub operation: &'static str,
    /// ok, rejected, transient, ambiguous, timeout
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// postal, callback
    pub queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: &'static str,
}

/// Labels of `bcci_postal_events_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// webhook, poll
    pub source: &'static str,
    pub outcome: &'static str,
}

/// Labels of `bcci_callbacks_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallbackLabels {
    /// The intake client's configured name.
    pub client: String,
    /// delivered, retry, rejected_4xx, dead
    pub outcome: &'static str,
}

/// Labels of `bcci_callback_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientLabels {
    pub client: String,
}

/// Labels of `bcci_http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// main, admin
    pub listener: &'static str,
    /// The route template (`/v1/handoffs/{id}`), never the raw path; `unmatched`.
    pub route: String,
    pub status: u16,
}

/// Labels of `bcci_http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: &'static str,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoffLabels {
    pub kind: &'static str,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Labels of `bcci_leg_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LegLabels {
    pub kind: &'static str,
    /// order, pickup, delivery
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every metric family of the process, in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub handoffs_received: Family<ReceivedLabels, Counter>,
    pub postal_requests: Family<PostalLabels, Counter>,
    pub postal_request_duration: Family<OperationLabels, Histogram>,
    pub duplicate_orders: Counter,
    pub circuit_open: Family<UpstreamLabels, Gauge>,
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub queue_oldest_age: Family<QueueLabels, Gauge<f64, AtomicU64>>,
    pub dead_letters: Family<QueueLabels, Gauge>,
    pub postal_events: Family<EventLabels, Counter>,
    pub last_carrier_event: Gauge<f64, AtomicU64>,
    pub callbacks: Family<CallbackLabels, Counter>,
    pub callback_duration: Family<ClientLabels, Histogram>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_request_duration: Family<RouteLabels, Histogram>,
    pub handoffs: Family<HandoffLabels, Gauge>,
    pub sla_breaches: Family<KindLabels, Counter>,
    pub leg_duration: Family<LegLabels, Histogram>,
    pub office_open: Gauge,
    pub calendar_last_day: Gauge<f64, AtomicU64>,
    pub cod_unsettled: Gauge,
    pub store_commits: Counter,
    pub store_statements: Counter,
    pub store_wal_bytes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every outcome of `bcci_handoffs_received_total` (operations.md).
pub const RECEIVED_OUTCOMES: &[&str] = &[
    "accepted",
    "duplicate",
    "invalid",
    "conflict",
    "unauthorized",
    "malformed",
    "too_large",
    "unsupported_media_type",
    "rate_limited",
    "draining",
];
/// Every operation of `bcci_postal_requests_total`.
pub const POSTAL_OPERATIONS: &[&str] = &["token", "create", "lookup", "track", "cancel"];
/// Every outcome of `bcci_postal_requests_total`.
pub const POSTAL_OUTCOMES: &[&str] = &["ok", "rejected", "transient", "ambiguous", "timeout"];
/// Every source of `bcci_postal_events_total`.
pub const EVENT_SOURCES: &[&str] = &["webhook", "poll"];
/// Every outcome of `bcci_postal_events_total`.
pub const EVENT_OUTCOMES: &[&str] = &[
    "applied",
    "stale",
    "duplicate",
    "absorbed",
    "annotation",
    "unknown_order",
    "unknown_code",
    "malformed",
    "unauthorized",
    "forbidden",
];
/// Every outcome of `bcci_callbacks_total`.
pub const CALLBACK_OUTCOMES: &[&str] = &["delivered", "retry", "rejected_4xx", "dead"];
/// Every stage of `bcci_leg_duration_seconds`.
pub const LEG_STAGES: &[&str] = &["order", "pickup", "delivery"];
/// The `route` of a request no route template matched.
pub const UNMATCHED: &str = "unmatched";
/// Every queue of the `bcci_queue_*` and `bcci_dead_letters` gauges.
pub const QUEUES: &[&str] = &["postal", "callback"];

fn leg_histogram() -> Histogram {
    // One minute to three weeks: postal legs take hours to days.
    Histogram::new([
        60.0,
        300.0,
        900.0,
        3600.0,
        4.0 * 3600.0,
        12.0 * 3600.0,
        86_400.0,
        2.0 * 86_400.0,
        3.0 * 86_400.0,
        5.0 * 86_400.0,
        8.0 * 86_400.0,
        14.0 * 86_400.0,
        21.0 * 86_400.0,
    ])
}

fn callback_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

fn http_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Metrics {
    /// The registry with no intake client known (tests of one component).
    pub fn new() -> Self {
        Self::for_clients(std::iter::empty::<&str>())
    }

    /// The registry of a gateway serving these intake clients: every family
    /// is exported from the first scrape with its known label sets at 0.
    pub fn for_clients<'a>(clients: impl IntoIterator<Item = &'a str>) -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(super::process::ProcessCollector::new()));
        let registry = root.sub_registry_with_prefix("bcci");
        let handoffs_received = Family::<ReceivedLabels, Counter>::default();
        registry.register(
            "handoffs_received",
            "Handoff requests received on the intake API, by kind, body format and outcome",
            handoffs_received.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "build_info",
            "Always 1; the version label tells which build runs",
            build_info.clone(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let postal_requests = Family::<PostalLabels, Counter>::default();
        registry.register(
            "postal_requests",
            "Calls to Vietnam Post, by operation and outcome",
            postal_requests.clone(),
        );
        let postal_request_duration =
            Family::<OperationLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
            });
        registry.register_with_unit(
            "postal_request_duration",
            "Duration of calls to Vietnam Post",
            Unit::Seconds,
            postal_request_duration.clone(),
        );
        let duplicate_orders = Counter::default();
        registry.register(
            "duplicate_orders",
            "Extra Vietnam Post orders found for one handoff and cancelled",
            duplicate_orders.clone(),
        );
        let circuit_open = Family::<UpstreamLabels, Gauge>::default();
        registry.register(
            "circuit_open",
            "1 while the circuit breaker in front of the upstream is open",
            circuit_open.clone(),
        );
        circuit_open
            .get_or_create(&UpstreamLabels { upstream: "postal" })
            .set(0);
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Jobs waiting in the durable queue (whole store)",
            queue_depth.clone(),
        );
        let queue_oldest_age = Family::<QueueLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest waiting job (whole store)",
            Unit::Seconds,
            queue_oldest_age.clone(),
        );
        let dead_letters = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "dead_letters",
            "Jobs that ran out of retries and wait for an operator (whole store)",
            dead_letters.clone(),
        );
        let postal_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "postal_events",
            "Status reports from Vietnam Post, by source and what they did",
            postal_events.clone(),
        );
        let last_carrier_event = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "last_carrier_event_timestamp_seconds",
            "Unix time at which the last status report from Vietnam Post was stored",
            last_carrier_event.clone(),
        );
        let callbacks = Family::<CallbackLabels, Counter>::default();
        registry.register(
            "callbacks",
            "Callback delivery attempts to intake systems, by client and outcome (one count per attempt)",
            callbacks.clone(),
        );
        let callback_duration =
            Family::<ClientLabels, Histogram>::new_with_constructor(callback_histogram);
        registry.register_with_unit(
            "callback_duration",
            "Duration of callback deliveries, by client",
            Unit::Seconds,
            callback_duration.clone(),
        );
        let handoffs = Family::<HandoffLabels, Gauge>::default();
        registry.register(
            "handoffs",
            "Handoffs in the store by kind and status (whole store)",
            handoffs.clone(),
        );
        let sla_breaches = Family::<KindLabels, Counter>::default();
        registry.register(
            "sla_breaches",
            "Handoffs that missed their legal delivery time (sla_due_at), counted once",
            sla_breaches.clone(),
        );
        let leg_duration = Family::<LegLabels, Histogram>::new_with_constructor(leg_histogram);
        registry.register_with_unit(
            "leg_duration",
            "Duration of a handoff's stages: order (received to order_created), pickup (to picked_up), delivery (to delivered, or a return's first delivery attempt)",
            Unit::Seconds,
            leg_duration.clone(),
        );
        let office_open = Gauge::default();
        registry.register(
            "office_open",
            "1 during working hours (07:30-17:00 Vietnam time) of a working day, 0 otherwise",
            office_open.clone(),
        );
        let calendar_last_day = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "calendar_last_day_timestamp_seconds",
            "Unix time of the last day the configured extra holidays and working days reach",
            calendar_last_day.clone(),
        );
        let cod_unsettled = Gauge::default();
        registry.register(
            "cod_unsettled",
            "Delivered COD returns still waiting for Vietnam Post's code 21 past postal.cod_settle_days",
            cod_unsettled.clone(),
        );
        let store_commits = Counter::default();
        registry.register(
            "store_commits",
            "Transactions the store's writer committed (SQLite)",
            store_commits.clone(),
        );
        let store_statements = Counter::default();
        registry.register(
            "store_statements",
            "Statements the store's writer ran, those of triggers included (SQLite)",
            store_statements.clone(),
        );
        let store_wal_bytes = Counter::default();
        registry.register(
            "store_wal_bytes",
            "Bytes appended to the write-ahead log, as the checkpointer saw it grow (SQLite; a lower bound)",
            store_wal_bytes.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by listener, route template and status",
            http_requests.clone(),
        );
        let http_request_duration =
            Family::<RouteLabels, Histogram>::new_with_constructor(http_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time to answer an HTTP request, by listener and route template",
            Unit::Seconds,
            http_request_duration.clone(),
        );
        let metrics = Self {
            registry: root,
            cod_unsettled,
            store_commits,
            store_statements,
            store_wal_bytes,
            sla_breaches,
            leg_duration,
            office_open,
            calendar_last_day,
            handoffs_received,
            postal_events,
            last_carrier_event,
            callbacks,
            callback_duration,
            http_requests,
            http_request_duration,
            handoffs,
            postal_requests,
            postal_request_duration,
            duplicate_orders,
            circuit_open,
            queue_depth,
            queue_oldest_age,
            dead_letters,
        };
        metrics.initialise_known_label_sets(clients);
        metrics
    }

    /// Creates every label set known in advance at 0, so that rates and
    /// alerts see a series before its first event.
    fn initialise_known_label_sets<'a>(&self, clients: impl IntoIterator<Item = &'a str>) {
        let kinds = Kind::ALL.iter().map(|k| k.as_str());
        for kind in kinds.clone().chain(["unknown"]) {
            for format in ["json", "xml"] {
                for &outcome in RECEIVED_OUTCOMES {
                    drop(self.handoffs_received.get_or_create(&ReceivedLabels {
                        kind,
                        format,
                        outcome,
                    }));
                }
            }
        }
        for &operation in POSTAL_OPERATIONS {
            drop(
                self.postal_request_duration
                    .get_or_create(&OperationLabels { operation }),
            );
            for &outcome in POSTAL_OUTCOMES {
                drop(
                    self.postal_requests
                        .get_or_create(&PostalLabels { operation, outcome }),
                );
            }
        }
        for &source in EVENT_SOURCES {
            for &outcome in EVENT_OUTCOMES {
                drop(
                    self.postal_events
                        .get_or_create(&EventLabels { source, outcome }),
                );
            }
        }
        for client in clients {
            drop(self.callback_duration.get_or_create(&ClientLabels {
                client: client.to_owned(),
            }));
            for &outcome in CALLBACK_OUTCOMES {
                drop(self.callbacks.get_or_create(&CallbackLabels {
                    client: client.to_owned(),
                    outcome,
                }));
            }
        }
        for kind in kinds {
            drop(self.sla_breaches.get_or_create(&KindLabels { kind }));
            for &stage in LEG_STAGES {
                drop(self.leg_duration.get_or_create(&LegLabels { kind, stage }));
            }
            for status in Status::ALL {
                drop(self.handoffs.get_or_create(&HandoffLabels {
                    kind,
                    status: status.as_str(),
                }));
            }
        }
        // Every listener answers a path no route takes with 404: the one
        // label set of the HTTP families known before any request.
        for listener in ["main", "admin"] {
            drop(self.http_requests.get_or_create(&HttpLabels {
                listener,
                route: UNMATCHED.to_owned(),
                status: 404,
            }));
            drop(self.http_request_duration.get_or_create(&RouteLabels {
                listener,
                route: UNMATCHED.to_owned(),
            }));
        }
        for &queue in QUEUES {
            let labels = QueueLabels { queue };
            drop(self.queue_depth.get_or_create(&labels));
            drop(self.queue_oldest_age.get_or_create(&labels));
            drop(self.dead_letters.get_or_create(&labels));
        }
    }

    /// Counts one callback delivery attempt (one outcome per attempt).
    pub fn callback(&self, client: &str, outcome: &'static str) {
        self.callbacks
            .get_or_create(&CallbackLabels {
                client: client.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Observes the duration of one callback delivery.
    pub fn callback_took(&self, client: &str, seconds: f64) {
        self.callback_duration
            .get_or_create(&ClientLabels {
                client: client.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts one answered HTTP request and its duration.
    pub fn http_request(&self, listener: &'static str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .get_or_create(&HttpLabels {
                listener,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_request_duration
            .get_or_create(&RouteLabels {
                listener,
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Observes the duration of a completed stage.
    pub fn leg(&self, kind: &'static str, stage: &'static str, seconds: f64) {
        self.leg_duration
            .get_or_create(&LegLabels { kind, stage })
            .observe(seconds.max(0.0));
    }

    /// Counts one carrier status report.
    pub fn postal_event(&self, source: &'static str, outcome: &'static str) {
        self.postal_events
            .get_or_create(&EventLabels { source, outcome })
            .inc();
    }

    /// Counts one call to Vietnam Post and its duration.
    pub fn postal_request(&self, operation: &'static str, outcome: &'static str, seconds: f64) {
        self.postal_requests
            .get_or_create(&PostalLabels { operation, outcome })
            .inc();
        self.postal_request_duration
            .get_or_create(&OperationLabels { operation })
            .observe(seconds);
    }

    /// Counts one intake request.
    pub fn received(&self, kind: &'static str, format: &'static str, outcome: &'static str) {
        self.handoffs_received
            .get_or_create(&ReceivedLabels {
                kind,
                format,
                outcome,
            })
            .inc();
    }

    /// OpenMetrics text (what the registry encodes natively).
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// The Prometheus text format, version 0.0.4.
    pub fn prometheus_text(&self) -> String {
        openmetrics_to_prometheus(&self.openmetrics())
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counters are named
/// with their `_total` suffix in HELP and TYPE, and OpenMetrics-only lines
/// (`# UNIT`, `# EOF`) are dropped.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_with_total_in_prometheus_text() {
        let m = Metrics::new();
        m.received("pickup", "json", "accepted");
        let text = m.prometheus_text();
        assert!(
            text.contains("# TYPE bcci_handoffs_received_total counter"),
            "{text}"
        );
        assert!(text.contains(
            "bcci_handoffs_received_total{kind=\"pickup\",format=\"json\",outcome=\"accepted\"} 1"
        ));
        assert!(text.contains("bcci_build_info{version="));
        assert!(!text.contains("# EOF"));
        assert!(m.openmetrics().ends_with("# EOF\n"));
    }
}
