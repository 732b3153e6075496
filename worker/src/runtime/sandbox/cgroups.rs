//! A control group per function process, so that the kernel bounds all the memory its
//! processes use (shared memory and files in memory-backed file systems included, which no
//! rlimit counts) and the number of its processes, and tells when it killed one for memory.
//!
//! Both cgroup versions are supported: v1 with its `memory` and `pids` hierarchies (what this
//! project's own machines have) and v2. The worker makes a group of its own under the one it
//! runs in, and a child of that group per function process; the process joins its group
//! between fork and exec, through a `cgroup.procs` the worker opened (the kernel checks the
//! opener's rights). Where the worker cannot do this (no controller, a read-only cgroup file
//! system in a container), it says why and the rlimits remain.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How the worker's groups are laid out.
#[derive(Debug)]
enum Version {
    /// One directory per hierarchy: memory, then pids when mounted.
    V1 {
        memory: PathBuf,
        pids: Option<PathBuf>,
    },
    V2 {
        group: PathBuf,
    },
}

/// The worker's own group of function groups; removed, with what is left in it, when dropped.
#[derive(Debug)]
pub struct Cgroups {
    version: Version,
    next: AtomicU64,
    /// Groups whose processes had not all exited when they were retired; removed later.
    leftovers: Arc<Mutex<Vec<PathBuf>>>,
}

/// The group of one function process.
#[derive(Debug)]
pub struct ProcessGroup {
    directories: Vec<PathBuf>,
    /// `cgroup.procs` of each directory, open for the process to join.
    procs: Vec<File>,
    /// Where the kernel counts the processes it killed for memory.
    memory_events: PathBuf,
    leftovers: Arc<Mutex<Vec<PathBuf>>>,
}

/// What the child needs to join its group: the open `cgroup.procs` descriptors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Join {
    descriptors: [i32; 2],
    count: usize,
}

impl Cgroups {
    /// Makes the worker's group, named `name`, in the hierarchies of the group it runs in.
    pub fn prepare(name: &str) -> Result<Cgroups, String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
        let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
        let version = match v1_directory(&mounts, &own, "memory") {
            Some(memory) => {
                let pids = v1_directory(&mounts, &own, "pids");
                let memory = make_group(&memory.join(name))?;
                let pids = pids.map(|pids| make_group(&pids.join(name))).transpose()?;
                Version::V1 { memory, pids }
            }
            None => Version::V2 {
                group: prepare_v2(&mounts, &own, name)?,
            },
        };
        Ok(Cgroups {
            version,
            next: AtomicU64::new(0),
            leftovers: Arc::default(),
        })
    }

    /// A fresh group holding at most `memory_bytes` and `processes` processes and threads.
    pub fn create(&self, memory_bytes: u64, processes: u64) -> io::Result<ProcessGroup> {
        self.remove_leftovers();
        let name = self.next.fetch_add(1, Ordering::Relaxed).to_string();
        let mut group = ProcessGroup {
            directories: Vec::new(),
            procs: Vec::new(),
            memory_events: PathBuf::new(),
            leftovers: self.leftovers.clone(),
        };
        match &self.version {
            Version::V1 { memory, pids } => {
                let directory = group.add(&memory.join(&name))?;
                write(&directory.join("memory.limit_in_bytes"), memory_bytes)?;
                // With swap, the sum of memory and swap; absent where swap is not accounted.
                let with_swap = directory.join("memory.memsw.limit_in_bytes");
                if with_swap.exists() {
                    write(&with_swap, memory_bytes)?;
                }
                group.memory_events = directory.join("memory.oom_control");
                if let Some(pids) = pids {
                    let directory = group.add(&pids.join(&name))?;
                    write(&directory.join("pids.max"), processes)?;
                }
            }
            Version::V2 { group: parent } => {
                let directory = group.add(&parent.join(&name))?;
                write(&directory.join("memory.max"), memory_bytes)?;
                let swap = directory.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, 0)?;
                }
                let pids = directory.join("pids.max");
                if pids.exists() {
                    write(&pids, processes)?;
                }
                group.memory_events = directory.join("memory.events");
            }
        }
        Ok(group)
    }

    fn remove_leftovers(&self) {
        let mut leftovers = self
            .leftovers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        leftovers.retain(|directory| remove_group(directory).is_err());
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // The function processes are gone by now; give the last of them a moment to exit.
        for _ in 0..20 {
            self.remove_leftovers();
            let done = self
                .leftovers
                .lock()
                .map(|leftovers| leftovers.is_empty())
                .unwrap_or(true);
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let directories = match &self.version {
            Version::V1 { memory, pids } => vec![Some(memory), pids.as_ref()],
            Version::V2 { group } => vec![Some(group)],
        };
        for directory in directories.into_iter().flatten() {
            if let Err(error) = remove_group(directory) {
                tracing::warn!(group = %directory.display(), %error, "could not remove the worker's control group");
            }
        }
    }
}

