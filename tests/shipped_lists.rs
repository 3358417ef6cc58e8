//! The lists hushd ships in `blocklists/`: each loads with the action a fresh install must have
//! (xiaomi blocks; every other vendor and the public encrypted-DNS resolvers of `doh.toml` only
//! log, so no device breaks before an admin has looked at the evidence), and the commented allow
//! entries in `allow.toml` are valid names that belong to the vendor list they are filed under.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{collections::BTreeMap, path::Path, time::Duration};

use hickory_proto::op::ResponseCode;
use support::{Setup, rcode, udp_client, upstream::Upstream};

/// Every shipped list (the vendors', and the public encrypted-DNS resolvers') and the action it
/// ships with.
const SHIPPED: [(&str, &str); 12] = [
    ("xiaomi", "block"),
    ("samsung", "log"),
    ("huawei", "log"),
    ("apple", "log"),
    ("amazon", "log"),
    ("windows", "log"),
    ("tiktok", "log"),
    ("lgwebos", "log"),
    ("roku", "log"),
    ("oppo-realme", "log"),
    ("vivo", "log"),
    ("doh", "log"),
];

/// Fewer names than this means a list was truncated or emptied (the smallest, roku, has 74).
const MIN_NAMES: usize = 50;

struct Loaded {
    action: String,
    names: usize,
}

/// `hushd check` on `config`: the lists it loaded, by name. Panics if the check fails.
fn check(config: &Path) -> BTreeMap<String, Loaded> {
    let out = std::process::Command::new(support::HUSHD)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_check(&String::from_utf8_lossy(&out.stdout))
}

/// The `  list NAME ACTION N names` lines of `hushd check`'s report.
fn parse_check(stdout: &str) -> BTreeMap<String, Loaded> {
    stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f[..] {
                ["list", name, action, names, "names"] => Some((
                    name.to_string(),
                    Loaded {
                        action: action.to_string(),
                        names: names.parse().ok()?,
                    },
                )),
                _ => None,
            }
        })
        .collect()
}

/// How the loaded lists differ from what hushd ships: one line per missing list, wrong action
/// or too-small list.
fn shipped_list_problems(loaded: &BTreeMap<String, Loaded>) -> Vec<String> {
    let mut problems = Vec::new();
    for (vendor, action) in SHIPPED {
        match loaded.get(vendor) {
            None => problems.push(format!("{vendor}: not loaded")),
            Some(l) if l.action != action => {
                problems.push(format!("{vendor}: action {} instead of {action}", l.action));
            }
            Some(l) if l.names < MIN_NAMES => {
                problems.push(format!("{vendor}: only {} names", l.names));
            }
            Some(_) => {}
        }
    }
    problems
}

/// A config in `dir` that loads the lists in `dir/blocklists`.
fn config_for(dir: &Path) -> std::path::PathBuf {
    let config = dir.join("hushd.toml");
    std::fs::write(
        &config,
        "[upstream]\nservers = [\"127.0.0.1:53\"]\n\n[blocklists]\ndir = \"blocklists\"\n",
    )
    .unwrap();
    config
}

