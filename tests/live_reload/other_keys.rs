//! The keys outside `[server]`, `[upstream]`, `[cache]` and `[limits]` applied on reload, each
//! against the real binary: groups and client names, the query log's and the evidence store's
//! settings, the blocklist folder, the subscriptions' fetch settings (`[lists]`), the egress
//! databases and nftables timeouts and sets, and the keys of a list file.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hickory_proto::op::ResponseCode::{self, NXDomain, NoError, Refused};
use serde_json::json;

use crate::{
    ask, reload,
    support::{self, Hushd, Setup, list, netns::NetNs, upstream::Upstream, wait_until},
};

/// The RCODE of an A query for `name` sent from `src` (a 127.0.0.x address: a device).
async fn rcode_from(dns: SocketAddr, src: &str, name: &str) -> ResponseCode {
    let socket = tokio::net::UdpSocket::bind((src, 0)).await.unwrap();
    ask(
        &socket,
        dns,
        name,
        fastrand::u16(..),
        Duration::from_secs(3),
    )
    .await
    .unwrap_or_else(|| panic!("no answer to {name} from {src}"))
    .metadata
    .response_code
}

/// The RCODE of an A query for `name` from 127.0.0.1.
async fn rcode(dns: SocketAddr, name: &str) -> ResponseCode {
    rcode_from(dns, "127.0.0.1", name).await
}

/// Asks `name` until the answer is `want`; whether it was within 5 s.
async fn becomes(dns: SocketAddr, name: &str, want: ResponseCode) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        if rcode(dns, name).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

// ---------------------------------------------------------------------------------------------
// [clients] and [[groups]]

/// `[[groups]] lists`: a list added to the group's lists applies to its members from the next
/// query (an answer cached while the list did not apply to them included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_added_to_a_group_applies_to_its_members() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup
        .append_config("[[groups]]\nname = \"iot\"\nclients = [\"127.0.0.33\"]\nlists = [\"ads\"]");
    setup.write_list("ads", &list("block", &["ads.example"]));
    setup.write_list("track", &list("block", &["tracker.example"]));
    let hushd = setup.start();
    let dns = hushd.dns;
    assert_eq!(
        rcode_from(dns, "127.0.0.33", "ads.example.").await,
        NXDomain
    );
    assert_eq!(
        rcode_from(dns, "127.0.0.33", "tracker.example.").await,
        NoError
    );
    assert_eq!(
        rcode(dns, "tracker.example.").await,
        NXDomain,
        "default group"
    );

    reload(&setup, &hushd, |c| {
        c.replace("lists = [\"ads\"]", "lists = [\"ads\", \"track\"]")
    });
    assert_eq!(
        rcode_from(dns, "127.0.0.33", "tracker.example.").await,
        NXDomain
    );
    assert_eq!(
        rcode_from(dns, "127.0.0.33", "ads.example.").await,
        NXDomain
    );
}

/// `[[groups]] actions`: a changed override is the action the group's members get from the
/// next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_group_action_is_what_members_get() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(
        "[[groups]]\nname = \"iot\"\nclients = [\"127.0.0.33\"]\nactions = { vendor = \"block\" }",
    );
    setup.write_list("vendor", &list("log", &["vendor.example"]));
    let hushd = setup.start();
    let dns = hushd.dns;
    assert_eq!(
        rcode_from(dns, "127.0.0.33", "vendor.example.").await,
        NXDomain
    );
    assert_eq!(
        rcode(dns, "vendor.example.").await,
        NoError,
        "default group"
    );

    reload(&setup, &hushd, |c| {
        c.replace("vendor = \"block\"", "vendor = \"log\"")
    });
    assert_eq!(
        rcode_from(dns, "127.0.0.33", "vendor.example.").await,
        NoError
    );
    assert_eq!(
        hushd.metric(r#"hushd_list_matches_total{action="log",list="vendor",via="name"}"#),
        Some(2.0),
        "the member's match after the reload counted as log"
    );
}

