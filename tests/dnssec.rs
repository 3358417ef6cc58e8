//! DNSSEC through hushd, with real parts on loopback: a zone the test signs (`ldns-keygen`,
//! `ldns-signzone`), served by NSD; hushd forwarding to NSD; and a validating Unbound with the
//! zone's DS as its trust anchor, forwarding to that hushd, as the client that checks what
//! hushd passes on. A second hushd forwards to that Unbound, which sets AD, to test what hushd
//! does with AD.
//!
//! ```text
//! client -> hushd "front" -> Unbound (validating) -> hushd "near" -> NSD (signed zone)
//! ```
//!
//! Needs `nsd`, `ldns-keygen`, `ldns-signzone` (Debian ldnsutils), `unbound` and `dig`
//! (bind9-dnsutils): skipped where one is missing, a failure under HUSHD_REQUIRE_TOOLS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Edns, Message, Query, ResponseCode},
    rr::{Name, Record, RecordType},
};
use support::{Hushd, Setup, free_port, list, tool};

const ZONE: &str = "dnssec.test.";

/// The zone before signing: `tampered` gets a forged signature after, `blocked` is on hushd's
/// block list in the AD tests.
const ZONE_TEXT: &str = "$ORIGIN dnssec.test.
$TTL 300
@ IN SOA ns.dnssec.test. admin.dnssec.test. 1 3600 600 86400 300
@ IN NS ns
ns IN A 127.0.0.1
www IN A 192.0.2.10
tampered IN A 192.0.2.11
blocked IN A 192.0.2.12
";

/// The tools these tests need; `None` (skip) if one is missing, outside CI.
fn tools() -> Option<()> {
    let mut all = true;
    for name in ["nsd", "ldns-keygen", "ldns-signzone", "unbound", "dig"] {
        all &= tool(name).is_some();
    }
    all.then_some(())
}

/// A child process stopped with SIGTERM when dropped (NSD and Unbound shut their own helper
/// processes down on it), SIGKILL if it has not ended a few seconds later.
struct Daemon {
    child: Child,
    name: &'static str,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} did not stop on SIGTERM: killed", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The signed zone served by NSD, and its DS record (the trust anchor).
struct SignedZone {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    ds: String,
    _nsd: Daemon,
}

impl SignedZone {
    /// Signs the zone with a new KSK and ZSK (ECDSA P-256), forges the signature of
    /// `tampered`'s A record, and serves it with NSD.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        std::fs::write(path.join("zone"), ZONE_TEXT).unwrap();
        let ksk = run(
            path,
            "ldns-keygen",
            &["-a", "ECDSAP256SHA256", "-k", "dnssec.test"],
        );
        let zsk = run(
            path,
            "ldns-keygen",
            &["-a", "ECDSAP256SHA256", "dnssec.test"],
        );
        let (ksk, zsk) = (ksk.trim(), zsk.trim());
        run(
            path,
            "ldns-signzone",
            &["-o", ZONE, "-f", "zone.signed", "zone", zsk, ksk],
        );
        let signed = std::fs::read_to_string(path.join("zone.signed")).unwrap();
        let forged = forge_signature(&signed, "tampered.dnssec.test.", "A");
        assert_ne!(signed, forged, "the tampered name's RRSIG was found");
        std::fs::write(path.join("zone.signed"), forged).unwrap();
        // "dnssec.test.  IN  DS  <tag> 13 2 <digest>", as Unbound's trust-anchor wants it
        let ds = std::fs::read_to_string(path.join(format!("{ksk}.ds"))).unwrap();
        let ds = ds.split_whitespace().collect::<Vec<_>>().join(" ");

        let port = free_port();
        let d = path.display();
        let conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  verbosity: 1\nremote-control:\n  control-enable: no\nzone:\n  name: \"dnssec.test\"\n  zonefile: \"{d}/zone.signed\"\n"
        );
        std::fs::write(path.join("nsd.conf"), conf).unwrap();
        let nsd = Daemon {
            child: Command::new("nsd")
                .args(["-d", "-c"])
                .arg(path.join("nsd.conf"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(path.join("nsd.out")).unwrap())
                .spawn()
                .expect("start nsd"),
            name: "nsd",
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_answering(addr, "nsd", path);
        Self {
            dir,
            addr,
            ds,
            _nsd: nsd,
        }
    }
}

/// `zone` with the signature of `owner`'s RRSIG over `covered` changed in its first character
/// (still base64 of the same length, so the zone loads; the signature no longer verifies).
fn forge_signature(zone: &str, owner: &str, covered: &str) -> String {
    zone.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ours = fields.len() > 5
                && fields[0] == owner
                && fields[3] == "RRSIG"
                && fields[4] == covered;
            if !ours {
                return format!("{line}\n");
            }
            let (head, signature) = line.rsplit_once(char::is_whitespace).unwrap();
            let first = if signature.starts_with('A') { 'B' } else { 'A' };
            format!("{head} {first}{}\n", &signature[1..])
        })
        .collect()
}

