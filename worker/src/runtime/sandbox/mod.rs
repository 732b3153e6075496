//! Keeps function processes away from the worker and from each other.
//!
//! With uid isolation each process runs as a uid of its own, leased from a range for as long
//! as the process lives, with a fresh private home directory. Other tenants' processes, the
//! worker's environment (`/proc/<pid>/environ`) and its configuration files are then out of
//! reach by ordinary file permissions. When a process is retired, everything still running
//! under its uid is killed and its files are removed before the uid is leased again. In every
//! mode the process gets rlimits, no descriptors of the worker, and dies with the worker.

mod cgroups;
mod child;
pub mod cidr;
pub mod config;
pub mod egress;
mod ipc;
mod landlock;
mod seccomp;
pub mod uids;

use std::ffi::OsString;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, bail};

use cgroups::{Cgroups, ProcessGroup};
use child::Limits;
use config::{Isolation, Network, SandboxConfig};
use egress::{EgressFilter, EgressPolicy};
use landlock::{Landlock, Ruleset};
use uids::{UidLease, UidPool, kill_all_of};

/// How processes are isolated, as resolved at start.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    None,
    Users,
    /// Users, and the command runs under this `bwrap`.
    Bubblewrap(PathBuf),
}

/// World-writable directories where a process of a sandbox uid may leave files behind for the
/// next process of that uid; swept when a uid is retired (`bubblewrap` hides them instead).
const SHARED_TEMPORARY_DIRS: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

pub struct Sandbox {
    /// Names what the sandbox makes on the host (see [`instance_name`]).
    name: String,
    mode: Mode,
    uids: Option<UidPool>,
    /// Parent of the private homes.
    work_root: PathBuf,
    /// What a process may read besides its code and the bootstraps: the system's directories
    /// and the operator's `readable_paths`.
    readable: Vec<PathBuf>,
    /// Size of the memory-backed file system a process may write (its home; under bubblewrap
    /// also `/tmp` and `/dev/shm`).
    disk_bytes: u64,
    /// With `users` isolation: the home is a memory-backed file system of `disk_bytes` the
    /// worker mounts (it needs `CAP_SYS_ADMIN`), rather than a directory on its disk.
    memory_homes: bool,
    /// With `users` isolation: the files a process may touch are confined by Landlock.
    landlock: Option<Landlock>,
    processes: u64,
    open_files: u64,
    file_size_bytes: u64,
    /// Names homes without uid isolation.
    next_home: AtomicU64,
    /// The filter of the sandbox uids' connections, when there is one.
    egress: Option<EgressFilter>,
    /// The worker's control groups, when it can make them.
    cgroups: Option<Cgroups>,
}

/// Why no sandbox could be set up for a new process.
#[derive(Debug)]
pub enum EnterError {
    /// Every uid of the range is in use.
    NoFreeUid,
    Failed(io::Error),
}

