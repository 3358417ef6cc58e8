//! Operations: hushd's log, reloads and listeners as an admin runs them. The real `hushd`
//! binary on loopback, a real authoritative upstream, hickory's DNS client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_net::client::ClientHandle;
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{DNSClass, Name, RecordType},
};
use support::{Setup, StalledLog, list, query, rcode, udp_client, upstream::Upstream};

/// A query for `name` as raw bytes, with `id`.
fn raw_query(name: &str, id: u16) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    msg.to_vec().unwrap()
}

/// With its stderr a pipe nobody reads, hushd keeps answering: log lines are dropped and
/// counted, never waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_log_sink_does_not_stop_answers() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[limits]\nclient_qps = 0");
    setup.write_list("audit", &list("log", &["samsungads.com"]));
    setup.write_list("ads", &list("block", &["ads.example"]));
    // debug logs every block match: enough lines to fill the pipe and the log buffer behind it
    let hushd = StalledLog::start(
        &setup,
        "info,hushd=debug,hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn",
    );

    // Thousands of list matches from several sources, without waiting for the answers, until
    // hushd has matched (and logged) far more block matches than its log buffer holds.
    let blocks = r#"hushd_list_matches_total{action="block",list="ads",via="name"}"#;
    let started = Instant::now();
    let mut sent = 0u32;
    let mut buf = vec![0u8; 2048];
    let mut sockets = Vec::new();
    for i in 2..10 {
        let s = tokio::net::UdpSocket::bind(format!("127.0.0.{i}:0"))
            .await
            .unwrap();
        sockets.push(s);
    }
    while sent < 60_000 && started.elapsed() < Duration::from_secs(20) {
        for s in &sockets {
            let name = if sent.is_multiple_of(4) {
                format!("a{sent}.samsungads.com.")
            } else {
                format!("x{sent}.ads.example.")
            };
            let _ = s.send_to(&raw_query(&name, sent as u16), hushd.dns).await;
            sent += 1;
            while s.try_recv_from(&mut buf).is_ok() {}
        }
        // paced, so that hushd rather than its socket buffer sees the queries
        if sent.is_multiple_of(256) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if sent.is_multiple_of(4000) && hushd.metric(blocks).unwrap_or(0.0) >= 12_000.0 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut client = udp_client(hushd.dns, Some("127.0.0.10:0".parse().unwrap())).await;
    let mut answered = 0;
    for i in 0..10 {
        let name = Name::from_ascii(format!("n{i}.example.")).unwrap();
        if let Ok(r) = client.query(name, DNSClass::IN, RecordType::A).await {
            answered += u32::from(r.response_code == ResponseCode::NoError);
        }
    }
    assert_eq!(
        answered, 10,
        "after {sent} list-matching queries sent, 10 ordinary queries"
    );

    let matches = hushd.metric(blocks).unwrap_or(0.0);
    let dropped = hushd.metric("hushd_log_dropped_total").unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "{matches} block matches logged at debug into a stalled pipe, none dropped"
    );
}

/// Audit lines: one per (client, list) per interval, then a line that says how many matches
/// were left out; the metric counts every match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_lines_are_rate_limited_per_client_and_list() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "allow_clients = [\"127.0.0.0/8\"]");
    setup.write_list("samsung", &list("log", &["samsungads.com"]));
    setup.write_list("tizen", &list("log", &["tizen.example"]));
    let hushd = setup.start();
    let mut one = udp_client(hushd.dns, Some("127.0.0.1:0".parse().unwrap())).await;
    let mut two = udp_client(hushd.dns, Some("127.0.0.2:0".parse().unwrap())).await;
    for i in 0..30 {
        query(&mut one, &format!("a{i}.samsungads.com."), RecordType::A).await;
    }
    query(&mut one, "x.tizen.example.", RecordType::A).await;
    query(&mut two, "b.samsungads.com.", RecordType::A).await;
    assert!(support::wait_until(Duration::from_secs(3), || {
        audit_lines(&hushd.log()).len() >= 3
    }));
    let lines = audit_lines(&hushd.log());
    let count = |client: &str, list: &str| {
        lines
            .iter()
            .filter(|l| {
                l.contains(&format!("client={client} ")) && l.contains(&format!("list={list} "))
            })
            .count()
    };
    assert_eq!(count("127.0.0.1", "samsung"), 1, "{lines:#?}");
    assert_eq!(count("127.0.0.1", "tizen"), 1, "{lines:#?}");
    assert_eq!(count("127.0.0.2", "samsung"), 1, "{lines:#?}");
    assert!(
        lines.iter().all(|l| l.contains("suppressed=0")),
        "{lines:#?}"
    );
    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="log",list="samsung",via="name"}"#),
        Some(31.0)
    );

    // Past the interval, the pair's next line counts what was left out.
    tokio::time::sleep(hushd::audit::INTERVAL).await;
    query(&mut one, "late.samsungads.com.", RecordType::A).await;
    assert!(
        hushd.wait_log("suppressed=29", Duration::from_secs(3)),
        "{:#?}",
        audit_lines(&hushd.log())
    );
}

