//! The Prometheus metrics of operations.md, and their exposition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
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
    pub callbacks: Family<OutcomeLabels, Counter>,
    pub callback_duration: Histogram,
    pub handoffs: Family<HandoffLabels, Gauge>,
    pub sla_breaches: Family<KindLabels, Counter>,
    pub leg_duration: Family<LegLabels, Histogram>,
    pub working_hours: Gauge,
    pub calendar_last_day: Gauge<f64, AtomicU64>,
    pub cod_unsettled: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("bcci");
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
        let callbacks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "callbacks",
            "Callback delivery attempts to intake systems, by outcome",
            callbacks.clone(),
        );
        let callback_duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register_with_unit(
            "callback_duration",
            "Duration of callback deliveries",
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
        let leg_duration = Family::<LegLabels, Histogram>::new_with_constructor(|| {
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
        });
        registry.register_with_unit(
            "leg_duration",
            "Duration of a handoff's stages: order (received to order_created), pickup (to picked_up), delivery (to delivered, or a return's first delivery attempt)",
            Unit::Seconds,
            leg_duration.clone(),
        );
        let working_hours = Gauge::default();
        registry.register(
            "working_hours",
            "1 during working hours (07:30-17:00 Vietnam time) of a working day, 0 otherwise",
            working_hours.clone(),
        );
        let calendar_last_day = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "calendar_last_day_timestamp_seconds",
            "Unix time of the last day the holiday calendar covers",
            calendar_last_day.clone(),
        );
        let cod_unsettled = Gauge::default();
        registry.register(
            "cod_unsettled",
            "Delivered COD returns still waiting for Vietnam Post's code 21 past postal.cod_settle_days",
            cod_unsettled.clone(),
        );
        Self {
            registry,
            cod_unsettled,
            sla_breaches,
            leg_duration,
            working_hours,
            calendar_last_day,
            handoffs_received,
            postal_events,
            last_carrier_event,
            callbacks,
            callback_duration,
            handoffs,
            postal_requests,
            postal_request_duration,
            duplicate_orders,
            circuit_open,
            queue_depth,
            queue_oldest_age,
            dead_letters,
        }
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