/// `[clients]`: a named device given a new address is that device from the next query: the
/// group that names it applies at the new address, not at the old one, and the query log names
/// it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_device_at_a_new_address_takes_its_group_there() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(
        "[querylog]\nenabled = true\n\n[clients]\n\"tv\" = \"127.0.0.90\"\n\n[[groups]]\nname = \"iot\"\nclients = [\"tv\"]\nactions = { vendor = \"block\" }",
    );
    setup.write_list("vendor", &list("log", &["vendor.example"]));
    let hushd = setup.start();
    let dns = hushd.dns;
    assert_eq!(
        rcode_from(dns, "127.0.0.90", "vendor.example.").await,
        NXDomain
    );
    assert_eq!(
        rcode_from(dns, "127.0.0.91", "vendor.example.").await,
        NoError
    );

    reload(&setup, &hushd, |c| {
        c.replace("\"127.0.0.90\"", "\"127.0.0.91\"")
    });
    assert_eq!(
        rcode_from(dns, "127.0.0.91", "vendor.example.").await,
        NXDomain
    );
    assert_eq!(
        rcode_from(dns, "127.0.0.90", "vendor.example.").await,
        NoError
    );
    let log = setup.dir.path().join("queries.jsonl");
    let names: Vec<_> = wait_lines(&log, 4)
        .iter()
        .map(|l| (l["client"].clone(), l["client_name"].clone()))
        .collect();
    assert_eq!(
        names,
        [
            (json!("127.0.0.90"), json!("tv")),
            (json!("127.0.0.91"), json!(null)),
            (json!("127.0.0.91"), json!("tv")),
            (json!("127.0.0.90"), json!(null)),
        ]
    );
}

/// The lines of the query log at `path`, each parsed.
fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits (the writer writes at least once a second) until the query log holds `n` lines.
fn wait_lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_until(Duration::from_secs(5), || log_lines(path).len() >= n);
    log_lines(path)
}

/// Waits (the writer writes at least once a second) for the query log's line about `qname`.
fn log_line(path: &Path, qname: &str) -> serde_json::Value {
    let mut found = None;
    wait_until(Duration::from_secs(5), || {
        found = log_lines(path).into_iter().find(|l| l["qname"] == qname);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no line for {qname} in {}", path.display()))
}

/// `[[groups]] name`: a renamed group is named in the next queries' lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_group_is_named_in_the_next_lines() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(
        "[querylog]\nenabled = true\n\n[[groups]]\nname = \"iot\"\nclients = [\"127.0.0.33\"]",
    );
    let hushd = setup.start();
    let log = setup.dir.path().join("queries.jsonl");
    rcode_from(hushd.dns, "127.0.0.33", "before.example.").await;
    assert_eq!(log_line(&log, "before.example")["group"], "iot");

    reload(&setup, &hushd, |c| {
        c.replace("name = \"iot\"", "name = \"cameras\"")
    });
    rcode_from(hushd.dns, "127.0.0.33", "after.example.").await;
    assert_eq!(log_line(&log, "after.example")["group"], "cameras");
}

// ---------------------------------------------------------------------------------------------
// [querylog] and [evidence]

