//! Address ranges in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or a single address), as the
//! sandbox's egress lists take them from the configuration.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network: an address with the bits beyond the prefix cleared, and the prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The range holding only `address`.
    pub fn host(address: IpAddr) -> Cidr {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        Cidr {
            network: address,
            prefix,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.network.is_ipv4()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR range"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        // Clearing the host bits lets `10.1.2.3/8` mean what its writer meant: 10.0.0.0/8.
        let network = match address {
            IpAddr::V4(v4) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_as_their_writer_meant_them() {
        let read = |text: &str| text.parse::<Cidr>().map(|c| c.to_string());
        assert_eq!(read("10.1.2.3/8").unwrap(), "10.0.0.0/8");
        assert_eq!(read(" 169.254.169.254 ").unwrap(), "169.254.169.254/32");
        assert_eq!(read("fd00::1/8").unwrap(), "fd00::/8");
        assert_eq!(read("0.0.0.0/0").unwrap(), "0.0.0.0/0");
        assert!(read("10.0.0.0/33").is_err());
        assert!(read("example.com").is_err());
    }
}