impl Sandbox {
    /// Resolves the isolation mode and prepares the directories (`code_root` is where the
    /// code is unpacked, under `cache_dir`), the uid range for up to `processes` function
    /// processes at once and the filter keeping them off `service_addresses` (the database's
    /// and the broker's). Errors name the configuration key.
    pub fn prepare(
        config: &SandboxConfig,
        cache_dir: &Path,
        code_root: &Path,
        processes: usize,
        service_addresses: &[IpAddr],
    ) -> anyhow::Result<Sandbox> {
        let work_root = cache_dir.join("work");
        for directory in [&cache_dir.join("code"), code_root, &work_root] {
            // Searchable but not listable: a process reaches its own code and home by name only.
            create_dir_with_mode(directory, 0o711)
                .with_context(|| format!("preparing worker.cache_dir = {}", cache_dir.display()))?;
        }
        let count = match config.uid_count {
            0 => u32::try_from(processes).unwrap_or(u32::MAX),
            count => count,
        };
        let mut sandbox = Sandbox {
            name: instance_name(),
            mode: Mode::None,
            uids: None,
            readable: readable_paths(config),
            disk_bytes: config.max_disk_mb.saturating_mul(1024 * 1024),
            memory_homes: false,
            landlock: None,
            work_root,
            processes: config.max_processes,
            open_files: config.max_open_files,
            file_size_bytes: config.max_file_size_mb.saturating_mul(1024 * 1024),
            next_home: AtomicU64::new(0),
            egress: None,
            cgroups: None,
        };
        match config.isolation {
            Isolation::None => {}
            // Root can switch uids; from then on auto behaves as `users`.
            Isolation::Auto if euid() == 0 => sandbox.isolate(config, count, None)?,
            Isolation::Auto => tracing::warn!(
                "FUNCTIONS ARE NOT ISOLATED: the worker runs as uid {}, so its function processes \
                 run as that user too, can read its environment, its files and each other's, and \
                 reach every address it reaches (its database and broker included). Run the \
                 worker as root so that each function process gets a uid of its own and a \
                 filtered network, or set worker.sandbox.isolation = \"none\" to accept this.",
                euid()
            ),
            Isolation::Users => sandbox.isolate(config, count, None)?,
            Isolation::Bubblewrap => {
                let bwrap = find_program("bwrap").context(
                    "configuration: worker.sandbox.isolation = \"bubblewrap\" needs `bwrap` on the PATH",
                )?;
                sandbox.isolate(config, count, Some(bwrap))?;
            }
        }
        if sandbox.mode != Mode::None {
            check_searchable(cache_dir)?;
            remove_what_dead_workers_left();
            let last = config.uid_base.saturating_add(count.saturating_sub(1));
            sandbox.egress = filter_network(
                config,
                &sandbox.name,
                config.uid_base,
                last,
                service_addresses,
            )?;
            if sandbox.mode == Mode::Users {
                sandbox.confine_files();
            }
            sandbox.cgroups = control_groups(&sandbox.name);
        }
        tracing::info!(
            mode = ?sandbox.mode,
            network_filtered = sandbox.egress.is_some(),
            control_groups = sandbox.cgroups.is_some(),
            files_confined = sandbox.mode != Mode::Users || sandbox.landlock.is_some(),
            memory_homes = sandbox.memory_homes,
            "function processes sandboxed"
        );
        Ok(sandbox)
    }

    /// Switches to uid isolation once the worker has shown it can switch uids (and run
    /// `bwrap` if given).
    fn isolate(
        &mut self,
        config: &SandboxConfig,
        count: u32,
        bwrap: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        let key = match bwrap {
            Some(_) => "bubblewrap",
            None => "users",
        };
        if euid() != 0 {
            bail!(
                "configuration: worker.sandbox.isolation = \"{key}\" needs a worker that can switch \
                 uids (running as root), but it runs as uid {}",
                euid()
            );
        }
        let pool = UidPool::new(config.uid_base, count, &config.lock_dir).with_context(|| {
            format!(
                "configuration: worker.sandbox.uid_base = {}, uid_count = {count}, lock_dir = {}",
                config.uid_base,
                config.lock_dir.display()
            )
        })?;
        let probe = pool
            .lease()
            .context("configuration: worker.sandbox.lock_dir")?
            .context("configuration: every uid of worker.sandbox.uid_base .. + uid_count is held by other workers")?;
        kill_all_of(probe.uid())
            .context("configuration: worker.sandbox.isolation: cannot switch uids")?;
        if let Some(bwrap) = &bwrap {
            probe_bubblewrap(bwrap, probe.uid())?;
        }
        drop(probe);
        self.uids = Some(pool);
        self.mode = match bwrap {
            Some(bwrap) => Mode::Bubblewrap(bwrap),
            None => Mode::Users,
        };
        Ok(())
    }

    /// With `users` isolation, confines the files processes may touch with Landlock, and their
    /// writes to a memory-backed home of `disk_bytes`, where the kernel and the worker's
    /// privileges allow; says what is missing otherwise.
    fn confine_files(&mut self) {
        match Landlock::probe() {
            Ok(landlock) => self.landlock = Some(landlock),
            Err(reason) => tracing::warn!(
                "FUNCTION FILES NOT CONFINED: {reason}. Function processes can read what this \
                 host leaves world-readable and write to /tmp and /var/tmp."
            ),
        }
        match probe_memory_home(&self.work_root, &self.name) {
            Ok(()) => self.memory_homes = true,
            Err(error) => tracing::warn!(
                "FUNCTION DISK NOT BOUNDED: the worker cannot mount a memory-backed home for \
                 each function process ({error}; it needs CAP_SYS_ADMIN). Homes are directories \
                 on the worker's disk: each file is limited to max_file_size_mb, their sum is not."
            ),
        }
    }

