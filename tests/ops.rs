//! Operations: hushd's log, reloads and listeners as an admin runs them. The real `hushd`
//! binary on loopback, a real authoritative upstream, hickory's DNS client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::time::{Duration, Instant};

use hickory_net::client::ClientHandle;
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{DNSClass, Name, RecordType},
};
use support::{Setup, StalledLog, list, udp_client, upstream::Upstream};

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

    // Thousands of list matches from several sources, without waiting for the answers.
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
    while sent < 16_000 && started.elapsed() < Duration::from_secs(20) {
        for (i, s) in sockets.iter().enumerate() {
            let name = if sent.is_multiple_of(2) {
                format!("a{sent}.samsungads.com.")
            } else {
                format!("x{sent}.ads.example.")
            };
            let _ = s.send_to(&raw_query(&name, sent as u16), hushd.dns).await;
            sent += 1;
            while s.try_recv_from(&mut buf).is_ok() {}
            if i == 0 && sent.is_multiple_of(256) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
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
        "after {sent} list matches, 10 ordinary queries"
    );

    let matches = hushd
        .metric(r#"hushd_list_matches_total{action="block",list="ads"}"#)
        .unwrap_or(0.0);
    let dropped = hushd.metric("hushd_log_dropped_total").unwrap_or(0.0);
    assert!(
        dropped > 0.0,
        "{matches} block matches logged at debug into a stalled pipe, none dropped"
    );
}
