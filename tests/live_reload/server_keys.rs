//! `[server]` keys that the policy carries (`block_response`, `block_ttl`, `health_name`,
//! `drain_secs`), each changed by a reload and shown in force on the next queries, against
//! the real binary. (`allow_clients` and the bypass toggles have theirs in `tests/ops.rs` and
//! `tests/bypass.rs`.)

use std::time::{Duration, Instant};

use hickory_proto::{
    op::ResponseCode,
    rr::{RData, RecordType},
};

use crate::{
    reload,
    support::{Setup, list, query, rcode, udp_client, upstream::Upstream},
};

/// `[server] block_response` changed from "nxdomain" to "null": a blocked name answered
/// NXDOMAIN before the reload gets 0.0.0.0 after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_block_response_answers_the_next_blocked_lookups() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "block_response = \"nxdomain\"");
    setup.write_list("ads", &list("block", &["ads.example"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "ads.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty());

    reload(&setup, &hushd, |c| {
        c.replace("block_response = \"nxdomain\"", "block_response = \"null\"")
    });
    let r = query(&mut udp, "ads.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    let addresses: Vec<String> = r
        .answers
        .iter()
        .filter_map(|rr| match &rr.data {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(addresses, ["0.0.0.0"], "{r:?}");
    assert_eq!(
        up.seen.count("ads.example"),
        0,
        "a blocked name went upstream"
    );
}

/// `[server] block_ttl` lowered from 60 to 5: the SOA of a blocked name's NXDOMAIN carries
/// the new TTL on the next lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_block_ttl_is_the_ttl_of_the_next_blocked_answers() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "block_ttl = 60");
    setup.write_list("ads", &list("block", &["ads.example"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let soa_ttl = |r: &hickory_proto::op::DnsResponse| {
        assert_eq!(r.response_code, ResponseCode::NXDomain);
        assert_eq!(r.authorities.len(), 1, "{r:?}");
        r.authorities[0].ttl
    };
    let r = query(&mut udp, "ads.example.", RecordType::A).await;
    assert_eq!(soa_ttl(&r), 60);

    reload(&setup, &hushd, |c| {
        c.replace("block_ttl = 60", "block_ttl = 5")
    });
    let r = query(&mut udp, "ads.example.", RecordType::A).await;
    assert_eq!(soa_ttl(&r), 5);
}

/// `[server] health_name` moved to another name: the new one is answered by hushd itself
/// (NOERROR, no records, never forwarded), the old one goes upstream like any name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_health_name_is_answered_by_hushd_and_the_old_one_forwarded() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "health_name = \"check-a.hushd.test\"");
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let r = query(&mut udp, "check-a.hushd.test.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty(), "{r:?}");
    assert_eq!(up.seen.count("check-a.hushd.test"), 0);

    reload(&setup, &hushd, |c| c.replace("check-a.", "check-b."));
    let r = query(&mut udp, "check-b.hushd.test.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty(), "{r:?}");
    assert_eq!(
        up.seen.count("check-b.hushd.test"),
        0,
        "the health name went upstream"
    );
    // the old name is an ordinary one now: the fixture answers it with an address
    let r = query(&mut udp, "check-a.hushd.test.", RecordType::A).await;
    assert_eq!(r.answers.len(), 1, "{r:?}");
    assert_eq!(up.seen.count("check-a.hushd.test"), 1);
}

/// `[server] drain_secs` raised from 0 (stop at once on SIGTERM) to 2 by a reload: on SIGTERM
/// hushd then fails the health name, answers the rest for about 2 s, and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_drain_secs_is_the_drain_of_the_next_sigterm() {
    let up = Upstream::start().await;
    let setup = Setup::new(
        &[up.addr],
        "health_name = \"health.hushd.test\"\ndrain_secs = 0",
    );
    let mut hushd = setup.start();
    reload(&setup, &hushd, |c| {
        c.replace("drain_secs = 0", "drain_secs = 2")
    });

    let mut udp = udp_client(hushd.dns, None).await;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(hushd.pid()).unwrap());
    let stopped = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // with drain_secs = 0 hushd would be gone by now
    assert_eq!(
        rcode(&mut udp, "health.hushd.test.").await,
        ResponseCode::Refused,
        "{}",
        hushd.log()
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        rcode(&mut udp, "drain.example.").await,
        ResponseCode::NoError
    );
    assert!(!hushd.has_exited(), "stopped before drain_secs");
    while !hushd.has_exited() && stopped.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hushd.has_exited(), "still running 6 s after SIGTERM");
    assert!(
        stopped.elapsed() >= Duration::from_millis(1900),
        "stopped after {:?}",
        stopped.elapsed()
    );
}
