//! The evidence store against the real binary: queries from several loopback source addresses
//! (127.0.0.x as devices, some named, some in a group) to a real upstream on loopback, then the
//! database read with SQLite as an admin or `hushd report` would; a `kill -9` under load; an
//! unwritable path; a corrupt file; anonymized addresses; the store switched off.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod support;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime},
};

use hickory_net::client::ClientHandle;
use hickory_proto::{op::ResponseCode, rr::RecordType};
use hushd::evidence::batch::{day_of, timestamp};
use rusqlite::{Connection, OpenFlags};
use support::{Hushd, Setup, list, query, udp_client, upstream::Upstream, wait_until};

fn from(addr: &str) -> Option<SocketAddr> {
    Some(format!("{addr}:0").parse().unwrap())
}

const DEVICES: &str = r#"
[clients]
"tv" = "127.0.0.90"
"laptop" = "127.0.0.21"

[[groups]]
name = "iot"
clients = ["127.0.0.32/28", "tv"]
lists = ["vendor", "cdn"]
"#;

/// A setup with the devices above, four lists, and `evidence` as the `[evidence]` section.
fn setup(up: &Upstream, evidence: &str) -> Setup {
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(DEVICES);
    setup.append_config(&format!("[evidence]\n{evidence}"));
    setup.write_list("vendor", &list("log", &["vendor.example"]));
    setup.write_list("blocker", &list("block", &["ads.example"]));
    setup.write_list("exceptions", &list("allow", &["ok.ads.example"]));
    // the fixture answers cname.<zone> with a CNAME to target.<zone>: a match `via` cname
    setup.write_list("cdn", &list("log", &["target.cnametest.example"]));
    setup
}

/// A row as the test compares it: client, client_name, client_group, list, name, action, via,
/// count, qtypes.
type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
);

