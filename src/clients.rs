//! The client prefix table: what hushd knows about a source address, from the CIDR lists that
//! name clients (`allow_clients`, `exempt_clients`), answered by one longest-prefix lookup.
//!
//! Each list marks its prefixes; a prefix listed in several lists carries all their marks. An
//! address has a mark when any listed prefix containing it has it, so at build time every
//! prefix takes the marks of the prefixes that cover it: the longest match then holds the
//! whole answer. (Per-client groups will be a longest-match attribute of the same entries.)
//!
//! A table is immutable once built and holds no lock: the policy's part is rebuilt on reload
//! and swapped with the policy. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, how a v4 client
//! shows on a dual-stack socket) are IPv4 here, in lookups and in the lists alike.

use std::net::IpAddr;

use ipnet::{Ipv4Net, Ipv6Net};
use ipnetwork::IpNetwork;
use prefix_trie::PrefixMap;

/// What the lists say about one client address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientMarks {
    /// In `allow_clients`: served.
    pub allowed: bool,
    /// In `exempt_clients`: never rate limited, only held to the total TCP connection cap.
    pub exempt: bool,
    /// The client's group (an index the policy gives it), from the most specific group entry
    /// covering the address; `None`: the implicit default group.
    pub group: Option<u16>,
    /// The client's name (an index into the policy's `[clients]` names): only for an address
    /// named exactly, never inherited by the addresses inside a prefix.
    pub name: Option<u32>,
}

impl ClientMarks {
    pub const ALLOWED: Self = Self {
        allowed: true,
        exempt: false,
        group: None,
        name: None,
    };
    pub const EXEMPT: Self = Self {
        allowed: false,
        exempt: true,
        group: None,
        name: None,
    };

    pub fn in_group(group: u16) -> Self {
        Self {
            group: Some(group),
            ..Self::default()
        }
    }

    pub fn named(name: u32) -> Self {
        Self {
            name: Some(name),
            ..Self::default()
        }
    }

    /// The marks of one prefix listed in several places: everything each gives it.
    fn union(self, other: Self) -> Self {
        Self {
            allowed: self.allowed || other.allowed,
            exempt: self.exempt || other.exempt,
            group: other.group.or(self.group),
            name: other.name.or(self.name),
        }
    }

    /// These (a prefix's own) marks, with what a covering prefix `outer` passes down: its
    /// allow and exempt marks, and its group where this prefix has none of its own (the more
    /// specific group entry wins). A name is not passed down: it names one address.
    fn inherit(self, outer: Self) -> Self {
        Self {
            allowed: self.allowed || outer.allowed,
            exempt: self.exempt || outer.exempt,
            group: self.group.or(outer.group),
            name: self.name,
        }
    }
}

/// Prefixes with their marks, ready for longest-prefix lookups. Build with `ClientTable::builder`.
#[derive(Debug, Clone, Default)]
pub struct ClientTable {
    v4: PrefixMap<Ipv4Net, ClientMarks>,
    v6: PrefixMap<Ipv6Net, ClientMarks>,
}

/// Collects prefixes and their own marks; `build` spreads each prefix's marks to the prefixes
/// inside it.
#[derive(Debug, Default)]
pub struct ClientTableBuilder {
    table: ClientTable,
}

impl ClientTableBuilder {
    /// Gives every network in `nets` the marks `marks` (added to any it already has).
    pub fn mark(mut self, nets: &[IpNetwork], marks: ClientMarks) -> Self {
        for &net in nets {
            match canonical(net) {
                Some(Net::V4(n)) => {
                    let own = self.table.v4.entry(n).or_default();
                    *own = own.union(marks);
                }
                Some(Net::V6(n)) => {
                    let own = self.table.v6.entry(n).or_default();
                    *own = own.union(marks);
                }
                None => {}
            }
        }
        self
    }

    pub fn build(self) -> ClientTable {
        ClientTable {
            v4: inherit(&self.table.v4),
            v6: inherit(&self.table.v6),
        }
    }
}

/// Every prefix with its own marks and what the prefixes covering it pass down, the nearest
/// first (so the most specific group entry decides).
fn inherit<P: prefix_trie::Prefix + Clone>(
    own: &PrefixMap<P, ClientMarks>,
) -> PrefixMap<P, ClientMarks> {
    let mut out = PrefixMap::new();
    for (prefix, _) in own {
        let mut covering: Vec<(&P, &ClientMarks)> = own.cover(prefix).collect();
        covering.sort_by_key(|(p, _)| std::cmp::Reverse(p.prefix_len()));
        let marks = covering
            .into_iter()
            .map(|(_, m)| *m)
            .reduce(ClientMarks::inherit)
            .unwrap_or_default();
        out.insert(prefix.clone(), marks);
    }
    out
}

impl ClientTable {
    pub fn builder() -> ClientTableBuilder {
        ClientTableBuilder::default()
    }

    /// The marks of `client`: those of the longest listed prefix containing it, none if no
    /// listed prefix does.
    pub fn lookup(&self, client: IpAddr) -> ClientMarks {
        let found = match client.to_canonical() {
            IpAddr::V4(a) => self.v4.get_lpm(&Ipv4Net::from(a)).map(|(_, m)| *m),
            IpAddr::V6(a) => self.v6.get_lpm(&Ipv6Net::from(a)).map(|(_, m)| *m),
        };
        found.unwrap_or_default()
    }
}

enum Net {
    V4(Ipv4Net),
    V6(Ipv6Net),
}