    /// The mark a Runtime API listener needs so that a function process may reach it, when
    /// the network is filtered.
    pub fn runtime_api_mark(&self) -> Option<u32> {
        self.egress.as_ref().map(|_| egress::RUNTIME_API_MARK)
    }

    /// Prepares the ground for a new process: a uid of its own (with uid isolation), clear of
    /// anything a previous holder left, a fresh private home, and a control group holding it
    /// to `memory_limit_mb` (where the worker has control groups).
    pub fn enter(&self, memory_limit_mb: u64) -> Result<Cell, EnterError> {
        let Some(pool) = &self.uids else {
            let home = self.work_root.join(format!(
                "{}-{}",
                std::process::id(),
                self.next_home.fetch_add(1, Ordering::Relaxed)
            ));
            let cell = Cell {
                home,
                uid: None,
                sweep_shared: false,
                group: None,
            };
            fresh_home(&cell.home, None).map_err(EnterError::Failed)?;
            return Ok(cell);
        };
        let lease = pool
            .lease()
            .map_err(EnterError::Failed)?
            .ok_or(EnterError::NoFreeUid)?;
        let group = self
            .cgroups
            .as_ref()
            .map(|cgroups| {
                cgroups.create(memory_limit_mb.saturating_mul(1024 * 1024), self.processes)
            })
            .transpose()
            .map_err(EnterError::Failed)?;
        let cell = Cell {
            home: self.work_root.join(lease.uid().to_string()),
            uid: Some(lease),
            sweep_shared: self.mode == Mode::Users,
            group,
        };
        // A worker that crashed may have left processes and files under this uid.
        cell.clear().map_err(EnterError::Failed)?;
        fresh_home(&cell.home, cell.uid()).map_err(EnterError::Failed)?;
        if self.memory_homes
            && let Some(uid) = cell.uid()
        {
            mount_memory_home(&cell.home, self.disk_bytes, uid, &self.name)
                .map_err(EnterError::Failed)?;
        }
        Ok(cell)
    }

    /// The command that starts `program` in `cell`, with the limits applied; `readable` is the
    /// directory it needs besides its code (the bootstraps).
    pub fn command(
        &self,
        cell: &Cell,
        program: &Path,
        args: &[OsString],
        code_dir: &Path,
        readable: &Path,
        memory_limit_mb: u64,
    ) -> io::Result<SandboxedCommand> {
        let mut command = match &self.mode {
            Mode::Bubblewrap(bwrap) => {
                let mut command = tokio::process::Command::new(bwrap);
                command
                    .args(self.bubblewrap_args(cell, code_dir, readable))
                    .arg("--")
                    .arg(program);
                command
            }
            Mode::None | Mode::Users => tokio::process::Command::new(program),
        };
        command.args(args).current_dir(code_dir);
        if let Some(uid) = cell.uid() {
            // The standard library also drops the supplementary groups when it switches.
            command.uid(uid).gid(uid);
        }
        let ruleset = match (&self.landlock, &self.mode) {
            (Some(landlock), Mode::Users) => {
                let mut paths: Vec<&Path> = self.readable.iter().map(PathBuf::as_path).collect();
                paths.extend([code_dir, readable]);
                Some(landlock.ruleset(&paths, &cell.home)?)
            }
            _ => None,
        };
        let limits = Limits {
            memory_bytes: memory_limit_mb.saturating_mul(1024 * 1024),
            processes: cell.uid().map(|_| self.processes),
            open_files: self.open_files,
            file_size_bytes: self.file_size_bytes,
            seccomp: self.egress.as_ref().and_then(|_| seccomp::filter()),
            cgroup: cell
                .group
                .as_ref()
                .map(ProcessGroup::join)
                .unwrap_or_default(),
            landlock: ruleset.as_ref().map(Ruleset::descriptor),
        };
        let worker = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe system calls (see `child`).
        unsafe {
            command.pre_exec(move || limits.apply_in_child(worker));
        }
        Ok(SandboxedCommand {
            command,
            _ruleset: ruleset,
        })
    }

