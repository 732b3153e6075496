//! Set-up of a function process in the forked child, just before it executes the runtime.
//!
//! Everything here runs between fork and exec in a copy of a multi-threaded process, so it may
//! only make async-signal-safe calls: plain system calls, no allocation, no locks.

use std::io;

use super::cgroups::Join;

/// What a function process may use; inherited by everything it starts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `RLIMIT_DATA`: the writable memory a process commits (heap, anonymous mappings) but not
    /// address space merely reserved, which node reserves a lot of.
    pub memory_bytes: u64,
    /// `RLIMIT_NPROC`, which counts every process and thread of the uid: set only when the
    /// process has a uid of its own, as otherwise it would count the worker's too.
    pub processes: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// `RLIMIT_FSIZE`.
    pub file_size_bytes: u64,
    /// The system calls refused to the process (see `seccomp`), with a filtered network.
    pub seccomp: Option<&'static [libc::sock_filter]>,
    /// The control group the process joins, which bounds the memory and the processes of all
    /// it starts (see `cgroups`).
    pub cgroup: Join,
    /// The Landlock ruleset confining the files the process may touch (see `landlock`).
    pub landlock: Option<i32>,
}

impl Limits {
    /// Applies the limits in the child. Rust's standard library has already switched the uid
    /// and gid (and dropped supplementary groups) when this runs, which matters: a change of
    /// credentials clears the parent-death signal, so it must be set afterwards.
    pub fn apply_in_child(&self, worker: libc::pid_t) -> io::Result<()> {
        // First, so that everything the runtime allocates is counted.
        self.cgroup.join_in_child()?;
        // Before lowering RLIMIT_NOFILE: inherited descriptors may lie above the new limit.
        close_inherited_descriptors_on_exec()?;
        set_limit(libc::RLIMIT_DATA, self.memory_bytes)?;
        if let Some(processes) = self.processes {
            set_limit(libc::RLIMIT_NPROC, processes)?;
        }
        set_limit(libc::RLIMIT_NOFILE, self.open_files)?;
        set_limit(libc::RLIMIT_FSIZE, self.file_size_bytes)?;
        set_limit(libc::RLIMIT_CORE, 0)?;
        // SAFETY: prctl and getppid are plain system calls, safe between fork and exec.
        unsafe {
            // No set-uid program can give the function back privileges.
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        }
        if let Some(ruleset) = self.landlock {
            super::landlock::restrict_in_child(ruleset)?;
        }
        if let Some(filter) = self.seccomp {
            super::seccomp::install(filter)?;
        }
        // SAFETY: as above.
        unsafe {
            // If the worker dies (even by SIGKILL) its function processes die with it.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL))?;
            // The worker may have died before the line above: then nobody would kill us.
            // (An OS error code, as building any other error would allocate.)
            if libc::getppid() != worker {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
        }
        Ok(())
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: setrlimit is a plain system call reading a value on this stack.
    check(unsafe { libc::setrlimit(resource, &limit) })
}

/// Marks every descriptor above stderr close-on-exec. The worker opens its own descriptors
/// close-on-exec, but it may have inherited others from whatever started it. Closing them
/// here instead would also close the pipe through which the standard library reports a failed
/// exec.
fn close_inherited_descriptors_on_exec() -> io::Result<()> {
    // SAFETY: close_range is a plain system call.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked == 0 {
        return Ok(());
    }
    // Kernels before 5.11: mark them one by one, up to the current limit.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a value on this stack.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    let highest = limit.rlim_cur.min(1 << 20) as libc::c_int;
    for descriptor in 3..highest {
        // SAFETY: fcntl on a descriptor number; one that is not open just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(descriptor, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(descriptor, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
    Ok(())
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
