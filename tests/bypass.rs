//! Bypass defence: the answers hushd gives itself to the names devices ask before they stop
//! using the network's DNS (Firefox's DoH canary, iCloud Private Relay, RFC 9462's
//! `resolver.arpa`), over both transports, each behind its `[server]` toggle, applied on
//! reload. The real `hushd` binary on loopback, a real authoritative upstream (which would
//! answer every one of these names with an address), hickory's DNS client.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{process::Command, time::Duration};

use hickory_net::{client::Client, runtime::TokioRuntimeProvider};
use hickory_proto::{
    op::{DnsResponse, ResponseCode},
    rr::RecordType,
};
use support::{Setup, list, query, tcp_client, udp_client, upstream::Upstream};

/// Every name hushd answers itself, with a query type a device sends for it, and the rcode it
/// gets (NXDOMAIN for the two canaries, NODATA for `resolver.arpa`).
const ANSWERED: [(&str, RecordType, ResponseCode); 7] = [
    (
        "use-application-dns.net.",
        RecordType::A,
        ResponseCode::NXDomain,
    ),
    (
        "Use-Application-DNS.net.",
        RecordType::AAAA,
        ResponseCode::NXDomain,
    ),
    ("mask.icloud.com.", RecordType::A, ResponseCode::NXDomain),
    (
        "mask-h2.icloud.com.",
        RecordType::HTTPS,
        ResponseCode::NXDomain,
    ),
    (
        "_dns.resolver.arpa.",
        RecordType::SVCB,
        ResponseCode::NoError,
    ),
    ("_dns.resolver.arpa.", RecordType::A, ResponseCode::NoError),
    ("resolver.arpa.", RecordType::SOA, ResponseCode::NoError),
];

const ALL_OFF: &str = "firefox_canary = false\nicloud_private_relay = false\nresolver_arpa = false";

