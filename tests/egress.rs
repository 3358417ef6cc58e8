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