/// A validating Unbound whose only trust anchor is the zone's DS and which forwards the zone
/// to `forward_to`. `val-permissive-mode: no`: a bogus answer is SERVFAIL.
fn unbound(zone: &SignedZone, forward_to: SocketAddr) -> (Daemon, SocketAddr) {
    let dir = zone
        .dir
        .path()
        .join(format!("unbound-{}", forward_to.port()));
    std::fs::create_dir(&dir).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-ip6: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  use-syslog: no\n  logfile: \"{d}/unbound.log\"\n  verbosity: 1\n  val-log-level: 2\n  num-threads: 1\n  do-not-query-localhost: no\n  val-permissive-mode: no\n  module-config: \"validator iterator\"\n  access-control: 127.0.0.0/8 allow\n  local-zone: \"test.\" nodefault\n  trust-anchor: \"{ds}\"\nremote-control:\n  control-enable: no\nforward-zone:\n  name: \"{ZONE}\"\n  forward-addr: 127.0.0.1@{}\n",
        forward_to.port(),
        ds = zone.ds,
    );
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
    let daemon = Daemon {
        child: Command::new("unbound")
            .args(["-d", "-c"])
            .arg(dir.join("unbound.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("unbound.out")).unwrap())
            .spawn()
            .expect("start unbound"),
        name: "unbound",
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_answering(addr, "unbound", &dir);
    (daemon, addr)
}

/// Waits (up to 10 s) until `server` answers a query for the zone's SOA.
fn wait_answering(server: SocketAddr, what: &str, dir: &Path) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if try_ask(server, ZONE, RecordType::SOA, Bits::default()).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p: PathBuf = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_owned();
            (name.ends_with(".log") || name.ends_with(".out")).then(|| {
                format!(
                    "{name}:\n{}",
                    std::fs::read_to_string(&p).unwrap_or_default()
                )
            })
        })
        .collect();
    panic!("{what} did not answer on {server}:\n{}", logs.join("\n"));
}

/// The DNSSEC bits of a query.
#[derive(Clone, Copy, Debug, Default)]
struct Bits {
    /// DO, in an OPT record (which every query here has, 4096 bytes).
    dnssec_ok: bool,
    ad: bool,
    cd: bool,
}

const DO: Bits = Bits {
    dnssec_ok: true,
    ad: false,
    cd: false,
};
const AD: Bits = Bits {
    dnssec_ok: false,
    ad: true,
    cd: false,
};
const CD: Bits = Bits {
    dnssec_ok: false,
    ad: false,
    cd: true,
};

/// One query over UDP with `bits`; `None` if no answer came within a second.
fn try_ask(server: SocketAddr, name: &str, qtype: RecordType, bits: Bits) -> Option<Message> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = bits.ad;
    m.metadata.checking_disabled = bits.cd;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns.set_dnssec_ok(bits.dnssec_ok);
    m.edns = Some(edns);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket.send_to(&m.to_vec().unwrap(), server).unwrap();
    let mut buf = vec![0; 65_535];
    let n = socket.recv(&mut buf).ok()?;
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, m.metadata.id);
    Some(reply)
}

/// `try_ask`, three tries.
fn ask(server: SocketAddr, name: &str, bits: Bits) -> Message {
    (0..3)
        .find_map(|_| try_ask(server, name, RecordType::A, bits))
        .unwrap_or_else(|| panic!("no answer from {server} for {name} ({bits:?})"))
}

fn count(records: &[Record], rtype: RecordType) -> usize {
    records.iter().filter(|r| r.record_type() == rtype).count()
}

