//! The standard `process_*` metrics every Prometheus client exports, read
//! from `/proc` at each scrape (Linux; elsewhere only the start time).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Linux's fixed unit of `/proc/*/stat` times (`USER_HZ`, 100 on every
/// architecture Linux exposes to user space).
const USER_HZ: f64 = 100.0;

/// What `/proc` tells of this process at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessSample {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<f64>,
    pub virtual_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
}

/// The process collector; the start time is fixed when it is made.
#[derive(Debug)]
pub struct ProcessCollector {
    start_time_seconds: f64,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    pub fn new() -> Self {
        let fallback = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            start_time_seconds: start_time_from_proc().unwrap_or(fallback),
        }
    }
}

/// The process's start, from its start tick in `/proc/self/stat` and the
/// boot time in `/proc/stat`.
fn start_time_from_proc() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let ticks: f64 = stat_fields(&stat)?.get(19)?.parse().ok()?;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(boot + ticks / USER_HZ)
}

/// The fields of a `/proc/*/stat` line after the command name (which may
/// hold spaces and parentheses): index 0 is the state (field 3 of proc(5)).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// Reads a sample from `/proc/self` texts (split out so tests can feed them).
pub fn parse_sample(
    stat: &str,
    status: &str,
    limits: &str,
    open_fds: Option<usize>,
) -> ProcessSample {
    let fields = stat_fields(stat).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let cpu_seconds = match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => Some((user + system) / USER_HZ),
        _ => None,
    };
    let kib = |key: &str| {
        status.lines().find_map(|l| {
            let value = l.strip_prefix(key)?.trim().strip_suffix("kB")?;
            value.trim().parse::<f64>().ok().map(|v| v * 1024.0)
        })
    };
    let max_fds = limits.lines().find_map(|l| {
        let rest = l.strip_prefix("Max open files")?;
        rest.split_whitespace().next()?.parse::<f64>().ok()
    });
    ProcessSample {
        cpu_seconds,
        resident_bytes: kib("VmRSS:"),
        virtual_bytes: kib("VmSize:"),
        open_fds: open_fds.map(|n| n as f64),
        max_fds,
    }
}

fn sample() -> ProcessSample {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count());
    parse_sample(
        &read("/proc/self/stat"),
        &read("/proc/self/status"),
        &read("/proc/self/limits"),
        fds,
    )
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: Option<f64>,
) -> Result<(), std::fmt::Error> {
    let Some(value) = value else { return Ok(()) };
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = sample();
        if let Some(cpu) = now.cpu_seconds {
            let counter = ConstCounter::new(cpu);
            counter.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?)?;
        }
        gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size",
            Some(&Unit::Bytes),
            now.resident_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_virtual_memory",
            "Virtual memory size",
            Some(&Unit::Bytes),
            now.virtual_bytes,
        )?;
        gauge(
            &mut encoder,
            "process_open_fds",
            "Open file descriptors",
            None,
            now.open_fds,
        )?;
        gauge(
            &mut encoder,
            "process_max_fds",
            "Maximum number of open file descriptors",
            None,
            now.max_fds,
        )?;
        gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(&Unit::Seconds),
            Some(self.start_time_seconds),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_read_from_proc_texts() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat =
            "4242 (bcci gw) x) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 9 0 1234 0 0";
        let status = "Name:\tbcci\nVmSize:\t  20480 kB\nVmRSS:\t   14336 kB\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let s = parse_sample(stat, status, limits, Some(12));
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.resident_bytes, Some(14336.0 * 1024.0));
        assert_eq!(s.virtual_bytes, Some(20480.0 * 1024.0));
        assert_eq!(s.open_fds, Some(12.0));
        assert_eq!(s.max_fds, Some(1024.0));
        assert_eq!(stat_fields(stat).unwrap()[19], "1234");
    }

    #[test]
    fn unreadable_texts_give_no_values() {
        assert_eq!(parse_sample("", "", "", None), ProcessSample::default());
    }
}
