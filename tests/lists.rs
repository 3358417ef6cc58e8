//! List formats end to end, against the real `hushd` binary: files in each format load, mean
//! what their authors meant (hosts entries exact, `||` rules with subdomains, `$` rules
//! skipped), bad lines are skipped and counted, and `hushd check` / the metrics say so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;

use hickory_proto::op::ResponseCode;
use support::{Setup, rcode, udp_client, upstream::Upstream};

/// Sample files, each in the shape of a real list (see the comment on each).
fn write_samples(dir: &Path) {
    // StevenBlack/hosts shape: boilerplate, then `0.0.0.0 name`
    std::fs::write(
        dir.join("hosts.txt"),
        "# Title: StevenBlack/hosts\n127.0.0.1 localhost\n::1 localhost ip6-localhost\n0.0.0.0 0.0.0.0\n\n0.0.0.0 s3.amazonaws.com\n0.0.0.0 telemetry.example # comment\n0.0.0.0 bad!name\n",
    )
    .unwrap();
    // AdGuard DNS filter shape, with the lines a DNS filter must not widen
    std::fs::write(
        dir.join("adguard.txt"),
        "[Adblock Plus 2.0]\n! Title: AdGuard DNS filter\n||ads.example^\n@@||ok.ads.example^\n||client-only.example^$client=127.0.0.1\nexample.org##.banner\n||cdn.example/ads.js\n/^track[0-9]+\\./\n",
    )
    .unwrap();
}

fn lists_setup(up: &Upstream) -> Setup {
    let setup = Setup::new(&[up.addr], "");
    write_samples(&setup.dir.path().join("blocklists"));
    setup.write_list(
        "hosts",
        "action = \"block\"\ndomains_file = \"hosts.txt\"\nformat = \"hosts\"\n",
    );
    setup.write_list(
        "adguard",
        "action = \"block\"\ndomains_file = \"adguard.txt\"\n",
    );
    setup.write_list(
        "regex",
        "action = \"block\"\npatterns = ['^ads?[0-9]*\\.']\n",
    );
    setup
}

fn check(setup: &Setup) -> (bool, String) {
    support::hushd_cli(&setup.config_path(), &["check"])
}

