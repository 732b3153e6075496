//! The uids function processes run as: a range leased one uid per process, and the means to
//! end everything that runs under a uid before it is leased again.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The uids of the configured range that this worker may lease.
pub struct UidPool {
    shared: Arc<Shared>,
}

struct Shared {
    lock_dir: PathBuf,
    /// Uids not leased by this worker, least recently returned first.
    free: Mutex<VecDeque<u32>>,
}

/// One uid, held until dropped. Its lock file keeps every other worker on the host (and every
/// other pool in this one) away from it, so two processes never share a uid.
pub struct UidLease {
    uid: u32,
    lock: Option<File>,
    shared: Arc<Shared>,
}

impl UidPool {
    /// A pool of `count` uids from `base`, coordinated through lock files in `lock_dir`.
    pub fn new(base: u32, count: u32, lock_dir: &Path) -> io::Result<UidPool> {
        if base == 0 || base.checked_add(count).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the uid range {base} + {count} is not a range of unprivileged uids"),
            ));
        }
        prepare_lock_dir(lock_dir)?;
        Ok(UidPool {
            shared: Arc::new(Shared {
                lock_dir: lock_dir.to_path_buf(),
                free: Mutex::new((base..base + count).collect()),
            }),
        })
    }

    /// A uid no one else holds, or `None` when every uid of the range is taken.
    pub fn lease(&self) -> io::Result<Option<UidLease>> {
        let Ok(mut free) = self.shared.free.lock() else {
            return Ok(None);
        };
        for _ in 0..free.len() {
            let Some(uid) = free.pop_front() else { break };
            match self.try_lock(uid) {
                Ok(Some(lock)) => {
                    return Ok(Some(UidLease {
                        uid,
                        lock: Some(lock),
                        shared: self.shared.clone(),
                    }));
                }
                // Held by another worker: try it again later.
                Ok(None) => free.push_back(uid),
                Err(error) => {
                    free.push_back(uid);
                    return Err(error);
                }
            }
        }
        Ok(None)
    }

    fn try_lock(&self, uid: u32) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.shared.lock_dir.join(format!("{uid}.lock")))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(error)) => Err(error),
        }
    }
}

impl UidLease {
    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        // Unlock before the uid is offered again, or this very pool would find it taken.
        drop(self.lock.take());
        if let Ok(mut free) = self.shared.free.lock() {
            free.push_back(self.uid);
        }
    }
}

/// Creates the lock directory, refusing one that another user could tamper with (it may sit
/// in a world-writable place such as `/run/lock`).
fn prepare_lock_dir(directory: &Path) -> io::Result<()> {
    std::fs::create_dir_all(directory)?;
    let metadata = std::fs::symlink_metadata(directory)?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if !metadata.is_dir() || metadata.uid() != euid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} must be a directory owned by uid {euid}",
                directory.display()
            ),
        ));
    }
    std::fs::set_permissions(directory, std::fs::Permissions::from_mode(0o755))
}

/// Sends SIGKILL to every process running as `uid`, including those that left their process
/// group with `setsid()`. A short-lived child takes the uid and calls `kill(-1, SIGKILL)`,
/// which on Linux reaches every process the caller may signal except itself: for an
/// unprivileged caller, exactly the processes of its own uid. The kernel sends it under the
/// task-list lock that `fork` also takes, so a fork bomb cannot outrun it.
pub fn kill_all_of(uid: u32) -> io::Result<()> {
    // SAFETY: between fork and _exit the child only makes async-signal-safe system calls
    // (setgroups, setgid, setuid, kill, _exit) on values on its own stack.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; the child never returns from this block.
        unsafe {
            let switched = libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(uid) == 0
                && libc::setuid(uid) == 0;
            if switched {
                // ESRCH, nothing to kill, is the usual answer.
                libc::kill(-1, libc::SIGKILL);
            }
            libc::_exit(if switched { 0 } else { 1 });
        }
    }
    match wait_for(pid)? {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("could not switch to uid {uid} to stop its processes"),
        )),
    }
}

/// Waits for a child that exits at once; returns its exit code (-1 if it was killed).
fn wait_for(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, writing into a value on this stack.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            break;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_dir() -> PathBuf {
        std::env::temp_dir().join(format!("uid-locks-{}", common::id::ObjectId::generate()))
    }

    #[test]
    fn leases_each_uid_once_across_pools() {
        let directory = lock_dir();
        let first = UidPool::new(300_000, 2, &directory).unwrap();
        let second = UidPool::new(300_000, 2, &directory).unwrap();
        let a = first.lease().unwrap().unwrap();
        let b = second.lease().unwrap().unwrap();
        assert_ne!(a.uid(), b.uid());
        assert!(first.lease().unwrap().is_none(), "both uids are taken");
        let returned = b.uid();
        drop(b);
        assert_eq!(first.lease().unwrap().unwrap().uid(), returned);
        drop(a);
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn rejects_ranges_that_include_root_or_overflow() {
        let directory = lock_dir();
        assert!(UidPool::new(0, 10, &directory).is_err());
        assert!(UidPool::new(u32::MAX - 1, 10, &directory).is_err());
    }
}
