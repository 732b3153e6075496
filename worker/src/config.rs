//! The worker's configuration (see `common::config` for how it is loaded).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use common::config::{AmqpConfig, DatabaseConfig, LogConfig};
use common::secrets::SecretsConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub database: DatabaseConfig,
    pub amqp: AmqpConfig,
    pub metrics: MetricsConfig,
    pub worker: ExecutionConfig,
    pub log: LogConfig,
    pub secrets: SecretsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionConfig {
    /// Tasks run at once.
    pub concurrency: usize,
    /// How long a claim stays valid without renewal; renewed every third of it. A task whose
    /// lease runs out is failed by the scheduler's sweeper as a zombie.
    pub lease_ms: u64,
    /// Where function code is unpacked (one directory per content hash) and bootstraps written.
    pub cache_dir: PathBuf,
    /// Most warm function processes kept between invocations.
    pub max_idle_processes: usize,
    /// A warm process unused for this long is stopped.
    pub idle_process_ms: u64,
    /// On SIGTERM, how long running tasks may take to finish before they are handed back.
    pub drain_grace_ms: u64,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            concurrency: std::thread::available_parallelism().map_or(2, usize::from),
            lease_ms: 30_000,
            cache_dir: std::env::temp_dir().join("task-service-worker"),
            max_idle_processes: 32,
            idle_process_ms: 300_000,
            drain_grace_ms: 25_000,
        }
    }
}

impl ExecutionConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(300))
    }
}
