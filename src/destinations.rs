//! `Destinations`: where an answer sends the client. The names its answer-section chain leads
//! through (CNAME and DNAME targets) and the addresses those names have (A, AAAA, and the
//! `ipv4hint`/`ipv6hint` of HTTPS/SVCB records), each address with its record TTL. The policy
//! checks them (CNAME cloaking, answer-IP rules) and the firewall sets take the addresses.
//!
//! Only the chain from the question counts: a CNAME or an address owned by a name the chain
//! does not reach, and anything in the authority or additional section, is not where this
//! answer sends the client (an upstream may add glue or unrelated records; a stub resolver
//! follows the chain).
//!
//! Worked out once per answer and kept in one compact byte string, so the cache can store it
//! with the answer's wire form and a cache hit reads it without decoding the message. A plain
//! A answer takes 10 bytes; an answer that points nowhere (NXDOMAIN, MX, TXT) takes none.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::{
    rr::{
        Name, RData, Record, RecordType,
        rdata::{
            HTTPS,
            svcb::{IpHint, SVCB, SvcParamValue},
        },
    },
    serialize::binary::{BinDecodable, BinDecoder},
};

use crate::{answer::Answer, policy::matcher::NameKey};

/// The most chain targets followed. Resolvers give up on chains far shorter than this; an answer
/// with a longer one (or a loop) is cut here, never followed without end.
pub const MAX_CHAIN: usize = 16;

/// Family tags of an encoded address; each is followed by the TTL (u32, big-endian) and then
/// the address bytes.
const V4: u8 = 4;
const V6: u8 = 6;

/// What an answer points at, built by `Destinations::of`. Encoded as nothing at all when the
/// answer points nowhere, else: the number of targets; each target as its length and the bytes
/// `NameKey::new` makes of it (lower case, no final dot); then each address as a family tag,
/// the record TTL and the address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Destinations {
    bytes: Box<[u8]>,
}

impl Destinations {
    /// The destinations of `answer`, an answer to a question for `qname` (of any type: the
    /// chain and the addresses do not depend on it).
    pub fn of(qname: &Name, answer: &Answer) -> Self {
        let mut bytes = Vec::new();
        encode(qname, &answer.answers, &mut bytes);
        Self {
            bytes: bytes.into_boxed_slice(),
        }
    }

    /// Read in place, as a cache hit gives them (`cache::Hit::destinations`): one type for
    /// code that inspects both.
    pub fn view(&self) -> DestinationsRef<'_> {
        DestinationsRef { bytes: &self.bytes }
    }

    /// The chain's targets in order (the question's name excluded), each as the bytes
    /// `NameKey::new` makes of it: `NameKey::from_key_bytes` turns one into a key to match.
    pub fn targets(&self) -> impl Iterator<Item = &[u8]> {
        self.view().targets()
    }

    /// The addresses, in answer order, each with its record's TTL as upstream gave it.
    pub fn addresses(&self) -> impl Iterator<Item = (IpAddr, u32)> + '_ {
        self.view().addresses()
    }

    /// No target and no address: nothing to inspect.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The encoded form, as a cache entry keeps it (`DestinationsRef::new` reads it back).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Destinations read in place from their encoded form: from a `Destinations`, or from a cache
/// entry, which keeps that form after its records.
#[derive(Debug, Clone, Copy, Default)]
pub struct DestinationsRef<'a> {
    bytes: &'a [u8],
}

