//! `[limits]` keys that shape who is shed (`slip`, `exempt_clients`, the TCP connection caps)
//! and `[server] tcp_idle_timeout_secs`, each changed by a reload and shown in force on the
//! next queries and connections, against the real binary.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::RecordType,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::{
    ask, reload,
    support::{Hushd, Setup, upstream::Upstream, wait_until},
};

/// The replies to one burst of UDP queries: full answers, and empty TC=1 ones (slipped).
#[derive(Debug)]
struct Burst {
    answered: usize,
    truncated: usize,
}

/// Waits for the client's bucket to refill (1.1 s at any `client_qps` of 1 and up), then sends
/// `count` A queries for `name` at once and sorts the replies that come within 0.5 s of the
/// last one.
async fn burst(socket: &UdpSocket, dns: SocketAddr, name: &str, count: u16) -> Burst {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    for id in 0..count {
        m.metadata.id = id;
        socket.send_to(&m.to_vec().unwrap(), dns).await.unwrap();
    }
    let mut out = Burst {
        answered: 0,
        truncated: 0,
    };
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
    {
        let reply = Message::from_vec(&buf[..n]).unwrap();
        if reply.metadata.truncation {
            assert!(reply.answers.is_empty(), "a slipped answer carries nothing");
            out.truncated += 1;
        } else {
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            assert!(!reply.answers.is_empty(), "{reply:?}");
            out.answered += 1;
        }
    }
    out
}

/// Asks `name` once from the exempt host address, so that the bursts below are answered from
/// the cache (no upstream time) and their client's bucket is untouched.
async fn cache(hushd: &Hushd, name: &str) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let reply = ask(&socket, hushd.dns, name, 1, Duration::from_secs(3)).await;
    assert!(reply.is_some(), "{name} not answered:\n{}", hushd.log());
}

/// At `client_qps = 5` a burst of 20 gets its bucket's 5 answers, and what the burst's own
/// time refills (up to 2 more on a slow machine).
const FULL: std::ops::RangeInclusive<usize> = 5..=7;

/// `[limits] slip`: with slip = 2 every second limited UDP query gets an empty TC=1 answer;
/// after a reload to 0 none does, and after one to 1 every limited query does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_slip_decides_which_limited_queries_get_a_tc_answer() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    // 127.0.0.2 is outside the default exempt_clients (the host's own 127.0.0.1)
    setup.append_config("[limits]\nclient_qps = 5\nslip = 2");
    let hushd = setup.start();
    cache(&hushd, "slip.example.").await;
    let client = UdpSocket::bind("127.0.0.2:0").await.unwrap();

    let b = burst(&client, hushd.dns, "slip.example.", 20).await;
    // 13 to 15 limited, every second one slipped
    assert!(FULL.contains(&b.answered), "{b:?}");
    assert!((6..=8).contains(&b.truncated), "slip = 2: {b:?}");

    reload(&setup, &hushd, |c| c.replace("slip = 2", "slip = 0"));
    let b = burst(&client, hushd.dns, "slip.example.", 20).await;
    assert!(FULL.contains(&b.answered), "{b:?}");
    assert_eq!(b.truncated, 0, "slip = 0: {b:?}");

    reload(&setup, &hushd, |c| c.replace("slip = 0", "slip = 1"));
    let b = burst(&client, hushd.dns, "slip.example.", 20).await;
    assert!(FULL.contains(&b.answered), "{b:?}");
    assert_eq!(b.answered + b.truncated, 20, "slip = 1: {b:?}");
}

