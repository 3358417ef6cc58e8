//! The answer cache and the lookups behind it, against the real binary: identical misses merged
//! into one upstream query, serve-stale with its failure recheck and its limit, negative answers
//! cached, and the cache's byte bound.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_net::{client::Client, runtime::TokioRuntimeProvider, udp::UdpClientStream};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{RData, Record, RecordType, rdata::A},
};
use support::{Setup, query, tcp_client, udp_client, upstream::Upstream};

/// A UDP client that sends each query once: hickory's default resends every 333 ms, which would
/// add queries of its own while hushd makes a client wait.
async fn udp_client_once(server: SocketAddr) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(Duration::from_secs(5)))
        .with_max_retries(1)
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

fn a_records(r: &hickory_proto::op::DnsResponse) -> Vec<String> {
    r.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect()
}

/// An upstream that answers every question with A 192.0.2.4, TTL 1 s, until switched off; then
/// it reads the queries and answers none, as a dead server behind a firewall does (no ICMP error
/// that would fail the lookup at once).
struct Switch {
    addr: SocketAddr,
    on: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Switch {
    async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let on = Arc::new(AtomicBool::new(true));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (on, asked) = (on.clone(), asked.clone());
            async move {
                let mut buf = vec![0u8; 4096];
                // bounded: a test never needs more
                for _ in 0..10_000 {
                    let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                        return;
                    };
                    let Ok(q) = Message::from_vec(&buf[..n]) else {
                        continue;
                    };
                    let Some(question) = q.queries.first().cloned() else {
                        continue;
                    };
                    let name = question.name().to_ascii();
                    asked
                        .lock()
                        .unwrap()
                        .push(name.trim_end_matches('.').to_ascii_lowercase());
                    if !on.load(Ordering::SeqCst) {
                        continue;
                    }
                    let mut m = Message::response(q.metadata.id, q.metadata.op_code);
                    m.metadata.recursion_desired = q.metadata.recursion_desired;
                    m.metadata.recursion_available = true;
                    m.add_query(question.clone());
                    m.add_answer(Record::from_rdata(
                        question.name().clone(),
                        1,
                        RData::A(A(Ipv4Addr::new(192, 0, 2, 4))),
                    ));
                    let _ = socket.send_to(&m.to_vec().unwrap(), from).await;
                }
            }
        });
        Self {
            addr,
            on,
            asked,
            task,
        }
    }

    fn switch_off(&self) {
        self.on.store(false, Ordering::SeqCst);
    }

    fn count(&self, name: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer `Switch` gave, served stale (RFC 8767: TTL 30 s).
fn assert_stale(r: &hickory_proto::op::DnsResponse) {
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(a_records(r), vec!["192.0.2.4"]);
    assert_eq!(r.answers[0].ttl, 30);
}

/// `Setup` with the upstream's timeouts replaced by `timeout_ms` (per attempt and in all).
fn setup_with_upstream_timeout(upstream: SocketAddr, timeout_ms: u64) -> Setup {
    let setup = Setup::new(&[upstream], "");
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let replaced = config.replace(
        "timeout_ms = 2000\nattempt_timeout_ms = 1000\n",
        &format!("timeout_ms = {timeout_ms}\nattempt_timeout_ms = {timeout_ms}\n"),
    );
    assert_ne!(config, replaced, "the support config changed shape");
    std::fs::write(setup.config_path(), replaced).unwrap();
    setup
}

/// Thirty clients asking one name at once, while upstream takes 1.5 s: one upstream query, and
/// every client gets the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_name_cost_one_upstream_query() {
    let up = Upstream::start().await;
    let setup = setup_with_upstream_timeout(up.addr, 3000);
    let hushd = setup.start();
    let mut clients = Vec::new();
    for _ in 0..30 {
        clients.push(udp_client_once(hushd.dns).await);
    }
    let asking: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move { query(&mut client, "slow.example.", RecordType::A).await })
        })
        .collect();
    for asked in asking {
        let r = asked.await.unwrap();
        assert_eq!(a_records(&r), vec!["192.0.2.3"], "{r:?}\n{}", hushd.log());
    }
    assert_eq!(up.seen.count("slow.example"), 1, "{:?}", up.seen.names());
    assert_eq!(
        hushd.metric(r#"hushd_queries_total{outcome="forwarded",protocol="udp",qtype="A"}"#),
        Some(30.0)
    );
}