impl<'a> DestinationsRef<'a> {
    /// Reads `bytes` written by `Destinations` (`as_bytes`). Other bytes yield fewer targets
    /// or addresses, never a panic.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// See `Destinations::targets`.
    pub fn targets(self) -> impl Iterator<Item = &'a [u8]> {
        let count = self.bytes.first().copied().unwrap_or(0);
        let mut rest = self.bytes.get(1..).unwrap_or_default();
        (0..count).map_while(move |_| {
            let (&len, tail) = rest.split_first()?;
            let (name, tail) = tail.split_at_checked(usize::from(len))?;
            rest = tail;
            Some(name)
        })
    }

    /// See `Destinations::addresses`.
    pub fn addresses(self) -> impl Iterator<Item = (IpAddr, u32)> + 'a {
        let mut rest = self.after_targets();
        std::iter::from_fn(move || {
            let (&family, tail) = rest.split_first()?;
            let (ttl, tail) = tail.split_first_chunk::<4>()?;
            let (ip, tail) = match family {
                V4 => {
                    let (a, tail) = tail.split_first_chunk::<4>()?;
                    (IpAddr::V4(Ipv4Addr::from(*a)), tail)
                }
                V6 => {
                    let (a, tail) = tail.split_first_chunk::<16>()?;
                    (IpAddr::V6(Ipv6Addr::from(*a)), tail)
                }
                _ => return None,
            };
            rest = tail;
            Some((ip, u32::from_be_bytes(*ttl)))
        })
    }

    pub fn is_empty(self) -> bool {
        self.bytes.is_empty()
    }

    /// The encoded addresses: what follows the targets.
    fn after_targets(self) -> &'a [u8] {
        let Some((&count, mut rest)) = self.bytes.split_first() else {
            return &[];
        };
        for _ in 0..count {
            let Some((&len, tail)) = rest.split_first() else {
                return &[];
            };
            rest = tail.get(usize::from(len)..).unwrap_or_default();
        }
        rest
    }
}

/// Appends the encoded destinations of an answer whose answer section is `records` to `out`:
/// nothing when it points nowhere. `Destinations::of` and the cache's entries both write it.
pub fn encode(qname: &Name, records: &[Record], out: &mut Vec<u8>) {
    let targets = chain(qname, records);
    // Enough room, at once: every address record taken as on the chain (they usually are).
    let names: usize = targets.iter().map(|t| 1 + key_len(t)).sum();
    let addresses: usize = records.iter().map(|r| address_bytes(&r.data)).sum();
    if targets.is_empty() && addresses == 0 {
        return; // points nowhere: nothing, not even the count
    }
    out.reserve_exact(1 + names + addresses);
    let start = out.len();
    out.push(targets.len() as u8); // at most MAX_CHAIN
    for target in &targets {
        let key = NameKey::new(target);
        let bytes = key.as_bytes();
        out.push(bytes.len() as u8); // a name's key is at most 255 bytes
        out.extend_from_slice(bytes);
    }
    // addresses are most often the last target's
    let on_chain =
        |owner: &Name| targets.iter().rev().any(|t| same_name(owner, t)) || same_name(owner, qname);
    for record in records {
        let (data, ttl) = (&record.data, record.ttl);
        match data {
            RData::A(a) if on_chain(&record.name) => push_address(out, IpAddr::V4(a.0), ttl),
            RData::AAAA(a) if on_chain(&record.name) => push_address(out, IpAddr::V6(a.0), ttl),
            RData::HTTPS(HTTPS(svcb)) | RData::SVCB(svcb) if on_chain(&record.name) => {
                push_hints(out, svcb, ttl);
            }
            _ => {}
        }
    }
    if out.len() == start + 1 {
        out.truncate(start); // only addresses off the chain
    }
}

/// The length of `NameKey::new(name).as_bytes()`: the labels and the dots between them.
fn key_len(name: &Name) -> usize {
    name.iter()
        .map(|l| l.len() + 1)
        .sum::<usize>()
        .saturating_sub(1)
}

const V4_LEN: usize = 1 + 4 + 4;
const V6_LEN: usize = 1 + 4 + 16;