/// The name as the upstream fixture records it: lower case, no final dot.
fn seen_as(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether `r` is hushd's own answer: the expected rcode, no records, an SOA for the negative
/// answer. The fixture would have answered A/AAAA with an address and the rest with its SOA
/// for `fixture.`, never NXDOMAIN for these names.
fn is_hushds(r: &DnsResponse, rcode: ResponseCode) -> bool {
    r.response_code == rcode
        && r.answers.is_empty()
        && r.authorities.len() == 1
        && r.authorities[0].record_type() == RecordType::SOA
        && r.authorities[0].name == *r.queries[0].name()
}

async fn clients(setup: &Setup) -> [(&'static str, Client<TokioRuntimeProvider>); 2] {
    [
        ("udp", udp_client(setup.dns, None).await),
        ("tcp", tcp_client(setup.dns).await),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_name_is_answered_by_hushd_over_udp_and_tcp_before_the_lists() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    // an allow list holding them changes nothing: the toggles, not the lists, decide
    setup.write_list(
        "mine",
        &list(
            "allow",
            &["use-application-dns.net", "icloud.com", "resolver.arpa"],
        ),
    );
    let hushd = setup.start();

    for (transport, mut client) in clients(&setup).await {
        for (name, qtype, rcode) in ANSWERED {
            let r = query(&mut client, name, qtype).await;
            assert!(is_hushds(&r, rcode), "{transport} {name} {qtype}: {r:?}");
        }
        // Mozilla's canary is use-application-dns.net exactly ("Canary domain -
        // use-application-dns.net", support.mozilla.org/kb/canary-domain-use-application-dnsnet):
        // a name under it is an ordinary name, forwarded and answered.
        let r = query(&mut client, "www.use-application-dns.net.", RecordType::A).await;
        assert_eq!(
            (r.response_code, r.answers.len()),
            (ResponseCode::NoError, 1),
            "{transport}: {r:?}"
        );
        // other iCloud names are iCloud itself
        let r = query(&mut client, "mask-api.icloud.com.", RecordType::A).await;
        assert_eq!(r.answers.len(), 1, "{transport}: {r:?}");
    }

    for (name, _, _) in ANSWERED {
        assert_eq!(up.seen.count(&seen_as(name)), 0, "{name} reached upstream");
    }
    assert_eq!(up.seen.count("www.use-application-dns.net"), 1);
    for (toggle, n) in [
        ("firefox_canary", 4.0),
        ("icloud_private_relay", 4.0),
        ("resolver_arpa", 6.0),
    ] {
        let series = format!("hushd_bypass_answers_total{{toggle=\"{toggle}\"}}");
        assert_eq!(hushd.metric(&series), Some(n), "{series}");
    }
    for protocol in ["udp", "tcp"] {
        let series = format!(
            "hushd_queries_total{{outcome=\"bypass\",protocol=\"{protocol}\",qtype=\"SVCB\"}}"
        );
        assert_eq!(hushd.metric(&series), Some(1.0), "{series}");
    }

    // `hushd explain` says why, from the same decision
    let out = Command::new(support::HUSHD)
        .arg("--config")
        .arg(setup.config_path())
        .args(["explain", "mask.icloud.com"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(": bypass") && text.contains("icloud_private_relay"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each toggle off: the name is forwarded like any other. A config edit turning them on is
/// applied without a restart (a cached upstream answer does not outlive it: hushd decides
/// before its cache), and turning one off again leaves the others on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toggled_off_they_are_forwarded_and_a_reload_applies_a_toggle_change() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], ALL_OFF);
    let hushd = setup.start();
    let mut udp = udp_client(setup.dns, None).await;

    for (name, qtype, rcode) in ANSWERED {
        let r = query(&mut udp, name, qtype).await;
        assert_eq!(
            r.response_code,
            ResponseCode::NoError,
            "{name} {qtype}: {r:?}"
        );
        assert!(!is_hushds(&r, rcode), "{name} {qtype}: {r:?}");
    }
    for name in [
        "use-application-dns.net",
        "mask.icloud.com",
        "mask-h2.icloud.com",
    ] {
        assert!(up.seen.count(name) >= 1, "{name} was not forwarded");
    }
    assert!(up.seen.count("_dns.resolver.arpa") >= 1);
    assert_eq!(
        hushd.metric("hushd_bypass_answers_total{toggle=\"firefox_canary\"}"),
        Some(0.0)
    );

    // all on (the defaults): applied on reload, although the forwarded answers are cached
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let on = config.replace(ALL_OFF, "");
    assert_ne!(on, config);
    setup.write_config(&on);
    let applied = {
        let mut done = false;
        for _ in 0..150 {
            let r = query(&mut udp, "use-application-dns.net.", RecordType::A).await;
            if is_hushds(&r, ResponseCode::NXDomain) {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done
    };
    assert!(applied, "toggle change not applied:\n{}", hushd.log());
    let before = up.seen.total();
    for (name, qtype, rcode) in ANSWERED {
        let r = query(&mut udp, name, qtype).await;
        assert!(is_hushds(&r, rcode), "{name} {qtype}: {r:?}");
    }
    assert_eq!(up.seen.total(), before, "nothing reached upstream");

    // one off again: only its names go back to the ordinary path
    let canary_off = on.replace("[server]\n", "[server]\nfirefox_canary = false\n");
    assert_ne!(canary_off, on);
    setup.write_config(&canary_off);
    let mut forwarded = false;
    for _ in 0..150 {
        let r = query(&mut udp, "use-application-dns.net.", RecordType::A).await;
        if r.answers.len() == 1 {
            forwarded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        forwarded,
        "firefox_canary = false not applied:\n{}",
        hushd.log()
    );
    for (name, qtype, rcode) in &ANSWERED[2..] {
        let r = query(&mut udp, name, *qtype).await;
        assert!(is_hushds(&r, *rcode), "{name} {qtype}: {r:?}");
    }

    // the other two off in turn, each by a reload: its names go back to the ordinary path, the
    // names of a toggle still on stay hushd's
    let mut config = canary_off;
    for (toggle, names) in [("icloud_private_relay", 2..4), ("resolver_arpa", 4..7)] {
        let next = config.replace("[server]\n", &format!("[server]\n{toggle} = false\n"));
        assert_ne!(next, config);
        setup.write_config(&next);
        config = next;
        let (name, qtype, rcode) = ANSWERED[names.start];
        let mut forwarded = false;
        for _ in 0..150 {
            let r = query(&mut udp, name, qtype).await;
            if r.response_code == ResponseCode::NoError && !is_hushds(&r, rcode) {
                forwarded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(forwarded, "{toggle} = false not applied:\n{}", hushd.log());
        for (name, qtype, rcode) in &ANSWERED[names.clone()] {
            let r = query(&mut udp, name, *qtype).await;
            assert!(
                !is_hushds(&r, *rcode),
                "{toggle} off, {name} {qtype}: {r:?}"
            );
        }
        for (name, qtype, rcode) in &ANSWERED[names.end..] {
            let r = query(&mut udp, name, *qtype).await;
            assert!(is_hushds(&r, *rcode), "{toggle} off, {name} {qtype}: {r:?}");
        }
    }
}