/// With upstream silent, the first client after expiry waits `stale_after_ms` for the refresh and
/// gets the stale answer; the clients after it get it at once, both while that refresh is still
/// running and, after it failed, during the failure-recheck period (RFC 8767 §4), which asks
/// upstream nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_first_stale_wait_clients_get_the_stale_answer_at_once() {
    const STALE_AFTER: Duration = Duration::from_millis(1500);
    let up = Switch::start().await;
    // the refresh runs 3 s: past the first client's wait, so later ones join it
    let setup = setup_with_upstream_timeout(up.addr, 3000);
    setup.append_config("[cache]\nstale_after_ms = 1500");
    let hushd = setup.start();
    let mut udp = udp_client_once(hushd.dns).await;
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 1);
    up.switch_off();
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let first = Instant::now();
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    let waited = first.elapsed();
    assert_stale(&r);
    assert!(
        waited >= STALE_AFTER * 4 / 5 && waited < Duration::from_millis(2900),
        "the first client waited {waited:?}"
    );
    // the refresh is still running (until ~3 s after the first client asked), then it has
    // failed: the recheck period
    for round in ["during the refresh", "after the failed refresh"] {
        if round.starts_with("after") {
            tokio::time::sleep_until((first + Duration::from_millis(3500)).into()).await;
        }
        for _ in 0..5 {
            let started = Instant::now();
            let r = query(&mut udp, "short.example.", RecordType::A).await;
            let took = started.elapsed();
            assert_stale(&r);
            assert!(took < STALE_AFTER / 3, "{round}: {took:?}");
        }
    }
    assert_eq!(
        up.count("short.example"),
        2,
        "the first answer and one refresh"
    );
    assert_eq!(
        hushd.metric(r#"hushd_queries_total{outcome="stale",protocol="udp",qtype="A"}"#),
        Some(11.0),
        "{}",
        hushd.metrics_text()
    );
}

/// A refresh that goes on after its client got the stale answer still holds its `max_inflight`
/// permit: with `max_inflight = 1`, a miss for another name meanwhile is shed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_outlives_its_client_counts_in_max_inflight() {
    let up = Switch::start().await;
    let setup = setup_with_upstream_timeout(up.addr, 3000);
    setup.append_config("[cache]\nstale_after_ms = 300\n\n[limits]\nmax_inflight = 1");
    let hushd = setup.start();
    let mut udp = udp_client_once(hushd.dns).await;
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 1);
    up.switch_off();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let asked = Instant::now();
    assert_stale(&query(&mut udp, "short.example.", RecordType::A).await);

    // the refresh runs until ~3 s after `asked`
    let overload = r#"hushd_limited_total{reason="overload"}"#;
    assert_eq!(hushd.metric(overload), Some(0.0));
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut m = Message::query();
    m.add_query(hickory_proto::op::Query::query(
        "other.example.".parse().unwrap(),
        RecordType::A,
    ));
    socket
        .send_to(&m.to_vec().unwrap(), hushd.dns)
        .await
        .unwrap();
    assert!(
        support::wait_until(Duration::from_secs(1), || hushd.metric(overload)
            == Some(1.0)),
        "{:?}",
        hushd.metric(overload)
    );
    assert!(
        asked.elapsed() < Duration::from_millis(2500),
        "{:?}",
        asked.elapsed()
    );
}

/// An expired answer is served stale only `serve_stale_secs` past its TTL; after that the client
/// gets SERVFAIL when upstream cannot answer, even within a failure-recheck period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_serve_stale_secs_the_client_gets_servfail() {
    let up = Switch::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nserve_stale_secs = 2\nstale_after_ms = 300");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let stored = Instant::now();
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 1);
    up.switch_off();

    // 1 s past storing, its TTL: stale for 2 s more
    tokio::time::sleep_until((stored + Duration::from_millis(1100)).into()).await;
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(a_records(&r), vec!["192.0.2.4"]);
    assert!(
        stored.elapsed() < Duration::from_millis(2500),
        "{:?}",
        stored.elapsed()
    );

    // 3 s past storing: too old even to be served stale
    tokio::time::sleep_until((stored + Duration::from_millis(3300)).into()).await;
    let r = query(&mut udp, "short.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::ServFail);
    assert!(r.answers.is_empty());
}

/// NODATA (an empty NOERROR with the zone's SOA) is cached like any answer (RFC 2308).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodata_answers_are_cached() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for _ in 0..3 {
        let r = query(&mut udp, "plain.example.", RecordType::MX).await;
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities.len(), 1, "the SOA");
    }
    assert_eq!(up.seen.count("plain.example"), 1, "{:?}", up.seen.names());
    assert_eq!(
        hushd.metric(r#"hushd_queries_total{outcome="cached",protocol="udp",qtype="MX"}"#),
        Some(2.0)
    );
}

/// With a small `max_bytes`, many ~3 KB answers (asked over TCP, fetched by hushd over TCP) fill
/// the byte budget long before `size` answers: the cache holds what fits in the bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_within_max_bytes() {
    const MAX_BYTES: f64 = 200_000.0;
    const NAMES: usize = 150;
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nsize = 10000\nmax_bytes = 200000");
    let hushd = setup.start();
    let mut tcp = tcp_client(hushd.dns).await;
    for i in 0..NAMES {
        let r = query(&mut tcp, &format!("big.n{i}.example."), RecordType::TXT).await;
        assert_eq!(r.answers.len(), 30);
    }
    // the gauges are set every 5 s: one setting after the last answer
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let entries = hushd.metric("hushd_cache_entries ").unwrap();
    let bytes = hushd.metric("hushd_cache_bytes ");
    assert!(
        (20.0..100.0).contains(&entries),
        "{entries} of {NAMES} answers of ~3.4 KB cached"
    );
    let bytes = bytes.expect("hushd_cache_bytes");
    eprintln!("{entries} of {NAMES} answers cached, {bytes} bytes");
    assert!(
        (MAX_BYTES / 2.0..=MAX_BYTES).contains(&bytes),
        "{bytes} bytes in {entries} answers"
    );
}
