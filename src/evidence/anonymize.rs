//! `[querylog] anonymize`: how a client address is written to the query log and the evidence
//! store. `truncate` keeps the network a device is in and drops which device it is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::Anonymize;

impl Anonymize {
    /// The address as stored: unchanged, or truncated to its IPv4 /24 or IPv6 /48. An
    /// IPv4-mapped IPv6 address (`::ffff:192.0.2.7`) is the IPv4 address it carries, in both
    /// modes, so one device is one client whichever socket family it came in on.
    pub fn apply(self, addr: IpAddr) -> IpAddr {
        let addr = addr.to_canonical();
        match self {
            Self::None => addr,
            Self::Truncate => match addr {
                IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & !0xff)),
                IpAddr::V6(v6) => {
                    IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 80) - 1)))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(mode: Anonymize, addr: &str) -> String {
        mode.apply(addr.parse().unwrap()).to_string()
    }

    #[test]
    fn truncate_keeps_the_ipv4_24_and_the_ipv6_48() {
        let t = Anonymize::Truncate;
        assert_eq!(apply(t, "192.168.1.57"), "192.168.1.0");
        assert_eq!(apply(t, "192.168.1.0"), "192.168.1.0");
        assert_eq!(apply(t, "10.255.255.255"), "10.255.255.0");
        assert_eq!(apply(t, "2001:db8:abcd:12:34::1"), "2001:db8:abcd::");
        assert_eq!(
            apply(t, "2001:db8:abcd:ffff:ffff:ffff:ffff:ffff"),
            "2001:db8:abcd::"
        );
        assert_eq!(apply(t, "::1"), "::");
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        assert_eq!(apply(Anonymize::Truncate, "::ffff:192.0.2.77"), "192.0.2.0");
        assert_eq!(apply(Anonymize::None, "::ffff:192.0.2.77"), "192.0.2.77");
    }

    #[test]
    fn none_leaves_the_address_as_it_is() {
        assert_eq!(apply(Anonymize::None, "192.168.1.57"), "192.168.1.57");
        assert_eq!(apply(Anonymize::None, "2001:db8::7"), "2001:db8::7");
    }
}
