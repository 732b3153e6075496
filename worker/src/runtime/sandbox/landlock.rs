//! Which files a function process may touch, as a Landlock ruleset (Linux 5.13+, no
//! privilege needed) it restricts itself to just before it executes its runtime.
//!
//! With `users` isolation a process runs as a uid of its own, which keeps it out of other
//! users' private files but not out of what the host leaves world-readable (a project
//! checkout, the service's configuration directory) or world-writable (`/tmp`). Under the
//! ruleset it may read and execute only the system's directories, its code and the
//! bootstraps, read and write only its home and `/dev/shm` (and the device files of `/dev`),
//! and nothing else. (`bubblewrap` isolation gets the same view from its mount namespace.)

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The system's directories a function reads: its runtimes, their libraries, the
/// configuration they read (certificates, time zones, name resolution), `/proc` and `/sys`.
pub const SYSTEM_PATHS: [&str; 11] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/proc", "/sys",
];

const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
/// Everything the first version of Landlock governs (removing, making every kind of file).
const ABI_1: u64 = (1 << 13) - 1;
const REFER: u64 = 1 << 13;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;

const READ: u64 = EXECUTE | READ_FILE | READ_DIR;

const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: libc::c_int = 1;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The kernel's Landlock: what it can govern.
#[derive(Debug, Clone, Copy)]
pub struct Landlock {
    handled: u64,
}

impl Landlock {
    /// Landlock as this kernel offers it, or why not.
    pub fn probe() -> Result<Landlock, String> {
        // SAFETY: asks for the ABI version; no pointer is read.
        let abi = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0,
                CREATE_RULESET_VERSION,
            )
        };
        if abi < 1 {
            return Err(format!(
                "the kernel offers no Landlock ({})",
                io::Error::last_os_error()
            ));
        }
        let mut handled = ABI_1;
        if abi >= 2 {
            handled |= REFER;
        }
        if abi >= 3 {
            handled |= TRUNCATE;
        }
        if abi >= 5 {
            handled |= IOCTL_DEV;
        }
        Ok(Landlock { handled })
    }

    /// The ruleset of one process: `readable` directories (system paths, its code, the
    /// bootstraps) and its `home`, where it may do anything.
    pub fn ruleset(&self, readable: &[&Path], home: &Path) -> io::Result<Ruleset> {
        let attr = RulesetAttr {
            handled_access_fs: self.handled,
        };
        // SAFETY: the kernel reads `attr` for the size given and returns a new descriptor.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &raw const attr,
                std::mem::size_of::<RulesetAttr>(),
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just returned to us and nothing else owns it.
        let ruleset = Ruleset(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        let everything = self.handled;
        let device_files = READ | WRITE_FILE | (self.handled & (TRUNCATE | IOCTL_DEV));
        let mut rules: Vec<(PathBuf, u64)> = readable
            .iter()
            .map(|path| (path.to_path_buf(), READ))
            .collect();
        rules.push(("/dev".into(), device_files));
        // POSIX shared memory and semaphores (python's multiprocessing) live there.
        rules.push(("/dev/shm".into(), everything & !EXECUTE));
        rules.push((home.to_path_buf(), everything));
        for (path, access) in rules {
            ruleset.allow(&path, access)?;
        }
        Ok(ruleset)
    }
}

/// A ruleset ready to restrict a process; its descriptor stays open until the process has
/// executed its runtime.
#[derive(Debug)]
pub struct Ruleset(OwnedFd);

impl Ruleset {
    fn allow(&self, path: &Path, access: u64) -> io::Result<()> {
        let Ok(name) = CString::new(path.as_os_str().as_bytes()) else {
            return Ok(());
        };
        // SAFETY: open with a NUL-terminated path; O_PATH opens without reading.
        let fd = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            // A system directory this host does not have is nothing to allow.
            return match io::Error::last_os_error() {
                error if error.kind() == io::ErrorKind::NotFound => Ok(()),
                error => Err(error),
            };
        }
        // SAFETY: the descriptor was just opened and nothing else owns it.
        let parent = unsafe { File::from_raw_fd(fd) };
        // Rights on a file (not a directory) are limited to what applies to files.
        let access = if parent.metadata()?.is_dir() {
            access
        } else {
            access & (EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV)
        };
        let rule = PathBeneathAttr {
            allowed_access: access,
            parent_fd: parent.as_raw_fd(),
        };
        // SAFETY: the kernel reads the rule; both descriptors are open.
        let added = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.0.as_raw_fd(),
                RULE_PATH_BENEATH,
                &raw const rule,
                0,
            )
        };
        if added == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// What the child needs to restrict itself.
    pub fn descriptor(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// Restricts the calling process to the ruleset `descriptor`; `no_new_privs` must be set.
/// Only a system call: safe between fork and exec.
pub fn restrict_in_child(descriptor: i32) -> io::Result<()> {
    // SAFETY: takes a descriptor number; no memory is passed.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, descriptor, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
