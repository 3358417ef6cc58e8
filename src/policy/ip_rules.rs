//! Answer-address rules (a list's `ips` and `ips_file`, RPZ-IP style): which lists cover an
//! address an upstream answered.
//!
//! Built at reload into one sorted table of disjoint ranges per family, each range carrying the
//! set of lists that cover every address in it. Overlaps (one list at several prefix lengths,
//! several lists at the same or nested prefixes) are resolved at build time by a sweep over the
//! ranges' ends, so a lookup is one binary search and a slice of tags: no allocation, no lock.
//! A sorted table rather than the prefix trie `clients.rs` uses: four bytes per v4 boundary
//! (sixteen per v6) plus a four-byte set id, against a 32- to 48-byte node per prefix and more
//! for branches. With 10,000 networks in 10 lists (release build, random probes, `cost` below):
//! 216 KB and ~31 ns a lookup, where the trie took ~125 ns for the longest match alone.
//!
//! IPv4-mapped IPv6 addresses and networks (`::ffff:a.b.c.d`) are IPv4 here, as in
//! `clients.rs`: an AAAA answer `::ffff:203.0.113.5` is matched against `203.0.113.0/24`.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ipnetwork::IpNetwork;

use super::matcher::Tag;

/// An address as the integer the tables sort.
trait Addr: Copy + Ord + std::fmt::Debug {
    const ZERO: Self;
    const MAX: Self;
    /// `self + 1`; never called on `MAX`.
    fn next(self) -> Self;
}

impl Addr for u32 {
    const ZERO: Self = 0;
    const MAX: Self = Self::MAX;
    fn next(self) -> Self {
        self.saturating_add(1)
    }
}

impl Addr for u128 {
    const ZERO: Self = 0;
    const MAX: Self = Self::MAX;
    fn next(self) -> Self {
        self.saturating_add(1)
    }
}

/// Disjoint ranges covering the whole family: range `i` runs from `starts[i]` to the address
/// before `starts[i + 1]` (or to the family's last address) and is covered by tag set `sets[i]`.
/// Adjacent ranges never have the same set. Empty when no list has an address of the family.
#[derive(Debug)]
struct Ranges<A> {
    starts: Vec<A>,
    sets: Vec<u32>,
}

impl<A> Default for Ranges<A> {
    fn default() -> Self {
        Self {
            starts: Vec::new(),
            sets: Vec::new(),
        }
    }
}

impl<A: Addr> Ranges<A> {
    /// The tag set covering `addr` (`EMPTY` when none).
    fn find(&self, addr: A) -> u32 {
        let after = self.starts.partition_point(|s| *s <= addr);
        after
            .checked_sub(1)
            .and_then(|i| self.sets.get(i))
            .copied()
            .unwrap_or(EMPTY)
    }

    /// Sweeps the listed spans (inclusive `lo..=hi`, each with its list) into disjoint ranges.
    fn build(spans: Vec<(A, A, Tag)>, sets: &mut SetInterner) -> Self {
        if spans.is_empty() {
            return Self::default();
        }
        // +1 for a list where its span starts, -1 just after it ends.
        let mut events: Vec<(A, bool, Tag)> = Vec::with_capacity(spans.len() * 2);
        for (lo, hi, tag) in spans {
            events.push((lo, true, tag));
            if hi != A::MAX {
                events.push((hi.next(), false, tag));
            }
        }
        events.sort_unstable_by_key(|e| e.0);
        // How many spans of each list cover the current position (a list may list a prefix twice,
        // or a prefix and one inside it).
        let mut active: BTreeMap<Tag, u32> = BTreeMap::new();
        let mut out = Self {
            starts: vec![A::ZERO],
            sets: vec![EMPTY],
        };
        let mut events = events.into_iter().peekable();
        while let Some((pos, starts, tag)) = events.next() {
            let mut apply = |starts: bool, tag: Tag| {
                let n = active.entry(tag).or_insert(0);
                if starts {
                    *n += 1;
                } else {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        active.remove(&tag);
                    }
                }
            };
            apply(starts, tag);
            while let Some(&(_, starts, tag)) = events.peek().filter(|e| e.0 == pos) {
                apply(starts, tag);
                events.next();
            }
            let set = sets.intern(active.keys().copied());
            if out.sets.last() == Some(&set) {
                continue;
            }
            if out.starts.last() == Some(&pos) {
                // only at the family's first address, where the table starts with no set
                if let Some(last) = out.sets.last_mut() {
                    *last = set;
                }
            } else {
                out.starts.push(pos);
                out.sets.push(set);
            }
        }
        out.starts.shrink_to_fit();
        out.sets.shrink_to_fit();
        out
    }

    fn heap_bytes(&self) -> usize {
        self.starts.capacity() * size_of::<A>() + self.sets.capacity() * size_of::<u32>()
    }

    fn len(&self) -> usize {
        self.starts.len()
    }
}

