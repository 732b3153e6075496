//! The sandbox's settings, `worker.sandbox` in the worker's configuration: how function
//! processes are isolated, their limits, and what their connections may reach.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::cidr::Cidr;

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

/// Whether the connections of function processes are filtered (see `egress`).
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
