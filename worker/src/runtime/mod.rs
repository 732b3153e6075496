//! Running functions: warm OS processes speaking the Lambda Runtime API, pooled per function
//! version, with code unpacked once per content hash.

pub mod api;
pub mod code_cache;
mod metrics;
pub mod output;
pub mod peer;
pub mod process;
pub mod sandbox;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;

use code_cache::{CodeCache, ReleasedCode};
use common::domain::TaskError;
use process::{Bootstraps, FunctionProcess, FunctionSpec, InvocationResult};
use sandbox::{Cell, EnterError, Sandbox};

pub use metrics::RuntimeMetrics;

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
    metrics: RuntimeMetrics,
    sandbox: Sandbox,
}

impl RuntimePool {
    pub fn new(
        cache_dir: &Path,
        code: CodeCache,
        max_idle: usize,
        metrics: RuntimeMetrics,
        sandbox: Sandbox,
    ) -> std::io::Result<Self> {
        let runtimes = cache_dir.join("runtimes");
        std::fs::create_dir_all(&runtimes)?;
        // Readable by every function process, writable by none.
        std::fs::set_permissions(&runtimes, std::fs::Permissions::from_mode(0o755))?;
        let bootstraps = Bootstraps {
            python: runtimes.join("bootstrap.py"),
            node: runtimes.join("bootstrap.mjs"),
            directory: runtimes,
        };
        for (path, contents) in [
            (&bootstraps.python, PYTHON_BOOTSTRAP),
            (&bootstraps.node, NODE_BOOTSTRAP),
        ] {
            std::fs::write(path, contents)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(RuntimePool {
            code,
            bootstraps,
            idle: Mutex::new(HashMap::new()),
            max_idle,
            metrics,
            sandbox,
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
            None => match self.cold_start(spec, code_sha256).await {
                Ok(process) => process,
                Err(error) => {
                    return InvocationResult {
                        outcome: Err(error),
                        logs: Vec::new(),
                        reusable: false,
                    };
                }
            },
        };
        self.metrics.processes_busy.inc();
        let result = process.invoke(request_id, event, spec.time_limit).await;
        self.metrics.processes_busy.dec();
        if result.reusable {
            self.put_back(key, process);
        }
        self.metrics.processes_warm.set(self.idle_count() as i64);
        result
    }

    /// Starts a new process of this function version, unpacking its code if needed.
    async fn cold_start(
        &self,
        spec: &FunctionSpec,
        code_sha256: &str,
    ) -> Result<FunctionProcess, TaskError> {
        let directory = self.code.directory(code_sha256).await?;
        let family = match spec.runtime {
            common::domain::Runtime::Python => "python",
            common::domain::Runtime::Node => "node",
            common::domain::Runtime::Provided => "provided",
        };
        self.metrics.cold_starts.with_label_values(&[family]).inc();
        let cell = self.enter_sandbox(spec.memory_limit_mb)?;
        FunctionProcess::spawn(spec, &directory, &self.bootstraps, &self.sandbox, cell).await
    }

    /// A sandbox cell for a new process. When every uid is taken (by warm processes of other
    /// functions, or by other workers sharing the range), the process idle longest gives its
    /// uid up.
    fn enter_sandbox(&self, memory_limit_mb: u64) -> Result<Cell, TaskError> {
        let failed = |error: EnterError| {
            let message = match error {
                EnterError::NoFreeUid => "no sandbox uid is free: every uid of \
                    worker.sandbox.uid_base .. + uid_count is in use"
                    .to_owned(),
                EnterError::Failed(error) => format!("could not prepare the sandbox: {error}"),
            };
            TaskError::invocation("Runtime.Unavailable", message)
        };
        match self.sandbox.enter(memory_limit_mb) {
            Err(EnterError::NoFreeUid) => {
                drop(self.evict_oldest());
                self.sandbox.enter(memory_limit_mb).map_err(failed)
            }
            other => other.map_err(failed),
        }
    }

    fn take_idle(&self, key: &ProcessKey) -> Option<FunctionProcess> {
        let mut retired = Vec::new();
        let taken = {
            let mut idle = self.idle.lock().ok()?;
            // Processes of older versions of this function will never be used again.
            let stale: Vec<ProcessKey> = idle
                .keys()
                .filter(|(name, version)| name == &key.0 && *version != key.1)
                .cloned()
                .collect();
            for stale in stale {
                retired.extend(idle.remove(&stale).unwrap_or_default());
            }
            let processes = idle.get_mut(key)?;
            let mut taken = None;
            while let Some(candidate) = processes.pop() {
                if candidate.process.is_alive() {
                    taken = Some(candidate.process);
                    break;
                }
                retired.push(candidate);
            }
            taken
        };
        drop(retired);
        taken
    }

    fn put_back(&self, key: ProcessKey, process: FunctionProcess) {
        let total = {
            let Ok(mut idle) = self.idle.lock() else {
                return;
            };
            idle.entry(key).or_default().push(Idle {
                process,
                since: Instant::now(),
            });
            idle.values().map(Vec::len).sum::<usize>()
        };
        // Bound the number of warm processes: the one idle longest goes first.
        if total > self.max_idle {
            drop(self.evict_oldest());
        }
    }

    /// Takes the process idle longest out of the pool; the caller drops it, which retires it,
    /// outside the lock.
    fn evict_oldest(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().ok()?;
        let (key, index) = idle
            .iter()
            .flat_map(|(key, list)| list.iter().enumerate().map(move |(i, p)| (key, i, p.since)))
            .min_by_key(|(_, _, since)| *since)
            .map(|(key, index, _)| (key.clone(), index))?;
        let list = idle.get_mut(&key)?;
        let evicted = list.remove(index);
        if list.is_empty() {
            idle.remove(&key);
        }
        Some(evicted)
    }

    /// Deletes the unpacked code no function uses any more (see
    /// [`CodeCache::delete_released`]).
    pub async fn delete_released_code(
        &self,
        released: &mut ReleasedCode,
        grace: Duration,
    ) -> anyhow::Result<usize> {
        self.code.delete_released(released, grace).await
    }

    /// Ends processes idle for longer than `max_idle_time`.
    pub fn reap(&self, max_idle_time: Duration) {
        let mut retired = Vec::new();
        if let Ok(mut idle) = self.idle.lock() {
            for list in idle.values_mut() {
                let (keep, expired): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                    .into_iter()
                    .partition(|p| p.since.elapsed() < max_idle_time && p.process.is_alive());
                *list = keep;
                retired.extend(expired);
            }
            idle.retain(|_, list| !list.is_empty());
        }
        // Retired outside the lock.
        drop(retired);
    }

    /// Number of warm processes.
    pub fn idle_count(&self) -> usize {
        self.idle
            .lock()
            .map(|idle| idle.values().map(Vec::len).sum())
            .unwrap_or(0)
    }
}