/// The empty tag set: what an address no list covers finds.
const EMPTY: u32 = 0;

/// Distinct tag sets, each stored once: set `i` is `tags[offsets[i]..offsets[i + 1]]`.
#[derive(Debug)]
struct TagSets {
    offsets: Vec<u32>,
    tags: Vec<Tag>,
}

impl Default for TagSets {
    fn default() -> Self {
        Self {
            offsets: vec![0, 0],
            tags: Vec::new(),
        }
    }
}

impl TagSets {
    fn get(&self, set: u32) -> &[Tag] {
        let i = set as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&from), Some(&to)) => self.tags.get(from as usize..to as usize).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Builds `TagSets`, giving each distinct set its id.
#[derive(Default)]
struct SetInterner {
    ids: HashMap<Vec<Tag>, u32>,
    sets: TagSets,
    scratch: Vec<Tag>,
}

impl SetInterner {
    fn intern(&mut self, tags: impl Iterator<Item = Tag>) -> u32 {
        self.scratch.clear();
        self.scratch.extend(tags);
        if self.scratch.is_empty() {
            return EMPTY;
        }
        if let Some(&id) = self.ids.get(&self.scratch) {
            return id;
        }
        let id = (self.sets.offsets.len() - 1) as u32;
        self.sets.tags.extend_from_slice(&self.scratch);
        self.sets.offsets.push(self.sets.tags.len() as u32);
        self.ids.insert(self.scratch.clone(), id);
        id
    }
}

/// Which lists cover each answer address. Build with `IpRules::builder`.
#[derive(Debug, Default)]
pub struct IpRules {
    v4: Ranges<u32>,
    v6: Ranges<u128>,
    sets: TagSets,
    /// Networks each list gave (`ips` and `ips_file`), by tag.
    listed: Vec<u32>,
}

/// Collects each list's networks; `build` resolves their overlaps.
#[derive(Debug, Default)]
pub struct IpRulesBuilder {
    v4: Vec<(u32, u32, Tag)>,
    v6: Vec<(u128, u128, Tag)>,
    listed: Vec<u32>,
}

impl IpRulesBuilder {
    /// Lists `net` (host bits, if any, ignored) in the list `tag`.
    pub fn add(&mut self, net: IpNetwork, tag: Tag) {
        match span(net) {
            Span::V4(lo, hi) => self.v4.push((lo, hi, tag)),
            Span::V6(lo, hi) => self.v6.push((lo, hi, tag)),
        }
        let i = usize::from(tag);
        if self.listed.len() <= i {
            self.listed.resize(i + 1, 0);
        }
        if let Some(n) = self.listed.get_mut(i) {
            *n = n.saturating_add(1);
        }
    }

    pub fn build(self) -> IpRules {
        let mut sets = SetInterner::default();
        let v4 = Ranges::build(self.v4, &mut sets);
        let v6 = Ranges::build(self.v6, &mut sets);
        let mut sets = sets.sets;
        sets.offsets.shrink_to_fit();
        sets.tags.shrink_to_fit();
        IpRules {
            v4,
            v6,
            sets,
            listed: self.listed,
        }
    }
}

impl IpRules {
    pub fn builder() -> IpRulesBuilder {
        IpRulesBuilder::default()
    }

    /// Calls `f` once with each list that has a network containing `addr`, in tag order.
    pub fn visit(&self, addr: IpAddr, mut f: impl FnMut(Tag)) {
        let set = match addr.to_canonical() {
            IpAddr::V4(a) => self.v4.find(u32::from(a)),
            IpAddr::V6(a) => self.v6.find(u128::from(a)),
        };
        for &tag in self.sets.get(set) {
            f(tag);
        }
    }

    /// Whether no list has any network (a lookup would find nothing).
    pub fn is_empty(&self) -> bool {
        self.v4.len() == 0 && self.v6.len() == 0
    }

    /// Networks the list `tag` gave (its `ips` and `ips_file` lines, repeats included).
    pub fn listed(&self, tag: Tag) -> usize {
        self.listed.get(usize::from(tag)).map_or(0, |&n| n as usize)
    }

