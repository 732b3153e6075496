//! The system calls a function process may not make, as a seccomp filter installed just
//! before it executes its runtime.
//!
//! The network filter (see `egress`) judges IP packets. Sockets of other families reach what
//! it never sees: a Unix socket of a database on the same host (PostgreSQL's accepts any local
//! user by default on many installations), a container engine's socket, the host's abstract
//! sockets, or a hypervisor through vsock. So a function may open sockets of the IP families
//! and netlink (which name resolution uses to list interfaces) only; connected pairs
//! (`socketpair`), which reach nothing outside the process, stay allowed. `io_uring` could
//! open sockets without passing through this filter, so it is unavailable (runtimes fall back
//! to plain system calls). Other architectures' system call tables (32-bit calls on x86_64)
//! are refused outright.

/// The filter, where the worker knows this architecture's system call numbers.
pub fn filter() -> Option<&'static [libc::sock_filter]> {
    if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        Some(&FILTER)
    } else {
        None
    }
}

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH: u32 = 0;

/// x86_64's x32 system calls carry this bit; a process of ours has no use for them.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Offsets in `struct seccomp_data`: nr, arch, instruction pointer, then the arguments (the
// low half of the first argument on a little-endian machine).
const NR: u32 = 0;
const ARCH_OFFSET: u32 = 4;
const FIRST_ARGUMENT: u32 = 16;

const LOAD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JUMP_IF_EQUAL: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JUMP_IF_AT_LEAST: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const REFUSE: u32 = libc::SECCOMP_RET_ERRNO | libc::EACCES as u32;
const UNSUPPORTED: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;

const fn statement(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Jumps `if_true` or `if_false` instructions ahead.
const fn jump(code: u16, k: u32, if_true: u8, if_false: u8) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: if_true,
        jf: if_false,
        k,
    }
}

static FILTER: [libc::sock_filter; 16] = [
    statement(LOAD, ARCH_OFFSET),
    jump(JUMP_IF_EQUAL, ARCH, 1, 0),
    statement(RETURN, KILL),
    statement(LOAD, NR),
    jump(JUMP_IF_AT_LEAST, X32_SYSCALL_BIT, 0, 1),
    statement(RETURN, UNSUPPORTED),
    jump(JUMP_IF_EQUAL, libc::SYS_io_uring_setup as u32, 0, 1),
    statement(RETURN, UNSUPPORTED),
    jump(JUMP_IF_EQUAL, libc::SYS_socket as u32, 1, 0),
    statement(RETURN, ALLOW),
    // socket(domain, …): the IP families and netlink only.
    statement(LOAD, FIRST_ARGUMENT),
    jump(JUMP_IF_EQUAL, libc::AF_INET as u32, 3, 0),
    jump(JUMP_IF_EQUAL, libc::AF_INET6 as u32, 2, 0),
    jump(JUMP_IF_EQUAL, libc::AF_NETLINK as u32, 1, 0),
    statement(RETURN, REFUSE),
    statement(RETURN, ALLOW),
];

/// Installs `filter` on the calling thread, which must have set `no_new_privs` already.
/// Only system calls: safe between fork and exec.
pub fn install(filter: &[libc::sock_filter]) -> std::io::Result<()> {
    let program = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl reads the program, which outlives the call; the kernel copies it.
    let result = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &raw const program,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
