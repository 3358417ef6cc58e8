//! End-to-end tests: the real `hushd` binary, a real authoritative upstream on loopback, and
//! hickory's DNS client over UDP and TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{net::SocketAddr, time::Duration, time::Instant};

use hickory_net::client::ClientHandle;
use hickory_proto::{
    op::{Edns, ResponseCode},
    rr::{RData, RecordType, rdata::opt::EdnsOption},
};
use support::{Setup, list, query, rcode, tcp_client, udp_client, upstream::Upstream, wait_until};

fn ede(edns: Option<&Edns>) -> Option<(u16, String)> {
    edns?.options().as_ref().iter().find_map(|(_, o)| match o {
        EdnsOption::Unknown(15, d) if d.len() >= 2 => Some((
            u16::from_be_bytes([d[0], d[1]]),
            String::from_utf8_lossy(&d[2..]).into_owned(),
        )),
        _ => None,
    })
}

fn a_records(r: &hickory_proto::op::DnsResponse) -> Vec<String> {
    r.answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_and_caches_over_udp_and_tcp() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;

    let r = query(&mut udp, "www.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.recursion_available);
    assert_eq!(a_records(&r), vec!["192.0.2.1"]);
    let r = query(&mut udp, "www.example.", RecordType::AAAA).await;
    assert_eq!(a_records(&r), vec!["2001:db8::1"]);

    // The second ask of the same question is served from the cache, echoing the client's case.
    let r = query(&mut udp, "WWW.example.", RecordType::A).await;
    assert_eq!(a_records(&r), vec!["192.0.2.1"]);
    assert_eq!(r.queries[0].name().to_ascii(), "WWW.example.");
    assert!(r.edns.is_some(), "EDNS echoed on a cached answer");
    assert!(r.answers[0].ttl <= support::upstream::TTL);
    let mut tcp = tcp_client(hushd.dns).await;
    let r = query(&mut tcp, "www.example.", RecordType::A).await;
    assert_eq!(a_records(&r), vec!["192.0.2.1"]);
    assert_eq!(
        up.seen.count("www.example"),
        2,
        "A once and AAAA once: {:?}",
        up.seen.names()
    );
    assert!(hushd.metric("hushd_cache_hits_total").unwrap() >= 2.0);
    assert_eq!(hushd.metric("hushd_cache_misses_total"), Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserves_cname_chains_and_negative_answers() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;

    let r = query(&mut udp, "cname.example.", RecordType::A).await;
    let types: Vec<RecordType> = r.answers.iter().map(|a| a.record_type()).collect();
    assert_eq!(types, vec![RecordType::CNAME, RecordType::A]);

    for _ in 0..2 {
        let r = query(&mut udp, "nx.example.", RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        let r = query(&mut udp, "www.example.", RecordType::MX).await;
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    }
    // negative answers are cached too (RFC 2308), NXDOMAIN and NODATA alike
    assert_eq!(up.seen.count("nx.example"), 1);
    assert_eq!(up.seen.count("www.example"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_listed_names_and_subdomains_with_an_extended_error() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list(
        "xiaomi",
        &list("block", &["tracking.miui.com", "mistat.xiaomi.com."]),
    );
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;

    for name in [
        "tracking.miui.com.",
        "a.b.tracking.miui.com.",
        "TRACKING.Miui.COM.",
        "mistat.xiaomi.com.",
    ] {
        let r = query(&mut udp, name, RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::NXDomain, "{name}");
        assert!(r.answers.is_empty());
        assert_eq!(
            ede(r.edns.as_ref()),
            Some((15, "blocked by list xiaomi".to_string())),
            "{name}"
        );
    }
    let mut tcp = tcp_client(hushd.dns).await;
    let r = query(&mut tcp, "tracking.miui.com.", RecordType::AAAA).await;
    assert_eq!(r.response_code, ResponseCode::NXDomain);

    // label-aligned: these are not subdomains of a listed name
    for name in [
        "xtracking.miui.com.",
        "miui.com.",
        "mistat.xiaomi.com.example.",
    ] {
        let r = query(&mut udp, name, RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(a_records(&r), vec!["192.0.2.1"], "{name}");
    }
    assert!(
        up.seen
            .names()
            .iter()
            .all(|n| !n.to_ascii_lowercase().ends_with("tracking.miui.com") || n.starts_with('x')),
        "a blocked name reached upstream: {:?}",
        up.seen.names()
    );
    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="block",list="xiaomi",via="name"}"#),
        Some(5.0)
    );
    assert_eq!(
        hushd.metric(r#"hushd_blocklist_domains{list="xiaomi"}"#),
        Some(2.0)
    );
    assert!(
        hushd
            .metric(r#"hushd_queries_total{outcome="blocked",protocol="udp",qtype="A"}"#)
            .unwrap()
            >= 4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_and_refused_block_responses() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "block_response = \"null\"");
    setup.write_list("nulled", &list("block", &["null.example"]));
    setup.write_list(
        "refuse",
        &format!(
            "block_response = \"refused\"\n{}",
            list("block", &["refused.example"])
        ),
    );
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;

    let r = query(&mut udp, "null.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&r), vec!["0.0.0.0"]);
    let r = query(&mut udp, "x.null.example.", RecordType::AAAA).await;
    assert_eq!(a_records(&r), vec!["::"]);
    let r = query(&mut udp, "null.example.", RecordType::TXT).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    let r = query(&mut udp, "refused.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::Refused);
    assert_eq!(ede(r.edns.as_ref()).map(|e| e.0), Some(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_only_lists_answer_normally_and_record_the_match() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("samsung", &list("log", &["samsungads.com"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;

    let r = query(&mut udp, "config.samsungads.com.", RecordType::AAAA).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&r), vec!["2001:db8::1"]);
    assert!(hushd.wait_log("list match", Duration::from_secs(2)));
    let line = hushd
        .log()
        .lines()
        .find(|l| l.contains("list match"))
        .unwrap()
        .to_string();
    for want in [
        "client=127.0.0.1",
        "qname=config.samsungads.com",
        "qtype=AAAA",
        "list=samsung",
        "action=\"log\"",
    ] {
        assert!(line.contains(want), "{want} missing from {line}");
    }
    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="log",list="samsung",via="name"}"#),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_outside_allow_clients_are_refused() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "allow_clients = [\"127.0.0.1/32\"]");
    let hushd = setup.start();

    let mut inside = udp_client(hushd.dns, Some("127.0.0.1:0".parse().unwrap())).await;
    let r = query(&mut inside, "www.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);

    let mut outside = udp_client(hushd.dns, Some("127.0.0.2:0".parse().unwrap())).await;
    let r = query(&mut outside, "www.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    assert_eq!(
        hushd.metric(r#"hushd_queries_total{outcome="refused",protocol="udp",qtype="A"}"#),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_edits_apply_live_without_failing_a_query() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("vendor", &list("block", &["old.example"]));
    let hushd = setup.start();
    let dns = hushd.dns;

    // A steady stream of queries runs across the reloads; none may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut c = udp_client(dns, None).await;
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && ok + failed < 20_000 {
                match c
                    .query(
                        "steady.example.".parse().unwrap(),
                        hickory_proto::rr::DNSClass::IN,
                        RecordType::A,
                    )
                    .await
                {
                    Ok(r) if r.response_code == ResponseCode::NoError && !r.answers.is_empty() => {
                        ok += 1
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (ok, failed)
        }
    });

    let mut udp = udp_client(dns, None).await;
    assert_eq!(rcode(&mut udp, "new.example.").await, ResponseCode::NoError);

    setup.write_list("vendor", &list("block", &["old.example", "new.example"]));
    let applied = support::wait_for_rcode(
        &mut udp,
        "new.example.",
        ResponseCode::NXDomain,
        Duration::from_secs(3),
    )
    .await;
    let applied = applied.expect("edit not applied within 3 s");
    assert!(applied < Duration::from_secs(2), "edit took {applied:?}");

    // A list removed from the folder stops blocking.
    std::fs::remove_file(setup.list_path("vendor")).unwrap();
    let unblocked = support::wait_for_rcode(
        &mut udp,
        "old.example.",
        ResponseCode::NoError,
        Duration::from_secs(3),
    )
    .await;
    assert!(unblocked.is_some(), "removed list still blocks");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = background.await.unwrap();
    assert!(ok >= 10, "only {ok} background answers across the reloads");
    assert_eq!(failed, 0, "{failed} queries failed during reloads");
    assert!(hushd.metric(r#"hushd_reloads_total{result="ok"}"#).unwrap() >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_edit_keeps_the_old_policy_and_says_where() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("vendor", &list("block", &["blocked.example"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;

    // line 4 lacks the comma after the previous element
    setup.write_list(
        "vendor",
        "action = \"block\"\ndomains = [\n  \"blocked.example\"\n  \"other.example\",\n]\n",
    );
    assert!(
        wait_until(Duration::from_secs(3), || hushd
            .metric(r#"hushd_reloads_total{result="error"}"#)
            == Some(1.0)),
        "reload error not counted:\n{}",
        hushd.log()
    );
    let path = setup.list_path("vendor");
    assert!(
        hushd.wait_log(
            &format!("{}:4:3: missing comma", path.display()),
            Duration::from_secs(5)
        ),
        "{}",
        hushd.log()
    );
    assert!(hushd.wait_log("previous policy stays in force", Duration::from_secs(5)));
    assert_eq!(
        rcode(&mut udp, "blocked.example.").await,
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&mut udp, "other.example.").await,
        ResponseCode::NoError
    );

    // an invalid name is located too, and a broken config file is rejected the same way
    setup.write_list(
        "vendor",
        &list("block", &["blocked.example", "bad name.example"]),
    );
    assert!(
        wait_until(Duration::from_secs(3), || hushd
            .log()
            .contains(&format!("{}:4:3: \"bad name.example\"", path.display()))),
        "{}",
        hushd.log()
    );
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(
        setup.config_path(),
        config.replace("[server]", "[server]\nlisen = 1"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(3), || hushd
            .log()
            .contains("unknown field `lisen`")),
        "{}",
        hushd.log()
    );
    assert_eq!(
        rcode(&mut udp, "blocked.example.").await,
        ResponseCode::NXDomain,
        "{}",
        hushd.log()
    );
    assert!(
        hushd
            .metric(r#"hushd_reloads_total{result="error"}"#)
            .unwrap()
            >= 3.0
    );

    // fixing both files applies the new list
    std::fs::write(setup.config_path(), config).unwrap();
    setup.write_list("vendor", &list("block", &["other.example"]));
    assert!(
        wait_until(Duration::from_secs(3), || hushd
            .metric(r#"hushd_reloads_total{result="ok"}"#)
            == Some(2.0)),
        "{}",
        hushd.log()
    );
    assert_eq!(
        rcode(&mut udp, "other.example.").await,
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&mut udp, "blocked.example.").await,
        ResponseCode::NoError
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_in_bounded_time_when_every_upstream_is_down() {
    // a port where nothing listens
    let dead: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let setup = Setup::new(&[dead], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = query(&mut udp, "www.example.", RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::ServFail);
        // ICMP port unreachable ends each attempt at once: well inside attempt_timeout_ms
        // (1000 in the test config), which a timeout alone would take
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    assert!(
        hushd
            .metric(&format!(
                "hushd_upstream_errors_total{{upstream=\"{dead}\"}}"
            ))
            .unwrap()
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_upstream_gives_servfail_within_the_deadline() {
    // UDP sockets that read nothing and answer nothing: three attempts of 1000 ms each
    // (attempt_timeout_ms) would take 3 s; the query's deadline (timeout_ms = 2000) cuts it
    let silent: Vec<std::net::UdpSocket> = (0..3)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<SocketAddr> = silent.iter().map(|s| s.local_addr().unwrap()).collect();
    let setup = Setup::new(&addrs, "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let started = Instant::now();
    let r = query(&mut udp, "www.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::ServFail);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(2600),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_upstream_fails_over_to_the_next() {
    let up = Upstream::start().await;
    let dead: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let setup = Setup::new(&[dead, up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let started = Instant::now();
    for i in 0..5 {
        let r = query(&mut udp, &format!("host{i}.example."), RecordType::A).await;
        assert_eq!(a_records(&r), vec!["192.0.2.1"]);
    }
    // ICMP fails the dead server's attempt at once: the five queries together take less than
    // one attempt timeout (1000 ms in the test config) would
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    // and back-off skips it after its first failure instead of asking it every time
    let dead_errors = hushd
        .metric(&format!(
            "hushd_upstream_errors_total{{upstream=\"{dead}\"}}"
        ))
        .unwrap();
    assert!(
        (1.0..=2.0).contains(&dead_errors),
        "{dead_errors} failed attempts"
    );
    assert!(
        hushd
            .metric(&format!(
                "hushd_upstream_duration_seconds_count{{upstream=\"{}\"}}",
                up.addr
            ))
            .unwrap()
            >= 5.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_served_while_the_upstream_is_down() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(
        a_records(&query(&mut udp, "kept.example.", RecordType::A).await),
        vec!["192.0.2.1"]
    );
    up.stop();
    drop(up);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = query(&mut udp, "kept.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&r), vec!["192.0.2.1"]);
    let r = query(&mut udp, "uncached.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::ServFail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_udp_answers_are_truncated_and_complete_over_tcp() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "big.example.", RecordType::TXT).await;
    assert!(
        r.metadata.truncation,
        "a 3 kB answer must not fit a 1232-byte UDP reply"
    );
    let mut tcp = tcp_client(hushd.dns).await;
    let r = query(&mut tcp, "big.example.", RecordType::TXT).await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 30);
    // upstream truncated it over UDP too: hushd asked again over TCP, once, and cached it
    assert_eq!(up.seen.count("big.example"), 2, "{:?}", up.seen.names());
    assert_eq!(up.seen.tcp_count("big.example"), 1);
}

/// Every metric family README.md's metrics table documents is served, with only the labels it
/// documents, and nothing else is; and no label value is a query name or a client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_endpoints() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "allow_clients = [\"127.0.0.0/8\"]");
    setup.write_list("xiaomi", &list("block", &["tracking.miui.com"]));
    setup.write_list("samsung", &list("log", &["samsungads.com"]));
    // a subscription (to a closed port: it fails, which is enough to serve its series)
    setup.write_list(
        "remote",
        "action = \"block\"\nurl = \"http://127.0.0.1:9/remote.txt\"\n",
    );
    let hushd = setup.start();
    let clients = ["127.0.0.5", "127.0.0.6"];
    let names = [
        "www.example.",
        "probe-zz.example.",
        "tracking.miui.com.",
        "a.samsungads.com.",
    ];
    for client in clients {
        let mut udp = udp_client(hushd.dns, Some(format!("{client}:0").parse().unwrap())).await;
        for name in names {
            query(&mut udp, name, RecordType::A).await;
        }
    }
    let mut tcp = tcp_client(hushd.dns).await;
    query(&mut tcp, "www.example.", RecordType::AAAA).await;

    let health = support::http_get(hushd.metrics, "/healthz");
    assert!(
        health.starts_with("HTTP/1.0 200") || health.starts_with("HTTP/1.1 200"),
        "{health}"
    );
    let text = hushd.metrics_text();
    assert!(text.contains("text/plain; version=0.0.4"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(_, b)| b);

    let documented = documented_metrics();
    assert!(documented.len() >= 15, "{documented:?}");
    let served: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for (family, _) in &documented {
        assert!(
            served.contains(&family.as_str()),
            "{family} is in README.md's metrics table but not served:\n{body}"
        );
    }
    for family in &served {
        assert!(
            documented.iter().any(|(f, _)| f == family),
            "{family} is served but not in README.md's metrics table"
        );
    }

    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, labels) = parse_sample(line);
        let (family, labels_allowed) = documented
            .iter()
            .find(|(f, _)| {
                series == f
                    || ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| series.strip_suffix(s) == Some(f.as_str()))
            })
            .unwrap_or_else(|| panic!("{line}: not a documented family"));
        for (label, value) in labels {
            assert!(
                labels_allowed.contains(&label) || (label == "le" && series.ends_with("_bucket")),
                "{line}: label {label} of {family} is not documented in README.md"
            );
            for client in clients {
                assert!(!value.contains(client), "{line}: a client address");
            }
            for name in names {
                let name = name.trim_end_matches('.');
                assert!(!value.contains(name), "{line}: a query name");
            }
            // Only an admin-chosen upstream address, the version or a bucket bound may hold
            // dots or colons.
            if !["upstream", "version", "le"].contains(&label.as_str()) {
                assert!(
                    !value.contains(['.', ':']),
                    "{line}: {label}=\"{value}\" looks like a name or an address"
                );
            }
        }
    }
}

/// The families in README.md's metrics table, each with the label names it documents.
fn documented_metrics() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(support::project_root().join("README.md")).unwrap();
    let mut rows = readme
        .lines()
        .skip_while(|l| !l.starts_with("| metric | labels |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .peekable();
    assert!(rows.peek().is_some(), "no metrics table in README.md");
    let mut out = Vec::new();
    for row in rows {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (metrics, labels) = (cells[1], cells[2]);
        // label values are named in parentheses after their label: `result` (`ok`, `error`)
        let mut label_names = String::new();
        let mut depth = 0;
        for c in labels.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => label_names.push(c),
                _ => {}
            }
        }
        let labels = backticked(&label_names);
        for family in backticked(metrics) {
            out.push((family, labels.clone()));
        }
    }
    out
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// A sample line of the text exposition: its series name and its labels.
fn parse_sample(line: &str) -> (&str, Vec<(String, String)>) {
    let Some((name, rest)) = line.split_once('{') else {
        return (line.split_whitespace().next().unwrap(), Vec::new());
    };
    let mut labels = Vec::new();
    let mut chars = rest.chars();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        let key = key.trim_start_matches(',').to_string();
        if key.starts_with('}') || key.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.extend(chars.next()),
                '"' => break,
                c => value.push(c),
            }
        }
        labels.push((key, value));
    }
    (name, labels)
}

#[test]
fn check_validates_without_starting_and_locates_errors() {
    let setup = Setup::new(&["127.0.0.1:1".parse().unwrap()], "");
    setup.write_list("good", &list("block", &["a.example"]));
    let out = std::process::Command::new(support::HUSHD)
        .args(["check", "--config"])
        .arg(setup.config_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 distinct names in 1 lists"));

    setup.write_list(
        "bad",
        "action = \"block\"\ndomains = [\"ok.example\", \"no way\"]\nextra = 1\n",
    );
    let out = std::process::Command::new(support::HUSHD)
        .arg("check")
        .arg("--config")
        .arg(setup.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:3:1: unknown field `extra`",
            setup.list_path("bad").display()
        )),
        "{err}"
    );
}

#[test]
fn the_shipped_config_and_lists_pass_check() {
    let root = support::project_root();
    for config in ["config/hushd.toml", "systemd/hushd.toml"] {
        let path = root.join(config);
        // the systemd config names /etc paths for lists; check it against the shipped folder
        let text = std::fs::read_to_string(&path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("hushd.toml");
        let rewritten: String = text
            .lines()
            .map(|l| {
                if l.trim_start().starts_with("dir") {
                    format!("dir = \"{}\"", root.join("blocklists").display())
                } else if l.starts_with("path = \"/var/lib/hushd/") {
                    // the unit's state folder, which only the installed unit has
                    format!("path = \"{}\"", dir.path().join("evidence.db").display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&copy, rewritten).unwrap();
        let out = std::process::Command::new(support::HUSHD)
            .arg("check")
            .arg("--config")
            .arg(&copy)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(support::HUSHD)
        .args(["check", "--config"])
        .arg(root.join("config/hushd.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("list xiaomi"), "{stdout}");
}

/// The exposition passes Prometheus's own linter. promtool comes from Debian's `prometheus`
/// package, which `.ci/run` installs; CI sets HUSHD_REQUIRE_TOOLS so a missing tool fails there
/// instead of skipping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_check() {
    let Some(promtool) = support::tool("promtool") else {
        eprintln!(
            "SKIPPED metrics_pass_promtool_check: promtool is not installed (Debian package \
             prometheus; .ci/run installs it and sets HUSHD_REQUIRE_TOOLS, which makes this a failure)"
        );
        return;
    };
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("xiaomi", &list("block", &["tracking.miui.com"]));
    setup.write_list("audit", &list("log", &["samsungads.com"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for name in [
        "www.example.",
        "tracking.miui.com.",
        "a.samsungads.com.",
        "nx.example.",
    ] {
        query(&mut udp, name, RecordType::A).await;
    }
    let text = hushd.metrics_text();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or(&text)
        .to_string();
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_imports_load_from_a_domains_file_and_reload_on_its_edit() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let dir = setup.dir.path().join("blocklists");
    std::fs::write(
        dir.join("import.txt"),
        "# hosts-format import\n0.0.0.0 ads.example\nplain.example\n",
    )
    .unwrap();
    setup.write_list(
        "import",
        "action = \"block\"\ndomains_file = \"import.txt\"\n",
    );
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for name in ["ads.example.", "x.plain.example."] {
        assert_eq!(
            rcode(&mut udp, name).await,
            ResponseCode::NXDomain,
            "{name}"
        );
    }
    assert_eq!(
        rcode(&mut udp, "late.example.").await,
        ResponseCode::NoError
    );

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("import.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"late.example\n").unwrap();
    drop(f);
    let blocked = support::wait_for_rcode(
        &mut udp,
        "late.example.",
        ResponseCode::NXDomain,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        blocked.is_some(),
        "edit of the domains file not applied:\n{}",
        hushd.log()
    );
    assert_eq!(
        hushd.metric(r#"hushd_blocklist_domains{list="import"}"#),
        Some(3.0)
    );
}

/// One client floods; a neighbour on the same network keeps getting its answers while the flood
/// runs, and the flooder is admitted no faster than `client_qps` allows (plus one second of
/// burst). With `slip = 2` every second limited query gets an empty TC=1 answer, so the flooder
/// may get more than half of its queries answered; only the admitted ones count against the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_client_is_limited_while_its_neighbour_is_served() {
    const QPS: f64 = 200.0;
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[limits]\nclient_qps = 200\nslip = 2");
    let hushd = setup.start();
    let dns = hushd.dns;
    let neighbour_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The flood: from 127.0.0.2, paced to a few ten thousand a second (far over the limit, not
    // so fast that the kernel drops the neighbour's datagrams before hushd sees them), until
    // the neighbour is done; bounded in count and time all the same.
    let flood = tokio::spawn({
        let neighbour_done = neighbour_done.clone();
        async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
            let mut msg = hickory_proto::op::Message::query();
            msg.add_query(hickory_proto::op::Query::query(
                "flood.example.".parse().unwrap(),
                RecordType::A,
            ));
            let started = Instant::now();
            let (mut sent, mut admitted, mut truncated) = (0u32, 0u32, 0u32);
            let mut buf = vec![0u8; 2048];
            let mut drain = |socket: &tokio::net::UdpSocket| {
                while let Ok((n, _)) = socket.try_recv_from(&mut buf) {
                    let reply = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
                    if reply.metadata.truncation {
                        truncated += 1;
                    } else {
                        admitted += 1;
                    }
                }
            };
            while !neighbour_done.load(std::sync::atomic::Ordering::Relaxed)
                && sent < 400_000
                && started.elapsed() < Duration::from_secs(20)
            {
                msg.metadata.id = sent as u16;
                socket.send_to(&msg.to_vec().unwrap(), dns).await.unwrap();
                sent += 1;
                drain(&socket);
                if sent.is_multiple_of(64) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            let still_running = neighbour_done.load(std::sync::atomic::Ordering::Relaxed);
            // answers to the last queries sent
            tokio::time::sleep(Duration::from_millis(200)).await;
            drain(&socket);
            let elapsed = started.elapsed();
            (sent, admitted, truncated, elapsed, still_running)
        }
    });

    // Let the flood use up its burst first, so the neighbour's queries all meet a limited flood.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut neighbour = udp_client(dns, Some("127.0.0.3:0".parse().unwrap())).await;
    let mut ok = 0;
    for i in 0..200 {
        let name = hickory_proto::rr::Name::from_ascii(format!("n{}.example.", i % 20)).unwrap();
        if let Ok(r) = neighbour
            .query(name, hickory_proto::rr::DNSClass::IN, RecordType::A)
            .await
        {
            ok += u32::from(r.response_code == ResponseCode::NoError);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    neighbour_done.store(true, std::sync::atomic::Ordering::Relaxed);
    let limited_during = hushd
        .metric(r#"hushd_limited_total{reason="ratelimit"}"#)
        .unwrap();
    let (sent, admitted, truncated, elapsed, still_running) = flood.await.unwrap();
    eprintln!(
        "flood: {sent} sent in {elapsed:?}, {admitted} admitted, {truncated} TC=1; neighbour {ok}/200"
    );
    assert!(
        still_running,
        "the flood ended ({sent} sent in {elapsed:?}) before the neighbour was done"
    );
    assert!(ok >= 198, "neighbour got {ok}/200 during a flood of {sent}");
    // A token bucket admits at most its burst (one second's worth) plus the rate over the time.
    let bound = QPS * elapsed.as_secs_f64() + QPS;
    assert!(
        f64::from(admitted) <= bound,
        "flooder admitted {admitted} in {elapsed:?} (bound {bound:.0}; {sent} sent)"
    );
    assert!(
        f64::from(admitted) >= QPS * 0.5,
        "flooder admitted only {admitted} in {elapsed:?}: the limit is not what it seems"
    );
    assert!(
        limited_during > 1000.0,
        "{limited_during} limited while {sent} flooded"
    );
    // slip = 2: every second limited query gets TC=1, never more
    let limited = f64::from(sent - admitted);
    assert!(truncated > 0, "no slip (TC=1) answers among {sent}");
    assert!(
        f64::from(truncated) <= limited / 2.0 + 1.0,
        "{truncated} TC=1 answers for {limited} limited queries with slip = 2"
    );
}

/// When upstream stops answering, an expired answer is served stale (RFC 8767) with a 30 s TTL:
/// the first client waits for the refresh to fail, the next ones get it at once (failure
/// recheck) instead of each waiting again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_answers_are_served_stale_when_upstream_is_down() {
    let up = Upstream::start().await;
    let addr = up.addr;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    // one datagram per query: hickory's client would resend while hushd makes it wait
    let stream = hickory_net::udp::UdpClientStream::builder(
        hushd.dns,
        hickory_net::runtime::TokioRuntimeProvider::default(),
    )
    .with_timeout(Some(Duration::from_secs(5)))
    .with_max_retries(1)
    .build();
    let (mut udp, bg) = hickory_net::client::Client::from_sender(stream);
    tokio::spawn(bg);
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 1);
    up.stop();
    drop(up);
    // In the fixture's place, a socket that reads and never answers: upstream silent, as behind
    // a firewall, so a refresh waits out its timeout instead of failing on an ICMP error.
    let mut silent = None;
    assert!(wait_until(Duration::from_secs(3), || {
        silent = std::net::UdpSocket::bind(addr).ok();
        silent.is_some()
    }));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut took = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let r = query(&mut udp, "short.example.", RecordType::A).await;
        took.push(started.elapsed());
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert_eq!(a_records(&r), vec!["192.0.2.4"]);
        assert_eq!(r.answers[0].ttl, 30);
    }
    // the refresh fails after attempt_timeout_ms (1 s), within stale_after_ms (1.8 s)
    assert!(took[0] < Duration::from_millis(2500), "{took:?}");
    assert!(
        took[1..].iter().all(|t| *t < Duration::from_millis(600)),
        "{took:?}"
    );
    assert_eq!(
        hushd.metric(r#"hushd_queries_total{outcome="stale",protocol="udp",qtype="A"}"#),
        Some(4.0)
    );
}

/// An upstream that takes a second and a half still gets its answer through with the default
/// timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_working_upstream_gets_its_answers_through() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.use_default_upstream_timeouts();
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "slow.example.", RecordType::A).await;
    assert_eq!(a_records(&r), vec!["192.0.2.3"]);
}

/// Answers with the wrong ID, to another question, or that do not parse are never accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_mismatched_upstream_answers_are_rejected() {
    let forger = support::upstream::Forger::start(true).await;
    let setup = Setup::new(&[forger.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for i in 0..5 {
        let r = query(&mut udp, &format!("victim{i}.example."), RecordType::A).await;
        assert_eq!(a_records(&r), vec!["192.0.2.77"]);
    }
    let rejected = format!(
        "hushd_upstream_rejected_total{{upstream=\"{}\"}}",
        forger.addr
    );
    assert!(
        wait_until(Duration::from_secs(2), || hushd
            .metric(&rejected)
            .unwrap_or(0.0)
            >= 15.0),
        "{:?}",
        hushd.metric(&rejected)
    );

    // an upstream that only ever forges: the client gets SERVFAIL, never the forged address
    let liar = support::upstream::Forger::start(false).await;
    let setup = Setup::new(&[liar.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "victim.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::ServFail);
    assert!(a_records(&r).is_empty());
}

/// Malformed datagrams of every kind, as fast as one socket sends them, while a normal client
/// keeps asking: the client gets its answers, hushd stays up and its memory stays flat.
/// HUSHD_HOSTILE_DATAGRAMS sets the count (CI: 60 000; the closing figures used 500 000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_do_not_disturb_normal_clients() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("xiaomi", &list("block", &["tracking.miui.com"]));
    // Some random datagrams are valid queries for new names, and their answers are cached: a
    // small cache is full after the first round, so the second shows whether anything
    // *unbounded* grows.
    setup.append_config("[cache]\nsize = 500");
    let hushd = setup.start();
    let dns = hushd.dns;
    let total: u32 = std::env::var("HUSHD_HOSTILE_DATAGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // warm up: the normal client's names are cached, as on a live network
    let mut client = udp_client(dns, None).await;
    for i in 0..20 {
        query(&mut client, &format!("n{i}.example."), RecordType::A).await;
    }
    let rss_before = rss(hushd.pid());

    // Equal rounds: the first ones fill bounded structures (the cache holds the answers to
    // random datagrams that happen to be valid queries, allocator and runtime pools settle);
    // the last must not grow memory.
    const ROUNDS: u32 = 3;
    let mut rss_after_round = Vec::new();
    let (mut asked, mut answered, mut sent) = (0u32, 0u32, 0u32);
    for round in 0..ROUNDS {
        let hostile = tokio::spawn(async move {
            // from the host itself: exempt from the rate limit, so every datagram is parsed
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let started = Instant::now();
            let mut seed = 0x9e37_79b9_u32 ^ round;
            let mut sent = 0u32;
            while sent < total / ROUNDS && started.elapsed() < Duration::from_secs(60) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let _ = socket.send_to(&hostile_datagram(sent, seed), dns).await;
                sent += 1;
                if sent.is_multiple_of(256) {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            sent
        });
        while !hostile.is_finished() && asked < 10_000 {
            let name = format!("n{}.example.", asked % 20);
            let q = client.query(
                name.parse().unwrap(),
                hickory_proto::rr::DNSClass::IN,
                RecordType::A,
            );
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), q).await {
                answered += u32::from(r.response_code == ResponseCode::NoError);
            }
            asked += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent += hostile.await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // let forwarded ones finish
        rss_after_round.push(rss(hushd.pid()));
    }
    assert_eq!(sent, total / ROUNDS * ROUNDS, "the sender was cut short");
    assert!(asked >= 20, "only {asked} normal queries during the flood");
    assert!(
        answered * 100 >= asked * 99,
        "normal client: {answered}/{asked} answered"
    );
    // still serving, and memory flat
    assert_eq!(
        rcode(&mut client, "tracking.miui.com.").await,
        ResponseCode::NXDomain
    );
    // A leak grows memory by the same amount every round; pools that settle grow less each
    // time. So the last round must add well under half of what the first one did.
    let (first, previous, last) = (rss_after_round[0], rss_after_round[1], rss_after_round[2]);
    let first_growth = first.saturating_sub(rss_before);
    assert!(
        last.saturating_sub(previous) < first_growth / 2 + 256,
        "RSS grew in the last round: {rss_before} -> {rss_after_round:?} kB"
    );
    assert!(
        last < rss_before + 16 * 1024,
        "RSS grew from {rss_before} kB to {last} kB"
    );
    eprintln!(
        "hostile: {sent} datagrams; normal client {answered}/{asked}; RSS {rss_before} -> {rss_after_round:?} kB"
    );
}

/// One malformed (or hostile) datagram of kind `n % 8`, varied by `r`.
fn hostile_datagram(n: u32, r: u32) -> Vec<u8> {
    let id = (r & 0xffff) as u16;
    let header = |flags: u16, qd: u16, an: u16, ns: u16, ar: u16| {
        let mut h = Vec::with_capacity(64);
        for v in [id, flags, qd, an, ns, ar] {
            h.extend_from_slice(&v.to_be_bytes());
        }
        h
    };
    match n % 8 {
        // random bytes, random length
        0 => (0..(r % 600))
            .map(|i| (r.rotate_left(i % 32) ^ i) as u8)
            .collect(),
        // truncated header
        1 => header(0x0100, 1, 0, 0, 0)[..(r % 12) as usize].to_vec(),
        // label length running past the end
        2 => {
            let mut d = header(0x0100, 1, 0, 0, 0);
            d.extend_from_slice(&[63, b'a', b'b']);
            d
        }
        // compression loop: the question name points at itself
        3 => {
            let mut d = header(0x0100, 1, 0, 0, 0);
            d.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            d
        }
        // absurd counts
        4 => {
            let mut d = header(0x0100, 0xffff, 0xffff, 0xffff, 0xffff);
            d.extend_from_slice(&[1, b'x', 0, 0, 1, 0, 1]);
            d
        }
        // a response (QR set) to nothing: must never be answered
        5 => {
            let mut d = header(0x8180, 1, 0, 0, 0);
            d.extend_from_slice(&[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 0, 0, 1, 0, 1]);
            d
        }
        // broken OPT: rdata length beyond the datagram
        6 => {
            let mut d = header(0x0100, 1, 0, 0, 1);
            d.extend_from_slice(&[1, b'x', 0, 0, 1, 0, 1]);
            d.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 15]);
            d
        }
        // a valid query with garbage after it, or a reserved opcode
        _ => {
            let flags = if r & 1 == 0 { 0x0100 } else { 0x7900 };
            let mut d = header(flags, 1, 0, 0, 0);
            d.extend_from_slice(&[1, b'y', 0, 0, 1, 0, 1]);
            d.extend((0..(r % 40)).map(|i| i as u8));
            d
        }
    }
}

/// What hushd does not serve gets the RCODE that says so (and ANY gets RFC 8482's answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_and_malformed_queries_get_the_right_error() {
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::DNSClass;

    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ask = |bytes: Vec<u8>| {
        let socket = &socket;
        async move {
            socket.send_to(&bytes, hushd.dns).await.unwrap();
            let mut buf = vec![0u8; 4096];
            let (n, _) = tokio::time::timeout(Duration::from_secs(3), socket.recv_from(&mut buf))
                .await
                .expect("no reply")
                .unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        }
    };
    let message = |name: &str, qtype: RecordType| {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(name.parse().unwrap(), qtype));
        m
    };

    let mut notify = message("example.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(
        ask(notify.to_vec().unwrap()).await.metadata.response_code,
        ResponseCode::NotImp
    );

    let mut chaos = message("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        ask(chaos.to_vec().unwrap()).await.metadata.response_code,
        ResponseCode::NotImp
    );

    let axfr = message("example.", RecordType::AXFR);
    assert_eq!(
        ask(axfr.to_vec().unwrap()).await.metadata.response_code,
        ResponseCode::NotImp
    );

    let mut two = message("a.example.", RecordType::A);
    two.add_query(Query::query("b.example.".parse().unwrap(), RecordType::A));
    assert_eq!(
        ask(two.to_vec().unwrap()).await.metadata.response_code,
        ResponseCode::FormErr
    );

    let mut v1 = message("a.example.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    v1.set_edns(edns);
    // 16 is BADVERS in an OPT-carrying reply (hickory names the shared code BADSIG)
    assert_eq!(
        u16::from(ask(v1.to_vec().unwrap()).await.metadata.response_code),
        16
    );

    let any = ask(message("example.", RecordType::ANY).to_vec().unwrap()).await;
    assert_eq!(any.metadata.response_code, ResponseCode::NoError);
    assert_eq!(any.answers.len(), 1);
    assert_eq!(any.answers[0].record_type(), RecordType::HINFO);

    // a header and then nonsense; and a question that is a pointer into the header
    let mut garbage = message("a.example.", RecordType::A).to_vec().unwrap();
    garbage.truncate(15);
    let r = ask(garbage).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert!(r.queries.is_empty());
    let mut pointer = message("a.", RecordType::A).to_vec().unwrap();
    pointer.splice(12..15, [0xc0, 0x00]);
    let r = ask(pointer).await;
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    assert!(r.queries.is_empty());
    assert!(
        up.seen.names().is_empty(),
        "none of these reached upstream: {:?}",
        up.seen.names()
    );
}

/// Past `max_inflight` queries waiting for upstream, new cache misses are shed: SERVFAIL at
/// once (over UDP as over TCP), counted as `overload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_max_inflight_are_shed() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let setup = Setup::new(&[silent.local_addr().unwrap()], "");
    setup.append_config("[limits]\nmax_inflight = 2");
    // the two that get through wait 5 s for the silent upstream, holding their places
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(
        setup.config_path(),
        config.replace("\ntimeout_ms = 2000", "\ntimeout_ms = 5000"),
    )
    .unwrap();
    let hushd = setup.start();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    for i in 0..10 {
        let mut m = hickory_proto::op::Message::query();
        m.metadata.id = i;
        m.add_query(hickory_proto::op::Query::query(
            format!("w{i}.example.").parse().unwrap(),
            RecordType::A,
        ));
        socket
            .send_to(&m.to_vec().unwrap(), hushd.dns)
            .await
            .unwrap();
    }
    // the rest are answered now
    let mut shed = 0;
    let mut buf = vec![0u8; 512];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(2500), socket.recv_from(&mut buf)).await
    {
        let reply = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        shed += 1;
        if shed == 8 {
            break;
        }
    }
    assert_eq!(shed, 8, "SERVFAIL answers to shed queries");
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(
        hushd.metric(r#"hushd_limited_total{reason="overload"}"#),
        Some(8.0)
    );
    // over TCP the same
    let mut stream = tcp_from("127.0.0.1", hushd.dns).await;
    assert_eq!(
        ask_over(&mut stream, "tcp.example.").await,
        Some(ResponseCode::ServFail)
    );
    assert_eq!(
        hushd.metric(r#"hushd_limited_total{reason="overload"}"#),
        Some(9.0)
    );
}

/// A TCP connection to `server` from `source` (any 127.x address).
async fn tcp_from(source: &str, server: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Sends an A query for `name` on an open connection and reads the answer's RCODE; `None` if
/// hushd closed the connection instead (or said nothing within 3 s).
async fn ask_over(stream: &mut tokio::net::TcpStream, name: &str) -> Option<ResponseCode> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut m = hickory_proto::op::Message::query();
    m.add_query(hickory_proto::op::Query::query(
        name.parse().unwrap(),
        RecordType::A,
    ));
    let wire = m.to_vec().unwrap();
    let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    // A write into a connection the server already closed may still succeed locally: the read
    // below is what tells.
    let _ = stream.write_all(&framed).await;
    let read = async {
        let len = stream.read_u16().await.ok()?;
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await.ok()?;
        hickory_proto::op::Message::from_vec(&reply).ok()
    };
    let reply = tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .ok()??;
    Some(reply.metadata.response_code)
}

#[tokio::test]
async fn tcp_connections_are_capped_in_total_and_per_client() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("lab", &list("block", &["blocked.test"]));
    setup.append_config("[limits]\nexempt_clients = []\nmax_tcp_connections = 3\nmax_tcp_connections_per_client = 2");
    let hushd = setup.start();
    let blocked = Some(ResponseCode::NXDomain);

    let mut first = tcp_from("127.0.0.1", hushd.dns).await;
    let mut second = tcp_from("127.0.0.1", hushd.dns).await;
    assert_eq!(ask_over(&mut first, "blocked.test.").await, blocked);
    assert_eq!(ask_over(&mut second, "blocked.test.").await, blocked);
    // a third from the same client is closed at once
    let mut third = tcp_from("127.0.0.1", hushd.dns).await;
    assert_eq!(ask_over(&mut third, "blocked.test.").await, None);
    // another client still gets in, and fills the total
    let mut neighbour = tcp_from("127.0.0.2", hushd.dns).await;
    assert_eq!(ask_over(&mut neighbour, "blocked.test.").await, blocked);
    let mut over_total = tcp_from("127.0.0.3", hushd.dns).await;
    assert_eq!(ask_over(&mut over_total, "blocked.test.").await, None);
    assert_eq!(hushd.metric("hushd_tcp_connections"), Some(3.0));
    assert_eq!(
        hushd.metric(r#"hushd_limited_total{reason="tcp_limit"}"#),
        Some(2.0)
    );

    // a closed connection gives its place back
    drop(first);
    let started = Instant::now();
    let mut again = None;
    while started.elapsed() < Duration::from_secs(3) {
        let mut stream = tcp_from("127.0.0.1", hushd.dns).await;
        again = ask_over(&mut stream, "blocked.test.").await;
        if again.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(again, blocked);
    // UDP is not affected by TCP caps
    let mut udp = udp_client(hushd.dns, Some("127.0.0.3:0".parse().unwrap())).await;
    assert_eq!(
        rcode(&mut udp, "blocked.test.").await,
        ResponseCode::NXDomain
    );
}

#[tokio::test]
async fn idle_and_stalled_tcp_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "tcp_idle_timeout_secs = 1");
    setup.write_list("lab", &list("block", &["blocked.test"]));
    let hushd = setup.start();

    // silent from the start; after one answer; and one that sends half a length prefix
    let mut silent = tcp_from("127.0.0.1", hushd.dns).await;
    let mut answered = tcp_from("127.0.0.1", hushd.dns).await;
    assert_eq!(
        ask_over(&mut answered, "blocked.test.").await,
        Some(ResponseCode::NXDomain)
    );
    let mut stalled = tcp_from("127.0.0.1", hushd.dns).await;
    stalled.write_all(&[0]).await.unwrap();
    let started = Instant::now();
    for stream in [&mut silent, &mut answered, &mut stalled] {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(4), stream.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "connection still open after {:?}: {read:?}",
            started.elapsed()
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(wait_until(Duration::from_secs(2), || hushd
        .metric("hushd_tcp_connections")
        == Some(0.0)));
}

#[tokio::test]
async fn upstream_queries_come_from_changing_source_ports() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    // 3000 cache misses: each of the 8 pooled sockets serves 375, so each is replaced once
    let mut tasks = Vec::new();
    for worker in 0..6 {
        let dns = hushd.dns;
        tasks.push(tokio::spawn(async move {
            let mut client = udp_client(dns, None).await;
            for i in 0..500 {
                let name = format!("p{worker}-{i}.example.");
                assert_eq!(rcode(&mut client, &name).await, ResponseCode::NoError);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut ports = up.seen.udp_source_ports();
    assert!(ports.len() >= 3000, "{} queries upstream", ports.len());
    ports.sort_unstable();
    ports.dedup();
    assert!(
        ports.len() > 12,
        "only {} distinct source ports: {ports:?}",
        ports.len()
    );
}

#[tokio::test]
async fn other_files_beside_the_config_do_not_reload() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("lab", &list("block", &["blocked.test"]));
    let hushd = setup.start();
    let reloads = || hushd.metric(r#"hushd_reloads_total{result="ok"}"#).unwrap();
    let before = reloads();
    // a log or an output file written next to the config, even a .txt one
    std::fs::write(setup.dir.path().join("notes.txt"), "x\n").unwrap();
    std::fs::write(setup.dir.path().join("run.log"), "x\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reloads(), before);
    // ...while a real list edit still reloads
    setup.write_list("lab", &list("block", &["blocked.test", "more.test"]));
    assert!(wait_until(Duration::from_secs(3), || reloads() > before));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reloads(), before + 1.0);
}