/// The network with its host bits cleared; an IPv4-mapped IPv6 network (`::ffff:0:0/96` and
/// longer) as the IPv4 network it is. `None` only for a prefix length ipnetwork would not
/// have accepted.
fn canonical(net: IpNetwork) -> Option<Net> {
    match net {
        IpNetwork::V4(n) => Ipv4Net::new(n.ip(), n.prefix())
            .ok()
            .map(|n| Net::V4(n.trunc())),
        IpNetwork::V6(n) => match n.ip().to_ipv4_mapped() {
            Some(mapped) if n.prefix() >= 96 => Ipv4Net::new(mapped, n.prefix() - 96)
                .ok()
                .map(|n| Net::V4(n.trunc())),
            _ => Ipv6Net::new(n.ip(), n.prefix())
                .ok()
                .map(|n| Net::V6(n.trunc())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn the_most_specific_group_entry_decides_and_names_are_not_inherited() {
        let t = ClientTable::builder()
            .mark(&nets(&["10.0.0.0/8"]), ClientMarks::ALLOWED)
            .mark(&nets(&["10.0.5.0/24"]), ClientMarks::in_group(1))
            .mark(&nets(&["10.0.0.0/16"]), ClientMarks::in_group(2))
            .mark(&nets(&["10.0.5.40/32"]), ClientMarks::named(7))
            .mark(&nets(&["10.0.5.41/32"]), ClientMarks::in_group(3))
            .build();
        let at = |ip: &str| t.lookup(ip.parse().unwrap());
        assert_eq!(at("10.0.5.9").group, Some(1));
        assert_eq!(at("10.0.6.9").group, Some(2));
        assert_eq!(at("10.1.0.1").group, None);
        let named = at("10.0.5.40");
        assert_eq!(
            (named.group, named.name, named.allowed),
            (Some(1), Some(7), true)
        );
        assert_eq!(at("10.0.5.41").group, Some(3));
        assert_eq!(at("10.0.5.42").name, None);
    }

    fn marks(t: &ClientTable, ip: &str) -> (bool, bool) {
        let m = t.lookup(ip.parse().unwrap());
        (m.allowed, m.exempt)
    }

    #[test]
    fn the_longest_prefix_answers_with_the_marks_of_every_list() {
        let t = ClientTable::builder()
            .mark(
                &nets(&["10.0.0.0/8", "192.168.1.0/24"]),
                ClientMarks::ALLOWED,
            )
            .mark(
                &nets(&["10.1.0.0/16", "172.16.0.1/32"]),
                ClientMarks::EXEMPT,
            )
            .build();
        assert_eq!(marks(&t, "10.2.3.4"), (true, false));
        // inside both: the /16 inherits the /8's mark
        assert_eq!(marks(&t, "10.1.2.3"), (true, true));
        assert_eq!(marks(&t, "172.16.0.1"), (false, true));
        assert_eq!(marks(&t, "172.16.0.2"), (false, false));
        assert_eq!(marks(&t, "192.168.1.255"), (true, false));
        assert_eq!(marks(&t, "192.168.2.1"), (false, false));
        // a more specific prefix listed first still inherits from one listed later
        let t = ClientTable::builder()
            .mark(&nets(&["10.1.1.0/24"]), ClientMarks::EXEMPT)
            .mark(&nets(&["10.0.0.0/8"]), ClientMarks::ALLOWED)
            .build();
        assert_eq!(marks(&t, "10.1.1.1"), (true, true));
    }

    #[test]
    fn ipv4_mapped_addresses_and_networks_are_ipv4() {
        let t = ClientTable::builder()
            .mark(&nets(&["127.0.0.0/8"]), ClientMarks::ALLOWED)
            .mark(&nets(&["::ffff:10.0.0.0/104"]), ClientMarks::EXEMPT)
            .build();
        assert_eq!(marks(&t, "::ffff:127.0.0.1"), (true, false));
        assert_eq!(marks(&t, "10.9.9.9"), (false, true));
        assert_eq!(marks(&t, "::ffff:10.9.9.9"), (false, true));
        // a v6 network does not cover v4 clients, even ::/0
        let t = ClientTable::builder()
            .mark(&nets(&["::/0"]), ClientMarks::ALLOWED)
            .build();
        assert_eq!(marks(&t, "192.0.2.1"), (false, false));
        assert_eq!(marks(&t, "2001:db8::1"), (true, false));
    }

    #[test]
    fn ipv6_prefixes_and_host_bits() {
        let t = ClientTable::builder()
            .mark(&nets(&["fd00::/8", "::1/128"]), ClientMarks::ALLOWED)
            .mark(&nets(&["fd12:3456::1/32"]), ClientMarks::EXEMPT) // host bits set
            .build();
        assert_eq!(marks(&t, "fd99::1"), (true, false));
        assert_eq!(marks(&t, "fd12:3456:ffff::9"), (true, true));
        assert_eq!(marks(&t, "::1"), (true, false));
        assert_eq!(marks(&t, "::2"), (false, false));
        assert_eq!(marks(&t, "fe80::1"), (false, false));
        // host bits in a v4 network too, and the empty table
        let t = ClientTable::builder()
            .mark(&nets(&["10.0.0.1/8"]), ClientMarks::ALLOWED)
            .build();
        assert_eq!(marks(&t, "10.200.0.1"), (true, false));
        assert_eq!(marks(&ClientTable::default(), "10.0.0.1"), (false, false));
    }
}
