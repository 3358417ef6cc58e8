//! Egress: client names and groups against the real binary, with queries sent from several
//! loopback source addresses (127.0.0.x as devices) to a real upstream on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{net::SocketAddr, time::Duration};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use support::{Setup, list, query, udp_client, upstream::Upstream, wait_until};

fn from(addr: &str) -> Option<SocketAddr> {
    Some(format!("{addr}:0").parse().unwrap())
}

const GROUPS: &str = r#"
[clients]
"reception-tv" = "127.0.0.90"

[[groups]]
name = "iot"
clients = ["127.0.0.32/28", "reception-tv"]
lists = ["samsung", "xiaomi"]
actions = { samsung = "block" }

[[groups]]
name = "staff"
clients = ["127.0.0.64/28"]
lists = ["samsung"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_group_gets_its_own_lists_and_actions_and_groups_reload_live() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(GROUPS);
    setup.write_list(
        "samsung",
        &list("log", &["samsungads.com", "shared.example"]),
    );
    setup.write_list("xiaomi", &list("block", &["xiaomi.com", "shared.example"]));
    setup.write_list("ads", &list("block", &["ads.example"]));
    let hushd = setup.start();

    let ask = |src: &'static str, name: &'static str| {
        let dns = hushd.dns;
        async move {
            let mut c = udp_client(dns, from(src)).await;
            query(&mut c, name, RecordType::A).await.response_code
        }
    };
    use ResponseCode::{NXDomain, NoError};
    // default group (127.0.0.1): every list with its own action
    assert_eq!(ask("127.0.0.1", "x.samsungads.com.").await, NoError);
    assert_eq!(ask("127.0.0.1", "shared.example.").await, NXDomain);
    assert_eq!(ask("127.0.0.1", "ads.example.").await, NXDomain);
    // iot by prefix, and the named TV by its host route
    for src in ["127.0.0.33", "127.0.0.90"] {
        assert_eq!(ask(src, "x.samsungads.com.").await, NXDomain, "{src}");
        assert_eq!(ask(src, "ads.example.").await, NoError, "{src}");
    }
    // staff leaves xiaomi out: a name both lists hold is samsung's (log) for staff
    assert_eq!(ask("127.0.0.65", "shared.example.").await, NoError);
    assert_eq!(ask("127.0.0.65", "xiaomi.com.").await, NoError);

    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="block",list="samsung",via="name"}"#),
        Some(2.0)
    );
    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="log",list="samsung",via="name"}"#),
        Some(2.0)
    );
    // the audit line names the device and its group
    assert!(hushd.wait_log("group=staff", Duration::from_secs(2)));
    // groups reload live: the TV leaves iot
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    setup.write_config(&config.replace(
        r#"clients = ["127.0.0.32/28", "reception-tv"]"#,
        r#"clients = ["127.0.0.32/28"]"#,
    ));
    let dns = hushd.dns;
    let moved = wait_until(Duration::from_secs(5), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                let mut c = udp_client(dns, from("127.0.0.90")).await;
                query(&mut c, "x.samsungads.com.", RecordType::A)
                    .await
                    .response_code
                    == NoError
            })
        })
    });
    assert!(
        moved,
        "the group edit was not applied on reload:\n{}",
        hushd.log()
    );
}

#[test]
fn group_mistakes_are_reported_by_check_with_their_place() {
    let setup = Setup::new(&["127.0.0.1:9".parse().unwrap()], "");
    setup.append_config(
        "[clients]\n\"tv\" = \"127.0.0.90\"\n[[groups]]\nname = \"iot\"\nclients = [\"127.0.0.32/28\", \"tvv\"]\nlists = [\"samsng\"]\n[[groups]]\nname = \"guest\"\nclients = [\"127.0.0.32/28\"]\n",
    );
    setup.write_list("samsung", &list("log", &["samsungads.com"]));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hushd"))
        .args(["check", "--config"])
        .arg(setup.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "\"tvv\" is neither a network nor a client named in [clients]",
        "127.0.0.32/28 is also a client of group \"iot\"",
        "hushd.toml:",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }
    // with the config fixed, the unknown list is named next
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    setup.write_config(&config.replace(", \"tvv\"", "").replace(
        "name = \"guest\"\nclients = [\"127.0.0.32/28\"]",
        "name = \"guest\"\nclients = [\"127.0.0.48/28\"]",
    ));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hushd"))
        .args(["check", "--config"])
        .arg(setup.config_path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("group \"iot\": lists entry \"samsng\" is not a list"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cname_to_a_listed_name_is_blocked_even_from_the_cache_and_a_log_target_is_counted() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    // the upstream answers cname.X with a CNAME to target.X and its address
    setup.write_list("unrelated", &list("block", &["unrelated.example"]));
    let hushd = setup.start();
    let mut c = udp_client(hushd.dns, None).await;

    // cached before any list covers its target
    let r = query(&mut c, "cname.cloak.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 2);

    // a list edit covers the cached answer at once: the target is blocked
    setup.write_list("tiktok", &list("block", &["target.cloak.example"]));
    let dns = hushd.dns;
    let blocked = wait_until(Duration::from_secs(5), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                let mut c = udp_client(dns, None).await;
                query(&mut c, "cname.cloak.example.", RecordType::A)
                    .await
                    .response_code
                    == ResponseCode::NXDomain
            })
        })
    });
    assert!(
        blocked,
        "the cached CNAME answer was not blocked:\n{}",
        hushd.log()
    );
    assert_eq!(
        up.seen.count("cname.cloak.example"),
        1,
        "the block came from the cache"
    );
    let r = query(&mut c, "cname.cloak.example.", RecordType::A).await;
    assert_eq!(
        support::ede_text(&r).as_deref(),
        Some("blocked by list tiktok (CNAME target.cloak.example)")
    );
    assert!(r.answers.is_empty());
    // a forwarded (not cached) answer is screened the same way, over TCP too
    let mut tcp = support::tcp_client(hushd.dns).await;
    let r = query(&mut tcp, "cname.cloak.example.", RecordType::AAAA).await;
    assert_eq!(r.response_code, ResponseCode::NXDomain);
    assert_eq!(up.seen.count("cname.cloak.example"), 2);
    assert!(
        hushd
            .metric(r#"hushd_list_matches_total{action="block",list="tiktok",via="cname"}"#)
            .unwrap_or(0.0)
            >= 3.0
    );

    // an audit list on a target: answered, counted via cname, logged with the target
    setup.write_list("samsung", &list("log", &["target.audit.example"]));
    assert!(hushd.wait_log("policy reloaded", Duration::from_secs(5)));
    wait_until(Duration::from_secs(5), || {
        hushd.metric(r#"hushd_blocklist_domains{list="samsung"}"#) == Some(1.0)
    });
    let r = query(&mut c, "cname.audit.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="log",list="samsung",via="cname"}"#),
        Some(1.0)
    );
    // the question's own allow entry exempts where it leads
    setup.write_list("allow", &list("allow", &["cname.cloak.example"]));
    let allowed = wait_until(Duration::from_secs(5), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                let mut c = udp_client(dns, None).await;
                query(&mut c, "cname.cloak.example.", RecordType::A)
                    .await
                    .response_code
                    == ResponseCode::NoError
            })
        })
    });
    assert!(allowed, "an allowed name was blocked by its CNAME target");
}