/// Records of a DNSSEC type (RRSIG, NSEC, NSEC3) anywhere in `m`.
fn dnssec_records(m: &Message) -> usize {
    [&m.answers, &m.authorities, &m.additionals]
        .into_iter()
        .map(|section| {
            count(section, RecordType::RRSIG)
                + count(section, RecordType::NSEC)
                + count(section, RecordType::NSEC3)
        })
        .sum()
}

fn dnssec_ok(m: &Message) -> bool {
    m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)
}

/// hushd forwarding to `upstream`, with `blocked.dnssec.test` on a block list and `upstream_extra`
/// in `[upstream]`.
fn hushd(upstream: SocketAddr, upstream_extra: &str) -> (Setup, Hushd) {
    let setup = Setup::new(&[upstream], "");
    if !upstream_extra.is_empty() {
        let config = std::fs::read_to_string(setup.config_path()).unwrap();
        let config = config.replace("[upstream]\n", &format!("[upstream]\n{upstream_extra}\n"));
        std::fs::write(setup.config_path(), config).unwrap();
    }
    setup.write_list("blocked", &list("block", &["blocked.dnssec.test"]));
    let hushd = setup.start();
    (setup, hushd)
}

#[test]
fn a_validating_resolver_behind_hushd_validates_the_zone_and_catches_a_forged_signature() {
    let Some(()) = tools() else { return };
    let zone = SignedZone::start();
    let (_setup, near) = hushd(zone.addr, "");
    let (_unbound, resolver) = unbound(&zone, near.dns);

    // validated: AD from Unbound, which got the RRSIGs and the zone's keys through hushd
    let r = ask(resolver, "www.dnssec.test.", DO);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r:?}");
    assert!(r.metadata.authentic_data, "Unbound validated: {r:?}");
    assert_eq!(count(&r.answers, RecordType::A), 1);
    // a forged signature passed on as it came: Unbound finds it bogus
    let r = ask(resolver, "tampered.dnssec.test.", Bits::default());
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{r:?}");
    // and a name that does not exist is proven not to (NSEC through hushd)
    let r = ask(resolver, "nowhere.dnssec.test.", DO);
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r:?}");
    assert!(r.metadata.authentic_data, "{r:?}");

    // `dig +dnssec` straight to hushd, as a user would try it: RRSIG and DO in the reply, from
    // the cache now (Unbound asked the same)
    let out = Command::new("dig")
        .args([
            "+dnssec",
            "+norecurse",
            "+time=2",
            "+tries=2",
            "-p",
            &near.dns.port().to_string(),
            "@127.0.0.1",
            "www.dnssec.test.",
            "A",
        ])
        .output()
        .unwrap();
    let dig = String::from_utf8(out.stdout).unwrap();
    assert!(dig.contains("status: NOERROR"), "{dig}");
    assert!(
        dig.lines()
            .any(|l| l.starts_with("www.dnssec.test.") && l.contains("\tRRSIG\tA ")),
        "{dig}"
    );
    assert!(dig.contains("; EDNS: version: 0, flags: do;"), "{dig}");
}

#[test]
fn a_client_without_do_gets_no_dnssec_records_and_one_with_do_gets_them() {
    let Some(()) = tools() else { return };
    let zone = SignedZone::start();

    // each order, on a fresh cache: the answer a DO query cached served to a plain query, and
    // the other way round; then the first again (both forms stay in the entry)
    for (first, then) in [(DO, Bits::default()), (Bits::default(), DO)] {
        let (_setup, near) = hushd(zone.addr, "");
        for name in ["www.dnssec.test.", "nowhere.dnssec.test."] {
            for bits in [first, then, first] {
                let r = ask(near.dns, name, bits);
                let nx = name.starts_with("nowhere");
                let rcode = if nx {
                    ResponseCode::NXDomain
                } else {
                    ResponseCode::NoError
                };
                assert_eq!(r.metadata.response_code, rcode, "{name} {bits:?}");
                assert_eq!(dnssec_ok(&r), bits.dnssec_ok, "DO echoed: {name} {bits:?}");
                if bits.dnssec_ok {
                    if nx {
                        // the denial: the SOA's and the NSECs' signatures, and the NSECs
                        assert!(count(&r.authorities, RecordType::NSEC) >= 1, "{r:?}");
                        assert!(count(&r.authorities, RecordType::RRSIG) >= 2, "{r:?}");
                    } else {
                        assert_eq!(count(&r.answers, RecordType::RRSIG), 1, "{r:?}");
                    }
                } else {
                    assert_eq!(dnssec_records(&r), 0, "RFC 4035 3.2.1: {name} {r:?}");
                    assert_eq!(count(&r.answers, RecordType::A), usize::from(!nx));
                }
                // NSD is authoritative, not validating: it never says AD
                assert!(!r.metadata.authentic_data);
            }
        }
    }
    let (_setup, near) = hushd(zone.addr, "");
    // asked for by type, the records are answered without DO too
    let r = (0..3)
        .find_map(|_| {
            try_ask(
                near.dns,
                "www.dnssec.test.",
                RecordType::RRSIG,
                Bits::default(),
            )
        })
        .unwrap();
    assert!(count(&r.answers, RecordType::RRSIG) >= 1, "{r:?}");
}