fn audit_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("list match"))
        .map(str::to_string)
        .collect()
}

/// `--log-format json`: every line of the log is one JSON object; an audit match carries its
/// fields by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_parse_and_carry_the_audit_fields() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("samsung", &list("log", &["samsungads.com"]));
    let hushd = support::Hushd::start_with(&setup, &["--log-format", "json"], &[]);
    let mut udp = udp_client(hushd.dns, None).await;
    query(&mut udp, "config.samsungads.com.", RecordType::AAAA).await;
    assert!(hushd.wait_log("list match", Duration::from_secs(3)));

    let log = hushd.log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.len() >= 2, "{log}");
    for e in &events {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(e.get(field).is_some(), "{field} missing from {e}");
        }
    }
    let audit = events
        .iter()
        .find(|e| e["message"] == "list match")
        .unwrap();
    assert_eq!(audit["level"], "INFO", "{audit}");
    assert_eq!(audit["target"], "hushd::audit", "{audit}");
    assert_eq!(audit["client"], "127.0.0.1", "{audit}");
    assert_eq!(audit["qname"], "config.samsungads.com.", "{audit}");
    assert_eq!(audit["qtype"], "AAAA", "{audit}");
    assert_eq!(audit["list"], "samsung", "{audit}");
    assert_eq!(audit["action"], "log", "{audit}");
    assert_eq!(audit["suppressed"], 0, "{audit}");
}

/// Never answer an answer: a datagram with QR=1 gets no reply of any kind (that is how
/// reflection loops between two servers start), whatever it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_never_answered() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("ads", &list("block", &["ads.example"]));
    let hushd = setup.start();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let as_response = |mut bytes: Vec<u8>| {
        bytes[2] |= 0x80; // QR
        bytes
    };
    let mut two_questions = Message::query();
    two_questions.metadata.id = 3;
    for name in ["www.example.", "ads.example."] {
        two_questions.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    }
    let mut pointer = raw_query("www.example.", 5);
    pointer.truncate(12);
    pointer.extend_from_slice(b"\xc0\x00\x00\x01\x00\x01");
    let responses = [
        as_response(raw_query("www.example.", 1)),
        as_response(raw_query("ads.example.", 2)),
        as_response(two_questions.to_vec().unwrap()),
        as_response(b"\x00\x04\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff".to_vec()),
        as_response(pointer),
        // an answer as upstream would send it, with its records
        {
            let mut m = Message::query();
            m.metadata.id = 6;
            m.metadata.message_type = hickory_proto::op::MessageType::Response;
            m.add_query(Query::query("www.example.".parse().unwrap(), RecordType::A));
            m.to_vec().unwrap()
        },
    ];
    for r in &responses {
        for _ in 0..3 {
            socket.send_to(r, hushd.dns).await.unwrap();
        }
    }
    // A query after them: its answer shows the socket works, and everything before it is read.
    socket
        .send_to(&raw_query("www.example.", 99), hushd.dns)
        .await
        .unwrap();
    let mut ids = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    // Replies come back in order of the datagrams they answer; wait a while past the control
    // query's answer for any straggler all the same.
    while let Ok(Ok(_)) = tokio::time::timeout_at(deadline.into(), socket.recv_from(&mut buf)).await
    {
        ids.push(u16::from_be_bytes([buf[0], buf[1]]));
    }
    assert_eq!(ids, vec![99], "replies to responses among {ids:?}");
}

