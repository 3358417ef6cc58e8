//! The query log against the real binary: queries from several loopback source addresses
//! (127.0.0.x as named devices) to a real upstream on loopback, and the lines hushd writes for
//! them, field for field; `only_matches`, `anonymize`, size rotation, SIGHUP after logrotate
//! moved the file, and `hushd evidence forget`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::{Value, json};
use support::{Setup, list, query, tcp_client, udp_client, upstream::Upstream, wait_until};

fn from(addr: &str) -> Option<SocketAddr> {
    Some(format!("{addr}:0").parse().unwrap())
}

const DEVICES: &str = r#"
[clients]
"anna-laptop" = "127.0.0.21"
"reception-tv" = "127.0.0.22"

[[groups]]
name = "iot"
clients = ["reception-tv"]
"#;

/// A setup with named devices, a block list, a list that blocks a CNAME target, an audit list,
/// and `[querylog]` with `querylog` added.
fn setup(up: &Upstream, querylog: &str) -> Setup {
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(DEVICES);
    setup.append_config(&format!("[querylog]\nenabled = true\n{querylog}\n"));
    setup.write_list("tracking", &list("block", &["tracker.example"]));
    setup.write_list("cloaked", &list("block", &["target.cloak.example"]));
    setup.write_list("samsung", &list("log", &["samsungads.example"]));
    setup
}

fn log_path(setup: &Setup) -> PathBuf {
    setup.dir.path().join("queries.jsonl")
}

/// The lines of the log file at `path`, each parsed.
fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (the writer writes at least once a second) until the file holds `n` lines.
fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    wait_until(Duration::from_secs(5), || lines(path).len() >= n);
    lines(path)
}