fn open(path: &Path) -> Connection {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// Every row, in key order; empty while the database or its table does not exist yet.
fn rows(path: &Path) -> Vec<Row> {
    if !path.exists() {
        return Vec::new();
    }
    let db = open(path);
    let Ok(mut stmt) = db.prepare(
        "SELECT client, client_name, client_group, list, name, action, via, count, qtypes
         FROM evidence ORDER BY client, list, name, action, via",
    ) else {
        return Vec::new();
    };
    stmt.query_map([], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn row(
    client: &str,
    name_group: (&str, &str),
    list: &str,
    qname: &str,
    action_via: (&str, &str),
    count: i64,
    qtypes: &str,
) -> Row {
    (
        client.into(),
        name_group.0.into(),
        name_group.1.into(),
        list.into(),
        qname.into(),
        action_via.0.into(),
        action_via.1.into(),
        count,
        qtypes.into(),
    )
}

/// Sums of `count` of the rows, waiting until they reach `total` (the writer flushes every
/// `flush_secs`).
fn wait_for_total(path: &Path, total: i64, timeout: Duration) -> bool {
    wait_until(timeout, || {
        rows(path).iter().map(|r| r.7).sum::<i64>() >= total
    })
}

async fn ask(dns: SocketAddr, src: &str, name: &str, qtype: RecordType) -> ResponseCode {
    let mut c = udp_client(dns, from(src)).await;
    query(&mut c, name, qtype).await.response_code
}

/// The names of the threads of process `pid`.
fn threads(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect()
}

fn check(config: &Path) -> (bool, String) {
    support::hushd_cli(config, &["check"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_match_is_one_row_per_device_list_name_action_and_via() {
    let up = Upstream::start().await;
    let setup = setup(&up, "flush_secs = 1\n");
    let db = setup.dir.path().join("evidence.db");
    let hushd = setup.start();
    assert!(threads(hushd.pid()).contains(&"hushd-evidence".to_string()));
    let day_before = day_of(SystemTime::now());
    let started = timestamp(SystemTime::now());
    let dns = hushd.dns;
    use RecordType::{A, AAAA, HTTPS};

    // 127.0.0.1: default group, no name: log, block and allow matches
    assert_eq!(
        ask(dns, "127.0.0.1", "x.vendor.example.", A).await,
        ResponseCode::NoError
    );
    assert_eq!(
        ask(dns, "127.0.0.1", "x.vendor.example.", A).await,
        ResponseCode::NoError
    );
    assert_eq!(
        ask(dns, "127.0.0.1", "ads.example.", A).await,
        ResponseCode::NXDomain
    );
    assert_eq!(
        ask(dns, "127.0.0.1", "ok.ads.example.", A).await,
        ResponseCode::NoError
    );
    // a name no list holds leaves no row
    assert_eq!(
        ask(dns, "127.0.0.1", "plain.example.", A).await,
        ResponseCode::NoError
    );
    // the laptop: named, default group; the CNAME match from upstream's answer
    assert_eq!(
        ask(dns, "127.0.0.21", "x.vendor.example.", AAAA).await,
        ResponseCode::NoError
    );
    assert_eq!(
        ask(dns, "127.0.0.21", "cname.cnametest.example.", A).await,
        ResponseCode::NoError
    );
    // an iot device without a name: three matches, two query types, in order
    let first = timestamp(SystemTime::now());
    assert_eq!(
        ask(dns, "127.0.0.33", "x.vendor.example.", A).await,
        ResponseCode::NoError
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        ask(dns, "127.0.0.33", "x.vendor.example.", AAAA).await,
        ResponseCode::NoError
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        ask(dns, "127.0.0.33", "x.vendor.example.", A).await,
        ResponseCode::NoError
    );
    let last = timestamp(SystemTime::now());
    // blocker does not apply to iot: no match, no row
    assert_eq!(
        ask(dns, "127.0.0.33", "ads.example.", A).await,
        ResponseCode::NoError
    );
    // the tv: named, in iot by its name; the CNAME match now from the cache
    assert_eq!(
        ask(dns, "127.0.0.90", "x.vendor.example.", HTTPS).await,
        ResponseCode::NoError
    );
    assert_eq!(
        ask(dns, "127.0.0.90", "cname.cnametest.example.", A).await,
        ResponseCode::NoError
    );
    let ended = timestamp(SystemTime::now());

    assert!(
        wait_for_total(&db, 11, Duration::from_secs(5)),
        "{:?}",
        rows(&db)
    );
    let (none, laptop, tv) = (("", "default"), ("laptop", "default"), ("tv", "iot"));
    let (log_name, log_cname) = (("log", "name"), ("log", "cname"));
    assert_eq!(
        rows(&db),
        [
            row(
                "127.0.0.1",
                none,
                "blocker",
                "ads.example",
                ("block", "name"),
                1,
                "A"
            ),
            row(
                "127.0.0.1",
                none,
                "exceptions",
                "ok.ads.example",
                ("allow", "name"),
                1,
                "A"
            ),
            row(
                "127.0.0.1",
                none,
                "vendor",
                "x.vendor.example",
                log_name,
                2,
                "A"
            ),
            row(
                "127.0.0.21",
                laptop,
                "cdn",
                "cname.cnametest.example",
                log_cname,
                1,
                "A"
            ),
            row(
                "127.0.0.21",
                laptop,
                "vendor",
                "x.vendor.example",
                log_name,
                1,
                "AAAA"
            ),
            row(
                "127.0.0.33",
                ("", "iot"),
                "vendor",
                "x.vendor.example",
                log_name,
                3,
                "A,AAAA"
            ),
            row(
                "127.0.0.90",
                tv,
                "cdn",
                "cname.cnametest.example",
                log_cname,
                1,
                "A"
            ),
            row(
                "127.0.0.90",
                tv,
                "vendor",
                "x.vendor.example",
                log_name,
                1,
                "HTTPS"
            ),
        ]
    );
    // days and times: UTC, today; first and last seen bracket the device's queries
    let conn = open(&db);
    let (day, first_seen, last_seen): (String, String, String) = conn
        .query_row(
            "SELECT day, first_seen, last_seen FROM evidence WHERE client = '127.0.0.33'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert!(
        day == day_before || day == day_of(SystemTime::now()),
        "{day}"
    );
    assert!(first <= first_seen && first_seen < last_seen && last_seen <= last);
    assert_eq!(
        first_seen.len(),
        "2026-12-03T08:30:00.123Z".len(),
        "{first_seen}"
    );
    let (min, max): (String, String) = conn
        .query_row(
            "SELECT min(first_seen), max(last_seen) FROM evidence",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        started <= min && max <= ended,
        "{started} {min} {max} {ended}"
    );
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");

    // later matches add to the same rows
    assert_eq!(
        ask(dns, "127.0.0.33", "x.vendor.example.", HTTPS).await,
        ResponseCode::NoError
    );
    assert!(wait_for_total(&db, 12, Duration::from_secs(5)));
    let iot = rows(&db).into_iter().find(|r| r.0 == "127.0.0.33").unwrap();
    assert_eq!((iot.7, iot.8.as_str()), (4, "A,AAAA,HTTPS"));
    assert_eq!(hushd.metric("hushd_evidence_dropped_total "), Some(0.0));
    assert_eq!(hushd.metric("hushd_evidence_errors_total "), Some(0.0));
}

/// `kill -9` under load loses at most `flush_secs` of evidence, and the database opens after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_flush_secs_and_the_database_opens() {
    let up = Upstream::start().await;
    let setup = setup(&up, "flush_secs = 1\n");
    // a device over client_qps would get some empty TC=1 answers, which no list decided
    setup.append_config("[limits]\nclient_qps = 0\n");
    let db = setup.dir.path().join("evidence.db");
    let hushd = Hushd::start_with(&setup, &[], &[("RUST_LOG", "info,hushd::evidence=debug")]);

    // one distinct name (one row) a query, from one device, for ~3 s
    let mut answered: Vec<(String, Instant)> = Vec::new();
    let mut c = udp_client(hushd.dns, from("127.0.0.33")).await;
    let load_started = Instant::now();
    for i in 0..20_000 {
        if load_started.elapsed() > Duration::from_secs(3) {
            break;
        }
        let name = format!("n{i}.vendor.example");
        let r = query(&mut c, &format!("{name}."), RecordType::A).await;
        assert_eq!(r.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1, "{r:?}");
        answered.push((name, Instant::now()));
    }
    // the kill lands while queries still flow
    let pid = nix::unistd::Pid::from_raw(i32::try_from(hushd.pid()).unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let dns = hushd.dns;
    let more = tokio::spawn(async move {
        let mut c = udp_client(dns, from("127.0.0.33")).await;
        let mut rx = rx;
        for i in 0..10_000 {
            if rx.try_recv().is_ok() {
                break;
            }
            let name = format!("late{i}.vendor.example.");
            let q = c.query(
                hickory_proto::rr::Name::from_ascii(&name).unwrap(),
                hickory_proto::rr::DNSClass::IN,
                RecordType::A,
            );
            if tokio::time::timeout(Duration::from_millis(500), q)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed_at = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = tx.send(());
    more.await.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || threads_gone(hushd.pid())),
        "hushd still running after SIGKILL"
    );

    let stored: std::collections::HashSet<String> = rows(&db).into_iter().map(|r| r.4).collect();
    let due: Vec<&String> = answered
        .iter()
        .filter(|(_, t)| killed_at.duration_since(*t) > Duration::from_millis(1500))
        .map(|(n, _)| n)
        .collect();
    assert!(
        due.len() > 100,
        "only {} queries were answered 1.5 s before the kill",
        due.len()
    );
    let lost: Vec<&&String> = due.iter().filter(|n| !stored.contains(**n)).collect();
    // the writer's debug lines say when each batch went in, should this fail
    let when: Vec<(String, Duration)> = answered
        .iter()
        .filter(|(n, _)| !stored.contains(n))
        .take(5)
        .map(|(n, t)| (n.clone(), killed_at.duration_since(*t)))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} lost ({} stored), e.g. {when:?} before the kill; killed {:?} after the load started\n{}",
        lost.len(),
        due.len(),
        stored.len(),
        killed_at - load_started,
        hushd.log()
    );
    let integrity: String = open(&db)
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(hushd);

    // a restart opens the same database and adds to it
    let before = rows(&db).len();
    let hushd = setup.start();
    assert_eq!(
        ask(
            hushd.dns,
            "127.0.0.1",
            "again.vendor.example.",
            RecordType::A
        )
        .await,
        ResponseCode::NoError
    );
    assert!(wait_until(Duration::from_secs(5), || rows(&db).len() == before + 1));
    assert!(!hushd.log().contains("CORRUPT"), "{}", hushd.log());
    assert_eq!(hushd.metric("hushd_evidence_errors_total "), Some(0.0));
}

fn threads_gone(pid: u32) -> bool {
    // a killed child stays a zombie until reaped: gone when it has no threads left running
    std::fs::read_to_string(format!("/proc/{pid}/status")).map_or(true, |s| s.contains("State:\tZ"))
}

/// A store that cannot be written: DNS goes on, errors are counted and logged once a minute,
/// matches are kept, and they are written once the path works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_path_keeps_dns_answering_counts_errors_and_retries() {
    let up = Upstream::start().await;
    let setup = setup(&up, "");
    // a path whose folder is a regular file: root cannot write there either
    let folder = setup.dir.path().join("state");
    std::fs::write(&folder, b"not a folder").unwrap();
    let db: PathBuf = folder.join("evidence.db");
    setup.append_config(&format!("path = \"{}\"\nflush_secs = 1\n", db.display()));
    // hushd check: an error, naming the config and the path
    let (ok, out) = check(&setup.config_path());
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "{}: [evidence] path {}: {} is not a folder",
            setup.config_path().display(),
            db.display(),
            folder.display()
        )),
        "{out}"
    );

    let hushd = setup.start();
    for i in 0..5 {
        let src = format!("127.0.0.{}", 40 + i);
        assert_eq!(
            ask(hushd.dns, &src, "x.vendor.example.", RecordType::A).await,
            ResponseCode::NoError
        );
    }
    assert!(wait_until(Duration::from_secs(5), || {
        hushd.metric("hushd_evidence_errors_total ").unwrap_or(0.0) >= 3.0
    }));
    assert_eq!(
        hushd
            .log()
            .matches("cannot write the evidence store")
            .count(),
        1,
        "one line a minute:\n{}",
        hushd.log()
    );
    assert_eq!(
        ask(hushd.dns, "127.0.0.1", "x.vendor.example.", RecordType::A).await,
        ResponseCode::NoError
    );

    // the folder appears: the kept matches are written at the next flush
    std::fs::remove_file(&folder).unwrap();
    std::fs::create_dir(&folder).unwrap();
    assert!(
        wait_for_total(&db, 6, Duration::from_secs(5)),
        "{:?}",
        rows(&db)
    );
    assert_eq!(rows(&db).len(), 6);
    assert!(hushd.wait_log(
        "the evidence store is written again",
        Duration::from_secs(2)
    ));
    assert_eq!(hushd.metric("hushd_evidence_dropped_total "), Some(0.0));
    let (ok, out) = check(&setup.config_path());
    assert!(ok, "{out}");
}

/// A corrupt database is moved aside, loudly, and a fresh one takes the evidence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_database_is_moved_aside_and_a_fresh_one_started() {
    let up = Upstream::start().await;
    let setup = setup(&up, "flush_secs = 1\n");
    let db = setup.dir.path().join("evidence.db");
    let garbage: Vec<u8> = (0..16_384u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();

    let hushd = setup.start();
    assert!(
        hushd.wait_log("THE EVIDENCE DATABASE IS CORRUPT", Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    let aside: Vec<PathBuf> = std::fs::read_dir(setup.dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("evidence.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).unwrap(), garbage);
    assert!(
        hushd.log().contains(&aside[0].display().to_string()),
        "{}",
        hushd.log()
    );

    assert_eq!(
        ask(hushd.dns, "127.0.0.90", "x.vendor.example.", RecordType::A).await,
        ResponseCode::NoError
    );
    assert!(wait_for_total(&db, 1, Duration::from_secs(5)));
    assert_eq!(rows(&db)[0].1, "tv");
    assert_eq!(hushd.metric("hushd_evidence_errors_total "), Some(1.0));
}

/// `[querylog] anonymize = "truncate"` stores IPv4 clients as their /24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_stores_the_network_not_the_device() {
    let up = Upstream::start().await;
    let setup = setup(&up, "flush_secs = 1\n");
    setup.append_config("[querylog]\nanonymize = \"truncate\"\n");
    let db = setup.dir.path().join("evidence.db");
    let hushd = setup.start();
    for src in ["127.0.0.33", "127.0.0.34", "127.0.0.90"] {
        assert_eq!(
            ask(hushd.dns, src, "x.vendor.example.", RecordType::A).await,
            ResponseCode::NoError
        );
    }
    assert!(wait_for_total(&db, 3, Duration::from_secs(5)));
    let r = rows(&db);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].0.as_str(), r[0].7), ("127.0.0.0", 3));
}

/// Switched off: no thread, no file, and DNS as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_there_is_no_writer_and_no_file() {
    let up = Upstream::start().await;
    let setup = setup(&up, "enabled = false\nflush_secs = 1\n");
    let hushd: Hushd = setup.start();
    assert!(!threads(hushd.pid()).contains(&"hushd-evidence".to_string()));
    assert_eq!(
        ask(hushd.dns, "127.0.0.1", "x.vendor.example.", RecordType::A).await,
        ResponseCode::NoError
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!setup.dir.path().join("evidence.db").exists());
    assert_eq!(hushd.metric("hushd_evidence_dropped_total "), Some(0.0));
}

