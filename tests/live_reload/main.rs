//! Every config key but the listeners applies on reload, against the real binary: the
//! upstreams, the cache's size and TTL bounds, the rate limit, `max_inflight`, the evidence
//! store and the query log; a listener change is reported as needing a restart, in the log and
//! by `hushd check --diff-running`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step should stop the test

mod other_keys;
#[path = "../support/mod.rs"]
mod support;
mod upstream_keys;

mod limits_keys;
mod server_keys;

mod cache_keys;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::RecordType,
};
use support::{Hushd, Setup, list, query, udp_client, upstream::Upstream, wait_until};

/// Saves `edit(config)` as the config and waits for the reload it causes to be in force.
pub(crate) fn reload(setup: &Setup, hushd: &Hushd, edit: impl FnOnce(String) -> String) {
    let before = std::fs::read_to_string(setup.config_path()).unwrap();
    let after = edit(before.clone());
    assert_ne!(before, after, "the edit changes nothing");
    let reloads = hushd.log().matches("policy reloaded").count();
    setup.write_config(&after);
    assert!(
        wait_until(Duration::from_secs(5), || {
            hushd.log().matches("policy reloaded").count() > reloads
        }),
        "no reload:\n{}",
        hushd.log()
    );
}

/// One A query for `name` from `socket`; its RCODE, or `None` after `wait`.
pub(crate) async fn ask(
    socket: &tokio::net::UdpSocket,
    server: SocketAddr,
    name: &str,
    id: u16,
    wait: Duration,
) -> Option<Message> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    socket.send_to(&m.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Ok((n, _))) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await else {
            return None;
        };
        let reply = Message::from_vec(&buf[..n]).unwrap();
        if reply.metadata.id == id {
            return Some(reply);
        }
    }
}

/// `[upstream] servers` changed: new queries go to the new server, and none is lost while the
/// servers are swapped under a bounded concurrent load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_upstream_servers_take_the_next_queries_and_none_is_lost() {
    let (first, second) = (Upstream::start().await, Upstream::start().await);
    let setup = Setup::new(&[first.addr], "");
    let hushd = setup.start();

    let (sent, answered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4u16 {
        let (sent, answered, stop) = (sent.clone(), answered.clone(), stop.clone());
        let dns = hushd.dns;
        load.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let started = Instant::now();
            let mut lost = Vec::new();
            // bounded: 400 queries or 10 s a worker
            for i in 0..400u16 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(10) {
                    break;
                }
                let name = format!("w{worker}-{i}.swap.example.");
                sent.fetch_add(1, Ordering::Relaxed);
                match ask(&socket, dns, &name, i, Duration::from_secs(3)).await {
                    Some(r) if r.metadata.response_code == ResponseCode::NoError => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    other => lost.push((name, other.map(|r| r.metadata.response_code))),
                }
            }
            lost
        }));
    }
    wait_until(Duration::from_secs(5), || {
        answered.load(Ordering::Relaxed) >= 100
    });
    let second_addr = second.addr.to_string();
    reload(&setup, &hushd, |c| {
        c.replace(&first.addr.to_string(), &second_addr)
    });
    let at_swap = sent.load(Ordering::Relaxed);
    wait_until(Duration::from_secs(5), || {
        sent.load(Ordering::Relaxed) >= at_swap + 100
    });
    stop.store(true, Ordering::Relaxed);
    let mut lost = Vec::new();
    for worker in load {
        lost.extend(worker.await.unwrap());
    }
    assert!(
        lost.is_empty(),
        "lost during the swap: {lost:?}\n{}",
        hushd.log()
    );
    assert_eq!(
        sent.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed)
    );
    assert!(
        second.seen.total() >= 50,
        "the new server got {} queries",
        second.seen.total()
    );

    // from now on every query goes to the new server
    let first_before = first.seen.total();
    let mut client = udp_client(hushd.dns, None).await;
    for i in 0..5 {
        let name = format!("after{i}.swap.example.");
        query(&mut client, &name, RecordType::A).await;
        assert_eq!(second.seen.count(name.trim_end_matches('.')), 1, "{name}");
    }
    assert_eq!(first.seen.total(), first_before, "the old server was asked");
    assert!(hushd.log().contains("upstream.servers: applies on reload"));
}