/// `[querylog] only_matches` turned on: the next queries that match no list are left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_matches_turned_on_leaves_unlisted_names_out() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[querylog]\nenabled = true\nonly_matches = false");
    setup.write_list("vendor", &list("log", &["vendor.example"]));
    let hushd = setup.start();
    let log = setup.dir.path().join("queries.jsonl");
    rcode(hushd.dns, "plain.example.").await;
    log_line(&log, "plain.example");

    reload(&setup, &hushd, |c| {
        c.replace("only_matches = false", "only_matches = true")
    });
    rcode(hushd.dns, "plain-again.example.").await;
    rcode(hushd.dns, "one.vendor.example.").await;
    // lines are written in query order: the match's line shows the one before it was left out
    log_line(&log, "one.vendor.example");
    let names: Vec<_> = log_lines(&log)
        .iter()
        .map(|l| l["qname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["plain.example", "one.vendor.example"]);
}

/// The (client, name) rows of the evidence store at `path`.
fn store_rows(path: &Path) -> Vec<(String, String)> {
    let Ok(db) =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
    else {
        return Vec::new();
    };
    let Ok(mut stmt) = db.prepare("SELECT client, name FROM evidence ORDER BY name") else {
        return Vec::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `[querylog] anonymize = "truncate"` set: the next queries' clients are their /24, in the
/// query log and in the evidence store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymize_set_truncates_the_next_clients_in_the_log_and_the_store() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(
        "[querylog]\nenabled = true\nanonymize = \"none\"\n\n[evidence]\nflush_secs = 1",
    );
    setup.write_list("vendor", &list("log", &["vendor.example"]));
    let hushd = setup.start();
    let (log, store) = (
        setup.dir.path().join("queries.jsonl"),
        setup.dir.path().join("evidence.db"),
    );
    rcode_from(hushd.dns, "127.0.0.21", "one.vendor.example.").await;
    assert_eq!(log_line(&log, "one.vendor.example")["client"], "127.0.0.21");

    reload(&setup, &hushd, |c| {
        c.replace("anonymize = \"none\"", "anonymize = \"truncate\"")
    });
    rcode_from(hushd.dns, "127.0.0.21", "two.vendor.example.").await;
    assert_eq!(log_line(&log, "two.vendor.example")["client"], "127.0.0.0");
    let want = [
        ("127.0.0.21".to_string(), "one.vendor.example".to_string()),
        ("127.0.0.0".to_string(), "two.vendor.example".to_string()),
    ];
    assert!(
        wait_until(Duration::from_secs(5), || store_rows(&store) == want),
        "{:?}",
        store_rows(&store)
    );
}

/// Appends filler lines to the query log at `path` until it holds at least `bytes`.
fn fill(path: &Path, bytes: u64) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let line = format!("{{\"qname\":\"{}\"}}\n", "f".repeat(1000));
    while file.metadata().unwrap().len() < bytes {
        file.write_all(line.as_bytes()).unwrap();
    }
}

fn qnames(path: &Path) -> Vec<String> {
    log_lines(path)
        .iter()
        .map(|l| l["qname"].as_str().unwrap().to_string())
        .filter(|n| !n.starts_with("fff"))
        .collect()
}

/// `[querylog] max_bytes` lowered: the next write past the new size rotates the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_query_log_max_bytes_rotates_at_the_new_size() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[querylog]\nenabled = true\nmax_bytes = 2097152\nkeep = 1");
    let log = setup.dir.path().join("queries.jsonl");
    let rotated = setup.dir.path().join("queries.jsonl.1");
    // just under 1 MiB: the next line takes it past the new bound, far from the old one
    fill(&log, (1 << 20) - 500);
    let hushd = setup.start();
    rcode(hushd.dns, "before.example.").await;
    log_line(&log, "before.example");
    assert!(!rotated.exists(), "rotated under 2 MiB");

    reload(&setup, &hushd, |c| {
        c.replace("max_bytes = 2097152", "max_bytes = 1048576")
    });
    rcode(hushd.dns, "after.example.").await;
    assert!(
        wait_until(Duration::from_secs(5), || qnames(&log) == ["after.example"]),
        "{:?}",
        qnames(&log)
    );
    assert_eq!(qnames(&rotated), ["before.example"]);
}

/// `[querylog] keep` raised from 0: a rotation keeps the old file as `.1` instead of
/// dropping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_query_log_keep_keeps_the_rotated_file() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[querylog]\nenabled = true\nmax_bytes = 1048576\nkeep = 0");
    let log = setup.dir.path().join("queries.jsonl");
    let rotated = setup.dir.path().join("queries.jsonl.1");
    fill(&log, 1 << 20);
    let hushd = setup.start();
    rcode(hushd.dns, "before.example.").await;
    assert!(
        wait_until(Duration::from_secs(5), || qnames(&log)
            == ["before.example"]),
        "{:?}",
        qnames(&log)
    );
    assert!(log_lines(&log).len() == 1, "keep = 0: the file starts over");
    assert!(!rotated.exists(), "keep = 0 kept a file");

    reload(&setup, &hushd, |c| c.replace("keep = 0", "keep = 1"));
    fill(&log, 1 << 20);
    rcode(hushd.dns, "after.example.").await;
    assert!(
        wait_until(Duration::from_secs(5), || qnames(&log) == ["after.example"]),
        "{:?}",
        qnames(&log)
    );
    assert_eq!(qnames(&rotated), ["before.example"]);
}

