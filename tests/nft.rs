//! The nftables set writer against the real kernel and nft, in network namespaces each test
//! makes (root only: skipped elsewhere, a failure under HUSHD_REQUIRE_TOOLS). The shipped
//! example ruleset (nftables/hushd.nft) is what every test loads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use hushd::{
    egress::{
        SetRef,
        netlink::Refresh,
        nft::{CheckError, NftWriter, SetProblem, SetTargets, WriterOptions, check_sets},
    },
    metrics::Metrics,
};
use support::netns::NetNs;

/// A namespace with nft and the example ruleset loaded; `None` where the test cannot run.
fn namespace_with_ruleset() -> Option<NetNs> {
    support::tool("nft")?;
    let ns = NetNs::new()?;
    ns.sh("nft -f nftables/hushd.nft");
    Some(ns)
}

fn set(s: &str) -> SetRef {
    SetRef::parse(s).unwrap()
}

/// The elements of a set in the namespace: (address, timeout, expires), in seconds.
fn elements(ns: &NetNs, set: &str) -> Vec<(IpAddr, u64, u64)> {
    let json = ns.sh(&format!("nft -j list set inet hushd {set}"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        let Some(elems) = item["set"]["elem"].as_array() else {
            continue;
        };
        for e in elems {
            let e = &e["elem"];
            out.push((
                e["val"].as_str().unwrap().parse().unwrap(),
                e["timeout"].as_u64().unwrap_or(0),
                e["expires"].as_u64().unwrap_or(0),
            ));
        }
    }
    out.sort();
    out
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
    start.elapsed()
}

/// A writer whose loop (and netlink socket) lives in the namespace, and the targets of `sets`.
fn writer_in(
    ns: &NetNs,
    sets: &[&str],
    options: WriterOptions,
    run_loop: bool,
) -> (
    NftWriter,
    SetTargets,
    Arc<Metrics>,
    Option<hushd::egress::nft::BatchLoop>,
) {
    let sets: Vec<SetRef> = sets.iter().map(|s| set(s)).collect();
    ns.run(move || {
        let metrics = Arc::new(Metrics::new().unwrap());
        let (writer, batches) = NftWriter::new(metrics.clone(), 300, options);
        let targets = writer.resolve(&sets).unwrap();
        let batches = if run_loop {
            // a thread started here is in the namespace too
            std::thread::spawn(move || batches.run());
            None
        } else {
            Some(batches)
        };
        (writer, targets, metrics, batches)
    })
}

fn metric(metrics: &Metrics, set: &str, result: &str) -> u64 {
    let text = String::from_utf8(metrics.render()).unwrap();
    let series = format!("hushd_nft_elements_total{{result=\"{result}\",set=\"{set}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

fn elements_get_timeouts_and_are_refreshed(refresh: Refresh) {
    let Some(ns) = namespace_with_ruleset() else {
        return;
    };
    let options = WriterOptions {
        refresh: Some(refresh),
        // every offer goes out: the test shows what the kernel does with a re-add
        reoffer_after: Duration::ZERO,
        ..WriterOptions::default()
    };
    let (writer, targets, metrics, _) = writer_in(
        &ns,
        &["inet hushd xiaomi4", "inet hushd xiaomi6"],
        options,
        true,
    );
    let v4: IpAddr = "198.51.100.7".parse().unwrap();
    let v6: IpAddr = "2001:db8::7".parse().unwrap();

    // A short TTL gets the floor (min_timeout_secs 300), a long one its own.
    writer.offer_answer(&targets, [(v4, 30), (v6, 900)]);
    let took = wait_for(
        "both addresses in their sets",
        Duration::from_secs(1),
        || elements(&ns, "xiaomi4").len() == 1 && elements(&ns, "xiaomi6").len() == 1,
    );
    eprintln!("in the sets {took:?} after the offer");
    let [(a4, t4, _)] = elements(&ns, "xiaomi4")[..] else {
        unreachable!()
    };
    assert_eq!((a4, t4), (v4, 300));
    let [(a6, t6, _)] = elements(&ns, "xiaomi6")[..] else {
        unreachable!()
    };
    assert_eq!((a6, t6), (v6, 900));

    // Time passes, the element counts down; the same answer again (a cache hit) puts its
    // expiry back up, with the same timeout.
    std::thread::sleep(Duration::from_millis(2500));
    let (_, _, expires) = elements(&ns, "xiaomi4")[0];
    assert!(expires <= 298, "expires {expires} after 2.5 s");
    writer.offer_answer(&targets, [(v4, 30)]);
    wait_for("the expiry refreshed", Duration::from_secs(1), || {
        elements(&ns, "xiaomi4")[0].2 >= 299
    });
    // A longer TTL later raises the timeout itself.
    writer.offer_answer(&targets, [(v4, 3600)]);
    wait_for("the timeout raised", Duration::from_secs(1), || {
        elements(&ns, "xiaomi4")[0].1 == 3600
    });
    assert_eq!(elements(&ns, "xiaomi4").len(), 1);
    assert_eq!(metric(&metrics, "inet hushd xiaomi4", "added"), 3);
    assert_eq!(metric(&metrics, "inet hushd xiaomi6", "added"), 1);
    assert_eq!(metric(&metrics, "inet hushd xiaomi4", "error"), 0);
}

/// Linux 6.12 and later: a re-add updates the element.
#[test]
fn elements_get_timeouts_and_are_refreshed_by_readding() {
    elements_get_timeouts_and_are_refreshed(Refresh::Readd);
}

/// What older kernels get: add, delete, add in one transaction. Works on new kernels too.
#[test]
fn elements_get_timeouts_and_are_refreshed_by_delete_and_readd() {
    elements_get_timeouts_and_are_refreshed(Refresh::DeleteReadd);
}

/// The shipped example passes nft's own check (`nft -c`), as an admin would run it first.
#[test]
fn example_ruleset_passes_nft_check() {
    if support::tool("nft").is_none() {
        return;
    }
    let Some(ns) = NetNs::new() else {
        return;
    };
    ns.sh("nft -c -f nftables/hushd.nft");
    // and it defines what it promises
    ns.sh("nft -f nftables/hushd.nft");
    let sets: Vec<SetRef> = ["xiaomi4", "xiaomi6", "iot_allowed4", "iot_allowed6"]
        .iter()
        .map(|s| set(&format!("inet hushd {s}")))
        .collect();
    let checked = ns.run(move || check_sets(&sets)).unwrap();
    assert_eq!(checked.len(), 4);
}

/// Offers of one batch become one element per set and address (the longest timeout), and a
/// thousand distinct addresses land in one go.
#[test]
fn a_batch_is_deduplicated_and_a_thousand_addresses_land_at_once() {
    let Some(ns) = namespace_with_ruleset() else {
        return;
    };
    let (writer, targets, metrics, batches) = writer_in(
        &ns,
        &["inet hushd xiaomi4", "inet hushd xiaomi6"],
        WriterOptions::default(),
        false,
    );
    let addrs: Vec<(IpAddr, u32)> = (0..500u32)
        .map(|i| (IpAddr::from((0x0a00_0000u32 | i).to_be_bytes()), 60))
        .chain((0..500u16).map(|i| (IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]), 60)))
        .collect();
    // the batch holds 1000 distinct elements: the repeats go first to be in it
    writer.offer_answer(&targets, [(addrs[0].0, 7200), (addrs[0].0, 600)]);
    writer.offer_answer(&targets, addrs.iter().copied());
    // the loop starts with all of it queued: one batch
    let batches = batches.unwrap();
    ns.run(move || std::thread::spawn(move || batches.run()));
    let took = wait_for("1000 addresses in the sets", Duration::from_secs(2), || {
        elements(&ns, "xiaomi4").len() == 500 && elements(&ns, "xiaomi6").len() == 500
    });
    eprintln!("1000 addresses in the sets after {took:?}");
    let first = elements(&ns, "xiaomi4")
        .into_iter()
        .find(|(a, _, _)| *a == addrs[0].0)
        .unwrap();
    assert_eq!(first.1, 7200);
    assert_eq!(metric(&metrics, "inet hushd xiaomi4", "added"), 500);
    assert_eq!(metric(&metrics, "inet hushd xiaomi6", "added"), 500);
}

/// With the queue full, offers are dropped and counted, and the query path does not wait.
#[test]
fn a_full_queue_drops_and_counts() {
    let Some(ns) = namespace_with_ruleset() else {
        return;
    };
    let options = WriterOptions {
        queue: 4,
        ..WriterOptions::default()
    };
    let (writer, targets, metrics, batches) =
        writer_in(&ns, &["inet hushd xiaomi4"], options, false);
    let started = Instant::now();
    writer.offer_answer(
        &targets,
        (1..=10u8).map(|i| (IpAddr::from([198, 51, 100, i]), 60)),
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(metric(&metrics, "inet hushd xiaomi4", "dropped"), 6);
    let batches = batches.unwrap();
    ns.run(move || std::thread::spawn(move || batches.run()));
    wait_for("the queued four", Duration::from_secs(1), || {
        elements(&ns, "xiaomi4").len() == 4
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(elements(&ns, "xiaomi4").len(), 4);
    assert_eq!(metric(&metrics, "inet hushd xiaomi4", "added"), 4);
}

/// Missing sets and sets hushd cannot feed are errors naming the set and what is wrong.
#[test]
fn check_sets_reports_missing_and_unfit_sets() {
    let Some(ns) = namespace_with_ruleset() else {
        return;
    };
    ns.sh(
        "nft add set inet hushd ports '{ type inet_service; flags timeout; }' && \
         nft add set inet hushd forever '{ type ipv4_addr; }' && \
         nft add set inet hushd ranges '{ type ipv4_addr; flags interval,timeout; }' && \
         nft add table ip other && nft add set ip other v6 '{ type ipv6_addr; flags timeout; }'",
    );
    let sets = vec![
        set("inet hushd xiaomi4"),
        set("inet hushd nosuch"),
        set("inet nosuch xiaomi4"),
        set("inet hushd ports"),
        set("inet hushd forever"),
        set("inet hushd ranges"),
        set("ip other v6"),
    ];
    let errors = ns.run(move || check_sets(&sets)).unwrap_err();
    let problems: Vec<(usize, SetProblem)> = errors
        .iter()
        .map(|e| match e {
            CheckError::Set { index, problem, .. } => (*index, problem.clone()),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(problems.len(), 5, "{problems:?}");
    assert_eq!(problems[0], (1, SetProblem::Missing));
    assert_eq!(problems[1], (2, SetProblem::Missing));
    assert!(matches!(problems[2], (3, SetProblem::WrongType { .. })));
    assert_eq!(problems[3], (4, SetProblem::NoTimeout));
    assert!(matches!(problems[4], (5, SetProblem::WrongKind(_))));
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text[0].contains("\"inet hushd nosuch\": does not exist"),
        "{text:?}"
    );
    assert!(text[2].contains("holds inet_service"), "{text:?}");
    assert!(text[3].contains("flags timeout"), "{text:?}");

    // An ipv6_addr set in an `ip` table is fine: the family is the key's, not the table's.
    let ok = ns
        .run(|| check_sets(&[set("ip other v6"), set("inet hushd iot_allowed4")]))
        .unwrap();
    assert_eq!(ok.len(), 2);
}

/// Without CAP_NET_ADMIN the error says so and names the drop-in. The test runs itself again
/// with every capability dropped (setpriv).
#[test]
fn without_cap_net_admin_the_error_says_so() {
    if std::env::var_os("HUSHD_TEST_UNPRIVILEGED_CHILD").is_some() {
        let errors = check_sets(&[set("inet hushd xiaomi4")]).unwrap_err();
        println!("CHECK-ERROR: {}", errors[0]);
        return;
    }
    let Some(setpriv) = support::tool("setpriv") else {
        return;
    };
    let out = std::process::Command::new(setpriv)
        .args(["--inh-caps=-all", "--bounding-set=-all", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_cap_net_admin_the_error_says_so",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HUSHD_TEST_UNPRIVILEGED_CHILD", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("CHECK-ERROR:"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("CAP_NET_ADMIN"), "{line}");
    assert!(
        line.contains("systemd/hushd.service.d/nftables.conf"),
        "{line}"
    );
}

/// Router (the example ruleset, forwarding), client 192.0.2.2 on its LAN and in `iot_clients`,
/// and a server on its WAN side at 198.51.100.10 and .11: three namespaces joined by veth
/// pairs, so the client's TCP connections cross the router's forward chain. `None` where the
/// test cannot run.
fn strict_topology() -> Option<(NetNs, NetNs, NetNs)> {
    let router = namespace_with_ruleset()?;
    let client = NetNs::new().unwrap();
    let server = NetNs::new().unwrap();
    router.link("lan0", "192.0.2.1/24", &client, "eth0", "192.0.2.2/24");
    router.link(
        "wan0",
        "198.51.100.1/24",
        &server,
        "eth0",
        "198.51.100.10/24",
    );
    server.sh("ip addr add 198.51.100.11/24 dev eth0 && ip route add default via 198.51.100.1");
    client.sh("ip route add default via 192.0.2.1");
    router.sh("sysctl -qw net.ipv4.ip_forward=1 && \
         nft add element inet hushd iot_clients '{ 192.0.2.2 }'");
    Some((router, client, server))
}

/// The example ruleset's strict egress: a client in the IoT set reaches an address once it is
/// in the group's set, and nothing else. Router, client and server are three namespaces joined
/// by veth pairs; the client's TCP connections cross the router's forward chain.
#[test]
fn strict_egress_lets_through_only_answered_addresses() {
    let Some((router, client, server)) = strict_topology() else {
        return;
    };
    let (writer, targets, _, _) = writer_in(
        &router,
        &["inet hushd iot_allowed4"],
        WriterOptions::default(),
        true,
    );
    let answered: SocketAddr = "198.51.100.10:8080".parse().unwrap();
    let other: SocketAddr = "198.51.100.11:8080".parse().unwrap();
    server.run(move || {
        for addr in [answered, other] {
            let listener = TcpListener::bind(addr).unwrap();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    drop(conn);
                }
            });
        }
    });
    let connects = move |addr: SocketAddr| {
        client.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok())
    };

    assert!(!connects(answered), "reached before any answer");
    writer.offer_answer(&targets, [(answered.ip(), 60)]);
    wait_for(
        "the answered address in iot_allowed4",
        Duration::from_secs(1),
        || elements(&router, "iot_allowed4").len() == 1,
    );
    assert!(connects(answered), "the answered address is dropped");
    assert!(!connects(other), "an address never answered is reached");
    let counters = router.sh("nft list chain inet hushd forward");
    assert!(
        counters.contains("daddr != @iot_allowed4 counter packets"),
        "{counters}"
    );
}

/// Figures for docs and the issue (release build, by hand):
/// `cargo test --release --test nft -- --ignored --nocapture measure`. Bounded loops.
#[test]
#[ignore = "a measurement, run by hand"]
fn measure_batch_and_offer_costs() {
    use hushd::egress::netlink::{Netlink, SetWrite};
    let Some(ns) = namespace_with_ruleset() else {
        return;
    };
    let report = ns.run(|| {
        let mut out = String::new();
        let mut nl = Netlink::open().unwrap();
        let x4 = set("inet hushd xiaomi4");
        for refresh in [Refresh::Readd, Refresh::DeleteReadd] {
            for round in 0..2u32 {
                // round 0: 1000 new addresses; round 1: the same again (refresh)
                let base = 0x0a00_0000u32 + (refresh as u32) * 0x10000;
                let elements: Vec<(IpAddr, u32)> = (0..1000u32)
                    .map(|i| (IpAddr::from((base + i).to_be_bytes()), 300 + round))
                    .collect();
                let start = Instant::now();
                let failed = nl.write(
                    &[SetWrite {
                        set: &x4,
                        elements: &elements,
                    }],
                    refresh,
                );
                let took = start.elapsed();
                assert!(failed.is_empty(), "{failed:?}");
                out += &format!(
                    "netlink {refresh:?}, 1000 {}: {took:?}\n",
                    if round == 0 { "new" } else { "existing" }
                );
            }
        }
        // the same 1000 through one nft process
        let script: Vec<String> = (0..1000u32)
            .map(|i| {
                format!(
                    "{} timeout 300s expires 300s",
                    std::net::Ipv4Addr::from(0x0b00_0000 + i)
                )
            })
            .collect();
        let script = format!(
            "add element inet hushd xiaomi4 {{ {} }}\n",
            script.join(", ")
        );
        std::fs::write("/tmp/hushd-nft-measure.nft", &script).unwrap();
        let start = Instant::now();
        let ok = std::process::Command::new("nft")
            .args(["-f", "/tmp/hushd-nft-measure.nft"])
            .status()
            .unwrap()
            .success();
        out += &format!("nft -f, 1000 new: {:?} (ok {ok})\n", start.elapsed());
        out
    });
    eprint!("{report}");

    // Offers: the query path's cost, with the loop running; then 10 000 distinct addresses in
    // one burst, and how long until all are in the set.
    let addrs: Vec<(IpAddr, u32)> = (0..1000u16)
        .map(|i| (IpAddr::from([0x2001, 0xdb8, 1, 0, 0, 0, 0, i]), 60))
        .collect();
    for reoffer_after in [Duration::ZERO, Duration::from_secs(10)] {
        let options = WriterOptions {
            reoffer_after,
            ..WriterOptions::default()
        };
        let (writer, targets, metrics, _) = writer_in(&ns, &["inet hushd xiaomi6"], options, true);
        let n = 2_000_000usize;
        let start = Instant::now();
        for i in 0..n {
            writer.offer_answer(&targets, [addrs[i % addrs.len()]]);
        }
        let took = start.elapsed();
        std::thread::sleep(Duration::from_millis(100));
        eprintln!(
            "{n} answers (1000 addresses cycling), reoffer_after {reoffer_after:?}: {:.0} ns each, \
             {:.1} M/s; written {}, dropped {}",
            took.as_nanos() as f64 / n as f64,
            n as f64 / took.as_secs_f64() / 1e6,
            metric(&metrics, "inet hushd xiaomi6", "added"),
            metric(&metrics, "inet hushd xiaomi6", "dropped")
        );
    }
    let (writer, targets, _, _) =
        writer_in(&ns, &["inet hushd xiaomi6"], WriterOptions::default(), true);
    std::thread::sleep(Duration::from_millis(200));
    let fresh: Vec<(IpAddr, u32)> = (0..10_000u32)
        .map(|i| {
            (
                IpAddr::from([0x2001, 0xdb8, 2, 0, 0, 0, (i >> 16) as u16, i as u16]),
                60,
            )
        })
        .collect();
    let start = Instant::now();
    writer.offer_answer(&targets, fresh.iter().copied());
    let offered = start.elapsed();
    let took = wait_for(
        "10 000 addresses in the set",
        Duration::from_secs(10),
        || {
            ns.sh("nft list set inet hushd xiaomi6 | grep -o '2001:db8:2::' | wc -l")
                .trim()
                .parse::<usize>()
                .unwrap()
                >= 10_000
        },
    );
    eprintln!(
        "10 000 distinct addresses offered in {offered:?}, all in the set after {took:?} (polling with nft list)"
    );
}

/// The whole path through the real daemon, in namespaces: a router running hushd (with its
/// upstream fixture on the router's loopback) and the example ruleset; a client on the LAN in
/// a strict group; a server on the WAN side. Names `ip-A-B-C-D.example` are answered with
/// A-B-C-D by the fixture.
#[test]
fn hushd_feeds_list_and_group_sets_refreshes_them_on_cache_hits_and_strict_egress_holds() {
    let Some((router, client, server)) = strict_topology() else {
        return;
    };

    // the upstream fixture on the router's loopback, on a runtime whose threads live there
    let (runtime, upstream) = router.run(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let up = rt.block_on(support::upstream::Upstream::start());
        (rt, up)
    });
    let setup = Arc::new(support::Setup::new(
        &[upstream.addr],
        "allow_clients = [\"127.0.0.0/8\", \"192.0.2.0/24\"]",
    ));
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let port = setup.dns.port();
    setup.write_config(&format!(
        "{}\n[egress]\nmin_timeout_secs = 400\n\n[[groups]]\nname = \"iot\"\nclients = [\"192.0.2.2\"]\negress_set = \"inet hushd iot_allowed4\"\n",
        config.replace(
            &format!("listen = [\"127.0.0.1:{port}\"]"),
            &format!("listen = [\"127.0.0.1:{port}\", \"192.0.2.1:{port}\"]"),
        )
    ));
    setup.write_list(
        "xiaomi",
        "action = \"log\"\ndomains = [\"tracker.example\"]\nnft_sets = [\"inet hushd xiaomi4\", \"inet hushd xiaomi6\"]\n",
    );
    let hushd = {
        let setup = setup.clone();
        router.run(move || setup.start())
    };

    // from the router itself (the default group): a listed name feeds the list's set, with
    // the timeout max(TTL 300, min_timeout_secs 400)
    let ask = |ns: &NetNs, server: &str, name: &str| {
        let (server, name) = (format!("{server}:{port}"), name.to_string());
        ns.sh(&format!(
            "dig +short +tries=1 +time=2 @{} -p {} {name} A",
            server.split(':').next().unwrap(),
            port
        ))
    };
    assert_eq!(
        ask(&router, "127.0.0.1", "ip-198-51-100-12.tracker.example").trim(),
        "198.51.100.12"
    );
    wait_for(
        "the tracker's address in xiaomi4",
        Duration::from_secs(1),
        || {
            elements(&router, "xiaomi4")
                .iter()
                .any(|e| e.0.to_string() == "198.51.100.12" && e.1 == 400)
        },
    );
    // an unlisted name from the default group feeds nothing
    ask(&router, "127.0.0.1", "ip-198-51-100-13.other.example");

    // a cache hit refreshes the element's expiry (dnsmasq's nftset does not); the writer
    // refreshes an element at most every 10 s, so this waits past that
    std::thread::sleep(Duration::from_millis(11_500));
    let before = elements(&router, "xiaomi4")[0].2;
    assert!(before <= 389, "expires {before}");
    ask(&router, "127.0.0.1", "ip-198-51-100-12.tracker.example");
    wait_for(
        "the element's expiry refreshed by a cache hit",
        Duration::from_secs(1),
        || elements(&router, "xiaomi4")[0].2 > before,
    );
    assert_eq!(upstream.seen.count("ip-198-51-100-12.tracker.example"), 1);
    assert!(
        !elements(&router, "xiaomi4")
            .iter()
            .any(|e| e.0.to_string() == "198.51.100.13"),
        "an unlisted name's address went into the list's set"
    );

    // strict egress: the iot client reaches only what hushd answered it
    let answered: SocketAddr = "198.51.100.10:8080".parse().unwrap();
    let other: SocketAddr = "198.51.100.11:8080".parse().unwrap();
    server.run(move || {
        for addr in [answered, other] {
            let listener = TcpListener::bind(addr).unwrap();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    drop(conn);
                }
            });
        }
    });
    let connects = |addr: SocketAddr| {
        client.run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok())
    };
    assert!(!connects(answered), "reached before any answer");
    assert_eq!(
        ask(&client, "192.0.2.1", "ip-198-51-100-10.example").trim(),
        "198.51.100.10"
    );
    let took = wait_for(
        "the answered address in iot_allowed4",
        Duration::from_secs(1),
        || !elements(&router, "iot_allowed4").is_empty(),
    );
    assert!(connects(answered), "the answered address is dropped");
    assert!(!connects(other), "an address never answered is reached");
    // the router's own lookups are not the iot group's
    assert_eq!(elements(&router, "iot_allowed4").len(), 1, "{took:?}");
    drop(hushd);
    drop(runtime);
}

/// `hushd check` and startup refuse a list or group naming a set the ruleset lacks, naming
/// the list or group and the set.
#[test]
fn check_and_start_refuse_a_missing_set() {
    let Some(router) = namespace_with_ruleset() else {
        return;
    };
    let setup = Arc::new(support::Setup::new(&["127.0.0.1:9".parse().unwrap()], ""));
    setup.append_config(
        "[[groups]]\nname = \"iot\"\nclients = [\"10.0.5.0/24\"]\negress_set = \"inet hushd iot_allowd4\"\n",
    );
    setup.write_list(
        "xiaomi",
        "action = \"log\"\ndomains = [\"tracker.example\"]\nnft_sets = [\"inet hushd xiaomi4\", \"inet hushd nope6\"]\n",
    );
    let config = setup.config_path().display().to_string();
    let out = router.output(support::HUSHD, &["--config", &config, "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        "xiaomi.toml: list xiaomi nft_sets: nftables set \"inet hushd nope6\": does not exist",
        "hushd.toml: group \"iot\" egress_set: nftables set \"inet hushd iot_allowd4\": does not exist",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    let out = router.output(support::HUSHD, &["--config", &config]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("inet hushd nope6"),
        "{err}"
    );
}