/// A CD answer may be data a validator rejected: one must never be served to a query without
/// CD. Here hushd forwards to the validating Unbound, which answers the forged name with CD
/// (no validation asked) and SERVFAILs it without.
#[test]
fn answers_to_cd_queries_are_kept_apart_in_the_cache() {
    let Some(()) = tools() else { return };
    let zone = SignedZone::start();
    let (_near_setup, near) = hushd(zone.addr, "");
    let (_unbound, resolver) = unbound(&zone, near.dns);
    let (_setup, front) = hushd(resolver, "");
    let misses = || front.metric("hushd_cache_misses_total").unwrap_or(0.0);

    let r = ask(front.dns, "tampered.dnssec.test.", CD);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{r:?}");
    assert_eq!(count(&r.answers, RecordType::A), 1);
    assert!(r.metadata.checking_disabled, "CD echoed");
    assert!(!r.metadata.authentic_data, "not validated");
    let r = ask(front.dns, "tampered.dnssec.test.", Bits::default());
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{r:?}");
    assert!(r.answers.is_empty(), "the CD answer leaked: {r:?}");

    // the same for a good name: the second key is a miss, then a hit of its own
    ask(front.dns, "www.dnssec.test.", Bits::default());
    let before = misses();
    ask(front.dns, "www.dnssec.test.", Bits::default());
    assert_eq!(misses(), before, "a hit");
    ask(front.dns, "www.dnssec.test.", CD);
    assert_eq!(
        misses(),
        before + 1.0,
        "a CD query misses what a plain one cached"
    );
    ask(front.dns, "www.dnssec.test.", CD);
    assert_eq!(misses(), before + 1.0, "and then hits its own");
}

/// AD is passed on from a trusted upstream (here: the validating Unbound on loopback) to a
/// client that set AD or DO, from the cache as well as forwarded; never on a blocked name;
/// never with `trust_ad = false`.
#[test]
fn ad_comes_from_a_trusted_upstream_only_and_never_with_a_block() {
    let Some(()) = tools() else { return };
    let zone = SignedZone::start();
    let (_near_setup, near) = hushd(zone.addr, "");
    let (_unbound, resolver) = unbound(&zone, near.dns);
    let (_setup, front) = hushd(resolver, "");

    for _ in 0..2 {
        // forwarded, then from the cache
        for bits in [AD, DO] {
            let r = ask(front.dns, "www.dnssec.test.", bits);
            assert!(r.metadata.authentic_data, "{bits:?}: {r:?}");
        }
        let r = ask(front.dns, "www.dnssec.test.", Bits::default());
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(!r.metadata.authentic_data, "not asked for: {r:?}");
    }

    // blocked: hushd's own unsigned NXDOMAIN, never AD, whatever the client set
    for bits in [AD, DO, Bits::default()] {
        let r = ask(front.dns, "blocked.dnssec.test.", bits);
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{r:?}");
        assert!(!r.metadata.authentic_data, "{bits:?}: {r:?}");
        assert_eq!(dnssec_records(&r), 0, "{r:?}");
        assert_eq!(dnssec_ok(&r), bits.dnssec_ok);
    }

    // the same upstream, not trusted
    let (_setup, untrusting) = hushd(resolver, "trust_ad = false");
    for bits in [AD, DO, AD, DO] {
        let r = ask(untrusting.dns, "www.dnssec.test.", bits);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(!r.metadata.authentic_data, "trust_ad = false: {r:?}");
    }
    // and the data itself still comes through, signatures and all, for a validating client
    let r = ask(untrusting.dns, "www.dnssec.test.", DO);
    assert_eq!(count(&r.answers, RecordType::RRSIG), 1, "{r:?}");
}