/// `[cache] size` shrunk: the cache keeps answers up to the new bound, and a name it kept is
/// answered without asking upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_cache_keeps_its_answers_up_to_the_new_size() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    // one shard (1 MiB), so the bound is exact: 100 answers, then 10
    setup.append_config("[cache]\nsize = 100\nmax_bytes = 1048576");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let names: Vec<String> = (0..30).map(|i| format!("c{i}.kept.example.")).collect();
    for name in &names {
        query(&mut client, name, RecordType::A).await;
    }
    assert_eq!(up.seen.total(), 30);

    reload(&setup, &hushd, |c| c.replace("size = 100\n", "size = 10\n"));
    let log = hushd.log();
    let line = log
        .lines()
        .find(|l| l.contains("cache bounds changed, entries kept"))
        .unwrap_or_else(|| panic!("no cache line:\n{log}"));
    let entries: usize = line
        .split("entries=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((1..=10).contains(&entries), "{line}");

    // every name still cached is answered from the cache: no upstream query for it. Newest
    // first: those are the ones kept, and a miss (which is cached) may evict one.
    let mut from_cache = 0;
    for name in names.iter().rev() {
        let asked = name.trim_end_matches('.');
        let before = up.seen.count(asked);
        query(&mut client, name, RecordType::A).await;
        if up.seen.count(asked) == before {
            from_cache += 1;
        }
    }
    assert!(
        (1..=10).contains(&from_cache),
        "{from_cache} of 30 answered from the cache"
    );
}

/// `[cache] max_ttl` lowered: answers cached from then on carry the new cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_ttl_cap_applies_to_the_next_answers() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nmax_ttl = 3600");
    let hushd = setup.start();
    let mut client = udp_client(hushd.dns, None).await;
    let ttl = |r: &hickory_proto::op::DnsResponse| r.answers[0].ttl;
    // an answer is forwarded with upstream's TTL and cached with the cap's
    query(&mut client, "ttl1.example.", RecordType::A).await;
    let cached = query(&mut client, "ttl1.example.", RecordType::A).await;
    assert!(ttl(&cached) > 7, "{}", ttl(&cached));

    reload(&setup, &hushd, |c| {
        c.replace("max_ttl = 3600", "max_ttl = 7")
    });
    query(&mut client, "ttl2.example.", RecordType::A).await;
    let cached = query(&mut client, "ttl2.example.", RecordType::A).await;
    assert!(ttl(&cached) <= 7, "{}", ttl(&cached));
    assert_eq!(up.seen.count("ttl2.example"), 1, "answered from the cache");
    // an answer cached before keeps the TTL it was stored with
    let kept = query(&mut client, "ttl1.example.", RecordType::A).await;
    assert!(ttl(&kept) > 7, "{}", ttl(&kept));
    assert_eq!(up.seen.count("ttl1.example"), 1);
}

