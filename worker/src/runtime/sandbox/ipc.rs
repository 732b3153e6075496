//! System V IPC objects (shared memory, semaphores, message queues) a function left behind.
//! They outlive the processes that made them, and a process under a sandbox uid's next lease
//! could read them: with one uid per process and no IPC namespace of their own, the objects of
//! a retired uid are removed with its processes.

use std::io;

/// One kind of object: the file listing them, and which of its columns hold the id, the
/// owner and the creator.
struct Kind {
    listing: &'static str,
    id: usize,
    uid: usize,
    cuid: usize,
    remove: fn(i32) -> i32,
}

const KINDS: [Kind; 3] = [
    Kind {
        listing: "/proc/sysvipc/shm",
        id: 1,
        uid: 7,
        cuid: 9,
        // SAFETY (each): the call takes an id and no pointer the kernel would write through.
        remove: |id| unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
    },
    Kind {
        listing: "/proc/sysvipc/sem",
        id: 1,
        uid: 4,
        cuid: 6,
        remove: |id| unsafe { libc::semctl(id, 0, libc::IPC_RMID) },
    },
    Kind {
        listing: "/proc/sysvipc/msg",
        id: 1,
        uid: 7,
        cuid: 9,
        remove: |id| unsafe { libc::msgctl(id, libc::IPC_RMID, std::ptr::null_mut()) },
    },
];

/// Removes every System V IPC object owned or created by `uid`; returns how many.
pub fn remove_objects_of(uid: u32) -> io::Result<usize> {
    let mut removed = 0;
    for kind in &KINDS {
        let listing = match std::fs::read_to_string(kind.listing) {
            Ok(listing) => listing,
            // A kernel without System V IPC has nothing to remove.
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for id in ids_of(&listing, kind, uid) {
            if (kind.remove)(id) == 0 {
                removed += 1;
            } else {
                let error = io::Error::last_os_error();
                // Gone in the meantime (EINVAL, EIDRM) is what we wanted.
                if !matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EIDRM)) {
                    return Err(error);
                }
            }
        }
    }
    Ok(removed)
}

/// The ids in a `/proc/sysvipc` listing (a header line, then one object per line) of the
/// objects `uid` owns or created.
fn ids_of(listing: &str, kind: &Kind, uid: u32) -> Vec<i32> {
    listing
        .lines()
        .skip(1)
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let number = |column: usize| columns.get(column)?.parse::<u64>().ok();
            let belongs = number(kind.uid) == Some(u64::from(uid))
                || number(kind.cuid) == Some(u64::from(uid));
            belongs
                .then(|| columns.get(kind.id)?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_objects_a_uid_owns_or_created() {
        let listing = "       key      shmid perms  size  cpid  lpid nattch   uid   gid  cuid  cgid atime dtime ctime rss swap\n\
                       729204 5 600 56 14437 17377 5 101 104 101 104 0 0 0 4096 0\n\
                       0 7 600 56 1 1 0 64001 64001 64001 64001 0 0 0 4096 0\n\
                       0 9 600 56 1 1 0 0 0 64001 0 0 0 0 4096 0\n";
        assert_eq!(ids_of(listing, &KINDS[0], 64001), vec![7, 9]);
        assert_eq!(ids_of(listing, &KINDS[0], 64002), Vec::<i32>::new());
    }
}