impl ProcessGroup {
    fn add(&mut self, directory: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir(directory)?;
        self.directories.push(directory.to_path_buf());
        self.procs.push(
            OpenOptions::new()
                .write(true)
                .open(directory.join("cgroup.procs"))?,
        );
        Ok(directory.to_path_buf())
    }

    pub fn join(&self) -> Join {
        let mut join = Join::default();
        for file in self.procs.iter().take(join.descriptors.len()) {
            join.descriptors[join.count] = file.as_raw_fd();
            join.count += 1;
        }
        join
    }

    /// How many processes of the group the kernel killed for lack of memory.
    pub fn memory_kills(&self) -> u64 {
        std::fs::read_to_string(&self.memory_events)
            .ok()
            .and_then(|events| {
                events.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|count| count.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.procs.clear();
        let mut leftovers = self
            .leftovers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for directory in &self.directories {
            // Killed processes may take a moment to exit.
            if remove_group(directory).is_err() {
                leftovers.push(directory.clone());
            }
        }
    }
}

impl Join {
    /// Moves the calling process into the group. Only system calls: safe between fork and exec.
    pub fn join_in_child(&self) -> io::Result<()> {
        for descriptor in &self.descriptors[..self.count] {
            // SAFETY: write from a static buffer to a descriptor the parent opened.
            if unsafe { libc::write(*descriptor, b"0".as_ptr().cast(), 1) } != 1 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

fn make_group(directory: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(directory)
        .map_err(|e| format!("cannot create {}: {e}", directory.display()))?;
    Ok(directory.to_path_buf())
}

/// Removes a group (and the groups in it, which hold no processes any more).
fn remove_group(directory: &Path) -> io::Result<()> {
    if let Ok(entries) = std::fs::read_dir(directory) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_group(&entry.path())?;
            }
        }
    }
    match std::fs::remove_dir(directory) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn write(file: &Path, value: u64) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .open(file)?
        .write_all(value.to_string().as_bytes())
}

/// The directory of the worker's own group in the v1 hierarchy of `controller`, when mounted
/// writable.
fn v1_directory(mounts: &str, own: &str, controller: &str) -> Option<PathBuf> {
    let path = own.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })?;
    let mount = mounts.lines().find_map(|line| {
        let mount = Mount::parse(line)?;
        (mount.kind == "cgroup" && mount.options.split(',').any(|o| o == controller))
            .then_some(mount)
    })?;
    mount.directory_of(&path)
}

/// The worker's group of groups under the v2 group it runs in. A v2 group holding processes
/// cannot hand controllers to its children, so when the worker is the only process of its
/// group, it moves into a leaf of its own first (as other nested supervisors do).
fn prepare_v2(mounts: &str, own: &str, name: &str) -> Result<PathBuf, String> {
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or("no cgroup v1 memory hierarchy and no cgroup v2 group")?;
    let mount = mounts
        .lines()
        .filter_map(Mount::parse)
        .find(|mount| mount.kind == "cgroup2")
        .ok_or("no cgroup v2 file system is mounted")?;
    let own = mount
        .directory_of(path)
        .ok_or("the cgroup file system is read-only")?;
    let controllers = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    if !controllers.split_whitespace().any(|c| c == "memory") {
        return Err(format!(
            "the memory controller is not available in {}",
            own.display()
        ));
    }
    let wanted: Vec<&str> = ["memory", "pids"]
        .into_iter()
        .filter(|c| controllers.split_whitespace().any(|have| have == *c))
        .collect();
    let enabled = std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap_or_default();
    if !wanted
        .iter()
        .all(|c| enabled.split_whitespace().any(|have| have == *c))
    {
        let pid = std::process::id().to_string();
        let procs = std::fs::read_to_string(own.join("cgroup.procs")).unwrap_or_default();
        if procs.lines().any(|other| other.trim() != pid) {
            return Err(format!(
                "{} holds other processes than the worker, so it cannot have child groups \
                 with controllers (give the worker a cgroup of its own)",
                own.display()
            ));
        }
        let leaf = make_group(&own.join("worker"))?;
        std::fs::write(leaf.join("cgroup.procs"), &pid)
            .map_err(|e| format!("cannot move the worker into {}: {e}", leaf.display()))?;
        enable(&own, &wanted)?;
    }
    let group = make_group(&own.join(name))?;
    enable(&group, &wanted)?;
    Ok(group)
}