/// A line without its time fields, after checking their form: `ts` RFC 3339 with milliseconds
/// in UTC, `duration_ms` a number.
fn timeless(mut line: Value) -> Value {
    let ts = line["ts"].as_str().unwrap().to_string();
    let b = ts.as_bytes();
    assert!(
        ts.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && ts.ends_with('Z'),
        "ts {ts}"
    );
    let at = humantime::parse_rfc3339(&ts).unwrap();
    let age = std::time::SystemTime::now().duration_since(at).unwrap();
    assert!(age < Duration::from_secs(60), "ts {ts} is not now");
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0);
    let fields = line.as_object_mut().unwrap();
    fields.remove("ts");
    fields.remove("duration_ms");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_is_one_line_with_who_asked_what_and_how_it_ended() {
    let up = Upstream::start().await;
    let setup = setup(&up, "");
    let hushd = setup.start();
    let upstream = up.addr.to_string();

    let mut anna = udp_client(hushd.dns, from("127.0.0.21")).await;
    let mut tv = udp_client(hushd.dns, from("127.0.0.22")).await;
    let ask = |r: hickory_proto::op::DnsResponse| r.response_code;
    // forwarded, then the same from the cache (UDP, the hit path)
    assert_eq!(
        ask(query(&mut anna, "www.fwd.example.", RecordType::A).await),
        ResponseCode::NoError
    );
    assert_eq!(
        ask(query(&mut anna, "www.fwd.example.", RecordType::A).await),
        ResponseCode::NoError
    );
    // blocked by name, and by the CNAME its answer leads to
    assert_eq!(
        ask(query(&mut tv, "tracker.example.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(query(&mut tv, "cname.cloak.example.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    // audited, over TCP, from a device without a name
    let mut tcp = tcp_client(hushd.dns).await;
    assert_eq!(
        ask(query(&mut tcp, "x.samsungads.example.", RecordType::AAAA).await),
        ResponseCode::NoError
    );

    let got: Vec<Value> = wait_lines(&log_path(&setup), 5)
        .into_iter()
        .map(timeless)
        .collect();
    let want = [
        json!({"client": "127.0.0.21", "client_name": "anna-laptop", "group": "default",
            "protocol": "udp", "qname": "www.fwd.example", "qtype": "A", "outcome": "forwarded",
            "rcode": "NOERROR", "list": null, "action": null, "via": null,
            "answers": ["192.0.2.1"], "upstream": upstream, "cached": false}),
        json!({"client": "127.0.0.21", "client_name": "anna-laptop", "group": "default",
            "protocol": "udp", "qname": "www.fwd.example", "qtype": "A", "outcome": "cached",
            "rcode": "NOERROR", "list": null, "action": null, "via": null,
            "answers": ["192.0.2.1"], "upstream": null, "cached": true}),
        json!({"client": "127.0.0.22", "client_name": "reception-tv", "group": "iot",
            "protocol": "udp", "qname": "tracker.example", "qtype": "A", "outcome": "blocked",
            "rcode": "NXDOMAIN", "list": "tracking", "action": "block", "via": "name",
            "answers": [], "upstream": null, "cached": false}),
        json!({"client": "127.0.0.22", "client_name": "reception-tv", "group": "iot",
            "protocol": "udp", "qname": "cname.cloak.example", "qtype": "A", "outcome": "blocked",
            "rcode": "NXDOMAIN", "list": "cloaked", "action": "block", "via": "cname",
            "answers": [], "upstream": upstream, "cached": false}),
        json!({"client": "127.0.0.1", "client_name": null, "group": "default",
            "protocol": "tcp", "qname": "x.samsungads.example", "qtype": "AAAA",
            "outcome": "forwarded", "rcode": "NOERROR", "list": "samsung", "action": "log",
            "via": "name", "answers": ["2001:db8::1"], "upstream": upstream, "cached": false}),
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (got, want) in got.iter().zip(&want) {
        assert_eq!(got, want);
    }
    assert_eq!(hushd.metric("hushd_querylog_dropped_total"), Some(0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_matches_leaves_out_unlisted_names_and_truncate_hides_the_device() {
    let up = Upstream::start().await;
    let setup = setup(&up, "only_matches = true\nanonymize = \"truncate\"");
    let hushd = setup.start();
    let mut anna = udp_client(hushd.dns, from("127.0.0.21")).await;
    for name in [
        "www.fwd.example.",
        "a.samsungads.example.",
        "tracker.example.",
        "b.fwd.example.",
    ] {
        query(&mut anna, name, RecordType::A).await;
    }
    let path = log_path(&setup);
    wait_lines(&path, 2);
    // one more second: nothing else arrives
    std::thread::sleep(Duration::from_millis(1200));
    let got = lines(&path);
    let names: Vec<&str> = got.iter().map(|l| l["qname"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.samsungads.example", "tracker.example"]);
    for line in &got {
        assert_eq!(line["client"], "127.0.0.0", "{line}");
        assert_eq!(
            line["client_name"], "anna-laptop",
            "names are the admin's, kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_rotates_at_max_bytes_and_keeps_keep_files() {
    const MAX: u64 = 1 << 20;
    let up = Upstream::start().await;
    let setup = setup(&up, &format!("max_bytes = {MAX}\nkeep = 2"));
    let hushd = setup.start();
    let path = log_path(&setup);
    let rotated = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
    // a long name makes long lines (~450 bytes): about 2 300 a file
    let label = "a".repeat(60);
    let name = format!("{label}.{label}.{label}.rotate.example.");
    let mut client = udp_client(hushd.dns, None).await;
    let started = Instant::now();
    let mut sent = 0;
    // ~4.5 MB of lines: the third rotation overwrites `.2`. Bounded in time too.
    while sent < 9_000 && started.elapsed() < Duration::from_secs(60) {
        query(&mut client, &name, RecordType::A).await;
        sent += 1;
    }
    assert_eq!(sent, 9_000, "sent only {sent} in {:?}", started.elapsed());
    // the last lines are written within a second
    std::thread::sleep(Duration::from_millis(1500));
    let total = |files: &[PathBuf]| -> usize { files.iter().map(|f| lines(f).len()).sum() };
    let files = [path.clone(), rotated(1), rotated(2)];
    assert!(!rotated(3).exists(), "keep = 2");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let size = text.len() as u64;
        assert!(size <= MAX, "{} is {size} bytes", f.display());
        assert!(text.ends_with('\n'), "{} ends mid-line", f.display());
        if f != &path {
            // rotated when the next write would not fit: nearly full
            assert!(
                size > MAX - 70 * 1024,
                "{} is only {size} bytes",
                f.display()
            );
        }
    }
    // every line in every file is whole (`lines` parses each), and none was dropped
    let kept = total(&files);
    assert!(
        kept > 3_000 && kept < sent,
        "{kept} lines kept of {sent}: the oldest are gone"
    );
    assert_eq!(hushd.metric("hushd_querylog_dropped_total"), Some(0.0));
}

/// A path that cannot be written: `hushd check` says so by key; running, DNS goes on, the lost
/// lines are counted, and the log is written once the path works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_path_is_reported_by_check_and_counted_while_dns_goes_on() {
    let up = Upstream::start().await;
    // a path whose folder is a regular file: root cannot write there either
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("logs").join("queries.jsonl");
    std::fs::write(folder.path().join("logs"), b"not a folder").unwrap();
    let setup = setup(&up, &format!("path = \"{}\"", path.display()));
    let (ok, text) = support::hushd_cli(&setup.config_path(), &["check"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!(
            "[querylog] path {}: {} is not a folder",
            path.display(),
            folder.path().join("logs").display()
        )),
        "{text}"
    );

    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    for i in 0..3 {
        let name = format!("lost{i}.example.");
        let answer = query(&mut client, &name, RecordType::A).await;
        assert_eq!(answer.response_code, ResponseCode::NoError);
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            hushd.metric("hushd_querylog_dropped_total").unwrap_or(0.0) >= 3.0
        }),
        "{}",
        hushd.log()
    );
    assert!(hushd.log().contains("cannot"), "{}", hushd.log());
    // the admin fixes the folder: the next lines are written
    std::fs::remove_file(folder.path().join("logs")).unwrap();
    std::fs::create_dir(folder.path().join("logs")).unwrap();
    query(&mut client, "kept.example.", RecordType::A).await;
    let now = wait_lines(&path, 1);
    assert_eq!(now[0]["qname"], "kept.example", "{now:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reopens_the_log_after_logrotate_moved_it() {
    let up = Upstream::start().await;
    let setup = setup(&up, "");
    let hushd = setup.start();
    let path = log_path(&setup);
    let mut client = udp_client(hushd.dns, None).await;
    query(&mut client, "before.example.", RecordType::A).await;
    wait_lines(&path, 1);
    // logrotate's `create` mode: rename the file, create an empty one, then signal
    let moved = setup.dir.path().join("queries.jsonl-20261203");
    std::fs::rename(&path, &moved).unwrap();
    std::fs::write(&path, "").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hushd.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    assert!(
        hushd.wait_log("query log reopened", Duration::from_secs(3)),
        "{}",
        hushd.log()
    );
    query(&mut client, "after.example.", RecordType::A).await;
    let now = wait_lines(&path, 1);
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["qname"], "after.example");
    let old = lines(&moved);
    assert_eq!(old.len(), 1);
    assert_eq!(old[0]["qname"], "before.example");
}

/// `hushd evidence forget` with `args`, and what it printed.
fn forget(setup: &Setup, args: &[&str]) -> (bool, String) {
    support::hushd_cli(
        &setup.config_path(),
        &[&["evidence", "forget"], args].concat(),
    )
}

/// The evidence store's schema (docs/privacy.md, src/evidence), made here as an older hushd or
/// the store's writer would have left it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS evidence (
    day TEXT NOT NULL, client TEXT NOT NULL, client_name TEXT NOT NULL,
    client_group TEXT NOT NULL, list TEXT NOT NULL, name TEXT NOT NULL, action TEXT NOT NULL,
    via TEXT NOT NULL, count INTEGER NOT NULL, first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL, qtypes TEXT NOT NULL,
    PRIMARY KEY (day, client, list, name, action, via)
);
CREATE INDEX IF NOT EXISTS evidence_by_list ON evidence (list, day);
PRAGMA user_version = 1;
PRAGMA journal_mode = WAL;
";

fn store_with(path: &Path, rows: &[(&str, &str, &str)]) {
    let db = rusqlite::Connection::open(path).unwrap();
    db.execute_batch(SCHEMA).unwrap();
    for (i, (client, name, list)) in rows.iter().enumerate() {
        db.execute(
            "INSERT INTO evidence VALUES ('2026-12-03', ?1, ?2, 'default', ?3, ?4, 'log', 'name', 3,
             '2026-12-03T08:00:00.000Z', '2026-12-03T09:00:00.000Z', 'A')",
            (client, name, list, format!("n{i}.example")),
        )
        .unwrap();
    }
}

fn store_clients(path: &Path) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(path).unwrap();
    let mut q = db
        .prepare("SELECT client, client_name FROM evidence ORDER BY client, name")
        .unwrap();
    q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_deletes_a_clients_rows_and_lines_while_hushd_runs() {
    let up = Upstream::start().await;
    let setup = setup(&up, "");
    let db = setup.dir.path().join("evidence.db");
    store_with(
        &db,
        &[
            ("127.0.0.21", "anna-laptop", "samsung"),
            ("127.0.0.21", "anna-laptop", "xiaomi"),
            // the same laptop at an old address, and its address before it had a name
            ("127.0.0.99", "anna-laptop", "samsung"),
            ("127.0.0.21", "", "tiktok"),
            ("127.0.0.22", "reception-tv", "samsung"),
            ("127.0.0.30", "", "samsung"),
        ],
    );
    let hushd = setup.start();
    let path = log_path(&setup);
    let mut anna = udp_client(hushd.dns, from("127.0.0.21")).await;
    let mut tv = udp_client(hushd.dns, from("127.0.0.22")).await;
    for name in ["a.example.", "b.example."] {
        query(&mut anna, name, RecordType::A).await;
        query(&mut tv, name, RecordType::A).await;
    }
    let live = wait_lines(&path, 4);
    // a rotated copy holding both, and a compressed one hushd cannot rewrite
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(format!("{}.1", path.display()), &text).unwrap();
    std::fs::write(format!("{}.2.gz", path.display()), b"\x1f\x8b\x08\x00rest").unwrap();
    assert_eq!(live.len(), 4);

    let (ok, out) = forget(&setup, &["--client", "anna-laptop"]);
    assert!(ok, "{out}");
    let dir = setup.dir.path().display();
    for want in [
        format!(
            "evidence store {dir}/evidence.db: 4 rows of \"anna-laptop\" (127.0.0.21) deleted\n"
        ),
        format!("query log {dir}/queries.jsonl: 2 lines of \"anna-laptop\" (127.0.0.21) deleted\n"),
        format!(
            "query log {dir}/queries.jsonl.1: 2 lines of \"anna-laptop\" (127.0.0.21) deleted\n"
        ),
        format!("left as it is (compressed): {dir}/queries.jsonl.2.gz"),
    ] {
        assert!(out.contains(&want), "{want} in\n{out}");
    }
    assert_eq!(
        store_clients(&db),
        [
            ("127.0.0.22".to_string(), "reception-tv".to_string()),
            ("127.0.0.30".to_string(), String::new())
        ]
    );
    for file in [path.clone(), PathBuf::from(format!("{}.1", path.display()))] {
        let clients: Vec<Value> = lines(&file).iter().map(|l| l["client"].clone()).collect();
        assert_eq!(
            clients,
            [json!("127.0.0.22"), json!("127.0.0.22")],
            "{}",
            file.display()
        );
    }
    // hushd goes on writing at the end of the rewritten file, whole lines
    query(&mut anna, "c.example.", RecordType::A).await;
    let after = wait_lines(&path, 3);
    assert_eq!(after.len(), 3);
    assert_eq!(after[2]["qname"], "c.example");
    assert_eq!(hushd.metric("hushd_querylog_dropped_total"), Some(0.0));

    // a network takes every device in it; an unknown name is an error that says what it takes
    let (ok, out) = forget(&setup, &["--client", "127.0.0.0/24"]);
    assert!(ok, "{out}");
    assert!(out.contains("2 rows of 127.0.0.0/24 deleted"), "{out}");
    assert!(store_clients(&db).is_empty());
    assert!(lines(&path).is_empty());
    let (ok, out) = forget(&setup, &["--client", "nobody"]);
    assert!(!ok);
    assert!(
        out.contains("--client nobody: not a [clients] name"),
        "{out}"
    );
}