/// IPv6 listeners: UDP and TCP on [::1].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_an_ipv6_listener_over_udp_and_tcp() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED serves_on_an_ipv6_listener_over_udp_and_tcp: ::1 is not available here");
        return;
    }
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("ads", &list("block", &["ads.example"]));
    let v6 = free_port_v6();
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let listen = format!("listen = [\"{}\"]", setup.dns);
    assert!(config.contains(&listen), "{config}");
    std::fs::write(
        setup.config_path(),
        config.replace(&listen, &format!("listen = [\"{}\", \"{v6}\"]", setup.dns)),
    )
    .unwrap();
    let hushd = setup.start();

    let mut udp = udp_client(v6, None).await;
    let r = query(&mut udp, "www.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(!r.answers.is_empty());
    let r = query(&mut udp, "ads.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    let mut tcp = support::tcp_client(v6).await;
    let r = query(&mut tcp, "www.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(!r.answers.is_empty());
    assert_eq!(
        hushd.metric(r#"hushd_queries_total{outcome="blocked",protocol="udp",qtype="A"}"#),
        Some(1.0)
    );
}

/// A port free for UDP and TCP on ::1.
fn free_port_v6() -> SocketAddr {
    loop {
        let udp = std::net::UdpSocket::bind("[::1]:0").unwrap();
        let addr = udp.local_addr().unwrap();
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// SIGHUP reloads. The list is edited through a hard link in a folder hushd does not watch, so
/// only the signal can make the edit apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_an_edit_the_watcher_cannot_see() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("ads", &list("block", &["ads.example"]));
    let elsewhere = setup.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::hard_link(setup.list_path("ads"), elsewhere.join("ads.toml")).unwrap();
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(
        rcode(&mut udp, "late.example.").await,
        ResponseCode::NoError
    );
    let ok = r#"hushd_reloads_total{result="ok"}"#;
    let before = hushd.metric(ok).unwrap();

    // Same file (inode), written in place through the other name.
    std::fs::write(
        elsewhere.join("ads.toml"),
        list("block", &["ads.example", "late.example"]),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        rcode(&mut udp, "late.example.").await,
        ResponseCode::NoError,
        "the watcher saw the edit: this test would not show SIGHUP works"
    );
    assert_eq!(hushd.metric(ok), Some(before));

    let pid = nix::unistd::Pid::from_raw(i32::try_from(hushd.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let blocked = support::wait_for_rcode(
        &mut udp,
        "late.example.",
        ResponseCode::NXDomain,
        Duration::from_secs(3),
    )
    .await;
    assert!(blocked.is_some(), "SIGHUP did not reload:\n{}", hushd.log());
    assert_eq!(hushd.metric(ok), Some(before + 1.0));
    assert!(
        hushd.wait_log("SIGHUP", Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
}

/// `allow_clients` is applied on reload: a client refused before the edit is served after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_clients_changes_apply_on_reload() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "allow_clients = [\"127.0.0.1/32\"]");
    let hushd = setup.start();
    let mut outside = udp_client(hushd.dns, Some("127.0.0.2:0".parse().unwrap())).await;
    assert_eq!(
        rcode(&mut outside, "www.example.").await,
        ResponseCode::Refused
    );

    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let edited = config.replace("\"127.0.0.1/32\"", "\"127.0.0.1/32\", \"127.0.0.2/32\"");
    assert_ne!(config, edited);
    setup.write_config(&edited);
    let served = support::wait_for_rcode(
        &mut outside,
        "www.example.",
        ResponseCode::NoError,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        served.is_some(),
        "allow_clients edit not applied:\n{}",
        hushd.log()
    );

    // and taken away again
    setup.write_config(&config);
    let refused = support::wait_for_rcode(
        &mut outside,
        "www.example.",
        ResponseCode::Refused,
        Duration::from_secs(3),
    )
    .await;
    assert!(
        refused.is_some(),
        "allow_clients edit not applied:\n{}",
        hushd.log()
    );
}

/// `[server] drain_secs` with `health_name`, for a load balancer in front (docs/scale-out.md):
/// on SIGTERM hushd fails only the health check (REFUSED) and answers everything else for
/// `drain_secs`, then stops; before it, the health name is NOERROR and never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_failing_only_the_health_name() {
    let up = Upstream::start().await;
    let setup = Setup::new(
        &[up.addr],
        "health_name = \"health.hushd.test\"\ndrain_secs = 2",
    );
    let mut hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(
        rcode(&mut udp, "health.hushd.test.").await,
        ResponseCode::NoError
    );
    assert_eq!(
        up.seen.count("health.hushd.test"),
        0,
        "the health name went upstream"
    );

    let pid = nix::unistd::Pid::from_raw(i32::try_from(hushd.pid()).unwrap());
    let stopped = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rcode(&mut udp, "health.hushd.test.").await,
        ResponseCode::Refused,
        "{}",
        hushd.log()
    );
    // every other query is still answered while it drains
    for i in 0..5 {
        assert_eq!(
            rcode(&mut udp, &format!("d{i}.example.")).await,
            ResponseCode::NoError
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!hushd.has_exited(), "stopped before drain_secs");
    while !hushd.has_exited() && stopped.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hushd.has_exited(), "still running 6 s after SIGTERM");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1900),
        "stopped after {:?}, before drain_secs",
        stopped.elapsed()
    );
}
