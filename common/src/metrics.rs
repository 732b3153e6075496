//! Prometheus metrics of both binaries, prefixed `tasks_`. Each process owns one [`Metrics`]
//! with its own registry (tests run several processes' worth in one binary); a binary serves
//! [`Metrics::render`] at `/metrics`. What each metric means is listed in the README.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Latency buckets in seconds, from a millisecond to five minutes.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

pub struct Metrics {
    registry: Registry,
    /// Tasks created, by `source`: api, event, schedule, retry, direct.
    pub tasks_created: IntCounterVec,
    /// Tasks published to the broker by the dispatcher.
    pub tasks_dispatched: IntCounter,
    /// Attempts claimed by a worker, by `function`.
    pub tasks_started: IntCounterVec,
    /// Attempts ended, by `function` and `status` (complete, failed, retried).
    pub tasks_finished: IntCounterVec,
    /// Claim time − startTimestamp, by `function`.
    pub queue_lag: HistogramVec,
    /// Time from claim to stored outcome, by `function`.
    pub execution_duration: HistogramVec,
    /// Attempts running in this worker.
    pub tasks_running: IntGauge,
    /// Cluster-wide, from Postgres (scheduler): tasks in progress.
    pub tasks_in_progress: IntGauge,
    /// Cluster-wide, from Postgres (scheduler): due tasks not started yet.
    pub tasks_due: IntGauge,
    /// Due + in progress: the work the workers have to do now. Scale workers on it.
    pub work_in_system: IntGauge,
    /// Failed attempts that became `retried`.
    pub retries: IntCounter,
    /// Tasks failed by the sweeper as zombies.
    pub zombies_cleaned: IntCounter,
    /// Platform events consumed, by `outcome`: matched, unmatched, malformed, unusable (their
    /// tasks could never be stored), requeued.
    pub events_consumed: IntCounterVec,
    /// Messages moved to the dead-letter queue, by source `queue`.
    pub dead_lettered: IntCounterVec,
    /// Tasks a worker took from the broker but had no slot for in time, given back to the
    /// queue for another worker.
    pub tasks_handed_back: IntCounter,
    /// API-function calls, by `function` and HTTP `status`.
    pub api_requests: IntCounterVec,
    /// Warm function processes waiting in this worker.
    pub runtime_processes_warm: IntGauge,
    /// Function processes running an invocation in this worker.
    pub runtime_processes_busy: IntGauge,
    /// Function processes started (cold starts), by `runtime` (python, node, provided).
    pub cold_starts: IntCounterVec,
    /// Reconnections to the broker, by `component`.
    pub broker_reconnects: IntCounterVec,
    /// Database pool connections, by `state`: in_use, idle, max.
    pub db_pool: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)
                .unwrap_or_else(|e| unreachable_metric(name, e));
            let _ = registry.register(Box::new(metric.clone()));
            metric
        };
        let counter = |name: &str, help: &str| {
            let metric =
                IntCounter::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
            let _ = registry.register(Box::new(metric.clone()));
            metric
        };
        let gauge = |name: &str, help: &str| {
            let metric = IntGauge::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
            let _ = registry.register(Box::new(metric.clone()));
            metric
        };
        let histogram = |name: &str, help: &str| {
            let metric = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                &["function"],
            )
            .unwrap_or_else(|e| unreachable_metric(name, e));
            let _ = registry.register(Box::new(metric.clone()));
            metric
        };
        let db_pool = IntGaugeVec::new(
            Opts::new(
                "tasks_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        )
        .unwrap_or_else(|e| unreachable_metric("tasks_db_pool_connections", e));
        let _ = registry.register(Box::new(db_pool.clone()));
        Metrics {
            tasks_created: counter_vec(
                "tasks_created_total",
                "Tasks created, by source",
                &["source"],
            ),
            tasks_dispatched: counter("tasks_dispatched_total", "Tasks published to the broker"),
            tasks_started: counter_vec(
                "tasks_started_total",
                "Attempts claimed by a worker",
                &["function"],
            ),
            tasks_finished: counter_vec(
                "tasks_finished_total",
                "Attempts ended, by status",
                &["function", "status"],
            ),
            queue_lag: histogram("tasks_queue_lag_seconds", "Claim time minus startTimestamp"),
            execution_duration: histogram(
                "tasks_execution_duration_seconds",
                "Claim to stored outcome",
            ),
            tasks_running: gauge("tasks_running", "Attempts running in this worker"),
            tasks_in_progress: unregistered_gauge(
                "tasks_in_progress",
                "Tasks in progress, cluster-wide",
            ),
            tasks_due: unregistered_gauge(
                "tasks_due_not_started",
                "Due tasks not started yet, cluster-wide",
            ),
            work_in_system: unregistered_gauge(
                "tasks_work_in_system",
                "Due plus in-progress tasks, cluster-wide; scale workers on it",
            ),
            retries: counter("tasks_retries_total", "Failed attempts that were retried"),
            zombies_cleaned: counter(
                "tasks_zombies_cleaned_total",
                "Tasks failed because their worker stopped renewing the lease",
            ),
            events_consumed: counter_vec(
                "tasks_events_consumed_total",
                "Platform events consumed, by outcome",
                &["outcome"],
            ),
            dead_lettered: counter_vec(
                "tasks_dead_lettered_total",
                "Messages moved to the dead-letter queue",
                &["queue"],
            ),
            tasks_handed_back: counter(
                "tasks_handed_back_total",
                "Tasks a busy worker gave back to the queue for another worker",
            ),
            api_requests: counter_vec(
                "tasks_api_requests_total",
                "API-function calls",
                &["function", "status"],
            ),
            runtime_processes_warm: gauge(
                "tasks_runtime_processes_warm",
                "Warm idle function processes",
            ),
            runtime_processes_busy: gauge(
                "tasks_runtime_processes_busy",
                "Function processes running an invocation",
            ),
            cold_starts: counter_vec(
                "tasks_runtime_cold_starts_total",
                "Function processes started",
                &["runtime"],
            ),
            broker_reconnects: counter_vec(
                "tasks_broker_reconnects_total",
                "Reconnections to the broker",
                &["component"],
            ),
            db_pool,
            registry,
        }
    }

    /// Also exposes the cluster-wide gauges; only the scheduler, which computes them, does, so
    /// that a sum or max across processes is not skewed by zeros.
    pub fn with_cluster_gauges(self) -> Self {
        for gauge in [
            &self.tasks_in_progress,
            &self.tasks_due,
            &self.work_in_system,
        ] {
            let _ = self.registry.register(Box::new(gauge.clone()));
        }
        self
    }

    /// Refreshes the pool gauges from the pool's own counters.
    pub fn observe_pool(&self, pool: &deadpool_postgres::Pool) {
        let status = pool.status();
        let in_use = status.size.saturating_sub(status.available) as i64;
        self.db_pool.with_label_values(&["in_use"]).set(in_use);
        self.db_pool
            .with_label_values(&["idle"])
            .set(status.available as i64);
        self.db_pool
            .with_label_values(&["max"])
            .set(status.max_size as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn unregistered_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e))
}

/// Metric definitions are constants: an invalid one is a programming error caught by the
/// first test that builds a `Metrics`.
fn unreachable_metric<T>(name: &str, error: prometheus::Error) -> T {
    panic!("invalid metric definition {name}: {error}")
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn every_metric_is_exposed_with_the_prefix() {
        let metrics = Metrics::new();
        metrics.tasks_created.with_label_values(&["api"]).inc();
        metrics.queue_lag.with_label_values(&["f"]).observe(0.002);
        let text = metrics.render();
        assert!(
            text.contains("tasks_created_total{source=\"api\"} 1"),
            "{text}"
        );
        assert!(text.contains("tasks_queue_lag_seconds_bucket"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("tasks_"), "{line}");
        }
    }
}
