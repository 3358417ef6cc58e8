//! Answer-address rules end to end, against the real `hushd` binary: lists' `ips`, `ips_file`,
//! `countries` and `asns` load against the test databases in tests/fixtures/mmdb (documentation
//! ranges only), `hushd check` says what each list holds and which databases it read, a mistake
//! is an error at its place, and a database change reloads the policy (a damaged one keeps the
//! running policy).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use hickory_proto::op::ResponseCode;
use support::{Setup, list, rcode, udp_client, upstream::Upstream, wait_until};

fn fixture(name: &str) -> PathBuf {
    support::project_root()
        .join("tests/fixtures/mmdb")
        .join(name)
}

/// Installs `fixture` as `name` beside the config the way database updaters do: a new file
/// renamed over the old one.
fn install_db(setup: &Setup, fixture_name: &str, name: &str) {
    let tmp = setup.dir.path().join(format!(".{name}.part"));
    std::fs::copy(fixture(fixture_name), &tmp).unwrap();
    std::fs::rename(&tmp, setup.dir.path().join(name)).unwrap();
}

fn check(config: &Path) -> (bool, String) {
    let out = Command::new(support::HUSHD)
        .arg("--config")
        .arg(config)
        .arg("check")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A setup with a country and an ASN database beside the config, and three lists using them.
fn egress_setup(up: &Upstream) -> Setup {
    let setup = Setup::new(&[up.addr], "");
    install_db(&setup, "country.mmdb", "GeoLite2-Country.mmdb");
    install_db(&setup, "asn.mmdb", "GeoLite2-ASN.mmdb");
    setup.append_config(
        "[egress]\ncountry_db = \"GeoLite2-Country.mmdb\"\nasn_db = \"GeoLite2-ASN.mmdb\"\n",
    );
    let lists = setup.dir.path().join("blocklists");
    std::fs::write(
        lists.join("doh-ips.txt"),
        "# public resolvers (documentation ranges here)\n192.0.2.53\n2001:db8:53::/48  # v6\n\n",
    )
    .unwrap();
    setup.write_list(
        "doh",
        "action = \"block\"\nips = [\"198.51.100.53\"]\nips_file = \"doh-ips.txt\"\n",
    );
    setup.write_list("cn", "action = \"log\"\ncountries = [\"cn\"]\n");
    setup.write_list("net", "action = \"log\"\nasns = [64500, 64501]\n");
    setup
}

#[test]
fn check_reads_ips_countries_and_asns_against_the_databases() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let setup = egress_setup(&up);
    let (ok, out) = check(&setup.config_path());
    assert!(ok, "{out}");
    let dir = setup.dir.path().display().to_string();
    for want in [
        "    countries: CN\n".to_string(),
        "    ips: 3 networks\n".to_string(),
        "    asns: AS64500, AS64501\n".to_string(),
        format!("  country_db {dir}/GeoLite2-Country.mmdb: hushd-Test-Country, built 20"),
        ", countries from country.iso_code\n".to_string(),
        format!("  asn_db {dir}/GeoLite2-ASN.mmdb: hushd-Test-ASN, built 20"),
    ] {
        assert!(out.contains(&want), "{want:?} missing in:\n{out}");
    }
    // the ip-location-db layout is read too
    install_db(&setup, "country-code.mmdb", "GeoLite2-Country.mmdb");
    let (ok, out) = check(&setup.config_path());
    assert!(ok, "{out}");
    assert!(out.contains(", countries from country_code\n"), "{out}");
}

