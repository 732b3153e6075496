//! What the runtime pool counts: its warm and busy function processes, and cold starts.

use common::metrics::{counter_vec, gauge};
use prometheus::{IntCounterVec, IntGauge, Registry};

#[derive(Clone)]
pub struct RuntimeMetrics {
    /// Warm function processes waiting in this worker.
    pub processes_warm: IntGauge,
    /// Function processes running an invocation in this worker.
    pub processes_busy: IntGauge,
    /// Function processes started (cold starts), by `runtime` (python, node, provided).
    pub cold_starts: IntCounterVec,
}

impl RuntimeMetrics {
    /// The runtime's metrics, registered in the worker's `registry`.
    pub fn new(registry: &Registry) -> RuntimeMetrics {
        RuntimeMetrics {
            processes_warm: gauge(
                registry,
                "tasks_runtime_processes_warm",
                "Warm idle function processes",
            ),
            processes_busy: gauge(
                registry,
                "tasks_runtime_processes_busy",
                "Function processes running an invocation",
            ),
            cold_starts: counter_vec(
                registry,
                "tasks_runtime_cold_starts_total",
                "Function processes started",
                &["runtime"],
            ),
        }
    }
}