fn enable(group: &Path, controllers: &[&str]) -> Result<(), String> {
    let line: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
    std::fs::write(group.join("cgroup.subtree_control"), line.join(" ")).map_err(|e| {
        format!(
            "cannot enable {} for the groups under {}: {e}",
            controllers.join(", "),
            group.display()
        )
    })
}

/// Removes the groups of workers of this host that are gone.
pub(super) fn remove_groups_of_dead_workers() {
    let (Ok(mounts), Ok(own)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return;
    };
    let (mounts, own) = (mounts.as_str(), own.as_str());
    let mut parents: Vec<PathBuf> = ["memory", "pids"]
        .iter()
        .filter_map(|controller| v1_directory(mounts, own, controller))
        .collect();
    if let Some(path) = own.lines().find_map(|line| line.strip_prefix("0::"))
        && let Some(mount) = mounts
            .lines()
            .filter_map(Mount::parse)
            .find(|mount| mount.kind == "cgroup2")
        && let Some(directory) = mount.directory_of(path)
    {
        parents.push(directory);
    }
    for parent in parents {
        let Ok(entries) = std::fs::read_dir(&parent) else {
            continue;
        };
        for entry in entries.flatten() {
            if super::made_by_dead_worker(&entry.file_name().to_string_lossy()) {
                let _ = remove_group(&entry.path());
            }
        }
    }
}

/// One line of `/proc/self/mountinfo`.
struct Mount<'a> {
    root: &'a str,
    point: &'a str,
    kind: &'a str,
    options: &'a str,
    writable: bool,
}

impl<'a> Mount<'a> {
    fn parse(line: &'a str) -> Option<Mount<'a>> {
        let (before, after) = line.split_once(" - ")?;
        let before: Vec<&str> = before.split(' ').collect();
        let mut after = after.split(' ');
        Some(Mount {
            root: before.get(3)?,
            point: before.get(4)?,
            writable: before.get(5)?.split(',').any(|o| o == "rw"),
            kind: after.next()?,
            options: after.nth(1)?,
        })
    }

    /// Where the group at `path` (as `/proc/self/cgroup` names it) is under this mount.
    fn directory_of(&self, path: &str) -> Option<PathBuf> {
        if !self.writable {
            return None;
        }
        let relative = path.strip_prefix(self.root).unwrap_or(path);
        Some(Path::new(self.point).join(relative.trim_start_matches('/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
35 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 25 0:31 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
37 25 0:32 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
38 25 0:33 / /sys/fs/cgroup/cpu ro,relatime - cgroup cgroup ro,cpu";

    const OWN: &str = "8:pids:/\n4:memory:/jobs/a1\n1:cpu:/x\n0::/\n";

    #[test]
    fn finds_the_workers_own_v1_groups_on_writable_mounts() {
        assert_eq!(
            v1_directory(MOUNTS, OWN, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/jobs/a1"))
        );
        assert_eq!(
            v1_directory(MOUNTS, OWN, "pids"),
            Some(PathBuf::from("/sys/fs/cgroup/pids"))
        );
        assert_eq!(v1_directory(MOUNTS, OWN, "cpu"), None, "read-only");
        assert_eq!(v1_directory(MOUNTS, OWN, "blkio"), None);
    }

    #[test]
    fn a_mount_of_a_namespace_root_maps_paths_below_it() {
        let mount = Mount::parse(
            "40 30 0:27 /docker/abc /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate",
        )
        .unwrap();
        assert_eq!(mount.kind, "cgroup2");
        assert_eq!(
            mount.directory_of("/docker/abc/inner"),
            Some(PathBuf::from("/sys/fs/cgroup/inner"))
        );
        assert_eq!(
            mount.directory_of("/"),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
    }
}
