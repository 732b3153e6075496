//! Prometheus metrics, prefixed `tasks_`. Each process owns one [`Metrics`] with its own
//! registry (tests run several processes' worth in one binary) and serves [`Metrics::render`]
//! at `/metrics`. This module holds the metrics the scheduler counts or both binaries do, and
//! the helpers with which a binary registers its own in the same registry (the worker's
//! attempts and runtime processes). What each metric means is listed in docs/operations.md.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Tasks created, by `source`: api, event, schedule, retry, direct.
    pub tasks_created: IntCounterVec,
    /// Tasks published to the broker by the dispatcher.
    pub tasks_dispatched: IntCounter,
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
    /// API-function calls, by `function` and HTTP `status`.
    pub api_requests: IntCounterVec,
    /// Reconnections to the broker, by `component`.
    pub broker_reconnects: IntCounterVec,
    /// Database pool connections, by `state`: in_use, idle, max.
    pub db_pool: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
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
                &registry,
                "tasks_created_total",
                "Tasks created, by source",
                &["source"],
            ),
            tasks_dispatched: counter(
                &registry,
                "tasks_dispatched_total",
                "Tasks published to the broker",
            ),
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
            retries: counter(
                &registry,
                "tasks_retries_total",
                "Failed attempts that were retried",
            ),
            zombies_cleaned: counter(
                &registry,
                "tasks_zombies_cleaned_total",
                "Tasks failed because their worker stopped renewing the lease",
            ),
            events_consumed: counter_vec(
                &registry,
                "tasks_events_consumed_total",
                "Platform events consumed, by outcome",
                &["outcome"],
            ),
            dead_lettered: counter_vec(
                &registry,
                "tasks_dead_lettered_total",
                "Messages moved to the dead-letter queue",
                &["queue"],
            ),
            api_requests: counter_vec(
                &registry,
                "tasks_api_requests_total",
                "API-function calls",
                &["function", "status"],
            ),
            broker_reconnects: counter_vec(
                &registry,
                "tasks_broker_reconnects_total",
                "Reconnections to the broker",
                &["component"],
            ),
            db_pool,
            registry,
        }
    }

    /// The process's registry, where a binary registers the metrics only it has.
    pub fn registry(&self) -> &Registry {
        &self.registry
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

    /// The Prometheus text exposition of every metric of the registry.
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

/// A counter registered in `registry`.
pub fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e));
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

/// A counter with `labels`, registered in `registry`.
pub fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable_metric(name, e));
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

/// A gauge registered in `registry`.
pub fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = unregistered_gauge(name, help);
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

/// A histogram with `buckets` and `labels`, registered in `registry`.
pub fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    let metric = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .unwrap_or_else(|e| unreachable_metric(name, e));
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn unregistered_gauge(name: &str, help: &str) -> IntGauge {
    IntGauge::new(name, help).unwrap_or_else(|e| unreachable_metric(name, e))
}

/// Metric definitions are constants: an invalid one is a programming error caught by the
/// first test that builds the metrics holding it.
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
        metrics.dead_lettered.with_label_values(&["tasks"]).inc();
        let text = metrics.render();
        assert!(
            text.contains("tasks_created_total{source=\"api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tasks_dead_lettered_total{queue=\"tasks\"} 1"),
            "{text}"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("tasks_"), "{line}");
        }
    }
}