/// What the addresses a record carries take encoded; 0 for a record with none.
fn address_bytes(data: &RData) -> usize {
    match data {
        RData::A(_) => V4_LEN,
        RData::AAAA(_) => V6_LEN,
        RData::HTTPS(HTTPS(svcb)) | RData::SVCB(svcb) => svcb
            .svc_params
            .iter()
            .map(|(_, value)| match value {
                SvcParamValue::Ipv4Hint(IpHint(hints)) => hints.len() * V4_LEN,
                SvcParamValue::Ipv6Hint(IpHint(hints)) => hints.len() * V6_LEN,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

fn push_address(out: &mut Vec<u8>, ip: IpAddr, ttl: u32) {
    match ip {
        IpAddr::V4(a) => {
            out.push(V4);
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(V6);
            out.extend_from_slice(&ttl.to_be_bytes());
            out.extend_from_slice(&a.octets());
        }
    }
}

/// The addresses an HTTPS/SVCB record offers as hints (RFC 9460 §7.3): a client may connect
/// to them before, or instead of, asking for A/AAAA.
fn push_hints(out: &mut Vec<u8>, svcb: &SVCB, ttl: u32) {
    for (_, value) in &svcb.svc_params {
        match value {
            SvcParamValue::Ipv4Hint(IpHint(hints)) => {
                for a in hints {
                    push_address(out, IpAddr::V4(a.0), ttl);
                }
            }
            SvcParamValue::Ipv6Hint(IpHint(hints)) => {
                for a in hints {
                    push_address(out, IpAddr::V6(a.0), ttl);
                }
            }
            _ => {}
        }
    }
}

/// The names the chain from `qname` leads through, in order, `qname` excluded: at each name, a
/// CNAME it owns, else a DNAME above it. Stops at a name seen before (a loop), at a substitution
/// too long to be a name, and after `MAX_CHAIN` targets.
fn chain(qname: &Name, records: &[Record]) -> Vec<Name> {
    let mut targets: Vec<Name> = Vec::new();
    while targets.len() < MAX_CHAIN {
        let current = targets.last().unwrap_or(qname);
        let Some(next) = next_name(current, records) else {
            break;
        };
        if same_name(&next, qname) || targets.iter().any(|t| same_name(&next, t)) {
            break;
        }
        targets.push(next);
    }
    targets
}

/// Where the chain goes from `current`. A stub follows the CNAME, which is what a resolver
/// synthesizes from a DNAME (RFC 6672 §3.1) and what it sends with it; without one, the DNAME
/// is substituted here.
fn next_name(current: &Name, records: &[Record]) -> Option<Name> {
    records
        .iter()
        .find_map(|r| match &r.data {
            RData::CNAME(cname) if same_name(&r.name, current) => Some(cname.0.clone()),
            _ => None,
        })
        .or_else(|| records.iter().find_map(|r| dname_substitution(r, current)))
}

/// The same name, letter case aside. hickory's `==` orders the names label by label from the
/// root (`cmp_labels`), which was most of the time `Destinations::of` took (`perf`); most names
/// compared here differ in their label count or first label, which this sees at once.
fn same_name(a: &Name, b: &Name) -> bool {
    a.iter().len() == b.iter().len()
        && a.iter()
            .zip(b.iter())
            .all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// RFC 6672 §2.2: a DNAME owned by a proper ancestor of `current` replaces that ancestor in
/// `current` with its target. hickory has no DNAME type: its rdata arrives as raw bytes, the
/// target name uncompressed (RFC 6672 §2.5), read with hickory's name decoder. `None` when the
/// record is no such DNAME, or when the result would be longer than a name may be (YXDOMAIN:
/// the chain ends there).
fn dname_substitution(record: &Record, current: &Name) -> Option<Name> {
    let RData::Unknown {
        code: RecordType::DNAME,
        rdata,
    } = &record.data
    else {
        return None;
    };
    let owner = &record.name;
    let (labels, owner_labels) = (current.iter().count(), owner.iter().count());
    if owner_labels >= labels || !owner.zone_of(current) {
        return None;
    }
    let target = Name::read(&mut BinDecoder::new(&rdata.anything)).ok()?;
    Name::from_labels(current.iter().take(labels - owner_labels))
        .ok()?
        .append_name(&target)
        .ok()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::{
        op::ResponseCode,
        rr::rdata::{
            A, AAAA, CNAME, NULL,
            svcb::{Alpn, SvcParamKey},
        },
        serialize::binary::BinEncodable,
    };

    use super::*;
    use crate::policy::matcher::DomainSetBuilder;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    fn cname(owner: &str, target: &str) -> Record {
        Record::from_rdata(name(owner), 300, RData::CNAME(CNAME(name(target))))
    }

    fn a(owner: &str, ip: [u8; 4], ttl: u32) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A::from(Ipv4Addr::from(ip))))
    }

    fn aaaa(owner: &str, ip: &str, ttl: u32) -> Record {
        let ip = Ipv6Addr::from_str(ip).unwrap();
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA::from(ip)))
    }

    /// A DNAME as hickory decodes one from upstream: raw rdata, the target uncompressed.
    fn dname(owner: &str, target: &str) -> Record {
        let rdata = NULL::with(name(target).to_bytes().unwrap());
        Record::from_rdata(
            name(owner),
            300,
            RData::Unknown {
                code: RecordType::DNAME,
                rdata,
            },
        )
    }

    fn answer(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        Answer {
            rcode: ResponseCode::NoError,
            answers,
            authorities: vec![],
            additionals,
            ttl: Some(300),
            authentic_data: false,
        }
    }

    fn of(qname: &str, answers: Vec<Record>) -> Destinations {
        Destinations::of(&name(qname), &answer(answers, vec![]))
    }

    fn targets(d: &Destinations) -> Vec<String> {
        d.targets()
            .map(|t| String::from_utf8(t.to_vec()).unwrap())
            .collect()
    }

    fn addresses(d: &Destinations) -> Vec<(String, u32)> {
        d.addresses()
            .map(|(ip, ttl)| (ip.to_string(), ttl))
            .collect()
    }

    #[test]
    fn a_plain_a_answer_is_its_addresses_in_ten_bytes_each() {
        let d = of(
            "www.example.",
            vec![
                a("www.example.", [192, 0, 2, 1], 300),
                a("WWW.Example.", [192, 0, 2, 2], 60),
            ],
        );
        assert!(targets(&d).is_empty());
        assert_eq!(
            addresses(&d),
            [("192.0.2.1".into(), 300), ("192.0.2.2".into(), 60)]
        );
        assert_eq!(d.as_bytes().len(), 1 + 2 * 9);
        assert!(!d.is_empty());
    }

    #[test]
    fn a_cname_chain_of_three_is_followed_to_its_addresses() {
        let d = of(
            "app.vendor.example.",
            vec![
                cname("app.vendor.example.", "App.Cdn.Example."),
                cname("app.cdn.example.", "edge.tracker.example."),
                cname("edge.tracker.example.", "node7.tracker.example."),
                a("node7.tracker.example.", [198, 51, 100, 7], 20),
                aaaa("node7.tracker.example.", "2001:db8::7", 40),
            ],
        );
        assert_eq!(
            targets(&d),
            [
                "app.cdn.example",
                "edge.tracker.example",
                "node7.tracker.example"
            ]
        );
        assert_eq!(
            addresses(&d),
            [("198.51.100.7".into(), 20), ("2001:db8::7".into(), 40)]
        );
    }

    #[test]
    fn records_off_the_chain_and_other_sections_do_not_count() {
        let answer = answer(
            vec![
                // the chain is given out of order, with unrelated records between
                a("elsewhere.example.", [203, 0, 113, 9], 300),
                cname("cdn.example.", "node.cdn.example."),
                cname("other.example.", "hidden.tracker.example."),
                cname("www.example.", "cdn.example."),
                a("node.cdn.example.", [192, 0, 2, 10], 300),
            ],
            vec![a("node.cdn.example.", [203, 0, 113, 53], 300)],
        );
        let d = Destinations::of(&name("www.example."), &answer);
        assert_eq!(targets(&d), ["cdn.example", "node.cdn.example"]);
        assert_eq!(addresses(&d), [("192.0.2.10".into(), 300)]);
    }

    #[test]
    fn additional_section_addresses_are_not_destinations() {
        let answer = answer(
            vec![cname("www.example.", "cdn.example.")],
            vec![
                a("cdn.example.", [192, 0, 2, 1], 300),
                a("www.example.", [192, 0, 2, 2], 300),
            ],
        );
        let d = Destinations::of(&name("www.example."), &answer);
        assert_eq!(targets(&d), ["cdn.example"]);
        assert!(addresses(&d).is_empty());
    }

    #[test]
    fn a_dname_is_substituted_and_its_result_counts_as_a_target() {
        // without the synthesized CNAME: hushd substitutes
        let d = of(
            "a.b.vendor.example.",
            vec![
                dname("vendor.example.", "telemetry.example."),
                a("a.b.telemetry.example.", [192, 0, 2, 5], 300),
            ],
        );
        assert_eq!(targets(&d), ["a.b.telemetry.example"]);
        assert_eq!(addresses(&d), [("192.0.2.5".into(), 300)]);
        // a DNAME redirects only names below its owner
        let d = of(
            "vendor.example.",
            vec![dname("vendor.example.", "telemetry.example.")],
        );
        assert!(d.is_empty());
        // a substitution longer than a name may be ends the chain (YXDOMAIN)
        let long = format!("{}.example.", vec!["x".repeat(60); 4].join("."));
        let d = of(
            "a.b.c.d.vendor.example.",
            vec![dname("vendor.example.", &long)],
        );
        assert!(d.is_empty());
    }

    #[test]
    fn a_dname_with_its_synthesized_cname_follows_the_cname() {
        let d = of(
            "x.vendor.example.",
            vec![
                dname("vendor.example.", "telemetry.example."),
                cname("x.vendor.example.", "x.telemetry.example."),
                cname("x.telemetry.example.", "edge.cdn.example."),
                aaaa("edge.cdn.example.", "2001:db8::1", 30),
            ],
        );
        assert_eq!(targets(&d), ["x.telemetry.example", "edge.cdn.example"]);
        assert_eq!(addresses(&d), [("2001:db8::1".into(), 30)]);
    }

    #[test]
    fn https_hints_are_addresses_of_the_chain() {
        let https = |owner: &str, ttl| {
            let svcb = SVCB::new(
                1,
                Name::root(),
                vec![
                    (
                        SvcParamKey::Alpn,
                        SvcParamValue::Alpn(Alpn(vec!["h2".into()])),
                    ),
                    (
                        SvcParamKey::Ipv4Hint,
                        SvcParamValue::Ipv4Hint(IpHint(vec![A::new(192, 0, 2, 80)])),
                    ),
                    (
                        SvcParamKey::Ipv6Hint,
                        SvcParamValue::Ipv6Hint(IpHint(vec![AAAA::from(
                            Ipv6Addr::from_str("2001:db8::80").unwrap(),
                        )])),
                    ),
                ],
            );
            Record::from_rdata(name(owner), ttl, RData::HTTPS(HTTPS(svcb)))
        };
        let d = of(
            "www.example.",
            vec![
                cname("www.example.", "svc.example."),
                https("svc.example.", 120),
                https("unrelated.example.", 120),
            ],
        );
        assert_eq!(targets(&d), ["svc.example"]);
        assert_eq!(
            addresses(&d),
            [("192.0.2.80".into(), 120), ("2001:db8::80".into(), 120)]
        );
    }

    #[test]
    fn a_cname_loop_ends_and_a_long_chain_is_cut() {
        let d = of(
            "a.example.",
            vec![
                cname("a.example.", "b.example."),
                cname("b.example.", "c.example."),
                cname("c.example.", "a.example."),
                a("a.example.", [192, 0, 2, 1], 300),
            ],
        );
        assert_eq!(targets(&d), ["b.example", "c.example"]);
        assert_eq!(addresses(&d).len(), 1);

        // 20 links: the first MAX_CHAIN targets are kept, the addresses past them are not
        let mut records: Vec<Record> = (0..20)
            .map(|i| cname(&format!("n{i}.example."), &format!("n{}.example.", i + 1)))
            .collect();
        records.push(a("n20.example.", [192, 0, 2, 20], 300));
        let d = of("n0.example.", records);
        assert_eq!(targets(&d).len(), MAX_CHAIN);
        assert_eq!(targets(&d)[MAX_CHAIN - 1], format!("n{MAX_CHAIN}.example"));
        assert!(addresses(&d).is_empty());
    }

    #[test]
    fn an_answer_pointing_nowhere_takes_no_bytes() {
        assert!(of("www.example.", vec![]).as_bytes().is_empty());
        let mx = Record::from_rdata(
            name("example."),
            300,
            RData::MX(hickory_proto::rr::rdata::MX::new(10, name("mail.example."))),
        );
        assert!(of("example.", vec![mx]).is_empty());
        assert_eq!(size_of::<Destinations>(), 16);
    }

    #[test]
    fn targets_match_as_the_names_they_were() {
        let mut b = DomainSetBuilder::with_capacity(1);
        b.insert(b"tracker.example", 1, |_| false).unwrap();
        let set = b.build();
        let d = of(
            "www.example.",
            vec![
                cname("www.example.", "Edge.Tracker.Example."),
                cname("edge.tracker.example.", "xtracker.example."),
            ],
        );
        let matched: Vec<Vec<u16>> = d
            .targets()
            .map(|t| set.matches(&NameKey::from_key_bytes(t)).collect())
            .collect();
        assert_eq!(matched, [vec![1], vec![]]);
        // the same bytes and suffixes as a key made from the name
        for n in ["edge.tracker.example.", "a\\.b.example.", "."] {
            let from_name = NameKey::new(&name(n));
            let again = NameKey::from_key_bytes(from_name.as_bytes());
            assert_eq!(again.as_bytes(), from_name.as_bytes());
            assert_eq!(
                set.matches(&again).collect::<Vec<_>>(),
                set.matches(&from_name).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn garbled_bytes_read_as_fewer_destinations_not_a_panic() {
        let d = of(
            "www.example.",
            vec![
                cname("www.example.", "cdn.example."),
                aaaa("cdn.example.", "2001:db8::1", 30),
            ],
        );
        let bytes = d.as_bytes();
        let full = (
            DestinationsRef::new(bytes).targets().count(),
            DestinationsRef::new(bytes).addresses().count(),
        );
        assert_eq!(full, (1, 1));
        for cut in 0..bytes.len() {
            let r = DestinationsRef::new(&bytes[..cut]);
            assert!(r.targets().count() <= 1);
            assert_eq!(r.addresses().count(), 0, "cut at {cut}");
        }
        // a count past the targets reads the addresses as names, as far as they go
        let mut wrong = bytes.to_vec();
        wrong[0] = 200;
        let r = DestinationsRef::new(&wrong);
        assert!(r.targets().count() < 200);
        assert_eq!(r.addresses().count(), 0);
    }

    /// The cost of `Destinations::of` on typical answers and of reading them back; prints the
    /// figures, asserts nothing about time. Run in release:
    /// `cargo test --release --lib -- --ignored cost_of --nocapture`.
    #[test]
    #[ignore]
    fn cost_of_destinations_on_typical_answers() {
        use std::{hint::black_box, time::Instant};

        const ROUNDS: u32 = 1_000_000;
        let plain = answer(vec![a("www.example.com.", [192, 0, 2, 1], 300)], vec![]);
        let cdn = answer(
            vec![
                cname("www.example.com.", "www.example.com.cdn.example.net."),
                cname(
                    "www.example.com.cdn.example.net.",
                    "e123.a.cdn.example.net.",
                ),
                a("e123.a.cdn.example.net.", [192, 0, 2, 1], 20),
                a("e123.a.cdn.example.net.", [192, 0, 2, 2], 20),
            ],
            vec![],
        );
        let qname = name("www.example.com.");
        for (what, answer) in [("plain A", &plain), ("2 CNAMEs + 2 A", &cdn)] {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                black_box(Destinations::of(black_box(&qname), black_box(answer)));
            }
            let of = start.elapsed() / ROUNDS;
            let d = Destinations::of(&qname, answer);
            let start = Instant::now();
            for _ in 0..ROUNDS {
                let r = black_box(d.view());
                black_box(r.targets().count() + r.addresses().count());
            }
            let read = start.elapsed() / ROUNDS;
            eprintln!(
                "{what}: of {of:?}, read back {read:?}, {} bytes",
                d.as_bytes().len()
            );
        }
    }
}
