//! The worker's configuration (see `common::config` for how it is loaded).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use common::config::{AmqpConfig, DatabaseConfig, LogConfig};
use common::secrets::SecretsConfig;

use crate::runtime::sandbox::config::SandboxConfig;

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
    /// Unpacked code whose archive the database deleted (no function uses it any more) is
    /// deleted from `cache_dir` this long after: longer than a task runs, so no task of a
    /// worker sharing the directory is still running it.
    pub released_code_grace_ms: u64,
    /// How function processes are kept apart from the worker and from each other.
    pub sandbox: SandboxConfig,
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
            released_code_grace_ms: 900_000,
            sandbox: SandboxConfig::default(),
        }
    }
}

impl ExecutionConfig {
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(300))
    }

    pub fn released_code_grace(&self) -> Duration {
        Duration::from_millis(self.released_code_grace_ms.max(100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sandbox::cidr::Cidr;
    use crate::runtime::sandbox::config::{CommaList, Isolation, Network};

    fn load(pairs: &[(&str, &str)]) -> Result<WorkerConfig, common::config::ConfigError> {
        common::config::load_from(
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn sandbox_settings_come_from_the_environment() {
        let config = load(&[]).unwrap();
        assert_eq!(config.worker.sandbox.isolation, Isolation::Auto);
        assert_eq!(config.worker.sandbox.uid_base, 64_000);
        let config = load(&[
            ("TASKS__WORKER__SANDBOX__ISOLATION", "bubblewrap"),
            ("TASKS__WORKER__SANDBOX__UID_BASE", "100000"),
            ("TASKS__WORKER__SANDBOX__MAX_FILE_SIZE_MB", "16"),
        ])
        .unwrap();
        assert_eq!(config.worker.sandbox.isolation, Isolation::Bubblewrap);
        assert_eq!(config.worker.sandbox.uid_base, 100_000);
        assert_eq!(config.worker.sandbox.max_file_size_mb, 16);
        assert_eq!(config.worker.sandbox.network, Network::Filtered);
        let config = load(&[
            ("TASKS__WORKER__SANDBOX__NETWORK", "unfiltered"),
            ("TASKS__WORKER__SANDBOX__EGRESS_DENY", "10.0.0.0/8,fd00::/8"),
            ("TASKS__WORKER__SANDBOX__EGRESS_ALLOW", "10.1.2.3"),
        ])
        .unwrap();
        assert_eq!(config.worker.sandbox.network, Network::Unfiltered);
        assert_eq!(config.worker.sandbox.egress_deny.0.len(), 2);
        let from_file: CommaList<Cidr> = serde_json::from_str("[\"10.0.0.0/8\"]").unwrap();
        assert_eq!(from_file.0.len(), 1);
        assert_eq!(config.worker.sandbox.egress_allow.0.len(), 1);
    }

    #[test]
    fn bad_sandbox_settings_name_their_key() {
        let error = load(&[("TASKS__WORKER__SANDBOX__ISOLATION", "chroot")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("worker.sandbox.isolation"), "{error}");
        let error = load(&[("TASKS__WORKER__SANDBOX__MAX_THREADS", "4")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("max_threads"), "{error}");
        let error = load(&[("TASKS__WORKER__SANDBOX__EGRESS_DENY", "10.0.0.0/40")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("egress_deny"), "{error}");
        let error = load(&[("TASKS__WORKER__SANDBOX__READABLE_PATHS", "/opt/x,relative")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("relative"), "{error}");
    }
}