    /// A read-only view of the system's directories, the process's code and the bootstraps,
    /// memory-backed `/tmp`, `/dev/shm` and home of `disk_bytes` each, and namespaces of its own
    /// except the network's (the Runtime API listens on loopback).
    fn bubblewrap_args(&self, cell: &Cell, code_dir: &Path, readable: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut option = |name: &str, values: &[&std::ffi::OsStr]| {
            args.push(name.into());
            args.extend(values.iter().map(|value| value.to_os_string()));
        };
        for path in &self.readable {
            // /proc is mounted afresh below, for the process's own PID namespace.
            if path != Path::new("/proc") {
                option("--ro-bind-try", &[path.as_os_str(), path.as_os_str()]);
            }
        }
        option("--dev", &["/dev".as_ref()]);
        option("--proc", &["/proc".as_ref()]);
        let size = self.disk_bytes.to_string();
        for writable in [Path::new("/tmp"), Path::new("/dev/shm"), &cell.home] {
            option("--size", &[size.as_ref()]);
            option("--tmpfs", &[writable.as_os_str()]);
        }
        option("--ro-bind", &[code_dir.as_os_str(), code_dir.as_os_str()]);
        option("--ro-bind", &[readable.as_os_str(), readable.as_os_str()]);
        option("--chdir", &[code_dir.as_os_str()]);
        for flag in [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--new-session",
        ] {
            option(flag, &[]);
        }
        args
    }
}

/// A function process's command, and what must stay open until it has started.
pub struct SandboxedCommand {
    pub command: tokio::process::Command,
    _ruleset: Option<Ruleset>,
}

/// The system's directories, those `/etc/resolv.conf` points into (a resolver's own
/// directory), and the operator's `readable_paths`.
fn readable_paths(config: &SandboxConfig) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = landlock::SYSTEM_PATHS.iter().map(PathBuf::from).collect();
    if let Ok(resolv) = std::fs::canonicalize("/etc/resolv.conf")
        && let Some(directory) = resolv.parent()
        && !paths.iter().any(|path| directory.starts_with(path))
    {
        paths.push(directory.to_path_buf());
    }
    paths.extend(config.readable_paths.0.iter().map(|path| path.0.clone()));
    paths
}

