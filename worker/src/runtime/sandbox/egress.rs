//! What function processes may connect to: the outside world, and on this host only their own
//! Runtime API.
//!
//! Function processes share the worker's network namespace: their Runtime API listens on its
//! loopback, and they call third-party APIs through its routes. So the filter is keyed on the
//! sockets' owners, the sandbox uids, with an nftables table of the worker's own (the worker
//! runs as root and needs `CAP_NET_ADMIN` and the `nft` program). For packets of a sandbox uid:
//!
//! - DNS to the resolvers of `/etc/resolv.conf` passes (a container's resolver is often on
//!   loopback), and so does whatever the operator's allow list names;
//! - a TCP connection to loopback is marked and judged where it arrives: only a listening
//!   socket carrying the same mark, which the worker sets on its Runtime API listeners, may
//!   take it (each of those also checks that the caller is the uid it serves);
//! - every other address of this host (loopback included), link-local addresses (cloud
//!   metadata), the service's database and broker and the operator's deny list are refused,
//!   so the caller sees "connection refused" at once rather than a time-out.
//!
//! The table is deleted when the worker stops; one left by a worker that died is deleted by
//! the next worker to start on the host.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::cidr::Cidr;

/// The mark of the Runtime API's listening sockets, and of the loopback connections sandbox
/// uids open (set as bits, so that another rule adding bits of its own does not hide it).
pub const RUNTIME_API_MARK: u32 = 0x5453_0000;

/// Ranges refused to every function even when the operator denies nothing: link-local
/// addresses, where clouds serve instance metadata and credentials.
const ALWAYS_DENIED: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// What function processes may reach besides the outside world, and what not.
#[derive(Debug, Clone, Default)]
pub struct EgressPolicy {
    /// Refused: the service's own addresses and the operator's deny list.
    pub deny: Vec<Cidr>,
    /// Allowed even where something above refuses it.
    pub allow: Vec<Cidr>,
    /// DNS servers functions may query.
    pub resolvers: Vec<IpAddr>,
}

/// The installed filter of one worker; dropping it removes it.
#[derive(Debug)]
pub struct EgressFilter {
    nft: PathBuf,
    table: String,
}

impl EgressFilter {
    /// Installs the filter for the sandbox uids `first..=last` as the table `name` (see
    /// `instance_name`).
    pub fn install(
        name: &str,
        first: u32,
        last: u32,
        policy: &EgressPolicy,
    ) -> anyhow::Result<EgressFilter> {
        let nft = super::find_program("nft")
            .context("the `nft` program (package nftables) is not on the PATH")?;
        let table = name.to_owned();
        run_nft(&nft, &ruleset(&table, first, last, policy))
            .context("installing the nftables rules that filter function processes' connections")?;
        Ok(EgressFilter { nft, table })
    }
}

impl Drop for EgressFilter {
    fn drop(&mut self) {
        if let Err(error) = run_nft(&self.nft, &format!("delete table inet {}\n", self.table)) {
            tracing::warn!(table = %self.table, %error, "could not remove the nftables table of function processes");
        }
    }
}

impl EgressPolicy {
    /// The policy for a worker whose database and broker are at `service_addresses`, with the
    /// operator's lists and this host's resolvers.
    pub fn new(service_addresses: &[IpAddr], deny: &[Cidr], allow: &[Cidr]) -> EgressPolicy {
        let mut denied: Vec<Cidr> = ALWAYS_DENIED
            .iter()
            .filter_map(|range| range.parse().ok())
            .collect();
        denied.extend(service_addresses.iter().copied().map(Cidr::host));
        denied.extend_from_slice(deny);
        EgressPolicy {
            deny: denied,
            allow: allow.to_vec(),
            resolvers: resolvers(Path::new("/etc/resolv.conf")),
        }
    }
}

/// The nameservers of a `resolv.conf`.
fn resolvers(path: &Path) -> Vec<IpAddr> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        // A scoped IPv6 address (`fe80::1%eth0`) is kept without its scope.
        .filter_map(|rest| rest.trim().split('%').next()?.parse().ok())
        .collect()
}

