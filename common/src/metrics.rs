//! Metrics every prapi process exports besides its own: `prapi_build_info` (which version of which
//! binary runs) and the `process_*` family that Prometheus client libraries export (CPU, memory,
//! file descriptors, threads, start time), under the names dashboards and alerts written for any
//! process already use. They live in a registry without prefix ([`registry`]), which [`encode`]
//! writes next to the component's own prefixed registry in one exposition.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::{Registry, Unit};
use std::fmt;

/// Labels of `prapi_build_info`: both bounded (one binary, one version per process).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// `prapi` (the data plane) or `prapi-operator`.
    binary: &'static str,
    /// The workspace version the binary was built from.
    version: &'static str,
}

/// The registry of the metrics every process exports: `prapi_build_info{binary, version} 1` and
/// the process collector. `binary` names the executable (`prapi`, `prapi-operator`).
pub fn registry(binary: &'static str) -> Registry {
    let mut registry = Registry::default();
    let build = Family::<BuildLabels, Gauge>::default();
    build
        .get_or_create(&BuildLabels {
            binary,
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
    registry.register(
        "prapi_build_info",
        "Always 1; the labels say which binary and version this process runs",
        build,
    );
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// Encodes `registries` in order as one OpenMetrics exposition (one `# EOF`).
pub fn encode(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for registry in registries {
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, registry);
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

/// Reads the process's figures from `/proc/self` at scrape time.
#[derive(Debug)]
struct ProcessCollector;

/// One reading of the process: what the `process_*` metrics report.
#[derive(Debug, Clone, PartialEq)]
struct ProcessReading {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    open_fds: u64,
    max_fds: Option<u64>,
    threads: u64,
    start_time_seconds: f64,
}

#[cfg(target_os = "linux")]
fn read_process() -> Option<ProcessReading> {
    use procfs::process::{LimitValue, Process};
    let me = Process::myself().ok()?;
    let stat = me.stat().ok()?;
    let ticks = procfs::ticks_per_second() as f64;
    let max_fds = me
        .limits()
        .ok()
        .and_then(|l| match l.max_open_files.soft_limit {
            LimitValue::Value(v) => Some(v),
            LimitValue::Unlimited => None,
        });
    let boot = procfs::boot_time_secs().ok()? as f64;
    Some(ProcessReading {
        cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
        resident_bytes: stat.rss.saturating_mul(procfs::page_size()),
        virtual_bytes: stat.vsize,
        open_fds: me.fd_count().ok()? as u64,
        max_fds,
        threads: u64::try_from(stat.num_threads).unwrap_or(0),
        start_time_seconds: boot + stat.starttime as f64 / ticks,
    })
}

/// Elsewhere (a developer's macOS) the process metrics are left out rather than made up.
#[cfg(not(target_os = "linux"))]
fn read_process() -> Option<ProcessReading> {
    None
}

fn gauge(n: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let Some(p) = read_process() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size in bytes",
                Some(Unit::Bytes),
                Some(p.resident_bytes),
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes",
                Some(Unit::Bytes),
                Some(p.virtual_bytes),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                None,
                Some(p.open_fds),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (soft limit)",
                None,
                p.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                None,
                Some(p.threads),
            ),
        ];
        for (name, help, unit, value) in gauges {
            let Some(value) = value else { continue };
            let g = gauge(value);
            g.encode(encoder.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?)?;
        }
        let start = ConstGauge::new(p.start_time_seconds);
        start.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch in seconds",
            Some(&Unit::Seconds),
            start.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn build_info_and_process_metrics_are_in_one_exposition() {
        let mut own = Registry::with_prefix("prapi_test");
        own.register("things", "Things", Gauge::<i64>::default());
        let text = encode(&[&registry("prapi"), &own]);
        assert!(
            text.contains(&format!(
                "prapi_build_info{{binary=\"prapi\",version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("prapi_test_things 0\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        if cfg!(target_os = "linux") {
            // This test process has a resident set, open fds (stdio at least), a thread, and
            // started after the epoch and before now.
            for name in [
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_open_fds",
                "process_threads",
            ] {
                let v = sample(&text, name).unwrap_or_else(|| panic!("{name} in {text}"));
                assert!(v >= 1.0, "{name} = {v}");
            }
            assert!(
                sample(&text, "process_cpu_seconds_total").is_some(),
                "{text}"
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after the epoch")
                .as_secs_f64();
            let start = sample(&text, "process_start_time_seconds").expect("start time");
            assert!(
                start > 1.0e9 && start <= now + 1.0,
                "start {start}, now {now}"
            );
        }
    }
}
