//! Running functions: warm OS processes speaking the Lambda Runtime API, pooled per function
//! version, with code unpacked once per content hash.

pub mod api;
pub mod code_cache;
pub mod output;
pub mod process;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::metrics::Metrics;
use std::time::{Duration, Instant};

use axum::body::Bytes;

use code_cache::CodeCache;
use process::{Bootstraps, FunctionProcess, FunctionSpec, InvocationResult};

/// The project's bootstraps, embedded in the binary and written to disk at start.
const PYTHON_BOOTSTRAP: &str = include_str!("../../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../../runtimes/node/bootstrap.mjs");

type ProcessKey = (String, i64);

struct Idle {
    process: FunctionProcess,
    since: Instant,
}

/// Warm processes by function version. A process runs one invocation at a time; several
/// processes of one function serve concurrent tasks.
pub struct RuntimePool {
    code: CodeCache,
    bootstraps: Bootstraps,
    idle: Mutex<HashMap<ProcessKey, Vec<Idle>>>,
    max_idle: usize,
    metrics: Arc<Metrics>,
}

impl RuntimePool {
    pub fn new(
        cache_dir: &Path,
        code: CodeCache,
        max_idle: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let runtimes = cache_dir.join("runtimes");
        std::fs::create_dir_all(&runtimes)?;
        let bootstraps = Bootstraps {
            python: runtimes.join("bootstrap.py"),
            node: runtimes.join("bootstrap.mjs"),
        };
        std::fs::write(&bootstraps.python, PYTHON_BOOTSTRAP)?;
        std::fs::write(&bootstraps.node, NODE_BOOTSTRAP)?;
        Ok(RuntimePool {
            code,
            bootstraps,
            idle: Mutex::new(HashMap::new()),
            max_idle,
            metrics,
        })
    }

    /// Runs one invocation on a warm process of this function version, or a new one.
    pub async fn invoke(
        &self,
        spec: &FunctionSpec,
        code_sha256: &str,
        request_id: String,
        event: Bytes,
    ) -> InvocationResult {
        let key = (spec.name.clone(), spec.version);
        let mut process = match self.take_idle(&key) {
            Some(process) => process,
            None => {
                let spawned = match self.code.directory(code_sha256).await {
                    Ok(directory) => {
                        let family = match spec.runtime {
                            common::domain::Runtime::Python => "python",
                            common::domain::Runtime::Node => "node",
                            common::domain::Runtime::Provided => "provided",
                        };
                        self.metrics.cold_starts.with_label_values(&[family]).inc();
                        FunctionProcess::spawn(spec, &directory, &self.bootstraps).await
                    }
                    Err(error) => Err(error),
                };
                match spawned {
                    Ok(process) => process,
                    Err(error) => {
                        return InvocationResult {
                            outcome: Err(error),
                            logs: Vec::new(),
                            reusable: false,
                        };
                    }
                }
            }
        };
        self.metrics.runtime_processes_busy.inc();
        let result = process.invoke(request_id, event, spec.time_limit).await;
        self.metrics.runtime_processes_busy.dec();
        if result.reusable {
            self.put_back(key, process);
        }
        self.metrics
            .runtime_processes_warm
            .set(self.idle_count() as i64);
        result
    }

    fn take_idle(&self, key: &ProcessKey) -> Option<FunctionProcess> {
        let mut idle = self.idle.lock().ok()?;
        // Processes of older versions of this function will never be used again.
        idle.retain(|(name, version), _| name != &key.0 || *version == key.1);
        let processes = idle.get_mut(key)?;
        while let Some(candidate) = processes.pop() {
            if candidate.process.is_alive() {
                return Some(candidate.process);
            }
        }
        None
    }

    fn put_back(&self, key: ProcessKey, process: FunctionProcess) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.entry(key).or_default().push(Idle {
            process,
            since: Instant::now(),
        });
        // Bound the number of warm processes: the one idle longest goes first.
        let total: usize = idle.values().map(Vec::len).sum();
        if total > self.max_idle {
            let oldest = idle
                .iter()
                .flat_map(|(key, list)| {
                    list.iter()
                        .enumerate()
                        .map(move |(i, p)| (key.clone(), i, p.since))
                })
                .min_by_key(|(_, _, since)| *since);
            if let Some((key, index, _)) = oldest
                && let Some(list) = idle.get_mut(&key)
            {
                list.remove(index);
            }
        }
    }

    /// Ends processes idle for longer than `max_idle_time`.
    pub fn reap(&self, max_idle_time: Duration) {
        if let Ok(mut idle) = self.idle.lock() {
            for list in idle.values_mut() {
                list.retain(|p| p.since.elapsed() < max_idle_time && p.process.is_alive());
            }
            idle.retain(|_, list| !list.is_empty());
        }
    }

    /// Number of warm processes.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}
