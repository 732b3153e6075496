//! Who is on the other end of a loopback TCP connection: the uid that owns the peer's socket,
//! read from the kernel's socket tables (`/proc/net/tcp` and `/proc/net/tcp6`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Socket tables of the worker's network namespace, which is also that of its functions.
const TABLES: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];

/// The uid owning the socket at `peer` that is connected to `local`, or `None` when no such
/// socket exists any more.
pub fn peer_uid(peer: SocketAddr, local: SocketAddr) -> std::io::Result<Option<u32>> {
    for table in TABLES {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // A kernel without IPv6 has no tcp6 table.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        if let Some(uid) = find_owner(&text, peer, local) {
            return Ok(Some(uid));
        }
    }
    Ok(None)
}

/// In one table, the uid of the row whose local address is `peer` and whose remote address is
/// `local`: the peer's own end of the connection. The columns are
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid …`.
pub fn find_owner(table: &str, peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let row_local = parse_address(fields.get(1)?)?;
        let row_remote = parse_address(fields.get(2)?)?;
        if same(row_local, peer) && same(row_remote, local) {
            fields.get(7)?.parse().ok()
        } else {
            None
        }
    })
}

/// Parses `HEX_ADDRESS:HEX_PORT`. The kernel prints an address as 32-bit words in the host's
/// byte order and the port as a plain number.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (address, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in address.as_bytes().chunks(8) {
        let word = std::str::from_utf8(word).ok()?;
        bytes.extend_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Equal addresses, an IPv4 address and its IPv4-mapped IPv6 form included.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    a.port() == b.port() && canonical(a.ip()) == canonical(b.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host-order hex word as the kernel prints it.
    fn word(bytes: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(bytes))
    }

    fn v4(address: [u8; 4], port: u16) -> String {
        format!("{}:{port:04X}", word(address))
    }

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn row(local: &str, remote: &str, state: &str, uid: u32) -> String {
        format!(
            "   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000 {uid:>5}        0 4242 1 0000000000000000 20 4 30 10 -1"
        )
    }

    fn table(rows: &[String]) -> String {
        std::iter::once(HEADER.to_owned())
            .chain(rows.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn parses_ipv4_and_ipv6_addresses() {
        assert_eq!(
            parse_address(&v4([127, 0, 0, 1], 8080)),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        let loopback6 = format!(
            "{}{}{}{}:0050",
            word([0; 4]),
            word([0; 4]),
            word([0; 4]),
            word([0, 0, 0, 1])
        );
        assert_eq!(parse_address(&loopback6), Some("[::1]:80".parse().unwrap()));
        assert_eq!(parse_address("zz:0050"), None);
        assert_eq!(parse_address("0100007F"), None);
        assert_eq!(parse_address("0100007F:XYZ"), None);
    }

    #[test]
    fn finds_the_uid_of_the_peers_end_only() {
        let listening: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        let text = table(&[
            // The listener and the worker's accepted end belong to the worker (uid 0).
            row(&v4([127, 0, 0, 1], 40000), &v4([0, 0, 0, 0], 0), "0A", 0),
            row(
                &v4([127, 0, 0, 1], 40000),
                &v4([127, 0, 0, 1], 51234),
                "01",
                0,
            ),
            row(
                &v4([127, 0, 0, 1], 51234),
                &v4([127, 0, 0, 1], 40000),
                "01",
                64003,
            ),
        ]);
        assert_eq!(find_owner(&text, peer, listening), Some(64003));
        let stranger: SocketAddr = "127.0.0.1:51235".parse().unwrap();
        assert_eq!(find_owner(&text, stranger, listening), None);
        assert_eq!(find_owner(HEADER, peer, listening), None);
    }

    #[test]
    fn matches_ipv4_mapped_rows_of_the_tcp6_table() {
        let listening: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        let mapped = |port: u16| {
            format!(
                "{}{}{}{}:{port:04X}",
                word([0; 4]),
                word([0; 4]),
                word([0, 0, 0xff, 0xff]),
                word([127, 0, 0, 1])
            )
        };
        let text = table(&[row(&mapped(51234), &mapped(40000), "01", 64010)]);
        assert_eq!(find_owner(&text, peer, listening), Some(64010));
    }

    #[test]
    fn skips_malformed_rows() {
        let listening: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:51234".parse().unwrap();
        let text = table(&[
            "   0: garbage".to_owned(),
            format!(
                "   1: {} {} 01",
                v4([127, 0, 0, 1], 51234),
                v4([127, 0, 0, 1], 40000)
            ),
            row(
                &v4([127, 0, 0, 1], 51234),
                &v4([127, 0, 0, 1], 40000),
                "01",
                7,
            ),
        ]);
        assert_eq!(find_owner(&text, peer, listening), Some(7));
    }

    #[test]
    fn reads_the_owner_of_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(local).unwrap();
        let (_server_end, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(peer_uid(peer, local).unwrap(), Some(euid));
        drop(client);
    }
}