/// Mounts a memory-backed file system of `bytes` on `home`, owned by `uid` and private to it.
/// Its source is `source`, the sandbox's name, so that a later worker can tell its homes.
fn mount_memory_home(home: &Path, bytes: u64, uid: u32, source: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(home.as_os_str().as_bytes())?;
    let source = std::ffi::CString::new(source)?;
    let options = std::ffi::CString::new(format!("size={bytes},mode=0700,uid={uid},gid={uid}"))?;
    // SAFETY: mount reads NUL-terminated strings that outlive the call.
    let mounted = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if mounted == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Detaches whatever is mounted on `home` (nothing, mostly).
fn unmount_home(home: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(target) = std::ffi::CString::new(home.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: umount2 reads a NUL-terminated string that outlives the call. Failing because
    // nothing is mounted there is the common case.
    unsafe {
        libc::umount2(target.as_ptr(), libc::MNT_DETACH);
    }
}

/// Whether the worker may mount memory-backed homes: it mounts and removes one.
fn probe_memory_home(work_root: &Path, source: &str) -> io::Result<()> {
    let probe = work_root.join(format!("probe-{source}"));
    fresh_home(&probe, None)?;
    let mounted = mount_memory_home(&probe, 1024 * 1024, euid(), source);
    unmount_home(&probe);
    remove_if_present(&probe)?;
    mounted
}

/// The worker's control groups named `name`, or a warning saying why there are none.
fn control_groups(name: &str) -> Option<Cgroups> {
    Cgroups::prepare(name)
        .inspect_err(|reason| {
            tracing::warn!(
                "FUNCTION MEMORY BOUNDED PER PROCESS ONLY: no control group per function process \
                 ({reason}). Each process is held to memoryLimit by RLIMIT_DATA, but shared \
                 memory and memory-backed files are not counted, and a function that forks can \
                 use up to max_processes × memoryLimit."
            )
        })
        .ok()
}

/// Installs the filter of the sandbox uids `first..=last` as configured. Where it cannot be
/// installed, `auto` isolation warns and goes on; `users` and `bubblewrap` fail unless the
/// operator opted out with `network = "unfiltered"`.
fn filter_network(
    config: &SandboxConfig,
    name: &str,
    first: u32,
    last: u32,
    service_addresses: &[IpAddr],
) -> anyhow::Result<Option<EgressFilter>> {
    if config.network == Network::Unfiltered {
        tracing::warn!(
            "FUNCTION NETWORK NOT FILTERED (worker.sandbox.network = \"unfiltered\"): function \
             processes can connect to this host's services, the service's database and broker \
             and cloud metadata addresses"
        );
        return Ok(None);
    }
    let policy = EgressPolicy::new(
        service_addresses,
        &config.egress_deny.0,
        &config.egress_allow.0,
    );
    match EgressFilter::install(name, first, last, &policy) {
        Ok(filter) => Ok(Some(filter)),
        Err(error) if config.isolation == Isolation::Auto => {
            tracing::warn!(
                "FUNCTION NETWORK NOT FILTERED: {error:#}. Function processes can connect to this \
                 host's services, the service's database and broker and cloud metadata \
                 addresses. Give the worker CAP_NET_ADMIN and the `nft` program, or set \
                 worker.sandbox.network = \"unfiltered\" to accept this."
            );
            Ok(None)
        }
        Err(error) => Err(error.context(format!(
            "configuration: worker.sandbox.isolation = \"{}\" filters the network of function \
             processes (worker.sandbox.network = \"filtered\"), which needs CAP_NET_ADMIN and the \
             `nft` program; set worker.sandbox.network = \"unfiltered\" to run without",
            match config.isolation {
                Isolation::Bubblewrap => "bubblewrap",
                _ => "users",
            }
        ))),
    }
}

/// What a worker's sandbox makes on the host (its nftables table, its control groups) is named
/// `task_service_<pid>_<n>`: the next worker to start can tell those of a worker that is gone.
const INSTANCE_PREFIX: &str = "task_service_";

/// Tells the sandboxes of several workers in one process (tests) apart.
static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(0);

fn instance_name() -> String {
    format!(
        "{INSTANCE_PREFIX}{}_{}",
        std::process::id(),
        NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether something named by [`instance_name`] was made by a worker that is gone.
fn made_by_dead_worker(name: &str) -> bool {
    let pid = name
        .strip_prefix(INSTANCE_PREFIX)
        .and_then(|rest| rest.split('_').next())
        .and_then(|pid| pid.parse::<u32>().ok());
    pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes what workers of this host that were killed left behind: their network filter
/// tables, control groups and mounted homes. Each starting worker does this; so can an
/// operator (`worker remove-leftovers`).
pub fn remove_what_dead_workers_left() {
    egress::delete_tables_of_dead_workers();
    cgroups::remove_groups_of_dead_workers();
    unmount_homes_of_dead_workers();
}

/// Detaches the memory-backed homes of workers that are gone: their source names the worker.
fn unmount_homes_of_dead_workers() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    for line in mounts.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut after = after.split(' ');
        let (Some("tmpfs"), Some(source)) = (after.next(), after.next()) else {
            continue;
        };
        if made_by_dead_worker(source)
            && let Some(point) = before.split(' ').nth(4)
        {
            unmount_home(&PathBuf::from(unescape_mount_path(point)));
        }
    }
}

/// A path of `/proc/self/mountinfo`, where spaces, tabs, newlines and backslashes are written
/// as octal escapes (`\040`).
fn unescape_mount_path(text: &str) -> String {
    let mut path = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('\\') {
        path.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 4);
        match code.and_then(|code| u8::from_str_radix(code, 8).ok()) {
            Some(byte) => {
                path.push(char::from(byte));
                rest = &rest[at + 4..];
            }
            None => {
                path.push('\\');
                rest = &rest[at + 1..];
            }
        }
    }
    path.push_str(rest);
    path
}

/// What one process holds of the sandbox: its uid (with uid isolation), its private home and
/// its control group. Dropping it retires them.
pub struct Cell {
    home: PathBuf,
    uid: Option<UidLease>,
    sweep_shared: bool,
    /// Dropped after the uid's processes were killed (fields drop after `drop`).
    group: Option<ProcessGroup>,
}

impl Cell {
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The uid the process runs as, when it has one of its own.
    pub fn uid(&self) -> Option<u32> {
        self.uid.as_ref().map(UidLease::uid)
    }

    /// How many of its processes the kernel killed for lack of memory, where it has a control
    /// group.
    pub fn memory_kills(&self) -> u64 {
        self.group.as_ref().map_or(0, ProcessGroup::memory_kills)
    }

    /// Kills every process of the uid, wherever it went.
    pub fn kill_all(&self) {
        if let Some(uid) = self.uid()
            && let Err(error) = kill_all_of(uid)
        {
            tracing::error!(uid, %error, "could not stop the processes of a sandbox uid");
        }
    }

    /// Kills the uid's processes, then removes what they may have left in shared temporary
    /// directories and System V IPC.
    fn clear(&self) -> io::Result<()> {
        let Some(uid) = self.uid() else {
            return Ok(());
        };
        kill_all_of(uid)?;
        if self.sweep_shared {
            for directory in SHARED_TEMPORARY_DIRS {
                remove_entries_of(Path::new(directory), uid);
            }
            if let Err(error) = ipc::remove_objects_of(uid) {
                tracing::warn!(uid, %error, "could not remove the System V IPC objects a function left");
            }
        }
        Ok(())
    }
}

impl Drop for Cell {
    /// Runs synchronously (a fork and a few file removals): a retired uid must be clear before
    /// anyone may lease it, and at shutdown no later moment is guaranteed.
    fn drop(&mut self) {
        if let Err(error) = self.clear() {
            // Keep the uid out of circulation: its processes may still be running.
            tracing::error!(uid = self.uid(), %error, "could not clear a sandbox uid; it is not used again");
            if let Some(lease) = self.uid.take() {
                std::mem::forget(lease);
            }
        }
        unmount_home(&self.home);
        if let Err(error) = remove_if_present(&self.home) {
            tracing::warn!(home = %self.home.display(), %error, "could not remove a function's home");
        }
    }
}

/// Creates `home` empty, owned by `uid` (when given) and private to it.
fn fresh_home(home: &Path, uid: Option<u32>) -> io::Result<()> {
    // A worker that crashed may have left a memory-backed home mounted here.
    unmount_home(home);
    remove_if_present(home)?;
    std::fs::create_dir(home)?;
    if let Some(uid) = uid {
        std::os::unix::fs::chown(home, Some(uid), Some(uid))?;
    }
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
}

fn remove_if_present(directory: &Path) -> io::Result<()> {
    // remove_dir_all does not follow symbolic links the function may have planted.
    match std::fs::remove_dir_all(directory) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes the entries directly in `directory` that belong to `uid`.
fn remove_entries_of(directory: &Path, uid: u32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if metadata.uid() != uid {
            continue;
        }
        let path = entry.path();
        let removed = if metadata.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(error) = removed {
            tracing::warn!(path = %path.display(), %error, "could not remove a file a function left");
        }
    }
}

fn create_dir_with_mode(directory: &Path, mode: u32) -> io::Result<()> {
    std::fs::create_dir_all(directory)?;
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(mode))
}

/// Sandbox uids reach their code through every directory above the cache.
fn check_searchable(cache_dir: &Path) -> anyhow::Result<()> {
    let absolute = std::fs::canonicalize(cache_dir)
        .with_context(|| format!("worker.cache_dir = {}", cache_dir.display()))?;
    for directory in absolute.ancestors() {
        let mode = std::fs::metadata(directory)
            .with_context(|| format!("worker.cache_dir: {}", directory.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            bail!(
                "configuration: worker.cache_dir = {}: {} is not searchable by other users, so \
                 sandboxed function processes could not reach their code",
                cache_dir.display(),
                directory.display()
            );
        }
    }
    Ok(())
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `true` under bubblewrap as a sandbox uid, as functions will run.
fn probe_bubblewrap(bwrap: &Path, uid: u32) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let output = std::process::Command::new(bwrap)
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
        .args([
            "--unshare-pid",
            "--die-with-parent",
            "--new-session",
            "--",
            "true",
        ])
        .uid(uid)
        .gid(uid)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir("/")
        .output()
        .context("configuration: worker.sandbox.isolation = \"bubblewrap\": could not run bwrap")?;
    if !output.status.success() {
        bail!(
            "configuration: worker.sandbox.isolation = \"bubblewrap\": bwrap does not work here ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_read_with_their_escapes() {
        assert_eq!(
            unescape_mount_path("/var/cache/my\\040dir/work/1"),
            "/var/cache/my dir/work/1"
        );
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path("/odd\\x"), "/odd\\x");
    }

    #[test]
    fn a_cell_has_a_private_home_until_it_is_dropped() {
        let cache =
            std::env::temp_dir().join(format!("sandbox-{}", common::id::ObjectId::generate()));
        let config = SandboxConfig {
            isolation: Isolation::None,
            ..SandboxConfig::default()
        };
        let sandbox = Sandbox::prepare(&config, &cache, &cache.join("code/db"), 2, &[]).unwrap();
        let cell = sandbox.enter(128).unwrap();
        let other = sandbox.enter(128).unwrap();
        assert_ne!(cell.home(), other.home());
        assert_eq!(cell.uid(), None);
        let mode = std::fs::metadata(cell.home()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::write(cell.home().join("left-behind"), "x").unwrap();
        let home = cell.home().to_path_buf();
        drop(cell);
        assert!(!home.exists(), "the home goes with its cell");
        drop(other);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn bubblewrap_sees_the_system_its_own_code_and_bootstraps_and_writes_in_memory() {
        let cache = PathBuf::from("/var/cache/tasks");
        let sandbox = Sandbox {
            name: "task_service_1_0".to_owned(),
            mode: Mode::Bubblewrap(PathBuf::from("/usr/bin/bwrap")),
            uids: None,
            work_root: cache.join("work"),
            readable: vec!["/usr".into(), "/proc".into(), "/opt/runtimes".into()],
            disk_bytes: 1024,
            memory_homes: false,
            landlock: None,
            processes: 64,
            open_files: 1024,
            file_size_bytes: 1,
            next_home: AtomicU64::new(0),
            egress: None,
            cgroups: None,
        };
        let cell = Cell {
            home: cache.join("work/64000"),
            uid: None,
            sweep_shared: false,
            group: None,
        };
        let args = sandbox.bubblewrap_args(&cell, &cache.join("code/abc"), &cache.join("runtimes"));
        let args: Vec<&str> = args.iter().filter_map(|a| a.to_str()).collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("--ro-bind-try /usr /usr --ro-bind-try /opt/runtimes /opt/runtimes --dev /dev --proc /proc "), "{joined}");
        assert!(
            !joined.contains("--ro-bind / /"),
            "no view of the whole host: {joined}"
        );
        for writable in ["/tmp", "/dev/shm", "/var/cache/tasks/work/64000"] {
            assert!(
                joined.contains(&format!("--size 1024 --tmpfs {writable}")),
                "{joined}"
            );
        }
        assert!(
            joined.contains("--ro-bind /var/cache/tasks/code/abc /var/cache/tasks/code/abc"),
            "{joined}"
        );
        assert!(
            joined.contains("--ro-bind /var/cache/tasks/runtimes /var/cache/tasks/runtimes"),
            "{joined}"
        );
        assert!(
            joined.contains("--chdir /var/cache/tasks/code/abc"),
            "{joined}"
        );
        for flag in [
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--die-with-parent",
            "--new-session",
        ] {
            assert!(args.contains(&flag), "{flag}: {joined}");
        }
        assert!(
            !args.contains(&"--unshare-net"),
            "the Runtime API is on loopback"
        );
    }
}