#[tokio::test]
async fn each_format_blocks_what_its_author_meant() {
    let up = Upstream::start().await;
    let setup = lists_setup(&up);
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for (name, want) in [
        // hosts entries are exact names: the bucket under s3 is not taken along
        ("s3.amazonaws.com.", ResponseCode::NXDomain),
        ("bucket.s3.amazonaws.com.", ResponseCode::NoError),
        ("telemetry.example.", ResponseCode::NXDomain),
        // `||name^` covers subdomains; `@@` excepts inside that list
        ("x.ads.example.", ResponseCode::NXDomain),
        ("ok.ads.example.", ResponseCode::NoError),
        // a `$client` rule is skipped, never widened into a block for everyone
        ("client-only.example.", ResponseCode::NoError),
        // patterns, inline and from an adblock `/regex/` line
        ("ad7.late.example.", ResponseCode::NXDomain),
        ("track42.example.", ResponseCode::NXDomain),
        ("localhost.", ResponseCode::NoError),
    ] {
        assert_eq!(rcode(&mut udp, name).await, want, "{name}");
    }
    let skipped = |reason: &str| {
        hushd.metric(&format!(
            "hushd_list_entries_skipped_total{{list=\"adguard\",reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(skipped("modifier"), Some(1.0));
    assert_eq!(skipped("cosmetic"), Some(1.0));
    assert_eq!(skipped("url_path"), Some(1.0));
    assert_eq!(
        hushd.metric("hushd_list_entries_skipped_total{list=\"hosts\",reason=\"invalid_name\"}"),
        Some(1.0)
    );
}

/// A reload that leaves the patterns alone keeps their automaton (the new policy shares the old
/// one's); a reload that changes them applies the new patterns and drops the old ones.
#[tokio::test]
async fn a_name_edit_keeps_the_patterns_and_a_pattern_edit_replaces_them() {
    use ResponseCode::{NXDomain, NoError};
    let within = std::time::Duration::from_secs(10);
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let ads = "action = \"block\"\npatterns = ['^ads?[0-9]*\\.']\n";
    let track = "action = \"block\"\npatterns = ['^track[0-9]+\\.']\n";
    setup.write_list("regex", ads);
    setup.write_list("names", &support::list("block", &["one.example"]));
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    assert_eq!(rcode(&mut udp, "ad7.late.example.").await, NXDomain);

    setup.write_list(
        "names",
        &support::list("block", &["one.example", "two.example"]),
    );
    let edited = support::wait_for_rcode(&mut udp, "two.example.", NXDomain, within).await;
    assert!(edited.is_some(), "the name edit was never applied");
    assert_eq!(rcode(&mut udp, "ad7.late.example.").await, NXDomain);
    assert_eq!(rcode(&mut udp, "track4.late.example.").await, NoError);

    setup.write_list("regex", track);
    let edited = support::wait_for_rcode(&mut udp, "track4.late.example.", NXDomain, within).await;
    assert!(edited.is_some(), "the new pattern was never applied");
    assert_eq!(rcode(&mut udp, "ad7.late.example.").await, NoError);

    // back to the first patterns, whose automaton went with the policy that held it
    setup.write_list("regex", ads);
    let edited = support::wait_for_rcode(&mut udp, "ad7.late.example.", NXDomain, within).await;
    assert!(
        edited.is_some(),
        "the first pattern was never applied again"
    );
    assert_eq!(rcode(&mut udp, "track4.late.example.").await, NoError);
    assert_eq!(rcode(&mut udp, "two.example.").await, NXDomain);
}

#[test]
fn check_prints_the_format_entries_and_skipped_lines_of_each_file() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let setup = lists_setup(&up);
    let (ok, out) = check(&setup);
    assert!(ok, "{out}");
    for want in [
        "    file: format adblock (auto), 2 entries, 1 patterns, 3 skipped (modifier 1, cosmetic 1, url_path 1)\n",
        "      line 5: modifier: ||client-only.example^$client=127.0.0.1\n",
        "      line 6: cosmetic: example.org##.banner\n",
        "    file: format hosts, 2 entries, 0 patterns, 1 skipped (invalid_name 1)\n",
        "      line 8: invalid_name: 0.0.0.0 bad!name\n",
        "    1 patterns\n",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
}

#[test]
fn a_page_instead_of_a_list_is_an_error_and_a_bad_pattern_is_located() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let setup = lists_setup(&up);
    std::fs::write(
        setup.dir.path().join("blocklists/hosts.txt"),
        "<!DOCTYPE html>\n<html><body>Sign in to the Wi-Fi</body></html>\n",
    )
    .unwrap();
    let (ok, out) = check(&setup);
    assert!(!ok, "{out}");
    assert!(out.contains("hosts.txt: an HTML or XML page"), "{out}");
    write_samples(&setup.dir.path().join("blocklists"));
    setup.write_list(
        "regex",
        "action = \"block\"\npatterns = [\n  '(unclosed',\n]\n",
    );
    let (ok, out) = check(&setup);
    assert!(!ok, "{out}");
    assert!(
        out.contains("regex.toml:3:3: pattern \"(unclosed\""),
        "{out}"
    );
}

fn explain_cli(setup: &Setup, args: &[&str]) -> (bool, String) {
    support::hushd_cli(&setup.config_path(), &[&["explain"], args].concat())
}

/// A setup where one name is matched by several lists of different ranks.
fn contested_setup(up: &Upstream) -> Setup {
    let setup = lists_setup(up);
    setup.write_list(
        "audit",
        "action = \"log\"\ndomains = [\n  \"ads.example\",\n  \"late.example\",\n]\n",
    );
    setup.write_list(
        "mine",
        "action = \"allow\"\nmatch = \"exact\"\ndomains = [\"keep.ads.example\"]\n",
    );
    setup
}

#[test]
fn explain_names_the_decision_the_winner_every_match_and_why() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(Upstream::start());
    let setup = contested_setup(&up);
    let (ok, out) = explain_cli(&setup, &["x.ads.example"]);
    assert!(ok, "{out}");
    assert!(
        out.starts_with("x.ads.example (client 127.0.0.1, group default): block by list adguard\n"),
        "{out}"
    );
    assert!(out.contains("why: block outranks audit (log)"), "{out}");
    assert!(
        out.contains("adguard.txt:3\n") && out.contains("audit.toml:3\n"),
        "{out}"
    );

    let (ok, out) = explain_cli(&setup, &["keep.ads.example", "--json"]);
    assert!(ok, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["decision"], "allow", "{out}");
    assert_eq!(json["winner"], "mine", "{out}");
    let lists: Vec<&str> = json["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["list"].as_str().unwrap())
        .collect();
    assert_eq!(lists, ["mine", "adguard", "audit"], "{out}");
    assert_eq!(json["matches"][0]["kind"], "exact");
    assert_eq!(json["matches"][1]["line"], 3);

    // an exception inside the list, and a pattern
    let (_, out) = explain_cli(&setup, &["ok.ads.example"]);
    assert!(out.contains(": log by list audit"), "{out}");
    assert!(out.contains("cancelled by its own @@ exception"), "{out}");
    let (_, out) = explain_cli(&setup, &["track7.example", "--client", "::1"]);
    assert!(
        out.contains("(client ::1, group default): block by list adguard"),
        "{out}"
    );
    assert!(out.contains("/^track[0-9]+\\./ (pattern)"), "{out}");
    let (ok, out) = explain_cli(&setup, &["nothing.example"]);
    assert!(ok && out.contains(": forward\n"), "{out}");
}

#[tokio::test]
async fn get_explain_answers_from_the_running_policy_as_the_dns_answer_does() {
    let up = Upstream::start().await;
    let setup = contested_setup(&up);
    let hushd = setup.start();
    let mut udp = udp_client(hushd.dns, None).await;
    for (name, decision, code) in [
        ("x.ads.example", "block", ResponseCode::NXDomain),
        ("keep.ads.example", "allow", ResponseCode::NoError),
        ("late.example", "log", ResponseCode::NoError),
        ("ad1.late.example", "block", ResponseCode::NXDomain),
        ("free.example", "forward", ResponseCode::NoError),
    ] {
        let reply = support::http_get(
            hushd.metrics,
            &format!("/explain?name={name}&client=127.0.0.1"),
        );
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}: {reply}"));
        assert_eq!(json["decision"], decision, "{name}: {body}");
        assert_eq!(rcode(&mut udp, &format!("{name}.")).await, code, "{name}");
    }
    let reply = support::http_get(hushd.metrics, "/explain?name=a..b");
    assert!(
        reply.starts_with("HTTP/1.0 400") || reply.starts_with("HTTP/1.1 400"),
        "{reply}"
    );
}
