//! The `[upstream]` keys besides `servers`, each changed by a reload and shown in force through
//! what clients get: the per-attempt and per-query budgets (timed against a server that never
//! answers), whether the servers' AD bit is passed on, and the CA a DoT server is checked with.

use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::{
    ask, reload,
    support::{
        Setup,
        unbound::{CERT_NAME, TestCa, Unbound},
        upstream::Upstream,
    },
};

/// A UDP socket that reads queries and never answers: an upstream that times out.
fn silent_server() -> std::net::UdpSocket {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// Sets the `[upstream]` timeouts of the test config (which has both).
fn with_timeouts(setup: &Setup, timeout_ms: u64, attempt_timeout_ms: u64) {
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let config = config
        .replace(
            "\ntimeout_ms = 2000\n",
            &format!("\ntimeout_ms = {timeout_ms}\n"),
        )
        .replace(
            "\nattempt_timeout_ms = 1000\n",
            &format!("\nattempt_timeout_ms = {attempt_timeout_ms}\n"),
        );
    setup.write_config(&config);
}

/// Asks `name` once; the reply's RCODE and how long it took.
async fn timed(hushd_dns: std::net::SocketAddr, name: &str) -> (ResponseCode, Duration) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let started = Instant::now();
    let reply = ask(&socket, hushd_dns, name, 7, Duration::from_secs(8))
        .await
        .unwrap_or_else(|| panic!("{name}: no reply in 8 s"));
    (reply.metadata.response_code, started.elapsed())
}

/// `[upstream] attempt_timeout_ms` lowered: with a silent server first, a working one second,
/// a fresh name is answered by the second after the new, shorter wait for the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_attempt_timeout_moves_on_to_the_next_server_sooner() {
    let silent = silent_server();
    let up = Upstream::start().await;
    let setup = Setup::new(&[silent.local_addr().unwrap(), up.addr], "");
    with_timeouts(&setup, 6000, 2000);
    let hushd = setup.start();

    let (rcode, took) = timed(hushd.dns, "before.attempt.example.").await;
    assert_eq!(rcode, ResponseCode::NoError);
    assert!(
        took >= Duration::from_millis(1500),
        "answered after {took:?}, before the 2 s attempt at the silent server ran out"
    );
    // past the silent server's back-off (0.5 s after its first failure), so the next query
    // tries it first whether or not the reload set the servers up afresh
    tokio::time::sleep(Duration::from_secs(1)).await;

    reload(&setup, &hushd, |c| {
        c.replace("attempt_timeout_ms = 2000", "attempt_timeout_ms = 200")
    });
    let (rcode, took) = timed(hushd.dns, "after.attempt.example.").await;
    assert_eq!(rcode, ResponseCode::NoError);
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?} with attempt_timeout_ms = 200"
    );
    assert_eq!(up.seen.count("after.attempt.example"), 1);
}

/// `[upstream] timeout_ms` lowered: with servers that never answer, the client's SERVFAIL
/// comes when the new, shorter budget for the whole query runs out. Six servers at 1 s an
/// attempt would take 6 s: the query's budget, not the attempts, decides when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_query_timeout_gives_servfail_sooner() {
    let silent: Vec<_> = (0..6).map(|_| silent_server()).collect();
    let addrs: Vec<_> = silent.iter().map(|s| s.local_addr().unwrap()).collect();
    let setup = Setup::new(&addrs, "");
    with_timeouts(&setup, 3000, 1000);
    let hushd = setup.start();

    let (rcode, took) = timed(hushd.dns, "before.timeout.example.").await;
    assert_eq!(rcode, ResponseCode::ServFail);
    assert!(
        took >= Duration::from_millis(2500),
        "SERVFAIL after {took:?}, before the 3 s budget ran out"
    );

    reload(&setup, &hushd, |c| {
        c.replace("\ntimeout_ms = 3000", "\ntimeout_ms = 500")
    });
    let (rcode, took) = timed(hushd.dns, "after.timeout.example.").await;
    assert_eq!(rcode, ResponseCode::ServFail);
    assert!(
        took < Duration::from_millis(1500),
        "SERVFAIL after {took:?} with timeout_ms = 500"
    );
}

/// Asks `name` (A) with AD set, as a client that wants to know whether the answer was
/// validated does; whether the reply carries AD.
async fn ad_of(hushd_dns: std::net::SocketAddr, name: &str) -> bool {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut m = Message::query();
    m.metadata.id = 9;
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = true;
    m.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    m.edns = Some(Edns::new());
    socket
        .send_to(&m.to_vec().unwrap(), hushd_dns)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{name}: no reply"))
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NoError,
        "{name}"
    );
    reply.metadata.authentic_data
}

/// `[upstream] trust_ad` turned off: the upstream's AD bit no longer reaches clients that ask
/// for it, neither on new answers nor on answers cached while it was on (config/README.md:
/// "`trust_ad = false` makes hushd's answers never claim validation"); the cache is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_ad_turned_off_stops_passing_ad_on() {
    let up = Upstream::start().await;
    up.set_authentic_data(true);
    let setup = Setup::new(&[up.addr], "");
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    setup.write_config(&config.replace(
        "\nattempt_timeout_ms = 1000\n",
        "\nattempt_timeout_ms = 1000\ntrust_ad = true\n",
    ));
    let hushd = setup.start();

    assert!(
        ad_of(hushd.dns, "cached.ad.example.").await,
        "trust_ad = true"
    );
    // from the cache, still validated
    assert!(
        ad_of(hushd.dns, "cached.ad.example.").await,
        "trust_ad = true"
    );
    assert_eq!(up.seen.count("cached.ad.example"), 1);

    reload(&setup, &hushd, |c| {
        c.replace("trust_ad = true", "trust_ad = false")
    });
    assert!(
        !ad_of(hushd.dns, "fresh.ad.example.").await,
        "trust_ad = false"
    );
    assert!(
        !ad_of(hushd.dns, "cached.ad.example.").await,
        "trust_ad = false, an answer cached before"
    );
    assert_eq!(
        up.seen.count("cached.ad.example"),
        1,
        "the cache was not kept"
    );

    // and on again: answers cached while it was off never had AD to give
    reload(&setup, &hushd, |c| {
        c.replace("trust_ad = false", "trust_ad = true")
    });
    assert!(
        ad_of(hushd.dns, "again.ad.example.").await,
        "trust_ad = true"
    );
    assert!(
        !ad_of(hushd.dns, "fresh.ad.example.").await,
        "cached under trust_ad = false"
    );
}

/// `[upstream] ca_file` added: a DoT server whose certificate only the test's own CA vouches
/// for fails (SERVFAIL) without it, and answers once a reload adds that CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ca_file_lets_a_private_dot_server_answer() {
    let setup = Setup::new(&[], "");
    let ca = TestCa::write(setup.dir.path());
    let Some(unbound) = Unbound::start(setup.dir.path(), &ca) else {
        return;
    };
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    setup.write_config(&config.replace(
        "servers = []",
        &format!("servers = [\"tls://{}#{CERT_NAME}\"]", unbound.tls),
    ));
    let hushd = setup.start();

    let (rcode, _) = timed(hushd.dns, "before.ca.test.").await;
    assert_eq!(rcode, ResponseCode::ServFail, "without the CA");

    // relative to the config's folder
    reload(&setup, &hushd, |c| {
        c.replace("servers = [", "ca_file = \"ca.pem\"\nservers = [")
    });
    let (rcode, _) = timed(hushd.dns, "after.ca.test.").await;
    assert_eq!(
        rcode,
        ResponseCode::NoError,
        "with the CA:\n{}",
        hushd.log()
    );
}
