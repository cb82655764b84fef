//! Process metrics in the names Prometheus client libraries share (`process_*`), read from
//! `/proc/self` at scrape time.
//!
//! The `procfs` crate does the reading: it parses `stat` and `limits` and asks the kernel for
//! the clock tick rate and page size, which `/proc` text alone does not give and which would
//! otherwise need `unsafe` libc calls (forbidden in this workspace). On other systems the
//! collector encodes nothing.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric as _,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// One reading of the process's resource use; a field is `None` when it could not be read.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ProcessSample {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) resident_memory_bytes: Option<u64>,
    pub(crate) virtual_memory_bytes: Option<u64>,
    pub(crate) open_fds: Option<u64>,
    pub(crate) max_fds: Option<u64>,
}

#[cfg(target_os = "linux")]
impl ProcessSample {
    pub(crate) fn read() -> Self {
        use procfs::process::{LimitValue, Process};

        let Ok(process) = Process::myself() else {
            return Self::default();
        };
        let mut sample = Self::default();
        if let Ok(stat) = process.stat() {
            let ticks = procfs::ticks_per_second();
            if ticks > 0 {
                sample.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks as f64);
            }
            sample.resident_memory_bytes = Some(stat.rss.saturating_mul(procfs::page_size()));
            sample.virtual_memory_bytes = Some(stat.vsize);
        }
        sample.open_fds = process.fd_count().ok().and_then(|n| u64::try_from(n).ok());
        sample.max_fds =
            process
                .limits()
                .ok()
                .and_then(|limits| match limits.max_open_files.soft_limit {
                    LimitValue::Value(n) => Some(n),
                    LimitValue::Unlimited => None,
                });
        sample
    }

    /// Seconds since the Unix epoch at which the process started.
    fn start_time_seconds() -> Option<f64> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        let ticks = procfs::ticks_per_second();
        let boot = procfs::boot_time_secs().ok()?;
        (ticks > 0).then(|| boot as f64 + stat.starttime as f64 / ticks as f64)
    }
}

#[cfg(not(target_os = "linux"))]
impl ProcessSample {
    pub(crate) fn read() -> Self {
        Self::default()
    }

    fn start_time_seconds() -> Option<f64> {
        None
    }
}

/// Encodes a fresh [`ProcessSample`] at each scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    /// Constant for the life of the process, so read once.
    start_time_seconds: Option<f64>,
}

impl ProcessCollector {
    pub(crate) fn new() -> Self {
        Self {
            start_time_seconds: ProcessSample::start_time_seconds(),
        }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sample = ProcessSample::read();
        if let Some(seconds) = sample.cpu_seconds {
            let help = "Total user and system CPU time spent, in seconds.";
            counter(
                &mut encoder,
                "process_cpu",
                help,
                Some(&Unit::Seconds),
                seconds,
            )?;
        }
        let bytes = Some(&Unit::Bytes);
        if let Some(value) = sample.resident_memory_bytes {
            let help = "Resident memory size, in bytes.";
            gauge(&mut encoder, "process_resident_memory", help, bytes, value)?;
        }
        if let Some(value) = sample.virtual_memory_bytes {
            let help = "Virtual memory size, in bytes.";
            gauge(&mut encoder, "process_virtual_memory", help, bytes, value)?;
        }
        if let Some(value) = sample.open_fds {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Open file descriptors.",
                None,
                value,
            )?;
        }
        if let Some(value) = sample.max_fds {
            let help = "Maximum number of open file descriptors (soft limit).";
            gauge(&mut encoder, "process_max_fds", help, None, value)?;
        }
        if let Some(value) = self.start_time_seconds {
            let help = "Start time of the process since the Unix epoch, in seconds.";
            gauge(
                &mut encoder,
                "process_start_time",
                help,
                Some(&Unit::Seconds),
                value,
            )?;
        }
        Ok(())
    }
}

fn gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: V,
) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)
}

fn counter<V: EncodeCounterValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: V,
) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, unit, counter.metric_type())?)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::ProcessSample;
    use crate::observability::Metrics;
    use crate::observability::test_support::sample;

    #[test]
    fn readings_are_plausible() {
        let reading = ProcessSample::read();
        let resident = reading.resident_memory_bytes.unwrap();
        let virtual_size = reading.virtual_memory_bytes.unwrap();
        assert!(resident > 0);
        assert!(virtual_size >= resident, "{virtual_size} < {resident}");
        // stdin, stdout and stderr at least, and fewer than the limit.
        let open = reading.open_fds.unwrap();
        assert!(open >= 3);
        if let Some(max) = reading.max_fds {
            assert!(open <= max);
        }
        assert!(reading.cpu_seconds.unwrap() >= 0.0);
    }

    #[test]
    fn opening_a_file_raises_open_fds() {
        let before = ProcessSample::read().open_fds.unwrap();
        let files: Vec<_> = (0..64).map(|_| tempfile::tempfile().unwrap()).collect();
        let after = ProcessSample::read().open_fds.unwrap();
        // Other tests open and close descriptors concurrently; 64 of ours dominate that noise.
        assert!(after >= before + 48, "{before} -> {after}");
        drop(files);
    }

    #[test]
    fn scrape_contains_every_process_family() {
        let text = Metrics::new().encode().unwrap();
        for family in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                sample(&text, family).is_some(),
                "{family} missing from:\n{text}"
            );
        }
        assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = sample(&text, "process_start_time_seconds").unwrap();
        // Started before now, and not before this test binary could have been built.
        assert!(started <= now + 1.0, "{started} > {now}");
        assert!(started > now - 24.0 * 3600.0, "{started} is over a day ago");
    }
}
