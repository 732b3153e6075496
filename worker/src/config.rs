//! The worker's configuration (see `common::config` for how it is loaded).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cidr::Cidr;
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

/// How function processes are isolated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// `users` when the worker can switch uids (it runs as root), otherwise `none` with a
    /// warning at start.
    #[default]
    Auto,
    /// Each process runs as a uid of its own from the configured range; start fails when the
    /// worker cannot switch uids.
    Users,
    /// `users`, and each process also runs under `bwrap`: read-only root file system, private
    /// `/tmp`, and its own PID, IPC and UTS namespaces (the network is shared, as the Runtime
    /// API is on loopback).
    Bubblewrap,
    /// Processes run as the worker's own uid; the limits below still apply (except
    /// `max_processes`, which would count the worker's own processes).
    None,
}

/// A list written as a comma-separated string (the form an environment variable takes) or
/// as an array in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommaList<T>(pub Vec<T>);

impl<T> Default for CommaList<T> {
    fn default() -> Self {
        CommaList(Vec::new())
    }
}

impl<T: fmt::Display> Serialize for CommaList<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let items: Vec<String> = self.0.iter().map(T::to_string).collect();
        serializer.serialize_str(&items.join(","))
    }
}

impl<'de, T: FromStr<Err = String>> Deserialize<'de> for CommaList<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            List(Vec<String>),
        }
        let items = match Written::deserialize(deserializer)? {
            Written::Text(text) => text.split(',').map(str::to_owned).collect(),
            Written::List(items) => items,
        };
        items
            .iter()
            .map(|item| item.trim())
            .filter(|item| !item.is_empty())
            .map(|item| item.parse().map_err(serde::de::Error::custom))
            .collect::<Result<_, _>>()
            .map(CommaList)
    }
}

/// A path that does not depend on the working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsolutePath(pub PathBuf);

impl FromStr for AbsolutePath {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let path = PathBuf::from(text);
        if path.is_absolute() {
            Ok(AbsolutePath(path))
        } else {
            Err(format!("`{text}` is not an absolute path"))
        }
    }
}

impl fmt::Display for AbsolutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.display().fmt(f)
    }
}

/// Whether the connections of function processes are filtered (see `runtime::sandbox::egress`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Functions reach the outside world but not this host, link-local addresses, the
    /// service's database and broker, or `egress_deny`. Start fails when `users` or
    /// `bubblewrap` isolation cannot enforce it; `auto` warns.
    #[default]
    Filtered,
    /// No filter: functions reach whatever the worker reaches. An explicit opt-out.
    Unfiltered,
}

/// Limits and isolation of function processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    pub isolation: Isolation,
    /// First uid (and gid) of the range function processes run as; the uids need no entry in
    /// `/etc/passwd`.
    pub uid_base: u32,
    /// Size of the uid range; 0 means `concurrency + max_idle_processes`, one uid per process
    /// the worker may keep.
    pub uid_count: u32,
    /// Directory of the lock files through which workers sharing a host never use the same
    /// uid at once.
    pub lock_dir: PathBuf,
    /// Processes and threads a function process and its children may have (`RLIMIT_NPROC`,
    /// counted per uid, so per function process with uid isolation).
    pub max_processes: u64,
    /// Open files per process (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
    /// Largest file a function process may write, in MB (`RLIMIT_FSIZE`).
    pub max_file_size_mb: u64,
    /// Size in MB of the memory-backed file system a function process writes to (its home;
    /// under bubblewrap also `/tmp` and `/dev/shm`). Its files count against the function's
    /// memoryLimit where the worker has control groups.
    pub max_disk_mb: u64,
    /// Directories function processes may read besides the system's (`/usr`, `/etc`, …), their
    /// code and the bootstraps: a runtime installed elsewhere, say.
    pub readable_paths: CommaList<AbsolutePath>,
    /// Whether function processes' connections are filtered.
    pub network: Network,
    /// Ranges functions may not connect to, besides those always refused.
    pub egress_deny: CommaList<Cidr>,
    /// Ranges functions may connect to even where a rule refuses them.
    pub egress_allow: CommaList<Cidr>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            isolation: Isolation::Auto,
            uid_base: 64_000,
            uid_count: 0,
            lock_dir: PathBuf::from("/run/lock/task-service"),
            max_processes: 64,
            max_open_files: 1024,
            max_file_size_mb: 512,
            max_disk_mb: 512,
            readable_paths: CommaList::default(),
            network: Network::Filtered,
            egress_deny: CommaList::default(),
            egress_allow: CommaList::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