/// `[limits] exempt_clients`: 127.0.0.2 is limited while not listed; once a reload adds
/// 127.0.0.2/32 its whole burst is answered, while a neighbour not listed is still limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_added_to_exempt_clients_is_no_longer_limited() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    setup.append_config("[limits]\nclient_qps = 5\nslip = 0\nexempt_clients = [\"127.0.0.1/32\"]");
    let hushd = setup.start();
    cache(&hushd, "exempt.example.").await;
    let client = UdpSocket::bind("127.0.0.2:0").await.unwrap();

    let b = burst(&client, hushd.dns, "exempt.example.", 20).await;
    assert!(FULL.contains(&b.answered), "not exempt yet: {b:?}");

    reload(&setup, &hushd, |c| {
        c.replace("[\"127.0.0.1/32\"]", "[\"127.0.0.1/32\", \"127.0.0.2/32\"]")
    });
    let b = burst(&client, hushd.dns, "exempt.example.", 20).await;
    assert_eq!(b.answered, 20, "exempt now: {b:?}");
    let neighbour = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    let b = burst(&neighbour, hushd.dns, "exempt.example.", 20).await;
    assert!(FULL.contains(&b.answered), "127.0.0.3 is not listed: {b:?}");
}

/// A TCP connection to `server` from `source` (a 127.x address).
async fn tcp_from(source: &str, server: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(server).await.unwrap()
}

/// Whether an A query for `name` on `stream` is answered (NOERROR) within 3 s.
async fn served(stream: &mut TcpStream, name: &str) -> bool {
    let mut m = Message::query();
    m.metadata.id = 7;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name.parse().unwrap(), RecordType::A));
    let wire = m.to_vec().unwrap();
    let mut framed = u16::try_from(wire.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(&wire);
    // a write into a connection hushd closed may still succeed locally: the read tells
    let _ = stream.write_all(&framed).await;
    let read = async {
        let len = stream.read_u16().await.ok()?;
        let mut reply = vec![0u8; usize::from(len)];
        stream.read_exact(&mut reply).await.ok()?;
        Message::from_vec(&reply).ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(3), read).await,
        Ok(Some(reply)) if reply.metadata.response_code == ResponseCode::NoError
    )
}

/// How long until hushd closes `stream` (EOF or reset) without a word from the client, or
/// `None` if it is still open after `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Some(started.elapsed()),
        Ok(Ok(n)) => panic!("{n} bytes from hushd unasked"),
        Err(_) => None,
    }
}

/// A new connection is closed at once: EOF within 1.5 s, with no query sent.
async fn closed_at_accept(stream: &mut TcpStream) -> bool {
    closed_within(stream, Duration::from_millis(1500))
        .await
        .is_some()
}

fn tcp_limited(hushd: &Hushd) -> f64 {
    hushd
        .metric(r#"hushd_limited_total{reason="tcp_limit"}"#)
        .unwrap_or(0.0)
}

/// Waits until hushd counts `open` TCP connections (it sees a client's close a moment later).
fn wait_open(hushd: &Hushd, open: f64) {
    assert!(
        wait_until(Duration::from_secs(3), || {
            hushd.metric("hushd_tcp_connections") == Some(open)
        }),
        "hushd_tcp_connections is {:?}, not {open}",
        hushd.metric("hushd_tcp_connections")
    );
}

/// `[limits] max_tcp_connections`: past the cap a new connection is closed at once and
/// counted; raised by a reload, the next one is served; lowered below what is open, the open
/// ones stay served, new ones are closed until enough have gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_max_tcp_connections_caps_the_next_connections() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    // from 127.0.0.1, exempt: held to the total only
    setup.append_config("[limits]\nmax_tcp_connections = 2\nmax_tcp_connections_per_client = 32");
    let hushd = setup.start();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = tcp_from("127.0.0.1", hushd.dns).await;
        assert!(served(&mut stream, "total.example.").await);
        held.push(stream);
    }
    let mut over = tcp_from("127.0.0.1", hushd.dns).await;
    assert!(closed_at_accept(&mut over).await, "a third past a cap of 2");
    assert_eq!(tcp_limited(&hushd), 1.0);

    reload(&setup, &hushd, |c| {
        c.replace("max_tcp_connections = 2\n", "max_tcp_connections = 4\n")
    });
    let mut third = tcp_from("127.0.0.1", hushd.dns).await;
    assert!(
        served(&mut third, "total.example.").await,
        "a third under a cap of 4:\n{}",
        hushd.log()
    );
    held.push(third);
    wait_open(&hushd, 3.0);

    reload(&setup, &hushd, |c| {
        c.replace("max_tcp_connections = 4\n", "max_tcp_connections = 2\n")
    });
    let mut over = tcp_from("127.0.0.1", hushd.dns).await;
    assert!(
        closed_at_accept(&mut over).await,
        "a fourth past a cap of 2"
    );
    assert_eq!(tcp_limited(&hushd), 2.0);
    // the three open before the cap was lowered stay until they close
    for stream in &mut held {
        assert!(served(stream, "total.example.").await);
    }
    held.truncate(1);
    wait_open(&hushd, 1.0);
    let mut again = tcp_from("127.0.0.1", hushd.dns).await;
    assert!(served(&mut again, "total.example.").await, "one of 2 open");
}