/// A copy of the shipped `blocklists/` folder in `dir`.
fn copy_shipped_lists(dir: &Path) {
    let to = dir.join("blocklists");
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(support::project_root().join("blocklists")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

fn shipped_list_text(vendor: &str) -> String {
    std::fs::read_to_string(
        support::project_root()
            .join("blocklists")
            .join(format!("{vendor}.toml")),
    )
    .unwrap()
}

fn domains(list_text: &str) -> Vec<String> {
    let value: toml::Table = toml::from_str(list_text).unwrap();
    value["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_vendor_list_ships_with_its_action_and_its_names() {
    let loaded = check(&support::project_root().join("config/hushd.toml"));
    assert_eq!(shipped_list_problems(&loaded), Vec::<String>::new());
    // the exceptions ship commented out: a fresh install exempts nothing
    let allow = loaded.get("allow").expect("allow.toml loaded");
    assert_eq!((allow.action.as_str(), allow.names), ("allow", 0));
}

/// The check above must notice a vendor list that is gone, switched to another action, or
/// emptied: break a copy of the shipped folder in each way and look.
#[test]
fn a_missing_mis_set_or_emptied_vendor_list_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    copy_shipped_lists(dir.path());
    let lists = dir.path().join("blocklists");
    std::fs::remove_file(lists.join("vivo.toml")).unwrap();
    let samsung = shipped_list_text("samsung").replace("action = \"log\"", "action = \"block\"");
    std::fs::write(lists.join("samsung.toml"), samsung).unwrap();
    let xiaomi = shipped_list_text("xiaomi").replace("action = \"block\"", "action = \"log\"");
    std::fs::write(lists.join("xiaomi.toml"), xiaomi).unwrap();
    std::fs::write(
        lists.join("roku.toml"),
        support::list("log", &["ads.roku.com", "logs.roku.com"]),
    )
    .unwrap();

    let problems = shipped_list_problems(&check(&config_for(dir.path())));
    assert_eq!(
        problems,
        [
            "xiaomi: action log instead of block",
            "samsung: action block instead of log",
            "roku: only 2 names",
            "vivo: not loaded",
        ],
    );
}

/// On a running hushd with the shipped lists, a name from each vendor list is answered the
/// shipped way: xiaomi's is blocked and never reaches upstream; every other vendor's is
/// forwarded (the device keeps working) and logged under its list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_install_blocks_xiaomi_and_only_logs_the_other_vendors() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    std::fs::remove_dir(setup.dir.path().join("blocklists")).unwrap();
    copy_shipped_lists(setup.dir.path());
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;

    for (vendor, action) in SHIPPED {
        let name = domains(&shipped_list_text(vendor))
            .into_iter()
            .find(|n| !n.starts_with("nx.")) // the fixture answers nx.* with NXDOMAIN
            .unwrap();
        let code = rcode(&mut udp, &format!("{name}.")).await;
        let counted = format!(
            "hushd_list_matches_total{{action=\"{action}\",list=\"{vendor}\",via=\"name\"}}"
        );
        assert_eq!(hushd.metric(&counted), Some(1.0), "{counted}");
        if action == "block" {
            assert_eq!((code, up.seen.count(&name)), (ResponseCode::NXDomain, 0));
        } else {
            assert_eq!((code, up.seen.count(&name)), (ResponseCode::NoError, 1));
            let line = format!(
                "qname={name}. qtype=A list={vendor} via=\"name\" matched=\"-\" action=\"log\""
            );
            assert!(
                hushd.wait_log(&line, Duration::from_secs(5)),
                "no `{line}` in\n{}",
                hushd.log()
            );
        }
    }
}

/// `allow.toml` files its commented entries under `# --- VENDOR (...) ---` headers. Each entry
/// must be a name that list holds, is under, or is above: otherwise uncommenting it would
/// change nothing for that vendor, or the entry is filed under the wrong one.
#[test]
fn commented_allow_entries_belong_to_their_vendor_list() {
    let allow =
        std::fs::read_to_string(support::project_root().join("blocklists/allow.toml")).unwrap();
    let mut vendor = None;
    let mut filed = Vec::new();
    for line in allow.lines() {
        if let Some(rest) = line.trim_start().strip_prefix("# --- ") {
            vendor = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(name) = line
            .trim_start()
            .strip_prefix("# \"")
            .and_then(|r| r.strip_suffix("\","))
        {
            let vendor = vendor.clone().expect("an entry before any vendor header");
            filed.push((vendor, name.to_string()));
        }
    }
    assert!(filed.len() >= 20, "only {} commented entries", filed.len());

    let lists: BTreeMap<&str, Vec<String>> = SHIPPED
        .iter()
        .map(|(v, _)| (*v, domains(&shipped_list_text(v))))
        .collect();
    let covers = |outer: &str, inner: &str| inner == outer || inner.ends_with(&format!(".{outer}"));
    for (vendor, name) in &filed {
        let list = lists
            .get(vendor.as_str())
            .unwrap_or_else(|| panic!("allow.toml header names {vendor:?}, not a shipped list"));
        assert!(
            list.iter().any(|l| covers(l, name) || covers(name, l)),
            "{name} is filed under {vendor} but matches nothing in {vendor}.toml"
        );
    }

    // uncommented, every entry is a name hushd accepts
    let dir = tempfile::tempdir().unwrap();
    copy_shipped_lists(dir.path());
    let uncommented: Vec<&str> = filed.iter().map(|(_, n)| n.as_str()).collect();
    std::fs::write(
        dir.path().join("blocklists/allow.toml"),
        support::list("allow", &uncommented),
    )
    .unwrap();
    let loaded = check(&config_for(dir.path()));
    assert_eq!(loaded["allow"].names, filed.len());
}

/// `doh.toml` names the public resolvers devices are most often set to, leaves to hushd's own
/// answers the names the `[server]` bypass toggles govern (so turning a toggle off is never
/// undone by this list), and carries the resolvers' addresses as its `ips`.
#[test]
fn the_doh_list_names_the_big_resolvers_and_their_addresses() {
    let text = shipped_list_text("doh");
    let names = domains(&text);
    for resolver in [
        "dns.google",
        "cloudflare-dns.com",
        "one.one.one.one",
        "dns.quad9.net",
        "doh.opendns.com",
        "dns.nextdns.io",
        "dns.adguard-dns.com",
    ] {
        assert!(names.iter().any(|n| n == resolver), "{resolver} missing");
    }
    let covers = |listed: &str, name: &str| name == listed || name.ends_with(&format!(".{listed}"));
    for probe in [
        "use-application-dns.net",
        "mask.icloud.com",
        "mask-h2.icloud.com",
        "_dns.resolver.arpa",
    ] {
        assert!(
            !names.iter().any(|n| covers(n, probe)),
            "{probe} is answered by a [server] toggle, not by this list"
        );
    }
    // GPL-3.0 entries stay traceable: the source and its license head their group
    assert!(text.contains("# Source B: dibdot/DoH-IP-blocklists"));
    assert!(text.contains("#   License: GPL-3.0"));

    // the resolvers' addresses, as an `ips` key hushd matches answers against
    let value: toml::Table = toml::from_str(&text).unwrap();
    let ips = value["ips"].as_array().expect("an ips array");
    assert!(ips.len() >= 40, "{} addresses", ips.len());
    for ip in ips {
        let ip = ip.as_str().unwrap();
        assert!(ip.parse::<std::net::IpAddr>().is_ok(), "{ip}");
    }
    for big in [
        "8.8.8.8",
        "1.1.1.1",
        "9.9.9.9",
        "2620:fe::fe",
        "94.140.14.14",
    ] {
        assert!(ips.iter().any(|i| i.as_str() == Some(big)), "{big} missing");
    }
    let dir = tempfile::tempdir().unwrap();
    copy_shipped_lists(dir.path());
    let loaded = check(&config_for(dir.path()));
    assert!(loaded.contains_key("doh"));
}