    /// Bytes the tables hold.
    pub fn heap_bytes(&self) -> usize {
        self.v4.heap_bytes()
            + self.v6.heap_bytes()
            + self.sets.offsets.capacity() * size_of::<u32>()
            + self.sets.tags.capacity() * size_of::<Tag>()
            + self.listed.capacity() * size_of::<u32>()
    }
}

/// A network as the first and last address it holds, IPv4-mapped IPv6 networks as IPv4.
enum Span {
    V4(u32, u32),
    V6(u128, u128),
}

fn span(net: IpNetwork) -> Span {
    fn v4(ip: std::net::Ipv4Addr, prefix: u8) -> Span {
        let host = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
        let lo = u32::from(ip) & !host;
        Span::V4(lo, lo | host)
    }
    match net {
        IpNetwork::V4(n) => v4(n.ip(), n.prefix()),
        IpNetwork::V6(n) => match n.ip().to_ipv4_mapped() {
            Some(mapped) if n.prefix() >= 96 => v4(mapped, n.prefix() - 96),
            _ => {
                let host = u128::MAX.checked_shr(u32::from(n.prefix())).unwrap_or(0);
                let lo = u128::from(n.ip()) & !host;
                Span::V6(lo, lo | host)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(lists: &[&[&str]]) -> IpRules {
        let mut b = IpRules::builder();
        for (tag, nets) in lists.iter().enumerate() {
            for net in *nets {
                b.add(net.parse().unwrap(), tag as Tag);
            }
        }
        b.build()
    }

    fn tags(r: &IpRules, addr: &str) -> Vec<Tag> {
        let mut out = Vec::new();
        r.visit(addr.parse().unwrap(), |t| out.push(t));
        out
    }

    #[test]
    fn every_list_covering_an_address_is_visited_once() {
        let r = rules(&[
            // list 0: a /16 and a /24 inside it (one list at two lengths)
            &["203.0.0.0/16", "203.0.113.0/24"],
            // list 1: the same /24, and a host inside it
            &["203.0.113.0/24", "203.0.113.7"],
            // list 2: elsewhere, and a /24 adjacent to list 1's
            &["198.51.100.0/24", "203.0.114.0/24"],
        ]);
        assert_eq!(tags(&r, "203.0.113.7"), [0, 1]);
        assert_eq!(tags(&r, "203.0.113.8"), [0, 1]);
        assert_eq!(tags(&r, "203.0.113.0"), [0, 1]);
        assert_eq!(tags(&r, "203.0.113.255"), [0, 1]);
        assert_eq!(tags(&r, "203.0.114.0"), [0, 2]);
        assert_eq!(tags(&r, "203.0.112.255"), [0]);
        assert_eq!(tags(&r, "203.0.255.255"), [0]);
        assert_eq!(tags(&r, "203.1.0.0"), Vec::<Tag>::new());
        assert_eq!(tags(&r, "202.255.255.255"), Vec::<Tag>::new());
        assert_eq!(tags(&r, "198.51.100.9"), [2]);
        assert_eq!(tags(&r, "0.0.0.0"), Vec::<Tag>::new());
        assert_eq!(tags(&r, "255.255.255.255"), Vec::<Tag>::new());
        assert_eq!(r.listed(0), 2);
        assert_eq!(r.listed(1), 2);
        assert_eq!(r.listed(7), 0);
    }

    #[test]
    fn the_ends_of_the_address_space_and_whole_families() {
        let r = rules(&[
            &["0.0.0.0/0"],
            &["255.255.255.255", "0.0.0.0/32"],
            &["::/0"],
        ]);
        assert_eq!(tags(&r, "0.0.0.0"), [0, 1]);
        assert_eq!(tags(&r, "0.0.0.1"), [0]);
        assert_eq!(tags(&r, "255.255.255.255"), [0, 1]);
        assert_eq!(tags(&r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), [2]);
        assert_eq!(tags(&r, "::"), [2]);
        let r = rules(&[&["ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]]);
        assert_eq!(tags(&r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), [0]);
        assert_eq!(
            tags(&r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
            Vec::<Tag>::new()
        );
    }

    #[test]
    fn ipv6_prefixes_nest_and_overlap() {
        let r = rules(&[
            &["2001:db8::/32"],
            &["2001:db8:bad::/48", "2001:db8:bad:1::/64"],
        ]);
        assert_eq!(tags(&r, "2001:db8:bad:1::99"), [0, 1]);
        assert_eq!(tags(&r, "2001:db8:bad:2::1"), [0, 1]);
        assert_eq!(tags(&r, "2001:db8:bae::1"), [0]);
        assert_eq!(tags(&r, "2001:db9::1"), Vec::<Tag>::new());
        // a v6 network never covers v4 addresses, and a v4 one never v6 addresses
        assert_eq!(tags(&r, "32.1.13.184"), Vec::<Tag>::new());
    }

    #[test]
    fn ipv4_mapped_addresses_and_networks_are_ipv4() {
        let r = rules(&[&["203.0.113.0/24"], &["::ffff:198.51.100.0/120"]]);
        assert_eq!(tags(&r, "::ffff:203.0.113.5"), [0]);
        assert_eq!(tags(&r, "198.51.100.5"), [1]);
        assert_eq!(tags(&r, "::ffff:198.51.100.5"), [1]);
        // ::/0 is IPv6 only, as in the client table
        let r = rules(&[&["::/0"]]);
        assert_eq!(tags(&r, "::ffff:203.0.113.5"), Vec::<Tag>::new());
        assert_eq!(tags(&r, "2001:db8::1"), [0]);
    }

    #[test]
    fn equal_sets_share_storage_and_an_empty_table_finds_nothing() {
        let empty = IpRules::default();
        assert!(empty.is_empty());
        assert_eq!(tags(&empty, "192.0.2.1"), Vec::<Tag>::new());
        assert!(rules(&[]).is_empty());
        let r = rules(&[&["192.0.2.0/24", "198.51.100.0/24", "2001:db8::/32"]]);
        assert!(!r.is_empty());
        // one set ({0}) for all three networks, beside the empty set
        assert_eq!(r.sets.offsets.len(), 3);
        assert_eq!(r.v4.len(), 5);
    }

    /// Lookup cost and size with 10,000 networks in 10 lists, as the task asked (release:
    /// `cargo test --release --lib ip_rules::tests::cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn cost() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut b = IpRules::builder();
        let mut probes = Vec::new();
        // the alternative: the prefix trie the client table uses, one value per prefix
        let mut trie4 = prefix_trie::PrefixMap::<ipnet::Ipv4Net, Tag>::new();
        let mut trie6 = prefix_trie::PrefixMap::<ipnet::Ipv6Net, Tag>::new();
        for i in 0..10_000u32 {
            let tag = (i % 10) as Tag;
            if i % 4 == 0 {
                let ip =
                    std::net::Ipv6Addr::from(rng.u128(..) & !(u128::MAX >> 32) | 0x2001 << 112);
                let net = ipnetwork::Ipv6Network::new(ip, rng.u8(32..=64)).unwrap();
                b.add(IpNetwork::V6(net), tag);
                trie6.insert(ipnet::Ipv6Net::new(ip, net.prefix()).unwrap().trunc(), tag);
                probes.push(IpAddr::V6(ip));
            } else {
                let ip = std::net::Ipv4Addr::from(rng.u32(..));
                let net = ipnetwork::Ipv4Network::new(ip, rng.u8(12..=32)).unwrap();
                b.add(IpNetwork::V4(net), tag);
                trie4.insert(ipnet::Ipv4Net::new(ip, net.prefix()).unwrap().trunc(), tag);
                probes.push(IpAddr::V4(ip));
            }
        }
        for _ in 0..10_000 {
            probes.push(IpAddr::V4(rng.u32(..).into()));
        }
        let started = std::time::Instant::now();
        let r = b.build();
        let build = started.elapsed();
        let rounds = 200;
        let started = std::time::Instant::now();
        let mut found = 0usize;
        for _ in 0..rounds {
            for &p in &probes {
                r.visit(std::hint::black_box(p), |_| found += 1);
            }
        }
        let per = started.elapsed().as_nanos() as f64 / (rounds * probes.len()) as f64;
        println!(
            "10k networks: {} v4 + {} v6 ranges, {} sets, {} bytes, built in {build:?}; {per:.1} ns a lookup ({found} hits)",
            r.v4.len(),
            r.v6.len(),
            r.sets.offsets.len() - 1,
            r.heap_bytes()
        );
        let started = std::time::Instant::now();
        let mut found = 0usize;
        for _ in 0..rounds {
            for &p in &probes {
                let hit = match std::hint::black_box(p) {
                    IpAddr::V4(a) => trie4.get_lpm(&ipnet::Ipv4Net::from(a)).is_some(),
                    IpAddr::V6(a) => trie6.get_lpm(&ipnet::Ipv6Net::from(a)).is_some(),
                };
                found += usize::from(hit);
            }
        }
        let per = started.elapsed().as_nanos() as f64 / (rounds * probes.len()) as f64;
        println!(
            "prefix-trie, longest match only: {per:.1} ns a lookup ({found} hits), {} + {} prefixes",
            trie4.len(),
            trie6.len()
        );
    }
}