#[test]
fn check_locates_each_mistake() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let setup = egress_setup(&up);
    let lists = setup.dir.path().join("blocklists");
    // a bad line, at its place
    std::fs::write(
        lists.join("doh-ips.txt"),
        "192.0.2.53\n\n  192.0.2.0/16\nresolver.example\n",
    )
    .unwrap();
    let (ok, out) = check(&setup.config_path());
    assert!(!ok, "{out}");
    let file = lists.join("doh-ips.txt").display().to_string();
    assert!(
        out.contains(&format!(
            "{file}:3:3: \"192.0.2.0/16\" has host bits set; the network is 192.0.0.0/16"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{file}:4:1: \"resolver.example\" is not an address or CIDR"
        )),
        "{out}"
    );
    std::fs::write(lists.join("doh-ips.txt"), "192.0.2.53\n").unwrap();

    // a damaged database
    let db = setup.dir.path().join("GeoLite2-ASN.mmdb");
    let good = std::fs::read(&db).unwrap();
    std::fs::write(&db, &good[..good.len() - 20]).unwrap();
    let (ok, out) = check(&setup.config_path());
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{}: [egress] asn_db: not a readable MaxMind DB",
            db.display()
        )),
        "{out}"
    );
    std::fs::write(&db, &good).unwrap();
    assert!(check(&setup.config_path()).0);

    // countries with no country database: an error, never a silent no-op
    setup.write_config(
        &std::fs::read_to_string(setup.config_path())
            .unwrap()
            .replace("country_db = \"GeoLite2-Country.mmdb\"\n", ""),
    );
    let (ok, out) = check(&setup.config_path());
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{}: countries needs [egress] country_db in {}",
            setup.list_path("cn").display(),
            setup.config_path().display()
        )),
        "{out}"
    );
    // and hushd does not start with it either
    let mut child = Command::new(support::HUSHD)
        .arg("--config")
        .arg(setup.config_path())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("hushd started with countries and no country_db");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("countries needs [egress] country_db"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_change_reloads_and_a_damaged_one_keeps_the_policy() {
    let up = Upstream::start().await;
    let setup = egress_setup(&up);
    setup.write_list("vendor", &list("block", &["blocked.example"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    let reloads = |result: &str| {
        hushd
            .metric(&format!("hushd_reloads_total{{result=\"{result}\"}}"))
            .unwrap_or(0.0)
    };
    // startup counts as a successful load
    let loaded = reloads("ok");

    // a refreshed database (another layout even) reloads the policy
    install_db(&setup, "country-code.mmdb", "GeoLite2-Country.mmdb");
    assert!(
        wait_until(Duration::from_secs(5), || reloads("ok") == loaded + 1.0),
        "no reload after the database changed:\n{}",
        hushd.log()
    );

    // a damaged one is refused, and the running policy stays
    let tmp = setup.dir.path().join(".asn.part");
    std::fs::write(&tmp, b"not a database").unwrap();
    std::fs::rename(&tmp, setup.dir.path().join("GeoLite2-ASN.mmdb")).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || reloads("error") == 1.0),
        "the damaged database was not refused:\n{}",
        hushd.log()
    );
    assert!(hushd.wait_log(
        "GeoLite2-ASN.mmdb: [egress] asn_db: not a readable MaxMind DB",
        Duration::from_secs(5)
    ));
    assert!(hushd.wait_log("previous policy stays in force", Duration::from_secs(5)));
    assert_eq!(
        rcode(&mut udp, "blocked.example.").await,
        ResponseCode::NXDomain
    );
    assert_eq!(
        rcode(&mut udp, "other.example.").await,
        ResponseCode::NoError
    );

    // other files beside the config (an updater's partial download) cost no reload
    std::fs::write(setup.dir.path().join(".asn.part"), b"partial").unwrap();
    std::fs::write(setup.dir.path().join("notes.txt"), b"notes").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        (reloads("ok"), reloads("error")),
        (loaded + 1.0, 1.0),
        "{}",
        hushd.log()
    );

    // mended: reloads again
    install_db(&setup, "asn.mmdb", "GeoLite2-ASN.mmdb");
    assert!(
        wait_until(Duration::from_secs(5), || reloads("ok") == loaded + 2.0),
        "no reload after the database was mended:\n{}",
        hushd.log()
    );
}

/// The upstream fixture answers plain names with 192.0.2.1 (CN, AS64500 in the test
/// databases) and `cname.X` with a CNAME to an A of 192.0.2.2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_blocked_or_logged_by_their_addresses_country_and_network() {
    use hickory_proto::rr::RecordType;
    let up = Upstream::start().await;
    let setup = egress_setup(&up);
    setup.write_list("badip", "action = \"block\"\nips = [\"192.0.2.2/32\"]\n");
    let hushd = setup.start();
    let mut c = udp_client(hushd.dns, None).await;

    // 192.0.2.1: in CN and AS64500, both audit lists: answered, counted by how it matched
    let r = support::query(&mut c, "www.example.", RecordType::A).await;
    assert_eq!(r.response_code, ResponseCode::NoError);
    let counted = |list: &str, via: &str| {
        hushd
            .metric(&format!(
                "hushd_list_matches_total{{action=\"log\",list=\"{list}\",via=\"{via}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert_eq!(counted("cn", "country") + counted("net", "asn"), 1.0);
    assert!(hushd.wait_log(
        "country CN, AS64500 (Example Net A)",
        Duration::from_secs(2)
    ));

    // 192.0.2.2 behind a CNAME: blocked by the range, from upstream and then from the cache
    for _ in 0..2 {
        let r = support::query(&mut c, "cname.cdn.example.", RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::NXDomain);
        assert_eq!(
            support::ede_text(&r).as_deref(),
            Some("blocked by list badip (IP 192.0.2.2)")
        );
    }
    assert_eq!(up.seen.count("cname.cdn.example"), 1);
    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="block",list="badip",via="ip"}"#),
        Some(2.0)
    );
    // an address no list holds (2001:db8::1 is in no test range)
    assert_eq!(
        support::query(&mut c, "www.example.", RecordType::AAAA)
            .await
            .response_code,
        ResponseCode::NoError
    );
    // an allow list's range exempts the address
    setup.write_list("ok", "action = \"allow\"\nips = [\"192.0.2.0/30\"]\n");
    let dns = hushd.dns;
    let exempt = wait_until(Duration::from_secs(5), || {
        let rt = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| {
            rt.block_on(async {
                let mut c = udp_client(dns, None).await;
                rcode(&mut c, "cname.cdn.example.").await == ResponseCode::NoError
            })
        })
    });
    assert!(exempt, "an allowed address was still blocked");
}

/// `hushd explain ADDRESS` names where an answer address is and which lists hold it.
#[test]
fn explain_names_an_addresss_country_network_and_lists() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let setup = egress_setup(&up);
    let out = Command::new(support::HUSHD)
        .arg("--config")
        .arg(setup.config_path())
        .args(["explain", "192.0.2.53"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "192.0.2.53 (client 127.0.0.1, group default): block by list doh",
        "where: country CN, AS64500 (Example Net A)",
        "doh              block  192.0.2.53 (ip)",
        "cn               log    country CN, AS64500 (Example Net A) (country)",
        "net              log    country CN, AS64500 (Example Net A) (asn)",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}