/// The nftables script of one worker's table.
fn ruleset(table: &str, first: u32, last: u32, policy: &EgressPolicy) -> String {
    let set = |name: &str, kind: &str, items: BTreeSet<String>| {
        let elements = if items.is_empty() {
            String::new()
        } else {
            format!(
                " elements = {{ {} }};",
                items.into_iter().collect::<Vec<_>>().join(", ")
            )
        };
        // auto-merge: ranges that overlap (a denied network holding the database) are allowed.
        format!("  set {name} {{ type {kind}; flags interval; auto-merge;{elements} }}\n")
    };
    let of = |ranges: &[Cidr], v4: bool| -> BTreeSet<String> {
        ranges
            .iter()
            .filter(|range| range.is_ipv4() == v4)
            .map(Cidr::to_string)
            .collect()
    };
    let resolvers = |v4: bool| -> BTreeSet<String> {
        policy
            .resolvers
            .iter()
            .filter(|address| address.is_ipv4() == v4)
            .map(IpAddr::to_string)
            .collect()
    };
    let mark = format!("0x{RUNTIME_API_MARK:08x}");
    let mut script = format!("table inet {table} {{\n");
    script += &set("deny4", "ipv4_addr", of(&policy.deny, true));
    script += &set("deny6", "ipv6_addr", of(&policy.deny, false));
    script += &set("allow4", "ipv4_addr", of(&policy.allow, true));
    script += &set("allow6", "ipv6_addr", of(&policy.allow, false));
    script += &set("resolvers4", "ipv4_addr", resolvers(true));
    script += &set("resolvers6", "ipv6_addr", resolvers(false));
    // Before the NAT hooks (-100), so that addresses are judged as the function wrote them.
    script += &format!(
        "  chain output {{
    type filter hook output priority -150; policy accept;
    meta skuid {first}-{last} jump function
  }}
  chain function {{
    meta l4proto {{ tcp, udp }} th dport 53 ip daddr @resolvers4 accept
    meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr @resolvers6 accept
    ip daddr @allow4 accept
    ip6 daddr @allow6 accept
    meta l4proto tcp ip daddr 127.0.0.0/8 meta mark set meta mark | {mark} accept
    meta l4proto tcp ip6 daddr ::1 meta mark set meta mark | {mark} accept
    fib daddr type local reject
    ip daddr @deny4 reject
    ip6 daddr @deny6 reject
  }}
  chain input {{
    type filter hook input priority -150; policy accept;
    meta mark & {mark} == {mark} tcp flags & (syn | ack) == syn socket mark != {mark} reject with tcp reset
  }}
}}
"
    );
    script
}

fn run_nft(nft: &Path, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", nft.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Deletes the tables of workers whose process is gone (they were killed before they could).
pub(super) fn delete_tables_of_dead_workers() {
    let Some(nft) = super::find_program("nft") else {
        return;
    };
    let nft = nft.as_path();
    let Ok(output) = Command::new(nft).args(["-j", "list", "tables"]).output() else {
        return;
    };
    let Ok(listing) = serde_json::from_slice::<serde_json::Value>(&output.stdout) else {
        return;
    };
    let tables = listing["nftables"].as_array().into_iter().flatten();
    for table in tables.filter_map(|item| item.get("table")) {
        let (Some("inet"), Some(name)) = (table["family"].as_str(), table["name"].as_str()) else {
            continue;
        };
        if super::made_by_dead_worker(name)
            && run_nft(nft, &format!("delete table inet {name}\n")).is_ok()
        {
            tracing::info!(
                table = name,
                "removed the function network filter of a worker that is gone"
            );
        }
    }
}

/// Marks a socket (a Runtime API listener, with [`RUNTIME_API_MARK`]).
pub fn mark_socket(socket: &impl std::os::fd::AsRawFd, mark: u32) -> std::io::Result<()> {
    // SAFETY: setsockopt reads a u32 from this stack for the length given.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&raw const mark).cast(),
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_names_the_uids_the_service_and_the_operators_lists() {
        let policy = EgressPolicy {
            deny: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            allow: vec!["10.1.2.3".parse().unwrap()],
            resolvers: vec!["127.0.0.11".parse().unwrap()],
        };
        let script = ruleset("task_service_1_0", 64000, 64033, &policy);
        assert!(
            script.starts_with("table inet task_service_1_0 {"),
            "{script}"
        );
        assert!(
            script.contains("meta skuid 64000-64033 jump function"),
            "{script}"
        );
        assert!(script.contains("set deny4 { type ipv4_addr; flags interval; auto-merge; elements = { 10.0.0.0/8 }; }"), "{script}");
        assert!(script.contains("elements = { fd00::/8 }"), "{script}");
        assert!(script.contains("elements = { 10.1.2.3/32 }"), "{script}");
        assert!(script.contains("elements = { 127.0.0.11 }"), "{script}");
        assert!(
            script.contains("set allow6 { type ipv6_addr; flags interval; auto-merge; }"),
            "{script}"
        );
        assert!(script.contains("socket mark != 0x54530000"), "{script}");
    }

    #[test]
    fn link_local_and_the_service_are_always_denied() {
        let policy = EgressPolicy::new(&["192.0.2.7".parse().unwrap()], &[], &[]);
        let denied: Vec<String> = policy.deny.iter().map(Cidr::to_string).collect();
        assert!(denied.contains(&"169.254.0.0/16".to_owned()), "{denied:?}");
        assert!(denied.contains(&"fe80::/10".to_owned()), "{denied:?}");
        assert!(denied.contains(&"192.0.2.7/32".to_owned()), "{denied:?}");
    }

    #[test]
    fn resolvers_are_read_from_resolv_conf() {
        let path = std::env::temp_dir().join(format!("resolv-{}", std::process::id()));
        std::fs::write(
            &path,
            "# comment\nnameserver 127.0.0.11\nnameserver fe80::1%eth0\nsearch x\n",
        )
        .unwrap();
        let found = resolvers(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            found,
            vec![
                "127.0.0.11".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}
