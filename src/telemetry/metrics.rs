//! The Prometheus metrics of operations.md, and their exposition.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of `bcci_handoffs_received_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceivedLabels {
    pub kind: &'static str,
    pub format: &'static str,
    pub outcome: &'static str,
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
        Self {
            registry,
            handoffs_received,
        }
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