/// `[limits] client_qps` lowered: the client is limited at the new rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_client_qps_limits_at_the_new_rate() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[limits]\nclient_qps = 1000\nslip = 0\nexempt_clients = []");
    let hushd = setup.start();
    let socket = tokio::net::UdpSocket::bind("127.0.0.7:0").await.unwrap();
    // cached first, so the burst below costs no upstream time
    ask(
        &socket,
        hushd.dns,
        "rate.example.",
        1,
        Duration::from_secs(2),
    )
    .await
    .unwrap();

    /// Sends 40 queries at once and counts the answers.
    async fn burst(socket: &tokio::net::UdpSocket, dns: SocketAddr, base: u16) -> usize {
        let mut m = Message::query();
        m.add_query(Query::query(
            "rate.example.".parse().unwrap(),
            RecordType::A,
        ));
        for i in 0..40 {
            m.metadata.id = base + i;
            socket.send_to(&m.to_vec().unwrap(), dns).await.unwrap();
        }
        let mut answered = 0;
        let mut buf = vec![0u8; 512];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
        {
            answered += 1;
        }
        answered
    }
    assert_eq!(burst(&socket, hushd.dns, 100).await, 40);
    reload(&setup, &hushd, |c| {
        c.replace("client_qps = 1000", "client_qps = 5")
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let answered = burst(&socket, hushd.dns, 200).await;
    // a burst of one second's worth (5), and what half a second refills (2-3)
    assert!((5..=9).contains(&answered), "{answered} answered at 5 q/s");
}

/// `[limits] max_inflight` lowered: cache misses past the new cap are shed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_max_inflight_sheds_past_the_new_cap() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let setup = Setup::new(&[silent.local_addr().unwrap()], "");
    setup.append_config("[limits]\nmax_inflight = 100");
    // the two that get through wait 5 s for the silent upstream, holding their places
    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    std::fs::write(
        setup.config_path(),
        config.replace("\ntimeout_ms = 2000", "\ntimeout_ms = 5000"),
    )
    .unwrap();
    let hushd = setup.start();
    reload(&setup, &hushd, |c| {
        c.replace("max_inflight = 100", "max_inflight = 2")
    });
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut m = Message::query();
    for i in 0..10u16 {
        m.metadata.id = i;
        m.queries.clear();
        m.add_query(Query::query(
            format!("w{i}.example.").parse().unwrap(),
            RecordType::A,
        ));
        socket
            .send_to(&m.to_vec().unwrap(), hushd.dns)
            .await
            .unwrap();
    }
    let mut shed = 0;
    let mut buf = vec![0u8; 512];
    let started = Instant::now();
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(700), socket.recv_from(&mut buf)).await
    {
        let reply = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "not shed at once"
        );
        shed += 1;
    }
    assert_eq!(shed, 8, "shed at max_inflight = 2");
}

/// The evidence store's rows, by name, in the store at `path`.
fn evidence_names(path: &Path) -> Vec<String> {
    if !path.exists() {
        return Vec::new();
    }
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let Ok(mut stmt) = db.prepare("SELECT name FROM evidence ORDER BY name") else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `[evidence] path` changed: the next matches land in the new store, the earlier ones stay
/// in the old one (written before its writer stopped); `enabled = false` stops recording.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_evidence_path_receives_the_next_matches() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[evidence]\npath = \"a.db\"\nflush_secs = 1");
    setup.write_list("vendor", &list("log", &["vendor.example"]));
    let hushd = setup.start();
    let (a, b) = (setup.dir.path().join("a.db"), setup.dir.path().join("b.db"));
    let mut client = udp_client(hushd.dns, None).await;
    query(&mut client, "one.vendor.example.", RecordType::A).await;

    reload(&setup, &hushd, |c| c.replace("\"a.db\"", "\"b.db\""));
    // the old writer flushed what it held when it stopped
    assert!(
        wait_until(Duration::from_secs(5), || evidence_names(&a).len() == 1),
        "{:?}",
        evidence_names(&a)
    );
    query(&mut client, "two.vendor.example.", RecordType::A).await;
    assert!(
        wait_until(Duration::from_secs(5), || !evidence_names(&b).is_empty()),
        "nothing in the new store:\n{}",
        hushd.log()
    );
    assert_eq!(evidence_names(&b), ["two.vendor.example"]);
    assert_eq!(evidence_names(&a), ["one.vendor.example"]);
    // the daemon's own reader follows the store: /api/evidence reads b now
    let api = support::http_get(hushd.metrics, "/api/evidence?by_name=true");
    assert!(
        api.lines().next().is_some_and(|l| l.contains(" 200")),
        "{api}"
    );
    assert!(api.contains("two.vendor.example"), "{api}");
    assert!(!api.contains("one.vendor.example"), "{api}");

    reload(&setup, &hushd, |c| {
        c.replace("flush_secs = 1", "flush_secs = 1\nenabled = false")
    });
    query(&mut client, "three.vendor.example.", RecordType::A).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(evidence_names(&b), ["two.vendor.example"]);
    let api = support::http_get(hushd.metrics, "/api/evidence");
    assert!(
        api.lines().next().is_some_and(|l| l.contains(" 404")),
        "{api}"
    );
}

