//! Upstream failure handling, end to end: the real `hushd` binary forwarding to real DNS
//! servers on loopback (the fixture of `support::upstream`, a closed port, a silent socket),
//! and hickory's client asking it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{DnsResponse, ResponseCode},
    rr::{RData, RecordType},
};
use support::{Hushd, Setup, query, udp_client, upstream::Upstream};

/// The test config's `attempt_timeout_ms` (`Setup::new`).
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1000);

fn addresses(r: &DnsResponse) -> Vec<String> {
    r.answers
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

fn closed_port() -> SocketAddr {
    format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap()
}

fn errors(hushd: &Hushd, upstream: SocketAddr) -> f64 {
    hushd
        .metric(&format!(
            "hushd_upstream_errors_total{{upstream=\"{upstream}\"}}"
        ))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_every_upstream_servfails_costs_two_upstream_queries_until_servfail_ttl() {
    let (one, two, three) = (
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    );
    let setup = Setup::new(&[one.addr, two.addr, three.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for _ in 0..5 {
        let r = query(&mut udp, "servfail.example.", RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::ServFail);
    }
    let asked = [&one, &two, &three]
        .iter()
        .map(|up| up.seen.count("servfail.example"))
        .sum::<usize>();
    eprintln!("5 client queries for a name all 3 servers SERVFAIL: {asked} upstream queries");
    // the first server, and the next one once
    assert_eq!(
        asked, 2,
        "5 client queries cost {asked} upstream queries within servfail_ttl"
    );
    // counted as a failed attempt, but neither server is held responsible for the name: the
    // first is still asked first
    assert_eq!(errors(&hushd, one.addr), 1.0);
    let r = query(&mut udp, "www.example.", RecordType::A).await;
    assert_eq!(addresses(&r), ["192.0.2.1"]);
    assert_eq!(one.seen.count("www.example"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_resolution_failure_expires_after_servfail_ttl() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nservfail_ttl = 1");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for _ in 0..3 {
        let r = query(&mut udp, "servfail.example.", RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::ServFail);
    }
    assert_eq!(up.seen.count("servfail.example"), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = query(&mut udp, "servfail.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::ServFail);
    assert_eq!(up.seen.count("servfail.example"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_or_failing_first_server_passes_the_query_on_once_and_is_not_backed_off() {
    for rcode in [ResponseCode::Refused, ResponseCode::ServFail] {
        let first = Upstream::answering(rcode).await;
        let second = Upstream::start().await;
        let setup = Setup::new(&[first.addr, second.addr], "");
        let hushd = setup.start();
        let mut udp = udp_client(hushd.dns, None).await;
        for name in ["one.example", "two.example", "three.example"] {
            let r = query(&mut udp, &format!("{name}."), RecordType::A).await;
            assert_eq!(addresses(&r), ["192.0.2.1"], "{rcode}");
            // the first server is asked every time, right after its failure: no back-off
            assert_eq!(
                first.seen.count(name),
                1,
                "{rcode}: {:?}",
                first.seen.names()
            );
            assert_eq!(second.seen.count(name), 1, "{rcode}");
        }
        // each refusal is a failed attempt in the metrics, none a reason to skip the server
        assert_eq!(errors(&hushd, first.addr), 3.0, "{rcode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_skipped_for_half_a_second_then_tried_again() {
    let up = Upstream::start().await;
    let dead = closed_port();
    let setup = Setup::new(&[dead, up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let mut ask = async |name: &str| {
        let r = query(&mut udp, name, RecordType::A).await;
        assert_eq!(addresses(&r), ["192.0.2.1"]);
    };

    ask("h1.example.").await;
    assert_eq!(errors(&hushd, dead), 1.0);
    ask("h2.example.").await; // in back-off: not asked
    assert_eq!(errors(&hushd, dead), 1.0);
    // The documented back-off starts at 0.5 s: by 0.8 s the server is asked again...
    tokio::time::sleep(Duration::from_millis(800)).await;
    ask("h3.example.").await;
    assert_eq!(
        errors(&hushd, dead),
        2.0,
        "not retried 0.8 s after one failure"
    );
    // ...and its second failure in a row keeps it out for 1 s.
    tokio::time::sleep(Duration::from_millis(600)).await;
    ask("h4.example.").await;
    assert_eq!(errors(&hushd, dead), 2.0, "the back-off did not double");
    assert_eq!(up.seen.total(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_costs_its_timeout_once_per_back_off_not_once_per_query() {
    let up = Upstream::start().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let setup = Setup::new(&[silent.local_addr().unwrap(), up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let mut timed = async |name: &str| {
        let started = Instant::now();
        let r = query(&mut udp, name, RecordType::A).await;
        assert_eq!(addresses(&r), ["192.0.2.1"]);
        started.elapsed()
    };

    let first = timed("s1.example.").await;
    assert!(first >= ATTEMPT_TIMEOUT * 9 / 10, "{first:?}");
    let next = timed("s2.example.").await;
    assert!(
        next * 4 < first,
        "right after the failure the silent server is skipped: {next:?} vs {first:?}"
    );
    // past the 0.5 s back-off it is given another chance, and pays for it again
    tokio::time::sleep(Duration::from_millis(800)).await;
    let retried = timed("s3.example.").await;
    assert!(
        retried >= ATTEMPT_TIMEOUT * 9 / 10,
        "{retried:?} errors {} {:?}",
        errors(&hushd, silent.local_addr().unwrap()),
        up.seen.names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_over_at_once_where_a_silent_server_costs_its_timeout() {
    async fn first_query(first: SocketAddr) -> Duration {
        let up = Upstream::start().await;
        let setup = Setup::new(&[first, up.addr], "");
        let hushd = setup.start();
        let mut udp = udp_client(hushd.dns, None).await;
        let started = Instant::now();
        let r = query(&mut udp, "www.example.", RecordType::A).await;
        assert_eq!(addresses(&r), ["192.0.2.1"]);
        started.elapsed()
    }
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent = first_query(silent.local_addr().unwrap()).await;
    // ICMP port unreachable fails the waiting query without waiting out the attempt timeout
    let closed = first_query(closed_port()).await;
    eprintln!("first query behind a closed port: {closed:?}; behind a silent server: {silent:?}");
    assert!(
        closed * 4 < silent,
        "closed port {closed:?}, silent server {silent:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_answer_is_asked_again_over_tcp_as_is() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "tc.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    let types: Vec<RecordType> = r.answers.iter().map(|a| a.record_type()).collect();
    assert_eq!(
        types,
        [RecordType::CNAME],
        "the chain as the server gave it"
    );
    assert_eq!(up.seen.tcp_count("tc.example"), 1);
    // hushd forwards; chasing the chain is the upstream resolver's job, not done behind
    // hushd's failover and metrics
    assert_eq!(
        up.seen.count("tc-target.example"),
        0,
        "{:?}",
        up.seen.names()
    );
    assert_eq!(
        up.seen.total(),
        2,
        "one UDP and one TCP query: {:?}",
        up.seen.names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cname_chain_to_no_data_is_cached_for_the_negative_ttl() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for _ in 0..2 {
        let r = query(&mut udp, "cname-nodata.example.", RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
    }
    assert_eq!(up.seen.count("cname-nodata.example"), 1, "cached at first");
    // the SOA's negative TTL is 2 s, the CNAME's 300 s: the shorter one holds
    tokio::time::sleep(Duration::from_millis(3100)).await;
    query(&mut udp, "cname-nodata.example.", RecordType::A).await;
    assert_eq!(up.seen.count("cname-nodata.example"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolution_failure_neither_beats_nor_replaces_a_stale_answer() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    assert_eq!(addresses(&r), ["192.0.2.4"]); // TTL 1 s
    up.answer_with(Some(ResponseCode::ServFail));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // RFC 8767: upstream cannot resolve it, so the expired answer is served, and stays at hand
    for _ in 0..2 {
        let r = query(&mut udp, "short.example.", RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&r), ["192.0.2.4"]);
    }
    assert!(up.seen.count("short.example") >= 2, "upstream was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_used_up_the_whole_deadline_is_backed_off_too() {
    let up = Upstream::start().await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let setup = Setup::new(&[silent.local_addr().unwrap(), up.addr], "");
    // one attempt may take the whole query budget
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let config = config.replace("attempt_timeout_ms = 1000", "attempt_timeout_ms = 2000");
    std::fs::write(setup.config_path(), config).unwrap();
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "d1.example.", RecordType::A).await;
    assert_eq!(
        r.response_code,
        ResponseCode::ServFail,
        "the silent server took it all"
    );
    let started = Instant::now();
    let r = query(&mut udp, "d2.example.", RecordType::A).await;
    assert_eq!(addresses(&r), ["192.0.2.1"]);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "the silent server was asked again: {:?}",
        started.elapsed()
    );
}