/// `[evidence] flush_secs` shortened: the next matches are in the store within the new
/// interval, not the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_flush_secs_writes_the_next_matches_sooner() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[evidence]\nflush_secs = 60");
    setup.write_list("vendor", &list("log", &["vendor.example"]));
    let hushd = setup.start();
    let store = setup.dir.path().join("evidence.db");
    rcode(hushd.dns, "one.vendor.example.").await;
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(store_rows(&store), [], "written before 60 s");

    reload(&setup, &hushd, |c| {
        c.replace("flush_secs = 60", "flush_secs = 1")
    });
    rcode(hushd.dns, "two.vendor.example.").await;
    // at 1 s, well within 3.5; at 60 s, not before the test ends
    assert!(
        wait_until(Duration::from_millis(3500), || store_rows(&store)
            .iter()
            .any(|(_, name)| name == "two.vendor.example")),
        "{:?}\n{}",
        store_rows(&store),
        hushd.log()
    );
}

/// `[evidence] retention_days` shortened: the days now past it are deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_retention_deletes_the_days_past_it() {
    use support::evidence::{Row, ago, create_store};
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[evidence]\nretention_days = 90");
    let store = setup.dir.path().join("evidence.db");
    let day = Duration::from_secs(86_400);
    drop(create_store(
        &store,
        &[
            Row::new(
                "127.0.0.1",
                "vendor",
                "old.example",
                1,
                &ago(10 * day),
                &ago(10 * day),
            ),
            Row::new(
                "127.0.0.1",
                "vendor",
                "new.example",
                1,
                &ago(day / 24),
                &ago(day / 24),
            ),
        ],
    ));
    let hushd = setup.start();
    // the writer prunes when it opens the store: at 90 days both stay
    assert!(hushd.wait_log("hushd ready", Duration::from_secs(1)));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(store_rows(&store).len(), 2, "{:?}", store_rows(&store));

    reload(&setup, &hushd, |c| {
        c.replace("retention_days = 90", "retention_days = 5")
    });
    assert!(
        wait_until(Duration::from_secs(5), || store_rows(&store).len() == 1),
        "{:?}\n{}",
        store_rows(&store),
        hushd.log()
    );
    assert_eq!(store_rows(&store)[0].1, "new.example");
}

// ---------------------------------------------------------------------------------------------
// [blocklists]

/// `[blocklists] dir` moved: the lists of the new folder are in force, the old folder's are
/// not, and an edit in the new folder reloads (it is watched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_blocklist_folder_is_loaded_and_watched() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("old", &list("block", &["old.example"]));
    let other = setup.dir.path().join("other-lists");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("new.toml"), list("block", &["new.example"])).unwrap();
    let hushd = setup.start();
    let dns = hushd.dns;
    assert_eq!(rcode(dns, "old.example.").await, NXDomain);
    assert_eq!(rcode(dns, "new.example.").await, NoError);

    reload(&setup, &hushd, |c| {
        c.replace("dir = \"blocklists\"", "dir = \"other-lists\"")
    });
    assert_eq!(rcode(dns, "new.example.").await, NXDomain);
    assert_eq!(rcode(dns, "old.example.").await, NoError);
    // the new folder is watched: an edit there applies without another config change
    let tmp = other.join(".new.tmp");
    std::fs::write(&tmp, list("block", &["new.example", "more.example"])).unwrap();
    std::fs::rename(&tmp, other.join("new.toml")).unwrap();
    assert!(
        becomes(dns, "more.example.", NXDomain).await,
        "an edit in the new folder was not applied:\n{}",
        hushd.log()
    );
}

// ---------------------------------------------------------------------------------------------
// [lists]: subscriptions' fetch settings

/// What the list server does with a request.
#[derive(Clone)]
enum Serve {
    /// 200 with this body.
    Body(String),
    /// This status, no body.
    Status(u16),
    /// Accepts the connection and never says a word (nor reads the TLS handshake).
    Silent,
}