/// Under systemd (`$STATE_DIRECTORY`, the unit's `StateDirectory=hushd`) the default path is in
/// the state folder, which the unit makes writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_store_is_in_the_state_directory() {
    let up = Upstream::start().await;
    let setup = setup(&up, "flush_secs = 1\n");
    let state = setup.dir.path().join("var-lib-hushd");
    std::fs::create_dir(&state).unwrap();
    let state_text = state.to_str().unwrap();
    let hushd = Hushd::start_with(&setup, &[], &[("STATE_DIRECTORY", state_text)]);
    assert_eq!(
        ask(hushd.dns, "127.0.0.21", "x.vendor.example.", RecordType::A).await,
        ResponseCode::NoError
    );
    assert!(wait_for_total(
        &state.join("evidence.db"),
        1,
        Duration::from_secs(5)
    ));
    assert!(!setup.dir.path().join("evidence.db").exists());
}

/// A clean stop (SIGTERM, as systemd stops it) writes what the writer holds: nothing waits for
/// the next flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_writes_what_is_held() {
    let up = Upstream::start().await;
    let setup = setup(&up, "flush_secs = 3600\n");
    let db = setup.dir.path().join("evidence.db");
    let hushd = setup.start();
    assert_eq!(
        ask(hushd.dns, "127.0.0.90", "x.vendor.example.", RecordType::A).await,
        ResponseCode::NoError
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(hushd.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || threads_gone(hushd.pid())),
        "hushd still running after SIGTERM"
    );
    assert_eq!(
        rows(&db),
        [row(
            "127.0.0.90",
            ("tv", "iot"),
            "vendor",
            "x.vendor.example",
            ("log", "name"),
            1,
            "A"
        )]
    );
}
