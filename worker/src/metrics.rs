//! The worker's metrics: those of `common::metrics` it counts (tasks created by retries,
//! dead letters, reconnections, the database pool) and the attempts it runs, in one registry
//! with the runtime's own ([`crate::runtime::RuntimeMetrics`]).

use common::metrics::{counter, counter_vec, gauge, histogram_vec};
use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGauge};

/// Latency buckets in seconds, from a millisecond to five minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub struct Metrics {
    /// The registry's metrics both binaries know; [`common::metrics::Metrics::render`]
    /// exposes everything registered, the worker's own included.
    pub shared: common::metrics::Metrics,
    /// Attempts claimed, by `function`.
    pub tasks_started: IntCounterVec,
    /// Attempts ended, by `function` and `status` (complete, failed, retried).
    pub tasks_finished: IntCounterVec,
    /// Claim time − startTimestamp, by `function`.
    pub queue_lag: HistogramVec,
    /// Time from claim to stored outcome, by `function`.
    pub execution_duration: HistogramVec,
    /// Attempts running in this worker.
    pub tasks_running: IntGauge,
    /// Tasks this worker took from the broker but had no slot for in time, given back to the
    /// queue for another worker.
    pub tasks_handed_back: IntCounter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let shared = common::metrics::Metrics::new();
        let registry = shared.registry();
        let histogram =
            |name: &str, help: &str| histogram_vec(registry, name, help, BUCKETS, &["function"]);
        Metrics {
            tasks_started: counter_vec(
                registry,
                "tasks_started_total",
                "Attempts claimed by a worker",
                &["function"],
            ),
            tasks_finished: counter_vec(
                registry,
                "tasks_finished_total",
                "Attempts ended, by status",
                &["function", "status"],
            ),
            queue_lag: histogram("tasks_queue_lag_seconds", "Claim time minus startTimestamp"),
            execution_duration: histogram(
                "tasks_execution_duration_seconds",
                "Claim to stored outcome",
            ),
            tasks_running: gauge(registry, "tasks_running", "Attempts running in this worker"),
            tasks_handed_back: counter(
                registry,
                "tasks_handed_back_total",
                "Tasks a busy worker gave back to the queue for another worker",
            ),
            shared,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use crate::runtime::RuntimeMetrics;

    #[test]
    fn the_workers_metrics_are_exposed_with_the_shared_ones() {
        let metrics = Metrics::new();
        let runtime = RuntimeMetrics::new(metrics.shared.registry());
        metrics.queue_lag.with_label_values(&["f"]).observe(0.002);
        metrics.tasks_running.inc();
        runtime.cold_starts.with_label_values(&["python"]).inc();
        metrics
            .shared
            .tasks_created
            .with_label_values(&["retry"])
            .inc();
        let text = metrics.shared.render();
        for sample in [
            "tasks_queue_lag_seconds_bucket",
            "tasks_running 1",
            "tasks_runtime_cold_starts_total{runtime=\"python\"} 1",
            "tasks_runtime_processes_warm 0",
            "tasks_created_total{source=\"retry\"} 1",
        ] {
            assert!(text.contains(sample), "{sample} in {text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("tasks_"), "{line}");
        }
    }
}