fn log_names(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["qname"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

/// `[querylog]` turned on, moved and turned off, each by a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_log_turns_on_moves_and_turns_off_on_reload() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[querylog]\nenabled = false\npath = \"q1.jsonl\"");
    let hushd = setup.start();
    let (q1, q2) = (
        setup.dir.path().join("q1.jsonl"),
        setup.dir.path().join("q2.jsonl"),
    );
    let mut client = udp_client(hushd.dns, None).await;
    query(&mut client, "off.example.", RecordType::A).await;

    reload(&setup, &hushd, |c| {
        c.replace("enabled = false", "enabled = true")
    });
    query(&mut client, "on.example.", RecordType::A).await;
    assert!(
        wait_until(Duration::from_secs(5), || !log_names(&q1).is_empty()),
        "no line in q1:\n{}",
        hushd.log()
    );
    assert_eq!(log_names(&q1), ["on.example"]);

    reload(&setup, &hushd, |c| c.replace("q1.jsonl", "q2.jsonl"));
    query(&mut client, "moved.example.", RecordType::A).await;
    assert!(
        wait_until(Duration::from_secs(5), || !log_names(&q2).is_empty()),
        "no line in q2:\n{}",
        hushd.log()
    );
    assert_eq!(log_names(&q2), ["moved.example"]);
    assert_eq!(log_names(&q1), ["on.example"]);

    reload(&setup, &hushd, |c| {
        c.replace("enabled = true", "enabled = false")
    });
    query(&mut client, "off-again.example.", RecordType::A).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(log_names(&q2), ["moved.example"]);
}

fn diff_running(config: &Path) -> (bool, String) {
    support::hushd_cli(config, &["check", "--diff-running"])
}

/// A listener change needs a restart, and says so by key: `hushd check --diff-running` before
/// saving, the reload's log after; the other keys of the same edit apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_change_is_reported_as_needing_a_restart() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[cache]\nsize = 100");
    let hushd = setup.start();

    let config = std::fs::read_to_string(setup.config_path()).unwrap();
    let elsewhere = format!("127.0.0.1:{}", support::free_port());
    let edited = config
        .replace(&hushd.dns.to_string(), &elsewhere)
        .replace("size = 100", "size = 50");
    // before saving: the edit beside the config, compared with what runs
    let candidate = setup.dir.path().join("candidate.conf");
    std::fs::write(&candidate, &edited).unwrap();
    let (ok, out) = diff_running(&candidate);
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(": ")).collect();
    assert!(
        lines.ends_with(&[
            "cache.size: applies on reload",
            "server.listen: needs a restart"
        ]),
        "{out}"
    );

    reload(&setup, &hushd, |_| edited.clone());
    assert!(hushd.log().contains("server.listen: needs a restart"));
    assert!(hushd.log().contains("cache.size: applies on reload"));
    // still served where it was
    let mut client = udp_client(hushd.dns, None).await;
    query(&mut client, "still.example.", RecordType::A).await;
    // and what runs now differs from the file only by the listener
    let (ok, out) = diff_running(&setup.config_path());
    assert!(ok, "{out}");
    assert!(out.contains("server.listen: needs a restart"), "{out}");
    assert!(!out.contains("cache.size"), "{out}");
}