/// A list server on loopback (std threads, HTTP/1.1, one request a connection).
struct ListServer {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    serve: Arc<Mutex<Serve>>,
    stop: Arc<AtomicBool>,
}

impl ListServer {
    fn start(serve: Serve) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (connections, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (count, stopped) = (connections.clone(), stop.clone());
        let serve = Arc::new(Mutex::new(serve));
        let serving = serve.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                count.fetch_add(1, Ordering::Relaxed);
                let response = match serving.lock().unwrap().clone() {
                    Serve::Silent => {
                        held.push(conn);
                        continue;
                    }
                    Serve::Body(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    Serve::Status(code) => format!(
                        "HTTP/1.1 {code} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    ),
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                // the request's head, then the answer
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16_384 {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(response.as_bytes());
            }
        });
        Self {
            addr,
            connections,
            serve,
            stop,
        }
    }

    fn set(&self, serve: Serve) {
        *self.serve.lock().unwrap() = serve;
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A setup with the subscription `ads` at `url` (refreshed hourly: no refresh within a test)
/// and `[lists]` holding `lists`.
fn subscribed(up: &Upstream, url: &str, lists: &str) -> Setup {
    let setup = Setup::new(&[up.addr], "");
    setup.append_config(&format!("[lists]\n{lists}"));
    setup.write_list(
        "ads",
        &format!("action = \"block\"\nurl = \"{url}\"\nrefresh = \"1h\"\n"),
    );
    setup
}

fn fetches(hushd: &Hushd, result: &str) -> f64 {
    hushd
        .metric(&format!(
            "hushd_list_fetches_total{{list=\"ads\",result=\"{result}\"}}"
        ))
        .unwrap_or(0.0)
}

/// Waits up to `within` for at least `n` fetches with `result`.
fn wait_fetches(hushd: &Hushd, result: &str, n: f64, within: Duration) -> bool {
    wait_until(within, || fetches(hushd, result) >= n)
}

/// `[lists] max_bytes` raised: a download the old bound rejected is taken (fetched again at
/// once, since the settings changed) and its names applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_lists_max_bytes_takes_a_download_it_rejected() {
    let up = Upstream::start().await;
    let body = format!("# {}\nsub.example\n", "padding ".repeat(40));
    let server = ListServer::start(Serve::Body(body));
    let url = format!("http://{}/ads.txt", server.addr);
    let setup = subscribed(&up, &url, "max_bytes = 100");
    let hushd = setup.start();
    assert!(
        wait_fetches(&hushd, "rejected", 1.0, Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    assert_eq!(rcode(hushd.dns, "sub.example.").await, NoError);

    reload(&setup, &hushd, |c| {
        c.replace("max_bytes = 100", "max_bytes = 4096")
    });
    assert!(
        becomes(hushd.dns, "sub.example.", NXDomain).await,
        "{}",
        hushd.log()
    );
    assert_eq!(fetches(&hushd, "rejected"), 1.0);
}

/// `[lists] state_dir` moved: the copy in force is carried to the new folder, so its names stay
/// in force with the server down, and the next download is stored there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_state_dir_keeps_the_copy_in_force_and_stores_the_next_one() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::Body("one.example\n".into()));
    let url = format!("http://{}/ads.txt", server.addr);
    let setup = subscribed(&up, &url, "state_dir = \"copies1\"");
    setup.write_list(
        "ads",
        &format!("action = \"block\"\nurl = \"{url}\"\nrefresh = \"2s\"\n"),
    );
    let hushd = setup.start();
    let (old, new) = (
        setup.dir.path().join("copies1/ads.txt"),
        setup.dir.path().join("copies2/ads.txt"),
    );
    let dns = hushd.dns;
    assert!(
        becomes(dns, "one.example.", NXDomain).await,
        "{}",
        hushd.log()
    );

    server.set(Serve::Status(503));
    reload(&setup, &hushd, |c| c.replace("copies1", "copies2"));
    // at once, with the server down: the copy carried over is in force
    assert_eq!(
        rcode(dns, "one.example.").await,
        NXDomain,
        "{}",
        hushd.log()
    );
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "one.example\n");
    // the next download (due within the 2 s refresh) is stored in the new folder
    server.set(Serve::Body("two.example\n".into()));
    assert!(
        becomes(dns, "two.example.", NXDomain).await,
        "{}",
        hushd.log()
    );
    assert_eq!(std::fs::read_to_string(&new).unwrap(), "two.example\n");
    assert_eq!(std::fs::read_to_string(&old).unwrap(), "one.example\n");
}

/// `[lists] retry_after` shortened: a failing download is retried at the new pace (1 s, 2 s...)
/// instead of the old hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_retry_after_retries_a_failing_download_sooner() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::Status(404));
    let url = format!("http://{}/ads.txt", server.addr);
    let setup = subscribed(&up, &url, "retry_after = \"1h\"");
    let hushd = setup.start();
    assert!(
        wait_fetches(&hushd, "error", 1.0, Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(fetches(&hushd, "error"), 1.0, "retried within the hour");

    reload(&setup, &hushd, |c| c.replace("\"1h\"\n", "\"1s\"\n"));
    // at once (the settings changed), then after 1 s and 2 s (up to a tenth more each)
    assert!(
        wait_fetches(&hushd, "error", 4.0, Duration::from_secs(7)),
        "{} errors\n{}",
        fetches(&hushd, "error"),
        hushd.log()
    );
}

/// `[lists] timeout` shortened: a download the server never answers fails at the new bound
/// (the old one was an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_lists_timeout_ends_a_silent_download() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::Silent);
    let url = format!("http://{}/ads.txt", server.addr);
    let setup = subscribed(&up, &url, "timeout = \"1h\"\nretry_after = \"1h\"");
    let hushd = setup.start();
    assert!(wait_until(Duration::from_secs(5), || server
        .connections
        .load(Ordering::Relaxed)
        == 1));
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(fetches(&hushd, "error"), 0.0);

    reload(&setup, &hushd, |c| {
        c.replace("timeout = \"1h\"", "timeout = \"1s\"")
    });
    assert!(
        wait_fetches(&hushd, "error", 1.0, Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
}

/// `[lists] connect_timeout` shortened: an HTTPS server whose TLS handshake never finishes
/// fails at the new bound (the old one was an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_connect_timeout_ends_a_silent_handshake() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::Silent);
    let url = format!("https://{}/ads.txt", server.addr);
    let setup = subscribed(
        &up,
        &url,
        "connect_timeout = \"1h\"\ntimeout = \"1h\"\nretry_after = \"1h\"",
    );
    let hushd = setup.start();
    assert!(wait_until(Duration::from_secs(5), || server
        .connections
        .load(Ordering::Relaxed)
        == 1));
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(fetches(&hushd, "error"), 0.0);

    reload(&setup, &hushd, |c| {
        c.replace("connect_timeout = \"1h\"", "connect_timeout = \"1s\"")
    });
    assert!(
        wait_fetches(&hushd, "error", 1.0, Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
}

/// `[lists] ca_file`: a file that cannot be read fails every download; removed by a reload,
/// the next download goes through and its names apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_lists_ca_file_is_what_downloads_use() {
    let up = Upstream::start().await;
    let server = ListServer::start(Serve::Body("sub.example\n".into()));
    let url = format!("http://{}/ads.txt", server.addr);
    let setup = subscribed(
        &up,
        &url,
        "ca_file = \"missing-ca.pem\"\nretry_after = \"1h\"",
    );
    let hushd = setup.start();
    assert!(
        wait_fetches(&hushd, "error", 1.0, Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    assert!(hushd.wait_log("missing-ca.pem", Duration::from_secs(1)));
    assert_eq!(rcode(hushd.dns, "sub.example.").await, NoError);

    reload(&setup, &hushd, |c| {
        c.replace("ca_file = \"missing-ca.pem\"\n", "")
    });
    assert!(
        becomes(hushd.dns, "sub.example.", NXDomain).await,
        "{}",
        hushd.log()
    );
}

// ---------------------------------------------------------------------------------------------
// [egress]

/// `[egress] country_db` and `asn_db` named by a reload: lists of countries and networks,
/// refused before for want of them, load, and answers are blocked by where their addresses are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_databases_named_on_reload_let_country_and_network_lists_load() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    let fixtures = support::project_root().join("tests/fixtures/mmdb");
    for db in ["country.mmdb", "asn.mmdb"] {
        std::fs::copy(fixtures.join(db), setup.dir.path().join(db)).unwrap();
    }
    setup.append_config("[egress]\nmin_timeout_secs = 300");
    let hushd = setup.start();
    let dns = hushd.dns;
    // 192.0.2.9: CN, AS64500; 198.51.100.9: US, AS64501 (tests/fixtures/mmdb)
    setup.write_list("cn", "action = \"block\"\ncountries = [\"CN\"]\n");
    setup.write_list("us-net", "action = \"block\"\nasns = [64501]\n");
    assert!(
        hushd.wait_log("reload rejected", Duration::from_secs(5)),
        "{}",
        hushd.log()
    );
    assert_eq!(rcode(dns, "ip-192-0-2-9.example.").await, NoError);
    assert_eq!(rcode(dns, "ip-198-51-100-9.example.").await, NoError);

    reload(&setup, &hushd, |c| {
        c.replace(
            "min_timeout_secs = 300",
            "min_timeout_secs = 300\ncountry_db = \"country.mmdb\"\nasn_db = \"asn.mmdb\"",
        )
    });
    assert_eq!(rcode(dns, "ip-192-0-2-9.example.").await, NXDomain);
    assert_eq!(rcode(dns, "ip-198-51-100-9.example.").await, NXDomain);
    assert_eq!(rcode(dns, "ip-203-0-113-9.example.").await, NoError);
}

/// The elements of `set` in table `inet hushd` in `ns`: (address, timeout in seconds).
fn set_elements(ns: &NetNs, set: &str) -> Vec<(String, u64)> {
    let json = ns.sh(&format!("nft -j list set inet hushd {set}"));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut out = Vec::new();
    for item in v["nftables"].as_array().unwrap() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let e = &e["elem"];
            out.push((
                e["val"].as_str().unwrap().to_string(),
                e["timeout"].as_u64().unwrap_or(0),
            ));
        }
    }
    out
}

/// A namespace with the example ruleset, an upstream and a started hushd in it (`extra_config`
/// appended, `lists` written first); `None` where the test cannot run (not root, no nft).
#[allow(clippy::type_complexity)]
fn hushd_in_namespace(
    extra_config: &str,
    lists: &[(&str, &str)],
) -> Option<(NetNs, tokio::runtime::Runtime, Upstream, Arc<Setup>, Hushd)> {
    support::tool("nft")?;
    let ns = NetNs::new()?;
    ns.sh("nft -f nftables/hushd.nft");
    let (runtime, up) = ns.run(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let up = rt.block_on(Upstream::start());
        (rt, up)
    });
    let setup = Arc::new(Setup::new(&[up.addr], ""));
    setup.append_config(extra_config);
    for (name, text) in lists {
        setup.write_list(name, text);
    }
    let hushd = {
        let setup = setup.clone();
        ns.run(move || setup.start())
    };
    Some((ns, runtime, up, setup, hushd))
}

/// An A query for `name` from `src`, sent inside `ns`.
fn rcode_in(ns: &NetNs, dns: SocketAddr, src: &'static str, name: &'static str) -> ResponseCode {
    ns.block_on(move || async move { rcode_from(dns, src, name).await })
}

/// `[egress] min_timeout_secs` changed: the next addresses go into a list's set with the new
/// floor as their timeout (the record's TTL is 300).
#[test]
fn a_new_min_timeout_is_the_timeout_of_the_next_elements() {
    let Some((ns, runtime, _up, setup, hushd)) = hushd_in_namespace(
        "[egress]\nmin_timeout_secs = 400",
        &[(
            "xiaomi",
            "action = \"log\"\ndomains = [\"tracker.example\"]\nnft_sets = [\"inet hushd xiaomi4\"]\n",
        )],
    ) else {
        return;
    };
    rcode_in(
        &ns,
        hushd.dns,
        "127.0.0.1",
        "ip-198-51-100-12.tracker.example.",
    );
    let element = |addr: &str, timeout: u64| {
        let want = (addr.to_string(), timeout);
        wait_until(Duration::from_secs(3), || {
            set_elements(&ns, "xiaomi4").contains(&want)
        })
    };
    assert!(
        element("198.51.100.12", 400),
        "{:?}",
        set_elements(&ns, "xiaomi4")
    );

    reload(&setup, &hushd, |c| {
        c.replace("min_timeout_secs = 400", "min_timeout_secs = 500")
    });
    rcode_in(
        &ns,
        hushd.dns,
        "127.0.0.1",
        "ip-198-51-100-13.tracker.example.",
    );
    assert!(
        element("198.51.100.13", 500),
        "{:?}",
        set_elements(&ns, "xiaomi4")
    );
    drop(hushd);
    drop(runtime);
}

/// `[[groups]] egress_set` given to a group: the addresses answered to its members from then
/// on go into the set.
#[test]
fn a_group_given_an_egress_set_feeds_it_from_the_next_answer() {
    let Some((ns, runtime, _up, setup, hushd)) = hushd_in_namespace(
        "[[groups]]\nname = \"iot\"\nclients = [\"127.0.0.33\"]",
        &[],
    ) else {
        return;
    };
    rcode_in(&ns, hushd.dns, "127.0.0.33", "ip-198-51-100-20.example.");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(set_elements(&ns, "iot_allowed4"), []);

    reload(&setup, &hushd, |c| {
        c.replace(
            "clients = [\"127.0.0.33\"]",
            "clients = [\"127.0.0.33\"]\negress_set = \"inet hushd iot_allowed4\"",
        )
    });
    rcode_in(&ns, hushd.dns, "127.0.0.33", "ip-198-51-100-21.example.");
    assert!(
        wait_until(Duration::from_secs(3), || set_elements(&ns, "iot_allowed4")
            .iter()
            .any(|(addr, _)| addr == "198.51.100.21")),
        "{:?}\n{}",
        set_elements(&ns, "iot_allowed4"),
        hushd.log()
    );
    // the router's own lookups (the default group) still feed nothing
    rcode_in(&ns, hushd.dns, "127.0.0.1", "ip-198-51-100-22.example.");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(set_elements(&ns, "iot_allowed4").len(), 1);
    drop(hushd);
    drop(runtime);
}

// ---------------------------------------------------------------------------------------------
// list files

/// A list file's keys edited while hushd runs (a list edit reloads like a config edit): each
/// edit's new `action`, `block_response`, `match` and `ips` is in force from the next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_files_keys_apply_when_it_is_saved() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.write_list("vendor", &list("block", &["vendor.example"]));
    let hushd = setup.start();
    let dns = hushd.dns;
    let edit = |text: &str| {
        let reloads = hushd.log().matches("policy reloaded").count();
        setup.write_list("vendor", text);
        assert!(
            wait_until(Duration::from_secs(5), || hushd
                .log()
                .matches("policy reloaded")
                .count()
                > reloads),
            "no reload:\n{}",
            hushd.log()
        );
    };
    assert_eq!(rcode(dns, "a.vendor.example.").await, NXDomain);

    // action
    edit(&list("log", &["vendor.example"]));
    assert_eq!(rcode(dns, "a.vendor.example.").await, NoError);
    // block_response
    edit("action = \"block\"\nblock_response = \"refused\"\ndomains = [\"vendor.example\"]\n");
    assert_eq!(rcode(dns, "a.vendor.example.").await, Refused);
    // match: the name alone
    edit("action = \"block\"\nmatch = \"exact\"\ndomains = [\"vendor.example\"]\n");
    assert_eq!(rcode(dns, "a.vendor.example.").await, NoError);
    assert_eq!(rcode(dns, "vendor.example.").await, NXDomain);
    // ips: answers by their address
    assert_eq!(rcode(dns, "ip-198-51-100-7.example.").await, NoError);
    edit("action = \"block\"\nips = [\"198.51.100.0/24\"]\n");
    assert_eq!(rcode(dns, "ip-198-51-100-7.example.").await, NXDomain);
    assert_eq!(rcode(dns, "vendor.example.").await, NoError);
}