/// `[limits] max_tcp_connections_per_client`: a client at the cap has its next connection
/// closed at once while a neighbour is served; raised by a reload, the client's next one is
/// served; lowered, the open ones stay and a new one is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_per_client_tcp_cap_applies_to_the_next_connections() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "");
    // 127.0.0.2 and 127.0.0.3 are outside the default exempt_clients
    setup.append_config("[limits]\nmax_tcp_connections = 100\nmax_tcp_connections_per_client = 1");
    let hushd = setup.start();
    let mut first = tcp_from("127.0.0.2", hushd.dns).await;
    assert!(served(&mut first, "client.example.").await);
    let mut second = tcp_from("127.0.0.2", hushd.dns).await;
    assert!(
        closed_at_accept(&mut second).await,
        "a second past a cap of 1"
    );
    assert_eq!(tcp_limited(&hushd), 1.0);
    let mut neighbour = tcp_from("127.0.0.3", hushd.dns).await;
    assert!(served(&mut neighbour, "client.example.").await);

    reload(&setup, &hushd, |c| {
        c.replace(
            "max_tcp_connections_per_client = 1",
            "max_tcp_connections_per_client = 3",
        )
    });
    let mut second = tcp_from("127.0.0.2", hushd.dns).await;
    assert!(
        served(&mut second, "client.example.").await,
        "a second under a cap of 3:\n{}",
        hushd.log()
    );

    reload(&setup, &hushd, |c| {
        c.replace(
            "max_tcp_connections_per_client = 3",
            "max_tcp_connections_per_client = 1",
        )
    });
    let mut third = tcp_from("127.0.0.2", hushd.dns).await;
    assert!(
        closed_at_accept(&mut third).await,
        "a third past a cap of 1"
    );
    assert_eq!(tcp_limited(&hushd), 2.0);
    assert!(served(&mut first, "client.example.").await);
    assert!(served(&mut second, "client.example.").await);
}

/// `[server] tcp_idle_timeout_secs` lowered from 10 to 1: an idle connection stays open past
/// 3 s before the reload; after it a new idle connection is closed within about a second, and
/// one opened before is closed a second after its next query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tcp_idle_timeout_closes_idle_connections_sooner() {
    let up = Upstream::start().await;
    let setup = Setup::new(&[up.addr], "tcp_idle_timeout_secs = 10");
    let hushd = setup.start();
    let mut before = tcp_from("127.0.0.1", hushd.dns).await;
    assert_eq!(
        closed_within(&mut before, Duration::from_secs(3)).await,
        None,
        "closed before 10 s idle"
    );

    reload(&setup, &hushd, |c| {
        c.replace("tcp_idle_timeout_secs = 10", "tcp_idle_timeout_secs = 1")
    });
    let mut after = tcp_from("127.0.0.1", hushd.dns).await;
    let closed = closed_within(&mut after, Duration::from_secs(4)).await;
    assert!(
        closed.is_some_and(|t| t >= Duration::from_millis(500) && t <= Duration::from_secs(3)),
        "idle for 1 s: closed after {closed:?}"
    );
    // the connection from before waits with the new timeout from its next query on
    assert!(served(&mut before, "idle.example.").await);
    let closed = closed_within(&mut before, Duration::from_secs(4)).await;
    assert!(
        closed.is_some_and(|t| t <= Duration::from_secs(3)),
        "idle for 1 s after its query: closed after {closed:?}"
    );
}
