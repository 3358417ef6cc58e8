//! Encrypted upstreams against a real server: Unbound on loopback serving DNS over TLS and DNS
//! over HTTPS from `local-data`, with a certificate from a CA the test makes and hands hushd
//! through `[upstream] ca_file`. Needs Debian's `unbound` (built with nghttp2 for DoH) and
//! `ss` (iproute2) to count connections.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::ResponseCode,
    rr::{RData, RecordType},
};
use support::{
    Setup, query, tool, udp_client,
    unbound::{CERT_NAME, TestCa, Unbound},
};

/// Unbound serving the test zone, with `ss` at hand to count connections; `None` when either
/// is missing (a failure under HUSHD_REQUIRE_TOOLS).
fn start_unbound(dir: &Path, ca: &TestCa) -> Option<Unbound> {
    tool("ss")?;
    Unbound::start(dir, ca)
}

/// Established TCP connections to `server` (the client ends: hushd's).
fn connections_to(server: SocketAddr) -> Vec<String> {
    let out = Command::new("ss")
        .args(["-Htn", "state", "established", "dst"])
        .arg(server.to_string())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().nth(2).unwrap_or_default().to_string())
        .collect()
}

/// hushd forwarding to `servers` (config forms), with the test CA as `ca_file`.
fn hushd_setup(servers: &[String], ca: &TestCa) -> Setup {
    let setup = Setup::new(&[], "");
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let quoted: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let config = config.replace(
        "servers = []",
        &format!(
            "servers = [{}]\nca_file = \"{}\"",
            quoted.join(", "),
            ca.ca.display()
        ),
    );
    setup.write_config(&config);
    setup
}

/// Asks `count` different names (`n{i}.{label}.test`) at once; every answer must be 192.0.2.1.
async fn ask_many(dns: SocketAddr, label: &str, count: usize) {
    let mut tasks = Vec::new();
    for i in 0..count {
        let name = format!("n{i}.{label}.test.");
        tasks.push(tokio::spawn(async move {
            let mut client = udp_client(dns, None).await;
            query(&mut client, &name, RecordType::A).await
        }));
    }
    for task in tasks {
        let reply = task.await.unwrap();
        assert_eq!(reply.response_code, ResponseCode::NoError);
        assert!(
            matches!(reply.answers[0].data, RData::A(a) if a.0 == std::net::Ipv4Addr::new(192, 0, 2, 1)),
            "{reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_and_doh_answer_many_queries_over_one_connection_each() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::write(dir.path());
    let Some(unbound) = start_unbound(dir.path(), &ca) else {
        return;
    };
    for server in [
        format!("tls://{}#{CERT_NAME}", unbound.tls),
        format!("https://{}/dns-query#{CERT_NAME}", unbound.https),
    ] {
        let target = if server.starts_with("tls") {
            unbound.tls
        } else {
            unbound.https
        };
        let setup = hushd_setup(std::slice::from_ref(&server), &ca);
        let hushd = setup.start();
        ask_many(hushd.dns, "burst", 200).await;
        assert_eq!(
            connections_to(target).len(),
            1,
            "{server}: 200 queries at once should share one connection"
        );
        // the server's display form, scheme included, labels its metrics
        let answered = hushd
            .metric(&format!(
                "hushd_upstream_duration_seconds_count{{upstream=\"{server}\"}}"
            ))
            .unwrap_or_else(|| panic!("no metric for {server}: {}", hushd.metrics_text()));
        assert!(answered >= 200.0, "{answered}");
        drop(hushd);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_connection_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::write(dir.path());
    let Some(mut unbound) = start_unbound(dir.path(), &ca) else {
        return;
    };
    let dot = format!("tls://{}#{CERT_NAME}", unbound.tls);
    let doh = format!("https://{}/dns-query#{CERT_NAME}", unbound.https);
    for (server, target) in [(dot, unbound.tls), (doh, unbound.https)] {
        let setup = hushd_setup(std::slice::from_ref(&server), &ca);
        let hushd = setup.start();
        ask_many(hushd.dns, "before", 10).await;
        let before = connections_to(target);
        assert_eq!(before.len(), 1, "{server}");

        unbound.restart();
        // the server's end is gone; the next queries get a new connection and their answers
        ask_many(hushd.dns, "after", 10).await;
        let after = connections_to(target);
        assert_eq!(after.len(), 1, "{server}: {after:?}");
        assert_ne!(before, after, "{server}: the old connection was kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_the_configured_name_fails_and_the_next_server_answers() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::write(dir.path());
    let Some(unbound) = start_unbound(dir.path(), &ca) else {
        return;
    };
    let wrong_dot = format!("tls://{}#other.test", unbound.tls);
    let wrong_doh = format!("https://{}/dns-query#other.test", unbound.https);

    // alone, the server is never trusted: SERVFAIL, and the log says why
    let setup = hushd_setup(&[wrong_dot.clone(), wrong_doh.clone()], &ca);
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let reply = query(&mut client, "a.test.", RecordType::A).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);
    assert!(
        hushd.wait_log(&wrong_doh, Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    let log = hushd.log();
    assert!(
        log.contains("NotValidForName") || log.contains("not valid for name"),
        "{log}"
    );
    assert!(log.contains("cannot connect to upstream"), "{log}");
    assert!(log.contains(&wrong_dot), "{log}");
    drop(hushd);

    // before a good server, it is skipped: the answer comes from the next one
    for good in [
        format!("tls://{}#{CERT_NAME}", unbound.tls),
        format!("https://{}", unbound.https),
    ] {
        let setup = hushd_setup(&[wrong_dot.clone(), good.clone()], &ca);
        let hushd = setup.start();
        let mut client = udp_client(hushd.dns, None).await;
        let reply = query(&mut client, "a.test.", RecordType::A).await;
        assert_eq!(reply.response_code, ResponseCode::NoError, "{good}");
    }

    // without the CA, the system's roots do not vouch for the test server
    let setup = hushd_setup(&[format!("tls://{}#{CERT_NAME}", unbound.tls)], &ca);
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let config: String = config
        .lines()
        .filter(|l| !l.starts_with("ca_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    setup.write_config(&config);
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let reply = query(&mut client, "a.test.", RecordType::A).await;
    assert_eq!(reply.response_code, ResponseCode::ServFail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_gives_servfail_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::write(dir.path());
    // accepts TCP connections (the kernel does, from the backlog) and never speaks TLS
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    for server in [
        format!("tls://{addr}#{CERT_NAME}"),
        format!("https://{addr}/dns-query#{CERT_NAME}"),
    ] {
        let setup = hushd_setup(std::slice::from_ref(&server), &ca);
        let hushd = setup.start();
        let mut client = udp_client(hushd.dns, None).await;
        let started = Instant::now();
        let reply = query(&mut client, "a.test.", RecordType::A).await;
        let took = started.elapsed();
        assert_eq!(reply.response_code, ResponseCode::ServFail, "{server}");
        // the test config's deadline is 2 s
        assert!(
            took < Duration::from_millis(2_500),
            "{server}: took {took:?}"
        );
    }
}
